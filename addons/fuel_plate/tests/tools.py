# This file is part of fuelpay.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""Helpers shared by the fuel_plate tests: a station with a box, a lane
camera whose island zone sees nozzle 1, and an enrolled member"""
import datetime as dt
import itertools
import uuid
from decimal import Decimal

from trytond.pool import Pool

from addons.fuel_device.tests.tools import (
    create_box,
    create_station_with_price,
)
from addons.fuel_payment.tests.tools import (
    create_card,
    create_payment_setup,
    create_wallet,
    fund,
)

_seq = itertools.count(1)


def create_plate_setup(company, balance='500', limit='300', pin='1234'):
    """Create the payment set-up of company, a box with camera cam-1
    (zones island-1 on nozzle 1 and entrance), vehicle 京A12345 and its
    member's agreement (enabled) on a funded card with a PIN"""
    setup = create_payment_setup(company)
    setup.update(add_camera(setup['station']))
    wallet = create_wallet(company, name="Han Meimei")
    if Decimal(balance):
        fund(wallet, balance)
    card = create_card(wallet, pin=pin)
    agreement = create_agreement(
        setup['vehicle'], wallet.party, card, limit)
    setup.update(wallet=wallet, card=card, agreement=agreement)
    return setup


def create_camera_setup(company):
    """Create a station without accounting, a box with camera cam-1 and
    vehicle 京A12345: enough for plate reads"""
    station = create_station_with_price(company, 'S01')
    setup = {'station': station}
    setup.update(add_camera(station))
    return setup


def add_camera(station):
    """Add to station a box with camera cam-1 (zones island-1 on nozzle 1
    and entrance) and the operator's vehicle 京A12345"""
    pool = Pool()
    Device = pool.get('fuel.device.device')
    Zone = pool.get('fuel.plate.camera.zone')
    Nozzle = pool.get('fuel.station.nozzle')
    box, _ = create_box(station, f'BOX-{station.id}')
    camera, = Device.create([{
                'box': box.id, 'kind': 'camera', 'identifier': 'cam-1',
                }])
    island, entrance = Zone.create([{
                'station': station.id, 'camera': camera.id,
                'code': 'island-1', 'kind': 'island',
                }, {
                'station': station.id, 'camera': camera.id,
                'code': 'entrance', 'kind': 'entrance',
                }])
    nozzle, = Nozzle.search([
            ('station', '=', station.id), ('station_number', '=', 1)])
    Nozzle.write([nozzle], {'plate_zone': island.id})
    vehicle = create_vehicle(station.company, '京A12345')
    return {
        'box': box, 'camera': camera, 'island': island,
        'entrance': entrance, 'vehicle': vehicle}


def create_vehicle(company, plate, colour='blue', owner=None):
    pool = Pool()
    Vehicle = pool.get('fuel.plate.vehicle')
    vehicle, = Vehicle.create([{
                'company': company.id, 'plate': plate, 'colour': colour,
                'owner': owner.id if owner else None,
                }])
    return vehicle


def create_agreement(vehicle, party, card, limit='300', enable=True,
        default=True):
    pool = Pool()
    Agreement = pool.get('fuel.plate.agreement')
    agreement, = Agreement.create([{
                'company': vehicle.company.id, 'vehicle': vehicle.id,
                'party': party.id, 'card': card.id,
                'limit': Decimal(limit), 'default': default,
                }])
    if enable:
        Agreement.enable([agreement])
    return agreement


def now():
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


def event(kind, payload, device, date=None, uuid_=None):
    "Return a box event item"
    return {
        'uuid': uuid_ or str(uuid.uuid4()),
        'seq': next(_seq),
        'kind': kind,
        'device': device,
        'device_time': (date or now()).isoformat(),
        'payload': payload,
        }


def plate_read(plate='京A12345', colour='blue', confidence='0.9500',
        zone='island-1', zone_kind='island', date=None, image=None,
        **extra):
    payload = {
        'plate': plate, 'colour': colour, 'confidence': confidence,
        'zone': zone, 'zone_kind': zone_kind, 'frames': 5,
        }
    if image is not None:
        payload.update(image=image, image_format='jpeg')
    payload.update(extra)
    return event('plate_read', payload, 'cam-1', date)


def nozzle_up(station_nozzle=1, date=None):
    return event('nozzle_up', {
            'nozzle': 1, 'station_nozzle': station_nozzle,
            'unit_price': '7.5800'}, 'pump-1', date)


def completed(volume='20.000', station_nozzle=1, date=None, amount=None):
    "A completed fill at 7.58 a litre"
    volume = Decimal(volume)
    return event('transaction_completed', {
            'nozzle': 1, 'station_nozzle': station_nozzle,
            'volume': str(volume), 'unit_price': '7.5800',
            'amount': amount or str((volume * Decimal('7.58')).quantize(
                    Decimal('0.01'))),
            }, 'pump-1', date)


def ingest(box, *items):
    pool = Pool()
    Event = pool.get('fuel.device.event')
    return Event.ingest(box, list(items))
