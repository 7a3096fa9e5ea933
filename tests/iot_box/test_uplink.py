# This file is part of fuelpay.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""The uplink client against a local HTTP server answering like the routes

`FakeServer` (also used by test_app.py) is a threaded http.server that
answers setup, events, commands, ack, wait and heartbeat as
addons/fuel_device/routes.py and the box contract do, and records what it
got."""
from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import pathlib
import socket
import stat
import threading
import time
from collections.abc import Iterator
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from iot_box.__main__ import main
from iot_box.config import FallbackMode, FallbackPolicy, Secret
from iot_box.events import EventKind
from iot_box.outbox import Outbox
from iot_box.uplink import (
    Authorization,
    Backoff,
    KeyFileExists,
    Uplink,
    UplinkAuthError,
    UplinkRefused,
    UplinkUnavailable,
    encode_wire,
    parse_policy,
    request_key,
    write_key,
)

D = Decimal
KEY = 'b0x-k3y-s3cret'
DATABASE = 'fuelpay'
NOW = dt.datetime(2026, 12, 5, 10, 0, tzinfo=dt.UTC)
# Long enough for loopback, short enough for a test of timeouts
SHORT_TIMEOUT = 0.3
# How often the fake server's loop looks for shutdown; keeps teardown fast
SERVE_POLL = 0.02


@dataclasses.dataclass
class Recorded:
    method: str
    route: str
    headers: dict[str, str]
    body: str
    data: Any


class FakeServer:
    """The fuel_device routes as a box sees them

    mode: 'ok', 'down' (503), 'auth' (401), 'forbidden' (403), 'garbage'
    (200 with a body that is not JSON), 'slow' (sleeps `delay` first).
    missing: routes answered 404 (an older server)."""

    def __init__(self, key: str = KEY) -> None:
        self.key = key
        self.mode = 'ok'
        self.delay = 0.0
        self.missing: set[str] = set()
        self.requests: list[Recorded] = []
        self.events: list[dict[str, Any]] = []  # accepted, in order
        self.commands: list[dict[str, Any]] = []
        self.command_state: dict[int, str] = {}
        self.acks: list[dict[str, Any]] = []
        self.heartbeats: list[dict[str, Any]] = []
        self.policy: dict[str, Any] | None = None
        self.nozzles: list[dict[str, Any]] = []
        self.event_status: str | None = None  # forced per-event status
        self.refuse: tuple[int, str] | None = None  # (status, message)
        self.changed = threading.Condition()
        self.closing = False
        self._http = ThreadingHTTPServer(('127.0.0.1', 0), self._handler())
        self._http.daemon_threads = True
        # a short poll interval: shutdown() returns within it
        self._thread = threading.Thread(
            target=self._http.serve_forever, args=(SERVE_POLL,), daemon=True)

    @property
    def url(self) -> str:
        return 'http://127.0.0.1:%s' % self._http.server_address[1]

    def __enter__(self) -> FakeServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        with self.changed:
            self.closing = True
            self.changed.notify_all()
        self._http.shutdown()
        self._http.server_close()
        self._thread.join()

    def add_command(self, id_: int, kind: str, payload: Any) -> None:
        with self.changed:
            self.commands.append({'id': id_, 'kind': kind, 'payload': payload})
            self.command_state[id_] = 'pending'
            self.changed.notify_all()

    def routes(self, name: str) -> list[Recorded]:
        with self.changed:
            return [r for r in self.requests if r.route == name]

    def _pending(self) -> int:
        return sum(1 for s in self.command_state.values() if s == 'pending')

    def answer(self, route: str, data: Any) -> Any:
        "The JSON answer of route (called with the lock held)"
        if route == 'setup':
            answer = {
                'version': 1, 'box': data.get('identifier'),
                'state': 'active', 'station': {'code': 'ST001'},
                'devices': [], 'nozzles': self.nozzles}
            if self.policy is not None:
                answer['policy'] = self.policy
            return answer
        if route == 'events':
            results = []
            known = {e['uuid'] for e in self.events}
            for item in data['events']:
                status = self.event_status
                if status is None:
                    status = 'duplicate' if item['uuid'] in known else (
                        'accepted')
                if status == 'accepted':
                    self.events.append(item)
                    known.add(item['uuid'])
                results.append(
                    {'uuid': item['uuid'], 'status': status, 'error': None})
            return {'version': 1, 'results': results}
        if route == 'commands':
            given = [
                c for c in self.commands
                if self.command_state[c['id']] in {'pending', 'sent'}]
            for command in given:
                self.command_state[command['id']] = 'sent'
            return {'version': 1, 'commands': given}
        if route == 'ack':
            results = []
            for item in data['commands']:
                self.acks.append(item)
                self.command_state[item['id']] = item['status']
                results.append({
                        'id': item['id'], 'status': 'accepted',
                        'state': item['status'], 'error': None})
            return {'version': 1, 'results': results}
        if route == 'wait':
            deadline = time.monotonic() + float(data['timeout'])
            while not self._pending() and not self.closing:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self.changed.wait(left)
            return {'version': 1, 'pending': self._pending()}
        if route == 'heartbeat':
            self.heartbeats.append(data)
            return {'version': 1, 'pending': self._pending()}
        if route == 'user/application/':
            return 'n3w-k3y-from-server'
        raise KeyError(route)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _reply(self, status: int, body: bytes) -> None:
                self.send_response(status)
                self.send_header('Content-Type', 'application/json')
                self.send_header('Content-Length', str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _handle(self) -> None:
                length = int(self.headers.get('Content-Length') or 0)
                body = self.rfile.read(length).decode('utf-8')
                prefix = f'/{DATABASE}/'
                route = self.path[len(prefix):] if self.path.startswith(
                    prefix) else self.path
                route = route.removeprefix('fuel_device/')
                data = json.loads(body, parse_float=Decimal) if body else None
                with server.changed:
                    server.requests.append(Recorded(
                            self.command, route, dict(self.headers), body,
                            data))
                    mode, delay = server.mode, server.delay
                if mode == 'slow':
                    time.sleep(delay)
                if mode == 'down':
                    return self._reply(503, b'<html>down</html>')
                if mode == 'garbage':
                    return self._reply(200, b'<html>proxy</html>')
                if route != 'user/application/':
                    if mode == 'forbidden':
                        return self._reply(403, b'{}')
                    if mode == 'auth' or self.headers.get(
                            'Authorization') != f'Bearer {server.key}':
                        return self._reply(401, b'{}')
                if route in server.missing:
                    return self._reply(404, b'not found')
                if server.refuse is not None:
                    status, message = server.refuse
                    return self._reply(status, json.dumps(
                            {'message': message, 'type': 'UserError'}
                            ).encode())
                with server.changed:
                    answer = server.answer(route, data)
                    server.changed.notify_all()
                    mode = server.mode
                if mode == 'down':  # went down during a long poll
                    return self._reply(503, b'<html>down</html>')
                self._reply(200, json.dumps(
                        answer, default=_tryton_default).encode())

            do_GET = do_POST = _handle

        return Handler


def _tryton_default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return {'__class__': 'Decimal', 'decimal': str(value)}
    raise TypeError(value)


@pytest.fixture
def server() -> Iterator[FakeServer]:
    with FakeServer() as fake:
        yield fake


@pytest.fixture
def outbox(tmp_path: pathlib.Path) -> Iterator[Outbox]:
    with Outbox(tmp_path / 'outbox.sqlite') as box:
        yield box


def uplink_of(server: FakeServer, key: str = KEY, **kw: Any) -> Uplink:
    return Uplink(server.url, DATABASE, Secret(key), **kw)


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


# --- the wire -------------------------------------------------------------

def test_decimals_exact_on_the_wire_and_bearer(
        server: FakeServer, outbox: Outbox) -> None:
    outbox.append(EventKind.TRANSACTION_COMPLETED, 'pump-1', NOW, {
            'volume': D('1.830'), 'amount': D('14.44'),
            'unit_price': D('7.890'), 'big': D('12345678901234567890.123')})
    result = uplink_of(server).drain(outbox)

    assert (result.sent, result.accepted) == (1, 1)
    request, = server.routes('events')
    assert request.headers['Authorization'] == f'Bearer {KEY}'
    assert '"volume":1.830' in request.body
    assert '"big":12345678901234567890.123' in request.body
    assert '__decimal__' not in request.body
    payload = request.data['events'][0]['payload']
    assert payload['volume'] == D('1.830')
    assert str(payload['volume']) == '1.830'
    assert payload['big'] == D('12345678901234567890.123')
    assert request.data['events'][0]['device_time'] == NOW.isoformat()
    assert outbox.depth() == 0


def test_encode_wire_refusals() -> None:
    assert encode_wire({'b': D('1E+2'), 'a': [None, True]}) == (
        '{"a":[null,true],"b":1E+2}')
    with pytest.raises(ValueError):
        encode_wire(D('NaN'))
    with pytest.raises(ValueError):
        encode_wire(dt.datetime(2026, 1, 1))
    with pytest.raises(TypeError):
        encode_wire({1: 2})


@pytest.mark.parametrize('mode, status', [('auth', 401), ('forbidden', 403)])
def test_auth_errors(server: FakeServer, mode: str, status: int) -> None:
    server.mode = mode
    with pytest.raises(UplinkAuthError) as info:
        uplink_of(server).commands()
    assert info.value.status == status
    assert info.value.route == 'commands'
    assert KEY not in str(info.value)


def test_wrong_key_is_401(server: FakeServer) -> None:
    with pytest.raises(UplinkAuthError):
        uplink_of(server, key='wrong').check()


@pytest.mark.parametrize('mode', ['down', 'garbage', 'slow'])
def test_unavailable(server: FakeServer, mode: str) -> None:
    server.mode = mode
    server.delay = SHORT_TIMEOUT * 3
    with pytest.raises(UplinkUnavailable):
        uplink_of(server, timeout=SHORT_TIMEOUT).commands()


def test_refused_connection_is_unavailable() -> None:
    uplink = Uplink(
        f'http://127.0.0.1:{closed_port()}', DATABASE, Secret(KEY),
        timeout=SHORT_TIMEOUT)
    with pytest.raises(UplinkUnavailable):
        uplink.commands()


def test_400_is_refused_with_the_server_message(server: FakeServer) -> None:
    server.refuse = (400, 'The identifier "x" is not the box\'s.')
    with pytest.raises(UplinkRefused) as info:
        uplink_of(server).setup('x', '0.1', [])
    assert info.value.status == 400
    assert info.value.message == 'The identifier "x" is not the box\'s.'


def test_setup_prices_are_decimals(server: FakeServer) -> None:
    server.nozzles = [
        {'station_number': 1, 'unit_price': '7.890', 'price': 3},
        {'station_number': 2, 'unit_price': None, 'price': None}]
    answer = uplink_of(server).setup('ST001', '0.1', [{'identifier': 'p'}])
    assert answer['nozzles'][0]['unit_price'] == D('7.890')
    assert str(answer['nozzles'][0]['unit_price']) == '7.890'
    assert answer['nozzles'][1]['unit_price'] is None
    request, = server.routes('setup')
    assert request.data == {
        'identifier': 'ST001', 'version': '0.1',
        'devices': [{'identifier': 'p'}]}


def test_commands_tryton_decimals_and_ack(server: FakeServer) -> None:
    server.add_command(5, 'price_change', {
            'nozzles': [{'station_number': 1, 'unit_price': D('7.890')}]})
    uplink = uplink_of(server)
    command, = uplink.commands()
    price = command['payload']['nozzles'][0]['unit_price']
    assert price == D('7.890') and str(price) == '7.890'
    results = uplink.ack([{'id': 5, 'status': 'acked', 'result': {
                    'unit_price': '7.890'}}])
    assert results[0]['status'] == 'accepted'
    assert server.command_state[5] == 'acked'


def test_wait_heartbeat_and_missing_wait(server: FakeServer) -> None:
    uplink = uplink_of(server)
    server.add_command(1, 'configuration', {'version': 1})
    assert uplink.wait(5) == 1
    assert server.routes('wait')[0].data == {'version': 1, 'timeout': 5}
    assert uplink.heartbeat(
        [{'identifier': 'pump-1', 'status': 'connected'}]) == 1
    assert server.heartbeats[0]['devices'][0]['status'] == 'connected'
    server.commands.clear()
    server.command_state.clear()
    start = time.monotonic()
    assert uplink.wait(1) == 0
    assert time.monotonic() - start >= 0.9
    server.missing.add('wait')
    with pytest.raises(UplinkRefused) as info:
        uplink.wait(1)
    assert info.value.status == 404


# --- drain ----------------------------------------------------------------

def test_drain_marks_only_what_the_server_answered(
        server: FakeServer, outbox: Outbox) -> None:
    for i in range(3):
        outbox.append(EventKind.NOZZLE_UP, 'pump-1', NOW, {'i': i})
    server.event_status = 'weird'
    result = uplink_of(server).drain(outbox)
    assert result.unanswered == 3 and result.delivered == 0
    assert outbox.depth() == 3

    server.event_status = None
    result = uplink_of(server).drain(outbox, batch=2)
    assert (result.sent, result.accepted) == (3, 3)
    assert [e['payload']['i'] for e in server.events] == [0, 1, 2]
    assert [e['seq'] for e in server.events] == [1, 2, 3]
    assert outbox.depth() == 0


def test_drain_marks_nothing_on_failure(
        server: FakeServer, outbox: Outbox) -> None:
    outbox.append(EventKind.NOZZLE_UP, 'pump-1', NOW, {})
    server.mode = 'down'
    with pytest.raises(UplinkUnavailable):
        uplink_of(server).drain(outbox)
    assert outbox.depth() == 1
    server.mode = 'ok'
    # the server has it already (a lost answer): a duplicate is delivered
    uplink_of(server).drain(outbox)
    assert outbox.depth() == 0
    with outbox._transaction(outbox._db) as db:
        db.execute('UPDATE event SET sent_at = NULL')
    assert uplink_of(server).drain(outbox).duplicate == 1
    assert len(server.events) == 1


# --- backoff --------------------------------------------------------------

def test_backoff_bounds() -> None:
    now = [100.0]
    backoff = Backoff(
        base=1.0, cap=10.0, random=lambda: 1.0, clock=lambda: now[0])
    assert [backoff.failure() for _ in range(6)] == [1, 2, 4, 8, 10, 10]
    assert backoff.remaining() == 10.0
    now[0] += 4
    assert backoff.remaining() == 6.0
    now[0] += 7
    assert backoff.remaining() == 0.0
    backoff.success()
    assert backoff.failure() == 1.0
    zero = Backoff(random=lambda: 0.0)
    assert zero.failure() == 0.0
    half = Backoff(base=2.0, cap=300.0, random=lambda: 0.5)
    for _ in range(100):  # no overflow, never above the cap
        assert 0 <= half.failure() <= 150.0
    with pytest.raises(ValueError):
        Backoff(base=0)
    with pytest.raises(ValueError):
        Backoff(factor=0.5)


# --- policy ---------------------------------------------------------------

FALLBACK = FallbackPolicy(D('150.00'), D('100.000'), FallbackMode.DISABLED)


def test_policy_parsed_exactly() -> None:
    policy = parse_policy({'policy': {
                'authorization': 'prepay', 'max_amount': '200.50',
                'max_volume': '80.125', 'heartbeat_interval': 15,
                'command_wait': 20}}, FALLBACK)
    assert policy.authorization is Authorization.PREPAY
    assert policy.max_amount == D('200.50')
    assert str(policy.max_volume) == '80.125'
    assert (policy.heartbeat_interval, policy.command_wait) == (15, 20)


def test_policy_periods_bounded() -> None:
    policy = parse_policy({'policy': {
                'authorization': 'postpay', 'max_amount': '1',
                'max_volume': '1', 'heartbeat_interval': 10 ** 6,
                'command_wait': 0}}, FALLBACK)
    assert (policy.heartbeat_interval, policy.command_wait) == (3600, 1)


def test_policy_missing_uses_fallback_limits() -> None:
    policy = parse_policy({}, FALLBACK)
    assert policy.authorization is Authorization.POSTPAY
    assert (policy.max_amount, policy.max_volume) == (
        D('150.00'), D('100.000'))
    assert (policy.heartbeat_interval, policy.command_wait) == (30, 25)


@pytest.mark.parametrize('policy', [
        'postpay', {'authorization': 'free'},
        {'authorization': 'postpay', 'max_amount': 'x', 'max_volume': '1'},
        {'authorization': 'postpay', 'max_amount': '-1', 'max_volume': '1'},
        {'authorization': 'postpay', 'max_amount': '1', 'max_volume': '1',
            'command_wait': '25'},
        ])
def test_policy_invalid(policy: Any) -> None:
    with pytest.raises(UplinkUnavailable):
        parse_policy({'policy': policy}, FALLBACK)


# --- pairing --------------------------------------------------------------

def test_write_key_mode_and_no_overwrite(tmp_path: pathlib.Path) -> None:
    path = tmp_path / 'box.key'
    write_key(path, Secret('one'))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text() == 'one\n'
    with pytest.raises(KeyFileExists):
        write_key(path, Secret('two'))
    assert path.read_text() == 'one\n'
    write_key(path, Secret('three'), force=True)
    assert path.read_text() == 'three\n'
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert os.listdir(tmp_path) == ['box.key']  # no temporary left


def test_request_key(server: FakeServer) -> None:
    key = request_key(server.url, DATABASE, 'box-st001')
    assert key.reveal() == 'n3w-k3y-from-server'
    request, = server.routes('user/application/')
    assert request.data == {'user': 'box-st001', 'application': 'fuel_device'}
    assert 'Authorization' not in request.headers


# --- the command line -----------------------------------------------------

def pair_args(server_url: str, path: pathlib.Path) -> list[str]:
    return [
        'pair', '--server', server_url, '--database', DATABASE,
        '--login', 'box-st001', '--key-file', str(path),
        '--timeout', str(SHORT_TIMEOUT)]


def test_cli_pair(
        server: FakeServer, tmp_path: pathlib.Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / 'box.key'
    assert main(pair_args(server.url, path)) == 0
    out = capsys.readouterr().out
    assert 'validate' in out and 'Pair' in out
    assert 'n3w-k3y' not in out
    assert stat.S_IMODE(path.stat().st_mode) == 0o600

    assert main(pair_args(server.url, path)) == 1
    err = capsys.readouterr().err
    assert err.startswith('iot_box: ') and 'exists' in err
    assert len(server.routes('user/application/')) == 1  # not asked again


def test_cli_pair_server_down(
        tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = f'http://127.0.0.1:{closed_port()}'
    assert main(pair_args(url, tmp_path / 'box.key')) == 1
    err = capsys.readouterr().err
    assert err.count('\n') == 1 and 'cannot request a key' in err
    assert not (tmp_path / 'box.key').exists()
    assert main(pair_args('http://example.com', tmp_path / 'k')) == 1
    assert 'https' in capsys.readouterr().err


def box_config(tmp_path: pathlib.Path, url: str) -> pathlib.Path:
    key = tmp_path / 'box.key'
    key.write_text(KEY + '\n')
    key.chmod(0o600)
    path = tmp_path / 'box.toml'
    path.write_text(f"""
station_code = "ST001"
outbox_path = "outbox.sqlite"
status_listen = "127.0.0.1:8470"
[server]
url = "{url}"
database = "{DATABASE}"
key_file = "box.key"
timeout = {SHORT_TIMEOUT}
[fallback]
max_amount = 150.00
max_volume = 100.000
[[dispensers]]
name = "pump-1"
connection = "udp"
host = "127.0.0.1"
port = 4001
address = 0x50
nozzles = [{{number = 1, station_number = 1}}]
""")
    return path


def test_cli_status(
        server: FakeServer, tmp_path: pathlib.Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    config = box_config(tmp_path, server.url)
    assert main(['status', '--config', str(config)]) == 0
    out = capsys.readouterr().out
    assert 'not created yet' in out and 'accepts the key' in out
    assert KEY not in out
    with Outbox(tmp_path / 'outbox.sqlite') as box:
        box.append(EventKind.NOZZLE_UP, 'pump-1', NOW, {})
    assert main(['status', '--config', str(config)]) == 0
    out = capsys.readouterr().out
    assert 'outbox depth: 1 event(s) waiting' in out
    assert 'last seq: 1' in out
    assert not server.events  # status sends nothing

    server.mode = 'auth'
    assert main(['status', '--config', str(config)]) == 1
    err = capsys.readouterr().err
    assert err.count('\n') == 1 and '401' in err and KEY not in err
    server.mode = 'down'
    assert main(['status', '--config', str(config)]) == 1
    assert 'does not answer' in capsys.readouterr().err


def test_cli_config_errors(
        tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(['status', '--config', str(tmp_path / 'none.toml')]) == 1
    assert 'cannot read' in capsys.readouterr().err
    config = box_config(tmp_path, 'http://127.0.0.1:1')
    config.write_text(config.read_text().replace(
            f'database = "{DATABASE}"\n', ''))
    assert main(['status', '--config', str(config)]) == 1
    assert 'server.database: missing' in capsys.readouterr().err
    assert main(['run', '--config', str(tmp_path / 'none.toml')]) == 1
    err = capsys.readouterr().err
    assert err.count('\n') == 1 and 'cannot read' in err
    assert main(['run', '--config', str(config)]) == 1
    assert 'server.database: missing' in capsys.readouterr().err
