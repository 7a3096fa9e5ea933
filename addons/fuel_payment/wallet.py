# This file is part of fuelpay.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""Stored-value wallets (储值账户): a member's personal wallet with its
card, or a company's corporate master account with a sub-card (副卡) per
vehicle or driver. The balance is the sum of an append-only ledger."""
import datetime as dt
import hashlib
import hmac
import os
import re
import uuid as uuid_
from collections import Counter
from decimal import Decimal

from sql import Cast, Literal, Null
from sql.aggregate import Sum
from sql.conditionals import Coalesce
from sql.operators import Concat, Equal
from trytond import backend
from trytond.i18n import gettext
from trytond.model import (
    DeactivableMixin,
    Exclude,
    Index,
    ModelSQL,
    ModelView,
    Unique,
    Workflow,
    fields,
)
from trytond.modules.currency.fields import Monetary
from trytond.modules.product import round_price
from trytond.pool import Pool
from trytond.pyson import Eval
from trytond.tools import sqlite_apply_types
from trytond.tools import timezone as tz
from trytond.transaction import Transaction, without_check_access
from trytond.wizard import Button, StateTransition, StateView, Wizard

from .exceptions import (
    WalletBalanceError,
    WalletError,
    WalletLimitError,
    WalletPinError,
)
from .payment import WALLET_KINDS
from .reporting import company_timezone, utc_bounds

# Five wrong PINs lock a card until a manager unlocks it: a guess of a
# 4-digit PIN then succeeds 5 times in 10,000.
MAX_PIN_FAILURES = 5
PIN_FORMAT = re.compile(r'[0-9]{4,6}')
# scrypt's recommended interactive cost: about 16 MiB and 50 ms a check
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2 ** 14, 8, 1
SCRYPT_SALT_BYTES = 16
SCRYPT_KEY_BYTES = 32
# the sign of the amount of each kind of move
CREDIT_KINDS = {'recharge', 'bonus', 'refund'}
DEBIT_KINDS = {'payment'}
MOVE_ORIGIN = 'fuel.payment.wallet.move'


def hash_pin(pin):
    "Return the scrypt hash of pin as scrypt$n$r$p$salt$hash (hex)"
    salt = os.urandom(SCRYPT_SALT_BYTES)
    key = hashlib.scrypt(
        pin.encode(), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P,
        dklen=SCRYPT_KEY_BYTES)
    return '$'.join([
            'scrypt', str(SCRYPT_N), str(SCRYPT_R), str(SCRYPT_P),
            salt.hex(), key.hex()])


def verify_pin(pin, pin_hash):
    "Tell in constant time whether pin matches pin_hash"
    try:
        scheme, n, r, p, salt, key = pin_hash.split('$')
        if scheme != 'scrypt':
            return False
        key = bytes.fromhex(key)
        candidate = hashlib.scrypt(
            pin.encode(), salt=bytes.fromhex(salt), n=int(n), r=int(r),
            p=int(p), dklen=len(key))
    except ValueError:
        return False
    return hmac.compare_digest(candidate, key)


def format_amount(amount, currency):
    pool = Pool()
    Lang = pool.get('ir.lang')
    return Lang.get().currency(amount, currency)


class CurrencyFromCompanyMixin:
    __slots__ = ()
    currency = fields.Function(
        fields.Many2One('currency.currency', "Currency"),
        'on_change_with_currency')

    @fields.depends('company')
    def on_change_with_currency(self, name=None):
        return self.company.currency if self.company else None


class Wallet(
        CurrencyFromCompanyMixin, DeactivableMixin, ModelSQL, ModelView):
    "Fuel Wallet"
    __name__ = 'fuel.payment.wallet'
    _rec_name = 'number'

    company = fields.Many2One(
        'company.company', "Operator", required=True,
        states={
            'readonly': Eval('id', -1) >= 0,
            })
    number = fields.Char(
        "Number", strip=True,
        help="Unique among the wallets of the operator; "
        "left empty, it is made from the record's id.")
    party = fields.Many2One(
        'party.party', "Owner", required=True, ondelete='RESTRICT',
        context={
            'company': Eval('company', -1),
            },
        depends={'company'})
    kind = fields.Selection([
            ('personal', "Personal"),
            ('corporate', "Corporate"),
            ], "Kind", required=True,
        help="A member's own wallet, or a company's master account whose "
        "sub-cards pay for its vehicles and drivers.")
    credit_limit = Monetary(
        "Credit Limit", currency='currency', digits='currency',
        required=True,
        domain=[('credit_limit', '>=', 0)],
        states={
            'readonly': Eval('kind') != 'corporate',
            },
        help="How far below zero a corporate account may go.")
    balance = fields.Function(Monetary(
            "Balance", currency='currency', digits='currency'),
        'get_balance', searcher='search_balance')
    cards = fields.One2Many(
        'fuel.payment.wallet.card', 'wallet', "Cards",
        states={
            'readonly': ~Eval('active', True),
            })
    moves = fields.One2Many(
        'fuel.payment.wallet.move', 'wallet', "Moves", readonly=True,
        order=[('date', 'DESC'), ('id', 'DESC')])

    @classmethod
    def __setup__(cls):
        super().__setup__()
        t = cls.__table__()
        cls._sql_constraints = [
            ('number_unique', Unique(t, t.company, t.number),
                'fuel_payment.msg_wallet_number_unique'),
            ]
        cls._sql_indexes.add(Index(t, (t.party, Index.Range())))
        cls._order.insert(0, ('number', 'ASC'))
        cls._buttons.update({
                'top_up': {
                    'invisible': ~Eval('active', True),
                    'depends': ['active'],
                    },
                })

    @classmethod
    def default_company(cls):
        return Transaction().context.get('company')

    @classmethod
    def default_kind(cls):
        return 'personal'

    @classmethod
    def default_credit_limit(cls):
        return Decimal(0)

    @fields.depends('kind', 'credit_limit')
    def on_change_kind(self):
        if self.kind != 'corporate':
            self.credit_limit = Decimal(0)

    def get_rec_name(self, name):
        return '%s (%s)' % (self.number, self.party.rec_name)

    @classmethod
    def search_rec_name(cls, name, clause):
        _, operator, _ = clause
        bool_op = 'AND' if operator.startswith('!') else 'OR'
        return [bool_op,
            ('number', *clause[1:]),
            ('party.rec_name', *clause[1:]),
            ]

    @classmethod
    def copy(cls, wallets, default=None):
        default = default.copy() if default is not None else {}
        default.setdefault('number', None)
        default.setdefault('cards', None)
        default.setdefault('moves', None)
        return super().copy(wallets, default=default)

    @classmethod
    def on_modification(cls, mode, wallets, field_names=None):
        super().on_modification(mode, wallets, field_names=field_names)
        if mode == 'create':
            numbered = [w for w in wallets if not w.number]
            for wallet in numbered:
                wallet.number = 'W%06d' % wallet.id
            cls.save(numbered)

    @classmethod
    def validate_fields(cls, wallets, field_names):
        super().validate_fields(wallets, field_names)
        if field_names & {'kind', 'credit_limit'}:
            for wallet in wallets:
                if wallet.kind != 'corporate' and wallet.credit_limit:
                    raise WalletError(gettext(
                            'fuel_payment.msg_wallet_credit_limit_personal',
                            wallet=wallet.rec_name))

    @classmethod
    def get_balance(cls, wallets, name):
        return cls.get_balances(wallets)

    @classmethod
    def get_balances(cls, wallets):
        "Return {wallet id: balance} summed by the database"
        pool = Pool()
        Move = pool.get('fuel.payment.wallet.move')
        move = Move.__table__()
        cursor = Transaction().connection.cursor()
        balances = {w.id: Decimal(0) for w in wallets}
        query = move.select(
            move.wallet, Sum(move.amount).as_('balance'),
            where=fields.SQL_OPERATORS['in'](
                move.wallet, [w.id for w in wallets]),
            group_by=move.wallet)
        if backend.name == 'sqlite':
            sqlite_apply_types(query, [None, 'NUMERIC'])
        cursor.execute(*query)
        balances.update(cursor)
        return {
            w.id: w.currency.round(balances[w.id]) for w in wallets}

    @classmethod
    def search_balance(cls, name, clause):
        pool = Pool()
        Move = pool.get('fuel.payment.wallet.move')
        wallet = cls.__table__()
        move = Move.__table__()
        _, operator, value = clause
        Operator = fields.SQL_OPERATORS[operator]
        balance = Coalesce(Sum(move.amount), 0)
        value = cls.balance._field.sql_format(value)
        if backend.name == 'sqlite':
            # numerics are stored as text
            balance = Cast(balance, 'NUMERIC')
            value = Cast(Literal(value), 'NUMERIC')
        query = wallet.join(
            move, 'LEFT', condition=move.wallet == wallet.id
            ).select(
            wallet.id,
            group_by=wallet.id,
            having=Operator(balance, value))
        return [('id', 'in', query)]

    @classmethod
    @ModelView.button_action('fuel_payment.wizard_wallet_recharge')
    def top_up(cls, wallets):
        pass

    @classmethod
    def recharge(cls, wallet, amount, method, station, *, reference=None,
            uuid=None):
        """Recharge wallet with amount paid by method at station (个人充值)

        The money is booked as a done sale of the station's point of
        sale; the wallet gets a 'recharge' move and, when
        get_recharge_bonus gives one, a 'bonus' move. The same uuid sent
        again returns the first moves and creates nothing."""
        pool = Pool()
        Move = pool.get('fuel.payment.wallet.move')
        Sale = pool.get('sale.point.sale')
        if uuid:
            done = Move.search([('uuid', '=', uuid)], limit=1)
            if done:
                first, = done
                return [first] + Move.search([
                        ('origin', '=', str(first)),
                        ('kind', '=', 'bonus'),
                        ], order=[('id', 'ASC')])
        wallet = cls(wallet.id)
        amount = wallet.currency.round(Decimal(amount))
        reference = (reference or '').strip() or None
        wallet.check_recharge(amount, method, station, reference)
        with without_check_access():
            # the deposit's POS sale is the platform's bookkeeping
            sale = wallet.get_recharge_sale(amount, method, station)
            Sale.save([sale])
            Sale.process([sale])
        recharge = Move(
            wallet=wallet, kind='recharge', amount=amount, origin=sale,
            reference=reference, uuid=uuid or str(uuid_.uuid4()))
        with without_check_access():
            recharge.save()
        moves = [recharge]
        bonus = cls.get_recharge_bonus(wallet, amount, method)
        if bonus and bonus > 0:
            bonus = Move(
                wallet=wallet, kind='bonus',
                amount=wallet.currency.round(bonus), origin=recharge,
                uuid=str(uuid_.uuid5(uuid_.UUID(
                            Move.uuid_namespace), recharge.uuid + '/bonus')))
            with without_check_access():
                bonus.save()
            moves.append(bonus)
        return moves

    def check_recharge(self, amount, method, station, reference):
        if not self.active:
            raise WalletError(gettext(
                    'fuel_payment.msg_wallet_inactive',
                    wallet=self.rec_name))
        if amount <= 0:
            raise WalletError(gettext(
                    'fuel_payment.msg_wallet_amount_positive'))
        if (method.company != self.company or station.company != self.company
                or not method.active):
            raise WalletError(gettext(
                    'fuel_payment.msg_wallet_recharge_company',
                    wallet=self.rec_name, method=method.rec_name,
                    station=station.rec_name))
        if method.fuel_kind in WALLET_KINDS:
            raise WalletError(gettext(
                    'fuel_payment.msg_wallet_recharge_method',
                    wallet=self.rec_name, method=method.rec_name))
        if method.needs_reference and not reference:
            raise WalletError(gettext(
                    'fuel_payment.msg_wallet_recharge_reference',
                    method=method.rec_name))

    def get_recharge_sale(self, amount, method, station):
        "Return the POS sale booking a recharge of amount by method"
        pool = Pool()
        Configuration = pool.get('fuel.payment.configuration')
        Line = pool.get('sale.point.sale.line')
        Payment = pool.get('sale.point.payment')
        Sale = pool.get('sale.point.sale')
        Session = pool.get('sale.point.cash.session')
        Tax = pool.get('account.tax')
        point = station.point
        if point is None:
            raise WalletError(gettext(
                    'fuel_payment.msg_station_no_point',
                    station=station.rec_name))
        product = Configuration(1).recharge_product
        if product is None:
            raise WalletError(gettext(
                    'fuel_payment.msg_wallet_recharge_product'))
        # the shift books the deposit when it is settled
        sale = Sale.for_station(station, self.company)
        today = sale.date
        line = Line(
            sale=sale, product=product, quantity=1.0,
            unit_gross_price=amount)
        line.unit_list_price = round_price(
            Tax.reverse_compute(amount, line.taxes, date=today))
        sale.lines = [line]
        payment = Payment(method=method, amount=amount)
        if method.cash:
            payment.session = Session.get_current(point)
        sale.payments = [payment]
        return sale

    @classmethod
    def get_recharge_bonus(cls, wallet, amount, method):
        "Return the bonus credited for a recharge (fuel_promotion's hook)"
        return Decimal(0)


class Card(CurrencyFromCompanyMixin, Workflow, ModelSQL, ModelView):
    "Fuel Wallet Card"
    __name__ = 'fuel.payment.wallet.card'
    _rec_name = 'number'

    _states = {
        'readonly': Eval('state') != 'active',
        }

    wallet = fields.Many2One(
        'fuel.payment.wallet', "Wallet", required=True, ondelete='RESTRICT',
        domain=[
            ('company', '=', Eval('company', -1)),
            ],
        states={
            'readonly': Eval('id', -1) >= 0,
            })
    company = fields.Many2One(
        'company.company', "Operator", required=True, readonly=True,
        help="The operator of the wallet.")
    number = fields.Char(
        "Number", strip=True,
        help="Unique among the cards of the operator; "
        "left empty, it is made from the record's id.")
    holder = fields.Char(
        "Holder", states=_states,
        help="The member or the driver who carries the card.")
    plate = fields.Char(
        "Plate", strip=True, states=_states,
        help="The vehicle a sub-card pays for.")
    # never read through the ORM (see access_card_pin_hash); lazy so that
    # clients reading every field do not ask for it
    pin_hash = fields.Char("PIN Hash", readonly=True, loading='lazy')
    has_pin = fields.Function(fields.Boolean("Has PIN"), 'get_has_pin')
    pin_failures = fields.Integer(
        "PIN Failures", readonly=True,
        help="Wrong PINs entered since the last right one.")
    pin_locked = fields.Boolean(
        "PIN Locked", readonly=True,
        help="Locked after %s wrong PINs in a row; "
        "a manager unlocks it." % MAX_PIN_FAILURES)
    day_limit = Monetary(
        "Daily Limit", currency='currency', digits='currency',
        domain=['OR',
            ('day_limit', '=', None),
            ('day_limit', '>=', 0),
            ],
        states=_states,
        help="The most the card pays a day; empty for no limit.")
    month_limit = Monetary(
        "Monthly Limit", currency='currency', digits='currency',
        domain=['OR',
            ('month_limit', '=', None),
            ('month_limit', '>=', 0),
            ],
        states=_states,
        help="The most the card pays a calendar month; empty for no limit.")
    grades_restricted = fields.Boolean(
        "Listed Grades Only", states=_states,
        help="Check to let the card pay only for the grades listed.")
    grade_limits = fields.One2Many(
        'fuel.payment.wallet.card.grade_limit', 'card', "Grade Limits",
        states=_states)
    state = fields.Selection([
            ('active', "Active"),
            ('blocked', "Blocked"),
            ], "State", required=True, readonly=True, sort=False)

    del _states

    @classmethod
    def __setup__(cls):
        super().__setup__()
        t = cls.__table__()
        cls._sql_constraints = [
            ('number_unique', Unique(t, t.company, t.number),
                'fuel_payment.msg_card_number_unique'),
            ]
        cls._sql_indexes.add(Index(t, (t.wallet, Index.Range())))
        cls._order.insert(0, ('number', 'ASC'))
        cls._transitions |= {
            ('active', 'blocked'),
            ('blocked', 'active'),
            }
        cls._buttons.update({
                'block': {
                    'invisible': Eval('state') != 'active',
                    'depends': ['state'],
                    },
                'activate': {
                    'invisible': Eval('state') != 'blocked',
                    'depends': ['state'],
                    },
                'unlock_pin': {
                    'invisible': ~Eval('pin_locked', False),
                    'depends': ['pin_locked'],
                    },
                })

    @classmethod
    def default_company(cls):
        return Transaction().context.get('company')

    @classmethod
    def default_state(cls):
        return 'active'

    @classmethod
    def default_pin_failures(cls):
        return 0

    @classmethod
    def default_pin_locked(cls):
        return False

    @classmethod
    def default_grades_restricted(cls):
        return False

    @fields.depends('wallet', '_parent_wallet.company')
    def on_change_wallet(self):
        if self.wallet:
            self.company = self.wallet.company

    @classmethod
    def preprocess_values(cls, mode, values):
        pool = Pool()
        Wallet = pool.get('fuel.payment.wallet')
        values = super().preprocess_values(mode, values)
        # the card belongs to the operator of its wallet
        if values.get('wallet'):
            values['company'] = Wallet(values['wallet']).company.id
        elif mode == 'write':
            values.pop('company', None)
        return values

    def get_rec_name(self, name):
        label = self.plate or self.holder
        return '%s (%s)' % (self.number, label) if label else self.number

    @classmethod
    def search_rec_name(cls, name, clause):
        _, operator, _ = clause
        bool_op = 'AND' if operator.startswith('!') else 'OR'
        return [bool_op,
            ('number', *clause[1:]),
            ('plate', *clause[1:]),
            ('holder', *clause[1:]),
            ]

    @classmethod
    def get_has_pin(cls, cards, name):
        # read by SQL: nobody may read pin_hash through the ORM
        table = cls.__table__()
        cursor = Transaction().connection.cursor()
        result = {c.id: False for c in cards}
        cursor.execute(*table.select(
                table.id,
                where=fields.SQL_OPERATORS['in'](
                    table.id, [c.id for c in cards])
                & (table.pin_hash != Null)))
        for card_id, in cursor:
            result[card_id] = True
        return result

    @classmethod
    def copy(cls, cards, default=None):
        default = default.copy() if default is not None else {}
        for name in ['number', 'pin_hash']:
            default.setdefault(name, None)
        default.setdefault('pin_failures', 0)
        default.setdefault('pin_locked', False)
        return super().copy(cards, default=default)

    @classmethod
    def on_modification(cls, mode, cards, field_names=None):
        super().on_modification(mode, cards, field_names=field_names)
        if mode == 'create':
            numbered = [c for c in cards if not c.number]
            for card in numbered:
                card.number = 'C%08d' % card.id
            cls.save(numbered)

    @classmethod
    @ModelView.button
    @Workflow.transition('blocked')
    def block(cls, cards):
        pass

    @classmethod
    @ModelView.button
    @Workflow.transition('active')
    def activate(cls, cards):
        pass

    @classmethod
    @ModelView.button
    def unlock_pin(cls, cards):
        "Let the holders try their PIN again"
        with without_check_access():
            cls.write(cards, {'pin_failures': 0, 'pin_locked': False})

    def set_pin(self, pin):
        "Set the PIN of the card: 4 to 6 digits, stored as a scrypt hash"
        if not isinstance(pin, str) or not PIN_FORMAT.fullmatch(pin):
            raise WalletPinError(gettext(
                    'fuel_payment.msg_card_pin_format', card=self.rec_name))
        with without_check_access():
            self.write([self], {
                    'pin_hash': hash_pin(pin),
                    'pin_failures': 0,
                    'pin_locked': False,
                    })

    def _get_pin_hash(self):
        table = self.__table__()
        cursor = Transaction().connection.cursor()
        cursor.execute(*table.select(
                table.pin_hash, where=table.id == self.id))
        pin_hash, = cursor.fetchone()
        return pin_hash

    def check_pin(self, pin):
        """Raise WalletPinError unless pin is the card's PIN

        A wrong PIN counts a failure; the fifth in a row locks the card.
        The count survives the rollback the error causes (see
        _PinFailures)."""
        card = self.__class__(self.id)
        if card.pin_locked:
            raise WalletPinError(gettext(
                    'fuel_payment.msg_card_pin_locked', card=card.rec_name))
        if not pin:
            raise WalletPinError(gettext(
                    'fuel_payment.msg_card_pin_required', card=card.rec_name))
        pin_hash = card._get_pin_hash()
        if pin_hash and verify_pin(str(pin), pin_hash):
            if card.pin_failures:
                with without_check_access():
                    card.write([card], {'pin_failures': 0})
            return
        failures = (card.pin_failures or 0) + 1
        locked = failures >= MAX_PIN_FAILURES
        with without_check_access():
            card.write([card], {
                    'pin_failures': failures,
                    'pin_locked': locked,
                    })
        _PinFailures.count(card, pin_hash)
        if locked:
            raise WalletPinError(gettext(
                    'fuel_payment.msg_card_pin_locked', card=card.rec_name))
        raise WalletPinError(gettext(
                'fuel_payment.msg_card_pin_wrong', card=card.rec_name,
                left=MAX_PIN_FAILURES - failures))

    @classmethod
    def _add_pin_failures(cls, failures):
        """Add failures ({(card id, PIN hash): count}) to the cards still
        having that PIN, locking those reaching the maximum"""
        table = cls.__table__()
        cursor = Transaction().connection.cursor()
        for (card_id, pin_hash), count in failures.items():
            where = table.id == card_id
            if pin_hash is None:
                where &= table.pin_hash == Null
            else:
                where &= table.pin_hash == pin_hash
            cursor.execute(*table.update(
                    [table.pin_failures], [table.pin_failures + count],
                    where=where))
            # a value, not a comparison, so SQLite stores it as the ORM does
            cursor.execute(*table.update(
                    [table.pin_locked], [True],
                    where=where & (table.pin_failures >= MAX_PIN_FAILURES)))

    @classmethod
    def pay(cls, card, amount, *, pin=None, uuid=None, lines=None,
            origin=None, date=None):
        """Debit amount from the wallet of card and return the 'payment'
        move; lines are (grade, amount) pairs checked against the grade
        limits. The same uuid sent again returns the first move."""
        pool = Pool()
        Move = pool.get('fuel.payment.wallet.move')
        Wallet = pool.get('fuel.payment.wallet')
        if uuid:
            done = Move.search([('uuid', '=', uuid)], limit=1)
            if done:
                return done[0]
        card = cls(card.id)
        # payments of a wallet queue here, so the balance read below
        # cannot change before the debit is written
        Wallet.lock([card.wallet])
        wallet = Wallet(card.wallet.id)
        amount = wallet.currency.round(Decimal(amount))
        if amount <= 0:
            raise WalletError(gettext(
                    'fuel_payment.msg_wallet_amount_positive'))
        if not wallet.active:
            raise WalletError(gettext(
                    'fuel_payment.msg_wallet_inactive',
                    wallet=wallet.rec_name))
        if card.state != 'active':
            raise WalletError(gettext(
                    'fuel_payment.msg_card_blocked', card=card.rec_name))
        if card.has_pin:
            card.check_pin(pin)
        date = date or dt.datetime.now()
        grade = card.check_limits(amount, lines, date)
        balance = Wallet.get_balances([wallet])[wallet.id]
        if balance - amount < -wallet.credit_limit:
            raise WalletBalanceError(gettext(
                    'fuel_payment.msg_wallet_balance',
                    wallet=wallet.rec_name,
                    available=format_amount(
                        balance + wallet.credit_limit, wallet.currency),
                    amount=format_amount(amount, wallet.currency)))
        move = Move(
            wallet=wallet, card=card, kind='payment', amount=-amount,
            date=date, grade=grade, origin=origin,
            uuid=uuid or str(uuid_.uuid4()))
        with without_check_access():
            move.save()
        return move

    def check_limits(self, amount, lines, date):
        """Raise WalletLimitError when paying amount at date goes over a
        limit of the card; return the grade paid for, if only one"""
        pool = Pool()
        Move = pool.get('fuel.payment.wallet.move')
        grades = {g for g, _ in lines or []}
        grade = grades.pop() if len(grades) == 1 else None
        day_start, month_start = self.period_starts(date)
        for limit, start, message in [
                (self.day_limit, day_start, 'msg_card_day_limit'),
                (self.month_limit, month_start, 'msg_card_month_limit'),
                ]:
            if limit is None:
                continue
            used = Move.get_paid(self, start)
            if used + amount > limit:
                raise WalletLimitError(gettext(
                        f'fuel_payment.{message}', card=self.rec_name,
                        limit=format_amount(limit, self.currency),
                        left=format_amount(
                            max(limit - used, 0), self.currency)))
        grade_limits = {
            g.grade: g.month_limit for g in self.grade_limits}
        if not (grade_limits or self.grades_restricted):
            return grade
        if grade is None:
            raise WalletLimitError(gettext(
                    'fuel_payment.msg_card_grade_unknown',
                    card=self.rec_name))
        if grade not in grade_limits:
            if self.grades_restricted:
                raise WalletLimitError(gettext(
                        'fuel_payment.msg_card_grade_restricted',
                        card=self.rec_name, grade=grade.rec_name))
            return grade
        limit = grade_limits[grade]
        used = Move.get_paid(self, month_start, grade=grade)
        if used + amount > limit:
            raise WalletLimitError(gettext(
                    'fuel_payment.msg_card_grade_limit',
                    card=self.rec_name, grade=grade.rec_name,
                    limit=format_amount(limit, self.currency),
                    left=format_amount(max(limit - used, 0), self.currency)))
        return grade

    def period_starts(self, date):
        """Return the start of the day and of the month of date in the
        operator's timezone, as naive UTC like stored dates"""
        timezone = company_timezone(self.company.id)
        day = date.replace(tzinfo=tz.UTC).astimezone(
            tz.get_tzinfo(timezone)).date()
        return (
            utc_bounds(day, None, timezone)[0],
            utc_bounds(day.replace(day=1), None, timezone)[0])


class _PinFailures:
    """The wrong PINs counted by a transaction, written again in a
    transaction of their own if it rolls back

    check_pin raises WalletPinError, which rolls the caller's transaction
    back, and the count with it. Committing the count first in
    Transaction().new_transaction() does not work everywhere: SQLite gives
    every transaction of a process the same connection, so that commit
    would also commit the caller's unfinished work; and on PostgreSQL the
    new transaction would wait forever on the card row if the caller had
    changed the card. So the count is written in the caller's transaction
    (it is kept if the caller commits) and, only if that transaction
    rolls back, added again once it has ended, before the error reaches
    the client, to the cards still having the PIN that was tried."""

    def __init__(self, database_name):
        self.database_name = database_name
        self.counts = Counter()
        self.pending = Counter()
        self.registered = False

    def __eq__(self, other):
        return isinstance(other, _PinFailures)

    def __hash__(self):
        return hash(_PinFailures)

    @classmethod
    def count(cls, card, pin_hash):
        transaction = Transaction()
        manager = transaction.join(cls(transaction.database.name))
        if not manager.registered:
            transaction.atexit(manager.write_pending, card.__class__)
            manager.registered = True
        manager.counts[card.id, pin_hash] += 1

    def tpc_begin(self, transaction):
        pass

    def commit(self, transaction):
        pass

    def tpc_vote(self, transaction):
        pass

    def tpc_finish(self, transaction):
        # committed with the caller's work
        self.counts.clear()

    def tpc_abort(self, transaction):
        self.pending.update(self.counts)
        self.counts.clear()

    def write_pending(self, Card):
        if not self.pending:
            return
        pending, self.pending = self.pending, Counter()
        with Transaction(new=True).start(self.database_name, 0):
            Card._add_pin_failures(pending)


class CardGradeLimit(CurrencyFromCompanyMixin, ModelSQL, ModelView):
    "Fuel Wallet Card Grade Limit"
    __name__ = 'fuel.payment.wallet.card.grade_limit'
    card = fields.Many2One(
        'fuel.payment.wallet.card', "Card", required=True,
        ondelete='CASCADE')
    company = fields.Function(
        fields.Many2One('company.company', "Operator"),
        'on_change_with_company')
    grade = fields.Many2One(
        'product.product', "Grade", required=True, ondelete='RESTRICT',
        domain=[('fuel_energy', '!=', None)],
        context={'company': Eval('company', -1)}, depends={'company'})
    month_limit = Monetary(
        "Monthly Limit", currency='currency', digits='currency',
        required=True, domain=[('month_limit', '>=', 0)],
        help="The most the card pays for the grade a calendar month.")

    @classmethod
    def __setup__(cls):
        super().__setup__()
        cls.__access__.add('card')
        t = cls.__table__()
        cls._sql_constraints = [
            ('grade_unique', Unique(t, t.card, t.grade),
                'fuel_payment.msg_card_grade_limit_unique'),
            ]

    @fields.depends('card', '_parent_card.company')
    def on_change_with_company(self, name=None):
        return self.card.company if self.card else None


class WalletMove(CurrencyFromCompanyMixin, ModelSQL, ModelView):
    "Fuel Wallet Move"
    __name__ = 'fuel.payment.wallet.move'
    # namespace of the uuids derived from another move's uuid
    uuid_namespace = '6f1f4f7e-3c1b-5a55-9a53-0c2a3e1b6d11'

    uuid = fields.Char("UUID", required=True, readonly=True)
    company = fields.Many2One(
        'company.company', "Operator", required=True, readonly=True)
    wallet = fields.Many2One(
        'fuel.payment.wallet', "Wallet", required=True, readonly=True,
        ondelete='RESTRICT',
        domain=[('company', '=', Eval('company', -1))])
    card = fields.Many2One(
        'fuel.payment.wallet.card', "Card", readonly=True,
        ondelete='RESTRICT',
        domain=[('wallet', '=', Eval('wallet', -1))])
    kind = fields.Selection([
            ('recharge', "Recharge"),
            ('bonus', "Bonus"),
            ('payment', "Payment"),
            ('refund', "Refund"),
            ('adjustment', "Adjustment"),
            ], "Kind", required=True, readonly=True)
    kind_string = kind.translated('kind')
    amount = Monetary(
        "Amount", currency='currency', digits='currency', required=True,
        readonly=True,
        help="Positive for money in, negative for money out.")
    date = fields.DateTime("Date", required=True, readonly=True)
    grade = fields.Many2One(
        'product.product', "Grade", readonly=True, ondelete='RESTRICT',
        domain=[('fuel_energy', '!=', None)],
        context={'company': Eval('company', -1)}, depends={'company'})
    origin = fields.Reference(
        "Origin", selection='get_origins', readonly=True)
    reference = fields.Char(
        "Reference", readonly=True,
        help="The reference of the payment host.")
    description = fields.Char("Description", readonly=True)

    @classmethod
    def __setup__(cls):
        super().__setup__()
        t = cls.__table__()
        cls._sql_constraints = [
            ('uuid_unique', Unique(t, t.uuid),
                'fuel_payment.msg_wallet_move_uuid_unique'),
            ('refund_unique',
                Exclude(t, (t.origin, Equal),
                    where=t.kind == Literal('refund')),
                'fuel_payment.msg_wallet_refund_once'),
            ]
        cls._sql_indexes.update({
                Index(t, (t.wallet, Index.Range())),
                Index(t,
                    (t.card, Index.Range()),
                    (t.kind, Index.Equality(cardinality='low')),
                    (t.date, Index.Range())),
                Index(t, (t.origin, Index.Equality())),
                })
        cls._order = [
            ('date', 'DESC'),
            ('id', 'DESC'),
            ]

    @classmethod
    def default_date(cls):
        return dt.datetime.now()

    @classmethod
    def default_company(cls):
        return Transaction().context.get('company')

    @classmethod
    def get_origins(cls):
        pool = Pool()
        Model = pool.get('ir.model')
        models = [
            'fuel.payment.order', 'sale.point.sale', MOVE_ORIGIN]
        return [(None, '')] + [
            (m, Model.get_name(m)) for m in models]

    @classmethod
    def preprocess_values(cls, mode, values):
        pool = Pool()
        Wallet = pool.get('fuel.payment.wallet')
        values = super().preprocess_values(mode, values)
        if mode == 'create' and values.get('wallet'):
            values['company'] = Wallet(values['wallet']).company.id
        return values

    def get_rec_name(self, name):
        return '%s %s' % (self.wallet.number, self.uuid[:8])

    @classmethod
    def check_modification(cls, mode, moves, values=None, external=False):
        super().check_modification(
            mode, moves, values=values, external=external)
        if mode in {'write', 'delete'}:
            raise WalletError(gettext('fuel_payment.msg_wallet_move_modify'))
        if (mode == 'create' and external
                and any(m.kind != 'adjustment' for m in moves)):
            # the other kinds come with their money: a recharge with its
            # sale, a payment with its order, a refund with its payment
            raise WalletError(gettext('fuel_payment.msg_wallet_move_manual'))

    @classmethod
    def validate_fields(cls, moves, field_names):
        super().validate_fields(moves, field_names)
        for move in moves:
            move.check_amount_sign()

    def check_amount_sign(self):
        if ((self.kind in CREDIT_KINDS and self.amount <= 0)
                or (self.kind in DEBIT_KINDS and self.amount >= 0)
                or not self.amount):
            raise WalletError(gettext(
                    'fuel_payment.msg_wallet_move_sign',
                    kind=self.kind_string, amount=self.amount))

    @classmethod
    def get_paid(cls, card, since, grade=None):
        """Return what card paid since the date, less the refunds of
        those payments"""
        payment = cls.__table__()
        refund = cls.__table__()
        cursor = Transaction().connection.cursor()
        where = ((payment.card == card.id)
            & (payment.kind == 'payment')
            & (payment.date >= since))
        if grade:
            where &= payment.grade == grade.id
        query = payment.join(refund, 'LEFT',
            condition=(refund.origin == Concat(
                    MOVE_ORIGIN + ',', Cast(payment.id, 'VARCHAR')))
            & (refund.kind == 'refund')
            ).select(
            Sum(payment.amount + Coalesce(refund.amount, 0)).as_('paid'),
            where=where)
        if backend.name == 'sqlite':
            sqlite_apply_types(query, ['NUMERIC'])
        cursor.execute(*query)
        paid, = cursor.fetchone()
        return card.currency.round(-(paid or Decimal(0)))

    @classmethod
    def refund(cls, moves, uuid=None):
        """Return the 'refund' moves giving back the payment moves; a
        payment is refunded once"""
        pool = Pool()
        Wallet = pool.get('fuel.payment.wallet')
        if not moves:
            return []
        if uuid is None:
            uuids = [str(uuid_.uuid4()) for _ in moves]
        elif len(moves) == 1:
            uuids = [uuid]
        else:
            namespace = uuid_.UUID(cls.uuid_namespace)
            uuids = [str(uuid_.uuid5(namespace, f'{uuid}/{m.uuid}'))
                for m in moves]
        done = {m.uuid: m for m in cls.search([('uuid', 'in', uuids)])}
        if len(done) == len(uuids):
            return [done[u] for u in uuids]
        Wallet.lock(list({m.wallet for m in moves}))
        for move in moves:
            if move.kind != 'payment':
                raise WalletError(gettext(
                        'fuel_payment.msg_wallet_refund_kind',
                        move=move.rec_name))
        refunded = cls.search([
                ('origin', 'in', [str(m) for m in moves]),
                ('kind', '=', 'refund'),
                ('uuid', 'not in', uuids),
                ], limit=1)
        if refunded:
            raise WalletError(gettext(
                    'fuel_payment.msg_wallet_refund_once',
                    move=refunded[0].origin.rec_name))
        refunds = []
        for move, key in zip(moves, uuids, strict=True):
            if key in done:
                refunds.append(done[key])
                continue
            refunds.append(cls(
                    wallet=move.wallet, card=move.card, kind='refund',
                    amount=-move.amount, grade=move.grade, origin=move,
                    reference=move.reference, uuid=key))
        with without_check_access():
            cls.save([r for r in refunds if r.id is None or r.id < 0])
        return refunds


class RechargeStart(ModelView):
    "Recharge Fuel Wallet"
    __name__ = 'fuel.payment.wallet.recharge.start'
    wallet = fields.Many2One(
        'fuel.payment.wallet', "Wallet", required=True, readonly=True)
    company = fields.Many2One(
        'company.company', "Operator", required=True, readonly=True)
    currency = fields.Many2One(
        'currency.currency', "Currency", required=True, readonly=True)
    station = fields.Many2One(
        'fuel.station', "Station", required=True,
        domain=[
            ('company', '=', Eval('company', -1)),
            ('point', '!=', None),
            ])
    method = fields.Many2One(
        'sale.point.payment.method', "Method", required=True,
        domain=[
            ('company', '=', Eval('company', -1)),
            ('fuel_kind', 'not in', sorted(WALLET_KINDS)),
            ])
    amount = Monetary(
        "Amount", currency='currency', digits='currency', required=True,
        domain=[('amount', '>', 0)])
    needs_reference = fields.Function(
        fields.Boolean("Needs Reference"), 'on_change_with_needs_reference')
    reference = fields.Char(
        "Reference",
        states={
            'required': Eval('needs_reference', False),
            'invisible': ~Eval('needs_reference', False),
            },
        help="The reference of the payment host.")

    @fields.depends('method')
    def on_change_with_needs_reference(self, name=None):
        return bool(self.method and self.method.needs_reference)


class Recharge(Wizard):
    "Recharge Fuel Wallet"
    __name__ = 'fuel.payment.wallet.recharge'
    start = StateView(
        'fuel.payment.wallet.recharge.start',
        'fuel_payment.wallet_recharge_start_view_form', [
            Button("Cancel", 'end', 'tryton-cancel'),
            Button("Recharge", 'recharge', 'tryton-ok', default=True),
            ])
    recharge = StateTransition()

    def default_start(self, fields):
        return {
            'wallet': self.record.id,
            'company': self.record.company.id,
            'currency': self.record.currency.id,
            }

    def transition_recharge(self):
        pool = Pool()
        Wallet = pool.get('fuel.payment.wallet')
        Wallet.recharge(
            self.record, self.start.amount, self.start.method,
            self.start.station, reference=self.start.reference)
        return 'end'
