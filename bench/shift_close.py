# This file is part of fuelpay.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""Closing and settling a busy shift (grouped posting) against posting the
same kind of shift sale by sale with sale_point, on PostgreSQL, measured
side by side in one run

Shift A gets COUNT paid orders: the fills (12 nozzles, one grade and
tank) are ingested in batches of 1,000, then one order per fill is
created with its payment (two in three in cash with change, one in three
by WeChat with a reference) and processed (`fuel.payment.order.process`:
one done POS sale each) in chunks of CHUNK orders, one commit per chunk.
The orders and payments are created in bulk through the ORM with the
values `create_for` and `add_payment` give them, which are too slow one
by one to prepare thousands.

Timed: `fuel.station.shift.close` (checks, expected amounts per method,
the POS cash session closed) and `fuel.station.shift.settle` (one account
move and one stock move per grade and tank, built from sale_point's own
posting of a summing sale), one Tryton transaction and commit each.
Checked: the grouped move is posted and balanced, its revenue equals the
sum of the sales' line amounts, its cash and terminal lines the sums of
the sales' cash and WeChat payments, its stock move the sum of the fills'
quantities, and every order and fill of the shift is posted.

Against: shift B, opened after A on the same station and filled the same
way with STOCK orders (a smaller sample), whose done POS sales are posted
with sale_point's `sale.point.sale.post` (one account move and one stock
move per sale), POST_CHUNK sales per call and commit.  Its time is scaled
per sale to COUNT: posting sale by sale grows linearly with the sales.

A Tryton transaction is timed from its start to its commit; attempts
rolled back because they asked to lock a table (trytond's dispatcher
retries those, bench/_payment_db.py too) are not counted but printed.
Prints both timings and the ratio per-sale/grouped (goal >= 20x), also
with settle alone.  A throw-away database is created and dropped
(bench/_payment_db.py; BENCH_DATABASE_URI, default
postgresql://postgres@127.0.0.1:5432/); activating the modules takes one
to five minutes depending on the machine's load, preparing the orders
most of the rest.

    .venv/bin/python bench/shift_close.py [--count 1000] [--stock 100]
"""
import argparse
import datetime as dt
import time
import uuid
from decimal import Decimal

from _payment_db import (
    LOCKS,
    build_setup,
    chunks,
    in_transaction,
    last_attempt,
    log,
    make_items,
    throwaway_database,
)

# 10,000 orders are asked for, but preparing them (ingest, order, payment
# and fuel.payment.order.process) costs 0.1 to 0.2 s an order on this
# 2-core machine, half an hour for 10,000: run --count 10000 by hand
COUNT = 1_000
ASKED = 10_000
# sales posted one by one on shift B: a sample, scaled to COUNT
STOCK = 100
# orders created and processed per call and commit
CHUNK = 500
# sales per sale.point.sale.post call and commit
POST_CHUNK = 100
# the most fuel.payment.transaction.ingest accepts in one call
BATCH = 1_000
# one order in WECHAT_EVERY is paid by WeChat, the others in cash
WECHAT_EVERY = 3
# litres to the millilitre, as dispensers report them: Shift._settle must
# sum thousands of the sale lines' float quantities without float noise
# (34950.50000000001) that the stock move's 3 digits would refuse
QUANTUM = Decimal('0.001')


def ingest(items):
    from trytond.pool import Pool
    results = Pool().get('fuel.payment.transaction').ingest(items)
    bad = [r for r in results if r['state'] != 'to_pay']
    if bad:
        raise RuntimeError(f"{len(bad)} fills not payable: {bad[0]}")
    return [r['id'] for r in results]


def pay(transaction_ids, methods, offset):
    """One order per fill, paid and processed, as create_for, add_payment
    and process would leave them"""
    from trytond.pool import Pool
    pool = Pool()
    Order = pool.get('fuel.payment.order')
    Payment = pool.get('fuel.payment.order.payment')
    FuelTransaction = pool.get('fuel.payment.transaction')
    transactions = FuelTransaction.browse(transaction_ids)
    orders = Order.create([{
                'company': t.company.id,
                'station': t.station.id,
                'shift': t.shift.id,
                'date': t.end_date,
                'transactions': [('add', [t.id])],
                } for t in transactions])
    for order in orders:
        order.number = '%s-%s' % (order.station.code, order.id)
    Order.save(orders)
    payments = []
    pairs = zip(orders, transactions, strict=True)
    for i, (order, transaction) in enumerate(pairs):
        amount = transaction.amount_due
        values = {'order': order.id, 'uuid': str(uuid.uuid4()),
            'amount': amount}
        if (offset + i) % WECHAT_EVERY == 0:
            values.update(method=methods['wechat'], change=Decimal(0),
                reference=f'WX{offset + i:08d}')
        else:
            tendered = (amount / 10).to_integral_value('ROUND_CEILING') * 10
            values.update(method=methods['cash'], tendered=tendered,
                change=tendered - amount)
        payments.append(values)
    Payment.create(payments)
    Order.process(Order.browse([o.id for o in orders]))


def fill_shift(name, ids, items):
    "Ingest the items into the open shift and pay each in its own order"
    started = time.perf_counter()
    transaction_ids = []
    for batch in chunks(items, BATCH):
        transaction_ids.extend(in_transaction(name, ingest, batch))
    log(f"{len(items)} fills ingested in "
        f"{time.perf_counter() - started:.0f} s")
    started = time.perf_counter()
    for i, sub in enumerate(chunks(transaction_ids, CHUNK)):
        in_transaction(name, pay, sub, ids['methods'], i * CHUNK)
    log(f"{len(items)} orders paid and processed in "
        f"{time.perf_counter() - started:.0f} s")


def set_closing_readings(shift_id, items):
    "Close the shift's nozzle readings at the totalizers of its last fills"
    from trytond.pool import Pool
    Shift = Pool().get('fuel.station.shift')
    volumes, amounts = {}, {}
    for item in items:
        volumes[item['nozzle']] = Decimal(item['totalizer_end'])
        amounts[item['nozzle']] = (
            amounts.get(item['nozzle'], 0) + Decimal(item['amount']))
    for reading in Shift(shift_id).readings:
        number = reading.nozzle.station_number
        reading.closing_volume = volumes.get(number, reading.opening_volume)
        reading.closing_amount = (
            reading.opening_amount + amounts.get(number, 0))
        reading.save()


def close(shift_id):
    from trytond.pool import Pool
    Shift = Pool().get('fuel.station.shift')
    Shift.close([Shift(shift_id)])


def settle(shift_id):
    from trytond.pool import Pool
    Shift = Pool().get('fuel.station.shift')
    Shift.settle([Shift(shift_id)])


def open_next(station_id):
    from trytond.pool import Pool
    Shift = Pool().get('fuel.station.shift')
    shift, = Shift.create([{'station': station_id}])
    Shift.open([shift])
    return shift.id


def sale_ids(shift_id, state):
    from trytond.pool import Pool
    Sale = Pool().get('sale.point.sale')
    return [s.id for s in Sale.search([
                ('fuel_shift', '=', shift_id), ('state', '=', state)],
            order=[('id', 'ASC')])]


def post(ids):
    from trytond.pool import Pool
    Sale = Pool().get('sale.point.sale')
    Sale.post(Sale.browse(ids))


def check_grouped(ids, shift_id, count):
    """Compare the shift's grouped moves with its sales; return the
    figures compared"""
    from trytond.pool import Pool
    pool = Pool()
    Shift = pool.get('fuel.station.shift')
    Sale = pool.get('sale.point.sale')
    StockMove = pool.get('stock.move')
    Order = pool.get('fuel.payment.order')
    FuelTransaction = pool.get('fuel.payment.transaction')
    shift = Shift(shift_id)
    move = shift.move
    sales = Sale.search([('fuel_shift', '=', shift_id)])
    assert len(sales) == count, (len(sales), count)
    assert {s.state for s in sales} == {'posted'}
    assert {s.move for s in sales} == {move}
    accounts = ids['accounts']
    methods = ids['methods']

    def balance(account_id):
        return sum(
            (ml.debit - ml.credit for ml in move.lines
                if ml.account.id == account_id), Decimal(0))
    sale_revenue = sum(
        (sl.amount for s in sales for sl in s.lines), Decimal(0))
    sale_paid = {kind: sum(
            (p.amount for s in sales for p in s.payments
                if p.method.id == methods[kind]), Decimal(0))
        for kind in ['cash', 'wechat']}
    figures = {
        'debit': sum(ml.debit for ml in move.lines),
        'credit': sum(ml.credit for ml in move.lines),
        'revenue': -balance(accounts['revenue']),
        'cash': balance(accounts['cash']),
        'wechat': balance(accounts['terminal']),
        'sale_revenue': sale_revenue,
        'sale_cash': sale_paid['cash'],
        'sale_wechat': sale_paid['wechat'],
        }
    assert move.state == 'posted', move.state
    assert figures['debit'] == figures['credit'], figures
    assert figures['revenue'] == sale_revenue, figures
    assert figures['cash'] == sale_paid['cash'], figures
    assert figures['wechat'] == sale_paid['wechat'], figures
    stock, = StockMove.search([
            ('origin', '=', str(shift)), ('product', '=', ids['grade'])])
    quantity = sum(sl.quantity for s in sales for sl in s.lines)
    assert stock.state == 'done', stock.state
    assert round(stock.quantity - quantity, 3) == 0, (stock.quantity, quantity)
    orders = Order.search([('shift', '=', shift_id)])
    assert {o.state for o in orders} == {'posted'}
    assert {t.state for t in FuelTransaction.search(
                [('shift', '=', shift_id)])} == {'posted'}
    return figures


def check_per_sale(shift_id, count):
    "Check every sale of the shift has its own posted, balanced move"
    from trytond.pool import Pool
    Sale = Pool().get('sale.point.sale')
    sales = Sale.search([('fuel_shift', '=', shift_id)])
    assert len(sales) == count and {s.state for s in sales} == {'posted'}
    moves = {s.move for s in sales}
    assert len(moves) == count
    for move in moves:
        assert move.state == 'posted'
        assert (sum(ml.debit for ml in move.lines)
            == sum(ml.credit for ml in move.lines))
    return sum(s.total for s in sales)


def timed(name, func, *args):
    """Return the seconds of the committed attempt of func in a Tryton
    transaction (attempts rolled back to lock tables are not counted), the
    number of those attempts and the result"""
    started = time.perf_counter()
    result = in_transaction(name, func, *args)
    retried = time.perf_counter() - started - last_attempt['seconds']
    return last_attempt['seconds'], (last_attempt['retries'], retried), result


def locked(func_name):
    "The tables the function of that name had to lock"
    return LOCKS.get(func_name) or ['?']


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--count', type=int, default=COUNT)
    parser.add_argument('--stock', type=int, default=STOCK)
    args = parser.parse_args()

    with throwaway_database('bench_shift') as name:
        ids = build_setup(name)
        start = dt.datetime.now() - dt.timedelta(minutes=50)
        totalizers = dict.fromkeys(ids['nozzles'], Decimal(1000))
        items_a = make_items(
            ids['station'], args.count, start, totalizers, quantum=QUANTUM)
        # shift B follows A: the nozzles' totalizers and clock go on
        items_b = make_items(
            ids['station'], args.stock, dt.datetime.fromisoformat(
                items_a[-1]['end_date']) + dt.timedelta(seconds=1),
            totalizers, quantum=QUANTUM)

        started = time.perf_counter()
        log(f"shift A: {args.count} fills ingested, paid, processed")
        fill_shift(name, ids, items_a)
        log(f"prepared in {time.perf_counter() - started:.0f} s")
        shift_a = ids['shift']
        in_transaction(name, set_closing_readings, shift_a, items_a)
        close_a, close_retries, _ = timed(name, close, shift_a)
        settle_a, settle_retries, _ = timed(name, settle, shift_a)
        figures = in_transaction(
            name, check_grouped, ids, shift_a, args.count)

        log(f"shift B: {args.stock} fills ingested, paid, processed")
        shift_b = in_transaction(name, open_next, ids['station'])
        fill_shift(name, ids, items_b)
        sales_b = in_transaction(name, sale_ids, shift_b, 'done')
        assert len(sales_b) == args.stock, len(sales_b)
        post_b = 0
        for sub in chunks(sales_b, POST_CHUNK):
            seconds, _, _ = timed(name, post, sub)
            post_b += seconds
        total_b = in_transaction(name, check_per_sale, shift_b, args.stock)

    if args.count < ASKED:
        print(f"\nnote: {args.count} orders, not the {ASKED:,} asked: "
            "preparing them takes 0.1 to 0.2 s an order here")
    grouped = close_a + settle_a
    scaled = post_b / args.stock * args.count
    print(f"\ngrouped, shift A, {args.count} orders: close {close_a:.2f} s "
        f"+ settle {settle_a:.2f} s = {grouped:.2f} s")
    for what, (retries, seconds) in [
            ('close', close_retries), ('settle', settle_retries)]:
        if retries:
            print(f"  {what} was first rolled back {retries} time(s) to "
                f"take locks (tables: {', '.join(locked(what))}): "
                f"{seconds:.2f} s more, not counted")
    print(f"  move balanced: debit {figures['debit']} = credit "
        f"{figures['credit']}")
    print(f"  revenue {figures['revenue']} = sum of sale lines "
        f"{figures['sale_revenue']}")
    print(f"  cash {figures['cash']} = cash payments {figures['sale_cash']}"
        f"; WeChat {figures['wechat']} = {figures['sale_wechat']}")
    print(f"per sale, shift B, {args.stock} sales: sale.point.sale.post "
        f"{post_b:.2f} s ({post_b / args.stock * 1000:.1f} ms/sale, "
        f"{args.stock} balanced posted moves, total {total_b})")
    print(f"  scaled to {args.count} sales: {scaled:.1f} s")
    print(f"ratio per-sale/grouped: {scaled / grouped:.1f}x (goal >= 20x); "
        f"against settle alone {scaled / settle_a:.1f}x")


if __name__ == '__main__':
    main()
