# This file is part of fuelpay.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""Box events: plate reads become fuel.plate.read, a lifted nozzle and a
completed fill run the binding engine"""
import base64
import binascii
from decimal import Decimal, InvalidOperation

from trytond.exceptions import UserError
from trytond.i18n import gettext
from trytond.pool import Pool, PoolMeta
from trytond.transaction import without_check_access

from addons.fuel_device.event import dumps, loads

from .plate import COLOURS, check_plate, normalize_plate
from .read import ZONE_KINDS

PAYLOAD_VERSION = 1
# the contract caps the base64 crop at 64 KiB
MAX_IMAGE_LENGTH = 64 * 1024


class Event(metaclass=PoolMeta):
    __name__ = 'fuel.device.event'

    @classmethod
    def ingest(cls, box, items):
        results = super().ingest(box, items)
        uuids = [
            r['uuid'] for r in results
            if r['status'] == 'accepted' and r['uuid']]
        if not uuids:
            return results
        events = cls.search([
                ('box', '=', box.id),
                ('uuid', 'in', uuids),
                ('kind', 'in',
                    ['plate_read', 'nozzle_up', 'transaction_completed']),
                ], order=[('seq', 'ASC'), ('id', 'ASC')])
        with without_check_access():
            # the box's user has no right on reads and bindings
            cls.process_plate_reads(box, [
                    e for e in events
                    if e.kind == 'plate_read' and e.state == 'received'])
            cls.process_nozzle_ups(box, [
                    e for e in events
                    if e.kind == 'nozzle_up' and e.state == 'received'])
            cls.process_bindings([
                    e for e in events
                    if e.kind == 'transaction_completed'
                    and e.state == 'processed'])
        by_uuid = {e.uuid: e for e in events}
        return [
            by_uuid[r['uuid']].result
            if r['status'] == 'accepted' and r['uuid'] in by_uuid else r
            for r in results]

    @classmethod
    def process_plate_reads(cls, box, events):
        "Store the plate read of each event; refuse a bad one with reason"
        pool = Pool()
        Read = pool.get('fuel.plate.read')
        if not events:
            return
        cameras = {
            d.identifier: d for d in box.devices if d.kind == 'camera'}
        zones = cls._plate_zones(list(cameras.values()))
        reads = []
        for event in events:
            try:
                values = event.plate_read_values(box, cameras, zones)
            except UserError as exception:
                event.state = 'error'
                event.error = exception.message
                continue
            reads.append(Read(**values))
            event.state = 'processed'
        Read.save(reads)
        cls.save(events)

    @classmethod
    def _plate_zones(cls, cameras):
        pool = Pool()
        Zone = pool.get('fuel.plate.camera.zone')
        return {
            (z.camera.id, z.code): z for z in Zone.search([
                    ('camera', 'in', [c.id for c in cameras]),
                    ])}

    def plate_read_values(self, box, cameras, zones):
        """Return the values of the plate read of the event, or raise
        UserError saying what is wrong (see the box contract)"""
        payload = loads(self.payload or 'null')

        def invalid(field):
            value = payload.get(field) if isinstance(payload, dict) else None
            return UserError(gettext(
                    'fuel_plate.msg_read_value_invalid',
                    field=field, value=dumps(value)))

        if not isinstance(payload, dict):
            raise invalid('payload')
        plate = payload.get('plate')
        colour = payload.get('colour')
        if not isinstance(plate, str):
            raise invalid('plate')
        plate = normalize_plate(plate)
        if colour not in dict(COLOURS):
            raise invalid('colour')
        check_plate(plate, colour)
        try:
            confidence = Decimal(str(payload.get('confidence')))
        except (InvalidOperation, ValueError):
            raise invalid('confidence') from None
        if not (0 <= confidence <= 1):
            raise invalid('confidence')
        zone_kind = payload.get('zone_kind')
        if zone_kind is not None and zone_kind not in dict(ZONE_KINDS):
            raise invalid('zone_kind')
        frames = payload.get('frames')
        if frames is not None and type(frames) is not int:
            raise invalid('frames')
        image = payload.get('image')
        if image is not None:
            if not isinstance(image, str) or len(image) > MAX_IMAGE_LENGTH:
                raise invalid('image')
            try:
                image = base64.b64decode(image, validate=True)
            except (binascii.Error, ValueError):
                raise invalid('image') from None
        camera = cameras.get(self.device)
        zone_code = payload.get('zone')
        zone = zones.get((camera.id, zone_code)) if camera else None
        return {
            'uuid': self.uuid,
            'company': box.station.company,
            'station': box.station,
            'camera': camera,
            'zone': zone,
            'zone_code': str(zone_code) if zone_code is not None else None,
            # the operator's zone wins over what the box says
            'zone_kind': zone.kind if zone else zone_kind,
            'plate': plate,
            'colour': colour,
            'confidence': confidence.quantize(Decimal('0.0001')),
            'frames': frames,
            'read_date': self.device_time or self.received_date,
            'image': image,
            'image_format': payload.get('image_format') if image else None,
            'image_state': 'kept' if image else 'none',
            'event': self,
            }

    @classmethod
    def process_nozzle_ups(cls, box, events):
        "Open a binding for each lifted nozzle of the box's station"
        pool = Pool()
        Nozzle = pool.get('fuel.station.nozzle')
        Binding = pool.get('fuel.plate.binding')
        if not events:
            return
        numbers = {}
        for event in events:
            payload = loads(event.payload or 'null')
            if isinstance(payload, dict) and type(
                    payload.get('station_nozzle')) is int:
                numbers[event] = payload['station_nozzle']
        nozzles = {
            n.station_number: n for n in Nozzle.search([
                    ('station', '=', box.station.id),
                    ('station_number', 'in', list(set(numbers.values()))),
                    ])}
        handled = []
        for event, number in numbers.items():
            nozzle = nozzles.get(number)
            if nozzle is None:
                continue
            Binding.on_nozzle_up(
                box, nozzle, event.device_time or event.received_date)
            event.state = 'processed'
            handled.append(event)
        cls.save(handled)

    @classmethod
    def process_bindings(cls, events):
        "Run the binding engine on the transactions of completed fills"
        pool = Pool()
        FuelTransaction = pool.get('fuel.payment.transaction')
        Binding = pool.get('fuel.plate.binding')
        if not events:
            return
        transactions = FuelTransaction.search([
                ('uuid', 'in', [e.uuid for e in events]),
                ], order=[('end_date', 'ASC'), ('id', 'ASC')])
        Binding.on_transactions(transactions)
