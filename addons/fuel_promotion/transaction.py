# This file is part of fuelpay.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""Promotions on fuelling transactions: the breakdown of the discount, one
line per rule or coupon, and the pricing that writes it"""
from collections import defaultdict
from decimal import Decimal

from trytond.model import Index, ModelSQL, ModelView, fields
from trytond.modules.currency.fields import Monetary
from trytond.pool import Pool, PoolMeta
from trytond.rpc import RPC
from trytond.transaction import without_check_access

from .rule import PRICING_STATES, check_readable

# the transaction states whose discount may still change
PRICEABLE_STATES = {'fuelling', 'review', 'to_pay'}


class FuellingTransaction(metaclass=PoolMeta):
    __name__ = 'fuel.payment.transaction'

    promotion_discounts = fields.One2Many(
        'fuel.promotion.discount', 'transaction', "Promotions",
        readonly=True,
        help="Which rule or coupon took how much off the fill.")

    @classmethod
    def __setup__(cls):
        super().__setup__()
        cls.__rpc__.update({
                'apply_promotions': RPC(readonly=False, instantiate=0),
                })

    @classmethod
    def apply_promotions(cls, transactions):
        """Price the transactions not yet paid with the rules in force at
        their end and the coupons reserved by their order; store the
        breakdown and set the discount. Pricing again gives the same
        result."""
        pool = Pool()
        Discount = pool.get('fuel.promotion.discount')
        Rule = pool.get('fuel.promotion.rule')
        transactions = cls.browse(transactions)
        check_readable(cls, transactions)
        transactions = [
            t for t in transactions if t.state in PRICEABLE_STATES]
        if not transactions:
            return
        cls.lock(transactions)
        rules = defaultdict(list)
        companies = {t.company for t in transactions}
        with without_check_access():
            # the rules are the operator's, whoever takes the payment
            for rule in Rule.search([
                        ('company', 'in', [c.id for c in companies]),
                        ('kind', 'in', ['unit', 'amount', 'percentage']),
                        ('state', 'in', PRICING_STATES),
                        ], order=[('id', 'ASC')]):
                rules[rule.company].append(rule)
        # The discount may hold a part the engine did not give (set by
        # fuel_payment's set_discount from elsewhere): keep that part and
        # replace only what the previous pricing gave.
        given = defaultdict(Decimal)
        with without_check_access():
            for discount in Discount.search([
                        ('transaction', 'in', [t.id for t in transactions]),
                        ]):
                given[discount.transaction] += discount.amount
        other = {
            t: max((t.discount or Decimal(0)) - given[t], Decimal(0))
            for t in transactions}
        lines = {}
        for transaction in transactions:
            date = transaction.end_date
            in_force = [
                r for r in rules[transaction.company]
                if date and r.start_date and r.start_date <= date
                and (r.end_date is None or date < r.end_date)]
            lines[transaction] = [
                Discount(
                    company=transaction.company, transaction=transaction,
                    rule=rule, amount=amount)
                for rule, amount in Rule.best_discounts(
                    transaction, in_force)]
        orders = {t.order for t in transactions if t.order}
        for order in sorted(orders, key=lambda o: o.id):
            order_transactions = [
                t for t in order.transactions if t in lines]
            left = {
                t: (t.amount or Decimal(0)) - other[t] - sum(
                    (d.amount for d in lines[t]), Decimal(0))
                for t in order_transactions}
            for coupon in sorted(
                    (c for c in order.coupons if c.state == 'reserved'),
                    key=lambda c: c.id):
                for transaction, amount in coupon.get_discounts(
                        order_transactions, left).items():
                    left[transaction] -= amount
                    lines[transaction].append(Discount(
                            company=transaction.company,
                            transaction=transaction, coupon=coupon,
                            amount=amount))
        with without_check_access():
            Discount.delete(Discount.search([
                        ('transaction', 'in', [t.id for t in transactions]),
                        ]))
            Discount.save([d for ds in lines.values() for d in ds])
        for transaction, discounts in lines.items():
            total = other[transaction] + sum(
                (d.amount for d in discounts), Decimal(0))
            transaction.set_discount(
                min(total, transaction.amount or Decimal(0)))
        cls.save(transactions)


class Discount(ModelSQL, ModelView):
    "Fuel Promotion Discount"
    __name__ = 'fuel.promotion.discount'

    company = fields.Many2One(
        'company.company', "Operator", required=True, readonly=True)
    transaction = fields.Many2One(
        'fuel.payment.transaction', "Transaction", required=True,
        readonly=True, ondelete='CASCADE')
    rule = fields.Many2One(
        'fuel.promotion.rule', "Rule", readonly=True, ondelete='RESTRICT')
    coupon = fields.Many2One(
        'fuel.promotion.coupon', "Coupon", readonly=True,
        ondelete='RESTRICT')
    amount = Monetary(
        "Amount", currency='currency', digits='currency', required=True,
        readonly=True)
    currency = fields.Function(
        fields.Many2One('currency.currency', "Currency"),
        'on_change_with_currency')

    @classmethod
    def __setup__(cls):
        super().__setup__()
        t = cls.__table__()
        cls._sql_indexes.update({
                Index(t, (t.transaction, Index.Range())),
                Index(t, (t.coupon, Index.Range())),
                Index(t, (t.rule, Index.Range())),
                })
        cls._order = [('transaction', 'DESC'), ('id', 'ASC')]

    @fields.depends('company')
    def on_change_with_currency(self, name=None):
        return self.company.currency if self.company else None

    def get_rec_name(self, name):
        if self.rule:
            return self.rule.rec_name
        if self.coupon:
            return self.coupon.rec_name
        return str(self.id)
