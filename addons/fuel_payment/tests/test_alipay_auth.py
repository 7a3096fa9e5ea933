# This file is part of fuelpay.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""The lifecycle of an operator's Alipay authorization of the platform's
third-party application (ISV): the code exchanged by Set Keys or by the
route Alipay's redirect reaches, the daily check that fills, refreshes
and flags it"""
import datetime as dt
import html
import json
import logging
import pathlib
import urllib.parse

from trytond.exceptions import UserError
from trytond.model.exceptions import AccessError
from trytond.modules.company.tests import create_company, set_company
from trytond.pool import Pool
from trytond.tests.test_tryton import DB_NAME, RouteTestCase, with_transaction
from trytond.transaction import Transaction, check_access

from addons.fuel_station.tests.test_module import create_user
from addons.fuel_station.tests.tools import FuelDatabaseMixin

from ..alipay_auth import AUTHORIZE_URL, REQUEST_VALIDITY, digest
from .sim_alipay import AlipaySimulator
from .test_gateway import ALIPAY_CODE, OperatorOnceMixin, create_order
from .test_module import message
from .test_platform_account import (
    APP_A,
    APP_B,
    SELLER_A,
    SELLER_B,
    TOKEN_A,
    TOKEN_B,
    operator_gateway,
)
from .tools import (
    PaymentDatabaseTestCase,
    SimulatorsMixin,
    create_payment_setup,
    pay_code,
    run_committed,
)

APP_C = '2021000000000303'
REDIRECT = 'https://fuel.example.com/db/fuel_payment/alipay/authorized'


def utcnow():
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


def stored(gateway):
    "The secrets of the authorization on gateway's row, read by SQL"
    table = gateway.__table__()
    cursor = Transaction().connection.cursor()
    cursor.execute(*table.select(
            table.app_auth_token, table.app_refresh_token,
            table.auth_request, where=table.id == gateway.id))
    return cursor.fetchone()


def run_set_keys(gateway, **values):
    """Run Set Keys on gateway with values in its form (the Alipay
    authorization code among them); return what its start state showed"""
    pool = Pool()
    Gateway = pool.get('fuel.payment.gateway')
    SetKeys = pool.get('fuel.payment.gateway.set_keys', type='wizard')
    names = ['private_key', 'api_key', 'app_auth_token', 'app_auth_code']
    session_id, _, _ = SetKeys.create()
    with Transaction().set_context(
            active_model=Gateway.__name__, active_id=gateway.id,
            active_ids=[gateway.id]):
        set_keys = SetKeys(session_id)
        shown = set_keys.default_start(None)
        for name in names:
            setattr(set_keys.start, name, values.get(name))
        try:
            set_keys.transition_set_()
        finally:
            # the session keeps nothing of what was pasted
            for name in names:
                assert getattr(set_keys.start, name) is None
    return shown


def build_platform(simulator):
    """Create the platform's shared Alipay account and operator A's
    gateway on it (without authorization)"""
    pool = Pool()
    Gateway = pool.get('fuel.payment.gateway')
    platform_company = create_company(name="Fuel Platform")
    platform, = Gateway.create([dict(
                simulator.gateway_values(),
                name="Platform Alipay", shared=True,
                company=platform_company.id)])
    company = create_company(name="Operator A")
    with set_company(company):
        setup = create_payment_setup(company, 'A1')
        gateway = operator_gateway(
            company, setup, 'alipay', platform, name="Alipay A",
            merchant=SELLER_A)
    return {
        'platform': platform, 'company': company, 'setup': setup,
        'gateway': gateway}


def simulator():
    return AlipaySimulator(auth_tokens={
            TOKEN_A: (SELLER_A, APP_A),
            TOKEN_B: (SELLER_B, APP_B),
            })


class AlipayAuthTestCase(
        SimulatorsMixin, OperatorOnceMixin, PaymentDatabaseTestCase):
    "Test the lifecycle of an operator's Alipay ISV authorization"

    simulators = {
        'simulator': simulator,
        }

    @classmethod
    def build_operator(cls):
        return build_platform(cls.simulator)

    def prepare(self):
        sim = self.simulator
        sim.trades.clear()
        sim.requests.clear()
        sim.calls.clear()
        sim.withdrawn_tokens.clear()
        sim.token_ends.clear()
        sim.auth_ends.clear()
        sim.refresh_tokens.clear()
        sim.paying_queries = None
        sim.refuse = None
        sim.down = False
        op = self.operator()
        op['admin'] = create_user(
            'auth_op_admin', op['company'], 'role_operator_admin')
        return op

    def set_keys(self, op, **values):
        "Run Set Keys on the operator's gateway as its administrator"
        Gateway = Pool().get('fuel.payment.gateway')
        with Transaction().set_user(op['admin'].id), check_access():
            return run_set_keys(Gateway(op['gateway'].id), **values)

    def assert_refused(self, op, error, **values):
        pool = Pool()
        Gateway = pool.get('fuel.payment.gateway')
        before = stored(op['gateway'])
        with self.assertRaises(UserError) as cm:
            self.set_keys(op, **values)
        self.assertEqual(cm.exception.message, error)
        gateway = Gateway(op['gateway'].id)
        self.assertEqual(stored(gateway), before)

    def authorize(self, op, *apps, seller=SELLER_A):
        "Store the authorization of a code seller gives for apps"
        code = self.simulator.issue_code(seller, *(apps or [APP_A]))
        self.set_keys(op, app_auth_code=code)
        Gateway = Pool().get('fuel.payment.gateway')
        return Gateway(op['gateway'].id)

    def check(self, op):
        "Run the daily check on the operator's gateway"
        Gateway = Pool().get('fuel.payment.gateway')
        Gateway.check_alipay_authorization([Gateway(op['gateway'].id)])
        return Gateway(op['gateway'].id)

    @with_transaction()
    def test_code_exchanged_by_set_keys(self):
        """Test Set Keys exchanges the operator's authorization code with
        the platform's application and stores token, refresh token,
        application and both ends; payments then carry the token"""
        op = self.prepare()
        gateway = self.authorize(op)
        exchange, = self.simulator.calls
        self.assertEqual(
            (exchange['method'], exchange['app_id']),
            ('alipay.open.auth.token.app', op['platform'].app))
        self.assertNotIn('app_auth_token', exchange)
        self.assertEqual(
            json.loads(exchange['biz_content'])['grant_type'],
            'authorization_code')
        token, refresh, request = stored(gateway)
        self.assertEqual(self.simulator.auth_tokens[token], (SELLER_A, APP_A))
        self.assertIn(refresh, self.simulator.refresh_tokens)
        self.assertIsNone(request)
        self.assertEqual(gateway.auth_token(), token)
        self.assertEqual(gateway.auth_refresh_token(), refresh)
        self.assertEqual(gateway.auth_app, APP_A)
        self.assertEqual(gateway.auth_status, 'valid')
        self.assertTrue(gateway.has_app_auth_token)
        now = utcnow()
        self.assertLess(
            abs(gateway.auth_expiry - (now + dt.timedelta(days=365))),
            dt.timedelta(hours=1))
        self.assertLess(
            abs(gateway.auth_refresh_expiry - (now + dt.timedelta(days=372))),
            dt.timedelta(hours=1))
        with set_company(op['company']):
            payment = pay_code(create_order(op['setup']), ALIPAY_CODE)
        self.assertEqual(payment.state, 'succeeded')
        self.assertEqual(self.simulator.calls[-1]['app_auth_token'], token)
        self.assertEqual(
            self.simulator.trades[payment.number].seller, (SELLER_A, APP_A))

    @with_transaction()
    def test_used_or_invalid_code_refused(self):
        """Test a code Alipay refuses (unknown, used, expired) stores
        nothing and says why"""
        op = self.prepare()
        gateway = op['gateway']

        def refused():
            return message(
                'msg_gateway_alipay_token_refused', gateway=gateway.rec_name,
                error=message(
                    'msg_gateway_alipay_auth_code', code='isv.code-invalid'))
        self.assert_refused(op, refused(), app_auth_code='nope')
        code = self.simulator.issue_code(SELLER_A, APP_A)
        self.set_keys(op, app_auth_code=code)
        self.assert_refused(op, refused(), app_auth_code=code)
        code = self.simulator.issue_code(SELLER_A, APP_A)
        self.simulator.app_auth_codes[code]['expires'] = (
            dt.datetime.now() - dt.timedelta(seconds=1))
        self.assert_refused(op, refused(), app_auth_code=code)

    @with_transaction()
    def test_code_of_another_merchant_refused(self):
        "Test the code another operator (PID) gave stores nothing"
        op = self.prepare()
        code = self.simulator.issue_code(SELLER_B, APP_B)
        self.assert_refused(op, message(
                'msg_gateway_alipay_token_seller',
                gateway=op['gateway'].rec_name, user=SELLER_B,
                merchant=SELLER_A), app_auth_code=code)
        self.assertIsNone(op['gateway'].auth_app)

    @with_transaction()
    def test_code_or_token(self):
        "Test Set Keys takes the token or the code, not both"
        op = self.prepare()
        code = self.simulator.issue_code(SELLER_A, APP_A)
        self.assert_refused(op, message(
                'msg_gateway_alipay_auth_code_token',
                gateway=op['gateway'].rec_name),
            app_auth_code=code, app_auth_token=TOKEN_A)
        self.assertEqual(self.simulator.calls, [])

    @with_transaction()
    def test_batch_authorization_refused(self):
        """Test a code authorizing several of the operator's applications
        (the answer's tokens list) stores none"""
        op = self.prepare()
        code = self.simulator.issue_code(SELLER_A, APP_A, APP_C)
        self.assert_refused(op, message(
                'msg_gateway_alipay_token_refused',
                gateway=op['gateway'].rec_name,
                error=message(
                    'msg_gateway_alipay_auth_batch',
                    gateway=op['gateway'].rec_name,
                    apps=f'{APP_A}, {APP_C}')), app_auth_code=code)

    @with_transaction()
    def test_code_alipay_down(self):
        "Test a code is not lost in a failed exchange: nothing stored"
        op = self.prepare()
        code = self.simulator.issue_code(SELLER_A, APP_A)
        self.simulator.down = True
        self.assert_refused(op, message(
                'msg_gateway_alipay_token_unreachable',
                gateway=op['gateway'].rec_name), app_auth_code=code)
        self.simulator.down = False
        # the code was not consumed
        self.assertEqual(self.authorize(op).auth_status, 'valid')

    @with_transaction()
    def test_authorization_link(self):
        """Test Authorize on Alipay shows the platform application's
        authorization page with the route as redirect_uri and a state
        naming the gateway, kept as a digest; a new link replaces it"""
        pool = Pool()
        Gateway = pool.get('fuel.payment.gateway')
        Authorize = pool.get(
            'fuel.payment.gateway.alipay_authorize', type='wizard')
        op = self.prepare()
        gateway = op['gateway']

        def show():
            session_id, _, _ = Authorize.create()
            with Transaction().set_user(op['admin'].id), check_access(), \
                    Transaction().set_context(
                        active_model=Gateway.__name__, active_id=gateway.id,
                        active_ids=[gateway.id]):
                return Authorize(session_id).default_start(None)

        shown = show()
        self.assertEqual(shown['redirect'], REDIRECT)
        url = urllib.parse.urlsplit(shown['url'])
        self.assertEqual(
            f'{url.scheme}://{url.netloc}{url.path}', AUTHORIZE_URL)
        query = dict(urllib.parse.parse_qsl(url.query))
        self.assertEqual(query['app_id'], op['platform'].app)
        self.assertEqual(query['redirect_uri'], REDIRECT)
        gateway_id, nonce = query['state'].split('.')
        self.assertEqual(int(gateway_id), gateway.id)
        self.assertEqual(stored(gateway)[2], digest(nonce))
        self.assertLess(
            abs(shown['expiry'] - (utcnow() + REQUEST_VALIDITY)),
            dt.timedelta(minutes=5))
        self.assertEqual(
            Gateway.from_alipay_state(query['state'], op['platform'].app),
            Gateway(gateway.id))
        for state, app in [
                (query['state'], APP_A),
                (f'{gateway.id}.{nonce}x', op['platform'].app),
                (f'{op["platform"].id}.{nonce}', op['platform'].app),
                ('', op['platform'].app)]:
            with self.subTest(state=state, app=app):
                self.assertIsNone(Gateway.from_alipay_state(state, app))
        # a new link: the previous one is no more valid
        show()
        self.assertIsNone(
            Gateway.from_alipay_state(query['state'], op['platform'].app))
        # an expired link
        query = dict(urllib.parse.parse_qsl(
                urllib.parse.urlsplit(show()['url']).query))
        Gateway.write([Gateway(gateway.id)], {
                'auth_request_expiry': utcnow() - dt.timedelta(seconds=1)})
        self.assertIsNone(
            Gateway.from_alipay_state(query['state'], op['platform'].app))

        Gateway.write([Gateway(gateway.id)], {'notify_url': None})
        with self.assertRaises(UserError) as cm:
            show()
        self.assertEqual(cm.exception.message, message(
                'msg_gateway_alipay_auth_redirect', gateway=gateway.rec_name))

    @with_transaction()
    def test_refresh_near_expiry(self):
        """Test the daily check refreshes a token near its end: the new
        token and refresh token are kept, payments and notifications go
        on with them, the old token works 10 minutes more at Alipay"""
        pool = Pool()
        Gateway = pool.get('fuel.payment.gateway')
        Payment = pool.get('fuel.payment.gateway.payment')
        Notification = pool.get('fuel.payment.gateway.notification')
        op = self.prepare()
        gateway = self.authorize(op)
        old_token, old_refresh, _ = stored(gateway)
        self.simulator.auth_ends[old_token] = (
            dt.datetime.now(dt.UTC) + dt.timedelta(days=10))
        with self.assertLogs('addons.fuel_payment.alipay_auth') as logs:
            gateway = self.check(op)
        token, refresh, _ = stored(gateway)
        self.assertNotEqual(token, old_token)
        self.assertNotEqual(refresh, old_refresh)
        self.assertNotIn(old_refresh, self.simulator.refresh_tokens)
        self.assertEqual(gateway.auth_status, 'valid')
        self.assertEqual(gateway.auth_app, APP_A)
        self.assertGreater(
            gateway.auth_expiry, utcnow() + dt.timedelta(days=360))
        self.assertEqual(
            [c['method'] for c in self.simulator.calls[-2:]], [
                'alipay.open.auth.token.app.query',
                'alipay.open.auth.token.app'])
        self.assertIn('refresh_token', self.simulator.calls[-1]['biz_content'])
        output = '\n'.join(logs.output)
        self.assertIn('refreshed', output)
        for secret in [old_token, old_refresh, token, refresh]:
            self.assertNotIn(secret, output)
        # the old token still works for a while, then not
        self.assertIsNotNone(self.simulator.token_seller(old_token))
        self.simulator.token_ends[old_token] = dt.datetime.now()
        self.assertIsNone(self.simulator.token_seller(old_token))

        with set_company(op['company']):
            payment = Payment(Payment.create_qr(
                    create_order(op['setup']).id,
                    op['setup']['methods']['alipay'].id))
            Payment.submit([payment])
        self.assertEqual(self.simulator.calls[-1]['app_auth_token'], token)
        self.simulator.pay(payment.number)
        self.assertEqual(Notification.receive(
                Gateway(op['gateway'].id),
                *self.simulator.notification(payment.number)), 'accepted')
        self.assertEqual(Payment(payment.id).state, 'succeeded')

    @with_transaction()
    def test_expiring_without_refresh(self):
        """Test a token near its end that cannot be refreshed (pasted by
        hand, or its refresh token refused) is flagged expiring, then
        expired, with a warning naming no secret"""
        op = self.prepare()
        self.set_keys(op, app_auth_token=TOKEN_A)
        self.simulator.auth_ends[TOKEN_A] = (
            dt.datetime.now(dt.UTC) + dt.timedelta(days=3))
        with self.assertLogs(
                'addons.fuel_payment.alipay_auth', logging.WARNING) as logs:
            gateway = self.check(op)
        self.assertEqual(gateway.auth_status, 'expiring')
        self.assertEqual(stored(gateway)[0], TOKEN_A)
        self.assertIn('expiring', '\n'.join(logs.output))
        self.assertNotIn(TOKEN_A, '\n'.join(logs.output))
        self.simulator.auth_ends[TOKEN_A] = (
            dt.datetime.now(dt.UTC) - dt.timedelta(hours=1))
        with self.assertLogs('addons.fuel_payment.alipay_auth', 'WARNING'):
            self.assertEqual(self.check(op).auth_status, 'expired')

        # a refresh token Alipay refuses
        gateway = self.authorize(op)
        token, refresh, _ = stored(gateway)
        self.simulator.refresh_tokens.clear()
        self.simulator.auth_ends[token] = (
            dt.datetime.now(dt.UTC) + dt.timedelta(days=3))
        with self.assertLogs(
                'addons.fuel_payment.alipay_auth', 'WARNING') as logs:
            gateway = self.check(op)
        self.assertEqual(gateway.auth_status, 'expiring')
        self.assertEqual(stored(gateway)[:2], (token, refresh))
        output = '\n'.join(logs.output)
        self.assertIn('isv.refresh-token-invalid', output)
        self.assertNotIn(refresh, output)

    @with_transaction()
    def test_withdrawn_flagged(self):
        """Test an authorization the operator withdrew is flagged; its
        payments fail with Alipay's refusal"""
        op = self.prepare()
        gateway = self.authorize(op)
        token = gateway.auth_token()
        self.simulator.withdraw(token)
        with self.assertLogs('addons.fuel_payment.alipay_auth', 'WARNING'):
            gateway = self.check(op)
        self.assertEqual(gateway.auth_status, 'withdrawn')
        with set_company(op['company']):
            payment = pay_code(create_order(op['setup']), ALIPAY_CODE)
        self.assertEqual(payment.state, 'failed')
        self.assertEqual(payment.error, message(
                'msg_gateway_alipay_auth_token', gateway=gateway.rec_name,
                code='aop.invalid-app-auth-token'))

    @with_transaction()
    def test_alipay_down_leaves_everything(self):
        "Test the check leaves the authorization as it was, Alipay down"
        pool = Pool()
        Gateway = pool.get('fuel.payment.gateway')
        op = self.prepare()
        gateway = self.authorize(op)
        before = stored(gateway), gateway.auth_checked, gateway.auth_expiry
        self.simulator.auth_ends[gateway.auth_token()] = (
            dt.datetime.now(dt.UTC) + dt.timedelta(days=3))
        self.simulator.down = True
        with self.assertLogs('addons.fuel_payment.alipay_auth', 'WARNING'):
            gateway = self.check(op)
        gateway = Gateway(gateway.id)
        self.assertEqual(
            (stored(gateway), gateway.auth_checked, gateway.auth_expiry),
            before)
        self.assertEqual(gateway.auth_status, 'valid')
        # tried again the next day
        self.simulator.down = False
        gateway = self.check(op)
        self.assertNotEqual(stored(gateway)[0], before[0][0])

    @with_transaction()
    def test_old_token_gets_its_application(self):
        """Test a token stored before Set Keys checked tokens (no
        authorizer application, no end) gets both from the check, so
        notifications of another operator's application are refused"""
        pool = Pool()
        Gateway = pool.get('fuel.payment.gateway')
        op = self.prepare()
        table = Gateway.__table__()
        cursor = Transaction().connection.cursor()
        cursor.execute(*table.update(
                [table.app_auth_token], [TOKEN_A],
                where=table.id == op['gateway'].id))
        gateway = Gateway(op['gateway'].id)
        self.assertIsNone(gateway.auth_app)
        gateway = self.check(op)
        self.assertEqual(gateway.auth_app, APP_A)
        self.assertEqual(gateway.auth_status, 'valid')
        self.assertIsNotNone(gateway.auth_expiry)
        self.assertIsNotNone(gateway.auth_checked)

    @with_transaction()
    def test_administrators_notified(self):
        """Test the platform's and the operator's administrators get a
        notification in their client, in their language, when the
        authorization becomes expiring or withdrawn, once per change; the
        station manager and another operator's administrator get none"""
        pool = Pool()
        Notification = pool.get('res.notification')
        Lang = pool.get('ir.lang')
        User = pool.get('res.user')
        op = self.prepare()
        Translation = pool.get('ir.translation')
        zh_cn, = Lang.search([('code', '=', 'zh_CN')])
        Lang.write([zh_cn], {'translatable': True})
        Translation.translation_import('zh_CN', 'fuel_payment', str(
                pathlib.Path(__file__).parent.parent / 'locale' / 'zh_CN.po'))
        User.write([op['admin']], {'language': zh_cn.id})
        manager = create_user(
            'auth_notify_manager', op['company'], 'role_station_manager',
            [op['setup']['station']])
        other = create_user(
            'auth_notify_other', create_company(name="Operator C"),
            'role_operator_admin')
        platform_admin = User(1)

        def told():
            return {
                (n.user.id, n.label) for n in Notification.search([])}
        gateway = self.authorize(op)
        self.check(op)
        self.assertEqual(told(), set())
        self.simulator.auth_ends[gateway.auth_token()] = (
            dt.datetime.now(dt.UTC) + dt.timedelta(days=3))
        self.simulator.refresh_tokens.clear()
        with self.assertLogs('addons.fuel_payment.alipay_auth', 'WARNING'):
            self.check(op)
        name = gateway.rec_name
        self.assertEqual(told(), {
                (platform_admin.id, message(
                        'msg_gateway_alipay_auth_notify', gateway=name,
                        status="Expiring")),
                (op['admin'].id,
                    f'网关"{name}"的支付宝授权：即将到期'),
                })
        notification, = Notification.search(
            [('user', '=', op['admin'].id)])
        self.assertEqual(
            (notification.model, json.loads(notification.records)),
            ('fuel.payment.gateway', [gateway.id]))
        self.assertTrue(notification.unread)
        notification, = Notification.search(
            [('user', '=', platform_admin.id)])
        self.assertEqual(notification.description, message(
                'msg_gateway_alipay_auth_notify_description'))
        self.assertNotIn(manager.id, {u for u, _ in told()})
        self.assertNotIn(other.id, {u for u, _ in told()})
        # the next day, still expiring: nobody is told again
        with self.assertLogs('addons.fuel_payment.alipay_auth', 'WARNING'):
            self.check(op)
        self.assertEqual(len(Notification.search([])), 2)
        self.simulator.withdraw(gateway.auth_token())
        with self.assertLogs('addons.fuel_payment.alipay_auth', 'WARNING'):
            self.check(op)
        self.assertEqual(len(Notification.search([])), 4)
        self.assertIn(
            (platform_admin.id, message(
                    'msg_gateway_alipay_auth_notify', gateway=name,
                    status="Withdrawn")), told())

    @with_transaction()
    def test_secrets_not_readable(self):
        """Test operator users read neither the refresh token nor the link's
        digest over RPC; administrators set them without reading"""
        pool = Pool()
        Gateway = pool.get('fuel.payment.gateway')
        op = self.prepare()
        self.authorize(op)
        manager = create_user(
            'auth_manager', op['company'], 'role_station_manager',
            [op['setup']['station']])
        for user in [op['admin'], manager]:
            with Transaction().set_user(user.id), check_access():
                for name in [
                        'app_refresh_token', 'auth_request',
                        'app_auth_token']:
                    with self.subTest(user=user.login, field=name), \
                            self.assertRaises(AccessError):
                        Gateway.read([op['gateway'].id], [name])
                shown, = Gateway.read([op['gateway'].id], [
                        'auth_status', 'auth_app', 'auth_refresh_expiry'])
                self.assertEqual(shown['auth_status'], 'valid')
        with Transaction().set_user(manager.id), check_access(), \
                self.assertRaises(AccessError):
            Gateway.write([Gateway(op['gateway'].id)], {
                    'app_refresh_token': 'x'})

    @with_transaction()
    def test_copy_forgets_authorization(self):
        "Test a copied gateway has none of the authorization"
        pool = Pool()
        Gateway = pool.get('fuel.payment.gateway')
        op = self.prepare()
        gateway = self.authorize(op)
        copy, = Gateway.copy([gateway])
        self.assertEqual(stored(copy), (None, None, None))
        self.assertIsNone(copy.auth_status)
        self.assertIsNone(copy.auth_refresh_expiry)


class AlipayAuthRouteTestCase(
        SimulatorsMixin, FuelDatabaseMixin, RouteTestCase):
    "Test the route Alipay's redirect reaches after an authorization"

    simulators = {
        'simulator': simulator,
        }

    @classmethod
    def setUpClass(cls):
        super().setUpClass()

        def prepare():
            pool = Pool()
            Lang = pool.get('ir.lang')
            Translation = pool.get('ir.translation')
            op = build_platform(cls.simulator)
            cls.gateway_id = op['gateway'].id
            cls.app = op['platform'].app
            # the page is answered in the browser's language
            lang, = Lang.search([('code', '=', 'zh_CN')])
            Lang.write([lang], {'translatable': True})
            Translation.translation_import(
                'zh_CN', 'fuel_payment', str(
                    pathlib.Path(__file__).parent.parent
                    / 'locale' / 'zh_CN.po'))
        run_committed(prepare)

    def setUp(self):
        super().setUp()
        self.simulator.calls.clear()

        def reset():
            Gateway = Pool().get('fuel.payment.gateway')
            Gateway.write([Gateway(self.gateway_id)], {
                    'app_auth_token': None, 'app_refresh_token': None,
                    'auth_app': None, 'auth_status': None,
                    'auth_request': None, 'auth_request_expiry': None})
        run_committed(reset)

    def link(self):
        "Show Authorize on Alipay's link (committed)"
        result = []

        def show():
            Gateway = Pool().get('fuel.payment.gateway')
            url, _ = Gateway(self.gateway_id).alipay_authorize_url()
            result.append(url)
        run_committed(show)
        return result[0]

    def redirect(self, seller=SELLER_A, *apps):
        "The redirect of the link approved by seller: its path and query"
        url = urllib.parse.urlsplit(self.simulator.approve(
                self.link(), seller, *(apps or [APP_A])))
        self.assertEqual(
            f'{url.scheme}://{url.netloc}{url.path}', REDIRECT)
        return f'/{DB_NAME}/fuel_payment/alipay/authorized?{url.query}'

    def authorization(self):
        with Transaction().start(DB_NAME, 0):
            Gateway = Pool().get('fuel.payment.gateway')
            gateway = Gateway(self.gateway_id)
            return (
                gateway.auth_token(), gateway.auth_refresh_token(),
                gateway.auth_app, gateway.auth_status, gateway.rec_name)

    def test_redirect_stores_authorization(self):
        """Test the route exchanges the redirect's code for the gateway the
        state names, answers a page; the same redirect again is refused"""
        path = self.redirect()
        client = self.client()
        response = client.get(path)
        self.assertEqual(response.status_code, 200)
        self.assertEqual(response.mimetype, 'text/html')
        token, refresh, app, status, name = self.authorization()
        self.assertEqual(self.simulator.auth_tokens[token], (SELLER_A, APP_A))
        self.assertIsNotNone(refresh)
        self.assertEqual((app, status), (APP_A, 'valid'))
        with Transaction().start(DB_NAME, 0):
            text = message('msg_gateway_alipay_authorized', gateway=name)
        self.assertIn(html.escape(text), response.get_data(as_text=True))
        # used: the state is no more valid
        response = client.get(path)
        self.assertEqual(response.status_code, 400)
        with Transaction().start(DB_NAME, 0):
            text = message('msg_gateway_alipay_auth_state')
        self.assertIn(text, response.get_data(as_text=True))
        self.assertEqual(self.authorization()[0], token)

    def test_bad_state_refused(self):
        "Test a redirect with a forged, foreign or no state stores nothing"
        path = self.redirect()
        url = urllib.parse.urlsplit(path)
        query = dict(urllib.parse.parse_qsl(url.query))
        client = self.client()
        for changes in [
                {'state': query['state'] + 'x'},
                {'state': query['state'].replace(
                        f'{self.gateway_id}.', '1.')},
                {'state': None},
                {'app_id': APP_A},
                {'app_auth_code': None},
                ]:
            with self.subTest(changes=changes):
                forged = {
                    k: v for k, v in dict(query, **changes).items()
                    if v is not None}
                response = client.get(
                    f'{url.path}?{urllib.parse.urlencode(forged)}')
                self.assertEqual(response.status_code, 400)
                with Transaction().start(DB_NAME, 0):
                    text = message('msg_gateway_alipay_auth_state')
                self.assertIn(text, response.get_data(as_text=True))
        self.assertIsNone(self.authorization()[0])
        # the right one still works
        self.assertEqual(client.get(path).status_code, 200)

    def test_code_of_another_merchant_refused(self):
        """Test a link approved by another merchant stores nothing and
        says so, in the browser's language"""
        path = self.redirect(SELLER_B, APP_B)
        response = self.client().get(
            path, headers={'Accept-Language': 'zh-CN,zh;q=0.9,en;q=0.5'})
        self.assertEqual(response.status_code, 400)
        name = self.authorization()[4]
        with Transaction().start(
                DB_NAME, 0, context={'language': 'zh_CN'}):
            text = message(
                'msg_gateway_alipay_token_seller', gateway=name,
                user=SELLER_B, merchant=SELLER_A)
        self.assertIn('商户', text)
        self.assertIn(html.escape(text), response.get_data(as_text=True))
        self.assertIsNone(self.authorization()[0])

    def test_cron_checks_and_commits(self):
        """Test the daily cron refreshes a token near its end and keeps it
        (committed)"""
        self.assertEqual(self.client().get(self.redirect()).status_code, 200)
        token = self.authorization()[0]
        self.simulator.auth_ends[token] = (
            dt.datetime.now(dt.UTC) + dt.timedelta(days=1))

        def cron():
            pool = Pool()
            Cron = pool.get('ir.cron')
            Gateway = pool.get('fuel.payment.gateway')
            cron, = Cron.search([
                    ('method', '=',
                        'fuel.payment.gateway|check_alipay_authorizations'),
                    ])
            self.assertEqual(cron.interval_type, 'days')
            Gateway.check_alipay_authorizations()
        with self.assertLogs('addons.fuel_payment.alipay_auth', 'INFO'):
            run_committed(cron)
        new, _, app, status, _ = self.authorization()
        self.assertNotEqual(new, token)
        self.assertEqual((app, status), (APP_A, 'valid'))
