# This file is part of fuelpay.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
import datetime as dt
import uuid
from contextlib import contextmanager
from decimal import Decimal
from unittest.mock import patch

from trytond.exceptions import UserError
from trytond.i18n import gettext
from trytond.model.exceptions import AccessError
from trytond.model.modelstorage import DomainValidationError
from trytond.modules.company.tests import create_company, set_company
from trytond.pool import Pool
from trytond.tests.test_tryton import (
    DB_NAME,
    with_transaction,
)
from trytond.transaction import Transaction, check_access

from addons.fuel_station.tests.test_module import create_grade, create_user

from ..exceptions import (
    WalletBalanceError,
    WalletError,
    WalletLimitError,
    WalletPinError,
)
from ..wallet import MAX_PIN_FAILURES
from .tools import (
    PaymentDatabaseTestCase,
    close_shift,
    create_card,
    create_payment_setup,
    create_wallet,
    fund,
)


def message(msg_id, **values):
    return gettext(f'fuel_payment.{msg_id}', **values)


class WalletTestCase(PaymentDatabaseTestCase):
    "Test Fuel Payment wallets"

    def assertMessage(self, cm, msg_id, fragment, **values):
        "Check the error of cm is msg_id, its text showing fragment"
        self.assertEqual(cm.exception.message, message(msg_id, **values))
        self.assertIn(fragment, cm.exception.message)

    @contextmanager
    def assertRaisesMessage(self, exception, msg_id, fragment, **values):
        """Check the block raises msg_id, its text showing fragment

        The text is read before the block: on PostgreSQL a database error
        leaves the transaction unable to read anything until it ends."""
        expected = message(msg_id, **values)
        self.assertIn(fragment, expected)
        with self.assertRaises(exception) as cm:
            yield cm
        self.assertEqual(cm.exception.message, expected)

    def pay(self, card, amount, **kwargs):
        pool = Pool()
        Card = pool.get('fuel.payment.wallet.card')
        return Card.pay(card, Decimal(amount), **kwargs)

    def balance(self, wallet):
        pool = Pool()
        Wallet = pool.get('fuel.payment.wallet')
        return Wallet(wallet.id).balance

    def amount(self, value, company):
        pool = Pool()
        Lang = pool.get('ir.lang')
        return Lang.get().currency(Decimal(value), company.currency)

    # ---- ledger --------------------------------------------------------

    @with_transaction()
    def test_balance_from_ledger(self):
        "Test the balance of wallets is the sum of their moves"
        pool = Pool()
        Wallet = pool.get('fuel.payment.wallet')
        Move = pool.get('fuel.payment.wallet.move')
        company = create_company()
        with set_company(company):
            wallet = create_wallet(company)
            other = create_wallet(company, name="Han Meimei")
            empty = create_wallet(company, name="Lin Tao")
            card = create_card(wallet)
            fund(wallet, '100.00')
            Move.create([{
                        'wallet': wallet.id, 'kind': 'bonus',
                        'amount': Decimal('10.00'), 'uuid': str(uuid.uuid4()),
                        }, {
                        'wallet': wallet.id, 'card': card.id,
                        'kind': 'payment', 'amount': Decimal('-35.50'),
                        'uuid': str(uuid.uuid4()),
                        }, {
                        'wallet': wallet.id, 'kind': 'adjustment',
                        'amount': Decimal('-0.25'), 'uuid': str(uuid.uuid4()),
                        }])
            fund(other, '20.00')
            self.assertEqual(
                Wallet.get_balances([wallet, other, empty]), {
                    wallet.id: Decimal('74.25'),
                    other.id: Decimal('20.00'),
                    empty.id: Decimal('0.00'),
                    })
            self.assertEqual(
                [w.balance for w in Wallet.browse([wallet, other, empty])],
                [Decimal('74.25'), Decimal('20.00'), Decimal(0)])
            self.assertEqual(
                Wallet.search([
                        ('company', '=', company.id),
                        ('balance', '>', Decimal('50')),
                        ]),
                [wallet])
            self.assertEqual(
                Wallet.search([
                        ('company', '=', company.id),
                        ('balance', '=', 0),
                        ]),
                [empty])
        self.assertEqual(wallet.number, 'W%06d' % wallet.id)
        self.assertEqual(card.number, 'C%08d' % card.id)
        self.assertEqual(card.company, company)
        self.assertEqual(card.rec_name, card.number)

    # a database constraint error ends the transaction: one a test

    @with_transaction()
    def test_statement(self):
        """Test the member statement shows the balance before the period,
        after each movement of it, and at its end"""
        pool = Pool()
        Move = pool.get('fuel.payment.wallet.move')
        Statement = pool.get(
            'fuel.payment.wallet.statement', type='report')
        company = create_company()
        with set_company(company):
            wallet = create_wallet(company)
            card = create_card(wallet)
            before, recharge, payment, after = Move.create([{
                        'wallet': wallet.id, 'kind': 'recharge',
                        'amount': Decimal('300.00'),
                        'date': dt.datetime(2026, 10, 31, 10),
                        'uuid': str(uuid.uuid4()),
                        }, {
                        'wallet': wallet.id, 'kind': 'recharge',
                        'amount': Decimal('200.00'),
                        'date': dt.datetime(2026, 11, 2, 8, 30),
                        'uuid': str(uuid.uuid4()),
                        }, {
                        'wallet': wallet.id, 'card': card.id,
                        'kind': 'payment', 'amount': Decimal('-304.13'),
                        'date': dt.datetime(2026, 11, 20, 18),
                        'uuid': str(uuid.uuid4()),
                        }, {
                        'wallet': wallet.id, 'kind': 'adjustment',
                        'amount': Decimal('-1.00'),
                        'date': dt.datetime(2026, 12, 1, 0, 5),
                        'uuid': str(uuid.uuid4()),
                        }])

            statement = Statement.statement(
                wallet, dt.date(2026, 11, 1), dt.date(2026, 11, 30))
            self.assertEqual(statement['opening'], Decimal('300.00'))
            self.assertEqual(statement['lines'], [
                    (recharge, Decimal('500.00')),
                    (payment, Decimal('195.87')),
                    ])
            self.assertEqual(statement['credit'], Decimal('200.00'))
            self.assertEqual(statement['debit'], Decimal('304.13'))
            self.assertEqual(statement['closing'], Decimal('195.87'))

            # without a period: every movement
            statement = Statement.statement(wallet)
            self.assertEqual(statement['opening'], Decimal(0))
            self.assertEqual(
                [m for m, _ in statement['lines']],
                [before, recharge, payment, after])
            self.assertEqual(statement['closing'], self.balance(wallet))

            extension, content, _, _ = Statement.execute([wallet.id], {
                    'from_date': dt.date(2026, 11, 1),
                    'to_date': dt.date(2026, 11, 30),
                    })
            self.assertEqual(extension, 'html')
            for figure in ['300.00', '500.00', '-304.13', '195.87']:
                self.assertIn(self.amount(figure, company), content)
            self.assertNotIn(self.amount('-1.00', company), content)

            with self.assertRaises(WalletError) as cm:
                Statement.execute([wallet.id], {
                        'from_date': dt.date(2026, 11, 30),
                        'to_date': dt.date(2026, 11, 1),
                        })
            self.assertMessage(
                cm, 'msg_statement_dates', 'cannot start',
                from_date=dt.date(2026, 11, 30),
                to_date=dt.date(2026, 11, 1))

    @with_transaction()
    def test_wallet_number_unique(self):
        "Test two wallets of an operator cannot have the same number"
        pool = Pool()
        Wallet = pool.get('fuel.payment.wallet')
        company = create_company()
        other_company = create_company("Other Operator")
        with set_company(company):
            wallet = create_wallet(company)
        with set_company(other_company):
            other = create_wallet(other_company)
            # another operator may use the same number
            Wallet.write([other], {'number': wallet.number})
        with (set_company(company),
                self.assertRaisesMessage(
                    UserError, 'msg_wallet_number_unique',
                    "Another wallet of the operator has this number.")):
            Wallet.create([{
                        'party': wallet.party.id,
                        'number': wallet.number}])

    @with_transaction()
    def test_card_number_unique(self):
        "Test two cards of an operator cannot have the same number"
        company = create_company()
        other_company = create_company("Other Operator")
        with set_company(other_company):
            other = create_wallet(other_company)
            self.assertEqual(
                create_card(other, number='8801').company, other_company)
        with set_company(company):
            wallet = create_wallet(company)
            card = create_card(wallet, number='8801')
            self.assertEqual(card.company, company)
            with self.assertRaisesMessage(
                    UserError, 'msg_card_number_unique',
                    "Another card of the operator has this number."):
                create_card(wallet, number='8801')

    @with_transaction()
    def test_move_uuid_unique(self):
        "Test two wallet moves cannot have the same uuid"
        pool = Pool()
        Move = pool.get('fuel.payment.wallet.move')
        company = create_company()
        with set_company(company):
            wallet = create_wallet(company)
            move = fund(wallet, '1')
            with self.assertRaisesMessage(
                    UserError, 'msg_wallet_move_uuid_unique',
                    "A wallet move with this UUID already exists."):
                Move.create([{
                            'wallet': wallet.id, 'kind': 'adjustment',
                            'amount': Decimal(1), 'uuid': move.uuid}])

    @with_transaction()
    def test_credit_limit_corporate_only(self):
        "Test only corporate accounts have a credit limit"
        pool = Pool()
        Wallet = pool.get('fuel.payment.wallet')
        company = create_company()
        with set_company(company):
            corporate = create_wallet(company, 'corporate', '5000')
            self.assertEqual(corporate.credit_limit, Decimal(5000))
            wallet = create_wallet(company)
            with self.assertRaises(WalletError) as cm:
                Wallet.write([wallet], {'credit_limit': Decimal(100)})
            self.assertMessage(
                cm, 'msg_wallet_credit_limit_personal',
                'Only a corporate account can have a credit limit; wallet "',
                wallet=wallet.rec_name)

    @with_transaction()
    def test_ledger_append_only(self):
        "Test wallet moves are never changed nor deleted"
        pool = Pool()
        Move = pool.get('fuel.payment.wallet.move')
        company = create_company()
        with set_company(company):
            wallet = create_wallet(company)
            move = fund(wallet, '50')
            with self.assertRaises(WalletError) as cm:
                Move.write([move], {'amount': Decimal('5000')})
            self.assertMessage(
                cm, 'msg_wallet_move_modify',
                "Wallet moves are never changed nor deleted: add a move.")
            with self.assertRaises(WalletError) as cm:
                Move.delete([move])
            self.assertMessage(
                cm, 'msg_wallet_move_modify',
                "never changed nor deleted")
            self.assertEqual(self.balance(wallet), Decimal('50'))

            # by hand (over RPC) only adjustments: the other kinds come
            # with the operation that moves the money
            with Transaction().set_context(_check_access=True):
                Move.create([{
                            'wallet': wallet.id, 'kind': 'adjustment',
                            'amount': Decimal('-5'),
                            'uuid': str(uuid.uuid4()),
                            }])
                self.assertEqual(self.balance(wallet), Decimal('45'))
                # the error rolls the RPC call's transaction back
                with self.assertRaises(WalletError) as cm:
                    Move.create([{
                                'wallet': wallet.id, 'kind': 'recharge',
                                'amount': Decimal('1000'),
                                'uuid': str(uuid.uuid4()),
                                }])
                self.assertMessage(
                    cm, 'msg_wallet_move_manual',
                    "Only adjustments are entered by hand")

    @with_transaction()
    def test_move_sign_and_card(self):
        "Test the amount of a move has the sign of its kind"
        pool = Pool()
        Move = pool.get('fuel.payment.wallet.move')
        company = create_company()
        with set_company(company):
            wallet = create_wallet(company)
            other = create_wallet(company, name="Han Meimei")
            card = create_card(other)
            for kind, amount in [
                    ('payment', '10'), ('recharge', '-10'),
                    ('refund', '-1'), ('bonus', '0'), ('adjustment', '0')]:
                with self.subTest(kind=kind):
                    with self.assertRaises(WalletError) as cm:
                        Move.create([{
                                    'wallet': wallet.id, 'kind': kind,
                                    'amount': Decimal(amount),
                                    'uuid': str(uuid.uuid4())}])
                    self.assertIn(" move cannot have the amount ",
                        cm.exception.message)
                    self.assertEqual(cm.exception.message, message(
                            'msg_wallet_move_sign',
                            kind=dict(Move.fields_get(['kind'])['kind'][
                                    'selection'])[kind],
                            amount=Decimal(amount)))
            # the card of a move is a card of its wallet
            with self.assertRaises(DomainValidationError):
                Move.create([{
                            'wallet': wallet.id, 'card': card.id,
                            'kind': 'adjustment', 'amount': Decimal(1),
                            'uuid': str(uuid.uuid4())}])

    # ---- recharge ------------------------------------------------------

    @with_transaction()
    def test_recharge(self):
        "Test a recharge books a done POS sale and credits the wallet once"
        pool = Pool()
        Sale = pool.get('sale.point.sale')
        Wallet = pool.get('fuel.payment.wallet')
        Configuration = pool.get('fuel.payment.configuration')
        company = create_company()
        with set_company(company):
            setup = create_payment_setup(company)
            methods, station = setup['methods'], setup['station']
            wallet = create_wallet(company)
            key = str(uuid.uuid4())

            recharge, = Wallet.recharge(
                wallet, Decimal('500'), methods['wechat'], station,
                reference=' 4200001234 ', uuid=key)

            self.assertEqual(recharge.kind, 'recharge')
            self.assertEqual(recharge.amount, Decimal('500.00'))
            self.assertEqual(recharge.reference, '4200001234')
            self.assertEqual(recharge.uuid, key)
            sale = recharge.origin
            self.assertEqual(sale.__name__, 'sale.point.sale')
            self.assertEqual(sale.state, 'done')
            self.assertEqual(sale.point, setup['point'])
            self.assertEqual(sale.fuel_shift, setup['shift'])
            self.assertEqual(sale.total, Decimal('500.00'))
            line, = sale.lines
            self.assertEqual(
                line.product, Configuration(1).recharge_product)
            payment, = sale.payments
            self.assertEqual(payment.method, methods['wechat'])
            self.assertEqual(payment.amount, Decimal('500.00'))
            self.assertEqual(self.balance(wallet), Decimal('500.00'))
            sales = Sale.search([], count=True)

            # the same uuid again creates nothing
            again = Wallet.recharge(
                wallet, Decimal('500'), methods['wechat'], station,
                reference='4200001234', uuid=key)
            self.assertEqual(again, [recharge])
            self.assertEqual(Sale.search([], count=True), sales)
            self.assertEqual(self.balance(wallet), Decimal('500.00'))

            # cash goes to the cash session of the point
            Wallet.recharge(wallet, Decimal('100'), methods['cash'], station)
            self.assertEqual(self.balance(wallet), Decimal('600.00'))

    @with_transaction()
    def test_recharge_posts_a_deposit(self):
        """Test a settled recharge credits the wallet method's account, and
        settling without a wallet method is refused"""
        pool = Pool()
        Wallet = pool.get('fuel.payment.wallet')
        Shift = pool.get('fuel.station.shift')
        company = create_company()
        with set_company(company):
            setup = create_payment_setup(company)
            methods, shift = setup['methods'], setup['shift']
            wallet = create_wallet(company)
            Wallet.recharge(
                wallet, Decimal('200'), methods['alipay'], setup['station'],
                reference='2026112522001')
            Wallet.recharge(
                wallet, Decimal('100'), methods['cash'], setup['station'])
            close_shift(shift)
            # the money taken for recharges is in the shift's drawer
            self.assertEqual(shift.expected_cash, Decimal('100.00'))
            self.assertEqual(
                {m.method: m.expected for m in shift.method_amounts}, {
                    methods['alipay']: Decimal('200.00'),
                    methods['cash']: Decimal('100.00'),
                    })
            wallet_method = methods['wallet']
            wallet_method.fuel_kind = None
            wallet_method.save()
            with self.assertRaises(UserError) as cm:
                Shift.settle([shift])
            self.assertMessage(
                cm, 'msg_wallet_method_missing', 'wallet payment method',
                company=company.rec_name)
            wallet_method.fuel_kind = 'wallet'
            wallet_method.save()
            Shift.settle([shift])

            deposit = sum(
                ml.credit - ml.debit for ml in shift.move.lines
                if ml.account == wallet_method.account)
            self.assertEqual(deposit, Decimal('300.00'))

    @with_transaction()
    def test_recharge_bonus(self):
        "Test a recharge credits the bonus the hook gives"
        pool = Pool()
        Wallet = pool.get('fuel.payment.wallet')
        company = create_company()
        with set_company(company):
            setup = create_payment_setup(company)
            wallet = create_wallet(company)
            key = str(uuid.uuid4())
            with patch.object(
                    Wallet, 'get_recharge_bonus',
                    return_value=Decimal('50')) as hook:
                recharge, bonus = Wallet.recharge(
                    wallet, Decimal('1000'), setup['methods']['alipay'],
                    setup['station'], reference='2088', uuid=key)
                hook.assert_called_once_with(
                    Wallet(wallet.id), Decimal('1000'),
                    setup['methods']['alipay'])
                self.assertEqual(
                    Wallet.recharge(
                        wallet, Decimal('1000'), setup['methods']['alipay'],
                        setup['station'], reference='2088', uuid=key),
                    [recharge, bonus])
            self.assertEqual(bonus.kind, 'bonus')
            self.assertEqual(bonus.amount, Decimal('50'))
            self.assertEqual(bonus.origin, recharge)
            self.assertEqual(self.balance(wallet), Decimal('1050.00'))

    @with_transaction()
    def test_recharge_refused(self):
        "Test the recharges refused"
        pool = Pool()
        Configuration = pool.get('fuel.payment.configuration')
        Station = pool.get('fuel.station')
        Wallet = pool.get('fuel.payment.wallet')
        company = create_company()
        other_company = create_company("Other Operator")
        with set_company(other_company):
            other = create_payment_setup(other_company, 'O01')
        with set_company(company):
            setup = create_payment_setup(company)
            methods, station = setup['methods'], setup['station']
            wallet = create_wallet(company)

            with self.assertRaises(WalletError) as cm:
                Wallet.recharge(wallet, Decimal('100'), methods['wechat'],
                    station, reference='  ')
            self.assertMessage(
                cm, 'msg_wallet_recharge_reference',
                " needs the reference of the payment host.",
                method=methods['wechat'].rec_name)
            for kind in ['wallet', 'corporate']:
                with self.assertRaises(WalletError) as cm:
                    Wallet.recharge(
                        wallet, Decimal('100'), methods[kind], station)
                self.assertMessage(
                    cm, 'msg_wallet_recharge_method',
                    "cannot be recharged from a wallet or a corporate account",
                    wallet=wallet.rec_name, method=methods[kind].rec_name)
            with self.assertRaises(WalletError) as cm:
                Wallet.recharge(
                    wallet, Decimal('100'), other['methods']['cash'], station)
            self.assertMessage(
                cm, 'msg_wallet_recharge_company',
                '" belongs to another operator than wallet "',
                wallet=wallet.rec_name,
                method=other['methods']['cash'].rec_name,
                station=station.rec_name)
            for amount in ['0', '-10', '0.001']:
                with self.assertRaises(WalletError) as cm:
                    Wallet.recharge(
                        wallet, Decimal(amount), methods['cash'], station)
                self.assertMessage(
                    cm, 'msg_wallet_amount_positive',
                    "The amount must be greater than zero.")
            config = Configuration(1)
            product = config.recharge_product
            config.recharge_product = None
            config.save()
            with self.assertRaises(WalletError) as cm:
                Wallet.recharge(
                    wallet, Decimal('100'), methods['cash'], station)
            self.assertMessage(
                cm, 'msg_wallet_recharge_product',
                "Set the recharge product in the payment configuration.")
            config.recharge_product = product
            config.save()
            point = station.point
            Station.write([station], {'point': None})
            with self.assertRaises(WalletError) as cm:
                Wallet.recharge(
                    wallet, Decimal('100'), methods['cash'], station)
            self.assertEqual(cm.exception.message, message(
                    'msg_station_no_point', station=station.rec_name))
            Station.write([station], {'point': point.id})
            Wallet.write([wallet], {'active': False})
            with self.assertRaises(WalletError) as cm:
                Wallet.recharge(
                    wallet, Decimal('100'), methods['cash'], station)
            self.assertMessage(
                cm, 'msg_wallet_inactive', " is closed.",
                wallet=wallet.rec_name)
            self.assertEqual(self.balance(wallet), Decimal(0))

    # ---- payment -------------------------------------------------------

    @with_transaction()
    def test_pay(self):
        "Test a payment debits the wallet once per uuid"
        company = create_company()
        with set_company(company):
            wallet = create_wallet(company)
            card = create_card(wallet)
            fund(wallet, '300')
            key = str(uuid.uuid4())
            date = dt.datetime(2026, 3, 1, 8, 30)

            move = self.pay(card, '120.456', uuid=key, date=date)

            self.assertEqual(move.kind, 'payment')
            self.assertEqual(move.amount, Decimal('-120.46'))
            self.assertEqual(move.card, card)
            self.assertEqual(move.uuid, key)
            self.assertEqual(move.date, date)
            self.assertEqual(self.balance(wallet), Decimal('179.54'))
            self.assertEqual(self.pay(card, '120.456', uuid=key), move)
            self.assertEqual(self.balance(wallet), Decimal('179.54'))
            self.assertEqual(
                len(self.pay(card, '1', date=date).uuid), 36)
            with self.assertRaises(WalletError) as cm:
                self.pay(card, '0')
            self.assertMessage(
                cm, 'msg_wallet_amount_positive',
                "The amount must be greater than zero.")

    @with_transaction()
    def test_pay_over_balance(self):
        "Test a personal wallet cannot go below zero"
        company = create_company()
        with set_company(company):
            wallet = create_wallet(company)
            card = create_card(wallet)
            fund(wallet, '100')
            self.pay(card, '60')
            with self.assertRaises(WalletBalanceError) as cm:
                self.pay(card, '40.01')
            self.assertMessage(
                cm, 'msg_wallet_balance', " available and cannot pay ",
                wallet=wallet.rec_name,
                available=self.amount('40.00', company),
                amount=self.amount('40.01', company))
            self.pay(card, '40')
            self.assertEqual(self.balance(wallet), Decimal(0))

    @with_transaction()
    def test_corporate_credit_limit(self):
        "Test a corporate account goes below zero down to its credit limit"
        company = create_company()
        with set_company(company):
            wallet = create_wallet(company, 'corporate', '1000')
            truck1 = create_card(wallet, plate='京A12345')
            truck2 = create_card(wallet, plate='京B67890')
            fund(wallet, '200')
            self.pay(truck1, '700')
            self.pay(truck2, '500')
            self.assertEqual(self.balance(wallet), Decimal('-1000.00'))
            with self.assertRaises(WalletBalanceError) as cm:
                self.pay(truck1, '0.01')
            self.assertMessage(
                cm, 'msg_wallet_balance', " available and cannot pay ",
                wallet=wallet.rec_name,
                available=self.amount('0', company),
                amount=self.amount('0.01', company))
            self.assertEqual(truck1.rec_name, f'{truck1.number} (京A12345)')

    @with_transaction()
    def test_blocked_card_and_closed_wallet(self):
        "Test a blocked card or a closed wallet cannot pay"
        pool = Pool()
        Card = pool.get('fuel.payment.wallet.card')
        Wallet = pool.get('fuel.payment.wallet')
        company = create_company()
        with set_company(company):
            wallet = create_wallet(company)
            card = create_card(wallet)
            fund(wallet, '100')
            Card.block([card])
            with self.assertRaises(WalletError) as cm:
                self.pay(card, '10')
            self.assertMessage(
                cm, 'msg_card_blocked', " is blocked.", card=card.rec_name)
            Card.activate([card])
            self.pay(card, '10')
            Wallet.write([wallet], {'active': False})
            with self.assertRaises(WalletError) as cm:
                self.pay(card, '10')
            self.assertMessage(
                cm, 'msg_wallet_inactive', " is closed.",
                wallet=wallet.rec_name)

    # ---- PIN -----------------------------------------------------------

    @with_transaction()
    def test_set_pin_wizard(self):
        """Test the Set PIN wizard wants the PIN twice and keeps only its
        hash"""
        pool = Pool()
        SetPin = pool.get('fuel.payment.wallet.card.set_pin', type='wizard')
        Card = pool.get('fuel.payment.wallet.card')
        company = create_company()
        with set_company(company):
            card = create_card(create_wallet(company))
            self.assertFalse(card.has_pin)
            session_id, _, _ = SetPin.create()
            with Transaction().set_context(
                    active_model=Card.__name__, active_id=card.id,
                    active_ids=[card.id]):
                set_pin = SetPin(session_id)
                self.assertEqual(
                    set_pin.default_start(None), {'card': card.id})
                set_pin.start.pin = '2468'
                set_pin.start.confirmation = '2469'
                with self.assertRaises(WalletPinError) as cm:
                    set_pin.transition_set_()
                self.assertMessage(
                    cm, 'msg_card_pin_confirmation', 'type the same digits',
                    card=card.rec_name)
                self.assertIsNone(set_pin.start.pin)
                set_pin.start.pin = set_pin.start.confirmation = '2468'
                self.assertEqual(set_pin.transition_set_(), 'end')
                self.assertIsNone(set_pin.start.pin)
            card = Card(card.id)
            self.assertTrue(card.has_pin)
            self.assertNotIn('2468', card._get_pin_hash())
            card.check_pin('2468')

    @with_transaction()
    def test_pin(self):
        "Test a card with a PIN pays only with it"
        pool = Pool()
        Card = pool.get('fuel.payment.wallet.card')
        company = create_company()
        with set_company(company):
            wallet = create_wallet(company)
            card = create_card(wallet, pin='2468')
            free = create_card(wallet)
            fund(wallet, '100')
            self.assertTrue(card.has_pin)
            self.assertFalse(free.has_pin)

            self.pay(free, '1')
            self.pay(card, '1', pin='2468')
            with self.assertRaises(WalletPinError) as cm:
                self.pay(card, '1')
            self.assertMessage(
                cm, 'msg_card_pin_required', "Enter the PIN of card ",
                card=card.rec_name)
            with self.assertRaises(WalletPinError) as cm:
                self.pay(card, '1', pin='1357')
            self.assertMessage(
                cm, 'msg_card_pin_wrong',
                " attempts left before it is locked.",
                card=card.rec_name, left=MAX_PIN_FAILURES - 1)
            self.assertEqual(Card(card.id).pin_failures, 1)
            # a right PIN starts the count again
            self.pay(card, '1', pin='2468')
            self.assertEqual(Card(card.id).pin_failures, 0)
            self.assertEqual(self.balance(wallet), Decimal('97.00'))

            for pin in ['123', '1234567', 'abcd', '12 34', '١٢٣٤', 1234, None]:
                with self.subTest(pin=pin):
                    with self.assertRaises(WalletPinError) as cm:
                        card.set_pin(pin)
                    self.assertMessage(
                        cm, 'msg_card_pin_format', " must be 4 to 6 digits.",
                        card=card.rec_name)
            card.set_pin('013579')
            Card.check_pin(Card(card.id), '013579')

    @with_transaction()
    def test_pin_lockout(self):
        "Test five wrong PINs lock the card until a manager unlocks it"
        pool = Pool()
        Card = pool.get('fuel.payment.wallet.card')
        company = create_company()
        with set_company(company):
            wallet = create_wallet(company)
            card = create_card(wallet, pin='2468')
            fund(wallet, '100')
            for attempt in range(1, MAX_PIN_FAILURES):
                with self.assertRaises(WalletPinError) as cm:
                    self.pay(card, '1', pin='0000')
                self.assertEqual(cm.exception.message, message(
                        'msg_card_pin_wrong', card=card.rec_name,
                        left=MAX_PIN_FAILURES - attempt))
            with self.assertRaises(WalletPinError) as cm:
                self.pay(card, '1', pin='0000')
            self.assertMessage(
                cm, 'msg_card_pin_locked',
                " is locked after too many wrong attempts; ask a station "
                "manager to unlock it.",
                card=card.rec_name)
            card = Card(card.id)
            self.assertTrue(card.pin_locked)
            self.assertEqual(card.pin_failures, MAX_PIN_FAILURES)
            # the right PIN is refused too
            with self.assertRaises(WalletPinError) as cm:
                self.pay(card, '1', pin='2468')
            self.assertMessage(
                cm, 'msg_card_pin_locked', " is locked after too many ",
                card=card.rec_name)
            self.assertEqual(self.balance(wallet), Decimal('100'))

            Card.unlock_pin([card])
            card = Card(card.id)
            self.assertFalse(card.pin_locked)
            self.assertEqual(card.pin_failures, 0)
            self.pay(card, '1', pin='2468')
            self.assertEqual(self.balance(wallet), Decimal('99.00'))

    @with_transaction()
    def test_pin_hash_hidden(self):
        "Test nobody reads the PIN hash and it is a salted scrypt hash"
        pool = Pool()
        Card = pool.get('fuel.payment.wallet.card')
        ModelData = pool.get('ir.model.data')
        User = pool.get('res.user')
        company = create_company()
        with set_company(company):
            wallet = create_wallet(company)
            card = create_card(wallet, pin='2468')
            twin = create_card(wallet, pin='2468')
        admin = create_user('wallet_admin', company, 'role_operator_admin')
        platform = create_user(
            'platform_admin', company, 'role_platform_admin')
        User.write([platform], {'groups': [('add', [
                            ModelData.get_id('res', 'group_admin')])]})

        pin_hash = card._get_pin_hash()
        scheme, n, r, p, salt, key = pin_hash.split('$')
        self.assertEqual((scheme, n, r, p), ('scrypt', '16384', '8', '1'))
        self.assertEqual((len(salt), len(key)), (32, 64))
        self.assertNotIn('2468', pin_hash)
        self.assertNotEqual(twin._get_pin_hash(), pin_hash)

        for user in [admin, platform]:
            with Transaction().set_user(user.id), check_access():
                self.assertEqual(
                    Card.read([card.id], ['number', 'pin_failures'])[0][
                        'number'],
                    card.number)
                with self.assertRaises(AccessError):
                    Card.read([card.id], ['pin_hash'])
                with self.assertRaises(AccessError):
                    Card.search([('pin_hash', '!=', None)])
                with self.assertRaises(AccessError):
                    Card.write([Card(card.id)], {'pin_hash': 'scrypt$1'})
                with self.assertRaises(AccessError):
                    Card.write([Card(card.id)], {'pin_locked': False})
                self.assertTrue(Card(card.id).has_pin)

    # ---- limits --------------------------------------------------------

    @with_transaction()
    def test_day_and_month_limits(self):
        "Test the daily and monthly limits of a card"
        pool = Pool()
        Move = pool.get('fuel.payment.wallet.move')
        company = create_company()
        with set_company(company):
            wallet = create_wallet(company, 'corporate', '10000')
            card = create_card(
                wallet, plate='沪C11111', day_limit=Decimal('500'),
                month_limit=Decimal('800'))
            other = create_card(wallet, plate='沪C22222')
            day1, day2, day3 = (
                dt.datetime(2026, 3, d, 4, 0) for d in [14, 15, 16])
            self.pay(card, '300', date=day1)
            self.pay(other, '900', date=day2)
            first = self.pay(card, '200', date=day2)
            with self.assertRaises(WalletLimitError) as cm:
                self.pay(card, '300.01', date=day2)
            self.assertMessage(
                cm, 'msg_card_day_limit', 'The daily limit of card "',
                card=card.rec_name, limit=self.amount('500', company),
                left=self.amount('300', company))
            self.pay(card, '300', date=day2)
            with self.assertRaises(WalletLimitError) as cm:
                self.pay(card, '0.01', date=day2)
            self.assertMessage(
                cm, 'msg_card_day_limit', 'The daily limit of card "',
                card=card.rec_name, limit=self.amount('500', company),
                left=self.amount('0', company))
            # a refund gives the limits back
            Move.refund([first])
            self.pay(card, '100', date=day3)
            with self.assertRaises(WalletLimitError) as cm:
                self.pay(card, '100.01', date=day3)
            self.assertMessage(
                cm, 'msg_card_month_limit', 'The monthly limit of card "',
                card=card.rec_name, limit=self.amount('800', company),
                left=self.amount('100', company))
            self.pay(card, '100', date=day3)
            # a new month starts again
            self.pay(card, '500', date=dt.datetime(2026, 4, 1, 4, 0))
            self.assertEqual(
                self.balance(wallet), Decimal('-2200.00'))

    @with_transaction()
    def test_grade_limits(self):
        "Test the monthly limits of a card by grade"
        pool = Pool()
        Card = pool.get('fuel.payment.wallet.card')
        GradeLimit = pool.get('fuel.payment.wallet.card.grade_limit')
        company = create_company()
        with set_company(company):
            petrol = create_grade("92#")
            diesel = create_grade("0#", 'diesel')
            premium = create_grade("98#")
            wallet = create_wallet(company, 'corporate', '10000')
            card = create_card(wallet, plate='粤B00001', grade_limits=[
                    ('create', [{
                                'grade': diesel.id,
                                'month_limit': Decimal('1000')}])])

            self.pay(card, '600', lines=[(diesel, Decimal('600'))])
            self.pay(card, '2000', lines=[(petrol, Decimal('2000'))])
            with self.assertRaises(WalletLimitError) as cm:
                self.pay(card, '400.01', lines=[(diesel, Decimal('400.01'))])
            self.assertMessage(
                cm, 'msg_card_grade_limit', 'The monthly limit of card "',
                card=card.rec_name, grade=diesel.rec_name,
                limit=self.amount('1000', company),
                left=self.amount('400', company))
            move = self.pay(card, '400', lines=[(diesel, Decimal('400'))])
            self.assertEqual(move.grade, diesel)
            for lines in [None, [
                        (diesel, Decimal('1')), (petrol, Decimal('1'))]]:
                with self.assertRaises(WalletLimitError) as cm:
                    self.pay(card, '2', lines=lines)
                self.assertMessage(
                    cm, 'msg_card_grade_unknown',
                    " has limits by grade: pay for one grade at a time.",
                    card=card.rec_name)

            Card.write([card], {'grades_restricted': True, 'grade_limits': [
                        ('create', [{
                                    'grade': petrol.id,
                                    'month_limit': Decimal('99999')}])]})
            self.pay(card, '50', lines=[(petrol, Decimal('50'))])
            with self.assertRaises(WalletLimitError) as cm:
                self.pay(card, '50', lines=[(premium, Decimal('50'))])
            self.assertMessage(
                cm, 'msg_card_grade_restricted', " cannot pay for ",
                card=card.rec_name, grade=premium.rec_name)
            with self.assertRaisesMessage(
                    UserError, 'msg_card_grade_limit_unique',
                    "A card has one limit per grade."):
                GradeLimit.create([{
                            'card': card.id, 'grade': petrol.id,
                            'month_limit': Decimal(1)}])

    # ---- refunds -------------------------------------------------------

    @with_transaction()
    def test_refund_once(self):
        "Test a payment is refunded once"
        pool = Pool()
        Move = pool.get('fuel.payment.wallet.move')
        company = create_company()
        with set_company(company):
            wallet = create_wallet(company)
            card = create_card(wallet)
            recharge = fund(wallet, '100')
            payment = self.pay(card, '30')
            other = self.pay(card, '20')
            key = str(uuid.uuid4())

            refund, = Move.refund([payment], uuid=key)

            self.assertEqual(refund.kind, 'refund')
            self.assertEqual(refund.amount, Decimal('30.00'))
            self.assertEqual(refund.origin, payment)
            self.assertEqual(refund.card, card)
            self.assertEqual(refund.uuid, key)
            self.assertEqual(self.balance(wallet), Decimal('80.00'))
            self.assertEqual(Move.refund([payment], uuid=key), [refund])
            with self.assertRaises(WalletError) as cm:
                Move.refund([other, payment])
            self.assertMessage(
                cm, 'msg_wallet_refund_once', " is already refunded.",
                move=payment.rec_name)
            for move in [recharge, refund]:
                with self.assertRaises(WalletError) as cm:
                    Move.refund([move])
                self.assertMessage(
                    cm, 'msg_wallet_refund_kind',
                    " is not a payment: only payments are refunded.",
                    move=move.rec_name)
            self.assertEqual(self.balance(wallet), Decimal('80.00'))

    # ---- tenancy -------------------------------------------------------

    @with_transaction()
    def test_operators_see_their_wallets(self):
        "Test the staff of an operator see only its wallets"
        pool = Pool()
        Wallet = pool.get('fuel.payment.wallet')
        Card = pool.get('fuel.payment.wallet.card')
        Move = pool.get('fuel.payment.wallet.move')
        company_a = create_company("Operator A")
        company_b = create_company("Operator B")
        with set_company(company_a):
            wallet_a = create_wallet(company_a)
            card_a = create_card(wallet_a)
            move_a = fund(wallet_a, '10')
        with set_company(company_b):
            wallet_b = create_wallet(company_b)
            card_b = create_card(wallet_b)
            move_b = fund(wallet_b, '10')
        attendant = create_user('a_attendant', company_a, 'role_attendant')
        accountant = create_user('a_accountant', company_a, 'role_accountant')

        for user in [attendant, accountant]:
            with Transaction().set_user(user.id), check_access():
                self.assertEqual(Wallet.search([]), [wallet_a])
                self.assertEqual(Card.search([]), [card_a])
                self.assertEqual(Move.search([]), [move_a])
                for Model, record in [
                        (Wallet, wallet_b), (Card, card_b), (Move, move_b)]:
                    with self.assertRaises(AccessError):
                        Model.read([record.id], ['company'])
                with self.assertRaises(AccessError):
                    Wallet.write([Wallet(wallet_a.id)], {'kind': 'corporate'})




class WalletPinCommitTestCase(PaymentDatabaseTestCase):
    """Test the PIN failures survive the rollback of the caller

    In its own database: it commits."""

    def test_pin_failures_survive_rollback(self):
        "Test a wrong PIN is counted though the caller rolls back"
        with Transaction().start(DB_NAME, 1) as transaction:
            pool = Pool()
            Card = pool.get('fuel.payment.wallet.card')
            company = create_company()
            with set_company(company):
                wallet = create_wallet(company)
                card_id = create_card(wallet, pin='2468').id
            transaction.commit()

        def failures():
            with Transaction().start(DB_NAME, 1):
                card = Card(card_id)
                return card.pin_failures, card.pin_locked

        # the error rolls the caller's work back, the count stays
        with (self.assertRaises(WalletPinError),
                Transaction().start(DB_NAME, 1)):
            Card(card_id).check_pin('1111')
        self.assertEqual(failures(), (1, False))

        # a caller catching the error and committing counts it once
        with Transaction().start(DB_NAME, 1) as transaction:
            with self.assertRaises(WalletPinError):
                Card(card_id).check_pin('1111')
            transaction.commit()
        self.assertEqual(failures(), (2, False))

        # two wrong PINs in one transaction that rolls back count twice
        with (self.assertRaises(WalletPinError),
                Transaction().start(DB_NAME, 1)):
            with self.assertRaises(WalletPinError):
                Card(card_id).check_pin('1111')
            Card(card_id).check_pin('2222')
        self.assertEqual(failures(), (4, False))

        with (self.assertRaises(WalletPinError),
                Transaction().start(DB_NAME, 1)):
            Card(card_id).check_pin('3333')
        self.assertEqual(failures(), (MAX_PIN_FAILURES, True))

        # the Unlock PIN button starts the count again
        with Transaction().start(DB_NAME, 1) as transaction:
            Card.unlock_pin([Card(card_id)])
            transaction.commit()
        self.assertEqual(failures(), (0, False))
        with Transaction().start(DB_NAME, 1):
            Card(card_id).check_pin('2468')

