# This file is part of fuelpay.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""Payment codes read at a payment post pay the fill waiting there,
through the WeChat Pay simulator on 127.0.0.1"""
import datetime as dt
import json
import uuid
from decimal import Decimal

from trytond.i18n import gettext
from trytond.modules.company.tests import create_company, set_company
from trytond.pool import Pool
from trytond.tests.test_tryton import with_transaction

from addons.fuel_payment.gateway import mask_code
from addons.fuel_payment.tests.sim_wechat import WeChatSimulator
from addons.fuel_payment.tests.test_gateway import (
    WECHAT_CODE,
    OperatorOnceMixin,
    create_gateway,
)
from addons.fuel_payment.tests.tools import (
    PaymentDatabaseTestCase,
    SimulatorsMixin,
    create_payment_setup,
)

from .tools import create_box

MASKED = mask_code(WECHAT_CODE)
OTHER_CODE = '104567890123456789'


def message(msg_id, **values):
    return gettext(f'fuel_device.{msg_id}', **values)


class PaymentPostTestCase(
        SimulatorsMixin, OperatorOnceMixin, PaymentDatabaseTestCase):
    "Test payment codes read at a payment post"

    simulators = {
        'simulator': WeChatSimulator,
        }

    @classmethod
    def build_operator(cls):
        company = create_company()
        with set_company(company):
            setup = create_payment_setup(company)
            gateway = create_gateway(
                company, cls.simulator, setup['methods']['wechat'])
            box, _ = create_box(setup['station'], 'BOX-1')
        return company, setup, gateway, box

    def prepare(self, face=False):
        # at the start of the test body: with_transaction runs it again
        # on a rolled back database when a table must be locked first
        pool = Pool()
        Method = pool.get('sale.point.payment.method')
        self.simulator.orders.clear()
        self.simulator.paying_queries = None
        self.simulator.refuse = None
        self.simulator.down = False
        self.seq = 0
        company, setup, gateway, box = self.operator()
        if face:
            Method.write([setup['methods']['face']], {'gateway': gateway.id})
        return company, setup, box

    def item(self, kind, payload, uuid_=None):
        self.seq += 1
        return {
            'uuid': uuid_ or str(uuid.uuid4()), 'seq': self.seq,
            'kind': kind, 'device': 'post-1',
            'device_time': dt.datetime.now(dt.UTC).isoformat(),
            'payload': payload,
            }

    def fill(self, box, quantity='20.00', nozzle=1):
        "Ingest a fill of quantity at 7.58 reported by box; return it"
        pool = Pool()
        Event = pool.get('fuel.device.event')
        FuelTransaction = pool.get('fuel.payment.transaction')
        item = self.item('transaction_completed', {
                'station_nozzle': nozzle, 'volume': Decimal(quantity),
                'unit_price': Decimal('7.58'),
                'amount': (Decimal(quantity) * Decimal('7.58')).quantize(
                    Decimal('0.01')),
                })
        result, = Event.ingest(box, [item])
        self.assertEqual(result['status'], 'accepted', result['error'])
        transaction, = FuelTransaction.search([('uuid', '=', item['uuid'])])
        self.assertEqual(transaction.state, 'to_pay')
        return transaction

    def code(self, code=WECHAT_CODE, source='scanner', nozzles=(1,),
            **values):
        return self.item('payment_code', dict({
                    'version': 1, 'code': code, 'source': source,
                    'post': 'post-1', 'nozzles': list(nozzles),
                    }, **values))

    def run_queue(self):
        "Run the queued tasks as the worker would (the channel's calls)"
        pool = Pool()
        Queue = pool.get('ir.queue')
        for task in Queue.search([('finished_at', '=', None)]):
            task.run()
            task.save()

    def assertMasked(self, event):
        self.assertNotIn(WECHAT_CODE, event.payload)
        self.assertEqual(json.loads(event.payload)['code'], MASKED)

    @with_transaction()
    def test_code_pays_the_fill(self):
        "Test a code scanned at the post pays the one fill at its nozzles"
        pool = Pool()
        Event = pool.get('fuel.device.event')
        Payment = pool.get('fuel.payment.gateway.payment')
        company, setup, box = self.prepare()
        with set_company(company):
            transaction = self.fill(box)
            item = self.code()

            result, = Event.ingest(box, [item])

            event, = Event.search([('uuid', '=', item['uuid'])])
            self.assertEqual(event.state, 'processed')
            payment = event.gateway_payment
            self.assertEqual(result, {
                    'uuid': item['uuid'], 'status': 'accepted',
                    'error': None, 'payment': {
                        'number': payment.number,
                        'order': transaction.order.number,
                        'amount': '151.60', 'state': 'draft'}})
            self.assertEqual(payment.source, 'post')
            self.assertEqual(payment.method, setup['methods']['wechat'])
            self.assertEqual(payment.code, MASKED)
            self.assertEqual(payment.order, transaction.order)
            self.assertMasked(event)

            self.run_queue()

        payment = Payment(payment.id)
        self.assertEqual(payment.state, 'succeeded')
        self.assertEqual(payment.order.state, 'paid')
        self.assertEqual(
            [t.state for t in payment.order.transactions], ['paid'])
        sim_order = self.simulator.orders[payment.number]
        self.assertEqual(sim_order.data['payer']['auth_code'], WECHAT_CODE)
        self.assertEqual(sim_order.total, 15160)
        # once paid, the next code at the post finds nothing to pay
        with set_company(company):
            again, = Event.ingest(box, [self.code(OTHER_CODE)])
        self.assertEqual(again['status'], 'error')
        self.assertEqual(again['error'], message(
                'msg_post_no_fill', post='post-1',
                code=mask_code(OTHER_CODE)))

    @with_transaction()
    def test_face_source_recorded(self):
        "Test a face device's code is paid by the face method, as face"
        pool = Pool()
        Event = pool.get('fuel.device.event')
        Payment = pool.get('fuel.payment.gateway.payment')
        company, setup, box = self.prepare(face=True)
        with set_company(company):
            self.fill(box)
            Event.ingest(box, [self.code(source='face')])
            event, = Event.search([('kind', '=', 'payment_code')])
            payment = event.gateway_payment
            self.assertEqual(payment.source, 'face')
            self.assertEqual(payment.method, setup['methods']['face'])
            self.run_queue()
        payment = Payment(payment.id)
        self.assertEqual(payment.state, 'succeeded')
        self.assertEqual(payment.order.state, 'paid')

    @with_transaction()
    def test_no_fill(self):
        """Test a code at a post without a fill to pay is stored in error,
        charges nothing and keeps no usable code"""
        pool = Pool()
        Event = pool.get('fuel.device.event')
        Payment = pool.get('fuel.payment.gateway.payment')
        Queue = pool.get('ir.queue')
        company, _setup, box = self.prepare()
        with set_company(company):
            # a fill at another nozzle than the post's
            self.fill(box)
            result, = Event.ingest(box, [self.code(nozzles=[2])])
            event, = Event.search([('kind', '=', 'payment_code')])
        expected = message('msg_post_no_fill', post='post-1', code=MASKED)
        self.assertEqual(
            (result['status'], result['error']), ('error', expected))
        self.assertEqual((event.state, event.error), ('error', expected))
        self.assertIsNone(event.gateway_payment)
        self.assertMasked(event)
        self.assertEqual(Payment.search([]), [])
        self.assertEqual(Queue.search([]), [])

    @with_transaction()
    def test_stale_code_not_charged(self):
        """Test a code the box sends long after it was read (the box was
        offline) is not charged"""
        pool = Pool()
        Event = pool.get('fuel.device.event')
        Payment = pool.get('fuel.payment.gateway.payment')
        company, _setup, box = self.prepare()
        with set_company(company):
            self.fill(box)
            item = self.code()
            item['device_time'] = (
                dt.datetime.now(dt.UTC) - dt.timedelta(minutes=6)).isoformat()
            result, = Event.ingest(box, [item])
            event, = Event.search([('kind', '=', 'payment_code')])
        expected = message(
            'msg_post_code_stale', post='post-1', code=MASKED, minutes=5)
        self.assertEqual(
            (result['status'], result['error']), ('error', expected))
        self.assertEqual(event.state, 'error')
        self.assertMasked(event)
        self.assertEqual(Payment.search([]), [])

    @with_transaction()
    def test_several_fills(self):
        "Test two fills waiting at the post send the customer to the counter"
        pool = Pool()
        Event = pool.get('fuel.device.event')
        Payment = pool.get('fuel.payment.gateway.payment')
        company, _setup, box = self.prepare()
        with set_company(company):
            first = self.fill(box)
            self.fill(box, '10.00')
            result, = Event.ingest(box, [self.code()])
        self.assertEqual(result['status'], 'error')
        self.assertEqual(result['error'], message(
                'msg_post_several_fills', post='post-1', code=MASKED))
        self.assertEqual(Payment.search([]), [])
        self.assertIsNone(first.order)

    @with_transaction()
    def test_replay_charges_once(self):
        """Test a replayed event is a duplicate answered with the first
        result, and another code for the fill being paid is refused"""
        pool = Pool()
        Event = pool.get('fuel.device.event')
        Payment = pool.get('fuel.payment.gateway.payment')
        company, _setup, box = self.prepare()
        self.simulator.paying_queries = -1  # the customer confirms late
        with set_company(company):
            self.fill(box)
            item = self.code()
            first, = Event.ingest(box, [item])
            self.run_queue()
            again, = Event.ingest(box, [item])
            self.run_queue()
            other, = Event.ingest(box, [self.code(OTHER_CODE)])
            self.run_queue()
        self.assertEqual(first['status'], 'accepted')
        self.assertEqual(again, dict(
                first, status='duplicate',
                payment=dict(first['payment'], state='pending')))
        payment, = Payment.search([])
        self.assertEqual(payment.state, 'pending')
        self.assertEqual(list(self.simulator.orders), [payment.number])
        self.assertEqual(other['status'], 'error')
        self.assertEqual(other['error'], message(
                'msg_post_fill_being_paid', post='post-1',
                code=mask_code(OTHER_CODE)))
        self.assertEqual(Event.search([], count=True), 3)

    @with_transaction()
    def test_refused_code_then_paid(self):
        """Test a code no channel takes is refused with the reason and
        the fill's order is paid by the next code"""
        pool = Pool()
        Event = pool.get('fuel.device.event')
        Payment = pool.get('fuel.payment.gateway.payment')
        company, _setup, box = self.prepare()
        unknown = '994567890123456789'
        with set_company(company):
            transaction = self.fill(box)
            refused, = Event.ingest(box, [self.code(unknown)])
            self.assertEqual(refused['status'], 'error')
            self.assertEqual(refused['error'], gettext(
                    'fuel_payment.msg_gateway_code_unknown',
                    code=mask_code(unknown)))
            event, = Event.search([('kind', '=', 'payment_code')])
            self.assertNotIn(unknown, event.payload)
            order = transaction.order
            self.assertEqual(order.state, 'draft')

            paid, = Event.ingest(box, [self.code()])
            self.run_queue()
        self.assertEqual(paid['status'], 'accepted')
        payment, = Payment.search([])
        self.assertEqual((payment.order, payment.state), (order, 'succeeded'))

    @with_transaction()
    def test_invalid_payload(self):
        "Test a payload the server cannot read is stored in error, masked"
        pool = Pool()
        Event = pool.get('fuel.device.event')
        company, _setup, box = self.prepare()
        with set_company(company):
            self.fill(box)
            results = Event.ingest(box, [
                    self.code(WECHAT_CODE + 'X'),
                    self.code(source='nfc'),
                    self.code(nozzles=[]),
                    self.code(version=2),
                    # refused before the payment: the whole item is kept
                    dict(self.code(), device_time='yesterday'),
                    ])
            events = Event.search(
                [('kind', '=', 'payment_code')], order=[('seq', 'ASC')])
        self.assertEqual(
            [r['status'] for r in results], ['error'] * 5)
        self.assertEqual([r['error'] for r in results[:4]], [
                message('msg_value_invalid', field='code',
                    value=json.dumps(MASKED + '*')),
                message('msg_value_invalid', field='source',
                    value='"nfc"'),
                message('msg_value_invalid', field='nozzles', value='[]'),
                message('msg_value_invalid', field='version', value='2'),
                ])
        for event in events:
            self.assertNotIn(WECHAT_CODE, event.payload)
            self.assertNotIn(WECHAT_CODE, event.error)
        self.assertEqual(
            json.loads(events[-1].payload)['payload']['code'], MASKED)


del PaymentDatabaseTestCase
