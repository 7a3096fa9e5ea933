# This file is part of fuelpay.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
import datetime as dt
import uuid
from decimal import Decimal

from trytond.exceptions import UserError
from trytond.i18n import gettext
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

from addons.fuel_device.tests.tools import create_box
from addons.fuel_station.tests.test_module import create_user
from addons.fuel_station.tests.tools import (
    FuelDatabaseMixin,
    FuelModuleTestMixin,
)

from .tools import (
    close_shift,
    create_card,
    create_payment_setup,
    create_wallet,
    fill,
)


def message(msg_id, **values):
    return gettext(f'fuel_payment.{msg_id}', **values)


class FuelPaymentTestCase(
        FuelDatabaseMixin, FuelModuleTestMixin, CompanyTestMixin,
        ModuleTestCase):
    "Test Fuel Payment module"
    module = 'fuel_payment'

    def ingest(self, items):
        pool = Pool()
        FuelTransaction = pool.get('fuel.payment.transaction')
        return FuelTransaction.ingest(items)

    def ingest_one(self, item):
        pool = Pool()
        FuelTransaction = pool.get('fuel.payment.transaction')
        result, = self.ingest([item])
        self.assertEqual(result['status'], 'created', msg=result)
        return FuelTransaction(result['id'])

    # ---- ingestion ---------------------------------------------------

    @with_transaction()
    def test_ingest_prices_on_the_platform(self):
        "Test the platform prices a fill from the quantity reported"
        company = create_company()
        with set_company(company):
            setup = create_payment_setup(company)
            station = setup['station']
            transaction = self.ingest_one(fill(
                    station, '40.123', unit_price='7.58', amount='304.13',
                    totalizer_start='1000.000', totalizer_end='1040.123',
                    dispenser_reference='T-1'))
        self.assertEqual(transaction.state, 'to_pay')
        self.assertEqual(transaction.unit_price, Decimal('7.5800'))
        self.assertEqual(transaction.price, setup['price'])
        # 40.123 x 7.58 = 304.13234 rounded by the currency
        self.assertEqual(transaction.amount, Decimal('304.13'))
        self.assertEqual(transaction.amount_due, Decimal('304.13'))
        self.assertEqual(transaction.quantity, Decimal('40.123'))
        self.assertEqual(transaction.nozzle, setup['nozzle'])
        self.assertEqual(transaction.grade, setup['grade'])
        self.assertEqual(transaction.shift, setup['shift'])
        self.assertEqual(transaction.flags, ())

    @with_transaction()
    def test_ingest_duplicate(self):
        "Test the same uuid twice returns the first result, creates nothing"
        pool = Pool()
        FuelTransaction = pool.get('fuel.payment.transaction')
        company = create_company()
        with set_company(company):
            setup = create_payment_setup(company)
            item = fill(setup['station'], '10')
            first, = self.ingest([item])
            again, repeat = self.ingest([item, dict(item)])
        self.assertEqual(first['status'], 'created')
        self.assertEqual(again['status'], 'duplicate')
        self.assertEqual(repeat['status'], 'duplicate')
        self.assertEqual(again['id'], first['id'])
        self.assertEqual(again['amount_due'], first['amount_due'])
        self.assertEqual(FuelTransaction.search([], count=True), 1)
        # read before: PostgreSQL reads nothing after the integrity error
        expected = message('msg_transaction_uuid_unique')
        with self.assertRaises(UserError) as cm:
            FuelTransaction.create([{
                        'uuid': item['uuid'], 'company': company.id,
                        'station': setup['station'].id,
                        'quantity': Decimal(1), 'state': 'to_pay',
                        }])
        self.assertEqual(cm.exception.message, expected)

    @with_transaction()
    def test_ingest_bad_items_do_not_stop_others(self):
        "Test each bad item is refused with its reason, the rest is kept"
        pool = Pool()
        FuelTransaction = pool.get('fuel.payment.transaction')
        company = create_company()
        with set_company(company):
            setup = create_payment_setup(company)
            station = setup['station']
            good = fill(station, '5')
            results = self.ingest([
                    'not an object',
                    fill(station, '5', uuid='nope'),
                    fill(station, 'ten'),
                    fill(station, '5', end_date='yesterday'),
                    fill(station, '5', status='paid'),
                    fill(station, None),
                    dict(fill(station, '5'), station=None),
                    dict(fill(station, '5'), station=999999),
                    good,
                    ])
        errors = [r['message'] for r in results[:-1]]
        self.assertEqual(errors, [
                message('msg_ingest_item_type'),
                message('msg_ingest_uuid', uuid='nope'),
                message('msg_ingest_number', field='quantity', value='ten'),
                message('msg_ingest_date', field='end_date',
                    value='yesterday'),
                message('msg_ingest_status', status='paid'),
                message('msg_ingest_required', field='quantity'),
                message('msg_ingest_required', field='station'),
                message('msg_ingest_station', station=999999),
                ])
        self.assertTrue(all(r['status'] == 'error' for r in results[:-1]))
        self.assertEqual(results[-1]['status'], 'created')
        self.assertEqual(FuelTransaction.search([], count=True), 1)

    @with_transaction()
    def test_ingest_batch_size(self):
        "Test a batch holds 1 to 1,000 transactions"
        company = create_company()
        with set_company(company):
            setup = create_payment_setup(company)
            for items in [[], [fill(setup['station'], 1)] * 1001]:
                with self.assertRaises(UserError) as cm:
                    self.ingest(items)
                self.assertEqual(
                    cm.exception.message,
                    message('msg_ingest_batch_size', maximum=1000))

    @with_transaction()
    def test_ingest_flags(self):
        "Test every mismatch is flagged for review, never fixed"
        company = create_company()
        with set_company(company):
            setup = create_payment_setup(company)
            station = setup['station']
            now = dt.datetime.now()
            minute = dt.timedelta(minutes=1)
            first = self.ingest_one(fill(
                    station, '10.000', totalizer_start='100.000',
                    totalizer_end='110.000', end_date=now - 5 * minute))
            gap = self.ingest_one(fill(
                    station, '10.000', totalizer_start='112.000',
                    totalizer_end='122.000', end_date=now - 4 * minute))
            overlap = self.ingest_one(fill(
                    station, '10.000', totalizer_start='120.000',
                    totalizer_end='130.000', end_date=now - 3 * minute))
            disagree = self.ingest_one(fill(
                    station, '10.000', totalizer_start='130.000',
                    totalizer_end='141.000', end_date=now - 2 * minute))
            mismatch = self.ingest_one(fill(
                    station, '10.000', unit_price='7.50', amount='75.00'))
            tolerated = self.ingest_one(fill(
                    station, '10.000', amount='75.81'))
            zero = self.ingest_one(fill(station, '0'))
            unknown = self.ingest_one(fill(station, '10', nozzle=9))
            unpriced = self.ingest_one(fill(
                    station, '10', end_date=now - dt.timedelta(days=1)))
        self.assertEqual(first.state, 'to_pay')
        self.assertEqual(gap.flags, ('totalizer_gap',))
        self.assertEqual(overlap.flags, ('totalizer_overlap',))
        self.assertEqual(disagree.flags, ('totalizer_quantity',))
        self.assertEqual(mismatch.flags, ('amount_mismatch',))
        # the dispenser's figures are kept as reported
        self.assertEqual(mismatch.reported_amount, Decimal('75.00'))
        self.assertEqual(mismatch.amount, Decimal('75.80'))
        self.assertEqual(tolerated.flags, ())
        self.assertEqual(zero.flags, ('quantity_not_positive',))
        self.assertEqual(unknown.flags, ('unknown_nozzle',))
        self.assertIsNone(unknown.nozzle)
        self.assertEqual(unknown.nozzle_number, 9)
        self.assertEqual(unpriced.flags, ('no_price',))
        for transaction in [gap, overlap, disagree, mismatch, zero, unknown]:
            self.assertEqual(transaction.state, 'review')

    @with_transaction()
    def test_totalizer_chain_inside_a_batch(self):
        "Test totalizers are chained inside one batch, in time order"
        company = create_company()
        with set_company(company):
            setup = create_payment_setup(company)
            station = setup['station']
            now = dt.datetime.now()
            late = fill(
                station, '5.000', totalizer_start='5.000',
                totalizer_end='10.000', end_date=now)
            early = fill(
                station, '5.000', totalizer_start='0.000',
                totalizer_end='5.000', end_date=now - dt.timedelta(minutes=1))
            results = self.ingest([late, early])
        self.assertEqual([r['flags'] for r in results], [[], []])

    @with_transaction()
    def test_fuelling_then_completed(self):
        "Test a fill in progress is completed by the same uuid"
        pool = Pool()
        FuelTransaction = pool.get('fuel.payment.transaction')
        Shift = pool.get('fuel.station.shift')
        company = create_company()
        with set_company(company):
            setup = create_payment_setup(company)
            item = fill(setup['station'], None, status='fuelling')
            item.pop('end_date')
            result, = self.ingest([item])
            self.assertEqual(result['state'], 'fuelling', msg=result)
            shift = setup['shift']
            with self.assertRaises(UserError) as cm:
                Shift.close([shift])
            transaction = FuelTransaction(result['id'])
            self.assertEqual(cm.exception.message, message(
                    'msg_shift_close_fuelling', shift=shift.rec_name,
                    transaction=transaction.rec_name))
            done = dict(
                fill(setup['station'], '20.00'), uuid=item['uuid'])
            result, = self.ingest([done])
            self.assertEqual(result['status'], 'completed')
            self.assertEqual(result['state'], 'to_pay')
            self.assertEqual(result['amount_due'], Decimal('151.60'))
            result, = self.ingest([done])
            self.assertEqual(result['status'], 'duplicate')

    @with_transaction()
    def test_void_needs_right_and_reason(self):
        "Test voiding needs the void right and a reason, and is kept"
        pool = Pool()
        FuelTransaction = pool.get('fuel.payment.transaction')
        company = create_company()
        with set_company(company):
            setup = create_payment_setup(company)
            station = setup['station']
            transaction = self.ingest_one(fill(station, '0'))
            attendant = create_user(
                'attendant', company, 'role_attendant', [station])
            manager = create_user(
                'manager', company, 'role_station_manager', [station])
        with Transaction().set_user(attendant.id), check_access():
            with self.assertRaises(AccessError) as cm:
                FuelTransaction.void([transaction], "test fill")
            self.assertEqual(cm.exception.message, message('msg_void_right'))
        with Transaction().set_user(manager.id), check_access():
            with self.assertRaises(UserError) as cm:
                FuelTransaction.void([transaction], "  ")
            self.assertEqual(
                cm.exception.message, message('msg_void_reason_required'))
            FuelTransaction.void([transaction], "test fill")
        self.assertEqual(transaction.state, 'cancelled')
        self.assertEqual(transaction.cancelled_by, manager)
        self.assertEqual(transaction.cancel_reason, "test fill")
        with self.assertRaises(UserError) as cm:
            FuelTransaction.delete([transaction])
        self.assertEqual(
            cm.exception.message, message('msg_transaction_delete'))

    @with_transaction()
    def test_accept_flagged(self):
        "Test a manager accepts a flagged transaction, an attendant cannot"
        pool = Pool()
        FuelTransaction = pool.get('fuel.payment.transaction')
        company = create_company()
        with set_company(company):
            setup = create_payment_setup(company)
            station = setup['station']
            transaction = self.ingest_one(fill(
                    station, '10', amount='1.00'))
            attendant = create_user(
                'attendant', company, 'role_attendant', [station])
            manager = create_user(
                'manager', company, 'role_station_manager', [station])
        with (Transaction().set_user(attendant.id), check_access(),
                self.assertRaises(AccessButtonError)):
            FuelTransaction.accept([transaction])
        with Transaction().set_user(manager.id), check_access():
            FuelTransaction.accept([transaction])
        self.assertEqual(transaction.state, 'to_pay')
        self.assertEqual(transaction.reviewed_by, manager)
        self.assertEqual(transaction.flags, ('amount_mismatch',))

    @with_transaction()
    def test_discount(self):
        "Test the discount stays between zero and the amount, before paying"
        company = create_company()
        with set_company(company):
            setup = create_payment_setup(company)
            transaction = self.ingest_one(fill(setup['station'], '10'))
            transaction.set_discount(Decimal('5.00'))
            transaction.save()
            self.assertEqual(transaction.amount_due, Decimal('70.80'))
            transaction.set_discount(Decimal('100.00'))
            with self.assertRaises(UserError) as cm:
                transaction.save()
            self.assertEqual(cm.exception.message, message(
                    'msg_transaction_discount',
                    transaction=transaction.rec_name))

    # ---- paying --------------------------------------------------------

    @with_transaction()
    def test_pay_cash_with_change_and_settle(self):
        """Test ingest -> price -> pay cash -> close shift -> one balanced
        account move and stock leaving the tank"""
        pool = Pool()
        Order = pool.get('fuel.payment.order')
        Shift = pool.get('fuel.station.shift')
        Move = pool.get('stock.move')
        FuelTransaction = pool.get('fuel.payment.transaction')
        company = create_company()
        with set_company(company):
            setup = create_payment_setup(company)
            station, methods = setup['station'], setup['methods']
            transaction = self.ingest_one(fill(station, '40.123'))
            order = Order.create_for([transaction])
            self.assertEqual(order.total, Decimal('304.13'))
            with self.assertRaises(UserError) as cm:
                Order.add_payment(
                    order, methods['cash'], '304.13', tendered='300')
            self.assertEqual(
                cm.exception.message, message('msg_order_tendered_short'))
            payment = Order.add_payment(
                order, methods['cash'], '400', tendered='400')
            self.assertEqual(payment.amount, Decimal('304.13'))
            self.assertEqual(payment.change, Decimal('95.87'))
            Order.process([order])
            self.assertEqual(order.state, 'paid')
            self.assertEqual(order.change, Decimal('95.87'))
            self.assertEqual(order.sale.state, 'done')
            self.assertEqual(order.sale.total, Decimal('304.13'))
            self.assertEqual(transaction.state, 'paid')

            shift = setup['shift']
            shift.counted_cash = Decimal('300.00')
            shift.save()
            close_shift(shift)
            self.assertEqual(shift.expected_cash, Decimal('304.13'))
            self.assertEqual(shift.cash_variance, Decimal('-4.13'))
            method_amount, = shift.method_amounts
            self.assertEqual(method_amount.method, methods['cash'])
            self.assertEqual(method_amount.expected, Decimal('304.13'))
            Shift.settle([shift])
            with self.assertRaises(UserError) as cm:
                Shift.settle([shift])
            self.assertEqual(cm.exception.message, message(
                    'msg_shift_settled', shift=shift.rec_name))

        move = shift.move
        self.assertEqual(move.state, 'posted')
        self.assertEqual(move.description, message(
                'msg_shift_move_description', shift=shift.rec_name))
        self.assertEqual(
            sum(ml.debit for ml in move.lines),
            sum(ml.credit for ml in move.lines))
        cash_line, = [
            ml for ml in move.lines
            if ml.account == setup['accounts']['cash']]
        self.assertEqual(cash_line.debit, Decimal('304.13'))
        revenue = sum(
            ml.credit - ml.debit for ml in move.lines
            if ml.account == setup['accounts']['revenue'])
        self.assertEqual(revenue, Decimal('304.13'))
        stock, = Move.search([('product', '=', setup['grade'].id)])
        self.assertEqual(stock.from_location, setup['tank'].location)
        self.assertEqual(stock.quantity, 40.123)
        self.assertEqual(stock.state, 'done')
        self.assertEqual(
            FuelTransaction(transaction.id).state, 'posted')
        self.assertEqual(Order(order.id).state, 'posted')
        self.assertEqual(Order(order.id).sale.state, 'posted')

    @with_transaction()
    def test_shift_adopts_sales_without_shift(self):
        """Test what a station takes while no shift is open is counted and
        settled by the next shift it closes"""
        pool = Pool()
        Order = pool.get('fuel.payment.order')
        Shift = pool.get('fuel.station.shift')
        Wallet = pool.get('fuel.payment.wallet')
        company = create_company()
        with set_company(company):
            setup = create_payment_setup(company)
            station, methods = setup['station'], setup['methods']

            close_shift(setup['shift'])
            transaction = self.ingest_one(fill(station, '10'))
            self.assertIsNone(transaction.shift)
            order = Order.create_for([transaction])
            Order.add_payment(order, methods['cash'], '75.80')
            Order.process([order])
            Wallet.recharge(
                create_wallet(company), Decimal('100'), methods['cash'],
                station)

            shift, = Shift.create([{'station': station.id}])
            Shift.open([shift])
            close_shift(shift)
            self.assertEqual(shift.expected_cash, Decimal('175.80'))
            self.assertEqual(Order(order.id).shift, shift)
            self.assertEqual(
                type(transaction)(transaction.id).shift, shift)
            Shift.settle([shift])
            self.assertEqual(shift.move.state, 'posted')
            self.assertEqual(Order(order.id).state, 'posted')

    @with_transaction()
    def test_merge_and_split_tender(self):
        "Test several fills in one order paid by several methods"
        pool = Pool()
        Order = pool.get('fuel.payment.order')
        company = create_company()
        with set_company(company):
            setup = create_payment_setup(company)
            station, methods = setup['station'], setup['methods']
            first = self.ingest_one(fill(station, '10'))
            second = self.ingest_one(fill(station, '20'))
            order = Order.create_for([first, second])
            self.assertEqual(order.total, Decimal('227.40'))
            with self.assertRaises(UserError) as cm:
                Order.create_for([first])
            self.assertEqual(cm.exception.message, message(
                    'msg_order_transaction_not_payable',
                    transaction=first.rec_name, state=first.state_string))
            with self.assertRaises(UserError) as cm:
                Order.add_payment(order, methods['wechat'], '100')
            self.assertEqual(cm.exception.message, message(
                    'msg_order_reference_required',
                    method=methods['wechat'].rec_name))
            with self.assertRaises(UserError) as cm:
                Order.add_payment(
                    order, methods['wechat'], '300', reference='WX1')
            self.assertEqual(cm.exception.message, message(
                    'msg_order_overpaid', order=order.rec_name))
            with self.assertRaises(UserError) as cm:
                Order.add_payment(order, methods['alipay'], '0')
            self.assertEqual(cm.exception.message, message(
                    'msg_order_payment_positive'))
            with self.assertRaises(UserError) as cm:
                Order.process([order])
            self.assertEqual(cm.exception.message, message(
                    'msg_order_not_paid', order=order.rec_name,
                    amount=Decimal('227.40')))
            key = str(uuid.uuid4())
            Order.add_payment(
                order, methods['wechat'], '100', reference='WX1', uuid=key)
            again = Order.add_payment(
                order, methods['wechat'], '100', reference='WX1', uuid=key)
            self.assertEqual(len(order.payments), 1)
            self.assertEqual(again.reference, 'WX1')
            result = Order.pay_rpc(order, [{
                        'method': methods['cash'].id, 'amount': '127.40',
                        'tendered': '200'}])
            self.assertEqual(result['state'], 'paid')
            self.assertEqual(result['change'], Decimal('72.60'))
            self.assertEqual(result['amount_to_pay'], Decimal(0))
            self.assertEqual(
                sorted(p.amount for p in order.sale.payments),
                [Decimal('100.00'), Decimal('127.40')])
            self.assertEqual(len(order.sale.lines), 2)
            with self.assertRaises(UserError) as cm:
                Order.add_payment(order, methods['cash'], '1')
            self.assertEqual(cm.exception.message, message(
                    'msg_order_not_draft', order=order.rec_name))

    @with_transaction()
    def test_order_checks(self):
        "Test an order needs transactions of one station"
        pool = Pool()
        Order = pool.get('fuel.payment.order')
        Method = pool.get('sale.point.payment.method')
        company = create_company()
        other = create_company("Other")
        with set_company(company):
            setup = create_payment_setup(company)
            with self.assertRaises(UserError) as cm:
                Order.create_for([])
            self.assertEqual(cm.exception.message, message(
                    'msg_order_no_transaction'))
            first = self.ingest_one(fill(setup['station'], '10'))
        with set_company(other):
            other_setup = create_payment_setup(other, 'O1')
            second = self.ingest_one(fill(other_setup['station'], '10'))
        with set_company(company):
            with self.assertRaises(UserError) as cm:
                Order.create_for([first, second])
            self.assertEqual(cm.exception.message, message(
                    'msg_order_one_station'))
            order = Order.create_for([first])
            foreign, = Method.search([
                    ('company', '=', other.id), ('fuel_kind', '=', 'cash')])
            with self.assertRaises(UserError) as cm:
                Order.add_payment(order, foreign, '10')
            self.assertEqual(cm.exception.message, message(
                    'msg_order_method_invalid', method=foreign.rec_name))
            with self.assertRaises(UserError) as cm:
                Order.add_payment(order, setup['methods']['wallet'], '10')
            self.assertEqual(cm.exception.message, message(
                    'msg_order_card_required',
                    method=setup['methods']['wallet'].rec_name))
            member = create_card(create_wallet(company))
            with self.assertRaises(UserError) as cm:
                Order.add_payment(
                    order, setup['methods']['corporate'], '10',
                    card=member.id)
            self.assertEqual(cm.exception.message, message(
                    'msg_order_card_invalid', card=member.rec_name))
            Order.add_payment(
                order, setup['methods']['alipay'], '10', reference='A1')
            with self.assertRaises(UserError) as cm:
                Order.delete([order])
            self.assertEqual(cm.exception.message, message(
                    'msg_order_delete', order=order.rec_name))

    @with_transaction()
    def test_refund_needs_right(self):
        "Test a refund reverses the sale and frees the fills to pay again"
        pool = Pool()
        Order = pool.get('fuel.payment.order')
        FuelTransaction = pool.get('fuel.payment.transaction')
        company = create_company()
        with set_company(company):
            setup = create_payment_setup(company)
            station, methods = setup['station'], setup['methods']
            transaction = self.ingest_one(fill(station, '10'))
            order = Order.create_for([transaction])
            Order.pay_rpc(order, [{
                        'method': methods['unionpay'].id, 'amount': '75.80',
                        'reference': 'UP-1'}])
            attendant = create_user(
                'attendant', company, 'role_attendant', [station])
            manager = create_user(
                'manager', company, 'role_station_manager', [station])
            with Transaction().set_user(attendant.id), check_access():
                with self.assertRaises(AccessError) as cm:
                    Order.do_refund([order], "wrong pump")
                self.assertEqual(
                    cm.exception.message, message('msg_void_right'))
            with Transaction().set_user(manager.id), check_access():
                Order.do_refund([order], "wrong pump")
            self.assertEqual(order.state, 'refunded')
            self.assertEqual(order.reverted_by, manager)
            self.assertEqual(order.sale.state, 'cancelled')
            self.assertEqual(order.sale.payments, ())
            transaction = FuelTransaction(transaction.id)
            self.assertEqual(transaction.state, 'to_pay')
            self.assertIsNone(transaction.order)
            with self.assertRaises(UserError) as cm:
                FuelTransaction.void([transaction], "")
            self.assertEqual(
                cm.exception.message, message('msg_void_reason_required'))
            # paid again, it cannot be voided while in a draft order
            again = Order.create_for([transaction])
            with self.assertRaises(UserError) as cm:
                FuelTransaction.void([transaction], "gone")
            self.assertEqual(cm.exception.message, message(
                    'msg_transaction_void_ordered',
                    transaction=transaction.rec_name,
                    order=again.rec_name))
            Order.cancel([again])
            FuelTransaction.void([transaction], "gone")
            self.assertEqual(transaction.state, 'cancelled')

    @with_transaction()
    def test_refund_after_settlement(self):
        """Test a settled order is refunded by a return sale in the next
        shift: the first shift's books stay, the next one gives back the
        money and the fuel"""
        pool = Pool()
        Order = pool.get('fuel.payment.order')
        Shift = pool.get('fuel.station.shift')
        FuelTransaction = pool.get('fuel.payment.transaction')
        Move = pool.get('stock.move')
        company = create_company()
        with set_company(company):
            setup = create_payment_setup(company)
            station, methods = setup['station'], setup['methods']
            transaction = self.ingest_one(fill(station, '10'))
            order = Order.create_for([transaction])
            Order.add_payment(order, methods['cash'], '50')
            Order.add_payment(
                order, methods['wechat'], '25.80', reference='WX-1')
            Order.process([order])
            first = setup['shift']
            close_shift(first)
            Shift.settle([first])
            self.assertEqual(Order(order.id).state, 'posted')

            second, = Shift.create([{'station': station.id}])
            Shift.open([second])
            order = Order(order.id)
            Order.do_refund([order], "charged twice")

            self.assertEqual(order.state, 'refunded')
            self.assertEqual(order.sale.state, 'posted')
            return_ = order.refund_sale
            self.assertEqual(return_.state, 'done')
            self.assertEqual(return_.fuel_shift, second)
            self.assertEqual(return_.total, Decimal('-75.80'))
            self.assertEqual(
                sorted(p.amount for p in return_.payments),
                [Decimal('-50.00'), Decimal('-25.80')])
            transaction = FuelTransaction(transaction.id)
            self.assertEqual(transaction.state, 'to_pay')
            # the first shift still expects what it booked
            self.assertEqual(
                Shift(first.id).expected_cash, Decimal('50.00'))

            close_shift(second)
            self.assertEqual(second.expected_cash, Decimal('-50.00'))
            Shift.settle([second])
            move = second.move
            self.assertEqual(
                sum(ml.debit for ml in move.lines),
                sum(ml.credit for ml in move.lines))
            revenue = sum(
                ml.credit - ml.debit for ml in move.lines
                if ml.account == setup['accounts']['revenue'])
            self.assertEqual(revenue, Decimal('-75.80'))
            back, = Move.search([('origin', '=', str(second))])
            self.assertEqual(back.to_location, setup['tank'].location)
            self.assertEqual(back.quantity, 10)

    @with_transaction()
    def test_settlement_needs_point_and_discount_product(self):
        "Test settling tells what configuration is missing"
        pool = Pool()
        Order = pool.get('fuel.payment.order')
        Station = pool.get('fuel.station')
        Configuration = pool.get('fuel.payment.configuration')
        Shift = pool.get('fuel.station.shift')
        company = create_company()
        with set_company(company):
            setup = create_payment_setup(company)
            station, methods = setup['station'], setup['methods']
            transaction = self.ingest_one(fill(station, '10'))
            transaction.set_discount(Decimal('0.80'))
            transaction.save()
            order = Order.create_for([transaction])
            Order.add_payment(order, methods['cash'], '75.00')
            config = Configuration(1)
            product = config.discount_product
            config.discount_product = None
            config.save()
            with self.assertRaises(UserError) as cm:
                Order.process([order])
            self.assertEqual(cm.exception.message, message(
                    'msg_discount_product_missing'))
            config.discount_product = product
            config.save()
            point = station.point
            Station.write([station], {'point': None})
            with self.assertRaises(UserError) as cm:
                Order.process([order])
            self.assertEqual(cm.exception.message, message(
                    'msg_station_no_point', station=station.rec_name))
            Station.write([station], {'point': point.id})
            Order.process([order])
            self.assertEqual(order.sale.total, Decimal('75.00'))
            with self.assertRaises(UserError) as cm:
                transaction.set_discount(Decimal(1))
            self.assertEqual(cm.exception.message, message(
                    'msg_transaction_discount_state',
                    transaction=transaction.rec_name))
            shift = setup['shift']
            with self.assertRaises(UserError) as cm:
                Shift.settle([shift])
            self.assertEqual(cm.exception.message, message(
                    'msg_shift_settle_closed', shift=shift.rec_name))
            draft = Order.create_for([self.ingest_one(fill(station, '1'))])
            with self.assertRaises(UserError) as cm:
                Shift.close([shift])
            self.assertEqual(cm.exception.message, message(
                    'msg_shift_close_draft_order', shift=shift.rec_name,
                    order=draft.rec_name))

    @with_transaction()
    def test_payments_are_not_changed(self):
        "Test a payment cannot be changed by a client"
        pool = Pool()
        Order = pool.get('fuel.payment.order')
        Payment = pool.get('fuel.payment.order.payment')
        company = create_company()
        with set_company(company):
            setup = create_payment_setup(company)
            order = Order.create_for(
                [self.ingest_one(fill(setup['station'], '10'))])
            payment = Order.add_payment(
                order, setup['methods']['jd'], '10', reference='JD1')
            with (Transaction().set_context(_check_access=True),
                    self.assertRaises(UserError) as cm):
                Payment.write([payment], {'amount': Decimal(1)})
            self.assertEqual(
                cm.exception.message, message('msg_payment_modify'))
            # read before: PostgreSQL reads nothing after the integrity error
            expected = message('msg_payment_uuid_unique')
            with self.assertRaises(UserError) as cm:
                Payment.create([{
                            'order': order.id, 'uuid': payment.uuid,
                            'method': payment.method.id,
                            'amount': Decimal(1)}])
            self.assertEqual(cm.exception.message, expected)

    @with_transaction()
    def test_box_events_become_transactions(self):
        "Test the fills a station box reports are priced by the platform"
        pool = Pool()
        Event = pool.get('fuel.device.event')
        FuelTransaction = pool.get('fuel.payment.transaction')
        company = create_company()
        with set_company(company):
            setup = create_payment_setup(company)
            box, _ = create_box(setup['station'], 'BOX-1')
            now = dt.datetime.now(dt.UTC).isoformat()
            good = {
                'uuid': str(uuid.uuid4()), 'seq': 1,
                'kind': 'transaction_completed', 'device': 'pump-1',
                'device_time': now, 'version': 1,
                'payload': {
                    'nozzle': 1, 'station_nozzle': 1,
                    'volume': {'__decimal__': '20.000'},
                    'amount': {'__decimal__': '151.60'},
                    'unit_price': {'__decimal__': '7.58'},
                    'totalizer_volume': {'__decimal__': '1020.000'},
                    'totalizer_amount': {'__decimal__': '7730.00'},
                    'price_set_id': setup['price'].id,
                    },
                }
            bad = dict(good, uuid=str(uuid.uuid4()), seq=2, payload=dict(
                    good['payload'], volume='lots'))
            results = Event.ingest(box, [good, bad])
            self.assertEqual(
                [r['status'] for r in results], ['accepted', 'error'])
            self.assertEqual(results[1]['error'], message(
                    'msg_ingest_number', field='quantity', value='lots'))
            transaction, = FuelTransaction.search([])
            self.assertEqual(transaction.uuid, good['uuid'])
            self.assertEqual(transaction.amount_due, Decimal('151.60'))
            self.assertEqual(transaction.totalizer_start, Decimal('1000'))
            self.assertEqual(transaction.state, 'to_pay')
            again = Event.ingest(box, [good])
            self.assertEqual(again[0]['status'], 'duplicate')
            self.assertEqual(FuelTransaction.search([], count=True), 1)

    @with_transaction()
    def test_tenant_isolation(self):
        "Test operators and station staff see only their own fills"
        pool = Pool()
        FuelTransaction = pool.get('fuel.payment.transaction')
        Order = pool.get('fuel.payment.order')
        company_a = create_company("Operator A")
        company_b = create_company("Operator B")
        with set_company(company_a):
            setup_a = create_payment_setup(company_a, 'A1')
            mine = self.ingest_one(fill(setup_a['station'], '10'))
            order = Order.create_for([mine])
        with set_company(company_b):
            setup_b = create_payment_setup(company_b, 'B1')
            theirs = self.ingest_one(fill(setup_b['station'], '10'))
        admin_a = create_user('a_admin', company_a, 'role_operator_admin')
        attendant_b = create_user(
            'b_attendant', company_b, 'role_attendant', [setup_b['station']])
        with Transaction().set_user(admin_a.id), check_access():
            self.assertEqual(FuelTransaction.search([]), [mine])
            with self.assertRaises(AccessError):
                FuelTransaction.read([theirs.id], ['amount'])
            result, = FuelTransaction.ingest(
                [fill(setup_b['station'], '1')])
            self.assertEqual(result['message'], message(
                    'msg_ingest_station', station=setup_b['station'].id))
        with Transaction().set_user(attendant_b.id), check_access():
            self.assertEqual(FuelTransaction.search([]), [theirs])
            self.assertEqual(Order.search([]), [])
            with self.assertRaises(AccessError):
                Order.read([order.id], ['number'])


del ModuleTestCase
