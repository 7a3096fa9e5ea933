# This file is part of fuelpay.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""Reconciliation of the channels' daily bills, produced by their
simulators"""
import datetime as dt
import io
import time
import zipfile
from decimal import Decimal

from trytond.exceptions import UserError
from trytond.modules.company.tests import create_company, set_company
from trytond.pool import Pool
from trytond.tests.test_tryton import with_transaction

from ..aggregator import parse_trade_bill as parse_huifu_bill
from ..alipay_bill import parse_trade_bill as parse_alipay_bill
from ..gateway import BillFormatError
from ..reconciliation import BILL_TIMEZONE
from ..wechat import parse_trade_bill as parse_wechat_bill
from .sim_alipay import AlipaySimulator
from .sim_huifu import HuifuSimulator
from .sim_huifu import Trade as HuifuTrade
from .sim_wechat import Order as SimOrder
from .sim_wechat import WeChatSimulator
from .test_gateway import (
    ALIPAY_CODE,
    UNIONPAY_CODE,
    WECHAT_CODE,
    OperatorOnceMixin,
    create_order,
)
from .test_module import message
from .tools import (
    PaymentDatabaseTestCase,
    SimulatorsMixin,
    create_payment_setup,
)

# A test pays, then downloads the bill of "today" in Beijing; the payments
# and the simulators' bill rows must fall on that same day.
MIDNIGHT_MARGIN = dt.timedelta(minutes=2)


def bill_today():
    "Beijing's date, after waiting out the last minutes before midnight"
    now = dt.datetime.now(BILL_TIMEZONE)
    midnight = dt.datetime.combine(
        now.date() + dt.timedelta(days=1), dt.time(), BILL_TIMEZONE)
    if midnight - now < MIDNIGHT_MARGIN:
        time.sleep((midnight - now).total_seconds() + 1)
        now = dt.datetime.now(BILL_TIMEZONE)
    return now.date()

class ReconciliationTestCase(
        SimulatorsMixin, OperatorOnceMixin, PaymentDatabaseTestCase):
    "Test reconciliation"

    simulators = {
        'wechat': WeChatSimulator,
        'alipay': AlipaySimulator,
        'huifu': HuifuSimulator,
        }

    def setUp(self):
        super().setUp()
        self.today = bill_today()

    def prepare(self):
        # at the start of the test body: with_transaction runs it again
        # when a table must be locked first, on a database rolled back
        self.wechat.orders.clear()
        self.alipay.trades.clear()
        self.huifu.trades.clear()
        self.huifu.bill_state = 'ready'
        self.huifu.files = 1
        return self.operator()

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
            gateways = {}
            for kind, simulator in [
                    ('wechat', cls.wechat), ('alipay', cls.alipay),
                    ('unionpay', cls.huifu)]:
                gateways[kind], = Gateway.create([dict(
                            simulator.gateway_values(), name=kind,
                            company=company.id,
                            fee_account=setup['accounts']['variance'].id,
                            journal=journal.id)])
                Method.write([setup['methods'][kind]], {
                        'gateway': gateways[kind].id})
        return company, setup, gateways

    def pay(self, setup, code, quantity='20'):
        pool = Pool()
        Payment = pool.get('fuel.payment.gateway.payment')
        order = create_order(setup, quantity)
        payment = Payment(Payment.pay_code(order.id, code))
        Payment.submit([payment], code)
        return Payment(payment.id)

    @with_transaction()
    def test_wechat_day_with_every_discrepancy(self):
        """Test a downloaded WeChat bill: matched, missing on each side,
        amount and status mismatches, fees posted"""
        pool = Pool()
        Payment = pool.get('fuel.payment.gateway.payment')
        Refund = pool.get('fuel.payment.gateway.refund')
        Reconciliation = pool.get('fuel.payment.reconciliation')
        Line = pool.get('fuel.payment.reconciliation.line')
        company, setup, gateways = self.prepare()
        with set_company(company):
            matched = self.pay(setup, WECHAT_CODE)
            partial, = Payment.refund([matched], Decimal('50.00'))
            Refund.submit([partial])
            dropped = self.pay(setup, WECHAT_CODE, '10')
            del self.wechat.orders[dropped.number]
            altered = self.pay(setup, WECHAT_CODE, '5')
            self.wechat.orders[altered.number].total -= 100
            order = create_order(setup, '2')
            unnotified = Payment(Payment.create_qr(
                    order.id, setup['methods']['wechat'].id))
            Payment.submit([unnotified])
            self.wechat.pay(unnotified.number)
            stranger = SimOrder({
                    'out_trade_no': 'OTHER-SYSTEM-1',
                    'amount': {'total': 1000, 'currency': 'CNY'}}, 'qr')
            stranger.pay()
            self.wechat.orders[stranger.out_trade_no] = stranger
            reconciliations = Reconciliation.fetch_bills(date=self.today)
        reconciliation, = [
            r for r in reconciliations if r.gateway == gateways['wechat']]
        reconciliation = Reconciliation(reconciliation.id)
        self.assertEqual(reconciliation.state, 'matched')
        self.assertEqual(reconciliation.source, 'download')
        self.assertTrue(reconciliation.bill_name.endswith('.csv.gz'))
        lines = reconciliation.lines
        kinds = {(line.type, line.number, line.kind) for line in lines}
        self.assertEqual(kinds, {
                ('payment', matched.number, 'matched'),
                ('refund', matched.number, 'matched'),
                ('payment', dropped.number, 'missing_channel'),
                ('payment', altered.number, 'amount'),
                ('payment', unnotified.number, 'status'),
                ('payment', 'OTHER-SYSTEM-1', 'missing_ours'),
                })
        self.assertEqual(reconciliation.matched, 2)
        self.assertEqual(reconciliation.discrepancies, 4)
        self.assertEqual(reconciliation.unresolved, 4)
        # 0.6 % of 151.60, 36.90 (37.90 as billed), 15.16 and 10.00;
        # 0.30 given back with the refund of 50.00
        self.assertEqual(reconciliation.fee, Decimal('0.91') + Decimal(
                '0.22') + Decimal('0.09') + Decimal('0.06') - Decimal('0.30'))
        amount_line, = [line for line in lines if line.kind == 'amount']
        self.assertEqual(
            (amount_line.amount, amount_line.channel_amount),
            (Decimal('37.90'), Decimal('36.90')))
        status_line, = [line for line in lines if line.kind == 'status']
        self.assertEqual(
            (status_line.status, status_line.channel_status),
            ('pending', 'succeeded'))
        # the channel has it paid: asking settles our side
        Line.check([status_line])
        self.assertEqual(Payment(unnotified.id).state, 'succeeded')

        with self.assertRaises(UserError) as cm:
            Line.resolve([amount_line])
        self.assertEqual(cm.exception.message, message(
                'msg_reconciliation_note_required'))
        Line.write([amount_line], {'note': "Voucher of 1.00 by WeChat"})
        Line.resolve([amount_line])
        self.assertEqual(Reconciliation(reconciliation.id).unresolved, 3)

        with self.assertRaises(UserError) as cm:
            Reconciliation.delete([reconciliation])
        self.assertEqual(cm.exception.message, message(
                'msg_reconciliation_delete',
                reconciliation=reconciliation.rec_name))
        Reconciliation.post([reconciliation])
        reconciliation = Reconciliation(reconciliation.id)
        self.assertEqual(reconciliation.state, 'done')
        move = reconciliation.move
        self.assertEqual(move.state, 'posted')
        self.assertEqual(move.description, message(
                'msg_reconciliation_fee_description',
                gateway=gateways['wechat'].rec_name, date=self.today))
        debits = {
            line.account: line.debit - line.credit for line in move.lines}
        self.assertEqual(debits, {
                setup['accounts']['variance']: reconciliation.fee,
                setup['accounts']['terminal']: -reconciliation.fee,
                })
        with self.assertRaises(UserError) as cm:
            Reconciliation.create([{
                        'company': company.id,
                        'gateway': gateways['wechat'].id,
                        'date': self.today}])
        self.assertEqual(cm.exception.message, message(
                'msg_reconciliation_unique'))

    @with_transaction()
    def test_alipay_bill_imported_by_hand(self):
        "Test an Alipay bill file imported by hand is matched"
        pool = Pool()
        Payment = pool.get('fuel.payment.gateway.payment')
        Refund = pool.get('fuel.payment.gateway.refund')
        Reconciliation = pool.get('fuel.payment.reconciliation')
        Gateway = pool.get('fuel.payment.gateway')
        company, setup, gateways = self.prepare()
        with set_company(company):
            paid = self.pay(setup, ALIPAY_CODE)
            partial, = Payment.refund([paid], Decimal('20.00'))
            Refund.submit([partial])
            missing = self.pay(setup, ALIPAY_CODE, '1')
            del self.alipay.trades[missing.number]
            reconciliation, = Reconciliation.create([{
                        'company': company.id,
                        'gateway': gateways['alipay'].id,
                        'date': self.today}])
            with self.assertRaises(UserError) as cm:
                Reconciliation.match([reconciliation])
            self.assertEqual(cm.exception.message, message(
                    'msg_reconciliation_no_bill',
                    reconciliation=reconciliation.rec_name))
            Reconciliation.write([reconciliation], {
                    'bill': b'not a zip', 'bill_name': 'bill.zip'})
            with self.assertRaises(UserError) as cm:
                Reconciliation.match([reconciliation])
            self.assertEqual(cm.exception.message, message(
                    'msg_reconciliation_format',
                    reconciliation=reconciliation.rec_name, error='zip'))
            Reconciliation.write([reconciliation], {
                    'bill': self.alipay.bill(self.today)})
            Reconciliation.match([reconciliation])
            reconciliation = Reconciliation(reconciliation.id)
            self.assertEqual(reconciliation.source, 'import')
            kinds = sorted(
                (line.type, line.kind) for line in reconciliation.lines)
            self.assertEqual(kinds, [
                    ('payment', 'matched'), ('payment', 'missing_channel'),
                    ('refund', 'matched')])
            # 0.91 kept on 151.60, 0.12 given back on 20.00
            self.assertEqual(reconciliation.fee, Decimal('0.79'))
            Gateway.write([gateways['alipay']], {'journal': None})
            with self.assertRaises(UserError) as cm:
                Reconciliation.post([reconciliation])
            self.assertEqual(cm.exception.message, message(
                    'msg_reconciliation_fee_accounts',
                    gateway=gateways['alipay'].rec_name))
            Reconciliation.reset([reconciliation])
            Reconciliation.delete([reconciliation])

    @with_transaction()
    def test_unionpay_day_through_huifu(self):
        """Test Huifu's TRADE_BILL of UnionPay payments downloaded and
        matched: each discrepancy, refund fee given back, a day not
        generated yet, a day in two files, a day without trades"""
        pool = Pool()
        Payment = pool.get('fuel.payment.gateway.payment')
        Refund = pool.get('fuel.payment.gateway.refund')
        Reconciliation = pool.get('fuel.payment.reconciliation')
        company, setup, gateways = self.prepare()
        gateway = gateways['unionpay']
        with set_company(company):
            matched = self.pay(setup, UNIONPAY_CODE)
            partial, = Payment.refund([matched], Decimal('51.60'))
            Refund.submit([partial])
            dropped = self.pay(setup, UNIONPAY_CODE, '10')
            del self.huifu.trades[dropped.number]
            altered = self.pay(setup, UNIONPAY_CODE, '5')
            self.huifu.trades[altered.number].amount -= 1
            order = create_order(setup, '2')
            unpolled = Payment(Payment.create_qr(
                    order.id, setup['methods']['unionpay'].id))
            Payment.submit([unpolled])
            self.huifu.pay(unpolled.number)
            stranger = HuifuTrade({
                    'req_seq_id': 'OTHER-SYSTEM-2',
                    'req_date': self.today.strftime('%Y%m%d'),
                    'trans_amt': '10.00'}, 'qr')
            stranger.pay()
            self.huifu.trades[stranger.number] = stranger

            self.huifu.bill_state = 'pending'
            reconciliation, = Reconciliation.create([{
                        'company': company.id, 'gateway': gateway.id,
                        'date': self.today}])
            Reconciliation.fetch([reconciliation])
            reconciliation = Reconciliation(reconciliation.id)
            self.assertEqual(reconciliation.state, 'draft')
            self.assertEqual(
                reconciliation.error, "bill not generated yet")
            # a day split in two files, downloaded both
            self.huifu.bill_state = 'ready'
            self.huifu.files = 2
            Reconciliation.fetch([reconciliation])
        reconciliation = Reconciliation(reconciliation.id)
        self.assertEqual(reconciliation.state, 'matched')
        self.assertEqual(reconciliation.source, 'download')
        self.assertEqual(
            reconciliation.bill_name,
            f'huifu-{gateway.merchant}-{self.today.isoformat()}.zip')
        kinds = {
            (line.type, line.number, line.kind)
            for line in reconciliation.lines}
        self.assertEqual(kinds, {
                ('payment', matched.number, 'matched'),
                ('refund', matched.number, 'matched'),
                ('payment', dropped.number, 'missing_channel'),
                ('payment', altered.number, 'amount'),
                ('payment', unpolled.number, 'status'),
                ('payment', 'OTHER-SYSTEM-2', 'missing_ours'),
                })
        refund_line, = [
            line for line in reconciliation.lines if line.type == 'refund']
        self.assertEqual(refund_line.refund_number, partial.number)
        self.assertEqual(
            refund_line.reference,
            self.huifu.trades[matched.number].refunds[partial.number][
                'hf_seq_id'])
        amount_line, = [
            line for line in reconciliation.lines if line.kind == 'amount']
        self.assertEqual(
            (amount_line.amount, amount_line.channel_amount),
            (Decimal('37.90'), Decimal('36.90')))
        # 0.38 % kept: 0.58 of 151.60, 0.14 of 36.90, 0.06 of 15.16 (the
        # QR paid on the channel, still being paid here) and 0.04 of 10.00
        # (the stranger); 0.20 of 51.60 given back with the refund
        self.assertEqual(reconciliation.fee, Decimal('0.58') + Decimal(
                '0.14') + Decimal('0.06') + Decimal('0.04') - Decimal('0.20'))

        # a day the file task ran without writing a file: no trade
        self.huifu.bill_state = 'empty'
        yesterday = self.today - dt.timedelta(days=1)
        with set_company(company):
            empty, = [
                r for r in Reconciliation.fetch_bills(date=yesterday)
                if r.gateway == gateway]
        empty = Reconciliation(empty.id)
        self.assertEqual(empty.gateway, gateway)
        self.assertEqual((empty.state, len(empty.lines)), ('matched', 0))

    def test_bill_formats(self):
        "Test the parsers read the exact bill formats and refuse others"
        wechat = WeChatSimulator()
        order = SimOrder({
                'out_trade_no': 'S01P7',
                'amount': {'total': 15160, 'currency': 'CNY'}}, 'code')
        order.pay()
        order.refunds['S01P7R9'] = {
            'refund_id': '50X', 'refund': 5000,
            'time': dt.datetime.now(BILL_TIMEZONE)}
        wechat.orders[order.out_trade_no] = order
        today = bill_today()
        raw = wechat.bill(today)
        self.assertTrue(raw.startswith('交易时间,公众账号ID'.encode()))
        rows = parse_wechat_bill(raw)
        self.assertEqual(rows, [{
                    'type': 'payment', 'number': 'S01P7',
                    'reference': order.transaction_id,
                    'amount': Decimal('151.60'), 'status': 'succeeded',
                    'fee': Decimal('0.91')}, {
                    'type': 'refund', 'number': 'S01P7',
                    'refund_number': 'S01P7R9', 'reference': '50X',
                    'amount': Decimal('50.00'), 'status': 'succeeded',
                    'fee': Decimal('-0.30')}])
        for bad in [b'', b'a,b,c\n', raw.replace(b',`', b',', 3)]:
            with self.assertRaises(BillFormatError):
                parse_wechat_bill(bad)
        alipay = AlipaySimulator()
        self.assertEqual(parse_alipay_bill(alipay.bill(today)), [])

        huifu = HuifuSimulator()
        trade = HuifuTrade({
                'req_seq_id': 'S01P8', 'req_date': today.strftime('%Y%m%d'),
                'trans_amt': '151.60'}, 'code')
        trade.pay()
        trade.refunds['S01P8R3'] = {
            'amount': Decimal('50.00'), 'req_date': '20261205',
            'hf_seq_id': 'R77', 'time': dt.datetime.now(BILL_TIMEZONE)}
        huifu.trades[trade.number] = trade
        raw = huifu.bill(today)
        tomorrow = (today + dt.timedelta(days=1)).strftime('%Y%m%d')
        with zipfile.ZipFile(io.BytesIO(raw)) as archive:
            name, = archive.namelist()
            text = archive.read(name).decode()
        self.assertEqual(name, f'{tomorrow}_{huifu.huifu_id}_order_1.csv')
        self.assertTrue(text.startswith('商户号,请求日期,请求流水号'))
        self.assertEqual(parse_huifu_bill(raw, huifu.huifu_id), [{
                    'type': 'payment', 'number': 'S01P8',
                    'reference': trade.hf_seq_id,
                    'amount': Decimal('151.60'), 'status': 'succeeded',
                    'fee': Decimal('0.58')}, {
                    'type': 'refund', 'number': 'S01P8',
                    'refund_number': 'S01P8R3', 'reference': 'R77',
                    'amount': Decimal('50.00'), 'status': 'succeeded',
                    'fee': Decimal('-0.19')}])
        # another merchant's rows are not ours; GBK is read too
        self.assertEqual(parse_huifu_bill(raw, '6666000100009999'), [])
        gbk = io.BytesIO()
        with zipfile.ZipFile(gbk, 'w') as archive:
            archive.writestr(name, text.encode('gbk'))
        self.assertEqual(len(parse_huifu_bill(gbk.getvalue())), 2)

        def zipped(members):
            buffer = io.BytesIO()
            with zipfile.ZipFile(buffer, 'w') as archive:
                for member, content in members.items():
                    archive.writestr(member, content)
            return buffer.getvalue()
        for bad in [
                b'not a zip',
                zipped({f'{tomorrow}_1_settle_1.csv': text}),
                zipped({name: 'a,b,c\r\n'}),
                zipped({name: text.replace(',S,', ',X,', 1)}),
                zipped({name: text.replace(',151.60,', ',1a,', 1)}),
                zipped({name: text + '1,2\r\n'}),
                ]:
            with self.assertRaises(BillFormatError):
                parse_huifu_bill(bad)
