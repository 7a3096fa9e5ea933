# This file is part of fuelpay.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""Frictionless pay agreements (无感支付开通): a member lets the platform
charge a wallet card for the fills of a plate, up to a limit each"""
import datetime as dt
from decimal import Decimal

from sql import Literal
from sql.operators import Equal
from trytond.i18n import gettext
from trytond.model import Exclude, ModelSQL, ModelView, Workflow, fields
from trytond.modules.currency.fields import Monetary
from trytond.pool import Pool
from trytond.pyson import Eval
from trytond.transaction import Transaction, without_check_access

from addons.fuel_device.event import dumps, loads

from .exceptions import AgreementError

OFFLINE_LIST_VERSION = 1


class Agreement(Workflow, ModelSQL, ModelView):
    "Frictionless Pay Agreement"
    __name__ = 'fuel.plate.agreement'
    _states = {
        'readonly': Eval('state') != 'draft',
        }

    company = fields.Many2One(
        'company.company', "Operator", required=True,
        states={
            'readonly': Eval('id', -1) >= 0,
            })
    vehicle = fields.Many2One(
        'fuel.plate.vehicle', "Vehicle", required=True, ondelete='RESTRICT',
        domain=[('company', '=', Eval('company', -1))],
        states=_states)
    party = fields.Many2One(
        'party.party', "Member", required=True, ondelete='RESTRICT',
        context={'company': Eval('company', -1)}, depends={'company'},
        states=_states,
        help="The member who pays for the vehicle.")
    card = fields.Many2One(
        'fuel.payment.wallet.card', "Card", required=True,
        ondelete='RESTRICT',
        domain=[('company', '=', Eval('company', -1))],
        states=_states,
        help="The wallet card or corporate sub-card charged.")
    limit = Monetary(
        "Limit per Transaction", currency='currency', digits='currency',
        required=True, states=_states,
        domain=[('limit', '>', 0)])
    currency = fields.Function(
        fields.Many2One('currency.currency', "Currency"),
        'on_change_with_currency')
    default = fields.Boolean(
        "Default Payer", states=_states,
        help="Charged when several members pay for the vehicle.")
    channel = fields.Selection([
            ('counter', "Station Counter"),
            ('app', "Mobile App"),
            ('wechat', "WeChat Mini Program"),
            ], "Channel", required=True, states=_states,
        help="Where the member agreed.")
    agreed_date = fields.DateTime("Agreed on", readonly=True)
    agreed_by = fields.Many2One('res.user', "Recorded by", readonly=True)
    revoked_date = fields.DateTime("Revoked on", readonly=True)
    state = fields.Selection([
            ('draft', "Draft"),
            ('active', "Active"),
            ('revoked', "Revoked"),
            ], "State", readonly=True, required=True, sort=False)

    del _states

    @classmethod
    def __setup__(cls):
        super().__setup__()
        t = cls.__table__()
        cls._sql_constraints = [
            ('default_unique',
                Exclude(t, (t.vehicle, Equal),
                    where=(t.state == Literal('active'))
                    & (t.default == Literal(True))),
                'fuel_plate.msg_agreement_default_unique'),
            ('card_unique',
                Exclude(t, (t.vehicle, Equal), (t.card, Equal),
                    where=t.state == Literal('active')),
                'fuel_plate.msg_agreement_card_unique'),
            ]
        cls._transitions |= {
            ('draft', 'active'),
            ('active', 'revoked'),
            }
        cls._buttons.update({
                'enable': {
                    'invisible': Eval('state') != 'draft',
                    'depends': ['state'],
                    },
                'revoke': {
                    'invisible': Eval('state') != 'active',
                    'depends': ['state'],
                    },
                })

    @classmethod
    def default_company(cls):
        return Transaction().context.get('company')

    @classmethod
    def default_state(cls):
        return 'draft'

    @classmethod
    def default_default(cls):
        return True

    @classmethod
    def default_channel(cls):
        return 'counter'

    @fields.depends('company')
    def on_change_with_currency(self, name=None):
        return self.company.currency if self.company else None

    def get_rec_name(self, name):
        return '%s / %s' % (self.vehicle.rec_name, self.party.rec_name)

    @classmethod
    def validate_fields(cls, agreements, field_names):
        super().validate_fields(agreements, field_names)
        if field_names & {'card', 'party', 'vehicle'}:
            for agreement in agreements:
                agreement.check_card()

    @classmethod
    def check_modification(
            cls, mode, agreements, values=None, external=False):
        super().check_modification(
            mode, agreements, values=values, external=external)
        if mode == 'delete':
            for agreement in agreements:
                if agreement.state != 'draft':
                    # the record of the member's consent is kept
                    raise AgreementError(gettext(
                            'fuel_plate.msg_agreement_delete',
                            agreement=agreement.rec_name))

    def check_card(self):
        "A personal card pays for its owner only"
        wallet = self.card.wallet
        if wallet.kind == 'personal' and wallet.party != self.party:
            raise AgreementError(gettext(
                    'fuel_plate.msg_agreement_card_party',
                    card=self.card.rec_name, party=self.party.rec_name))

    @classmethod
    @ModelView.button
    def enable(cls, agreements):
        "Record the member's consent, now, and tell the boxes"
        cls.activate(agreements)
        cls.push_offline_lists({a.company for a in agreements})

    @classmethod
    @ModelView.button
    def revoke(cls, agreements):
        "Stop charging at once and tell the boxes"
        cls.withdraw(agreements)
        cls.push_offline_lists({a.company for a in agreements})

    @classmethod
    @Workflow.transition('active')
    def activate(cls, agreements):
        for agreement in agreements:
            if agreement.card.state != 'active':
                raise AgreementError(gettext(
                        'fuel_plate.msg_agreement_card_blocked',
                        card=agreement.card.rec_name))
        cls.write(agreements, {
                'agreed_date': dt.datetime.now(),
                'agreed_by': Transaction().user,
                })

    @classmethod
    @Workflow.transition('revoked')
    def withdraw(cls, agreements):
        cls.write(agreements, {'revoked_date': dt.datetime.now()})

    def available(self):
        """What the agreement may charge now: its limit, less when the
        wallet holds less (balance plus credit limit), never below zero"""
        pool = Pool()
        Wallet = pool.get('fuel.payment.wallet')
        wallet = self.card.wallet
        balance = Wallet.get_balances([wallet])[wallet.id]
        return self.currency.round(max(
                min(self.limit, balance + wallet.credit_limit), Decimal(0)))

    @classmethod
    def offline_list(cls, company):
        "The payload of the offline list of company's enrolled plates"
        agreements = cls.search([
                ('company', '=', company.id),
                ('state', '=', 'active'),
                ('card.state', '=', 'active'),
                ], order=[('vehicle', 'ASC'), ('default', 'DESC')])
        plates, seen = [], set()
        for agreement in agreements:
            vehicle = agreement.vehicle
            if vehicle.id in seen or not vehicle.active:
                continue
            seen.add(vehicle.id)
            limit = agreement.available()
            if limit > 0:
                plates.append({
                        'plate': vehicle.plate,
                        'colour': vehicle.colour,
                        'limit': limit,
                        })
        return {
            'version': OFFLINE_LIST_VERSION,
            'frictionless_plates': plates,
            'generated': dt.datetime.now(dt.UTC).replace(
                microsecond=0).isoformat(),
            }

    @classmethod
    def push_offline_lists(cls, companies=None):
        """Queue a 'configuration' command with the offline list of
        enrolled plates to every active box of the companies (all when
        None); also run by cron as balances move"""
        pool = Pool()
        Command = pool.get('fuel.device.command')
        Company = pool.get('company.company')
        commands = []
        with without_check_access():
            # the boxes and their commands are the platform's, not the
            # rights of the member's or the attendant's user
            if companies is None:
                companies = Company.search([])
            for company in companies:
                commands.extend(cls._offline_commands(company))
            Command.save(commands)
        return commands

    @classmethod
    def _offline_commands(cls, company):
        "The unsaved offline list commands of company's active boxes"
        pool = Pool()
        Box = pool.get('fuel.device.box')
        Command = pool.get('fuel.device.command')
        boxes = Box.search([
                ('station.company', '=', company.id),
                ('state', '=', 'active'),
                ])
        if not boxes:
            return []
        # the same text for every box, made once
        payload = cls.offline_list(company)
        plates = dumps(payload['frictionless_plates'])
        text = dumps(payload)
        commands = []
        for box in boxes:
            if cls._last_offline_plates(box) == plates:
                # the box has this list already: the cron sends only news
                continue
            command = Command.prepare(box, 'configuration', {})
            command.payload = text
            commands.append(command)
        return commands

    @classmethod
    def _last_offline_plates(cls, box):
        "The JSON text of the plates of the last list queued for box"
        pool = Pool()
        Command = pool.get('fuel.device.command')
        for command in Command.search([
                    ('box', '=', box.id),
                    ('kind', '=', 'configuration'),
                    ], order=[('id', 'DESC')]):
            payload = loads(command.payload or '{}')
            if (isinstance(payload, dict)
                    and 'frictionless_plates' in payload):
                return dumps(payload['frictionless_plates'])
        return None
