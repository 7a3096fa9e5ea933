# This file is part of fuelpay.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""The payer of an in-app payment from the login code the wallet gave the
client (login.py): WeChat's code2Session and web page authorization with
the AppSecrets kept on the gateway, Alipay's alipay.system.oauth.token with
the gateway's keys; against the simulators acting as the wallets' login
servers and clients"""
import functools
import json
import logging

from trytond.exceptions import UserError
from trytond.model.exceptions import AccessError
from trytond.modules.company.tests import create_company, set_company
from trytond.pool import Pool
from trytond.tests.test_tryton import with_transaction
from trytond.transaction import Transaction, check_access

from addons.fuel_device.tests.tools import create_box
from addons.fuel_station.tests.test_module import create_user

from .sim_alipay import AlipaySimulator
from .sim_huifu import HuifuSimulator
from .sim_wechat import WeChatSimulator
from .test_gateway import OperatorOnceMixin, create_gateway, create_order
from .test_huifu_app import HuifuAppMixin
from .test_module import message
from .test_platform_account import operator_gateway
from .tools import (
    PaymentDatabaseTestCase,
    SimulatorsMixin,
    create_payment_setup,
)

MINI_APP = 'wxloginmini00001'
BARE_APP = 'wxloginbare00001'
OPENID = 'oLoginMiniUser0000000000001'
PAGE_OPENID = 'oLoginPageUser0000000000002'
SUB_MCHID = '1900000401'
SUB_APPID = 'wxloginsubmini01'
SUB_OPENID = 'oLoginSubUser00000000000003'
SP_OPENID = 'oLoginSpUser000000000000004'
ALIPAY_MINI_APP = '2021000000000188'
USER_ID = '2088000000000888'
OPEN_ID = '074a1CcTG1LelxKe4xQC0zgNdId0nxi95b5lsNpazWYoLogin'
AUTH_TOKEN = '202512BB1a2b3c4d5e6f7a8b9c0d1e2f3a4b5L01'
SELLER = '2088000000000666'
AUTH_APP = '2021000000000666'
# a mini program bound to the Huifu simulator's merchant
HUIFU_MINI_APP = 'wx8888888888888802'


def login_app(gateway, app, client, secret=None, **values):
    "Create the login app of gateway (as the administrators' wizard would)"
    GatewayApp = Pool().get('fuel.payment.gateway.app')
    record, = GatewayApp.create([dict(
                values, gateway=gateway.id, app=app, client=client,
                secret=secret)])
    return record


def run_set_secret(app, secret):
    "Run Set AppSecret on app with secret in its form"
    pool = Pool()
    GatewayApp = pool.get('fuel.payment.gateway.app')
    SetSecret = pool.get(
        'fuel.payment.gateway.app.set_secret', type='wizard')
    session_id, _, _ = SetSecret.create()
    with Transaction().set_context(
            active_model=GatewayApp.__name__, active_id=app.id,
            active_ids=[app.id]):
        wizard = SetSecret(session_id)
        shown = wizard.default_start(None)
        wizard.start.secret = secret
        wizard.transition_set_()
        # the session keeps nothing of what was pasted
        assert wizard.start.secret is None
    return shown


def stored_secret(app):
    "The AppSecret on app's row, read by SQL as the login does"
    return app._secret()


class LoginMixin:

    def assertRefused(self, call, msg_id, **values):
        "Test call raises the translated message msg_id"
        with self.assertRaises(UserError) as cm:
            call()
        self.assertEqual(cm.exception.message, message(msg_id, **values))

    def payments(self):
        Payment = Pool().get('fuel.payment.gateway.payment')
        return Payment.search([], count=True)


class WeChatLoginTestCase(
        LoginMixin, SimulatorsMixin, OperatorOnceMixin,
        PaymentDatabaseTestCase):
    "Test the payer of WeChat in-app payments from the login code"

    simulators = {
        'simulator': functools.partial(
            WeChatSimulator, apps=[MINI_APP, BARE_APP]),
        }

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
                    'client_apps': f'{MINI_APP} {BARE_APP}'})
            create_box(setup['station'], 'BOX-L')
            login_app(
                gateway, MINI_APP, 'mini_program',
                cls.simulator.secret_of(MINI_APP))
            # the official account is the merchant's own App ID
            login_app(
                gateway, cls.simulator.appid, 'jsapi',
                cls.simulator.secret_of(cls.simulator.appid))
            login_app(gateway, BARE_APP, 'mini_program')
        return company, setup, gateway

    def prepare(self):
        self.simulator.orders.clear()
        self.simulator.requests.clear()
        self.simulator.login_error = None
        company, setup, gateway = self.operator()
        with set_company(company):
            order = create_order(setup)
        return company, setup, gateway, order

    def create_app(self, order, setup, client, **kwargs):
        "Start an in-app payment of order, submitted at once"
        Payment = Pool().get('fuel.payment.gateway.payment')
        payment = Payment(Payment.create_app(
                order.id, setup['methods']['wechat'].id, client, **kwargs))
        Payment.submit([payment])
        return Payment(payment.id)

    @with_transaction()
    def test_mini_program_paid_by_code(self):
        """Test a mini program gives its wx.login code: the platform asks
        code2Session for the openid, the order is made for it, the driver
        pays it and the notification settles it; the code is used up"""
        pool = Pool()
        Notification = pool.get('fuel.payment.gateway.notification')
        company, setup, gateway, order = self.prepare()
        code = self.simulator.wx_login(MINI_APP, OPENID)
        with set_company(company):
            # a payment refused for its amount leaves the code unused
            self.assertRefused(
                lambda: self.create_app(
                    order, setup, 'mini_program', app=MINI_APP, code=code,
                    amount=order.amount_to_pay + 1),
                'msg_gateway_amount', order=order.rec_name,
                amount=order.amount_to_pay)
            self.assertEqual(self.simulator.requests, [])
            payment = self.create_app(
                order, setup, 'mini_program', app=MINI_APP, code=code)
        self.assertEqual(
            (payment.client, payment.client_app, payment.payer),
            ('mini_program', MINI_APP, OPENID))
        self.assertEqual(self.simulator.requests[:2], [
                ('GET', '/sns/jscode2session'),
                ('POST', '/v3/pay/transactions/jsapi')])
        sim_order = self.simulator.orders[payment.number]
        self.assertEqual(sim_order.data['payer'], {'openid': OPENID})
        params = payment.status()['client_params']
        self.assertEqual(
            self.simulator.client_pays(params, openid=OPENID),
            payment.number)
        with set_company(company):
            self.assertEqual(Notification.receive(
                    gateway, *self.simulator.notification(payment.number)),
                'accepted')
        payment = payment.__class__(payment.id)
        self.assertEqual(payment.state, 'succeeded')
        self.assertEqual(payment.order.state, 'paid')
        # nothing of the login is kept on the payment
        self.assertNotIn(code, json.dumps(payment.status(), default=str))
        with set_company(company):
            other = create_order(setup)
            self.assertRefused(
                lambda: self.create_app(
                    other, setup, 'mini_program', app=MINI_APP, code=code),
                'msg_login_code_used')

    @with_transaction()
    def test_official_account_paid_by_code(self):
        """Test an official account page gives the code of WeChat's web
        page authorization: the platform asks oauth2/access_token for the
        openid; the page pays, the query settles it"""
        pool = Pool()
        Payment = pool.get('fuel.payment.gateway.payment')
        company, setup, _gateway, order = self.prepare()
        code = self.simulator.oauth_code(self.simulator.appid, PAGE_OPENID)
        with set_company(company):
            payment = self.create_app(order, setup, 'jsapi', code=code)
            self.assertEqual(payment.payer, PAGE_OPENID)
            self.assertEqual(payment.client_app, self.simulator.appid)
            self.assertEqual(
                self.simulator.requests[0],
                ('GET', '/sns/oauth2/access_token'))
            params = payment.status()['client_params']
            self.simulator.client_pays(params, openid=PAGE_OPENID)
            Payment.check([payment])
        payment = Payment(payment.id)
        self.assertEqual(payment.state, 'succeeded')
        self.assertEqual(payment.order.state, 'paid')

    @with_transaction()
    def test_snapshot_page_refused(self):
        """Test the code of a page opened as a WeChat snapshot (its openid
        a placeholder) is refused with the way out, nothing created, and
        the same page opened in full pays"""
        company, setup, _gateway, order = self.prepare()
        code = self.simulator.oauth_code(
            self.simulator.appid, PAGE_OPENID, snapshot=True)
        with set_company(company):
            self.assertRefused(
                lambda: self.create_app(order, setup, 'jsapi', code=code),
                'msg_login_snapshot')
            self.assertEqual(self.payments(), 0)
            self.assertEqual(self.simulator.orders, {})
            code = self.simulator.oauth_code(
                self.simulator.appid, PAGE_OPENID)
            payment = self.create_app(order, setup, 'jsapi', code=code)
            self.assertEqual(payment.payer, PAGE_OPENID)

    @with_transaction()
    def test_bad_codes_refused(self):
        """Test expired, forged, used and other kinds' codes are refused
        with their messages before anything is created"""
        company, setup, _gateway, order = self.prepare()
        expired = self.simulator.wx_login(MINI_APP, OPENID)
        self.simulator.expire_code(expired)
        # a code of the official account's page given as the mini
        # program's, a code of another app
        page_code = self.simulator.oauth_code(self.simulator.appid, OPENID)
        other_app = self.simulator.wx_login(BARE_APP, OPENID)
        with set_company(company):
            for code in [expired, 'forged-code', page_code, other_app]:
                with self.subTest(code=code):
                    self.assertRefused(
                        functools.partial(
                            self.create_app, order, setup, 'mini_program',
                            app=MINI_APP, code=code),
                        'msg_login_code_invalid')
            self.assertEqual(self.payments(), 0)
        self.assertEqual(self.simulator.orders, {})

    @with_transaction()
    def test_refusals(self):
        """Test payer and code together, neither, a code from a client
        naming no payer, an app without AppSecret, a wrong AppSecret,
        WeChat's rate limit, busy, other refusal and an unreachable host:
        each refused with its message, nothing created"""
        pool = Pool()
        GatewayApp = pool.get('fuel.payment.gateway.app')
        company, setup, gateway, order = self.prepare()
        mini, = GatewayApp.search([('app', '=', MINI_APP)])

        def pay(client='mini_program', **kwargs):
            return lambda: self.create_app(order, setup, client, **kwargs)

        with set_company(company):
            code = self.simulator.wx_login(MINI_APP, OPENID)
            self.assertRefused(
                pay(app=MINI_APP, payer=OPENID, code=code),
                'msg_login_payer_and_code', client='mini_program')
            self.assertRefused(
                pay(app=MINI_APP), 'msg_gateway_app_payer',
                client='mini_program')
            self.assertRefused(
                pay('app', app=MINI_APP, code=code),
                'msg_login_code_client', client='app')
            self.assertRefused(
                pay(app=BARE_APP, code=self.simulator.wx_login(
                        BARE_APP, OPENID)),
                'msg_login_no_secret', gateway=gateway.rec_name,
                app=BARE_APP, client='mini_program')
            # the official account's secret is for its page, not for a
            # mini program of the same app ID
            self.assertRefused(
                pay(app=self.simulator.appid, code=code),
                'msg_login_no_secret', gateway=gateway.rec_name,
                app=self.simulator.appid, client='mini_program')
            for errcode, msg_id, values in [
                    (45011, 'msg_login_rate', {'app': MINI_APP}),
                    (-1, 'msg_login_busy', {'channel': "WeChat"}),
                    (40226, 'msg_login_refused', {
                            'channel': "WeChat", 'error': "40226 error"}),
                    ]:
                with self.subTest(errcode=errcode):
                    self.simulator.login_error = errcode
                    self.assertRefused(
                        pay(app=MINI_APP, code=code), msg_id, **values)
            GatewayApp.write([mini], {'secret': 'not-the-secret'})
            self.assertRefused(
                pay(app=MINI_APP, code=code), 'msg_login_secret_refused',
                gateway=gateway.rec_name, app=MINI_APP,
                error="40125 invalid appsecret")
            GatewayApp.write([mini], {
                    'secret': self.simulator.secret_of(MINI_APP),
                    'url': 'http://127.0.0.1:9'})
            with self.assertLogs('addons.fuel_payment', logging.INFO) as logs:
                self.assertRefused(
                    pay(app=MINI_APP, code=code), 'msg_login_busy',
                    channel="WeChat")
            output = '\n'.join(logs.output)
            self.assertNotIn(self.simulator.secret_of(MINI_APP), output)
            self.assertNotIn(code, output)
            self.assertEqual(self.payments(), 0)
        self.assertEqual(self.simulator.orders, {})
        # the code was never used: it still pays
        with set_company(company):
            GatewayApp.write([mini], {'url': None})
            self.assertEqual(
                self.create_app(
                    order, setup, 'mini_program', app=MINI_APP,
                    code=code).payer,
                OPENID)

    @with_transaction()
    def test_identify(self):
        """Test the identify RPC gives the payer of a code for an app that
        remembers it, once"""
        pool = Pool()
        Payment = pool.get('fuel.payment.gateway.payment')
        company, setup, _gateway, _order = self.prepare()
        method = setup['methods']['wechat'].id
        code = self.simulator.wx_login(MINI_APP, OPENID)
        attendant = create_user(
            'login_attendant', company, 'role_attendant',
            [setup['station']])
        with Transaction().set_user(attendant.id), check_access():
            self.assertEqual(
                Payment.identify(method, 'mini_program', code, MINI_APP),
                OPENID)
            self.assertRefused(
                lambda: Payment.identify(
                    method, 'mini_program', code, MINI_APP),
                'msg_login_code_used')
            self.assertRefused(
                lambda: Payment.identify(method, 'app', '', MINI_APP),
                'msg_login_code_client', client='app')
        self.assertEqual(self.payments(), 0)

    @with_transaction()
    def test_prepay_by_code(self):
        "Test a pre-payment in a mini program by the login code"
        pool = Pool()
        Payment = pool.get('fuel.payment.gateway.payment')
        PrePay = pool.get('fuel.payment.prepay')
        company, setup, _gateway, _order = self.prepare()
        code = self.simulator.wx_login(MINI_APP, OPENID)
        with set_company(company):
            payment = Payment(PrePay.start(
                    setup['station'].id, 1, '200',
                    method=setup['methods']['wechat'].id, fill_up=True,
                    client='mini_program', app=MINI_APP, login_code=code))
            Payment.submit([payment])
            payment = Payment(payment.id)
            self.assertEqual(payment.payer, OPENID)
            self.assertEqual(
                self.simulator.orders[payment.number].data['payer'],
                {'openid': OPENID})
            self.simulator.client_pays(
                payment.status()['client_params'], openid=OPENID)
            Payment.check([payment])
            self.assertEqual(PrePay(payment.prepay.id).state, 'paid')

    @with_transaction()
    def test_secret_is_secret(self):
        """Test the operator's administrators set an AppSecret (Set
        AppSecret) without reading it, station users neither read nor
        write it but pay by code, another operator sees no login app"""
        pool = Pool()
        GatewayApp = pool.get('fuel.payment.gateway.app')
        Payment = pool.get('fuel.payment.gateway.payment')
        company, setup, _gateway, order = self.prepare()
        bare, = GatewayApp.search([('app', '=', BARE_APP)])
        admin = create_user('login_admin', company, 'role_operator_admin')
        attendant = create_user(
            'login_attendant2', company, 'role_attendant',
            [setup['station']])
        secret = self.simulator.secret_of(BARE_APP)
        with Transaction().set_user(admin.id), check_access():
            bare = GatewayApp(bare.id)
            self.assertFalse(bare.has_secret)
            self.assertEqual(
                run_set_secret(bare, f' {secret} '), {'app': BARE_APP})
            self.assertTrue(GatewayApp(bare.id).has_secret)
            with self.assertRaises(AccessError):
                GatewayApp.read([bare.id], ['secret'])
        self.assertEqual(stored_secret(bare), secret)
        with Transaction().set_user(attendant.id), check_access():
            self.assertTrue(GatewayApp(bare.id).has_secret)
            with self.assertRaises(AccessError):
                GatewayApp.read([bare.id], ['secret'])
            with self.assertRaises(AccessError):
                GatewayApp.write([GatewayApp(bare.id)], {'secret': 'x'})
            with self.assertRaises(AccessError):
                run_set_secret(GatewayApp(bare.id), 'x')
            # the queue sends it (not the attendant)
            payment = Payment(Payment.create_app(
                    order.id, setup['methods']['wechat'].id, 'mini_program',
                    app=BARE_APP,
                    code=self.simulator.wx_login(BARE_APP, OPENID)))
            self.assertEqual(payment.payer, OPENID)
        self.assertEqual(stored_secret(bare), secret)
        # a copy keeps the app, not its secret
        bare_copy, = GatewayApp.copy([bare], default={'client': 'jsapi'})
        self.assertFalse(bare_copy.has_secret)
        other = create_company("Operator L")
        with set_company(other):
            other_admin = create_user(
                'login_other', other, 'role_operator_admin')
        with Transaction().set_user(other_admin.id), check_access():
            self.assertEqual(GatewayApp.search([]), [])
            with self.assertRaises(AccessError):
                GatewayApp.read([bare.id], ['app'])

    @with_transaction()
    def test_login_app_checks(self):
        """Test a login app of an app the gateway does not accept, twice
        the same, or on a gateway of another channel is refused"""
        pool = Pool()
        Gateway = pool.get('fuel.payment.gateway')
        company, _setup, gateway, _order = self.prepare()
        self.assertRefused(
            lambda: login_app(gateway, 'wxnotbound000001', 'mini_program'),
            'msg_gateway_client_app', app='wxnotbound000001',
            gateway=gateway.rec_name)
        alipay, = Gateway.create([{
                    'name': "Alipay L", 'company': company.id,
                    'channel': 'alipay', 'merchant': SELLER,
                    'app': ALIPAY_MINI_APP}])
        self.assertRefused(
            lambda: login_app(alipay, ALIPAY_MINI_APP, 'mini_program'),
            'msg_login_app_channel', gateway=alipay.rec_name)
        self.assertRefused(
            lambda: login_app(gateway, MINI_APP, 'mini_program'),
            'msg_login_app_unique')


class WeChatPartnerLoginTestCase(
        LoginMixin, SimulatorsMixin, OperatorOnceMixin,
        PaymentDatabaseTestCase):
    """Test the payer from the login code in partner mode (服务商): the
    sub-merchant's mini program (its AppSecret the operator's) pays as
    sub_openid, the platform's (its AppSecret on the platform account) as
    sp_openid"""

    simulators = {
        'simulator': functools.partial(
            WeChatSimulator, sub_mchids=[SUB_MCHID], apps=[MINI_APP]),
        }

    @classmethod
    def build_operator(cls):
        pool = Pool()
        Gateway = pool.get('fuel.payment.gateway')
        platform_company = create_company(name="Login Platform")
        platform, = Gateway.create([dict(
                    cls.simulator.gateway_values(),
                    name="Platform WeChat Pay L", shared=True,
                    client_apps=MINI_APP, company=platform_company.id)])
        login_app(
            platform, MINI_APP, 'mini_program',
            cls.simulator.secret_of(MINI_APP))
        company = create_company(name="Operator P")
        with set_company(company):
            setup = create_payment_setup(company)
            gateway = operator_gateway(
                company, setup, 'wechat', platform,
                name="WeChat Pay P", sub_merchant=SUB_MCHID,
                sub_app=SUB_APPID, client_apps=MINI_APP)
            create_box(setup['station'], 'BOX-P')
            login_app(
                gateway, SUB_APPID, 'mini_program',
                cls.simulator.secret_of(SUB_APPID))
        return company, setup, gateway, platform

    @with_transaction()
    def test_sub_and_platform_mini_programs(self):
        """Test the code of the sub-merchant's mini program gives its
        sub_openid, the code of the platform's its sp_openid; an operator
        cannot read the platform's login app"""
        pool = Pool()
        Payment = pool.get('fuel.payment.gateway.payment')
        GatewayApp = pool.get('fuel.payment.gateway.app')
        self.simulator.orders.clear()
        company, setup, gateway, platform = self.operator()
        method = setup['methods']['wechat'].id
        with set_company(company):
            for app, openid, key in [
                    (SUB_APPID, SUB_OPENID, 'sub_openid'),
                    (MINI_APP, SP_OPENID, 'sp_openid')]:
                # no subTest: a lock retried by with_transaction must
                # reach it
                order = create_order(setup)
                payment = Payment(Payment.create_app(
                        order.id, method, 'mini_program', app=app,
                        code=self.simulator.wx_login(app, openid)))
                Payment.submit([payment])
                payment = Payment(payment.id)
                self.assertEqual(payment.payer, openid)
                data = self.simulator.orders[payment.number].data
                self.assertEqual(data['payer'], {key: openid})
                self.simulator.client_pays(
                    payment.status()['client_params'], openid=openid)
                Payment.check([payment])
                self.assertEqual(Payment(payment.id).state, 'succeeded')
        admin = create_user('login_p_admin', company, 'role_operator_admin')
        platform_app, = GatewayApp.search([('gateway', '=', platform.id)])
        with Transaction().set_user(admin.id), check_access():
            self.assertEqual(
                [a.app for a in GatewayApp.search([])], [SUB_APPID])
            with self.assertRaises(AccessError):
                GatewayApp.read([platform_app.id], ['app'])
            # the operator's own line for the platform's app, without
            # AppSecret, does not hide the platform account's
            own, = GatewayApp.create([{
                        'gateway': gateway.id, 'app': MINI_APP,
                        'client': 'mini_program'}])
            self.assertFalse(own.has_secret)
        with set_company(company):
            order = create_order(setup)
            payment = Payment(Payment.create_app(
                    order.id, method, 'mini_program', app=MINI_APP,
                    code=self.simulator.wx_login(MINI_APP, SP_OPENID)))
            self.assertEqual(payment.payer, SP_OPENID)


class AlipayLoginTestCase(
        LoginMixin, SimulatorsMixin, OperatorOnceMixin,
        PaymentDatabaseTestCase):
    "Test the payer of Alipay in-app payments from the auth code"

    simulators = {
        'simulator': AlipaySimulator,
        }

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
                        name="Alipay L", company=company.id,
                        client_apps=ALIPAY_MINI_APP)])
            Method.write([setup['methods']['alipay']], {
                    'gateway': gateway.id})
        return company, setup, gateway

    def prepare(self):
        self.simulator.trades.clear()
        self.simulator.calls.clear()
        self.simulator.refuse = None
        self.simulator.down = False
        company, setup, gateway = self.operator()
        with set_company(company):
            order = create_order(setup)
        return company, setup, gateway, order

    def create_app(self, order, setup, client, **kwargs):
        Payment = Pool().get('fuel.payment.gateway.payment')
        payment = Payment(Payment.create_app(
                order.id, setup['methods']['alipay'].id, client, **kwargs))
        Payment.submit([payment])
        return Payment(payment.id)

    @with_transaction()
    def test_mini_program_paid_by_code(self):
        """Test the mini program's auth code (my.getAuthCode) gives the
        buyer by alipay.system.oauth.token (grant_type and code signed
        among the common parameters); the buyer pays, the notification
        settles it; the code is used up"""
        pool = Pool()
        Notification = pool.get('fuel.payment.gateway.notification')
        company, setup, gateway, order = self.prepare()
        app = self.simulator.app_id
        code = self.simulator.get_auth_code(app, USER_ID)
        with set_company(company):
            payment = self.create_app(
                order, setup, 'mini_program', code=code)
        self.assertEqual(payment.payer, USER_ID)
        call = self.simulator.calls[0]
        self.assertEqual(
            (call['method'], call['grant_type'], call['code']),
            ('alipay.system.oauth.token', 'authorization_code', code))
        self.assertEqual(call['biz_content'], '{}')
        trade = self.simulator.trades[payment.number]
        self.assertEqual(trade.biz['buyer_id'], USER_ID)
        self.simulator.client_pays(
            payment.status()['client_params'], buyer=USER_ID)
        with set_company(company):
            self.assertEqual(Notification.receive(
                    gateway, *self.simulator.notification(payment.number)),
                'accepted')
        payment = payment.__class__(payment.id)
        self.assertEqual(payment.state, 'succeeded')
        with set_company(company):
            self.assertRefused(
                lambda: self.create_app(
                    create_order(setup), setup, 'mini_program', code=code),
                'msg_login_code_invalid')

    @with_transaction()
    def test_open_id_and_refusals(self):
        """Test an application on open ids gets the open_id (identify);
        an expired code, a code of another app, Alipay refusing and Alipay
        down are refused with their messages"""
        pool = Pool()
        Payment = pool.get('fuel.payment.gateway.payment')
        company, setup, gateway, order = self.prepare()
        app = self.simulator.app_id
        method = setup['methods']['alipay'].id
        with set_company(company):
            self.assertEqual(Payment.identify(
                    method, 'jsapi', self.simulator.get_auth_code(
                        app, OPEN_ID)), OPEN_ID)
            expired = self.simulator.get_auth_code(app, USER_ID)
            self.simulator.expire_auth_code(expired)
            self.assertRefused(
                lambda: Payment.identify(method, 'mini_program', expired),
                'msg_login_code_invalid')
            # signed with the gateway's application: the codes of another
            # mini program are not its to resolve
            self.assertRefused(
                lambda: Payment.identify(
                    method, 'mini_program',
                    self.simulator.get_auth_code(ALIPAY_MINI_APP, USER_ID),
                    ALIPAY_MINI_APP),
                'msg_login_alipay_app', gateway=gateway.rec_name,
                app=ALIPAY_MINI_APP, expected=app)
            code = self.simulator.get_auth_code(app, USER_ID)
            self.simulator.refuse = 'isv.invalid-signature'
            self.assertRefused(
                lambda: Payment.identify(method, 'mini_program', code),
                'msg_login_refused', channel="Alipay",
                error='isv.invalid-signature')
            self.simulator.down = True
            self.assertRefused(
                lambda: self.create_app(
                    order, setup, 'mini_program', code=code),
                'msg_login_busy', channel="Alipay")
            self.simulator.down = False
            self.assertEqual(self.payments(), 0)
            self.assertEqual(
                self.create_app(
                    order, setup, 'mini_program', code=code).payer,
                USER_ID)


class AlipayISVLoginTestCase(AlipayLoginTestCase):
    """Test the payer from the auth code in ISV mode: the code of the
    operator's authorizing application, resolved by the platform's with
    the operator's app_auth_token"""

    simulators = {
        'simulator': functools.partial(
            AlipaySimulator, auth_tokens={AUTH_TOKEN: (SELLER, AUTH_APP)}),
        }

    @classmethod
    def build_operator(cls):
        pool = Pool()
        Gateway = pool.get('fuel.payment.gateway')
        company, setup, gateway = super().build_operator(
            auth_token=AUTH_TOKEN)
        Gateway.write([gateway], {
                'auth_app': AUTH_APP,
                'client_apps': f'{ALIPAY_MINI_APP} {AUTH_APP}'})
        return company, setup, gateway

    # the tests of the direct application do not apply as such
    test_mini_program_paid_by_code = None
    test_open_id_and_refusals = None

    @with_transaction()
    def test_operator_mini_program_by_code(self):
        """Test the code of the operator's mini program is resolved with the
        token; a code of the platform's own application is refused before
        asking"""
        pool = Pool()
        Payment = pool.get('fuel.payment.gateway.payment')
        company, setup, gateway, order = self.prepare()
        code = self.simulator.get_auth_code(AUTH_APP, USER_ID)
        with set_company(company):
            payment = self.create_app(
                order, setup, 'mini_program', app=AUTH_APP, code=code)
            self.assertEqual(payment.payer, USER_ID)
            call = self.simulator.calls[0]
            self.assertEqual(call['method'], 'alipay.system.oauth.token')
            self.assertEqual(call['app_auth_token'], AUTH_TOKEN)
            trade = self.simulator.trades[payment.number]
            self.assertEqual(trade.seller, (SELLER, AUTH_APP))
            self.assertRefused(
                lambda: Payment.identify(
                    setup['methods']['alipay'].id, 'mini_program',
                    self.simulator.get_auth_code(
                        self.simulator.app_id, USER_ID)),
                'msg_login_alipay_app', gateway=gateway.rec_name,
                app=self.simulator.app_id, expected=AUTH_APP)


class HuifuLoginTestCase(LoginMixin, HuifuAppMixin, PaymentDatabaseTestCase):
    """Test the payer of Huifu in-app payments from the login code: a
    WeChat mini program's code resolved with its AppSecret kept on the Huifu
    gateway (Huifu needs its sub_openid); Alipay's codes cannot be"""

    simulators = {
        'simulator': HuifuSimulator,
        'wechat': functools.partial(WeChatSimulator, apps=[HUIFU_MINI_APP]),
        }
    client_apps = [HUIFU_MINI_APP, ALIPAY_MINI_APP]
    box = 'BOX-HL'

    @classmethod
    def build_operator(cls):
        company, setup, gateway = super().build_operator()
        with set_company(company):
            # Huifu's gateway URL is Huifu's: the login app names WeChat's
            login_app(
                gateway, HUIFU_MINI_APP, 'mini_program',
                cls.wechat.secret_of(HUIFU_MINI_APP), url=cls.wechat.url)
        return company, setup, gateway

    @with_transaction()
    def test_wechat_by_code_alipay_not(self):
        """Test a WeChat mini program's code gives the sub_openid sent in
        wx_data; an Alipay code through Huifu is refused"""
        pool = Pool()
        Payment = pool.get('fuel.payment.gateway.payment')
        self.simulator.trades.clear()
        company, setup, gateway = self.operator()
        with set_company(company):
            order = create_order(setup)
            payment = Payment(Payment.create_app(
                    order.id, setup['methods']['wechat'].id, 'mini_program',
                    app=HUIFU_MINI_APP,
                    code=self.wechat.wx_login(HUIFU_MINI_APP, OPENID)))
            Payment.submit([payment])
            payment = Payment(payment.id)
            self.assertEqual(payment.payer, OPENID)
            trade = self.simulator.trades[payment.number]
            self.assertEqual(json.loads(trade.data['wx_data']), {
                    'sub_appid': HUIFU_MINI_APP, 'sub_openid': OPENID})
            # another order: this one is being paid in full
            other = create_order(setup)
            self.assertRefused(
                lambda: Payment.create_app(
                    other.id, setup['methods']['alipay'].id,
                    'mini_program', app=ALIPAY_MINI_APP, code='any-code'),
                'msg_login_unsupported', gateway=gateway.rec_name,
                wallet='alipay')
