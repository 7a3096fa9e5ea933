# This file is part of fuelpay.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""Pre-pay at a payment post end to end: a driver lifts a nozzle, shows
his face at the post -> the platform charges the station's ceiling
through WeChat Pay -> the box authorizes the nozzle with it as preset ->
the fill is captured and the rest refunded

The same set-up as test_station_post (the shared demo platform on
PostgreSQL, the demo box of station A01 in this process with simulated
DART pumps, a face-pay device in scanner mode on a pty, Lanshan's *Face
Pay* method on the WeChat Pay simulator), with the box configuration's
authorization set to pre-pay and a post pre-pay ceiling on A01 for the
test (both put back after it)."""
import json
import os
import sqlite3
from decimal import Decimal

import pytest
from test_payment_rpc import method_id
from test_plate_rpc import company_id
from test_rpc_isolation import call
from test_station_box import STEP_TIMEOUT
from test_station_post import FACE_CODE, MASKED, POST_NOZZLES, PostStation

from addons.fuel_payment.tests.sim_wechat import WeChatSimulator
from iot_box.outbox import Outbox
from iot_box.protocols.dart import PumpStatus
from tools.demo import DEMO_BOX

D = Decimal
CEILING = D('200.00')
NOZZLE = 2  # one of the post's nozzles (POST_NOZZLES)
# seconds: a pre-paid nozzle left unused is given back within the test
LIFT_TIMEOUT = 2


@pytest.fixture(scope='module')
def simulator():
    simulator = WeChatSimulator()
    simulator.start()
    try:
        yield simulator
    finally:
        simulator.stop()


def continue_seq(station):
    """Start the new box's outbox after the last seq the platform has of
    the demo box: test_station_post ran the same box with another outbox
    on this platform, and the platform refuses a seq used twice"""
    last = call(station.admin, 'fuel.device.event', 'search', [
            ('box.identifier', '=', DEMO_BOX['identifier'])],
        0, 1, [('seq', 'DESC')])
    if not last:
        return
    event, = call(station.admin, 'fuel.device.event', 'read', last, ['seq'])
    path = station.directory / 'outbox.sqlite'
    Outbox(path).close()  # its tables
    with sqlite3.connect(path) as outbox:
        # AUTOINCREMENT: the next event gets seq + 1
        outbox.execute(
            "INSERT INTO sqlite_sequence (name, seq) VALUES ('event', ?)",
            (event['seq'],))
    outbox.close()


@pytest.fixture(scope='module')
def prepay_station(server, simulator, tmp_path_factory):
    station = None
    master, slave = os.openpty()
    try:
        station = PostStation(
            server, tmp_path_factory.mktemp('box'), os.ttyname(slave))
        continue_seq(station)
        admin = station.admin
        gateway, = call(admin, 'fuel.payment.gateway', 'create', [
                dict(simulator.gateway_values(),
                    name="WeChat Pay (post pre-pay)",
                    company=company_id(server, "Lanshan Energy"))])
        call(admin, 'sale.point.payment.method', 'write', [
                method_id(server, "Lanshan Energy", 'face')],
            {'gateway': gateway})
        stations = call(admin, 'fuel.station', 'search', [
                ('code', '=', DEMO_BOX['station'])], 0, None, None)
        config, = call(admin, 'fuel.device.configuration', 'read', [1],
            ['authorization'])
        call(admin, 'fuel.device.configuration', 'write', [1],
            {'authorization': 'prepay'})
        call(admin, 'fuel.station', 'write', stations,
            {'post_prepay_ceiling': CEILING})
        try:
            yield station, master
        finally:
            call(admin, 'fuel.station', 'write', stations,
                {'post_prepay_ceiling': None})
            call(admin, 'fuel.device.configuration', 'write', [1],
                {'authorization': config['authorization']})
    finally:
        if station is not None:
            station.close()
        os.close(slave)
        os.close(master)


def lift_calling(station):
    """Start the station under the pre-pay policy, its post's reader
    connected, and lift NOZZLE without authorisation: calling; return its
    pump"""
    station.start()
    for nozzle in POST_NOZZLES:
        station.loop.until(
            lambda n=nozzle: station.prices(n) is not None,
            what=f"nozzle {nozzle} programmed")
    station.loop.until(
        lambda: station.app.posts['post-1'].status == 'connected',
        what="the post's reader")
    station.loop.until(
        lambda: station.app.policy is not None
        and station.app.policy.authorization == 'prepay',
        what="the pre-pay policy")
    station.clear_post()
    pump, _ = station.pump(NOZZLE)
    station.lift(NOZZLE, authorised=False)
    station.loop.until(
        lambda: station.app._calling(POST_NOZZLES) == [NOZZLE],
        what=f"nozzle {NOZZLE} calling")
    return pump


def test_face_prepays_a_fill_up_at_the_post(prepay_station, simulator):
    """Nozzle 2 lifted, no fill to pay, a face at the post: 200.00 taken,
    the nozzle authorized with it, 10 litres sold, the rest refunded"""
    station, device = prepay_station
    pump = lift_calling(station)
    events_before = call(station.admin, 'fuel.device.event', 'search', [
            ('kind', '=', 'payment_code')], 0, None, None)

    # the face device in scanner mode: the pay code, then CR LF
    os.write(device, FACE_CODE.encode() + b'\r\n')

    event, = station.until(
        lambda: station.read('fuel.device.event', [
                ('kind', '=', 'payment_code'),
                ('id', 'not in', events_before),
                ('state', '!=', 'received'),
                ], ['state', 'error', 'payload', 'gateway_payment']),
        "the code's event")
    assert event['state'] == 'processed', event['error']
    payload = json.loads(event['payload'])
    assert (payload['code'], payload['calling']) == (MASKED, [NOZZLE])
    prepay, = station.until(
        lambda: station.read('fuel.payment.prepay', [
                ('payments', '=', event['gateway_payment']),
                ('state', '=', 'authorized'),
                ], ['amount', 'fill_up', 'nozzle.station_number',
                    'authorization']),
        "the pre-payment authorized")
    assert (prepay['amount'], prepay['fill_up']) == (CEILING, True)
    assert prepay['nozzle.']['station_number'] == NOZZLE
    payment, = station.read('fuel.payment.gateway.payment', [
            ('id', '=', event['gateway_payment'])],
        ['state', 'source', 'code', 'number'])
    assert (payment['state'], payment['source'], payment['code']) == (
        'succeeded', 'face', MASKED)
    sim_order = simulator.orders[payment['number']]
    assert sim_order.data['payer']['auth_code'] == FACE_CODE
    assert sim_order.total == int(CEILING * 100)
    # the box released the nozzle with the ceiling as preset
    station.loop.until(
        lambda: pump.status is PumpStatus.AUTHORIZED,
        what=f"nozzle {NOZZLE} authorised")
    assert station.loop.call(lambda: pump.preset_amount) == CEILING
    # the nozzle is no longer calling: another face pre-pays nothing
    assert station.loop.call(
        lambda: station.app._calling(POST_NOZZLES)) == []

    before = station.last_id()
    station.flow(NOZZLE, D('10.000'))
    amount = station.amount(NOZZLE)
    station.hang(NOZZLE)
    station.loop.until(
        lambda: pump.status is PumpStatus.RESET,
        what=f"nozzle {NOZZLE} back to RESET")
    transaction, = station.new_transactions(before, 1)
    assert transaction['amount'] == amount

    done, = station.until(
        lambda: station.read('fuel.payment.prepay', [
                ('id', '=', prepay['id']), ('state', '=', 'done'),
                ], ['captured', 'transaction', 'order.state']),
        "the fill captured")
    assert done['transaction'] == transaction['id']
    assert done['captured'] == amount
    assert done['order.']['state'] == 'paid'
    refund, = station.until(
        lambda: station.read('fuel.payment.gateway.refund', [
                ('payment', '=', event['gateway_payment']),
                ('state', '=', 'succeeded'),
                ], ['amount']),
        "the difference refunded", timeout=STEP_TIMEOUT)
    assert refund['amount'] == CEILING - amount
    assert [r['refund'] for r in sim_order.refunds.values()] == [
        int((CEILING - amount) * 100)]
    station.until_delivered()


def test_unused_prepay_is_given_back(prepay_station, simulator):
    """Nozzle 2 lifted, a face pays 200.00, the nozzle is authorized; the
    driver hangs up without fuelling and leaves: after A01's lift timeout
    the box stops the pump (authorization_expired) and the 200.00 go
    back in full; no fill is recorded"""
    station, device = prepay_station
    admin = station.admin
    stations = call(admin, 'fuel.station', 'search', [
            ('code', '=', DEMO_BOX['station'])], 0, None, None)
    setting, = call(admin, 'fuel.station', 'read', stations[:1],
        ['prepay_lift_timeout'])
    call(admin, 'fuel.station', 'write', stations,
        {'prepay_lift_timeout': LIFT_TIMEOUT})
    try:
        pump = lift_calling(station)
        before = station.last_id()
        events_before = call(admin, 'fuel.device.event', 'search', [
                ('kind', 'in', ['payment_code', 'authorization_expired'])],
            0, None, None)

        os.write(device, FACE_CODE.encode() + b'\r\n')

        event, = station.until(
            lambda: station.read('fuel.device.event', [
                    ('kind', '=', 'payment_code'),
                    ('id', 'not in', events_before),
                    ('state', '!=', 'received'),
                    ], ['state', 'error', 'gateway_payment']),
            "the code's event")
        assert event['state'] == 'processed', event['error']
        prepay, = station.until(
            lambda: station.read('fuel.payment.prepay', [
                    ('payments', '=', event['gateway_payment']),
                    ('state', '=', 'authorized'),
                    ], ['amount']),
            "the pre-payment authorized")
        station.loop.until(
            lambda: pump.status is PumpStatus.AUTHORIZED,
            what=f"nozzle {NOZZLE} authorised")
        # held out without fuelling, then hung up: the pump keeps the
        # authorisation until the box stops it
        station.hang(NOZZLE)

        expired, = station.until(
            lambda: station.read('fuel.device.event', [
                    ('kind', '=', 'authorization_expired'),
                    ('id', 'not in', events_before),
                    ('state', '!=', 'received'),
                    ], ['state', 'error', 'payload']),
            "the expiry's event")
        assert expired['state'] == 'processed', expired['error']
        assert json.loads(expired['payload'])['station_number'] == NOZZLE
        given_back, = station.until(
            lambda: station.read('fuel.payment.prepay', [
                    ('id', '=', prepay['id']), ('state', '=', 'cancelled'),
                    ], ['reason', 'transaction']),
            "the pre-payment given back")
        assert f' {LIFT_TIMEOUT} ' in given_back['reason']
        assert given_back['transaction'] is None
        refund, = station.until(
            lambda: station.read('fuel.payment.gateway.refund', [
                    ('payment', '=', event['gateway_payment']),
                    ('state', '=', 'succeeded'),
                    ], ['amount']),
            "the pre-payment refunded", timeout=STEP_TIMEOUT)
        assert refund['amount'] == CEILING
        payment, = station.read('fuel.payment.gateway.payment', [
                ('id', '=', event['gateway_payment'])], ['number'])
        assert [
            r['refund'] for r in simulator.orders[
                payment['number']].refunds.values()] == [int(CEILING * 100)]
        station.loop.until(
            lambda: pump.status is PumpStatus.RESET,
            what=f"nozzle {NOZZLE} back to RESET")
        assert station.loop.call(lambda: pump.preset_amount) is None
        station.until_delivered()
        assert station.new_transactions(before, 0) == []
    finally:
        call(admin, 'fuel.station', 'write', stations,
            {'prepay_lift_timeout': setting['prepay_lift_timeout']})
