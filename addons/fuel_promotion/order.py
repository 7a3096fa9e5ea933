# This file is part of fuelpay.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""Promotions on orders: priced when the order is made, coupons redeemed
on the draft order, used when it is paid, released when it is voided"""
from trytond.i18n import gettext
from trytond.model import Workflow, fields
from trytond.pool import Pool, PoolMeta
from trytond.rpc import RPC
from trytond.transaction import without_check_access

from .coupon import coupon_by_code
from .exceptions import CouponError
from .rule import check_readable


class Order(metaclass=PoolMeta):
    __name__ = 'fuel.payment.order'

    coupons = fields.One2Many(
        'fuel.promotion.coupon', 'order', "Coupons", readonly=True)

    @classmethod
    def __setup__(cls):
        super().__setup__()
        cls.__rpc__.update({
                'redeem_coupon': RPC(readonly=False, instantiate=0),
                })

    @classmethod
    def create_for(cls, transactions):
        order = super().create_for(transactions)
        cls.apply_promotions([order])
        return cls(order.id)

    @classmethod
    def on_modification(cls, mode, orders, field_names=None):
        super().on_modification(mode, orders, field_names=field_names)
        if mode == 'write' and 'customer' in field_names:
            # the member's level may bring other rules
            cls.apply_promotions([
                    o for o in orders
                    if o.state == 'draft' and not o.payments])

    @classmethod
    def apply_promotions(cls, orders):
        "Price the transactions of the orders with the promotions"
        pool = Pool()
        FuelTransaction = pool.get('fuel.payment.transaction')
        FuelTransaction.apply_promotions(
            [t for o in cls.browse(orders) for t in o.transactions])

    @classmethod
    def redeem_coupon(cls, order, code):
        """Redeem the coupon of code on the draft order, before any
        payment; return the order's total"""
        pool = Pool()
        Coupon = pool.get('fuel.promotion.coupon')
        check_readable(cls, [order])
        cls.lock([order])
        order = cls(order.id)
        if order.state != 'draft' or order.payments:
            raise CouponError(gettext(
                    'fuel_promotion.msg_coupon_order_not_draft',
                    order=order.rec_name))
        with without_check_access():
            # a driver shows a code, not a record the attendant can see
            coupon = coupon_by_code(order.company, code)
            Coupon.lock([coupon])
            coupon = Coupon(coupon.id)
            coupon.check_redeem(order)
            before = order.total
            Coupon.reserve([coupon], order)
        cls.apply_promotions([order])
        order = cls(order.id)
        if order.total == before:
            with without_check_access():
                Coupon.release([coupon])
            cls.apply_promotions([order])
            raise CouponError(gettext(
                    'fuel_promotion.msg_coupon_no_discount',
                    coupon=coupon.rec_name, order=order.rec_name))
        if coupon.party is None and order.customer:
            # a coupon handed out by its code is the member's who uses it
            coupon.party = order.customer
            with without_check_access():
                coupon.save()
        return order.total

    @classmethod
    @Workflow.transition('paid')
    def process(cls, orders):
        pool = Pool()
        Coupon = pool.get('fuel.promotion.coupon')
        Points = pool.get('fuel.promotion.points')
        super().process(orders)
        with without_check_access():
            Coupon.use([
                    c for o in orders for c in o.coupons
                    if c.state == 'reserved'])
            Points.earn(orders)

    @classmethod
    @Workflow.transition('cancelled')
    def cancel(cls, orders, reason=None):
        transactions = [t for o in orders for t in o.transactions]
        cls._release_coupons(orders)
        super().cancel(orders, reason=reason)
        cls._reprice(transactions)

    @classmethod
    @Workflow.transition('refunded')
    def do_refund(cls, orders, reason):
        transactions = [t for o in orders for t in o.transactions]
        pool = Pool()
        Points = pool.get('fuel.promotion.points')
        super().do_refund(orders, reason)
        cls._release_coupons(orders)
        with without_check_access():
            Points.reverse(orders)
        cls._reprice(transactions)

    @classmethod
    def _release_coupons(cls, orders):
        pool = Pool()
        Coupon = pool.get('fuel.promotion.coupon')
        with without_check_access():
            Coupon.release([
                    c for o in orders for c in o.coupons
                    if c.state in {'reserved', 'used'}])

    @classmethod
    def _reprice(cls, transactions):
        "Price again, without the coupons, what was freed"
        pool = Pool()
        FuelTransaction = pool.get('fuel.payment.transaction')
        FuelTransaction.apply_promotions(transactions)
