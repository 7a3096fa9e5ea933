# This file is part of fuelpay.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""Helpers shared by the fuel_promotion tests"""
import uuid
from decimal import Decimal

from trytond.i18n import gettext
from trytond.pool import Pool

from addons.fuel_payment.tests.tools import fill


def message(msg_id, **values):
    return gettext(f'fuel_promotion.{msg_id}', **values)


class PromotionTestMixin:
    "Make fills, orders, rules, templates and coupons of a test"

    def assertMessage(self, cm, msg_id, **values):
        self.assertEqual(cm.exception.message, message(msg_id, **values))

    def ingest(self, station, quantity, **kwargs):
        pool = Pool()
        FuelTransaction = pool.get('fuel.payment.transaction')
        result, = FuelTransaction.ingest([fill(station, quantity, **kwargs)])
        self.assertEqual(result['status'], 'created', msg=result)
        return FuelTransaction(result['id'])

    def order(self, *transactions):
        pool = Pool()
        Order = pool.get('fuel.payment.order')
        return Order.create_for(list(transactions))

    def rule(self, company, name, kind, activate=True, **values):
        pool = Pool()
        Rule = pool.get('fuel.promotion.rule')
        rule, = Rule.create([dict(
                    company=company.id, name=name, kind=kind, **values)])
        if activate:
            Rule.activate([rule])
        return rule

    def template(self, company, name, activate=True, **values):
        pool = Pool()
        Template = pool.get('fuel.promotion.coupon.template')
        values.setdefault('kind', 'fixed')
        template, = Template.create([dict(
                    company=company.id, name=name, **values)])
        if activate:
            Template.activate([template])
        return template

    def breakdown(self, transaction):
        pool = Pool()
        FuelTransaction = pool.get('fuel.payment.transaction')
        transaction = FuelTransaction(transaction.id)
        return [
            (d.rule or d.coupon, d.amount)
            for d in transaction.promotion_discounts]

    def pay(self, order, setup, amount):
        pool = Pool()
        Order = pool.get('fuel.payment.order')
        Order.pay_rpc(order, [{
                    'method': setup['methods']['cash'].id, 'amount': amount,
                    'uuid': str(uuid.uuid4())}])

    def gift(self, company, setup, stock, points):
        "Return a gift of points with stock in the station's storage"
        pool = Pool()
        Gift = pool.get('fuel.promotion.gift')
        Location = pool.get('stock.location')
        Move = pool.get('stock.move')
        ModelData = pool.get('ir.model.data')
        Template = pool.get('product.template')
        unit = ModelData.get_id('product', 'uom_unit')
        template, = Template.create([{
                    'name': "Car wash voucher", 'type': 'goods',
                    'default_uom': unit,
                    'products': [('create', [{}])],
                    }])
        product, = template.products
        supplier, = Location.search([('type', '=', 'supplier')], limit=1)
        move, = Move.create([{
                    'company': company.id, 'product': product.id,
                    'unit': unit, 'quantity': stock,
                    'from_location': supplier.id,
                    'to_location': (
                        setup['station'].warehouse.storage_location.id),
                    'unit_price': Decimal(1),
                    'currency': company.currency.id,
                    }])
        Move.do([move])
        gift, = Gift.create([{
                    'company': company.id, 'product': product.id,
                    'points': Decimal(points)}])
        return gift

    def issue(self, template, parties=None, quantity=None):
        pool = Pool()
        Template = pool.get('fuel.promotion.coupon.template')
        return Template.issue(template, parties=parties, quantity=quantity)
