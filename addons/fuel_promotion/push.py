# This file is part of fuelpay.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""Targeted push (精准推送): members chosen by level, stations visited,
grades bought, dormancy and plate province get a message, and a coupon,
through a channel"""
import datetime as dt

from trytond.i18n import gettext
from trytond.model import Index, ModelSQL, ModelView, Workflow, fields
from trytond.pool import Pool
from trytond.pyson import Eval
from trytond.rpc import RPC
from trytond.transaction import Transaction

from .exceptions import PushError
from .member import SPENT_STATES
from .rule import check_readable


class InboxChannel:
    """The in-app inbox: a message is delivered when it is stored; the app
    reads the member's messages and marks them opened"""
    name = 'inbox'

    def send(self, messages):
        now = dt.datetime.now()
        for message in messages:
            message.state = 'delivered'
            message.delivered_date = now


# channels by name; a WeChat template message channel is added here with
# a `send(messages)` that calls WeChat and sets each message's state
CHANNELS = {
    InboxChannel.name: InboxChannel,
    }


class Push(Workflow, ModelSQL, ModelView):
    "Fuel Promotion Push"
    __name__ = 'fuel.promotion.push'
    _log = True

    _states = {'readonly': Eval('state') != 'draft'}

    company = fields.Many2One(
        'company.company', "Operator", required=True, states=_states)
    name = fields.Char("Name", required=True, states=_states)
    subject = fields.Char("Subject", required=True, states=_states)
    body = fields.Text("Message", states=_states)
    channel = fields.Selection([
            ('inbox', "In-App Inbox"),
            ], "Channel", required=True, states=_states)
    template = fields.Many2One(
        'fuel.promotion.coupon.template', "Coupon", states=_states,
        domain=[
            ('company', '=', Eval('company', -1)),
            ('state', '=', 'active'),
            ],
        help="Each member reached gets a coupon of this template.")
    levels = fields.Many2Many(
        'fuel.promotion.push-fuel.promotion.level', 'push', 'level',
        "Levels", domain=[('company', '=', Eval('company', -1))],
        states=_states)
    stations = fields.Many2Many(
        'fuel.promotion.push-fuel.station', 'push', 'station',
        "Stations Visited", domain=[('company', '=', Eval('company', -1))],
        states=_states)
    grades = fields.Many2Many(
        'fuel.promotion.push-product.product', 'push', 'product',
        "Grades Bought", domain=[('fuel_energy', '!=', None)],
        context={'company': Eval('company', -1)}, depends={'company'},
        states=_states)
    dormant_days = fields.Integer(
        "Dormant for (days)", states=_states,
        domain=['OR',
            ('dormant_days', '=', None),
            ('dormant_days', '>', 0),
            ],
        help="Only members whose last paid fill is older than this.")
    plate_provinces = fields.Char(
        "Plate Provinces", states=_states,
        help="The first characters of the plates, separated by commas: "
        "浙,沪.")
    messages = fields.One2Many(
        'fuel.promotion.message', 'push', "Messages", readonly=True)
    delivered = fields.Function(
        fields.Integer("Delivered"), 'get_counts')
    opened = fields.Function(fields.Integer("Opened"), 'get_counts')
    sent_date = fields.DateTime("Sent on", readonly=True)
    state = fields.Selection([
            ('draft', "Draft"),
            ('sent', "Sent"),
            ], "State", readonly=True, required=True, sort=False)

    del _states

    @classmethod
    def __setup__(cls):
        super().__setup__()
        cls._order = [('id', 'DESC')]
        cls._transitions |= {('draft', 'sent')}
        cls._buttons.update({
                'send': {
                    'invisible': Eval('state') != 'draft',
                    'depends': ['state'],
                    },
                })
        cls.__rpc__.update({
                'select_parties': RPC(
                    instantiate=0,
                    result=lambda parties: [p.id for p in parties]),
                })

    @classmethod
    def default_company(cls):
        return Transaction().context.get('company')

    @classmethod
    def default_state(cls):
        return 'draft'

    @classmethod
    def default_channel(cls):
        return 'inbox'

    @classmethod
    def copy(cls, pushes, default=None):
        default = default.copy() if default is not None else {}
        default.setdefault('messages', None)
        default.setdefault('sent_date', None)
        return super().copy(pushes, default=default)

    @classmethod
    def get_counts(cls, pushes, names):
        result = {n: {p.id: 0 for p in pushes} for n in names}
        for push in pushes:
            for message in push.messages:
                if 'delivered' in names and message.state in {
                        'delivered', 'opened'}:
                    result['delivered'][push.id] += 1
                if 'opened' in names and message.state == 'opened':
                    result['opened'][push.id] += 1
        return result

    @property
    def provinces(self):
        return [p.strip() for p in (self.plate_provinces or '').replace(
                '，', ',').split(',') if p.strip()]

    def select_parties(self):
        """Return the parties of the segment: the drivers who paid fills
        at the operator and pass every criterion set"""
        pool = Pool()
        Member = pool.get('fuel.promotion.member')
        FuelTransaction = pool.get('fuel.payment.transaction')
        check_readable(self.__class__, [self])
        transactions = FuelTransaction.search([
                ('company', '=', self.company.id),
                ('order.customer', '!=', None),
                ('order.state', 'in', SPENT_STATES),
                ], order=[('id', 'ASC')])
        by_party = {}
        for transaction in transactions:
            by_party.setdefault(
                transaction.order.customer, []).append(transaction)
        now = dt.datetime.now()
        selected = []
        for party, fills in by_party.items():
            if self.levels and (
                    Member.level_of(self.company, party) not in self.levels):
                continue
            if self.stations and not any(
                    t.station in self.stations for t in fills):
                continue
            if self.grades and not any(
                    t.grade in self.grades for t in fills):
                continue
            if self.dormant_days:
                last = max(t.order.date for t in fills)
                if last > now - dt.timedelta(days=self.dormant_days):
                    continue
            if self.provinces and not any(
                    t.plate and t.plate.startswith(tuple(self.provinces))
                    for t in fills):
                continue
            selected.append(party)
        return sorted(selected, key=lambda p: p.id)

    @classmethod
    @ModelView.button
    @Workflow.transition('sent')
    def send(cls, pushes):
        """Send each push to its segment through its channel, with a
        coupon each where it has a template"""
        pool = Pool()
        Message = pool.get('fuel.promotion.message')
        Template = pool.get('fuel.promotion.coupon.template')
        messages = []
        for push in pushes:
            parties = push.select_parties()
            if not parties:
                raise PushError(gettext(
                        'fuel_promotion.msg_push_no_member',
                        push=push.rec_name))
            coupons = (Template.issue(push.template, parties=parties)
                if push.template else [None] * len(parties))
            push_messages = [
                Message(
                    company=push.company, push=push, party=party,
                    coupon=coupon, state='draft')
                for party, coupon in zip(parties, coupons, strict=True)]
            CHANNELS[push.channel]().send(push_messages)
            messages.extend(push_messages)
            push.sent_date = dt.datetime.now()
        Message.save(messages)
        cls.save(pushes)


class PushLevel(ModelSQL):
    "Fuel Promotion Push - Level"
    __name__ = 'fuel.promotion.push-fuel.promotion.level'
    push = fields.Many2One(
        'fuel.promotion.push', "Push", required=True, ondelete='CASCADE')
    level = fields.Many2One(
        'fuel.promotion.level', "Level", required=True, ondelete='CASCADE')


class PushStation(ModelSQL):
    "Fuel Promotion Push - Station"
    __name__ = 'fuel.promotion.push-fuel.station'
    push = fields.Many2One(
        'fuel.promotion.push', "Push", required=True, ondelete='CASCADE')
    station = fields.Many2One(
        'fuel.station', "Station", required=True, ondelete='CASCADE')


class PushGrade(ModelSQL):
    "Fuel Promotion Push - Grade"
    __name__ = 'fuel.promotion.push-product.product'
    push = fields.Many2One(
        'fuel.promotion.push', "Push", required=True, ondelete='CASCADE')
    product = fields.Many2One(
        'product.product', "Grade", required=True, ondelete='CASCADE')


class Message(ModelSQL, ModelView):
    "Fuel Promotion Message"
    __name__ = 'fuel.promotion.message'

    company = fields.Many2One(
        'company.company', "Operator", required=True, readonly=True)
    push = fields.Many2One(
        'fuel.promotion.push', "Push", required=True, readonly=True,
        ondelete='CASCADE')
    party = fields.Many2One(
        'party.party', "Member", required=True, readonly=True,
        ondelete='RESTRICT',
        context={'company': Eval('company', -1)}, depends={'company'})
    coupon = fields.Many2One(
        'fuel.promotion.coupon', "Coupon", readonly=True,
        ondelete='RESTRICT')
    subject = fields.Function(fields.Char("Subject"), 'get_push_text')
    body = fields.Function(fields.Text("Message"), 'get_push_text')
    delivered_date = fields.DateTime("Delivered on", readonly=True)
    opened_date = fields.DateTime("Opened on", readonly=True)
    state = fields.Selection([
            ('draft', "Draft"),
            ('delivered', "Delivered"),
            ('failed', "Failed"),
            ('opened', "Opened"),
            ], "State", readonly=True, required=True)

    @classmethod
    def __setup__(cls):
        super().__setup__()
        t = cls.__table__()
        cls._sql_indexes.update({
                Index(t, (t.party, Index.Range())),
                Index(t, (t.push, Index.Range())),
                })
        cls._order = [('id', 'DESC')]
        cls.__rpc__.update({
                'open': RPC(readonly=False, instantiate=0),
                })

    @classmethod
    def default_state(cls):
        return 'draft'

    def get_push_text(self, name):
        return getattr(self.push, name)

    @classmethod
    def open(cls, messages):
        "The member opened the messages in the app"
        check_readable(cls, messages)
        now = dt.datetime.now()
        opened = [m for m in messages if m.state == 'delivered']
        for message in opened:
            message.state = 'opened'
            message.opened_date = now
        cls.save(opened)

    @classmethod
    def inbox(cls, party):
        "Return the messages delivered to party, newest first"
        return cls.search([
                ('party', '=', party.id),
                ('state', 'in', ['delivered', 'opened']),
                ])
