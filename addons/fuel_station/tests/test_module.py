# This file is part of fuelpay.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
from trytond.tests.test_tryton import ModuleTestCase


class FuelStationTestCase(ModuleTestCase):
    "Test Fuel Station module"
    module = 'fuel_station'


del ModuleTestCase
