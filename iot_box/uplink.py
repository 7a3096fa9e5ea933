# This file is part of fuelpay.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""HTTP/JSON client to the server's fuel_device routes

`Uplink` calls ``{url}/{database}/fuel_device/<route>`` (setup, events,
commands, ack, wait, heartbeat) with ``Authorization: Bearer <key>``;
every call is synchronous, has a timeout and verifies TLS unless the
configuration says otherwise.

What goes on the wire is plain JSON: Decimals are written as JSON numbers
with their exact digits (``1.830``, never through float) because the
server parses numbers with ``parse_float=Decimal``, and datetimes as ISO
8601 strings.  The outbox's marker objects (``{"__decimal__": ...}``,
see `iot_box.events`) are a storage format only: the server does not read
them (a marked ``device_time`` is refused as invalid).

Failures are typed so that the caller knows what to do:

- `UplinkAuthError` (401, 403): the key is not (yet) validated, was
  revoked, or the box is not in a state the route accepts.  Retrying soon
  changes nothing: stop and tell the operator.
- `UplinkUnavailable` (connection refused, timeout, 5xx, 408, 429, an
  answer that cannot be read): retry later with `Backoff`.
- `UplinkRefused` (400 and other 4xx): the server refused the request;
  its translated message is kept.

`Uplink.drain` marks an event sent only once the server answered for it
(accepted, duplicate, or error: an item in error is stored on the server
with its reason, so it is delivered); nothing is marked when the request
fails or its answer does not give one result per event.

`parse_policy` reads the station policy of the setup answer (how lifted
nozzles are authorised, their limits, heartbeat and long-poll periods),
with the box's own fallback limits when the server sends none.

`request_key` and `write_key` are the box's side of pairing: a Tryton
user application key requested for the box's technical user, written to
a file of mode 0600 for an operator administrator to validate.
"""
from __future__ import annotations

import datetime as dt
import enum
import http.client
import json
import logging
import math
import os
import random as random_
import ssl
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from http import HTTPStatus
from pathlib import Path
from typing import Any

from iot_box.config import (
    ConfigError,
    FallbackPolicy,
    Secret,
    ServerConfig,
    check_database,
    check_server_url,
)
from iot_box.events import Event
from iot_box.outbox import Outbox

__all__ = [
    'API_VERSION',
    'APPLICATION',
    'Authorization',
    'Backoff',
    'DrainResult',
    'KeyFileExists',
    'Policy',
    'Uplink',
    'UplinkAuthError',
    'UplinkError',
    'UplinkRefused',
    'UplinkUnavailable',
    'encode_wire',
    'parse_policy',
    'request_key',
    'write_key',
]

logger = logging.getLogger(__name__)

# The version of the JSON bodies the box sends and of the answers it reads
# (addons/fuel_device/routes.py VERSION)
API_VERSION = 1
# The Tryton user application the routes check (addons/fuel_device/res.py)
APPLICATION = 'fuel_device'
# Events per request: the server ingests a batch in one transaction; 100
# keeps a request well under a second while replaying a long outage
DEFAULT_BATCH = 100
# Same default as the configuration (a slow mobile uplink)
DEFAULT_TIMEOUT = 10.0
# Statuses after which retrying later may succeed: request timeout and
# rate limiting; every 5xx is added by `_classify`
RETRYABLE_4XX = frozenset({
        HTTPStatus.REQUEST_TIMEOUT, HTTPStatus.TOO_MANY_REQUESTS})
# The answers of the events route that mean "the server has it"
DELIVERED = frozenset({'accepted', 'duplicate', 'error'})
# Enough of an unexpected answer to diagnose it in a log, not a whole page
MAX_BODY_IN_ERROR = 200
# Backoff defaults: first retry within a second, never more than five
# minutes apart so that a recovered server gets the backlog soon
BACKOFF_BASE = 1.0
BACKOFF_CAP = 300.0
BACKOFF_FACTOR = 2.0
# 2.0 ** 64 times any sensible base exceeds any cap; stop growing there
# instead of overflowing float
BACKOFF_MAX_EXPONENT = 64
KEY_FILE_MODE = 0o600
# The long poll (wait) holds the request up to its own timeout; the HTTP
# timeout is that plus this margin, so that a slow answer at the end of
# the wait is not taken for a dead server
WAIT_MARGIN = 10.0
# Policy defaults when the setup answer has none (older server): the
# server's own defaults (doc/modules/fuel_device.md)
DEFAULT_HEARTBEAT_INTERVAL = 30
DEFAULT_COMMAND_WAIT = 25
# Bounds that keep a wrong policy from hammering the server or making the
# box deaf for hours
MIN_INTERVAL = 1
MAX_INTERVAL = 3600


class UplinkError(Exception):
    "A call to the server did not succeed"


class UplinkAuthError(UplinkError):
    """401 or 403: the key is not validated, unknown or revoked, or the
    box is not in a state the route accepts; do not retry fast"""

    def __init__(self, status: int, route: str) -> None:
        self.status = status
        self.route = route
        if status == HTTPStatus.FORBIDDEN:
            reason = (
                "the key is valid but the box is not in a state this call "
                "accepts (not paired or not activated yet, or retired)")
        else:
            reason = (
                "the key is not accepted: not validated yet by an operator "
                "administrator, unknown, or revoked")
        super().__init__(f"{route}: {status} {reason}")


class UplinkUnavailable(UplinkError):
    "The server cannot be reached or failed; retry later"


class UplinkRefused(UplinkError):
    "The server refused the request; message is its translated reason"

    def __init__(self, status: int, route: str, message: str) -> None:
        self.status = status
        self.route = route
        self.message = message
        super().__init__(f"{route}: {status} {message}")


class KeyFileExists(UplinkError):
    "The key file exists and overwriting it was not asked for"


# ----- JSON on the wire ------------------------------------------------


def encode_wire(value: Any) -> str:
    """JSON text of value for the server

    Decimals become JSON numbers with their exact digits (the server reads
    them back with ``parse_float=Decimal``), aware datetimes ISO strings;
    keys are sorted.  Non-finite numbers and naive datetimes are refused
    with ValueError, other types with TypeError."""
    if value is None or isinstance(value, bool):
        return json.dumps(value)
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise ValueError(f"cannot send non-finite Decimal {value}")
        # str() of a finite Decimal is valid JSON number syntax
        # ("1.830", "1E+2", "-0.5")
        return str(value)
    if isinstance(value, int | str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"cannot send non-finite float {value}")
        return json.dumps(value)
    if isinstance(value, dt.datetime):
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"cannot send naive datetime {value}")
        return json.dumps(value.isoformat())
    if isinstance(value, Mapping):
        items = []
        for key in sorted(value):
            if not isinstance(key, str):
                raise TypeError(f"JSON keys must be strings, not {key!r}")
            items.append(
                json.dumps(key, ensure_ascii=False) + ':'
                + encode_wire(value[key]))
        return '{' + ','.join(items) + '}'
    if isinstance(value, list | tuple):
        return '[' + ','.join(encode_wire(v) for v in value) + ']'
    raise TypeError(f"{type(value).__name__} cannot be sent as JSON")


def _decode_tryton(obj: dict[str, Any]) -> Any:
    "Tryton's JSONEncoder writes Decimals as {'__class__': 'Decimal', ...}"
    if obj.get('__class__') == 'Decimal' and set(obj) == {
            '__class__', 'decimal'}:
        return Decimal(obj['decimal'])
    return obj


def decode_answer(text: str | bytes) -> Any:
    "Parse a server answer; numbers with a fraction become Decimal"
    return json.loads(
        text, parse_float=Decimal, object_hook=_decode_tryton)


# ----- backoff -----------------------------------------------------------


@dataclass
class Backoff:
    """Delays between retries: exponential with full jitter, capped

    After the n-th failure in a row the delay is uniform in
    [0, min(cap, base * factor ** (n - 1))] (AWS's "full jitter": boxes
    that lost the server together do not come back together).  `success`
    starts again from base.  `random` and `clock` are injectable for
    tests; `remaining()` tells a loop how long to wait before the next
    try without sleeping here."""
    base: float = BACKOFF_BASE
    cap: float = BACKOFF_CAP
    factor: float = BACKOFF_FACTOR
    random: Callable[[], float] = random_.random
    clock: Callable[[], float] = time.monotonic
    failures: int = field(default=0, init=False)
    _until: float = field(default=0.0, init=False, repr=False)

    def __post_init__(self) -> None:
        if not 0 < self.base <= self.cap:
            raise ValueError("backoff needs 0 < base <= cap")
        if self.factor < 1:
            raise ValueError("backoff factor must be at least 1")

    def ceiling(self) -> float:
        "The largest delay the next failure can draw"
        exponent = min(self.failures, BACKOFF_MAX_EXPONENT)
        return min(self.cap, self.base * self.factor ** exponent)

    def failure(self) -> float:
        "Record a failure; return the delay to wait before the next try"
        delay = self.random() * self.ceiling()
        self.failures += 1
        self._until = self.clock() + delay
        return delay

    def success(self) -> None:
        "Record a success: the next failure starts again from base"
        self.failures = 0
        self._until = 0.0

    def remaining(self) -> float:
        "Seconds left before the next try is due, 0 if it is due"
        return max(0.0, self._until - self.clock())


# ----- the client ------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DrainResult:
    "What one `Uplink.drain` did"
    sent: int = 0  # events in requests the server answered
    accepted: int = 0
    duplicate: int = 0
    error: int = 0  # stored on the server with their reason
    unanswered: int = 0  # answered with a status the box does not know

    @property
    def delivered(self) -> int:
        return self.accepted + self.duplicate + self.error


def _ssl_context(verify_tls: bool) -> ssl.SSLContext:
    context = ssl.create_default_context()
    if not verify_tls:
        # configuration says so, and config.py logged a warning
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def _short(body: bytes) -> str:
    text = body[:MAX_BODY_IN_ERROR].decode('utf-8', 'replace')
    return text + ('...' if len(body) > MAX_BODY_IN_ERROR else '')


def _refusal_message(body: bytes) -> str:
    "The 'message' of a Tryton JSON error, else the start of the body"
    try:
        data = decode_answer(body)
    except (ValueError, UnicodeDecodeError):
        data = None
    if isinstance(data, dict) and isinstance(data.get('message'), str):
        return data['message']
    return _short(body) or "(empty answer)"


def _post_json(
        url: str, body: str | None, *, method: str, route: str,
        timeout: float, context: ssl.SSLContext,
        headers: Mapping[str, str]) -> Any:
    """Send one request and return its decoded JSON answer

    Raises the typed errors of this module; never another exception for
    a network or server failure."""
    request = urllib.request.Request(
        url, method=method,
        data=body.encode('utf-8') if body is not None else None,
        headers={'Accept': 'application/json', **headers})
    if body is not None:
        request.add_header('Content-Type', 'application/json')
    try:
        with urllib.request.urlopen(
                request, timeout=timeout, context=context) as response:
            answer = response.read()
    except urllib.error.HTTPError as error:
        try:
            payload = error.read()
        except (OSError, http.client.HTTPException):
            payload = b''
        finally:
            error.close()
        raise _classify(error.code, route, payload) from None
    except (urllib.error.URLError, OSError, http.client.HTTPException,
            ValueError) as error:
        # URLError: refused, DNS, TLS; OSError: timeouts and resets while
        # reading; HTTPException: a broken answer; ValueError: a bad URL
        reason = getattr(error, 'reason', None) or error
        raise UplinkUnavailable(f"{route}: {reason}") from error
    try:
        return decode_answer(answer)
    except (ValueError, UnicodeDecodeError) as error:
        raise UplinkUnavailable(
            f"{route}: the answer is not JSON: {_short(answer)!r}"
            ) from error


def _classify(status: int, route: str, body: bytes) -> UplinkError:
    if status in {HTTPStatus.UNAUTHORIZED, HTTPStatus.FORBIDDEN}:
        return UplinkAuthError(status, route)
    if status >= HTTPStatus.INTERNAL_SERVER_ERROR or status in RETRYABLE_4XX:
        return UplinkUnavailable(f"{route}: HTTP {status}")
    return UplinkRefused(status, route, _refusal_message(body))


class Uplink:
    "The box's client of the server's fuel_device routes"

    def __init__(
            self, url: str, database: str, key: Secret, *,
            timeout: float = DEFAULT_TIMEOUT,
            verify_tls: bool = True) -> None:
        check_server_url(url)
        check_database(database)
        self.base = '/'.join([
                url.rstrip('/'), urllib.parse.quote(database, safe=''),
                'fuel_device'])
        self._key = key
        self.timeout = timeout
        self._context = _ssl_context(verify_tls)

    @classmethod
    def from_config(cls, server: ServerConfig) -> Uplink:
        if server.database is None:
            raise ConfigError(
                "server.database: missing; the uplink needs the name of "
                "the Tryton database")
        return cls(
            server.url, server.database, server.key,
            timeout=server.timeout, verify_tls=server.verify_tls)

    def __repr__(self) -> str:
        return f'Uplink({self.base!r})'

    def _call(
            self, method: str, route: str, data: Any = None, *,
            timeout: float | None = None) -> Any:
        body = encode_wire(data) if data is not None else None
        answer = _post_json(
            f'{self.base}/{route}', body, method=method, route=route,
            timeout=self.timeout if timeout is None else timeout,
            context=self._context,
            headers={'Authorization': f'Bearer {self._key.reveal()}'})
        if not isinstance(answer, dict):
            raise UplinkUnavailable(f"{route}: the answer is not an object")
        return answer

    @staticmethod
    def _list(answer: Mapping[str, Any], name: str, route: str) -> list[Any]:
        items = answer.get(name)
        if not isinstance(items, list):
            raise UplinkUnavailable(f"{route}: the answer has no {name}")
        return items

    def setup(
            self, box_identifier: str, version: str,
            devices: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        """Report the box and its devices; return the station's
        configuration, each nozzle's unit_price as a Decimal (or None)"""
        answer = self._call('POST', 'setup', {
                'identifier': box_identifier,
                # here `version` is the box's software version: the server
                # records it on the box (routes.py setup)
                'version': version,
                'devices': list(devices),
                })
        for nozzle in self._list(answer, 'nozzles', 'setup'):
            price = nozzle.get('unit_price') if isinstance(
                nozzle, dict) else None
            if price is not None:
                try:
                    nozzle['unit_price'] = Decimal(str(price))
                except InvalidOperation:
                    raise UplinkUnavailable(
                        f"setup: invalid unit_price {price!r}") from None
        return answer

    def send(self, events: Sequence[Event]) -> list[str | None]:
        """Send events in one request; return the server's status per
        event, in order (None where it answered a status this box does
        not know)

        The answer must hold one result per event, in order, each with the
        event's uuid (or none: the server could not keep the uuid of an
        item it stored in error); otherwise nothing is known to be
        delivered and UplinkUnavailable is raised."""
        answer = self._call('POST', 'events', {
                'version': API_VERSION,
                'events': [_event_item(e) for e in events],
                })
        results = self._list(answer, 'results', 'events')
        if len(results) != len(events):
            raise UplinkUnavailable(
                f"events: {len(results)} results for {len(events)} events")
        statuses: list[str | None] = []
        for event, result in zip(events, results, strict=True):
            if not isinstance(result, dict) or result.get('uuid') not in {
                    event.uuid, None}:
                raise UplinkUnavailable(
                    f"events: the result for seq {event.seq} is not "
                    "its own")
            status = result.get('status')
            if status == 'error':
                logger.warning(
                    "event seq %s (%s) stored in error by the server: %s",
                    event.seq, event.uuid, result.get('error'))
            statuses.append(status if status in DELIVERED else None)
        return statuses

    def drain(self, outbox: Outbox, batch: int = DEFAULT_BATCH) -> DrainResult:
        """Send the outbox's pending events in seq order, `batch` per
        request, until it is empty

        Only the events the server answered for are marked sent.  Stops
        (returning what was done) after a batch with an event the server
        did not confirm; a failed request raises, with nothing of that
        batch marked sent."""
        if batch < 1:
            raise ValueError("batch must be at least 1")
        counts = dict.fromkeys(
            ['sent', 'accepted', 'duplicate', 'error', 'unanswered'], 0)
        while events := outbox.pending(batch):
            statuses = self.send(events)
            outbox.mark_sent(
                e.uuid for e, s in zip(events, statuses, strict=True) if s)
            counts['sent'] += len(events)
            for status in statuses:
                counts[status or 'unanswered'] += 1
            if None in statuses:
                logger.warning(
                    "events: %s not confirmed by the server; they stay in "
                    "the outbox", statuses.count(None))
                break
        return DrainResult(**counts)

    def commands(self) -> list[dict[str, Any]]:
        "The commands the server has for the box, oldest first"
        answer = self._call('GET', 'commands')
        return self._list(answer, 'commands', 'commands')

    def ack(
            self, answers: Iterable[Mapping[str, Any]]
            ) -> list[dict[str, Any]]:
        """Answer commands: each {id, status: acked|failed, result};
        return the server's result per answer"""
        answer = self._call('POST', 'ack', {
                'version': API_VERSION,
                'commands': list(answers),
                })
        return self._list(answer, 'results', 'ack')

    def wait(self, timeout: int) -> int:
        """Long poll: return the number of pending commands as soon as
        there is one, or 0 after `timeout` seconds

        An older server without the route answers 404: UplinkRefused with
        status 404, and the caller polls `commands` instead."""
        answer = self._call(
            'POST', 'wait', {'version': API_VERSION, 'timeout': timeout},
            timeout=timeout + WAIT_MARGIN)
        return _pending(answer, 'wait')

    def heartbeat(self, devices: Sequence[Mapping[str, Any]]) -> int:
        """Report each device's status (connected, disconnected, error);
        return the number of pending commands"""
        answer = self._call('POST', 'heartbeat', {
                'version': API_VERSION, 'devices': list(devices)})
        return _pending(answer, 'heartbeat')

    def check(self) -> None:
        """Raise unless the server answers this key for an active box

        Posts an empty batch of events: it creates nothing and changes
        nothing on the server but the box's last seen date (true: the box
        called).  `setup` would report devices and `commands` would mark
        pending commands sent, so neither is used."""
        answer = self._call('POST', 'events', {
                'version': API_VERSION, 'events': []})
        self._list(answer, 'results', 'events')


def _pending(answer: Mapping[str, Any], route: str) -> int:
    pending = answer.get('pending')
    if not isinstance(pending, int) or isinstance(pending, bool) or (
            pending < 0):
        raise UplinkUnavailable(f"{route}: the answer has no pending count")
    return pending


# ----- policy ------------------------------------------------------------


class Authorization(enum.StrEnum):
    # the box authorises a lifted nozzle itself, within the limits
    POSTPAY = 'postpay'
    # a nozzle is authorised only by an authorize command
    PREPAY = 'prepay'


@dataclass(frozen=True, slots=True)
class Policy:
    "How the station sells while the server answers (setup's policy)"
    authorization: Authorization
    max_amount: Decimal
    max_volume: Decimal
    heartbeat_interval: int = DEFAULT_HEARTBEAT_INTERVAL
    command_wait: int = DEFAULT_COMMAND_WAIT

    def to_dict(self) -> dict[str, Any]:
        return {
            'authorization': str(self.authorization),
            'max_amount': str(self.max_amount),
            'max_volume': str(self.max_volume),
            'heartbeat_interval': self.heartbeat_interval,
            'command_wait': self.command_wait,
            }


def parse_policy(
        answer: Mapping[str, Any], fallback: FallbackPolicy) -> Policy:
    """The policy of a setup answer; without one (older server), postpay
    within the box's fallback limits and the default periods

    A policy that cannot be read raises UplinkUnavailable: the box must not
    guess limits."""
    data = answer.get('policy')
    if data is None:
        return Policy(
            Authorization.POSTPAY, fallback.max_amount, fallback.max_volume)
    if not isinstance(data, Mapping):
        raise UplinkUnavailable("setup: the policy is not an object")
    try:
        authorization = Authorization(data.get('authorization'))
    except ValueError:
        raise UplinkUnavailable(
            f"setup: unknown authorization "
            f"{data.get('authorization')!r}") from None
    limits = {}
    for name in ('max_amount', 'max_volume'):
        value = data.get(name)
        try:
            # a string as the contract says; a number read as Decimal
            limit = Decimal(str(value)) if isinstance(
                value, str | Decimal | int) and not isinstance(
                    value, bool) else None
        except InvalidOperation:
            limit = None
        if limit is None or not limit.is_finite() or limit <= 0:
            raise UplinkUnavailable(f"setup: invalid policy {name} {value!r}")
        limits[name] = limit
    periods = {}
    for name, default in (
            ('heartbeat_interval', DEFAULT_HEARTBEAT_INTERVAL),
            ('command_wait', DEFAULT_COMMAND_WAIT)):
        value = data.get(name, default)
        if not isinstance(value, int) or isinstance(value, bool):
            raise UplinkUnavailable(f"setup: invalid policy {name} {value!r}")
        bounded = min(max(value, MIN_INTERVAL), MAX_INTERVAL)
        if bounded != value:
            logger.warning(
                "setup: policy %s %s out of %s-%s s: %s used", name, value,
                MIN_INTERVAL, MAX_INTERVAL, bounded)
        periods[name] = bounded
    return Policy(authorization, **limits, **periods)


def _event_item(event: Event) -> dict[str, Any]:
    "The item of the events route for event (values encoded later)"
    return event.to_dict()


# ----- pairing -----------------------------------------------------------


def request_key(
        url: str, database: str, login: str, *,
        timeout: float = DEFAULT_TIMEOUT, verify_tls: bool = True) -> Secret:
    """Request a user application key for login's fuel_device application

    Tryton answers a key even for an unknown login or a user that already
    has a request waiting (so that logins cannot be guessed); such a key
    is never validated, and the operator administrator's Pair button then
    finds no requested key for the box."""
    check_server_url(url)
    check_database(database)
    if not login.strip():
        raise ValueError("the login must not be empty")
    route = 'user/application/'
    target = '/'.join([
            url.rstrip('/'), urllib.parse.quote(database, safe=''), route])
    answer = _post_json(
        target, json.dumps({'user': login, 'application': APPLICATION}),
        method='POST', route=route, timeout=timeout,
        context=_ssl_context(verify_tls), headers={})
    if not isinstance(answer, str) or not answer:
        raise UplinkUnavailable(f"{route}: the answer is not a key")
    return Secret(answer)


def write_key(path: Path, key: Secret, *, force: bool = False) -> None:
    """Write key to path, mode 0600; refuse an existing file unless force

    The file is created with its mode (never readable by others, even for
    an instant) and replaced atomically when forced."""
    if path.exists() and not force:
        raise KeyFileExists(
            f"{path} exists; it may hold the box's validated key "
            "(use --force to replace it)")
    temporary = path.with_name(f'.{path.name}.{os.getpid()}.tmp')
    descriptor = os.open(
        temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, KEY_FILE_MODE)
    try:
        with os.fdopen(descriptor, 'w', encoding='utf-8') as file:
            file.write(key.reveal() + '\n')
            file.flush()
            os.fsync(file.fileno())
        if force:
            os.replace(temporary, path)
        else:
            try:
                # link fails if path appeared meanwhile: never overwrite
                os.link(temporary, path)
            except FileExistsError:
                raise KeyFileExists(f"{path} exists") from None
    finally:
        temporary.unlink(missing_ok=True)
