# This file is part of fuelpay.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""JD Pay (京东支付) through its own merchant API: the protocol against JD's
published test vectors, and payments against the simulator on
127.0.0.1"""
import base64
import datetime as dt
import logging
import unittest
from decimal import Decimal
from unittest import mock

from trytond.model.exceptions import AccessError
from trytond.modules.company.tests import create_company, set_company
from trytond.pool import Pool
from trytond.tests.test_tryton import (
    DB_NAME,
    RouteTestCase,
    with_transaction,
)
from trytond.transaction import Transaction, check_access

from addons.fuel_station.tests.test_module import create_user
from addons.fuel_station.tests.tools import FuelDatabaseMixin

from .. import jdpay
from ..exceptions import GatewayError
from ..gateway import (
    BillFormatError,
    PermanentError,
    code_channel,
)
from .sim_jdpay import REVOKED, JdPaySimulator
from .sim_wechat import new_key, private_pem, public_pem
from .test_gateway import OperatorOnceMixin, create_gateway, create_order
from .test_module import message
from .test_reconciliation import bill_today
from .tools import (
    PaymentDatabaseTestCase,
    SimulatorsMixin,
    create_payment_setup,
    pay_code,
    run_committed,
)

JD_CODE = '181234567890123456'

# JD's test environment as the jdpay gem's tests quote it (merchant
# 22294531): its DES key, JD's public key and a refund answer JD signed
# and encrypted. Public test material, no secret of ours.
JD_DES_KEY = 'ta4E/aspLA3lgFGKmNDNRYU92RkZ4w2t'
JD_PUBLIC_KEY = """-----BEGIN PUBLIC KEY-----
MIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQCKE5N2xm3NIrXON8Zj19GNtLZ8
xwEQ6uDIyrS3S03UhgBJMkGl4msfq4Xuxv6XUAN7oU1XhV3/xtabr9rXto4Ke3d6
WwNbxwXnK5LSgsQc1BhT5NcXHXpGBdt7P8NMez5qGieOKqHGvT0qvjyYnYA29a8Z
4wzNR7vAVHp36uD5RwIDAQAB
-----END PUBLIC KEY-----"""
JD_ANSWER = (
    '<?xml version="1.0" encoding="UTF-8"?><jdpay><version>V2.0</version>'
    '<merchant>22294531</merchant><result><code>000000</code>'
    '<desc>成功</desc></result><tradeNum>1494236491939_r</tradeNum>'
    '<oTradeNum>1494236491939</oTradeNum><amount>1</amount>'
    '<currency>CNY</currency><tradeTime>20170508180239</tradeTime>'
    '<note></note><status>1</status><sign>W4g4PwHlh7OM60uz72MYH4+5PW1lJy'
    'FoHiKGFczOGDHdATqAAqbRy4p+sXU04FlsA29UpEfY3Fsct1IAhL5D7y1/tgZDRB+tGe'
    '1Tm0zTeFcKQjV8UU7bfRC+Mi3OdQgQvJ2JIIJcsxpXyQmeG2Vr/77aPhCY8hNEQObDp8'
    'fDDFc=</sign></jdpay>')
JD_ENCRYPTED = (
    'ZDg2ZmU3YTk5YmM2MGQxYzhjNjc0YmY1ZWJlY2QyODU0YTc5NmQ3ZWQxMWU1NzE3MWQ0'
    'OTUwOGI5NzllYmE4ZjM1YzRiZjlmYWE1M2ZiYjVjYTg5YjA4NTdhMjg3NTBhNzQxM2Zj'
    'OWFlN2U3YTNlYzM5ZTI5OTBkZDczNzQ5MjhjM2UxMjhkYWJhMGM0NWY2MWFjYjg2YWFl'
    'ZDBjOTQ1Y2UyOWNlMDg2MmViOTQ3ZDUyZTczOTMxYjM0NGQwZTNjZGVjZTNkY2EwZmZl'
    'YzZlODE1Njc3YWMzODcyNTRhYTcyZDc5MjNhYzc5YWIzZGM0ZGIwYWE4NTc3ZTRhNmE3'
    'YmMxMjIwMmEyZmRjMDgxNjhlZjQ5ODVlNGIwNmU2ZTVjZjk3MWRlMmQ5NWYxMmJjNjQ3'
    'ZTY3MzhhNzRlOGJlMThmMGU3NDhmMmFiMWIwNDlmMGE5NmRjZWU5YTRiZDdkZGVjMDI2'
    'YjE2ZDI0M2MzMzEzNWI5ZDkyYzQ3OTU4OTc2NmQ0NmEyMGU2MTU3YTc4ZTUxY2UyMTYx'
    'MWNhMGFlMmIxZGJiOTEwZWM1OGJkMjU0ODA3NTYxYjI1N2EzYjFhNzVmMDI2ZTkxMmQ1'
    'ZGZiOGY2ZGQ2NDQwODBmMjM4ZGI2MjNkOTUxY2NhNzRjN2ZhMDg5M2EzM2I0ZmU4MTA0'
    'MjAyZmVjNGVkNjIzNjk2ODBkNWYwYzZmYzA1YjIwYmU3MDY2Y2E5NjI0N2I1MGE4MTlh'
    'M2U0MThmMDQ1MWU3ZjhkMzQwOGQ5MmZkM2RlN2FjODhiODEyODEwMzY0NjVhYjBmMTk1'
    'MjVjNzc5YTQ5Y2Q5ZjliNWViODRjOTEyNjQyYTFkZGQ5MzRiYjc3YjAzMTY5YTdkNGQ4'
    'ZDEzYjk3OGY0NmNiZjFmNjM3NzM4NGYwMDExNTIwODM0MWEyYTg1ZGYxNDdjZGRmMTk0'
    'ZjlmNDQ0ODM0MzQ2NjgzYmFlNzg4NjE0MWViODUwYTdjNjYyZjdjY2QyNGFlM2Q3ZmQ4'
    'NDkwNzZmMWNiMWFmODczNDNhZDcwN2M1NTE2ODFhZDA3NzE3OTU3NDg0Yzk4NTIzNTQ5'
    'YTM4YzI1MDIxZTJmNmIxODE1NDA0YTczZjMzMGEzMTgzMGNjYzQ1YjI2ZTUzNzFiODMz'
    'MjU1ZjllZjNmYjVhNzIwNDc5Y2UzNTM2OGQ0ZWQ5ZDRlYjllOTE2MTQ0OTdiN2Y3Njc2'
    'M2E5ZjRlY2I4ZGNhYWFlNTE3MjJhYTBmM2Y4YjAwZWRkYTFhODI1ZTAxYzBhZTkzM2Ni'
    'MTYwM2ExZmJmYjc5OTZhYjM5ZjA3YmVkYTgxNDQyODkxNDEyYWZjZjhiODA3YmQyNDc4'
    'Mzg1MGZlNGE5ZDc1NzlmOGU4MjIzZDEwYjhkNzI0ZmVmNmU4YzQyZDNkNDUxYTI3MWVm'
    'Mw==')


class JdPayProtocolTestCase(unittest.TestCase):
    "Test JD Pay's 3DES, signature and envelope without a database"

    def test_des_known_answer(self):
        "Test 3DES gives exactly what JD's test environment gave"
        key = jdpay.des_key(JD_DES_KEY)
        self.assertEqual(jdpay.des_encrypt(key, JD_ANSWER), JD_ENCRYPTED)
        self.assertEqual(jdpay.des_decrypt(key, JD_ENCRYPTED), JD_ANSWER)

    def test_des_round_trip(self):
        "Test any text goes through 3DES and back, padded to 8 bytes"
        key = jdpay.des_key(base64.b64encode(bytes(range(24))).decode())
        for text in ['', 'a', 'abcd', 'abcdefgh', '加油站 92# 151.60元',
                '<jdpay>' + 'x' * 1000 + '</jdpay>']:
            encrypted = jdpay.des_encrypt(key, text)
            cipher = bytes.fromhex(base64.b64decode(encrypted).decode())
            self.assertEqual(len(cipher) % 8, 0)
            self.assertEqual(
                len(cipher), len(text.encode()) + 4 + (
                    -(len(text.encode()) + 4) % 8))
            self.assertEqual(jdpay.des_decrypt(key, encrypted), text)
        other = jdpay.des_key(base64.b64encode(bytes(24)).decode())
        with self.assertRaises(ValueError):
            jdpay.des_decrypt(other, jdpay.des_encrypt(key, 'a' * 64))
        for bad in ['not base64!', base64.b64encode(b'xyz').decode(),
                base64.b64encode(b'abcd').decode()]:
            with self.assertRaises(ValueError):
                jdpay.des_decrypt(key, bad)
        for bad in [None, '', 'abcd', base64.b64encode(bytes(16)).decode()]:
            with self.assertRaises(ValueError):
                jdpay.des_key(bad)

    def test_jd_signature(self):
        """Test the signature JD's test environment made verifies, and
        fails on a changed byte of the text or of the signature"""
        public_key = jdpay.load_public(JD_PUBLIC_KEY)
        text, signature = jdpay.signed_text(JD_ANSWER)
        self.assertNotIn('<sign>', text)
        self.assertTrue(jdpay.verify(public_key, text, signature))
        self.assertFalse(jdpay.verify(
                public_key, text.replace('<status>1<', '<status>2<'),
                signature))
        raw = bytearray(base64.b64decode(signature))
        raw[10] ^= 1
        self.assertFalse(jdpay.verify(
                public_key, text, base64.b64encode(raw).decode()))
        self.assertFalse(jdpay.verify(public_key, text, 'not base64!'))
        # JD's demo code verifies the text with tabs and line breaks
        # dropped
        spread = text.replace('<tradeNum>', '\n\t<tradeNum>')
        values = jdpay.decrypt_envelope(
            public_key, jdpay.des_key(JD_DES_KEY),
            jdpay.to_xml({
                    'version': 'V2.0', 'merchant': '22294531',
                    'encrypt': jdpay.des_encrypt(
                        jdpay.des_key(JD_DES_KEY),
                        spread.replace('</jdpay>', (
                                f'<sign>{signature}</sign></jdpay>'))),
                    }))
        self.assertEqual(values['tradeNum'], '1494236491939_r')
        self.assertEqual(values['status'], '1')

    def test_own_signature(self):
        "Test a signature of our key verifies with ours only"
        key, other = new_key(), new_key()
        text = jdpay.to_xml({'tradeNum': 'S01-1P2', 'amount': '15160'})
        signature = jdpay.sign(key, text)
        self.assertTrue(jdpay.verify(key.public_key(), text, signature))
        self.assertFalse(jdpay.verify(other.public_key(), text, signature))
        self.assertFalse(jdpay.verify(
                key.public_key(), text.replace('15160', '15161'),
                signature))
        # JD hands keys out as bare base64 as well as PEM
        bare = ''.join(
            line for line in private_pem(key).splitlines()
            if not line.startswith('-----'))
        self.assertEqual(jdpay.sign(jdpay.load_private(bare), text), signature)
        bare_public = ''.join(
            line for line in public_pem(key).splitlines()
            if not line.startswith('-----'))
        self.assertTrue(jdpay.verify(
                jdpay.load_public(bare_public), text, signature))

    def test_request_envelope(self):
        """Test a request is the merchant's signed XML, encrypted inside an
        envelope naming the merchant; values are escaped"""
        key = new_key()
        des = jdpay.des_key(base64.b64encode(bytes(range(24))).decode())
        body = jdpay.encrypt_request(
            key, des, '110000000001',
            {'tradeNum': 'S01P1', 'tradeName': 'A & B <92#>', 'note': None})
        outer = jdpay.values_of(jdpay.parse_xml(body))
        self.assertEqual(
            set(outer), {'version', 'merchant', 'encrypt'})
        self.assertEqual(outer['merchant'], '110000000001')
        text = jdpay.des_decrypt(des, outer['encrypt'])
        self.assertTrue(text.startswith(jdpay.XML_HEAD + '<jdpay>'))
        unsigned, signature = jdpay.signed_text(text)
        self.assertTrue(jdpay.verify(key.public_key(), unsigned, signature))
        values = jdpay.values_of(jdpay.parse_xml(text))
        self.assertEqual(values['tradeName'], 'A & B <92#>')
        self.assertNotIn('note', values)

    def test_parse_refuses(self):
        "Test what is not a plain jdpay XML is refused"
        for bad in ['<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "b">]>'
                '<jdpay>&a;</jdpay>', 'not xml', '<other/>']:
            with self.assertRaises(ValueError):
                jdpay.parse_xml(bad)

    def test_code_routing(self):
        """Test JD's own codes go to JD, its UnionPay codes stay on the
        UnionPay route"""
        self.assertEqual(code_channel(JD_CODE), 'jd')
        self.assertEqual(code_channel('6212345678901234567'), 'unionpay')
        self.assertEqual(code_channel('134567890123456789'), 'wechat')
        self.assertIsNone(code_channel('18123456789012345'))
        self.assertIsNone(code_channel('1812345678901234567'))


class JdPayTestCase(
        SimulatorsMixin, OperatorOnceMixin, PaymentDatabaseTestCase):
    "Test JD Pay payments against its simulator"

    simulators = {
        'simulator': JdPaySimulator,
        }

    @classmethod
    def build_operator(cls):
        company = create_company()
        with set_company(company):
            setup = create_payment_setup(company)
            gateway = create_gateway(
                company, cls.simulator, setup['methods']['jd'])
        return company, setup, gateway

    def prepare(self, quantity='20'):
        self.simulator.trades.clear()
        self.simulator.requests.clear()
        self.simulator.paying_queries = None
        self.simulator.down = False
        self.simulator.hang.clear()
        company, setup, gateway = self.operator()
        with set_company(company):
            order = create_order(setup, quantity)
        return company, setup, gateway, order

    def pay_code(self, order, code=JD_CODE, **kwargs):
        return pay_code(order, code, **kwargs)

    def requests(self, path):
        return [v for p, v in self.simulator.requests if p == path]

    @with_transaction()
    def test_code_paid_at_once(self):
        "Test a JD payment code paid at once settles the order"
        company, setup, gateway, order = self.prepare()
        with set_company(company):
            payment = self.pay_code(order)
        self.assertEqual(payment.state, 'succeeded')
        self.assertEqual(payment.code, '1812' + '*' * 14)
        request, = self.requests(jdpay.FKMPAY)
        self.assertEqual(request['token'], JD_CODE)
        self.assertEqual(request['amount'], '15160')
        self.assertEqual(request['tradeNum'], payment.number)
        self.assertEqual(request['device'], 'S01')
        self.assertEqual(request['notifyUrl'], gateway.notify_url)
        self.assertEqual(payment.reference, payment.number)
        self.assertEqual(payment.order.state, 'paid')
        order_payment, = payment.order.payments
        self.assertEqual(order_payment.method, setup['methods']['jd'])
        self.assertEqual(order_payment.reference, payment.number)
        self.assertIsNotNone(payment.paid_date)

    @with_transaction()
    def test_user_paying_then_success(self):
        "Test status 1 (processing) is queried until the customer confirms"
        pool = Pool()
        Payment = pool.get('fuel.payment.gateway.payment')
        company, _setup, _gateway, order = self.prepare()
        self.simulator.paying_queries = 2
        with set_company(company):
            payment = self.pay_code(order)
            self.assertEqual(payment.state, 'pending')
            self.assertEqual(payment.order.state, 'draft')
            Payment.poll([payment])
            self.assertEqual(Payment(payment.id).state, 'pending')
            Payment.poll([payment])
        payment = Payment(payment.id)
        self.assertEqual(payment.state, 'succeeded')
        self.assertEqual(payment.order.state, 'paid')
        self.assertEqual(self.simulator.trades[payment.number].queries, 2)
        self.assertEqual(
            {r['tradeType'] for r in self.requests(jdpay.QUERY)}, {'0'})

    @with_transaction()
    def test_timeout_revokes(self):
        "Test a code never confirmed is revoked at the deadline"
        pool = Pool()
        Payment = pool.get('fuel.payment.gateway.payment')
        company, _setup, _gateway, order = self.prepare()
        self.simulator.paying_queries = -1
        with set_company(company):
            payment = self.pay_code(order)
            Payment.poll([payment])
            self.assertEqual(Payment(payment.id).state, 'pending')
            Payment.write([payment], {
                    'deadline': dt.datetime.now() - dt.timedelta(seconds=1)})
            Payment.poll([payment])
        payment = Payment(payment.id)
        self.assertEqual(payment.state, 'cancelled')
        self.assertEqual(payment.error, message('msg_gateway_timeout'))
        self.assertEqual(
            self.simulator.trades[payment.number].status, REVOKED)
        revoke, = self.requests(jdpay.REVOKE)
        self.assertEqual(revoke['oTradeNum'], payment.number)
        self.assertEqual(revoke['amount'], '15160')
        self.assertEqual(payment.order.state, 'draft')
        self.assertEqual(payment.order.amount_paid, Decimal(0))

    @with_transaction()
    def test_answer_too_late_is_queried(self):
        """Test a code payment whose answer timed out is queried and
        settled: the code had reached JD"""
        pool = Pool()
        Payment = pool.get('fuel.payment.gateway.payment')
        company, _setup, _gateway, order = self.prepare()
        self.simulator.hang.add(jdpay.FKMPAY)
        with set_company(company), \
                mock.patch.object(jdpay, 'TIMEOUT', (5, 0.2)):
            payment = self.pay_code(order)
            self.assertEqual(payment.state, 'pending')
            self.assertEqual(payment.error, 'ReadTimeout')
            Payment.poll([payment])
        payment = Payment(payment.id)
        self.assertEqual(payment.state, 'succeeded')
        self.assertEqual(payment.order.state, 'paid')
        self.assertEqual(len(self.requests(jdpay.FKMPAY)), 1)

    @with_transaction()
    def test_never_received_is_cancelled(self):
        """Test a payment JD never received is cancelled at the deadline;
        a request signed with another key is refused"""
        pool = Pool()
        Payment = pool.get('fuel.payment.gateway.payment')
        Gateway = pool.get('fuel.payment.gateway')
        company, setup, gateway, order = self.prepare()
        self.simulator.down = True
        with set_company(company):
            payment = self.pay_code(order)
            self.assertEqual(payment.state, 'pending')
            self.assertEqual(payment.error, 'HTTP 500')
            self.simulator.down = False
            Payment.write([payment], {
                    'deadline': dt.datetime.now() - dt.timedelta(seconds=1)})
            Payment.poll([payment])
            self.assertEqual(Payment(payment.id).state, 'cancelled')
            self.assertEqual(self.simulator.trades, {})
            Gateway.write([gateway], {
                    'private_key': private_pem(new_key())})
            refused = self.pay_code(create_order(setup, '5'))
        self.assertEqual(refused.state, 'failed')
        self.assertIn('SIGN_ERROR', refused.error)
        self.assertNotIn(refused.number, self.simulator.trades)

    @with_transaction()
    def test_qr_notifications(self):
        """Test a QR is settled by its first valid notification; repeats
        are ignored, forged ones refused and logged without secrets"""
        pool = Pool()
        Payment = pool.get('fuel.payment.gateway.payment')
        Notification = pool.get('fuel.payment.gateway.notification')
        company, setup, gateway, order = self.prepare()
        with set_company(company):
            payment = Payment(Payment.create_qr(
                    order.id, setup['methods']['jd'].id))
            Payment.submit([payment])
        payment = Payment(payment.id)
        self.assertEqual(payment.state, 'pending')
        self.assertTrue(
            payment.code_url.startswith('https://h5pay.jd.com/code?c='))
        request, = self.requests(jdpay.UNIORDER)
        self.assertEqual(request['tradeType'], 'QR')
        self.assertEqual(request['orderType'], '0')
        self.assertEqual(request['expireTime'], '300')
        self.assertEqual(request['amount'], '15160')
        self.simulator.pay(payment.number)
        forged = self.simulator.notification(payment.number, forge=True)
        wrong_key = self.simulator.notification(
            payment.number, des_key=bytes(24))
        self.simulator.merchant = '110000000002'
        other_merchant = self.simulator.notification(payment.number)
        self.simulator.merchant = gateway.merchant
        valid = self.simulator.notification(payment.number)
        provider = gateway.get_provider()
        with self.assertLogs('addons.fuel_payment', logging.WARNING) as logs:
            for refused in [forged, wrong_key, other_merchant]:
                self.assertEqual(
                    Notification.receive(gateway, *refused), 'refused')
        self.assertEqual(Payment(payment.id).state, 'pending')
        output = '\n'.join(logs.output)
        self.assertIn('signature', output)
        self.assertIn('another merchant', output)
        for secret in [self.simulator.api_key, 'PRIVATE KEY',
                jdpay.values_of(jdpay.parse_xml(valid[1]))['encrypt'][:20],
                payment.number]:
            self.assertNotIn(secret, output)
        self.assertEqual(
            provider.answer('refused', forged[1]), (400, 'fail', 'text/plain'))
        self.assertEqual(Notification.receive(gateway, *valid), 'accepted')
        self.assertEqual(
            provider.answer('accepted', valid[1]),
            (200, 'success', 'text/plain'))
        payment = Payment(payment.id)
        self.assertEqual(payment.state, 'succeeded')
        self.assertEqual(payment.order.state, 'paid')
        self.assertEqual(Notification.receive(gateway, *valid), 'duplicate')
        self.assertEqual(
            provider.answer('duplicate', valid[1]),
            (200, 'success', 'text/plain'))
        self.assertEqual(len(payment.order.payments), 1)
        self.assertEqual(
            sorted(n.state for n in Notification.search([
                        ('gateway', '=', gateway.id)])),
            ['accepted', 'refused', 'refused', 'refused'])

    @with_transaction()
    def test_query_settles_without_notification(self):
        "Test the cron queries a paid QR whose notification never came"
        pool = Pool()
        Payment = pool.get('fuel.payment.gateway.payment')
        company, setup, _gateway, order = self.prepare()
        with set_company(company):
            payment = Payment(Payment.create_qr(
                    order.id, setup['methods']['jd'].id))
            Payment.submit([payment])
            Payment.write([Payment(payment.id)], {
                    'next_check': dt.datetime.now() - dt.timedelta(
                        seconds=1)})
            Payment.check_pending()
            self.assertEqual(Payment(payment.id).state, 'pending')
            self.simulator.pay(payment.number)
            Payment.write([Payment(payment.id)], {
                    'next_check': dt.datetime.now() - dt.timedelta(
                        seconds=1)})
            Payment.check_pending()
        payment = Payment(payment.id)
        self.assertEqual(payment.state, 'succeeded')
        self.assertEqual(payment.order.state, 'paid')

    @with_transaction()
    def test_qr_closed_at_deadline(self):
        "Test a QR never paid is revoked (JD has no close) at its deadline"
        pool = Pool()
        Payment = pool.get('fuel.payment.gateway.payment')
        company, setup, _gateway, order = self.prepare()
        with set_company(company):
            payment = Payment(Payment.create_qr(
                    order.id, setup['methods']['jd'].id))
            Payment.submit([payment])
            Payment.write([Payment(payment.id)], {
                    'deadline': dt.datetime.now() - dt.timedelta(seconds=1)})
            Payment.poll([Payment(payment.id)])
        self.assertEqual(Payment(payment.id).state, 'cancelled')
        self.assertEqual(
            self.simulator.trades[payment.number].status, REVOKED)

    @with_transaction()
    def test_partial_then_full_refund(self):
        """Test a partial refund, sent twice but made once, then the order
        refund gives back the rest; more than is left is refused"""
        pool = Pool()
        Payment = pool.get('fuel.payment.gateway.payment')
        Refund = pool.get('fuel.payment.gateway.refund')
        Order = pool.get('fuel.payment.order')
        company, _setup, _gateway, order = self.prepare()
        with set_company(company):
            payment = self.pay_code(order)
            partial, = Payment.refund([payment], Decimal('20.00'), "Under")
            Refund.submit([partial])
            self.assertEqual(Refund(partial.id).state, 'succeeded')
            # sent again before its answer was seen: answered, not repeated
            Refund.write([partial], {'state': 'pending'})
            Refund.submit([Refund(partial.id)])
            self.assertEqual(Refund(partial.id).state, 'succeeded')
            with self.assertRaises(GatewayError) as cm:
                Payment.refund([Payment(payment.id)], Decimal('131.61'))
            self.assertEqual(cm.exception.message, message(
                    'msg_gateway_refund_amount', payment=payment.number,
                    amount=Decimal('131.60')))
            Order.do_refund([payment.order], "Wrong nozzle")
            rest = [r for r in Payment(payment.id).refunds if r != partial]
            Refund.submit(rest)
        payment = Payment(payment.id)
        self.assertEqual(payment.amount_refunded, Decimal('151.60'))
        self.assertEqual({r.state for r in payment.refunds}, {'succeeded'})
        trade = self.simulator.trades[payment.number]
        self.assertEqual(sorted(trade.refunds.values()), [2000, 13160])
        self.assertEqual(
            trade.refunds[Refund(partial.id).number], 2000)
        self.assertEqual(Refund(partial.id).reference, partial.number)
        self.assertEqual(payment.order.state, 'refunded')

    @with_transaction()
    def test_set_keys_and_bill_key(self):
        """Test the Set Keys wizard wants JD's DES key and takes the bill
        key, which nobody reads through the ORM; without it the days are
        queried"""
        pool = Pool()
        SetKeys = pool.get('fuel.payment.gateway.set_keys', type='wizard')
        Gateway = pool.get('fuel.payment.gateway')
        company, _setup, gateway, _order = self.prepare()
        key = private_pem(new_key())
        with set_company(company):
            session_id, _, _ = SetKeys.create()
            with Transaction().set_context(
                    active_model=Gateway.__name__, active_id=gateway.id,
                    active_ids=[gateway.id]):
                set_keys = SetKeys(session_id)
                set_keys.start.private_key = key
                set_keys.start.api_key = base64.b64encode(
                    bytes(16)).decode()
                with self.assertRaises(GatewayError) as cm:
                    set_keys.transition_set_()
                self.assertEqual(cm.exception.message, message(
                        'msg_gateway_jdpay_des_key',
                        gateway=gateway.rec_name))
                self.assertIsNone(set_keys.start.private_key)
                self.assertIsNone(set_keys.start.api_key)
                set_keys.start.private_key = key
                set_keys.start.api_key = self.simulator.api_key
                self.assertEqual(set_keys.transition_set_(), 'end')
                self.assertIsNone(set_keys.start.api_key)
        gateway = Gateway(gateway.id)
        self.assertTrue(gateway.has_keys)
        self.assertFalse(gateway.has_bill_key)
        self.assertEqual(
            gateway.secrets(), (key, self.simulator.api_key))
        provider = gateway.get_provider()
        self.assertFalse(provider.bill)
        with self.assertRaises(PermanentError):
            provider.fetch_bill(dt.date.today())
        with self.assertRaises(BillFormatError):
            provider.parse_bill(b'')

        admin = create_user('jd_admin', company, 'role_operator_admin')
        with Transaction().set_user(admin.id), check_access():
            session_id, _, _ = SetKeys.create()
            with Transaction().set_context(
                    active_model=Gateway.__name__, active_id=gateway.id,
                    active_ids=[gateway.id]):
                set_keys = SetKeys(session_id)
                set_keys.start.private_key = key
                set_keys.start.api_key = self.simulator.api_key
                set_keys.start.bill_key = f' {self.simulator.bill_key}\t'
                self.assertEqual(set_keys.transition_set_(), 'end')
                self.assertIsNone(set_keys.start.bill_key)
            gateway = Gateway(gateway.id)
            self.assertTrue(gateway.has_bill_key)
            with self.assertRaises(AccessError):
                Gateway.read([gateway.id], ['bill_key'])
        self.assertEqual(gateway.bill_secret(), self.simulator.bill_key)
        provider = gateway.get_provider()
        self.assertTrue(provider.bill)
        rows = provider.parse_bill(provider.fetch_bill(dt.date.today()))
        self.assertEqual(rows, [])
        # a copy takes none of the keys
        copy, = Gateway.copy([gateway])
        self.assertIsNone(copy.bill_secret())

    @with_transaction()
    def test_day_reconciled_by_queries(self):
        """Test the day of a channel without a bill is reconciled by
        querying each payment: matched, paid at the channel but given up
        here (status), paid here but unknown to the channel (missing on
        its side), nothing for a payment without money on either side; a
        channel that cannot be asked leaves the day for the next run"""
        pool = Pool()
        Payment = pool.get('fuel.payment.gateway.payment')
        Reconciliation = pool.get('fuel.payment.reconciliation')
        company, setup, _gateway, order = self.prepare()
        with set_company(company):
            paid = self.pay_code(order)
            given_up = Payment(Payment.create_qr(
                    create_order(setup, '5').id, setup['methods']['jd'].id))
            Payment.submit([given_up])
            Payment.cancel([Payment(given_up.id)])
            self.simulator.pay(given_up.number)
            lost = self.pay_code(create_order(setup, '3'))
            del self.simulator.trades[lost.number]
            unpaid = Payment(Payment.create_qr(
                    create_order(setup, '2').id, setup['methods']['jd'].id))
            Payment.submit([unpaid])
            date = bill_today()

            self.simulator.down = True
            reconciliation, = Reconciliation.fetch_bills(date)
            reconciliation = Reconciliation(reconciliation.id)
            self.assertEqual(reconciliation.state, 'draft')
            self.assertEqual(reconciliation.source, 'query')
            before, after = message(
                'msg_reconciliation_query',
                reconciliation=reconciliation.rec_name,
                payment=paid.number, error='\0').split('\0')
            self.assertTrue(reconciliation.error.startswith(before))
            self.assertTrue(reconciliation.error.endswith(after))
            self.simulator.down = False

            reconciliation, = Reconciliation.fetch_bills(date)
            reconciliation = Reconciliation(reconciliation.id)
            self.assertEqual(reconciliation.state, 'matched')
            self.assertIsNone(reconciliation.error)
            self.assertIsNone(reconciliation.bill)
            kinds = {
                line.number: (line.kind, line.status, line.channel_status)
                for line in reconciliation.lines}
            self.assertEqual(kinds, {
                    paid.number: ('matched', 'succeeded', 'succeeded'),
                    given_up.number: ('status', 'cancelled', 'succeeded'),
                    lost.number: ('missing_channel', 'succeeded', None),
                    })
            line, = [
                line for line in reconciliation.lines
                if line.number == paid.number]
            self.assertEqual(line.channel_amount, Decimal('151.60'))
            self.assertEqual(reconciliation.fee, Decimal(0))
            self.assertEqual(reconciliation.discrepancies, 2)
            # Ask the Channel: the money taken is booked on its order
            line, = [
                line for line in reconciliation.lines
                if line.number == given_up.number]
            Line = pool.get('fuel.payment.reconciliation.line')
            Line.check([line])
            given_up = Payment(given_up.id)
            self.assertEqual(given_up.state, 'succeeded')
            self.assertEqual(given_up.order.state, 'paid')


class JdPayRouteTestCase(SimulatorsMixin, FuelDatabaseMixin, RouteTestCase):
    "Test the notification route answers JD Pay"

    simulators = {
        'simulator': JdPaySimulator,
        }

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        run_committed(cls.prepare)

    @classmethod
    def prepare(cls):
        pool = Pool()
        Payment = pool.get('fuel.payment.gateway.payment')
        cls.simulator.trades.clear()
        company = create_company()
        with set_company(company):
            setup = create_payment_setup(company)
            gateway = create_gateway(
                company, cls.simulator, setup['methods']['jd'])
            payment = Payment(Payment.create_qr(
                    create_order(setup).id, setup['methods']['jd'].id))
            Payment.submit([payment])
        cls.gateway_id = gateway.id
        cls.payment_id = payment.id
        cls.number = payment.number

    def test_notifications(self):
        "Test the route answers JD success once verified, 400 otherwise"
        url = f'/{DB_NAME}/fuel_payment/notify/{self.gateway_id}'
        self.simulator.pay(self.number)
        client = self.client()
        headers, forged = self.simulator.notification(
            self.number, forge=True)
        response = client.post(url, data=forged, headers=headers)
        self.assertEqual(response.status_code, 400)
        self.assertEqual(response.get_data(as_text=True), 'fail')
        headers, body = self.simulator.notification(self.number)
        for _ in range(2):
            response = client.post(url, data=body, headers=headers)
            self.assertEqual(response.status_code, 200)
            self.assertEqual(response.get_data(as_text=True), 'success')
        with Transaction().start(DB_NAME, 0):
            Payment = Pool().get('fuel.payment.gateway.payment')
            payment = Payment(self.payment_id)
            self.assertEqual(payment.state, 'succeeded')
            self.assertEqual(payment.order.state, 'paid')
            self.assertEqual(
                payment.order.payments[0].method.fuel_kind, 'jd')
