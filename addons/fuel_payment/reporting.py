# This file is part of fuelpay.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""Daily sales reports (日报): fuel sold per day, station, grade, nozzle and
attendant, and money taken per day, station and payment method

Both are SQL views (`table_query`) grouped in the database, so a month of
a busy operator reads as a few hundred rows instead of every fill. A day is
the operator's local day (its timezone, else the server's), like the daily
limits of the wallets."""
import datetime as dt

from sql import Cast
from sql.aggregate import Count, Min, Sum
from sql.functions import AtTimeZone, Function, Round
from trytond import backend
from trytond.model import ModelSQL, ModelView, fields
from trytond.modules.currency.fields import Monetary
from trytond.pool import Pool
from trytond.pyson import Eval, If
from trytond.tools import timezone as tz
from trytond.transaction import Transaction

from .transaction import QUANTITY_DIGITS

# the transaction and order states that are sales
SALE_STATES = ['paid', 'posted']
ORDER_SALE_STATES = ['paid', 'posted']


class SQLiteDate(Function):
    __slots__ = ()
    _function = 'DATE'


def company_timezone(company_id):
    "Return the name of the timezone of the operator, else the server's"
    pool = Pool()
    Company = pool.get('company.company')
    if company_id is not None:
        timezone = Company(company_id).timezone
        if timezone:
            return timezone
    return getattr(tz.SERVER, 'key', 'UTC')


def local_date(column, timezone):
    """Return the SQL date, in timezone, of column, a naive UTC timestamp
    as the DateTime fields store them"""
    if backend.name == 'sqlite':
        # SQLite knows no timezone: shift by the zone's offset of today,
        # exact for zones without daylight saving time such as China's
        offset = dt.datetime.now(tz.get_tzinfo(timezone)).utcoffset()
        return SQLiteDate(column, '%+d seconds' % offset.total_seconds())
    return Cast(AtTimeZone(AtTimeZone(column, 'UTC'), timezone), 'DATE')


def utc_bounds(from_date, to_date, timezone):
    """Return the naive UTC datetimes where the local days from_date and
    to_date (included) start and end; None where the date is None"""
    tzinfo = tz.get_tzinfo(timezone)

    def start(date):
        return dt.datetime.combine(date, dt.time(), tzinfo).astimezone(
            tz.UTC).replace(tzinfo=None)
    return (
        start(from_date) if from_date else None,
        start(to_date + dt.timedelta(days=1)) if to_date else None)


class DailyReportMixin(ModelSQL, ModelView):
    __slots__ = ()
    date = fields.Date("Date")
    company = fields.Many2One('company.company', "Operator")
    station = fields.Many2One('fuel.station', "Station")
    currency = fields.Many2One('currency.currency', "Currency")

    @classmethod
    def __setup__(cls):
        super().__setup__()
        cls._order = [
            ('date', 'DESC'),
            ('station', 'ASC'),
            ('id', 'ASC'),
            ]

    @classmethod
    def _context_where(cls, company, station, date):
        """Return the SQL condition of the context (company, station,
        from_date, to_date) on the columns company, station and date (a
        naive UTC timestamp)"""
        context = Transaction().context
        company_id = context.get('company')
        where = company == company_id
        if context.get('station'):
            where &= station == context['station']
        start, end = utc_bounds(
            context.get('from_date'), context.get('to_date'),
            company_timezone(company_id))
        if start:
            where &= date >= start
        if end:
            where &= date < end
        return where

    @classmethod
    def _local_date(cls, column):
        context = Transaction().context
        return local_date(column, company_timezone(context.get('company')))

    @classmethod
    def _sum(cls, field, column, digits):
        """Sum of column rounded to digits: exact on PostgreSQL already,
        but SQLite sums in floating point"""
        return Round(field.sql_cast(Sum(column)), digits)

    @classmethod
    def _join_currency(cls, line):
        """Return line, a query of one row per fill or payment with its
        local date, joined to the operator's currency, and the currency
        table

        The rows are grouped by the date outside the query that computes
        it: PostgreSQL does not match the timezone parameters of an
        expression in the select list with those in GROUP BY."""
        pool = Pool()
        Company = pool.get('company.company')
        Currency = pool.get('currency.currency')
        company = Company.__table__()
        currency = Currency.__table__()
        from_item = (line
            .join(company, condition=line.company == company.id)
            .join(currency, condition=company.currency == currency.id))
        return from_item, currency


class DailySales(DailyReportMixin):
    "Fuel Daily Sales"
    __name__ = 'fuel.payment.report.daily_sales'

    grade = fields.Many2One(
        'product.product', "Grade",
        context={'company': Eval('company', -1)}, depends={'company'})
    nozzle = fields.Many2One('fuel.station.nozzle', "Nozzle")
    employee = fields.Many2One(
        'company.employee', "Attendant",
        help="The attendant who took the order.")
    number = fields.Integer("Fills", help="The number of fills paid.")
    quantity = fields.Numeric("Quantity", digits=QUANTITY_DIGITS)
    unit = fields.Function(
        fields.Many2One('product.uom', "Unit"), 'on_change_with_unit')
    amount = Monetary(
        "Amount", currency='currency', digits='currency',
        help="The fuel at the prices in force, before discounts.")
    discount = Monetary("Discount", currency='currency', digits='currency')
    amount_due = Monetary(
        "Amount Due", currency='currency', digits='currency',
        help="What the drivers paid: the amount less the discounts.")

    @classmethod
    def table_query(cls):
        pool = Pool()
        FuelTransaction = pool.get('fuel.payment.transaction')
        Order = pool.get('fuel.payment.order')
        transaction = FuelTransaction.__table__()
        order = Order.__table__()

        where = transaction.state.in_(SALE_STATES)
        where &= cls._context_where(
            transaction.company, transaction.station, transaction.end_date)
        line = (transaction
            .join(order, 'LEFT', condition=transaction.order == order.id)
            .select(
                transaction.id.as_('id'),
                cls._local_date(transaction.end_date).as_('date'),
                transaction.company.as_('company'),
                transaction.station.as_('station'),
                transaction.grade.as_('grade'),
                transaction.nozzle.as_('nozzle'),
                order.employee.as_('employee'),
                transaction.quantity.as_('quantity'),
                transaction.amount.as_('amount'),
                transaction.discount.as_('discount'),
                transaction.amount_due.as_('amount_due'),
                where=where))
        from_item, currency = cls._join_currency(line)
        return from_item.select(
            Min(line.id).as_('id'),
            line.date.as_('date'),
            line.company.as_('company'),
            line.station.as_('station'),
            line.grade.as_('grade'),
            line.nozzle.as_('nozzle'),
            line.employee.as_('employee'),
            currency.id.as_('currency'),
            Count(line.id).as_('number'),
            cls._sum(cls.quantity, line.quantity,
                QUANTITY_DIGITS[1]).as_('quantity'),
            cls._sum(cls.amount, line.amount,
                currency.digits).as_('amount'),
            cls._sum(cls.discount, line.discount,
                currency.digits).as_('discount'),
            cls._sum(cls.amount_due, line.amount_due,
                currency.digits).as_('amount_due'),
            group_by=[
                line.date, line.company, line.station, line.grade,
                line.nozzle, line.employee, currency.id, currency.digits])

    @fields.depends('grade')
    def on_change_with_unit(self, name=None):
        return self.grade.default_uom if self.grade else None


class DailySalesPaymentMethod(DailyReportMixin):
    "Fuel Daily Sales per Payment Method"
    __name__ = 'fuel.payment.report.daily_sales.method'

    method = fields.Many2One('sale.point.payment.method', "Method")
    number = fields.Integer(
        "Payments", help="The number of payments taken.")
    amount = Monetary(
        "Amount", currency='currency', digits='currency',
        help="The money kept: cash change is already given back.")

    @classmethod
    def __setup__(cls):
        super().__setup__()
        cls.date.help = "The day the order was paid."

    @classmethod
    def table_query(cls):
        pool = Pool()
        Order = pool.get('fuel.payment.order')
        Payment = pool.get('fuel.payment.order.payment')
        payment = Payment.__table__()
        order = Order.__table__()

        where = order.state.in_(ORDER_SALE_STATES)
        where &= cls._context_where(order.company, order.station, order.date)
        line = (payment
            .join(order, condition=payment.order == order.id)
            .select(
                payment.id.as_('id'),
                cls._local_date(order.date).as_('date'),
                order.company.as_('company'),
                order.station.as_('station'),
                payment.method.as_('method'),
                payment.amount.as_('amount'),
                where=where))
        from_item, currency = cls._join_currency(line)
        return from_item.select(
            Min(line.id).as_('id'),
            line.date.as_('date'),
            line.company.as_('company'),
            line.station.as_('station'),
            line.method.as_('method'),
            currency.id.as_('currency'),
            Count(line.id).as_('number'),
            cls._sum(cls.amount, line.amount,
                currency.digits).as_('amount'),
            group_by=[
                line.date, line.company, line.station, line.method,
                currency.id, currency.digits])


class DailySalesContext(ModelView):
    "Fuel Daily Sales Context"
    __name__ = 'fuel.payment.report.daily_sales.context'

    company = fields.Many2One('company.company', "Operator", required=True)
    from_date = fields.Date(
        "From Date",
        domain=[
            If(Eval('to_date') & Eval('from_date'),
                ('from_date', '<=', Eval('to_date')),
                ()),
            ])
    to_date = fields.Date(
        "To Date",
        domain=[
            If(Eval('from_date') & Eval('to_date'),
                ('to_date', '>=', Eval('from_date')),
                ()),
            ])
    station = fields.Many2One(
        'fuel.station', "Station",
        domain=[('company', '=', Eval('company', -1))],
        help="Leave empty for every station of the operator.")

    @classmethod
    def default_company(cls):
        return Transaction().context.get('company')

    @classmethod
    def default_from_date(cls):
        pool = Pool()
        Date = pool.get('ir.date')
        context = Transaction().context
        if 'from_date' in context:
            return context['from_date']
        return Date.today().replace(day=1)

    @classmethod
    def default_to_date(cls):
        pool = Pool()
        Date = pool.get('ir.date')
        context = Transaction().context
        if 'to_date' in context:
            return context['to_date']
        return Date.today()

    @classmethod
    def default_station(cls):
        return Transaction().context.get('station')
