# This file is part of fuelpay.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""Load the fuelpay demo data into a database, idempotently.

Every record is looked up by its natural key before it is created, so
running the loader again (``./fuel up`` does it at every start) never
duplicates anything.  Two operators make tenant isolation visible:
``lanshan`` (Lanshan Energy, two stations) and ``heping`` (Heping Fuel,
one station).  Demo users share the admin password.  Each operator gets
the accounting the point of sale needs (chart of accounts, this year's
fiscal year, VAT 13% included in the pump prices), a point of sale per
station, a payment method of every kind and a few members with wallets.

    python -m tools.demo --database fuelpay --config trytond.conf \
        --admin-password-file var/admin-password
"""
import argparse
import datetime as dt
import time
from decimal import Decimal
from pathlib import Path

from proteus import Model, Wizard
from proteus import config as pconfig

from iot_box.config import Secret
from iot_box.uplink import write_key

TIMEZONE = 'Asia/Shanghai'
# China's VAT rate on refined oil, gas and electricity sold at the pump
VAT_RATE = Decimal('0.13')
MEMBER_PIN = '123456'

GRADES = [
    # code, name, energy, uom xml id, list price
    ('92', "92# Petrol", 'petrol', 'fuel_station.uom_fuel_litre', '7.5800'),
    ('95', "95# Petrol", 'petrol', 'fuel_station.uom_fuel_litre', '8.0900'),
    ('0D', "0# Diesel", 'diesel', 'fuel_station.uom_fuel_litre', '7.2600'),
    ('CNG', "CNG", 'cng', 'fuel_station.uom_fuel_kilogram', '4.5000'),
    ('H2', "Hydrogen 70 MPa", 'hydrogen', 'fuel_station.uom_fuel_kilogram',
        '35.0000'),
    ('EV', "EV Charging", 'electricity', 'fuel_station.uom_fuel_kwh',
        '1.2000'),
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
        # name, card number, WeChat reference of the opening recharge
        'members': [
            ("Liu Yang", 'LS-0001', 'DEMO-WX-1'),
            ("Zhou Min", 'LS-0002', 'DEMO-WX-2'),
            ],
        'corporate': {
            'name': "Lanshan Logistics", 'number': 'LS-CORP-01',
            'credit_limit': '2000', 'day_limit': '800',
            # card number, plate
            'cards': [('LS-C-0001', '浙A12345'), ('LS-C-0002', '浙A67890')],
            },
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
        'members': [
            ("Sun Hao", 'HP-0001', 'DEMO-WX-3'),
            ],
        }]

# The station box of the simulated station `./fuel up` runs: A01's two DART
# islands (four nozzles) behind one UDP serial-server gateway, where the
# pump simulator answers.  Device identifiers are the box's dispenser names.
DEMO_BOX = {
    'operator': 'lanshan',
    'station': 'A01',
    'identifier': 'A01-BOX-1',
    'login': 'lanshan.a01.box',
    'name': "Box of West Lake Station",
    # dispenser name on the station -> the box's device identifier
    'dispensers': {"Island 1": 'island-1', "Island 2": 'island-2'},
    # the lane camera of Island 1: a folder camera (JPEGs dropped into
    # camera_dir, relative to box.toml) whose zone feeds the island's
    # nozzles on the server (fuel_plate camera zone) and on the box (its
    # offline list)
    'camera': {
        'identifier': 'cam-island-1', 'zone': 'island-1',
        'dispenser': "Island 1", 'nozzles': [1, 2]},
    }
CAMERA_DIR = 'camera'
# The frictionless pay demo (fuel_plate): Liu Yang's car, enrolled at the
# counter on her funded card LS-0001.  Not 浙A12345: tests/test_plate_rpc.py
# registers that plate for Lanshan itself.
DEMO_VEHICLE = {
    'plate': '浙A66888', 'colour': 'blue', 'owner': "Liu Yang",
    'card': 'LS-0001', 'limit': '300.00', 'vehicle_type': 'car',
    }
# The DART islands' gateway in the demo data (load_station) and the box's
# local status page
DEMO_GATEWAY = ('127.0.0.1', 5001)
DEMO_STATUS_LISTEN = '127.0.0.1:8470'
# What the box may sell on its own when it cannot reach the server
DEMO_FALLBACK = {'max_amount': '500.00', 'max_volume': '200.000'}

# fuel kind, name; the kinds are fuel_payment's METHOD_KINDS
METHODS = [
    ('cash', "Cash"),
    ('wallet', "Member Wallet"),
    ('wechat', "WeChat Pay"),
    ('alipay', "Alipay"),
    ('unionpay', "UnionPay"),
    ('jd', "JD Pay"),
    ('face', "Face Pay"),
    ('plate', "Frictionless (Plate)"),
    ('corporate', "Corporate Account"),
    ]
# where the money of each kind is booked: the till, the deposits owed to
# wallet holders, or what the payment hosts owe until they pay out
METHOD_ACCOUNTS = {'cash': 'cash', 'wallet': 'deposits',
    'corporate': 'deposits'}
# accounts of the universal chart (account.account_template_root_en)
CHART_TEMPLATE = 'account.account_template_root_en'
CASH_CODE = '1.1.1'
TAX_CODE = '2.2.3'  # Accrued Taxes (Other Than Payroll)
OTHER_LIABILITY_CODE = '2.2.4'  # Other (Non-Financial) Liabilities
GOODS_REVENUE_CODE = '4.1.1'
SERVICES_REVENUE_CODE = '4.1.2'
DISCOUNT_CODE = '4.3.2'  # Consideration Paid (Payable) To Customers
# code, name, template of the type and parent
EXTRA_ACCOUNTS = {
    'deposits': ('2.2.9', "Customer Deposits", OTHER_LIABILITY_CODE),
    'clearing': ('1.1.9', "Payment Hosts Clearing", CASH_CODE),
    }


XML_MODELS = {
    'uom': 'product.uom',
    'role': 'res.role',
    'sequence': 'ir.sequence.type',
    'location': 'stock.location',
    'journal': 'account.journal',
    'account': 'account.account.template',
    }


def ref(xml_id):
    "Return the record of a module xml id"
    ModelData = Model.get('ir.model.data')
    module, fs_id = xml_id.split('.')
    model = XML_MODELS[fs_id.split('_')[0]]
    return Model.get(model)(ModelData.get_id(
            module, fs_id, pconfig.get_config().context))


def company_context(company):
    "Work as the operator company: company-dependent values and defaults"
    return pconfig.get_config().set_context(company=company.id)


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


def load_grades(category):
    "Create the grades, salable by their unit and booked through category"
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
        # also for the grades of a database loaded before fuel_payment
        if (not template.salable or template.sale_uom != template.default_uom
                or template.account_category != category):
            template.salable = True
            template.sale_uom = template.default_uom
            template.account_category = category
            template.save()
        grades[code] = template.products[0]
    return grades


def load_service(code, name, category):
    "Return the service product of code, sold by the unit"
    Template = Model.get('product.template')
    template = first('product.template', [('code', '=', code)])
    if not template:
        unit = ref('product.uom_unit')
        template = Template(
            name=name, code=code, type='service', salable=True,
            default_uom=unit, sale_uom=unit, list_price=Decimal(0),
            account_category=category)
        template.save()
    return template.products[0]


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


def account_of(company, code):
    account, = Model.get('account.account').find([
            ('company', '=', company.id), ('code', '=', code),
            ('closed', '!=', True)], limit=1)
    return account


def create_chart(company):
    "Run the chart of accounts wizard on the universal chart for company"
    wizard = Wizard('account.create_chart')
    wizard.execute('account')
    wizard.form.account_template = ref(CHART_TEMPLATE)
    wizard.form.company = company
    wizard.execute('create_account')
    # no default accounts for product categories: the demo's categories
    # name theirs
    for name, kind in [
            ('account_receivable', 'receivable'),
            ('account_payable', 'payable')]:
        account, = Model.get('account.account').find([
                ('company', '=', company.id), (f'type.{kind}', '=', True),
                ('closed', '!=', True)], limit=1)
        setattr(wizard.form, name, account)
    wizard.execute('create_properties')


def load_fiscalyear(company):
    "Create this year's fiscal year of company with monthly periods"
    FiscalYear = Model.get('account.fiscalyear')
    Sequence = Model.get('ir.sequence.strict')
    today = dt.date.today()
    if first('account.fiscalyear', [
                ('company', '=', company.id),
                ('start_date', '<=', today), ('end_date', '>=', today)]):
        return
    name = str(today.year)
    fiscalyear = FiscalYear(
        name=name, company=company,
        start_date=dt.date(today.year, 1, 1),
        end_date=dt.date(today.year, 12, 31))
    fiscalyear.move_sequence = Sequence(
        name=f"Account Moves {name}", company=company,
        sequence_type=ref('account.sequence_type_account_move'))
    fiscalyear.move_sequence.save()
    invoices = Sequence(
        name=f"Invoices {name}", company=company,
        sequence_type=ref('account_invoice.sequence_type_account_invoice'))
    invoices.save()
    sequences, = fiscalyear.invoice_sequences
    for kind in ['out_invoice', 'in_invoice', 'out_credit_note',
            'in_credit_note']:
        setattr(sequences, f'{kind}_sequence', invoices)
    fiscalyear.save()
    fiscalyear.click('create_period')


def load_accounting(company):
    """Create the chart of accounts, the fiscal year, VAT and the accounts
    of the payment methods of company; return the accounts by use and
    the VAT"""
    Account = Model.get('account.account')
    Tax = Model.get('account.tax')
    with company_context(company):
        if not first('account.account', [('company', '=', company.id)]):
            create_chart(company)
        load_fiscalyear(company)
        accounts = {
            'cash': account_of(company, CASH_CODE),
            'tax': account_of(company, TAX_CODE),
            'revenue': account_of(company, GOODS_REVENUE_CODE),
            'services': account_of(company, SERVICES_REVENUE_CODE),
            'discount': account_of(company, DISCOUNT_CODE),
            }
        for key, (code, name, like) in EXTRA_ACCOUNTS.items():
            account = first('account.account', [
                    ('company', '=', company.id), ('code', '=', code)])
            if not account:
                model = account_of(company, like)
                account = Account(
                    company=company, code=code, name=name,
                    type=model.type, parent=model.parent)
                account.save()
            accounts[key] = account
        vat = first('account.tax', [
                ('company', '=', company.id), ('rate', '=', VAT_RATE),
                ('type', '=', 'percentage'), ('parent', '=', None)])
        if not vat:
            vat = Tax(
                company=company, name="VAT 13%", description="VAT 13%",
                type='percentage', rate=VAT_RATE,
                invoice_account=accounts['tax'],
                credit_note_account=accounts['tax'])
            vat.save()
    return accounts, vat


def load_category(name, company_accounts, taxed):
    """Return the accounting category of name booking on the account of
    each company ([(company, account, VAT)]), with its VAT if taxed"""
    Category = Model.get('product.category')
    category = first('product.category', [
            ('name', '=', name), ('accounting', '=', True)])
    if not category:
        category = Category(name=name, accounting=True)
        category.save()
    for company, account, _ in company_accounts:
        # the revenue account is a value per company
        with company_context(company):
            category = Category(category.id)
            if category.account_revenue != account:
                # its on_change puts the account's taxes instead of the
                # category's: they are set below
                category.account_revenue = account
                category.save()
    category = Category(category.id)
    if taxed:
        missing = [
            vat for _, _, vat in company_accounts
            if vat not in category.customer_taxes]
        if missing:
            category.customer_taxes.extend(
                Model.get('account.tax')(v.id) for v in missing)
            category.save()
    return category


def load_point(company, station):
    "Create the point of sale of station and link them"
    Point = Model.get('sale.point')
    Sequence = Model.get('ir.sequence.strict')
    station = Model.get('fuel.station')(station.id)
    if station.point:
        return station.point
    name = f"POS {station.code} {station.name}"
    with company_context(company):
        point = first('sale.point', [
                ('company', '=', company.id), ('name', '=', name)])
        if not point:
            sequence = Sequence(
                name=name, company=company,
                sequence_type=ref('sale_point.sequence_type_sale'))
            sequence.save()
            journal, = Model.get('account.journal').find(
                [('type', '=', 'revenue')], limit=1)
            storage = station.warehouse.storage_location
            point = Point(
                name=name, company=company, tax_included=True,
                journal=journal, sequence=sequence,
                storage_location=storage, return_location=storage,
                customer_location=ref('stock.location_customer'))
            point.save()
    station.point = point
    station.save()
    return point


def load_methods(company, accounts):
    "Create a payment method of every fuel kind; return them by kind"
    Method = Model.get('sale.point.payment.method')
    methods = {}
    with company_context(company):
        for kind, name in METHODS:
            method = first('sale.point.payment.method', [
                    ('company', '=', company.id), ('fuel_kind', '=', kind)])
            if not method:
                method = Method(
                    company=company, name=name, fuel_kind=kind,
                    cash=kind == 'cash',
                    account=accounts[METHOD_ACCOUNTS.get(kind, 'clearing')])
                method.save()
            methods[kind] = method
    return methods


def load_configuration(discount, recharge):
    Configuration = Model.get('fuel.payment.configuration')
    configuration = Configuration(1)
    if (configuration.discount_product != discount
            or configuration.recharge_product != recharge):
        configuration.discount_product = discount
        configuration.recharge_product = recharge
        configuration.save()


def set_pins(cards, pin):
    """Set the PIN of cards through Card.set_pin, which is no RPC: in a
    transaction of the loader's own, as the administrator"""
    from trytond.pool import Pool
    from trytond.transaction import Transaction
    config = pconfig.get_config()
    with Transaction().start(
            config.database_name, config.user,
            context=config.context) as transaction:
        Card = Pool().get('fuel.payment.wallet.card')
        for card in Card.browse([c.id for c in cards]):
            card.set_pin(pin)
        transaction.commit()


def load_wallet(company, party_name, kind, number, credit_limit=0):
    "Return the wallet of the party of party_name, created when missing"
    Party = Model.get('party.party')
    Wallet = Model.get('fuel.payment.wallet')
    with company_context(company):
        wallet = first('fuel.payment.wallet', [
                ('company', '=', company.id), ('number', '=', number)])
        if not wallet:
            party = first('party.party', [('name', '=', party_name)])
            if not party:
                party = Party(name=party_name)
                party.save()
            wallet = Wallet(
                company=company, party=party, kind=kind, number=number,
                credit_limit=Decimal(credit_limit))
            wallet.save()
    return wallet


def load_card(company, wallet, number, holder=None, plate=None,
        day_limit=None):
    Card = Model.get('fuel.payment.wallet.card')
    with company_context(company):
        card = first('fuel.payment.wallet.card', [
                ('company', '=', company.id), ('number', '=', number)])
        if not card:
            card = Card(
                wallet=wallet, number=number, holder=holder, plate=plate,
                day_limit=Decimal(day_limit) if day_limit else None)
            card.save()
    return card


def recharge(company, wallet, amount, method, station, reference):
    "Recharge wallet once through the recharge wizard"
    with company_context(company):
        if first('fuel.payment.wallet.move', [
                    ('wallet', '=', wallet.id), ('kind', '=', 'recharge'),
                    ('reference', '=', reference)]):
            return
        wizard = Wizard('fuel.payment.wallet.recharge', [wallet])
        wizard.form.station = Model.get('fuel.station')(station.id)
        wizard.form.method = method
        wizard.form.amount = Decimal(amount)
        wizard.form.reference = reference
        wizard.execute('recharge')


def load_members(company, operator, station, methods):
    """Create the members of operator, each with a personal wallet and a
    card with the demo PIN recharged 500 by WeChat, and its corporate
    wallet with a sub-card per vehicle"""
    cards = []
    for name, number, reference in operator.get('members', []):
        wallet = load_wallet(company, name, 'personal', number)
        cards.append(load_card(company, wallet, number, holder=name))
        recharge(company, wallet, '500', methods['wechat'], station,
            reference)
    corporate = operator.get('corporate')
    if corporate:
        wallet = load_wallet(
            company, corporate['name'], 'corporate', corporate['number'],
            credit_limit=corporate['credit_limit'])
        for number, plate in corporate['cards']:
            cards.append(load_card(
                    company, wallet, number, holder=corporate['name'],
                    plate=plate, day_limit=corporate['day_limit']))
    without_pin = [c for c in cards if not c.has_pin]
    if without_pin:
        set_pins(without_pin, MEMBER_PIN)


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


def load_box(station, spec):
    """Register, pair and activate the station's box once; return it with
    its validated key

    The key is requested for the box's technical user the way the box
    does it (a res.user.application in state requested) and validated by
    the box's Pair button, as an operator administrator would."""
    Box = Model.get('fuel.device.box')
    User = Model.get('res.user')
    UserApplication = Model.get('res.user.application')
    box = first('fuel.device.box', [('identifier', '=', spec['identifier'])])
    if not box:
        user = first('res.user', [('login', '=', spec['login'])])
        if not user:
            user = User(login=spec['login'], name=spec['name'])
            user.save()
        box = Box(station=station, identifier=spec['identifier'], user=user)
        box.save()
    if box.state == 'pending':
        UserApplication(user=box.user, application='fuel_device').save()
        box.click('pair')
    if box.state == 'paired':
        dispensers = {d.name: d for d in station.dispensers}
        for name, identifier in spec['dispensers'].items():
            dispenser = dispensers[name]
            box.devices.new(
                kind='dispenser', identifier=identifier, protocol='dart',
                connection='udp://%s:%s' % (dispenser.host, dispenser.port),
                dispenser=dispenser)
        box.save()
        box.click('activate')
    application, = UserApplication.find([
            ('user', '=', box.user.id),
            ('application', '=', 'fuel_device'),
            ('state', '=', 'validated'),
            ])
    return box, application.key


def load_camera(box, station, spec):
    """Give the box its lane camera and the camera its island zone, on
    the nozzles of the island it watches, once"""
    Device = Model.get('fuel.device.device')
    Zone = Model.get('fuel.plate.camera.zone')
    Nozzle = Model.get('fuel.station.nozzle')
    camera = spec['camera']
    device = first('fuel.device.device', [
            ('box', '=', box.id), ('identifier', '=', camera['identifier'])])
    if not device:
        device = Device(
            box=Model.get('fuel.device.box')(box.id), kind='camera',
            identifier=camera['identifier'])
        device.save()
    zone = first('fuel.plate.camera.zone', [
            ('camera', '=', device.id), ('code', '=', camera['zone'])])
    if not zone:
        zone = Zone(
            station=Model.get('fuel.station')(station.id), camera=device,
            code=camera['zone'], kind='island')
        zone.save()
    nozzles = [
        n for n in Nozzle.find([
                ('station', '=', station.id),
                ('dispenser.name', '=', camera['dispenser']),
                ])
        if n.plate_zone != zone]
    for nozzle in nozzles:
        nozzle.plate_zone = zone
    Nozzle.save(nozzles)
    return zone


def load_vehicle(company, spec):
    """Enrol the demo vehicle for frictionless pay on its owner's card
    with an active agreement, once"""
    Vehicle = Model.get('fuel.plate.vehicle')
    with company_context(company):
        vehicle = first('fuel.plate.vehicle', [
                ('company', '=', company.id), ('plate', '=', spec['plate']),
                ('colour', '=', spec['colour'])])
        card = first('fuel.payment.wallet.card', [
                ('company', '=', company.id), ('number', '=', spec['card'])])
        if not vehicle:
            vehicle = Vehicle(
                company=company, plate=spec['plate'], colour=spec['colour'],
                owner=card.wallet.party, vehicle_type=spec['vehicle_type'])
            vehicle.agreements.new(
                party=card.wallet.party, card=card,
                limit=Decimal(spec['limit']), channel='counter',
                default=True)
            vehicle.save()
        agreement = vehicle.agreements[0]
        if agreement.state == 'draft':
            agreement.click('enable')
    return vehicle


def box_config(spec, server_url, database, gateway=DEMO_GATEWAY,
        status_listen=DEMO_STATUS_LISTEN, camera_dir=None):
    """The TOML configuration of the demo box (iot_box.config); with
    camera_dir, also its folder camera (the folder relative to box.toml
    or absolute)"""
    lines = [
        '# Written by tools/demo.py for the simulated station of ./fuel up',
        f'identifier = "{spec["identifier"]}"',
        f'station_code = "{spec["station"]}"',
        'outbox_path = "outbox.sqlite"',
        f'status_listen = "{status_listen}"',
        '',
        '[server]',
        f'url = "{server_url}"',
        f'database = "{database}"',
        'key_file = "box.key"',
        '',
        '[fallback]',
        'mode = "attended_postpay"',
        f'max_amount = "{DEMO_FALLBACK["max_amount"]}"',
        f'max_volume = "{DEMO_FALLBACK["max_volume"]}"',
        ]
    host, port = gateway
    nozzle = 0
    for address, identifier in enumerate(spec['dispensers'].values(), 0x50):
        lines += [
            '',
            '[[dispensers]]',
            f'name = "{identifier}"',
            'protocol = "dart"',
            'connection = "udp"',
            f'host = "{host}"',
            f'port = {port}',
            f'address = 0x{address:X}',
            'nozzles = [',
            ]
        for number in (1, 2):
            nozzle += 1
            lines.append(
                f'    {{number = {number}, station_number = {nozzle}}},')
        lines.append(']')
    camera = spec.get('camera')
    if camera and camera_dir is not None:
        nozzles = ', '.join(str(n) for n in camera['nozzles'])
        lines += [
            '',
            '[lpr]',
            'min_confidence = 0.5',
            '',
            '[[lpr.cameras]]',
            f'id = "{camera["identifier"]}"',
            'source = "folder"',
            f'path = "{camera_dir}"',
            'interval = 0.5',
            f'zones = [{{code = "{camera["zone"]}", kind = "island", '
            f'nozzles = [{nozzles}]}}]',
            ]
    return '\n'.join(lines) + '\n'


def write_box_files(directory, config, key):
    """Write box.toml and box.key (mode 0600, never readable by others)
    into directory"""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    # as `python -m iot_box pair` writes it
    write_key(directory / 'box.key', Secret(key), force=True)
    (directory / 'box.toml').write_text(config)
    # the folder the demo camera drops its frames into (box_config)
    (directory / CAMERA_DIR).mkdir(exist_ok=True)


def mark_configured():
    Item = Model.get('ir.module.config_wizard.item')
    items = Item.find([('state', '!=', 'done')])
    for item in items:
        item.state = 'done'
    Item.save(items)


def load(password, box=None):
    """Load the demo data; box: (directory, server URL, database) where to
    write the demo box's configuration and key, or None"""
    currency = load_currency()
    companies = [load_company(o, currency) for o in OPERATORS]
    load_admin(companies, password)
    accounting = [load_accounting(c) for c in companies]

    def category(name, use, taxed):
        return load_category(name, [
                (c, accounts[use], vat)
                for c, (accounts, vat) in zip(
                    companies, accounting, strict=True)], taxed)
    grades = load_grades(category("Fuel", 'revenue', True))
    load_configuration(
        load_service('FUEL-DISCOUNT', "Fuel Discount",
            category("Discounts", 'discount', True)),
        # booked on the customer deposits by fuel_payment, free of VAT
        # until the fuel is sold
        load_service('FUEL-RECHARGE', "Wallet Recharge",
            category("Wallet Recharges", 'services', False)))
    activated = []
    for operator, company, (accounts, _) in zip(
            OPERATORS, companies, accounting, strict=True):
        stations = {
            s['code']: load_station(company, s, grades)
            for s in operator['stations']}
        for station in stations.values():
            load_point(company, station)
        methods = load_methods(company, accounts)
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
        load_members(company, operator, first_station, methods)
        if operator['key'] == DEMO_BOX['operator']:
            demo_box = load_box(stations[DEMO_BOX['station']], DEMO_BOX)
            load_camera(demo_box[0], stations[DEMO_BOX['station']], DEMO_BOX)
            load_vehicle(company, DEMO_VEHICLE)
    if any(activated):
        # let the effective time pass, then do what the cron does
        time.sleep(2.5)
        Model.get('fuel.station.price').activate_due(
            pconfig.get_config().context)
    mark_configured()
    if box:
        directory, server_url, database = box
        _, key = demo_box
        write_box_files(
            directory, box_config(
                DEMO_BOX, server_url, database, camera_dir=CAMERA_DIR),
            key)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--database', required=True)
    parser.add_argument('--config', default=None)
    parser.add_argument('--admin-password-file', default=None)
    parser.add_argument('--box-dir', default=None,
        help="write the demo box's box.toml and box.key there")
    parser.add_argument('--server-url', default='http://127.0.0.1:8000',
        help="the server the demo box calls (with --box-dir)")
    options = parser.parse_args(argv)
    password = None
    if options.admin_password_file:
        with open(options.admin_password_file) as fp:
            password = fp.read().strip()
    pconfig.set_trytond(options.database, config_file=options.config)
    box = None
    if options.box_dir:
        box = (options.box_dir, options.server_url, options.database)
    load(password, box=box)


if __name__ == '__main__':
    main()
