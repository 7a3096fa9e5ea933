# This file is part of fuelpay.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
from addons.fuel_station.tests.tools import scenario_test_case

FuelPlateScenarioTestCase = scenario_test_case(__name__, __file__)
