# This file is part of fuelpay.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""The station service: a pre-paid authorisation with a lift timeout that
is not used is stopped and reported as ``authorization_expired`` (the App,
simulated DART pumps over loopback UDP, the fake server of test_uplink)"""
from __future__ import annotations

import asyncio
import pathlib
from typing import Any

from test_app import FLOW, POLICY, run, station
from test_app import server as server  # the fixture
from test_uplink import FakeServer

from iot_box.events import EventKind
from iot_box.protocols.dart import PumpStatus


def expired(server: FakeServer) -> list[dict[str, Any]]:
    with server.changed:
        return [
            e for e in server.events
            if e['kind'] == EventKind.AUTHORIZATION_EXPIRED]


def test_unused_prepay_authorization_expires(
        tmp_path: pathlib.Path, server: FakeServer) -> None:
    server.policy = {**POLICY, 'authorization': 'prepay'}

    async def main() -> None:
        async with station(tmp_path, server) as st:
            pump = st.pumps[1]
            server.add_command(30, 'authorize', {
                    'version': 1, 'station_number': 4,
                    'preset_amount': '50.00', 'lift_timeout': '0.5',
                    'prepay': 9})
            await st.until(lambda: pump.status is PumpStatus.AUTHORIZED)
            await st.until(lambda: st.acks(30))
            assert st.acks(30)[0]['status'] == 'acked'
            await st.until(lambda: expired(server))
            event, = expired(server)
            assert event['device'] == 'pump-2'
            payload = event['payload']
            assert payload['authorization'] == 30
            assert payload['station_number'] == 4
            assert payload['version'] == 1
            await st.until(lambda: pump.status is PumpStatus.RESET)
            assert pump.preset_amount is None
            await asyncio.sleep(0.3)  # nothing more comes
            assert not st.completed()
            assert len(expired(server)) == 1

            # a fill started in time is a sale, whatever its length
            server.add_command(31, 'authorize', {
                    'version': 1, 'station_number': 4,
                    'preset_amount': '50.00', 'lift_timeout': '1.0'})
            await st.until(lambda: pump.status is PumpStatus.AUTHORIZED)
            pump.lift(2)
            for _ in range(50):  # 1.5 s
                pump.tick(FLOW)
                await asyncio.sleep(0.03)
            pump.hang()
            await st.until(lambda: st.completed())
            sale, = st.completed()
            assert sale['payload']['authorization'] == 31
            assert len(expired(server)) == 1

            # a lift timeout that is not a positive number: refused
            server.add_command(32, 'authorize', {
                    'version': 1, 'station_number': 3,
                    'preset_amount': '50.00', 'lift_timeout': 'soon'})
            await st.until(lambda: st.acks(32))
            ack, = st.acks(32)
            assert ack['status'] == 'failed'
            assert 'lift_timeout' in ack['result']['error']
            assert pump.status is PumpStatus.RESET

    run(main())
