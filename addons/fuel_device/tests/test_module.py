# This file is part of fuelpay.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
import datetime as dt
import json
import uuid
from decimal import Decimal

from trytond.i18n import gettext
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

from ..exceptions import BoxPairError, PayloadError
from .tools import create_box, create_price, create_station_with_price


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

    @with_transaction()
    def test_price_push_dispensers_of_the_box(self):
        """Test a box whose devices are linked to dispensers gets the
        prices of those dispensers' nozzles only"""
        pool = Pool()
        Command = pool.get('fuel.device.command')
        Device = pool.get('fuel.device.device')
        Dispenser = pool.get('fuel.station.dispenser')
        Nozzle = pool.get('fuel.station.nozzle')
        Price = pool.get('fuel.station.price')
        company = create_company()
        with set_company(company):
            station = create_station_with_price(company, 'S1')
            nozzle_1, = station.nozzles
            island_2, = Dispenser.create([{
                        'station': station.id, 'name': "Island 2",
                        'protocol': 'dart', 'connection': 'udp',
                        'host': '127.0.0.1', 'port': 5001,
                        'bus_address': 0x51,
                        }])
            Nozzle.create([{
                        'station': station.id, 'dispenser': island_2.id,
                        'number': 1, 'station_number': 2,
                        'grade': nozzle_1.grade.id, 'tank': nozzle_1.tank.id,
                        }])
            linked, _ = create_box(station, 'BOX-1')
            Device.create([{
                        'box': linked.id, 'kind': 'dispenser',
                        'identifier': 'island-2', 'dispenser': island_2.id,
                        }])
            unlinked, _ = create_box(station, 'BOX-2')

            Price.activate([create_price(company, nozzle_1.grade, '7.89')])

            def numbers(box):
                command, = Command.search([('box', '=', box.id)])
                return [
                    n['station_number']
                    for n in command.to_json()['payload']['nozzles']]
            self.assertEqual(numbers(linked), [2])
            self.assertEqual(numbers(unlinked), [1, 2])

    @with_transaction()
    def test_price_push(self):
        """Test an activated price set queues a price change for each
        active box of its stations, and the answer records what each
        nozzle holds"""
        pool = Pool()
        Command = pool.get('fuel.device.command')
        Price = pool.get('fuel.station.price')
        Nozzle = pool.get('fuel.station.nozzle')
        Dispenser = pool.get('fuel.station.dispenser')
        company = create_company()
        other_company = create_company("Operator B")
        with set_company(other_company):
            station_b = create_station_with_price(other_company, 'B1')
            create_box(station_b, 'BOX-B')
        with set_company(company):
            station = create_station_with_price(company, 'S1')
            other_station = create_station_with_price(company, 'S2')
            box, _ = create_box(station, 'BOX-1')
            create_box(station, 'BOX-P', state='paired')
            other_box, _ = create_box(other_station, 'BOX-2')
            nozzle, = station.nozzles
            self.assertIsNone(nozzle.held_price)

            price = create_price(company, nozzle.grade, '7.89')
            Price.activate([price])

            command, = Command.search([('kind', '=', 'price_change')])
            self.assertEqual(command.box, box)
            self.assertEqual(command.state, 'pending')
            self.assertEqual(command.to_json()['payload'], {
                    'version': 1,
                    'price': price.id,
                    'price_name': "New prices",
                    'effective_date': price.effective_date.replace(
                        tzinfo=dt.UTC).isoformat(),
                    'nozzles': [{
                            'station_number': 1, 'unit_price': '7.8900'}],
                    })
            self.assertTrue(
                command.to_json()['payload']['effective_date'].endswith(
                    '+00:00'))

            # a station set reaches the boxes of that station only
            station_price = create_price(
                company, other_station.nozzles[0].grade, '8.01',
                station=other_station)
            Price.activate([station_price])
            command2, = Command.search([('box', '=', other_box.id)])
            self.assertEqual(
                command2.to_json()['payload']['nozzles'],
                [{'station_number': 1, 'unit_price': '8.0100'}])

            Command.fetch(box)
            results = Command.answer(box, [{
                        'id': command.id, 'status': 'acked',
                        'result': {
                            'version': 1, 'price': price.id,
                            'nozzles': [
                                {'station_number': 1, 'unit_price': '7.890',
                                    'status': 'applied', 'error': None},
                                # not a nozzle of the command
                                {'station_number': 7, 'unit_price': '1',
                                    'status': 'applied', 'error': None},
                                ]},
                        }])
            self.assertEqual(results[0]['status'], 'accepted')
            nozzle = Nozzle(nozzle.id)
            self.assertEqual(nozzle.held_price, price)
            self.assertEqual(nozzle.held_unit_price, Decimal('7.8900'))
            self.assertEqual(nozzle.held_date, Command(command.id).done_date)
            self.assertEqual(Dispenser(nozzle.dispenser.id).held_price, price)

            # a nozzle that failed keeps the set it held
            Command.fetch(other_box)
            Command.answer(other_box, [{
                        'id': command2.id, 'status': 'failed',
                        'result': {
                            'version': 1, 'price': station_price.id,
                            'nozzles': [
                                {'station_number': 1, 'unit_price': '8.01',
                                    'status': 'failed', 'error': 'busy'},
                                ]},
                        }])
            other_nozzle, = Nozzle.search([('station', '=', other_station)])
            self.assertIsNone(other_nozzle.held_price)
            self.assertIsNone(other_nozzle.dispenser.held_price)

    @with_transaction()
    def test_policy(self):
        "Test the setup policy comes from the configuration"
        pool = Pool()
        Configuration = pool.get('fuel.device.configuration')
        config = Configuration(1)
        self.assertEqual(config.policy(), {
                'authorization': 'postpay',
                'max_amount': '500.00',
                'max_volume': '200.000',
                'heartbeat_interval': 30,
                'command_wait': 25,
                })
        self.assertEqual(config.silence_delay, 120)
        config.authorization = 'prepay'
        config.max_amount = Decimal('300')
        config.save()
        policy = Configuration(1).policy()
        self.assertEqual(
            (policy['authorization'], policy['max_amount']),
            ('prepay', '300.00'))

    @with_transaction()
    def test_heartbeat(self):
        """Test a heartbeat records device statuses, their history and
        opens or clears error alarms"""
        pool = Pool()
        Box = pool.get('fuel.device.box')
        Device = pool.get('fuel.device.device')
        Alarm = pool.get('fuel.device.alarm')
        Log = pool.get('fuel.device.status.log')
        company = create_company()
        with set_company(company):
            station = create_station_with_price(company, 'S1')
            box, _ = create_box(station, 'BOX-1')
            Device.report(box, [
                    {'identifier': 'pump-1', 'kind': 'dispenser'},
                    {'identifier': 'printer', 'kind': 'printer'},
                    ])
            devices = {d.identifier: d for d in Box(box.id).devices}
            pump = devices['pump-1']

            Device.heartbeat(box, [
                    {'identifier': 'pump-1', 'status': 'error'},
                    {'identifier': 'printer', 'status': 'disconnected'},
                    ])
            Device.heartbeat(box, [
                    {'identifier': 'pump-1', 'status': 'error'}])
            alarm, = Alarm.search([])
            self.assertEqual(
                (alarm.kind, alarm.device, alarm.state),
                ('device_error', pump, 'open'))
            self.assertEqual(
                [(g.device.identifier, g.status) for g in Log.search(
                        [], order=[('id', 'ASC')])],
                [('pump-1', 'connected'), ('printer', 'connected'),
                    ('pump-1', 'error'), ('printer', 'disconnected')])

            Device.heartbeat(box, [
                    {'identifier': 'pump-1', 'status': 'connected'}])
            self.assertEqual(Alarm(alarm.id).state, 'cleared')
            self.assertTrue(Alarm(alarm.id).cleared_date)
            self.assertEqual(Device(pump.id).status, 'connected')

            with self.assertRaises(PayloadError) as cm:
                Device.heartbeat(box, [
                        {'identifier': 'pump-9', 'status': 'connected'}])
            self.assertEqual(
                cm.exception.message,
                gettext(
                    'fuel_device.msg_device_unknown',
                    box='BOX-1', device='pump-9'))
            with self.assertRaises(PayloadError):
                Device.heartbeat(box, [
                        {'identifier': 'pump-1', 'status': 'asleep'}])

    @with_transaction()
    def test_silence_alarms(self):
        """Test the cron opens one alarm per silent box or device and
        clears it when heard again"""
        pool = Pool()
        Box = pool.get('fuel.device.box')
        Device = pool.get('fuel.device.device')
        Alarm = pool.get('fuel.device.alarm')
        company = create_company()
        with set_company(company):
            station = create_station_with_price(company, 'S1')
            box, _ = create_box(station, 'BOX-1')
            other, _ = create_box(station, 'BOX-2')
            pump = {'identifier': 'pump-1', 'kind': 'dispenser'}
            Device.report(box, [pump])
            Device.report(other, [pump])
            device, = Box(box.id).devices
            long_ago = dt.datetime.now() - dt.timedelta(seconds=121)
            Box.write([box], {'last_seen': long_ago})
            Box.write([other], {'last_seen': dt.datetime.now()})
            Device.write(
                list(Box(other.id).devices), {'last_seen': long_ago})

            Alarm.check_silence()
            Alarm.check_silence()
            self.assertEqual(
                sorted((a.box.identifier, a.kind, a.device is not None)
                    for a in Alarm.search([('state', '=', 'open')])),
                [('BOX-1', 'box_silent', False),
                    ('BOX-2', 'device_silent', True)])

            Box.seen([box])
            Device.heartbeat(other, [
                    {'identifier': 'pump-1', 'status': 'connected'}])
            self.assertEqual(Alarm.search([('state', '=', 'open')]), [])
            Alarm.check_silence()
            self.assertEqual(Alarm.search([('state', '=', 'open')]), [])

            # a device silent but heard again by the time the cron runs
            Device.write([device], {'last_seen': long_ago})
            Alarm.check_silence()
            alarm, = Alarm.search([('state', '=', 'open')])
            self.assertEqual(alarm.device, device)
            Device.write([device], {'last_seen': dt.datetime.now()})
            Alarm.check_silence()
            self.assertEqual(Alarm(alarm.id).state, 'cleared')

    @with_transaction()
    def test_alarm_event(self):
        "Test an alarm event opens a dispenser alarm and is processed"
        pool = Pool()
        Event = pool.get('fuel.device.event')
        Device = pool.get('fuel.device.device')
        Alarm = pool.get('fuel.device.alarm')
        company = create_company()
        with set_company(company):
            station = create_station_with_price(company, 'S1')
            box, _ = create_box(station, 'BOX-1')
            Device.report(box, [{'identifier': 'pump-1', 'kind': 'dispenser'}])
            result, = Event.ingest(box, [event(
                        'a-1', 1, kind='alarm',
                        payload={'code': 'E12', 'message': "Pulser fault"})])
            self.assertEqual(result['status'], 'accepted')
            stored, = Event.search([('uuid', '=', 'a-1')])
            self.assertEqual(stored.state, 'processed')
            alarm, = Alarm.search([])
            self.assertEqual(
                (alarm.kind, alarm.device.identifier, alarm.message,
                    alarm.state),
                ('dispenser', 'pump-1', "Pulser fault", 'open'))
            self.assertEqual(str(alarm.date), '2026-11-24 02:00:00')
            Alarm.clear([alarm])
            self.assertEqual(alarm.state, 'cleared')

    @with_transaction()
    def test_availability(self):
        "Test the availability is the connected share of each day"
        pool = Pool()
        Device = pool.get('fuel.device.device')
        Log = pool.get('fuel.device.status.log')
        Availability = pool.get('fuel.device.availability')
        company = create_company()
        with set_company(company):
            station = create_station_with_price(company, 'S1')
            box, _ = create_box(station, 'BOX-1')
            device, = Device.create([{
                        'box': box.id, 'identifier': 'pump-1',
                        'kind': 'dispenser'}])
            today = dt.datetime.combine(dt.date.today(), dt.time())
            day = dt.timedelta(days=1)
            Log.create([
                    {'device': device.id, 'status': 'connected',
                        'date': today - day},
                    {'device': device.id, 'status': 'disconnected',
                        'date': today - day + dt.timedelta(hours=6)},
                    {'device': device.id, 'status': 'connected',
                        'date': today - day + dt.timedelta(hours=12)},
                    ])

            rows = Availability.search([('device', '=', device.id)])
            self.assertEqual(
                [(r.date, r.box, round(r.availability, 4)) for r in rows],
                [(today.date(), box, 1.0),
                    ((today - day).date(), box, 0.75)])

    @with_transaction()
    def test_transaction_dispenser_price(self):
        """Test a completed fill records the price set its dispenser held
        when it is one of the operator's"""
        pool = Pool()
        Event = pool.get('fuel.device.event')
        Price = pool.get('fuel.station.price')
        FuelTransaction = pool.get('fuel.payment.transaction')
        company = create_company()
        other_company = create_company("Operator B")
        with set_company(other_company):
            create_station_with_price(other_company, 'B1')
            foreign, = Price.search([('company', '=', other_company.id)])
        with set_company(company):
            station = create_station_with_price(company, 'S1')
            box, _ = create_box(station, 'BOX-1')
            price, = Price.search([('company', '=', company.id)])
            fills = [str(uuid.uuid4()) for _ in range(3)]
            payload = {
                'station_nozzle': 1, 'volume': Decimal('10.00'),
                'unit_price': Decimal('7.58'), 'amount': Decimal('75.80')}
            results = Event.ingest(box, [
                    event(fills[0], 1, kind='transaction_completed',
                        payload=dict(payload, price_set_id=price.id)),
                    event(fills[1], 2, kind='transaction_completed',
                        payload=dict(payload, price_set_id=foreign.id)),
                    event(fills[2], 3, kind='transaction_completed',
                        payload=dict(payload, price_set_id=None)),
                    ])
            self.assertEqual(
                [r['status'] for r in results], ['accepted'] * 3)
            held = {
                t.uuid: t.dispenser_price
                for t in FuelTransaction.search([])}
            self.assertEqual(
                [held[u] for u in fills], [price, None, None])


del ModuleTestCase
