# This file is part of fuelpay.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""Ingestion throughput of fuelling transactions on PostgreSQL, measured
side by side in one run against a raw INSERT and the stock POS path

1. ingest: COUNT completed fills spread over the 12 nozzles of a station
   (no flags: continuous totalizers, amounts that agree) through
   `fuel.payment.transaction.ingest` in batches of BATCH items, one
   Tryton transaction and commit per batch, as user 0 without access
   checks (the way fuel_device's events route calls it).
2. limit: the same rows, read back from fuel_payment_transaction, into a
   scratch table of the same columns, indexes and constraints (CREATE
   TABLE ... LIKE ... INCLUDING ALL: foreign keys are not copied) with
   psycopg's `executemany` of a parameterised INSERT, one commit per
   batch of BATCH rows.  A COPY of the same batches is printed too, for
   reference.
3. stock: what Tryton's point of sale alone does per fill, on a smaller
   sample of STOCK fills: one `sale.point.sale` with one line created,
   one cash `sale.point.payment` added and the sale processed (done,
   numbered), one Tryton transaction and commit per fill, in process
   through the ORM.  No RPC server is started: a POS client over XML-RPC
   would add three round trips per fill to this, so the ORM is the stock
   path's best case and the ratio a floor.

A Tryton transaction is timed from its start to its commit; an attempt
rolled back because it asked to lock a table (trytond's dispatcher
retries those, bench/_payment_db.py too) is not counted.  Prints the
three rates and the ratios ingest/limit (goal >= 0.2x) and ingest/stock
(goal >= 20x).  --profile adds a cProfile of a few extra ingest batches
(the top functions by own and by cumulative time).  A throw-away
database is created and dropped (bench/_payment_db.py;
BENCH_DATABASE_URI, default postgresql://postgres@127.0.0.1:5432/);
activating the modules takes one to five minutes of the run, depending
on the machine's load, before anything is measured.

    .venv/bin/python bench/ingest.py [--count 20000] [--batch 1000]
        [--stock 100] [--profile]
"""
import argparse
import cProfile
import datetime as dt
import io
import pstats
import time
from decimal import Decimal

from _payment_db import (
    build_setup,
    chunks,
    connect,
    in_transaction,
    last_attempt,
    log,
    make_items,
    throwaway_database,
)
from psycopg import sql
from psycopg.types.json import Jsonb

COUNT = 20_000
# the most ingest accepts in one call (MAX_BATCH of transaction.py)
BATCH = 1_000
# one POS sale per fill is slow (0.3 to 0.5 s here): a sample is enough
STOCK = 100
# extra batches run under cProfile with --profile
PROFILE_BATCHES = 3
SCRATCH = 'bench_scratch_transaction'


def run_ingest(name, batches):
    "Ingest the batches, one Tryton transaction each; return seconds"
    from trytond.pool import Pool
    seconds = 0
    for batch in batches:
        results = in_transaction(
            name, lambda batch=batch: Pool().get(
                'fuel.payment.transaction').ingest(batch))
        seconds += last_attempt['seconds']
        bad = [r for r in results
            if r['status'] != 'created' or r['state'] != 'to_pay']
        if bad:
            raise RuntimeError(f"ingest refused {len(bad)} items: {bad[0]}")
    return seconds


def transaction_rows(name):
    "The ingested rows (every column but id) and the column names"
    def adapt(value):
        # flags: a JSONB list, read back as a Python list
        return Jsonb(value) if isinstance(value, (list, dict)) else value
    with connect(name) as conn:
        cursor = conn.execute(
            "SELECT * FROM fuel_payment_transaction ORDER BY id")
        columns = [c.name for c in cursor.description]
        keep = [i for i, c in enumerate(columns) if c != 'id']
        rows = [tuple(adapt(row[i]) for i in keep) for row in cursor]
    return [columns[i] for i in keep], rows


def run_limit(name, columns, rows, size):
    """Insert rows into a scratch copy of the table with executemany, then
    with COPY, one commit per batch; return both in seconds"""
    names = sql.SQL(', ').join(map(sql.Identifier, columns))
    insert = sql.SQL("INSERT INTO {} ({}) VALUES ({})").format(
        sql.Identifier(SCRATCH), names,
        sql.SQL(', ').join(sql.Placeholder() * len(columns)))
    copy = sql.SQL("COPY {} ({}) FROM STDIN").format(
        sql.Identifier(SCRATCH), names)
    timings = []
    with connect(name) as conn:
        for kind in ['executemany', 'copy']:
            conn.execute(sql.SQL(
                    "CREATE TABLE {} (LIKE fuel_payment_transaction "
                    "INCLUDING ALL)").format(sql.Identifier(SCRATCH)))
            conn.commit()
            started = time.perf_counter()
            for batch in chunks(rows, size):
                with conn.cursor() as cursor:
                    if kind == 'executemany':
                        cursor.executemany(insert, batch)
                    else:
                        with cursor.copy(copy) as out:
                            for row in batch:
                                out.write_row(row)
                conn.commit()
            timings.append(time.perf_counter() - started)
            count, = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(
                    sql.Identifier(SCRATCH))).fetchone()
            assert count == len(rows), (kind, count)
            conn.execute(sql.SQL("DROP TABLE {}").format(
                    sql.Identifier(SCRATCH)))
            conn.commit()
    return timings


def run_stock(name, ids, items):
    """One POS sale per fill: create it with one line, pay it in cash,
    process it, commit; return seconds"""
    seconds = 0
    for item in items:
        in_transaction(name, stock_sale, ids, item)
        seconds += last_attempt['seconds']
    return seconds


def stock_sale(ids, item):
    from trytond.pool import Pool
    pool = Pool()
    Sale = pool.get('sale.point.sale')
    Payment = pool.get('sale.point.payment')
    price = Decimal(item['unit_price'])
    sale, = Sale.create([{
                'company': ids['company'],
                'point': ids['point'],
                'lines': [('create', [{
                                'product': ids['grade'],
                                'quantity': float(item['quantity']),
                                'unit_list_price': price,
                                'unit_gross_price': price,
                                }])],
                }])
    Payment.create([{
                'sale': sale.id,
                'method': ids['methods']['cash'],
                'amount': sale.total,
                }])
    Sale.process([sale])
    if sale.state != 'done':
        raise RuntimeError(f"stock sale {sale.id} is {sale.state}")


def profile_ingest(name, batches):
    "Print the top functions of ingesting batches under cProfile"
    profiler = cProfile.Profile()
    profiler.enable()
    seconds = run_ingest(name, batches)
    profiler.disable()
    count = sum(len(b) for b in batches)
    print(f"\nprofile of {count} more ingested fills "
        f"({count / seconds:,.0f}/s under the profiler)")
    for key in ['tottime', 'cumulative']:
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats(key).print_stats(25)
        print(f"-- top 25 by {key}")
        text = out.getvalue()
        print(text[text.find('   ncalls'):].rstrip())


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--count', type=int, default=COUNT)
    parser.add_argument('--batch', type=int, default=BATCH,
        help="items per ingest call, 1 to 1000")
    parser.add_argument('--stock', type=int, default=STOCK)
    parser.add_argument('--profile', action='store_true')
    args = parser.parse_args()
    extra = PROFILE_BATCHES * args.batch if args.profile else 0

    with throwaway_database('bench_ingest') as name:
        ids = build_setup(name)
        items = make_items(
            ids['station'], args.count + extra + args.stock,
            start=dt.datetime.now() - dt.timedelta(minutes=50),
            totalizers=dict.fromkeys(ids['nozzles'], Decimal(1000)))
        ingest_items = items[:args.count]
        profile_items = items[args.count:args.count + extra]
        stock_items = items[args.count + extra:]

        log(f"ingesting {args.count} fills in batches of {args.batch}")
        ingest = run_ingest(name, chunks(ingest_items, args.batch))
        columns, rows = transaction_rows(name)
        log(f"inserting the same {len(rows)} rows with psycopg")
        limit, copy = run_limit(name, columns, rows, args.batch)
        log(f"stock path: {len(stock_items)} POS sales, one commit each")
        stock = run_stock(name, ids, stock_items)

        ingest_rate = args.count / ingest
        limit_rate = len(rows) / limit
        copy_rate = len(rows) / copy
        stock_rate = len(stock_items) / stock
        print(f"\ningest  {args.count:>6} fills, batches of {args.batch}: "
            f"{ingest_rate:>9,.0f} transactions/s ({ingest:.1f} s)")
        print(f"limit   {len(rows):>6} rows, executemany INSERT:  "
            f"{limit_rate:>9,.0f} rows/s ({limit:.1f} s)")
        print(f"        {len(rows):>6} rows, COPY (reference):    "
            f"{copy_rate:>9,.0f} rows/s ({copy:.1f} s)")
        print(f"stock   {len(stock_items):>6} POS sales via the ORM, "
            f"1 commit each: {stock_rate:>6,.1f} sales/s ({stock:.1f} s)")
        print(f"ratio ingest/limit: {ingest_rate / limit_rate:.2f}x "
            f"(goal >= 0.2x; against COPY {ingest_rate / copy_rate:.2f}x)")
        print(f"ratio ingest/stock: {ingest_rate / stock_rate:.1f}x "
            "(goal >= 20x)")

        if args.profile:
            profile_ingest(name, chunks(profile_items, args.batch))


if __name__ == '__main__':
    main()
