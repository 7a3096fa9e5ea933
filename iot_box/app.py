# This file is part of fuelpay.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""The composition root: `App(config).run()` until `stop()`

`App.run` opens the outbox and the fallback totals, opens one transport
per line (dispensers with the same connection share it, see
`DartLine`), and runs these tasks until `stop()` (SIGTERM/SIGINT in
``python -m iot_box run``):

- one poll task per line; after each poll of a pump, a lifted nozzle is
  authorised by the box when the policy says so (below), and an ``alarm``
  event (code ``not_answering`` / ``answering_again``, `AlarmCode`) goes
  to the outbox each time the pump's driver stops or starts `answering`
  (the heartbeat then reports it ``disconnected``);
- the uplink task: ``setup`` at start (and again after a
  ``configuration`` command) reporting one device per dispenser and
  feeding the nozzle prices to the drivers; then it drains the outbox
  whenever events are pending, with `Backoff` between failures;
- the command task: ``wait`` (long poll), then ``commands``, each command
  dispatched in a task of its own and acknowledged once done (a price
  change waits for the end of a sale without holding other commands); an
  older server without ``wait`` (404) is polled every
  `COMMAND_POLL_INTERVAL` seconds;
- the heartbeat task: every ``heartbeat_interval`` of the policy, each
  dispenser's status (connected / disconnected / error);
- with ``[[lpr.cameras]]`` configured: the plate models are loaded once
  (in a thread, at start) and one task per camera reads plates from its
  frames (`iot_box.drivers.camera.driver.CameraDriver`), one inference at
  a time for all cameras; each vehicle pass voted with enough confidence
  is a ``plate_read`` event in the outbox, sent like any other event.
  Cameras are reported in setup and heartbeat as devices of kind
  ``camera``.  The LPR modules (onnxruntime, OpenCV) are only imported
  when a camera is configured.
- with ``[[payment_posts]]`` configured: one task per post reads the
  customer's payment codes from its scanner or face-pay device on a
  serial line (`iot_box.drivers.codereader.driver.CodeReaderDriver`);
  each code is a ``payment_code`` event, sent at once like any other
  event, naming in ``calling`` the post's nozzles that are lifted and
  wait for an authorisation (`App._calling`); the server charges it for
  the unpaid fill of the post's nozzles, or without one pre-pays a fill
  up for the one calling nozzle (then sends an ``authorize`` command),
  and answers the outcome in the event's result (logged by the uplink
  when it is an error).  The outbox masks the code once the server has
  it.  Posts are reported in setup and heartbeat as devices of kind
  ``payment_post``.

The offline list of frictionless plates: a ``configuration`` command whose
payload has ``frictionless_plates`` (``[{"plate", "colour", "limit"}]``,
version 1) replaces the list the box keeps (`iot_box.lpr.offline`, in
the outbox's store, so that it survives a restart).  In fallback mode
only, a vote of an island zone with a confidence of 0.9 or more
(`AUTO_CHARGE_CONFIDENCE`) for a listed plate (text and colour) marks the
zone's nozzles (``nozzles`` of the zone) for 120 s (`WINDOW`): the next
lift of one of them is authorised by the box with a preset amount of
min(limit, ``[fallback] max_amount``), even when the fallback mode
authorises nothing else.

HTTP calls are synchronous (`Uplink`); each runs in a daemon thread of its
own (`_in_thread`), so that a stop never waits for a long poll to end.
The drain opens its own connection to the outbox in its thread (sqlite3
connections belong to the thread that made them).

Authorisation of a lifted nozzle (the fuelling point goes to 'calling'
with the pump in RESET):

- server reachable, policy ``postpay``: the box authorises it with a
  preset amount of min(max_amount, max_volume x unit price), to the
  pump's amount decimals (the amount is what the attendant collects; the
  volume limit is honoured through it); a preset volume of max_volume
  when the nozzle's price is not known;
- policy ``prepay``: nothing until an ``authorize`` command;
- fallback (`iot_box.fallback`, after ``[fallback] after`` seconds
  without the server unless `Timing.fallback_threshold` is given): the
  box's own ``[fallback]`` policy;
- key refused (401/403) or no setup answer yet: nothing.

An authorisation by the box that the pump does not execute (the driver's
`CommandNotExecuted`: AUTHORIZE acknowledged and ignored) is logged with
the device and tried again at the next polls, at most
`AUTO_AUTHORIZE_RETRIES` times while the nozzle stays out; hanging it up
starts over.

An ``authorize`` command with a ``lift_timeout`` (seconds; the server
sends its station's pre-pay lift timeout) is stopped by the driver when
the nozzle is not used within it (`iot_box.drivers.dispenser.dart`): the
pump gets CD1 STOP and the box sends ``authorization_expired`` naming the
command instead of a sale (or the sale, if fuel flowed after all, never
both).  The authorisation and its deadline (wall clock) are kept in the
outbox until its sale or expiry is recorded: a box restarted meanwhile
takes them up if the pump is still authorised (or its fill not yet
recorded), names the command in the fill and stops the pump when the
time left runs out.  Authorisations without a ``lift_timeout`` (an older
server, a plate preset) are kept in memory only, as before.

A command id already executed is answered with its stored result
(``command:<id>`` in the outbox's command store), never executed again,
also across restarts; the drivers are given ``<id>:<dispenser>`` as their
own command ids.  An ``authorize`` (or any command) the pump did not
execute or never acknowledged (`CommandNotExecuted`, `TransportError`) is
answered ``failed`` with ``{"version": 1, "error": ...}`` and is NOT
recorded, so that the server may send it again.
"""
from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import enum
import functools
import logging
import threading
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from decimal import ROUND_DOWN, Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any, TypeVar, cast

from iot_box.config import BoxConfig, Connection, DispenserConfig
from iot_box.drivers.dispenser.dart import (
    RESPONSE_TIMEOUT,
    CommandError,
    CommandNotExecuted,
    CommandResult,
)
from iot_box.drivers.dispenser.fuelling_point import FPState
from iot_box.drivers.dispenser.line import DartLine, LineDriver
from iot_box.events import EVENT_VERSION, AlarmCode, Event, EventKind
from iot_box.fallback import Fallback, FallbackTotals, totals_path
from iot_box.interfaces.transport import Transport, TransportError
from iot_box.lpr.offline import OfflineList, OfflineListError
from iot_box.outbox import Outbox
from iot_box.protocols.dart import PumpStatus
from iot_box.status import StatusServer
from iot_box.uplink import (
    API_VERSION,
    Authorization,
    Backoff,
    DrainResult,
    Policy,
    Uplink,
    UplinkAuthError,
    UplinkError,
    UplinkRefused,
    UplinkUnavailable,
    parse_policy,
)

if TYPE_CHECKING:
    from iot_box.drivers.camera.driver import CameraDriver
    from iot_box.drivers.codereader.driver import CodeReaderDriver

__all__ = ['App', 'LinkState', 'Timing']

logger = logging.getLogger(__name__)

# The box's software version, reported in setup (pyproject.toml)
SOFTWARE_VERSION = '0.1.0'
# A refused key (401/403) is not fixed by retrying soon: an operator must
# validate or reactivate the box; once a minute notices that in time
AUTH_RETRY = 60.0
# An older server without the wait route is polled this often: a price
# change or an authorisation within seconds, a few requests a minute
COMMAND_POLL_INTERVAL = 5.0
# The uplink re-checks the outbox this often even if no event woke it
# (an event written by another process, a drain cut short)
IDLE_CHECK = 5.0
# While every command the server gives is still being executed (a price
# change waiting for the end of a sale), wait this long before asking
# again, so that a server answering "pending" at once is not hammered
COMMAND_MIN_INTERVAL = 1.0
# Backoff of the uplink: a first retry within a second, then at most a
# minute apart so that a recovered server gets the backlog soon
UPLINK_BACKOFF_BASE = 1.0
UPLINK_BACKOFF_CAP = 60.0
HTTP_NOT_FOUND = 404
# A cancelled task ends within one poll exchange (a response timeout of
# 0.25 s); a stop waits this long for them all, then goes on (logged)
STOP_TIMEOUT = 2.0
# A nozzle the box failed to authorise (the pump ACKed AUTHORIZE and
# ignored it) is tried again this many times while it stays out: a lost
# frame or a status race is over by then; a pump that keeps refusing needs
# the nozzle hung up (or an attendant), not an AUTHORIZE every second
AUTO_AUTHORIZE_RETRIES = 2

T = TypeVar('T')


class LinkState(enum.StrEnum):
    CONNECTING = 'connecting'  # no answer of the server yet
    ONLINE = 'online'
    UNREACHABLE = 'unreachable'  # failing, not yet for the threshold
    REFUSED = 'refused'  # 401/403: the key or the box is not accepted
    FALLBACK = 'fallback'  # unreachable for longer than the threshold


@dataclass(frozen=True, slots=True)
class Timing:
    "Periods of the app; tests inject small ones"
    # overrides the `[fallback] after` of the configuration when given
    fallback_threshold: float | None = None
    auth_retry: float = AUTH_RETRY
    command_poll: float = COMMAND_POLL_INTERVAL
    command_min_interval: float = COMMAND_MIN_INTERVAL
    idle_check: float = IDLE_CHECK
    backoff_base: float = UPLINK_BACKOFF_BASE
    backoff_cap: float = UPLINK_BACKOFF_CAP
    response_timeout: float = RESPONSE_TIMEOUT  # of the DART drivers
    # overrides each dispenser's poll_interval when given
    poll_interval: float | None = None
    # overrides the policy's heartbeat_interval when given
    heartbeat_interval: float | None = None
    # overrides the seconds after which a vehicle pass is voted
    plate_vote_gap: float | None = None


class _CommandFailed(Exception):
    "A command the box cannot execute; the message goes in its result"


class _NotExecuted(Exception):
    """The pump did not execute a command (or did not acknowledge it): it is
    answered failed but not recorded, so that the server may send it
    again"""


async def _in_thread(call: Callable[[], T], name: str) -> T:
    """Run a blocking call in a daemon thread and await its result

    Unlike asyncio.to_thread, nothing waits for the thread when the loop
    or the interpreter ends: a long poll never delays a stop."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def settle(value: Any, error: BaseException | None) -> None:
        if future.done():
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(value)

    def target() -> None:
        try:
            value: Any = call()
        except BaseException as error:  # handed to the awaiting task
            value, failure = None, error
        else:
            failure = None
        with contextlib.suppress(RuntimeError):  # the loop is closed
            loop.call_soon_threadsafe(settle, value, failure)

    threading.Thread(target=target, name=name, daemon=True).start()
    return await future


class _EventTap:
    """The outbox as the drivers see it: tags fallback sales and wakes the
    uplink after each event (the driver has no hook for either)"""

    def __init__(self, outbox: Outbox, app: App) -> None:
        self._outbox = outbox
        self._app = app

    def append(
            self, kind: EventKind | str, device: str,
            device_time: dt.datetime, payload: Mapping[str, Any]) -> Event:
        return self.append_many([(kind, device, device_time, payload)])[0]

    def append_once(
            self, kind: EventKind | str, device: str,
            device_time: dt.datetime, payload: Mapping[str, Any],
            **options: Any) -> Event | None:
        event: Event | None = self._outbox.append_once(
            kind, device, device_time, self._app._tag(kind, device, payload),
            **options)
        if event is not None:
            self._app._appended(event)
        return event

    def append_many(
            self, items: Iterable[tuple[
                EventKind | str, str, dt.datetime, Mapping[str, Any]]],
            **options: Any) -> list[Event]:
        tagged = [
            (kind, device, time, self._app._tag(kind, device, payload))
            for kind, device, time, payload in items]
        events = self._outbox.append_many(tagged, **options)
        for event in events:
            self._app._appended(event)
        return events

    def __getattr__(self, name: str) -> Any:
        return getattr(self._outbox, name)


def connection_text(config: DispenserConfig) -> str:
    "How the server shows a dispenser's connection"
    if config.connection is Connection.SERIAL:
        line = f'serial:{config.serial_port}'
    else:
        line = f'{config.connection}:{config.host}:{config.port}'
    return f'{line} address {config.address:#04x}'


def _decimal(value: Any, name: str) -> Decimal | None:
    "A decimal of a command payload (string, number or None)"
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, str | int | Decimal):
        raise _CommandFailed(f"{name}: not a decimal: {value!r}")
    try:
        result = Decimal(str(value))
    except InvalidOperation:
        raise _CommandFailed(f"{name}: not a decimal: {value!r}") from None
    if not result.is_finite() or result <= 0:
        raise _CommandFailed(f"{name}: must be positive: {value!r}")
    return result


def _seconds(value: Any, name: str) -> float | None:
    "A positive duration in seconds of a command payload, or None"
    seconds = _decimal(value, name)
    return float(seconds) if seconds is not None else None


def _integer(payload: Mapping[str, Any], name: str) -> int:
    value = payload.get(name)
    if not isinstance(value, int) or isinstance(value, bool):
        raise _CommandFailed(f"{name}: not an integer: {value!r}")
    return value


class App:
    "The station service"

    def __init__(
            self, config: BoxConfig, *, timing: Timing = Timing(),
            uplink: Uplink | None = None, status_page: bool = True) -> None:
        self.config = config
        self.timing = timing
        # raises ConfigError when the server section lacks the database
        self.uplink = uplink if uplink is not None else Uplink.from_config(
            config.server)
        self.status_page = status_page
        self.status_server: StatusServer | None = None
        self.outbox: Outbox | None = None
        self.fallback: Fallback | None = None
        self.lines: list[DartLine] = []
        self.drivers: dict[str, LineDriver] = {}
        self.cameras: dict[str, CameraDriver] = {}
        self.posts: dict[str, CodeReaderDriver] = {}
        # the frictionless plates served in fallback (opened with the
        # outbox, where it is kept)
        self.offline: OfflineList | None = None
        # station number -> (dispenser name, DART nozzle number)
        self.nozzles: dict[int, tuple[str, int]] = {
            n.station_number: (d.name, n.number)
            for d in config.dispensers for n in d.nozzles}
        self.policy: Policy | None = None
        self.auth_refused = False
        self.setup_done = asyncio.Event()
        self.last_sync: dt.datetime | None = None
        self.last_error: str | None = None
        self.fallback_exits = 0
        self._stop = asyncio.Event()
        self._wake = asyncio.Event()
        self._setup_lock = asyncio.Lock()
        self._lift_authorised: dict[str, int] = {}  # device -> nozzle
        # device -> (nozzle, failed authorisations by the box of this lift)
        self._auto_failures: dict[str, tuple[int, int]] = {}
        # device -> whether its pump answered at the last poll (alarms)
        self._answering: dict[str, bool] = {}
        self._fallback_sale: set[str] = set()  # devices
        self._in_progress: set[int] = set()  # command ids
        self._command_tasks: set[asyncio.Task[None]] = set()

    # --- state ----------------------------------------------------------

    @property
    def link(self) -> LinkState:
        if self.auth_refused:
            return LinkState.REFUSED
        fallback = self.fallback
        if fallback is not None and fallback.active:
            return LinkState.FALLBACK
        if fallback is not None and fallback.unreachable_since is not None:
            return LinkState.UNREACHABLE
        if self.last_sync is not None:
            return LinkState.ONLINE
        return LinkState.CONNECTING

    def devices(self) -> list[dict[str, Any]]:
        """One device per dispenser and per camera, as setup and heartbeat
        report them"""
        devices = [{
                'identifier': d.name,
                'kind': 'dispenser',
                'protocol': str(d.protocol),
                'connection': connection_text(d),
                'status': str(self.drivers[d.name].status)
                if d.name in self.drivers else 'disconnected',
                } for d in self.config.dispensers]
        for camera in self.config.cameras:
            driver = self.cameras.get(camera.id)
            devices.append({
                    'identifier': camera.id,
                    'kind': 'camera',
                    'protocol': str(camera.source),
                    'connection': camera.url or str(camera.path),
                    'status': driver.status if driver else 'disconnected',
                    })
        for post in self.config.payment_posts:
            reader = self.posts.get(post.name)
            devices.append({
                    'identifier': post.name,
                    'kind': 'payment_post',
                    'protocol': str(post.source),
                    'connection': f'serial:{post.port}',
                    'status': reader.status if reader else 'disconnected',
                    })
        return devices

    def status(self) -> dict[str, Any]:
        "What the status page shows; nothing secret"
        dispensers = []
        for config in self.config.dispensers:
            driver = self.drivers.get(config.name)
            nozzles = []
            for nozzle in config.nozzles:
                price = None
                if driver is not None:
                    price = driver.reported_prices.get(
                        nozzle.number, driver.prices.get(nozzle.number))
                nozzles.append({
                        'station_number': nozzle.station_number,
                        'nozzle': nozzle.number,
                        'out': driver is not None
                        and driver.nozzle_out == nozzle.number,
                        'unit_price': str(price) if price is not None
                        else None,
                        })
            dispensers.append({
                    'name': config.name,
                    'address': f'{config.address:#04x}',
                    'connection': connection_text(config),
                    'status': str(driver.status) if driver else None,
                    'fp_state': str(driver.point.state) if driver else None,
                    'pump_status': driver.pump_status.name
                    if driver and driver.pump_status is not None else None,
                    'missed_polls': driver.missed_polls if driver else None,
                    'price_set_id': driver.price_set_id if driver else None,
                    'nozzles': nozzles,
                    })
        outbox = self.outbox
        return {
            'version': API_VERSION,
            'box': self.config.box_identifier,
            'station_code': self.config.station_code,
            'software': SOFTWARE_VERSION,
            'link': str(self.link),
            'last_sync': self.last_sync.isoformat()
            if self.last_sync else None,
            'last_error': self.last_error,
            'policy': self.policy.to_dict() if self.policy else None,
            'outbox': {
                'depth': outbox.depth() if outbox else None,
                'last_seq': outbox.last_seq() if outbox else None,
                },
            'fallback': self.fallback.to_dict() if self.fallback else None,
            'dispensers': dispensers,
            } | ({
                'cameras': self._camera_status(),
                'offline_list': {
                    'plates': len(self.offline.plates)
                    if self.offline else 0,
                    'generated': self.offline.generated
                    if self.offline else None,
                    },
                } if self.config.cameras else {}) | ({
                'payment_posts': self._post_status(),
                } if self.config.payment_posts else {})

    def _post_status(self) -> list[dict[str, Any]]:
        "The payment posts' readers: no code, not even masked"
        result = []
        for post in self.config.payment_posts:
            reader = self.posts.get(post.name)
            result.append({
                    'name': post.name,
                    'source': str(post.source),
                    'port': post.port,
                    'nozzles': list(post.nozzles),
                    'state': str(reader.state) if reader else None,
                    'codes': reader.codes if reader else 0,
                    'dropped': reader.dropped if reader else 0,
                    'last_code': reader.last_code.isoformat()
                    if reader and reader.last_code else None,
                    'last_error': reader.last_error if reader else None,
                    })
        return result

    def _camera_status(self) -> list[dict[str, Any]]:
        result = []
        for camera in self.config.cameras:
            driver = self.cameras.get(camera.id)
            result.append({
                    'id': camera.id,
                    'source': str(camera.source),
                    'state': str(driver.state) if driver else None,
                    'frames': driver.frames if driver else 0,
                    'last_frame': driver.last_frame.isoformat()
                    if driver and driver.last_frame else None,
                    'last_error': driver.last_error if driver else None,
                    'zones': [z.code for z in camera.zones],
                    })
        return result

    # --- the server -----------------------------------------------------

    def _link_ok(self) -> None:
        assert self.fallback is not None
        was_fallback = self.fallback.active
        self.fallback.link_ok()
        if was_fallback:
            self.fallback_exits += 1
            self._wake.set()  # replay what was sold meanwhile
        if self.auth_refused:
            logger.info("server accepts the key again")
        self.auth_refused = False
        self.last_sync = dt.datetime.now(dt.UTC)

    async def _remote(self, call: Callable[[], T], route: str) -> T:
        "One call to the server in a thread; the link state follows"
        assert self.fallback is not None
        try:
            result = await _in_thread(call, f'uplink-{route}')
        except UplinkAuthError as error:
            if not self.auth_refused:
                logger.error(
                    "box %s: server refuses the key: %s; retrying every "
                    "%.0f s", self.config.box_identifier, error,
                    self.timing.auth_retry)
            self.auth_refused = True
            self.last_error = str(error)
            raise
        except UplinkUnavailable as error:
            # warned once per outage; each retry is logged by its task
            if self.fallback.unreachable_since is None:
                logger.warning("server unreachable: %s", error)
            self.fallback.link_failed()
            self.last_error = str(error)
            raise
        except UplinkRefused as error:
            # the server answered: the link is up
            self._link_ok()
            self.last_error = str(error)
            raise
        self._link_ok()
        return result

    async def setup(self) -> None:
        "Report the box and its devices; take the policy and the prices"
        async with self._setup_lock:
            devices = self.devices()
            answer = await self._remote(
                lambda: self.uplink.setup(
                    self.config.box_identifier, SOFTWARE_VERSION, devices),
                'setup')
            policy = parse_policy(answer, self.config.fallback)
            if policy != self.policy:
                logger.info("policy: %s", policy.to_dict())
            self.policy = policy
            self._apply_prices(answer.get('nozzles', []))
            self.setup_done.set()

    def _apply_prices(self, nozzles: Iterable[Any]) -> None:
        prices: dict[str, dict[int, Decimal]] = {}
        price_sets: dict[str, set[Any]] = {}
        for item in nozzles:
            if not isinstance(item, Mapping):
                continue
            target = self.nozzles.get(item.get('station_number'))
            price = item.get('unit_price')
            if target is None or not isinstance(price, Decimal):
                continue
            device, number = target
            prices.setdefault(device, {})[number] = price
            price_sets.setdefault(device, set()).add(item.get('price'))
        for device, known in prices.items():
            driver = self.drivers.get(device)
            if driver is None:
                continue
            sets = price_sets[device]
            if driver.pump_status in {None, PumpStatus.NOT_PROGRAMMED}:
                # not programmed yet: these are the prices it gets
                driver.prices.update(known)
                driver.price_set_id = sets.pop() if len(sets) == 1 else None
                if driver.pump_status is PumpStatus.NOT_PROGRAMMED:
                    driver.request_status()  # programs it on the answer
                    continue
            # programmed (or its status not read yet): what it holds, as
            # last programmed (also by an earlier run of the box) or
            # reported by the pump (DC3)
            held = driver.reported_prices if driver.pump_status is None else (
                driver.pump_prices)
            differ = {
                n: p for n, p in known.items() if n in held and held[n] != p}
            if differ:
                logger.warning(
                    "%s: setup prices %s differ from the pump's %s; they "
                    "change with a price_change command", device, differ,
                    {n: held[n] for n in differ})
            unknown = sorted(n for n in known if n not in held)
            if unknown and driver.pump_status is not None:
                logger.info(
                    "%s: the pump's prices of nozzles %s are not known yet "
                    "(reported when they are lifted)", device, unknown)

    def _drain(self) -> DrainResult:
        "In a thread: the outbox through a connection of this thread"
        with Outbox(self.config.outbox_path) as outbox:
            return self.uplink.drain(outbox)

    async def _uplink_task(self) -> None:
        assert self.outbox is not None
        backoff = Backoff(
            base=self.timing.backoff_base, cap=self.timing.backoff_cap)
        while True:
            try:
                if not self.setup_done.is_set():
                    await self.setup()
                self._wake.clear()
                if self.outbox.depth():
                    result = await self._remote(self._drain, 'events')
                    if result.sent:
                        logger.info(
                            "events: %s sent (%s accepted, %s duplicate, "
                            "%s in error)", result.sent, result.accepted,
                            result.duplicate, result.error)
                    if result.unanswered:
                        raise UplinkUnavailable(
                            f"events: {result.unanswered} unconfirmed")
                backoff.success()
            except UplinkAuthError:
                await asyncio.sleep(self.timing.auth_retry)
                continue
            except (UplinkUnavailable, UplinkRefused) as error:
                delay = backoff.failure()
                logger.info(
                    "uplink: %s; next try in %.1f s", error, delay)
                await asyncio.sleep(delay)
                continue
            # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow
            # a cancellation that comes as the event is set
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.timing.idle_check):
                    await self._wake.wait()

    async def _heartbeat_task(self) -> None:
        while True:
            await self.setup_done.wait()
            assert self.policy is not None
            interval = self.timing.heartbeat_interval
            await asyncio.sleep(
                interval if interval is not None
                else self.policy.heartbeat_interval)
            devices = self.devices()
            try:
                await self._remote(
                    functools.partial(self.uplink.heartbeat, devices),
                    'heartbeat')
            except UplinkRefused as error:
                logger.info("heartbeat refused: %s", error)
            except UplinkError:
                pass  # logged by _remote; the next beat tries again

    async def _command_task(self) -> None:
        backoff = Backoff(
            base=self.timing.backoff_base, cap=self.timing.backoff_cap)
        wait_route = True
        while True:
            await self.setup_done.wait()
            assert self.policy is not None
            wait = self.policy.command_wait
            try:
                if wait_route:
                    try:
                        await self._remote(
                            functools.partial(self.uplink.wait, wait),
                            'wait')
                    except UplinkRefused as error:
                        if error.status != HTTP_NOT_FOUND:
                            raise
                        wait_route = False
                        logger.warning(
                            "the server has no wait route: polling "
                            "commands every %.0f s", self.timing.command_poll)
                        continue
                else:
                    await asyncio.sleep(self.timing.command_poll)
                commands = await self._remote(self.uplink.commands, 'commands')
                backoff.success()
            except UplinkAuthError:
                await asyncio.sleep(self.timing.auth_retry)
                continue
            except UplinkError as error:
                delay = backoff.failure()
                logger.info("commands: %s; next try in %.1f s", error, delay)
                await asyncio.sleep(delay)
                continue
            started = sum(self._dispatch(command) for command in commands)
            if commands and not started:
                await asyncio.sleep(self.timing.command_min_interval)

    # --- commands -------------------------------------------------------

    def _dispatch(self, command: Any) -> bool:
        "Start a command in its own task; False if it is already running"
        assert self.outbox is not None
        command_id = command.get('id') if isinstance(command, dict) else None
        if not isinstance(command_id, int) or isinstance(command_id, bool):
            logger.error("command without an id: %r", command)
            return False
        if command_id in self._in_progress:
            return False
        self._in_progress.add(command_id)
        task = asyncio.create_task(
            self._run_command(
                command_id, str(command.get('kind')),
                command.get('payload')),
            name=f'command-{command_id}')
        self._command_tasks.add(task)
        task.add_done_callback(self._command_tasks.discard)
        return True

    async def _run_command(
            self, command_id: int, kind: str, payload: Any) -> None:
        assert self.outbox is not None
        key = f'command:{command_id}'
        try:
            stored = self.outbox.command_result(key)
            if stored is None:
                try:
                    status, result = await self._execute(
                        command_id, kind, payload)
                except _NotExecuted as error:
                    # answered, not recorded: a repeat is executed
                    stored = {'status': 'failed', 'result': {
                        'version': API_VERSION, 'error': str(error)}}
                else:
                    stored = self.outbox.command_done(
                        key, {'status': status, 'result': result})
            else:
                logger.info(
                    "command %s (%s) already executed: answered with its "
                    "result", command_id, kind)
            answer = {
                'id': command_id, 'status': stored['status'],
                'result': stored['result']}
            try:
                await self._remote(lambda: self.uplink.ack([answer]), 'ack')
            except UplinkError as error:
                # the server gives the command again; it is answered then
                logger.warning("ack of command %s: %s", command_id, error)
        finally:
            self._in_progress.discard(command_id)

    def _target(self, station_number: int) -> tuple[LineDriver, int]:
        target = self.nozzles.get(station_number)
        if target is None:
            raise _CommandFailed(f"no nozzle {station_number} on this box")
        device, number = target
        return self.drivers[device], number

    async def _execute(
            self, command_id: int, kind: str,
            payload: Any) -> tuple[str, dict[str, Any]]:
        "Execute a command; (acked|failed, result)"
        logger.info("command %s: %s", command_id, kind)
        try:
            if not isinstance(payload, Mapping):
                raise _CommandFailed("the payload is not an object")
            if kind == 'price_change':
                return await self._price_change(command_id, payload)
            if kind == 'authorize':
                return await self._authorize(command_id, payload)
            if kind == 'stop':
                driver, _ = self._target(_integer(payload, 'station_number'))
                await driver.stop(f'{command_id}:{driver.device}')
                return 'acked', {'version': API_VERSION, 'status': 'stopped'}
            if kind == 'configuration':
                if 'frictionless_plates' in payload:
                    assert self.offline is not None
                    try:
                        count = self.offline.replace(payload)
                    except OfflineListError as error:
                        raise _CommandFailed(str(error)) from error
                    logger.info(
                        "offline list of %s frictionless plate(s) stored "
                        "(generated %s)", count, self.offline.generated)
                try:
                    await self.setup()
                except UplinkError as error:
                    raise _CommandFailed(f"setup: {error}") from error
                return 'acked', {'version': API_VERSION}
            raise _CommandFailed(
                f"command kind {kind!r} is not supported by this box")
        except (_CommandFailed, CommandError) as error:
            logger.warning("command %s (%s) failed: %s", command_id, kind,
                error)
            return 'failed', {'version': API_VERSION, 'error': str(error)}
        except (CommandNotExecuted, TransportError) as error:
            # the pump ignored it or never acknowledged it
            logger.warning(
                "command %s (%s) not executed (not recorded: it may be sent "
                "again): %s", command_id, kind, error)
            raise _NotExecuted(f"not executed: {error}") from error

    async def _authorize(
            self, command_id: int,
            payload: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
        station_number = _integer(payload, 'station_number')
        driver, nozzle = self._target(station_number)
        future = driver.authorize(
            nozzle, f'{command_id}:{driver.device}',
            # the fill it releases names it: the server finds the payment
            reference=command_id,
            preset_volume=_decimal(payload.get('preset_volume'),
                'preset_volume'),
            preset_amount=_decimal(payload.get('preset_amount'),
                'preset_amount'),
            # stopped if unused that long (a pre-payment); an older server
            # sends none: the pump stays authorised until used or stopped
            lift_timeout=_seconds(payload.get('lift_timeout'),
                'lift_timeout'))
        # the box does not authorise this lift too (postpay)
        self._lift_authorised[driver.device] = nozzle
        try:
            await future
        except Exception:
            if self._lift_authorised.get(driver.device) == nozzle:
                del self._lift_authorised[driver.device]
            raise
        return 'acked', {
            'version': API_VERSION, 'station_number': station_number,
            'status': 'authorized'}

    async def _price_change(
            self, command_id: int,
            payload: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
        price_set = payload.get('price')
        items = payload.get('nozzles')
        if not isinstance(items, list):
            raise _CommandFailed("nozzles: missing")
        results: list[dict[str, Any]] = []
        per_driver: dict[str, dict[int, Decimal]] = {}
        rows: dict[str, list[dict[str, Any]]] = {}
        for item in items:
            row: dict[str, Any] = {
                'station_number': item.get('station_number')
                if isinstance(item, Mapping) else None,
                'unit_price': None, 'status': 'failed', 'error': None}
            results.append(row)
            try:
                if not isinstance(item, Mapping):
                    raise _CommandFailed("not an object")
                price = _decimal(item.get('unit_price'), 'unit_price')
                if price is None:
                    raise _CommandFailed("unit_price: missing")
                row['unit_price'] = str(price)
                driver, nozzle = self._target(
                    _integer(item, 'station_number'))
            except _CommandFailed as error:
                row['error'] = str(error)
                continue
            per_driver.setdefault(driver.device, {})[nozzle] = price
            rows.setdefault(driver.device, []).append(row)
        futures: dict[str, asyncio.Future[CommandResult]] = {}
        for device, prices in per_driver.items():
            driver = self.drivers[device]
            try:
                futures[device] = driver.change_prices(
                    prices, f'{command_id}:{device}', price_set)
            except CommandError as error:
                for row in rows[device]:
                    row['error'] = str(error)
        outcomes = await asyncio.gather(
            *futures.values(), return_exceptions=True)
        for device, outcome in zip(futures, outcomes, strict=True):
            if isinstance(outcome, asyncio.CancelledError):
                raise outcome
            for row in rows[device]:
                if isinstance(outcome, BaseException):
                    row['error'] = str(outcome)
                else:
                    row['status'] = 'applied'
        status = 'acked' if results and all(
            r['status'] == 'applied' for r in results) else 'failed'
        logger.info(
            "price change %s (price set %s): %s", command_id, price_set,
            ', '.join(f"{r['station_number']} {r['status']}"
                for r in results))
        return status, {
            'version': API_VERSION, 'price': price_set, 'nozzles': results}

    # --- authorisation by the box ---------------------------------------

    def _auto_limits(self) -> tuple[Decimal, Decimal, bool] | None:
        "(max amount, max volume, in fallback) or None: do not authorise"
        assert self.fallback is not None
        if self.auth_refused:
            return None
        if self.fallback.active:
            if not self.fallback.authorizes:
                return None
            policy = self.config.fallback
            return policy.max_amount, policy.max_volume, True
        policy = self.policy
        if policy is None or policy.authorization is not Authorization.POSTPAY:
            return None
        return policy.max_amount, policy.max_volume, False

    @staticmethod
    def _preset(
            driver: LineDriver, nozzle: int, max_amount: Decimal,
            max_volume: Decimal) -> dict[str, Decimal]:
        params = driver.params
        volume_step = Decimal(1).scaleb(-params.volume_decimals)
        amount_step = Decimal(1).scaleb(-params.amount_decimals)
        volume = max_volume.quantize(volume_step, rounding=ROUND_DOWN)
        price = driver.reported_prices.get(nozzle, driver.prices.get(nozzle))
        if not price:
            return {'preset_volume': volume}
        amount = min(max_amount, volume * price).quantize(
            amount_step, rounding=ROUND_DOWN)
        return {'preset_amount': amount}

    def _after_poll(self, driver: LineDriver) -> None:
        "After each poll: alarms on answering changes, authorisation"
        self._watch_answering(driver)
        self._auto_authorize(driver)

    def _watch_answering(self, driver: LineDriver) -> None:
        "One alarm event each time the pump stops or starts answering"
        device = driver.device
        answering = driver.answering
        if self._answering.get(device, True) == answering:
            self._answering[device] = answering
            return
        self._answering[device] = answering
        if answering:
            code = AlarmCode.ANSWERING_AGAIN
            message = (
                f"pump {device} ({driver.address:#04x}) answers its polls "
                "again")
        else:
            code = AlarmCode.NOT_ANSWERING
            message = (
                f"pump {device} ({driver.address:#04x}) does not answer: "
                f"{driver.missed_polls} polls in a row without answer")
        # through the drivers' outbox (the tap): the uplink is woken
        event = driver.outbox.append(
            EventKind.ALARM, device, dt.datetime.now(dt.UTC), {
                'version': EVENT_VERSION, 'pump_address': driver.address,
                'code': str(code), 'message': message})
        logger.info("%s: alarm %s (seq %s)", device, code, event.seq)

    def _auto_authorize(self, driver: LineDriver) -> None:
        "Authorise a lifted nozzle if the policy says so"
        device = driver.device
        nozzle = driver.nozzle_out
        if nozzle is None:
            self._lift_authorised.pop(device, None)
            self._auto_failures.pop(device, None)
            return
        if self._lift_authorised.get(device) == nozzle or (
                driver.point.state is not FPState.CALLING
                or driver.pump_status is not PumpStatus.RESET):
            return
        failed_nozzle, failures = self._auto_failures.get(device, (nozzle, 0))
        if failed_nozzle != nozzle:
            failures = 0  # another nozzle was lifted since
        if failures > AUTO_AUTHORIZE_RETRIES:
            return  # given up until the nozzle is hung up
        limits = self._auto_limits()
        member = None
        if (self.fallback is not None and self.fallback.active
                and not self.auth_refused):
            member = self._member_at(driver, nozzle)
        if member is not None:
            policy = self.config.fallback
            limits = (min(member[1], policy.max_amount), policy.max_volume,
                True)
        if limits is None:
            return
        max_amount, max_volume, in_fallback = limits
        preset = self._preset(driver, nozzle, max_amount, max_volume)
        command_id = f'auto:{device}:{uuid.uuid4()}'
        self._lift_authorised[device] = nozzle
        try:
            future = driver.authorize(nozzle, command_id, **preset)
        except CommandError as error:
            logger.error("%s: cannot authorise nozzle %s: %s", device,
                nozzle, error)
            return
        logger.info(
            "%s: nozzle %s being authorised by the box%s%s (%s)", device,
            nozzle,
            ' in fallback' if in_fallback else '',
            f' for listed plate {member[0]}' if member else '', preset)
        if in_fallback:
            self._fallback_sale.add(device)
        else:
            self._fallback_sale.discard(device)

        def done(future: asyncio.Future[CommandResult]) -> None:
            if future.cancelled():
                error: BaseException | None = None
            else:
                error = future.exception()
                if error is None:
                    self._auto_failures.pop(device, None)
                    if member is not None and self.offline is not None:
                        self.offline.used(member[0])
                    return
            # not authorised: try again at the next poll, a few times
            if self._lift_authorised.get(device) == nozzle:
                del self._lift_authorised[device]
            self._fallback_sale.discard(device)
            if error is None or driver.nozzle_out != nozzle:
                return  # a stop, or hung up since: nothing to count
            count = failures + 1
            self._auto_failures[device] = (nozzle, count)
            if count > AUTO_AUTHORIZE_RETRIES:
                logger.error(
                    "%s: nozzle %s not authorised by the box after %s "
                    "attempts, not tried again until it is hung up: %s",
                    device, nozzle, count, error)
            else:
                logger.warning(
                    "%s: nozzle %s not authorised by the box (attempt %s "
                    "of %s), tried again: %s", device, nozzle, count,
                    AUTO_AUTHORIZE_RETRIES + 1, error)

        future.add_done_callback(done)

    # --- events -----------------------------------------------------------

    def _tag(
            self, kind: EventKind | str, device: str,
            payload: Mapping[str, Any]) -> Mapping[str, Any]:
        if kind == EventKind.TRANSACTION_COMPLETED and (
                device in self._fallback_sale):
            return {**payload, 'fallback': True}
        return payload

    def _appended(self, event: Event) -> None:
        assert self.fallback is not None
        payload = event.payload
        if event.kind is EventKind.TRANSACTION_COMPLETED and payload.get(
                'fallback'):
            self._fallback_sale.discard(event.device)
            station_number = payload.get('station_nozzle')
            if isinstance(station_number, int):
                self.fallback.record_sale(
                    station_number, event.device, payload.get('nozzle'),
                    payload.get('volume') or Decimal(0),
                    payload.get('amount') or Decimal(0))
        self._wake.set()

    # --- life -------------------------------------------------------------

    def stop(self) -> None:
        "Ask run() to end (safe from a signal handler of the loop)"
        logger.info("stopping")
        self._stop.set()

    def _build(self, outbox: Outbox) -> list[Transport]:
        "Transports and lines; dispensers on the same connection share one"
        tap = cast(Outbox, _EventTap(outbox, self))
        groups: dict[tuple[str, ...], list[DispenserConfig]] = {}
        for dispenser in self.config.dispensers:
            groups.setdefault(dispenser.line, []).append(dispenser)
        transports = []
        for configs in groups.values():
            transport = _transport(configs[0])
            transports.append(transport)
            drivers = []
            for config in configs:
                driver = LineDriver(
                    config, transport, tap,
                    response_timeout=self.timing.response_timeout)
                self.drivers[config.name] = driver
                drivers.append(driver)
            interval = self.timing.poll_interval
            self.lines.append(DartLine(
                transport, drivers,
                poll_interval=interval if interval is not None
                else min(c.poll_interval for c in configs),
                after_poll=self._after_poll))
        return transports

    async def _build_cameras(self, outbox: Outbox) -> None:
        "Camera drivers sharing one pipeline, loaded once (in a thread)"
        from iot_box.drivers.camera.driver import CameraDriver
        from iot_box.drivers.camera.sources import source_for
        from iot_box.lpr.pipeline import Pipeline

        lpr = self.config.lpr
        pipeline = await _in_thread(
            lambda: Pipeline(
                threads=lpr.threads, dark_plates=lpr.dark_plates),
            'lpr-load')
        tap = cast(Outbox, _EventTap(outbox, self))
        from iot_box.lpr.voting import DEFAULT_GAP, Voter

        lock = threading.Lock()
        gap = self.timing.plate_vote_gap
        for camera in self.config.cameras:
            self.cameras[camera.id] = CameraDriver(
                camera, source_for(camera), pipeline, tap,
                min_confidence=lpr.min_confidence, lock=lock,
                voter=Voter(gap=gap if gap is not None else DEFAULT_GAP),
                on_vote=functools.partial(self._plate_voted, camera))

    def _build_posts(self, outbox: Outbox) -> None:
        "One code reader per payment post (pyserial imported by need)"
        if not self.config.payment_posts:
            return
        from iot_box.drivers.codereader.driver import CodeReaderDriver

        tap = cast(Outbox, _EventTap(outbox, self))
        for post in self.config.payment_posts:
            self.posts[post.name] = CodeReaderDriver(
                post, tap, calling=functools.partial(
                    self._calling, post.nozzles))

    def _calling(self, numbers: Iterable[int]) -> list[int]:
        """The station numbers among numbers whose nozzle is out and waits
        for an authorisation: its pump answers, its fuelling point is
        calling, and neither the box nor a command is authorising it (a
        nozzle kept out after its fill stays authorised until hung up)"""
        calling = []
        for number in numbers:
            target = self.nozzles.get(number)
            driver = self.drivers.get(target[0]) if target else None
            if target is None or driver is None:
                continue
            device, nozzle = target
            if (driver.answering and driver.nozzle_out == nozzle
                    and driver.point.state is FPState.CALLING
                    and self._lift_authorised.get(device) != nozzle):
                calling.append(number)
        return calling

    # --- the offline list (frictionless plates in fallback) --------------

    def _plate_voted(
            self, camera: Any, vote: Any, event: Event | None) -> None:
        "A vehicle pass of a camera: a listed member at an island?"
        assert self.fallback is not None and self.offline is not None
        if event is None or not self.fallback.active:
            return
        zone = next(z for z in camera.zones if z.code == vote.zone)
        limit = self.offline.read(
            vote.plate, str(vote.colour), vote.confidence, zone.nozzles)
        if limit is not None:
            logger.info(
                "fallback: listed plate %s at %s: nozzles %s may be "
                "authorised up to %s", vote.plate, zone.code,
                ', '.join(map(str, zone.nozzles)), limit)

    def _member_at(
            self, driver: LineDriver,
            nozzle: int) -> tuple[str, Decimal] | None:
        "(plate, limit) of a member read at this nozzle's island, if any"
        if self.offline is None:
            return None
        for number, target in self.nozzles.items():
            if target == (driver.device, nozzle):
                return self.offline.member_at(number)
        return None

    async def run(self) -> None:
        "Run until stop(); everything opened here is closed on the way out"
        async with contextlib.AsyncExitStack() as stack:
            self.outbox = stack.enter_context(
                Outbox(self.config.outbox_path))
            self.offline = OfflineList(self.outbox)
            self.offline.load()
            totals = stack.enter_context(FallbackTotals(
                totals_path(self.config.outbox_path)))
            self.fallback = Fallback(
                self.config.fallback, totals,
                threshold=self.timing.fallback_threshold)
            for transport in self._build(self.outbox):
                stack.push_async_callback(transport.close)
                try:
                    await transport.open()
                except (OSError, TimeoutError) as error:
                    # the line reopens it (DartLine.run)
                    logger.error("%s: cannot open: %s", transport.name, error)
                    await transport.close()
            if self.config.cameras:
                await self._build_cameras(self.outbox)
            self._build_posts(self.outbox)
            if self.status_page:
                self.status_server = await stack.enter_async_context(
                    StatusServer(self.config.status_listen, self.status))
            logger.info(
                "box %s (station %s) running: %s dispenser(s) on %s "
                "line(s)", self.config.box_identifier,
                self.config.station_code, len(self.drivers), len(self.lines))
            tasks = [
                asyncio.create_task(line.run(), name=f'line-{line.name}')
                for line in self.lines]
            tasks += [
                asyncio.create_task(camera.run(), name=f'camera-{name}')
                for name, camera in self.cameras.items()]
            tasks += [
                asyncio.create_task(reader.run(), name=f'post-{name}')
                for name, reader in self.posts.items()]
            tasks += [
                asyncio.create_task(self._uplink_task(), name='uplink'),
                asyncio.create_task(self._command_task(), name='commands'),
                asyncio.create_task(self._heartbeat_task(), name='heartbeat'),
                ]
            stopping = asyncio.create_task(self._stop.wait(), name='stop')
            try:
                done, _ = await asyncio.wait(
                    [*tasks, stopping], return_when=asyncio.FIRST_COMPLETED)
            finally:
                await _cancel_all([*tasks, stopping, *self._command_tasks])
            for task in done:
                if task is not stopping and not task.cancelled():
                    error = task.exception()
                    if error is not None:
                        raise error
            logger.info("stopped")


async def _cancel_all(tasks: Iterable[asyncio.Task[Any]]) -> None:
    """Cancel tasks and wait for their end, at most `STOP_TIMEOUT`

    Once is enough: nothing in the box awaits through asyncio.wait_for,
    which on Python 3.11 can lose a cancellation (asyncio.timeout is used
    instead).  A task still running after the wait is logged, not waited
    for: the stop goes on and closes what the tasks used."""
    tasks = list(tasks)
    for task in tasks:
        task.cancel()
    if not tasks:
        return
    _, pending = await asyncio.wait(tasks, timeout=STOP_TIMEOUT)
    for task in pending:
        logger.error(
            "task %s still running %.1f s after its cancellation",
            task.get_name(), STOP_TIMEOUT)
    for task in tasks:
        if task in pending:
            continue
        if not task.cancelled() and task.exception() is not None:
            logger.debug("task %s ended with %r", task.get_name(),
                task.exception())


def _transport(config: DispenserConfig) -> Transport:
    "The transport of a dispenser's line (modules imported by need)"
    if config.connection is Connection.UDP:
        from iot_box.interfaces.udp import UdpTransport
        assert config.host is not None and config.port is not None
        return UdpTransport(config.host, config.port)
    if config.connection is Connection.TCP:
        from iot_box.interfaces.tcp import TcpTransport
        assert config.host is not None and config.port is not None
        return TcpTransport(config.host, config.port)
    from iot_box.interfaces.serial import SerialTransport
    assert config.serial_port is not None
    return SerialTransport(
        config.serial_port, baudrate=config.baudrate,
        parity=str(config.parity))
