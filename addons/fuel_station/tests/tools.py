# This file is part of fuelpay.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""Helpers shared by the fuel modules' tests and scenarios"""
import io
import pathlib
import unittest
from decimal import Decimal

from proteus import Model
from trytond.tests.test_tryton import load_doc_tests

ENERGY_UOMS = {
    'petrol': 'Liter',
    'diesel': 'Liter',
    'cng': 'Kilogram',
    'lng': 'Kilogram',
    'lpg': 'Liter',
    'hydrogen': 'Kilogram',
    'electricity': 'Kilowatt-hour',
    }


def scenario_test_case(name, path):
    """Return a TestCase with one test per scenario_*.rst beside path

    pytest ignores unittest's load_tests protocol, so the doctest suites
    Tryton builds for scenarios are run from plain test methods."""
    directory = pathlib.Path(path).parent

    def make_test(filename):
        def test(self):
            loader = unittest.TestLoader()
            loader.testNamePatterns = [filename]
            suite = load_doc_tests(
                name, path, loader, unittest.TestSuite(), None)
            self.assertGreaterEqual(suite.countTestCases(), 1, filename)
            stream = io.StringIO()
            result = unittest.TextTestRunner(
                stream=stream, verbosity=0).run(suite)
            self.assertTrue(result.wasSuccessful(), stream.getvalue())
        return test

    attrs = {
        'test_' + p.stem: make_test(p.name)
        for p in sorted(directory.glob('scenario_*.rst'))}
    return type('ScenarioTestCase', (unittest.TestCase,), attrs)


def create_grade(name, energy, unit_price='7.0000'):
    "Create a grade (product) sold in the unit of its energy"
    Template = Model.get('product.template')
    UoM = Model.get('product.uom')
    unit, = UoM.find([('name', '=', ENERGY_UOMS[energy])])
    template = Template(
        name=name, type='goods', fuel_energy=energy, default_uom=unit,
        list_price=Decimal(unit_price))
    template.save()
    return template.products[0]


def create_warehouse(code):
    Location = Model.get('stock.location')
    locations = {}
    for kind in ['input', 'output', 'storage']:
        locations[kind] = Location(
            name=f"{code} {kind}", code=f'{code}-{kind}', type='storage')
        locations[kind].save()
    warehouse = Location(
        name=code, code=code, type='warehouse',
        input_location=locations['input'],
        output_location=locations['output'],
        storage_location=locations['storage'])
    warehouse.save()
    return warehouse


def create_station(company, code, grades, energies=None):
    """Create an open station selling grades, one tank per stored grade
    and one DART dispenser on UDP with a nozzle per grade"""
    Station = Model.get('fuel.station')
    Location = Model.get('stock.location')
    Tank = Model.get('fuel.station.tank')
    Dispenser = Model.get('fuel.station.dispenser')
    Nozzle = Model.get('fuel.station.nozzle')
    warehouse = create_warehouse(f'{company.id}-{code}')
    if energies is None:
        energies = sorted({g.fuel_energy for g in grades})
    station = Station(
        company=company, code=code, name=f"Station {code}",
        energies=energies, warehouse=warehouse, timezone='Asia/Shanghai')
    station.save()
    dispenser = Dispenser(
        station=station, name="Island 1", protocol='dart',
        connection='udp', host='127.0.0.1', port=5001, bus_address=0x50)
    dispenser.save()
    for number, grade in enumerate(grades, 1):
        tank = None
        if grade.fuel_energy != 'electricity':
            location = Location(
                name=f"{code} tank {number}", type='storage',
                parent=warehouse.storage_location)
            location.save()
            tank = Tank(
                station=station, name=f"Tank {number}", grade=grade,
                capacity=Decimal('30000'), location=location)
            tank.save()
        Nozzle(
            station=station, dispenser=dispenser, number=number,
            station_number=number, grade=grade, tank=tank).save()
    station.click('open')
    station.reload()
    return station
