# This file is part of fuelpay.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""Member levels (会员等级) from spending or points over a rolling window,
and the points ledger"""
import datetime as dt
from decimal import Decimal

from sql.aggregate import Max, Sum
from trytond import backend
from trytond.i18n import gettext
from trytond.model import Index, ModelSQL, ModelView, Unique, fields
from trytond.pool import Pool, PoolMeta
from trytond.pyson import Eval
from trytond.rpc import RPC
from trytond.tools import grouped_slice, sqlite_apply_types
from trytond.transaction import Transaction, without_check_access

from .exceptions import MemberError
from .rule import CompanyMixin, check_readable

POINTS_DIGITS = (16, 0)
# ids per IN (...) clause
CHUNK = 500
# the order states whose fuel counts as spent
SPENT_STATES = ['paid', 'posted']


class Level(CompanyMixin, ModelSQL, ModelView):
    "Fuel Member Level"
    __name__ = 'fuel.promotion.level'
    _history = True

    company = fields.Many2One('company.company', "Operator", required=True)
    name = fields.Char("Name", required=True, translate=True)
    sequence = fields.Integer(
        "Rank", required=True,
        help="Levels of higher rank come first when a member reaches "
        "several.")
    basis = fields.Selection([
            ('spending', "Spending"),
            ('points', "Points"),
            ], "Basis", required=True,
        help="What a member must reach over the window.")
    threshold = fields.Numeric(
        "Threshold", digits=(16, 2), required=True,
        domain=[('threshold', '>=', 0)])
    window = fields.Integer(
        "Window (days)", required=True, domain=[('window', '>', 0)],
        help="The rolling number of days the spending or points are "
        "summed over.")
    currency = fields.Function(
        fields.Many2One('currency.currency', "Currency"),
        'on_change_with_currency')

    @classmethod
    def __setup__(cls):
        super().__setup__()
        cls._order = [('sequence', 'DESC'), ('id', 'ASC')]

    @classmethod
    def default_basis(cls):
        return 'spending'

    @classmethod
    def default_window(cls):
        return 365

    @classmethod
    def default_sequence(cls):
        return 10

    def reached(self, spending, points):
        value = spending if self.basis == 'spending' else points
        return value >= self.threshold


class Member(ModelSQL, ModelView):
    "Fuel Member"
    __name__ = 'fuel.promotion.member'

    company = fields.Many2One(
        'company.company', "Operator", required=True, readonly=True)
    party = fields.Many2One(
        'party.party', "Party", required=True, readonly=True,
        ondelete='RESTRICT',
        context={'company': Eval('company', -1)}, depends={'company'})
    level = fields.Many2One(
        'fuel.promotion.level', "Level", readonly=True, ondelete='SET NULL',
        domain=[('company', '=', Eval('company', -1))])
    level_date = fields.DateTime("Level since", readonly=True)
    points = fields.Function(
        fields.Numeric("Points", digits=POINTS_DIGITS), 'get_points')
    last_visit = fields.Function(
        fields.DateTime(
            "Last Visit", help="When the member last paid for fuel."),
        'get_last_visit', searcher='search_last_visit')
    points_moves = fields.One2Many(
        'fuel.promotion.points', 'member', "Points Moves", readonly=True)

    @classmethod
    def __setup__(cls):
        super().__setup__()
        t = cls.__table__()
        cls._sql_constraints = [
            ('party_unique', Unique(t, t.company, t.party),
                'fuel_promotion.msg_member_unique'),
            ]
        cls.__rpc__.update({
                'claim_card': RPC(
                    readonly=False, result=lambda card: card.id),
                })

    def get_rec_name(self, name):
        return self.party.rec_name

    @classmethod
    def search_rec_name(cls, name, clause):
        return [('party.rec_name',) + tuple(clause[1:])]

    @classmethod
    def _last_visit_query(cls):
        pool = Pool()
        Order = pool.get('fuel.payment.order')
        member = cls.__table__()
        order = Order.__table__()
        return member.join(order, condition=(
                order.customer == member.party)
            & (order.company == member.company)
            & order.state.in_(SPENT_STATES)
            ), member, order

    @classmethod
    def get_last_visit(cls, members, name):
        join, member, order = cls._last_visit_query()
        cursor = Transaction().connection.cursor()
        result = {m.id: None for m in members}
        for sub in grouped_slice(members, CHUNK):
            query = join.select(
                member.id, Max(order.date).as_('last_visit'),
                where=member.id.in_([m.id for m in sub]),
                group_by=member.id)
            if backend.name == 'sqlite':
                sqlite_apply_types(query, [None, 'DATETIME'])
            cursor.execute(*query)
            result.update(cursor)
        return result

    @classmethod
    def search_last_visit(cls, name, clause):
        "Members never seen count as visiting long ago"
        _, operator, value = clause
        join, member, order = cls._last_visit_query()
        Operator = fields.SQL_OPERATORS[operator]
        query = join.select(
            member.id, group_by=member.id,
            having=Operator(Max(order.date), value))
        if operator in {'<', '<='}:
            never = cls.__table__()
            seen = join.select(member.id)
            return ['OR',
                ('id', 'in', query),
                ('id', 'in', never.select(
                        never.id, where=~never.id.in_(seen))),
                ]
        return [('id', 'in', query)]

    @classmethod
    def get_points(cls, members, name):
        pool = Pool()
        Points = pool.get('fuel.promotion.points')
        points = Points.__table__()
        cursor = Transaction().connection.cursor()
        result = {m.id: Decimal(0) for m in members}
        for sub in grouped_slice(members, CHUNK):
            query = points.select(
                points.member, Sum(points.points).as_('points'),
                where=points.member.in_([m.id for m in sub]),
                group_by=points.member)
            if backend.name == 'sqlite':
                sqlite_apply_types(query, [None, 'NUMERIC'])
            cursor.execute(*query)
            result.update(
                (m, Decimal(p or 0).quantize(Decimal(1))) for m, p in cursor)
        return result

    @classmethod
    def get_member(cls, company, party, create=True):
        "Return the member record of party at company"
        members = cls.search([
                ('company', '=', company.id),
                ('party', '=', party.id),
                ], limit=1)
        if members:
            return members[0]
        if not create:
            return None
        member = cls(company=company, party=party)
        member.save()
        return member

    @classmethod
    def claim_card(cls, company, party):
        """The party claims a member card of the operator (会员卡领取):
        return its card, made with a member record and a personal wallet
        the first time"""
        pool = Pool()
        Wallet = pool.get('fuel.payment.wallet')
        Card = pool.get('fuel.payment.wallet.card')
        Company = pool.get('company.company')
        Party = pool.get('party.party')
        User = pool.get('res.user')
        company, party = Company(int(company)), Party(int(party))
        if (Transaction().check_access
                and company.id not in User.get_companies()):
            raise MemberError(gettext(
                    'fuel_promotion.msg_member_company',
                    company=company.rec_name))
        check_readable(Party, [party])
        with without_check_access():
            # the member record is the platform's bookkeeping
            cls.get_member(company, party)
        wallets = Wallet.search([
                ('company', '=', company.id),
                ('party', '=', party.id),
                ('kind', '=', 'personal'),
                ], order=[('id', 'ASC')], limit=1)
        if wallets:
            wallet, = wallets
        else:
            wallet = Wallet(company=company, party=party, kind='personal')
            wallet.save()
        cards = Card.search([
                ('wallet', '=', wallet.id),
                ('state', '=', 'active'),
                ], order=[('id', 'ASC')], limit=1)
        if cards:
            return cards[0]
        card = Card(wallet=wallet, company=company)
        card.save()
        return card

    @classmethod
    def level_of(cls, company, party):
        "Return the level of party at company, None for no level"
        if party is None:
            return None
        member = cls.get_member(company, party, create=False)
        return member.level if member else None

    def get_spending(self, since):
        "Return what the member paid for fuel since the date"
        pool = Pool()
        Order = pool.get('fuel.payment.order')
        FuelTransaction = pool.get('fuel.payment.transaction')
        order = Order.__table__()
        transaction = FuelTransaction.__table__()
        cursor = Transaction().connection.cursor()
        query = transaction.join(
            order, condition=transaction.order == order.id
            ).select(
            Sum(transaction.amount_due).as_('spent'),
            where=(order.company == self.company.id)
            & (order.customer == self.party.id)
            & order.state.in_(SPENT_STATES)
            & (order.date >= since))
        if backend.name == 'sqlite':
            sqlite_apply_types(query, ['NUMERIC'])
        cursor.execute(*query)
        spent, = cursor.fetchone()
        return Decimal(spent or 0)

    def get_points_earned(self, since):
        "Return the points the member earned since the date, less reversals"
        return sum(
            (p.points for p in self.points_moves if p.date >= since),
            Decimal(0))

    @classmethod
    def update_levels(cls, members=None):
        """Give each member the highest level it reaches over the levels'
        windows: up or down"""
        pool = Pool()
        Level = pool.get('fuel.promotion.level')
        if members is None:
            members = cls.search([])
        now = dt.datetime.now()
        levels = {}
        changed = []
        for member in members:
            if member.company not in levels:
                levels[member.company] = Level.search([
                        ('company', '=', member.company.id),
                        ])
            level = None
            for candidate in levels[member.company]:
                since = now - dt.timedelta(days=candidate.window)
                if candidate.reached(
                        member.get_spending(since),
                        member.get_points_earned(since)):
                    level = candidate
                    break
            if level != member.level:
                member.level = level
                member.level_date = now
                changed.append(member)
        cls.save(changed)
        return changed

    @classmethod
    def update_all_levels(cls):
        "Cron: update the level of every member"
        cls.update_levels()


class Points(ModelSQL, ModelView):
    "Fuel Member Points"
    __name__ = 'fuel.promotion.points'

    company = fields.Many2One(
        'company.company', "Operator", required=True, readonly=True)
    member = fields.Many2One(
        'fuel.promotion.member', "Member", required=True, readonly=True,
        ondelete='RESTRICT')
    date = fields.DateTime("Date", required=True, readonly=True)
    points = fields.Numeric(
        "Points", digits=POINTS_DIGITS, required=True, readonly=True)
    rule = fields.Many2One(
        'fuel.promotion.rule', "Rule", readonly=True, ondelete='RESTRICT')
    order = fields.Many2One(
        'fuel.payment.order', "Order", readonly=True, ondelete='RESTRICT')
    redemption = fields.Many2One(
        'fuel.promotion.gift.redemption', "Gift Redemption", readonly=True,
        ondelete='RESTRICT')

    @classmethod
    def __setup__(cls):
        super().__setup__()
        t = cls.__table__()
        cls._sql_indexes.update({
                Index(t, (t.member, Index.Range()), (t.date, Index.Range())),
                Index(t, (t.order, Index.Range())),
                })
        cls._order = [('date', 'DESC'), ('id', 'DESC')]

    @classmethod
    def default_date(cls):
        return dt.datetime.now()

    @classmethod
    def check_modification(cls, mode, moves, values=None, external=False):
        super().check_modification(
            mode, moves, values=values, external=external)
        if mode in {'write', 'delete'}:
            raise MemberError(gettext('fuel_promotion.msg_points_modify'))

    @classmethod
    def earn(cls, orders):
        """Credit the members of the paid orders with the points of the
        points rules in force at each fill's end"""
        pool = Pool()
        Member = pool.get('fuel.promotion.member')
        Rule = pool.get('fuel.promotion.rule')
        moves = []
        for order in orders:
            if not order.customer:
                continue
            member = None
            for transaction in order.transactions:
                if not transaction.end_date or not transaction.amount:
                    continue
                for rule in Rule.in_force(
                        order.company, transaction.end_date, ['points']):
                    if not rule.applies_to(transaction):
                        continue
                    points = rule.get_points(transaction)
                    if points <= 0:
                        continue
                    if member is None:
                        member = Member.get_member(
                            order.company, order.customer)
                    moves.append(cls(
                            company=order.company, member=member,
                            points=points, rule=rule, order=order))
        cls.save(moves)
        return moves

    @classmethod
    def reverse(cls, orders):
        "Take back the points the orders earned"
        moves = cls.search([('order', 'in', [o.id for o in orders])])
        reversals = []
        for order in orders:
            earned = [m for m in moves if m.order == order]
            total = sum((m.points for m in earned), Decimal(0))
            if total > 0:
                reversals.append(cls(
                        company=order.company, member=earned[0].member,
                        points=-total, order=order))
        cls.save(reversals)
        return reversals


class Card(metaclass=PoolMeta):
    __name__ = 'fuel.payment.wallet.card'

    member_level = fields.Function(
        fields.Many2One('fuel.promotion.level', "Member Level"),
        'get_member_level')

    def get_member_level(self, name):
        pool = Pool()
        Member = pool.get('fuel.promotion.member')
        if self.wallet and self.wallet.kind == 'personal':
            level = Member.level_of(self.company, self.wallet.party)
            return level.id if level else None
