# This file is part of fuelpay.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.

from trytond.i18n import gettext
from trytond.model import (
    DeactivableMixin,
    Index,
    ModelSQL,
    ModelView,
    Unique,
    Workflow,
    fields,
)
from trytond.pyson import Eval
from trytond.tools import timezone as tz
from trytond.transaction import Transaction

from .exceptions import StationValidationError
from .product import ENERGIES

TIMEZONES = [(None, '')] + [(z, z) for z in sorted(tz.available_timezones())]
WEEKDAYS = [
    ('0', "Monday"),
    ('1', "Tuesday"),
    ('2', "Wednesday"),
    ('3', "Thursday"),
    ('4', "Friday"),
    ('5', "Saturday"),
    ('6', "Sunday"),
    ]


class CompanyFromStationMixin:
    "Give station children the company of their station"
    __slots__ = ()
    company = fields.Function(
        fields.Many2One('company.company', "Operator"),
        'on_change_with_company', searcher='search_company')

    @fields.depends('station', '_parent_station.company')
    def on_change_with_company(self, name=None):
        return self.station.company if self.station else None

    @classmethod
    def search_company(cls, name, clause):
        return [('station.' + clause[0],) + tuple(clause[1:])]


class Station(DeactivableMixin, Workflow, ModelSQL, ModelView):
    __name__ = 'fuel.station'
    _states = {
        'readonly': ~Eval('active', True),
        }

    company = fields.Many2One(
        'company.company', "Operator", required=True,
        states={
            'readonly': _states['readonly'] | (Eval('id', -1) >= 0),
            })
    code = fields.Char(
        "Code", required=True, strip=True, states=_states,
        help="Unique among the stations of the operator.")
    name = fields.Char("Name", required=True, states=_states)
    street = fields.Text("Street", states=_states)
    city = fields.Char("City", states=_states)
    postal_code = fields.Char("Postal Code", states=_states)
    country = fields.Many2One('country.country', "Country", states=_states)
    latitude = fields.Numeric(
        "Latitude", digits=(9, 6), states=_states,
        domain=['OR',
            ('latitude', '=', None),
            [('latitude', '>=', -90), ('latitude', '<=', 90)],
            ])
    longitude = fields.Numeric(
        "Longitude", digits=(9, 6), states=_states,
        domain=['OR',
            ('longitude', '=', None),
            [('longitude', '>=', -180), ('longitude', '<=', 180)],
            ])
    timezone = fields.Selection(
        TIMEZONES, "Timezone", translate=False, states=_states,
        help="Used for opening hours, shifts and price time windows.")
    phone = fields.Char("Phone", states=_states)
    always_open = fields.Boolean(
        "Open 24 Hours", states=_states,
        help="Check when the station never closes.")
    opening_hours = fields.One2Many(
        'fuel.station.opening_hours', 'station', "Opening Hours",
        states={
            'readonly': _states['readonly'],
            'invisible': Eval('always_open', False),
            })
    energies = fields.MultiSelection(
        ENERGIES, "Energies Offered", sort=False, states=_states)
    warehouse = fields.Many2One(
        'stock.location', "Warehouse", required=True,
        domain=[('type', '=', 'warehouse')], states=_states)
    dispensers = fields.One2Many(
        'fuel.station.dispenser', 'station', "Dispensers", states=_states)
    nozzles = fields.One2Many(
        'fuel.station.nozzle', 'station', "Nozzles", readonly=True)
    tanks = fields.One2Many(
        'fuel.station.tank', 'station', "Tanks", states=_states)
    users = fields.Many2Many(
        'fuel.station-res.user', 'station', 'user', "Staff Users",
        help="The users working at the station.")
    state = fields.Selection([
            ('closed', "Closed"),
            ('open', "Open"),
            ], "State", readonly=True, required=True, sort=False)

    del _states

    @classmethod
    def __setup__(cls):
        super().__setup__()
        t = cls.__table__()
        cls._sql_constraints = [
            ('code_unique', Unique(t, t.company, t.code),
                'fuel_station.msg_station_code_unique'),
            ]
        cls._sql_indexes.add(
            Index(t, (t.state, Index.Equality(cardinality='low'))))
        cls._order.insert(0, ('code', 'ASC'))
        cls._transitions |= {
            ('closed', 'open'),
            ('open', 'closed'),
            }
        cls._buttons.update({
                'open': {
                    'invisible': Eval('state') != 'closed',
                    'depends': ['state'],
                    },
                'close': {
                    'invisible': Eval('state') != 'open',
                    'depends': ['state'],
                    },
                })

    @classmethod
    def default_company(cls):
        return Transaction().context.get('company')

    @classmethod
    def default_state(cls):
        return 'closed'

    @classmethod
    def default_always_open(cls):
        return False

    @classmethod
    def default_energies(cls):
        return []

    def get_rec_name(self, name):
        return f'[{self.code}] {self.name}'

    @classmethod
    def search_rec_name(cls, name, clause):
        _, operator, value = clause
        if operator.startswith('!') or operator.startswith('not '):
            bool_op = 'AND'
        else:
            bool_op = 'OR'
        return [bool_op,
            ('code', operator, value),
            ('name', operator, value),
            ]

    @classmethod
    def validate_fields(cls, stations, field_names):
        super().validate_fields(stations, field_names)
        cls.check_energies(stations, field_names)

    @classmethod
    def check_energies(cls, stations, field_names=None):
        "Check every nozzle sells an energy the station offers"
        if field_names and 'energies' not in field_names:
            return
        for station in stations:
            for nozzle in station.nozzles:
                nozzle.check_energy()

    @classmethod
    @ModelView.button
    @Workflow.transition('open')
    def open(cls, stations):
        pass

    @classmethod
    @ModelView.button
    @Workflow.transition('closed')
    def close(cls, stations):
        pass


class OpeningHours(ModelSQL, ModelView):
    __name__ = 'fuel.station.opening_hours'
    station = fields.Many2One(
        'fuel.station', "Station", required=True, ondelete='CASCADE')
    weekday = fields.Selection(WEEKDAYS, "Weekday", required=True, sort=False)
    weekday_string = weekday.translated('weekday')
    opening = fields.Time("Opening", required=True, format='%H:%M')
    closing = fields.Time(
        "Closing", required=True, format='%H:%M',
        help="A closing time before the opening time closes the next day.")

    @classmethod
    def __setup__(cls):
        super().__setup__()
        cls.__access__.add('station')
        cls._order.insert(0, ('weekday', 'ASC'))
        cls._order.insert(1, ('opening', 'ASC'))

    @classmethod
    def validate_fields(cls, hours, field_names):
        super().validate_fields(hours, field_names)
        for hour in hours:
            if hour.opening == hour.closing:
                raise StationValidationError(gettext(
                        'fuel_station.msg_opening_hours_empty',
                        station=hour.station.rec_name,
                        weekday=hour.weekday_string))
