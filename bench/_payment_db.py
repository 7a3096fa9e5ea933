# This file is part of fuelpay.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""A throw-away PostgreSQL database with fuel_payment activated, for the
benchmarks of bench/ingest.py and bench/shift_close.py

The server is BENCH_DATABASE_URI (default postgresql://postgres@127.0.0.1:
5432/, a role allowed to create databases).  The database is created,
activated with trytond-admin like tools/fuel.py does (or copied from
BENCH_TEMPLATE), and dropped on exit.
"""
import contextlib
import datetime as dt
import os
import secrets
import subprocess
import tempfile
import time
import uuid
from decimal import Decimal
from pathlib import Path

import psycopg
from psycopg import sql

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / 'trytond.conf'
URI = os.environ.get(
    'BENCH_DATABASE_URI', 'postgresql://postgres@127.0.0.1:5432/')
# trytond picks its backend when first imported
os.environ['TRYTOND_DATABASE_URI'] = URI
MODULES = ['fuel_payment']
# an idle database where fuel_payment of the same code is activated, to
# copy instead of activating (a minute or more): for repeated runs only,
# nothing checks it is current
TEMPLATE = os.environ.get('BENCH_TEMPLATE')
# nozzles of the bench station: fills of one nozzle are a second apart
NOZZLES = 12


def log(message):
    print(f"  .. {message}", flush=True)


def connect(name, **kwargs):
    "A plain psycopg connection to the database name"
    return psycopg.connect(URI, dbname=name, **kwargs)


def activate(name):
    "Activate fuel_payment in the empty database name with trytond-admin"
    fd, passfile = tempfile.mkstemp(prefix='bench-pass-')
    try:
        with os.fdopen(fd, 'w') as file:
            file.write(secrets.token_urlsafe(12) + '\n')
        env = dict(os.environ,
            TRYTOND_DATABASE__URI=URI, TRYTONPASSFILE=passfile)
        result = subprocess.run([
                str(ROOT / '.venv' / 'bin' / 'trytond-admin'),
                '-c', str(CONFIG), '-d', name, '-u', *MODULES,
                '--activate-dependencies', '--email', 'admin@example.com'],
            cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    finally:
        os.unlink(passfile)
    if result.returncode:
        raise RuntimeError(
            f"trytond-admin failed on {name}:\n{result.stderr[-2000:]}")


@contextlib.contextmanager
def throwaway_database(prefix):
    """Create, activate and yield the name of a new database; drop it on
    exit, whatever happens"""
    name = f'{prefix}_{os.getpid()}_{secrets.token_hex(3)}'
    with psycopg.connect(URI, dbname='postgres', autocommit=True) as conn:
        conn.execute(sql.SQL(
                "CREATE DATABASE {} TEMPLATE {} ENCODING 'UTF8'"
                ).format(sql.Identifier(name),
                sql.Identifier(TEMPLATE or 'template0')))
    try:
        if TEMPLATE:
            log(f"database {name} copied from {TEMPLATE}")
        else:
            started = time.perf_counter()
            log(f"activating {', '.join(MODULES)} in database {name}")
            activate(name)
            log(f"activated in {time.perf_counter() - started:.0f} s")
        configure_trytond(name)
        yield name
    finally:
        close_trytond(name)
        with psycopg.connect(
                URI, dbname='postgres', autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)")
                .format(sql.Identifier(name)))
        log(f"dropped database {name}")


def configure_trytond(name):
    "Point this process's trytond at the benchmark server and load name"
    from trytond.config import config
    from trytond.pool import Pool
    config.update_etc(str(CONFIG))
    config.set('database', 'uri', URI)
    Pool(name).init()


def close_trytond(name):
    "Close the connections this process's trytond holds on name"
    try:
        from trytond import backend
        backend.Database(name).close()
    except Exception:  # the database may never have been opened
        pass


# the tables each function asked to lock, by function name
LOCKS = {}
# of the last in_transaction call: seconds its committed attempt took
# (start to commit) and how many attempts were retried for locks before
last_attempt = {'seconds': 0.0, 'retries': 0}


def in_transaction(name, func, *args, user=0):
    """Return func(*args) run in a Tryton transaction on name as user, with
    the user's company in the context, committed

    A function that locks a table or records is retried with the locks
    asked, as trytond's dispatcher does; later calls of a function of the
    same name lock its tables from the start, so only its first call pays
    for the retry (records differ from call to call)."""
    from trytond.pool import Pool
    from trytond.transaction import Transaction, TransactionError
    tables = LOCKS.setdefault(func.__qualname__, [])
    extras = {'_lock_tables': list(tables)}
    last_attempt['retries'] = 0
    while True:
        started = time.perf_counter()
        with Transaction().start(name, user, **extras) as transaction:
            User = Pool().get('res.user')
            try:
                with transaction.set_context(
                        User.get_preferences(context_only=True)):
                    result = func(*args)
            except TransactionError as exception:
                transaction.rollback()
                exception.fix(extras)
                tables[:] = extras['_lock_tables']
                last_attempt['retries'] += 1
                continue
            transaction.commit()
        last_attempt['seconds'] = time.perf_counter() - started
        return result


def build_setup(name, nozzles=NOZZLES, code='S01'):
    """Create an operator with fuel_payment's test set-up (accounts,
    station, POS, priced nozzle 1, payment methods, open shift) plus
    nozzles 2 to `nozzles` on the same dispenser, grade and tank, and
    commit; return the ids of what it made"""
    return in_transaction(name, _build_setup, nozzles, code)


def _build_setup(nozzles, code):
    from trytond.modules.company.tests import create_company, set_company
    from trytond.pool import Pool

    from addons.fuel_payment.tests.tools import create_payment_setup
    Nozzle = Pool().get('fuel.station.nozzle')
    company = create_company()
    with set_company(company):
        setup = create_payment_setup(company, code)
        first = setup['nozzle']
        Nozzle.create([{
                    'station': first.station.id,
                    'dispenser': first.dispenser.id,
                    'number': n, 'station_number': n,
                    'grade': first.grade.id, 'tank': first.tank.id,
                    } for n in range(2, nozzles + 1)])
    return {
        'company': company.id,
        'station': setup['station'].id,
        'nozzles': list(range(1, nozzles + 1)),
        'grade': setup['grade'].id,
        'tank': setup['tank'].id,
        'point': setup['point'].id,
        'shift': setup['shift'].id,
        'methods': {k: m.id for k, m in setup['methods'].items()},
        'accounts': {k: a.id for k, a in setup['accounts'].items()},
        }


def make_items(station_id, count, start, totalizers,
        price=Decimal('7.5800'), quantum=Decimal('0.001')):
    """Return count completed fills of the station, spread over the nozzles
    of totalizers ({station nozzle number: totalizer}, updated), one per
    nozzle and second from start, with continuous totalizers and the
    set-up's price, so none is flagged; like tests/tools.fill

    Tryton keeps whole seconds of a DateTime, which the totalizer check
    orders by: a nozzle's fills must be at least a second apart.  The
    quantities are multiples of quantum litres."""
    numbers = sorted(totalizers)
    items = []
    for i in range(count):
        number = numbers[i % len(numbers)]
        quantity = (Decimal(20000 + (i * 7919) % 30000) / 1000
            / quantum).to_integral_value() * quantum
        end_date = start + dt.timedelta(seconds=i // len(numbers))
        totalizer = totalizers[number]
        totalizers[number] = totalizer + quantity
        items.append({
                'uuid': str(uuid.uuid4()),
                'station': station_id,
                'nozzle': number,
                'dispenser_reference': f'T{i}',
                'start_date': (
                    end_date - dt.timedelta(seconds=90)).isoformat(),
                'end_date': end_date.isoformat(),
                'quantity': str(quantity),
                'unit_price': str(price),
                'amount': str((quantity * price).quantize(Decimal('0.01'))),
                'totalizer_start': str(totalizer),
                'totalizer_end': str(totalizers[number]),
                })
    return items


def chunks(items, size):
    return [items[i:i + size] for i in range(0, len(items), size)]
