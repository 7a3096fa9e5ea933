# This file is part of fuelpay.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""Load the fuelpay demo data into a database, idempotently.

Every record is looked up by its natural key before it is created, so
running the loader again (``./fuel up`` does it at every start) never
duplicates anything.  Two operators make tenant isolation visible:
``lanshan`` (Lanshan Energy, two stations) and ``heping`` (Heping Fuel,
one station).  Demo users share the admin password.

    python -m tools.demo --database fuelpay --config trytond.conf \
        --admin-password-file var/admin-password
"""
import argparse
import datetime as dt
import time
from decimal import Decimal

from proteus import Model
from proteus import config as pconfig

TIMEZONE = 'Asia/Shanghai'

GRADES = [
    # code, name, energy, uom xml id, list price
    ('92', "92# Petrol", 'petrol', 'fuel_station.uom_fuel_litre', '7.5800'),
    ('95', "95# Petrol", 'petrol', 'fuel_station.uom_fuel_litre', '8.0900'),
    ('0D', "0# Diesel", 'diesel', 'fuel_station.uom_fuel_litre', '7.2600'),
    ('CNG', "CNG", 'cng', 'fuel_station.uom_fuel_kilogram', '4.5000'),
    ('H2', "Hydrogen 70 MPa", 'hydrogen', 'fuel_station.uom_fuel_kilogram', '35.0000'),
    ('EV', "EV Charging", 'electricity', 'fuel_station.uom_fuel_kwh', '1.2000'),
    ]

OPERATORS = [{
        'key': 'lanshan',
        'name': "Lanshan Energy",
        'prices': {'92': '7.5800', '95': '8.0900', '0D': '7.2600',
            'CNG': '4.5000', 'H2': '35.0000', 'EV': '1.2000'},
        'employees': ["Zhang Wei", "Li Na", "Chen Jie"],
        'stations': [{
                'code': 'A01', 'name': "West Lake Station",
                'street': "18 Longjing Road", 'city': "Hangzhou",
                'latitude': '30.242100', 'longitude': '120.148600',
                'phone': '+86 571 8700 1001', 'always_open': True,
                'energies': ['petrol', 'diesel', 'cng', 'electricity'],
                'tanks': ['92', '95', '0D', 'CNG'],
                'dispensers': [
                    ("Island 1", 'dart', 'udp', 0x50,
                        [(1, 1, '92'), (2, 2, '95')]),
                    ("Island 2", 'dart', 'udp', 0x51,
                        [(1, 3, '92'), (2, 4, '0D')]),
                    ("CNG Island", 'dart', 'udp', 0x52, [(1, 5, 'CNG')]),
                    ("EV Charger 1", 'ocpp16', 'none', None, [(1, 6, 'EV')]),
                    ],
                }, {
                'code': 'A02', 'name': "Binjiang Hydrogen Station",
                'street': "300 Jiangnan Avenue", 'city': "Hangzhou",
                'latitude': '30.208700', 'longitude': '120.210400',
                'phone': '+86 571 8700 1002', 'always_open': False,
                'energies': ['petrol', 'hydrogen'],
                'tanks': ['92', 'H2'],
                'dispensers': [
                    ("Island 1", 'dart', 'serial', 0x50, [(1, 1, '92')]),
                    ("H2 Dispenser", 'dart', 'serial', 0x51,
                        [(1, 2, 'H2')]),
                    ],
                'station_prices': {'H2': '33.8000'},
                }],
        'users': [
            ('lanshan.admin', "Lanshan Administrator",
                'role_operator_admin', [], None),
            ('lanshan.a01.manager', "A01 Station Manager",
                'role_station_manager', ['A01'], None),
            ('lanshan.a01.attendant', "Zhang Wei",
                'role_attendant', ['A01'], "Zhang Wei"),
            ('lanshan.accountant', "Lanshan Accountant",
                'role_accountant', [], None),
            ],
        }, {
        'key': 'heping',
        'name': "Heping Fuel",
        'prices': {'92': '7.6100', '95': '8.1200', '0D': '7.2900'},
        'employees': ["Wang Fang"],
        'stations': [{
                'code': 'B01', 'name': "Harbour Road Station",
                'street': "9 Harbour Road", 'city': "Ningbo",
                'latitude': '29.868300', 'longitude': '121.544000',
                'phone': '+86 574 8800 2001', 'always_open': True,
                'energies': ['petrol', 'diesel'],
                'tanks': ['92', '95', '0D'],
                'dispensers': [
                    ("Island 1", 'dart', 'tcp', 0x50,
                        [(1, 1, '92'), (2, 2, '95'), (3, 3, '0D')]),
                    ],
                }],
        'users': [
            ('heping.admin', "Heping Administrator",
                'role_operator_admin', [], None),
            ('heping.b01.attendant', "Wang Fang",
                'role_attendant', ['B01'], "Wang Fang"),
            ],
        }]


XML_MODELS = {
    'uom': ['product.uom'],
    'role': ['res.role'],
    }


def ref(xml_id):
    "Return the record of a module xml id"
    ModelData = Model.get('ir.model.data')
    module, fs_id = xml_id.split('.')
    model, = XML_MODELS[fs_id.split('_')[0]]
    return Model.get(model)(ModelData.get_id(
            module, fs_id, pconfig.get_config().context))


def first(model, domain):
    records = Model.get(model).find(domain, limit=1)
    return records[0] if records else None


def load_currency():
    Currency = Model.get('currency.currency')
    currency = first('currency.currency', [('code', '=', 'CNY')])
    if not currency:
        currency = Currency(
            name="Chinese Yuan", code='CNY', symbol='¥',
            numeric_code='156', rounding=Decimal('0.01'), digits=2)
        currency.save()
    return currency


def load_grades():
    Template = Model.get('product.template')
    grades = {}
    for code, name, energy, uom, list_price in GRADES:
        template = first('product.template', [('code', '=', 'FUEL-' + code)])
        if not template:
            unit = ref(uom)
            template = Template(
                name=name, code='FUEL-' + code, type='goods',
                fuel_energy=energy, default_uom=unit,
                list_price=Decimal(list_price))
            template.save()
        grades[code] = template.products[0]
    return grades


def load_company(operator, currency):
    Party = Model.get('party.party')
    Company = Model.get('company.company')
    company = first('company.company', [('party.name', '=', operator['name'])])
    if not company:
        party = Party(name=operator['name'])
        party.save()
        company = Company(party=party, currency=currency, timezone=TIMEZONE)
        company.save()
    return company


def load_admin(companies, password):
    User = Model.get('res.user')
    admin, = User.find([('login', '=', 'admin')])
    for company in companies:
        if company not in admin.companies:
            admin.companies.append(Model.get('company.company')(company.id))
    admin.company = Model.get('company.company')(companies[0].id)
    admin.company_filter = 'all'
    if password:
        admin.password = password
    admin.save()
    pconfig.get_config()._context = User.get_preferences(
        True, pconfig.get_config().context)


def load_warehouse(code):
    Location = Model.get('stock.location')
    warehouse = first('stock.location', [
            ('code', '=', code), ('type', '=', 'warehouse')])
    if not warehouse:
        kinds = {}
        for kind, type_ in [
                ('input', 'storage'), ('output', 'storage'),
                ('storage', 'storage')]:
            kinds[kind] = Location(
                name=f"{code} {kind.title()}",
                code=f'{code}-{kind[:3].upper()}', type=type_)
            kinds[kind].save()
        warehouse = Location(
            name=f"{code} Forecourt", code=code, type='warehouse',
            input_location=kinds['input'], output_location=kinds['output'],
            storage_location=kinds['storage'])
        warehouse.save()
    return warehouse


def load_station(company, spec, grades):
    Station = Model.get('fuel.station')
    Location = Model.get('stock.location')
    Tank = Model.get('fuel.station.tank')
    Dispenser = Model.get('fuel.station.dispenser')
    Nozzle = Model.get('fuel.station.nozzle')
    station = first('fuel.station', [
            ('company', '=', company.id), ('code', '=', spec['code'])])
    if station:
        return station
    warehouse = load_warehouse(company.party.name[:3].upper() + spec['code'])
    station = Station(
        company=company, code=spec['code'], name=spec['name'],
        street=spec['street'], city=spec['city'],
        latitude=Decimal(spec['latitude']),
        longitude=Decimal(spec['longitude']),
        timezone=TIMEZONE, phone=spec['phone'],
        always_open=spec['always_open'], energies=spec['energies'],
        warehouse=warehouse)
    if not spec['always_open']:
        for weekday in range(7):
            station.opening_hours.new(
                weekday=str(weekday),
                opening=dt.time(6, 0), closing=dt.time(22, 0))
    station.save()
    tanks = {}
    for code in spec['tanks']:
        location = Location(
            name=f"{spec['code']} Tank {code}",
            code=f"{warehouse.code}-T{code}", type='storage',
            parent=warehouse.storage_location)
        location.save()
        capacity = '30000' if grades[code].fuel_energy in {
            'petrol', 'diesel'} else '2000'
        tanks[code] = Tank(
            station=station, name=f"Tank {code}", grade=grades[code],
            capacity=Decimal(capacity), location=location)
        tanks[code].save()
    for name, protocol, connection, address, nozzles in spec['dispensers']:
        dispenser = Dispenser(
            station=station, name=name, brand="Wayne"
            if protocol == 'dart' else "Star Charge",
            protocol=protocol, connection=connection)
        if connection == 'serial':
            dispenser.serial_port = '/dev/ttyUSB0'
        elif connection in {'tcp', 'udp'}:
            dispenser.host = '127.0.0.1'
            dispenser.port = 5001
        if address is not None:
            dispenser.bus_address = address
        dispenser.save()
        for number, station_number, code in nozzles:
            Nozzle(
                station=station, dispenser=dispenser, number=number,
                station_number=station_number, grade=grades[code],
                tank=tanks.get(code)).save()
    station.reload()
    station.click('open')
    return station


def load_price(company, name, prices, grades, station=None):
    "Create, approve and activate a price set once"
    Price = Model.get('fuel.station.price')
    if first('fuel.station.price', [
                ('company', '=', company.id), ('name', '=', name)]):
        return None
    price = Price(
        company=company, name=name,
        scope='station' if station else 'operator', station=station,
        # approval refuses past effective times, so take effect shortly
        effective_date=dt.datetime.now() + dt.timedelta(seconds=2))
    for code, unit_price in prices.items():
        price.lines.new(grade=grades[code], unit_price=Decimal(unit_price))
    price.save()
    price.click('approve')
    return price


def load_employees(company, names):
    Party = Model.get('party.party')
    Employee = Model.get('company.employee')
    employees = {}
    for name in names:
        employee = first('company.employee', [
                ('company', '=', company.id), ('party.name', '=', name)])
        if not employee:
            party = Party(name=name)
            party.save()
            employee = Employee(party=party, company=company)
            employee.save()
        employees[name] = employee
    return employees


def load_users(company, specs, stations, employees, password):
    User = Model.get('res.user')
    for login, name, role, station_codes, employee in specs:
        if first('res.user', [('login', '=', login)]):
            continue
        user = User(login=login, name=name, password=password)
        user.companies.append(Model.get('company.company')(company.id))
        user.company = Model.get('company.company')(company.id)
        if employee:
            user.employees.append(employees[employee])
            user.employee = employees[employee]
        for code in station_codes:
            user.stations.append(Model.get('fuel.station')(stations[code].id))
        user.roles.new(role=ref('fuel_station.' + role))
        user.save()


def load_shift(station, employees):
    Shift = Model.get('fuel.station.shift')
    if first('fuel.station.shift', [('station', '=', station.id)]):
        return
    shift = Shift(station=station)
    for employee in employees:
        shift.attendants.append(Model.get('company.employee')(employee.id))
    shift.save()
    shift.click('fill_readings')
    shift.reload()
    for i, reading in enumerate(shift.readings, 1):
        reading.opening_volume = Decimal('152340.125') * i
        reading.opening_amount = Decimal('1154739.15') * i
    shift.save()
    shift.click('open')


def mark_configured():
    Item = Model.get('ir.module.config_wizard.item')
    items = Item.find([('state', '!=', 'done')])
    for item in items:
        item.state = 'done'
    Item.save(items)


def load(password):
    currency = load_currency()
    companies = [load_company(o, currency) for o in OPERATORS]
    load_admin(companies, password)
    grades = load_grades()
    activated = []
    for operator, company in zip(OPERATORS, companies, strict=True):
        stations = {
            s['code']: load_station(company, s, grades)
            for s in operator['stations']}
        employees = load_employees(company, operator['employees'])
        load_users(
            company, operator['users'], stations, employees, password)
        activated.append(load_price(
                company, "Opening prices", operator['prices'], grades))
        for spec in operator['stations']:
            if spec.get('station_prices'):
                activated.append(load_price(
                        company, f"{spec['code']} local prices",
                        spec['station_prices'], grades,
                        station=stations[spec['code']]))
        first_station = stations[operator['stations'][0]['code']]
        load_shift(first_station, list(employees.values())[:2])
    if any(activated):
        # let the effective time pass, then do what the cron does
        time.sleep(2.5)
        Model.get('fuel.station.price').activate_due(
            pconfig.get_config().context)
    mark_configured()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--database', required=True)
    parser.add_argument('--config', default=None)
    parser.add_argument('--admin-password-file', default=None)
    options = parser.parse_args(argv)
    password = None
    if options.admin_password_file:
        with open(options.admin_password_file) as fp:
            password = fp.read().strip()
    pconfig.set_trytond(options.database, config_file=options.config)
    load(password)


if __name__ == '__main__':
    main()
