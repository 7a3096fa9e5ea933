# This file is part of fuelpay.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""Price push: the boxes get the prices of a set when it becomes active,
and confirm per nozzle which set each dispenser holds"""
import datetime as dt
from decimal import Decimal, InvalidOperation

from trytond.model import fields
from trytond.pool import Pool, PoolMeta
from trytond.transaction import without_check_access

# the version of the price_change payload the box reads
PAYLOAD_VERSION = 1


def iso_utc(date):
    "ISO 8601 text of a naive UTC datetime"
    return date.replace(tzinfo=dt.UTC).isoformat()


class PriceSet(metaclass=PoolMeta):
    __name__ = 'fuel.station.price'

    @classmethod
    def activate(cls, prices):
        super().activate(prices)
        cls.push([p for p in prices if p.state == 'active'])

    @classmethod
    def push(cls, prices):
        """Queue a price_change command for every active box of the
        stations the sets price"""
        pool = Pool()
        Box = pool.get('fuel.device.box')
        Command = pool.get('fuel.device.command')
        Station = pool.get('fuel.station')
        commands = []
        with without_check_access():
            for price in prices:
                if price.scope == 'station':
                    stations = [price.station]
                else:
                    stations = Station.search([
                            ('company', '=', price.company.id),
                            ])
                boxes = Box.search([
                        ('station', 'in', [s.id for s in stations]),
                        ('state', '=', 'active'),
                        ])
                payloads = {}
                for box in boxes:
                    # a box drives the dispensers its devices are linked
                    # to; one not linked yet gets the whole station
                    dispensers = frozenset(
                        d.dispenser for d in box.devices if d.dispenser)
                    key = (box.station, dispensers)
                    if key not in payloads:
                        payloads[key] = price.push_payload(
                            box.station, dispensers or None)
                    payload = payloads[key]
                    if payload['nozzles']:
                        commands.append(
                            Command.prepare(box, 'price_change', payload))
            Command.save(commands)
        return commands

    def push_payload(self, station, dispensers=None):
        """The price_change payload of the set for station: every nozzle
        (of dispensers, if given) whose grade the set prices, at the unit
        price in force at the effective date"""
        pool = Pool()
        Line = pool.get('fuel.station.price.line')
        exp = Decimal(1).scaleb(-Line.unit_price.digits[1])
        grades = self.grades
        nozzles = []
        for nozzle in sorted(station.nozzles, key=lambda n: n.station_number):
            if nozzle.grade not in grades:
                continue
            if dispensers is not None and nozzle.dispenser not in dispensers:
                continue
            _, unit_price = self.get_price(
                station, nozzle.grade, self.effective_date)
            if unit_price is None:
                continue
            nozzles.append({
                    'station_number': nozzle.station_number,
                    'unit_price': str(unit_price.quantize(exp)),
                    })
        return {
            'version': PAYLOAD_VERSION,
            'price': self.id,
            'price_name': self.name,
            'effective_date': iso_utc(self.effective_date),
            'nozzles': nozzles,
            }


class Nozzle(metaclass=PoolMeta):
    __name__ = 'fuel.station.nozzle'

    held_price = fields.Many2One(
        'fuel.station.price', "Held Price Set", readonly=True,
        ondelete='SET NULL',
        help="The price set the dispenser confirmed it applied.")
    held_unit_price = fields.Numeric(
        "Held Unit Price", digits=(16, 4), readonly=True,
        help="The unit price the dispenser confirmed it applied.")
    held_date = fields.DateTime(
        "Held since", readonly=True,
        help="When the box confirmed the price.")

    @classmethod
    def hold_prices(cls, station, price, items, date=None):
        """Record the prices the box of station confirmed for price: items
        are the nozzles of its answer; those applied are held

        A nozzle already holding a set of a later effective date keeps it:
        the answers of a superseded command may come late."""
        pool = Pool()
        Line = pool.get('fuel.station.price.line')
        if date is None:
            date = dt.datetime.now()
        exp = Decimal(1).scaleb(-Line.unit_price.digits[1])
        nozzles = {n.station_number: n for n in station.nozzles}
        to_save = []
        for item in items:
            if not isinstance(item, dict) or item.get('status') != 'applied':
                continue
            nozzle = nozzles.get(item.get('station_number'))
            if nozzle is None:
                continue
            try:
                unit_price = Decimal(str(item.get('unit_price'))).quantize(
                    exp)
            except (InvalidOperation, ValueError):
                continue
            held = nozzle.held_price
            if held and held.effective_date > price.effective_date:
                continue
            nozzle.held_price = price
            nozzle.held_unit_price = unit_price
            nozzle.held_date = date
            to_save.append(nozzle)
        cls.save(to_save)
        return to_save


class Dispenser(metaclass=PoolMeta):
    __name__ = 'fuel.station.dispenser'

    held_price = fields.Function(fields.Many2One(
            'fuel.station.price', "Held Price Set",
            help="The price set all the nozzles of the dispenser hold, "
            "empty when they hold different ones."),
        'get_held_price')

    @classmethod
    def get_held_price(cls, dispensers, name):
        prices = {}
        for dispenser in dispensers:
            held = {n.held_price for n in dispenser.nozzles}
            price = held.pop() if len(held) == 1 else None
            prices[dispenser.id] = price.id if price else None
        return prices
