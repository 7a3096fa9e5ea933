# This file is part of fuelpay.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""With fuel_payment: the fills a box reports become fuelling
transactions priced by the platform; pre-payments are authorized through
the station's box and given back when their authorization expires unused"""
import contextlib
import logging

from trytond.i18n import gettext
from trytond.model import fields
from trytond.pool import Pool, PoolMeta
from trytond.transaction import without_check_access

from addons.fuel_payment.exceptions import PrePayError
from addons.fuel_payment.transaction import to_decimal

from .event import dumps, loads
from .exceptions import PayloadError

logger = logging.getLogger(__name__)

# The payload version of the authorization_expired events this server reads
EXPIRED_VERSION = 1
# A pre-paid nozzle not used within 3 minutes of its authorization is
# given back: time to walk from the counter or the payment post to the car
# and start (an assumption: forecourt controllers such as DOMS or PTS-2
# have such an authorization timeout, their defaults are not checked here)
DEFAULT_LIFT_TIMEOUT = 180


class Station(metaclass=PoolMeta):
    __name__ = 'fuel.station'

    prepay_lift_timeout = fields.Integer(
        "Pre-pay Lift Timeout", required=True,
        domain=[('prepay_lift_timeout', '>', 0)],
        help="In seconds: a pre-paid nozzle that is not used within this "
        "time after its authorization is stopped by the box and the "
        "pre-payment is given back in full.")

    @classmethod
    def default_prepay_lift_timeout(cls):
        return DEFAULT_LIFT_TIMEOUT


class Event(metaclass=PoolMeta):
    __name__ = 'fuel.device.event'

    @classmethod
    def ingest(cls, box, items):
        results = super().ingest(box, items)
        uuids = [
            r['uuid'] for r in results
            if r['status'] == 'accepted' and r['uuid']]
        events = cls.search([
                ('box', '=', box.id),
                ('uuid', 'in', uuids),
                ('kind', 'in', [
                        'transaction_completed', 'authorization_expired']),
                ('state', '=', 'received'),
                ])
        if events:
            completed = [
                e for e in events if e.kind == 'transaction_completed']
            if completed:
                cls.process_transactions(box, completed)
            expired = [
                e for e in events if e.kind == 'authorization_expired']
            if expired:
                cls.process_expired(box, expired)
            by_uuid = {e.uuid: e for e in events}
            results = [
                by_uuid[r['uuid']].result if r['uuid'] in by_uuid else r
                for r in results]
        return results

    @classmethod
    def process_expired(cls, box, events):
        """Give back in full the pre-payment of each authorize command
        the box stopped unused; one already captured, given back or
        cancelled is left as it is"""
        pool = Pool()
        PrePay = pool.get('fuel.payment.prepay')
        for event in events:
            try:
                command, payload = event._expired_command(box)
            except PayloadError as error:
                event.state, event.error = 'error', error.message
                continue
            event.state = 'processed'
            prepay_id = loads(command.payload or '{}').get('prepay')
            if type(prepay_id) is not int:
                # a plate preset or another authorization: nothing paid
                logger.info(
                    "box %s: authorization %s expired: no pre-payment",
                    box.identifier, command.id)
                continue
            with without_check_access():
                prepays = PrePay.search([
                        ('id', '=', prepay_id),
                        ('company', '=', box.station.company.id),
                        ], limit=1)
                if not prepays:
                    continue
                # a fill of the same nozzle is captured under this lock
                PrePay.lock(prepays)
                prepay = PrePay(prepays[0].id)
                if (prepay.state not in {'paid', 'authorized'}
                        or prepay.transaction):
                    logger.info(
                        "box %s: authorization %s expired: pre-payment %s "
                        "already %s, left as it is", box.identifier,
                        command.id, prepay.id, prepay.state)
                    continue
                timeout = loads(command.payload).get(
                    'lift_timeout', payload.get('lift_timeout'))
                try:
                    PrePay.abort([prepay], reason=gettext(
                            'fuel_device.msg_prepay_lift_expired',
                            prepay=prepay.rec_name, seconds=timeout))
                except PrePayError as error:
                    event.state, event.error = 'error', error.message
        cls.save(events)

    def _expired_command(self, box):
        """The authorize command of box that this authorization_expired
        event names, and the event's payload; raises PayloadError with the
        reason the event is refused"""
        pool = Pool()
        Command = pool.get('fuel.device.command')
        payload = loads(self.payload)
        if not isinstance(payload, dict):
            raise PayloadError(gettext(
                    'fuel_device.msg_value_invalid',
                    field='payload', value=dumps(payload)))
        for field in ['version', 'authorization', 'station_number']:
            if payload.get(field) is None:
                raise PayloadError(gettext(
                        'fuel_device.msg_value_missing', field=field))
            value = payload[field]
            if type(value) is not int or (
                    field == 'version' and value != EXPIRED_VERSION):
                raise PayloadError(gettext(
                        'fuel_device.msg_value_invalid',
                        field=field, value=dumps(value)))
        with without_check_access():
            commands = Command.search([
                    ('id', '=', payload['authorization']),
                    ('box', '=', box.id),
                    ('kind', '=', 'authorize'),
                    ], limit=1)
        if not commands:
            raise PayloadError(gettext(
                    'fuel_device.msg_command_unknown',
                    command=payload['authorization']))
        command, = commands
        number = loads(command.payload or '{}').get('station_number')
        if number != payload['station_number']:
            raise PayloadError(gettext(
                    'fuel_device.msg_expired_station_number',
                    command=command.id, number=payload['station_number'],
                    expected=number))
        return command, payload

    @classmethod
    def process_transactions(cls, box, events):
        """Ingest the completed fills of events as fuelling transactions
        of the box's station; an event the platform refuses keeps the
        reason in state error"""
        pool = Pool()
        FuelTransaction = pool.get('fuel.payment.transaction')
        items = [event.transaction_item(box) for event in events]
        with without_check_access():
            results = FuelTransaction.ingest(items)
        for event, result in zip(events, results, strict=True):
            if result['status'] == 'error':
                event.state = 'error'
                event.error = result['message']
            else:
                event.state = 'processed'
        cls.save(events)

    def transaction_item(self, box):
        "Return the fuel_payment ingestion item of a completed fill"
        payload = loads(self.payload) or {}
        volume = payload.get('volume')
        end = payload.get('totalizer_volume')
        start = None
        if end is not None and volume is not None:
            # the box reads the totalizer after the fill only
            # a bad figure is left for the ingestion to name
            with contextlib.suppress(ValueError, ArithmeticError):
                start = to_decimal(end) - to_decimal(volume)
        return {
            'uuid': self.uuid,
            'station': box.station.id,
            'nozzle': payload.get('station_nozzle'),
            'dispenser_reference': f'{self.device}#{self.seq}',
            'end_date': self.device_time or self.received_date,
            'quantity': volume,
            'unit_price': payload.get('unit_price'),
            'amount': payload.get('amount'),
            'totalizer_start': start,
            'totalizer_end': end,
            # the set the dispenser held, checked by the transaction
            'dispenser_price': payload.get('price_set_id'),
            # the authorize command that released the fill, if any
            'authorization': payload.get('authorization'),
            }


class FuellingTransaction(metaclass=PoolMeta):
    __name__ = 'fuel.payment.transaction'

    dispenser_price = fields.Many2One(
        'fuel.station.price', "Dispenser Price Set", readonly=True,
        ondelete='RESTRICT',
        help="The price set the dispenser held for the fill, as its box "
        "reported; it differs from the price set when the pump sold at "
        "an older price.")
    authorization = fields.Many2One(
        'fuel.device.command', "Authorization", readonly=True,
        ondelete='RESTRICT',
        help="The authorize command that released the fill, as its box "
        "reported: it tells which pre-payment the fill answers.")

    @classmethod
    def _record_values(cls, values):
        record = super()._record_values(values)
        record['dispenser_price'] = cls._dispenser_price(
            values['item'].get('dispenser_price'), values['company'])
        record['authorization'] = cls._authorization(
            values['item'].get('authorization'), values['station'])
        return record

    @classmethod
    def _authorization(cls, command_id, station):
        """The id of the authorize command command_id when it was sent to
        a box of the fill's station"""
        pool = Pool()
        Command = pool.get('fuel.device.command')
        if type(command_id) is not int:
            return None
        with without_check_access():
            commands = Command.search([
                    ('id', '=', command_id),
                    ('kind', '=', 'authorize'),
                    ('box.station', '=', station.id),
                    ], limit=1)
        return commands[0].id if commands else None

    @classmethod
    def _dispenser_price(cls, price_id, company):
        "The id of the price set price_id when it is one of company's"
        pool = Pool()
        Price = pool.get('fuel.station.price')
        if type(price_id) is not int:
            return None
        with without_check_access():
            prices = Price.search([
                    ('id', '=', price_id),
                    ('company', '=', company.id),
                    ], limit=1)
        return prices[0].id if prices else None



class PrePay(metaclass=PoolMeta):
    __name__ = 'fuel.payment.prepay'

    @classmethod
    def authorize(cls, prepays):
        """Send the station's box an authorize command with the preset
        amount; without an active box the attendant releases the pump"""
        pool = Pool()
        Box = pool.get('fuel.device.box')
        Command = pool.get('fuel.device.command')
        super().authorize(prepays)
        for prepay in prepays:
            with without_check_access():
                boxes = Box.search([
                        ('station', '=', prepay.station.id),
                        ('state', '=', 'active'),
                        ], limit=1)
                if not boxes:
                    continue
                command = Command.prepare(boxes[0], 'authorize', {
                        'version': 1,
                        'station_number': prepay.nozzle.station_number,
                        'preset_amount': prepay.amount,
                        # seconds: stopped and given back if unused (an
                        # older box ignores it)
                        'lift_timeout': prepay.station.prepay_lift_timeout,
                        # the box ignores it; the answer finds the payment
                        'prepay': prepay.id,
                        })
                command.save()
            prepay.authorization = command.rec_name
        cls.save(prepays)

    @classmethod
    def _capture_domain(cls, transaction):
        """A fill released by an authorize command answers that command's
        pre-payment only: none when the command was not a pre-payment's
        (a plate preset); a fill without one (a box restarted mid-fill, an
        older box) falls back on the nozzle's oldest"""
        domain = super()._capture_domain(transaction)
        if transaction.authorization:
            payload = loads(transaction.authorization.payload or '{}')
            prepay = (
                payload.get('prepay') if isinstance(payload, dict) else None)
            domain.append(
                ('id', '=', prepay if type(prepay) is int else -1))
        return domain


class Command(metaclass=PoolMeta):
    __name__ = 'fuel.device.command'

    @classmethod
    def ack(cls, commands, result=None):
        super().ack(commands, result=result)
        cls.answer_prepays(commands, 'acked')

    @classmethod
    def fail(cls, commands, result=None):
        super().fail(commands, result=result)
        cls.answer_prepays(commands, 'failed')

    @classmethod
    def answer_prepays(cls, commands, status):
        """The pre-paid nozzles of authorize commands are released, or
        their money goes back when the pump refused"""
        pool = Pool()
        PrePay = pool.get('fuel.payment.prepay')
        companies = {}
        for command in commands:
            payload = loads(command.payload or '{}')
            if (command.kind == 'authorize' and isinstance(payload, dict)
                    and type(payload.get('prepay')) is int):
                companies[payload['prepay']] = command.box.station.company
        if not companies:
            return
        with without_check_access():
            prepays = [
                p for p in PrePay.search([
                        ('id', 'in', list(companies)),
                        ('state', '=', 'paid'),
                        ])
                # only a pre-payment of the box's operator
                if p.company == companies[p.id]]
            if status == 'acked':
                PrePay.mark_authorized(prepays)
            else:
                PrePay.abort(prepays)
