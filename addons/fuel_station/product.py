# This file is part of fuelpay.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
from trytond.i18n import gettext
from trytond.model import fields
from trytond.pool import Pool, PoolMeta

from .exceptions import GradeUnitError

ENERGIES = [
    ('petrol', "Petrol"),
    ('diesel', "Diesel"),
    ('cng', "CNG"),
    ('lng', "LNG"),
    ('lpg', "LPG"),
    ('hydrogen', "Hydrogen"),
    ('electricity', "Electricity"),
    ]

# The unit category a grade of each energy is measured in by the
# dispenser: liquids by volume, gases by mass (CNG, LNG and hydrogen
# dispensers carry a Coriolis mass meter), LPG either way depending on
# the market, and charging by energy.
ENERGY_UOM_CATEGORIES = {
    'petrol': {'uom_cat_volume'},
    'diesel': {'uom_cat_volume'},
    'cng': {'uom_cat_weight'},
    'lng': {'uom_cat_weight'},
    'lpg': {'uom_cat_volume', 'uom_cat_weight'},
    'hydrogen': {'uom_cat_weight'},
    'electricity': {'uom_cat_energy'},
    }


class Template(metaclass=PoolMeta):
    __name__ = 'product.template'
    fuel_energy = fields.Selection(
        [(None, "")] + ENERGIES, "Fuel Energy",
        help="Set on the products sold at the nozzles (grades).")
    fuel_energy_string = fuel_energy.translated('fuel_energy')

    @classmethod
    def validate_fields(cls, templates, field_names):
        super().validate_fields(templates, field_names)
        cls.check_fuel_unit(templates, field_names)

    @classmethod
    def check_fuel_unit(cls, templates, field_names=None):
        pool = Pool()
        ModelData = pool.get('ir.model.data')
        if field_names and not (
                field_names & {'fuel_energy', 'default_uom'}):
            return
        for template in templates:
            if not template.fuel_energy:
                continue
            categories = {
                ModelData.get_id('product', c)
                for c in ENERGY_UOM_CATEGORIES[template.fuel_energy]}
            if template.default_uom.category.id not in categories:
                raise GradeUnitError(gettext(
                        'fuel_station.msg_grade_unit',
                        grade=template.rec_name,
                        energy=template.fuel_energy_string,
                        unit=template.default_uom.rec_name))


class Product(metaclass=PoolMeta):
    "Registered so product.product copies the template's fuel_energy"
    __name__ = 'product.product'
