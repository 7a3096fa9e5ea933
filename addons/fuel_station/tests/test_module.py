# This file is part of fuelpay.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
import datetime as dt
from decimal import Decimal

from trytond.model.exceptions import AccessError
from trytond.model.modelview import AccessButtonError
from trytond.modules.company.tests import (
    CompanyTestMixin,
    create_company,
    set_company,
)
from trytond.pool import Pool
from trytond.tests.test_tryton import ModuleTestCase, with_transaction
from trytond.transaction import Transaction, check_access

from .tools import FuelDatabaseMixin, FuelModuleTestMixin


def create_grade(name, energy='petrol', uom='uom_liter'):
    pool = Pool()
    ModelData = pool.get('ir.model.data')
    Template = pool.get('product.template')
    Product = pool.get('product.product')
    template, = Template.create([{
                'name': name,
                'type': 'goods',
                'fuel_energy': energy,
                'default_uom': ModelData.get_id('product', uom),
                }])
    product, = Product.create([{'template': template.id}])
    return product


def create_station(company, code):
    pool = Pool()
    Location = pool.get('stock.location')
    Station = pool.get('fuel.station')
    warehouse, = Location.search([('type', '=', 'warehouse')], limit=1)
    station, = Station.create([{
                'company': company.id,
                'code': code,
                'name': code,
                'energies': ['petrol'],
                'warehouse': warehouse.id,
                }])
    return station


def create_user(login, company, role, stations=()):
    pool = Pool()
    ModelData = pool.get('ir.model.data')
    User = pool.get('res.user')
    user, = User.create([{
                'login': login,
                'companies': [('add', [company.id])],
                'company': company.id,
                'stations': [('add', [s.id for s in stations])],
                'roles': [('create', [{
                                'role': ModelData.get_id(
                                    'fuel_station', role),
                                }])],
                }])
    return user


class FuelStationTestCase(
        FuelDatabaseMixin, FuelModuleTestMixin, CompanyTestMixin,
        ModuleTestCase):
    "Test Fuel Station module"
    module = 'fuel_station'

    def create_price(self, company, lines, hours, station=None):
        pool = Pool()
        Price = pool.get('fuel.station.price')
        price, = Price.create([{
                    'company': company.id,
                    'name': "Prices +%sh" % hours,
                    'scope': 'station' if station else 'operator',
                    'station': station.id if station else None,
                    'effective_date': (
                        dt.datetime.now() + dt.timedelta(hours=hours)),
                    'lines': [('create', [{
                                    'grade': g.id,
                                    'unit_price': Decimal(p),
                                    } for g, p in lines])],
                    }])
        Price.approve([price])
        return price

    @with_transaction()
    def test_price_in_force(self):
        "Test the latest effective set wins, a station set at equal time"
        pool = Pool()
        Price = pool.get('fuel.station.price')
        company = create_company()
        with set_company(company):
            g92 = create_grade("92#")
            g95 = create_grade("95#")
            station = create_station(company, 'S1')
            other = create_station(company, 'S2')
            now = dt.datetime.now()
            first = self.create_price(
                company, [(g92, '7.5800'), (g95, '8.0900')], 1)
            local = self.create_price(
                company, [(g92, '7.4000')], 1, station=station)
            second = self.create_price(company, [(g92, '7.7000')], 2)

            self.assertEqual(Price.get_price(station, g92, now), (None, None))
            at = now + dt.timedelta(hours=1, minutes=30)
            self.assertEqual(
                Price.get_price(station, g92, at), (local, Decimal('7.4')))
            self.assertEqual(
                Price.get_price(other, g92, at), (first, Decimal('7.58')))
            self.assertEqual(
                Price.get_price(station, g95, at), (first, Decimal('8.09')))
            at = now + dt.timedelta(hours=3)
            self.assertEqual(
                Price.get_price(station, g92, at), (second, Decimal('7.7')))
            self.assertEqual(
                Price.get_price(station, g95, at), (first, Decimal('8.09')))

            Price.draft([second])
            Price.cancel([second])
            self.assertEqual(
                Price.get_price(station, g92, at), (local, Decimal('7.4')))

    @with_transaction()
    def test_covered_by(self):
        "Test a set is superseded only when all its grades are repriced"
        pool = Pool()
        Price = pool.get('fuel.station.price')
        company = create_company()
        with set_company(company):
            g92 = create_grade("92#")
            g95 = create_grade("95#")
            first = self.create_price(
                company, [(g92, '7.5800'), (g95, '8.0900')], 1)
            second = self.create_price(company, [(g92, '7.7000')], 2)
            third = self.create_price(company, [(g95, '8.2000')], 3)
            Price.activate([first, second])
            self.assertEqual(Price.covered_by([second]), [])
            Price.activate([third])
            self.assertEqual(Price.covered_by([third]), [first])

    @with_transaction()
    def test_new_operator_visible_to_platform_administrators(self):
        "Test a new operator is added to the platform administrators"
        pool = Pool()
        User = pool.get('res.user')
        admin = User(Transaction().user)
        first = create_company("Operator A")
        # the company configuration wizard gives the first one
        self.assertNotIn(first, User(admin.id).companies)
        User.write([admin], {'companies': [('add', [first.id])]})
        second = create_company("Operator B")
        self.assertIn(second, User(admin.id).companies)

    @with_transaction()
    def test_tenant_isolation(self):
        "Test operators and station staff see only their own records"
        pool = Pool()
        Station = pool.get('fuel.station')
        Price = pool.get('fuel.station.price')
        Nozzle = pool.get('fuel.station.nozzle')
        Dispenser = pool.get('fuel.station.dispenser')
        company_a = create_company("Operator A")
        company_b = create_company("Operator B")
        with set_company(company_a):
            grade = create_grade("92#")
        with set_company(company_a):
            a1 = create_station(company_a, 'A1')
            a2 = create_station(company_a, 'A2')
            price_a = self.create_price(company_a, [(grade, '7.5')], 1)
            local_a2 = self.create_price(
                company_a, [(grade, '7.4')], 1, station=a2)
            dispenser, = Dispenser.create([{
                        'station': a2.id, 'name': "D", 'connection': 'none',
                        'protocol': 'manual'}])
        with set_company(company_b):
            b1 = create_station(company_b, 'B1')
            price_b = self.create_price(company_b, [(grade, '7.6')], 1)
        admin_a = create_user('a_admin', company_a, 'role_operator_admin')
        manager = create_user(
            'a2_manager', company_a, 'role_station_manager', [a2])
        attendant = create_user(
            'a1_attendant', company_a, 'role_attendant', [a1])

        with Transaction().set_user(admin_a.id), check_access():
            self.assertEqual(Station.search([]), [a1, a2])
            self.assertEqual(Price.search([]), [local_a2, price_a])
            with self.assertRaises(AccessError):
                Station.read([b1.id], ['name'])
            with self.assertRaises(AccessError):
                Station.write([Station(b1.id)], {'name': "Hacked"})
            with self.assertRaises(AccessError):
                Price.read([price_b.id], ['name'])

        with Transaction().set_user(attendant.id), check_access():
            self.assertEqual(Station.search([]), [a1])
            self.assertEqual(Price.search([]), [price_a])
            with self.assertRaises(AccessError):
                Station.read([a2.id], ['name'])
            with self.assertRaises(AccessError):
                Dispenser.read([dispenser.id], ['name'])
            self.assertEqual(Nozzle.search([]), [])
            with self.assertRaises(AccessError):
                Station.write([Station(a1.id)], {'name': "Renamed"})

        with Transaction().set_user(manager.id), check_access():
            self.assertEqual(Price.search([]), [local_a2, price_a])
            # a station manager prepares the prices of its station only
            draft = dict(
                company=company_a.id, name="Manager draft",
                effective_date=dt.datetime.now() + dt.timedelta(days=1))
            Price.create([dict(draft, scope='station', station=a2.id)])
            with self.assertRaises(AccessError):
                Price.create([dict(draft, scope='station', station=a1.id)])
            with self.assertRaises(AccessError):
                Price.create([dict(draft, scope='operator')])
            with self.assertRaises(AccessError):
                Price.write([Price(price_a.id)], {'name': "Changed"})
            # and withdrawing an approved set is for administrators
            with self.assertRaises(AccessButtonError):
                Price.draft([Price(local_a2.id)])

        # the platform administrator sees every operator
        User = pool.get('res.user')
        User.write([User(Transaction().user)], {'company_filter': 'all'})
        with check_access():
            self.assertEqual(Station.search([]), [a1, a2, b1])


del ModuleTestCase
