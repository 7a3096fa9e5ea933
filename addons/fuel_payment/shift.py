# This file is part of fuelpay.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""Shift money: what each payment method should hold at the end of a
shift, the cash counted, the variance, the handover report and the
grouped posting of the shift's sales"""
import datetime as dt
from collections import defaultdict
from decimal import Decimal

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
        the shift's paid orders (refunded orders count for nothing)"""
        pool = Pool()
        Order = pool.get('fuel.payment.order')
        Payment = pool.get('fuel.payment.order.payment')
        order = Order.__table__()
        payment = Payment.__table__()
        cursor = Transaction().connection.cursor()
        result = {s.id: {} for s in shifts}
        for sub in _chunks([s.id for s in shifts]):
            cursor.execute(*payment.join(
                    order, condition=payment.order == order.id
                    ).select(
                    order.shift, payment.method, payment.amount,
                    where=order.shift.in_(sub) & order.state.in_(PAID)))
            for shift_id, method_id, amount in cursor:
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
        StockMove = pool.get('stock.move')
        AccountMove = pool.get('account.move')
        Order = pool.get('fuel.payment.order')
        FuelTransaction = pool.get('fuel.payment.transaction')
        sales = Sale.search([
                ('fuel_shift', '=', self.id),
                ('state', '=', 'done'),
                ])
        if not sales:
            return
        point = sales[0].point
        date = (self.end_date or dt.datetime.now()).date()

        # one stock move per grade and source/destination location
        quantities = defaultdict(Decimal)
        lines_of = {}
        gross = defaultdict(Decimal)
        for sale in sales:
            for line in sale.lines:
                gross[line.product] += line.amount
                if line.product.type == 'service':
                    continue
                key = (line.product, line.from_location, line.to_location)
                # summed in Decimal: float sums drift past the unit's digits
                quantities[key] += Decimal(str(line.quantity))
                lines_of.setdefault(key, line)
        stock_moves = []
        for key, quantity in quantities.items():
            line = lines_of[key]
            if not quantity:
                continue
            if quantity < 0:
                product, from_location, to_location = key
                key = (product, to_location, from_location)
            move = StockMove(
                product=key[0], unit=line.unit,
                quantity=line.unit.round(float(abs(quantity))),
                from_location=key[1], to_location=key[2],
                company=self.station.company, currency=line.currency,
                unit_price=line.unit_list_price, effective_date=date,
                origin=self)
            stock_moves.append(move)

        # one account move: Tryton's own POS posting of a sale summing
        # the shift, so revenue, taxes and payments follow its rules
        total = Sale(
            company=self.station.company, point=point, date=date)
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
        paid = defaultdict(Decimal)
        for sale in sales:
            for payment in sale.payments:
                paid[payment.method] += payment.amount
        total.payments = [
            SalePayment(sale=total, method=m, amount=a)
            for m, a in paid.items() if a]
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
        sale_table = Sale.__table__()
        cursor = Transaction().connection.cursor()
        for sub in _chunks([s.id for s in sales]):
            cursor.execute(*sale_table.update(
                    [sale_table.state, sale_table.move],
                    ['posted', move.id],
                    where=sale_table.id.in_(sub)))
        orders = Order.search([
                ('shift', '=', self.id), ('state', '=', 'paid')])
        Order.mark_posted(orders)
        FuelTransaction.mark_posted([
                t for o in orders for t in o.transactions
                if t.state == 'paid'])


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
