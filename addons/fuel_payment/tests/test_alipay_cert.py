# This file is part of fuelpay.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""Alipay in public key certificate mode (公钥证书模式): requests carry the
SNs of the application's certificate and of Alipay's root certificate,
answers and notifications are verified with the key of Alipay's
certificate; against the simulator's per-run certificates"""
import functools
import logging

from alipay import DCAliPay
from trytond.exceptions import UserError
from trytond.modules.company.tests import create_company, set_company
from trytond.pool import Pool
from trytond.tests.test_tryton import with_transaction

from .sim_alipay import AlipaySimulator, cert_pem, cert_sn, root_sn
from .test_gateway import ALIPAY_CODE, OperatorOnceMixin, create_order
from .test_module import message
from .tools import (
    PaymentDatabaseTestCase,
    SimulatorsMixin,
    create_payment_setup,
    pay_code,
)


class AlipayCertTestCase(
        SimulatorsMixin, OperatorOnceMixin, PaymentDatabaseTestCase):
    "Test Alipay's public key certificate mode"

    simulators = {
        'simulator': functools.partial(AlipaySimulator, cert_mode=True),
        }

    def prepare(self):
        self.simulator.trades.clear()
        self.simulator.requests.clear()
        self.simulator.calls.clear()
        self.simulator.paying_queries = None
        self.simulator.refuse = None
        self.simulator.down = False
        self.simulator.forge_answers = False
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
                        cls.simulator.gateway_values(),
                        name="Alipay (certificates)", company=company.id)])
            Method.write([setup['methods']['alipay']], {
                    'gateway': gateway.id})
        return company, setup, gateway

    def test_serial_numbers(self):
        """Test the SDK computes the SNs Alipay computes: issuer as RFC 2253
        and decimal serial, the root's RSA certificates only"""
        values = self.simulator.certificates()
        self.assertEqual(
            DCAliPay.get_cert_sn(values['app_cert']),
            cert_sn(self.simulator.app_cert))
        root = root_sn(self.simulator.roots)
        # the simulator's root file holds an ECDSA root the SN leaves out
        self.assertEqual(len(root), 32)
        self.assertEqual(
            DCAliPay.get_root_cert_sn(
                '\n\n'.join(cert_pem(c) for c in self.simulator.roots)),
            root)

    @with_transaction()
    def test_code_and_qr(self):
        """Test a bar code and a QR paid in certificate mode: every request
        names both SNs, the notification is verified with the key of
        Alipay's certificate"""
        pool = Pool()
        Notification = pool.get('fuel.payment.gateway.notification')
        Payment = pool.get('fuel.payment.gateway.payment')
        company, setup, gateway, order = self.prepare()
        self.assertFalse(gateway.platform_key)
        with set_company(company):
            payment = pay_code(order, ALIPAY_CODE, amount='100')
            self.assertEqual(payment.state, 'succeeded', payment.error)
            qr = Payment(Payment.create_qr(
                    order.id, setup['methods']['alipay'].id))
            Payment.submit([qr])
            qr = Payment(qr.id)
            self.assertEqual(qr.state, 'pending')
            self.assertTrue(qr.code_url.startswith('https://qr.alipay.com/'))
            self.simulator.pay(qr.number)
            forged = self.simulator.notification(qr.number, forge=True)
            with self.assertLogs('addons.fuel_payment', logging.WARNING):
                self.assertEqual(
                    Notification.receive(gateway, *forged), 'refused')
            self.assertEqual(Payment(qr.id).state, 'pending')
            self.assertEqual(
                Notification.receive(
                    gateway, *self.simulator.notification(qr.number)),
                'accepted')
        qr = Payment(qr.id)
        self.assertEqual(qr.state, 'succeeded')
        self.assertEqual(qr.order.state, 'paid')
        self.assertEqual(
            self.simulator.requests,
            ['alipay.trade.pay', 'alipay.trade.precreate'])
        for call in self.simulator.calls:
            self.assertEqual(
                call['app_cert_sn'], cert_sn(self.simulator.app_cert))
            self.assertEqual(
                call['alipay_root_cert_sn'], root_sn(self.simulator.roots))

    @with_transaction()
    def test_app_order_string(self):
        """Test a mobile app's order string carries the SNs and is paid
        once opened"""
        pool = Pool()
        Payment = pool.get('fuel.payment.gateway.payment')
        company, setup, _gateway, order = self.prepare()
        with set_company(company):
            payment = Payment(Payment.create_app(
                    order.id, setup['methods']['alipay'].id, 'app'))
            Payment.submit([payment])
            params = Payment(payment.id).status()['client_params']
            self.assertIn('app_cert_sn=', params['orderStr'])
            self.simulator.client_pays(params)
            Payment.check([payment])
        self.assertEqual(Payment(payment.id).state, 'succeeded')

    @with_transaction()
    def test_wrong_certificates_refused(self):
        """Test Alipay's refusal of an application certificate or root it
        does not know fails the payment with a clear error"""
        pool = Pool()
        Gateway = pool.get('fuel.payment.gateway')
        company, setup, gateway, _order = self.prepare()
        values = self.simulator.certificates()
        other_app = cert_pem(self.simulator.leaf(
                self.simulator.app_id, self.simulator.app_key))
        other_root = cert_pem(self.simulator.class2)
        cases = [
            ({'app_cert': other_app}, 'isv.app-cert-not-exist'),
            ({'root_cert': other_root}, 'isv.invalid-alipay-root-cert-sn'),
            ]
        for change, code in cases:
            Gateway.write([gateway], dict(values, **change))
            with set_company(company):
                payment = pay_code(
                    create_order(setup, '5'), ALIPAY_CODE)
            self.assertEqual(payment.state, 'failed')
            self.assertEqual(payment.error, message(
                    'msg_gateway_alipay_cert_refused',
                    gateway=gateway.rec_name, code=code))
        self.assertEqual(self.simulator.trades, {})

    @with_transaction()
    def test_answer_of_another_certificate_refused(self):
        """Test an answer whose signature does not verify with the pasted
        certificate, or signed under a renewed certificate, is not
        believed: the payment waits until the new certificate is pasted"""
        pool = Pool()
        Gateway = pool.get('fuel.payment.gateway')
        Payment = pool.get('fuel.payment.gateway.payment')
        company, _setup, gateway, order = self.prepare()
        self.simulator.forge_answers = True
        with set_company(company):
            forged = pay_code(order, ALIPAY_CODE, amount='50')
        self.assertEqual(forged.state, 'pending')
        self.assertEqual(forged.error, "bad answer signature")
        self.assertEqual(forged.order.state, 'draft')
        self.simulator.forge_answers = False
        old = self.simulator.alipay_key, self.simulator.alipay_cert
        self.simulator.rotate()
        try:
            with set_company(company):
                Payment.check([forged])
                forged = Payment(forged.id)
                self.assertEqual(forged.state, 'pending')
                self.assertEqual(forged.error, message(
                        'msg_gateway_alipay_cert_sn',
                        gateway=gateway.rec_name,
                        sn=cert_sn(self.simulator.alipay_cert)))
                # the operator pastes Alipay's new certificate
                Gateway.write([gateway], {
                        'platform_cert': self.simulator.certificates()[
                            'platform_cert']})
                Payment.check([forged])
        finally:
            # the other tests' gateway has the first certificate
            self.simulator.alipay_key, self.simulator.alipay_cert = old
        forged = Payment(forged.id)
        self.assertEqual(forged.state, 'succeeded')
        self.assertEqual(forged.error, None)

    @with_transaction()
    def test_certificates_checked_on_save(self):
        """Test a gateway's certificates must all be set and parse as PEM
        certificates"""
        pool = Pool()
        Gateway = pool.get('fuel.payment.gateway')
        company, setup, gateway, _order = self.prepare()
        values = self.simulator.certificates()
        fields = Gateway.fields_get(['app_cert', 'platform_cert', 'root_cert'])
        not_pem = values['platform_cert'].replace('MII', 'MIJ', 1)
        cases = [
            ({'platform_cert': 'not a certificate'}, 'platform_cert'),
            ({'platform_cert': not_pem}, 'platform_cert'),
            ({'app_cert': None}, 'app_cert'),
            # the root file needs an RSA root
            ({'root_cert': cert_pem(self.simulator.roots[0])}, 'root_cert'),
            ]
        for change, name in cases:
            with self.assertRaises(UserError) as cm:
                Gateway.write([gateway], dict(values, **change))
            self.assertEqual(cm.exception.message, message(
                    'msg_gateway_alipay_certificate',
                    gateway=gateway.rec_name,
                    field=fields[name]['string']))
        with self.assertRaises(UserError):
            Gateway.create([dict(
                        self.simulator.gateway_values(), name="Half",
                        company=company.id, root_cert=None)])
        # pasted from a Windows file, with its chain: accepted as it is
        Gateway.write([gateway], dict(
                values, platform_cert=values['platform_cert'].replace(
                    '\n', '\r\n')))
        with set_company(company):
            payment = pay_code(create_order(setup, '5'), ALIPAY_CODE)
        self.assertEqual(payment.state, 'succeeded')
        # back to public key mode
        Gateway.write([gateway], {
                'app_cert': None, 'platform_cert': None, 'root_cert': None,
                'platform_key': 'x'})
        self.assertFalse(Gateway(gateway.id).platform_cert)
