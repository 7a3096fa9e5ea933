# This file is part of fuelpay.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""Coupons (优惠券): templates an operator sets up, coupons issued from
them to members or as codes, redeemed on an order exactly once"""
import datetime as dt
import secrets
from decimal import Decimal

from trytond.i18n import gettext
from trytond.model import Index, ModelSQL, ModelView, Unique, Workflow, fields
from trytond.modules.currency.fields import Monetary
from trytond.pool import Pool
from trytond.pyson import Bool, Eval, If
from trytond.rpc import RPC
from trytond.wizard import Button, StateTransition, StateView, Wizard

from .exceptions import CouponError, CouponValidationError, RuleStateError
from .rule import RATE_DIGITS, UNIT_DIGITS, CompanyMixin, check_readable

# unambiguous characters of the codes printed or read out to a driver
CODE_ALPHABET = 'ABCDEFGHJKLMNPQRSTUVWXYZ23456789'
# 32^10: a guessed code hits one of a million issued once in a billion
CODE_LENGTH = 10


def new_code():
    return ''.join(secrets.choice(CODE_ALPHABET) for _ in range(CODE_LENGTH))


class Template(CompanyMixin, Workflow, ModelSQL, ModelView):
    "Fuel Coupon Template"
    __name__ = 'fuel.promotion.coupon.template'
    _history = True
    _log = True

    _states = {'readonly': Eval('state') != 'draft'}

    company = fields.Many2One(
        'company.company', "Operator", required=True, states=_states)
    name = fields.Char("Name", required=True, translate=True, states=_states)
    kind = fields.Selection([
            ('fixed', "Fixed Amount"),
            ('unit', "Per Unit"),
            ('percentage', "Percentage"),
            ], "Kind", required=True, states=_states)
    amount = Monetary(
        "Amount Off", currency='currency', digits='currency',
        states={
            'readonly': _states['readonly'],
            'invisible': Eval('kind') != 'fixed',
            'required': Eval('kind') == 'fixed',
            })
    unit_discount = fields.Numeric(
        "Discount per Unit", digits=UNIT_DIGITS,
        states={
            'readonly': _states['readonly'],
            'invisible': Eval('kind') != 'unit',
            'required': Eval('kind') == 'unit',
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
        "Cap", currency='currency', digits='currency', states=_states,
        help="The most one coupon takes off.")
    minimum_amount = Monetary(
        "Minimum Spend", currency='currency', digits='currency',
        states=_states,
        help="What the order must spend on the coupon's grades and "
        "stations, after the rules' discounts.")
    stations = fields.Many2Many(
        'fuel.promotion.coupon.template-fuel.station', 'template',
        'station', "Stations", states=_states,
        domain=[('company', '=', Eval('company', -1))],
        help="Left empty, every station of the operator.")
    grades = fields.Many2Many(
        'fuel.promotion.coupon.template-product.product', 'template',
        'product', "Grades", states=_states,
        domain=[('fuel_energy', '!=', None)],
        context={'company': Eval('company', -1)}, depends={'company'},
        help="Left empty, every grade.")
    validity = fields.Selection([
            ('fixed', "Fixed Dates"),
            ('days', "Days from Issue"),
            ], "Validity", required=True, states=_states)
    start_date = fields.DateTime(
        "Valid from", states={
            'readonly': _states['readonly'],
            'invisible': Eval('validity') != 'fixed',
            })
    end_date = fields.DateTime(
        "Valid until", states={
            'readonly': _states['readonly'],
            'invisible': Eval('validity') != 'fixed',
            'required': Eval('validity') == 'fixed',
            },
        domain=[If(Bool(Eval('start_date')) & Bool(Eval('end_date')),
                ('end_date', '>', Eval('start_date')), ())])
    duration = fields.Integer(
        "Days", states={
            'readonly': _states['readonly'],
            'invisible': Eval('validity') != 'days',
            'required': Eval('validity') == 'days',
            },
        domain=[If(Eval('validity') == 'days', ('duration', '>', 0), ())])
    stackable = fields.Boolean(
        "Stackable", states=_states,
        help="Whether an order may use it with other stackable coupons; "
        "otherwise it is the order's only coupon.")
    coupons = fields.One2Many(
        'fuel.promotion.coupon', 'template', "Coupons", readonly=True)
    issued = fields.Function(
        fields.Integer("Issued", help="Coupons issued, not cancelled."),
        'get_results')
    redeemed = fields.Function(
        fields.Integer("Redeemed", help="Coupons used on paid orders."),
        'get_results')
    discount = fields.Function(Monetary(
            "Discount Given", currency='currency', digits='currency'),
        'get_results')
    revenue = fields.Function(Monetary(
            "Revenue", currency='currency', digits='currency',
            help="What the orders the coupons were used on brought in."),
        'get_results')
    outstanding = fields.Function(
        fields.Integer(
            "Outstanding", help="Coupons issued and not yet used nor "
            "expired."),
        'get_results')
    liability = fields.Function(Monetary(
            "Liability", currency='currency', digits='currency',
            help="The most the outstanding coupons can take off: their "
            "amount, else their cap; empty when a coupon has no limit."),
        'get_results')
    currency = fields.Function(
        fields.Many2One('currency.currency', "Currency"),
        'on_change_with_currency')
    state = fields.Selection([
            ('draft', "Draft"),
            ('active', "Active"),
            ('ended', "Ended"),
            ], "State", readonly=True, required=True, sort=False)

    del _states

    @classmethod
    def __setup__(cls):
        super().__setup__()
        cls._order = [('id', 'DESC')]
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
                'issue_wizard': {
                    'invisible': Eval('state') != 'active',
                    'depends': ['state'],
                    },
                })
        cls.__rpc__.update({
                'issue': RPC(
                    readonly=False, instantiate=0,
                    result=lambda coupons: [c.id for c in coupons]),
                })

    @classmethod
    def default_state(cls):
        return 'draft'

    @classmethod
    def default_kind(cls):
        return 'fixed'

    @classmethod
    def default_validity(cls):
        return 'days'

    @classmethod
    def default_duration(cls):
        return 30

    @classmethod
    def default_stackable(cls):
        return False

    @classmethod
    def copy(cls, templates, default=None):
        default = default.copy() if default is not None else {}
        default.setdefault('coupons', None)
        return super().copy(templates, default=default)

    @classmethod
    def check_modification(
            cls, mode, templates, values=None, external=False):
        super().check_modification(
            mode, templates, values=values, external=external)
        if mode == 'delete' or (
                mode == 'write' and set(values) - {'state', 'coupons'}):
            for template in templates:
                if template.state != 'draft':
                    raise RuleStateError(gettext(
                            'fuel_promotion.msg_template_not_draft',
                            template=template.rec_name))

    @classmethod
    def validate_fields(cls, templates, field_names):
        super().validate_fields(templates, field_names)
        for template in templates:
            values = {
                'fixed': [template.amount],
                'unit': [template.unit_discount],
                'percentage': [template.rate],
                }[template.kind]
            if (any(v is None or v <= 0 for v in values)
                    or (template.rate or 0) > 1
                    or (template.cap is not None and template.cap <= 0)
                    or (template.minimum_amount or 0) < 0):
                raise CouponValidationError(gettext(
                        'fuel_promotion.msg_template_values',
                        template=template.rec_name))

    @classmethod
    @ModelView.button
    @Workflow.transition('active')
    def activate(cls, templates):
        pass

    @classmethod
    @ModelView.button
    @Workflow.transition('ended')
    def end(cls, templates):
        "Stop issuing; coupons already issued stay valid until they expire"

    @classmethod
    @ModelView.button_action('fuel_promotion.wizard_coupon_issue')
    def issue_wizard(cls, templates):
        pass

    @classmethod
    def get_results(cls, templates, names):
        "Return the campaign results and the liability of the templates"
        pool = Pool()
        Coupon = pool.get('fuel.promotion.coupon')
        Discount = pool.get('fuel.promotion.discount')
        result = {n: {} for n in names}
        coupons = Coupon.search([
                ('template', 'in', [t.id for t in templates]),
                ('state', '!=', 'cancelled'),
                ])
        used = [c for c in coupons if c.state == 'used']
        discounts = Discount.search([('coupon', 'in', [c.id for c in used])])
        for template in templates:
            mine = [c for c in coupons if c.template == template]
            mine_used = [c for c in mine if c.state == 'used']
            outstanding = len([c for c in mine if c.state in {
                        'issued', 'reserved'}])
            orders = {c.order for c in mine_used if c.order}
            limit = template.amount if template.kind == 'fixed' else (
                template.cap)
            values = {
                'issued': len(mine),
                'redeemed': len(mine_used),
                'discount': sum(
                    (d.amount for d in discounts
                        if d.coupon.template == template), Decimal(0)),
                'revenue': sum(
                    (t.amount_due or Decimal(0)
                        for o in orders for t in o.transactions),
                    Decimal(0)),
                'outstanding': outstanding,
                'liability': (limit * outstanding
                    if limit is not None else None),
                }
            for name in names:
                result[name][template.id] = values[name]
        return result

    def get_validity(self, date):
        "Return the start and expiry of a coupon issued at date"
        if self.validity == 'fixed':
            return self.start_date or date, self.end_date
        return date, date + dt.timedelta(days=self.duration)

    @classmethod
    def issue(cls, template, parties=None, quantity=None):
        """Issue coupons of the active template: one to each party (a
        member), or quantity coupons to be claimed by their code"""
        pool = Pool()
        Coupon = pool.get('fuel.promotion.coupon')
        check_readable(cls, [template])
        template = cls(template.id)
        if template.state != 'active':
            raise CouponError(gettext(
                    'fuel_promotion.msg_template_not_active',
                    template=template.rec_name))
        now = dt.datetime.now()
        start, expiry = template.get_validity(now)
        if expiry <= now:
            raise CouponError(gettext(
                    'fuel_promotion.msg_template_expired',
                    template=template.rec_name))
        owners = list(parties or []) + [None] * (quantity or 0)
        coupons = [Coupon(
                company=template.company, template=template, party=party,
                code=new_code(), issue_date=now, start_date=start,
                expiry_date=expiry) for party in owners]
        Coupon.save(coupons)
        return coupons

    def get_discount(self, transactions, left):
        """Return what a coupon takes off the transactions, {transaction:
        amount}, given what is left to pay on each after the rules"""
        eligible = [
            t for t in transactions
            if left[t] > 0
            and (not self.stations or t.station in self.stations)
            and (not self.grades or t.grade in self.grades)]
        base = sum((left[t] for t in eligible), Decimal(0))
        if not eligible or base < (self.minimum_amount or 0):
            return {}
        currency = self.company.currency
        if self.kind == 'fixed':
            total = self.amount
        elif self.kind == 'unit':
            total = sum((t.quantity for t in eligible), Decimal(0)) * (
                self.unit_discount)
        else:
            total = base * self.rate
        if self.cap is not None:
            total = min(total, self.cap)
        total = currency.round(min(total, base))
        # shared by what is left on each, the rounding on the last one
        result, given = {}, Decimal(0)
        for transaction in eligible[:-1]:
            share = currency.round(total * left[transaction] / base)
            result[transaction] = share
            given += share
        result[eligible[-1]] = total - given
        return {t: a for t, a in result.items() if a > 0}


class TemplateStation(ModelSQL):
    "Fuel Coupon Template - Station"
    __name__ = 'fuel.promotion.coupon.template-fuel.station'
    template = fields.Many2One(
        'fuel.promotion.coupon.template', "Template", required=True,
        ondelete='CASCADE')
    station = fields.Many2One(
        'fuel.station', "Station", required=True, ondelete='CASCADE')


class TemplateGrade(ModelSQL):
    "Fuel Coupon Template - Grade"
    __name__ = 'fuel.promotion.coupon.template-product.product'
    template = fields.Many2One(
        'fuel.promotion.coupon.template', "Template", required=True,
        ondelete='CASCADE')
    product = fields.Many2One(
        'product.product', "Grade", required=True, ondelete='CASCADE')


class Coupon(Workflow, ModelSQL, ModelView):
    "Fuel Coupon"
    __name__ = 'fuel.promotion.coupon'
    _rec_name = 'code'
    _log = True

    company = fields.Many2One(
        'company.company', "Operator", required=True, readonly=True)
    template = fields.Many2One(
        'fuel.promotion.coupon.template', "Template", required=True,
        readonly=True, ondelete='RESTRICT',
        domain=[('company', '=', Eval('company', -1))])
    code = fields.Char("Code", required=True, readonly=True, strip=False)
    party = fields.Many2One(
        'party.party', "Member", readonly=True, ondelete='RESTRICT',
        context={'company': Eval('company', -1)}, depends={'company'},
        help="Empty until a driver claims a coupon issued by code.")
    issue_date = fields.DateTime("Issued on", required=True, readonly=True)
    start_date = fields.DateTime("Valid from", required=True, readonly=True)
    expiry_date = fields.DateTime("Expires on", required=True, readonly=True)
    order = fields.Many2One(
        'fuel.payment.order', "Order", readonly=True, ondelete='RESTRICT')
    used_date = fields.DateTime("Used on", readonly=True)
    discount = fields.Function(Monetary(
            "Discount", currency='currency', digits='currency'),
        'get_discount_total')
    currency = fields.Function(
        fields.Many2One('currency.currency', "Currency"),
        'on_change_with_currency')
    state = fields.Selection([
            ('issued', "Issued"),
            ('reserved', "Reserved"),
            ('used', "Used"),
            ('expired', "Expired"),
            ('cancelled', "Cancelled"),
            ], "State", readonly=True, required=True, sort=False)
    state_string = state.translated('state')

    @classmethod
    def __setup__(cls):
        super().__setup__()
        t = cls.__table__()
        cls._sql_constraints = [
            ('code_unique', Unique(t, t.company, t.code),
                'fuel_promotion.msg_coupon_code_unique'),
            ]
        cls._sql_indexes.update({
                Index(t, (t.party, Index.Range())),
                Index(t, (t.order, Index.Range())),
                Index(t, (t.state, Index.Equality(cardinality='low')),
                    (t.expiry_date, Index.Range()),
                    where=t.state == 'issued'),
                })
        cls._order = [('issue_date', 'DESC'), ('id', 'DESC')]
        cls._transitions |= {
            ('issued', 'reserved'),
            ('reserved', 'issued'),
            ('reserved', 'used'),
            ('used', 'issued'),
            ('issued', 'expired'),
            ('issued', 'cancelled'),
            }
        cls._buttons.update({
                'cancel': {
                    'invisible': Eval('state') != 'issued',
                    'depends': ['state'],
                    },
                })

    @classmethod
    def default_state(cls):
        return 'issued'

    @fields.depends('company')
    def on_change_with_currency(self, name=None):
        return self.company.currency if self.company else None

    @classmethod
    def get_discount_total(cls, coupons, name):
        return {
            c.id: sum((d.amount for d in c.discounts), Decimal(0))
            if c.state in {'reserved', 'used'} else Decimal(0)
            for c in coupons}

    @property
    def discounts(self):
        pool = Pool()
        Discount = pool.get('fuel.promotion.discount')
        return Discount.search([('coupon', '=', self.id)])

    @classmethod
    def check_modification(cls, mode, coupons, values=None, external=False):
        super().check_modification(
            mode, coupons, values=values, external=external)
        if mode == 'delete':
            raise CouponError(gettext('fuel_promotion.msg_coupon_delete'))

    def get_discounts(self, transactions, left):
        return self.template.get_discount(transactions, left)

    @classmethod
    @ModelView.button
    @Workflow.transition('cancelled')
    def cancel(cls, coupons):
        "Withdraw issued coupons"

    @classmethod
    @Workflow.transition('reserved')
    def reserve(cls, coupons, order):
        for coupon in coupons:
            coupon.order = order
        cls.save(coupons)

    @classmethod
    @Workflow.transition('used')
    def use(cls, coupons):
        now = dt.datetime.now()
        for coupon in coupons:
            coupon.used_date = now
        cls.save(coupons)

    @classmethod
    @Workflow.transition('issued')
    def release(cls, coupons):
        "Give the coupons back to their member, free for another order"
        for coupon in coupons:
            coupon.order = None
            coupon.used_date = None
        cls.save(coupons)

    @classmethod
    @Workflow.transition('expired')
    def expire(cls, coupons):
        pass

    @classmethod
    def expire_coupons(cls):
        "Cron: expire the issued coupons past their expiry date"
        coupons = cls.search([
                ('state', '=', 'issued'),
                ('expiry_date', '<=', dt.datetime.now()),
                ])
        cls.expire(coupons)
        return coupons

    def check_redeem(self, order):
        "Check the coupon may be redeemed on the draft order"
        if self.company != order.company:
            raise CouponError(gettext(
                    'fuel_promotion.msg_coupon_unknown', code=self.code))
        if self.state != 'issued':
            raise CouponError(gettext(
                    'fuel_promotion.msg_coupon_not_available',
                    coupon=self.rec_name, state=self.state_string))
        if self.party and order.customer and self.party != order.customer:
            raise CouponError(gettext(
                    'fuel_promotion.msg_coupon_other_member',
                    coupon=self.rec_name, order=order.rec_name))
        if not (self.start_date <= dt.datetime.now() < self.expiry_date):
            raise CouponError(gettext(
                    'fuel_promotion.msg_coupon_not_valid',
                    coupon=self.rec_name, start=self.start_date,
                    expiry=self.expiry_date))
        others = [c for c in order.coupons if c.state == 'reserved']
        if others and not (
                self.template.stackable
                and all(c.template.stackable for c in others)):
            raise CouponError(gettext(
                    'fuel_promotion.msg_coupon_not_stackable',
                    coupon=self.rec_name, order=order.rec_name))


class IssueStart(ModelView):
    "Issue Coupons"
    __name__ = 'fuel.promotion.coupon.issue.start'
    template = fields.Many2One(
        'fuel.promotion.coupon.template', "Template", required=True,
        readonly=True)
    company = fields.Many2One('company.company', "Operator", readonly=True)
    parties = fields.Many2Many(
        'party.party', None, None, "Members",
        context={'company': Eval('company', -1)}, depends={'company'},
        help="One coupon for each member.")
    quantity = fields.Integer(
        "Codes", domain=[('quantity', '>=', 0)],
        help="So many coupons more, without a member, to hand out by "
        "their code.")


class Issue(Wizard):
    "Issue Coupons"
    __name__ = 'fuel.promotion.coupon.issue'
    start = StateView(
        'fuel.promotion.coupon.issue.start',
        'fuel_promotion.coupon_issue_start_view_form', [
            Button("Cancel", 'end', 'tryton-cancel'),
            Button("Issue", 'issue', 'tryton-ok', default=True),
            ])
    issue = StateTransition()

    def default_start(self, fields):
        return {
            'template': self.record.id,
            'company': self.record.company.id,
            'quantity': 0,
            }

    def transition_issue(self):
        self.model.issue(
            self.record, parties=self.start.parties,
            quantity=self.start.quantity)
        return 'end'


def coupon_by_code(company, code):
    "Return the coupon of company with code, or raise"
    pool = Pool()
    Coupon = pool.get('fuel.promotion.coupon')
    coupons = Coupon.search([
            ('company', '=', company.id),
            ('code', '=', (code or '').strip().upper()),
            ], limit=1)
    if not coupons:
        raise CouponError(gettext(
                'fuel_promotion.msg_coupon_unknown', code=code))
    return coupons[0]
