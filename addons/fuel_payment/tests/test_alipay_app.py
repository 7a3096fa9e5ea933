# This file is part of fuelpay.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""In-app payments (kind app) through Alipay: a mini program or a life
account page pays the trade alipay.trade.create made (my.tradePay
{tradeNO}), a mobile app opens the order string the server signed
(alipay.trade.app.pay); against the simulator acting as the Alipay client
too, as the merchant's application and as the platform's (ISV)"""
import datetime as dt
import functools
import json
import urllib.parse
from decimal import Decimal

from trytond.exceptions import UserError
from trytond.modules.company.tests import create_company, set_company
from trytond.pool import Pool
from trytond.tests.test_tryton import with_transaction

from ..alipay import format_time
from .sim_alipay import AlipaySimulator, ClientRefused
from .test_gateway import OperatorOnceMixin, create_order
from .test_module import message
from .tools import (
    PaymentDatabaseTestCase,
    SimulatorsMixin,
    create_payment_setup,
    fill,
)

MINI_APP = '2021000000000088'
OTHER_APP = '2021000000000099'
# a user id (2088 and 12 digits) and an open id of the newer kind
USER_ID = '2088000000000777'
OPEN_ID = '074a1CcTG1LelxKe4xQC0zgNdId0nxi95b5lsNpazWYoCo5'
AUTH_TOKEN = '202511BB1a2b3c4d5e6f7a8b9c0d1e2f3a4b5X77'
SELLER = '2088000000000555'
AUTH_APP = '2021000000000555'


def order_params(params):
    "The parameters of an order string, url-decoded"
    return dict(urllib.parse.parse_qsl(
            params['orderStr'], keep_blank_values=True))


class AlipayAppMixin:

    def prepare(self, quantity='20'):
        # at the start of the test body: with_transaction runs it again
        # on a rolled back database when a table must be locked first
        self.simulator.trades.clear()
        self.simulator.requests.clear()
        self.simulator.calls.clear()
        self.simulator.paying_queries = None
        self.simulator.refuse = None
        self.simulator.down = False
        company, setup, gateway = self.operator()
        with set_company(company):
            order = create_order(setup, quantity)
        return company, setup, gateway, order

    @classmethod
    def build_operator(cls, **values):
        pool = Pool()
        Gateway = pool.get('fuel.payment.gateway')
        Method = pool.get('sale.point.payment.method')
        company = create_company()
        with set_company(company):
            setup = create_payment_setup(company)
            gateway, = Gateway.create([dict(
                        cls.simulator.gateway_values(**values),
                        name="Alipay", company=company.id,
                        client_apps=MINI_APP)])
            Method.write([setup['methods']['alipay']], {
                    'gateway': gateway.id})
        return company, setup, gateway

    def create_app(self, order, setup, client, **kwargs):
        "Start an in-app payment of order, submitted at once"
        pool = Pool()
        Payment = pool.get('fuel.payment.gateway.payment')
        payment = Payment(Payment.create_app(
                order.id, setup['methods']['alipay'].id, client, **kwargs))
        Payment.submit([payment])
        return Payment(payment.id)


class AlipayAppTestCase(
        AlipayAppMixin, SimulatorsMixin, OperatorOnceMixin,
        PaymentDatabaseTestCase):
    "Test Alipay in-app payments"

    simulators = {
        'simulator': AlipaySimulator,
        }

    @with_transaction()
    def test_mini_program_paid_by_notification(self):
        """Test a mini program pays the trade made for its user and the
        notification settles the order"""
        pool = Pool()
        Notification = pool.get('fuel.payment.gateway.notification')
        Payment = pool.get('fuel.payment.gateway.payment')
        company, setup, gateway, order = self.prepare()
        with set_company(company):
            payment = self.create_app(
                order, setup, 'mini_program', payer=USER_ID, app=MINI_APP)
            self.assertEqual(payment.state, 'pending')
            self.assertEqual(payment.client_app, MINI_APP)
            trade = self.simulator.trades[payment.number]
            params = payment.status()['client_params']
            self.assertEqual(params, {'tradeNO': trade.trade_no})
            self.assertEqual(payment.reference, trade.trade_no)
            self.assertEqual(trade.biz['product_code'], 'JSAPI_PAY')
            self.assertEqual(trade.biz['buyer_id'], USER_ID)
            self.assertNotIn('buyer_open_id', trade.biz)
            self.assertEqual(trade.biz['op_app_id'], MINI_APP)
            self.assertEqual(trade.biz['total_amount'], '151.60')
            self.assertEqual(
                trade.biz['time_expire'], format_time(payment.deadline))
            self.assertEqual(trade.notify_url, gateway.notify_url)
            # another user or another mini program cannot pay it
            with self.assertRaises(ClientRefused) as cm:
                self.simulator.client_pays(params, buyer='2088000000000999')
            self.assertEqual(str(cm.exception), 'ACQ.BUYER_NOT_MATCH')
            with self.assertRaises(ClientRefused):
                self.simulator.client_pays(
                    params, buyer=USER_ID, app=OTHER_APP)
            self.simulator.client_pays(params, buyer=USER_ID, app=MINI_APP)
            self.assertEqual(
                Notification.receive(
                    gateway, *self.simulator.notification(payment.number)),
                'accepted')
        payment = Payment(payment.id)
        self.assertEqual(payment.state, 'succeeded')
        self.assertEqual(payment.order.state, 'paid')
        self.assertEqual(
            payment.order.payments[0].method, setup['methods']['alipay'])
        self.assertEqual(self.simulator.requests, ['alipay.trade.create'])

    @with_transaction()
    def test_jsapi_open_id_paid_found_by_query(self):
        """Test a life account page's open id goes as buyer_open_id, the
        gateway's own app as no op_app_id, and the cron's query settles
        the payment whose notification never came"""
        pool = Pool()
        Payment = pool.get('fuel.payment.gateway.payment')
        company, setup, gateway, order = self.prepare()
        with set_company(company):
            payment = self.create_app(order, setup, 'jsapi', payer=OPEN_ID)
            self.assertEqual(payment.client_app, gateway.app)
            trade = self.simulator.trades[payment.number]
            self.assertEqual(trade.biz['buyer_open_id'], OPEN_ID)
            self.assertNotIn('buyer_id', trade.biz)
            self.assertNotIn('op_app_id', trade.biz)
            Payment.check_pending()
            self.assertEqual(Payment(payment.id).state, 'pending')
            self.simulator.client_pays(
                payment.status()['client_params'], buyer=OPEN_ID)
            Payment.write([Payment(payment.id)], {
                    'next_check': dt.datetime.now() - dt.timedelta(
                        seconds=1)})
            Payment.check_pending()
        payment = Payment(payment.id)
        self.assertEqual(payment.state, 'succeeded')
        self.assertEqual(payment.order.state, 'paid')
        self.assertEqual(payment.reference, trade.trade_no)

    @with_transaction()
    def test_app_order_string_verified_and_paid(self):
        """Test the mobile app's order string is signed as Alipay checks it
        (a changed one is refused), unknown to Alipay until opened, paid
        once opened"""
        pool = Pool()
        Notification = pool.get('fuel.payment.gateway.notification')
        Payment = pool.get('fuel.payment.gateway.payment')
        company, setup, gateway, order = self.prepare()
        with set_company(company):
            payment = self.create_app(order, setup, 'app')
            self.assertEqual(payment.state, 'pending')
            params = payment.status()['client_params']
            self.assertEqual(list(params), ['orderStr'])
            values = order_params(params)
            self.assertEqual(values['method'], 'alipay.trade.app.pay')
            self.assertEqual(values['app_id'], gateway.app)
            self.assertEqual(values['notify_url'], gateway.notify_url)
            self.assertEqual(values['sign_type'], 'RSA2')
            self.assertNotIn('app_auth_token', values)
            biz = json.loads(values['biz_content'])
            self.assertEqual(biz['product_code'], 'QUICK_MSECURITY_PAY')
            self.assertEqual(biz['out_trade_no'], payment.number)
            self.assertEqual(biz['total_amount'], '151.60')
            self.assertEqual(
                biz['time_expire'], format_time(payment.deadline))
            # no server call: Alipay does not know it yet
            self.assertEqual(self.simulator.requests, [])
            Payment.check([payment])
            self.assertEqual(Payment(payment.id).state, 'pending')
            self.assertEqual(
                self.simulator.requests, ['alipay.trade.query'])
            # an order string changed on the way is refused
            tampered = {'orderStr': params['orderStr'].replace(
                    '151.60', '1.60')}
            self.assertNotEqual(tampered, params)
            with self.assertRaises(ClientRefused) as cm:
                self.simulator.client_pays(tampered)
            self.assertEqual(str(cm.exception), 'isv.invalid-signature')
            self.assertEqual(self.simulator.trades, {})
            trade = self.simulator.client_pays(params)
            self.assertEqual(trade.total, Decimal('151.60'))
            # opened again: already paid
            with self.assertRaises(ClientRefused):
                self.simulator.client_pays(params)
            self.assertEqual(
                Notification.receive(
                    gateway, *self.simulator.notification(payment.number)),
                'accepted')
        payment = Payment(payment.id)
        self.assertEqual(payment.state, 'succeeded')
        self.assertEqual(payment.reference, trade.trade_no)
        self.assertEqual(payment.order.state, 'paid')

    @with_transaction()
    def test_phone_browser_wap_pay(self):
        """Test a page in the phone's browser (h5) gets the signed address
        of alipay.trade.wap.pay; a changed one is refused; opened, it is
        paid and the notification settles the order"""
        pool = Pool()
        Notification = pool.get('fuel.payment.gateway.notification')
        Payment = pool.get('fuel.payment.gateway.payment')
        company, setup, gateway, order = self.prepare()
        with set_company(company):
            payment = self.create_app(order, setup, 'h5')
            params = payment.status()['client_params']
            self.assertEqual(list(params), ['url'])
            url = urllib.parse.urlsplit(params['url'])
            self.assertEqual(
                f'{url.scheme}://{url.netloc}{url.path}',
                self.simulator.url)
            values = dict(urllib.parse.parse_qsl(url.query))
            self.assertEqual(values['method'], 'alipay.trade.wap.pay')
            biz = json.loads(values['biz_content'])
            self.assertEqual(biz['product_code'], 'QUICK_WAP_WAY')
            self.assertEqual(biz['out_trade_no'], payment.number)
            self.assertEqual(self.simulator.requests, [])
            tampered = {'url': params['url'].replace('151.60', '1.60')}
            with self.assertRaises(ClientRefused) as cm:
                self.simulator.client_pays(tampered)
            self.assertEqual(str(cm.exception), 'isv.invalid-signature')
            self.simulator.client_pays(params)
            self.assertEqual(
                Notification.receive(
                    gateway, *self.simulator.notification(payment.number)),
                'accepted')
        payment = Payment(payment.id)
        self.assertEqual(payment.state, 'succeeded')
        self.assertEqual(payment.order.state, 'paid')

    @with_transaction()
    def test_unpaid_closed_at_deadline(self):
        """Test an unpaid mini program trade is closed at the deadline; an
        app order never opened is cancelled without Alipay knowing it, and
        paid after all it is booked on the open order"""
        pool = Pool()
        Notification = pool.get('fuel.payment.gateway.notification')
        Payment = pool.get('fuel.payment.gateway.payment')
        company, setup, gateway, order = self.prepare()
        past = dt.datetime.now() - dt.timedelta(seconds=1)
        with set_company(company):
            payment = self.create_app(
                order, setup, 'mini_program', payer=USER_ID, app=MINI_APP)
            Payment.write([payment], {'deadline': past})
            Payment.poll([payment])
            payment = Payment(payment.id)
            self.assertEqual(payment.state, 'cancelled')
            self.assertEqual(payment.error, message('msg_gateway_timeout'))
            trade = self.simulator.trades[payment.number]
            self.assertEqual(trade.status, 'TRADE_CLOSED')
            self.assertIn('alipay.trade.close', self.simulator.requests)
            with self.assertRaises(ClientRefused):
                self.simulator.client_pays(
                    payment.status()['client_params'], buyer=USER_ID)
            self.assertEqual(payment.order.state, 'draft')

            app = self.create_app(order, setup, 'app')
            self.assertNotEqual(app.number, payment.number)
            Payment.write([app], {'deadline': past})
            self.simulator.requests.clear()
            Payment.poll([app])
            app = Payment(app.id)
            self.assertEqual(app.state, 'cancelled')
            self.assertEqual(app.error, message('msg_gateway_timeout'))
            self.assertEqual(self.simulator.requests, [
                    'alipay.trade.query', 'alipay.trade.close'])
            self.assertNotIn(app.number, self.simulator.trades)
            # the driver opened it before its time_expire after all
            self.simulator.client_pays(app.status()['client_params'])
            self.assertEqual(
                Notification.receive(
                    gateway, *self.simulator.notification(app.number)),
                'accepted')
        app = Payment(app.id)
        self.assertEqual(app.state, 'succeeded')
        self.assertEqual(
            app.error, message('msg_gateway_late_success', payment=app.number))
        self.assertEqual(app.order.state, 'paid')

    @with_transaction()
    def test_checks(self):
        """Test a payer is required in a mini program, the app must be
        bound to the gateway, a mobile app order is the gateway's app"""
        pool = Pool()
        Gateway = pool.get('fuel.payment.gateway')
        Payment = pool.get('fuel.payment.gateway.payment')
        company, setup, gateway, order = self.prepare()
        alipay = setup['methods']['alipay']
        with set_company(company):
            for client in ['mini_program', 'jsapi']:
                with self.assertRaises(UserError) as cm:
                    Payment.create_app(
                        order.id, alipay.id, client, payer=' ',
                        app=MINI_APP)
                self.assertEqual(cm.exception.message, message(
                        'msg_gateway_app_payer', client=client))
            with self.assertRaises(UserError) as cm:
                Payment.create_app(
                    order.id, alipay.id, 'mini_program', payer=USER_ID,
                    app=OTHER_APP)
            self.assertEqual(cm.exception.message, message(
                    'msg_gateway_client_app', app=OTHER_APP,
                    gateway=gateway.rec_name))
            self.assertEqual(Payment.search([], count=True), 0)
            # a mobile app's order is signed for the gateway's App ID
            payment = self.create_app(order, setup, 'app', app=MINI_APP)
        self.assertEqual(payment.state, 'failed')
        self.assertEqual(payment.error, message(
                'msg_gateway_alipay_app_order', gateway=gateway.rec_name,
                app=MINI_APP))
        self.assertEqual(self.simulator.trades, {})
        Gateway.write([gateway], {'client_apps': None})
        with set_company(company), self.assertRaises(UserError) as cm:
            Payment.create_app(
                order.id, alipay.id, 'mini_program', payer=USER_ID,
                app=MINI_APP)
        self.assertEqual(cm.exception.message, message(
                'msg_gateway_client_app', app=MINI_APP,
                gateway=gateway.rec_name))

    @with_transaction()
    def test_refused_by_alipay(self):
        """Test a trade Alipay refuses to make fails the payment with its
        reason and leaves the order open"""
        company, setup, _gateway, order = self.prepare()
        self.simulator.refuse = 'ACQ.INVALID_PARAMETER'
        with set_company(company):
            payment = self.create_app(
                order, setup, 'mini_program', payer=USER_ID, app=MINI_APP)
        self.assertEqual(payment.state, 'failed')
        self.assertIn('ACQ.INVALID_PARAMETER', payment.error)
        self.assertEqual(payment.order.state, 'draft')

    @with_transaction()
    def test_prepay_in_app(self):
        """Test a pre-payment paid in the mini program holds the nozzle's
        money and the under-fill is refunded"""
        pool = Pool()
        Notification = pool.get('fuel.payment.gateway.notification')
        Payment = pool.get('fuel.payment.gateway.payment')
        PrePay = pool.get('fuel.payment.prepay')
        FuelTransaction = pool.get('fuel.payment.transaction')
        company, setup, gateway, _order = self.prepare()
        with set_company(company):
            payment = Payment(PrePay.start(
                    setup['station'].id, 1, '200',
                    method=setup['methods']['alipay'].id, fill_up=True,
                    client='mini_program', payer=USER_ID, app=MINI_APP))
            Payment.submit([payment])
            payment = Payment(payment.id)
            self.assertEqual(payment.kind, 'app')
            self.assertEqual(payment.state, 'pending')
            self.assertEqual(payment.prepay.state, 'draft')
            trade = self.simulator.trades[payment.number]
            self.assertEqual(trade.biz['total_amount'], '200.00')
            self.simulator.client_pays(
                payment.status()['client_params'], buyer=USER_ID)
            self.assertEqual(
                Notification.receive(
                    gateway, *self.simulator.notification(payment.number)),
                'accepted')
            prepay = PrePay(Payment(payment.id).prepay.id)
            self.assertEqual(prepay.state, 'paid')
            result, = FuelTransaction.ingest([fill(setup['station'], '20')])
            prepay = PrePay(prepay.id)
            self.assertEqual(prepay.state, 'done')
            self.assertEqual(prepay.transaction.id, result['id'])
            self.assertEqual(prepay.captured, Decimal('151.60'))
            refund, = Payment(payment.id).refunds
            self.assertEqual(refund.amount, Decimal('48.40'))

    @with_transaction()
    def test_partial_refund(self):
        "Test an in-app payment is refunded in part through Alipay"
        pool = Pool()
        Payment = pool.get('fuel.payment.gateway.payment')
        Refund = pool.get('fuel.payment.gateway.refund')
        company, setup, _gateway, order = self.prepare()
        with set_company(company):
            payment = self.create_app(order, setup, 'app')
            trade = self.simulator.client_pays(
                payment.status()['client_params'])
            Payment.check([payment])
            payment = Payment(payment.id)
            self.assertEqual(payment.state, 'succeeded')
            refund, = Payment.refund([payment], amount=Decimal('20.00'))
            Refund.submit([refund])
            with self.assertRaises(UserError) as cm:
                Payment.refund([payment], amount=Decimal('131.61'))
            self.assertEqual(cm.exception.message, message(
                    'msg_gateway_refund_amount', payment=payment.number,
                    amount=Decimal('131.60')))
        refund = Refund(refund.id)
        self.assertEqual(refund.state, 'succeeded')
        self.assertEqual(trade.refunds, {refund.number: Decimal('20.00')})
        self.assertEqual(trade.status, 'TRADE_SUCCESS')


class AlipayISVAppTestCase(
        AlipayAppMixin, SimulatorsMixin, OperatorOnceMixin,
        PaymentDatabaseTestCase):
    "Test Alipay in-app payments in third-party application mode (ISV)"

    simulators = {
        'simulator': functools.partial(
            AlipaySimulator, auth_tokens={AUTH_TOKEN: (SELLER, AUTH_APP)}),
        }

    @classmethod
    def build_operator(cls):
        return super().build_operator(auth_token=AUTH_TOKEN)

    @with_transaction()
    def test_calls_carry_the_token(self):
        """Test the mini program's trade is made and the mobile app's order
        signed with the operator's app_auth_token, for its seller"""
        pool = Pool()
        Notification = pool.get('fuel.payment.gateway.notification')
        Payment = pool.get('fuel.payment.gateway.payment')
        company, setup, gateway, order = self.prepare()
        with set_company(company):
            mini = self.create_app(
                order, setup, 'mini_program', payer=USER_ID, app=MINI_APP,
                amount='100')
            self.assertEqual(mini.state, 'pending')
            call, = self.simulator.calls
            self.assertEqual(call['method'], 'alipay.trade.create')
            self.assertEqual(call['app_auth_token'], AUTH_TOKEN)
            trade = self.simulator.trades[mini.number]
            self.assertEqual(trade.seller, (SELLER, AUTH_APP))
            self.simulator.client_pays(
                mini.status()['client_params'], buyer=USER_ID)
            notification = self.simulator.notification(mini.number)
            self.assertIn(f'seller_id={SELLER}', notification[1])
            self.assertEqual(
                Notification.receive(gateway, *notification), 'accepted')
            self.assertEqual(Payment(mini.id).state, 'succeeded')

            app = self.create_app(order, setup, 'app')
            self.assertEqual(app.amount, Decimal('51.60'))
            params = app.status()['client_params']
            self.assertEqual(
                order_params(params)['app_auth_token'], AUTH_TOKEN)
            trade = self.simulator.client_pays(params)
            self.assertEqual(trade.seller, (SELLER, AUTH_APP))
            Payment.check([app])
        self.assertEqual(Payment(app.id).state, 'succeeded')
        self.assertEqual(Payment(app.id).order.state, 'paid')
