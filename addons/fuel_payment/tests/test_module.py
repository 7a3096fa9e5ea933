# This file is part of fuelpay.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
from trytond.tests.test_tryton import ModuleTestCase


class FuelPaymentTestCase(ModuleTestCase):
    "Test Fuel Payment module: it activates on top of its dependencies"
    module = 'fuel_payment'


del ModuleTestCase
