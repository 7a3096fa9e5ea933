# This file is part of fuelpay.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""Fallback mode: keep the station selling while the server is away

`Fallback` follows the link: `link_failed()` on each UplinkUnavailable,
`link_ok()` on each answer.  Once the server has been unreachable for
`threshold` seconds in a row (the policy's `after`, ``[fallback] after``
in box.toml, `FALLBACK_THRESHOLD` by default), `active` is true and
the app applies the box's LOCAL policy (``[fallback]`` in box.toml):
``attended_postpay`` authorises lifted nozzles within its limits (the
attendant takes the payment), ``disabled`` authorises nothing.  The first
answer of the server ends it; entries and exits are logged and counted.

Sales authorised in fallback are counted per nozzle (count, volume,
amount as Decimal) in `FallbackTotals`, a small SQLite database of its
own beside the outbox (``<outbox>.fallback.sqlite``), so the totals survive
a restart; the events of those sales carry ``"fallback": true`` and go to
the outbox as every event does, to be replayed in order once the link is
back.  Counting and the event are two transactions: a crash between them
may miss one sale in the totals, never an event.
"""
from __future__ import annotations

import datetime as dt
import logging
import os
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from types import TracebackType
from typing import Any

from iot_box.config import DEFAULT_FALLBACK_AFTER, FallbackMode, FallbackPolicy

__all__ = [
    'FALLBACK_THRESHOLD',
    'Fallback',
    'FallbackTotals',
    'NozzleTotal',
    'totals_path',
]

logger = logging.getLogger(__name__)

# The default of `FallbackPolicy.after` (why that value: in config.py)
FALLBACK_THRESHOLD = DEFAULT_FALLBACK_AFTER
# As the outbox: the status command may read while the box writes
BUSY_TIMEOUT_MS = 5000

SCHEMA = (
    """CREATE TABLE IF NOT EXISTS fallback_total (
        station_number INTEGER PRIMARY KEY,
        device TEXT NOT NULL,
        nozzle INTEGER,
        count INTEGER NOT NULL,
        volume TEXT NOT NULL,
        amount TEXT NOT NULL,
        last_at TEXT NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS fallback_counter (
        name TEXT PRIMARY KEY,
        value INTEGER NOT NULL)""",
    )
ZERO = Decimal(0)


def totals_path(outbox_path: str | os.PathLike[str]) -> Path:
    "Where the fallback totals of the box with this outbox are kept"
    path = Path(outbox_path)
    return path.with_name(path.name + '.fallback.sqlite')


@dataclass(frozen=True, slots=True)
class NozzleTotal:
    station_number: int
    device: str
    nozzle: int | None
    count: int
    volume: Decimal
    amount: Decimal

    def to_dict(self) -> dict[str, Any]:
        return {
            'station_number': self.station_number, 'device': self.device,
            'nozzle': self.nozzle, 'count': self.count,
            'volume': str(self.volume), 'amount': str(self.amount)}


class FallbackTotals:
    "Per-nozzle totals of the sales made in fallback, on disk"

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        self._db: sqlite3.Connection | None = sqlite3.connect(
            self.path, isolation_level=None)
        try:
            self._db.execute(f'PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}')
            self._db.execute('PRAGMA journal_mode = WAL')
            self._db.execute('PRAGMA synchronous = FULL')
            for statement in SCHEMA:
                self._db.execute(statement)
        except BaseException:
            self._db.close()
            self._db = None
            raise

    @property
    def db(self) -> sqlite3.Connection:
        if self._db is None:
            raise RuntimeError(f"fallback totals {self.path} are closed")
        return self._db

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    def __enter__(self) -> FallbackTotals:
        return self

    def __exit__(
            self, exc_type: type[BaseException] | None,
            exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def add(
            self, station_number: int, device: str, nozzle: int | None,
            volume: Decimal, amount: Decimal) -> NozzleTotal:
        "Count one sale; return the nozzle's new total"
        now = dt.datetime.now(dt.UTC).isoformat()
        db = self.db
        db.execute('BEGIN IMMEDIATE')
        try:
            row = db.execute(
                'SELECT count, volume, amount FROM fallback_total '
                'WHERE station_number = ?', (station_number,)).fetchone()
            count, total_volume, total_amount = (
                (row[0], Decimal(row[1]), Decimal(row[2])) if row
                else (0, ZERO, ZERO))
            total = NozzleTotal(
                station_number, device, nozzle, count + 1,
                total_volume + volume, total_amount + amount)
            db.execute(
                'INSERT INTO fallback_total (station_number, device, '
                'nozzle, count, volume, amount, last_at) '
                'VALUES (?, ?, ?, ?, ?, ?, ?) '
                'ON CONFLICT (station_number) DO UPDATE SET '
                'device = excluded.device, nozzle = excluded.nozzle, '
                'count = excluded.count, volume = excluded.volume, '
                'amount = excluded.amount, last_at = excluded.last_at',
                (station_number, device, nozzle, total.count,
                    str(total.volume), str(total.amount), now))
        except BaseException:
            db.execute('ROLLBACK')
            raise
        db.execute('COMMIT')
        return total

    def totals(self) -> list[NozzleTotal]:
        rows = self.db.execute(
            'SELECT station_number, device, nozzle, count, volume, amount '
            'FROM fallback_total ORDER BY station_number').fetchall()
        return [
            NozzleTotal(s, d, n, c, Decimal(v), Decimal(a))
            for s, d, n, c, v, a in rows]

    def increment(self, name: str) -> int:
        "Add one to a counter (entries, exits); return its new value"
        db = self.db
        db.execute(
            'INSERT INTO fallback_counter (name, value) VALUES (?, 1) '
            'ON CONFLICT (name) DO UPDATE SET value = value + 1', (name,))
        return self.counter(name)

    def counter(self, name: str) -> int:
        row = self.db.execute(
            'SELECT value FROM fallback_counter WHERE name = ?',
            (name,)).fetchone()
        return row[0] if row else 0


class Fallback:
    "Whether the box is in fallback, and its totals"

    def __init__(
            self, policy: FallbackPolicy, totals: FallbackTotals, *,
            threshold: float | None = None,
            clock: Callable[[], float] = time.monotonic) -> None:
        "threshold: seconds before fallback; None: the policy's `after`"
        self.policy = policy
        self.totals = totals
        self.threshold = policy.after if threshold is None else threshold
        self._clock = clock
        self.unreachable_since: float | None = None
        self._active = False
        self.entered_at: dt.datetime | None = None

    @property
    def active(self) -> bool:
        "True once the server has been unreachable for threshold seconds"
        if not self._active and self.unreachable_since is not None and (
                self._clock() - self.unreachable_since >= self.threshold):
            self._active = True
            self.entered_at = dt.datetime.now(dt.UTC)
            entries = self.totals.increment('entries')
            logger.warning(
                "server unreachable for %.0f s: fallback mode (%s, "
                "max amount %s, max volume %s); entry %s",
                self._clock() - self.unreachable_since, self.policy.mode,
                self.policy.max_amount, self.policy.max_volume, entries)
        return self._active

    @property
    def authorizes(self) -> bool:
        "Whether lifted nozzles are authorised by the box in fallback"
        return self.policy.mode is FallbackMode.ATTENDED_POSTPAY

    def link_failed(self) -> None:
        if self.unreachable_since is None:
            self.unreachable_since = self._clock()

    def link_ok(self) -> None:
        self.unreachable_since = None
        if self._active:
            self._active = False
            exits = self.totals.increment('exits')
            logger.warning(
                "server reachable again: fallback mode ends (since %s); "
                "exit %s", self.entered_at, exits)
            self.entered_at = None

    def record_sale(
            self, station_number: int, device: str, nozzle: int | None,
            volume: Decimal, amount: Decimal) -> NozzleTotal:
        total = self.totals.add(station_number, device, nozzle, volume, amount)
        logger.info(
            "%s: fallback sale on nozzle %s: %s for %s (%s sales so far)",
            device, station_number, volume, amount, total.count)
        return total

    def to_dict(self) -> dict[str, Any]:
        return {
            'active': self.active,
            'mode': str(self.policy.mode),
            'max_amount': str(self.policy.max_amount),
            'max_volume': str(self.policy.max_volume),
            'after': self.threshold,
            'since': self.entered_at.isoformat() if self.entered_at else None,
            'entries': self.totals.counter('entries'),
            'exits': self.totals.counter('exits'),
            'totals': [t.to_dict() for t in self.totals.totals()],
            }
