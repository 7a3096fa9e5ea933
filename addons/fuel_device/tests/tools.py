# This file is part of fuelpay.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""Helpers shared by the fuel_device tests"""
import datetime as dt
from decimal import Decimal

from trytond.pool import Pool

from addons.fuel_station.tests.test_module import create_grade, create_station


def create_station_with_price(company, code, unit_price='7.5800'):
    """Create a station with one petrol nozzle priced unit_price
    since an hour ago; return the station"""
    pool = Pool()
    Location = pool.get('stock.location')
    Dispenser = pool.get('fuel.station.dispenser')
    Tank = pool.get('fuel.station.tank')
    Nozzle = pool.get('fuel.station.nozzle')
    Price = pool.get('fuel.station.price')
    grade = create_grade("92#")
    station = create_station(company, code)
    warehouse = station.warehouse
    dispenser, = Dispenser.create([{
                'station': station.id, 'name': "Island 1",
                'protocol': 'dart', 'connection': 'udp',
                'host': '127.0.0.1', 'port': 5001, 'bus_address': 0x50,
                }])
    location, = Location.create([{
                'name': f"{code} tank", 'type': 'storage',
                'parent': warehouse.storage_location.id,
                }])
    tank, = Tank.create([{
                'station': station.id, 'name': "Tank 1", 'grade': grade.id,
                'capacity': Decimal(30000), 'location': location.id,
                }])
    Nozzle.create([{
                'station': station.id, 'dispenser': dispenser.id,
                'number': 1, 'station_number': 1, 'grade': grade.id,
                'tank': tank.id,
                }])
    # an active set in force since an hour: approving refuses the past
    price, = Price.create([{
                'company': company.id,
                'name': "Prices",
                'effective_date': dt.datetime.now() - dt.timedelta(hours=1),
                'lines': [('create', [{
                                'grade': grade.id,
                                'unit_price': Decimal(unit_price),
                                }])],
                }])
    Price.write([price], {'state': 'active'})
    return station


def create_box(station, identifier, login=None, state='active'):
    """Create a box of station in state with a user holding a validated
    key; return the box and the key"""
    pool = Pool()
    User = pool.get('res.user')
    UserApplication = pool.get('res.user.application')
    Box = pool.get('fuel.device.box')
    user, = User.create([{'login': login or f'box-{identifier}'}])
    application, = UserApplication.create([{
                'user': user.id,
                'application': 'fuel_device',
                'state': 'requested',
                }])
    box, = Box.create([{
                'station': station.id,
                'identifier': identifier,
                'user': user.id,
                }])
    if state in {'paired', 'active'}:
        Box.pair([box])
    if state == 'active':
        Box.activate([box])
    return box, application.key


def create_price(company, grade, unit_price, station=None, name="New prices"):
    """Create and approve a price set of company for grade, effective in
    a minute (approving refuses the past); return it"""
    pool = Pool()
    Price = pool.get('fuel.station.price')
    price, = Price.create([{
                'company': company.id,
                'name': name,
                'scope': 'station' if station else 'operator',
                'station': station.id if station else None,
                'effective_date': (
                    dt.datetime.now() + dt.timedelta(minutes=1)).replace(
                    microsecond=0),
                'lines': [('create', [{
                                'grade': grade.id,
                                'unit_price': Decimal(unit_price),
                                }])],
                }])
    Price.approve([price])
    return price
