# This file is part of fuelpay.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""With fuel_payment: the fills a box reports become fuelling
transactions priced by the platform"""
import contextlib

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
            }

