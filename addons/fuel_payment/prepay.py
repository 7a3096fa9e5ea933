# This file is part of fuelpay.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""Pre-pay (先付后加): the driver pays an amount (or a ceiling to fill up)
for a nozzle, the nozzle is authorized with that preset, the fuelling
transaction captures what it costs and the difference goes back"""
import datetime as dt
from decimal import Decimal

from trytond.i18n import gettext
from trytond.model import ModelSQL, ModelView, Unique, Workflow, fields
from trytond.modules.currency.fields import Monetary
from trytond.pool import Pool
from trytond.pyson import Eval
from trytond.rpc import RPC
from trytond.transaction import Transaction, without_check_access

from .exceptions import PrePayError


class PrePay(Workflow, ModelSQL, ModelView):
    "Fuel Pre-payment"
    __name__ = 'fuel.payment.prepay'

    company = fields.Many2One(
        'company.company', "Operator", required=True, readonly=True)
    station = fields.Many2One(
        'fuel.station', "Station", required=True, readonly=True,
        ondelete='RESTRICT')
    nozzle = fields.Many2One(
        'fuel.station.nozzle', "Nozzle", required=True, readonly=True,
        ondelete='RESTRICT',
        domain=[('station', '=', Eval('station', -1))])
    amount = Monetary(
        "Amount", currency='currency', digits='currency', required=True,
        readonly=True,
        help="What the driver pays: the preset, or the ceiling of a fill "
        "up.")
    fill_up = fields.Boolean(
        "Fill Up", readonly=True,
        help="Fill the tank up to the amount paid; the rest comes back.")
    payments = fields.One2Many(
        'fuel.payment.gateway.payment', 'prepay', "Payments",
        readonly=True)
    transaction = fields.Many2One(
        'fuel.payment.transaction', "Transaction", readonly=True,
        ondelete='RESTRICT')
    order = fields.Many2One(
        'fuel.payment.order', "Order", readonly=True, ondelete='RESTRICT')
    captured = Monetary(
        "Captured", currency='currency', digits='currency', readonly=True)
    currency = fields.Function(
        fields.Many2One('currency.currency', "Currency"),
        'on_change_with_currency')
    authorization = fields.Char(
        "Authorization", readonly=True,
        help="The command that released the nozzle.")
    authorized_date = fields.DateTime("Authorized on", readonly=True)
    reason = fields.Text("Reason", readonly=True)
    state = fields.Selection([
            ('draft', "Draft"),
            ('paid', "Paid"),
            ('authorized', "Authorized"),
            ('done', "Done"),
            ('cancelled', "Cancelled"),
            ], "State", required=True, readonly=True, sort=False)

    @classmethod
    def __setup__(cls):
        super().__setup__()
        cls.__access__.add('station')
        t = cls.__table__()
        cls._sql_constraints = [
            # one fuelling transaction is paid by one pre-payment
            ('transaction_unique', Unique(t, t.transaction),
                'fuel_payment.msg_prepay_transaction_unique'),
            ]
        cls._order = [('create_date', 'DESC'), ('id', 'DESC')]
        cls._transitions |= {
            ('draft', 'paid'),
            ('draft', 'cancelled'),
            ('paid', 'authorized'),
            ('paid', 'done'),
            ('paid', 'cancelled'),
            ('authorized', 'done'),
            ('authorized', 'cancelled'),
            }
        cls._buttons.update({
                'abort': {
                    'invisible': ~Eval('state').in_(
                        ['draft', 'paid', 'authorized']),
                    'depends': ['state'],
                    },
                })
        cls.__rpc__.update({
                'start': RPC(readonly=False, result=int),
                })

    @classmethod
    def default_state(cls):
        return 'draft'

    @classmethod
    def default_fill_up(cls):
        return False

    @fields.depends('company')
    def on_change_with_currency(self, name=None):
        return self.company.currency if self.company else None

    def get_rec_name(self, name):
        return f'{self.station.code}-{self.nozzle.station_number} #{self.id}'

    @classmethod
    def start(cls, station, nozzle_number, amount, code=None, method=None,
            fill_up=False, source='attendant', client=None, payer=None,
            app=None, client_ip=None, login_code=None):
        """Take a pre-payment of amount for the nozzle numbered
        nozzle_number at station: by the customer's code (付款码), or by a
        QR of method when no code is given, or in the driver's wallet app
        with client (jsapi, mini_program, app, h5), payer, app and
        client_ip as GatewayPayment.create_app (login_code: its code, the
        wallet's login code; code is the payment code); return the gateway
        payment id (follow it with its `status`)"""
        pool = Pool()
        Station = pool.get('fuel.station')
        Nozzle = pool.get('fuel.station.nozzle')
        GatewayPayment = pool.get('fuel.payment.gateway.payment')
        station = Station(int(station))
        nozzles = Nozzle.search([
                ('station', '=', station.id),
                ('station_number', '=', nozzle_number),
                ], limit=1)
        if not nozzles:
            raise PrePayError(gettext(
                    'fuel_payment.msg_prepay_nozzle',
                    nozzle=nozzle_number, station=station.rec_name))
        amount = station.company.currency.round(Decimal(amount))
        if amount <= 0:
            raise PrePayError(gettext('fuel_payment.msg_prepay_amount'))
        busy = cls.search([
                ('nozzle', '=', nozzles[0].id),
                ('state', 'in', ['paid', 'authorized']),
                ], limit=1)
        if busy:
            raise PrePayError(gettext(
                    'fuel_payment.msg_prepay_nozzle_busy',
                    prepay=busy[0].rec_name))
        # nor while a customer is still paying one for it: a second payment
        # would pay the same fill twice
        paying = cls.search([
                ('nozzle', '=', nozzles[0].id),
                ('state', '=', 'draft'),
                ('payments.state', 'in', ['draft', 'pending']),
                ], limit=1)
        if paying:
            raise PrePayError(gettext(
                    'fuel_payment.msg_prepay_paying',
                    prepay=paying[0].rec_name))
        if code:
            code = code.strip()
            method = GatewayPayment.method_for_code(
                station.company, code, source)
            kind = 'code'
            values = {}
        else:
            method = GatewayPayment.check_method(
                station.company, method, error=PrePayError)
            if client:
                values = GatewayPayment.check_app(
                    method, client, payer=payer, app=app,
                    client_ip=client_ip, code=login_code)
                kind, source = 'app', 'customer'
            else:
                kind, source, values = 'qr', 'customer', {}
        prepay = cls(
            company=station.company, station=station, nozzle=nozzles[0],
            amount=amount, fill_up=fill_up)
        with without_check_access():
            prepay.save()
        payment = GatewayPayment._new_prepay(
            prepay, method, kind, source, code=code, **values)
        if code:
            GatewayPayment.__queue__.submit([payment], code)
        else:
            GatewayPayment.__queue__.submit([payment])
        return payment.id

    @classmethod
    @Workflow.transition('paid')
    def hold(cls, prepays):
        "The money is taken: release the nozzle"
        cls.authorize(prepays)

    @classmethod
    def authorize(cls, prepays):
        """Authorize the nozzles with their preset; without a station box
        (fuel_device) the attendant releases the pump by hand"""

    @classmethod
    @Workflow.transition('authorized')
    def mark_authorized(cls, prepays):
        cls.write(prepays, {'authorized_date': dt.datetime.now()})

    @classmethod
    def capture(cls, transactions):
        """Bind each completed fuelling transaction to the pre-payment of
        its nozzle, book what it costs and give the rest back"""
        pool = Pool()
        Order = pool.get('fuel.payment.order')
        GatewayPayment = pool.get('fuel.payment.gateway.payment')
        for transaction in transactions:
            # an aborted, zero fill is flagged: it takes nothing; other
            # flagged fills wait for a person (the pre-payment with them)
            empty = (transaction.quantity or 0) <= 0
            if not transaction.nozzle or not (
                    transaction.state == 'to_pay' or empty):
                continue
            prepays = cls.search(
                cls._capture_domain(transaction),
                order=[('id', 'ASC')], limit=1)
            if not prepays:
                continue
            cls.lock(prepays)
            prepay = cls(prepays[0].id)
            payment, = [p for p in prepay.payments if p.state == 'succeeded']
            due = Decimal(0) if empty else (
                transaction.amount_due or Decimal(0))
            captured = min(due, prepay.amount)
            prepay.transaction = transaction
            prepay.captured = captured
            if captured > 0:
                with without_check_access():
                    order = Order.create_for([transaction])
                    with Transaction().set_context(_fuel_gateway=True):
                        Order.add_payment(
                            order, payment.method, captured,
                            reference=payment.reference,
                            uuid=f'{payment.number}-capture')
                    order = Order(order.id)
                    if not order.amount_to_pay:
                        Order.process([order])
                    GatewayPayment.write([payment], {'order': order.id})
                prepay.order = order
            cls.save([prepay])
            cls.finish([prepay])
            if prepay.amount > captured:
                GatewayPayment.refund(
                    [payment], prepay.amount - captured,
                    reason=gettext(
                        'fuel_payment.msg_prepay_difference',
                        prepay=prepay.rec_name, captured=captured))

    @classmethod
    def _capture_domain(cls, transaction):
        """The open pre-payments a completed fill may answer, the oldest
        first: those of its nozzle (fuel_device narrows it to the one whose
        authorization released the fill)"""
        return [
            ('nozzle', '=', transaction.nozzle.id),
            ('state', 'in', ['paid', 'authorized']),
            ]

    @classmethod
    @Workflow.transition('done')
    def finish(cls, prepays):
        pass

    @classmethod
    @ModelView.button
    def abort(cls, prepays, reason=None):
        """Give the whole pre-payment back: the fill never happened (the
        pump refused the authorization or the driver left)"""
        pool = Pool()
        GatewayPayment = pool.get('fuel.payment.gateway.payment')
        prepays = [
            p for p in prepays if p.state in {'draft', 'paid', 'authorized'}]
        for prepay in prepays:
            if any(p.state in {'draft', 'pending'} for p in prepay.payments):
                raise PrePayError(gettext(
                        'fuel_payment.msg_prepay_paying',
                        prepay=prepay.rec_name))
        paid = [
            p for r in prepays for p in r.payments if p.state == 'succeeded'
            and p.amount > p.amount_refunded]
        if paid:
            GatewayPayment.refund(paid, reason=reason or gettext(
                    'fuel_payment.msg_prepay_aborted'))
        cls.write(prepays, {'reason': reason})
        cls.cancel(prepays)

    @classmethod
    @Workflow.transition('cancelled')
    def cancel(cls, prepays):
        pass
