# This file is part of fuelpay.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""Outbox throughput against raw SQLite, measured side by side in one run

Enqueues EVENTS transaction events into `iot_box.outbox.Outbox`, then
replays them (pending() + mark_sent(), as the uplink does), and does the
same with raw SQLite statements on a similar table with the same pragmas
(WAL, synchronous=FULL) and the same rows already encoded.  Prints both
rates, their ratio (goal >= 0.3x) and the number of events lost in the
replay (must be 0).

What is measured: appends go through `Outbox.append_many` in batches of
BATCH events, one transaction each, durable when it returns exactly like
`append`; the raw side commits the same batches.  A smaller run of
SINGLE events through `Outbox.append` (one fsync per event, the case of a
pump acknowledging each sale) against raw one-row commits is printed too.

    .venv/bin/python bench/outbox.py [--events 100000] [--dir DIR]

DIR defaults to a temporary directory; put it on the box's real storage
to see its fsync cost.
"""
from __future__ import annotations

import argparse
import datetime as dt
import sqlite3
import tempfile
import time
import uuid
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

from iot_box.events import EVENT_VERSION, EventKind, encode_json
from iot_box.outbox import SCHEMA, Outbox

EVENTS = 100_000
# a box drains its queue in batches of about this size after an outage
BATCH = 100
# per-event commits cost one fsync each: keep this run short
SINGLE = 2_000


Item = tuple[EventKind, str, dt.datetime, dict]


def make_items(count: int) -> list[Item]:
    start = dt.datetime(2024, 6, 1, 6, 0, tzinfo=dt.UTC)
    return [
        (EventKind.TRANSACTION_COMPLETED, f'pump-{i % 4 + 1}',
            start + dt.timedelta(seconds=i),
            {'nozzle': i % 2 + 1,
                'volume': Decimal(i % 5000) / 100,
                'amount': Decimal(i % 9000) / 100,
                'price': Decimal('1.799'),
                'totalizer': Decimal(1_000_000 + i) / 100,
                'price_set': 17})
        for i in range(count)]


def chunks(items: list, size: int) -> list[list]:
    return [items[i:i + size] for i in range(0, len(items), size)]


def outbox_run(path: Path, items: list[Item], batch: int) -> tuple[
        float, float, int]:
    "Enqueue then replay through Outbox: (enqueue s, replay s, lost)"
    with Outbox(path) as outbox:
        start = time.perf_counter()
        appended: list[str] = []
        if batch == 1:
            for item in items:
                appended.append(outbox.append(*item).uuid)
        else:
            for chunk in chunks(items, batch):
                appended.extend(e.uuid for e in outbox.append_many(chunk))
        enqueued = time.perf_counter()
        replayed: list[str] = []
        seqs: list[int] = []
        while events := outbox.pending(BATCH):
            seqs.extend(e.seq for e in events)
            uuids = [e.uuid for e in events]
            outbox.mark_sent(uuids)
            replayed.extend(uuids)
        done = time.perf_counter()
        assert seqs == list(range(1, len(items) + 1)), "seq not contiguous"
        assert len(set(replayed)) == len(replayed), "duplicates"
        lost = len(set(appended) - set(replayed))
    return enqueued - start, done - enqueued, lost


def raw_run(path: Path, items: list[Item], batch: int) -> tuple[
        float, float, int]:
    "The same rows, pre-encoded, with plain sqlite3 statements"
    created = dt.datetime.now(dt.UTC).isoformat()
    rows = [
        (str(uuid.uuid4()), str(kind), device, device_time.isoformat(),
            encode_json(payload), EVENT_VERSION, created)
        for kind, device, device_time, payload in items]
    connection = sqlite3.connect(path, isolation_level=None)
    try:
        connection.execute('PRAGMA journal_mode = WAL')
        connection.execute('PRAGMA synchronous = FULL')
        # the very tables and index of the outbox
        for statement in SCHEMA:
            connection.execute(statement)
        insert = (
            'INSERT INTO event (uuid, kind, device, device_time, payload, '
            'version, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)')
        start = time.perf_counter()
        for chunk in chunks(rows, batch):
            connection.execute('BEGIN IMMEDIATE')
            connection.executemany(insert, chunk)
            connection.execute('COMMIT')
        enqueued = time.perf_counter()
        replayed = 0
        while True:
            found = connection.execute(
                'SELECT uuid, seq, kind, device, device_time, payload, '
                'version FROM event WHERE sent_at IS NULL ORDER BY seq '
                'LIMIT ?', (BATCH,)).fetchall()
            if not found:
                break
            sent_at = dt.datetime.now(dt.UTC).isoformat()
            connection.execute('BEGIN IMMEDIATE')
            connection.executemany(
                'UPDATE event SET sent_at = ? '
                'WHERE uuid = ? AND sent_at IS NULL',
                [(sent_at, r[0]) for r in found])
            connection.execute('COMMIT')
            replayed += len(found)
        done = time.perf_counter()
    finally:
        connection.close()
    return enqueued - start, done - enqueued, len(rows) - replayed


def compare(
        label: str, directory: Path, items: list[Item], batch: int) -> None:
    runs: dict[str, tuple[float, float, int]] = {}
    run: Callable[[Path, list[Item], int], tuple[float, float, int]]
    for name, run in (('raw', raw_run), ('outbox', outbox_run)):
        runs[name] = run(directory / f'{label}-{name}.sqlite', items, batch)
    count = len(items)
    print(f"\n{label}: {count} events, {batch} per transaction")
    for name, (enqueue, replay, lost) in runs.items():
        total = enqueue + replay
        print(
            f"  {name:7} enqueue {count / enqueue:9.0f} ev/s  "
            f"replay {count / replay:9.0f} ev/s  "
            f"total {total:6.2f} s = {count / total:8.0f} ev/s  "
            f"lost {lost}")
    raw, box = (sum(runs[n][:2]) for n in ('raw', 'outbox'))
    print(f"  ratio outbox/raw (enqueue + replay): {raw / box:.2f}x "
        "(goal >= 0.3x)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--events', type=int, default=EVENTS)
    parser.add_argument('--dir', type=Path, default=None)
    args = parser.parse_args()
    items = make_items(args.events)
    with tempfile.TemporaryDirectory(dir=args.dir) as directory:
        compare('batched', Path(directory), items, BATCH)
        compare('per-event', Path(directory),
            items[:min(SINGLE, args.events)], 1)


if __name__ == '__main__':
    main()
