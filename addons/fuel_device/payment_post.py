# This file is part of fuelpay.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""With fuel_payment: a payment code read at a payment post pays the fill
waiting at the post's nozzles

The box sends each code its post's reader (a payment-code scanner or a
face-pay device in scanner mode) read as a ``payment_code`` event
(payload version 1: ``code``, ``source`` face or scanner, ``post``,
``nozzles``: the station numbers the post serves).  Right after the
ingestion, the fill to pay is looked for among the box station's fills
to pay at those nozzles: exactly one is charged through the gateway
(`fuel.payment.gateway.payment.pay_code`, source ``face`` or ``post``);
none, several, or one already being paid put the event in error with the
reason, which the box gets in the event's result.

Pre-pay at the post: when no fill waits there, the box names in the
optional ``calling`` field the post's nozzles that are lifted and not
authorized (fuelling point calling).  If exactly one is, and the station
has a `post_prepay_ceiling`, the code pays a fill-up pre-payment of that
ceiling for the nozzle (`fuel.payment.prepay`): once paid, the box is
sent an ``authorize`` command with the ceiling as preset, the fill it
releases is captured and the difference refunded.  Several calling
nozzles are refused (the post cannot tell which one the customer holds).
Fills waiting at the post take priority: a code never pre-pays while
one waits.

A replayed event (same uuid) is a duplicate and charges nothing again.
The code is a one-time credential: once processed, the event's payload
keeps its first 4 digits only (`mask_code`), whatever the outcome."""
from trytond.exceptions import UserError
from trytond.i18n import gettext
from trytond.model import fields
from trytond.modules.currency.fields import Monetary
from trytond.pool import Pool, PoolMeta
from trytond.transaction import without_check_access

from addons.fuel_payment.gateway import mask_code

from .event import dumps, loads

# The payload layout of payment_code events this server reads
PAYMENT_CODE_VERSION = 1
# A code read longer ago than this (seconds, by the box's clock against
# ours) is not charged: the channels' codes live about a minute, and a
# customer who waited that long has paid otherwise (a box that was
# offline sends its codes late)
CODE_MAX_AGE = 300
# The reader's source -> the gateway payment's source
PAYMENT_SOURCES = {
    'face': 'face',
    'scanner': 'post',
    }


def mask_payload(payload):
    """payload with its payment code masked, also inside the whole item
    that an event in error keeps"""
    if not isinstance(payload, dict):
        return payload
    payload = dict(payload)
    if isinstance(payload.get('code'), str):
        payload['code'] = mask_code(payload['code'])
    if isinstance(payload.get('payload'), dict):
        payload['payload'] = mask_payload(payload['payload'])
    return payload


class Station(metaclass=PoolMeta):
    __name__ = 'fuel.station'

    post_prepay_ceiling = Monetary(
        "Post Pre-pay Ceiling", currency='currency', digits='currency',
        domain=['OR',
            ('post_prepay_ceiling', '=', None),
            ('post_prepay_ceiling', '>', 0),
            ],
        help="When no fill waits at a payment post, a code read there "
        "pre-pays a fill up to this amount for the one lifted nozzle of "
        "the post; the rest is refunded after the fill.\n"
        "Leave empty for posts that only pay fills.")
    currency = fields.Function(
        fields.Many2One('currency.currency', "Currency"),
        'on_change_with_currency')

    @fields.depends('company')
    def on_change_with_currency(self, name=None):
        return self.company.currency if self.company else None


class Event(metaclass=PoolMeta):
    __name__ = 'fuel.device.event'

    gateway_payment = fields.Many2One(
        'fuel.payment.gateway.payment', "Gateway Payment", readonly=True,
        ondelete='RESTRICT',
        help="The payment that the payment code read at a post started.")

    @property
    def result(self):
        result = super().result
        payment = self.gateway_payment
        if self.kind == 'payment_code' and payment:
            # what the post may show while the customer confirms
            result['payment'] = {
                'number': payment.number,
                'order': payment.order.number if payment.order else None,
                'amount': str(payment.amount),
                'state': payment.state,
                }
            if payment.prepay:
                # a fill up paid in advance: the amount is its ceiling
                prepay = payment.prepay
                result['payment']['prepay'] = {
                    'nozzle': prepay.nozzle.station_number,
                    'ceiling': str(prepay.amount),
                    'fill_up': prepay.fill_up,
                    'state': prepay.state,
                    }
        return result

    @classmethod
    def ingest(cls, box, items):
        results = super().ingest(box, items)
        uuids = [
            r['uuid'] for r in results
            if r['status'] != 'duplicate' and r['uuid']]
        events = cls.search([
                ('box', '=', box.id),
                ('uuid', 'in', uuids),
                ('kind', '=', 'payment_code'),
                ])
        if events:
            cls.process_payment_codes(
                box, [e for e in events if e.state == 'received'])
            # an event stored in error keeps its code too: masked as well
            cls.forget_codes(events)
            by_uuid = {e.uuid: e for e in events}
            results = [
                by_uuid[r['uuid']].result if r['uuid'] in by_uuid else r
                for r in results]
        return results

    @classmethod
    def process_payment_codes(cls, box, events):
        """Charge the code of each event for the fill waiting at its post;
        an event that pays nothing keeps the reason in state error"""
        for event in events:
            try:
                with without_check_access():
                    event.gateway_payment = event.pay_at_post(box)
            except UserError as exception:
                event.state = 'error'
                event.error = exception.message
            else:
                event.state = 'processed'
        cls.save(events)

    @classmethod
    def forget_codes(cls, events):
        "Keep only the first digits of the payment code of events"
        for event in events:
            event.payload = dumps(mask_payload(loads(event.payload)))
        cls.save(events)

    def _post_payload(self):
        """Return (code, source, post, nozzles, calling) of the payload, or
        raise; calling is empty when the box does not send it"""
        payload = loads(self.payload)
        if not isinstance(payload, dict):
            raise UserError(gettext(
                    'fuel_device.msg_value_invalid',
                    field='payload', value='...'))
        code = payload.get('code')
        if not isinstance(code, str) or not code.isdigit():
            raise UserError(gettext(
                    'fuel_device.msg_value_invalid', field='code',
                    value=dumps(mask_code(code) if isinstance(code, str)
                        else code)))
        for field, valid in [
                ('version', payload.get('version') == PAYMENT_CODE_VERSION),
                ('source', payload.get('source') in PAYMENT_SOURCES),
                ('nozzles', isinstance(payload.get('nozzles'), list)
                    and payload['nozzles'] and all(
                        type(n) is int for n in payload['nozzles'])),
                # optional: an older box does not send it
                ('calling', payload.get('calling') is None or (
                        isinstance(payload['calling'], list) and all(
                            type(n) is int for n in payload['calling']))),
                ]:
            if not valid:
                raise UserError(gettext(
                        'fuel_device.msg_value_invalid', field=field,
                        value=dumps(payload.get(field))))
        post = payload.get('post') if isinstance(
            payload.get('post'), str) else self.device
        return (code, payload['source'], post, payload['nozzles'],
            payload.get('calling') or [])

    def pay_at_post(self, box):
        """Start the payment of the fill waiting at the event's post with
        its code, or without one, the pre-payment of the post's calling
        nozzle; return the gateway payment, raise UserError with the
        reason when there is not exactly one fill or nozzle to pay"""
        pool = Pool()
        FuelTransaction = pool.get('fuel.payment.transaction')
        Order = pool.get('fuel.payment.order')
        Payment = pool.get('fuel.payment.gateway.payment')
        code, source, post, nozzles, calling = self._post_payload()
        masked = mask_code(code)
        if self.device_time and self.received_date and (
                (self.received_date - self.device_time).total_seconds()
                > CODE_MAX_AGE):
            raise UserError(gettext(
                    'fuel_device.msg_post_code_stale',
                    post=post, code=masked,
                    minutes=CODE_MAX_AGE // 60))
        # merged with other fills, or a payment under way: being paid (the
        # payment page's rule too)
        payable, being_paid = FuelTransaction.to_pay_at(
            box.station, nozzles)
        if len(payable) > 1 or (payable and being_paid):
            raise UserError(gettext(
                    'fuel_device.msg_post_several_fills',
                    post=post, code=masked))
        if being_paid:
            raise UserError(gettext(
                    'fuel_device.msg_post_fill_being_paid',
                    post=post, code=masked))
        if not payable:
            return self.prepay_at_post(
                box, code, source, post, nozzles, calling)
        fill, = payable
        order = fill.order or Order.create_for([fill])
        return Payment(Payment.pay_code(
                order.id, code, source=PAYMENT_SOURCES[source]))

    def prepay_at_post(self, box, code, source, post, nozzles, calling):
        """Start with code the fill-up pre-payment of the station's ceiling
        for the one calling nozzle of the post; return the gateway payment,
        raise UserError when there is none to pre-pay"""
        pool = Pool()
        Payment = pool.get('fuel.payment.gateway.payment')
        PrePay = pool.get('fuel.payment.prepay')
        masked = mask_code(code)
        station = box.station
        # only the post's own nozzles, each once
        calling = sorted(set(calling) & set(nozzles))
        if not station.post_prepay_ceiling or not calling:
            raise UserError(gettext(
                    'fuel_device.msg_post_no_fill', post=post, code=masked))
        if len(calling) > 1:
            raise UserError(gettext(
                    'fuel_device.msg_post_several_calling', post=post,
                    code=masked,
                    nozzles=', '.join(str(n) for n in calling)))
        nozzle, = calling
        # PrePay.start refuses a nozzle pre-paid already, or whose
        # pre-payment the customer is still confirming
        return Payment(PrePay.start(
                station.id, nozzle, station.post_prepay_ceiling, code=code,
                fill_up=True, source=PAYMENT_SOURCES[source]))
