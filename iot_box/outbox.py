# This file is part of fuelpay.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""Store-and-forward outbox: SQLite in WAL mode, write before acknowledging

`Outbox.append` stores an event and returns only once the event is on
disk: a driver acknowledges a pump's end of sale (or anything else) only
after `append` returned, so a crash or a power cut at any instant loses
nothing that was acknowledged.  Each event gets a uuid4 (the server
deduplicates on it) and a per-box monotonic `seq`, assigned in the same
transaction as the insert.  The uplink reads `pending()` in seq order and
calls `mark_sent()` once the server confirmed; a crash between the two
sends the same events again, which the server ignores by uuid.  Sent
events stay (audit, seq); the one-time payment code of a sent
``payment_code`` event is masked by `mark_sent` to its first 4 digits.

Server commands carry a `command_id`: `command_done(id, result)` records
the result of an executed command and `command_result(id)` finds it, so a
command the server repeats is answered with the stored result instead of
being executed twice.

`append_once(..., key=...)` (and `append_many(..., done_key=...)`) stores
events and records `key` as done in ONE transaction, and stores nothing if
the key is already recorded: a driver that records a pump's sale under a
key made of the pump's own figures (totalizers, volume, amount) cannot
repeat it, whatever instant the process is killed at.

`put(key, value)` stores state that survives a restart and that a later
value replaces (a driver's prices and totals), read back with
`command_result(key)`; `append_once(..., put=...)` writes it in the
event's transaction.

The connection is synchronous and meant for one thread (the asyncio loop's
own): every call is one short transaction.
"""
from __future__ import annotations

import datetime as dt
import logging
import os
import sqlite3
import uuid
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from types import TracebackType
from typing import Any

from iot_box.events import (
    EVENT_VERSION,
    Event,
    EventKind,
    decode_json,
    encode_json,
    mask_code,
)

__all__ = ['Outbox', 'OutboxError']

logger = logging.getLogger(__name__)

# Another process (e.g. `python -m iot_box status`) may read the database
# while the box writes; wait this long for a lock instead of failing
BUSY_TIMEOUT_MS = 5000

SCHEMA = (
    # AUTOINCREMENT: SQLite never reuses a seq, even once sent rows are
    # purged, so seq stays monotonic for the whole life of the box
    """CREATE TABLE IF NOT EXISTS event (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        uuid TEXT NOT NULL UNIQUE,
        kind TEXT NOT NULL,
        device TEXT NOT NULL,
        device_time TEXT NOT NULL,
        payload TEXT NOT NULL,
        version INTEGER NOT NULL,
        created_at TEXT NOT NULL,
        sent_at TEXT)""",
    # pending() walks this index: already sent events cost nothing
    """CREATE INDEX IF NOT EXISTS event_pending
        ON event (seq) WHERE sent_at IS NULL""",
    """CREATE TABLE IF NOT EXISTS command (
        command_id TEXT PRIMARY KEY,
        result TEXT NOT NULL,
        done_at TEXT NOT NULL)""",
    )

EventItem = tuple[EventKind | str, str, dt.datetime, Mapping[str, Any]]


class OutboxError(RuntimeError):
    "The outbox cannot be used (closed, or not an outbox database)"


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat()


class Outbox:
    "The box's durable event queue and record of executed commands"

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        # isolation_level=None: no implicit transactions; every write is an
        # explicit BEGIN IMMEDIATE ... COMMIT below
        self._connection: sqlite3.Connection | None = sqlite3.connect(
            self.path, isolation_level=None)
        try:
            self._setup(self._connection)
        except BaseException:
            self._connection.close()
            self._connection = None
            raise
        logger.debug(
            "outbox %s opened: %s pending, last seq %s",
            self.path, self.depth(), self.last_seq())

    @staticmethod
    def _setup(connection: sqlite3.Connection) -> None:
        connection.execute(f'PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}')
        mode = connection.execute('PRAGMA journal_mode = WAL').fetchone()[0]
        if mode.lower() != 'wal':
            raise OutboxError(f"cannot use WAL mode (got {mode})")
        # In WAL mode, synchronous=NORMAL only syncs at checkpoints: a
        # commit survives the process being killed, but a power cut may
        # roll back the last commits.  FULL syncs the WAL at every commit,
        # so an event is on disk when append() returns even if the station
        # loses power; that is the promise drivers rely on before they
        # acknowledge a sale
        connection.execute('PRAGMA synchronous = FULL')
        with Outbox._transaction(connection):
            for statement in SCHEMA:
                connection.execute(statement)

    @staticmethod
    @contextmanager
    def _transaction(
            connection: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
        # IMMEDIATE takes the write lock up front: reading last seq and
        # inserting happen under one lock
        connection.execute('BEGIN IMMEDIATE')
        try:
            yield connection
        except BaseException:
            connection.execute('ROLLBACK')
            raise
        connection.execute('COMMIT')

    @property
    def _db(self) -> sqlite3.Connection:
        if self._connection is None:
            raise OutboxError(f"outbox {self.path} is closed")
        return self._connection

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def __enter__(self) -> Outbox:
        return self

    def __exit__(
            self, exc_type: type[BaseException] | None,
            exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    # events

    def append(
            self, kind: EventKind | str, device: str,
            device_time: dt.datetime, payload: Mapping[str, Any]) -> Event:
        "Store one event; it is durable when this returns"
        return self.append_many([(kind, device, device_time, payload)])[0]

    def append_once(
            self, kind: EventKind | str, device: str,
            device_time: dt.datetime, payload: Mapping[str, Any], *,
            key: str, result: Mapping[str, Any] | None = None,
            put: Mapping[str, Mapping[str, Any]] | None = None,
            ) -> Event | None:
        """Store one event and record `key` as done, atomically

        Returns the event, or None (nothing stored) if `key` was already
        recorded.  The stored result of `key` is `result` plus the event's
        uuid and seq (`command_result(key)` gives it back).  `put`: values
        stored as by `put()` in the same transaction (not if nothing is
        stored)."""
        events = self.append_many(
            [(kind, device, device_time, payload)], done_key=key,
            done_result=result, put=put)
        return events[0] if events else None

    def append_many(
            self, items: Iterable[EventItem], *,
            done_key: str | None = None,
            done_result: Mapping[str, Any] | None = None,
            put: Mapping[str, Mapping[str, Any]] | None = None,
            ) -> list[Event]:
        """Store events in one transaction, in order

        All or none are stored, and they are durable when this returns,
        exactly as with `append`.  With `done_key`, the key is recorded
        (as by `command_done`, its result being `done_result` plus the
        first event's uuid and seq) in the same transaction; if the key
        was already recorded nothing is stored and [] is returned.  `put`:
        values stored (replaced) as by `put()`, in the same transaction."""
        if done_key is not None and not done_key:
            raise ValueError("done_key must not be empty")
        events: list[Event] = []
        created_at = _now()
        with self._transaction(self._db) as db:
            if done_key is not None and db.execute(
                    'SELECT 1 FROM command WHERE command_id = ?',
                    (done_key,)).fetchone():
                logger.info("outbox: %s already recorded", done_key)
                return []
            for kind, device, device_time, payload in items:
                payload_json = encode_json(payload)
                event_uuid = str(uuid.uuid4())
                kind = EventKind(kind)
                cursor = db.execute(
                    'INSERT INTO event (uuid, kind, device, device_time, '
                    'payload, version, created_at) '
                    'VALUES (?, ?, ?, ?, ?, ?, ?)',
                    (event_uuid, kind, device, device_time.isoformat(),
                        payload_json, EVENT_VERSION, created_at))
                assert cursor.lastrowid is not None
                # Event validates (aware time, device...); if it refuses,
                # the transaction rolls back
                events.append(Event(
                        uuid=event_uuid, seq=cursor.lastrowid, kind=kind,
                        device=device, device_time=device_time,
                        payload=payload))
            if done_key is not None:
                first = {'event': events[0].uuid, 'seq': events[0].seq} if (
                    events) else {}
                db.execute(
                    'INSERT INTO command (command_id, result, done_at) '
                    'VALUES (?, ?, ?)',
                    (done_key, encode_json({**(done_result or {}), **first}),
                        created_at))
            for key, value in (put or {}).items():
                self._put(db, key, value, created_at)
        if events:
            logger.debug(
                "outbox: stored seq %s-%s", events[0].seq, events[-1].seq)
        return events

    def pending(self, limit: int = 100) -> list[Event]:
        "The oldest events not yet sent, in seq order"
        rows = self._db.execute(
            'SELECT uuid, seq, kind, device, device_time, payload, version '
            'FROM event WHERE sent_at IS NULL ORDER BY seq LIMIT ?',
            (limit,)).fetchall()
        return [
            Event(
                uuid=uuid_, seq=seq, kind=EventKind(kind), device=device,
                device_time=dt.datetime.fromisoformat(device_time),
                payload=decode_json(payload), version=version)
            for uuid_, seq, kind, device, device_time, payload, version
            in rows]

    def mark_sent(self, uuids: Iterable[str]) -> int:
        """Record that the server has these events

        Idempotent: events already marked and unknown uuids are ignored.
        Returns how many events were newly marked.  The payment code of a
        ``payment_code`` event is masked in the same transaction (see
        `_forget_codes`): the box keeps no usable code once the server
        has it."""
        uuids = list(uuids)
        sent_at = _now()
        with self._transaction(self._db) as db:
            before = db.total_changes
            db.executemany(
                'UPDATE event SET sent_at = ? '
                'WHERE uuid = ? AND sent_at IS NULL',
                ((sent_at, u) for u in uuids))
            marked = db.total_changes - before
            self._forget_codes(db, uuids)
            return marked

    @staticmethod
    def _forget_codes(db: sqlite3.Connection, uuids: list[str]) -> None:
        """Mask the code of the sent ``payment_code`` events among uuids

        A payment code is a one-time credential of the customer: sent
        events stay in the outbox (seq, audit), so their code is replaced
        by its first 4 digits (`mask_code`) as soon as the server
        confirmed it."""
        for sub in (uuids[i:i + 500] for i in range(0, len(uuids), 500)):
            rows = db.execute(
                'SELECT seq, payload FROM event WHERE kind = ? '
                'AND sent_at IS NOT NULL AND uuid IN (%s)' % ', '.join(
                    '?' * len(sub)),
                (str(EventKind.PAYMENT_CODE), *sub)).fetchall()
            for seq, payload_json in rows:
                payload = decode_json(payload_json)
                code = payload.get('code')
                if not isinstance(code, str) or code == mask_code(code):
                    continue
                payload['code'] = mask_code(code)
                db.execute(
                    'UPDATE event SET payload = ? WHERE seq = ?',
                    (encode_json(payload), seq))
                logger.debug(
                    "outbox: code %s of seq %s masked once sent",
                    payload['code'], seq)

    def depth(self) -> int:
        "How many events wait to be sent"
        return self._db.execute(
            'SELECT COUNT(*) FROM event WHERE sent_at IS NULL').fetchone()[0]

    def last_seq(self) -> int:
        "The seq of the last event ever stored, 0 if none"
        row = self._db.execute(
            "SELECT seq FROM sqlite_sequence WHERE name = 'event'"
            ).fetchone()
        return row[0] if row else 0

    # commands

    def command_done(
            self, command_id: str, result: Mapping[str, Any]) -> Mapping[
                str, Any]:
        """Record the result of an executed command

        If the command was already recorded, the first result stays and is
        returned: a command is executed once."""
        if not command_id:
            raise ValueError("command_id must not be empty")
        with self._transaction(self._db) as db:
            db.execute(
                'INSERT INTO command (command_id, result, done_at) '
                'VALUES (?, ?, ?) ON CONFLICT (command_id) DO NOTHING',
                (command_id, encode_json(result), _now()))
            stored = db.execute(
                'SELECT result FROM command WHERE command_id = ?',
                (command_id,)).fetchone()[0]
        return decode_json(stored)

    @staticmethod
    def _put(
            db: sqlite3.Connection, key: str, value: Mapping[str, Any],
            now: str) -> None:
        if not key:
            raise ValueError("key must not be empty")
        db.execute(
            'INSERT INTO command (command_id, result, done_at) '
            'VALUES (?, ?, ?) ON CONFLICT (command_id) DO UPDATE SET '
            'result = excluded.result, done_at = excluded.done_at',
            (key, encode_json(value), now))

    def put(self, key: str, value: Mapping[str, Any]) -> None:
        """Store `value` under `key`, replacing what was there (unlike
        `command_done`): state a driver keeps across restarts, read back
        with `command_result(key)`"""
        with self._transaction(self._db) as db:
            self._put(db, key, value, _now())

    def command_result(self, command_id: str) -> Mapping[str, Any] | None:
        "The stored result of an executed command, None if never executed"
        row = self._db.execute(
            'SELECT result FROM command WHERE command_id = ?',
            (command_id,)).fetchone()
        return decode_json(row[0]) if row else None
