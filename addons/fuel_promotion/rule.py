# This file is part of fuelpay.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""Promotion rules (促销规则) an operator sets up online and the engine that
prices a fuelling transaction with them"""
import datetime as dt
from decimal import ROUND_DOWN, Decimal

from trytond.i18n import gettext
from trytond.model import Index, ModelSQL, ModelView, Workflow, fields
from trytond.modules.currency.fields import Monetary
from trytond.pool import Pool
from trytond.pyson import Bool, Eval, If
from trytond.tools import timezone as tz
from trytond.transaction import Transaction

from .exceptions import RuleStateError, RuleValidationError

WEEKDAYS = [
    ('0', "Monday"),
    ('1', "Tuesday"),
    ('2', "Wednesday"),
    ('3', "Thursday"),
    ('4', "Friday"),
    ('5', "Saturday"),
    ('6', "Sunday"),
    ]
UNIT_DIGITS = (16, 4)
RATE_DIGITS = (16, 4)
# states in which a rule prices the fills that ended inside its dates
PRICING_STATES = ['active', 'ended']
# the fields a workflow button changes, the only ones a rule out of
# draft accepts
WORKFLOW_FIELDS = {'state', 'start_date', 'end_date', 'activated_by',
    'ended_by'}


class CompanyMixin:
    __slots__ = ()

    @classmethod
    def default_company(cls):
        return Transaction().context.get('company')

    @fields.depends('company')
    def on_change_with_currency(self, name=None):
        return self.company.currency if self.company else None


def local_time(station, date):
    "Return the naive UTC date as a local datetime of the station"
    name = (station.timezone or station.company.timezone
        or getattr(tz.SERVER, 'key', 'UTC'))
    zone = tz.ZoneInfo(name)
    return date.replace(tzinfo=dt.UTC).astimezone(zone)


def in_window(weekdays, start, end, local):
    """Whether the local datetime falls in the weekly window: the days it
    starts on and the time from start to end, past midnight when end is
    before start (Tuesdays 22:00-06:00 is Tuesday 22:00 to Wednesday
    06:00)"""
    time = local.time().replace(tzinfo=None)
    weekday = local.weekday()
    days = {int(d) for d in weekdays} if weekdays else set(range(7))
    if start is None and end is None:
        return weekday in days
    start = start or dt.time(0)
    end = end or dt.time.max
    if start <= end:
        return weekday in days and start <= time < end
    if time >= start:
        return weekday in days
    return time < end and (weekday - 1) % 7 in days


def check_readable(Model, records):
    """Raise unless the user may read the records: an RPC method given
    ids reads them through the record rules first"""
    Model.read([r.id for r in records], ['id'])


def member_level(transaction):
    "Return the level of the member paying the transaction, or None"
    pool = Pool()
    Member = pool.get('fuel.promotion.member')
    party = (transaction.order.customer if transaction.order
        else None) or transaction.customer
    return Member.level_of(transaction.company, party)


class Rule(CompanyMixin, Workflow, ModelSQL, ModelView):
    "Fuel Promotion Rule"
    __name__ = 'fuel.promotion.rule'
    _history = True
    _log = True

    _states = {'readonly': Eval('state') != 'draft'}

    company = fields.Many2One(
        'company.company', "Operator", required=True, states=_states)
    name = fields.Char("Name", required=True, translate=True, states=_states)
    kind = fields.Selection([
            ('unit', "Unit Price Discount"),
            ('amount', "Amount Off"),
            ('percentage', "Percentage Off"),
            ('recharge', "Recharge Bonus"),
            ('points', "Points"),
            ], "Kind", required=True, states=_states,
        help="Unit price discount (升减): so much off per litre, kilogram "
        "or kWh. Amount off (满减): spend the minimum, get the amount off. "
        "Percentage off, up to the cap. Recharge bonus (充值赠送): a "
        "recharge of at least a tier's amount gets its bonus. Points: a paid "
        "fill earns the member points per unit and per amount.")
    start_date = fields.DateTime(
        "Start", states=_states,
        help="Left empty, the rule starts when it is activated.")
    end_date = fields.DateTime(
        "End", states=_states,
        domain=[If(Bool(Eval('start_date')) & Bool(Eval('end_date')),
                ('end_date', '>=', Eval('start_date')), ())],
        help="Left empty, the rule runs until it is ended.")
    stations = fields.Many2Many(
        'fuel.promotion.rule-fuel.station', 'rule', 'station', "Stations",
        domain=[('company', '=', Eval('company', -1))], states=_states,
        help="Left empty, every station of the operator.")
    grades = fields.Many2Many(
        'fuel.promotion.rule-product.product', 'rule', 'product', "Grades",
        domain=[('fuel_energy', '!=', None)], states={
            'readonly': _states['readonly'],
            'invisible': Eval('kind') == 'recharge',
            },
        context={'company': Eval('company', -1)}, depends={'company'},
        help="Left empty, every grade.")
    weekdays = fields.MultiSelection(
        WEEKDAYS, "Weekdays", sort=False, states={
            'readonly': _states['readonly'],
            'invisible': Eval('kind') == 'recharge',
            },
        help="Left empty, every day.")
    time_start = fields.Time(
        "From", states={
            'readonly': _states['readonly'],
            'invisible': Eval('kind') == 'recharge',
            },
        help="Station local time; a window ending before it starts runs "
        "past midnight.")
    time_end = fields.Time(
        "To", states={
            'readonly': _states['readonly'],
            'invisible': Eval('kind') == 'recharge',
            })
    minimum_amount = Monetary(
        "Minimum Amount", currency='currency', digits='currency',
        states={
            'readonly': _states['readonly'],
            'invisible': ~Eval('kind').in_(['amount', 'percentage', 'unit']),
            },
        help="The fill amount from which the rule applies (满).")
    unit_discount = fields.Numeric(
        "Discount per Unit", digits=UNIT_DIGITS,
        states={
            'readonly': _states['readonly'],
            'invisible': Eval('kind') != 'unit',
            'required': Eval('kind') == 'unit',
            })
    discount_amount = Monetary(
        "Amount Off", currency='currency', digits='currency',
        states={
            'readonly': _states['readonly'],
            'invisible': Eval('kind') != 'amount',
            'required': Eval('kind') == 'amount',
            })
    rate = fields.Numeric(
        "Rate", digits=RATE_DIGITS,
        states={
            'readonly': _states['readonly'],
            'invisible': Eval('kind') != 'percentage',
            'required': Eval('kind') == 'percentage',
            },
        help="The share of the amount taken off: 0.05 for 5%.")
    cap = Monetary(
        "Cap", currency='currency', digits='currency',
        states={
            'readonly': _states['readonly'],
            'invisible': Eval('kind') == 'recharge',
            },
        help="The most the rule takes off one fill.")
    points_per_unit = fields.Numeric(
        "Points per Unit", digits=UNIT_DIGITS,
        states={
            'readonly': _states['readonly'],
            'invisible': Eval('kind') != 'points',
            })
    points_per_amount = fields.Numeric(
        "Points per Amount", digits=UNIT_DIGITS,
        states={
            'readonly': _states['readonly'],
            'invisible': Eval('kind') != 'points',
            },
        help="Points for each unit of money paid.")
    levels = fields.Many2Many(
        'fuel.promotion.rule-fuel.promotion.level', 'rule', 'level',
        "Member Levels", domain=[('company', '=', Eval('company', -1))],
        states=_states,
        help="Left empty, every driver; otherwise only members of these "
        "levels (level prices, 会员价).")
    tiers = fields.One2Many(
        'fuel.promotion.rule.tier', 'rule', "Tiers",
        states={
            'readonly': _states['readonly'],
            'invisible': Eval('kind') != 'recharge',
            })
    stackable = fields.Boolean(
        "Stackable", states=_states,
        help="Stackable rules add up; a rule that is not applies alone, "
        "when it gives more than the stackable ones together.")
    currency = fields.Function(
        fields.Many2One('currency.currency', "Currency"),
        'on_change_with_currency')
    fills = fields.Function(
        fields.Integer("Fills", help="Paid fills the rule took off."),
        'get_results')
    discount_given = fields.Function(Monetary(
            "Discount Given", currency='currency', digits='currency',
            help="What the rule took off paid fills."),
        'get_results')
    activated_by = fields.Many2One('res.user', "Activated by", readonly=True)
    ended_by = fields.Many2One('res.user', "Ended by", readonly=True)
    state = fields.Selection([
            ('draft', "Draft"),
            ('active', "Active"),
            ('ended', "Ended"),
            ], "State", readonly=True, required=True, sort=False)

    del _states

    @classmethod
    def __setup__(cls):
        super().__setup__()
        t = cls.__table__()
        cls._sql_indexes.add(
            Index(t,
                (t.company, Index.Range()),
                (t.state, Index.Equality(cardinality='low'))))
        cls._order = [('start_date', 'DESC NULLS FIRST'), ('id', 'DESC')]
        cls._transitions |= {
            ('draft', 'active'),
            ('active', 'ended'),
            }
        cls._buttons.update({
                'activate': {
                    'invisible': Eval('state') != 'draft',
                    'depends': ['state'],
                    },
                'end': {
                    'invisible': Eval('state') != 'active',
                    'depends': ['state'],
                    },
                })

    @classmethod
    def default_state(cls):
        return 'draft'

    @classmethod
    def default_kind(cls):
        return 'unit'

    @classmethod
    def default_stackable(cls):
        return True

    @classmethod
    def copy(cls, rules, default=None):
        default = default.copy() if default is not None else {}
        for name in ['activated_by', 'ended_by', 'start_date', 'end_date']:
            default.setdefault(name, None)
        return super().copy(rules, default=default)

    @classmethod
    def get_results(cls, rules, names):
        pool = Pool()
        Discount = pool.get('fuel.promotion.discount')
        result = {n: {r.id: 0 for r in rules} for n in names}
        if 'discount_given' in names:
            result['discount_given'] = {r.id: Decimal(0) for r in rules}
        for discount in Discount.search([
                    ('rule', 'in', [r.id for r in rules]),
                    ('transaction.state', 'in', ['paid', 'posted']),
                    ]):
            if 'fills' in names:
                result['fills'][discount.rule.id] += 1
            if 'discount_given' in names:
                result['discount_given'][discount.rule.id] += discount.amount
        return result

    @classmethod
    def check_modification(cls, mode, rules, values=None, external=False):
        super().check_modification(
            mode, rules, values=values, external=external)
        if mode == 'delete' or (
                mode == 'write' and set(values) - WORKFLOW_FIELDS):
            for rule in rules:
                if rule.state != 'draft':
                    raise RuleStateError(gettext(
                            'fuel_promotion.msg_rule_not_draft',
                            rule=rule.rec_name))

    @classmethod
    def validate_fields(cls, rules, field_names):
        super().validate_fields(rules, field_names)
        for rule in rules:
            rule.check_values()

    def check_values(self):
        "Check the rule has the positive figures its kind needs"
        values = {
            'unit': [self.unit_discount],
            'amount': [self.discount_amount],
            'percentage': [self.rate],
            'recharge': [],
            'points': [self.points_per_unit, self.points_per_amount],
            }[self.kind]
        if self.kind == 'points':
            values = [v or Decimal(0) for v in values]
        values += [v for v in [self.minimum_amount, self.cap]
            if v is not None]
        if self.kind == 'percentage' and self.rate and self.rate > 1:
            values.append(Decimal(-1))
        if any(v is None or v < 0 for v in values) or (
                self.kind != 'recharge' and not any(values)):
            raise RuleValidationError(gettext(
                    'fuel_promotion.msg_rule_values', rule=self.rec_name))

    @classmethod
    @ModelView.button
    @Workflow.transition('active')
    def activate(cls, rules):
        now = dt.datetime.now()
        for rule in rules:
            if rule.kind == 'recharge' and not rule.tiers:
                raise RuleValidationError(gettext(
                        'fuel_promotion.msg_rule_no_tier',
                        rule=rule.rec_name))
            if rule.start_date is None:
                rule.start_date = now
            rule.activated_by = Transaction().user
        cls.save(rules)

    @classmethod
    @ModelView.button
    @Workflow.transition('ended')
    def end(cls, rules):
        "End the rules now; fills that ended before keep them"
        # DateTime fields keep whole seconds: the next one, so a fill of
        # this second is still priced by the rule
        now = dt.datetime.now().replace(microsecond=0) + dt.timedelta(
            seconds=1)
        for rule in rules:
            if rule.end_date is None or rule.end_date > now:
                rule.end_date = max(now, rule.start_date)
            rule.ended_by = Transaction().user
        cls.save(rules)

    # ---- pricing -----------------------------------------------------

    @classmethod
    def in_force(cls, company, date, kinds):
        "Return the rules of company of the kinds in force at date"
        return cls.search([
                ('company', '=', company.id),
                ('kind', 'in', kinds),
                ('state', 'in', PRICING_STATES),
                ('start_date', '<=', date),
                ['OR',
                    ('end_date', '=', None),
                    ('end_date', '>', date),
                    ],
                ], order=[('id', 'ASC')])

    def applies_to(self, transaction):
        "Whether the rule prices the fuelling transaction"
        if self.stations and transaction.station not in self.stations:
            return False
        if self.grades and transaction.grade not in self.grades:
            return False
        if self.levels and member_level(transaction) not in self.levels:
            return False
        if self.weekdays or self.time_start or self.time_end:
            local = local_time(transaction.station, transaction.end_date)
            if not in_window(
                    self.weekdays, self.time_start, self.time_end, local):
                return False
        return not (self.minimum_amount
            and transaction.amount < self.minimum_amount)

    def get_discount(self, transaction):
        "Return what the rule takes off the transaction, before stacking"
        currency = transaction.company.currency
        amount = transaction.amount
        if self.kind == 'unit':
            discount = transaction.quantity * self.unit_discount
        elif self.kind == 'amount':
            discount = self.discount_amount
        elif self.kind == 'percentage':
            discount = amount * self.rate
        else:
            return Decimal(0)
        if self.cap is not None:
            discount = min(discount, self.cap)
        return currency.round(min(discount, amount))

    def get_points(self, transaction):
        "Return the whole points the paid transaction earns"
        points = (transaction.quantity * (self.points_per_unit or 0)
            + (transaction.amount_due or 0) * (self.points_per_amount or 0))
        return points.quantize(Decimal(1), rounding=ROUND_DOWN)

    def get_bonus(self, amount):
        "Return the bonus of the highest tier the recharge amount reaches"
        reached = [t for t in self.tiers if amount >= t.minimum_amount]
        if not reached:
            return Decimal(0)
        return max(reached, key=lambda t: t.minimum_amount).bonus

    @classmethod
    def best_discounts(cls, transaction, rules):
        """Return [(rule, amount)] the best allowed combination of rules
        gives the transaction: every stackable rule together, or one rule
        that is not stackable alone, whichever takes off more; a tie goes
        to the stackable ones, then to the oldest rule"""
        if not transaction.amount or not transaction.end_date:
            return []
        candidates = [
            (r, r.get_discount(transaction)) for r in rules
            if r.kind in {'unit', 'amount', 'percentage'}
            and r.applies_to(transaction)]
        candidates = [(r, d) for r, d in candidates if d > 0]
        stacked = [(r, d) for r, d in candidates if r.stackable]
        best, best_total = stacked, sum((d for _, d in stacked), Decimal(0))
        for rule, discount in candidates:
            if not rule.stackable and discount > best_total:
                best, best_total = [(rule, discount)], discount
        # the stacked rules never take off more than the amount
        result, left = [], transaction.amount
        for rule, discount in best:
            discount = min(discount, left)
            if discount > 0:
                result.append((rule, discount))
                left -= discount
        return result


class RuleStation(ModelSQL):
    "Fuel Promotion Rule - Station"
    __name__ = 'fuel.promotion.rule-fuel.station'
    rule = fields.Many2One(
        'fuel.promotion.rule', "Rule", required=True, ondelete='CASCADE')
    station = fields.Many2One(
        'fuel.station', "Station", required=True, ondelete='CASCADE')


class RuleGrade(ModelSQL):
    "Fuel Promotion Rule - Grade"
    __name__ = 'fuel.promotion.rule-product.product'
    rule = fields.Many2One(
        'fuel.promotion.rule', "Rule", required=True, ondelete='CASCADE')
    product = fields.Many2One(
        'product.product', "Grade", required=True, ondelete='CASCADE')


class RuleLevel(ModelSQL):
    "Fuel Promotion Rule - Level"
    __name__ = 'fuel.promotion.rule-fuel.promotion.level'
    rule = fields.Many2One(
        'fuel.promotion.rule', "Rule", required=True, ondelete='CASCADE')
    level = fields.Many2One(
        'fuel.promotion.level', "Level", required=True, ondelete='CASCADE')


class RuleTier(ModelSQL, ModelView):
    "Fuel Promotion Rule Tier"
    __name__ = 'fuel.promotion.rule.tier'
    rule = fields.Many2One(
        'fuel.promotion.rule', "Rule", required=True, ondelete='CASCADE')
    minimum_amount = Monetary(
        "Recharge from", currency='currency', digits='currency',
        required=True, domain=[('minimum_amount', '>', 0)])
    bonus = Monetary(
        "Bonus", currency='currency', digits='currency', required=True,
        domain=[('bonus', '>', 0)])
    currency = fields.Function(
        fields.Many2One('currency.currency', "Currency"),
        'on_change_with_currency')

    @classmethod
    def __setup__(cls):
        super().__setup__()
        cls.__access__.add('rule')
        cls._order.insert(0, ('minimum_amount', 'ASC'))

    @fields.depends('rule', '_parent_rule.company')
    def on_change_with_currency(self, name=None):
        if self.rule and self.rule.company:
            return self.rule.company.currency

    @classmethod
    def check_modification(cls, mode, tiers, values=None, external=False):
        super().check_modification(
            mode, tiers, values=values, external=external)
        for tier in tiers:
            if tier.rule.state != 'draft':
                raise RuleStateError(gettext(
                        'fuel_promotion.msg_rule_not_draft',
                        rule=tier.rule.rec_name))
