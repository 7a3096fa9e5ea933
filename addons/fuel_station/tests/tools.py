# This file is part of fuelpay.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""Helpers shared by the fuel modules' tests and scenarios"""
import importlib
import io
import os
import pathlib
import re
import unittest
import xml.etree.ElementTree as ET
from decimal import Decimal

import polib
from proteus import Model
from trytond.pool import Pool
from trytond.tests.test_tryton import (
    DB_NAME,
    RouteTestCase,
    _DBTestCase,
    activate_module,
    drop_db,
    load_doc_tests,
    with_transaction,
)
from trytond.transaction import Transaction

ENERGY_UOMS = {
    'petrol': 'Liter',
    'diesel': 'Liter',
    'cng': 'Kilogram',
    'lng': 'Kilogram',
    'lpg': 'Liter',
    'hydrogen': 'Kilogram',
    'electricity': 'Kilowatt-hour',
    }

# Every fuelpay module.  The test classes and scenarios of all modules run
# on a database where these are active, sorted as Tryton names its DB_CACHE
# entries: each backend activates them once (about a minute) and every
# other class or scenario restores that copy (about a second).  What a
# module does alone is checked by `./fuel up`-style activation in
# tests/test_activation.py.
# FUEL_TEST_MODULES (names separated by spaces) narrows them while working
# on one module, so a half-written other module does not stop its tests.
TEST_MODULES = sorted(os.environ.get('FUEL_TEST_MODULES', '').split() or [
        'fuel_device', 'fuel_payment', 'fuel_plate', 'fuel_promotion',
        'fuel_station'])


class FuelDatabaseMixin:
    """Activate TEST_MODULES for a ModuleTestCase or RouteTestCase instead
    of its `module` and `extras` alone

    Put it first among the bases of the test class."""

    @classmethod
    def setUpClass(cls):
        # _DBTestCase.setUpClass activates module and extras: go past it
        super(_DBTestCase, cls).setUpClass()
        drop_db()
        activate_module(TEST_MODULES)
        if issubclass(cls, RouteTestCase):
            with Transaction().start(DB_NAME, 1):
                cls.setUpDatabase()


class FuelModuleTestMixin:
    """Checks every fuel module with strings passes: zh_CN complete, every
    message of message.xml expected by a test

    Mix into a ModuleTestCase; uses its `module`."""

    @property
    def module_path(self):
        package = importlib.import_module(f'addons.{self.module}')
        return pathlib.Path(package.__file__).parent

    def zh_cn_contexts(self):
        po = polib.pofile(str(self.module_path / 'locale' / 'zh_CN.po'))
        return po, {e.msgctxt for e in po}

    def messages(self):
        return ET.parse(self.module_path / 'message.xml').iter('record')

    def test_zh_cn_translation_complete(self):
        "Test every string of the module is translated into zh_CN"
        po, contexts = self.zh_cn_contexts()
        self.assertEqual(
            [e.msgctxt for e in po.untranslated_entries()], [])
        self.assertEqual([e.msgctxt for e in po.fuzzy_entries()], [])
        for record in self.messages():
            key = f"model:ir.message,text:{record.get('id')}"
            self.assertTrue(key in contexts, msg=key)

    @with_transaction()
    def test_zh_cn_translation_loads(self):
        "Test zh_CN.po loads as `trytond-admin -l zh_CN` (./fuel up) loads it"
        pool = Pool()
        Lang = pool.get('ir.lang')
        Translation = pool.get('ir.translation')
        lang, = Lang.search([('code', '=', 'zh_CN')])
        Lang.write([lang], {'translatable': True})
        po_path = self.module_path / 'locale' / 'zh_CN.po'
        Translation.translation_import('zh_CN', self.module, str(po_path))
        # Tryton skips an entry whose context it cannot place (a field,
        # help or selection context with an id after the last colon):
        # every translated entry must be stored
        stored = {
            (t.type, t.name, t.src, t.value)
            for t in Translation.search([
                    ('lang', '=', 'zh_CN'), ('module', '=', self.module),
                    ])}
        for entry in polib.pofile(str(po_path)):
            if entry.obsolete or not entry.msgstr:
                continue
            ttype, name, _ = entry.msgctxt.split(':')
            with self.subTest(msgctxt=entry.msgctxt, msgid=entry.msgid):
                self.assertIn(
                    (ttype, name, entry.msgid, entry.msgstr), stored)

    @with_transaction()
    def test_zh_cn_translation_covers_fields(self):
        """Test every model and field the module defines has a zh_CN
        string; fields it adds to other modules' models included, theirs
        excluded (they live in those modules' files)"""
        pool = Pool()
        IrModel = pool.get('ir.model')
        IrField = pool.get('ir.model.field')
        _, contexts = self.zh_cn_contexts()
        # fields every model has (id, create_date, rec_name, ...)
        base_fields = set.intersection(*(
                set(pool.get(m)._fields) for m in [
                    'ir.lang', 'ir.model.data', 'res.user-res.group']))
        base_fields.add('active')
        for model in IrModel.search([
                    ('module', '=', self.module),
                    ('name', 'like', 'fuel.%'),
                    ]):
            key = f'model:{model.name},string:'
            self.assertTrue(key in contexts, msg=key)
        for field in IrField.search([
                    ('module', '=', self.module),
                    ('model', 'like', 'fuel.%'),
                    ('name', 'not in', list(base_fields)),
                    ]):
            key = f'field:{field.model},{field.name}:'
            self.assertTrue(key in contexts, msg=key)

    def test_every_message_shown_by_a_test(self):
        """Test each message of message.xml is expected by a test, by its
        text (scenarios) or by its id (unit tests comparing gettext)"""
        tests = self.module_path / 'tests'
        expected = '\n'.join(
            p.read_text() for p in sorted(tests.iterdir())
            if p.suffix in {'.rst', '.py'})
        for record in self.messages():
            text = record.find('field').text
            fragment = max(re.split(r'%\(\w+\)s', text), key=len)
            with self.subTest(message=record.get('id')):
                self.assertTrue(
                    fragment in expected or record.get('id') in expected,
                    msg=fragment)


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
