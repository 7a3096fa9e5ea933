# This file is part of fuelpay.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""Frictionless pay end to end: camera -> box -> platform -> member charged

A real trytond on PostgreSQL with the demo data (`plate_server`, a
database of its own), the demo box of station A01 run as `python -m
iot_box run` with the demo's folder camera `cam-island-1` (zone island-1,
nozzles 1 and 2), the real ONNX plate pipeline, and the two simulated DART
pumps on one UDP gateway.  The demo enrolled Liu Yang's car
(tools.demo DEMO_VEHICLE) on her card LS-0001, funded 500, with a limit of
300 per fill.  The stations of this platform are set to pre-pay: a lifted
nozzle waits for the server's `authorize` command, so the preset the
binding engine sends is what the pump gets.

Synthetic frames of a car (tools.demo_camera.write_scene) are dropped into
the camera's folder as an FTP camera would push them."""
import json
import time
from decimal import Decimal

import pytest
from test_rpc_isolation import call, xmlrpc_proxy
from test_station_box import OPENING, STEP_TIMEOUT, Station

from iot_box.protocols.dart import PumpStatus
from iot_box.simulators.dart_pump import AUTHORIZE_WAIT
from tools.demo import CAMERA_DIR, DEMO_BOX, DEMO_VEHICLE, box_config
from tools.demo_camera import FRAME_GAP, FRAMES, write_scene

D = Decimal
UNKNOWN_PLATE = '苏E5K207'
# camera -> vote (2 s after the last frame) -> outbox -> platform, with
# the models' first inferences: seconds
READ_TIMEOUT = 30.0
BINDING_FIELDS = [
    'state', 'vehicle', 'agreement', 'plate_read', 'preset_amount',
    'command', 'order', 'transaction', 'candidates', 'reason', 'score']


class PlateStation(Station):
    "The demo station with its lane camera, the box in a process"

    def __init__(self, server, directory):
        super().__init__(server, directory)
        self.camera_dir = directory / CAMERA_DIR
        self.camera_dir.mkdir()
        host, port = self.gateway_address
        self.config_path.write_text(box_config(
                DEMO_BOX, self.relay.url, server.database,
                gateway=(host, port),
                status_listen=f'127.0.0.1:{self.status_port}',
                camera_dir=CAMERA_DIR))

    def car_passes(self, plate, seed):
        "A car in front of the camera: a few frames into its folder"
        for frame in range(FRAMES):
            if frame:
                time.sleep(FRAME_GAP)
            write_scene(self.camera_dir, plate, seed=seed + frame)

    def until(self, find, what, timeout=STEP_TIMEOUT):
        "Poll find() on the platform until it returns something"
        deadline = time.monotonic() + timeout
        while not (found := find()):
            if time.monotonic() > deadline:
                pytest.fail(f"timed out waiting for {what}")
            time.sleep(0.3)
        return found

    def reads(self, plate, after=0):
        ids = call(self.admin, 'fuel.plate.read', 'search', [
                ('plate', '=', plate), ('id', '>', after)],
            0, None, [('id', 'ASC')])
        return call(self.admin, 'fuel.plate.read', 'read', ids, [
                'plate', 'colour', 'vehicle', 'zone', 'zone_code',
                'zone_kind', 'camera.identifier', 'station.code',
                'confidence', 'frames', 'image_state', 'image'])

    def bindings(self, domain):
        ids = call(self.admin, 'fuel.plate.binding', 'search', [
                ('station.code', '=', DEMO_BOX['station']), *domain],
            0, None, [('id', 'ASC')])
        return call(
            self.admin, 'fuel.plate.binding', 'read', ids, BINDING_FIELDS)

    def read_one(self, model, id_, fields):
        record, = call(self.admin, model, 'read', [id_], fields)
        return record

    def card(self):
        "The enrolled card's wallet: id and balance"
        card_id, = call(self.admin, 'fuel.payment.wallet.card', 'search', [
                ('number', '=', DEMO_VEHICLE['card'])], 0, None, None)
        card = self.read_one(
            'fuel.payment.wallet.card', card_id, ['wallet'])
        wallet = self.read_one(
            'fuel.payment.wallet', card['wallet'], ['balance'])
        return card['wallet'], wallet['balance']

    def wallet_moves(self, wallet, after=0):
        ids = call(self.admin, 'fuel.payment.wallet.move', 'search', [
                ('wallet', '=', wallet), ('id', '>', after)],
            0, None, [('id', 'ASC')])
        return call(self.admin, 'fuel.payment.wallet.move', 'read', ids,
            ['amount', 'kind', 'card.number'])

    def last(self, model):
        ids = call(self.admin, model, 'search', [], 0, 1, [('id', 'DESC')])
        return ids[0] if ids else 0


@pytest.fixture(scope='module')
def station(plate_server, tmp_path_factory):
    admin = xmlrpc_proxy(plate_server, 'admin')
    # pre-pay: the box authorises only on the server's command
    call(admin, 'fuel.device.configuration', 'write', [1], {
            'authorization': 'prepay'})
    station = PlateStation(plate_server, tmp_path_factory.mktemp('box'))
    try:
        station.start_process()
        for nozzle, price in OPENING.items():
            station.loop.until(
                lambda n=nozzle, p=price: station.prices(n) == p,
                what=f"nozzle {nozzle} programmed at {price}")
        yield station
    finally:
        station.close()
        log = station.directory / 'box.log'
        if log.exists():
            print(log.read_text()[-4000:])


def test_enrolled_car_is_charged_to_its_member(station):
    """The camera reads the enrolled car; at the lift the server authorises
    the nozzle with the agreement's preset; the fill is charged once to
    the member's wallet, with the read as evidence"""
    wallet, balance = station.card()
    moves_before = station.last('fuel.payment.wallet.move')
    plate = DEMO_VEHICLE['plate']

    station.car_passes(plate, seed=1)
    read, = station.until(
        lambda: station.reads(plate), "the read of the enrolled car",
        timeout=READ_TIMEOUT)
    vehicle_id, = call(station.admin, 'fuel.plate.vehicle', 'search', [
            ('plate', '=', plate)], 0, None, None)
    assert read['vehicle'] == vehicle_id
    assert read['colour'] == DEMO_VEHICLE['colour']
    assert read['zone_code'] == DEMO_BOX['camera']['zone']
    assert read['zone'] and read['zone_kind'] == 'island'
    assert read['camera.']['identifier'] == DEMO_BOX['camera']['identifier']
    assert read['station.']['code'] == DEMO_BOX['station']
    assert read['confidence'] >= D('0.8')
    assert read['image_state'] == 'kept' and read['image']

    # pre-pay: only the server's authorize command lets the pump deliver
    before = station.last_id()
    station.lift(1)
    binding, = station.bindings([('nozzle.station_number', '=', 1)])
    assert binding['state'] == 'draft'
    assert binding['vehicle'] == vehicle_id
    assert binding['plate_read'] == read['id']
    # the agreement's limit: the wallet holds more
    assert balance > D(DEMO_VEHICLE['limit'])
    assert binding['preset_amount'] == D(DEMO_VEHICLE['limit'])
    command = station.until(
        lambda: [c for c in [station.read_one(
                        'fuel.device.command', binding['command'],
                        ['kind', 'state', 'payload'])]
                if c['state'] == 'acked'],
        "the authorize command acked")[0]
    assert command['kind'] == 'authorize'
    assert json.loads(command['payload']) == {
        'version': 1, 'station_number': 1,
        'preset_amount': DEMO_VEHICLE['limit']}
    pump, _ = station.pump(1)
    assert pump.preset_amount == D(DEMO_VEHICLE['limit'])

    station.flow(1, D('10.000'))
    station.hang(1)
    station.loop.until(
        lambda: pump.status is PumpStatus.RESET, what="sale closed")
    transaction, = station.new_transactions(before, 1)
    amount = D('75.80')  # 10 L at 7.58
    assert transaction['amount'] == amount
    # the box names the command that released the fill
    assert transaction['authorization'] == binding['command']

    charged, = station.until(
        lambda: station.bindings([
                ('id', '=', binding['id']), ('state', '=', 'charged')]),
        "the binding charged")
    assert charged['transaction'] == transaction['id']
    assert charged['vehicle'] == vehicle_id
    assert charged['plate_read'] == read['id']
    assert charged['candidates']  # the evidence the engine scored
    order = station.read_one('fuel.payment.order', charged['order'], [
            'state', 'amount_paid', 'total', 'transactions'])
    assert order['transactions'] == [transaction['id']]
    assert order['amount_paid'] == order['total'] == amount
    assert order['state'] in {'paid', 'posted'}
    assert station.read_one('fuel.payment.transaction', transaction['id'],
        ['state'])['state'] in {'paid', 'posted'}

    # charged once: one payment move, the wallet down by the amount
    time.sleep(1)  # a second charge would come now
    moves = station.wallet_moves(wallet, moves_before)
    assert [(m['amount'], m['card.']['number']) for m in moves] == [
        (-amount, DEMO_VEHICLE['card'])]
    assert station.card() == (wallet, balance - amount)


def test_unknown_car_is_not_charged(station):
    """A car the operator does not know: no authorisation by the server,
    the attendant authorises the pump, nothing is charged and the
    binding is dropped with the reason"""
    wallet, balance = station.card()
    moves_before = station.last('fuel.payment.wallet.move')

    station.car_passes(UNKNOWN_PLATE, seed=11)
    read, = station.until(
        lambda: station.reads(UNKNOWN_PLATE), "the read of the unknown car",
        timeout=READ_TIMEOUT)
    assert read['vehicle'] is None
    assert read['zone_code'] == DEMO_BOX['camera']['zone']

    before = station.last_id()
    station.lift(2, authorised=False)
    binding, = station.until(
        lambda: station.bindings([
                ('nozzle.station_number', '=', 2),
                ('plate_read', '=', None), ('state', '=', 'draft')]),
        "the binding opened at the lift")
    assert binding['command'] is None and binding['preset_amount'] is None
    assert UNKNOWN_PLATE in binding['reason']
    pump, _ = station.pump(2)
    time.sleep(1.5)  # the server sends nothing: the pump keeps waiting
    assert pump.status is not PumpStatus.AUTHORIZED
    assert AUTHORIZE_WAIT > 1.5

    # the attendant authorises the pump, as the point of sale does
    box, = call(station.admin, 'fuel.device.box', 'search', [
            ('identifier', '=', DEMO_BOX['identifier'])], 0, None, None)
    call(station.admin, 'fuel.device.command', 'create', [{
                'box': box, 'kind': 'authorize',
                'payload': json.dumps({
                        'version': 1, 'station_number': 2,
                        'preset_amount': '100.00'})}])
    station.loop.until(
        lambda: pump.status is PumpStatus.AUTHORIZED,
        what="nozzle 2 authorised by the attendant")
    station.flow(2, D('2.000'))
    # an authorize that comes once the pump fills (the server's, on a
    # post-pay station whose box authorised the lift itself) is refused
    # by the pump: the box must answer it failed, not acked
    late, = call(station.admin, 'fuel.device.command', 'create', [{
                'box': box, 'kind': 'authorize',
                'payload': json.dumps({
                        'version': 1, 'station_number': 2,
                        'preset_amount': '300.00'})}])
    failed = station.until(
        lambda: [c for c in [station.read_one(
                        'fuel.device.command', late, ['state'])]
                if c['state'] != 'pending' and c['state'] != 'sent'],
        "the late authorize answered")[0]
    assert failed['state'] == 'failed'
    station.flow(2, D('3.000'))
    station.hang(2)
    station.loop.until(
        lambda: pump.status is PumpStatus.RESET, what="sale closed")
    transaction, = station.new_transactions(before, 1)

    dropped, = station.until(
        lambda: station.bindings([
                ('id', '=', binding['id']), ('state', '=', 'rejected')]),
        "the binding dropped")
    assert dropped['transaction'] == transaction['id']
    assert dropped['vehicle'] is None and dropped['order'] is None
    assert UNKNOWN_PLATE in dropped['reason']
    assert station.read_one('fuel.payment.transaction', transaction['id'],
        ['state'])['state'] == 'to_pay'
    assert station.wallet_moves(wallet, moves_before) == []
    assert station.card() == (wallet, balance)
