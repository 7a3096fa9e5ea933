# This file is part of fuelpay.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""A pre-paid authorization the box stopped unused (authorization_expired)
gives the pre-payment back in full, through the WeChat Pay simulator on
127.0.0.1; replays, captured pre-payments and bad payloads change
nothing"""
import datetime as dt
import uuid
from decimal import Decimal

from trytond.i18n import gettext
from trytond.model.exceptions import DomainValidationError
from trytond.modules.company.tests import create_company, set_company
from trytond.pool import Pool
from trytond.tests.test_tryton import with_transaction

from addons.fuel_payment.tests.sim_wechat import WeChatSimulator
from addons.fuel_payment.tests.test_gateway import (
    WECHAT_CODE,
    OperatorOnceMixin,
    create_gateway,
)
from addons.fuel_payment.tests.tools import (
    PaymentDatabaseTestCase,
    SimulatorsMixin,
    create_payment_setup,
)

from ..event import loads
from .tools import create_box


def message(msg_id, **values):
    return gettext(f'fuel_device.{msg_id}', **values)


class PrePayExpiryTestCase(
        SimulatorsMixin, OperatorOnceMixin, PaymentDatabaseTestCase):
    "Test the expiry of unused pre-paid authorizations"

    simulators = {
        'simulator': WeChatSimulator,
        }

    @classmethod
    def build_operator(cls):
        company = create_company()
        with set_company(company):
            setup = create_payment_setup(company)
            create_gateway(
                company, cls.simulator, setup['methods']['wechat'])
            box, _ = create_box(setup['station'], 'BOX-EXP')
            other, _ = create_box(
                setup['station'], 'BOX-EXP2', state='paired')
        return company, setup, box, other

    def prepare(self):
        self.simulator.orders.clear()
        self.simulator.paying_queries = None
        self.seq = 0
        return self.operator()

    def start(self, setup, amount):
        "Pre-pay amount on nozzle 1 by code; return the pre-payment"
        pool = Pool()
        Payment = pool.get('fuel.payment.gateway.payment')
        PrePay = pool.get('fuel.payment.prepay')
        payment = Payment(PrePay.start(
                setup['station'].id, 1, amount, code=WECHAT_CODE))
        Payment.submit([payment], WECHAT_CODE)
        prepay = PrePay(Payment(payment.id).prepay.id)
        self.assertEqual(prepay.state, 'paid')
        return prepay

    def command_of(self, box, prepay):
        pool = Pool()
        Command = pool.get('fuel.device.command')
        command, = [
            c for c in Command.search([('box', '=', box.id)])
            if loads(c.payload).get('prepay') == prepay.id]
        return command

    def ack(self, box, command):
        pool = Pool()
        Command = pool.get('fuel.device.command')
        result, = Command.answer(box, [{
                    'id': command.id, 'status': 'acked',
                    'result': {'version': 1, 'status': 'authorized'}}])
        self.assertEqual(result['status'], 'accepted')

    def item(self, kind, payload, uuid_=None):
        self.seq += 1
        return {
            'uuid': uuid_ or str(uuid.uuid4()), 'seq': self.seq,
            'kind': kind, 'device': 'pump-1',
            'device_time': dt.datetime.now(dt.UTC).isoformat(),
            'payload': payload,
            }

    def expired(self, command, **values):
        "The authorization_expired item of the box for command"
        return self.item('authorization_expired', {
                'version': 1, 'pump_address': 0x50,
                'authorization': command.id if command else None,
                'nozzle': 1, 'station_number': 1,
                'lift_timeout': Decimal('180.0'),
                **values})

    def refunds(self, prepay):
        return [r for p in prepay.payments for r in p.refunds]

    @with_transaction()
    def test_unused_authorization_gives_the_prepayment_back(self):
        """Test the box's authorization_expired gives an authorized
        pre-payment back in full with the reason; its replay is a
        duplicate that gives nothing more back"""
        pool = Pool()
        Event = pool.get('fuel.device.event')
        PrePay = pool.get('fuel.payment.prepay')
        Refund = pool.get('fuel.payment.gateway.refund')
        company, setup, box, _ = self.prepare()
        with set_company(company):
            prepay = self.start(setup, '100')
            command = self.command_of(box, prepay)
            payload = loads(command.payload)
            # the station's setting, in seconds, with the command
            self.assertEqual(payload['lift_timeout'], 180)
            self.ack(box, command)
            self.assertEqual(PrePay(prepay.id).state, 'authorized')
            item = self.expired(command)

            result, = Event.ingest(box, [item])

            self.assertEqual(
                (result['status'], result['error']), ('accepted', None))
            event, = Event.search([('uuid', '=', item['uuid'])])
            self.assertEqual(event.state, 'processed')
            self.assertEqual(event.kind, 'authorization_expired')
            prepay = PrePay(prepay.id)
            self.assertEqual(prepay.state, 'cancelled')
            reason = message(
                'msg_prepay_lift_expired', prepay=prepay.rec_name,
                seconds=180)
            self.assertEqual(prepay.reason, reason)
            self.assertIsNone(prepay.transaction)
            refund, = self.refunds(prepay)
            self.assertEqual(refund.amount, Decimal('100.00'))
            self.assertEqual(refund.reason, reason)
            Refund.submit([refund])
            self.assertEqual(Refund(refund.id).state, 'succeeded')
            payment, = prepay.payments
            self.assertEqual(
                [r['refund'] for r in self.simulator.orders[
                        payment.number].refunds.values()], [10000])

            again, = Event.ingest(box, [item])

            self.assertEqual(again['status'], 'duplicate')
            self.assertEqual(len(self.refunds(PrePay(prepay.id))), 1)
            # the nozzle may be pre-paid again
            self.start(setup, '50')

    @with_transaction()
    def test_expired_before_the_ack_and_station_setting(self):
        """Test an expiry that reaches the server before the ack of the
        command gives the paid pre-payment back, and the late ack changes
        nothing; the station's lift timeout goes with the command"""
        pool = Pool()
        Event = pool.get('fuel.device.event')
        PrePay = pool.get('fuel.payment.prepay')
        Station = pool.get('fuel.station')
        company, setup, box, _ = self.prepare()
        with set_company(company):
            station = setup['station']
            with self.assertRaises(DomainValidationError):
                Station.write([station], {'prepay_lift_timeout': 0})
            Station.write([station], {'prepay_lift_timeout': 90})
            prepay = self.start(setup, '60')
            command = self.command_of(box, prepay)
            self.assertEqual(loads(command.payload)['lift_timeout'], 90)
            Event.ingest(box, [self.expired(command)])
            prepay = PrePay(prepay.id)
            self.assertEqual(prepay.state, 'cancelled')
            self.assertEqual(prepay.reason, message(
                    'msg_prepay_lift_expired', prepay=prepay.rec_name,
                    seconds=90))
            self.ack(box, command)
            prepay = PrePay(prepay.id)
            self.assertEqual(prepay.state, 'cancelled')
            refund, = self.refunds(prepay)
            self.assertEqual(refund.amount, Decimal('60.00'))

    @with_transaction()
    def test_captured_prepayment_is_not_touched(self):
        """Test an expiry of a pre-payment whose fill was captured (or
        that was given back by hand) changes nothing"""
        pool = Pool()
        Event = pool.get('fuel.device.event')
        PrePay = pool.get('fuel.payment.prepay')
        company, setup, box, _ = self.prepare()
        with set_company(company):
            prepay = self.start(setup, '200')
            command = self.command_of(box, prepay)
            self.ack(box, command)
            result, = Event.ingest(box, [self.item('transaction_completed', {
                            'station_nozzle': 1, 'volume': Decimal('20.00'),
                            'unit_price': Decimal('7.58'),
                            'amount': Decimal('151.60'),
                            'authorization': command.id})])
            self.assertEqual(result['status'], 'accepted', result['error'])
            prepay = PrePay(prepay.id)
            self.assertEqual(
                (prepay.state, prepay.captured), ('done', Decimal('151.60')))

            item = self.expired(command)
            result, = Event.ingest(box, [item])

            self.assertEqual(result['status'], 'accepted')
            self.assertEqual(
                Event.search([('uuid', '=', item['uuid'])])[0].state,
                'processed')
            prepay = PrePay(prepay.id)
            self.assertEqual(prepay.state, 'done')
            refund, = self.refunds(prepay)
            self.assertEqual(refund.amount, Decimal('48.40'))

            # given back by hand (Give Back) before the box's expiry
            manual = self.start(setup, '30')
            PrePay.abort([manual])
            Event.ingest(box, [self.expired(self.command_of(box, manual))])
            manual = PrePay(manual.id)
            self.assertEqual(manual.state, 'cancelled')
            self.assertIsNone(manual.reason)
            self.assertEqual(len(self.refunds(manual)), 1)

    @with_transaction()
    def test_invalid_expiries_give_nothing_back(self):
        """Test expiries with a bad payload, naming no authorize command of
        the box, another nozzle or a command without pre-payment are
        stored in error (or processed) and give nothing back"""
        pool = Pool()
        Event = pool.get('fuel.device.event')
        PrePay = pool.get('fuel.payment.prepay')
        Command = pool.get('fuel.device.command')
        company, setup, box, other = self.prepare()
        with set_company(company):
            prepay = self.start(setup, '100')
            command = self.command_of(box, prepay)
            self.ack(box, command)
            foreign = Command.prepare(other, 'authorize', {
                    'version': 1, 'station_number': 1,
                    'preset_amount': Decimal('10.00'),
                    'prepay': prepay.id})
            foreign.save()
            stop = Command.prepare(box, 'stop', {
                    'version': 1, 'station_number': 1})
            stop.save()
            plate = Command.prepare(box, 'authorize', {
                    'version': 1, 'station_number': 1,
                    'preset_amount': Decimal('300.00')})
            plate.save()
            cases = [
                (self.expired(None), message(
                        'msg_value_missing', field='authorization')),
                (self.expired(command, version=2), message(
                        'msg_value_invalid', field='version', value='2')),
                (self.expired(command, authorization=str(command.id)),
                    message(
                        'msg_value_invalid', field='authorization',
                        value=f'"{command.id}"')),
                (self.expired(command, station_number=None), message(
                        'msg_value_missing', field='station_number')),
                (self.expired(foreign), message(
                        'msg_command_unknown', command=foreign.id)),
                (self.expired(stop), message(
                        'msg_command_unknown', command=stop.id)),
                (self.expired(command, station_number=2), message(
                        'msg_expired_station_number', command=command.id,
                        number=2, expected=1)),
                ]
            items = [i for i, _ in cases]
            results = Event.ingest(box, items)
            for result, (item, error) in zip(results, cases, strict=True):
                self.assertEqual(
                    (result['status'], result['error']), ('error', error),
                    item['payload'])
            bare = self.item('authorization_expired', None)
            result, = Event.ingest(box, [bare])
            self.assertEqual(result['error'], message(
                    'msg_value_invalid', field='payload', value='null'))

            result, = Event.ingest(box, [self.expired(plate)])
            self.assertEqual(result['status'], 'accepted')
            prepay = PrePay(prepay.id)
            self.assertEqual(prepay.state, 'authorized')
            self.assertEqual(self.refunds(prepay), [])
