# This file is part of fuelpay.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""Shift money: what each payment method should hold at the end of a
shift, the cash counted, the variance, the handover report and the
grouped posting of the shift's sales"""
import datetime as dt
from collections import defaultdict
from decimal import Decimal

from sql import Null
from sql.aggregate import Count
from sql.functions import CurrentTimestamp
from trytond.i18n import gettext
from trytond.model import ModelSQL, ModelView, fields
from trytond.modules.currency.fields import Monetary
from trytond.modules.product import round_price
from trytond.pool import Pool, PoolMeta
from trytond.pyson import Bool, Eval
from trytond.report import Report
from trytond.transaction import Transaction, without_check_access

from .exceptions import SettlementError, ShiftMoneyError

PAID = ['paid', 'posted']
# ids per IN (...) clause
CHUNK = 500


class Shift(metaclass=PoolMeta):
    __name__ = 'fuel.station.shift'
    counted_cash = Monetary(
        "Counted Cash", currency='currency', digits='currency',
        states={'readonly': Eval('state') != 'open'},
        help="The cash counted in the drawer at the end of the shift.")
    expected_cash = fields.Function(Monetary(
            "Expected Cash", currency='currency', digits='currency'),
        'get_money')
    cash_variance = fields.Function(Monetary(
            "Cash Variance", currency='currency', digits='currency',
            help="Counted minus expected cash."),
        'get_money')
    method_amounts = fields.One2Many(
        'fuel.payment.shift.method_amount', 'shift', "Payment Methods",
        readonly=True)
    transactions = fields.One2Many(
        'fuel.payment.transaction', 'shift', "Transactions", readonly=True)
    move = fields.Many2One(
        'account.move', "Account Move", readonly=True, ondelete='RESTRICT')
    settled = fields.Function(
        fields.Boolean("Settled"), 'on_change_with_settled')
    currency = fields.Function(
        fields.Many2One('currency.currency', "Currency"),
        'on_change_with_currency')

    @classmethod
    def __setup__(cls):
        super().__setup__()
        cls._buttons.update({
                'settle': {
                    'invisible': (
                        (Eval('state') != 'closed') | Bool(Eval('move'))),
                    'depends': ['state', 'move'],
                    },
                })

    @fields.depends('move')
    def on_change_with_settled(self, name=None):
        return bool(self.move)

    @fields.depends('station', '_parent_station.company')
    def on_change_with_currency(self, name=None):
        if self.station:
            return self.station.company.currency

    @classmethod
    def expected_amounts(cls, shifts):
        """Return {shift id: {method id: amount}} of the payments kept by
        the shift's paid orders (orders refunded by reopening their sale
        count for nothing), by its wallet recharges, and given back by its
        return sales"""
        pool = Pool()
        Order = pool.get('fuel.payment.order')
        Payment = pool.get('fuel.payment.order.payment')
        order = Order.__table__()
        payment = Payment.__table__()
        sale = pool.get('sale.point.sale').__table__()
        sale_payment = pool.get('sale.point.payment').__table__()
        cursor = Transaction().connection.cursor()
        result = {s.id: {} for s in shifts}
        for sub in _chunks([s.id for s in shifts]):
            cursor.execute(*payment.join(
                    order, condition=payment.order == order.id
                    ).select(
                    order.shift, payment.method, payment.amount,
                    where=order.shift.in_(sub) & (
                        order.state.in_(PAID)
                        # refunded by a return sale: still booked here
                        | ((order.state == 'refunded')
                            & (order.refund_sale != Null)))))
            rows = list(cursor)
            # the POS sales of the shift without order: wallet recharges
            # and the return sales of refunds
            cursor.execute(*sale_payment.join(
                    sale, condition=sale_payment.sale == sale.id
                    ).join(order, 'LEFT', condition=order.sale == sale.id
                    ).select(
                    sale.fuel_shift, sale_payment.method, sale_payment.amount,
                    where=sale.fuel_shift.in_(sub)
                    & sale.state.in_(['done', 'posted'])
                    & (order.id == Null)))
            rows.extend(cursor)
            for shift_id, method_id, amount in rows:
                amounts = result[shift_id]
                amounts[method_id] = (
                    amounts.get(method_id, Decimal(0)) + Decimal(amount))
        return result

    @classmethod
    def get_money(cls, shifts, names):
        pool = Pool()
        Method = pool.get('sale.point.payment.method')
        expected = cls.expected_amounts(shifts)
        result = {n: {} for n in names}
        cash_ids = {m.id for m in Method.search([
                    ('fuel_kind', '=', 'cash'),
                    ('active', 'in', [True, False]),
                    ])}
        for shift in shifts:
            cash = sum(
                (a for m, a in expected[shift.id].items() if m in cash_ids),
                Decimal(0))
            if 'expected_cash' in result:
                result['expected_cash'][shift.id] = cash
            if 'cash_variance' in result:
                result['cash_variance'][shift.id] = (
                    shift.counted_cash - cash
                    if shift.counted_cash is not None else None)
        return result

    @classmethod
    def close(cls, shifts):
        pool = Pool()
        FuelTransaction = pool.get('fuel.payment.transaction')
        Order = pool.get('fuel.payment.order')
        MethodAmount = pool.get('fuel.payment.shift.method_amount')
        Session = pool.get('sale.point.cash.session')
        cls.adopt(shifts)
        for shift in shifts:
            fuelling = FuelTransaction.search([
                    ('station', '=', shift.station.id),
                    ('state', '=', 'fuelling'),
                    ], limit=1)
            if fuelling:
                raise ShiftMoneyError(gettext(
                        'fuel_payment.msg_shift_close_fuelling',
                        shift=shift.rec_name,
                        transaction=fuelling[0].rec_name))
            drafts = Order.search([
                    ('shift', '=', shift.id),
                    ('state', '=', 'draft'),
                    ], limit=1)
            if drafts:
                raise ShiftMoneyError(gettext(
                        'fuel_payment.msg_shift_close_draft_order',
                        shift=shift.rec_name,
                        order=drafts[0].rec_name))
        super().close(shifts)
        expected = cls.expected_amounts(shifts)
        to_create, sessions = [], []
        for shift in shifts:
            if shift.counted_cash is None:
                cls.write([shift], {'counted_cash': Decimal(0)})
            MethodAmount.delete(shift.method_amounts)
            for method_id, amount in expected[shift.id].items():
                to_create.append({
                        'shift': shift.id,
                        'method': method_id,
                        'expected': amount,
                        })
            point = getattr(shift.station, 'point', None)
            if point:
                sessions.extend(Session.search([
                            ('point', '=', point.id),
                            ('state', '=', 'open'),
                            ]))
        with without_check_access():
            MethodAmount.create(to_create)
            for session in sessions:
                # the books keep what the sales say; the variance stays
                # on the shift for the manager
                session.end_amount = session.start_amount + session.balance
            Session.save(sessions)
            Session.close(sessions)

    @classmethod
    def adopt(cls, shifts):
        """Give the closing shifts what their station took while no shift
        was open (fills, orders, recharges), so that their money is
        counted and settled with them"""
        pool = Pool()
        FuelTransaction = pool.get('fuel.payment.transaction')
        Order = pool.get('fuel.payment.order')
        Sale = pool.get('sale.point.sale')
        transaction = FuelTransaction.__table__()
        order = Order.__table__()
        sale = Sale.__table__()
        cursor = Transaction().connection.cursor()
        for shift in shifts:
            station = shift.station
            cursor.execute(*transaction.update(
                    [transaction.shift], [shift.id],
                    where=(transaction.station == station.id)
                    & (transaction.shift == Null)
                    & transaction.state.in_(
                        ['review', 'to_pay', 'paid', 'posted'])))
            cursor.execute(*order.update(
                    [order.shift], [shift.id],
                    where=(order.station == station.id)
                    & (order.shift == Null)))
            point = getattr(station, 'point', None)
            if point:
                cursor.execute(*sale.update(
                        [sale.fuel_shift], [shift.id],
                        where=(sale.point == point.id)
                        & (sale.fuel_shift == Null)
                        & (sale.state == 'done')))
        # the records read before see the new shift
        for Model in [FuelTransaction, Order, Sale]:
            _clear_cache(Model)

    @classmethod
    @ModelView.button
    def settle(cls, shifts):
        """Post the closed shifts' sales as one account move per shift
        and one stock move per grade and tank"""
        for shift in shifts:
            if shift.state != 'closed':
                raise SettlementError(gettext(
                        'fuel_payment.msg_shift_settle_closed',
                        shift=shift.rec_name))
            if shift.move:
                raise SettlementError(gettext(
                        'fuel_payment.msg_shift_settled',
                        shift=shift.rec_name))
        with without_check_access():
            for shift in shifts:
                shift._settle()

    def _settle(self):
        pool = Pool()
        Sale = pool.get('sale.point.sale')
        SaleLine = pool.get('sale.point.sale.line')
        SalePayment = pool.get('sale.point.payment')
        Method = pool.get('sale.point.payment.method')
        Point = pool.get('sale.point')
        Product = pool.get('product.product')
        StockMove = pool.get('stock.move')
        AccountMove = pool.get('account.move')
        Order = pool.get('fuel.payment.order')
        FuelTransaction = pool.get('fuel.payment.transaction')
        cursor = Transaction().connection.cursor()
        sale = Sale.__table__()
        sale_line = SaleLine.__table__()
        sale_payment = SalePayment.__table__()
        order = Order.__table__()
        fuel_transaction = FuelTransaction.__table__()

        # the done sales' lines as plain rows, in the order of Sale.search
        # and of Sale.lines, to sum them as sale_point computes each line
        done = (sale.fuel_shift == self.id) & (sale.state == 'done')
        cursor.execute(*sale.join(
                sale_line, 'LEFT', condition=sale_line.sale == sale.id
                ).join(fuel_transaction, 'LEFT',
                condition=sale_line.fuel_transaction == fuel_transaction.id
                ).select(
                sale.id, sale.point, sale_line.product, sale_line.quantity,
                sale_line.unit_list_price, sale_line.unit_gross_price,
                sale_line.fuel_transaction, fuel_transaction.nozzle,
                where=done,
                order_by=[
                    sale.date.desc, sale.id.desc, sale_line.id.asc]))
        rows = cursor.fetchall()
        if not rows:
            return
        sale_ids = list(dict.fromkeys(r[0] for r in rows))
        company = self.station.company
        currency = company.currency
        points = {p.id: p for p in Point.browse({r[1] for r in rows})}
        # in the company's context, as sale.point.sale.line's product
        with Transaction().set_context(company=company.id):
            products = {p.id: p for p in Product.browse(
                    {r[2] for r in rows if r[2] is not None})}
        point = points[rows[0][1]]
        date = (self.end_date or dt.datetime.now()).date()

        # one stock move per grade and source/destination location
        quantities = defaultdict(Decimal)
        unit_list_prices = {}
        gross = defaultdict(Decimal)
        locations = {}
        for row in rows:
            (_, point_id, product_id, quantity, list_price, gross_price,
                transaction_id, nozzle_id) = row
            if product_id is None:
                continue
            line_point = points[point_id]
            product = products[product_id]
            # sale.point.sale.line's amount, Decimal(str(float)) included
            quantity = Decimal(str(quantity or 0))
            unit_price = _decimal(
                gross_price if line_point.tax_included else list_price)
            gross[product] += currency.round(
                quantity * (unit_price or Decimal(0)))
            if product.type == 'service':
                continue
            # the line's own from/to locations (the tank of the fill's
            # nozzle), asked of one line per point, product, direction
            # and nozzle
            where = (point_id, product_id, quantity >= 0,
                transaction_id is not None, nozzle_id)
            if where not in locations:
                line = SaleLine(
                    sale=Sale(point=line_point, company=company),
                    product=product, quantity=float(quantity),
                    fuel_transaction=transaction_id)
                locations[where] = (line.from_location, line.to_location)
            key = (product, *locations[where])
            # summed in Decimal: float sums drift past the unit's digits
            quantities[key] += quantity
            unit_list_prices.setdefault(key, _decimal(list_price))
        stock_moves = []
        for key, quantity in quantities.items():
            if not quantity:
                continue
            unit_price = unit_list_prices[key]
            # returned lines already go from the customer back to the tank
            unit = key[0].sale_uom
            move = StockMove(
                product=key[0], unit=unit,
                quantity=unit.round(float(abs(quantity))),
                from_location=key[1], to_location=key[2],
                company=company, currency=currency,
                unit_price=unit_price, effective_date=date,
                origin=self)
            stock_moves.append(move)

        # one account move: Tryton's own POS posting of a sale summing
        # the shift, so revenue, taxes and payments follow its rules
        total = Sale(company=company, point=point, date=date)
        total_lines = []
        for product, amount in gross.items():
            if not amount:
                continue
            line = SaleLine(
                sale=total, product=product, quantity=1,
                unit_gross_price=amount)
            line.unit_list_price = line.unit_gross_price
            line.unit_list_price = _untaxed(line, amount, date)
            total_lines.append(line)
        total.lines = total_lines
        # the payments summed per method: amounts are grouped as they are
        # stored and added up here, in Decimal on every backend
        paid = defaultdict(Decimal)
        for sub in _chunks(sale_ids):
            cursor.execute(*sale_payment.select(
                    sale_payment.method, sale_payment.amount,
                    Count(),
                    where=sale_payment.sale.in_(sub),
                    group_by=[sale_payment.method, sale_payment.amount]))
            for method_id, amount, count in cursor:
                paid[method_id] += _decimal(amount) * count
        total.payments = [
            SalePayment(sale=total, method=m, amount=paid[m.id])
            for m in Method.browse(sorted(paid)) if paid[m.id]]
        move = total.get_account_move()
        move.origin = self
        move.description = gettext(
            'fuel_payment.msg_shift_move_description',
            shift=self.rec_name)
        for move_line in move.lines:
            move_line.origin = None
            for tax_line in getattr(move_line, 'tax_lines', []) or []:
                tax_line.origin = None
        if stock_moves:
            StockMove.save(stock_moves)
            StockMove.do(stock_moves)
        AccountMove.save([move])
        AccountMove.post([move])
        self.move = move
        self.save()

        # the sales, orders and transactions are posted with the shift
        for sub in _chunks(sale_ids):
            cursor.execute(*sale.update(
                    [sale.state, sale.move], ['posted', move.id],
                    where=sale.id.in_(sub)))
        _clear_cache(Sale, sale_ids)
        cursor.execute(*order.select(
                order.id,
                where=(order.shift == self.id) & (order.state == 'paid')))
        order_ids = [i for i, in cursor]
        transaction_ids = []
        for sub in _chunks(order_ids):
            cursor.execute(*fuel_transaction.select(
                    fuel_transaction.id,
                    where=fuel_transaction.order.in_(sub)
                    & (fuel_transaction.state == 'paid')))
            transaction_ids.extend(i for i, in cursor)
        _mark_posted(Order, order_ids)
        _mark_posted(FuelTransaction, transaction_ids)


def _decimal(value):
    "A Numeric column's value as Decimal (SQLite may give its text)"
    if value is None or isinstance(value, Decimal):
        return value
    if isinstance(value, bytes):
        value = value.decode()
    return Decimal(str(value))


def _mark_posted(Model, ids):
    """Move the records of ids from paid to posted as Model.mark_posted
    does, which does nothing else: the state, write user and date set
    with one UPDATE per chunk and the transitions logged in bulk, instead
    of a write and a log record each"""
    pool = Pool()
    Trigger = pool.get('ir.trigger')
    Log = pool.get('ir.model.log')
    if not ids:
        return
    if Trigger.get_triggers(Model.__name__, 'write'):
        # triggers need the ORM's write to see the records change
        Model.mark_posted(Model.browse(ids))
        return
    transaction = Transaction()
    cursor = transaction.connection.cursor()
    table = Model.__table__()
    log = Log.__table__()
    user, now = transaction.user, CurrentTimestamp()
    for sub in _chunks(ids):
        cursor.execute(*table.update(
                [table.state, table.write_uid, table.write_date],
                ['posted', user, now],
                where=table.id.in_(sub) & (table.state == 'paid')))
    _clear_cache(Model, ids)
    if Model._log:
        # what Workflow.transition logs for each record
        target = f'{Model._transition_state}:posted'
        for sub in _chunks(ids):
            cursor.execute(*log.insert(
                    [log.create_uid, log.create_date, log.resource,
                        log.event, log.target, log.user],
                    [[user, now, f'{Model.__name__},{i}', 'transition',
                            target, user] for i in sub]))


def _clear_cache(Model, ids=None):
    """Forget what this transaction read of the records SQL just changed:
    those of ids, or every record of Model when ids is None

    Like ModelStorage.write does, through trytond's transaction cache."""
    transaction = Transaction()
    transaction.counter += 1
    for cache in transaction.cache.values():
        if ids is None:
            cache.pop(Model.__name__, None)
        elif Model.__name__ in cache:
            records = cache[Model.__name__]
            for id_ in ids:
                records.pop(id_, None)


def _untaxed(line, gross, date):
    pool = Pool()
    Tax = pool.get('account.tax')
    return round_price(Tax.reverse_compute(gross, line.taxes, date=date))


def _chunks(ids):
    for i in range(0, len(ids), CHUNK):
        yield ids[i:i + CHUNK]


class ShiftMethodAmount(ModelSQL, ModelView):
    "Shift Payment Method Amount"
    __name__ = 'fuel.payment.shift.method_amount'
    shift = fields.Many2One(
        'fuel.station.shift', "Shift", required=True, ondelete='CASCADE',
        readonly=True)
    method = fields.Many2One(
        'sale.point.payment.method', "Method", required=True,
        readonly=True, ondelete='RESTRICT')
    expected = Monetary(
        "Expected", currency='currency', digits='currency', readonly=True)
    currency = fields.Function(
        fields.Many2One('currency.currency', "Currency"),
        'on_change_with_currency')

    @classmethod
    def __setup__(cls):
        super().__setup__()
        cls.__access__.add('shift')

    @fields.depends('shift', '_parent_shift.station')
    def on_change_with_currency(self, name=None):
        if self.shift and self.shift.station:
            return self.shift.station.company.currency


class HandoverReport(Report):
    "Shift Handover Report"
    __name__ = 'fuel.payment.shift.handover'

    @classmethod
    def get_context(cls, records, header, data):
        pool = Pool()
        Lang = pool.get('ir.lang')
        context = super().get_context(records, header, data)
        context['lang'] = Lang.get()
        context['summary'] = {
            shift.id: cls.summary(shift) for shift in records}
        return context

    @classmethod
    def summary(cls, shift):
        "Return the per grade and per method totals of the shift"
        grades = defaultdict(lambda: [Decimal(0), Decimal(0), 0])
        for transaction in shift.transactions:
            if transaction.state not in PAID or not transaction.grade:
                continue
            totals = grades[transaction.grade.rec_name]
            totals[0] += transaction.quantity
            totals[1] += transaction.amount_due
            totals[2] += 1
        return {
            'grades': sorted(grades.items()),
            'methods': [
                (m.method.rec_name, m.expected)
                for m in shift.method_amounts],
            }


class StockMove(metaclass=PoolMeta):
    __name__ = 'stock.move'

    @classmethod
    def _get_origin(cls):
        return super()._get_origin() + ['fuel.station.shift']


class AccountMove(metaclass=PoolMeta):
    __name__ = 'account.move'

    @classmethod
    def _get_origin(cls):
        return super()._get_origin() + ['fuel.station.shift']
