# This file is part of fuelpay.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""Payments in the driver's WeChat or Alipay app through the Huifu
aggregator (jspay T_JSAPI, T_MINIAPP, A_JSAPI), against its simulator"""
import datetime as dt
import json
import logging
import pathlib
from decimal import Decimal

from trytond.exceptions import UserError
from trytond.modules.company.tests import create_company, set_company
from trytond.pool import Pool
from trytond.tests.test_tryton import with_transaction
from trytond.transaction import Transaction

from addons.fuel_device.tests.tools import create_box

from .sim_huifu import HuifuSimulator
from .test_gateway import OperatorOnceMixin, create_order
from .test_module import message
from .tools import (
    PaymentDatabaseTestCase,
    SimulatorsMixin,
    create_payment_setup,
)

OPENID = 'oUpF8uMuAJO_M2pxb1Q9zNjWeS6o'
BUYER_ID = '2088202954065786'
MINI_PROGRAM = 'wx8888888888888802'
ALIPAY_MINI_PROGRAM = '2021000000000001'
ZH_CN_PO = pathlib.Path(__file__).parent.parent / 'locale' / 'zh_CN.po'


class HuifuAppMixin(SimulatorsMixin, OperatorOnceMixin):
    """An operator whose Huifu gateway (the simulator's) takes WeChat,
    Alipay and UnionPay from the apps client_apps names, with a box named
    box; an order to pay in each test"""

    simulators = {
        'simulator': HuifuSimulator,
        }
    client_apps = [MINI_PROGRAM, ALIPAY_MINI_PROGRAM]
    box = 'BOX-H'

    @classmethod
    def build_operator(cls):
        pool = Pool()
        Gateway = pool.get('fuel.payment.gateway')
        Method = pool.get('sale.point.payment.method')
        company = create_company()
        with set_company(company):
            setup = create_payment_setup(company)
            gateway, = Gateway.create([dict(
                        cls.simulator.gateway_values(), name="Huifu",
                        company=company.id,
                        client_apps=' '.join(cls.client_apps))])
            Method.write([
                    setup['methods'][k]
                    for k in ['wechat', 'alipay', 'unionpay']], {
                    'gateway': gateway.id})
            create_box(setup['station'], cls.box)
        return company, setup, gateway

    def prepare(self):
        # at the start of the test body: with_transaction runs it again
        # on a rolled back database when a table must be locked first
        self.simulator.trades.clear()
        self.simulator.paying_queries = None
        self.simulator.down = False
        self.simulator.wechat_direct = False
        company, setup, gateway = self.operator()
        with set_company(company):
            order = create_order(setup)
        return company, setup, gateway, order

    def create_app(self, order, method, client, **kwargs):
        "Create the in-app payment and run the queue's submit at once"
        pool = Pool()
        Payment = pool.get('fuel.payment.gateway.payment')
        payment = Payment(Payment.create_app(
                order.id, method.id, client, **kwargs))
        Payment.submit([payment])
        return Payment(payment.id)

    def assertNothingCreated(self):
        pool = Pool()
        Payment = pool.get('fuel.payment.gateway.payment')
        self.assertEqual(Payment.search([], count=True), 0)
        self.assertEqual(self.simulator.trades, {})


class HuifuAppTestCase(HuifuAppMixin, PaymentDatabaseTestCase):
    "Test in-app payments through the Huifu simulator"

    @with_transaction()
    def test_wechat_mini_program_paid_by_notification(self):
        """Test a WeChat mini program payment (T_MINIAPP): the payer and
        the app go in wx_data, the signed pay_info comes back as the
        client parameters, the verified notification settles it once"""
        pool = Pool()
        Payment = pool.get('fuel.payment.gateway.payment')
        Notification = pool.get('fuel.payment.gateway.notification')
        company, setup, gateway, order = self.prepare()
        with set_company(company):
            payment = self.create_app(
                order, setup['methods']['wechat'], 'mini_program',
                payer=OPENID, app=MINI_PROGRAM)
            self.assertEqual(payment.state, 'pending')
            self.assertEqual(payment.kind, 'app')
            self.assertEqual(payment.client_app, MINI_PROGRAM)
            trade = self.simulator.trades[payment.number]
            self.assertEqual(trade.data['trade_type'], 'T_MINIAPP')
            self.assertEqual(trade.data['trans_amt'], '151.60')
            self.assertEqual(json.loads(trade.data['wx_data']), {
                    'sub_appid': MINI_PROGRAM, 'sub_openid': OPENID})
            self.assertEqual(payment.reference, trade.hf_seq_id)
            params = json.loads(payment.client_params)
            self.assertEqual(params, json.loads(trade.pay_info))
            self.assertEqual(params['appId'], MINI_PROGRAM)
            self.assertTrue(params['package'].startswith('prepay_id=wx'))
            self.assertEqual(params['signType'], 'RSA')
            self.assertTrue(self.simulator.verify_pay_info(params))
            self.assertEqual(payment.status()['client_params'], params)
            self.assertEqual(payment.status()['state'], 'pending')

            self.simulator.pay(payment.number)
            forged = self.simulator.notification(payment.number, forge=True)
            with self.assertLogs('addons.fuel_payment', logging.WARNING):
                self.assertEqual(
                    Notification.receive(gateway, *forged), 'refused')
            self.assertEqual(Payment(payment.id).state, 'pending')
            valid = self.simulator.notification(payment.number)
            self.assertEqual(
                Notification.receive(gateway, *valid), 'accepted')
            self.assertEqual(
                Notification.receive(gateway, *valid), 'duplicate')
        payment = Payment(payment.id)
        self.assertEqual(payment.state, 'succeeded')
        self.assertEqual(payment.order.state, 'paid')
        self.assertEqual(len(payment.order.payments), 1)
        self.assertEqual(
            payment.order.payments[0].method, setup['methods']['wechat'])

    @with_transaction()
    def test_alipay_js_paid_found_by_query(self):
        """Test Alipay JS payments (A_JSAPI): the buyer_id in alipay_data,
        the mini program's app as op_app_id, the tradeNO handed back; the
        query finds it paid"""
        pool = Pool()
        Payment = pool.get('fuel.payment.gateway.payment')
        company, setup, gateway, order = self.prepare()
        alipay = setup['methods']['alipay']
        with set_company(company):
            payment = self.create_app(order, alipay, 'jsapi', payer=BUYER_ID)
            self.assertEqual(payment.state, 'pending')
            # no app named: the gateway's own (Huifu's sys_id), not sent
            self.assertEqual(payment.client_app, gateway.app)
            trade = self.simulator.trades[payment.number]
            self.assertEqual(trade.data['trade_type'], 'A_JSAPI')
            self.assertNotIn('wx_data', trade.data)
            self.assertEqual(
                json.loads(trade.data['alipay_data']),
                {'buyer_id': BUYER_ID})
            params = json.loads(payment.client_params)
            self.assertEqual(list(params), ['tradeNO'])
            self.assertEqual(params['tradeNO'], json.loads(
                    trade.pay_info)['tradeNO'])
            Payment.poll([payment])
            self.assertEqual(Payment(payment.id).state, 'pending')
            self.simulator.pay(payment.number)
            Payment.poll([payment])
            self.assertEqual(Payment(payment.id).state, 'succeeded')
            self.assertEqual(Payment(payment.id).order.state, 'paid')

            mini = self.create_app(
                create_order(setup, '5'), alipay, 'mini_program',
                payer=BUYER_ID, app=ALIPAY_MINI_PROGRAM)
            self.assertEqual(mini.state, 'pending')
            trade = self.simulator.trades[mini.number]
            self.assertEqual(trade.data['trade_type'], 'A_JSAPI')
            self.assertEqual(json.loads(trade.data['alipay_data']), {
                    'buyer_id': BUYER_ID,
                    'op_app_id': ALIPAY_MINI_PROGRAM})

    @with_transaction()
    def test_missing_payer_refused(self):
        """Test an in-app payment without the payer is refused before
        anything is created, in the driver's language"""
        pool = Pool()
        Lang = pool.get('ir.lang')
        Translation = pool.get('ir.translation')
        company, setup, _gateway, order = self.prepare()
        with set_company(company):
            for method, client, payer in [
                    ('wechat', 'mini_program', None),
                    ('wechat', 'jsapi', '  '),
                    ('alipay', 'jsapi', ''),
                    ]:
                with self.subTest(method=method, client=client), \
                        self.assertRaises(UserError) as cm:
                    self.create_app(
                        order, setup['methods'][method], client,
                        payer=payer)
                self.assertEqual(cm.exception.message, message(
                        'msg_gateway_app_payer', client=client))
            lang, = Lang.search([('code', '=', 'zh_CN')])
            Lang.write([lang], {'translatable': True})
            Translation.translation_import(
                'zh_CN', 'fuel_payment', str(ZH_CN_PO))
            with Transaction().set_context(language='zh_CN'):
                with self.assertRaises(UserError) as cm:
                    self.create_app(
                        order, setup['methods']['wechat'], 'jsapi')
                self.assertEqual(cm.exception.message, message(
                        'msg_gateway_app_payer', client='jsapi'))
            self.assertIn('需要付款人', cm.exception.message)
            self.assertNothingCreated()

    @with_transaction()
    def test_combination_not_offered_refused(self):
        """Test wallets and clients Huifu's jspay is not used for here
        (UnionPay mini program, Alipay mobile app, an unknown client) and
        apps not bound to the merchant are refused before anything is
        created (UnionPay JS and the WeChat mobile app: test_huifu_app2)"""
        company, setup, gateway, order = self.prepare()
        with set_company(company):
            for method, client in [
                    ('wechat', 'h5'),
                    ('unionpay', 'mini_program'),
                    ('alipay', 'app'),
                    ('alipay', 'desktop'),
                    ]:
                with self.subTest(method=method, client=client), \
                        self.assertRaises(UserError) as cm:
                    self.create_app(
                        order, setup['methods'][method], client,
                        payer=OPENID)
                self.assertEqual(cm.exception.message, message(
                        'msg_gateway_app_client', client=client,
                        gateway=gateway.rec_name))
            with self.assertRaises(UserError) as cm:
                self.create_app(
                    order, setup['methods']['wechat'], 'mini_program',
                    payer=OPENID, app='wx0000000000000000')
            self.assertEqual(cm.exception.message, message(
                    'msg_gateway_client_app', app='wx0000000000000000',
                    gateway=gateway.rec_name))
            self.assertNothingCreated()

    @with_transaction()
    def test_unpaid_closed_at_deadline(self):
        """Test an official account payment (T_JSAPI) of the merchant's
        default app, never paid, closed at its deadline"""
        pool = Pool()
        Payment = pool.get('fuel.payment.gateway.payment')
        company, setup, _gateway, order = self.prepare()
        with set_company(company):
            payment = self.create_app(
                order, setup['methods']['wechat'], 'jsapi', payer=OPENID)
            trade = self.simulator.trades[payment.number]
            self.assertEqual(trade.data['trade_type'], 'T_JSAPI')
            # no app named: Huifu pays from the merchant's configured one
            self.assertEqual(
                json.loads(trade.data['wx_data']), {'sub_openid': OPENID})
            self.assertEqual(
                json.loads(payment.client_params)['appId'],
                self.simulator.wechat_apps[0])
            self.assertTrue(trade.data['time_expire'])
            Payment.poll([payment])
            self.assertEqual(Payment(payment.id).state, 'pending')
            Payment.write([payment], {
                    'deadline': dt.datetime.now() - dt.timedelta(seconds=1)})
            Payment.poll([payment])
        payment = Payment(payment.id)
        self.assertEqual(payment.state, 'cancelled')
        self.assertEqual(payment.error, message('msg_gateway_timeout'))
        self.assertEqual(trade.state, 'F')
        self.assertEqual(payment.order.state, 'draft')

    @with_transaction()
    def test_refund(self):
        "Test an in-app payment paid, then partly refunded once"
        pool = Pool()
        Payment = pool.get('fuel.payment.gateway.payment')
        Refund = pool.get('fuel.payment.gateway.refund')
        company, setup, _gateway, order = self.prepare()
        with set_company(company):
            payment = self.create_app(
                order, setup['methods']['wechat'], 'mini_program',
                payer=OPENID, app=MINI_PROGRAM)
            self.simulator.pay(payment.number)
            Payment.poll([payment])
            payment = Payment(payment.id)
            self.assertEqual(payment.state, 'succeeded')
            refund, = Payment.refund([payment], Decimal('51.60'))
            Refund.submit([refund])
            self.assertEqual(Refund(refund.id).state, 'succeeded')
            # sent again: answered, not refunded twice
            Refund.write([refund], {'state': 'pending'})
            Refund.submit([Refund(refund.id)])
        self.assertEqual(Refund(refund.id).state, 'succeeded')
        trade = self.simulator.trades[payment.number]
        self.assertEqual(
            [r['amount'] for r in trade.refunds.values()],
            [Decimal('51.60')])
        self.assertEqual(
            list(trade.refunds), [Refund(refund.id).number])

    @with_transaction()
    def test_prepay_in_mini_program(self):
        """Test a pre-payment made in the driver's mini program: refused
        without payer, else paid by notification and ready to authorize"""
        pool = Pool()
        Payment = pool.get('fuel.payment.gateway.payment')
        PrePay = pool.get('fuel.payment.prepay')
        Notification = pool.get('fuel.payment.gateway.notification')
        company, setup, gateway, _order = self.prepare()
        station = setup['station']
        wechat = setup['methods']['wechat']
        with set_company(company):
            with self.assertRaises(UserError) as cm:
                PrePay.start(
                    station.id, 1, '100', method=wechat.id,
                    client='mini_program', app=MINI_PROGRAM)
            self.assertEqual(cm.exception.message, message(
                    'msg_gateway_app_payer', client='mini_program'))
            self.assertEqual(PrePay.search([], count=True), 0)
            payment = Payment(PrePay.start(
                    station.id, 1, '100', method=wechat.id,
                    client='mini_program', payer=OPENID, app=MINI_PROGRAM))
            self.assertEqual(payment.kind, 'app')
            self.assertEqual(payment.source, 'customer')
            Payment.submit([payment])
            payment = Payment(payment.id)
            self.assertEqual(payment.state, 'pending')
            trade = self.simulator.trades[payment.number]
            self.assertEqual(trade.data['trade_type'], 'T_MINIAPP')
            self.assertEqual(trade.data['trans_amt'], '100.00')
            self.assertEqual(
                json.loads(payment.client_params)['appId'], MINI_PROGRAM)
            self.assertEqual(payment.prepay.state, 'draft')
            self.simulator.pay(payment.number)
            self.assertEqual(Notification.receive(
                    gateway, *self.simulator.notification(payment.number)),
                'accepted')
        payment = Payment(payment.id)
        self.assertEqual(payment.state, 'succeeded')
        prepay = PrePay(payment.prepay.id)
        self.assertEqual(prepay.state, 'paid')
        self.assertTrue(prepay.authorization)
