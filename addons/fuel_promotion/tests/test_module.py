# This file is part of fuelpay.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
from trytond.tests.test_tryton import ModuleTestCase

from addons.fuel_station.tests.tools import FuelDatabaseMixin


class FuelPromotionTestCase(FuelDatabaseMixin, ModuleTestCase):
    "Test Fuel Promotion module: it activates on top of its dependencies"
    module = 'fuel_promotion'


del ModuleTestCase
