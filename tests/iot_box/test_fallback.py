# This file is part of fuelpay.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""Fallback mode: entered after the threshold, left at the first answer;
totals per nozzle exact and kept across a restart"""
from __future__ import annotations

import pathlib
from decimal import Decimal

from iot_box.config import FallbackMode, FallbackPolicy
from iot_box.fallback import Fallback, FallbackTotals, totals_path

D = Decimal
POLICY = FallbackPolicy(D('150.00'), D('100.000'))


def test_threshold_and_exit(tmp_path: pathlib.Path) -> None:
    now = [1000.0]
    with FallbackTotals(tmp_path / 'f.sqlite') as totals:
        fallback = Fallback(
            POLICY, totals, threshold=60, clock=lambda: now[0])
        assert not fallback.active
        fallback.link_failed()
        now[0] += 59.9
        fallback.link_failed()  # a failure in a row keeps the first time
        assert not fallback.active
        now[0] += 0.1
        assert fallback.active and fallback.entered_at is not None
        assert fallback.authorizes
        fallback.link_ok()
        assert not fallback.active and fallback.unreachable_since is None
        # a short outage does not enter it
        fallback.link_failed()
        now[0] += 10
        fallback.link_ok()
        assert not fallback.active
        state = fallback.to_dict()
        assert (state['entries'], state['exits']) == (1, 1)
        assert state['mode'] == 'attended_postpay'
        assert state['max_amount'] == '150.00'


def test_disabled_authorises_nothing(tmp_path: pathlib.Path) -> None:
    with FallbackTotals(tmp_path / 'f.sqlite') as totals:
        policy = FallbackPolicy(D('1'), D('1'), FallbackMode.DISABLED)
        assert not Fallback(policy, totals).authorizes


def test_totals_exact_and_persistent(tmp_path: pathlib.Path) -> None:
    path = totals_path(tmp_path / 'outbox.sqlite')
    assert path == tmp_path / 'outbox.sqlite.fallback.sqlite'
    with FallbackTotals(path) as totals:
        fallback = Fallback(POLICY, totals)
        fallback.record_sale(3, 'pump-2', 1, D('10.010'), D('65.07'))
        total = fallback.record_sale(3, 'pump-2', 1, D('0.020'), D('0.13'))
        assert (total.count, total.volume, total.amount) == (
            2, D('10.030'), D('65.20'))
        fallback.record_sale(1, 'pump-1', 1, D('1.000'), D('7.89'))
        totals.increment('entries')
    with FallbackTotals(path) as totals:
        one, three = totals.totals()
        assert (one.station_number, one.count) == (1, 1)
        assert str(three.volume) == '10.030'
        assert str(three.amount) == '65.20'
        assert three.to_dict() == {
            'station_number': 3, 'device': 'pump-2', 'nozzle': 1,
            'count': 2, 'volume': '10.030', 'amount': '65.20'}
        assert totals.counter('entries') == 1
        assert totals.counter('exits') == 0
