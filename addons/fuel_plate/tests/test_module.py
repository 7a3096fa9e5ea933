# This file is part of fuelpay.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
import base64
import datetime as dt
from decimal import Decimal

from trytond import backend
from trytond.exceptions import UserError
from trytond.i18n import gettext
from trytond.model.exceptions import ValidationError
from trytond.modules.company.tests import (
    CompanyTestMixin,
    create_company,
    set_company,
)
from trytond.pool import Pool
from trytond.tests.test_tryton import ModuleTestCase, with_transaction
from trytond.transaction import Transaction

from addons.fuel_device.event import loads
from addons.fuel_payment.tests.tools import (
    create_card,
    create_grade,
    create_wallet,
    fund,
)
from addons.fuel_station.tests.tools import (
    FuelDatabaseMixin,
    FuelModuleTestMixin,
)

from ..binding import payment_uuid
from ..plate import check_plate, normalize_plate, plate_kind
from .tools import (
    completed,
    create_agreement,
    create_camera_setup,
    create_plate_setup,
    create_vehicle,
    ingest,
    now,
    nozzle_up,
    plate_read,
)


def message(msg_id, **values):
    return gettext(f'fuel_plate.{msg_id}', **values)


# the time the fills of a scenario end: the scenarios of one test run
# ten minutes apart, so that the reads of one are outside the time window
# of the next
_base = [None]


def start_scenario(minutes_ago):
    _base[0] = now() - dt.timedelta(minutes=minutes_ago)


def seconds(n):
    "n seconds before the end of the scenario's fills"
    return (_base[0] or now()) - dt.timedelta(seconds=n)


class FuelPlateTestCase(
        FuelDatabaseMixin, FuelModuleTestMixin, CompanyTestMixin,
        ModuleTestCase):
    "Test Fuel Plate module"
    module = 'fuel_plate'

    def fuel(self, setup, *reads, volume='20.000', lift=True):
        """Ingest the reads, a lift of nozzle 1 and its completed fill;
        return the binding of the fill (or None) and the transaction"""
        pool = Pool()
        Binding = pool.get('fuel.plate.binding')
        FuelTransaction = pool.get('fuel.payment.transaction')
        box = setup['box']
        if reads:
            ingest(box, *reads)
        if lift:
            ingest(box, nozzle_up(date=seconds(20)))
        fill = completed(volume, date=seconds(0))
        result, = ingest(box, fill)
        self.assertEqual(result['status'], 'accepted', msg=result)
        transaction, = FuelTransaction.search([('uuid', '=', fill['uuid'])])
        bindings = Binding.search([('transaction', '=', transaction.id)])
        return (bindings[0] if bindings else None), transaction

    # ---- plates --------------------------------------------------------

    def test_plate_formats(self):
        "Test every Chinese plate format is recognised with its colours"
        for plate, kind, colour in [
                ('京A12345', 'standard', 'blue'),
                ('京AF0236', 'standard', 'yellow'),
                ('粤BD12345', 'new_energy', 'green'),
                ('粤B12345D', 'new_energy', 'green'),
                ('京A1234学', 'coach', 'yellow'),
                ('京A1234警', 'police', 'white'),
                ('鲁B1234挂', 'trailer', 'yellow'),
                ('粤Z1234港', 'hong_kong', 'black'),
                ('粤Z1234澳', 'macau', 'black'),
                ('沪A1234领', 'consulate', 'black'),
                ('123456使', 'embassy', 'black'),
                ]:
            with self.subTest(plate=plate):
                self.assertEqual(plate_kind(plate), kind)
                check_plate(plate, colour)
        for plate in [
                '京A1234', '京A123456', 'XA12345', '京I12345', '京AO1234',
                '京A1234港', '粤B1234D5', '京A12345学', '']:
            with self.subTest(plate=plate):
                self.assertIsNone(plate_kind(plate))
        self.assertEqual(normalize_plate(' 京a·12345 '), '京A12345')
        self.assertEqual(normalize_plate('粤Ｂ－１２３４５Ｄ'), '粤B12345D')

    def test_plate_colour_consistency(self):
        "Test a colour the format never has is refused"
        for plate, colour in [
                ('京A12345', 'green'), ('粤B12345D', 'blue'),
                ('京A1234警', 'blue'), ('粤Z1234港', 'yellow'),
                ('京A1234学', 'blue')]:
            with self.subTest(plate=plate, colour=colour):
                with self.assertRaises(ValidationError) as cm:
                    check_plate(plate, colour)
                self.assertEqual(cm.exception.message, message(
                        'msg_plate_colour', plate=plate, colour=colour))

    @with_transaction()
    def test_vehicle_plate(self):
        "Test a vehicle stores its plate normalised, validated and once"
        company = create_company()
        with set_company(company):
            vehicle = create_vehicle(company, '京a·12345')
            self.assertEqual(vehicle.plate, '京A12345')
            self.assertEqual(vehicle.plate_kind, 'standard')
            with self.assertRaises(ValidationError) as cm:
                create_vehicle(company, '京A1234')
            self.assertEqual(cm.exception.message, message(
                    'msg_plate_invalid', plate='京A1234'))
            with self.assertRaises(ValidationError) as cm:
                create_vehicle(company, '粤B12345D', colour='blue')
            self.assertEqual(cm.exception.message, message(
                    'msg_plate_colour', plate='粤B12345D', colour='blue'))
            with self.assertRaises(UserError) as cm:
                create_vehicle(company, '京A 12345')
            self.assertEqual(cm.exception.message, message(
                    'msg_vehicle_plate_unique'))

    # ---- agreements ----------------------------------------------------

    @with_transaction()
    def test_agreement_rules(self):
        "Test the card, default payer and blocked card rules of agreements"
        pool = Pool()
        Agreement = pool.get('fuel.plate.agreement')
        Card = pool.get('fuel.payment.wallet.card')
        company = create_company()
        with set_company(company):
            setup = create_plate_setup(company)
            vehicle = setup['vehicle']
            self.assertEqual(setup['agreement'].state, 'active')
            self.assertTrue(setup['agreement'].agreed_date)
            with self.assertRaises(ValidationError) as cm:
                Agreement.delete([setup['agreement']])
            self.assertEqual(cm.exception.message, message(
                    'msg_agreement_delete',
                    agreement=setup['agreement'].rec_name))
            other = create_wallet(company, name="Li Lei")
            with self.assertRaises(ValidationError) as cm:
                create_agreement(vehicle, other.party, setup['card'])
            self.assertEqual(cm.exception.message, message(
                    'msg_agreement_card_party',
                    card=setup['card'].rec_name,
                    party=other.party.rec_name))
            card = create_card(other)
            Card.block([card])
            blocked = create_agreement(
                vehicle, other.party, card, enable=False, default=False)
            with self.assertRaises(ValidationError) as cm:
                Agreement.enable([blocked])
            self.assertEqual(cm.exception.message, message(
                    'msg_agreement_card_blocked', card=card.rec_name))
            # PostgreSQL aborts the transaction at a constraint: last
            with self.assertRaises(UserError) as cm:
                create_agreement(vehicle, other.party, create_card(other))
            self.assertEqual(cm.exception.message, message(
                    'msg_agreement_default_unique'))

    @with_transaction()
    def test_offline_list_pushed(self):
        "Test enabling and revoking push the enrolled plates to the boxes"
        pool = Pool()
        Agreement = pool.get('fuel.plate.agreement')
        Command = pool.get('fuel.device.command')
        company = create_company()
        with set_company(company):
            setup = create_plate_setup(company, balance='120')
            command, = Command.search([
                    ('box', '=', setup['box'].id),
                    ('kind', '=', 'configuration')])
            payload = loads(command.payload)
            self.assertEqual(payload['version'], 1)
            self.assertEqual(payload['frictionless_plates'], [{
                        'plate': '京A12345', 'colour': 'blue',
                        # the balance is under the limit of 300; decimals
                        # travel as their digits
                        'limit': '120.00'}])
            Agreement.revoke([setup['agreement']])
            last, = Command.search([
                    ('box', '=', setup['box'].id),
                    ('kind', '=', 'configuration')],
                order=[('id', 'DESC')], limit=1)
            self.assertEqual(
                loads(last.payload)['frictionless_plates'], [])
            # the cron sends nothing the boxes already have
            self.assertEqual(Agreement.push_offline_lists([company]), [])
            fund(setup['wallet'], '10')
            self.assertEqual(
                len(Agreement.push_offline_lists([company])), 0)
            Agreement.write([setup['agreement']], {'state': 'active'})
            pushed, = Agreement.push_offline_lists([company])
            self.assertEqual(loads(pushed.payload)['frictionless_plates'], [
                    {'plate': '京A12345', 'colour': 'blue',
                        'limit': '130.00'}])
            # PostgreSQL aborts the transaction at a constraint: last
            with self.assertRaises(UserError) as cm:
                create_agreement(
                    setup['vehicle'], setup['wallet'].party, setup['card'],
                    default=False)
            self.assertEqual(cm.exception.message, message(
                    'msg_agreement_card_unique'))

    # ---- plate reads ---------------------------------------------------

    @with_transaction()
    def test_plate_read_event(self):
        "Test a plate_read event becomes a read of its zone and vehicle"
        pool = Pool()
        Read = pool.get('fuel.plate.read')
        Event = pool.get('fuel.device.event')
        company = create_company()
        with set_company(company):
            setup = create_camera_setup(company)
            image = base64.b64encode(b'\xff\xd8jpeg').decode()
            item = plate_read(image=image)
            result, = ingest(setup['box'], item)
            self.assertEqual(result['status'], 'accepted')
            read, = Read.search([('uuid', '=', item['uuid'])])
            self.assertEqual(read.vehicle, setup['vehicle'])
            self.assertEqual(read.zone, setup['island'])
            self.assertEqual(read.zone_kind, 'island')
            self.assertEqual(read.confidence, Decimal('0.9500'))
            self.assertEqual(bytes(read.image), b'\xff\xd8jpeg')
            self.assertEqual(read.image_state, 'kept')
            again, = ingest(setup['box'], item)
            self.assertEqual(again['status'], 'duplicate')
            self.assertEqual(Read.search([], count=True), 1)
            bad = [
                plate_read(plate='京A1234'),
                plate_read(colour='red'),
                plate_read(confidence='1.5'),
                plate_read(image='not base64!'),
                ]
            results = ingest(setup['box'], *bad)
            self.assertEqual([r['error'] for r in results], [
                    message('msg_plate_invalid', plate='京A1234'),
                    message('msg_read_value_invalid',
                        field='colour', value='"red"'),
                    message('msg_read_value_invalid', field='confidence',
                        value='"1.5"'),
                    message('msg_read_value_invalid', field='image',
                        value='"not base64!"'),
                    ])
            self.assertEqual({r['status'] for r in results}, {'error'})
            self.assertEqual(Event.search([
                        ('uuid', 'in', [i['uuid'] for i in bad]),
                        ('state', '=', 'error'),
                        ], count=True), 4)
            with self.assertRaises(UserError) as cm:
                Read.create([{
                            'uuid': item['uuid'], 'company': company.id,
                            'station': setup['station'].id,
                            'plate': '京A12345', 'confidence': 1,
                            'read_date': dt.datetime.now(),
                            }])
            self.assertEqual(cm.exception.message, message(
                    'msg_read_uuid_unique'))

    @with_transaction()
    def test_image_retention(self):
        "Test the cron deletes the crops past retention and keeps reads"
        pool = Pool()
        Read = pool.get('fuel.plate.read')
        Zone = pool.get('fuel.plate.camera.zone')
        company = create_company()
        with set_company(company):
            setup = create_camera_setup(company)
            image = base64.b64encode(b'crop').decode()
            old = plate_read(
                image=image, date=now() - dt.timedelta(days=8))
            recent = plate_read(
                image=image, date=now() - dt.timedelta(days=6))
            ingest(setup['box'], old, recent)
            purged = Read.purge_images()
            self.assertEqual([r.uuid for r in purged], [old['uuid']])
            old_read, = Read.search([('uuid', '=', old['uuid'])])
            recent_read, = Read.search([('uuid', '=', recent['uuid'])])
            self.assertIsNone(old_read.image)
            self.assertEqual(old_read.image_state, 'deleted')
            self.assertEqual(old_read.plate, '京A12345')
            self.assertEqual(bytes(recent_read.image), b'crop')
            self.assertEqual(Read.purge_images(), [])
            with self.assertRaises(UserError) as cm:
                Zone.create([{
                            'station': setup['station'].id,
                            'camera': setup['camera'].id,
                            'code': 'island-1', 'kind': 'island',
                            }])
            self.assertEqual(cm.exception.message, message(
                    'msg_zone_code_unique'))

    # ---- binding engine ------------------------------------------------

    @with_transaction()
    def test_engine_charges(self):
        "Test the scenarios where the engine is sure"
        company = create_company()
        with set_company(company):
            setup = create_plate_setup(company)
            start_scenario(50)
            self.single_clear_read_charges(setup)
            start_scenario(40)
            self.duplicate_reads_one_charge(company, setup)
            start_scenario(30)
            self.insufficient_balance(company, setup)
            start_scenario(20)
            self.revoked_agreement_not_charged(setup)
            start_scenario(10)
            # PostgreSQL aborts the transaction at a constraint: last
            self.transaction_bound_once(company, setup)

    @with_transaction()
    def test_engine_asks(self):
        "Test the scenarios where the engine asks or refuses"
        company = create_company()
        with set_company(company):
            setup = create_plate_setup(company)
            start_scenario(50)
            self.two_cars_at_island_queue(company, setup)
            start_scenario(40)
            self.low_confidence_queue(setup)
            start_scenario(30)
            self.flagged_fill_not_charged(setup)
            start_scenario(20)
            self.unknown_plate(setup)
            start_scenario(10)
            self.charge_refusals(company, setup)

    def single_clear_read_charges(self, setup):
        """One sure read of an enrolled plate authorizes the nozzle with a
        preset and charges the fill from the card, without PIN"""
        pool = Pool()
        Binding = pool.get('fuel.plate.binding')
        Command = pool.get('fuel.device.command')
        Wallet = pool.get('fuel.payment.wallet')
        box = setup['box']
        ingest(box, plate_read(date=seconds(30)))
        ingest(box, nozzle_up(date=seconds(20)))
        draft, = Binding.search([('state', '=', 'draft')])
        self.assertEqual(draft.vehicle, setup['vehicle'])
        self.assertEqual(draft.preset_amount, Decimal('300.00'))
        command, = Command.search([('kind', '=', 'authorize')])
        self.assertEqual(command.box, box)
        self.assertEqual(loads(command.payload), {
                'version': 1, 'station_number': 1,
                'preset_amount': '300.00'})
        binding, transaction = self.fuel(setup, lift=False)
        self.assertEqual(binding, draft)
        self.assertEqual(binding.state, 'charged')
        self.assertGreaterEqual(binding.score, Decimal('0.8'))
        self.assertEqual(transaction.state, 'paid')
        self.assertEqual(transaction.customer, setup['wallet'].party)
        self.assertEqual(transaction.plate, '京A12345')
        order = binding.order
        self.assertEqual(order.state, 'paid')
        payment, = order.payments
        self.assertEqual(payment.card, setup['card'])
        self.assertEqual(payment.amount, Decimal('151.60'))
        self.assertEqual(payment.uuid, payment_uuid(transaction))
        self.assertEqual(
            Wallet(setup['wallet'].id).balance, Decimal('348.40'))
        self.assertEqual(
            [c.trigger for c in binding.candidates],
            ['nozzle_up', 'completed'])

    def duplicate_reads_one_charge(self, company, setup):
        """Two reads of one pass and a replayed fill charge once, and a
        second fill without a new read is not charged"""
        pool = Pool()
        Binding = pool.get('fuel.plate.binding')
        Wallet = pool.get('fuel.payment.wallet')
        box = setup['box']
        balance = Wallet(setup['wallet'].id).balance
        ingest(box, plate_read(date=seconds(30)),
            plate_read(confidence='0.9000', date=seconds(29)))
        ingest(box, nozzle_up(date=seconds(20)))
        fill = completed(date=seconds(0))
        ingest(box, fill)
        replay, = ingest(box, fill)
        self.assertEqual(replay['status'], 'duplicate')
        binding, = Binding.search([
                ('transaction.uuid', '=', fill['uuid'])])
        self.assertEqual(binding.state, 'charged')
        notes = sorted(
            (c.note or '') for c in binding.candidates
            if c.trigger == 'completed')
        self.assertEqual(notes, ['', 'duplicate'])
        # the same car fuels again: its reads are held by the first fill
        second, transaction = self.fuel(setup)
        self.assertIsNone(second)
        self.assertEqual(transaction.state, 'to_pay')
        self.assertEqual(
            Wallet(setup['wallet'].id).balance,
            balance - Decimal('151.60'))
        self.held_read = binding.plate_read

    def insufficient_balance(self, company, setup):
        """The preset is limited by the balance and a fill over it fails
        to charge, leaving nothing paid; an empty wallet authorizes
        nothing"""
        pool = Pool()
        Binding = pool.get('fuel.plate.binding')
        wallet = create_wallet(company, name="Zhang San")
        fund(wallet, '50')
        vehicle = create_vehicle(company, '京E50000')
        create_agreement(vehicle, wallet.party, create_card(wallet))
        binding, transaction = self.fuel(setup, plate_read(
                plate='京E50000', date=seconds(30)))
        self.assertEqual(binding.preset_amount, Decimal('50.00'))
        self.assertEqual(binding.state, 'failed')
        self.assertIn('50', binding.reason)
        self.assertIsNone(transaction.order)
        self.assertEqual(transaction.state, 'to_pay')

        wallet = create_wallet(company, name="Li Si")
        card = create_card(wallet)
        vehicle = create_vehicle(company, '京C11111')
        create_agreement(vehicle, wallet.party, card)
        ingest(setup['box'], plate_read(plate='京C11111', date=seconds(5)))
        ingest(setup['box'], nozzle_up(date=seconds(4)))
        draft, = Binding.search([('state', '=', 'draft')])
        self.assertEqual(draft.vehicle, vehicle)
        self.assertIsNone(draft.preset_amount)
        self.assertEqual(draft.reason, message(
                'msg_reason_no_funds', card=card.rec_name))
        self.fuel(setup, lift=False)

    def revoked_agreement_not_charged(self, setup):
        "A revoked agreement charges nothing; the plate is recorded"
        pool = Pool()
        Agreement = pool.get('fuel.plate.agreement')
        Command = pool.get('fuel.device.command')
        authorizations = Command.search(
            [('kind', '=', 'authorize')], count=True)
        Agreement.revoke([setup['agreement']])
        self.assertTrue(setup['agreement'].revoked_date)
        binding, transaction = self.fuel(
            setup, plate_read(date=seconds(30)))
        self.assertEqual(binding.state, 'bound')
        self.assertIsNone(binding.agreement)
        self.assertIsNone(binding.order)
        self.assertEqual(transaction.state, 'to_pay')
        self.assertEqual(transaction.plate, '京A12345')
        self.assertEqual(Command.search(
                [('kind', '=', 'authorize')], count=True), authorizations)
        # a revoked agreement no longer stands for the card's PIN
        Card = pool.get('fuel.payment.wallet.card')
        with (Transaction().set_context(
                    _fuel_plate_agreement=setup['agreement'].id),
                self.assertRaises(UserError) as cm):
            Card.pay(setup['card'], Decimal(10))
        self.assertEqual(cm.exception.message, gettext(
                'fuel_payment.msg_card_pin_required',
                card=setup['card'].rec_name))

    def transaction_bound_once(self, company, setup):
        "The database refuses a second binding of a read or a fill"
        pool = Pool()
        Binding = pool.get('fuel.plate.binding')
        binding, = Binding.search([
                ('plate_read', '=', self.held_read.id)])
        values = {
            'company': company.id,
            'station': setup['station'].id,
            'nozzle': setup['nozzle'].id,
            'state': 'waiting',
            }
        if backend.name == 'sqlite':
            # SQLite goes on after a constraint error
            with self.assertRaises(UserError) as cm:
                Binding.create([dict(values,
                            plate_read=self.held_read.id, state='bound')])
            self.assertEqual(cm.exception.message, message(
                    'msg_binding_read_unique'))
        with self.assertRaises(UserError) as cm:
            Binding.create([dict(
                        values, transaction=binding.transaction.id)])
        self.assertEqual(cm.exception.message, message(
                'msg_binding_transaction_unique'))

    def two_cars_at_island_queue(self, company, setup):
        "Two vehicles at one island go to the attendant, who confirms"
        pool = Pool()
        Wallet = pool.get('fuel.payment.wallet')
        Binding = pool.get('fuel.plate.binding')
        create_vehicle(company, '京B54321')
        first = plate_read(date=seconds(30))
        binding, transaction = self.fuel(
            setup, first, plate_read(plate='京B54321', date=seconds(25)))
        self.assertEqual(binding.state, 'waiting')
        self.assertEqual(binding.reason, message('msg_reason_several'))
        self.assertIsNone(binding.vehicle)
        self.assertEqual(len(binding.candidate_reads), 2)
        self.assertTrue(all(
                c.note == 'several' for c in binding.candidates))
        self.assertEqual(transaction.state, 'to_pay')
        with self.assertRaises(UserError) as cm:
            Binding.confirm([binding])
        self.assertEqual(cm.exception.message, message(
                'msg_binding_vehicle_required', binding=binding.rec_name))
        read, = [r for r in binding.candidate_reads
            if r.uuid == first['uuid']]
        binding.plate_read = read
        binding.save()
        Binding.confirm([binding])
        self.assertEqual(binding.state, 'charged')
        self.assertEqual(binding.vehicle, setup['vehicle'])
        self.assertTrue(binding.decided_by)
        self.assertEqual(
            Wallet(setup['wallet'].id).balance, Decimal('348.40'))

    def low_confidence_queue(self, setup):
        "A read under the threshold goes to the queue; reject it"
        pool = Pool()
        Binding = pool.get('fuel.plate.binding')
        binding, transaction = self.fuel(
            setup, plate_read(confidence='0.5000', date=seconds(10)))
        self.assertEqual(binding.state, 'waiting')
        self.assertEqual(binding.reason, message(
                'msg_reason_low_score', score=Decimal('0.5000'),
                threshold=Decimal('0.8000')))
        Binding.reject([binding])
        self.assertEqual(binding.state, 'rejected')
        self.assertIsNone(transaction.order)

    def flagged_fill_not_charged(self, setup):
        "A fill to review is not charged, and a stale lift is dropped"
        pool = Pool()
        Binding = pool.get('fuel.plate.binding')
        box = setup['box']
        ingest(box, plate_read(date=seconds(30)))
        ingest(box, nozzle_up(date=seconds(25)))
        stale, = Binding.search([('state', '=', 'draft')])
        ingest(box, nozzle_up(date=seconds(20)))
        self.assertEqual(stale.state, 'rejected')
        self.assertEqual(stale.reason, message('msg_reason_no_fill'))
        fill = completed(amount='999.99', date=seconds(0))
        ingest(box, fill)
        binding, = Binding.search([('transaction.uuid', '=', fill['uuid'])])
        self.assertEqual(binding.transaction.state, 'review')
        self.assertEqual(binding.state, 'failed')
        self.assertEqual(binding.reason, message(
                'msg_reason_not_payable',
                transaction=binding.transaction.rec_name,
                state=binding.transaction.state_string))

    def unknown_plate(self, setup):
        "A sure read of an unknown plate opens no charge"
        pool = Pool()
        Binding = pool.get('fuel.plate.binding')
        Configuration = pool.get('fuel.plate.configuration')
        ingest(setup['box'], plate_read(plate='津B99999', date=seconds(30)))
        ingest(setup['box'], nozzle_up(date=seconds(20)))
        draft, = Binding.search([('state', '=', 'draft')])
        self.assertEqual(draft.reason, message(
                'msg_reason_unknown_plate', plate='津B99999'))
        binding, transaction = self.fuel(setup, lift=False)
        self.assertEqual(binding, draft)
        self.assertEqual(binding.state, 'rejected')
        self.assertEqual(transaction.state, 'to_pay')
        # no read left in a shorter window: the lift's binding goes
        ingest(setup['box'], plate_read(plate='津B88888', date=seconds(30)))
        ingest(setup['box'], nozzle_up(date=seconds(20)))
        Configuration.write([Configuration(1)], {'window': 1})
        binding, _ = self.fuel(setup, lift=False)
        self.assertEqual(binding.state, 'rejected')
        self.assertEqual(binding.reason, message('msg_reason_no_read'))
        Configuration.write([Configuration(1)], {'window': 300})

    def charge_refusals(self, company, setup):
        "The limit, the grades and a missing method stop a charge"
        pool = Pool()
        Agreement = pool.get('fuel.plate.agreement')
        Method = pool.get('sale.point.payment.method')
        Vehicle = pool.get('fuel.plate.vehicle')
        wallet = create_wallet(company, name="Wang Wu")
        fund(wallet, '500')
        vehicle = create_vehicle(company, '京D22222')
        agreement = create_agreement(
            vehicle, wallet.party, create_card(wallet), limit='100')
        binding, _ = self.fuel(setup, plate_read(
                plate='京D22222', date=seconds(30)))
        self.assertEqual(binding.state, 'failed')
        self.assertEqual(binding.reason, message(
                'msg_reason_over_limit', amount=Decimal('151.60'),
                limit=Decimal('100.00')))

        Agreement.write([agreement], {'limit': Decimal(1000)})
        grade = create_grade("95#", company, setup['accounts'])
        Vehicle.write([vehicle], {'grades': [('add', [grade.id])]})
        binding, _ = self.fuel(setup, plate_read(
                plate='京D22222', date=seconds(20)))
        self.assertEqual(binding.state, 'failed')
        self.assertEqual(binding.reason, message(
                'msg_reason_grade', vehicle='京D22222',
                grade=setup['grade'].rec_name))

        Vehicle.write([vehicle], {
                'grades': [('add', [setup['grade'].id])]})
        Method.write([setup['methods']['wallet']], {'active': False})
        binding, _ = self.fuel(setup, plate_read(
                plate='京D22222', date=seconds(10)))
        self.assertEqual(binding.state, 'failed')
        self.assertEqual(binding.reason, message(
                'msg_reason_no_method', kind='wallet'))
        Method.write([setup['methods']['wallet']], {'active': True})
        binding, _ = self.fuel(setup, plate_read(
                plate='京D22222', date=seconds(5)))
        self.assertEqual(binding.state, 'charged')


del ModuleTestCase
