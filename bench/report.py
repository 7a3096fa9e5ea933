# This file is part of fuelpay.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""A month of daily sales read from the report against summing every fill
in Python, on PostgreSQL, measured side by side in one run

ROWS fuelling transactions over 30 days (three stations, two grades, five
nozzles, two attendants; one in 50 voided, one in 97 left unpaid, the
others paid with an order and a payment each) are written with one
INSERT ... SELECT generate_series per table, then ANALYZEd.

1. report: `fuel.payment.report.daily_sales` search_read for the month
   (from_date/to_date in the context), the way the client reads it: the
   grouping runs in PostgreSQL.  Timed three times, the median printed.
2. naive: `fuel.payment.transaction` search_read of quantity, amount_due,
   station, grade and end_date of every sold fill, 1,000 a page, summed in
   Python per local day, station and grade.  Timed once over the first
   --naive-days days (default 1) and scaled to the month's fills.

Both run through the ORM in a Tryton transaction as the root user (no
access rules on either side).  The report's month is checked equal to SQL
sums, and its rows of the days read the naive way to the Python sums per
day, station and grade.  Prints both timings and the ratio naive/report
(goal >= 50x).  A throw-away database is created and dropped
(bench/_payment_db.py; BENCH_DATABASE_URI, default
postgresql://postgres@127.0.0.1:5432/); activating the modules takes one
to three minutes of the run (BENCH_TEMPLATE skips it).

    .venv/bin/python bench/report.py [--rows 1000000] [--naive-days 1]
"""
import argparse
import datetime as dt
import resource
import statistics
import time
from collections import defaultdict
from decimal import Decimal

from _payment_db import connect, in_transaction, log, throwaway_database

ROWS = 1_000_000
DAYS = 30
REPORT_RUNS = 3
# the naive way reads the fills of NAIVE_DAYS days, PAGE at a time (the
# client's page), and its time is scaled to the month: reading is linear
# in the pages but about a millisecond a fill, too slow for a month of a
# million fills in a few minutes (and one search of them all is quadratic:
# every record checks the list of ids it was browsed with)
NAIVE_DAYS = 1
PAGE = 1000
# one fill in VOID_EVERY is voided, one in UNPAID_EVERY left to pay: both
# are no sales and must not be counted
VOID_EVERY = 50
UNPAID_EVERY = 97
# one fill in DISCOUNT_EVERY has 1.00 off
DISCOUNT_EVERY = 10
ZERO = Decimal(0)


def build(first_day):
    """Create an operator (in Shanghai's timezone) with three stations;
    return the ids the rows need (their prices are written with them) and
    the UTC start of first_day"""
    from trytond.modules.company.tests import create_company, set_company

    from addons.fuel_payment.reporting import company_timezone, utc_bounds
    from addons.fuel_payment.tests.test_reporting import (
        add_nozzle,
        setup_operator,
    )
    from addons.fuel_station.tests.test_module import create_station
    company = create_company()
    with set_company(company):
        setup = setup_operator(company)
        third = create_station(company, 'A3')
        nozzles = [
            (setup['nozzle'], Decimal('7.5000')),
            (setup['premium_nozzle'], Decimal('8.1000')),
            (setup['other_nozzle'], Decimal('7.5000')),
            (add_nozzle(third, 1, setup['grade']), Decimal('7.5000')),
            (add_nozzle(third, 2, setup['premium']), Decimal('8.1000')),
            ]
    return {
        'company': company.id,
        'start': utc_bounds(
            first_day, None, company_timezone(company.id))[0],
        'stations': [n.station.id for n, _ in nozzles],
        'nozzles': [n.id for n, _ in nozzles],
        'numbers': [n.station_number for n, _ in nozzles],
        'grades': [n.grade.id for n, _ in nozzles],
        'prices': [p for _, p in nozzles],
        'employees': [e.id for _, e in setup['attendants']],
        'methods': [
            setup['methods'][k].id for k in ['cash', 'wechat', 'alipay']],
        }


def insert_rows(name, ids, rows):
    """Write rows fills evenly over DAYS local days from ids['start'], with
    an order and a payment per sold fill"""
    params = dict(ids,
        rows=rows,
        step=DAYS * 86400 / (rows + 1), n=len(ids['nozzles']),
        void=VOID_EVERY, unpaid=UNPAID_EVERY, discount=DISCOUNT_EVERY)
    with connect(name) as conn:
        # the rows are consistent by construction: skip the foreign key
        # triggers of a million rows per table, as a bulk load does
        conn.execute("SET session_replication_role = replica")
        conn.execute("""
            CREATE TEMP TABLE bench_fill AS
            SELECT i, k, quantity, end_date, state,
                round(quantity * (%(prices)s::numeric[])[k], 2) AS amount,
                CASE WHEN i %% %(discount)s = 0 THEN 1.00 ELSE 0 END
                    AS discount
            FROM (
                SELECT i, 1 + i %% %(n)s AS k,
                    round(20 + (i::bigint * 7919 %% 30000) / 1000.0, 3)
                        AS quantity,
                    %(start)s::timestamp
                        + i * %(step)s * interval '1 second' AS end_date,
                    CASE
                        WHEN i %% %(void)s = 0 THEN 'cancelled'
                        WHEN i %% %(unpaid)s = 0 THEN 'to_pay'
                        WHEN i %% 3 = 0 THEN 'paid'
                        ELSE 'posted' END AS state
                FROM generate_series(1, %(rows)s) AS i) AS fill
            """, params)
        conn.execute("""
            INSERT INTO fuel_payment_order (id, number, company, station,
                employee, date, state, create_uid, create_date)
            SELECT i, 'B-' || i, %(company)s, (%(stations)s::int[])[k],
                (%(employees)s::int[])[1 + i / 7 %% 2],
                end_date + interval '30 seconds', state, 0, now()
            FROM bench_fill WHERE state IN ('paid', 'posted')
            """, params)
        conn.execute("""
            INSERT INTO fuel_payment_transaction (id, uuid, company,
                station, nozzle, nozzle_number, grade, start_date, end_date,
                quantity, unit_price, amount, discount, amount_due, state,
                "order", create_uid, create_date)
            SELECT i, 'bench-' || i, %(company)s, (%(stations)s::int[])[k],
                (%(nozzles)s::int[])[k], (%(numbers)s::int[])[k],
                (%(grades)s::int[])[k], end_date - interval '2 minutes',
                end_date, quantity, (%(prices)s::numeric[])[k], amount,
                discount, amount - discount, state,
                CASE WHEN state IN ('paid', 'posted') THEN i END, 0, now()
            FROM bench_fill
            """, params)
        conn.execute("""
            INSERT INTO fuel_payment_order_payment (id, "order", uuid,
                method, amount, change, create_uid, create_date)
            SELECT i, i, 'bench-' || i,
                (%(methods)s::int[])[1 + i %% 3], amount - discount, 0, 0,
                now()
            FROM bench_fill WHERE state IN ('paid', 'posted')
            """, params)
        for table in [
                'fuel_payment_order', 'fuel_payment_transaction',
                'fuel_payment_order_payment']:
            conn.execute(
                f"SELECT setval('{table}_id_seq', "
                f"(SELECT max(id) FROM {table}))")
            conn.execute(f"ANALYZE {table}")
        conn.commit()


def read_report(first_day):
    """Return the seconds of a search_read of the month's daily sales and
    the totals per (date, station, grade)"""
    from trytond.pool import Pool
    from trytond.transaction import Transaction
    DailySales = Pool().get('fuel.payment.report.daily_sales')
    with Transaction().set_context(
            from_date=first_day,
            to_date=first_day + dt.timedelta(days=DAYS - 1)):
        started = time.perf_counter()
        rows = DailySales.search_read([], fields_names=[
                'date', 'station', 'grade', 'number', 'quantity',
                'amount_due'])
        seconds = time.perf_counter() - started
    totals = defaultdict(lambda: [0, ZERO, ZERO])
    for row in rows:
        total = totals[(row['date'], row['station'], row['grade'])]
        total[0] += row['number']
        total[1] += row['quantity']
        total[2] += row['amount_due']
    return seconds, len(rows), dict(totals)


def read_naive(first_day, days):
    """Return the seconds of reading every sold fill of the first days of
    the month through the ORM, PAGE at a time, and summing them in Python
    per (date, station, grade); the number of fills and the totals"""
    from trytond.pool import Pool
    from trytond.tools import timezone as tz
    from trytond.transaction import Transaction

    from addons.fuel_payment.reporting import company_timezone, utc_bounds
    FuelTransaction = Pool().get('fuel.payment.transaction')
    company = Transaction().context['company']
    timezone = company_timezone(company)
    start, end = utc_bounds(
        first_day, first_day + dt.timedelta(days=days - 1), timezone)
    tzinfo = tz.get_tzinfo(timezone)
    domain = [
        ('company', '=', company),
        ('state', 'in', ['paid', 'posted']),
        ('end_date', '>=', start),
        ('end_date', '<', end),
        ]
    totals = defaultdict(lambda: [0, ZERO, ZERO])
    fills, last = 0, 0
    started = time.perf_counter()
    while True:
        rows = FuelTransaction.search_read(
            domain + [('id', '>', last)], limit=PAGE, order=[('id', 'ASC')],
            fields_names=[
                'quantity', 'amount_due', 'station', 'grade', 'end_date'])
        if not rows:
            break
        for row in rows:
            date = row['end_date'].replace(tzinfo=tz.UTC).astimezone(
                tzinfo).date()
            total = totals[(date, row['station'], row['grade'])]
            total[0] += 1
            total[1] += row['quantity']
            total[2] += row['amount_due']
        fills += len(rows)
        last = rows[-1]['id']
    seconds = time.perf_counter() - started
    return seconds, fills, dict(totals)


def sql_totals(name, ids):
    "Return the number, quantity and amount due of the sold fills by SQL"
    with connect(name) as conn:
        return conn.execute("""
            SELECT count(*), sum(quantity), sum(amount_due)
            FROM fuel_payment_transaction
            WHERE company = %s AND state IN ('paid', 'posted')
            """, (ids['company'],)).fetchone()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--rows', type=int, default=ROWS)
    parser.add_argument(
        '--naive-days', type=int, default=NAIVE_DAYS, choices=range(1, 31),
        metavar='1-30', help="the days the naive way reads (default "
        f"{NAIVE_DAYS}; its time is scaled to the month)")
    args = parser.parse_args()
    # a month that ended yesterday
    first_day = dt.date.today() - dt.timedelta(days=DAYS)

    with throwaway_database('fuel_bench_report') as name:
        ids = in_transaction(name, build, first_day)
        log(f"writing {args.rows:,} fills with their orders and payments")
        started = time.perf_counter()
        insert_rows(name, ids, args.rows)
        log(f"written and analysed in {time.perf_counter() - started:.0f} s")
        expected = sql_totals(name, ids)

        runs = [
            in_transaction(name, read_report, first_day)
            for _ in range(REPORT_RUNS)]
        _, report_rows, report_totals = runs[0]
        report = statistics.median(r[0] for r in runs)
        log(f"reading the fills of {args.naive_days} day(s) through the ORM")
        naive, fills, naive_totals = in_transaction(
            name, read_naive, first_day, args.naive_days)
        memory = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    month = tuple(
        sum(t[i] for t in report_totals.values()) for i in range(3))
    if month != expected:
        raise SystemExit(f"report {month} != SQL sums {expected}")
    sampled = {
        k: v for k, v in report_totals.items()
        if k[0] < first_day + dt.timedelta(days=args.naive_days)}
    if sampled != naive_totals:
        raise SystemExit("the report and the Python sums differ")
    count, quantity, amount_due = month
    scaled = naive * count / fills
    print(f"sold fills in the month: {count:,} of {args.rows:,} "
        f"({quantity:,} of fuel, {amount_due:,} due) in {report_rows} "
        f"report rows, equal to SQL sums; the {fills:,} fills of "
        f"{args.naive_days} day(s) read the naive way give the report's "
        f"totals per day, station and grade")
    print(f"report  (daily_sales search_read):  {report * 1000:10.1f} ms "
        f"(median of {REPORT_RUNS})")
    print(f"naive   (every fill, Python sums):  {scaled * 1000:10.1f} ms "
        f"({fills / naive:,.0f} fills/s, {naive:.1f} s for "
        f"{args.naive_days} day(s) scaled to the month)")
    print(f"ratio naive/report: {scaled / report:.0f}x (goal >= 50x); "
        f"peak memory of the process {memory:,.0f} MiB")


if __name__ == '__main__':
    main()
