# This file is part of fuelpay.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""In-app payments (kind app) through WeChat Pay: an official account page
(JSAPI), a mini program or a mobile app pays the prepay_id the server
made, with the parameters it signed; against the simulator acting as the
WeChat client too"""
import datetime as dt
import functools
from decimal import Decimal

from trytond.exceptions import UserError
from trytond.modules.company.tests import create_company, set_company
from trytond.pool import Pool
from trytond.tests.test_tryton import with_transaction

from addons.fuel_device.tests.tools import create_box

from .sim_wechat import WeChatSimulator
from .test_gateway import OperatorOnceMixin, create_gateway, create_order
from .test_module import message
from .tools import (
    PaymentDatabaseTestCase,
    SimulatorsMixin,
    create_payment_setup,
    fill,
)

MINI_APP = 'wxmini0000000001'
MOBILE_APP = 'wxapp00000000001'
OTHER_APP = 'wxother000000001'
OPENID = 'oMiniUser000000000000000001'
SUB_MCHID = '1900000301'
SUB_APPID = 'wxsubmini0000001'


class WeChatAppTestCase(
        SimulatorsMixin, OperatorOnceMixin, PaymentDatabaseTestCase):
    "Test WeChat in-app payments"

    simulators = {
        'simulator': functools.partial(
            WeChatSimulator, apps=[MINI_APP, MOBILE_APP]),
        }

    def prepare(self, quantity='20'):
        self.simulator.orders.clear()
        self.simulator.requests.clear()
        company, setup, gateway, box = self.operator()
        with set_company(company):
            order = create_order(setup, quantity)
        return company, setup, gateway, box, order

    @classmethod
    def build_operator(cls):
        pool = Pool()
        Gateway = pool.get('fuel.payment.gateway')
        company = create_company()
        with set_company(company):
            setup = create_payment_setup(company)
            gateway = create_gateway(
                company, cls.simulator, setup['methods']['wechat'])
            Gateway.write([gateway], {
                    'client_apps': f'{MINI_APP} {MOBILE_APP}'})
            box, _ = create_box(setup['station'], 'BOX-A')
        return company, setup, gateway, box

    def create_app(self, order, setup, client, **kwargs):
        "Start an in-app payment of order, submitted at once"
        pool = Pool()
        Payment = pool.get('fuel.payment.gateway.payment')
        payment = Payment(Payment.create_app(
                order.id, setup['methods']['wechat'].id, client, **kwargs))
        Payment.submit([payment])
        return Payment(payment.id)

    @with_transaction()
    def test_mini_program_paid_by_notification(self):
        """Test a mini program pays its prepay_id with the signed
        parameters and the notification settles the order"""
        pool = Pool()
        Notification = pool.get('fuel.payment.gateway.notification')
        company, setup, gateway, _box, order = self.prepare()
        with set_company(company):
            payment = self.create_app(
                order, setup, 'mini_program', payer=OPENID, app=MINI_APP)
        self.assertEqual(payment.kind, 'app')
        self.assertEqual(payment.source, 'customer')
        self.assertEqual(payment.state, 'pending')
        self.assertEqual(
            (payment.client, payment.client_app, payment.payer),
            ('mini_program', MINI_APP, OPENID))
        params = payment.status()['client_params']
        self.assertEqual(
            sorted(params),
            ['appId', 'nonceStr', 'package', 'paySign', 'signType',
                'timeStamp'])
        self.assertEqual(params['appId'], MINI_APP)
        self.assertEqual(params['signType'], 'RSA')
        sim_order = self.simulator.orders[payment.number]
        self.assertEqual(sim_order.data['appid'], MINI_APP)
        self.assertEqual(sim_order.data['payer'], {'openid': OPENID})
        self.assertEqual(sim_order.data['amount']['total'], 15160)
        self.assertEqual(
            self.simulator.requests[-1],
            ('POST', '/v3/pay/transactions/jsapi'))
        # another user of the mini program cannot pay it, a tampered
        # signature is refused by the client
        with self.assertRaisesRegex(ValueError, 'OPENID_NOT_MATCH'):
            self.simulator.client_pays(params, openid='oSomeoneElse')
        tampered = dict(params, timeStamp=str(int(params['timeStamp']) + 1))
        with self.assertRaisesRegex(ValueError, 'SIGN_ERROR'):
            self.simulator.client_pays(tampered, openid=OPENID)
        self.assertEqual(
            self.simulator.client_pays(params, openid=OPENID),
            payment.number)
        self.assertEqual(Notification.receive(
                gateway, *self.simulator.notification(payment.number)),
            'accepted')
        payment = payment.__class__(payment.id)
        self.assertEqual(payment.state, 'succeeded')
        self.assertEqual(payment.order.state, 'paid')
        self.assertTrue(payment.reference)
        # paying twice is refused by the channel
        with self.assertRaisesRegex(ValueError, 'ORDER_SUCCESS'):
            self.simulator.client_pays(params, openid=OPENID)

    @with_transaction()
    def test_app_paid_found_by_query(self):
        """Test a mobile app payment (PayReq signed over appid, timestamp,
        nonce, prepayid) is settled by the query when no notification
        comes"""
        pool = Pool()
        Payment = pool.get('fuel.payment.gateway.payment')
        company, setup, gateway, _box, order = self.prepare()
        with set_company(company):
            payment = self.create_app(order, setup, 'app', app=MOBILE_APP)
            params = payment.status()['client_params']
            self.assertEqual(params['partnerid'], gateway.merchant)
            self.assertEqual(params['package'], 'Sign=WXPay')
            self.assertEqual(params['appid'], MOBILE_APP)
            self.assertNotIn(
                'payer', self.simulator.orders[payment.number].data)
            self.assertEqual(
                self.simulator.requests[-1],
                ('POST', '/v3/pay/transactions/app'))
            self.simulator.client_pays(params)
            Payment.write([payment], {
                    'next_check': dt.datetime.now() - dt.timedelta(
                        seconds=1)})
            Payment.check_pending()
        payment = Payment(payment.id)
        self.assertEqual(payment.state, 'succeeded')
        self.assertEqual(payment.order.state, 'paid')

    @with_transaction()
    def test_phone_browser_h5(self):
        """Test a page in the phone's browser (h5) gets WeChat's h5_url for
        the phone's address; only that phone may pay it"""
        pool = Pool()
        Payment = pool.get('fuel.payment.gateway.payment')
        company, setup, _gateway, _box, order = self.prepare()
        with set_company(company):
            with self.assertRaises(UserError) as cm:
                Payment.create_app(
                    order.id, setup['methods']['wechat'].id, 'h5',
                    client_ip='not an address')
            self.assertEqual(cm.exception.message, message(
                    'msg_gateway_app_client_ip', client='h5',
                    address='not an address'))
            payment = self.create_app(
                order, setup, 'h5', client_ip='203.0.113.7')
            self.assertEqual(payment.client_ip, '203.0.113.7')
            params = payment.status()['client_params']
            self.assertEqual(list(params), ['h5_url'])
            self.assertTrue(params['h5_url'].startswith(
                    'https://wx.tenpay.com/cgi-bin/mmpayweb-bin/checkmweb?'))
            data = self.simulator.orders[payment.number].data
            self.assertEqual(data['scene_info'], {
                    'payer_client_ip': '203.0.113.7',
                    'h5_info': {'type': 'Wap'}})
            self.assertNotIn('payer', data)
            self.assertEqual(
                self.simulator.requests[-1],
                ('POST', '/v3/pay/transactions/h5'))
            with self.assertRaisesRegex(ValueError, 'IP_NOT_MATCH'):
                self.simulator.client_pays(params, ip='198.51.100.1')
            self.simulator.client_pays(params, ip='203.0.113.7')
            Payment.check([payment])
        payment = Payment(payment.id)
        self.assertEqual(payment.state, 'succeeded')
        self.assertEqual(payment.order.state, 'paid')

    @with_transaction()
    def test_unpaid_closed_at_deadline(self):
        """Test an in-app payment not paid by its deadline is closed at
        the channel and cancelled; the client cannot pay it any more"""
        pool = Pool()
        Payment = pool.get('fuel.payment.gateway.payment')
        company, setup, _gateway, _box, order = self.prepare()
        with set_company(company):
            payment = self.create_app(
                order, setup, 'jsapi', payer=OPENID)
            params = payment.status()['client_params']
            # the official account page is the gateway's own app
            self.assertEqual(params['appId'], self.simulator.appid)
            Payment.write([payment], {
                    'deadline': dt.datetime.now() - dt.timedelta(seconds=1),
                    'next_check': dt.datetime.now() - dt.timedelta(
                        seconds=1)})
            Payment.check_pending()
        payment = Payment(payment.id)
        self.assertEqual(payment.state, 'cancelled')
        self.assertEqual(payment.order.state, 'draft')
        self.assertIn(
            ('POST', f'/v3/pay/transactions/out-trade-no/{payment.number}'
                '/close'), self.simulator.requests)
        with self.assertRaisesRegex(ValueError, 'ORDER_CLOSED'):
            self.simulator.client_pays(params, openid=OPENID)

    @with_transaction()
    def test_checks(self):
        "Test what an in-app payment refuses before anything is created"
        pool = Pool()
        Payment = pool.get('fuel.payment.gateway.payment')
        company, setup, gateway, _box, order = self.prepare()
        wechat = setup['methods']['wechat']
        with set_company(company):
            with self.assertRaises(UserError) as cm:
                Payment.create_app(
                    order.id, wechat.id, 'mini_program', app=MINI_APP)
            self.assertEqual(cm.exception.message, message(
                    'msg_gateway_app_payer', client='mini_program'))
            with self.assertRaises(UserError) as cm:
                Payment.create_app(
                    order.id, wechat.id, 'mini_program', payer=OPENID,
                    app=OTHER_APP)
            self.assertEqual(cm.exception.message, message(
                    'msg_gateway_client_app', app=OTHER_APP,
                    gateway=gateway.rec_name))
            with self.assertRaises(UserError) as cm:
                Payment.create_app(order.id, wechat.id, 'pc')
            self.assertEqual(cm.exception.message, message(
                    'msg_gateway_app_client', client='pc',
                    gateway=gateway.rec_name))
            with self.assertRaises(UserError) as cm:
                Payment.create_app(
                    order.id, setup['methods']['cash'].id, 'app')
            self.assertEqual(cm.exception.message, message(
                    'msg_order_method_invalid',
                    method=setup['methods']['cash'].rec_name))
            with self.assertRaises(UserError) as cm:
                Payment.create_app(
                    order.id, wechat.id, 'app', app=MOBILE_APP,
                    amount='151.61')
            self.assertEqual(cm.exception.message, message(
                    'msg_gateway_amount', order=order.rec_name,
                    amount=Decimal('151.60')))
        self.assertEqual(Payment.search([], count=True), 0)

    @with_transaction()
    def test_refused_by_the_channel(self):
        """Test an app the merchant bound here but not at WeChat fails
        with the channel's reason"""
        pool = Pool()
        Gateway = pool.get('fuel.payment.gateway')
        company, setup, gateway, _box, order = self.prepare()
        Gateway.write([gateway], {'client_apps': f'{MINI_APP} {OTHER_APP}'})
        with set_company(company):
            payment = self.create_app(
                order, setup, 'mini_program', payer=OPENID, app=OTHER_APP)
        self.assertEqual(payment.state, 'failed')
        self.assertIn('APPID_MCHID_NOT_MATCH', payment.error)
        self.assertEqual(payment.order.state, 'draft')

    @with_transaction()
    def test_partial_refund(self):
        "Test an in-app payment is refunded in part through the channel"
        pool = Pool()
        Payment = pool.get('fuel.payment.gateway.payment')
        Refund = pool.get('fuel.payment.gateway.refund')
        company, setup, _gateway, _box, order = self.prepare()
        with set_company(company):
            payment = self.create_app(order, setup, 'app', app=MOBILE_APP)
            self.simulator.client_pays(payment.status()['client_params'])
            Payment.check([payment])
            payment = Payment(payment.id)
            self.assertEqual(payment.state, 'succeeded')
            Payment.refund([payment], amount=Decimal('20.00'))
            refund, = Refund.search([('payment', '=', payment.id)])
            Refund.submit([refund])
        self.assertEqual(Refund(refund.id).state, 'succeeded')
        self.assertEqual(
            [r['refund'] for r in self.simulator.orders[
                    payment.number].refunds.values()], [2000])

    @with_transaction()
    def test_prepay_in_app(self):
        """Test a pre-payment paid in the mini program releases the nozzle
        and the under-fill is refunded"""
        pool = Pool()
        Payment = pool.get('fuel.payment.gateway.payment')
        PrePay = pool.get('fuel.payment.prepay')
        FuelTransaction = pool.get('fuel.payment.transaction')
        company, setup, _gateway, _box, _order = self.prepare()
        with set_company(company):
            payment = Payment(PrePay.start(
                    setup['station'].id, 1, '200',
                    method=setup['methods']['wechat'].id, fill_up=True,
                    client='mini_program', payer=OPENID, app=MINI_APP))
            Payment.submit([payment])
            payment = Payment(payment.id)
            self.assertEqual(payment.kind, 'app')
            self.assertEqual(payment.prepay.state, 'draft')
            self.simulator.client_pays(
                payment.status()['client_params'], openid=OPENID)
            Payment.check([payment])
            prepay = PrePay(payment.prepay.id)
            self.assertEqual(prepay.state, 'paid')
            result, = FuelTransaction.ingest([fill(setup['station'], '20')])
            prepay = PrePay(prepay.id)
            self.assertEqual(prepay.state, 'done')
            self.assertEqual(prepay.transaction.id, result['id'])
            self.assertEqual(prepay.captured, Decimal('151.60'))
            refund, = Payment(payment.id).refunds
            self.assertEqual(refund.amount, Decimal('48.40'))
            with self.assertRaises(UserError) as cm:
                PrePay.start(
                    setup['station'].id, 1, '100',
                    method=setup['methods']['wechat'].id,
                    client='mini_program', app=MINI_APP)
            self.assertEqual(cm.exception.message, message(
                    'msg_gateway_app_payer', client='mini_program'))


class WeChatPartnerAppTestCase(
        SimulatorsMixin, OperatorOnceMixin, PaymentDatabaseTestCase):
    "Test WeChat in-app payments in partner mode (服务商)"

    simulators = {
        'simulator': functools.partial(
            WeChatSimulator, sub_mchids=[SUB_MCHID], apps=[MINI_APP]),
        }

    @classmethod
    def build_operator(cls):
        pool = Pool()
        Gateway = pool.get('fuel.payment.gateway')
        Method = pool.get('sale.point.payment.method')
        company = create_company()
        with set_company(company):
            setup = create_payment_setup(company)
            gateway, = Gateway.create([dict(
                        cls.simulator.gateway_values(
                            sub_mchid=SUB_MCHID, sub_appid=SUB_APPID),
                        name="WeChat Pay (partner)", company=company.id,
                        client_apps=MINI_APP)])
            Method.write([setup['methods']['wechat']], {
                    'gateway': gateway.id})
        return company, setup, gateway

    @with_transaction()
    def test_sub_app_and_platform_app(self):
        """Test the sub-merchant's own mini program pays as sub_openid with
        sub_appid, the platform's mini program as sp_openid"""
        pool = Pool()
        Payment = pool.get('fuel.payment.gateway.payment')
        self.simulator.orders.clear()
        company, setup, _gateway = self.operator()
        wechat = setup['methods']['wechat']
        with set_company(company):
            own = Payment(Payment.create_app(
                    create_order(setup).id, wechat.id, 'mini_program',
                    payer=OPENID, app=SUB_APPID))
            platform = Payment(Payment.create_app(
                    create_order(setup).id, wechat.id, 'mini_program',
                    payer=OPENID, app=MINI_APP))
            Payment.submit([own, platform])
        data = self.simulator.orders[own.number].data
        self.assertEqual(data['sub_mchid'], SUB_MCHID)
        self.assertEqual(data['sub_appid'], SUB_APPID)
        self.assertEqual(data['sp_appid'], self.simulator.appid)
        self.assertEqual(data['payer'], {'sub_openid': OPENID})
        data = self.simulator.orders[platform.number].data
        self.assertEqual(data['sp_appid'], MINI_APP)
        self.assertEqual(data['payer'], {'sp_openid': OPENID})
        for payment, app in [(own, SUB_APPID), (platform, MINI_APP)]:
            payment = Payment(payment.id)
            params = payment.status()['client_params']
            self.assertEqual(params['appId'], app)
            self.simulator.client_pays(params, openid=OPENID)
            with set_company(company):
                Payment.check([payment])
            self.assertEqual(Payment(payment.id).state, 'succeeded')
        self.assertIn(
            ('POST', '/v3/pay/partner/transactions/jsapi'),
            self.simulator.requests)
