# This file is part of fuelpay.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
import time
import uuid
from decimal import Decimal
from http import HTTPStatus
from unittest import mock

from trytond.modules.company.tests import create_company, set_company
from trytond.pool import Pool
from trytond.tests.test_tryton import DB_NAME, RouteTestCase
from trytond.transaction import Transaction

from addons.fuel_station.tests.tools import FuelDatabaseMixin

from .. import routes, wakeup
from .tools import create_box, create_station_with_price

SETUP = {
    'identifier': 'BOX-1',
    'version': '0.1.0',
    'devices': [
        {'identifier': 'dart-0x50', 'kind': 'dispenser', 'protocol': 'dart',
            'connection': 'udp://10.0.0.5:5001'},
        {'identifier': 'printer', 'kind': 'printer'},
        ],
    }
# the uuids of the events the box sends (fuel_payment wants real ones)
R1, R2, R3 = (str(uuid.uuid4()) for _ in range(3))


def event(uuid_, seq, **values):
    return dict({
            'uuid': uuid_, 'seq': seq, 'kind': 'transaction_completed',
            'device': 'dart-0x50', 'device_time': '2026-11-24T02:00:00Z',
            # a whole fill: with fuel_payment active it becomes a
            # fuelling transaction, which needs its nozzle
            'payload': {
                'station_nozzle': 1, 'volume': 10.01, 'unit_price': 7.58,
                'amount': 75.88},
            }, **values)


class FuelDeviceRouteTestCase(FuelDatabaseMixin, RouteTestCase):
    "Test the routes the station service calls"
    module = 'fuel_device'
    key = requested_key = command = box = None

    @classmethod
    def setUpDatabase(cls):
        pool = Pool()
        Command = pool.get('fuel.device.command')
        company = create_company()
        with set_company(company):
            station = create_station_with_price(company, 'S1')
            box, cls.key = create_box(station, 'BOX-1')
            cls.box = box.id
            _, cls.requested_key = create_box(
                station, 'BOX-2', state='pending')
            cls.command = Command.prepare(
                box, 'price_change', {'unit_price': Decimal('7.6000')})
            cls.command.save()
            cls.command = cls.command.id

    @classmethod
    def tearDownClass(cls):
        # on PostgreSQL the wait route's listener holds a connection to
        # the database: give it back before the database is dropped
        wakeup.stop(DB_NAME, timeout=10)
        super().tearDownClass()

    def headers(self, key=None):
        return {'Authorization': f'Bearer {key or self.key}'}

    def url(self, name):
        return f'/{self.db_name}/fuel_device/{name}'

    def test_unvalidated_key(self):
        "Test a key requested but not validated gets 401"
        client = self.client()
        for key in [self.requested_key, 'unknown']:
            with self.subTest(key=key):
                response = client.post(
                    self.url('setup'), json=SETUP, headers=self.headers(key))
                self.assertEqual(response.status_code, HTTPStatus.UNAUTHORIZED)
        response = client.get(self.url('commands'))
        self.assertEqual(response.status_code, HTTPStatus.UNAUTHORIZED)

    def test_setup(self):
        "Test setup records the devices and answers prices as strings"
        response = self.client().post(
            self.url('setup'), json=SETUP, headers=self.headers())

        self.assertEqual(response.status_code, HTTPStatus.OK)
        data = response.json
        self.assertEqual(data['version'], 1)
        self.assertEqual(data['box'], 'BOX-1')
        nozzle, = data['nozzles']
        self.assertEqual(nozzle['station_number'], 1)
        self.assertEqual(nozzle['bus_address'], 0x50)
        self.assertIsInstance(nozzle['unit_price'], str)
        self.assertEqual(Decimal(nozzle['unit_price']), Decimal('7.58'))
        self.assertEqual(
            sorted((d['identifier'], d['kind']) for d in data['devices']),
            [('dart-0x50', 'dispenser'), ('printer', 'printer')])

    def test_setup_other_identifier(self):
        "Test a box cannot report itself with another identifier"
        response = self.client().post(
            self.url('setup'), json=dict(SETUP, identifier='BOX-2'),
            headers=self.headers())
        self.assertEqual(response.status_code, HTTPStatus.BAD_REQUEST)
        self.assertEqual(
            response.json['message'],
            'The key belongs to another box than "BOX-2".')

    def test_events(self):
        "Test events are idempotent and a bad item gets its own error"
        client = self.client()
        batch = {'version': 1, 'events': [
                event(R1, 101),
                event(R2, 102, kind=None),
                event(R3, 103),
                ]}
        response = client.post(
            self.url('events'), json=batch, headers=self.headers())
        self.assertEqual(response.status_code, HTTPStatus.OK)
        self.assertEqual(
            [(r['uuid'], r['status']) for r in response.json['results']],
            [(R1, 'accepted'), (R2, 'error'), (R3, 'accepted')])
        self.assertEqual(
            response.json['results'][1]['error'],
            'The value of "kind" is missing.')

        response = client.post(
            self.url('events'), json=batch, headers=self.headers())
        self.assertEqual(
            [r['status'] for r in response.json['results']],
            ['duplicate'] * 3)

    def test_events_not_a_batch(self):
        "Test a body without events is refused"
        response = self.client().post(
            self.url('events'), json={'version': 1}, headers=self.headers())
        self.assertEqual(response.status_code, HTTPStatus.BAD_REQUEST)

    def test_server_failure_is_500(self):
        "Test an unexpected failure is answered 500, for the box to retry"
        with mock.patch.object(
                routes, '_data', side_effect=RuntimeError("boom")), \
                self.assertLogs(routes.logger, 'ERROR'):
            response = self.client().post(
                self.url('events'), json={'version': 1, 'events': []},
                headers=self.headers())
        self.assertEqual(
            response.status_code, HTTPStatus.INTERNAL_SERVER_ERROR)
        self.assertNotIn(b'boom', response.data)

    def test_commands_and_ack(self):
        "Test the box fetches its commands and acknowledges them"
        client = self.client()
        response = client.get(self.url('commands'), headers=self.headers())
        self.assertEqual(response.status_code, HTTPStatus.OK)
        self.assertEqual(response.json['commands'], [{
                    'id': self.command, 'kind': 'price_change',
                    'payload': {'unit_price': '7.6000'}}])

        response = client.post(
            self.url('ack'), headers=self.headers(), json={
                'version': 1, 'commands': [
                    {'id': self.command, 'status': 'acked',
                        'result': {'nozzles': [1]}},
                    {'id': 999999, 'status': 'acked'}]})
        self.assertEqual(response.status_code, HTTPStatus.OK)
        self.assertEqual(
            [r['status'] for r in response.json['results']],
            ['accepted', 'error'])
        response = client.get(self.url('commands'), headers=self.headers())
        self.assertEqual(response.json['commands'], [])

    def test_setup_policy(self):
        "Test setup answers the policy of the configuration"
        response = self.client().post(
            self.url('setup'), json=SETUP, headers=self.headers())
        self.assertEqual(response.status_code, HTTPStatus.OK)
        self.assertEqual(response.json['policy'], {
                'authorization': 'postpay',
                'max_amount': '500.00',
                'max_volume': '200.000',
                'heartbeat_interval': 30,
                'command_wait': 25,
                })

    def test_heartbeat(self):
        "Test a heartbeat records the device statuses"
        client = self.client()
        client.post(self.url('setup'), json=SETUP, headers=self.headers())
        response = client.post(
            self.url('heartbeat'), headers=self.headers(), json={
                'version': 1, 'devices': [
                    {'identifier': 'dart-0x50', 'status': 'error'},
                    {'identifier': 'printer', 'status': 'connected'}]})
        self.assertEqual(response.status_code, HTTPStatus.OK)
        self.assertEqual(response.json['version'], 1)
        self.assertIsInstance(response.json['pending'], int)
        with Transaction().start(DB_NAME, 0):
            pool = Pool()
            Device = pool.get('fuel.device.device')
            Alarm = pool.get('fuel.device.alarm')
            device, = Device.search([('identifier', '=', 'dart-0x50')])
            self.assertEqual(device.status, 'error')
            self.assertEqual(
                Alarm.search([
                        ('device', '=', device.id),
                        ('state', '=', 'open')], count=True), 1)

        response = client.post(
            self.url('heartbeat'), headers=self.headers(), json={
                'version': 1, 'devices': [
                    {'identifier': 'dart-0x99', 'status': 'connected'}]})
        self.assertEqual(response.status_code, HTTPStatus.BAD_REQUEST)
        self.assertEqual(
            response.json['message'],
            'Box "BOX-1" has no device "dart-0x99"; '
            'report it in the setup first.')
        response = client.post(
            self.url('heartbeat'), json={'version': 1, 'devices': []},
            headers=self.headers(key=self.requested_key))
        self.assertEqual(response.status_code, HTTPStatus.UNAUTHORIZED)

    def create_command(self):
        with Transaction().start(DB_NAME, 0):
            pool = Pool()
            Box = pool.get('fuel.device.box')
            Command = pool.get('fuel.device.command')
            command = Command.prepare(Box(self.box), 'stop', {'nozzle': 1})
            command.save()

    def drain_commands(self, client):
        "Fetch and acknowledge the commands of the box"
        commands = client.get(
            self.url('commands'), headers=self.headers()).json['commands']
        client.post(self.url('ack'), headers=self.headers(), json={
                'version': 1, 'commands': [
                    {'id': c['id'], 'status': 'acked', 'result': None}
                    for c in commands]})

    def test_wait(self):
        "Test wait answers at once when a command is pending, else at timeout"
        client = self.client()
        self.drain_commands(client)
        start = time.monotonic()
        response = client.post(
            self.url('wait'), headers=self.headers(),
            json={'version': 1, 'timeout': 1})
        self.assertEqual(response.status_code, HTTPStatus.OK)
        self.assertEqual(response.json, {'version': 1, 'pending': 0})
        self.assertGreaterEqual(time.monotonic() - start, 1)

        self.create_command()
        start = time.monotonic()
        response = client.post(
            self.url('wait'), headers=self.headers(),
            json={'version': 1, 'timeout': 30})
        self.assertEqual(response.json, {'version': 1, 'pending': 1})
        self.assertLess(time.monotonic() - start, 5)
        self.drain_commands(client)

        response = client.post(
            self.url('wait'), headers=self.headers(),
            json={'version': 1, 'timeout': 'soon'})
        self.assertEqual(response.status_code, HTTPStatus.BAD_REQUEST)
        response = client.post(
            self.url('wait'), headers=self.headers(key=self.requested_key),
            json={'version': 1})
        self.assertEqual(response.status_code, HTTPStatus.UNAUTHORIZED)
