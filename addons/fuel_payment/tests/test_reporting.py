# This file is part of fuelpay.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
import datetime as dt
import unittest
from collections import defaultdict
from decimal import Decimal

from trytond.model.exceptions import AccessError
from trytond.modules.company.tests import create_company, set_company
from trytond.pool import Pool
from trytond.tests.test_tryton import (
    DB_NAME,
    activate_module,
    drop_db,
    with_transaction,
)
from trytond.tools import timezone as tz
from trytond.transaction import Transaction, TransactionError, check_access

from addons.fuel_station.tests.test_module import create_station, create_user

from .tools import (
    TEST_MODULES,
    create_grade,
    create_payment_setup,
    create_point,
    fill,
)

TIMEZONE = 'Asia/Shanghai'
ZERO = Decimal(0)


def local(date, hour, minute=0):
    "Return the naive UTC datetime of hour:minute on date in TIMEZONE"
    return dt.datetime.combine(
        date, dt.time(hour, minute), tz.get_tzinfo(TIMEZONE)).astimezone(
        tz.UTC).replace(tzinfo=None)


def local_date(value):
    "Return the date in TIMEZONE of value, a naive UTC datetime"
    return value.replace(tzinfo=tz.UTC).astimezone(
        tz.get_tzinfo(TIMEZONE)).date()


def add_nozzle(station, number, grade):
    "Add to station a dispenser, a tank of grade and nozzle number on it"
    pool = Pool()
    Dispenser = pool.get('fuel.station.dispenser')
    Location = pool.get('stock.location')
    Nozzle = pool.get('fuel.station.nozzle')
    Tank = pool.get('fuel.station.tank')
    dispenser, = Dispenser.create([{
                'station': station.id, 'name': f"Island {number}",
                'protocol': 'dart', 'connection': 'udp',
                'host': '127.0.0.1', 'port': 5000 + number,
                'bus_address': 0x50 + number,
                }])
    location, = Location.create([{
                'name': f"{station.code} tank {number}", 'type': 'storage',
                'parent': station.warehouse.storage_location.id,
                }])
    tank, = Tank.create([{
                'station': station.id, 'name': f"Tank {number}",
                'grade': grade.id, 'capacity': Decimal(30000),
                'location': location.id,
                }])
    nozzle, = Nozzle.create([{
                'station': station.id, 'dispenser': dispenser.id,
                'number': number, 'station_number': number,
                'grade': grade.id, 'tank': tank.id,
                }])
    return nozzle


def create_attendant(login, company, stations):
    "Create an attendant user who is an employee of company"
    pool = Pool()
    Employee = pool.get('company.employee')
    Party = pool.get('party.party')
    User = pool.get('res.user')
    party, = Party.create([{'name': login.title()}])
    employee, = Employee.create([{
                'party': party.id, 'company': company.id}])
    user = create_user(login, company, 'role_attendant', stations)
    User.write([user], {
            'employees': [('add', [employee.id])],
            'employee': employee.id,
            })
    return user, employee


def setup_operator(company):
    """Set up company (in TIMEZONE) with two stations, two grades, three
    nozzles, prices for the last ten days and two attendants; return a
    dict like create_payment_setup's plus these"""
    pool = Pool()
    Company = pool.get('company.company')
    Price = pool.get('fuel.station.price')
    Shift = pool.get('fuel.station.shift')
    Station = pool.get('fuel.station')
    Company.write([company], {'timezone': TIMEZONE})
    setup = create_payment_setup(company, 'A1')
    grade = setup['grade']
    premium = create_grade("95# A", company, setup['accounts'])
    premium_nozzle = add_nozzle(setup['station'], 2, premium)
    other = create_station(company, 'A2')
    other_nozzle = add_nozzle(other, 1, grade)
    Station.write([other], {'point': create_point(company, other, 'A2').id})
    shift, = Shift.create([{'station': other.id}])
    Shift.open([shift])
    price, = Price.create([{
                'company': company.id,
                'name': "Prices A",
                'effective_date': dt.datetime.now() - dt.timedelta(days=10),
                'lines': [('create', [
                            {'grade': grade.id,
                                'unit_price': Decimal('7.5000')},
                            {'grade': premium.id,
                                'unit_price': Decimal('8.1000')},
                            ])],
                }])
    Price.write([price], {'state': 'active'})
    stations = [setup['station'], other]
    setup['attendants'] = [
        create_attendant(login, company, stations) for login in ['ann', 'bob']]
    setup.update({
            'premium': premium, 'premium_nozzle': premium_nozzle,
            'other': other, 'other_nozzle': other_nozzle,
            })
    return setup


def sell(setup, user, station, nozzle, quantity, end_date, payments,
        discount=None):
    """Ingest a fill at nozzle (its number) of station ended at end_date,
    and have user pay it by payments, a list of (kind, amount or None for
    the rest, extra keywords); return the transaction and the order"""
    pool = Pool()
    FuelTransaction = pool.get('fuel.payment.transaction')
    Order = pool.get('fuel.payment.order')
    result, = FuelTransaction.ingest([fill(
                station, quantity, nozzle=nozzle,
                end_date=end_date.isoformat())])
    assert result['state'] == 'to_pay', result
    transaction = FuelTransaction(result['id'])
    if discount:
        transaction.set_discount(Decimal(discount))
        transaction.save()
    with Transaction().set_user(user.id):
        order = Order.create_for([transaction])
        for kind, amount, extra in payments:
            if amount is None:
                amount = Order(order.id).amount_to_pay
            Order.add_payment(order, setup['methods'][kind], amount, **extra)
        Order.process([order])
    return transaction, order


def make_sales(setup, day1, day2):
    """Sell on the local days day1 and day2, with a discount, change, split
    tender, a refund, an unpaid and a voided fill; return the refunded
    order"""
    pool = Pool()
    FuelTransaction = pool.get('fuel.payment.transaction')
    Order = pool.get('fuel.payment.order')
    (ann, _), (bob, _) = setup['attendants']
    station, other = setup['station'], setup['other']
    cash = [('cash', None, {'tendered': '1000'})]
    wechat = [('wechat', None, {'reference': 'wx'})]
    sell(setup, ann, station, 1, '40.123', local(day1, 8), cash)
    sell(setup, ann, station, 1, '10.5', local(day1, 9), wechat,
        discount='2.00')
    sell(setup, bob, station, 1, '20', local(day1, 10), cash)
    sell(setup, bob, station, 2, '33.333', local(day1, 11), [
            ('cash', '100', {}),
            ('alipay', None, {'reference': 'ali'}),
            ])
    sell(setup, ann, other, 1, '5.001', local(day1, 12), wechat)
    # half past midnight local is still the previous day in UTC
    sell(setup, ann, station, 2, '12.345', local(day2, 0, 30), cash)
    sell(setup, bob, station, 1, '60', local(day2, 23, 50), wechat)
    _, refunded = sell(setup, bob, other, 1, '7', local(day2, 9), cash)
    Order.do_refund([refunded], "wrong pump")
    unpaid, = FuelTransaction.ingest([fill(
                station, '3', end_date=local(day2, 10).isoformat())])
    assert unpaid['state'] == 'to_pay', unpaid
    voided, = FuelTransaction.ingest([fill(
                other, '4', end_date=local(day2, 11).isoformat())])
    FuelTransaction.void([FuelTransaction(voided['id'])], "test fill")
    return refunded


class FuelPaymentReportingTestCase(unittest.TestCase):
    """Test the daily sales reports of Fuel Payment

    A plain TestCase: ModuleTestCase's generic checks of the module run in
    test_module.py already.  The sales are made and committed once for the
    class; each test reads them in a transaction rolled back at its end."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        drop_db()
        activate_module(TEST_MODULES)
        cls.today = local_date(dt.datetime.now())
        cls.day1 = cls.today - dt.timedelta(days=3)
        cls.day2 = cls.today - dt.timedelta(days=2)
        extras = {}
        while True:
            with Transaction().start(DB_NAME, 1, **extras) as transaction:
                try:
                    cls.ids = cls.make_data()
                except TransactionError as exception:
                    # a table to lock first, as with_transaction does
                    transaction.rollback()
                    exception.fix(extras)
                    continue
                transaction.commit()
                break

    @classmethod
    def make_data(cls):
        "Sell for two operators; return the ids of what the tests read"
        company = create_company("Operator A")
        other_company = create_company("Operator B")
        with set_company(other_company):
            other_setup = create_payment_setup(other_company, 'B1')
            sell(other_setup, create_user(
                    'b_admin', other_company, 'role_operator_admin'),
                other_setup['station'], 1, '10', dt.datetime.now(),
                [('cash', None, {})])
        with set_company(company):
            setup = setup_operator(company)
            refunded = make_sales(setup, cls.day1, cls.day2)
        ids = {
            'company': company.id,
            'other_company': other_company.id,
            'refunded': refunded.id,
            'methods': {k: m.id for k, m in setup['methods'].items()},
            'attendants': [(u.id, e.id) for u, e in setup['attendants']],
            }
        for name in [
                'station', 'grade', 'nozzle', 'other', 'premium',
                'premium_nozzle']:
            ids[name] = setup[name].id
        return ids

    @classmethod
    def tearDownClass(cls):
        super().tearDownClass()
        drop_db()

    def records(self):
        "Return the records of the set-up, as ids, in this transaction"
        pool = Pool()
        models = {
            'company': 'company.company',
            'other_company': 'company.company',
            'refunded': 'fuel.payment.order',
            'station': 'fuel.station',
            'other': 'fuel.station',
            'grade': 'product.product',
            'premium': 'product.product',
            'nozzle': 'fuel.station.nozzle',
            'premium_nozzle': 'fuel.station.nozzle',
            }
        records = {
            k: pool.get(m)(self.ids[k]) for k, m in models.items()}
        Method = pool.get('sale.point.payment.method')
        User = pool.get('res.user')
        Employee = pool.get('company.employee')
        records['methods'] = {
            k: Method(i) for k, i in self.ids['methods'].items()}
        records['attendants'] = [
            (User(u), Employee(e)) for u, e in self.ids['attendants']]
        return records

    def expected_sales(self, station=None, dates=None):
        "Sum the sold transactions in Python like the report groups them"
        pool = Pool()
        FuelTransaction = pool.get('fuel.payment.transaction')
        expected = defaultdict(lambda: [0, ZERO, ZERO, ZERO, ZERO])
        for transaction in FuelTransaction.search([
                    ('state', 'in', ['paid', 'posted']),
                    ('company', '=', Transaction().context['company']),
                    ]):
            date = local_date(transaction.end_date)
            if station and transaction.station != station:
                continue
            if dates and not (dates[0] <= date <= dates[1]):
                continue
            key = (
                date, transaction.station, transaction.grade,
                transaction.nozzle, transaction.order.employee)
            row = expected[key]
            row[0] += 1
            row[1] += transaction.quantity
            row[2] += transaction.amount
            row[3] += transaction.discount
            row[4] += transaction.amount_due
        return {k: tuple(v) for k, v in expected.items()}

    def expected_payments(self, dates=None):
        "Sum the payments of paid orders in Python like the report"
        pool = Pool()
        Payment = pool.get('fuel.payment.order.payment')
        expected = defaultdict(lambda: [0, ZERO])
        for payment in Payment.search([
                    ('order.state', 'in', ['paid', 'posted']),
                    ('order.company', '=',
                        Transaction().context['company']),
                    ]):
            date = local_date(payment.order.date)
            if dates and not (dates[0] <= date <= dates[1]):
                continue
            key = (date, payment.order.station, payment.method)
            expected[key][0] += 1
            expected[key][1] += payment.amount
        return {k: tuple(v) for k, v in expected.items()}

    def report_sales(self):
        pool = Pool()
        DailySales = pool.get('fuel.payment.report.daily_sales')
        return {
            (r.date, r.station, r.grade, r.nozzle, r.employee): (
                r.number, r.quantity, r.amount, r.discount, r.amount_due)
            for r in DailySales.search([])}

    def report_payments(self):
        pool = Pool()
        Method = pool.get('fuel.payment.report.daily_sales.method')
        return {
            (r.date, r.station, r.method): (r.number, r.amount)
            for r in Method.search([])}

    @with_transaction()
    def test_daily_sales_totals(self):
        "Test the daily sales match a Python sum of the sold fills"
        pool = Pool()
        DailySales = pool.get('fuel.payment.report.daily_sales')
        r = self.records()
        company, station, grade = r['company'], r['station'], r['grade']
        (_, ann), _ = r['attendants']
        day1, day2 = self.day1, self.day2
        with set_company(company):
            expected = self.expected_sales()
            sales = self.report_sales()
            rows = DailySales.search([])
            again = DailySales.search([])

        self.assertEqual(sales, expected)
        # 7 fills paid (the refunded, unpaid and voided ones are no
        # sales) in 6 rows: ann sold twice at nozzle 1 of A1 on day1
        self.assertEqual(len(rows), 6)
        self.assertEqual(sum(r.number for r in rows), 7)
        # 40.123 l and 10.5 l at 7.50 less 2.00 of discount
        self.assertEqual(
            sales[(day1, station, grade, r['nozzle'], ann)],
            (2, Decimal('50.623'), Decimal('379.67'), Decimal('2.00'),
                Decimal('377.67')))
        # 00:30 in Shanghai is 16:30 UTC the day before: a day2 sale
        self.assertEqual(
            sales[(day2, station, r['premium'], r['premium_nozzle'], ann)],
            (1, Decimal('12.345'), Decimal('99.99'), ZERO,
                Decimal('99.99')))
        self.assertEqual(
            sum(r.amount_due for r in rows), Decimal('1385.17'))
        self.assertEqual({r.currency for r in rows}, {company.currency})
        self.assertEqual(
            {r.unit for r in rows}, {grade.default_uom})
        # ids stay the same from one read to the next
        self.assertEqual(again, rows)

    @with_transaction()
    def test_daily_sales_per_method_totals(self):
        "Test the money per method matches a Python sum of the payments"
        pool = Pool()
        Order = pool.get('fuel.payment.order')
        r = self.records()
        methods, station, today = r['methods'], r['station'], self.today
        yesterday = today - dt.timedelta(days=1)
        with set_company(r['company']):
            # orders are dated when taken: date two of them yesterday
            orders = Order.search([
                    ('state', '=', 'paid'),
                    ('station', '=', station.id),
                    ], order=[('id', 'ASC')], limit=2)
            Order.write(orders, {'date': local(yesterday, 12)})
            expected = self.expected_payments()
            payments = self.report_payments()
            sales = self.report_sales()

        self.assertEqual(payments, expected)
        self.assertEqual(len(payments), 6)
        # ann's first fill: 40.123 l at 7.50, paid 1000 in cash
        self.assertEqual(
            payments[(yesterday, station, methods['cash'])],
            (1, Decimal('300.92')))
        self.assertEqual(
            payments[(today, station, methods['cash'])],
            (3, Decimal('349.99')))
        # the refunded cash payment at A2 is no money taken
        self.assertEqual(r['refunded'].station, r['other'])
        self.assertEqual(
            [k[2] for k in payments if k[1] == r['other']],
            [methods['wechat']])
        # change is given back: the money is what the fills were due
        self.assertEqual(
            sum(v[1] for v in payments.values()),
            sum(v[4] for v in sales.values()))

    @with_transaction()
    def test_context_filters(self):
        "Test the dates and the station of the context filter the rows"
        pool = Pool()
        DailySales = pool.get('fuel.payment.report.daily_sales')
        Context = pool.get('fuel.payment.report.daily_sales.context')
        Method = pool.get('fuel.payment.report.daily_sales.method')
        r = self.records()
        company, other = r['company'], r['other']
        day1, day2, today = self.day1, self.day2, self.today
        with set_company(company):
            self.assertEqual(Context.default_company(), company.id)
            self.assertEqual(Context.default_to_date(), today)
            self.assertEqual(
                Context.default_from_date(), today.replace(day=1))
            with Transaction().set_context(from_date=day2, to_date=day2):
                sales = self.report_sales()
                self.assertEqual(
                    sales, self.expected_sales(dates=(day2, day2)))
            self.assertEqual({k[0] for k in sales}, {day2})
            self.assertEqual(sum(v[0] for v in sales.values()), 2)
            with Transaction().set_context(to_date=day1):
                sales = self.report_sales()
                self.assertEqual(
                    sales, self.expected_sales(dates=(day1, day1)))
            self.assertEqual(sum(v[0] for v in sales.values()), 5)
            with Transaction().set_context(from_date=day1, station=other.id):
                sales = self.report_sales()
                self.assertEqual(sales, self.expected_sales(station=other))
            self.assertEqual({k[1] for k in sales}, {other})
            self.assertEqual(sum(v[0] for v in sales.values()), 1)
            with Transaction().set_context(
                    from_date=today + dt.timedelta(days=1)):
                self.assertEqual(DailySales.search([]), [])
                self.assertEqual(Method.search([]), [])
            with Transaction().set_context(from_date=today, to_date=today):
                self.assertEqual(len(Method.search([])), 4)
                self.assertEqual(
                    self.report_payments(),
                    self.expected_payments(dates=(today, today)))
            # a context without operator shows nothing
            with Transaction().set_context(company=None):
                self.assertEqual(DailySales.search([]), [])

    @with_transaction()
    def test_isolation(self):
        "Test operators, station managers and attendants see what is theirs"
        pool = Pool()
        DailySales = pool.get('fuel.payment.report.daily_sales')
        Method = pool.get('fuel.payment.report.daily_sales.method')
        r = self.records()
        company, other_company = r['company'], r['other_company']
        with set_company(other_company):
            theirs = DailySales.search([])
        with set_company(company):
            mine = DailySales.search([])
            admin = create_user('a_admin', company, 'role_operator_admin')
            accountant = create_user('a_acc', company, 'role_accountant')
            manager = create_user(
                'a_manager', company, 'role_station_manager', [r['other']])
        (attendant, _), _ = r['attendants']
        self.assertEqual(len(theirs), 1)
        self.assertEqual(len(mine), 6)

        def read_as(user, company=company):
            with Transaction().set_user(user.id), \
                    Transaction().set_context(
                        company=company.id, companies=[user.company.id]), \
                    check_access():
                return DailySales.search([]), Method.search([])

        self.assertEqual(read_as(admin)[0], mine)
        self.assertEqual(read_as(accountant)[0], mine)
        sales, payments = read_as(manager)
        self.assertEqual({r.station for r in sales}, {r['other']})
        self.assertEqual({r.station for r in payments}, {r['other']})
        with self.assertRaises(AccessError):
            read_as(attendant)
        # another operator's rows are not read by asking for them
        self.assertEqual(read_as(admin, other_company), ([], []))
        with Transaction().set_user(admin.id), \
                Transaction().set_context(
                    company=other_company.id, companies=[company.id]), \
                check_access(), self.assertRaises(AccessError):
            DailySales.read([theirs[0].id], ['amount_due'])
