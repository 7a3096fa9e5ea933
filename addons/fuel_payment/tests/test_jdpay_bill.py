# This file is part of fuelpay.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""JD Pay's daily order bill: the download fields and the format without
a database, then its download and reconciliation against the simulator
on 127.0.0.1"""
import base64
import datetime as dt
import io
import json
import unittest
import zipfile
from decimal import Decimal

import requests
from trytond.exceptions import UserError
from trytond.modules.company.tests import create_company, set_company
from trytond.pool import Pool
from trytond.tests.test_tryton import with_transaction

from .. import jdpay_bill
from ..gateway import BillFormatError, TransientError
from ..reconciliation import RETRY_DAYS
from .sim_jdpay import JdPaySimulator, Trade, now
from .test_gateway import OperatorOnceMixin, create_order
from .test_module import message
from .test_reconciliation import bill_today
from .tools import (
    PaymentDatabaseTestCase,
    SimulatorsMixin,
    create_payment_setup,
    pay_code,
)

JD_CODE = '181234567890123456'
# a name and a made-up bill key, the fields computed apart with the shell
# (printf | base64 -w0; printf | md5sum)
NAME = '20261206ordercreate_110210007001.zip'
KEY = 'billkey-test-0001'
DATA = (
    'eyJuYW1lIjoiMjAyNjEyMDZvcmRlcmNyZWF0ZV8xMTAyMTAwMDcwMDEuemlwIiwicGF0'
    'aCI6IjAwMDEvMDAwMSJ9')
MD5 = '09bf8099957ccd10543ba393dc39d6af'


def zipped(text, name='bill.csv'):
    "A zip of text (GBK) or bytes"
    if isinstance(text, str):
        text = text.encode('gbk')
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, 'w') as archive:
        archive.writestr(name, text)
    return buffer.getvalue()


def paid_trade(number, fen):
    trade = Trade({'tradeNum': number, 'amount': str(fen)}, 'code')
    trade.pay()
    return trade


class JdPayBillProtocolTestCase(unittest.TestCase):
    "Test the bill's download fields and format without a database"

    def test_download_fields(self):
        """Test data is base64 of the JSON naming the order bill, md5 the
        hex MD5 of data and the bill key, owner the first 9 digits"""
        self.assertEqual(jdpay_bill.request_data(NAME), DATA)
        self.assertEqual(
            json.loads(base64.b64decode(DATA)),
            {'name': NAME, 'path': '0001/0001'})
        self.assertEqual(jdpay_bill.request_md5(DATA, KEY), MD5)
        self.assertNotEqual(jdpay_bill.request_md5(DATA, KEY + 'x'), MD5)
        date = dt.date(2026, 12, 5)
        name = jdpay_bill.file_name('110210007001', date)
        self.assertEqual(
            name, (date + jdpay_bill.FILE_DATE_OFFSET).strftime('%Y%m%d')
            + 'ordercreate_110210007001.zip')
        params = jdpay_bill.download_params('110210007001', KEY, date)
        self.assertEqual(params, {
                'owner': '110210007',
                'data': jdpay_bill.request_data(name),
                'md5': jdpay_bill.request_md5(
                    jdpay_bill.request_data(name), KEY),
                })
        # an 8-digit merchant number is its own owner
        self.assertEqual(jdpay_bill.owner('22294531'), '22294531')

    def test_cells(self):
        "Test Excel-style cells are unwrapped and commas in quotes kept"
        for raw, value in [
                ('="S01P1\t"', 'S01P1'), ('="0012"', '0012'),
                ('"加油站"', '加油站'), (' 151.60\t', '151.60'),
                ('="a""b"', 'a"b'), ('=""', ''), ('', ''), ('-1', '-1')]:
            self.assertEqual(jdpay_bill.clean_cell(raw), value)
        self.assertEqual(
            jdpay_bill.split_cells('="a,b" , "x""y",-20.00,="",'),
            ['a,b', 'x"y', '-20.00', '', ''])
        for bad in ['ab"c,d', '="a"b,c', '"open,d']:
            with self.assertRaises(BillFormatError):
                jdpay_bill.split_cells(bad)

    def test_parse(self):
        """Test the simulator's bill of each layout is read: payments,
        refunds and a revoke of a paid trade"""
        simulator = JdPaySimulator()
        paid = paid_trade('S01P7', 15160)
        paid.refunds['S01P7R2'] = 5000
        paid.refund_ids['S01P7R2'] = 'JDR9'
        paid.refund_times['S01P7R2'] = now()
        revoked = paid_trade('S01P8', 500)
        revoked.revoked = ('S01P8C', now())
        for trade in [paid, revoked]:
            simulator.trades[trade.number] = trade
        today = bill_today()
        expected = [{
                'type': 'payment', 'number': 'S01P7',
                'reference': paid.order_id, 'amount': Decimal('151.60'),
                'status': 'succeeded', 'fee': Decimal('0.91')}, {
                'type': 'refund', 'number': 'S01P7',
                'refund_number': 'S01P7R2', 'reference': 'JDR9',
                'amount': Decimal('50.00'), 'status': 'succeeded',
                'fee': Decimal('-0.30')}, {
                # paid and revoked the same day: one payment, cancelled,
                # its fee given back
                'type': 'payment', 'number': 'S01P8',
                'reference': revoked.order_id, 'amount': Decimal('5.00'),
                'status': 'cancelled', 'fee': Decimal('0.00')}]
        for cells in [17, 19]:
            simulator.bill_cells = cells
            raw = simulator.bill(today)
            with zipfile.ZipFile(io.BytesIO(raw)) as archive:
                name, = archive.namelist()
                text = archive.read(name).decode('gbk')
            self.assertIn('="S01P7\t",="', text)
            self.assertEqual(
                {len(jdpay_bill.split_cells(line))
                    for line in text.splitlines()}, {cells})
            self.assertEqual(jdpay_bill.parse_order_bill(raw), expected)

        # a revoke of a trade paid on an earlier day, a line not 成功
        header = ','.join(['h'] * 17)
        line = (
            '="{number}",="J{number}",{amount},="x",="y",{status},0.00,="",'
            '2026-12-06 10:00:00,="",="{refund}",="{fee}","n",="","m","b",'
            '="-1"')
        text = '\r\n'.join([header, line.format(
                    number='S01P9', amount='-5.00', status='成功',
                    refund='S01P9C', fee='-0.03'), line.format(
                    number='S01P10', amount='5.00', status='失败',
                    refund='', fee='0.00'), line.format(
                    number='S01P11', amount='-5.00', status='失败',
                    refund='S01P11C', fee='0.00'), ''])
        self.assertEqual(jdpay_bill.parse_order_bill(zipped(text)), [{
                    'type': 'payment', 'number': 'S01P10',
                    'reference': 'JS01P10', 'amount': Decimal('5.00'),
                    'status': 'failed', 'fee': Decimal('0.00')}, {
                    'type': 'payment', 'number': 'S01P9',
                    'reference': 'JS01P9', 'amount': Decimal('5.00'),
                    'status': 'cancelled', 'fee': Decimal('-0.03')}])
        # a day without trades: its header only
        self.assertEqual(jdpay_bill.parse_order_bill(zipped(header)), [])

    def test_refused_formats(self):
        "Test what is not the order bill is refused, saying what was wrong"
        simulator = JdPaySimulator()
        simulator.trades['S01P7'] = paid_trade('S01P7', 15160)
        raw = simulator.bill(bill_today())
        with zipfile.ZipFile(io.BytesIO(raw)) as archive:
            name, = archive.namelist()
            text = archive.read(name).decode('gbk')
        two = io.BytesIO()
        with zipfile.ZipFile(two, 'w') as archive:
            archive.writestr('a.csv', text.encode('gbk'))
            archive.writestr('b.csv', text.encode('gbk'))
        for bad, error in [
                (b'not a zip', "zip"),
                (two.getvalue(), "2 files in the zip"),
                (zipped('\r\n'), "no header"),
                # 0xff starts no GBK character
                (zipped(text.encode('gbk') + b'\xff\xff'), "not GBK"),
                (zipped(text.replace(',="-1"', '')), "line 2: 16 cells"),
                (zipped(text + '1,2,3\r\n'), "line 3: 3 cells"),
                (zipped(text.replace(',151.60,', ',1a,')),
                    "line 2: amount '1a'"),
                (zipped(text.replace(',151.60,', ',-151.60,')),
                    "line 2: refund without number"),
                (zipped(text.replace('="S01P7\t"', '=""')),
                    "line 2: no order number"),
                (zipped(text.replace('"加油站测试商户"', 'a"b')),
                    "line 2: cell at"),
                ]:
            with self.assertRaises(BillFormatError) as cm:
                jdpay_bill.parse_order_bill(bad)
            self.assertTrue(str(cm.exception).startswith(error), (
                    str(cm.exception), error))


class JdPayBillTestCase(
        SimulatorsMixin, OperatorOnceMixin, PaymentDatabaseTestCase):
    "Test JD Pay's bill downloaded and reconciled against its simulator"

    simulators = {
        'simulator': JdPaySimulator,
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
                        cls.simulator.gateway_values(), name="JD Pay",
                        company=company.id,
                        bill_key=cls.simulator.bill_key,
                        fee_account=setup['accounts']['variance'].id,
                        journal=journal.id)])
            Method.write([setup['methods']['jd']], {'gateway': gateway.id})
        return company, setup, gateway

    def setUp(self):
        super().setUp()
        self.today = bill_today()

    def prepare(self):
        simulator = self.simulator
        simulator.trades.clear()
        simulator.requests.clear()
        simulator.bill_requests.clear()
        simulator.paying_queries = None
        simulator.down = False
        simulator.bill_ip_allowed = simulator.bill_ready = True
        simulator.bill_refusal = simulator.bill_body = None
        simulator.bill_cells = 17
        return self.operator()

    def pay(self, setup, quantity='20'):
        return pay_code(create_order(setup, quantity), JD_CODE)

    def reconciliation(self, company, gateway):
        Reconciliation = Pool().get('fuel.payment.reconciliation')
        reconciliation, = Reconciliation.create([{
                    'company': company.id, 'gateway': gateway.id,
                    'date': self.today}])
        return reconciliation

    @with_transaction()
    def test_day_with_every_discrepancy(self):
        """Test a downloaded JD bill: matched, missing on each side,
        amount and status mismatches, a revoke, fees posted"""
        pool = Pool()
        Payment = pool.get('fuel.payment.gateway.payment')
        Refund = pool.get('fuel.payment.gateway.refund')
        Reconciliation = pool.get('fuel.payment.reconciliation')
        Line = pool.get('fuel.payment.reconciliation.line')
        company, setup, gateway = self.prepare()
        simulator = self.simulator
        with set_company(company):
            matched = self.pay(setup)
            partial, = Payment.refund([matched], Decimal('20.00'))
            Refund.submit([partial])
            dropped = self.pay(setup, '10')
            del simulator.trades[dropped.number]
            altered = self.pay(setup, '5')
            simulator.trades[altered.number].amount -= 100
            unnotified = Payment(Payment.create_qr(
                    create_order(setup, '2').id, setup['methods']['jd'].id))
            Payment.submit([unnotified])
            simulator.pay(unnotified.number)
            # never confirmed here, revoked at the deadline; the customer
            # had confirmed just before: JD took the money and gave it back
            simulator.paying_queries = -1
            revoked = self.pay(setup, '3')
            Payment.write([revoked], {
                    'deadline': dt.datetime.now() - dt.timedelta(seconds=1)})
            Payment.poll([Payment(revoked.id)])
            self.assertEqual(Payment(revoked.id).state, 'cancelled')
            trade = simulator.trades[revoked.number]
            trade.paid = trade.revoked[1]
            stranger = paid_trade('OTHER-SYSTEM-3', 1000)
            simulator.trades[stranger.number] = stranger
            reconciliation, = Reconciliation.fetch_bills(date=self.today)
        reconciliation = Reconciliation(reconciliation.id)
        self.assertEqual(reconciliation.state, 'matched')
        self.assertEqual(reconciliation.source, 'download')
        self.assertIsNone(reconciliation.error)
        self.assertEqual(
            reconciliation.bill_name,
            f'jdpay-{gateway.merchant}-{self.today.isoformat()}.zip')
        method, params = simulator.bill_requests[-1]
        self.assertEqual(method, 'POST')
        self.assertEqual(params['owner'], gateway.merchant[:9])
        self.assertEqual(
            json.loads(base64.b64decode(params['data']))['name'],
            jdpay_bill.file_name(gateway.merchant, self.today))
        lines = reconciliation.lines
        self.assertEqual(
            {(line.type, line.number, line.kind) for line in lines}, {
                ('payment', matched.number, 'matched'),
                ('refund', matched.number, 'matched'),
                ('payment', dropped.number, 'missing_channel'),
                ('payment', altered.number, 'amount'),
                ('payment', unnotified.number, 'status'),
                ('payment', revoked.number, 'matched'),
                ('payment', 'OTHER-SYSTEM-3', 'missing_ours'),
                })
        self.assertEqual(len(lines), 7)
        self.assertEqual(reconciliation.matched, 3)
        self.assertEqual(reconciliation.discrepancies, 4)
        refund_line, = [line for line in lines if line.type == 'refund']
        self.assertEqual(refund_line.refund_number, partial.number)
        self.assertEqual(
            refund_line.reference,
            simulator.trades[matched.number].refund_ids[partial.number])
        self.assertEqual(
            (refund_line.amount, refund_line.channel_amount),
            (Decimal('20.00'), Decimal('20.00')))
        revoked_line, = [
            line for line in lines if line.number == revoked.number]
        self.assertEqual(
            (revoked_line.status, revoked_line.channel_status),
            ('cancelled', 'cancelled'))
        amount_line, = [line for line in lines if line.kind == 'amount']
        self.assertEqual(
            (amount_line.amount, amount_line.channel_amount),
            (Decimal('37.90'), Decimal('36.90')))
        status_line, = [line for line in lines if line.kind == 'status']
        self.assertEqual(
            (status_line.status, status_line.channel_status),
            ('pending', 'succeeded'))
        # 0.6 %: 0.91 of 151.60, 0.22 of 36.90 (37.90 here), 0.09 of
        # 15.16, 0.06 of 10.00 (the stranger); 0.14 of 22.74 kept then
        # given back with the revoke; 0.12 of the 20.00 refund given back
        self.assertEqual(reconciliation.fee, Decimal('0.91') + Decimal(
                '0.22') + Decimal('0.09') + Decimal('0.06') + Decimal(
                '0.14') - Decimal('0.14') - Decimal('0.12'))
        # the channel has the QR paid: asking settles our side
        Line.check([status_line])
        self.assertEqual(Payment(unnotified.id).state, 'succeeded')

        Reconciliation.post([reconciliation])
        reconciliation = Reconciliation(reconciliation.id)
        self.assertEqual(reconciliation.state, 'done')
        move = reconciliation.move
        self.assertEqual(move.state, 'posted')
        self.assertEqual(move.description, message(
                'msg_reconciliation_fee_description',
                gateway=gateway.rec_name, date=self.today))
        self.assertEqual({
                line.account: line.debit - line.credit
                for line in move.lines}, {
                setup['accounts']['variance']: Decimal('1.16'),
                setup['accounts']['terminal']: Decimal('-1.16'),
                })

    @with_transaction()
    def test_refusals_then_next_run(self):
        """Test JD's refusals are kept on the day, in words and without
        the key; the next run downloads the day once JD gives it"""
        pool = Pool()
        Gateway = pool.get('fuel.payment.gateway')
        Reconciliation = pool.get('fuel.payment.reconciliation')
        company, setup, gateway = self.prepare()
        simulator = self.simulator
        name = jdpay_bill.file_name(gateway.merchant, self.today)
        values = {'gateway': gateway.rec_name, 'file': name}
        with set_company(company):
            paid = self.pay(setup)
            reconciliation = self.reconciliation(company, gateway)
            Gateway.write([gateway], {'bill_key': 'not the key'})
            Reconciliation.fetch([reconciliation])
            reconciliation = Reconciliation(reconciliation.id)
            self.assertEqual(
                (reconciliation.state, reconciliation.error), ('draft',
                    message(
                        'msg_jdpay_bill_unauthorized', code='00111',
                        **values)))
            self.assertNotIn('not the key', reconciliation.error)
            Gateway.write([gateway], {'bill_key': simulator.bill_key})
            for attribute, value, error in [
                    ('bill_ip_allowed', False, message(
                            'msg_jdpay_bill_ip', code='00112', **values)),
                    ('bill_ready', False, message(
                            'msg_jdpay_bill_not_ready', code='00124',
                            **values)),
                    ('bill_refusal', '00199', message(
                            'msg_jdpay_bill_refused', code='00199',
                            **values)),
                    ('down', True, "HTTP 500"),
                    ]:
                default = getattr(simulator, attribute)
                setattr(simulator, attribute, value)
                Reconciliation.fetch([reconciliation])
                setattr(simulator, attribute, default)
                reconciliation = Reconciliation(reconciliation.id)
                self.assertEqual(
                    (reconciliation.state, reconciliation.error),
                    ('draft', error))
                self.assertIsNone(reconciliation.bill)
            for _, params in simulator.bill_requests:
                self.assertNotIn(simulator.bill_key, repr(params))
            # not made yet: worth asking again
            simulator.bill_ready = False
            with self.assertRaises(TransientError):
                Gateway(gateway.id).get_provider().fetch_bill(self.today)
            simulator.bill_ready = True
            reconciliation, = Reconciliation.fetch_bills(date=self.today)
        reconciliation = Reconciliation(reconciliation.id)
        self.assertEqual(reconciliation.state, 'matched')
        self.assertIsNone(reconciliation.error)
        line, = reconciliation.lines
        self.assertEqual(
            (line.number, line.kind), (paid.number, 'matched'))
        # JD's GET form of the same fields is served as well
        response = requests.get(
            simulator.url + jdpay_bill.DOWNLOAD, timeout=5,
            params=jdpay_bill.download_params(
                gateway.merchant, simulator.bill_key, self.today))
        self.assertEqual(response.headers[jdpay_bill.RETURN_CODE], '0000')
        self.assertEqual(
            jdpay_bill.parse_order_bill(response.content)[0]['number'],
            paid.number)

    @with_transaction()
    def test_cron_asks_draft_days_again(self):
        """Test the cron (no date) asks again for the draft days of the
        week before yesterday (a bill not made yet then), not older ones,
        nor a day whose bill a person imported"""
        pool = Pool()
        Reconciliation = pool.get('fuel.payment.reconciliation')
        company, _setup, gateway = self.prepare()
        simulator = self.simulator
        yesterday = self.today - dt.timedelta(days=1)
        with set_company(company):
            late, old, imported = Reconciliation.create([{
                        'company': company.id, 'gateway': gateway.id,
                        'date': yesterday - dt.timedelta(days=days)}
                    for days in [3, RETRY_DAYS + 1, 2]])
            simulator.bill_ready = False
            Reconciliation.fetch([late, old])
            Reconciliation.write([imported], {'bill': b'not a bill'})
            self.assertEqual(
                [(r.state, r.source) for r in Reconciliation.browse(
                        [late, old, imported])],
                [('draft', None), ('draft', None), ('draft', 'import')])
            simulator.bill_ready = True
            simulator.bill_requests.clear()
            fetched = Reconciliation.fetch_bills()
        self.assertEqual(
            sorted(r.date for r in fetched), [late.date, yesterday])
        self.assertEqual(len(simulator.bill_requests), 2)
        late, old, imported = Reconciliation.browse([late, old, imported])
        self.assertEqual(
            (late.state, late.source, late.error),
            ('matched', 'download', None))
        self.assertEqual(old.state, 'draft')
        self.assertEqual(
            (imported.state, imported.bill), ('draft', b'not a bill'))

    @with_transaction()
    def test_malformed_bill_kept(self):
        """Test a downloaded bill that is not JD's format is kept with the
        reason on the day, still draft, and the next run replaces it"""
        pool = Pool()
        Reconciliation = pool.get('fuel.payment.reconciliation')
        company, setup, gateway = self.prepare()
        simulator = self.simulator
        with set_company(company):
            paid = self.pay(setup)
            reconciliation = self.reconciliation(company, gateway)
            text = '\r\n'.join(['h,h', '="a",="b",1.00', ''])
            simulator.bill_body = zipped(text)
            Reconciliation.fetch([reconciliation])
            reconciliation = Reconciliation(reconciliation.id)
            self.assertEqual(reconciliation.state, 'draft')
            self.assertEqual(reconciliation.source, 'download')
            self.assertEqual(reconciliation.bill, simulator.bill_body)
            self.assertEqual(reconciliation.error, message(
                    'msg_reconciliation_format',
                    reconciliation=reconciliation.rec_name,
                    error='line 2: 3 cells'))
            self.assertEqual(reconciliation.lines, ())
            simulator.bill_body = None
            reconciliation, = Reconciliation.fetch_bills(date=self.today)
        reconciliation = Reconciliation(reconciliation.id)
        self.assertEqual(reconciliation.state, 'matched')
        self.assertIsNone(reconciliation.error)
        self.assertEqual(
            [(line.number, line.kind) for line in reconciliation.lines],
            [(paid.number, 'matched')])

    @with_transaction()
    def test_bill_imported_by_hand(self):
        """Test a JD bill file imported by hand is matched on a gateway
        without a bill key, whose days are otherwise queried"""
        pool = Pool()
        Gateway = pool.get('fuel.payment.gateway')
        Payment = pool.get('fuel.payment.gateway.payment')
        Refund = pool.get('fuel.payment.gateway.refund')
        Reconciliation = pool.get('fuel.payment.reconciliation')
        company, setup, gateway = self.prepare()
        simulator = self.simulator
        with set_company(company):
            Gateway.write([gateway], {'bill_key': None})
            gateway = Gateway(gateway.id)
            self.assertFalse(gateway.has_bill_key)
            self.assertFalse(gateway.get_provider().bill)
            paid = self.pay(setup)
            partial, = Payment.refund([paid], Decimal('50.00'))
            Refund.submit([partial])
            missing = self.pay(setup, '1')
            del simulator.trades[missing.number]
            reconciliation = self.reconciliation(company, gateway)
            Reconciliation.write([reconciliation], {
                    'bill': b'not a zip', 'bill_name': 'jd.zip'})
            with self.assertRaises(UserError) as cm:
                Reconciliation.match([reconciliation])
            self.assertEqual(cm.exception.message, message(
                    'msg_reconciliation_format',
                    reconciliation=reconciliation.rec_name, error='zip'))
            simulator.bill_cells = 19
            Reconciliation.write([reconciliation], {
                    'bill': simulator.bill(self.today)})
            Reconciliation.match([reconciliation])
        reconciliation = Reconciliation(reconciliation.id)
        self.assertEqual(reconciliation.source, 'import')
        self.assertEqual(simulator.bill_requests, [])
        self.assertEqual({
                (line.type, line.number, line.kind)
                for line in reconciliation.lines}, {
                ('payment', missing.number, 'missing_channel'),
                ('payment', paid.number, 'matched'),
                ('refund', paid.number, 'matched'),
                })
        # 0.91 kept on 151.60, 0.30 given back on 50.00
        self.assertEqual(reconciliation.fee, Decimal('0.61'))
