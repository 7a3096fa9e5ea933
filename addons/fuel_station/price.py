# This file is part of fuelpay.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
import datetime as dt

from trytond.i18n import gettext
from trytond.model import Index, ModelSQL, ModelView, Unique, Workflow, fields
from trytond.model.exceptions import AccessError
from trytond.pool import Pool
from trytond.pyson import Eval, If
from trytond.rpc import RPC
from trytond.transaction import Transaction

from .exceptions import (
    PriceConflictError,
    PriceModificationError,
    PriceValidationError,
)

STATES = [
    ('draft', "Draft"),
    ('approved', "Approved"),
    ('active', "Active"),
    ('superseded', "Superseded"),
    ('cancelled', "Cancelled"),
    ]
# Sets in these states price fuelling from their effective time on: an
# approved set is in force from its effective time even before the cron
# has marked it active, so a fill at 10:00:05 never gets the old price
# because the cron ran at 10:01.
IN_FORCE = ['approved', 'active', 'superseded']
# Fields the workflow itself writes once a set is approved.
WORKFLOW_FIELDS = {'state', 'approved_by', 'approved_date', 'activated_date'}


class PriceSet(Workflow, ModelSQL, ModelView):
    __name__ = 'fuel.station.price'
    _states = {
        'readonly': Eval('state') != 'draft',
        }

    company = fields.Many2One(
        'company.company', "Operator", required=True,
        states=_states)
    name = fields.Char("Reference", required=True, states=_states)
    scope = fields.Selection([
            ('operator', "All Stations of the Operator"),
            ('station', "One Station"),
            ], "Scope", required=True, states=_states,
        help="A station price wins over an operator price "
        "of the same effective time.")
    station = fields.Many2One(
        'fuel.station', "Station",
        domain=[('company', '=', Eval('company', -1))],
        states={
            'readonly': _states['readonly'],
            'required': Eval('scope') == 'station',
            'invisible': Eval('scope') != 'station',
            })
    effective_date = fields.DateTime(
        "Effective Date", required=True, states=_states,
        help="The prices apply to fills ending at or after this time, "
        "until a later set replaces them.")
    lines = fields.One2Many(
        'fuel.station.price.line', 'price', "Lines", states=_states)
    approved_by = fields.Many2One('res.user', "Approved by", readonly=True)
    approved_date = fields.DateTime("Approved on", readonly=True)
    activated_date = fields.DateTime("Activated on", readonly=True)
    state = fields.Selection(
        STATES, "State", readonly=True, required=True, sort=False)
    state_string = state.translated('state')

    del _states

    @classmethod
    def __setup__(cls):
        super().__setup__()
        t = cls.__table__()
        cls._sql_indexes.update({
                Index(t,
                    (t.company, Index.Range()),
                    (t.effective_date, Index.Range(order='DESC'))),
                Index(t, (t.state, Index.Equality(cardinality='low')),
                    where=t.state.in_(['draft', 'approved'])),
                })
        cls._order = [
            ('effective_date', 'DESC NULLS FIRST'),
            ('id', 'DESC'),
            ]
        cls._transitions |= {
            ('draft', 'approved'),
            ('approved', 'draft'),
            ('draft', 'cancelled'),
            ('approved', 'cancelled'),
            ('cancelled', 'draft'),
            ('approved', 'active'),
            ('active', 'superseded'),
            }
        cls._buttons.update({
                'approve': {
                    'invisible': Eval('state') != 'draft',
                    'depends': ['state'],
                    },
                'draft': {
                    'invisible': ~Eval('state').in_(
                        ['approved', 'cancelled']),
                    'icon': If(Eval('state') == 'cancelled',
                        'tryton-undo', 'tryton-back'),
                    'depends': ['state'],
                    },
                'cancel': {
                    'invisible': ~Eval('state').in_(['draft', 'approved']),
                    'depends': ['state'],
                    },
                })
        cls.__rpc__.update({
                'price_in_force': RPC(),
                'activate_due': RPC(
                    readonly=False, result=lambda r: list(map(int, r))),
                })

    @classmethod
    def default_company(cls):
        return Transaction().context.get('company')

    @classmethod
    def default_scope(cls):
        return 'operator'

    @classmethod
    def default_state(cls):
        return 'draft'

    @fields.depends('scope', 'station')
    def on_change_scope(self):
        if self.scope != 'station':
            self.station = None

    @property
    def grades(self):
        return {line.grade for line in self.lines}

    @classmethod
    def check_modification(cls, mode, prices, values=None, external=False):
        super().check_modification(
            mode, prices, values=values, external=external)
        if mode == 'write' and not (values.keys() - WORKFLOW_FIELDS):
            return
        if mode in {'write', 'delete'}:
            for price in prices:
                if ((mode == 'write' and price.state != 'draft')
                        or (mode == 'delete'
                            and price.state not in {'draft', 'cancelled'})):
                    raise PriceModificationError(gettext(
                            'fuel_station.msg_price_modify_approved',
                            price=price.rec_name,
                            state=price.state_string))

    @classmethod
    def check_approvable(cls, prices):
        now = dt.datetime.now()
        for price in prices:
            if not price.lines:
                raise PriceValidationError(gettext(
                        'fuel_station.msg_price_no_lines',
                        price=price.rec_name))
            if price.effective_date < now:
                raise PriceValidationError(gettext(
                        'fuel_station.msg_price_effective_past',
                        price=price.rec_name))
        cls.check_conflicts(prices)

    @classmethod
    def check_conflicts(cls, prices):
        "Refuse two sets of one scope pricing a grade at the same instant"
        for price in prices:
            others = cls.search([
                    ('company', '=', price.company.id),
                    ('station', '=',
                        price.station.id if price.station else None),
                    ('effective_date', '=', price.effective_date),
                    ('state', 'in', IN_FORCE),
                    ('id', '!=', price.id),
                    ])
            for other in others:
                common = price.grades & other.grades
                if common:
                    raise PriceConflictError(gettext(
                            'fuel_station.msg_price_conflict',
                            price=price.rec_name,
                            other=other.rec_name,
                            grade=min(g.rec_name for g in common),
                            date=price.effective_date))

    @classmethod
    @ModelView.button
    @Workflow.transition('draft')
    def draft(cls, prices):
        cls.write(prices, {
                'approved_by': None,
                'approved_date': None,
                })

    @classmethod
    @ModelView.button
    @Workflow.transition('cancelled')
    def cancel(cls, prices):
        pass

    @classmethod
    @ModelView.button
    @Workflow.transition('approved')
    def approve(cls, prices):
        # Serialize approvals so two managers cannot approve conflicting
        # sets at the same time.
        cls.lock()
        cls.check_approvable(prices)
        cls.write(prices, {
                'approved_by': Transaction().user,
                'approved_date': dt.datetime.now(),
                })

    @classmethod
    @Workflow.transition('active')
    def activate(cls, prices):
        cls.write(prices, {'activated_date': dt.datetime.now()})

    @classmethod
    @Workflow.transition('superseded')
    def supersede(cls, prices):
        pass

    @classmethod
    def activate_due(cls, date=None):
        """Activate the approved sets whose effective time has come

        The date is never later than now, so calling it early (over RPC)
        does nothing the cron would not do."""
        now = dt.datetime.now()
        date = min(date, now) if date else now
        prices = cls.search([
                ('state', '=', 'approved'),
                ('effective_date', '<=', date),
                ], order=[('effective_date', 'ASC'), ('id', 'ASC')])
        if prices:
            cls.activate(prices)
            cls.supersede(cls.covered_by(prices))
        return prices

    @classmethod
    def covered_by(cls, prices):
        """Return the active sets whose every grade is priced by a later
        active set of the same scope"""
        covered = set()
        for price in prices:
            scope = [
                ('company', '=', price.company.id),
                ('station', '=', price.station.id if price.station else None),
                ('state', '=', 'active'),
                ]
            for older in cls.search(scope + [
                        ('effective_date', '<', price.effective_date),
                        ]):
                newer = cls.search(scope + [
                        ('effective_date', '>', older.effective_date),
                        ])
                priced = set().union(*(n.grades for n in newer))
                if older.grades <= priced:
                    covered.add(older)
        return list(covered)

    @classmethod
    def get_price(cls, station, grade, date=None):
        """Return the price set and the unit price in force at the station
        for the grade at the date (now by default), or (None, None)

        The latest effective set wins; at equal effective time a station
        set wins over an operator set."""
        pool = Pool()
        Line = pool.get('fuel.station.price.line')
        if date is None:
            date = dt.datetime.now()
        lines = Line.search([
                ('price.company', '=', station.company.id),
                ('price.state', 'in', IN_FORCE),
                ('price.effective_date', '<=', date),
                ('grade', '=', grade.id),
                ['OR',
                    ('price.station', '=', station.id),
                    ('price.scope', '=', 'operator'),
                    ],
                ], order=[('effective_date', 'DESC')], limit=2)
        if not lines:
            return None, None
        latest = [
            line for line in lines
            if line.effective_date == lines[0].effective_date]
        line = min(latest, key=lambda line: line.price.scope != 'station')
        return line.price, line.unit_price

    @classmethod
    def price_in_force(cls, station, grade, date=None):
        """RPC: the price in force at station id for grade id at date
        as {'price': id or None, 'unit_price': Decimal or None}"""
        pool = Pool()
        Station = pool.get('fuel.station')
        Product = pool.get('product.product')
        stations = Station.search([('id', '=', int(station))])
        if not stations:
            raise AccessError(gettext(
                    'fuel_station.msg_station_not_found', station=station))
        station, = stations
        price, unit_price = cls.get_price(station, Product(int(grade)), date)
        return {
            'price': price.id if price else None,
            'unit_price': unit_price,
            }


class PriceLine(ModelSQL, ModelView):
    __name__ = 'fuel.station.price.line'
    price = fields.Many2One(
        'fuel.station.price', "Price Set", required=True, ondelete='CASCADE',
        states={
            'readonly': Eval('price_state') != 'draft',
            })
    grade = fields.Many2One(
        'product.product', "Grade", required=True,
        context={
            'company': Eval('company', -1),
            },
        depends={'company'},
        domain=[('fuel_energy', '!=', None)],
        states={
            'readonly': Eval('price_state') != 'draft',
            })
    unit_price = fields.Numeric(
        "Unit Price", digits=(16, 4), required=True,
        domain=[('unit_price', '>', 0)],
        states={
            'readonly': Eval('price_state') != 'draft',
            },
        help="Per unit of the grade, taxes included.")
    unit = fields.Function(
        fields.Many2One('product.uom', "Unit"), 'on_change_with_unit')
    company = fields.Function(
        fields.Many2One('company.company', "Operator"),
        'on_change_with_company', searcher='search_price_field')
    effective_date = fields.Function(
        fields.DateTime("Effective Date"), 'on_change_with_effective_date',
        searcher='search_price_field')
    station = fields.Function(
        fields.Many2One('fuel.station', "Station"),
        'on_change_with_station', searcher='search_price_field')
    price_state = fields.Function(
        fields.Selection(STATES, "Price State"),
        'on_change_with_price_state', searcher='search_price_field')

    @classmethod
    def __setup__(cls):
        super().__setup__()
        cls.__access__.add('price')
        t = cls.__table__()
        cls._sql_constraints = [
            ('grade_unique', Unique(t, t.price, t.grade),
                'fuel_station.msg_price_line_grade_unique'),
            ]

    @classmethod
    def order_effective_date(cls, tables):
        pool = Pool()
        Price = pool.get('fuel.station.price')
        line, _ = tables[None]
        if 'price' not in tables:
            price = Price.__table__()
            tables['price'] = {
                None: (price, line.price == price.id),
                }
        price, _ = tables['price'][None]
        return [price.effective_date]

    @classmethod
    def default_price_state(cls):
        return 'draft'

    @fields.depends('grade')
    def on_change_with_unit(self, name=None):
        return self.grade.default_uom if self.grade else None

    @fields.depends('price', '_parent_price.company')
    def on_change_with_company(self, name=None):
        return self.price.company if self.price else None

    @fields.depends('price', '_parent_price.effective_date')
    def on_change_with_effective_date(self, name=None):
        return self.price.effective_date if self.price else None

    @fields.depends('price', '_parent_price.station')
    def on_change_with_station(self, name=None):
        return self.price.station if self.price else None

    @fields.depends('price', '_parent_price.state')
    def on_change_with_price_state(self, name=None):
        return self.price.state if self.price else None

    @classmethod
    def search_price_field(cls, name, clause):
        field = 'state' if name == 'price_state' else name
        return [('price.' + field,) + tuple(clause[1:])]

    def get_rec_name(self, name):
        return f'{self.grade.rec_name} @ {self.unit_price}'

    @classmethod
    def check_modification(cls, mode, lines, values=None, external=False):
        super().check_modification(
            mode, lines, values=values, external=external)
        # the lines of a cancelled set go with it when it is deleted
        editable = {'draft', 'cancelled'} if mode == 'delete' else {'draft'}
        for line in lines:
            if line.price.state not in editable:
                raise PriceModificationError(gettext(
                        'fuel_station.msg_price_modify_approved',
                        price=line.price.rec_name,
                        state=line.price.state_string))
