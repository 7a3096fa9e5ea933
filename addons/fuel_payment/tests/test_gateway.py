# This file is part of fuelpay.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""Payments through the WeChat Pay v3 gateway, against the simulator on
127.0.0.1"""
import datetime as dt
import json
import logging
from decimal import Decimal

from trytond.exceptions import UserError
from trytond.model import Model
from trytond.model.exceptions import AccessError
from trytond.modules.company.tests import create_company, set_company
from trytond.pool import Pool
from trytond.tests.test_tryton import (
    DB_NAME,
    RouteTestCase,
    with_transaction,
)
from trytond.transaction import (
    Transaction,
    check_access,
)

from addons.fuel_station.tests.test_module import create_user
from addons.fuel_station.tests.tools import FuelDatabaseMixin

from ..gateway import code_channel, from_fen, mask_code, to_fen
from .sim_alipay import AlipaySimulator
from .sim_huifu import HuifuSimulator
from .sim_wechat import WeChatSimulator, new_key, private_pem
from .test_module import message
from .tools import (
    PaymentDatabaseTestCase,
    SimulatorsMixin,
    create_payment_setup,
    fill,
    pay_code,
    run_committed,
)

WECHAT_CODE = '134567890123456789'
ALIPAY_CODE = '284567890123456789'
UNIONPAY_CODE = '6234567890123456789'


def create_gateway(company, simulator, method):
    "Create a gateway of company on simulator taking method's payments"
    pool = Pool()
    Gateway = pool.get('fuel.payment.gateway')
    Method = pool.get('sale.point.payment.method')
    gateway, = Gateway.create([dict(
                simulator.gateway_values(), name="WeChat Pay",
                company=company.id)])
    Method.write([method], {'gateway': gateway.id})
    return gateway


def _to_ids(value):
    "value with its records turned into (model name, id) markers"
    if isinstance(value, Model):
        return ('record', value.__name__, value.id)
    if isinstance(value, dict):
        return {k: _to_ids(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_ids(v) for v in value]
    return value


def _from_ids(value):
    "The inverse of _to_ids, in the current transaction"
    if isinstance(value, tuple) and value[:1] == ('record',):
        return Pool().get(value[1])(value[2])
    if isinstance(value, dict):
        return {k: _from_ids(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_from_ids(v) for v in value]
    return value


class OperatorOnceMixin:
    """Build the class's operator once (company, accounts, station,
    payment methods, gateways: `build_operator`), committed, instead of in
    every test; `operator()` gives it back in the test's own transaction,
    which is rolled back as usual. Put it first among the bases, after
    SimulatorsMixin (the gateways point at the simulators)."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()

        def build():
            cls._operator = _to_ids(cls.build_operator())
        run_committed(build)

    @classmethod
    def build_operator(cls):
        raise NotImplementedError

    def operator(self):
        return _from_ids(self._operator)


def create_order(setup, quantity='20'):
    "Ingest a fill of quantity at 7.58 and return its draft order"
    pool = Pool()
    FuelTransaction = pool.get('fuel.payment.transaction')
    Order = pool.get('fuel.payment.order')
    result, = FuelTransaction.ingest([fill(setup['station'], quantity)])
    return Order.create_for([FuelTransaction(result['id'])])


class GatewayTestCase(
        SimulatorsMixin, OperatorOnceMixin, PaymentDatabaseTestCase):
    "Test gateway payments"

    simulators = {
        'simulator': WeChatSimulator,
        }

    def prepare(self, quantity='20'):
        # at the start of the test body: with_transaction runs it again
        # on a rolled back database when a table must be locked first
        self.simulator.orders.clear()
        self.simulator.paying_queries = None
        self.simulator.refuse = None
        self.simulator.down = False
        company, setup, gateway = self.operator()
        with set_company(company):
            order = create_order(setup, quantity)
        return company, setup, gateway, order

    @classmethod
    def build_operator(cls):
        company = create_company()
        with set_company(company):
            setup = create_payment_setup(company)
            gateway = create_gateway(
                company, cls.simulator, setup['methods']['wechat'])
        return company, setup, gateway

    def pay_code(self, order, code=WECHAT_CODE, **kwargs):
        return pay_code(order, code, **kwargs)

    def test_code_routing(self):
        "Test payment codes go to the channel of their prefix"
        self.assertEqual(code_channel('134567890123456789'), 'wechat')
        self.assertEqual(code_channel(' 104567890123456789 '), 'wechat')
        self.assertEqual(code_channel('284567890123456789'), 'alipay')
        self.assertEqual(code_channel('3045678901234567890123'), 'alipay')
        self.assertEqual(code_channel('6212345678901234567'), 'unionpay')
        self.assertIsNone(code_channel('164567890123456789'))
        self.assertIsNone(code_channel('1345678901234567'))
        self.assertIsNone(code_channel('abc'))
        self.assertEqual(mask_code('134567890123456789'), '1345' + '*' * 14)
        self.assertEqual(to_fen(Decimal('151.60')), 15160)
        self.assertEqual(from_fen(15160), Decimal('151.60'))

    @with_transaction()
    def test_code_payment_settles_order(self):
        "Test a payment code paid at once settles the fuelling's order"
        pool = Pool()
        Queue = pool.get('ir.queue')
        company, setup, _gateway, order = self.prepare()
        with set_company(company):
            payment = self.pay_code(order)
        task, = Queue.search([])
        self.assertEqual(
            (task.data['model'], task.data['method'], task.data['args']),
            ('fuel.payment.gateway.payment', 'submit', (WECHAT_CODE,)))
        self.assertEqual(payment.state, 'succeeded')
        self.assertEqual(payment.amount, Decimal('151.60'))
        self.assertEqual(payment.code, '1345' + '*' * 14)
        sim_order = self.simulator.orders[payment.number]
        self.assertEqual(sim_order.total, 15160)
        self.assertEqual(payment.reference, sim_order.transaction_id)
        self.assertEqual(
            sim_order.data['scene_info']['store_info']['out_id'], 'S01')
        order = payment.order
        self.assertEqual(order.state, 'paid')
        order_payment, = order.payments
        self.assertEqual(order_payment, payment.order_payment)
        self.assertEqual(order_payment.method, setup['methods']['wechat'])
        self.assertEqual(order_payment.reference, sim_order.transaction_id)
        self.assertEqual(order_payment.uuid, payment.number)
        self.assertEqual(
            [t.state for t in order.transactions], ['paid'])
        self.assertEqual(payment.status()['state'], 'succeeded')
        # the finished task keeps no usable code
        task.run()
        task = Queue(task.id)
        self.assertTrue(task.finished_at)
        self.assertEqual(list(task.data['args']), ['1345' + '*' * 14])
        self.assertNotIn(WECHAT_CODE, str(task.data))

    @with_transaction()
    def test_user_paying_then_success(self):
        "Test USERPAYING is queried until the customer confirms"
        pool = Pool()
        Payment = pool.get('fuel.payment.gateway.payment')
        company, _setup, _gateway, order = self.prepare()
        self.simulator.paying_queries = 2
        with set_company(company):
            payment = self.pay_code(order)
            self.assertEqual(payment.state, 'pending')
            self.assertEqual(payment.order.state, 'draft')
            self.assertGreater(payment.deadline, dt.datetime.now())
            Payment.poll([payment])
            self.assertEqual(Payment(payment.id).state, 'pending')
            Payment.poll([payment])
        payment = Payment(payment.id)
        self.assertEqual(payment.state, 'succeeded')
        self.assertEqual(payment.order.state, 'paid')
        self.assertEqual(
            self.simulator.orders[payment.number].queries, 2)

    @with_transaction()
    def test_timeout_reverses(self):
        "Test a code never confirmed is reversed at the deadline"
        pool = Pool()
        Payment = pool.get('fuel.payment.gateway.payment')
        Order = pool.get('fuel.payment.order')
        company, _setup, _gateway, order = self.prepare()
        self.simulator.paying_queries = -1
        with set_company(company):
            payment = self.pay_code(order)
            with self.assertRaises(UserError) as cm:
                Order.cancel([order])
            self.assertEqual(cm.exception.message, message(
                    'msg_gateway_order_pending', order=order.rec_name,
                    payment=payment.number))
            Payment.poll([payment])
            self.assertEqual(Payment(payment.id).state, 'pending')
            Payment.write([payment], {
                    'deadline': dt.datetime.now() - dt.timedelta(seconds=1)})
            Payment.poll([payment])
        payment = Payment(payment.id)
        self.assertEqual(payment.state, 'cancelled')
        self.assertEqual(payment.error, message('msg_gateway_timeout'))
        self.assertEqual(
            self.simulator.orders[payment.number].state, 'REVOKED')
        self.assertEqual(payment.order.state, 'draft')
        self.assertEqual(payment.order.amount_paid, Decimal(0))
        # the order can be paid again
        self.simulator.paying_queries = None
        with set_company(company):
            again = self.pay_code(payment.order)
        self.assertEqual(again.state, 'succeeded')
        self.assertNotEqual(again.number, payment.number)

    @with_transaction()
    def test_channel_unreachable(self):
        """Test a payment the channel never received is cancelled at the
        deadline, a refusal is kept on the payment"""
        pool = Pool()
        Payment = pool.get('fuel.payment.gateway.payment')
        company, _setup, _gateway, order = self.prepare()
        self.simulator.down = True
        with set_company(company):
            payment = self.pay_code(order)
            self.assertEqual(payment.state, 'pending')
            self.assertIn('SYSTEM_ERROR', payment.error)
            self.simulator.down = False
            Payment.write([payment], {
                    'deadline': dt.datetime.now() - dt.timedelta(seconds=1)})
            Payment.poll([payment])
            self.assertEqual(Payment(payment.id).state, 'cancelled')
            self.simulator.refuse = 'NOTENOUGH'
            refused = self.pay_code(payment.order)
        self.assertEqual(refused.state, 'failed')
        self.assertIn('NOTENOUGH', refused.error)

    @with_transaction()
    def test_request_signature_checked(self):
        "Test the simulator refuses a request signed with another key"
        pool = Pool()
        Gateway = pool.get('fuel.payment.gateway')
        company, _setup, gateway, order = self.prepare()
        Gateway.write([gateway], {'private_key': private_pem(new_key())})
        with set_company(company):
            payment = self.pay_code(order)
        self.assertEqual(payment.state, 'failed')
        self.assertIn('SIGN_ERROR', payment.error)
        self.assertEqual(self.simulator.orders, {
                k: v for k, v in self.simulator.orders.items()
                if k != payment.number})

    @with_transaction()
    def test_qr_notifications(self):
        """Test a QR is settled by the first valid notification; repeats
        are ignored, forged ones refused and logged without secrets"""
        pool = Pool()
        Payment = pool.get('fuel.payment.gateway.payment')
        Notification = pool.get('fuel.payment.gateway.notification')
        company, setup, gateway, order = self.prepare()
        with set_company(company):
            payment = Payment(Payment.create_qr(
                    order.id, setup['methods']['wechat'].id))
            Payment.submit([payment])
        payment = Payment(payment.id)
        self.assertEqual(payment.state, 'pending')
        self.assertTrue(payment.code_url.startswith('weixin://wxpay/'))
        self.assertEqual(payment.status()['code_url'], payment.code_url)
        sim_order = self.simulator.orders[payment.number]
        self.assertEqual(sim_order.data['notify_url'], gateway.notify_url)
        self.simulator.pay(payment.number)
        forged = self.simulator.notification(payment.number, forge=True)
        wrong_key = self.simulator.notification(
            payment.number, api_key='0' * 32)
        valid = self.simulator.notification(payment.number)
        with self.assertLogs('addons.fuel_payment', logging.WARNING) as logs:
            self.assertEqual(
                Notification.receive(gateway, *forged), 'refused')
            self.assertEqual(
                Notification.receive(gateway, *wrong_key), 'refused')
        self.assertEqual(Payment(payment.id).state, 'pending')
        output = '\n'.join(logs.output)
        for secret in [self.simulator.api_key, 'PRIVATE KEY',
                json.loads(valid[1])['resource']['ciphertext'][:20]]:
            self.assertNotIn(secret, output)
        self.assertEqual(
            Notification.receive(gateway, *valid), 'accepted')
        payment = Payment(payment.id)
        self.assertEqual(payment.state, 'succeeded')
        self.assertEqual(payment.order.state, 'paid')
        self.assertEqual(
            Notification.receive(gateway, *valid), 'duplicate')
        # the same payment notified again under another id changes nothing
        self.assertEqual(Notification.receive(
                gateway, *self.simulator.notification(payment.number)),
            'accepted')
        self.assertEqual(len(payment.order.payments), 1)
        self.assertEqual(
            sorted(n.state for n in Notification.search([])),
            ['accepted', 'accepted', 'refused', 'refused'])
        with self.assertRaises(UserError) as cm:
            Notification.create([{
                        'company': company.id, 'gateway': gateway.id,
                        'notification': json.loads(valid[1])['id'],
                        'received': dt.datetime.now(), 'state': 'accepted',
                        }])
        self.assertEqual(cm.exception.message, message(
                'msg_gateway_notification_unique'))

    @with_transaction()
    def test_query_settles_without_notification(self):
        "Test the cron queries a paid QR whose notification never came"
        pool = Pool()
        Payment = pool.get('fuel.payment.gateway.payment')
        company, setup, _gateway, order = self.prepare()
        with set_company(company):
            payment = Payment(Payment.create_qr(
                    order.id, setup['methods']['wechat'].id))
            Payment.submit([payment])
            self.simulator.pay(payment.number)
            Payment.write([Payment(payment.id)], {
                    'next_check': dt.datetime.now() - dt.timedelta(
                        seconds=1)})
            Payment.check_pending()
        payment = Payment(payment.id)
        self.assertEqual(payment.state, 'succeeded')
        self.assertEqual(payment.order.state, 'paid')

    @with_transaction()
    def test_late_success_after_order_paid_is_refunded(self):
        """Test money a channel takes for an order already paid another
        way goes back: no fuelling is paid twice"""
        pool = Pool()
        Payment = pool.get('fuel.payment.gateway.payment')
        Refund = pool.get('fuel.payment.gateway.refund')
        Order = pool.get('fuel.payment.order')
        company, setup, _gateway, order = self.prepare()
        with set_company(company):
            payment = Payment(Payment.create_qr(
                    order.id, setup['methods']['wechat'].id))
            Payment.submit([payment])
            with self.assertRaises(UserError) as cm:
                self.pay_code(order)
            self.assertEqual(cm.exception.message, message(
                    'msg_gateway_amount', order=order.rec_name,
                    amount=Decimal('0.00')))
            Order.pay_rpc(order, [{
                        'method': setup['methods']['cash'].id,
                        'amount': Decimal('151.60')}])
            self.simulator.pay(payment.number)
            Payment.poll([payment])
            payment = Payment(payment.id)
            self.assertEqual(payment.state, 'succeeded')
            refund, = payment.refunds
            self.assertEqual(refund.amount, Decimal('151.60'))
            self.assertEqual(refund.reason, message(
                    'msg_gateway_order_closed', order=order.rec_name))
            Refund.submit([refund])
        self.assertEqual(Refund(refund.id).state, 'succeeded')
        self.assertEqual(
            self.simulator.orders[payment.number].state, 'REFUND')
        self.assertEqual(len(Order(order.id).payments), 1)

    @with_transaction()
    def test_out_of_order_notifications(self):
        """Test a success notified after the payment was given up: one
        sent before the reversal changes nothing (the channel says
        REVOKED now); money the channel did take is booked on the open
        order, or given back once the order was paid another way"""
        pool = Pool()
        Payment = pool.get('fuel.payment.gateway.payment')
        Notification = pool.get('fuel.payment.gateway.notification')
        Order = pool.get('fuel.payment.order')
        company, setup, gateway, order = self.prepare()
        self.simulator.paying_queries = -1
        with set_company(company):
            reversed_ = self.pay_code(order)
            sim_order = self.simulator.orders[reversed_.number]
            # sent while the customer confirmed, delivered after the
            # reversal
            sim_order.pay()
            stale = self.simulator.notification(reversed_.number)
            sim_order.state = 'USERPAYING'
            Payment.write([reversed_], {
                    'deadline': dt.datetime.now() - dt.timedelta(seconds=1)})
            Payment.poll([reversed_])
            self.assertEqual(Payment(reversed_.id).state, 'cancelled')
            self.assertEqual(sim_order.state, 'REVOKED')
            self.assertEqual(
                Notification.receive(gateway, *stale), 'accepted')
            self.assertEqual(Payment(reversed_.id).state, 'cancelled')
            self.assertEqual(Order(order.id).amount_paid, Decimal(0))

            # a QR given up while the channel still had it open (its close
            # never reached the channel), then paid there
            self.simulator.paying_queries = None
            late = Payment(Payment.create_qr(
                    order.id, setup['methods']['wechat'].id))
            Payment.submit([late])
            Payment.cancel([Payment(late.id)])
            self.simulator.pay(late.number)
            self.assertEqual(Notification.receive(
                    gateway, *self.simulator.notification(late.number)),
                'accepted')
            late = Payment(late.id)
            self.assertEqual(late.state, 'succeeded')
            self.assertEqual(late.error, message(
                    'msg_gateway_late_success', payment=late.number))
            self.assertEqual(Order(order.id).state, 'paid')
            self.assertEqual(late.order_payment.amount, Decimal('151.60'))
            self.assertFalse(late.refunds)

    @with_transaction()
    def test_late_success_of_an_order_paid_otherwise(self):
        "Test money taken after the payment was given up goes back"
        pool = Pool()
        Payment = pool.get('fuel.payment.gateway.payment')
        Notification = pool.get('fuel.payment.gateway.notification')
        Order = pool.get('fuel.payment.order')
        company, setup, gateway, order = self.prepare()
        with set_company(company):
            late = Payment(Payment.create_qr(
                    order.id, setup['methods']['wechat'].id))
            Payment.submit([late])
            Payment.cancel([Payment(late.id)])
            Order.pay_rpc(order, [{
                        'method': setup['methods']['cash'].id,
                        'amount': Decimal('151.60')}])
            self.simulator.pay(late.number)
            self.assertEqual(Notification.receive(
                    gateway, *self.simulator.notification(late.number)),
                'accepted')
            late = Payment(late.id)
            self.assertEqual(late.state, 'succeeded')
            refund, = late.refunds
            self.assertEqual(refund.amount, Decimal('151.60'))
            self.assertEqual(refund.reason, message(
                    'msg_gateway_order_closed', order=order.rec_name))
            self.assertEqual(len(Order(order.id).payments), 1)

    @with_transaction()
    def test_partial_then_order_refund(self):
        "Test a partial refund, then the order refund gives back the rest"
        pool = Pool()
        Payment = pool.get('fuel.payment.gateway.payment')
        Refund = pool.get('fuel.payment.gateway.refund')
        Order = pool.get('fuel.payment.order')
        company, _setup, _gateway, order = self.prepare()
        with set_company(company):
            payment = self.pay_code(order)
            partial, = Payment.refund([payment], Decimal('50.00'), "Under")
            Refund.submit([partial])
            self.assertEqual(Refund(partial.id).state, 'succeeded')
            Refund.submit([partial])
            payment = Payment(payment.id)
            self.assertEqual(payment.amount_refunded, Decimal('50.00'))
            with self.assertRaises(UserError) as cm:
                Payment.refund([payment], Decimal('101.61'))
            self.assertEqual(cm.exception.message, message(
                    'msg_gateway_refund_amount', payment=payment.number,
                    amount=Decimal('101.60')))
            Order.do_refund([payment.order], "Wrong nozzle")
            rest = [r for r in Payment(payment.id).refunds
                if r != partial]
            Refund.submit(rest)
        payment = Payment(payment.id)
        self.assertEqual(payment.amount_refunded, Decimal('151.60'))
        self.assertEqual(
            sorted(r.amount for r in payment.refunds),
            [Decimal('50.00'), Decimal('101.60')])
        self.assertEqual({r.state for r in payment.refunds}, {'succeeded'})
        refunds = self.simulator.orders[payment.number].refunds
        self.assertEqual(
            sorted(r['refund'] for r in refunds.values()), [5000, 10160])
        self.assertEqual(payment.order.state, 'refunded')

    @with_transaction()
    def test_checks(self):
        "Test what a gateway payment refuses"
        pool = Pool()
        Payment = pool.get('fuel.payment.gateway.payment')
        Order = pool.get('fuel.payment.order')
        company, setup, gateway, order = self.prepare()
        wechat = setup['methods']['wechat']
        with set_company(company):
            with self.assertRaises(UserError) as cm:
                Order.add_payment(
                    order, wechat, Decimal('10'), reference='X1')
            self.assertEqual(cm.exception.message, message(
                    'msg_order_method_gateway', method=wechat.rec_name))
            with self.assertRaises(UserError) as cm:
                Payment.pay_code(order.id, '999999')
            self.assertEqual(cm.exception.message, message(
                    'msg_gateway_code_unknown', code='9999**'))
            with self.assertRaises(UserError) as cm:
                Payment.pay_code(order.id, ALIPAY_CODE)
            self.assertEqual(cm.exception.message, message(
                    'msg_gateway_no_method', channel='alipay'))
            with self.assertRaises(UserError) as cm:
                Payment.pay_code(order.id, WECHAT_CODE, amount='0')
            self.assertEqual(cm.exception.message, message(
                    'msg_gateway_amount', order=order.rec_name,
                    amount=Decimal('151.60')))
            with self.assertRaises(UserError) as cm:
                Payment.create_qr(order.id, setup['methods']['cash'].id)
            self.assertEqual(cm.exception.message, message(
                    'msg_order_method_invalid',
                    method=setup['methods']['cash'].rec_name))
            payment = self.pay_code(order, amount='100')
            self.assertEqual(payment.order.amount_to_pay, Decimal('51.60'))
            with self.assertRaises(UserError) as cm:
                Payment.create([{
                            'number': payment.number,
                            'company': company.id, 'order': order.id,
                            'station': setup['station'].id,
                            'method': wechat.id, 'gateway': gateway.id,
                            'kind': 'code', 'amount': Decimal(1),
                            }])
            self.assertEqual(cm.exception.message, message(
                    'msg_gateway_payment_number_unique'))

    @with_transaction()
    def test_amount_mismatch_held(self):
        "Test a success for another amount is held for a person to check"
        pool = Pool()
        Payment = pool.get('fuel.payment.gateway.payment')
        company, _setup, _gateway, order = self.prepare()
        self.simulator.paying_queries = 1
        with set_company(company):
            payment = self.pay_code(order)
            self.simulator.orders[payment.number].total = 100
            Payment.poll([payment])
        payment = Payment(payment.id)
        self.assertEqual(payment.state, 'pending')
        self.assertEqual(payment.error, message(
                'msg_gateway_amount_mismatch', payment=payment.number,
                amount=Decimal('1.00')))
        self.assertEqual(payment.order.state, 'draft')

    @with_transaction()
    def test_keys_are_secret(self):
        "Test administrators set the keys but nobody reads them"
        pool = Pool()
        Gateway = pool.get('fuel.payment.gateway')
        Payment = pool.get('fuel.payment.gateway.payment')
        company, setup, gateway, order = self.prepare()
        admin = create_user('gw_admin', company, 'role_operator_admin')
        attendant = create_user(
            'gw_attendant', company, 'role_attendant', [setup['station']])
        other = create_company("Operator B")
        with Transaction().set_user(admin.id), check_access():
            gateway = Gateway(gateway.id)
            self.assertTrue(gateway.has_keys)
            with self.assertRaises(AccessError):
                Gateway.read([gateway.id], ['private_key'])
            with self.assertRaises(AccessError):
                Gateway.read([gateway.id], ['api_key'])
            Gateway.write([gateway], {'api_key': self.simulator.api_key})
        with Transaction().set_user(attendant.id), check_access():
            with self.assertRaises(AccessError):
                Gateway.write([Gateway(gateway.id)], {'api_key': 'x'})
            # the attendant takes the payment all the same
            payment = Payment(Payment.pay_code(order.id, WECHAT_CODE))
        # the queue sends it
        Payment.submit([payment], WECHAT_CODE)
        self.assertEqual(Payment(payment.id).state, 'succeeded')
        with set_company(other):
            other_admin = create_user(
                'gw_other', other, 'role_operator_admin')
        with Transaction().set_user(other_admin.id), check_access():
            self.assertEqual(Gateway.search([]), [])
            self.assertEqual(Payment.search([]), [])


class GatewayRouteTestCase(SimulatorsMixin, FuelDatabaseMixin, RouteTestCase):
    "Test the notification route"

    simulators = {
        'simulator': WeChatSimulator,
        'huifu': HuifuSimulator,
        }

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        run_committed(cls.prepare)

    @classmethod
    def prepare(cls):
        pool = Pool()
        Payment = pool.get('fuel.payment.gateway.payment')
        cls.simulator.orders.clear()
        cls.huifu.trades.clear()
        company = create_company()
        with set_company(company):
            setup = create_payment_setup(company)
            gateway = create_gateway(
                company, cls.simulator, setup['methods']['wechat'])
            huifu = create_gateway(
                company, cls.huifu, setup['methods']['unionpay'])
            payments = []
            for method in ['wechat', 'unionpay', 'wechat']:
                order = create_order(setup)
                payment = Payment(Payment.create_qr(
                        order.id, setup['methods'][method].id))
                Payment.submit([payment])
                payments.append(Payment(payment.id))
            # given up here while the channel still had it open
            Payment.cancel(payments[-1:])
        cls.gateway_id = gateway.id
        cls.huifu_id = huifu.id
        (cls.payment_id, cls.huifu_payment_id, cls.late_payment_id) = [
            p.id for p in payments]
        cls.number, cls.huifu_number, cls.late_number = [
            p.number for p in payments]

    def test_notifications(self):
        "Test the route answers each notification as WeChat expects"
        url = f'/{DB_NAME}/fuel_payment/notify/{self.gateway_id}'
        self.simulator.pay(self.number)
        client = self.client()
        forged_headers, forged = self.simulator.notification(
            self.number, forge=True)
        response = client.post(url, data=forged, headers=forged_headers)
        self.assertEqual(response.status_code, 400)
        self.assertEqual(response.json['code'], 'FAIL')
        headers, body = self.simulator.notification(self.number)
        for _ in range(2):
            response = client.post(url, data=body, headers=headers)
            self.assertEqual(response.status_code, 204)
        response = client.post(
            f'/{DB_NAME}/fuel_payment/notify/999999', data=body,
            headers=headers)
        self.assertEqual(response.status_code, 404)
        with Transaction().start(DB_NAME, 0):
            pool = Pool()
            Payment = pool.get('fuel.payment.gateway.payment')
            Notification = pool.get('fuel.payment.gateway.notification')
            payment = Payment(self.payment_id)
            self.assertEqual(payment.state, 'succeeded')
            self.assertEqual(payment.order.state, 'paid')
            self.assertEqual(
                sorted(n.state for n in Notification.search([
                            ('gateway', '=', self.gateway_id),
                            ('payment', 'in', [self.payment_id, None]),
                            ])),
                ['accepted', 'refused'])

    def test_late_success_asked_again(self):
        """Test a success notified for a payment given up: while the
        channel cannot be asked, nothing is kept and WeChat is told to
        notify again; then the money is booked"""
        url = f'/{DB_NAME}/fuel_payment/notify/{self.gateway_id}'
        self.simulator.pay(self.late_number)
        headers, body = self.simulator.notification(self.late_number)
        client = self.client()
        self.simulator.down = True
        try:
            response = client.post(url, data=body, headers=headers)
        finally:
            self.simulator.down = False
        self.assertEqual(response.status_code, 400)
        self.assertEqual(response.json['code'], 'FAIL')
        with Transaction().start(DB_NAME, 0):
            pool = Pool()
            Payment = pool.get('fuel.payment.gateway.payment')
            Notification = pool.get('fuel.payment.gateway.notification')
            self.assertEqual(Payment(self.late_payment_id).state, 'cancelled')
            self.assertFalse(Notification.search([
                        ('payment', '=', self.late_payment_id)]))
        response = client.post(url, data=body, headers=headers)
        self.assertEqual(response.status_code, 204)
        with Transaction().start(DB_NAME, 0):
            Payment = Pool().get('fuel.payment.gateway.payment')
            payment = Payment(self.late_payment_id)
            self.assertEqual(payment.state, 'succeeded')
            self.assertEqual(payment.order.state, 'paid')

    def test_huifu_notifications(self):
        "Test the route answers Huifu RECV_ORD_ID_ once verified"
        url = f'/{DB_NAME}/fuel_payment/notify/{self.huifu_id}'
        self.huifu.pay(self.huifu_number)
        client = self.client()
        headers, forged = self.huifu.notification(
            self.huifu_number, forge=True)
        response = client.post(url, data=forged, headers=headers)
        self.assertEqual(response.status_code, 400)
        headers, body = self.huifu.notification(self.huifu_number)
        for _ in range(2):
            response = client.post(url, data=body, headers=headers)
            self.assertEqual(response.status_code, 200)
            self.assertEqual(
                response.get_data(as_text=True),
                f'RECV_ORD_ID_{self.huifu_number}')
        with Transaction().start(DB_NAME, 0):
            Payment = Pool().get('fuel.payment.gateway.payment')
            payment = Payment(self.huifu_payment_id)
            self.assertEqual(payment.state, 'succeeded')
            self.assertEqual(payment.order.state, 'paid')
            self.assertEqual(
                payment.order.payments[0].method.fuel_kind, 'unionpay')


class AlipayTestCase(
        SimulatorsMixin, OperatorOnceMixin, PaymentDatabaseTestCase):
    "Test Alipay payments against its simulator"

    simulators = {
        'simulator': AlipaySimulator,
        }

    def prepare(self):
        self.simulator.trades.clear()
        self.simulator.paying_queries = None
        self.simulator.refuse = None
        self.simulator.down = False
        company, setup, gateway = self.operator()
        with set_company(company):
            order = create_order(setup)
        return company, setup, gateway, order

    @classmethod
    def build_operator(cls):
        pool = Pool()
        Gateway = pool.get('fuel.payment.gateway')
        Method = pool.get('sale.point.payment.method')
        company = create_company()
        with set_company(company):
            setup = create_payment_setup(company)
            gateway, = Gateway.create([dict(
                        cls.simulator.gateway_values(), name="Alipay",
                        company=company.id)])
            Method.write([setup['methods']['alipay']], {
                    'gateway': gateway.id})
        return company, setup, gateway

    def pay_code(self, order, code=ALIPAY_CODE, **kwargs):
        return pay_code(order, code, **kwargs)

    @with_transaction()
    def test_bar_code_paid_at_once(self):
        "Test a bar code paid at once settles the order"
        pool = Pool()
        Payment = pool.get('fuel.payment.gateway.payment')
        Refund = pool.get('fuel.payment.gateway.refund')
        company, setup, _gateway, order = self.prepare()
        with set_company(company):
            payment = self.pay_code(order)
            self.assertEqual(payment.state, 'succeeded')
            trade = self.simulator.trades[payment.number]
            self.assertEqual(payment.reference, trade.trade_no)
            self.assertEqual(trade.biz['total_amount'], '151.60')
            self.assertEqual(trade.biz['scene'], 'bar_code')
            self.assertEqual(payment.order.state, 'paid')
            self.assertEqual(
                payment.order.payments[0].method, setup['methods']['alipay'])
            partial, = Payment.refund([payment], Decimal('20.00'))
            Refund.submit([partial])
            self.assertEqual(Refund(partial.id).state, 'succeeded')
            # sent again (a task retried before it saw the answer):
            # answered, not refunded twice
            Refund.write([partial], {'state': 'pending'})
            Refund.submit([Refund(partial.id)])
        self.assertEqual(Refund(partial.id).state, 'succeeded')
        self.assertEqual(
            trade.refunds, {Refund(partial.id).number: Decimal('20.00')})

    @with_transaction()
    def test_user_paying_and_timeout(self):
        "Test 10003 is queried until paid, or cancelled at the deadline"
        pool = Pool()
        Payment = pool.get('fuel.payment.gateway.payment')
        company, _setup, _gateway, order = self.prepare()
        self.simulator.paying_queries = 2
        with set_company(company):
            payment = self.pay_code(order, code='2845678901234567')
            self.assertEqual(payment.state, 'pending')
            Payment.poll([payment])
            Payment.poll([payment])
            self.assertEqual(Payment(payment.id).state, 'succeeded')
            self.assertEqual(Payment(payment.id).order.state, 'paid')
            other = create_order(_setup, '10')
            self.simulator.paying_queries = -1
            late = self.pay_code(other)
            Payment.write([late], {
                    'deadline': dt.datetime.now() - dt.timedelta(seconds=1)})
            Payment.poll([late])
        late = Payment(late.id)
        self.assertEqual(late.state, 'cancelled')
        self.assertEqual(
            self.simulator.trades[late.number].status, 'TRADE_CLOSED')
        self.assertIn('alipay.trade.cancel', self.simulator.requests)

    @with_transaction()
    def test_qr_notifications(self):
        "Test a precreated QR settled by its verified notification once"
        pool = Pool()
        Payment = pool.get('fuel.payment.gateway.payment')
        Notification = pool.get('fuel.payment.gateway.notification')
        company, setup, gateway, order = self.prepare()
        with set_company(company):
            payment = Payment(Payment.create_qr(
                    order.id, setup['methods']['alipay'].id))
            Payment.submit([payment])
            payment = Payment(payment.id)
            self.assertTrue(
                payment.code_url.startswith('https://qr.alipay.com/'))
            self.simulator.pay(payment.number)
            forged = self.simulator.notification(payment.number, forge=True)
            with self.assertLogs('addons.fuel_payment', logging.WARNING):
                self.assertEqual(
                    Notification.receive(gateway, *forged), 'refused')
            valid = self.simulator.notification(payment.number)
            self.assertEqual(
                Notification.receive(gateway, *valid), 'accepted')
            self.assertEqual(
                Notification.receive(gateway, *valid), 'duplicate')
        payment = Payment(payment.id)
        self.assertEqual(payment.state, 'succeeded')
        self.assertEqual(len(payment.order.payments), 1)


class AggregatorTestCase(
        SimulatorsMixin, OperatorOnceMixin, PaymentDatabaseTestCase):
    "Test UnionPay through the Huifu aggregator simulator"

    simulators = {
        'simulator': HuifuSimulator,
        }

    def prepare(self):
        self.simulator.trades.clear()
        self.simulator.paying_queries = None
        self.simulator.down = False
        company, setup, gateway = self.operator()
        with set_company(company):
            order = create_order(setup)
        return company, setup, gateway, order

    @classmethod
    def build_operator(cls):
        company = create_company()
        with set_company(company):
            setup = create_payment_setup(company)
            gateway = create_gateway(
                company, cls.simulator, setup['methods']['unionpay'])
        return company, setup, gateway

    def pay_code(self, order, code=UNIONPAY_CODE, **kwargs):
        return pay_code(order, code, **kwargs)

    @with_transaction()
    def test_face_code_through_the_aggregator(self):
        """Test a face payment's code goes to the face method of the
        gateway whose provider takes it (the aggregator for UnionPay), and
        to the channel's own method without one"""
        pool = Pool()
        Method = pool.get('sale.point.payment.method')
        company, setup, gateway, order = self.prepare()
        face = setup['methods']['face']
        with set_company(company):
            Payment = pool.get('fuel.payment.gateway.payment')
            without = Payment.method_for_code(
                company, UNIONPAY_CODE, source='face')
            self.assertEqual(without, setup['methods']['unionpay'])
            Method.write([face], {'gateway': gateway.id})
            payment = self.pay_code(order, source='face')
            self.assertEqual(payment.state, 'succeeded')
            self.assertEqual(payment.source, 'face')
            self.assertEqual(payment.method, face)
            self.assertEqual(payment.order.payments[0].method, face)

    @with_transaction()
    def test_unionpay_code_and_refund(self):
        """Test a UnionPay code routed to the aggregator, paid, partly
        refunded; the request signature is checked"""
        pool = Pool()
        Payment = pool.get('fuel.payment.gateway.payment')
        Refund = pool.get('fuel.payment.gateway.refund')
        Gateway = pool.get('fuel.payment.gateway')
        company, setup, gateway, order = self.prepare()
        with set_company(company):
            payment = self.pay_code(order)
            self.assertEqual(payment.state, 'succeeded')
            trade = self.simulator.trades[payment.number]
            self.assertEqual(payment.reference, trade.hf_seq_id)
            self.assertEqual(trade.data['trans_amt'], '151.60')
            self.assertEqual(trade.data['huifu_id'], gateway.merchant)
            self.assertEqual(payment.order.state, 'paid')
            self.assertEqual(
                payment.order.payments[0].method,
                setup['methods']['unionpay'])
            refund, = Payment.refund([payment], Decimal('51.60'))
            Refund.submit([refund])
            self.assertEqual(Refund(refund.id).state, 'succeeded')
            self.assertEqual(
                [r['amount'] for r in trade.refunds.values()],
                [Decimal('51.60')])
            Gateway.write([gateway], {
                    'private_key': private_pem(new_key())})
            other = create_order(setup, '5')
            refused = self.pay_code(other)
        self.assertEqual(refused.state, 'failed')
        self.assertIn('10000001', refused.error)

    @with_transaction()
    def test_processing_then_success_and_timeout(self):
        "Test P is queried until S, or closed at the deadline"
        pool = Pool()
        Payment = pool.get('fuel.payment.gateway.payment')
        company, setup, _gateway, order = self.prepare()
        self.simulator.paying_queries = 2
        with set_company(company):
            payment = self.pay_code(order)
            self.assertEqual(payment.state, 'pending')
            Payment.poll([payment])
            Payment.poll([payment])
            self.assertEqual(Payment(payment.id).state, 'succeeded')
            self.simulator.paying_queries = -1
            late = self.pay_code(create_order(setup, '5'))
            Payment.write([late], {
                    'deadline': dt.datetime.now() - dt.timedelta(seconds=1)})
            Payment.poll([late])
        self.assertEqual(Payment(late.id).state, 'cancelled')
        self.assertEqual(self.simulator.trades[late.number].state, 'F')

    @with_transaction()
    def test_unionpay_qr(self):
        "Test a UnionPay QR (U_NATIVE) settled by the query"
        pool = Pool()
        Payment = pool.get('fuel.payment.gateway.payment')
        company, setup, _gateway, order = self.prepare()
        with set_company(company):
            payment = Payment(Payment.create_qr(
                    order.id, setup['methods']['unionpay'].id))
            Payment.submit([payment])
            payment = Payment(payment.id)
            self.assertTrue(payment.code_url.startswith('https://qr.95516'))
            trade = self.simulator.trades[payment.number]
            self.assertEqual(trade.data['trade_type'], 'U_NATIVE')
            self.simulator.pay(payment.number)
            Payment.poll([payment])
        self.assertEqual(Payment(payment.id).state, 'succeeded')
