# This file is part of fuelpay.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""With fuel_payment: the fills a box reports become fuelling
transactions priced by the platform"""
import contextlib

from trytond.model import fields
from trytond.pool import Pool, PoolMeta
from trytond.transaction import without_check_access

from addons.fuel_payment.transaction import to_decimal

from .event import loads


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
                ('kind', '=', 'transaction_completed'),
                ('state', '=', 'received'),
                ])
        if events:
            cls.process_transactions(box, events)
            by_uuid = {e.uuid: e for e in events}
            results = [
                by_uuid[r['uuid']].result if r['uuid'] in by_uuid else r
                for r in results]
        return results

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
