# This file is part of fuelpay.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""Links between the fuel suite and Tryton's point of sale: one POS per
station, payment methods of a kind, fuel sale lines leaving the tank"""
from decimal import Decimal

from trytond.i18n import gettext
from trytond.model import ModelSingleton, ModelSQL, ModelView, fields
from trytond.pool import Pool, PoolMeta
from trytond.pyson import Eval, If
from trytond.transaction import Transaction

from .exceptions import SettlementError

METHOD_KINDS = [
    ('cash', "Cash"),
    ('wallet', "Member Wallet"),
    ('wechat', "WeChat Pay"),
    ('alipay', "Alipay"),
    ('unionpay', "UnionPay"),
    ('jd', "JD Pay"),
    ('face', "Face Pay"),
    ('plate', "Frictionless (Plate)"),
    ('corporate', "Corporate Account"),
    ]
# kinds whose payments are confirmed by a reference of the external host
REFERENCE_KINDS = {'wechat', 'alipay', 'unionpay', 'jd', 'face', 'plate'}
# kinds paid from a stored-value wallet
WALLET_KINDS = {'wallet', 'corporate'}


class Configuration(ModelSingleton, ModelSQL, ModelView):
    "Fuel Payment Configuration"
    __name__ = 'fuel.payment.configuration'
    discount_product = fields.Many2One(
        'product.product', "Discount Product",
        domain=[('type', '=', 'service')],
        help="The service booked on the POS sale for a discount.")
    recharge_product = fields.Many2One(
        'product.product', "Recharge Product",
        domain=[('type', '=', 'service')],
        help="The service booked on the POS sale for a wallet recharge; "
        "it is booked on the account of the operator's member wallet "
        "payment method (customer deposits), not as revenue.")
    amount_tolerance = fields.Numeric(
        "Amount Tolerance", digits=(16, 2), required=True,
        help="The largest difference accepted between the amount the "
        "dispenser reports and the amount the platform computes.")

    @classmethod
    def default_amount_tolerance(cls):
        return Decimal('0.01')


class Station(metaclass=PoolMeta):
    __name__ = 'fuel.station'
    point = fields.Many2One(
        'sale.point', "Point of Sale", ondelete='RESTRICT',
        domain=[('company', '=', Eval('company', -1))],
        help="The Tryton point of sale that books this station's sales.")


class PaymentMethod(metaclass=PoolMeta):
    __name__ = 'sale.point.payment.method'
    fuel_kind = fields.Selection(
        [(None, "")] + METHOD_KINDS, "Fuel Kind",
        help="How the fuel suite takes payments of this method.")

    @fields.depends('fuel_kind')
    def on_change_fuel_kind(self):
        if self.fuel_kind:
            self.cash = self.fuel_kind == 'cash'

    @property
    def needs_reference(self):
        return self.fuel_kind in REFERENCE_KINDS

    @property
    def wallet(self):
        return self.fuel_kind in WALLET_KINDS


class POSSale(metaclass=PoolMeta):
    __name__ = 'sale.point.sale'
    fuel_shift = fields.Many2One(
        'fuel.station.shift', "Shift", readonly=True, ondelete='RESTRICT')

    @classmethod
    def for_station(cls, station, company):
        """Return a new sale of company at the point of station, dated today
        in the operator's timezone, in the station's open shift and by the
        user's employee of company

        Without an open shift, the next shift of the station to close
        adopts the sale."""
        pool = Pool()
        Date = pool.get('ir.date')
        Shift = pool.get('fuel.station.shift')
        User = pool.get('res.user')
        user = User(Transaction().user)
        with Transaction().set_context(company=company.id):
            today = Date.today()
        shifts = Shift.search([
                ('station', '=', station.id),
                ('state', '=', 'open'),
                ], limit=1)
        return cls(
            company=company, point=station.point, date=today,
            fuel_shift=shifts[0] if shifts else None,
            employee=(
                user.employee if user.employee
                and user.employee.company == company else None))


class POSPayment(metaclass=PoolMeta):
    __name__ = 'sale.point.payment'

    @classmethod
    def __setup__(cls):
        super().__setup__()
        # a refund of a booked sale gives the money back by the method it
        # came with (the channel or the wallet), not only in cash
        cls.method.domain = [
            ('company', '=', Eval('company', -1)),
            If(Eval('amount', 0) < 0,
                ['OR', ('cash', '=', True), ('fuel_kind', '!=', None)],
                ()),
            ]


class POSSaleLine(metaclass=PoolMeta):
    __name__ = 'sale.point.sale.line'
    fuel_transaction = fields.Many2One(
        'fuel.payment.transaction', "Fuelling Transaction", readonly=True,
        ondelete='RESTRICT')

    def get_account_move_lines(self):
        pool = Pool()
        Configuration = pool.get('fuel.payment.configuration')
        Method = pool.get('sale.point.payment.method')
        lines = super().get_account_move_lines()
        if self.product == Configuration(1).recharge_product:
            # money put on a wallet is owed to the driver until spent
            methods = Method.search([
                    ('company', '=', self.sale.company.id),
                    ('fuel_kind', '=', 'wallet'),
                    ], limit=1)
            if not methods:
                raise SettlementError(gettext(
                        'fuel_payment.msg_wallet_method_missing',
                        company=self.sale.company.rec_name))
            for line in lines:
                line.account = methods[0].account
        return lines

    @property
    def from_location(self):
        # fuel leaves the tank the nozzle draws from
        if (self.quantity >= 0 and self.fuel_transaction
                and self.fuel_transaction.nozzle
                and self.fuel_transaction.nozzle.tank):
            return self.fuel_transaction.nozzle.tank.location
        return super().from_location

    @property
    def to_location(self):
        if (self.quantity < 0 and self.fuel_transaction
                and self.fuel_transaction.nozzle
                and self.fuel_transaction.nozzle.tank):
            return self.fuel_transaction.nozzle.tank.location
        return super().to_location
