# This file is part of fuelpay.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""Payments of an operator charged by the platform: WeChat Pay partner mode
(服务商, the operator a sub-merchant) and Alipay's third-party application
mode (ISV, the operator's app_auth_token), against the simulators"""
import datetime as dt
import functools
import gzip
import logging
from decimal import Decimal

from trytond.exceptions import UserError
from trytond.model.exceptions import AccessError
from trytond.modules.company.tests import create_company, set_company
from trytond.pool import Pool
from trytond.tests.test_tryton import with_transaction
from trytond.transaction import Transaction, check_access

from addons.fuel_station.tests.test_module import create_user

from ..wechat import parse_trade_bill
from .sim_alipay import AlipaySimulator
from .sim_wechat import Order as SimOrder
from .sim_wechat import WeChatSimulator
from .test_gateway import (
    ALIPAY_CODE,
    WECHAT_CODE,
    OperatorOnceMixin,
    create_order,
)
from .test_module import message
from .test_reconciliation import bill_today
from .tools import (
    PaymentDatabaseTestCase,
    SimulatorsMixin,
    create_payment_setup,
    pay_code,
)

SUB_MCHID = '1900000201'
OTHER_SUB_MCHID = '1900000202'
SUB_APPID = 'wxsub000000001'
AUTH_TOKEN = '202512BBd3f8a0c1e5e94c2e9f0b7a1d6c3e5X01'
SELLER = '2088000000000201'
AUTH_APP = '2021000000000201'
# a second authorization of the same operator (it authorized again)
NEW_AUTH_TOKEN = '202512BBd3f8a0c1e5e94c2e9f0b7a1d6c3e5X02'


class WeChatPartnerTestCase(
        SimulatorsMixin, OperatorOnceMixin, PaymentDatabaseTestCase):
    "Test WeChat Pay partner mode (服务商): the operator a sub-merchant"

    simulators = {
        'simulator': functools.partial(
            WeChatSimulator, sub_mchids=[SUB_MCHID, OTHER_SUB_MCHID]),
        }

    @classmethod
    def build_operator(cls):
        pool = Pool()
        Gateway = pool.get('fuel.payment.gateway')
        Journal = pool.get('account.journal')
        Method = pool.get('sale.point.payment.method')
        company = create_company()
        with set_company(company):
            setup = create_payment_setup(company)
            journal, = Journal.search([('type', '=', 'general')], limit=1)
            gateway, = Gateway.create([dict(
                        cls.simulator.gateway_values(
                            sub_mchid=SUB_MCHID, sub_appid=SUB_APPID),
                        name="WeChat Pay (partner)", company=company.id,
                        fee_account=setup['accounts']['variance'].id,
                        journal=journal.id)])
            Method.write([setup['methods']['wechat']], {
                    'gateway': gateway.id})
        return company, setup, gateway

    def prepare(self, quantity='20'):
        self.simulator.orders.clear()
        self.simulator.requests.clear()
        self.simulator.paying_queries = None
        self.simulator.refuse = None
        self.simulator.down = False
        company, setup, gateway = self.operator()
        with set_company(company):
            order = create_order(setup, quantity)
        return company, setup, gateway, order

    def paths(self):
        return [path for _, path in self.simulator.requests]

    @with_transaction()
    def test_code_paid_and_refunded_for_the_sub_merchant(self):
        """Test a code paid through the platform's merchant for the
        operator's sub-merchant, then partly refunded"""
        pool = Pool()
        Payment = pool.get('fuel.payment.gateway.payment')
        Refund = pool.get('fuel.payment.gateway.refund')
        company, _setup, gateway, order = self.prepare()
        with set_company(company):
            payment = pay_code(order, WECHAT_CODE)
            self.assertEqual(payment.state, 'succeeded')
            self.assertEqual(payment.order.state, 'paid')
            sim_order = self.simulator.orders[payment.number]
            self.assertEqual(payment.reference, sim_order.transaction_id)
            self.assertEqual(
                {k: sim_order.data.get(k) for k in [
                        'sp_mchid', 'sp_appid', 'sub_mchid', 'sub_appid',
                        'mchid', 'appid']},
                {'sp_mchid': gateway.merchant, 'sp_appid': gateway.app,
                    'sub_mchid': SUB_MCHID, 'sub_appid': SUB_APPID,
                    'mchid': None, 'appid': None})
            self.assertEqual(
                self.paths(), ['/v3/pay/partner/transactions/codepay'])
            partial, = Payment.refund([payment], Decimal('50.00'))
            Refund.submit([partial])
        partial = Refund(partial.id)
        self.assertEqual(partial.state, 'succeeded')
        self.assertEqual(
            [r['refund'] for r in sim_order.refunds.values()], [5000])
        self.assertEqual(
            partial.reference,
            sim_order.refunds[partial.number]['refund_id'])

    @with_transaction()
    def test_user_paying_then_success(self):
        "Test USERPAYING queried with sp_mchid and sub_mchid until paid"
        pool = Pool()
        Payment = pool.get('fuel.payment.gateway.payment')
        company, _setup, gateway, order = self.prepare()
        self.simulator.paying_queries = 2
        with set_company(company):
            payment = pay_code(order, WECHAT_CODE)
            self.assertEqual(payment.state, 'pending')
            Payment.poll([payment])
            self.assertEqual(Payment(payment.id).state, 'pending')
            Payment.poll([payment])
        payment = Payment(payment.id)
        self.assertEqual(payment.state, 'succeeded')
        self.assertEqual(payment.order.state, 'paid')
        query = (
            f'/v3/pay/partner/transactions/out-trade-no/{payment.number}'
            f'?sp_mchid={gateway.merchant}&sub_mchid={SUB_MCHID}')
        self.assertEqual(self.paths()[1:], [query, query])

    @with_transaction()
    def test_timeout_reverses_on_the_partner_path(self):
        "Test a code never confirmed is reversed for the sub-merchant"
        pool = Pool()
        Payment = pool.get('fuel.payment.gateway.payment')
        company, _setup, _gateway, order = self.prepare()
        self.simulator.paying_queries = -1
        with set_company(company):
            payment = pay_code(order, WECHAT_CODE)
            Payment.write([payment], {
                    'deadline': dt.datetime.now() - dt.timedelta(seconds=1)})
            Payment.poll([payment])
        payment = Payment(payment.id)
        self.assertEqual(payment.state, 'cancelled')
        self.assertEqual(
            self.simulator.orders[payment.number].state, 'REVOKED')
        self.assertIn(
            '/v3/pay/partner/transactions/out-trade-no/'
            f'{payment.number}/reverse', self.paths())

    @with_transaction()
    def test_qr_and_partner_notifications(self):
        """Test a QR settled by the partner notification of the gateway's
        sub-merchant; one of another sub-merchant is refused as forged"""
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
        self.assertEqual(
            self.paths(), ['/v3/pay/partner/transactions/native'])
        sim_order = self.simulator.orders[payment.number]
        self.assertEqual(sim_order.data['sub_mchid'], SUB_MCHID)
        self.assertEqual(sim_order.data['notify_url'], gateway.notify_url)
        self.simulator.pay(payment.number)
        other = self.simulator.notification(
            payment.number, sub_mchid=OTHER_SUB_MCHID)
        valid = self.simulator.notification(payment.number)
        with self.assertLogs('addons.fuel_payment', logging.WARNING) as logs:
            self.assertEqual(
                Notification.receive(gateway, *other), 'refused')
        self.assertIn('another sub-merchant', '\n'.join(logs.output))
        self.assertNotIn(self.simulator.api_key, '\n'.join(logs.output))
        self.assertEqual(Payment(payment.id).state, 'pending')
        self.assertEqual(
            Notification.receive(gateway, *valid), 'accepted')
        payment = Payment(payment.id)
        self.assertEqual(payment.state, 'succeeded')
        self.assertEqual(payment.order.state, 'paid')
        self.assertEqual(
            Notification.receive(gateway, *valid), 'duplicate')
        self.assertEqual(
            sorted(n.state for n in Notification.search([
                        ('gateway', '=', gateway.id)])),
            ['accepted', 'refused'])

    @with_transaction()
    def test_unbound_sub_merchant_refused(self):
        """Test a sub-merchant not bound to the platform's merchant is
        refused by WeChat: the payment fails with its code"""
        pool = Pool()
        Gateway = pool.get('fuel.payment.gateway')
        company, _setup, gateway, order = self.prepare()
        Gateway.write([gateway], {'sub_merchant': '1900009999'})
        with set_company(company):
            payment = pay_code(order, WECHAT_CODE)
        self.assertEqual(payment.state, 'failed')
        self.assertIn('NO_AUTH', payment.error)
        self.assertEqual(self.simulator.orders, {})

    @with_transaction()
    def test_bill_of_the_sub_merchant(self):
        """Test the day's trade bill asked for the sub-merchant is matched;
        rows of another sub-merchant are left out"""
        pool = Pool()
        Payment = pool.get('fuel.payment.gateway.payment')
        Refund = pool.get('fuel.payment.gateway.refund')
        Reconciliation = pool.get('fuel.payment.reconciliation')
        company, _setup, gateway, order = self.prepare()
        today = bill_today()
        with set_company(company):
            paid = pay_code(order, WECHAT_CODE)
            partial, = Payment.refund([paid], Decimal('50.00'))
            Refund.submit([partial])
            stranger = SimOrder({
                    'out_trade_no': 'OTHER-SUB-1',
                    'sub_mchid': OTHER_SUB_MCHID,
                    'amount': {'total': 1000, 'currency': 'CNY'}}, 'qr')
            stranger.pay()
            self.simulator.orders[stranger.out_trade_no] = stranger
            reconciliation, = Reconciliation.create([{
                        'company': company.id, 'gateway': gateway.id,
                        'date': today}])
            Reconciliation.fetch([reconciliation])
        reconciliation = Reconciliation(reconciliation.id)
        self.assertEqual(reconciliation.state, 'matched')
        self.assertEqual(reconciliation.source, 'download')
        self.assertEqual(
            reconciliation.bill_name,
            f'wechat-{gateway.merchant}-{SUB_MCHID}-{today}.csv.gz')
        self.assertEqual(
            sorted((line.type, line.number, line.kind)
                for line in reconciliation.lines),
            [('payment', paid.number, 'matched'),
                ('refund', paid.number, 'matched')])
        self.assertIn(
            f'/v3/bill/tradebill?bill_date={today}&bill_type=ALL'
            f'&tar_type=GZIP&sub_mchid={SUB_MCHID}', self.paths())
        # the bill of every sub-merchant: only ours is read
        bill = gzip.compress(self.simulator.bill(today))
        self.assertEqual(
            sorted(r['number'] for r in parse_trade_bill(bill)),
            sorted([paid.number, paid.number, 'OTHER-SUB-1']))
        self.assertEqual(
            [r['number'] for r in parse_trade_bill(
                    bill, sub_merchant=SUB_MCHID)],
            [paid.number, paid.number])

    @with_transaction()
    def test_sub_merchant_checks(self):
        """Test a sub-merchant is refused on another channel and a
        sub-merchant app without the sub-merchant"""
        pool = Pool()
        Gateway = pool.get('fuel.payment.gateway')
        _company, _setup, gateway, _order = self.prepare()
        with self.assertRaises(UserError) as cm:
            Gateway.write([gateway], {'channel': 'alipay'})
        self.assertEqual(cm.exception.message, message(
                'msg_gateway_sub_merchant', gateway=gateway.rec_name))
        with self.assertRaises(UserError) as cm:
            Gateway.write([gateway], {'sub_merchant': None})
        self.assertEqual(cm.exception.message, message(
                'msg_gateway_sub_merchant', gateway=gateway.rec_name))
        Gateway.write([gateway], {'sub_merchant': None, 'sub_app': None})
        self.assertFalse(Gateway(gateway.id).partner)


class AlipayISVTestCase(
        SimulatorsMixin, OperatorOnceMixin, PaymentDatabaseTestCase):
    "Test Alipay's third-party application mode (ISV)"

    simulators = {
        'simulator': functools.partial(
            AlipaySimulator, auth_tokens={
                AUTH_TOKEN: (SELLER, AUTH_APP),
                NEW_AUTH_TOKEN: (SELLER, AUTH_APP)}),
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
                        cls.simulator.gateway_values(auth_token=AUTH_TOKEN),
                        name="Alipay (ISV)", company=company.id)])
            Method.write([setup['methods']['alipay']], {
                    'gateway': gateway.id})
        return company, setup, gateway

    def prepare(self):
        self.simulator.trades.clear()
        self.simulator.requests.clear()
        self.simulator.paying_queries = None
        self.simulator.refuse = None
        self.simulator.down = False
        company, setup, gateway = self.operator()
        with set_company(company):
            order = create_order(setup)
        return company, setup, gateway, order

    @with_transaction()
    def test_code_paid_with_the_token(self):
        """Test a bar code paid, queried and refunded for the operator
        whose token the calls carry"""
        pool = Pool()
        Payment = pool.get('fuel.payment.gateway.payment')
        Refund = pool.get('fuel.payment.gateway.refund')
        company, _setup, _gateway, order = self.prepare()
        self.simulator.paying_queries = 1
        with set_company(company):
            payment = pay_code(order, ALIPAY_CODE)
            self.assertEqual(payment.state, 'pending')
            Payment.poll([payment])
            payment = Payment(payment.id)
            self.assertEqual(payment.state, 'succeeded')
            trade = self.simulator.trades[payment.number]
            # made for the token's seller: the token was sent and signed
            self.assertEqual(trade.seller, (SELLER, AUTH_APP))
            self.assertEqual(payment.reference, trade.trade_no)
            self.assertEqual(payment.order.state, 'paid')
            partial, = Payment.refund([payment], Decimal('20.00'))
            Refund.submit([partial])
        self.assertEqual(Refund(partial.id).state, 'succeeded')
        self.assertEqual(
            trade.refunds, {Refund(partial.id).number: Decimal('20.00')})
        self.assertEqual(self.simulator.requests, [
                'alipay.trade.pay', 'alipay.trade.query',
                'alipay.trade.refund'])

    @with_transaction()
    def test_qr_and_notification(self):
        """Test a precreated QR settled by the notification of the
        operator's trade; one naming another seller is refused; neither
        the token nor the keys reach a log"""
        pool = Pool()
        Payment = pool.get('fuel.payment.gateway.payment')
        Notification = pool.get('fuel.payment.gateway.notification')
        company, setup, gateway, order = self.prepare()
        with self.assertLogs(level=logging.DEBUG) as logs:
            with set_company(company):
                payment = Payment(Payment.create_qr(
                        order.id, setup['methods']['alipay'].id))
                Payment.submit([payment])
            payment = Payment(payment.id)
            self.assertTrue(
                payment.code_url.startswith('https://qr.alipay.com/'))
            self.simulator.pay(payment.number)
            other = self.simulator.notification(
                payment.number, seller_id='2088000000009999')
            self.assertEqual(
                Notification.receive(gateway, *other), 'refused')
            valid = self.simulator.notification(payment.number)
            self.assertIn(f'auth_app_id={AUTH_APP}', valid[1])
            self.assertEqual(
                Notification.receive(gateway, *valid), 'accepted')
            self.assertEqual(
                Notification.receive(gateway, *valid), 'duplicate')
        output = '\n'.join(logs.output)
        self.assertIn('another seller', output)
        for secret in [AUTH_TOKEN, 'PRIVATE KEY']:
            self.assertNotIn(secret, output)
        payment = Payment(payment.id)
        self.assertEqual(payment.state, 'succeeded')
        self.assertEqual(payment.order.state, 'paid')

    @with_transaction()
    def test_wrong_token_refused(self):
        """Test a token Alipay does not know (or none, to an ISV-only
        application) fails the payment with a clear error"""
        pool = Pool()
        Gateway = pool.get('fuel.payment.gateway')
        company, setup, gateway, _order = self.prepare()
        for token in ['202512BBwithdrawn0000000000000000000X01', None]:
            Gateway.write([gateway], {'app_auth_token': token})
            with set_company(company):
                payment = pay_code(create_order(setup, '5'), ALIPAY_CODE)
            self.assertEqual(payment.state, 'failed')
            self.assertEqual(payment.error, message(
                    'msg_gateway_alipay_auth_token',
                    gateway=gateway.rec_name,
                    code='aop.invalid-app-auth-token'))
        self.assertEqual(self.simulator.trades, {})

    @with_transaction()
    def test_token_is_secret(self):
        """Test administrators set the token with Set Keys but nobody
        reads it; a copy has none"""
        pool = Pool()
        Gateway = pool.get('fuel.payment.gateway')
        SetKeys = pool.get('fuel.payment.gateway.set_keys', type='wizard')
        company, setup, gateway, _order = self.prepare()
        private_key, _ = gateway.secrets()
        admin = create_user('isv_admin', company, 'role_operator_admin')
        attendant = create_user(
            'isv_attendant', company, 'role_attendant', [setup['station']])
        with Transaction().set_user(admin.id), check_access():
            gateway = Gateway(gateway.id)
            self.assertTrue(gateway.has_app_auth_token)
            self.assertTrue(gateway.has_keys)
            with self.assertRaises(AccessError):
                Gateway.read([gateway.id], ['app_auth_token'])
            session_id, _, _ = SetKeys.create()
            with Transaction().set_context(
                    active_model=Gateway.__name__, active_id=gateway.id,
                    active_ids=[gateway.id]):
                set_keys = SetKeys(session_id)
                self.assertEqual(
                    set_keys.default_start(None), {'channel': 'alipay'})
                set_keys.start.private_key = private_key
                set_keys.start.api_key = None
                # Alipay is asked first: a token it does not know is
                # refused, the old one kept
                set_keys.start.app_auth_token = 'unknown-token'
                with self.assertRaises(UserError) as cm:
                    set_keys.transition_set_()
                self.assertTrue(cm.exception.message.startswith(message(
                            'msg_gateway_alipay_token_refused',
                            gateway=gateway.rec_name, error='').rstrip()))
                self.assertEqual(Gateway(gateway.id).auth_token(), AUTH_TOKEN)
                set_keys.start.private_key = private_key
                set_keys.start.app_auth_token = NEW_AUTH_TOKEN
                self.assertEqual(set_keys.transition_set_(), 'end')
                self.assertIsNone(set_keys.start.app_auth_token)
                self.assertIsNone(set_keys.start.private_key)
        self.assertEqual(Gateway(gateway.id).auth_token(), NEW_AUTH_TOKEN)
        self.assertEqual(Gateway(gateway.id).auth_app, AUTH_APP)
        with Transaction().set_user(attendant.id), check_access():
            with self.assertRaises(AccessError):
                Gateway.read([gateway.id], ['app_auth_token'])
            with self.assertRaises(AccessError):
                Gateway.write([Gateway(gateway.id)], {'app_auth_token': 'x'})
        copy, = Gateway.copy([gateway])
        self.assertIsNone(copy.auth_token())
        self.assertFalse(copy.has_app_auth_token)
        # written over RPC as the keys are, and not read back
        with Transaction().set_user(admin.id), check_access():
            Gateway.write([Gateway(gateway.id)], {
                    'app_auth_token': AUTH_TOKEN})
            with self.assertRaises(AccessError):
                Gateway.search_read(
                    [('id', '=', gateway.id)],
                    fields_names=['app_auth_token'])
        self.assertEqual(Gateway(gateway.id).auth_token(), AUTH_TOKEN)
