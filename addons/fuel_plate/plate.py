# This file is part of fuelpay.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""Chinese plate numbers, vehicles and the configuration of frictionless
pay (无感支付)"""
import re
import unicodedata
from decimal import Decimal

from trytond.i18n import gettext
from trytond.model import (
    DeactivableMixin,
    ModelSingleton,
    ModelSQL,
    ModelView,
    Unique,
    fields,
)
from trytond.pyson import Eval
from trytond.transaction import Transaction

from .exceptions import PlateValidationError

PROVINCES = '京津沪渝冀豫云辽黑湘皖鲁新苏浙赣鄂桂甘晋蒙陕吉闽贵粤青藏川宁琼'
# letters of plates: I and O are never used (they read as 1 and 0)
LETTER = '[A-HJ-NP-Z]'
SERIAL = '[A-HJ-NP-Z0-9]'
PLATE_FORMATS = [
    # kind, pattern, colours it may have
    ('new_energy', re.compile(
            f'[{PROVINCES}]{LETTER}'
            f'(?:[DF]{SERIAL}[0-9]{{4}}|[0-9]{{5}}[DF])'),
        {'green'}),
    ('standard', re.compile(f'[{PROVINCES}]{LETTER}{SERIAL}{{5}}'),
        {'blue', 'yellow'}),
    ('coach', re.compile(f'[{PROVINCES}]{LETTER}{SERIAL}{{4}}学'),
        {'yellow'}),
    ('trailer', re.compile(f'[{PROVINCES}]{LETTER}{SERIAL}{{4}}挂'),
        {'yellow'}),
    ('police', re.compile(f'[{PROVINCES}]{LETTER}{SERIAL}{{4}}警'),
        {'white'}),
    ('hong_kong', re.compile(f'粤Z{SERIAL}{{4}}港'), {'black'}),
    ('macau', re.compile(f'粤Z{SERIAL}{{4}}澳'), {'black'}),
    ('consulate', re.compile(f'[{PROVINCES}]{LETTER}{SERIAL}{{4}}领'),
        {'black'}),
    ('embassy', re.compile(
            f'(?:[{PROVINCES}]{LETTER}{SERIAL}{{4}}|[0-9]{{6}})使'),
        {'black'}),
    ]
PLATE_KINDS = [
    ('standard', "Standard"),
    ('new_energy', "New Energy"),
    ('coach', "Driving School"),
    ('trailer', "Trailer"),
    ('police', "Police"),
    ('hong_kong', "Hong Kong"),
    ('macau', "Macau"),
    ('consulate', "Consulate"),
    ('embassy', "Embassy"),
    ]
COLOURS = [
    ('blue', "Blue"),
    ('yellow', "Yellow"),
    ('green', "Green"),
    ('white', "White"),
    ('black', "Black"),
    ]
# what people write between the parts of a plate: 京A·12345, 京A 12345
SEPARATORS = re.compile(r'[\s·•・\-_.]')


def normalize_plate(text):
    """Return the plate text as stored: full-width characters made
    half-width, letters upper case, separators removed"""
    if text is None:
        return None
    text = unicodedata.normalize('NFKC', str(text))
    return SEPARATORS.sub('', text).upper()


def plate_kind(plate):
    "Return the kind of the normalised plate, or None if it is no plate"
    for kind, pattern, _ in PLATE_FORMATS:
        if pattern.fullmatch(plate or ''):
            return kind
    return None


def plate_colours(plate):
    "Return the colours a plate of that format may have"
    for _, pattern, colours in PLATE_FORMATS:
        if pattern.fullmatch(plate or ''):
            return colours
    return set()


def check_plate(plate, colour=None):
    "Raise PlateValidationError unless plate (and colour) are consistent"
    if plate_kind(plate) is None:
        raise PlateValidationError(gettext(
                'fuel_plate.msg_plate_invalid', plate=plate))
    if colour is not None and colour not in plate_colours(plate):
        raise PlateValidationError(gettext(
                'fuel_plate.msg_plate_colour', plate=plate, colour=colour))


class PlateMixin:
    "A normalised, validated plate number and its colour"
    __slots__ = ()
    plate = fields.Char(
        "Plate", required=True, strip=True,
        help="As printed, without the dot: 京A12345, 粤B12345D.")
    colour = fields.Selection(COLOURS, "Colour", required=True)
    plate_kind = fields.Function(
        fields.Selection([(None, "")] + PLATE_KINDS, "Plate Kind"),
        'on_change_with_plate_kind')

    @fields.depends('plate')
    def on_change_plate(self):
        self.plate = normalize_plate(self.plate)

    @fields.depends('plate')
    def on_change_with_plate_kind(self, name=None):
        return plate_kind(normalize_plate(self.plate))

    @classmethod
    def preprocess_values(cls, mode, values):
        values = super().preprocess_values(mode, values)
        if values.get('plate'):
            values['plate'] = normalize_plate(values['plate'])
        return values

    @classmethod
    def validate_fields(cls, records, field_names):
        super().validate_fields(records, field_names)
        if field_names & {'plate', 'colour'}:
            for record in records:
                check_plate(record.plate, record.colour)


class Vehicle(PlateMixin, DeactivableMixin, ModelSQL, ModelView):
    "Vehicle"
    __name__ = 'fuel.plate.vehicle'
    _rec_name = 'plate'

    company = fields.Many2One(
        'company.company', "Operator", required=True,
        states={
            'readonly': Eval('id', -1) >= 0,
            })
    owner = fields.Many2One(
        'party.party', "Owner", ondelete='RESTRICT',
        context={'company': Eval('company', -1)}, depends={'company'},
        help="The member or the corporate customer owning the vehicle.")
    vehicle_type = fields.Selection([
            (None, ""),
            ('car', "Car"),
            ('suv', "SUV"),
            ('van', "Van"),
            ('truck', "Truck"),
            ('bus', "Bus"),
            ('motorcycle', "Motorcycle"),
            ], "Vehicle Type")
    grades = fields.Many2Many(
        'fuel.plate.vehicle-product.product', 'vehicle', 'grade',
        "Allowed Grades",
        domain=[('fuel_energy', '!=', None)],
        context={'company': Eval('company', -1)}, depends={'company'},
        help="The grades the vehicle may take; empty for any.")
    agreements = fields.One2Many(
        'fuel.plate.agreement', 'vehicle', "Payers",
        help="The members paying for the vehicle, the default one first.")

    @classmethod
    def __setup__(cls):
        super().__setup__()
        t = cls.__table__()
        cls._sql_constraints = [
            ('plate_unique', Unique(t, t.company, t.plate, t.colour),
                'fuel_plate.msg_vehicle_plate_unique'),
            ]
        cls._order.insert(0, ('plate', 'ASC'))

    @classmethod
    def default_company(cls):
        return Transaction().context.get('company')

    def get_rec_name(self, name):
        return self.plate

    @classmethod
    def search_rec_name(cls, name, clause):
        _, operator, value = clause
        if isinstance(value, str):
            value = normalize_plate(value)
        return [('plate', operator, value)]

    def payer_agreement(self):
        "The active agreement that pays for the vehicle, if any"
        active = [a for a in self.agreements if a.state == 'active']
        active.sort(key=lambda a: (not a.default, a.id))
        return active[0] if active else None


class VehicleGrade(ModelSQL):
    "Vehicle Allowed Grade"
    __name__ = 'fuel.plate.vehicle-product.product'
    vehicle = fields.Many2One(
        'fuel.plate.vehicle', "Vehicle", required=True, ondelete='CASCADE')
    grade = fields.Many2One(
        'product.product', "Grade", required=True, ondelete='CASCADE')


class Configuration(ModelSingleton, ModelSQL, ModelView):
    "Frictionless Pay Configuration"
    __name__ = 'fuel.plate.configuration'
    threshold = fields.Numeric(
        "Threshold", digits=(1, 4), required=True,
        domain=[('threshold', '>', 0), ('threshold', '<=', 1)],
        help="The score above which a transaction is bound and charged "
        "without asking an attendant.")
    window = fields.Integer(
        "Time Window", required=True,
        domain=[('window', '>', 0)],
        help="In seconds: how long before a nozzle lift or after the end "
        "of a fill a plate read is a candidate.")
    image_retention_days = fields.Integer(
        "Image Retention", required=True,
        domain=[('image_retention_days', '>=', 0)],
        help="In days: plate crops older than this are deleted; "
        "the reads are kept.")

    @classmethod
    def default_threshold(cls):
        return Decimal('0.8000')

    @classmethod
    def default_window(cls):
        return 300

    @classmethod
    def default_image_retention_days(cls):
        return 7
