# This file is part of fuelpay.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""Orders (订单): one or more fuelling transactions paid together, by one
or several payment methods, settled as a sale of Tryton's point of sale"""
import datetime as dt
import uuid as uuid_
from decimal import Decimal

from trytond.i18n import gettext
from trytond.model import Index, ModelSQL, ModelView, Unique, Workflow, fields
from trytond.modules.currency.fields import Monetary
from trytond.modules.product import round_price
from trytond.pool import Pool
from trytond.pyson import Eval
from trytond.rpc import RPC
from trytond.transaction import Transaction, without_check_access
from trytond.wizard import Button, StateTransition, StateView, Wizard

from .exceptions import (
    OrderPaymentError,
    OrderValidationError,
    SettlementError,
)
from .payment import REFERENCE_KINDS, WALLET_KINDS
from .transaction import check_void_right


class Order(Workflow, ModelSQL, ModelView):
    "Fuel Order"
    __name__ = 'fuel.payment.order'
    _rec_name = 'number'

    _states = {'readonly': Eval('state') != 'draft'}

    number = fields.Char("Number", readonly=True)
    company = fields.Many2One(
        'company.company', "Operator", required=True, readonly=True)
    station = fields.Many2One(
        'fuel.station', "Station", required=True, readonly=True,
        ondelete='RESTRICT')
    shift = fields.Many2One(
        'fuel.station.shift', "Shift", readonly=True, ondelete='RESTRICT')
    employee = fields.Many2One(
        'company.employee', "Attendant", readonly=True,
        ondelete='RESTRICT')
    date = fields.DateTime("Date", required=True, readonly=True)
    customer = fields.Many2One(
        'party.party', "Member", states=_states, ondelete='RESTRICT',
        context={'company': Eval('company', -1)}, depends={'company'})
    transactions = fields.One2Many(
        'fuel.payment.transaction', 'order', "Transactions", readonly=True)
    payments = fields.One2Many(
        'fuel.payment.order.payment', 'order', "Payments", readonly=True)
    total = fields.Function(Monetary(
            "Total", currency='currency', digits='currency'), 'get_amounts')
    amount_paid = fields.Function(Monetary(
            "Paid", currency='currency', digits='currency'), 'get_amounts')
    amount_to_pay = fields.Function(Monetary(
            "To Pay", currency='currency', digits='currency'),
        'get_amounts')
    change = fields.Function(Monetary(
            "Change", currency='currency', digits='currency'),
        'get_amounts')
    currency = fields.Function(
        fields.Many2One('currency.currency', "Currency"),
        'on_change_with_currency')
    sale = fields.Many2One(
        'sale.point.sale', "POS Sale", readonly=True, ondelete='RESTRICT')
    reason = fields.Text(
        "Reason", readonly=True,
        help="Why the order was cancelled or refunded.")
    refund_sale = fields.Many2One(
        'sale.point.sale', "Refund Sale", readonly=True,
        help="The return sale that gave back a sale already booked.")
    reverted_by = fields.Many2One('res.user', "Reverted by", readonly=True)
    reverted_date = fields.DateTime("Reverted on", readonly=True)
    state = fields.Selection([
            ('draft', "Draft"),
            ('paid', "Paid"),
            ('posted', "Posted"),
            ('cancelled', "Cancelled"),
            ('refunded', "Refunded"),
            ], "State", readonly=True, required=True, sort=False)

    @classmethod
    def __setup__(cls):
        super().__setup__()
        cls.__access__.add('station')
        t = cls.__table__()
        cls._sql_indexes.update({
                Index(t, (t.shift, Index.Range())),
                Index(t, (t.state, Index.Equality(cardinality='low')),
                    where=t.state == 'draft'),
                })
        cls._order = [('date', 'DESC'), ('id', 'DESC')]
        cls._transitions |= {
            ('draft', 'paid'),
            ('draft', 'cancelled'),
            ('paid', 'posted'),
            ('paid', 'refunded'),
            ('posted', 'refunded'),
            }
        cls._buttons.update({
                'cancel': {
                    'invisible': Eval('state') != 'draft',
                    'depends': ['state'],
                    },
                'refund': {
                    'invisible': ~Eval('state').in_(['paid', 'posted']),
                    'depends': ['state'],
                    },
                'pay': {
                    'invisible': Eval('state') != 'draft',
                    'depends': ['state'],
                    },
                })
        cls.__rpc__.update({
                'create_for': RPC(readonly=False, instantiate=0,
                    result=int),
                'pay_rpc': RPC(readonly=False, instantiate=0),
                })

    @classmethod
    def default_state(cls):
        return 'draft'

    @classmethod
    def default_date(cls):
        return dt.datetime.now()

    @fields.depends('company')
    def on_change_with_currency(self, name=None):
        return self.company.currency if self.company else None

    @classmethod
    def get_amounts(cls, orders, names):
        result = {n: {} for n in names}
        for order in orders:
            total = sum(
                (t.amount_due or Decimal(0) for t in order.transactions),
                Decimal(0))
            paid = sum((p.amount for p in order.payments), Decimal(0))
            values = {
                'total': total,
                'amount_paid': paid,
                'amount_to_pay': total - paid,
                'change': sum(
                    (p.change or Decimal(0) for p in order.payments),
                    Decimal(0)),
                }
            for name in names:
                result[name][order.id] = values[name]
        return result

    def get_rec_name(self, name):
        return self.number or str(self.id)

    @classmethod
    def check_modification(cls, mode, orders, values=None, external=False):
        super().check_modification(
            mode, orders, values=values, external=external)
        if mode == 'delete':
            for order in orders:
                if order.state != 'draft' or order.payments:
                    raise OrderValidationError(gettext(
                            'fuel_payment.msg_order_delete',
                            order=order.rec_name))

    @classmethod
    def create_for(cls, transactions):
        """Return a draft order for the transactions to pay; several
        transactions of one station are merged into one order (订单合并)"""
        pool = Pool()
        User = pool.get('res.user')
        FuelTransaction = pool.get('fuel.payment.transaction')
        transactions = FuelTransaction.browse(transactions)
        if not transactions:
            raise OrderValidationError(gettext(
                    'fuel_payment.msg_order_no_transaction'))
        FuelTransaction.lock(transactions)
        stations = {t.station for t in transactions}
        if len(stations) > 1:
            raise OrderValidationError(gettext(
                    'fuel_payment.msg_order_one_station'))
        for transaction in transactions:
            if transaction.state != 'to_pay' or (
                    transaction.order
                    and transaction.order.state == 'draft'):
                raise OrderValidationError(gettext(
                        'fuel_payment.msg_order_transaction_not_payable',
                        transaction=transaction.rec_name,
                        state=transaction.state_string))
        station, = stations
        user = User(Transaction().user)
        employee = user.employee if user.employee and (
            user.employee.company == station.company) else None
        customers = {t.customer for t in transactions if t.customer}
        order = cls(
            company=station.company, station=station,
            shift=transactions[0].shift, employee=employee,
            customer=customers.pop() if len(customers) == 1 else None)
        order.save()
        order.number = '%s-%s' % (station.code, order.id)
        order.save()
        FuelTransaction.write(list(transactions), {'order': order.id})
        return order

    @classmethod
    def add_payment(cls, order, method, amount, *, reference=None,
            tendered=None, card=None, pin=None, uuid=None):
        """Take a payment of amount by method on the draft order

        Cash: tendered is what the driver hands over; the change is given
        back and only the amount due is kept. Wallet and corporate: card
        and its PIN; the wallet is debited now. WeChat, Alipay, UnionPay,
        JD, face and plate: the host's reference is required.
        The same uuid sent twice returns the first payment."""
        pool = Pool()
        Payment = pool.get('fuel.payment.order.payment')
        Card = pool.get('fuel.payment.wallet.card')
        if uuid:
            existing = Payment.search([('uuid', '=', uuid)], limit=1)
            if existing:
                return existing[0]
        cls.lock([order])
        order = cls(order.id)
        if order.state != 'draft':
            raise OrderPaymentError(gettext(
                    'fuel_payment.msg_order_not_draft',
                    order=order.rec_name))
        if method.company != order.company or not method.active:
            raise OrderPaymentError(gettext(
                    'fuel_payment.msg_order_method_invalid',
                    method=method.rec_name))
        if method.gateway and not Transaction().context.get('_fuel_gateway'):
            # the money is taken through the gateway, not typed in
            raise OrderPaymentError(gettext(
                    'fuel_payment.msg_order_method_gateway',
                    method=method.rec_name))
        amount = order.currency.round(Decimal(amount))
        if amount <= 0:
            raise OrderPaymentError(gettext(
                    'fuel_payment.msg_order_payment_positive'))
        to_pay = order.amount_to_pay
        payment = Payment(
            order=order, method=method, uuid=uuid or str(uuid_.uuid4()))
        if method.fuel_kind == 'cash':
            if tendered is not None:
                tendered = order.currency.round(Decimal(tendered))
                if tendered < amount:
                    raise OrderPaymentError(gettext(
                            'fuel_payment.msg_order_tendered_short'))
            else:
                tendered = amount
            payment.tendered = tendered
            payment.amount = min(amount, to_pay)
            payment.change = tendered - payment.amount
        else:
            if amount > to_pay:
                raise OrderPaymentError(gettext(
                        'fuel_payment.msg_order_overpaid',
                        order=order.rec_name))
            payment.amount = amount
            payment.change = Decimal(0)
        if method.needs_reference and not (reference or '').strip():
            raise OrderPaymentError(gettext(
                    'fuel_payment.msg_order_reference_required',
                    method=method.rec_name))
        payment.reference = (reference or '').strip() or None
        if method.wallet:
            if card is None:
                raise OrderPaymentError(gettext(
                        'fuel_payment.msg_order_card_required',
                        method=method.rec_name))
            card = Card(int(card))
            if card.wallet.company != order.company or (
                    method.fuel_kind == 'corporate'
                    and card.wallet.kind != 'corporate'):
                raise OrderPaymentError(gettext(
                        'fuel_payment.msg_order_card_invalid',
                        card=card.rec_name))
            payment.card = card
            payment.wallet_move = Card.pay(
                card, payment.amount, pin=pin, uuid=payment.uuid,
                lines=order.grade_amounts(payment.amount), origin=order)
        payment.save()
        return payment

    def grade_amounts(self, amount):
        "Share amount between the grades of the order by their due"
        total = self.total or Decimal(0)
        shares = {}
        for transaction in self.transactions:
            if transaction.grade and total:
                shares.setdefault(transaction.grade, Decimal(0))
                shares[transaction.grade] += (
                    amount * (transaction.amount_due or 0) / total)
        return [(g, self.currency.round(a)) for g, a in shares.items()]

    @classmethod
    def pay_rpc(cls, order, payments):
        """RPC: take the payments (list of dicts: method, amount,
        reference, tendered, card, pin, uuid) on the order and settle it
        when fully paid; return the order state, paid, to pay, change"""
        pool = Pool()
        Method = pool.get('sale.point.payment.method')
        for values in payments:
            values = dict(values)
            method = Method(int(values.pop('method')))
            amount = values.pop('amount')
            cls.add_payment(order, method, amount, **{
                    k: values.get(k) for k in [
                        'reference', 'tendered', 'card', 'pin', 'uuid']})
        order = cls(order.id)
        if not order.amount_to_pay:
            cls.process([order])
        order = cls(order.id)
        return {
            'state': order.state,
            'number': order.number,
            'total': order.total,
            'amount_paid': order.amount_paid,
            'amount_to_pay': order.amount_to_pay,
            'change': order.change,
            }

    @classmethod
    @Workflow.transition('paid')
    def process(cls, orders):
        """Settle fully paid orders: one done POS sale each, with a line
        per transaction drawn from its tank and the payments in the
        station's cash session"""
        pool = Pool()
        Sale = pool.get('sale.point.sale')
        FuelTransaction = pool.get('fuel.payment.transaction')
        sales = []
        for order in orders:
            if order.amount_to_pay:
                raise SettlementError(gettext(
                        'fuel_payment.msg_order_not_paid',
                        order=order.rec_name,
                        amount=order.amount_to_pay))
        with without_check_access():
            # the POS sale, its cash session and journals are the
            # platform's bookkeeping, not the attendant's records
            for order in orders:
                order.sale = order.get_sale()
                sales.append(order.sale)
            Sale.save(sales)
            Sale.process(sales)
        cls.save(orders)
        FuelTransaction.mark_paid(
            [t for o in orders for t in o.transactions])

    def get_sale(self):
        "Return the POS sale of the order"
        pool = Pool()
        Configuration = pool.get('fuel.payment.configuration')
        Sale = pool.get('sale.point.sale')
        Line = pool.get('sale.point.sale.line')
        Payment = pool.get('sale.point.payment')
        Session = pool.get('sale.point.cash.session')
        Tax = pool.get('account.tax')
        point = self.station.point
        if point is None:
            raise SettlementError(gettext(
                    'fuel_payment.msg_station_no_point',
                    station=self.station.rec_name))
        sale = Sale(
            company=self.company, point=point, employee=self.employee,
            date=self.date.date(), fuel_shift=self.shift)
        lines = []
        discount = Decimal(0)
        for transaction in self.transactions:
            line = Line(
                product=transaction.grade,
                quantity=float(transaction.quantity),
                unit_list_price=transaction.unit_price,
                unit_gross_price=transaction.unit_price,
                fuel_transaction=transaction)
            lines.append(line)
            discount += transaction.discount
        if discount:
            product = Configuration(1).discount_product
            if product is None:
                raise SettlementError(gettext(
                        'fuel_payment.msg_discount_product_missing'))
            lines.append(Line(
                    product=product, quantity=1.0,
                    unit_list_price=-discount, unit_gross_price=-discount))
        for line in lines:
            line.sale = sale
            # the gross price is what the driver pays, tax included
            line.unit_list_price = round_price(Tax.reverse_compute(
                    line.unit_gross_price, line.taxes, date=sale.date))
        sale.lines = lines
        payments = []
        session = None
        for order_payment in self.payments:
            payment = Payment(
                method=order_payment.method,
                amount=order_payment.amount)
            if order_payment.method.cash:
                if session is None:
                    session = Session.get_current(point)
                payment.session = session
            payments.append(payment)
        sale.payments = payments
        return sale

    @classmethod
    @ModelView.button
    @Workflow.transition('cancelled')
    def cancel(cls, orders, reason=None):
        """Cancel draft orders: wallet debits are refunded, the
        transactions are free to be paid again"""
        pool = Pool()
        FuelTransaction = pool.get('fuel.payment.transaction')
        GatewayPayment = pool.get('fuel.payment.gateway.payment')
        WalletMove = pool.get('fuel.payment.wallet.move')
        GatewayPayment.check_no_pending(orders)
        moves = [
            p.wallet_move for o in orders for p in o.payments
            if p.wallet_move]
        if moves:
            WalletMove.refund(moves)
        GatewayPayment.refund_orders(orders, reason=reason)
        for order in orders:
            order.reason = reason
            order.reverted_by = Transaction().user
            order.reverted_date = dt.datetime.now()
        cls.save(orders)
        FuelTransaction.write(
            [t for o in orders for t in o.transactions], {'order': None})

    @classmethod
    @ModelView.button_action('fuel_payment.wizard_order_cancel')
    def refund(cls, orders):
        pass

    @classmethod
    @ModelView.button_action('fuel_payment.wizard_order_pay')
    def pay(cls, orders):
        pass

    @classmethod
    @Workflow.transition('refunded')
    def do_refund(cls, orders, reason):
        """Refund paid or posted orders (needs the void right)

        A sale whose cash session is still open is reopened, its payments
        removed and it is cancelled; a sale of a closed session or a
        settled shift stays as it was booked and a return sale reverses
        it in the station's open shift. Wallet debits come back, and the
        transactions wait to be paid again or voided."""
        pool = Pool()
        Sale = pool.get('sale.point.sale')
        SalePayment = pool.get('sale.point.payment')
        FuelTransaction = pool.get('fuel.payment.transaction')
        GatewayPayment = pool.get('fuel.payment.gateway.payment')
        WalletMove = pool.get('fuel.payment.wallet.move')
        check_void_right()
        if not (reason or '').strip():
            raise OrderValidationError(gettext(
                    'fuel_payment.msg_void_reason_required'))
        reopen = [o.sale for o in orders if o.sale and o.sale_reopenable]
        reverse = [o for o in orders if o.sale and not o.sale_reopenable]
        with without_check_access():
            Sale.open(reopen)
            SalePayment.delete([p for s in reopen for p in s.payments])
            Sale.cancel(reopen)
            for order in reverse:
                order.refund_sale = order.get_return_sale()
            returns = [o.refund_sale for o in reverse]
            Sale.save(returns)
            Sale.process(returns)
        for order in orders:
            order.reason = reason.strip()
            order.reverted_by = Transaction().user
            order.reverted_date = dt.datetime.now()
        moves = [
            p.wallet_move for o in orders for p in o.payments
            if p.wallet_move]
        if moves:
            WalletMove.refund(moves)
        GatewayPayment.refund_orders(orders, reason=reason.strip())
        cls.save(orders)
        transactions = [t for o in orders for t in o.transactions]
        FuelTransaction.mark_unpaid(transactions)
        FuelTransaction.write(transactions, {'order': None})

    @property
    def sale_reopenable(self):
        "Whether the POS sale can be reopened: done, its cash drawer open"
        return self.sale.state == 'done' and all(
            p.session is None or p.session.state == 'open'
            for p in self.sale.payments)

    def get_return_sale(self):
        """Return the POS sale giving back the order's sale: the same lines
        and payments with the opposite sign, in the station's open shift
        and cash session"""
        pool = Pool()
        Sale = pool.get('sale.point.sale')
        Line = pool.get('sale.point.sale.line')
        Payment = pool.get('sale.point.payment')
        Session = pool.get('sale.point.cash.session')
        sale = self.sale
        return_ = Sale.for_station(self.station, self.company)
        # the point of the sale given back, if the station changed its own
        return_.point = sale.point
        return_.lines = [
            Line(
                sale=return_, product=line.product,
                quantity=-line.quantity,
                unit_list_price=line.unit_list_price,
                unit_gross_price=line.unit_gross_price,
                fuel_transaction=line.fuel_transaction)
            for line in sale.lines]
        session = None
        payments = []
        for payment in sale.payments:
            refund = Payment(method=payment.method, amount=-payment.amount)
            if payment.method.cash:
                if session is None:
                    session = Session.get_current(sale.point)
                refund.session = session
            payments.append(refund)
        return_.payments = payments
        return return_

    @classmethod
    @Workflow.transition('posted')
    def mark_posted(cls, orders):
        pass


class OrderPayment(ModelSQL, ModelView):
    "Fuel Order Payment"
    __name__ = 'fuel.payment.order.payment'
    order = fields.Many2One(
        'fuel.payment.order', "Order", required=True, ondelete='CASCADE',
        readonly=True)
    uuid = fields.Char("UUID", required=True, readonly=True, strip=False)
    method = fields.Many2One(
        'sale.point.payment.method', "Method", required=True,
        readonly=True, ondelete='RESTRICT')
    kind = fields.Function(
        fields.Selection('get_kinds', "Kind"), 'on_change_with_kind')
    amount = Monetary(
        "Amount", currency='currency', digits='currency', required=True,
        readonly=True)
    tendered = Monetary(
        "Tendered", currency='currency', digits='currency', readonly=True)
    change = Monetary(
        "Change", currency='currency', digits='currency', readonly=True)
    reference = fields.Char("Reference", readonly=True)
    card = fields.Many2One(
        'fuel.payment.wallet.card', "Card", readonly=True,
        ondelete='RESTRICT')
    wallet_move = fields.Many2One(
        'fuel.payment.wallet.move', "Wallet Move", readonly=True,
        ondelete='RESTRICT')
    currency = fields.Function(
        fields.Many2One('currency.currency', "Currency"),
        'on_change_with_currency')
    company = fields.Function(
        fields.Many2One('company.company', "Operator"),
        'on_change_with_company', searcher='search_company')

    @classmethod
    def __setup__(cls):
        super().__setup__()
        cls.__access__.add('order')
        t = cls.__table__()
        cls._sql_constraints = [
            ('uuid_unique', Unique(t, t.uuid),
                'fuel_payment.msg_payment_uuid_unique'),
            ]

    @classmethod
    def get_kinds(cls):
        pool = Pool()
        Method = pool.get('sale.point.payment.method')
        return Method.fields_get(['fuel_kind'])['fuel_kind']['selection']

    @fields.depends('method')
    def on_change_with_kind(self, name=None):
        return self.method.fuel_kind if self.method else None

    @fields.depends('order', '_parent_order.company')
    def on_change_with_currency(self, name=None):
        return self.order.company.currency if self.order else None

    @fields.depends('order', '_parent_order.company')
    def on_change_with_company(self, name=None):
        return self.order.company if self.order else None

    @classmethod
    def search_company(cls, name, clause):
        return [('order.' + clause[0],) + tuple(clause[1:])]

    @classmethod
    def check_modification(
            cls, mode, payments, values=None, external=False):
        super().check_modification(
            mode, payments, values=values, external=external)
        if mode in {'write', 'delete'} and external:
            raise OrderPaymentError(gettext(
                    'fuel_payment.msg_payment_modify'))


class OrderCancelStart(ModelView):
    "Refund Fuel Order"
    __name__ = 'fuel.payment.order.cancel.start'
    reason = fields.Text("Reason", required=True)


class OrderCancel(Wizard):
    "Refund Fuel Order"
    __name__ = 'fuel.payment.order.cancel'
    start = StateView(
        'fuel.payment.order.cancel.start',
        'fuel_payment.order_cancel_start_view_form', [
            Button("Cancel", 'end', 'tryton-cancel'),
            Button("Refund", 'refund', 'tryton-ok', default=True),
            ])
    refund = StateTransition()

    def transition_refund(self):
        self.model.do_refund(self.records, self.start.reason)
        return 'end'


class OrderPayStart(ModelView):
    "Pay Fuel Order"
    __name__ = 'fuel.payment.order.pay.start'
    order = fields.Many2One('fuel.payment.order', "Order", readonly=True)
    company = fields.Many2One('company.company', "Operator", readonly=True)
    currency = fields.Many2One(
        'currency.currency', "Currency", readonly=True)
    amount_to_pay = Monetary(
        "To Pay", currency='currency', digits='currency', readonly=True)
    method = fields.Many2One(
        'sale.point.payment.method', "Method", required=True,
        domain=[
            ('company', '=', Eval('company', -1)),
            ('fuel_kind', '!=', None),
            ])
    kind = fields.Function(
        fields.Selection('get_kinds', "Kind"), 'on_change_with_kind')
    amount = Monetary(
        "Amount", currency='currency', digits='currency', required=True)
    tendered = Monetary(
        "Tendered", currency='currency', digits='currency',
        states={'invisible': Eval('kind') != 'cash'})
    reference = fields.Char(
        "Reference",
        states={
            'invisible': ~Eval('kind').in_(sorted(REFERENCE_KINDS)),
            'required': Eval('kind').in_(sorted(REFERENCE_KINDS)),
            })
    card = fields.Many2One(
        'fuel.payment.wallet.card', "Card",
        domain=[('company', '=', Eval('company', -1))],
        states={
            'invisible': ~Eval('kind').in_(sorted(WALLET_KINDS)),
            'required': Eval('kind').in_(sorted(WALLET_KINDS)),
            })
    pin = fields.Char(
        "PIN", strip=False,
        states={'invisible': ~Eval('kind').in_(sorted(WALLET_KINDS))})

    @classmethod
    def get_kinds(cls):
        pool = Pool()
        Method = pool.get('sale.point.payment.method')
        return Method.fields_get(['fuel_kind'])['fuel_kind']['selection']

    @fields.depends('method')
    def on_change_with_kind(self, name=None):
        return self.method.fuel_kind if self.method else None


class OrderPay(Wizard):
    "Pay Fuel Order"
    __name__ = 'fuel.payment.order.pay'
    start = StateView(
        'fuel.payment.order.pay.start',
        'fuel_payment.order_pay_start_view_form', [
            Button("Cancel", 'end', 'tryton-cancel'),
            Button("Pay", 'pay', 'tryton-ok', default=True),
            ])
    pay = StateTransition()

    def default_start(self, fields):
        order = self.record
        return {
            'order': order.id,
            'company': order.company.id,
            'currency': order.currency.id,
            'amount_to_pay': order.amount_to_pay,
            'amount': order.amount_to_pay,
            }

    def transition_pay(self):
        order = self.record
        self.model.add_payment(
            order, self.start.method, self.start.amount,
            reference=self.start.reference, tendered=self.start.tendered,
            card=self.start.card, pin=self.start.pin)
        order = self.model(order.id)
        if order.amount_to_pay:
            return 'start'
        self.model.process([order])
        return 'end'
