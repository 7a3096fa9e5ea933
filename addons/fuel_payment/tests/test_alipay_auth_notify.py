# This file is part of fuelpay.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""The messages Alipay posts to the platform application's gateway
(应用网关) about the operators' authorizations: the authorization notice
(open_app_auth_notify) and the cancellation
(alipay.open.auth.appauth.cancelled), received over HTTP"""
import datetime as dt
import urllib.parse

from trytond.modules.company.tests import create_company, set_company
from trytond.pool import Pool
from trytond.tests.test_tryton import DB_NAME, RouteTestCase
from trytond.transaction import Transaction

from addons.fuel_station.tests.tools import FuelDatabaseMixin

from .test_alipay_auth import build_platform, simulator
from .test_platform_account import (
    APP_A,
    APP_B,
    SELLER_A,
    SELLER_B,
    operator_gateway,
)
from .tools import SimulatorsMixin, create_payment_setup, run_committed

SELLER_C = '2088000000000399'
APP_C = '2021000000000399'
LOGGER = 'addons.fuel_payment.alipay_auth'
RESET = {
    'app_auth_token': None, 'app_refresh_token': None, 'auth_app': None,
    'auth_status': None, 'auth_checked': None, 'auth_expiry': None,
    'auth_refresh_expiry': None, 'auth_request': None,
    'auth_request_expiry': None}


class AlipayAuthNotifyTestCase(
        SimulatorsMixin, FuelDatabaseMixin, RouteTestCase):
    "Test the messages of Alipay's application gateway"

    simulators = {
        'simulator': simulator,
        }

    @classmethod
    def setUpClass(cls):
        super().setUpClass()

        def prepare():
            pool = Pool()
            Gateway = pool.get('fuel.payment.gateway')
            op = build_platform(cls.simulator)
            cls.platform_id = op['platform'].id
            cls.gateway_id = op['gateway'].id
            # another platform account of the same application, with
            # operator B's gateway on it
            other_platform, = Gateway.create([dict(
                        cls.simulator.gateway_values(),
                        name="Platform Alipay 2", shared=True,
                        company=create_company(name="Platform 2").id)])
            company = create_company(name="Operator B")
            with set_company(company):
                setup = create_payment_setup(company, 'B1')
                other = operator_gateway(
                    company, setup, 'alipay', other_platform,
                    name="Alipay B", merchant=SELLER_B)
            cls.other_platform_id = other_platform.id
            cls.other_id = other.id
        run_committed(prepare)

    def setUp(self):
        super().setUp()

        def reset():
            pool = Pool()
            Gateway = pool.get('fuel.payment.gateway')
            Notification = pool.get('fuel.payment.gateway.notification')
            Told = pool.get('res.notification')
            Gateway.write(
                [Gateway(self.gateway_id), Gateway(self.other_id)], RESET)
            # everybody's: by SQL (the record rules apply to user 1)
            cursor = Transaction().connection.cursor()
            for Model in [Notification, Told]:
                cursor.execute(*Model.__table__().delete())
        run_committed(reset)

    def url(self, gateway_id=None):
        return (f'/{DB_NAME}/fuel_payment/alipay/app/'
            f'{gateway_id or self.platform_id}')

    def post(self, message, gateway_id=None):
        headers, body = message
        return self.client().post(
            self.url(gateway_id), data=body, headers=headers)

    def open_link(self, gateway_id=None):
        "Show Authorize on Alipay's link of the gateway (committed)"
        def show():
            Gateway = Pool().get('fuel.payment.gateway')
            Gateway(gateway_id or self.gateway_id).alipay_authorize_url()
        run_committed(show)

    def state(self, gateway_id=None):
        "The gateway's authorization: token, refresh, app, status, link"
        with Transaction().start(DB_NAME, 0):
            Gateway = Pool().get('fuel.payment.gateway')
            gateway = Gateway(gateway_id or self.gateway_id)
            return (
                gateway.auth_token(), gateway.auth_refresh_token(),
                gateway.auth_app, gateway.auth_status,
                gateway.auth_request_expiry)

    def received(self):
        "The states and errors of the platform's notifications"
        with Transaction().start(DB_NAME, 0):
            Notification = Pool().get('fuel.payment.gateway.notification')
            return sorted(
                (n.gateway.id, n.state, n.error or '')
                for n in Notification.search([]))

    def told(self):
        "How many notifications the administrators got"
        with Transaction().start(DB_NAME, 0):
            return len(Pool().get('res.notification').search([]))

    def assert_success(self, response):
        self.assertEqual(response.status_code, 200)
        self.assertEqual(response.get_data(as_text=True), 'success')

    def authorize(self):
        "Authorize gateway A through a notice answering its link"
        self.open_link()
        entry = self.simulator.grant(SELLER_A, APP_A)
        self.assert_success(self.post(
                self.simulator.auth_notification(entry)))
        return entry

    def test_granted_stores_authorization(self):
        """Test the notice of an authorization the operator was asked for
        stores it as the exchange does (the link stays open for the
        redirect); its repetition is answered and ignored"""
        self.open_link()
        entry = self.simulator.grant(SELLER_A, APP_A)
        message = self.simulator.auth_notification(entry)
        with self.assertLogs(LOGGER, 'INFO'):
            self.assert_success(self.post(message))
        token, refresh, app, status, link = self.state()
        self.assertEqual(token, entry['app_auth_token'])
        self.assertEqual(refresh, entry['app_refresh_token'])
        self.assertEqual((app, status), (APP_A, 'valid'))
        self.assertIsNotNone(link)
        self.assert_success(self.post(message))
        self.assertEqual(
            self.received(), [(self.platform_id, 'accepted', '')])
        self.assertEqual(self.state()[0], entry['app_auth_token'])

    def test_redirect_after_notice(self):
        """Test the redirect of the same approval still stores it (the
        code exchanged gives the notice's token) and closes the link"""
        def link():
            Gateway = Pool().get('fuel.payment.gateway')
            url, _ = Gateway(self.gateway_id).alipay_authorize_url()
            urls.append(url)
        urls = []
        run_committed(link)
        redirect = urllib.parse.urlsplit(
            self.simulator.approve(urls[0], SELLER_A, APP_A))
        code = dict(urllib.parse.parse_qsl(redirect.query))['app_auth_code']
        entry = self.simulator.grant(SELLER_A, APP_A, code)
        self.assert_success(self.post(
                self.simulator.auth_notification(entry, code=code)))
        path = (f'/{DB_NAME}/fuel_payment/alipay/authorized?'
            f'{redirect.query}')
        self.assertEqual(self.client().get(path).status_code, 200)
        token, _, app, status, link = self.state()
        self.assertEqual(token, entry['app_auth_token'])
        self.assertEqual((app, status, link), (APP_A, 'valid', None))

    def test_not_asked_ignored(self):
        """Test a notice for a gateway without a link nor this
        authorization, or of an unknown merchant, binds nothing: answered,
        logged"""
        for seller, app in [(SELLER_A, APP_A), (SELLER_C, APP_C)]:
            with self.subTest(seller=seller):
                entry = self.simulator.grant(seller, app)
                with self.assertLogs(LOGGER, 'WARNING') as logs:
                    self.assert_success(self.post(
                            self.simulator.auth_notification(entry)))
                self.assertIn(seller, logs.output[0])
                self.assertNotIn(entry['app_auth_token'], logs.output[0])
        self.assertEqual(self.state()[0], None)
        self.assertEqual(
            self.received(),
            [(self.platform_id, 'accepted', 'ignored: no gateway')] * 2)

    def test_forged_refused(self):
        """Test a notice or a cancellation not signed by Alipay's key is
        refused, logged without its content, and changes nothing"""
        entry = self.simulator.grant(SELLER_A, APP_A)
        self.open_link()
        with self.assertLogs(LOGGER, 'WARNING') as logs:
            response = self.post(
                self.simulator.auth_notification(entry, forge=True))
        self.assertEqual(response.status_code, 400)
        self.assertNotIn(entry['app_auth_token'], ''.join(logs.output))
        self.assertIsNone(self.state()[0])
        self.authorize()
        token = self.state()[0]
        with self.assertLogs(LOGGER, 'WARNING'):
            response = self.post(
                self.simulator.auth_cancelled(token, forge=True))
        self.assertEqual(response.status_code, 400)
        self.assertEqual(self.state()[3], 'valid')
        # unsigned
        headers, body = self.simulator.auth_notification(entry)
        body = '&'.join(
            p for p in body.split('&') if not p.startswith('sign='))
        with self.assertLogs(LOGGER, 'WARNING'):
            response = self.post((headers, body))
        self.assertEqual(response.status_code, 400)
        self.assertEqual(
            [s for _, s, _ in self.received()].count('refused'), 3)

    def test_other_platform_ignored(self):
        """Test a notice for operator B's gateway, which asked on another
        platform account, is not stored when posted to this platform
        account's gateway; it is on its own"""
        self.open_link(self.other_id)
        entry = self.simulator.grant(SELLER_B, APP_B)
        message = self.simulator.auth_notification(entry)
        with self.assertLogs(LOGGER, 'WARNING'):
            self.assert_success(self.post(message))
        self.assertIsNone(self.state(self.other_id)[0])
        self.assert_success(self.post(message, self.other_platform_id))
        self.assertEqual(
            self.state(self.other_id)[0], entry['app_auth_token'])
        # an operator's gateway is no application's gateway
        response = self.post(message, self.other_id)
        self.assertEqual(response.status_code, 404)
        self.assertEqual(self.post(message, 999999).status_code, 404)

    def test_cancelled_flags_withdrawn(self):
        """Test the cancellation flags the gateway withdrawn and tells the
        administrators once; a new authorization of the same application
        (no link needed) makes it valid again"""
        entry = self.authorize()
        later = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=5)
        message = self.simulator.auth_cancelled(
            entry['app_auth_token'], when=later)
        with self.assertLogs(LOGGER, 'WARNING'):
            self.assert_success(self.post(message))
        self.assertEqual(self.state()[3], 'withdrawn')
        told = self.told()
        self.assertGreater(told, 0)
        self.assert_success(self.post(message))
        with self.assertLogs(LOGGER, 'WARNING'):
            self.assert_success(self.post(self.simulator.auth_cancelled(
                        entry['app_auth_token'],
                        when=later + dt.timedelta(seconds=5))))
        self.assertEqual(self.told(), told)
        renewed = self.simulator.grant(SELLER_A, APP_A)
        self.assert_success(self.post(self.simulator.auth_notification(
                    renewed, when=later + dt.timedelta(seconds=10))))
        token, _, app, status, _ = self.state()
        self.assertEqual(
            (token, app, status),
            (renewed['app_auth_token'], APP_A, 'valid'))

    def test_older_message_ignored(self):
        """Test a notice or a cancellation older than the stored
        authorization (delivered late) changes nothing"""
        entry = self.authorize()
        earlier = dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)
        old = self.simulator.grant(SELLER_A, APP_A)
        with self.assertLogs(LOGGER, 'INFO'):
            self.assert_success(self.post(
                    self.simulator.auth_notification(old, when=earlier)))
        self.assertEqual(self.state()[0], entry['app_auth_token'])
        self.assert_success(self.post(self.simulator.auth_cancelled(
                    old['app_auth_token'], when=earlier)))
        self.assertEqual(self.state()[3], 'valid')
        self.assertIn(
            (self.platform_id, 'accepted',
                'ignored: older than the authorization'),
            self.received())

    def test_other_messages_ignored(self):
        """Test a notice of another status and another message of the
        message service are answered, kept and change nothing"""
        self.open_link()
        entry = self.simulator.grant(SELLER_A, APP_A)
        with self.assertLogs(LOGGER, 'INFO'):
            self.assert_success(self.post(self.simulator.auth_notification(
                        entry, status='other_status')))
            self.assert_success(self.post(self.simulator.app_message({
                            'notify_id': 'other-message',
                            'utc_timestamp': '1700000000000',
                            'msg_method': 'alipay.open.mini.version.audit'
                            '.passed',
                            'version': '1.1',
                            'biz_content': '{}',
                            })))
        self.assertIsNone(self.state()[0])
        self.assertEqual(
            self.received(),
            [(self.platform_id, 'accepted',
                    'ignored: not an authorization')] * 2)
