# This file is part of fuelpay.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""Gift redemption (礼品兑换): members exchange points for gifts kept in
the stock of a station"""
import datetime as dt
from decimal import Decimal

from trytond.i18n import gettext
from trytond.model import DeactivableMixin, ModelSQL, ModelView, fields
from trytond.pool import Pool, PoolMeta
from trytond.pyson import Eval
from trytond.rpc import RPC
from trytond.transaction import Transaction, without_check_access

from .exceptions import GiftError
from .member import POINTS_DIGITS
from .rule import check_readable


class Gift(DeactivableMixin, ModelSQL, ModelView):
    "Fuel Promotion Gift"
    __name__ = 'fuel.promotion.gift'

    company = fields.Many2One('company.company', "Operator", required=True)
    product = fields.Many2One(
        'product.product', "Product", required=True, ondelete='RESTRICT',
        domain=[('type', '=', 'goods')],
        context={'company': Eval('company', -1)}, depends={'company'},
        help="The goods handed out, kept in the stations' stock.")
    points = fields.Numeric(
        "Points", digits=POINTS_DIGITS, required=True,
        domain=[('points', '>', 0)], help="What one gift costs in points.")

    @classmethod
    def __setup__(cls):
        super().__setup__()
        cls.__rpc__.update({
                'redeem': RPC(
                    readonly=False, instantiate=0,
                    result=lambda redemption: redemption.id),
                })

    @classmethod
    def default_company(cls):
        return Transaction().context.get('company')

    def get_rec_name(self, name):
        return self.product.rec_name

    def available(self, station):
        "Return how many gifts the station has in stock"
        pool = Pool()
        Product = pool.get('product.product')
        location = station.warehouse.storage_location
        with Transaction().set_context(
                locations=[location.id], with_childs=True,
                stock_date_end=dt.date.max):
            quantity = Product(self.product.id).quantity
        return int(quantity or 0)

    @classmethod
    def redeem(cls, gift, member, station, quantity=1):
        """The member exchanges points for quantity gifts handed out at
        the station: the points are taken, the gifts leave its stock"""
        pool = Pool()
        Member = pool.get('fuel.promotion.member')
        Station = pool.get('fuel.station')
        Points = pool.get('fuel.promotion.points')
        Redemption = pool.get('fuel.promotion.gift.redemption')
        Move = pool.get('stock.move')
        Location = pool.get('stock.location')
        check_readable(cls, [gift])
        member, station = Member(int(member)), Station(int(station))
        check_readable(Member, [member])
        quantity = int(quantity)
        if (member.company != gift.company
                or station.company != gift.company or quantity <= 0):
            raise GiftError(gettext(
                    'fuel_promotion.msg_gift_invalid', gift=gift.rec_name))
        # one redemption of a gift at a time: stock and points are checked
        # then taken
        cls.lock([gift])
        Member.lock([member])
        cost = gift.points * quantity
        if Member(member.id).points < cost:
            raise GiftError(gettext(
                    'fuel_promotion.msg_gift_points', gift=gift.rec_name,
                    points=cost, balance=Member(member.id).points))
        if gift.available(station) < quantity:
            raise GiftError(gettext(
                    'fuel_promotion.msg_gift_stock', gift=gift.rec_name,
                    station=station.rec_name))
        customer, = Location.search([('type', '=', 'customer')], limit=1)
        with without_check_access():
            redemption = Redemption(
                company=gift.company, gift=gift, member=member,
                station=station, quantity=quantity, points=cost)
            redemption.save()
            move = Move(
                company=gift.company, product=gift.product,
                unit=gift.product.default_uom, quantity=quantity,
                from_location=station.warehouse.storage_location,
                to_location=customer, unit_price=Decimal(0),
                currency=gift.company.currency, origin=redemption)
            move.save()
            Move.do([move])
            redemption.move = move
            redemption.save()
            Points(
                company=gift.company, member=member, points=-cost,
                redemption=redemption).save()
        return redemption


class Redemption(ModelSQL, ModelView):
    "Fuel Promotion Gift Redemption"
    __name__ = 'fuel.promotion.gift.redemption'

    company = fields.Many2One(
        'company.company', "Operator", required=True, readonly=True)
    gift = fields.Many2One(
        'fuel.promotion.gift', "Gift", required=True, readonly=True,
        ondelete='RESTRICT')
    member = fields.Many2One(
        'fuel.promotion.member', "Member", required=True, readonly=True,
        ondelete='RESTRICT')
    station = fields.Many2One(
        'fuel.station', "Station", required=True, readonly=True,
        ondelete='RESTRICT')
    quantity = fields.Integer("Quantity", required=True, readonly=True)
    points = fields.Numeric(
        "Points", digits=POINTS_DIGITS, required=True, readonly=True)
    move = fields.Many2One(
        'stock.move', "Stock Move", readonly=True, ondelete='RESTRICT')
    date = fields.DateTime("Date", required=True, readonly=True)

    @classmethod
    def __setup__(cls):
        super().__setup__()
        cls._order = [('date', 'DESC'), ('id', 'DESC')]

    @classmethod
    def default_date(cls):
        return dt.datetime.now()


class StockMove(metaclass=PoolMeta):
    __name__ = 'stock.move'

    @classmethod
    def _get_origin(cls):
        return super()._get_origin() + ['fuel.promotion.gift.redemption']
