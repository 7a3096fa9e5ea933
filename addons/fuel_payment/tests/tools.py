# This file is part of fuelpay.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""Helpers shared by the fuel_payment tests: an operator with accounts, a
fiscal year, a station with a point of sale, a priced nozzle, every
payment method and an open shift"""
import datetime as dt
import uuid
from decimal import Decimal

from trytond.modules.account.tests import create_chart, get_fiscalyear
from trytond.pool import Pool
from trytond.tests.test_tryton import (
    DB_NAME,
    TestCase,
    activate_module,
    drop_db,
)
from trytond.transaction import Transaction, TransactionError

from addons.fuel_station.tests.test_module import create_station
from addons.fuel_station.tests.tools import TEST_MODULES

METHOD_NAMES = {
    'cash': "Cash",
    'wallet': "Member Wallet",
    'wechat': "WeChat Pay",
    'alipay': "Alipay",
    'unionpay': "UnionPay",
    'jd': "JD Pay",
    'face': "Face Pay",
    'plate': "Frictionless",
    'corporate': "Corporate Account",
    }


class PaymentDatabaseTestCase(TestCase):
    """A TestCase on a database where TEST_MODULES are active, without
    ModuleTestCase's generic checks (test_module.py runs them)"""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        drop_db()
        activate_module(TEST_MODULES)

    @classmethod
    def tearDownClass(cls):
        super().tearDownClass()
        drop_db()


def account(company, code):
    pool = Pool()
    Account = pool.get('account.account')
    result, = Account.search([
            ('company', '=', company.id), ('code', '=', code)], limit=1)
    return result


def create_accounting(company):
    """Create the chart of accounts and this year's fiscal year with its
    periods for company; return the accounts by use"""
    pool = Pool()
    Account = pool.get('account.account')
    FiscalYear = pool.get('account.fiscalyear')
    create_chart(company)
    fiscalyear = get_fiscalyear(company)
    fiscalyear.save()
    FiscalYear.create_period([fiscalyear])
    revenue, = Account.search([
            ('company', '=', company.id), ('type.revenue', '=', True),
            ('closed', '!=', True)],
        limit=1)
    cash = account(company, '1.1.1')
    accounts = {'revenue': revenue, 'cash': cash}
    for kind in ['terminal', 'deposits', 'variance']:
        accounts[kind], = Account.copy([cash], default={
                'name': kind.title(), 'code': None})
    return accounts


def create_grade(name, company, accounts, energy='petrol',
        uom='uom_fuel_litre'):
    "Create a salable grade booked on the revenue account of company"
    pool = Pool()
    Category = pool.get('product.category')
    ModelData = pool.get('ir.model.data')
    Template = pool.get('product.template')
    Product = pool.get('product.product')
    category, = Category.create([{
                'name': f"{name} accounting",
                'accounting': True,
                'account_revenue': accounts['revenue'].id,
                }])
    template, = Template.create([{
                'name': name,
                'type': 'goods',
                'fuel_energy': energy,
                'salable': True,
                'account_category': category.id,
                'default_uom': ModelData.get_id('fuel_station', uom),
                'sale_uom': ModelData.get_id('fuel_station', uom),
                }])
    product, = Product.create([{'template': template.id}])
    return product


def create_service(name, account_):
    pool = Pool()
    Category = pool.get('product.category')
    ModelData = pool.get('ir.model.data')
    Template = pool.get('product.template')
    Product = pool.get('product.product')
    category, = Category.create([{
                'name': f"{name} accounting",
                'accounting': True,
                'account_revenue': account_.id,
                }])
    template, = Template.create([{
                'name': name,
                'type': 'service',
                'salable': True,
                'account_category': category.id,
                'default_uom': ModelData.get_id('product', 'uom_unit'),
                'sale_uom': ModelData.get_id('product', 'uom_unit'),
                }])
    product, = Product.create([{'template': template.id}])
    return product


def create_point(company, station, code):
    pool = Pool()
    Journal = pool.get('account.journal')
    Point = pool.get('sale.point')
    Sequence = pool.get('ir.sequence.strict')
    SequenceType = pool.get('ir.sequence.type')
    Location = pool.get('stock.location')
    ModelData = pool.get('ir.model.data')
    journal, = Journal.search([('type', '=', 'revenue')], limit=1)
    sequence_type = SequenceType(
        ModelData.get_id('sale_point', 'sequence_type_sale'))
    sequence, = Sequence.create([{
                'name': f"POS {code}",
                'sequence_type': sequence_type.id,
                'company': company.id,
                }])
    customer, = Location.search([('type', '=', 'customer')], limit=1)
    point, = Point.create([{
                'name': f"POS {code}",
                'company': company.id,
                'tax_included': True,
                'journal': journal.id,
                'sequence': sequence.id,
                'storage_location': (
                    station.warehouse.storage_location.id),
                'customer_location': customer.id,
                'return_location': station.warehouse.storage_location.id,
                }])
    return point


def create_methods(company, accounts):
    "Create a payment method of each fuel kind; return them by kind"
    pool = Pool()
    Method = pool.get('sale.point.payment.method')
    methods = {}
    for kind, name in METHOD_NAMES.items():
        if kind == 'cash':
            account_ = accounts['cash']
        elif kind in {'wallet', 'corporate'}:
            account_ = accounts['deposits']
        else:
            account_ = accounts['terminal']
        methods[kind], = Method.create([{
                    'company': company.id,
                    'name': name,
                    'account': account_.id,
                    'cash': kind == 'cash',
                    'fuel_kind': kind,
                    }])
    return methods


def create_payment_setup(company, code='S01', unit_price='7.5800'):
    """Set up company with accounts and a station `code` with one petrol
    nozzle (number 1) priced unit_price since an hour ago, a point of
    sale, every payment method and an open shift

    Return a dict: accounts, grade, station, nozzle, tank, point,
    methods, shift, price."""
    pool = Pool()
    Configuration = pool.get('fuel.payment.configuration')
    Dispenser = pool.get('fuel.station.dispenser')
    Location = pool.get('stock.location')
    Nozzle = pool.get('fuel.station.nozzle')
    Price = pool.get('fuel.station.price')
    Shift = pool.get('fuel.station.shift')
    Station = pool.get('fuel.station')
    Tank = pool.get('fuel.station.tank')

    accounts = create_accounting(company)
    grade = create_grade(f"92# {code}", company, accounts)
    station = create_station(company, code)
    dispenser, = Dispenser.create([{
                'station': station.id, 'name': "Island 1",
                'protocol': 'dart', 'connection': 'udp',
                'host': '127.0.0.1', 'port': 5001, 'bus_address': 0x50,
                }])
    location, = Location.create([{
                'name': f"{code} tank 1", 'type': 'storage',
                'parent': station.warehouse.storage_location.id,
                }])
    tank, = Tank.create([{
                'station': station.id, 'name': "Tank 1", 'grade': grade.id,
                'capacity': Decimal(30000), 'location': location.id,
                }])
    nozzle, = Nozzle.create([{
                'station': station.id, 'dispenser': dispenser.id,
                'number': 1, 'station_number': 1, 'grade': grade.id,
                'tank': tank.id,
                }])
    price, = Price.create([{
                'company': company.id,
                'name': f"Prices {code}",
                'effective_date': dt.datetime.now() - dt.timedelta(hours=1),
                'lines': [('create', [{
                                'grade': grade.id,
                                'unit_price': Decimal(unit_price),
                                }])],
                }])
    Price.write([price], {'state': 'active'})
    point = create_point(company, station, code)
    Station.write([station], {'point': point.id})
    methods = create_methods(company, accounts)
    config = Configuration(1)
    if not config.discount_product:
        config.discount_product = create_service(
            "Discount", accounts['revenue'])
        config.recharge_product = create_service(
            "Wallet Recharge", accounts['revenue'])
        config.save()
    shift, = Shift.create([{'station': station.id}])
    Shift.open([shift])
    return {
        'accounts': accounts, 'grade': grade, 'station': station,
        'nozzle': nozzle, 'tank': tank, 'point': point, 'methods': methods,
        'shift': shift, 'price': price,
        }


class SimulatorsMixin:
    """Start the class's gateway simulators before its database set-up
    (the gateways point at them) and stop them after: `simulators` maps
    the class attribute to the callable that makes the simulator. Put it
    first among the bases."""
    simulators = {}

    @classmethod
    def setUpClass(cls):
        started = []
        try:
            for name, make in cls.simulators.items():
                simulator = make()
                simulator.start()
                started.append(simulator)
                setattr(cls, name, simulator)
            super().setUpClass()
        except BaseException:
            for simulator in started:
                simulator.stop()
            raise

    @classmethod
    def tearDownClass(cls):
        for name in cls.simulators:
            getattr(cls, name).stop()
        super().tearDownClass()


def pay_code(order, code, **kwargs):
    "Pay order with the payment code, the queue's submit run at once"
    pool = Pool()
    Payment = pool.get('fuel.payment.gateway.payment')
    payment = Payment(Payment.pay_code(order.id, code, **kwargs))
    Payment.submit([payment], code)
    return Payment(payment.id)


def run_committed(prepare):
    """Run prepare in a transaction of its own and commit it, so that the
    routes' own transactions see its records; retried as with_transaction
    does when a table must be locked first"""
    extras = {}
    while True:
        with Transaction().start(DB_NAME, 1, **extras) as transaction:
            try:
                prepare()
            except TransactionError as error:
                transaction.rollback()
                error.fix(extras)
                continue
            transaction.commit()
        return


def fill(station, quantity, nozzle=1, unit_price=None, amount=None,
        totalizer_start=None, totalizer_end=None, end_date=None, **extra):
    "Return an ingestion item for a fill at station"
    item = {
        'uuid': str(uuid.uuid4()),
        'station': station.id,
        'nozzle': nozzle,
        'end_date': (
            end_date if isinstance(end_date, str)
            else (end_date or dt.datetime.now()).isoformat()),
        'quantity': str(quantity) if quantity is not None else None,
        'unit_price': unit_price,
        'amount': amount,
        'totalizer_start': totalizer_start,
        'totalizer_end': totalizer_end,
        }
    item.update(extra)
    return item


def create_wallet(company, kind='personal', credit_limit=0, name="Li Lei"):
    pool = Pool()
    Party = pool.get('party.party')
    Wallet = pool.get('fuel.payment.wallet')
    party, = Party.create([{'name': name}])
    wallet, = Wallet.create([{
                'company': company.id,
                'party': party.id,
                'kind': kind,
                'credit_limit': Decimal(credit_limit),
                }])
    return wallet


def create_card(wallet, pin=None, **values):
    pool = Pool()
    Card = pool.get('fuel.payment.wallet.card')
    card, = Card.create([dict(values, wallet=wallet.id)])
    if pin:
        card.set_pin(pin)
    return card


def fund(wallet, amount):
    "Credit amount to wallet by an adjustment"
    pool = Pool()
    Move = pool.get('fuel.payment.wallet.move')
    move, = Move.create([{
                'wallet': wallet.id, 'kind': 'adjustment',
                'amount': Decimal(amount), 'uuid': str(uuid.uuid4()),
                }])
    return move


def close_shift(shift):
    "Close the shift with no fuel dispensed on its nozzles' meters"
    pool = Pool()
    Shift = pool.get('fuel.station.shift')
    for reading in shift.readings:
        reading.closing_volume = reading.opening_volume
        reading.closing_amount = reading.opening_amount
        reading.save()
    Shift.close([shift])
