# This file is part of fuelpay.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
import datetime as dt
import uuid
from decimal import Decimal

from trytond.exceptions import UserError
from trytond.model.exceptions import SQLConstraintError
from trytond.modules.company.tests import (
    CompanyTestMixin,
    create_company,
    set_company,
)
from trytond.pool import Pool
from trytond.tests.test_tryton import ModuleTestCase, with_transaction
from trytond.transaction import Transaction, check_access

from addons.fuel_payment.tests.tools import (
    create_grade,
    create_payment_setup,
    create_point,
    create_wallet,
)
from addons.fuel_station.tests.test_module import create_station, create_user
from addons.fuel_station.tests.tools import (
    FuelDatabaseMixin,
    FuelModuleTestMixin,
)

from ..rule import in_window
from .tools import PromotionTestMixin, message


class FuelPromotionTestCase(
        PromotionTestMixin, FuelDatabaseMixin, FuelModuleTestMixin,
        CompanyTestMixin, ModuleTestCase):
    "Test Fuel Promotion module: rules, levels, points, gifts, push"
    module = 'fuel_promotion'

    # ---- rules and the pricing engine ----------------------------------

    def test_time_window(self):
        "Test weekly windows, past midnight included"
        # 2026-12-01 is a Tuesday
        tuesday = dt.datetime(2026, 12, 1)
        at = dict(hour=0, minute=0)
        tue_22, six = dt.time(22), dt.time(6)
        for date, expected in [
                (tuesday.replace(hour=23), True),
                (tuesday.replace(hour=21, minute=59), False),
                (tuesday + dt.timedelta(days=1, hours=5, minutes=59), True),
                (tuesday + dt.timedelta(days=1, hours=6), False),
                (tuesday + dt.timedelta(days=1, hours=23), False),
                (tuesday.replace(hour=3), False),  # Monday's night
                (tuesday - dt.timedelta(days=1, hours=-23), False),
                ]:
            with self.subTest(date=date):
                self.assertEqual(
                    in_window(['1'], tue_22, six, date), expected)
        self.assertTrue(in_window([], None, None, tuesday.replace(**at)))
        self.assertTrue(in_window(['1'], None, None, tuesday))
        self.assertFalse(in_window(['2'], None, None, tuesday))
        self.assertTrue(in_window(
                [], dt.time(8), dt.time(12), tuesday.replace(hour=11)))
        self.assertFalse(in_window(
                [], dt.time(8), dt.time(12), tuesday.replace(hour=12)))

    @with_transaction()
    def test_unit_discount_priced_deterministically_and_posted(self):
        """Test a unit-price discount (升减) is stored with its breakdown
        when the order is made, the same twice, and booked on the sale"""
        pool = Pool()
        Order = pool.get('fuel.payment.order')
        FuelTransaction = pool.get('fuel.payment.transaction')
        company = create_company()
        with set_company(company):
            setup = create_payment_setup(company)
            grade = setup['grade']
            rule = self.rule(
                company, "92# -0.30/L", 'unit',
                unit_discount=Decimal('0.30'), grades=[('add', [grade.id])])
            # on another grade only: never applies here
            self.rule(
                company, "95# -1/L", 'unit', unit_discount=Decimal(1),
                grades=[('add', [create_grade(
                            "95#", company, setup['accounts']).id])])
            # a draft rule prices nothing
            self.rule(
                company, "Draft", 'unit', activate=False,
                unit_discount=Decimal(2))
            transaction = self.ingest(setup['station'], '10')
            self.assertEqual(transaction.discount, Decimal(0))
            order = self.order(transaction)
            self.assertEqual(
                self.breakdown(transaction), [(rule, Decimal('3.00'))])
            transaction = FuelTransaction(transaction.id)
            self.assertEqual(transaction.discount, Decimal('3.00'))
            self.assertEqual(transaction.amount_due, Decimal('72.80'))
            self.assertEqual(order.total, Decimal('72.80'))

            FuelTransaction.apply_promotions([transaction])
            FuelTransaction.apply_promotions([transaction])
            self.assertEqual(
                self.breakdown(transaction), [(rule, Decimal('3.00'))])
            self.assertEqual(
                FuelTransaction(transaction.id).amount_due, Decimal('72.80'))
            # a discount given elsewhere (fuel_payment's set_discount) is
            # kept beside the rules' one, which pricing never adds twice
            transaction = FuelTransaction(transaction.id)
            transaction.set_discount(Decimal('4.00'))
            transaction.save()
            FuelTransaction.apply_promotions([transaction])
            FuelTransaction.apply_promotions([transaction])
            self.assertEqual(
                FuelTransaction(transaction.id).discount, Decimal('4.00'))
            self.assertEqual(
                self.breakdown(transaction), [(rule, Decimal('3.00'))])
            transaction = FuelTransaction(transaction.id)
            transaction.set_discount(Decimal('3.00'))
            transaction.save()
            FuelTransaction.apply_promotions([transaction])
            self.assertEqual(
                FuelTransaction(transaction.id).amount_due, Decimal('72.80'))

            Order.pay_rpc(order, [{
                        'method': setup['methods']['cash'].id,
                        'amount': '72.80', 'uuid': str(uuid.uuid4())}])
            order = Order(order.id)
            self.assertEqual(order.state, 'paid')
            self.assertEqual(order.sale.total, Decimal('72.80'))
            discount_product = pool.get('fuel.payment.configuration')(
                1).discount_product
            self.assertEqual(
                [line.amount for line in order.sale.lines
                    if line.product == discount_product],
                [Decimal('-3.00')])
            # paid: pricing again changes nothing
            FuelTransaction.apply_promotions([transaction])
            self.assertEqual(
                self.breakdown(transaction), [(rule, Decimal('3.00'))])
            # the rule's results count paid fills only
            self.order(self.ingest(setup['station'], '10'))
            rule = pool.get('fuel.promotion.rule')(rule.id)
            self.assertEqual(
                (rule.fills, rule.discount_given), (1, Decimal('3.00')))

    @with_transaction()
    def test_amount_percentage_stacking_and_exclusivity(self):
        """Test amount (满减) and capped percentage discounts stack, and a
        rule that is not stackable wins alone only when it gives more"""
        company = create_company()
        with set_company(company):
            setup = create_payment_setup(company)
            station = setup['station']
            amount_off = self.rule(
                company, "50 -5", 'amount',
                minimum_amount=Decimal(50), discount_amount=Decimal(5))
            percent = self.rule(
                company, "10% up to 4", 'percentage',
                rate=Decimal('0.1'), cap=Decimal(4))
            exclusive = self.rule(
                company, "-0.80/L alone", 'unit',
                unit_discount=Decimal('0.80'), stackable=False)
            # today is not in this rule's days
            tomorrow = (dt.datetime.now() + dt.timedelta(hours=8 + 24))
            self.rule(
                company, "Not today", 'unit', unit_discount=Decimal(5),
                weekdays=[str(tomorrow.weekday())], stackable=False)
            small = self.ingest(station, '5')    # 37.90
            medium = self.ingest(station, '10')  # 75.80
            large = self.ingest(station, '20')   # 151.60
            self.order(small, medium, large)
            # 5 L: 3.79 off, 4.00 alone is more
            self.assertEqual(
                self.breakdown(small), [(exclusive, Decimal('4.00'))])
            # 10 L: 5 + 4 stacked beat 8.00 alone
            self.assertEqual(self.breakdown(medium), [
                    (amount_off, Decimal('5.00')),
                    (percent, Decimal('4.00')),
                    ])
            # 20 L: 16.00 alone beats 9 stacked
            self.assertEqual(
                self.breakdown(large), [(exclusive, Decimal('16.00'))])

    @with_transaction()
    def test_rule_workflow(self):
        """Test rules are edited in draft only, activated and ended with
        dates that keep the fills already made, copied into a draft"""
        pool = Pool()
        Rule = pool.get('fuel.promotion.rule')
        FuelTransaction = pool.get('fuel.payment.transaction')
        company = create_company()
        with set_company(company):
            setup = create_payment_setup(company)
            station = setup['station']
            rule = self.rule(
                company, "-0.10/L", 'unit', unit_discount=Decimal('0.10'),
                stations=[('add', [station.id])])
            self.assertEqual(rule.state, 'active')
            self.assertTrue(rule.start_date)
            with self.assertRaises(UserError) as cm:
                Rule.write([rule], {'unit_discount': Decimal(1)})
            self.assertMessage(cm, 'msg_rule_not_draft', rule=rule.rec_name)
            with self.assertRaises(UserError) as cm:
                Rule.delete([rule])
            self.assertMessage(cm, 'msg_rule_not_draft', rule=rule.rec_name)

            before = self.ingest(station, '10')
            FuelTransaction.apply_promotions([before])
            Rule.end([rule])
            self.assertEqual(rule.state, 'ended')
            self.assertTrue(rule.end_date)
            after = self.ingest(
                station, '10',
                end_date=rule.end_date + dt.timedelta(seconds=1))
            FuelTransaction.apply_promotions([before, after])
            # ended after the fill: it keeps its discount, priced again
            self.assertEqual(self.breakdown(before), [(rule, Decimal('1.00'))])
            self.assertEqual(self.breakdown(after), [])

            copy, = Rule.copy([rule])
            self.assertEqual(copy.state, 'draft')
            self.assertIsNone(copy.start_date)
            self.assertEqual(copy.stations, (station,))
            Rule.write([copy], {'name': "Again"})
            Rule.delete([copy])
            # the audit trail: who activated and ended, each transition
            user = Transaction().user
            self.assertEqual(rule.activated_by.id, user)
            self.assertEqual(rule.ended_by.id, user)
            # ir.model.log keeps them when the transaction commits
            self.assertEqual([
                    log.target for log in Transaction().log_records
                    if log.resource == rule
                    and log.event == 'transition'],
                ['state:active', 'state:ended'])

            with self.assertRaises(UserError) as cm:
                self.rule(company, "Too much", 'percentage',
                    rate=Decimal('1.5'))
            self.assertMessage(cm, 'msg_rule_values', rule="Too much")
            with self.assertRaises(UserError) as cm:
                self.rule(company, "Nothing", 'unit', unit_discount=0)
            self.assertMessage(cm, 'msg_rule_values', rule="Nothing")
            with self.assertRaises(UserError) as cm:
                self.rule(company, "No tier", 'recharge')
            self.assertMessage(cm, 'msg_rule_no_tier', rule="No tier")

    # ---- recharge bonuses ----------------------------------------------

    @with_transaction()
    def test_recharge_bonus_tiers(self):
        """Test a tiered recharge bonus (充值赠送) credits the highest tier
        reached as a separate bonus line, at its stations only"""
        pool = Pool()
        Wallet = pool.get('fuel.payment.wallet')
        Level = pool.get('fuel.promotion.level')
        Member = pool.get('fuel.promotion.member')
        Station = pool.get('fuel.station')
        Shift = pool.get('fuel.station.shift')
        company = create_company()
        with set_company(company):
            setup = create_payment_setup(company)
            station, alipay = setup['station'], setup['methods']['alipay']
            other = create_station(company, 'S02')
            Station.write([other], {
                    'point': create_point(company, other, 'S02').id})
            shift, = Shift.create([{'station': other.id}])
            Shift.open([shift])
            self.rule(
                company, "Recharge bonus", 'recharge',
                stations=[('add', [station.id])],
                tiers=[('create', [
                            {'minimum_amount': Decimal(100),
                                'bonus': Decimal(10)},
                            {'minimum_amount': Decimal(500),
                                'bonus': Decimal(80)},
                            ])])
            wallet = create_wallet(company)
            for amount, at, expected in [
                    ('50', station, []),
                    ('300', station, [Decimal('10.00')]),
                    ('500', station, [Decimal('80.00')]),
                    ('1000', other, []),
                    ]:
                with self.subTest(amount=amount, station=at.code):
                    moves = Wallet.recharge(
                        wallet, amount, alipay, at, reference='R' + amount)
                    self.assertEqual(
                        [m.amount for m in moves if m.kind == 'bonus'],
                        expected)
            self.assertEqual(Wallet(wallet.id).balance, Decimal('1940.00'))

            # a bonus for a member level gives nothing to other wallets
            level, = Level.create([{
                        'company': company.id, 'name': "VIP",
                        'basis': 'spending', 'threshold': Decimal(0),
                        'window': 30}])
            self.rule(
                company, "VIP bonus", 'recharge',
                levels=[('add', [level.id])],
                tiers=[('create', [{
                                'minimum_amount': Decimal(100),
                                'bonus': Decimal(30)}])])
            vip = create_wallet(company, name="Wei Na")
            Member.update_levels([Member.get_member(company, vip.party)])
            for at, expected in [(wallet, Decimal(10)), (vip, Decimal(30))]:
                moves = Wallet.recharge(
                    at, '100', alipay, station, reference='R-' + at.number)
                self.assertEqual(
                    [m.amount for m in moves if m.kind == 'bonus'],
                    [expected])

    # ---- member levels and points --------------------------------------

    @with_transaction()
    def test_levels_points_and_level_prices(self):
        """Test points earned on paid fills, levels going up and down with
        the rolling window, level prices and points taken back by a
        refund"""
        pool = Pool()
        Order = pool.get('fuel.payment.order')
        Level = pool.get('fuel.promotion.level')
        Member = pool.get('fuel.promotion.member')
        Points = pool.get('fuel.promotion.points')
        Gift = pool.get('fuel.promotion.gift')
        Party = pool.get('party.party')
        company = create_company()
        with set_company(company):
            setup = create_payment_setup(company)
            station = setup['station']
            silver, gold = Level.create([{
                        'company': company.id, 'name': "Silver",
                        'sequence': 10, 'basis': 'spending',
                        'threshold': Decimal(100), 'window': 30,
                        }, {
                        'company': company.id, 'name': "Gold",
                        'sequence': 20, 'basis': 'points',
                        'threshold': Decimal(150), 'window': 30,
                        }])
            earn = self.rule(
                company, "2 a litre, 1 a yuan", 'points',
                points_per_unit=Decimal(2), points_per_amount=Decimal(1))
            level_price = self.rule(
                company, "Members -0.50/L", 'unit',
                unit_discount=Decimal('0.50'),
                levels=[('add', [silver.id, gold.id])])
            driver, = Party.create([{'name': "Zhao Lei"}])

            first = self.order(self.ingest(station, '10'))
            Order.write([first], {'customer': driver.id})
            self.assertEqual(Order(first.id).total, Decimal('75.80'))
            self.pay(first, setup, '75.80')
            member = Member.get_member(company, driver, create=False)
            # 10 x 2 + 75 whole yuan
            self.assertEqual(member.points, Decimal(95))
            self.assertEqual(
                [(p.rule, p.points) for p in member.points_moves],
                [(earn, Decimal(95))])
            Member.update_levels([member])
            self.assertIsNone(member.level)

            second = self.order(self.ingest(station, '20'))
            Order.write([second], {'customer': driver.id})
            self.pay(second, setup, '151.60')
            self.assertEqual(Member(member.id).points, Decimal(286))
            self.assertEqual(Member.update_levels(), [member])
            self.assertEqual(member.level, gold)

            # the member's level brings its price once the order knows him
            transaction = self.ingest(station, '10')
            third = self.order(transaction)
            self.assertEqual(third.total, Decimal('75.80'))
            Order.write([third], {'customer': driver.id})
            self.assertEqual(Order(third.id).total, Decimal('70.80'))
            self.assertEqual(
                self.breakdown(transaction), [(level_price, Decimal('5.00'))])
            self.pay(third, setup, '70.80')
            # 20 + 70 more; a refund takes them back
            self.assertEqual(Member(member.id).points, Decimal(376))
            Order.do_refund([Order(third.id)], "Wrong card")
            self.assertEqual(Member(member.id).points, Decimal(286))

            # 40 days later the window holds nothing: down to no level
            cursor = Transaction().connection.cursor()
            past = dt.datetime.now() - dt.timedelta(days=40)
            for Model in [Order, Points]:
                table = Model.__table__()
                column = table.date
                cursor.execute(*table.update([column], [past]))
            self.assertEqual(Member.update_levels([member]), [member])
            self.assertIsNone(member.level)
            # 106.12 spent, 28 + 106 points: Silver by spending only
            fourth = self.order(self.ingest(station, '14'))
            Order.write([fourth], {'customer': driver.id})
            self.pay(fourth, setup, '106.12')
            Member.update_levels([member])
            self.assertEqual(member.level, silver)

            # gifts (礼品兑换) for points, out of the station's stock
            gift = self.gift(company, setup, stock=3, points=100)
            # 95 + 191 + 134 = 420 points
            self.assertEqual(Member(member.id).points, Decimal(420))
            with self.assertRaises(UserError) as cm:
                Gift.redeem(gift, member.id, station.id, 5)
            self.assertMessage(
                cm, 'msg_gift_points', gift=gift.rec_name,
                points=Decimal(500), balance=Decimal(420))
            redemption = Gift.redeem(gift, member.id, station.id, 2)
            self.assertEqual(redemption.move.state, 'done')
            self.assertEqual(Member(member.id).points, Decimal(220))
            self.assertEqual(gift.available(station), 1)
            with self.assertRaises(UserError) as cm:
                Gift.redeem(gift, member.id, station.id, 2)
            self.assertMessage(
                cm, 'msg_gift_stock', gift=gift.rec_name,
                station=station.rec_name)
            with self.assertRaises(UserError) as cm:
                Gift.redeem(gift, member.id, station.id, 0)
            self.assertMessage(cm, 'msg_gift_invalid', gift=gift.rec_name)

            # the member claims a card: it carries the level and a wallet
            card = Member.claim_card(company.id, driver.id)
            self.assertEqual(card.wallet.party, driver)
            self.assertEqual(card.wallet.kind, 'personal')
            self.assertEqual(card.member_level, silver)
            self.assertEqual(Member.claim_card(company.id, driver.id), card)

            with self.assertRaises(UserError) as cm:
                Points.delete(list(member.points_moves))
            self.assertMessage(cm, 'msg_points_modify')
            expected = message('msg_member_unique')
            with self.assertRaises(SQLConstraintError) as cm:
                Member.create([{'company': company.id, 'party': driver.id}])
            self.assertEqual(cm.exception.message, expected)

    @with_transaction()
    def test_operator_admin_claims_cards_of_own_operator_only(self):
        """Test an operator administrator makes member cards for its
        operator over RPC rights, never for another operator"""
        pool = Pool()
        Member = pool.get('fuel.promotion.member')
        Party = pool.get('party.party')
        company, other = create_company(), create_company()
        with set_company(company):
            admin = create_user('promo.admin', company, 'role_operator_admin')
            driver, = Party.create([{'name': "Qian Yu"}])
        with (Transaction().set_user(admin.id),
                Transaction().set_context(company=company.id),
                check_access()):
            card = Member.claim_card(company.id, driver.id)
            self.assertEqual(card.company, company)
            with self.assertRaises(UserError) as cm:
                Member.claim_card(other.id, driver.id)
            self.assertMessage(
                cm, 'msg_member_company', company=other.rec_name)
        self.assertEqual(
            [m.company for m in Member.search([('party', '=', driver.id)])],
            [company])

    # ---- targeted push -------------------------------------------------

    @with_transaction()
    def test_push_segment_inbox_and_counts(self):
        """Test a push reaches the members of its segment only, with a
        coupon each, and counts deliveries and openings"""
        pool = Pool()
        Order = pool.get('fuel.payment.order')
        Level = pool.get('fuel.promotion.level')
        Member = pool.get('fuel.promotion.member')
        Message = pool.get('fuel.promotion.message')
        Push = pool.get('fuel.promotion.push')
        Party = pool.get('party.party')
        company = create_company()
        with set_company(company):
            setup = create_payment_setup(company)
            station = setup['station']
            gold, = Level.create([{
                        'company': company.id, 'name': "Gold",
                        'basis': 'spending', 'threshold': Decimal(100),
                        'window': 30}])
            zhejiang, shanghai, dormant, stranger = Party.create([
                    {'name': "Zhejiang driver"}, {'name': "Shanghai driver"},
                    {'name': "Dormant driver"}, {'name': "Never paid"}])
            for party, quantity, plate in [
                    (zhejiang, '20', '浙A12345'),
                    (shanghai, '5', '沪B88888'),
                    (dormant, '5', '浙C00001'),
                    ]:
                order = self.order(
                    self.ingest(station, quantity, plate=plate))
                Order.write([order], {'customer': party.id})
                self.pay(order, setup, str(order.total))
                Member.get_member(company, party)
            # an order not paid does not bring its driver in
            unpaid = self.order(self.ingest(station, '5', plate='浙A99999'))
            Order.write([unpaid], {'customer': stranger.id})
            Order.write(Order.search([('customer', '=', dormant.id)]), {
                    'date': dt.datetime.now() - dt.timedelta(days=60)})
            Member.update_levels()
            template = self.template(company, "Welcome back", amount=5)
            month_ago = dt.datetime.now() - dt.timedelta(days=30)
            self.assertEqual(
                [m.party for m in Member.search([
                            ('last_visit', '<', month_ago)])], [dormant])
            self.assertEqual(
                sorted(m.party.name for m in Member.search([
                            ('last_visit', '>=', month_ago)])),
                ["Shanghai driver", "Zhejiang driver"])

            def segment(**values):
                push, = Push.create([dict(
                            company=company.id, name="Push",
                            subject="Hello", **values)])
                return [p.name for p in push.select_parties()]

            self.assertEqual(segment(), [
                    "Zhejiang driver", "Shanghai driver", "Dormant driver"])
            self.assertEqual(
                segment(levels=[('add', [gold.id])]), ["Zhejiang driver"])
            self.assertEqual(
                segment(plate_provinces="浙"),
                ["Zhejiang driver", "Dormant driver"])
            self.assertEqual(
                segment(plate_provinces="沪，苏"), ["Shanghai driver"])
            self.assertEqual(
                segment(dormant_days=30), ["Dormant driver"])
            self.assertEqual(
                segment(stations=[('add', [station.id])],
                    grades=[('add', [setup['grade'].id])],
                    dormant_days=30, plate_provinces="浙"),
                ["Dormant driver"])
            self.assertEqual(segment(
                    grades=[('add', [create_grade(
                                    "0#", company, setup['accounts'],
                                    energy='diesel').id])]), [])

            push, = Push.create([{
                        'company': company.id, 'name': "Come back",
                        'subject': "We miss you", 'body': "5 CNY off",
                        'dormant_days': 30, 'template': template.id}])
            Push.send([push])
            self.assertEqual(push.state, 'sent')
            message, = push.messages
            self.assertEqual(message.party, dormant)
            self.assertEqual(message.subject, "We miss you")
            self.assertEqual(message.coupon.party, dormant)
            self.assertEqual(message.coupon.template, template)
            self.assertEqual((push.delivered, push.opened), (1, 0))
            self.assertEqual(Message.inbox(dormant), [message])
            self.assertEqual(Message.inbox(zhejiang), [])
            Message.open([message])
            Message.open([message])
            push = Push(push.id)
            self.assertEqual((push.delivered, push.opened), (1, 1))

            empty, = Push.create([{
                        'company': company.id, 'name': "Nobody",
                        'subject': "Hi", 'levels': [('add', [gold.id])],
                        'dormant_days': 30}])
            with self.assertRaises(UserError) as cm:
                Push.send([empty])
            self.assertMessage(
                cm, 'msg_push_no_member', push=empty.rec_name)


del ModuleTestCase
