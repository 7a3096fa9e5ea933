# This file is part of fuelpay.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""Pre-pay: paid through the WeChat simulator, authorized through the
station box's command (fuel_device), captured by the fuelling"""
import datetime as dt
from decimal import Decimal

from trytond.exceptions import UserError
from trytond.modules.company.tests import create_company, set_company
from trytond.pool import Pool
from trytond.tests.test_tryton import with_transaction

from addons.fuel_device.event import loads
from addons.fuel_device.tests.tools import create_box

from .sim_wechat import WeChatSimulator
from .test_gateway import WECHAT_CODE, OperatorOnceMixin, create_gateway
from .test_module import message
from .tools import (
    PaymentDatabaseTestCase,
    SimulatorsMixin,
    create_payment_setup,
    fill,
)


class PrePayTestCase(
        SimulatorsMixin, OperatorOnceMixin, PaymentDatabaseTestCase):
    "Test pre-pay"

    simulators = {
        'simulator': WeChatSimulator,
        }

    def prepare(self):
        # at the start of the test body: with_transaction runs it again
        # on a rolled back database when a table must be locked first
        self.simulator.orders.clear()
        self.simulator.paying_queries = None
        return self.operator()

    @classmethod
    def build_operator(cls):
        company = create_company()
        with set_company(company):
            setup = create_payment_setup(company)
            create_gateway(
                company, cls.simulator, setup['methods']['wechat'])
            box, _ = create_box(setup['station'], 'BOX-P')
        return company, setup, box

    def start(self, setup, amount, code=WECHAT_CODE, **kwargs):
        "Pre-pay amount on nozzle 1; return the pre-payment"
        pool = Pool()
        Payment = pool.get('fuel.payment.gateway.payment')
        PrePay = pool.get('fuel.payment.prepay')
        payment = Payment(PrePay.start(
                setup['station'].id, 1, amount, code=code, **kwargs))
        if code:
            Payment.submit([payment], code)
        return Payment(payment.id).prepay

    def answer(self, box, prepay, status):
        "The box answers the authorize command of prepay"
        pool = Pool()
        Command = pool.get('fuel.device.command')
        command = self.command_of(box, prepay)
        self.assertEqual(command.kind, 'authorize')
        payload = loads(command.payload)
        self.assertEqual(payload['station_number'], 1)
        # Decimals travel as their exact digits
        self.assertEqual(payload['preset_amount'], str(prepay.amount))
        result, = Command.answer(box, [{
                    'id': command.id, 'status': status,
                    'result': {'version': 1, 'status': 'authorized'}}])
        self.assertEqual(result['status'], 'accepted')

    def fuel(self, setup, quantity, **extra):
        pool = Pool()
        FuelTransaction = pool.get('fuel.payment.transaction')
        result, = FuelTransaction.ingest(
            [fill(setup['station'], quantity, **extra)])
        return FuelTransaction(result['id'])

    def command_of(self, box, prepay):
        pool = Pool()
        Command = pool.get('fuel.device.command')
        command, = [
            c for c in Command.search([('box', '=', box.id)])
            if loads(c.payload).get('prepay') == prepay.id]
        return command

    @with_transaction()
    def test_under_fill_refunds_the_difference(self):
        """Test a pre-pay of 200 filled for 151.60: the nozzle is
        authorized with the preset, 151.60 captured, 48.40 given back"""
        pool = Pool()
        PrePay = pool.get('fuel.payment.prepay')
        Refund = pool.get('fuel.payment.gateway.refund')
        FuelTransaction = pool.get('fuel.payment.transaction')
        company, setup, box = self.prepare()
        with set_company(company):
            prepay = self.start(setup, '200', fill_up=True)
            self.assertEqual(prepay.state, 'paid')
            self.assertTrue(prepay.fill_up)
            self.assertTrue(prepay.authorization)
            with self.assertRaises(UserError) as cm:
                self.start(setup, '50')
            self.assertEqual(cm.exception.message, message(
                    'msg_prepay_nozzle_busy', prepay=prepay.rec_name))
            self.answer(box, prepay, 'acked')
            prepay = PrePay(prepay.id)
            self.assertEqual(prepay.state, 'authorized')
            transaction = self.fuel(setup, '20')
            prepay = PrePay(prepay.id)
            self.assertEqual(prepay.state, 'done')
            self.assertEqual(prepay.transaction, transaction)
            self.assertEqual(prepay.captured, Decimal('151.60'))
            self.assertEqual(prepay.order.state, 'paid')
            self.assertEqual(
                FuelTransaction(transaction.id).state, 'paid')
            payment, = prepay.payments
            self.assertEqual(payment.order, prepay.order)
            refund, = payment.refunds
            self.assertEqual(refund.amount, Decimal('48.40'))
            self.assertEqual(refund.reason, message(
                    'msg_prepay_difference', prepay=prepay.rec_name,
                    captured=Decimal('151.60')))
            Refund.submit([refund])
            self.assertEqual(Refund(refund.id).state, 'succeeded')
            self.assertEqual(
                [r['refund'] for r in self.simulator.orders[
                        payment.number].refunds.values()], [4840])
            # the next fill of the nozzle is not paid by it again
            other = self.fuel(setup, '5')
            self.assertEqual(FuelTransaction(other.id).state, 'to_pay')
            self.assertEqual(PrePay.search([], count=True), 1)
            with self.assertRaises(UserError) as cm:
                PrePay.create([{
                            'company': company.id,
                            'station': setup['station'].id,
                            'nozzle': setup['nozzle'].id,
                            'amount': Decimal(1),
                            'transaction': transaction.id,
                            }])
            self.assertEqual(cm.exception.message, message(
                    'msg_prepay_transaction_unique'))

    @with_transaction()
    def test_refused_and_zero_fills_refund_in_full(self):
        "Test a refused authorization and a zero fill give it all back"
        pool = Pool()
        PrePay = pool.get('fuel.payment.prepay')
        company, setup, box = self.prepare()
        with set_company(company):
            refused = self.start(setup, '100')
            self.answer(box, refused, 'failed')
            refused = PrePay(refused.id)
            self.assertEqual(refused.state, 'cancelled')
            refund, = refused.payments[0].refunds
            self.assertEqual(refund.amount, Decimal('100.00'))
            self.assertEqual(refund.reason, message('msg_prepay_aborted'))

            empty = self.start(setup, '50')
            self.answer(box, empty, 'acked')
            self.fuel(setup, '0')
            empty = PrePay(empty.id)
            self.assertEqual(empty.state, 'done')
            self.assertEqual(empty.captured, Decimal(0))
            self.assertIsNone(empty.order)
            refund, = empty.payments[0].refunds
            self.assertEqual(refund.amount, Decimal('50.00'))

    @with_transaction()
    def test_fill_answers_the_prepayment_of_its_authorization(self):
        """Test a fill naming the authorize command that released it:
        another command's fill (a plate preset) on the pre-paid nozzle
        takes nothing of the pre-payment, the command's own fill does"""
        pool = Pool()
        PrePay = pool.get('fuel.payment.prepay')
        Command = pool.get('fuel.device.command')
        FuelTransaction = pool.get('fuel.payment.transaction')
        company, setup, box = self.prepare()
        with set_company(company):
            prepay = self.start(setup, '100')
            self.answer(box, prepay, 'acked')
            plate = Command.prepare(box, 'authorize', {
                    'version': 1, 'station_number': 1,
                    'preset_amount': Decimal('300.00')})
            plate.save()
            other = self.fuel(setup, '5', authorization=plate.id)
            self.assertEqual(other.authorization, plate)
            self.assertEqual(FuelTransaction(other.id).state, 'to_pay')
            self.assertEqual(PrePay(prepay.id).state, 'authorized')
            own = self.fuel(
                setup, '10', authorization=self.command_of(box, prepay).id)
            prepay = PrePay(prepay.id)
            self.assertEqual(prepay.state, 'done')
            self.assertEqual(prepay.transaction, own)
            self.assertEqual(prepay.captured, Decimal('75.80'))
            self.assertEqual(FuelTransaction(other.id).state, 'to_pay')
            # a command of no box of the station is not kept
            stranger = self.fuel(setup, '1', authorization=plate.id + 999)
            self.assertIsNone(stranger.authorization)

    @with_transaction()
    def test_checks(self):
        "Test what a pre-payment refuses"
        pool = Pool()
        Payment = pool.get('fuel.payment.gateway.payment')
        PrePay = pool.get('fuel.payment.prepay')
        company, setup, _box = self.prepare()
        station = setup['station']
        with set_company(company):
            with self.assertRaises(UserError) as cm:
                PrePay.start(station.id, 9, '100', code=WECHAT_CODE)
            self.assertEqual(cm.exception.message, message(
                    'msg_prepay_nozzle', nozzle=9, station=station.rec_name))
            with self.assertRaises(UserError) as cm:
                PrePay.start(station.id, 1, '0', code=WECHAT_CODE)
            self.assertEqual(
                cm.exception.message, message('msg_prepay_amount'))
            payment = Payment(PrePay.start(
                    station.id, 1, '100',
                    method=setup['methods']['wechat'].id))
            Payment.submit([payment])
            prepay = Payment(payment.id).prepay
            with self.assertRaises(UserError) as cm:
                PrePay.abort([prepay])
            self.assertEqual(cm.exception.message, message(
                    'msg_prepay_paying', prepay=prepay.rec_name))
            # nor a second pre-payment of the nozzle while it is paid
            with self.assertRaises(UserError) as cm:
                PrePay.start(station.id, 1, '50', code=WECHAT_CODE)
            self.assertEqual(cm.exception.message, message(
                    'msg_prepay_paying', prepay=prepay.rec_name))
            # never scanned: the QR is closed, the pre-payment with it
            Payment.write([payment], {
                    'deadline': dt.datetime.now() - dt.timedelta(seconds=1)})
            Payment.poll([payment])
            self.assertEqual(Payment(payment.id).state, 'cancelled')
            self.assertEqual(PrePay(prepay.id).state, 'cancelled')
            # then the nozzle may be pre-paid again
            self.assertTrue(PrePay.start(
                    station.id, 1, '50',
                    method=setup['methods']['wechat'].id))
