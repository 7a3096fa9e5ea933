# This file is part of fuelpay.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""How the price lookup for a fill scales with the price history

Every fuelling transaction asks fuel.station.price.get_price for the price
in force at its end time.  A station changes prices a few times a week, so
after years the history holds thousands of sets.  This prints the lookup
time with a short and a long history, measured side by side in one run,
and their ratio (close to 1 means the lookup does not grow with history).

    DB_CACHE=var/cache/bench .venv/bin/python bench/price_lookup.py
"""
import datetime as dt
import os
import time
from decimal import Decimal

os.environ.setdefault('DB_NAME', ':memory:')

from trytond.modules.company.tests import create_company, set_company
from trytond.pool import Pool
from trytond.tests.test_tryton import activate_module, with_transaction

from addons.fuel_station.tests.test_module import create_grade, create_station

HISTORIES = [10, 1000]
LOOKUPS = 300


def make_history(company, station, grade, count, start):
    pool = Pool()
    Price = pool.get('fuel.station.price')
    prices = Price.create([{
                'company': company.id,
                'name': f"Set {i}",
                'station': station.id if i % 3 == 0 else None,
                'scope': 'station' if i % 3 == 0 else 'operator',
                'effective_date': start + dt.timedelta(hours=i),
                'lines': [('create', [{
                                'grade': grade.id,
                                'unit_price': Decimal('7.0000') + i,
                                }])],
                } for i in range(count)])
    Price.approve(prices)
    return start + dt.timedelta(hours=count)


def measure(station, grade, end):
    pool = Pool()
    Price = pool.get('fuel.station.price')
    started = time.perf_counter()
    for i in range(LOOKUPS):
        Price.get_price(station, grade, end - dt.timedelta(minutes=i))
    return (time.perf_counter() - started) / LOOKUPS


@with_transaction()
def main():
    company = create_company()
    results = {}
    with set_company(company):
        start = dt.datetime.now() + dt.timedelta(days=1)
        for count in HISTORIES:
            grade = create_grade(f"Grade {count}")
            station = create_station(company, f'S{count}')
            end = make_history(company, station, grade, count, start)
            results[count] = measure(station, grade, end)
    for count, seconds in results.items():
        print(f"history {count:>5} sets: {seconds * 1000:8.3f} ms/lookup")
    small, large = results[HISTORIES[0]], results[HISTORIES[-1]]
    print(f"ratio {HISTORIES[-1]}/{HISTORIES[0]}: {large / small:.2f}")


if __name__ == '__main__':
    activate_module(['fuel_station'])
    main()
