# This file is part of fuelpay.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
import datetime as dt
import uuid
from decimal import Decimal

from trytond.exceptions import UserError
from trytond.model.exceptions import SQLConstraintError
from trytond.modules.company.tests import create_company, set_company
from trytond.pool import Pool
from trytond.tests.test_tryton import with_transaction

from addons.fuel_payment.tests.tools import (
    PaymentDatabaseTestCase,
    create_payment_setup,
)

from .tools import PromotionTestMixin, message


class CouponTestCase(PromotionTestMixin, PaymentDatabaseTestCase):
    "Test coupons: issued, redeemed once, released, expired"

    @with_transaction()
    def test_coupon_used_once_under_retried_payment(self):
        """Test a coupon is redeemed on a draft order, used once when the
        payment is retried, and refused on another order"""
        pool = Pool()
        Order = pool.get('fuel.payment.order')
        Coupon = pool.get('fuel.promotion.coupon')
        Party = pool.get('party.party')
        company = create_company()
        with set_company(company):
            setup = create_payment_setup(company)
            station, cash = setup['station'], setup['methods']['cash']
            rule = self.rule(
                company, "-0.30/L", 'unit', unit_discount=Decimal('0.30'))
            template = self.template(
                company, "10 off from 50", amount=Decimal(10),
                minimum_amount=Decimal(50), duration=7)
            member, = Party.create([{'name': "Wang Fang"}])
            coupon, = self.issue(template, parties=[member])
            self.assertEqual(coupon.state, 'issued')
            self.assertEqual(
                coupon.expiry_date - coupon.start_date, dt.timedelta(days=7))
            transaction = self.ingest(station, '10')
            order = self.order(transaction)
            Order.write([order], {'customer': member.id})
            total = Order.redeem_coupon(order, coupon.code.lower())
            # 75.80 - 3.00 (rule) - 10.00 (coupon)
            self.assertEqual(total, Decimal('62.80'))
            self.assertEqual(self.breakdown(transaction), [
                    (rule, Decimal('3.00')), (coupon, Decimal('10.00'))])
            self.assertEqual(Coupon(coupon.id).state, 'reserved')

            other = self.order(self.ingest(station, '10'))
            with self.assertRaises(UserError) as cm:
                Order.redeem_coupon(other, coupon.code)
            self.assertMessage(
                cm, 'msg_coupon_not_available', coupon=coupon.code,
                state="Reserved")

            payment = {
                'method': cash.id, 'amount': '62.80',
                'uuid': str(uuid.uuid4())}
            Order.pay_rpc(order, [payment])
            # the terminal did not get the answer and sends it again
            result = Order.pay_rpc(order, [payment])
            self.assertEqual(result['state'], 'paid')
            self.assertEqual(result['amount_paid'], Decimal('62.80'))
            coupon = Coupon(coupon.id)
            self.assertEqual(coupon.state, 'used')
            self.assertEqual(coupon.order, order)
            self.assertEqual(coupon.discount, Decimal('10.00'))
            self.assertEqual(Order(order.id).sale.total, Decimal('62.80'))
            Template = pool.get('fuel.promotion.coupon.template')
            self.issue(template, quantity=2)
            template = Template(template.id)
            self.assertEqual(
                (template.issued, template.redeemed, template.discount,
                    template.revenue, template.outstanding,
                    template.liability),
                (3, 1, Decimal('10.00'), Decimal('62.80'), 2,
                    Decimal('20.00')))
            with self.assertRaises(UserError) as cm:
                Order.redeem_coupon(order, coupon.code)
            self.assertMessage(
                cm, 'msg_coupon_order_not_draft', order=order.rec_name)
            with self.assertRaises(UserError) as cm:
                Order.redeem_coupon(other, coupon.code)
            self.assertMessage(
                cm, 'msg_coupon_not_available', coupon=coupon.code,
                state="Used")

    @with_transaction()
    def test_coupon_released_when_voided(self):
        """Test cancelling a draft order or refunding a paid one gives the
        coupon back, and the fills lose its discount"""
        pool = Pool()
        Order = pool.get('fuel.payment.order')
        Coupon = pool.get('fuel.promotion.coupon')
        FuelTransaction = pool.get('fuel.payment.transaction')
        company = create_company()
        with set_company(company):
            setup = create_payment_setup(company)
            station, cash = setup['station'], setup['methods']['cash']
            template = self.template(
                company, "5%", kind='percentage', rate=Decimal('0.05'),
                cap=Decimal(3))
            coupon, = self.issue(template, quantity=1)
            self.assertIsNone(coupon.party)
            transaction = self.ingest(station, '10')
            order = self.order(transaction)
            self.assertEqual(
                Order.redeem_coupon(order, coupon.code), Decimal('72.80'))
            Order.cancel([order], reason="Driver left")
            self.assertEqual(Coupon(coupon.id).state, 'issued')
            self.assertIsNone(Coupon(coupon.id).order)
            self.assertEqual(self.breakdown(transaction), [])
            self.assertEqual(
                FuelTransaction(transaction.id).amount_due, Decimal('75.80'))

            order = self.order(transaction)
            Order.redeem_coupon(order, coupon.code)
            Order.pay_rpc(order, [{
                        'method': cash.id, 'amount': '72.80',
                        'uuid': str(uuid.uuid4())}])
            self.assertEqual(Coupon(coupon.id).state, 'used')
            Order.do_refund([Order(order.id)], "Wrong pump")
            coupon = Coupon(coupon.id)
            self.assertEqual(coupon.state, 'issued')
            self.assertIsNone(coupon.order)
            self.assertEqual(self.breakdown(transaction), [])
            # free for another order
            order = self.order(transaction)
            self.assertEqual(
                Order.redeem_coupon(order, coupon.code), Decimal('72.80'))

    @with_transaction()
    def test_coupon_checks(self):
        "Test what keeps a coupon off an order"
        pool = Pool()
        Order = pool.get('fuel.payment.order')
        Coupon = pool.get('fuel.promotion.coupon')
        Template = pool.get('fuel.promotion.coupon.template')
        Party = pool.get('party.party')
        company = create_company()
        with set_company(company):
            setup = create_payment_setup(company)
            station, cash = setup['station'], setup['methods']['cash']
            member, other_member = Party.create([
                    {'name': "Wang Fang"}, {'name': "Li Lei"}])
            per_unit = self.template(
                company, "-0.50/L", kind='unit',
                unit_discount=Decimal('0.50'), stackable=True)
            fixed = self.template(
                company, "20 off from 100", amount=Decimal(20),
                minimum_amount=Decimal(100))
            later = self.template(
                company, "Next month", amount=Decimal(5), validity='fixed',
                start_date=dt.datetime.now() + dt.timedelta(days=30),
                end_date=dt.datetime.now() + dt.timedelta(days=60))
            order = self.order(self.ingest(station, '10'))
            Order.write([order], {'customer': member.id})

            with self.assertRaises(UserError) as cm:
                Order.redeem_coupon(order, 'NOSUCHCODE')
            self.assertMessage(cm, 'msg_coupon_unknown', code='NOSUCHCODE')
            theirs, = self.issue(per_unit, parties=[other_member])
            with self.assertRaises(UserError) as cm:
                Order.redeem_coupon(order, theirs.code)
            self.assertMessage(
                cm, 'msg_coupon_other_member', coupon=theirs.code,
                order=order.rec_name)
            future, = self.issue(later, parties=[member])
            with self.assertRaises(UserError) as cm:
                Order.redeem_coupon(order, future.code)
            self.assertMessage(
                cm, 'msg_coupon_not_valid', coupon=future.code,
                start=future.start_date, expiry=future.expiry_date)
            big, = self.issue(fixed, parties=[member])
            with self.assertRaises(UserError) as cm:
                Order.redeem_coupon(order, big.code)
            self.assertMessage(
                cm, 'msg_coupon_no_discount', coupon=big.code,
                order=order.rec_name)
            self.assertEqual(Coupon(big.id).state, 'issued')
            self.assertEqual(Order(order.id).total, Decimal('75.80'))

            # two stackable coupons add up; a third that is not is refused
            first, second = self.issue(per_unit, parties=[member, member])
            Order.redeem_coupon(order, first.code)
            self.assertEqual(
                Order.redeem_coupon(order, second.code), Decimal('65.80'))
            alone, = self.issue(fixed, quantity=1)
            with self.assertRaises(UserError) as cm:
                Order.redeem_coupon(order, alone.code)
            self.assertMessage(
                cm, 'msg_coupon_not_stackable', coupon=alone.code,
                order=order.rec_name)
            Order.add_payment(order, cash, '10')
            with self.assertRaises(UserError) as cm:
                Order.redeem_coupon(order, alone.code)
            self.assertMessage(
                cm, 'msg_coupon_order_not_draft', order=order.rec_name)

            # templates: issued when active, changed in draft only
            with self.assertRaises(UserError) as cm:
                Template.write([fixed], {'amount': Decimal(30)})
            self.assertMessage(
                cm, 'msg_template_not_draft', template=fixed.rec_name)
            Template.end([fixed])
            with self.assertRaises(UserError) as cm:
                self.issue(fixed, quantity=1)
            self.assertMessage(
                cm, 'msg_template_not_active', template=fixed.rec_name)
            copy, = Template.copy([fixed])
            self.assertEqual((copy.state, copy.coupons), ('draft', ()))
            Template.write([copy], {
                    'validity': 'fixed',
                    'end_date': dt.datetime.now() - dt.timedelta(days=1)})
            Template.activate([copy])
            with self.assertRaises(UserError) as cm:
                self.issue(copy, quantity=1)
            self.assertMessage(
                cm, 'msg_template_expired', template=copy.rec_name)
            with self.assertRaises(UserError) as cm:
                self.template(company, "Too much", kind='percentage',
                    rate=Decimal(2))
            self.assertMessage(
                cm, 'msg_template_values', template="Too much")
            with self.assertRaises(UserError) as cm:
                Coupon.delete([alone])
            self.assertMessage(cm, 'msg_coupon_delete')

    @with_transaction()
    def test_coupon_code_unique(self):
        "Test a coupon code is unique among the operator's coupons"
        pool = Pool()
        Coupon = pool.get('fuel.promotion.coupon')
        company = create_company()
        with set_company(company):
            create_payment_setup(company)
            template = self.template(company, "5 off", amount=Decimal(5))
            coupon, = self.issue(template, quantity=1)
            expected = message('msg_coupon_code_unique')
            with self.assertRaises(SQLConstraintError) as cm:
                Coupon.create([{
                            'company': company.id, 'template': template.id,
                            'code': coupon.code,
                            'issue_date': coupon.issue_date,
                            'start_date': coupon.start_date,
                            'expiry_date': coupon.expiry_date,
                            }])
            self.assertEqual(cm.exception.message, expected)

    @with_transaction()
    def test_coupon_expiry_cron(self):
        "Test the cron expires issued coupons past their date only"
        pool = Pool()
        Order = pool.get('fuel.payment.order')
        Coupon = pool.get('fuel.promotion.coupon')
        Cron = pool.get('ir.cron')
        company = create_company()
        with set_company(company):
            setup = create_payment_setup(company)
            template = self.template(company, "5 off", amount=Decimal(5))
            old, reserved, fresh = self.issue(template, quantity=3)
            order = self.order(self.ingest(setup['station'], '10'))
            Order.redeem_coupon(order, reserved.code)
            past = dt.datetime.now() - dt.timedelta(minutes=1)
            Coupon.write([old, reserved], {'expiry_date': past})
            cron, = Cron.search([
                    ('method', '=',
                        'fuel.promotion.coupon|expire_coupons')])
            Cron.run_once([cron])
            self.assertEqual(
                [c.state for c in Coupon.browse([old, reserved, fresh])],
                ['expired', 'reserved', 'issued'])
            with self.assertRaises(UserError) as cm:
                Order.redeem_coupon(order, old.code)
            self.assertMessage(
                cm, 'msg_coupon_not_available', coupon=old.code,
                state="Expired")
