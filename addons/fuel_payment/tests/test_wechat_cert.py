# This file is part of fuelpay.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""WeChat Pay in platform certificate mode (平台证书模式): a gateway
without a Platform Public Key downloads WeChat's certificates
(/v3/certificates), checks them, caches them on the merchant account's
gateway and downloads them again when a serial is unknown or the cache is
stale; against the simulator in cert_mode"""
import datetime as dt
import functools
import json
import logging

from trytond.modules.company.tests import create_company, set_company
from trytond.pool import Pool
from trytond.tests.test_tryton import with_transaction
from trytond.transaction import Transaction

from ..gateway import TransientError
from ..wechat import PlatformCertificates
from .sim_wechat import WeChatSimulator, new_key
from .test_gateway import (
    WECHAT_CODE,
    OperatorOnceMixin,
    create_gateway,
    create_order,
)
from .test_platform_account import operator_gateway
from .tools import (
    PaymentDatabaseTestCase,
    SimulatorsMixin,
    create_payment_setup,
    pay_code,
)

CERTIFICATES = ('GET', '/v3/certificates')
SUB_MCHID = '1900000401'


def cached(gateway):
    "The platform_certs of gateway's row as JSON ({} when empty)"
    table = gateway.__table__()
    cursor = Transaction().connection.cursor()
    cursor.execute(*table.select(
            table.platform_certs, where=table.id == gateway.id))
    value, = cursor.fetchone()
    return json.loads(value) if value else {}


def set_cached(gateway, data):
    table = gateway.__table__()
    Transaction().connection.cursor().execute(*table.update(
            [table.platform_certs], [json.dumps(data)],
            where=table.id == gateway.id))


class WeChatCertificateTestCase(
        SimulatorsMixin, OperatorOnceMixin, PaymentDatabaseTestCase):
    "Test WeChat Pay in platform certificate mode"

    simulators = {
        'simulator': functools.partial(WeChatSimulator, cert_mode=True),
        }

    @classmethod
    def build_operator(cls):
        company = create_company()
        with set_company(company):
            setup = create_payment_setup(company)
            gateway = create_gateway(
                company, cls.simulator, setup['methods']['wechat'])
        return company, setup, gateway

    def prepare(self, quantity='20'):
        # the cache is written in the test's transaction, rolled back
        # after each test: each one starts without certificates
        self.simulator.orders.clear()
        self.simulator.requests.clear()
        self.simulator.paying_queries = None
        self.simulator.refuse = None
        self.simulator.down = False
        self.simulator.certificates_api_key = None
        self.simulator.certificates_signer = None
        # a former test's rotation is over: WeChat lists the newest only
        del self.simulator.certificates[:-1]
        company, setup, gateway = self.operator()
        with set_company(company):
            order = create_order(setup, quantity)
        return company, setup, gateway, order

    def downloads(self):
        return self.simulator.requests.count(CERTIFICATES)

    def create_qr(self, company, setup, order):
        pool = Pool()
        Payment = pool.get('fuel.payment.gateway.payment')
        with set_company(company):
            payment = Payment(Payment.create_qr(
                    order.id, setup['methods']['wechat'].id))
            Payment.submit([payment])
        return Payment(payment.id)

    @with_transaction()
    def test_code_qr_and_notification(self):
        """Test a code payment, a QR and its notification verified with the
        downloaded certificates, downloaded once and cached for the next
        providers"""
        pool = Pool()
        Payment = pool.get('fuel.payment.gateway.payment')
        Notification = pool.get('fuel.payment.gateway.notification')
        company, setup, gateway, order = self.prepare()
        self.assertFalse(gateway.platform_key)
        self.assertEqual(cached(gateway), {})
        with set_company(company):
            payment = pay_code(order, WECHAT_CODE)
        self.assertEqual(payment.state, 'succeeded')
        self.assertEqual(payment.order.state, 'paid')
        self.assertEqual(self.downloads(), 1)
        serial = self.simulator.platform_key_id
        data = cached(gateway)
        self.assertEqual(list(data['certificates']), [serial])
        self.assertEqual(data['merchant'], self.simulator.mchid)
        self.assertIn(
            'BEGIN CERTIFICATE', data['certificates'][serial]['pem'])
        self.assertTrue(data['certificates'][serial]['expire'])
        # the field the form shows
        value, = gateway.__class__.read([gateway.id], ['platform_certs'])
        self.assertIn(serial, value['platform_certs'])

        with set_company(company):
            order = create_order(setup)
        payment = self.create_qr(company, setup, order)
        self.assertEqual(payment.state, 'pending')
        self.assertTrue(payment.code_url.startswith('weixin://wxpay/'))
        self.simulator.pay(payment.number)
        self.assertEqual(Notification.receive(
                gateway, *self.simulator.notification(payment.number)),
            'accepted')
        payment = Payment(payment.id)
        self.assertEqual(payment.state, 'succeeded')
        self.assertEqual(payment.order.state, 'paid')
        # three more providers (payment, notification), no more download
        self.assertEqual(self.downloads(), 1)

    @with_transaction()
    def test_rotation_of_an_answer(self):
        """Test an answer signed by a new certificate downloads the list
        once, then verifies"""
        company, setup, gateway, order = self.prepare()
        with set_company(company):
            self.assertEqual(pay_code(order, WECHAT_CODE).state, 'succeeded')
        old = self.simulator.platform_key_id
        new = self.simulator.rotate()
        with set_company(company):
            order = create_order(setup)
            payment = pay_code(order, WECHAT_CODE)
        self.assertEqual(payment.state, 'succeeded')
        self.assertEqual(self.downloads(), 2)
        self.assertEqual(
            sorted(cached(gateway)['certificates']), sorted([old, new]))
        with set_company(company):
            order = create_order(setup)
            self.assertEqual(pay_code(order, WECHAT_CODE).state, 'succeeded')
        self.assertEqual(self.downloads(), 2)

    @with_transaction()
    def test_rotation_of_a_notification(self):
        """Test a notification signed by a certificate unknown to the cache
        is accepted once the list is downloaded again"""
        pool = Pool()
        Payment = pool.get('fuel.payment.gateway.payment')
        Notification = pool.get('fuel.payment.gateway.notification')
        company, setup, gateway, order = self.prepare()
        payment = self.create_qr(company, setup, order)
        self.assertEqual(self.downloads(), 1)
        self.simulator.pay(payment.number)
        new = self.simulator.rotate()
        self.assertNotIn(new, cached(gateway)['certificates'])
        self.assertEqual(Notification.receive(
                gateway, *self.simulator.notification(payment.number)),
            'accepted')
        self.assertEqual(Payment(payment.id).state, 'succeeded')
        self.assertEqual(self.downloads(), 2)
        self.assertIn(new, cached(gateway)['certificates'])

    @with_transaction()
    def test_forged_certificate_lists_refused(self):
        """Test a list encrypted with another APIv3 key or signed by
        another key is refused: nothing cached, the answer and the
        notification it should verify refused, nothing secret logged"""
        pool = Pool()
        Notification = pool.get('fuel.payment.gateway.notification')
        company, setup, gateway, order = self.prepare()
        payment = self.create_qr(company, setup, order)
        self.simulator.pay(payment.number)
        valid = self.simulator.notification(payment.number)
        set_cached(gateway, {})

        self.simulator.certificates_api_key = '0' * 32
        with self.assertLogs('addons.fuel_payment', logging.WARNING) as logs:
            self.assertEqual(
                Notification.receive(gateway, *valid), 'refused')
            with self.assertRaises(TransientError):
                gateway.get_provider().query(payment)
        self.assertEqual(cached(gateway), {})
        self.assertEqual(self.downloads(), 3)
        output = '\n'.join(logs.output)
        self.assertIn('does not decrypt with the APIv3 key', output)
        for secret in [self.simulator.api_key, 'PRIVATE KEY',
                'BEGIN CERTIFICATE']:
            self.assertNotIn(secret, output)

        self.simulator.certificates_api_key = None
        self.simulator.certificates_signer = new_key()
        with (self.assertLogs('addons.fuel_payment', logging.WARNING) as logs,
                self.assertRaises(TransientError)):
            gateway.get_provider().query(payment)
        self.assertIn('signature', '\n'.join(logs.output))
        self.assertEqual(cached(gateway), {})

        # the real list is taken and the notification then accepted
        self.simulator.certificates_signer = None
        self.assertEqual(Notification.receive(
                gateway, *self.simulator.notification(payment.number)),
            'accepted')
        self.assertEqual(
            list(cached(gateway)['certificates']),
            [s for s, *_ in self.simulator.certificates])

    @with_transaction()
    def test_notification_of_unknown_key_refused(self):
        """Test a notification signed with another key is refused, under a
        cached serial without a download, under an unknown serial after
        one download"""
        pool = Pool()
        Payment = pool.get('fuel.payment.gateway.payment')
        Notification = pool.get('fuel.payment.gateway.notification')
        company, setup, gateway, order = self.prepare()
        payment = self.create_qr(company, setup, order)
        self.simulator.pay(payment.number)
        self.assertEqual(self.downloads(), 1)
        forged = self.simulator.notification(payment.number, forge=True)
        self.assertEqual(Notification.receive(gateway, *forged), 'refused')
        self.assertEqual(self.downloads(), 1)

        headers, body = self.simulator.notification(
            payment.number, forge=True)
        headers['Wechatpay-Serial'] = '%040X' % 123456789
        self.assertEqual(
            Notification.receive(gateway, headers, body), 'refused')
        self.assertEqual(self.downloads(), 2)
        self.assertEqual(Payment(payment.id).state, 'pending')

    @with_transaction()
    def test_stale_cache_downloaded_again(self):
        """Test a cache downloaded 12 hours ago is downloaded again before
        verifying, and a cache of another merchant ID is not used"""
        company, setup, gateway, order = self.prepare()
        with set_company(company):
            self.assertEqual(pay_code(order, WECHAT_CODE).state, 'succeeded')
        data = cached(gateway)
        fetched = dt.datetime.fromisoformat(data['fetched'])
        data['fetched'] = (fetched - dt.timedelta(hours=12)).isoformat()
        set_cached(gateway, data)
        self.assertTrue(PlatformCertificates(gateway).stale())
        with set_company(company):
            order = create_order(setup)
            self.assertEqual(pay_code(order, WECHAT_CODE).state, 'succeeded')
        self.assertEqual(self.downloads(), 2)
        self.assertFalse(PlatformCertificates(gateway).stale())

        data = cached(gateway)
        data['merchant'] = '1900009999'
        set_cached(gateway, data)
        self.assertEqual(PlatformCertificates(gateway).certificates(), [])
        with set_company(company):
            order = create_order(setup)
            self.assertEqual(pay_code(order, WECHAT_CODE).state, 'succeeded')
        self.assertEqual(self.downloads(), 3)
        self.assertEqual(cached(gateway)['merchant'], self.simulator.mchid)


class WeChatCertificatePartnerTestCase(
        SimulatorsMixin, OperatorOnceMixin, PaymentDatabaseTestCase):
    "Test WeChat Pay partner mode in platform certificate mode"

    simulators = {
        'simulator': functools.partial(
            WeChatSimulator, cert_mode=True, sub_mchids=[SUB_MCHID]),
        }

    @classmethod
    def build_operator(cls):
        pool = Pool()
        Gateway = pool.get('fuel.payment.gateway')
        platform_company = create_company(name="Fuel Platform")
        platform, = Gateway.create([dict(
                    cls.simulator.gateway_values(),
                    name="Platform WeChat Pay", shared=True,
                    company=platform_company.id)])
        company = create_company(name="Operator")
        with set_company(company):
            setup = create_payment_setup(company)
            gateway = operator_gateway(
                company, setup, 'wechat', platform,
                name="WeChat Pay", sub_merchant=SUB_MCHID)
        return company, setup, gateway, platform

    @with_transaction()
    def test_sub_merchant_uses_platform_certificates(self):
        """Test a sub-merchant's payment and notification verified with the
        platform's certificates, cached on the platform account"""
        pool = Pool()
        Payment = pool.get('fuel.payment.gateway.payment')
        Notification = pool.get('fuel.payment.gateway.notification')
        self.simulator.orders.clear()
        self.simulator.requests.clear()
        company, setup, gateway, platform = self.operator()
        with set_company(company):
            order = create_order(setup)
            payment = pay_code(order, WECHAT_CODE)
        self.assertEqual(payment.state, 'succeeded')
        self.assertEqual(
            self.simulator.orders[payment.number].sub_mchid, SUB_MCHID)
        self.assertEqual(cached(gateway), {})
        self.assertEqual(
            list(cached(platform)['certificates']),
            [self.simulator.platform_key_id])
        with set_company(company):
            order = create_order(setup)
            payment = Payment(Payment.create_qr(
                    order.id, setup['methods']['wechat'].id))
            Payment.submit([payment])
        self.simulator.pay(payment.number)
        self.simulator.rotate()
        self.assertEqual(Notification.receive(
                gateway, *self.simulator.notification(payment.number)),
            'accepted')
        self.assertEqual(Payment(payment.id).state, 'succeeded')
        self.assertEqual(self.simulator.requests.count(CERTIFICATES), 2)
