# This file is part of fuelpay.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
import json
from decimal import Decimal

from trytond.model.exceptions import AccessError, SQLConstraintError
from trytond.modules.company.tests import (
    CompanyTestMixin,
    create_company,
    set_company,
)
from trytond.pool import Pool
from trytond.tests.test_tryton import ModuleTestCase, with_transaction
from trytond.transaction import Transaction, check_access

from addons.fuel_station.tests.tools import (
    FuelDatabaseMixin,
    FuelModuleTestMixin,
)

from ..exceptions import BoxPairError
from .tools import create_box, create_station_with_price


def event(uuid, seq, **values):
    return dict({
            'uuid': uuid, 'seq': seq, 'kind': 'nozzle_up',
            'device': 'pump-1', 'device_time': '2026-11-24T10:00:00+08:00',
            'payload': {'nozzle': 1},
            }, **values)


class FuelDeviceTestCase(
        FuelDatabaseMixin, FuelModuleTestMixin, CompanyTestMixin,
        ModuleTestCase):
    "Test Fuel Device module"
    module = 'fuel_device'

    @with_transaction()
    def test_ingest_idempotent(self):
        "Test a replayed event is a duplicate and creates nothing"
        pool = Pool()
        Event = pool.get('fuel.device.event')
        company = create_company()
        with set_company(company):
            station = create_station_with_price(company, 'S1')
            box, _ = create_box(station, 'BOX-1')
            items = [
                event('u-1', 1, payload={'volume': Decimal('10.010')}),
                event('u-2', 2)]

            first = Event.ingest(box, items)
            again = Event.ingest(box, items)

            self.assertEqual(
                [(r['uuid'], r['status']) for r in first],
                [('u-1', 'accepted'), ('u-2', 'accepted')])
            self.assertEqual(
                [(r['uuid'], r['status']) for r in again],
                [('u-1', 'duplicate'), ('u-2', 'duplicate')])
            events = Event.search([], order=[('seq', 'ASC')])
            self.assertEqual(len(events), 2)
            # the exact digits are kept, never through float
            self.assertEqual(
                json.loads(events[0].payload), {'volume': '10.010'})
            self.assertEqual(str(events[0].device_time), '2026-11-24 02:00:00')

    @with_transaction()
    def test_ingest_bad_item_stored(self):
        "Test a bad item is stored in error and does not stop the others"
        pool = Pool()
        Event = pool.get('fuel.device.event')
        company = create_company()
        with set_company(company):
            station = create_station_with_price(company, 'S1')
            box, _ = create_box(station, 'BOX-1')

            results = Event.ingest(box, [
                    event('u-1', 1),
                    event('u-2', 2, kind='teleport'),
                    {'seq': 3, 'kind': 'alarm'},
                    'garbage',
                    event('u-5', 5, device_time='yesterday'),
                    event('u-6', 6),
                    ])

            self.assertEqual(
                [r['status'] for r in results],
                ['accepted', 'error', 'error', 'error', 'error',
                    'accepted'])
            self.assertEqual(
                results[1]['error'],
                'The value "teleport" of "kind" is not valid.')
            self.assertEqual(
                results[2]['error'], 'The value of "uuid" is missing.')
            self.assertIn('The value "garbage" of "item"', results[3]['error'])
            self.assertEqual(Event.search([], count=True), 6)
            bad, = Event.search([('uuid', '=', 'u-2')])
            self.assertEqual(bad.state, 'error')
            # the whole item is kept to be looked at later
            self.assertEqual(json.loads(bad.payload)['kind'], 'teleport')
            # the error is the first result of a replay
            again, = Event.ingest(box, [event('u-2', 2)])
            self.assertEqual(again['status'], 'duplicate')
            self.assertEqual(again['error'], results[1]['error'])

    @with_transaction()
    def test_ingest_seq_unique(self):
        "Test a sequence is used once per box, and a uuid once at all"
        pool = Pool()
        Event = pool.get('fuel.device.event')
        company = create_company()
        with set_company(company):
            station = create_station_with_price(company, 'S1')
            box, _ = create_box(station, 'BOX-1')
            other, _ = create_box(station, 'BOX-2')
            Event.ingest(box, [event('u-1', 1)])

            result, = Event.ingest(box, [event('u-2', 1)])
            self.assertEqual(result['status'], 'error')
            self.assertEqual(
                result['error'],
                'The sequence 1 is already used by event "u-1" of the box.')
            # the same sequence on another box is fine
            result, = Event.ingest(other, [event('o-1', 1)])
            self.assertEqual(result['status'], 'accepted')
            result, = Event.ingest(other, [event('u-1', 2)])
            self.assertEqual(
                result['error'],
                'The UUID "u-1" is already used by an event of another box.')
            self.assertEqual(
                Event.search([('state', '=', 'error')], count=True), 2)

    @with_transaction()
    def test_pair_needs_key(self):
        "Test a box is paired only once its user requested a key"
        pool = Pool()
        Box = pool.get('fuel.device.box')
        User = pool.get('res.user')
        company = create_company()
        with set_company(company):
            station = create_station_with_price(company, 'S1')
            user, = User.create([{'login': 'box-lost'}])
            box, = Box.create([{
                        'station': station.id, 'identifier': 'BOX-9',
                        'user': user.id}])
            with self.assertRaises(BoxPairError) as cm:
                Box.pair([box])
            self.assertEqual(
                cm.exception.message,
                'To pair box "BOX-9", its user "box-lost" '
                'must request a key first.')

    @with_transaction()
    def test_commands(self):
        "Test commands go pending -> sent -> acked or failed, once"
        pool = Pool()
        Command = pool.get('fuel.device.command')
        company = create_company()
        with set_company(company):
            station = create_station_with_price(company, 'S1')
            box, _ = create_box(station, 'BOX-1')
            other, _ = create_box(station, 'BOX-2')
            stop = Command.prepare(box, 'stop', {'nozzle': 1})
            price = Command.prepare(
                box, 'price_change', {'unit_price': Decimal('7.580')})
            foreign = Command.prepare(other, 'stop', {})
            Command.save([stop, price, foreign])

            self.assertEqual(Command.fetch(box), [stop, price])
            self.assertEqual(
                [c.to_json() for c in Command.fetch(box)][1],
                {'id': price.id, 'kind': 'price_change',
                    'payload': {'unit_price': '7.580'}})
            results = Command.answer(box, [
                    {'id': stop.id, 'status': 'acked', 'result': 'ok'},
                    {'id': price.id, 'status': 'failed', 'result': 'busy'},
                    {'id': foreign.id, 'status': 'acked'},
                    {'id': stop.id, 'status': 'failed'},
                    ])
            self.assertEqual(
                [r['status'] for r in results],
                ['accepted', 'accepted', 'error', 'duplicate'])
            self.assertEqual(
                results[2]['error'],
                f'The box has no command {foreign.id}.')
            self.assertEqual(
                [(c.state, c.result) for c in [stop, price]],
                [('acked', '"ok"'), ('failed', '"busy"')])
            self.assertEqual(foreign.state, 'pending')
            self.assertEqual(Command.fetch(box), [])

    @with_transaction()
    def test_retire_revokes_key(self):
        "Test retiring a box cancels its key"
        pool = Pool()
        Box = pool.get('fuel.device.box')
        UserApplication = pool.get('res.user.application')
        company = create_company()
        with set_company(company):
            station = create_station_with_price(company, 'S1')
            box, key = create_box(station, 'BOX-1')
            self.assertEqual(box.key_state, 'validated')
            Box.retire([box])
            self.assertIsNone(UserApplication.check(key, 'fuel_device'))
            self.assertEqual(Box(box.id).key_state, 'cancelled')

    @with_transaction()
    def test_tenant_isolation(self):
        "Test an operator sees only the boxes of its stations"
        pool = Pool()
        Box = pool.get('fuel.device.box')
        Event = pool.get('fuel.device.event')
        ModelData = pool.get('ir.model.data')
        User = pool.get('res.user')
        company_a = create_company("Operator A")
        company_b = create_company("Operator B")
        with set_company(company_a):
            station_a = create_station_with_price(company_a, 'A1')
            box_a, _ = create_box(station_a, 'BOX-A')
        with set_company(company_b):
            station_b = create_station_with_price(company_b, 'B1')
            box_b, _ = create_box(station_b, 'BOX-B')
            Event.ingest(box_b, [event('b-1', 1)])
            event_b, = Event.search([])
        admin_a, = User.create([{
                    'login': 'a_admin',
                    'companies': [('add', [company_a.id])],
                    'company': company_a.id,
                    'roles': [('create', [{
                                    'role': ModelData.get_id(
                                        'fuel_station',
                                        'role_operator_admin'),
                                    }])],
                    }])
        with Transaction().set_user(admin_a.id), check_access():
            self.assertEqual(Box.search([]), [box_a])
            self.assertEqual(Event.search([]), [])
            with self.assertRaises(AccessError):
                Box.read([box_b.id], ['identifier'])
            with self.assertRaises(AccessError):
                Event.read([event_b.id], ['payload'])

    def assert_constraint(self, Model, values, message):
        with self.assertRaises(SQLConstraintError) as cm:
            Model.create([values])
        self.assertEqual(cm.exception.message, message)

    @with_transaction()
    def test_event_uuid_unique(self):
        "Test the database refuses a second event with a uuid"
        pool = Pool()
        Event = pool.get('fuel.device.event')
        company = create_company()
        with set_company(company):
            station = create_station_with_price(company, 'S1')
            box, _ = create_box(station, 'BOX-1')
            Event.create([{'box': box.id, 'uuid': 'u-1', 'seq': 1}])
            self.assert_constraint(
                Event, {'box': box.id, 'uuid': 'u-1', 'seq': 2},
                'The UUID of a box event must be unique.')

    @with_transaction()
    def test_event_seq_unique(self):
        "Test the database refuses a second event with a box sequence"
        pool = Pool()
        Event = pool.get('fuel.device.event')
        company = create_company()
        with set_company(company):
            station = create_station_with_price(company, 'S1')
            box, _ = create_box(station, 'BOX-1')
            Event.create([{'box': box.id, 'uuid': 'u-1', 'seq': 1}])
            self.assert_constraint(
                Event, {'box': box.id, 'uuid': 'u-2', 'seq': 1},
                'The sequence of an event must be unique on its box.')

    @with_transaction()
    def test_device_identifier_unique(self):
        "Test a box reports each device identifier once"
        pool = Pool()
        Device = pool.get('fuel.device.device')
        company = create_company()
        with set_company(company):
            station = create_station_with_price(company, 'S1')
            box, _ = create_box(station, 'BOX-1')
            values = {'box': box.id, 'identifier': 'pump-1', 'kind': 'printer'}
            Device.create([values])
            self.assert_constraint(
                Device, values,
                'The identifier of a device must be unique on its box.')


del ModuleTestCase
