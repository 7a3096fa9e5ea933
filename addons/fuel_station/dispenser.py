# This file is part of fuelpay.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
from trytond.i18n import gettext
from trytond.model import (
    DeactivableMixin,
    ModelSQL,
    ModelView,
    Unique,
    Workflow,
    fields,
)
from trytond.pool import Pool
from trytond.pyson import Eval, If

from .exceptions import DispenserValidationError, NozzleValidationError
from .station import CompanyFromStationMixin

PROTOCOLS = [
    ('dart', "Wayne DART"),
    ('ifsf', "IFSF"),
    ('ocpp16', "OCPP 1.6 (EV charger)"),
    ('manual', "Manual (no controller)"),
    ]
CONNECTIONS = [
    ('serial', "Serial (RS-485)"),
    ('tcp', "TCP"),
    ('udp', "UDP"),
    ('none', "None"),
    ]
# DART pump addresses; other protocols use their own numbering.
DART_ADDRESSES = range(0x50, 0x70)


class Dispenser(
        CompanyFromStationMixin, DeactivableMixin, ModelSQL, ModelView):
    __name__ = 'fuel.station.dispenser'
    station = fields.Many2One(
        'fuel.station', "Station", required=True, ondelete='CASCADE')
    name = fields.Char("Name", required=True)
    brand = fields.Char("Brand")
    hardware_model = fields.Char("Model")
    serial_number = fields.Char("Serial Number")
    protocol = fields.Selection(PROTOCOLS, "Protocol", required=True)
    connection = fields.Selection(
        CONNECTIONS, "Connection", required=True,
        help="How the station service reaches the dispenser: "
        "a serial port or a serial-server gateway over TCP or UDP.")
    serial_port = fields.Char(
        "Serial Port",
        states={
            'invisible': Eval('connection') != 'serial',
            'required': Eval('connection') == 'serial',
            },
        help="The device of the station service, e.g. /dev/ttyUSB0.")
    host = fields.Char(
        "Host",
        states={
            'invisible': ~Eval('connection').in_(['tcp', 'udp']),
            'required': Eval('connection').in_(['tcp', 'udp']),
            })
    port = fields.Integer(
        "Port",
        domain=[If(Eval('connection').in_(['tcp', 'udp']),
                [('port', '>=', 1), ('port', '<=', 65535)],
                [])],
        states={
            'invisible': ~Eval('connection').in_(['tcp', 'udp']),
            'required': Eval('connection').in_(['tcp', 'udp']),
            })
    bus_address = fields.Integer(
        "Bus Address",
        domain=[If(Eval('protocol') == 'dart',
                [('bus_address', '>=', DART_ADDRESSES.start),
                    ('bus_address', '<', DART_ADDRESSES.stop)],
                [])],
        states={
            'required': Eval('connection') != 'none',
            'invisible': Eval('connection') == 'none',
            },
        help="The address of the dispenser on its line "
        "(DART: 80 to 111, i.e. 0x50 to 0x6F).")
    nozzles = fields.One2Many(
        'fuel.station.nozzle', 'dispenser', "Nozzles",
        domain=[
            ('station', '=', Eval('station', -1)),
            ])

    @classmethod
    def __setup__(cls):
        super().__setup__()
        cls.__access__.add('station')
        cls._order.insert(0, ('station', 'ASC'))
        cls._order.insert(1, ('name', 'ASC'))

    @classmethod
    def default_protocol(cls):
        return 'dart'

    @classmethod
    def default_connection(cls):
        return 'udp'

    def get_rec_name(self, name):
        return f'{self.station.code} / {self.name}'

    @property
    def line(self):
        "The physical line the dispenser sits on"
        if self.connection == 'serial':
            return ('serial', self.serial_port)
        elif self.connection in {'tcp', 'udp'}:
            return (self.connection, self.host, self.port)

    @classmethod
    def validate_fields(cls, dispensers, field_names):
        super().validate_fields(dispensers, field_names)
        cls.check_bus_address(dispensers, field_names)

    @classmethod
    def check_bus_address(cls, dispensers, field_names=None):
        "Check two dispensers of a line do not share an address"
        if field_names and not (field_names & {
                    'station', 'connection', 'serial_port', 'host', 'port',
                    'bus_address', 'active'}):
            return
        for dispenser in dispensers:
            if not dispenser.active or dispenser.line is None:
                continue
            others = cls.search([
                    ('station', '=', dispenser.station.id),
                    ('connection', '=', dispenser.connection),
                    ('bus_address', '=', dispenser.bus_address),
                    ('id', '!=', dispenser.id),
                    ])
            for other in others:
                if other.line == dispenser.line:
                    raise DispenserValidationError(gettext(
                            'fuel_station.msg_dispenser_address_unique',
                            dispenser=dispenser.rec_name,
                            other=other.rec_name,
                            address=dispenser.bus_address))


class Tank(CompanyFromStationMixin, DeactivableMixin, ModelSQL, ModelView):
    __name__ = 'fuel.station.tank'
    station = fields.Many2One(
        'fuel.station', "Station", required=True, ondelete='CASCADE')
    name = fields.Char("Name", required=True)
    grade = fields.Many2One(
        'product.product', "Grade", required=True,
        context={
            'company': Eval('company', -1),
            },
        depends={'company'},
        domain=[
            ('fuel_energy', '!=', None),
            ('fuel_energy', '!=', 'electricity'),
            ])
    capacity = fields.Numeric(
        "Capacity", digits=(16, 3), required=True,
        domain=[('capacity', '>', 0)],
        help="In the unit of the grade.")
    unit = fields.Function(
        fields.Many2One('product.uom', "Unit"), 'on_change_with_unit')
    location = fields.Many2One(
        'stock.location', "Location", required=True, ondelete='RESTRICT',
        domain=[('type', '=', 'storage')],
        help="The stock location the tank's stock is kept in.")

    @classmethod
    def __setup__(cls):
        super().__setup__()
        cls.__access__.add('station')
        t = cls.__table__()
        cls._sql_constraints = [
            ('location_unique', Unique(t, t.location),
                'fuel_station.msg_tank_location_unique'),
            ]
        cls._order.insert(0, ('station', 'ASC'))
        cls._order.insert(1, ('name', 'ASC'))

    @fields.depends('grade')
    def on_change_with_unit(self, name=None):
        return self.grade.default_uom if self.grade else None

    def get_rec_name(self, name):
        return f'{self.station.code} / {self.name}'


class Nozzle(CompanyFromStationMixin, Workflow, ModelSQL, ModelView):
    __name__ = 'fuel.station.nozzle'
    station = fields.Many2One(
        'fuel.station', "Station", required=True, ondelete='CASCADE')
    dispenser = fields.Many2One(
        'fuel.station.dispenser', "Dispenser", required=True,
        ondelete='CASCADE',
        domain=[('station', '=', Eval('station', -1))])
    number = fields.Integer(
        "Number", required=True, domain=[('number', '>', 0)],
        help="The number of the nozzle on its dispenser (side/hose).")
    station_number = fields.Integer(
        "Station Number", required=True,
        domain=[('station_number', '>', 0)],
        help="The number painted at the island (枪号), "
        "unique in the station; drivers quote it to pay.")
    grade = fields.Many2One(
        'product.product', "Grade", required=True,
        context={
            'company': Eval('company', -1),
            },
        depends={'company'},
        domain=[('fuel_energy', '!=', None)])
    tank = fields.Many2One(
        'fuel.station.tank', "Tank",
        domain=[
            ('station', '=', Eval('station', -1)),
            ('grade', '=', Eval('grade', -1)),
            ],
        states={
            'required': Eval('energy') != 'electricity',
            'invisible': Eval('energy') == 'electricity',
            })
    energy = fields.Function(fields.Selection(
            'get_energies', "Energy"), 'on_change_with_energy')
    unit = fields.Function(
        fields.Many2One('product.uom', "Unit"), 'on_change_with_unit')
    state = fields.Selection([
            ('active', "Active"),
            ('blocked', "Blocked"),
            ], "State", readonly=True, required=True, sort=False)

    @classmethod
    def __setup__(cls):
        super().__setup__()
        cls.__access__.add('station')
        t = cls.__table__()
        cls._sql_constraints = [
            ('number_unique', Unique(t, t.dispenser, t.number),
                'fuel_station.msg_nozzle_number_unique'),
            ('station_number_unique', Unique(t, t.station, t.station_number),
                'fuel_station.msg_nozzle_station_number_unique'),
            ]
        cls._order.insert(0, ('station', 'ASC'))
        cls._order.insert(1, ('station_number', 'ASC'))
        cls._transitions |= {
            ('active', 'blocked'),
            ('blocked', 'active'),
            }
        cls._buttons.update({
                'block': {
                    'invisible': Eval('state') != 'active',
                    'depends': ['state'],
                    },
                'unblock': {
                    'invisible': Eval('state') != 'blocked',
                    'depends': ['state'],
                    },
                })

    @classmethod
    def default_state(cls):
        return 'active'

    @classmethod
    def get_energies(cls):
        pool = Pool()
        Template = pool.get('product.template')
        return Template.fields_get(['fuel_energy'])['fuel_energy']['selection']

    @fields.depends('grade')
    def on_change_with_energy(self, name=None):
        return self.grade.fuel_energy if self.grade else None

    @fields.depends('grade')
    def on_change_with_unit(self, name=None):
        return self.grade.default_uom if self.grade else None

    @fields.depends('dispenser', '_parent_dispenser.station')
    def on_change_dispenser(self):
        if self.dispenser:
            self.station = self.dispenser.station

    def get_rec_name(self, name):
        return gettext(
            'fuel_station.msg_nozzle_rec_name',
            station=self.station.code, number=self.station_number)

    @classmethod
    def search_rec_name(cls, name, clause):
        return [('station.rec_name',) + tuple(clause[1:])]

    @classmethod
    def validate_fields(cls, nozzles, field_names):
        super().validate_fields(nozzles, field_names)
        if not field_names or (field_names & {'grade', 'station'}):
            for nozzle in nozzles:
                nozzle.check_energy()

    def check_energy(self):
        if self.grade.fuel_energy not in (self.station.energies or ()):
            raise NozzleValidationError(gettext(
                    'fuel_station.msg_nozzle_energy_not_offered',
                    nozzle=self.rec_name,
                    energy=self.grade.template.fuel_energy_string,
                    station=self.station.rec_name))

    @classmethod
    @ModelView.button
    @Workflow.transition('blocked')
    def block(cls, nozzles):
        pass

    @classmethod
    @ModelView.button
    @Workflow.transition('active')
    def unblock(cls, nozzles):
        pass
