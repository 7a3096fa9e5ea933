# This file is part of fuelpay.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""Payments in the UnionPay app (U_JSAPI) and the operator's mobile app
(WeChat T_APP) through the Huifu aggregator, against its simulator"""
import json
import logging
import pathlib

from trytond.exceptions import UserError
from trytond.modules.company.tests import set_company
from trytond.pool import Pool
from trytond.tests.test_tryton import with_transaction
from trytond.transaction import Transaction

from ..gateway import PermanentError
from .test_gateway import create_order
from .test_huifu_app import HuifuAppMixin
from .test_module import message
from .tools import PaymentDatabaseTestCase

OPENID = 'oUpF8uMuAJO_M2pxb1Q9zNjWeS6o'
MOBILE_APP = 'wx8888888888888803'
# bound to the gateway, not to Huifu's merchant
UNBOUND_MOBILE_APP = 'wx8888888888888804'
# the UnionPay app's identifier (from its user agent), as Huifu's demos
UNIONPAY_APP = 'UnionPay/1.0 CloudPay'
PHONE = '203.0.113.7'
ZH_CN_PO = pathlib.Path(__file__).parent.parent / 'locale' / 'zh_CN.po'


class HuifuApp2TestCase(HuifuAppMixin, PaymentDatabaseTestCase):
    "Test UnionPay JS and WeChat mobile app payments through Huifu"

    client_apps = [MOBILE_APP, UNBOUND_MOBILE_APP]
    box = 'BOX-H2'

    @with_transaction()
    def test_unionpay_js_paid_in_unionpay_app(self):
        """Test a UnionPay JS payment (U_JSAPI): the user authorization
        code turned into the user id once, the user id (spaces mended into
        '+') and the phone's IP in unionpay_data, the address Huifu answers
        opened by that user only, the notification settles it"""
        pool = Pool()
        Payment = pool.get('fuel.payment.gateway.payment')
        Notification = pool.get('fuel.payment.gateway.notification')
        company, setup, gateway, order = self.prepare()
        provider = gateway.get_provider()
        code, user = self.simulator.unionpay_authorize()
        self.assertIn('+', user)
        self.assertEqual(provider.unionpay_user(code, UNIONPAY_APP), user)
        with self.assertRaises(PermanentError):
            # a code is good once
            provider.unionpay_user(code, UNIONPAY_APP)
        stranger_code, stranger = self.simulator.unionpay_authorize()
        self.assertEqual(provider.unionpay_user(stranger_code), stranger)
        with set_company(company):
            # as a page reading it from its address may pass it
            payment = self.create_app(
                order, setup['methods']['unionpay'], 'jsapi',
                payer=user.replace('+', ' '), client_ip=PHONE)
            self.assertEqual(payment.error, None)
            self.assertEqual(payment.state, 'pending')
            self.assertEqual(payment.kind, 'app')
            self.assertEqual(payment.client_ip, PHONE)
            trade = self.simulator.trades[payment.number]
            self.assertEqual(trade.data['trade_type'], 'U_JSAPI')
            self.assertEqual(trade.data['trans_amt'], '151.60')
            self.assertEqual(json.loads(trade.data['unionpay_data']), {
                    'user_id': user, 'customer_ip': PHONE})
            self.assertNotIn('wx_data', trade.data)
            self.assertEqual(payment.reference, trade.hf_seq_id)
            params = json.loads(payment.client_params)
            self.assertEqual(params, {'url': trade.pay_info})
            self.assertTrue(params['url'].startswith('https://'))
            self.assertEqual(payment.status()['client_params'], params)

            self.assertFalse(
                self.simulator.unionpay_opens(params['url'], stranger))
            Payment.poll([payment])
            self.assertEqual(Payment(payment.id).state, 'pending')
            self.assertTrue(
                self.simulator.unionpay_opens(params['url'], user))
            forged = self.simulator.notification(payment.number, forge=True)
            with self.assertLogs('addons.fuel_payment', logging.WARNING):
                self.assertEqual(
                    Notification.receive(gateway, *forged), 'refused')
            valid = self.simulator.notification(payment.number)
            self.assertEqual(
                Notification.receive(gateway, *valid), 'accepted')
            self.assertEqual(
                Notification.receive(gateway, *valid), 'duplicate')
            # paid: the address pays nothing more
            self.assertFalse(
                self.simulator.unionpay_opens(params['url'], user))
        payment = Payment(payment.id)
        self.assertEqual(payment.state, 'succeeded')
        self.assertEqual(payment.order.state, 'paid')
        self.assertEqual(
            payment.order.payments[0].method, setup['methods']['unionpay'])

    @with_transaction()
    def test_unionpay_js_by_login_code(self):
        """Test a UnionPay JS payment naming the user authorization code
        instead of the user: Huifu turns it into the user id, once; a code
        used again or unknown is refused with nothing created"""
        pool = Pool()
        Payment = pool.get('fuel.payment.gateway.payment')
        company, setup, _gateway, order = self.prepare()
        method = setup['methods']['unionpay']
        code, user = self.simulator.unionpay_authorize()
        with set_company(company):
            payment = self.create_app(
                order, method, 'jsapi', code=code, client_ip=PHONE)
            self.assertEqual(payment.payer, user)
            trade = self.simulator.trades[payment.number]
            self.assertEqual(
                json.loads(trade.data['unionpay_data'])['user_id'], user)
            self.assertTrue(self.simulator.unionpay_opens(
                    json.loads(payment.client_params)['url'], user))
            Payment.cancel([payment])
            # identify: the user alone, for a page that remembers it
            other_code, other = self.simulator.unionpay_authorize()
            self.assertEqual(
                Payment.identify(
                    method.id, 'jsapi', other_code, client_ip=PHONE),
                other)
            for login in [code, other_code, 'not-a-code']:
                with self.assertRaises(UserError) as context:
                    Payment.create_app(
                        order.id, method.id, 'jsapi', code=login,
                        client_ip=PHONE)
                self.assertEqual(
                    context.exception.message,
                    message('msg_login_refused', channel="UnionPay",
                        error="10000000: auth_code无效"))
            self.assertEqual(Payment.search([], count=True), 1)

    @with_transaction()
    def test_unionpay_js_refused(self):
        """Test UnionPay JS payments without the phone's address or the
        user are refused before anything is created (the WeChat ones of
        the same gateway need no address); one naming a user id UnionPay
        never gave is refused by Huifu, one answered with a pay_info that
        is no web address fails"""
        pool = Pool()
        Payment = pool.get('fuel.payment.gateway.payment')
        company, setup, _gateway, order = self.prepare()
        unionpay = setup['methods']['unionpay']
        _code, user = self.simulator.unionpay_authorize()
        with set_company(company):
            for address in [None, '', 'phone', '203.0.113']:
                with self.subTest(address=address), \
                        self.assertRaises(UserError) as cm:
                    self.create_app(
                        order, unionpay, 'jsapi', payer=user,
                        client_ip=address)
                self.assertEqual(cm.exception.message, message(
                        'msg_gateway_app_client_ip', client='jsapi',
                        address=address or ''))
            with self.assertRaises(UserError) as cm:
                self.create_app(order, unionpay, 'jsapi', client_ip=PHONE)
            self.assertEqual(cm.exception.message, message(
                    'msg_gateway_app_payer', client='jsapi'))
            self.assertNothingCreated()

            payment = self.create_app(
                order, unionpay, 'jsapi', payer='bm90IGEgdXNlcg==',
                client_ip=PHONE)
            self.assertEqual(payment.state, 'failed')
            self.assertIn('user_id无效', payment.error)
            self.assertIsNone(payment.client_params)
            self.assertEqual(self.simulator.trades, {})

            wechat = self.create_app(
                create_order(setup, '5'), setup['methods']['wechat'],
                'jsapi', payer=OPENID)
            self.assertEqual(wechat.state, 'pending')
            self.assertIsNone(wechat.client_ip)

            # an answer whose pay_info is no web address pays nothing
            self.simulator.unionpay_pay_info = (
                lambda data, refuse: ('javascript:pay()', None))
            try:
                payment = self.create_app(
                    create_order(setup, '6'), unionpay, 'jsapi',
                    payer=user, client_ip=PHONE)
            finally:
                del self.simulator.unionpay_pay_info
        self.assertEqual(payment.state, 'failed')
        self.assertEqual(payment.error, 'U_JSAPI answer without pay_info')
        self.assertIsNone(payment.client_params)
        self.assertEqual(Payment.search([], count=True), 3)

    @with_transaction()
    def test_wechat_mobile_app_paid(self):
        """Test a WeChat mobile app payment (T_APP) of a WeChat 直连
        merchant: the app in wx_data.sub_appid and no payer, the app SDK's
        signed PayReq handed back, paid by the SDK and found by query"""
        pool = Pool()
        Payment = pool.get('fuel.payment.gateway.payment')
        company, setup, _gateway, order = self.prepare()
        self.simulator.wechat_direct = True
        with set_company(company):
            payment = self.create_app(
                order, setup['methods']['wechat'], 'app', app=MOBILE_APP)
            self.assertEqual(payment.state, 'pending')
            self.assertEqual(payment.client_app, MOBILE_APP)
            self.assertIsNone(payment.payer)
            trade = self.simulator.trades[payment.number]
            self.assertEqual(trade.data['trade_type'], 'T_APP')
            self.assertEqual(
                json.loads(trade.data['wx_data']), {'sub_appid': MOBILE_APP})
            params = json.loads(payment.client_params)
            self.assertEqual(params, json.loads(trade.pay_info))
            self.assertEqual(set(params), {
                    'appid', 'partnerid', 'prepayid', 'package', 'noncestr',
                    'timestamp', 'sign'})
            self.assertEqual(params['appid'], MOBILE_APP)
            self.assertEqual(params['package'], 'Sign=WXPay')
            self.assertTrue(self.simulator.verify_app_pay_info(params))
            self.assertFalse(self.simulator.wechat_app_pays(
                    dict(params, prepayid='wx' + '0' * 30)))
            Payment.poll([payment])
            self.assertEqual(Payment(payment.id).state, 'pending')
            self.assertTrue(self.simulator.wechat_app_pays(params))
            Payment.poll([payment])
        payment = Payment(payment.id)
        self.assertEqual(payment.state, 'succeeded')
        self.assertEqual(payment.order.state, 'paid')

    @with_transaction()
    def test_wechat_mobile_app_refused(self):
        """Test WeChat mobile app payments: one naming no app fails before
        Huifu is asked, in the driver's language; one of an app the
        gateway does not list is refused before anything is created; one
        of a merchant Huifu does not serve T_APP (not 直连), or of an app
        not bound to the merchant, fails with Huifu's answer"""
        pool = Pool()
        Payment = pool.get('fuel.payment.gateway.payment')
        Lang = pool.get('ir.lang')
        Translation = pool.get('ir.translation')
        company, setup, gateway, order = self.prepare()
        wechat = setup['methods']['wechat']
        with set_company(company):
            payment = self.create_app(order, wechat, 'app')
            self.assertEqual(payment.state, 'failed')
            self.assertEqual(payment.error, message(
                    'msg_gateway_huifu_app_required', client='app',
                    gateway=gateway.rec_name))
            self.assertEqual(self.simulator.trades, {})

            lang, = Lang.search([('code', '=', 'zh_CN')])
            Lang.write([lang], {'translatable': True})
            Translation.translation_import(
                'zh_CN', 'fuel_payment', str(ZH_CN_PO))
            with Transaction().set_context(language='zh_CN'):
                payment = self.create_app(
                    create_order(setup, '5'), wechat, 'app',
                    app=gateway.app)
                self.assertEqual(payment.error, message(
                        'msg_gateway_huifu_app_required', client='app',
                        gateway=gateway.rec_name))
            self.assertIn('移动应用', payment.error)

            with self.assertRaises(UserError) as cm:
                self.create_app(
                    order, wechat, 'app', app='wx0000000000000000')
            self.assertEqual(cm.exception.message, message(
                    'msg_gateway_client_app', app='wx0000000000000000',
                    gateway=gateway.rec_name))

            # Huifu serves T_APP to WeChat 直连 merchants only
            payment = self.create_app(
                create_order(setup, '6'), wechat, 'app', app=MOBILE_APP)
            self.assertEqual(payment.state, 'failed')
            self.assertIn('23000004', payment.error)

            self.simulator.wechat_direct = True
            payment = self.create_app(
                create_order(setup, '7'), wechat, 'app',
                app=UNBOUND_MOBILE_APP)
            self.assertEqual(payment.state, 'failed')
            self.assertIn('sub_mch_id与sub_appid不匹配', payment.error)
        self.assertEqual(self.simulator.trades, {})
        self.assertEqual(
            Payment.search([('state', '!=', 'failed')], count=True), 0)
