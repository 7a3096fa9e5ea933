# This file is part of fuelpay.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""A code read at a payment post without a fill to pay pre-pays a fill up
for the post's lifted nozzle, through the WeChat Pay simulator on
127.0.0.1: paid -> authorize command -> fill -> capture -> refund"""
import json
from decimal import Decimal

from trytond.i18n import gettext
from trytond.model.exceptions import DomainValidationError
from trytond.modules.company.tests import create_company, set_company
from trytond.pool import Pool
from trytond.tests.test_tryton import with_transaction

from addons.fuel_payment.gateway import mask_code
from addons.fuel_payment.tests.test_gateway import (
    OperatorOnceMixin,
    create_gateway,
)
from addons.fuel_payment.tests.tools import (
    PaymentDatabaseTestCase,
    SimulatorsMixin,
    create_payment_setup,
)

from ..event import loads
from . import test_payment_post
from .test_payment_post import MASKED, OTHER_CODE, WECHAT_CODE, message
from .tools import create_box

CEILING = Decimal('300.00')
# the post-pay test case's helpers, not its tests (deleted below)
_Post = test_payment_post.PaymentPostTestCase


class PostPrePayTestCase(
        SimulatorsMixin, OperatorOnceMixin, PaymentDatabaseTestCase):
    "Test pre-pay at a payment post"

    simulators = _Post.simulators
    item = _Post.item
    code = _Post.code
    run_queue = _Post.run_queue
    assertMasked = _Post.assertMasked
    _post_prepare = _Post.prepare

    @classmethod
    def build_operator(cls):
        company = create_company()
        with set_company(company):
            setup = create_payment_setup(company)
            gateway = create_gateway(
                company, cls.simulator, setup['methods']['wechat'])
            # another box than the post-pay tests' (committed: its user
            # login must not clash when both run on one database)
            box, _ = create_box(setup['station'], 'BOX-PP')
        return company, setup, gateway, box

    def prepare(self, face=False, ceiling=CEILING):
        pool = Pool()
        Station = pool.get('fuel.station')
        company, setup, box = self._post_prepare(face=face)
        Station.write([setup['station']], {'post_prepay_ceiling': ceiling})
        return company, setup, box

    def fill(self, box, quantity='20.00', nozzle=1, authorization=None):
        "Ingest a fill released by the authorize command authorization"
        pool = Pool()
        Event = pool.get('fuel.device.event')
        FuelTransaction = pool.get('fuel.payment.transaction')
        item = self.item('transaction_completed', {
                'station_nozzle': nozzle, 'volume': Decimal(quantity),
                'unit_price': Decimal('7.58'),
                'amount': (Decimal(quantity) * Decimal('7.58')).quantize(
                    Decimal('0.01')),
                'authorization': authorization,
                })
        result, = Event.ingest(box, [item])
        self.assertEqual(result['status'], 'accepted', result['error'])
        transaction, = FuelTransaction.search([('uuid', '=', item['uuid'])])
        return transaction

    def authorize_command(self, box, prepay):
        "The authorize command the box was sent for prepay"
        pool = Pool()
        Command = pool.get('fuel.device.command')
        command, = [
            c for c in Command.search([('box', '=', box.id)])
            if loads(c.payload).get('prepay') == prepay.id]
        return command

    @with_transaction()
    def test_code_prepays_the_calling_nozzle(self):
        """Test a code at a post without a fill to pay pre-pays a fill up
        of the station's ceiling for the post's lifted nozzle: the box
        authorizes it with the ceiling, the fill costs 151.60 and 148.40
        goes back to the customer"""
        pool = Pool()
        Event = pool.get('fuel.device.event')
        Payment = pool.get('fuel.payment.gateway.payment')
        PrePay = pool.get('fuel.payment.prepay')
        Command = pool.get('fuel.device.command')
        Refund = pool.get('fuel.payment.gateway.refund')
        FuelTransaction = pool.get('fuel.payment.transaction')
        company, setup, box = self.prepare()
        with set_company(company):
            # nozzle 5 is not one of the post's: another post's customer
            item = self.code(nozzles=[1, 2], calling=[1, 5])

            result, = Event.ingest(box, [item])

            event, = Event.search([('uuid', '=', item['uuid'])])
            self.assertEqual(event.state, 'processed', event.error)
            payment = event.gateway_payment
            prepay = payment.prepay
            self.assertEqual(result, {
                    'uuid': item['uuid'], 'status': 'accepted',
                    'error': None, 'payment': {
                        'number': payment.number, 'order': None,
                        'amount': '300.00', 'state': 'draft',
                        'prepay': {
                            'nozzle': 1, 'ceiling': '300.00',
                            'fill_up': True, 'state': 'draft'}}})
            self.assertEqual(
                (prepay.nozzle, prepay.amount, prepay.fill_up),
                (setup['nozzle'], CEILING, True))
            self.assertEqual(payment.source, 'post')
            self.assertEqual(payment.method, setup['methods']['wechat'])
            self.assertEqual(payment.code, MASKED)
            self.assertMasked(event)

            self.run_queue()

            payment = Payment(payment.id)
            self.assertEqual(payment.state, 'succeeded')
            sim_order = self.simulator.orders[payment.number]
            self.assertEqual(
                sim_order.data['payer']['auth_code'], WECHAT_CODE)
            self.assertEqual(sim_order.total, 30000)
            prepay = PrePay(prepay.id)
            self.assertEqual(prepay.state, 'paid')
            command = self.authorize_command(box, prepay)
            self.assertEqual(command.kind, 'authorize')
            payload = loads(command.payload)
            self.assertEqual(
                (payload['station_number'], payload['preset_amount']),
                (1, '300.00'))

            answer, = Command.answer(box, [{
                        'id': command.id, 'status': 'acked',
                        'result': {
                            'version': 1, 'station_number': 1,
                            'status': 'authorized'}}])
            self.assertEqual(answer['status'], 'accepted')
            self.assertEqual(PrePay(prepay.id).state, 'authorized')

            transaction = self.fill(box, authorization=command.id)

            prepay = PrePay(prepay.id)
            self.assertEqual(prepay.state, 'done')
            self.assertEqual(prepay.transaction, transaction)
            self.assertEqual(prepay.captured, Decimal('151.60'))
            self.assertEqual(FuelTransaction(transaction.id).state, 'paid')
            self.assertEqual(prepay.order.state, 'paid')
            refund, = Payment(payment.id).refunds
            self.assertEqual(refund.amount, Decimal('148.40'))
            Refund.submit([refund])
            self.assertEqual(Refund(refund.id).state, 'succeeded')
            self.assertEqual(
                [r['refund'] for r in sim_order.refunds.values()], [14840])

            # the fill is paid: the next code at the post, with the nozzle
            # hung up, finds nothing to pay
            again, = Event.ingest(box, [self.code(OTHER_CODE)])
        self.assertEqual(
            (again['status'], again['error']), ('error', message(
                    'msg_post_no_fill', post='post-1',
                    code=mask_code(OTHER_CODE))))
        self.assertEqual(PrePay.search([], count=True), 1)

    @with_transaction()
    def test_face_prepay(self):
        "Test a face device's code pre-pays by the face method, as face"
        pool = Pool()
        Event = pool.get('fuel.device.event')
        PrePay = pool.get('fuel.payment.prepay')
        company, setup, box = self.prepare(face=True)
        with set_company(company):
            Event.ingest(box, [self.code(source='face', calling=[1])])
            event, = Event.search([('kind', '=', 'payment_code')])
            payment = event.gateway_payment
            self.assertEqual(
                (payment.source, payment.method),
                ('face', setup['methods']['face']))
            self.run_queue()
        self.assertEqual(PrePay(payment.prepay.id).state, 'paid')

    @with_transaction()
    def test_fill_waiting_takes_priority(self):
        """Test a fill waiting at the post is paid by the code even when a
        nozzle of the post is lifted: no pre-payment"""
        pool = Pool()
        Event = pool.get('fuel.device.event')
        PrePay = pool.get('fuel.payment.prepay')
        company, _setup, box = self.prepare()
        with set_company(company):
            transaction = self.fill(box)
            result, = Event.ingest(box, [self.code(calling=[1])])
            event, = Event.search([('kind', '=', 'payment_code')])
        self.assertEqual(result['status'], 'accepted')
        self.assertNotIn('prepay', result['payment'])
        self.assertEqual(result['payment']['amount'], '151.60')
        self.assertEqual(event.gateway_payment.order, transaction.order)
        self.assertEqual(PrePay.search([]), [])

    @with_transaction()
    def test_several_calling_nozzles_refused(self):
        "Test two lifted nozzles at the post: the post cannot tell which"
        pool = Pool()
        Event = pool.get('fuel.device.event')
        Payment = pool.get('fuel.payment.gateway.payment')
        PrePay = pool.get('fuel.payment.prepay')
        company, _setup, box = self.prepare()
        with set_company(company):
            result, = Event.ingest(
                box, [self.code(nozzles=[1, 2], calling=[2, 1])])
            event, = Event.search([('kind', '=', 'payment_code')])
        expected = message(
            'msg_post_several_calling', post='post-1', code=MASKED,
            nozzles='1, 2')
        self.assertEqual(
            (result['status'], result['error']), ('error', expected))
        self.assertEqual((event.state, event.error), ('error', expected))
        self.assertMasked(event)
        self.assertEqual(Payment.search([]), [])
        self.assertEqual(PrePay.search([]), [])

    @with_transaction()
    def test_no_ceiling_or_no_calling_is_no_fill(self):
        """Test a station without a ceiling, a post without a lifted nozzle
        and an older box without the calling field: nothing to pay"""
        pool = Pool()
        Event = pool.get('fuel.device.event')
        Station = pool.get('fuel.station')
        Payment = pool.get('fuel.payment.gateway.payment')
        PrePay = pool.get('fuel.payment.prepay')
        company, setup, box = self.prepare()
        with set_company(company):
            results = Event.ingest(box, [
                    self.code(calling=[]),
                    self.code(OTHER_CODE),
                    ])
            Station.write(
                [setup['station']], {'post_prepay_ceiling': None})
            results += Event.ingest(box, [self.code(calling=[1])])
        self.assertEqual([(r['status'], r['error']) for r in results], [
                ('error', message(
                        'msg_post_no_fill', post='post-1', code=code))
                for code in [MASKED, mask_code(OTHER_CODE), MASKED]])
        self.assertEqual(Payment.search([]), [])
        self.assertEqual(PrePay.search([]), [])

    @with_transaction()
    def test_prepaid_nozzle_refused(self):
        """Test a nozzle whose pre-payment is being paid or is paid is not
        pre-paid again by another code"""
        pool = Pool()
        Event = pool.get('fuel.device.event')
        Payment = pool.get('fuel.payment.gateway.payment')
        PrePay = pool.get('fuel.payment.prepay')
        company, _setup, box = self.prepare()
        self.simulator.paying_queries = -1  # the customer confirms late
        with set_company(company):
            first, = Event.ingest(box, [self.code(calling=[1])])
            self.run_queue()
            prepay, = PrePay.search([])
            self.assertEqual(prepay.state, 'draft')
            paying, = Event.ingest(box, [self.code(OTHER_CODE, calling=[1])])
            self.assertEqual(
                (paying['status'], paying['error']), ('error', gettext(
                        'fuel_payment.msg_prepay_paying',
                        prepay=prepay.rec_name)))

            # the customer confirms: the next query finds it paid
            self.simulator.paying_queries = 0
            Payment.poll(prepay.payments)
            prepay = PrePay(prepay.id)
            self.assertEqual(prepay.state, 'paid')
            busy, = Event.ingest(box, [self.code(OTHER_CODE, calling=[1])])
        self.assertEqual(first['status'], 'accepted')
        self.assertEqual(
            (busy['status'], busy['error']), ('error', gettext(
                    'fuel_payment.msg_prepay_nozzle_busy',
                    prepay=prepay.rec_name)))
        self.assertEqual(PrePay.search([], count=True), 1)
        self.assertEqual(
            [p.code for p in prepay.payments], [MASKED])

    @with_transaction()
    def test_stale_code_not_prepaid(self):
        "Test a code the box sends late pre-pays nothing"
        pool = Pool()
        Event = pool.get('fuel.device.event')
        PrePay = pool.get('fuel.payment.prepay')
        company, _setup, box = self.prepare()
        with set_company(company):
            item = self.code(calling=[1])
            item['device_time'] = '2020-01-01T00:00:00+00:00'
            result, = Event.ingest(box, [item])
        self.assertEqual(
            (result['status'], result['error']), ('error', message(
                    'msg_post_code_stale', post='post-1', code=MASKED,
                    minutes=5)))
        self.assertEqual(PrePay.search([]), [])

    @with_transaction()
    def test_invalid_calling(self):
        "Test a calling field that is not a list of numbers is refused"
        pool = Pool()
        Event = pool.get('fuel.device.event')
        PrePay = pool.get('fuel.payment.prepay')
        company, _setup, box = self.prepare()
        with set_company(company):
            results = Event.ingest(box, [
                    self.code(calling=1), self.code(calling=['1'])])
        self.assertEqual([r['error'] for r in results], [
                message('msg_value_invalid', field='calling', value='1'),
                message('msg_value_invalid', field='calling',
                    value=json.dumps(['1'])),
                ])
        self.assertEqual(PrePay.search([]), [])

    @with_transaction()
    def test_ceiling_more_than_zero(self):
        "Test a ceiling of zero is refused: empty is the way to turn it off"
        pool = Pool()
        Station = pool.get('fuel.station')
        _company, setup, _box = self.prepare()
        with self.assertRaises(DomainValidationError):
            Station.write([setup['station']], {'post_prepay_ceiling': 0})

    @with_transaction()
    def test_station_form_shows_the_ceiling(self):
        "Test the station form has the ceiling, in the currency's digits"
        pool = Pool()
        Station = pool.get('fuel.station')
        view = Station.fields_view_get(view_type='form')
        self.assertIn('<field name="post_prepay_ceiling"/>', view['arch'])
        field = view['fields'].get('post_prepay_ceiling', {})
        self.assertEqual(
            (field.get('type'), field.get('string')),
            ('numeric', "Post Pre-pay Ceiling"))

del PaymentDatabaseTestCase, _Post
