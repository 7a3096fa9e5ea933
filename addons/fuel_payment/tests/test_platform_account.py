# This file is part of fuelpay.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""Operators' gateways charging through one platform account: the
platform's WeChat Pay service provider merchant (partner mode, the
operators its sub-merchants) and its Alipay third-party application (ISV
mode, each operator's authorization checked at Set Keys), with the
credentials kept once, on the platform's shared gateway"""
import datetime as dt
import functools
import logging
from decimal import Decimal

from trytond.exceptions import UserError
from trytond.model.exceptions import AccessError
from trytond.modules.company.tests import create_company, set_company
from trytond.pool import Pool
from trytond.tests.test_tryton import with_transaction
from trytond.transaction import Transaction, check_access

from addons.fuel_station.tests.test_module import create_user

from .sim_alipay import AlipaySimulator
from .sim_wechat import WeChatSimulator, new_key, private_pem
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

SUB_A = '1900000301'
SUB_B = '1900000302'
TOKEN_A = '202601BBa0000000000000000000000000000A01'
TOKEN_B = '202601BBb0000000000000000000000000000B01'
SELLER_A = '2088000000000301'
SELLER_B = '2088000000000302'
APP_A = '2021000000000301'
APP_B = '2021000000000302'


def own_secrets(gateway):
    "The keys stored on gateway's own row (read by SQL as providers do)"
    table = gateway.__table__()
    cursor = Transaction().connection.cursor()
    cursor.execute(*table.select(
            table.private_key, table.api_key, table.app_auth_token,
            where=table.id == gateway.id))
    return cursor.fetchone()


def operator_gateway(company, setup, kind, platform, **values):
    "Create company's gateway on the platform account taking kind"
    pool = Pool()
    Gateway = pool.get('fuel.payment.gateway')
    Journal = pool.get('account.journal')
    Method = pool.get('sale.point.payment.method')
    journal, = Journal.search([('type', '=', 'general')], limit=1)
    gateway, = Gateway.create([dict(
                values, company=company.id, channel=platform.channel,
                platform_account=platform.id,
                notify_url=(
                    'https://fuel.example.com/db/fuel_payment/notify/'
                    f'{company.id}'),
                fee_account=setup['accounts']['variance'].id,
                journal=journal.id)])
    Method.write([setup['methods'][kind]], {'gateway': gateway.id})
    return gateway


def run_set_keys(gateway, **values):
    """Run Set Keys on gateway with values in its form; return what its
    start state showed"""
    pool = Pool()
    Gateway = pool.get('fuel.payment.gateway')
    SetKeys = pool.get('fuel.payment.gateway.set_keys', type='wizard')
    session_id, _, _ = SetKeys.create()
    with Transaction().set_context(
            active_model=Gateway.__name__, active_id=gateway.id,
            active_ids=[gateway.id]):
        set_keys = SetKeys(session_id)
        shown = set_keys.default_start(None)
        for name in ['private_key', 'api_key', 'app_auth_token']:
            setattr(set_keys.start, name, values.get(name))
        set_keys.transition_set_()
        # the session keeps nothing of what was pasted
        for name in ['private_key', 'api_key', 'app_auth_token']:
            assert getattr(set_keys.start, name) is None
    return shown


class WeChatPlatformTestCase(
        SimulatorsMixin, OperatorOnceMixin, PaymentDatabaseTestCase):
    "Test two operators' WeChat Pay gateways on one platform account"

    simulators = {
        'simulator': functools.partial(
            WeChatSimulator, sub_mchids=[SUB_A, SUB_B]),
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
        result = {'platform': platform, 'platform_company': platform_company}
        for key, sub, code in [('a', SUB_A, 'A1'), ('b', SUB_B, 'B1')]:
            company = create_company(name=f"Operator {key.upper()}")
            with set_company(company):
                setup = create_payment_setup(company, code)
                gateway = operator_gateway(
                    company, setup, 'wechat', platform,
                    name=f"WeChat Pay {key.upper()}", sub_merchant=sub)
            result[key] = {
                'company': company, 'setup': setup, 'gateway': gateway}
        return result

    def prepare(self):
        self.simulator.orders.clear()
        self.simulator.requests.clear()
        self.simulator.paying_queries = None
        self.simulator.refuse = None
        self.simulator.down = False
        return self.operator()

    @with_transaction()
    def test_two_operators_pay_and_refund(self):
        """Test both operators charge and refund through the platform's
        merchant account, each as its own sub-merchant, with the keys set
        once on the platform account"""
        pool = Pool()
        Payment = pool.get('fuel.payment.gateway.payment')
        Refund = pool.get('fuel.payment.gateway.refund')
        ops = self.prepare()
        platform = ops['platform']
        payments = {}
        for key, sub in [('a', SUB_A), ('b', SUB_B)]:
            op = ops[key]
            gateway = op['gateway']
            # no key of its own, the platform's are used
            self.assertEqual(own_secrets(gateway), (None, None, None))
            self.assertTrue(gateway.has_keys)
            self.assertIsNone(gateway.merchant)
            with set_company(op['company']):
                payment = pay_code(create_order(op['setup']), WECHAT_CODE)
            self.assertEqual(payment.state, 'succeeded')
            self.assertEqual(payment.order.state, 'paid')
            data = self.simulator.orders[payment.number].data
            self.assertEqual(
                (data['sp_mchid'], data['sp_appid'], data['sub_mchid']),
                (platform.merchant, platform.app, sub))
            payments[key] = payment
        with set_company(ops['a']['company']):
            partial, = Payment.refund([payments['a']], Decimal('30.00'))
            Refund.submit([partial])
        partial = Refund(partial.id)
        self.assertEqual(partial.state, 'succeeded')
        order = self.simulator.orders[payments['a'].number]
        self.assertEqual(
            [r['refund'] for r in order.refunds.values()], [3000])
        self.assertEqual(
            self.simulator.orders[payments['b'].number].refunds, {})
        self.assertEqual(
            [path for _, path in self.simulator.requests], [
                '/v3/pay/partner/transactions/codepay',
                '/v3/pay/partner/transactions/codepay',
                '/v3/refund/domestic/refunds'])

    @with_transaction()
    def test_keys_rotated_once(self):
        """Test a key rotation on the platform account reaches every
        operator's gateway: the old key is refused, the new one charges"""
        pool = Pool()
        Gateway = pool.get('fuel.payment.gateway')
        ops = self.prepare()
        platform = ops['platform']
        old_key = self.simulator.merchant_key
        # the platform renews its API key at WeChat Pay
        self.simulator.merchant_key = new_key()
        try:
            with set_company(ops['a']['company']):
                payment = pay_code(
                    create_order(ops['a']['setup']), WECHAT_CODE)
            self.assertEqual(payment.state, 'failed')
            self.assertIn('SIGN_ERROR', payment.error)
            Gateway.write([platform], {'private_key': None})
            self.assertFalse(Gateway(ops['b']['gateway'].id).has_keys)
            run_set_keys(
                platform,
                private_key=private_pem(self.simulator.merchant_key),
                api_key=self.simulator.api_key)
            for key in ['a', 'b']:
                self.assertTrue(Gateway(ops[key]['gateway'].id).has_keys)
                with set_company(ops[key]['company']):
                    payment = pay_code(
                        create_order(ops[key]['setup']), WECHAT_CODE)
                self.assertEqual(payment.state, 'succeeded')
        finally:
            self.simulator.merchant_key = old_key

    @with_transaction()
    def test_notifications_verified_with_platform_keys(self):
        """Test a QR settled by the notification posted to the operator's
        gateway, verified with the platform's keys; one of the other
        operator's sub-merchant or signed with another key is refused"""
        pool = Pool()
        Payment = pool.get('fuel.payment.gateway.payment')
        Notification = pool.get('fuel.payment.gateway.notification')
        ops = self.prepare()
        gateway = ops['a']['gateway']
        numbers = {}
        for key in ['a', 'b']:
            op = ops[key]
            with set_company(op['company']):
                payment = Payment(Payment.create_qr(
                        create_order(op['setup']).id,
                        op['setup']['methods']['wechat'].id))
                Payment.submit([payment])
            self.simulator.pay(payment.number)
            numbers[key] = payment.number
        payment = Payment.search([('number', '=', numbers['a'])])[0]
        other = self.simulator.notification(numbers['b'])
        forged = self.simulator.notification(numbers['a'], forge=True)
        valid = self.simulator.notification(numbers['a'])
        with self.assertLogs('addons.fuel_payment', logging.WARNING) as logs:
            self.assertEqual(
                Notification.receive(gateway, *other), 'refused')
            self.assertEqual(
                Notification.receive(gateway, *forged), 'refused')
        output = '\n'.join(logs.output)
        self.assertIn('another sub-merchant', output)
        self.assertNotIn(self.simulator.api_key, output)
        self.assertEqual(Payment(payment.id).state, 'pending')
        self.assertEqual(
            Notification.receive(gateway, *valid), 'accepted')
        self.assertEqual(Payment(payment.id).state, 'succeeded')
        self.assertEqual(
            Notification.receive(gateway, *valid), 'duplicate')

    @with_transaction()
    def test_bill_of_each_operator(self):
        """Test each operator's daily bill is asked for its sub-merchant
        with the platform's keys and holds its own payments only"""
        pool = Pool()
        Reconciliation = pool.get('fuel.payment.reconciliation')
        ops = self.prepare()
        today = bill_today()
        paid = {}
        for key in ['a', 'b']:
            with set_company(ops[key]['company']):
                paid[key] = pay_code(
                    create_order(ops[key]['setup']), WECHAT_CODE)
        op = ops['a']
        with set_company(op['company']):
            reconciliation, = Reconciliation.create([{
                        'company': op['company'].id,
                        'gateway': op['gateway'].id, 'date': today}])
            Reconciliation.fetch([reconciliation])
        reconciliation = Reconciliation(reconciliation.id)
        self.assertEqual(reconciliation.state, 'matched')
        self.assertEqual(
            reconciliation.bill_name,
            f"wechat-{ops['platform'].merchant}-{SUB_A}-{today}.csv.gz")
        self.assertEqual(
            [(line.number, line.kind) for line in reconciliation.lines],
            [(paid['a'].number, 'matched')])

    @with_transaction()
    def test_operator_cannot_read_platform_account(self):
        """Test an operator's administrator sees the platform account's
        name on its gateway but cannot read the account, choose it or
        change the sub-merchant; platform administrators can"""
        pool = Pool()
        Gateway = pool.get('fuel.payment.gateway')
        User = pool.get('res.user')
        ops = self.prepare()
        platform = ops['platform']
        gateway = ops['a']['gateway']
        admin = create_user(
            'platform_op_admin', ops['a']['company'], 'role_operator_admin')
        # even in the operator's company, the shared account stays hidden
        Gateway.write([platform], {'company': ops['a']['company'].id})
        with Transaction().set_user(admin.id), check_access():
            self.assertEqual(
                Gateway.search([]), [Gateway(gateway.id)])
            with self.assertRaises(AccessError):
                Gateway.read([platform.id], ['name'])
            with self.assertRaises(AccessError):
                Gateway.write([Gateway(platform.id)], {'url': 'x'})
            values, = Gateway.read(
                [gateway.id], ['platform_account_name', 'has_keys'])
            self.assertEqual(values['platform_account_name'], platform.name)
            self.assertTrue(values['has_keys'])
            with self.assertRaises(AccessError):
                Gateway.read([gateway.id], ['platform_account'])
            with self.assertRaises(AccessError):
                Gateway.write([Gateway(gateway.id)], {
                        'platform_account': None})
            with self.assertRaises(AccessError):
                Gateway.write([Gateway(gateway.id)], {'shared': True})
            with self.assertRaises(AccessError) as cm:
                Gateway.write([Gateway(gateway.id)], {
                        'sub_merchant': SUB_B})
            self.assertEqual(cm.exception.message, message(
                    'msg_gateway_platform_write', gateway=gateway.rec_name,
                    platform=platform.rec_name))
            # its own settings stay its own
            Gateway.write([Gateway(gateway.id)], {'qr_timeout': 120})
            with self.assertRaises(UserError) as cm:
                run_set_keys(Gateway(gateway.id), private_key='x')
            self.assertEqual(cm.exception.message, message(
                    'msg_gateway_platform_keys', gateway=gateway.rec_name,
                    platform=platform.rec_name))
        self.assertEqual(Gateway(gateway.id).sub_merchant, SUB_A)
        # platform administrators are given every operator
        # (fuel_station's add_to_platform_administrators)
        platform_admin = create_user(
            'platform_admin_1', ops['platform_company'],
            'role_platform_admin')
        User.write([platform_admin], {
                'companies': [('add', [ops['a']['company'].id])],
                'company_filter': 'all'})
        with Transaction().set_user(platform_admin.id), check_access():
            values, = Gateway.read(
                [platform.id], ['name', 'merchant', 'shared'])
            self.assertEqual(values['merchant'], platform.merchant)
            with self.assertRaises(AccessError):
                Gateway.read([platform.id], ['private_key'])
            Gateway.write([Gateway(gateway.id)], {'sub_merchant': SUB_B})
        self.assertEqual(Gateway(gateway.id).sub_merchant, SUB_B)

    @with_transaction()
    def test_platform_account_checks(self):
        """Test a platform account of another channel, one naming a
        platform account itself, a WeChat gateway without sub-merchant,
        an account unshared while used and a missing merchant ID are
        refused"""
        pool = Pool()
        Gateway = pool.get('fuel.payment.gateway')
        ops = self.prepare()
        platform = ops['platform']
        gateway = ops['a']['gateway']
        alipay, = Gateway.create([{
                    'name': "Platform Alipay", 'channel': 'alipay',
                    'company': ops['platform_company'].id,
                    'merchant': '2088000000000001',
                    'app': '2021000000000001', 'shared': True}])

        def refused(record, values, restore, msg_id, **names):
            # a refused write is not undone within the test's transaction:
            # restore is written (and checked) after it
            with self.assertRaises(UserError) as cm:
                Gateway.write([record], values)
            self.assertEqual(cm.exception.message, message(msg_id, **names))
            Gateway.write([record], restore)

        refused(
            gateway, {'platform_account': alipay.id},
            {'platform_account': platform.id},
            'msg_gateway_platform_channel', gateway=gateway.rec_name,
            platform=alipay.rec_name)
        refused(
            platform, {'platform_account': platform.id},
            {'platform_account': None},
            'msg_gateway_platform_nested', gateway=platform.rec_name,
            platform=platform.rec_name)
        refused(
            gateway, {'sub_merchant': None}, {'sub_merchant': SUB_A},
            'msg_gateway_platform_sub_merchant', gateway=gateway.rec_name,
            platform=platform.rec_name)
        refused(
            platform, {'shared': False}, {'shared': True},
            'msg_gateway_platform_channel', gateway=gateway.rec_name,
            platform=platform.rec_name)
        refused(
            gateway, {'platform_account': None},
            {'platform_account': platform.id},
            'msg_gateway_merchant', gateway=gateway.rec_name)
        # and a gateway of another channel cannot be shared
        jd, = Gateway.create([{
                    'name': "JD Pay", 'channel': 'jdpay',
                    'company': ops['platform_company'].id,
                    'merchant': '110000001'}])
        refused(
            jd, {'shared': True}, {'shared': False},
            'msg_gateway_platform_channel', gateway=jd.rec_name,
            platform=jd.rec_name)


class AlipayPlatformTestCase(
        SimulatorsMixin, OperatorOnceMixin, PaymentDatabaseTestCase):
    "Test operators' Alipay ISV gateways on the platform's application"

    simulators = {
        'simulator': functools.partial(
            AlipaySimulator, auth_tokens={
                TOKEN_A: (SELLER_A, APP_A),
                TOKEN_B: (SELLER_B, APP_B),
                }),
        }

    @classmethod
    def build_operator(cls):
        pool = Pool()
        Gateway = pool.get('fuel.payment.gateway')
        platform_company = create_company(name="Fuel Platform")
        platform, = Gateway.create([dict(
                    cls.simulator.gateway_values(),
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

    def prepare(self):
        self.simulator.trades.clear()
        self.simulator.requests.clear()
        self.simulator.calls.clear()
        self.simulator.withdrawn_tokens.clear()
        self.simulator.paying_queries = None
        self.simulator.refuse = None
        self.simulator.down = False
        op = self.operator()
        op['admin'] = create_user(
            'isv_op_admin', op['company'], 'role_operator_admin')
        return op

    def set_token(self, op, token):
        "Set the operator's token with Set Keys as its administrator"
        Gateway = Pool().get('fuel.payment.gateway')
        with Transaction().set_user(op['admin'].id), check_access():
            return run_set_keys(
                Gateway(op['gateway'].id), app_auth_token=token)

    def assert_refused(self, op, token, error):
        pool = Pool()
        Gateway = pool.get('fuel.payment.gateway')
        with self.assertRaises(UserError) as cm:
            self.set_token(op, token)
        self.assertEqual(cm.exception.message, error)
        gateway = Gateway(op['gateway'].id)
        self.assertIsNone(gateway.auth_token())
        self.assertIsNone(gateway.auth_app)
        self.assertFalse(gateway.has_app_auth_token)

    @with_transaction()
    def test_valid_token_stored_with_its_application(self):
        """Test Set Keys asks Alipay about the operator's token with the
        platform's application, stores it with the operator's application
        and expiry; payments then carry it"""
        pool = Pool()
        Gateway = pool.get('fuel.payment.gateway')
        op = self.prepare()
        shown = self.set_token(op, TOKEN_A)
        self.assertEqual(shown, {'channel': 'alipay', 'platform': True})
        query, = self.simulator.calls
        self.assertEqual(
            (query['method'], query['app_id']),
            ('alipay.open.auth.token.app.query', op['platform'].app))
        self.assertNotIn('app_auth_token', query)
        gateway = Gateway(op['gateway'].id)
        self.assertEqual(gateway.auth_token(), TOKEN_A)
        self.assertEqual(own_secrets(gateway)[:2], (None, None))
        self.assertEqual(gateway.auth_app, APP_A)
        self.assertTrue(gateway.has_app_auth_token)
        self.assertTrue(gateway.has_keys)
        expected = dt.datetime.now() + dt.timedelta(days=365)
        self.assertLess(
            abs(gateway.auth_expiry - expected), dt.timedelta(hours=1))
        with set_company(op['company']):
            payment = pay_code(create_order(op['setup']), ALIPAY_CODE)
        self.assertEqual(payment.state, 'succeeded')
        trade = self.simulator.trades[payment.number]
        self.assertEqual(trade.seller, (SELLER_A, APP_A))
        self.assertEqual(self.simulator.calls[-1]['app_auth_token'], TOKEN_A)

    @with_transaction()
    def test_unknown_or_withdrawn_token_refused(self):
        "Test a token Alipay does not know or says invalid is not stored"
        op = self.prepare()
        gateway = op['gateway']
        self.assert_refused(
            op, '202601BBunknown00000000000000000000000X01', message(
                'msg_gateway_alipay_token_refused', gateway=gateway.rec_name,
                error=message(
                    'msg_gateway_alipay_auth_token',
                    gateway=gateway.rec_name,
                    code='aop.invalid-app-auth-token')))
        self.simulator.withdrawn_tokens.add(TOKEN_A)
        self.assert_refused(op, TOKEN_A, message(
                'msg_gateway_alipay_token_refused', gateway=gateway.rec_name,
                error=message(
                    'msg_gateway_alipay_auth_token',
                    gateway=gateway.rec_name, code='status invalid')))

    @with_transaction()
    def test_token_of_another_merchant_refused(self):
        "Test the token another operator (PID) gave is not stored"
        op = self.prepare()
        self.assert_refused(op, TOKEN_B, message(
                'msg_gateway_alipay_token_seller',
                gateway=op['gateway'].rec_name, user=SELLER_B,
                merchant=SELLER_A))

    @with_transaction()
    def test_alipay_down_refused(self):
        "Test a token is not stored unchecked when Alipay cannot answer"
        op = self.prepare()
        self.simulator.down = True
        self.assert_refused(op, TOKEN_A, message(
                'msg_gateway_alipay_token_unreachable',
                gateway=op['gateway'].rec_name))

    @with_transaction()
    def test_no_token_no_payment(self):
        """Test a gateway on the platform's application without the
        operator's authorization charges nothing"""
        op = self.prepare()
        with set_company(op['company']):
            payment = pay_code(create_order(op['setup']), ALIPAY_CODE)
        self.assertEqual(payment.state, 'failed')
        self.assertEqual(payment.error, message(
                'msg_gateway_platform_auth_token',
                gateway=op['gateway'].rec_name,
                platform=op['platform'].rec_name))
        self.assertEqual(self.simulator.requests, [])

    @with_transaction()
    def test_notification_of_another_operator_refused(self):
        """Test a notification naming another authorizer's application is
        refused as forged; the operator's own settles the QR"""
        pool = Pool()
        Payment = pool.get('fuel.payment.gateway.payment')
        Notification = pool.get('fuel.payment.gateway.notification')
        op = self.prepare()
        self.set_token(op, TOKEN_A)
        gateway = op['gateway']
        with set_company(op['company']):
            payment = Payment(Payment.create_qr(
                    create_order(op['setup']).id,
                    op['setup']['methods']['alipay'].id))
            Payment.submit([payment])
        self.simulator.pay(payment.number)
        other = self.simulator.notification(
            payment.number, auth_app_id=APP_B)
        valid = self.simulator.notification(payment.number)
        with self.assertLogs(level=logging.DEBUG) as logs:
            self.assertEqual(
                Notification.receive(gateway, *other), 'refused')
            self.assertEqual(Payment(payment.id).state, 'pending')
            self.assertEqual(
                Notification.receive(gateway, *valid), 'accepted')
        output = '\n'.join(logs.output)
        self.assertIn('another operator', output)
        self.assertNotIn(TOKEN_A, output)
        self.assertEqual(Payment(payment.id).state, 'succeeded')
