# This file is part of fuelpay.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""Events' JSON form, and the outbox: order, idempotence, crash safety"""
from __future__ import annotations

import datetime as dt
import json
import os
import pathlib
import signal
import subprocess
import sys
import textwrap
from decimal import Decimal

import pytest

from iot_box.events import Event, EventError, EventKind, decode_json
from iot_box.outbox import Outbox, OutboxError

ROOT = pathlib.Path(__file__).resolve().parents[2]
CEST = dt.timezone(dt.timedelta(hours=2))
T0 = dt.datetime(2024, 6, 1, 8, 30, 15, 123456, tzinfo=CEST)
# the child of the crash test must reach this many acknowledged appends
# within this many seconds
CRASH_EVENTS = 40
CRASH_TIMEOUT = 30


def sale(amount: str = '62.417', volume: str = '34.107') -> dict:
    return {
        'nozzle': 2,
        'volume': Decimal(volume),
        'amount': Decimal(amount),
        'price': Decimal('1.830'),
        'totalizer': Decimal('1234567.89'),
        'started': T0 - dt.timedelta(minutes=2),
        'price_set': 17,
        'plate': None,
        'flags': ['preset', 'fallback'],
        }


# events

def test_event_json_round_trip_keeps_decimals_exact() -> None:
    event = Event(
        uuid='6f1c7a43-2a4c-4b53-9a2c-0c5b0a7e7d11', seq=7,
        kind=EventKind.TRANSACTION_COMPLETED, device='pump-1',
        device_time=T0, payload=sale())

    text = event.to_json()
    data = json.loads(text)
    # decimals travel as strings, never as floats
    assert data['payload']['amount'] == {'__decimal__': '62.417'}
    assert data['payload']['totalizer'] == {'__decimal__': '1234567.89'}
    assert data['version'] == 1
    assert data['kind'] == 'transaction_completed'

    back = Event.from_json(text)
    assert back == event
    assert back.payload['amount'] == Decimal('62.417')
    assert str(back.payload['volume']) == '34.107'
    # trailing zeros kept: 1.830, not 1.83
    assert str(back.payload['price']) == '1.830'
    assert back.device_time == T0
    assert back.device_time.utcoffset() == dt.timedelta(hours=2)
    assert back.payload['started'] == T0 - dt.timedelta(minutes=2)
    assert back.kind is EventKind.TRANSACTION_COMPLETED


def test_event_refuses_naive_time_and_bad_fields() -> None:
    good = dict(
        uuid='6f1c7a43-2a4c-4b53-9a2c-0c5b0a7e7d11', seq=1,
        kind='nozzle_up', device='pump-1', device_time=T0,
        payload={'nozzle': 1})
    assert Event(**good).kind is EventKind.NOZZLE_UP
    for field, value in [
            ('device_time', T0.replace(tzinfo=None)),
            ('kind', 'nozzle_sideways'),
            ('seq', 0),
            ('uuid', 'not-a-uuid'),
            ('device', ''),
            ('payload', [1, 2])]:
        with pytest.raises(EventError):
            Event(**{**good, field: value})
    with pytest.raises(EventError, match='version'):
        Event.from_json(json.dumps({
                    **good, 'version': 99,
                    'device_time': {'__datetime__': T0.isoformat()}}))
    with pytest.raises(EventError, match='exactly'):
        Event.from_json(json.dumps({'uuid': good['uuid']}))
    with pytest.raises(EventError, match='naive'):
        decode_json('{"__datetime__": "2024-06-01T08:30:00"}')


def test_event_payload_is_read_only() -> None:
    payload = {'nozzle': 1}
    event = Event(
        uuid='6f1c7a43-2a4c-4b53-9a2c-0c5b0a7e7d11', seq=1,
        kind=EventKind.NOZZLE_UP, device='pump-1', device_time=T0,
        payload=payload)
    payload['nozzle'] = 2
    assert event.payload['nozzle'] == 1
    with pytest.raises(TypeError):
        event.payload['nozzle'] = 3  # type: ignore[index]


# outbox

@pytest.fixture
def db(tmp_path: pathlib.Path) -> pathlib.Path:
    return tmp_path / 'outbox.sqlite'


def test_append_and_pending_in_seq_order(db: pathlib.Path) -> None:
    with Outbox(db) as outbox:
        assert (outbox.depth(), outbox.last_seq()) == (0, 0)
        first = outbox.append(
            EventKind.TRANSACTION_COMPLETED, 'pump-1', T0, sale())
        second = outbox.append('nozzle_up', 'pump-2', T0, {'nozzle': 1})
        assert (first.seq, second.seq) == (1, 2)
        assert first.uuid != second.uuid
        assert (outbox.depth(), outbox.last_seq()) == (2, 2)

        assert outbox.pending() == [first, second]
        assert outbox.pending(limit=1) == [first]
        stored = outbox.pending()[0]
        assert stored.payload['amount'] == Decimal('62.417')
        assert stored.device_time == T0
        assert stored.device_time.utcoffset() == dt.timedelta(hours=2)


def test_seq_monotonic_across_reopen_and_mark_sent(db: pathlib.Path) -> None:
    with Outbox(db) as outbox:
        events = [
            outbox.append(EventKind.RUNNING_TOTAL, 'pump-1', T0, {'i': i})
            for i in range(5)]
        assert outbox.mark_sent(e.uuid for e in events) == 5
        assert outbox.depth() == 0
    with Outbox(db) as outbox:
        assert outbox.last_seq() == 5
        event = outbox.append(EventKind.ALARM, 'pump-1', T0, {'code': 3})
        # the seq of sent events is never reused
        assert event.seq == 6
        assert outbox.pending() == [event]


def test_mark_sent_is_idempotent(db: pathlib.Path) -> None:
    with Outbox(db) as outbox:
        events = outbox.append_many(
            (EventKind.NOZZLE_DOWN, 'pump-1', T0, {'n': i})
            for i in range(4))
        assert [e.seq for e in events] == [1, 2, 3, 4]
        uuids = [events[0].uuid, events[2].uuid]

        assert outbox.mark_sent(uuids) == 2
        assert outbox.mark_sent(uuids) == 0
        # an unknown uuid is ignored
        assert outbox.mark_sent(
            ['00000000-0000-4000-8000-000000000000']) == 0
        assert outbox.pending() == [events[1], events[3]]
        assert outbox.depth() == 2


def test_append_many_is_all_or_nothing(db: pathlib.Path) -> None:
    with Outbox(db) as outbox:
        outbox.append(EventKind.NOZZLE_UP, 'pump-1', T0, {})
        with pytest.raises(EventError):
            outbox.append_many([
                    (EventKind.NOZZLE_DOWN, 'pump-1', T0, {}),
                    (EventKind.NOZZLE_UP, 'pump-1',
                        T0.replace(tzinfo=None), {})])
        with pytest.raises(TypeError):
            outbox.append(EventKind.ALARM, 'pump-1', T0, {'x': object()})
        assert outbox.depth() == 1
        assert outbox.append(EventKind.ALARM, 'pump-1', T0, {}).seq == 2


def test_command_result_answered_not_reexecuted(db: pathlib.Path) -> None:
    with Outbox(db) as outbox:
        assert outbox.command_result('cmd-1') is None
        result = {'status': 'done', 'price': Decimal('1.799')}
        assert outbox.command_done('cmd-1', result) == result
        # a second completion does not overwrite the first
        assert outbox.command_done('cmd-1', {'status': 'failed'}) == result
    with Outbox(db) as outbox:
        stored = outbox.command_result('cmd-1')
        assert stored == result
        assert str(stored['price']) == '1.799'
        assert outbox.command_result('cmd-2') is None


def test_closed_outbox_refuses(db: pathlib.Path) -> None:
    outbox = Outbox(db)
    outbox.close()
    outbox.close()
    with pytest.raises(OutboxError, match='closed'):
        outbox.depth()


def test_outbox_uses_wal_and_full_sync(db: pathlib.Path) -> None:
    with Outbox(db) as outbox:
        connection = outbox._db
        assert connection.execute(
            'PRAGMA journal_mode').fetchone()[0] == 'wal'
        # 2 = FULL
        assert connection.execute(
            'PRAGMA synchronous').fetchone()[0] == 2


# crash safety: a child process appends and reports each acknowledged
# event on stdout; the parent kills it with SIGKILL

CHILD = textwrap.dedent('''
    import datetime as dt, sys
    from decimal import Decimal
    from iot_box.outbox import Outbox
    path, count = sys.argv[1], int(sys.argv[2])
    outbox = Outbox(path)
    t = dt.datetime.now(dt.UTC)
    i = 0
    while count < 0 or i < count:
        event = outbox.append(
            'transaction_completed', 'pump-1', t,
            {'amount': Decimal(i) / 100})
        # acknowledged only once append returned
        print(event.seq, event.uuid, flush=True)
        i += 1
    print('done', flush=True)
    sys.stdin.read()  # wait to be killed
    ''')


def run_and_kill(db: pathlib.Path, count: int, kill_after: int) -> list[
        tuple[int, str]]:
    "Start the child, SIGKILL it after kill_after acknowledgements"
    child = subprocess.Popen(
        [sys.executable, '-c', CHILD, str(db), str(count)],
        cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        env={**os.environ, 'PYTHONPATH': str(ROOT)})
    acknowledged: list[tuple[int, str]] = []
    try:
        assert child.stdout is not None
        for line in child.stdout:
            if line.strip() == 'done':
                continue
            seq, uuid = line.split()
            acknowledged.append((int(seq), uuid))
            if len(acknowledged) == kill_after:
                break
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=CRASH_TIMEOUT)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        for stream in (child.stdin, child.stdout):
            if stream is not None:
                stream.close()
    assert child.returncode == -signal.SIGKILL
    assert len(acknowledged) == kill_after
    return acknowledged


def stored(db: pathlib.Path) -> list[tuple[int, str]]:
    with Outbox(db) as outbox:
        return [(e.seq, e.uuid) for e in outbox.pending(limit=10_000)]


def test_sigkill_after_n_appends_keeps_exactly_n(db: pathlib.Path) -> None:
    acknowledged = run_and_kill(db, CRASH_EVENTS, CRASH_EVENTS)

    events = stored(db)
    assert events == acknowledged
    assert [seq for seq, _ in events] == list(range(1, CRASH_EVENTS + 1))
    with Outbox(db) as outbox:
        assert outbox.append(
            EventKind.ALARM, 'box', T0, {}).seq == CRASH_EVENTS + 1


def test_sigkill_while_appending_loses_nothing(db: pathlib.Path) -> None:
    # killed while appending: events after the last acknowledgement may
    # or may not be there, but every acknowledged one is, once, in order
    acknowledged = run_and_kill(db, -1, CRASH_EVENTS)

    events = stored(db)
    assert events[:CRASH_EVENTS] == acknowledged
    seqs = [seq for seq, _ in events]
    assert seqs == list(range(1, len(events) + 1))
    assert len({uuid for _, uuid in events}) == len(events)


# an event and its de-duplication key in one transaction

def test_append_once_stores_the_event_and_its_key_together(
        db: pathlib.Path) -> None:
    with Outbox(db) as outbox:
        event = outbox.append_once(
            EventKind.TRANSACTION_COMPLETED, 'pump-1', T0, sale(),
            key='pump-1:sale:1', result={'recorded': True})
        assert event is not None and event.seq == 1
        assert outbox.command_result('pump-1:sale:1') == {
            'recorded': True, 'event': event.uuid, 'seq': 1}
        # the same key again: nothing stored, whatever the payload
        assert outbox.append_once(
            EventKind.TRANSACTION_COMPLETED, 'pump-1', T0, sale('1.00'),
            key='pump-1:sale:1') is None
        assert outbox.append_many(
            [(EventKind.ALARM, 'pump-1', T0, {})],
            done_key='pump-1:sale:1') == []
        assert outbox.depth() == 1 and outbox.last_seq() == 1
        with pytest.raises(ValueError):
            outbox.append_many([], done_key='')


def test_put_replaces_and_goes_with_the_event(db: pathlib.Path) -> None:
    "State kept across restarts: replaced, unlike a command's result"
    totals = 'driver:pump-1:totals'
    with Outbox(db) as outbox:
        outbox.put(totals, {'1': [Decimal('1.000'), Decimal('7.89')]})
        outbox.put(totals, {'1': [Decimal('2.000'), Decimal('15.78')]})
        assert outbox.command_result(totals) == {
            '1': [Decimal('2.000'), Decimal('15.78')]}
        event = outbox.append_once(
            EventKind.TRANSACTION_COMPLETED, 'pump-1', T0, sale(),
            key='pump-1:sale:3', put={totals: {'1': [Decimal('3.000')]}})
        assert event is not None
        assert outbox.command_result(totals) == {'1': [Decimal('3.000')]}
        # a sale already recorded stores nothing, its state neither
        assert outbox.append_once(
            EventKind.TRANSACTION_COMPLETED, 'pump-1', T0, sale(),
            key='pump-1:sale:3', put={totals: {}}) is None
        assert outbox.command_result(totals) == {'1': [Decimal('3.000')]}
        # one transaction: an event that fails stores no state
        with pytest.raises(TypeError):
            outbox.append_once(
                EventKind.TRANSACTION_COMPLETED, 'pump-1', T0, sale(),
                key='pump-1:sale:4', put={totals: {'bad': object()}})
        assert outbox.command_result(totals) == {'1': [Decimal('3.000')]}
        assert outbox.depth() == 1
        with pytest.raises(ValueError):
            outbox.put('', {})


def test_append_once_failing_midway_stores_neither(db: pathlib.Path) -> None:
    "The key's result cannot be encoded after the event was inserted"
    with Outbox(db) as outbox:
        with pytest.raises(TypeError):
            outbox.append_once(
                EventKind.TRANSACTION_COMPLETED, 'pump-1', T0, sale(),
                key='pump-1:sale:2', result={'bad': object()})
        assert outbox.depth() == 0
        assert outbox.command_result('pump-1:sale:2') is None
        assert outbox.append_once(
            EventKind.TRANSACTION_COMPLETED, 'pump-1', T0, sale(),
            key='pump-1:sale:2') is not None
        assert outbox.depth() == 1


# A child records sales 0..count-1 under their keys, as a driver does, and
# prints each acknowledged one; killed, it is started again and records
# the same sales from the first (a restarted driver re-reads the pump)
ONCE_CHILD = textwrap.dedent('''
    import datetime as dt, sys
    from decimal import Decimal
    from iot_box.outbox import Outbox
    path, count = sys.argv[1], int(sys.argv[2])
    outbox = Outbox(path)
    t = dt.datetime.now(dt.UTC)
    for i in range(count):
        event = outbox.append_once(
            'transaction_completed', 'pump-1', t,
            {'amount': Decimal(i) / 100}, key=f'pump-1:sale:{i}',
            result={'recorded': True})
        print(i, event is not None, flush=True)
    print('done', flush=True)
    sys.stdin.read()  # wait to be killed
    ''')


def run_once_child(db: pathlib.Path, count: int, kill_after: int) -> list[
        str]:
    "Start the child, SIGKILL it after kill_after printed lines"
    child = subprocess.Popen(
        [sys.executable, '-c', ONCE_CHILD, str(db), str(count)],
        cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        env={**os.environ, 'PYTHONPATH': str(ROOT)})
    lines: list[str] = []
    try:
        assert child.stdout is not None
        for line in child.stdout:
            lines.append(line.strip())
            if len(lines) == kill_after or line.strip() == 'done':
                break
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=CRASH_TIMEOUT)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        for stream in (child.stdin, child.stdout):
            if stream is not None:
                stream.close()
    return lines


def test_sigkill_between_event_and_key_duplicates_nothing(
        db: pathlib.Path) -> None:
    # killed while recording (possibly inside a transaction), then run
    # again over the same sales: every sale once, seq contiguous
    first = run_once_child(db, -1 + CRASH_EVENTS * 10, CRASH_EVENTS)
    assert len(first) == CRASH_EVENTS
    again = run_once_child(db, CRASH_EVENTS * 2, CRASH_EVENTS * 2 + 1)
    assert again[-1] == 'done'
    # the sales acknowledged before the kill are not recorded again
    assert again[:CRASH_EVENTS] == [f'{i} False' for i in range(CRASH_EVENTS)]
    with Outbox(db) as outbox:
        events = outbox.pending(limit=100_000)
        amounts = [e.payload['amount'] for e in events]
        assert len(amounts) == len(set(amounts))
        assert [e.seq for e in events] == list(range(1, len(events) + 1))
        assert amounts[:CRASH_EVENTS * 2] == [
            Decimal(i) / 100 for i in range(CRASH_EVENTS * 2)]
        for i, event in enumerate(events):
            assert outbox.command_result(f'pump-1:sale:{i}')['event'] == (
                event.uuid)
