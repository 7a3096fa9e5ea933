# This file is part of fuelpay.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""Face pay at a payment post end to end: a fill -> a face device's code
read by the box -> the platform charges it through WeChat Pay

A real trytond on PostgreSQL with the demo data (the shared `server`),
the demo box of station A01 run in this process with two simulated DART
pumps on one UDP gateway (test_station_box.Station), and a face-pay
device in scanner mode played on a pty pair: the box reads the slave
with pyserial, the test writes the code on the master as the device
would.  Lanshan's *Face Pay* method gets a gateway on the WeChat Pay
simulator (tests/fuel_payment's, on 127.0.0.1); no other system test
uses that method."""
import json
import os
import sqlite3
import time
from decimal import Decimal

import pytest
from test_payment_rpc import method_id, void
from test_plate_rpc import company_id
from test_rpc_isolation import call
from test_station_box import STEP_TIMEOUT, Station

from addons.fuel_payment.tests.sim_wechat import WeChatSimulator
from iot_box.events import decode_json
from tools.demo import DEMO_BOX

D = Decimal
FACE_CODE = '134567890123456789'  # a WeChat pay code, as a face device sends
MASKED = '1345' + '*' * 14
POST_NOZZLES = (1, 2)


class PostStation(Station):
    "The demo station with a face device at the post of nozzles 1 and 2"

    def __init__(self, server, directory, device_path):
        super().__init__(server, directory)
        self.config_path.write_text(
            self.config_path.read_text() + '\n'.join([
                    '',
                    '[[payment_posts]]',
                    'name = "post-1"',
                    f'port = "{device_path}"',
                    'source = "face"',
                    f'nozzles = [{", ".join(map(str, POST_NOZZLES))}]',
                    '']))

    def until(self, find, what, timeout=STEP_TIMEOUT):
        "Poll find() on the platform until it returns something"
        deadline = time.monotonic() + timeout
        while not (found := find()):
            if time.monotonic() > deadline:
                pytest.fail(f"timed out waiting for {what}")
            time.sleep(0.3)
        return found

    def read(self, model, domain, fields):
        ids = call(self.admin, model, 'search', domain, 0, None,
            [('id', 'ASC')])
        return call(self.admin, model, 'read', ids, fields)

    def clear_post(self):
        """Void the fills left to pay at the post's nozzles: the system
        tests share the demo station, and the post pays only when one fill
        waits"""
        waiting = self.read('fuel.payment.transaction', [
                ('station.code', '=', DEMO_BOX['station']),
                ('state', '=', 'to_pay'),
                ('nozzle.station_number', 'in', list(POST_NOZZLES)),
                ], ['order'])
        orders = sorted({w['order'] for w in waiting if w['order']})
        if orders:
            call(self.admin, 'fuel.payment.order', 'cancel', orders)
        for fill in waiting:
            void(self.admin, fill['id'], "left by another system test")


@pytest.fixture(scope='module')
def simulator():
    simulator = WeChatSimulator()
    simulator.start()
    try:
        yield simulator
    finally:
        simulator.stop()


@pytest.fixture(scope='module')
def post_station(server, simulator, tmp_path_factory):
    station = None
    master, slave = os.openpty()
    try:
        station = PostStation(
            server, tmp_path_factory.mktemp('box'), os.ttyname(slave))
        gateway, = call(station.admin, 'fuel.payment.gateway', 'create', [
                dict(simulator.gateway_values(), name="WeChat Pay (post)",
                    company=company_id(server, "Lanshan Energy"))])
        call(station.admin, 'sale.point.payment.method', 'write', [
                method_id(server, "Lanshan Energy", 'face')],
            {'gateway': gateway})
        yield station, master
    finally:
        if station is not None:
            station.close()
        os.close(slave)
        os.close(master)


def test_face_pay_at_the_post(post_station, simulator):
    "A fill at nozzle 1, then a face at the post: the fill is paid"
    station, device = post_station
    station.start()
    for nozzle in POST_NOZZLES:
        station.loop.until(
            lambda n=nozzle: station.prices(n) is not None,
            what=f"nozzle {nozzle} programmed")
    station.loop.until(
        lambda: station.app.posts['post-1'].status == 'connected',
        what="the post's reader")
    station.clear_post()
    # the repeat below comes after the whole payment, which may take more
    # than the default few seconds on a loaded machine
    station.app.posts['post-1'].debounce = 600
    before = station.last_id()
    station.sale(1, D('10.000'))
    transaction, = station.new_transactions(before, 1)
    assert transaction['state'] == 'to_pay'

    # the face device in scanner mode: the pay code, then CR LF
    os.write(device, FACE_CODE.encode() + b'\r\n')

    paid, = station.until(
        lambda: station.read('fuel.payment.transaction', [
                ('id', '=', transaction['id']), ('state', '=', 'paid'),
                ], ['order', 'amount']),
        "the fill paid")
    payment, = station.read('fuel.payment.gateway.payment', [
            ('order', '=', paid['order'])],
        ['state', 'source', 'code', 'amount', 'number', 'method.fuel_kind'])
    assert payment['state'] == 'succeeded'
    assert payment['source'] == 'face'
    assert payment['method.']['fuel_kind'] == 'face'
    assert payment['code'] == MASKED
    assert payment['amount'] == paid['amount'] == (
        D('10.000') * D('7.58')).quantize(D('0.01'))
    order, = station.read(
        'fuel.payment.order', [('id', '=', paid['order'])], ['state'])
    assert order['state'] == 'paid'
    sim_order = simulator.orders[payment['number']]
    assert sim_order.data['payer']['auth_code'] == FACE_CODE

    # no usable code left: not on the platform, not in the box's outbox
    event, = station.read('fuel.device.event', [
            ('kind', '=', 'payment_code'), ('device', '=', 'post-1')],
        ['state', 'payload', 'error'])
    assert event['state'] == 'processed', event['error']
    assert json.loads(event['payload'])['code'] == MASKED
    station.until_delivered()
    with sqlite3.connect(station.directory / 'outbox.sqlite') as outbox:
        payloads = [
            decode_json(payload) for payload, in outbox.execute(
                "SELECT payload FROM event WHERE kind = 'payment_code'")]
    assert [p['code'] for p in payloads] == [MASKED]

    # the same face again within seconds is not a second payment
    os.write(device, FACE_CODE.encode() + b'\r\n')
    time.sleep(1)
    station.until_delivered()
    assert len(station.read('fuel.device.event', [
                ('kind', '=', 'payment_code')], ['id'])) == 1
    assert len(simulator.orders) == 1
