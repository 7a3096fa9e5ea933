# This file is part of fuelpay.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""Wayne DART dispenser driver: the master side of the line, one pump

`DartDispenserDriver` is the master of ONE pump address over a
`Transport`.  Several drivers (different addresses) may share one
transport, a multidrop line, if their `poll_once()` calls never overlap
(a `DartLine` calls them in turn).  One `poll_once()`:

1. queues a CD5 price update if one waits and the pump is not in a sale;
2. sends each queued DATA block and waits for its ACK (same sequence),
   sending it again on NAK or silence up to `MAX_SEND_ATTEMPTS` times;
   while the pump does not answer (`answering` false) blocks wait and only
   POLL goes out; when it answers again its status is asked first (it may
   have been reset or lost power meanwhile);
3. sends POLL; a DATA answer is decoded, handled and then ACKed (so what
   it produced is in the outbox before the pump forgets it); a repeat of
   the last block (same sequence and content: our ACK was lost, or a late
   copy) is ACKed and not handled again, and the answer to this POLL is
   still awaited; a block that does not decode is NAKed; EOT means
   nothing to say.

Each exchange starts with a fresh frame splitter: bytes that arrived
before the request are stale by definition.  Of what arrives, only frames
of this address and of the kind the exchange expects count (ACK/NAK of the
block's sequence after a block; DATA or EOT after POLL): frames for other
pumps on a shared line, and late answers to an earlier exchange, are
ignored without touching the sequence or ACK state.

Behaviour (DART_NOTES.md, "Typical sale"): at start CD1 RETURN_STATUS
(asked again if no DC1 follows within `STATUS_RETRY_POLLS` polls: a
restarted master starts again at sequence 0, and a pump whose last block
received had that sequence and content ACKs it as a repeat and executes
nothing);
NOT_PROGRAMMED -> CD5 prices + RESET; DC3 nozzle-out changes -> nozzle_up
/ nozzle_down events (DC3 of nozzles not configured are ignored); DC2
while filling -> running_total (rate-limited); FILLING_COMPLETED /
MAX_REACHED -> CD1 RETURN_STATUS + RETURN_FILLING_INFORMATION + CD101 for
every configured nozzle -> one transaction_completed event -> CD5 if a
price change waited -> RESET.  The sale's nozzle and unit price are those
the pump reports in DC3 with the filling information (the simulator's
assumption), else the nozzle seen out when it was authorised; a driver
restarted mid-sale saw no lift: from a pump that reports no DC3 it takes
the one nozzle whose DC101 totals grew since those stored with the last
sale (or read while the pump was idle), at the price last known.  If the
status read back is no longer an ended sale, the end of sale was stale (a
late DC1 after our RESET) and nothing is recorded.

A completed sale is recorded once: the event and its key (device, the
totals of all nozzles after it, its volume and amount) are stored in ONE
outbox transaction (`Outbox.append_once`), so a driver restarted at any
instant, even before its RESET reached the pump, finds the sale already
recorded and does not record it again.  A sale whose filling information
or totals do not come (lost blocks, the pump gone silent) is asked again
after `CLOSE_RETRY_POLLS` polls.

AUTHORIZE is confirmed by the pump, not by its ACK alone: DART pumps
acknowledge a block and then ignore a command they refuse (AUTHORIZE
outside RESET), reporting their unchanged status.  The command's future
gets its result once DC1 reports AUTHORIZED or FILLING (or a sale that
ended since); it fails with `CommandNotExecuted` when DC1 reports a status
in which the pump cannot have executed it, or when no such DC1 came within
`CONFIRM_POLLS` polls.  A failed command is not recorded: the server may
send it again.

An AUTHORIZE given a `lift_timeout` (the server's pre-paid
authorisations) expires when it is not used: once that many seconds
(the driver's clock) have passed since the pump confirmed it, and the
fuelling point is still AUTHORISED (nozzle in, nothing flowed), CD1 STOP
goes to the pump (asked again if the pump still reports AUTHORIZED
`CONFIRM_POLLS` polls after the ACK).  A nozzle held out without flow
(STARTED) is never stopped: the driver may be about to fuel; hung up
without flow, the point is AUTHORISED again and expires at once if the
time has passed.  Fuelling (FILLING, or any volume reported) ends the
timeout for good.  The pump ends the stopped sale (FILLING_COMPLETED) and
the driver closes it as any sale; at its end exactly one event is
recorded under the sale's key: ``authorization_expired`` (payload version
1: ``authorization`` the server's command, ``station_number``, ``nozzle``,
``lift_timeout``) when nothing was delivered, else the usual
``transaction_completed`` naming the command (a lift just before the
STOP: the fill, cut short, is paid as any other), never both.  A sale
that ends with nothing delivered without the driver's STOP (a server
``stop`` command, a pump that ends an authorisation by itself) stays a
zero ``transaction_completed``.

Such an authorisation is kept in the outbox until its sale (or expiry) is
recorded (`authorization_key`: the command, nozzle, timeout, the
wall-clock deadline and whether STOP was decided; the record of the sale
clears it in the same transaction).  A driver restarted meanwhile takes
it up at the first status the pump reports if the pump still has it
(AUTHORIZED, FILLING or an ended sale not yet recorded): the fill names
the command, the time left (wall clock) is counted, a decided STOP is
sent again; a pump found idle (reset, or the sale recorded) makes it
forgotten.  The expiry also records the sale's plain key, so a driver
restarted after recording it and before its RESET reached the pump
records that zero sale again neither as an expiry nor as a fill.

A power loss mid-fill (an assumption, see the simulator): the pump keeps
the filled volume and amount and the totals in non-volatile memory and
comes back in FILLING_COMPLETED; the driver closes that sale as any other,
once.  A pump reset (back to NOT_PROGRAMMED) is programmed again; a sale
it interrupted cannot be read back from the pump and is logged as lost.
"""
from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from iot_box.config import DispenserConfig
from iot_box.events import EVENT_VERSION, EventKind
from iot_box.interfaces.transport import Transport, TransportError
from iot_box.outbox import Outbox
from iot_box.protocols.dart import (
    DEFAULT_PARAMETERS,
    CD1Command,
    CD2AllowedNozzles,
    CD3PresetVolume,
    CD4PresetAmount,
    CD5PriceUpdate,
    CD101RequestTotals,
    Command,
    ControlType,
    DartError,
    DC1Status,
    DC2FilledVolumeAmount,
    DC3PriceNozzle,
    DC5Alarm,
    DC101Totals,
    Direction,
    Frame,
    FrameSplitter,
    Message,
    PumpParameters,
    PumpStatus,
    decode_frame,
    decode_transactions,
    encode_frame,
    encode_messages,
    make_control,
    next_seq,
    validate_address,
)

from .fuelling_point import (
    FPState,
    FuellingPoint,
    IllegalTransition,
    from_dart,
)

__all__ = [
    'CommandError', 'CommandNotExecuted', 'DartDispenserDriver',
    'DartLinkError']

logger = logging.getLogger(__name__)

# A pump answers within a few ms at 9600 baud; a serial-server gateway
# adds a few ms more.  250 ms tells a silent pump from a slow one without
# stalling the line for long.
RESPONSE_TIMEOUT = 0.25
# A block NAKed or unanswered this many times is given up (and its
# commands fail): a pump that lost three in a row is not listening.
MAX_SEND_ATTEMPTS = 3
# A pump that missed this many POLLs in a row is reported as not answering;
# a single miss is line noise, three (about a second) is a silent pump.
NOT_ANSWERING_POLLS = 3
# Polls after the ACK of AUTHORIZE within which DC1 must show its effect:
# the simulator and real pumps report the new status at the next POLL, so
# three leaves room for lost frames without leaving a server waiting.
CONFIRM_POLLS = 3
# Polls without the final filling information and totals of a closing
# sale before they are asked again (their block or its answer was lost).
CLOSE_RETRY_POLLS = 5
# Answered polls after the ACK of a RETURN_STATUS without any DC1 before
# the status is asked again: a pump answers it at the next POLL, or the
# one after if a block of its own was in flight; none means the pump took
# the block for a repeat (a restarted master starts again at sequence 0,
# and the pump may have received a block of that sequence last)
STATUS_RETRY_POLLS = 3
# Running totals go to the server at most this often per pump: enough for
# a live display, a tiny share of the uplink.
RUNNING_TOTAL_INTERVAL = 1.0
# Statuses that end a sale (DART_NOTES.md)
SALE_ENDED = frozenset({PumpStatus.FILLING_COMPLETED, PumpStatus.MAX_REACHED})
# Statuses in which the pump accepts CD5 (the simulator, after the notes:
# prices are locked from AUTHORIZED until the sale is completed)
PRICES_ACCEPTED = frozenset({
    PumpStatus.NOT_PROGRAMMED, PumpStatus.RESET,
    PumpStatus.FILLING_COMPLETED, PumpStatus.MAX_REACHED,
    PumpStatus.SWITCHED_OFF})
# Statuses with no sale going on or waiting to be closed
IDLE = frozenset({
    PumpStatus.NOT_PROGRAMMED, PumpStatus.RESET, PumpStatus.SWITCHED_OFF})
# Version of the payloads this driver writes
PAYLOAD_VERSION = EVENT_VERSION

CommandResult = Mapping[str, Any]


class DartLinkError(TransportError):
    "The pump did not acknowledge a block"


class CommandError(ValueError):
    "A server command the driver refuses (bad nozzle, no preset, ...)"


class CommandNotExecuted(RuntimeError):
    "The pump acknowledged a command but did not execute it"


# Statuses that prove an AUTHORIZE was executed
AUTHORIZE_SEEN = frozenset({PumpStatus.AUTHORIZED, PumpStatus.FILLING})


@dataclass
class _Block:
    "A DATA block to send, and what to do once the pump ACKed it"
    messages: tuple[Message, ...]
    on_ack: Callable[[], None] | None = None
    on_fail: Callable[[Exception], None] | None = None


@dataclass
class _Confirm:
    "An AUTHORIZE the pump ACKed: its effect is awaited in DC1"
    command_id: str
    result: CommandResult
    before: PumpStatus | None  # the pump status when the ACK came
    polls: int = 0
    reference: int | None = None  # the server's command, named by the sale
    nozzle: int | None = None  # the nozzle it allows
    lift_timeout: float | None = None  # seconds before it expires unused


@dataclass
class _Sale:
    "What is known of the sale in progress or being closed"
    nozzle: int | None = None
    unit_price: Decimal | None = None
    closing: bool = False  # filling info and totals asked
    closing_polls: int = 0  # polls since they were asked
    final: DC2FilledVolumeAmount | None = None
    # the DC3 (nozzle, price) reported with the final filling information
    reported: tuple[int, Decimal] | None = None
    totals: dict[int, DC101Totals] = field(default_factory=dict)
    # the server command whose AUTHORIZE released this sale
    authorization: int | None = None
    # its lift timeout: the nozzle it allows, the timeout in seconds, and
    # when it runs out (the driver's clock); None once fuel flowed
    authorized_nozzle: int | None = None
    lift_timeout: float | None = None
    expires: float | None = None
    flowed: bool = False  # some volume was reported for this sale
    # the driver sent STOP because the authorisation expired unused
    expired: bool = False
    # polls since that STOP was ACKed (None: not sent or not ACKed yet)
    stop_polls: int | None = None
    stop_queued: bool = False


class DartDispenserDriver:
    """The master for one DART pump address

    prices: the unit prices to program a NOT_PROGRAMMED pump with (from the
    server's setup answer), keyed by DART nozzle number 1..N; without them,
    those last programmed (kept in the outbox, `prices_key`).

    Kept in the outbox's key-value store across restarts: the prices last
    programmed and their price set (`prices_key`), and every nozzle's
    totals after the last sale recorded or when the pump was last seen
    idle (`totals_key`), to tell on which nozzle a sale the driver did not
    see started was made."""

    def __init__(
            self, config: DispenserConfig, transport: Transport,
            outbox: Outbox, params: PumpParameters = DEFAULT_PARAMETERS, *,
            prices: Mapping[int, Decimal] | None = None,
            price_set_id: int | str | None = None,
            response_timeout: float = RESPONSE_TIMEOUT,
            running_total_interval: float = RUNNING_TOTAL_INTERVAL,
            clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self.address = validate_address(config.address)
        self.device = config.name
        self.nozzles = {n.number: n.station_number for n in config.nozzles}
        if sorted(self.nozzles) != list(range(1, len(self.nozzles) + 1)):
            # CD5 gives the prices of nozzles 1, 2, ... in order
            raise ValueError(
                f"{self.device}: DART nozzles must be numbered 1..N, not "
                f"{sorted(self.nozzles)}")
        self.transport = transport
        self.outbox = outbox
        self.params = params
        self.prices_key = f'driver:{self.device}:prices'
        self.totals_key = f'driver:{self.device}:totals'
        # the authorisation with a lift timeout whose sale is not recorded
        # yet, kept across restarts ({} when none)
        self.authorization_key = f'driver:{self.device}:authorization'
        self._held_authorization: Mapping[str, Any] = (
            outbox.command_result(self.authorization_key) or {})
        # taken up (or dropped) at the first status the pump reports
        self._restore = bool(self._held_authorization)
        stored = outbox.command_result(self.prices_key) or {}
        stored_prices = {
            int(n): Decimal(p) for n, p in stored.get('prices', {}).items()
            if int(n) in self.nozzles}
        self.prices: dict[int, Decimal] = (
            dict(prices) if prices is not None else dict(stored_prices))
        self.price_set_id = price_set_id if prices is not None else (
            stored.get('price_set_id'))
        # the totals (volume, amount) of each nozzle after the last sale
        self._baseline: dict[int, tuple[Decimal, Decimal]] = {
            int(n): (Decimal(v), Decimal(a)) for n, (v, a) in (
                outbox.command_result(self.totals_key) or {}).items()}
        # without them, the totals are asked once the pump is idle
        self._baseline_wanted = not self._baseline
        self._idle_totals: dict[int, DC101Totals] = {}
        self.response_timeout = response_timeout
        self.running_total_interval = running_total_interval
        self._clock = clock
        self.point = FuellingPoint(self.device)

        self.pump_status: PumpStatus | None = None
        self.nozzle_out: int | None = None  # the nozzle out, if any
        # the prices the pump holds as far as known: last programmed (also
        # by an earlier run), then as reported in DC3
        self.reported_prices: dict[int, Decimal] = dict(stored_prices)
        self._splitter = FrameSplitter()
        self._deadline = 0.0  # of the exchange under way (loop time)
        self._tx_seq = 0
        self._last_rx: Frame | None = None
        self._queue: list[_Block] = []
        self._started = False
        self._programming = False
        self._sale = _Sale()
        self._last_running_total: float | None = None
        self._commands: dict[str, asyncio.Future[CommandResult]] = {}
        self._pending_prices: dict[int, Decimal] = {}
        self._pending_price_set: int | str | None = None
        self._price_commands: list[str] = []
        self._prices_queued = False
        self._confirming: list[_Confirm] = []
        self._resync = False  # a block failed: ask the pump's status
        # answered polls since a RETURN_STATUS was ACKed without a DC1
        self._status_polls: int | None = None
        self.missed_polls = 0

    @property
    def pump_prices(self) -> dict[int, Decimal]:
        "The unit prices the pump holds, as far as the driver knows them"
        return {**self.prices, **self.reported_prices}

    # --- server commands ----------------------------------------------

    def _known(self, command_id: str) -> asyncio.Future[CommandResult] | None:
        "The future of a command already executed or queued, if any"
        if not command_id:
            raise CommandError("command_id must not be empty")
        future = self._commands.get(command_id)
        if future is not None:
            return future
        result = self.outbox.command_result(command_id)
        if result is None:
            return None
        logger.info(
            "%s: command %s already executed, not again", self.device,
            command_id)
        future = asyncio.get_running_loop().create_future()
        future.set_result(result)
        return future

    def _new_command(self, command_id: str) -> asyncio.Future[CommandResult]:
        future = asyncio.get_running_loop().create_future()
        self._commands[command_id] = future
        return future

    def _done(self, command_id: str, result: CommandResult) -> None:
        stored = self.outbox.command_done(command_id, result)
        future = self._commands.pop(command_id, None)
        if future is not None and not future.done():
            future.set_result(stored)

    def _failed(self, command_id: str, error: Exception) -> None:
        future = self._commands.pop(command_id, None)
        if future is not None and not future.done():
            future.set_exception(error)

    def authorize(
            self, nozzle: int, command_id: str, *,
            preset_volume: Decimal | None = None,
            preset_amount: Decimal | None = None,
            reference: int | None = None,
            lift_timeout: float | None = None,
            ) -> asyncio.Future[CommandResult]:
        """Queue CD2 (this nozzle only) + the preset + CD1 AUTHORIZE

        The future gives the stored result once the pump ACKed the block;
        a command_id seen before gives its first result, not a second
        authorisation.  reference, the server's command, is named by the
        transaction_completed event of the sale it released
        (`authorization`).  lift_timeout: seconds after which the
        authorisation, still unused, is stopped (see the module), needs
        a reference."""
        known = self._known(command_id)
        if known is not None:
            return known
        if nozzle not in self.nozzles:
            raise CommandError(f"{self.device}: no nozzle {nozzle}")
        if lift_timeout is not None and (
                not lift_timeout > 0 or reference is None):
            raise CommandError(
                f"lift timeout {lift_timeout!r}: must be positive, with "
                "the command it expires")
        if preset_volume is not None and preset_amount is not None:
            raise CommandError("give a preset volume or amount, not both")
        messages: list[Message] = [CD2AllowedNozzles((nozzle,))]
        if preset_volume is not None:
            messages.append(CD3PresetVolume(preset_volume))
        if preset_amount is not None:
            messages.append(CD4PresetAmount(preset_amount))
        messages.append(CD1Command(Command.AUTHORIZE))
        encode_messages(messages, self.params)  # refuse bad presets now
        future = self._new_command(command_id)
        result = {
            'version': PAYLOAD_VERSION, 'status': 'authorized',
            'nozzle': nozzle, 'preset_volume': preset_volume,
            'preset_amount': preset_amount}
        self._queue.append(_Block(
            tuple(messages),
            on_ack=lambda: self._confirming.append(_Confirm(
                    command_id, result, self.pump_status,
                    reference=reference, nozzle=nozzle,
                    lift_timeout=lift_timeout)),
            on_fail=lambda error: self._failed(command_id, error)))
        logger.info(
            "%s: authorize nozzle %s (command %s)", self.device, nozzle,
            command_id)
        return future

    def _confirm(self, status: PumpStatus) -> None:
        "Judge the AUTHORIZEs awaiting confirmation by a DC1 status"
        waiting, self._confirming = self._confirming, []
        for confirm in waiting:
            if confirm.before in AUTHORIZE_SEEN:
                # authorised or filling when the ACK came: the pump
                # ignored it (AUTHORIZE only in RESET), whatever it says
                # now: it is the earlier authorisation's status
                self._not_executed(confirm, (
                    f"pump was already {confirm.before.name}"))
            elif status in AUTHORIZE_SEEN or (
                    status in SALE_ENDED and status is not confirm.before):
                # the sale this status starts (or ended) is this one's
                self._sale.authorization = confirm.reference
                if confirm.lift_timeout is not None and (
                        status is PumpStatus.AUTHORIZED):
                    self._sale.authorized_nozzle = confirm.nozzle
                    self._sale.lift_timeout = confirm.lift_timeout
                    self._sale.expires = (
                        self._clock() + confirm.lift_timeout)
                    self._hold_authorization()
                self._done(confirm.command_id, confirm.result)
            elif status is PumpStatus.RESET:
                # maybe reported before the AUTHORIZE was executed
                self._confirming.append(confirm)
            else:
                self._not_executed(confirm, f"pump reports {status.name}")

    def _not_executed(self, confirm: _Confirm, why: str) -> None:
        error = CommandNotExecuted(
            f"{self.device}: AUTHORIZE (command {confirm.command_id}) "
            f"acknowledged but not executed: {why}")
        logger.error("%s", error)
        self._failed(confirm.command_id, error)

    def _confirm_polled(self) -> None:
        "One more poll for the commands awaiting confirmation"
        waiting, self._confirming = self._confirming, []
        for confirm in waiting:
            confirm.polls += 1
            if confirm.polls >= CONFIRM_POLLS:
                self._not_executed(confirm, (
                    f"no AUTHORIZED status within {CONFIRM_POLLS} polls"))
            else:
                self._confirming.append(confirm)

    def _check_expiry(self) -> None:
        """After an answered poll: stop an authorisation whose lift
        timeout ran out unused (see the module)"""
        sale = self._sale
        if sale.expires is None or sale.closing:
            return
        if sale.flowed or self.pump_status is not PumpStatus.AUTHORIZED:
            if sale.flowed or self.pump_status is PumpStatus.FILLING:
                # used: it ends as a sale, whenever that is
                sale.expires = None
            return  # ending (or ended) by itself: closed as a sale
        if sale.stop_polls is not None:
            # STOP ACKed and the pump still authorised: ignored or lost
            sale.stop_polls += 1
            if sale.stop_polls < CONFIRM_POLLS:
                return
            logger.warning(
                "%s: STOP of expired authorisation %s not executed after "
                "%s polls: sent again", self.device, sale.authorization,
                sale.stop_polls)
            sale.stop_polls = None
        elif sale.stop_queued or self._clock() < sale.expires:
            return
        if self.point.state is not FPState.AUTHORISED:
            # the nozzle is out (STARTED): the driver may be about to
            # fuel; hung up without flow, it expires at the next poll
            return
        if not sale.expired:
            logger.info(
                "%s: authorisation %s of nozzle %s not used within %s s: "
                "stopped", self.device, sale.authorization,
                sale.authorized_nozzle, sale.lift_timeout)
            sale.expired = True
            self._hold_authorization()
        sale.stop_queued = True

        def on_ack() -> None:
            sale.stop_queued = False
            sale.stop_polls = 0

        def on_fail(error: Exception) -> None:
            # tried again at the next poll if still authorised
            sale.stop_queued = False
            logger.warning(
                "%s: STOP of expired authorisation %s: %s", self.device,
                sale.authorization, error)

        self._queue.insert(0, _Block(
            (CD1Command(Command.STOP),), on_ack=on_ack, on_fail=on_fail))

    def _hold_authorization(self) -> None:
        "Keep the sale's authorisation and its lift timeout in the outbox"
        sale = self._sale
        assert sale.expires is not None and sale.lift_timeout is not None
        expires_at = dt.datetime.now(dt.UTC) + dt.timedelta(
            seconds=max(sale.expires - self._clock(), 0))
        self._held_authorization = {
            'authorization': sale.authorization,
            'nozzle': sale.authorized_nozzle,
            'lift_timeout': Decimal(str(sale.lift_timeout)),
            'expires_at': expires_at,
            'expired': sale.expired}
        self.outbox.put(self.authorization_key, self._held_authorization)

    def _restore_authorization(self, status: PumpStatus) -> None:
        """At the first status after a start: take up the authorisation
        kept by an earlier run if the pump still has it, else forget it
        (record its expiry when the earlier run had stopped it: a pump
        back to idle has no sale left to record)"""
        self._restore = False
        held = self._held_authorization
        if status in IDLE and held.get('expired') and (
                self._sale.authorization is None):
            sale = _Sale(
                authorization=held.get('authorization'),
                authorized_nozzle=held.get('nozzle'),
                lift_timeout=float(held.get('lift_timeout') or 0) or None)
            self._record_expired(sale)
            return
        if status in IDLE or self._sale.authorization is not None:
            self._drop_authorization()
            return
        sale = self._sale
        sale.authorization = held.get('authorization')
        sale.authorized_nozzle = held.get('nozzle')
        sale.lift_timeout = float(held.get('lift_timeout') or 0) or None
        expires_at = held.get('expires_at')
        if isinstance(expires_at, dt.datetime) and sale.lift_timeout:
            sale.expires = self._clock() + max(
                (expires_at - dt.datetime.now(dt.UTC)).total_seconds(), 0)
        sale.expired = bool(held.get('expired'))
        logger.info(
            "%s: pump %s: authorisation %s of nozzle %s taken up from the "
            "last run (expires %s%s)", self.device, status.name,
            sale.authorization, sale.authorized_nozzle, expires_at,
            ', stopped' if sale.expired else '')

    def _record_expired(self, sale: _Sale) -> None:
        """Record the expiry of sale's authorisation, stopped unused, when
        the pump is back to idle without a sale to close: one event per
        authorize command (its key), the held authorisation cleared in the
        same transaction"""
        nozzle = sale.authorized_nozzle
        payload = {
            'version': PAYLOAD_VERSION, 'pump_address': self.address,
            'authorization': sale.authorization,
            'nozzle': nozzle,
            'station_number': self.nozzles.get(nozzle) if nozzle else None,
            'lift_timeout': (
                Decimal(str(sale.lift_timeout)) if sale.lift_timeout
                else None),
            }
        event = self.outbox.append_once(
            EventKind.AUTHORIZATION_EXPIRED, self.device,
            dt.datetime.now(dt.UTC), payload,
            key=f'{self.device}:expired:{sale.authorization}',
            result={'recorded': True}, put={self.authorization_key: {}})
        self._held_authorization = {}
        if event is None:
            logger.info(
                "%s: expiry of authorisation %s already recorded",
                self.device, sale.authorization)
        else:
            logger.info(
                "%s: authorisation %s expired unused, the pump back to idle "
                "(seq %s)", self.device, sale.authorization, event.seq)

    def _drop_authorization(self) -> None:
        if self._held_authorization:
            logger.info(
                "%s: authorisation %s no longer held by the pump: "
                "forgotten", self.device,
                self._held_authorization.get('authorization'))
            self._held_authorization = {}
            self.outbox.put(self.authorization_key, {})

    def stop(self, command_id: str) -> asyncio.Future[CommandResult]:
        "Queue CD1 STOP (an authorised or running fill ends)"
        known = self._known(command_id)
        if known is not None:
            return known
        future = self._new_command(command_id)
        result = {'version': PAYLOAD_VERSION, 'status': 'stopped'}
        self._queue.append(_Block(
            (CD1Command(Command.STOP),),
            on_ack=lambda: self._done(command_id, result),
            on_fail=lambda error: self._failed(command_id, error)))
        return future

    def change_prices(
            self, prices: Mapping[int, Decimal], command_id: str,
            price_set_id: int | str | None = None,
            ) -> asyncio.Future[CommandResult]:
        """Queue new unit prices; CD5 goes to the pump only outside a sale

        A change that arrives during a sale waits for its end: the sale
        keeps the price it was authorised at, the next one has the new."""
        known = self._known(command_id)
        if known is not None:
            return known
        for nozzle, price in prices.items():
            if nozzle not in self.nozzles:
                raise CommandError(f"{self.device}: no nozzle {nozzle}")
            if not isinstance(price, Decimal) or price <= 0:
                raise CommandError(f"price {price!r} for nozzle {nozzle}")
        future = self._new_command(command_id)
        self._pending_prices.update(prices)
        self._pending_price_set = price_set_id
        self._price_commands.append(command_id)
        logger.info(
            "%s: price change %s queued (command %s)", self.device,
            dict(prices), command_id)
        return future

    # --- price programming --------------------------------------------

    def _price_block(self) -> _Block | None:
        "CD5 with the current prices plus what waits; None if incomplete"
        prices = {**self.prices, **self._pending_prices}
        if set(prices) != set(self.nozzles):
            logger.error(
                "%s: no price for nozzles %s: cannot program the pump",
                self.device, sorted(set(self.nozzles) - set(prices)))
            return None
        message = CD5PriceUpdate(tuple(prices[n] for n in sorted(prices)))
        commands = list(self._price_commands)
        price_set = self._pending_price_set
        applied = dict(self._pending_prices)
        self._pending_prices.clear()
        self._price_commands.clear()
        self._prices_queued = True

        def on_ack() -> None:
            self._prices_queued = False
            self.prices = prices
            self.reported_prices = dict(prices)
            if commands:
                self.price_set_id = price_set
            logger.info("%s: prices %s programmed", self.device, prices)
            # a restarted driver knows them without waiting for DC3s
            self.outbox.put(self.prices_key, {
                'prices': {str(n): p for n, p in prices.items()},
                'price_set_id': self.price_set_id})
            for command_id in commands:
                self._done(command_id, {
                    'version': PAYLOAD_VERSION, 'status': 'applied',
                    'prices': {str(n): p for n, p in applied.items()},
                    'price_set_id': price_set})

        def on_fail(error: Exception) -> None:
            # back in the queue: tried again at the next chance
            self._prices_queued = False
            for nozzle, price in applied.items():
                self._pending_prices.setdefault(nozzle, price)
            self._price_commands[:0] = commands

        return _Block((message,), on_ack=on_ack, on_fail=on_fail)

    def _maybe_queue_prices(self) -> None:
        if (not self._price_commands or self._prices_queued
                or self._sale.closing
                or self.pump_status not in PRICES_ACCEPTED
                or self.pump_status in SALE_ENDED):
            # after a sale, `_finish_sale` sends them before its RESET
            return
        block = self._price_block()
        if block is not None:
            # before any queued AUTHORIZE: CD5 is refused once authorised
            self._queue.insert(0, block)

    # --- the line -----------------------------------------------------

    def _new_exchange(self) -> None:
        "A request goes out: what came before it is stale"
        if self._splitter.pending:
            logger.debug(
                "%s: %s stale bytes dropped", self.device,
                len(self._splitter.pending))
        self._splitter = FrameSplitter()
        self._deadline = (
            asyncio.get_running_loop().time() + self.response_timeout)

    async def _receive_frame(
            self, expected: Callable[[Frame], bool]) -> Frame | None:
        """The next frame of our pump that `expected` accepts, before the
        exchange's deadline; others (other addresses on a shared line, late
        answers to an earlier exchange) are dropped"""
        loop = asyncio.get_running_loop()
        while True:
            remaining = self._deadline - loop.time()
            if remaining <= 0:
                return None
            data = await self.transport.receive(remaining)
            if not data:
                return None
            for raw in self._splitter.feed(data):
                try:
                    frame = decode_frame(raw)
                except DartError as error:
                    logger.warning(
                        "%s: frame dropped: %s", self.device, error)
                    continue
                if frame.address != self.address:
                    continue  # another pump of the line
                if expected(frame):
                    # one exchange at a time: later frames are stale
                    return frame
                logger.debug(
                    "%s: stale %s %s ignored", self.device, frame.kind.name,
                    frame.seq)

    async def _send_control(self, kind: ControlType, seq: int = 0) -> None:
        await self.transport.send(
            encode_frame(self.address, make_control(kind, seq)))

    async def _send_block(self, block: _Block) -> bool:
        "Send a block until ACKed; False (and on_fail called) if never"
        seq = self._tx_seq
        raw = encode_frame(
            self.address, make_control(ControlType.DATA, seq),
            encode_messages(block.messages, self.params))

        def answer(frame: Frame) -> bool:
            return frame.seq == seq and frame.kind in (
                ControlType.ACK, ControlType.NAK)

        for attempt in range(1, MAX_SEND_ATTEMPTS + 1):
            self._new_exchange()
            await self.transport.send(raw)
            reply = await self._receive_frame(answer)
            if reply is not None and reply.kind is ControlType.ACK:
                self._tx_seq = next_seq(seq)
                if any(
                        isinstance(m, CD1Command)
                        and m.command is Command.RETURN_STATUS
                        for m in block.messages):
                    self._status_polls = 0  # a DC1 must follow
                if block.on_ack is not None:
                    block.on_ack()
                return True
            logger.warning(
                "%s: block %s %s (attempt %s/%s)", self.device, seq,
                'unanswered' if reply is None else reply.kind.name,
                attempt, MAX_SEND_ATTEMPTS)
        # the pump may have executed an unanswered block: the next one
        # takes a new sequence so that it is not taken for a repeat
        self._tx_seq = next_seq(seq)
        error = DartLinkError(
            f"{self.device}: block {seq} not acknowledged after "
            f"{MAX_SEND_ATTEMPTS} attempts")
        logger.error("%s", error)
        self._resync = True
        if block.on_fail is not None:
            block.on_fail(error)
        return False

    def _data_or_eot(self, frame: Frame) -> bool:
        return frame.kind in (ControlType.DATA, ControlType.EOT)

    async def _poll(self) -> bool:
        "POLL and handle the answer; False if the pump did not answer"
        self._new_exchange()
        await self._send_control(ControlType.POLL)
        answered = False
        while (frame := await self._receive_frame(self._data_or_eot)):
            answered = True
            if frame.kind is ControlType.EOT:
                return True
            if frame == self._last_rx:
                logger.info(
                    "%s: block %s repeated: ACKed again, not handled",
                    self.device, frame.seq)
                await self._send_control(ControlType.ACK, frame.seq)
                continue  # a late copy: this POLL's answer may follow
            try:
                messages = decode_transactions(
                    frame, Direction.PUMP_TO_MASTER, self.params)
            except DartError as error:
                logger.warning(
                    "%s: NAK block %s: %s", self.device, frame.seq, error)
                await self._send_control(ControlType.NAK, frame.seq)
                return True
            for message in messages:
                self._handle(message)
            # ACK only now: the events of this block are durable
            self._last_rx = frame
            await self._send_control(ControlType.ACK, frame.seq)
            return True
        return answered

    @property
    def answering(self) -> bool:
        "False once the pump missed NOT_ANSWERING_POLLS polls in a row"
        return self.missed_polls < NOT_ANSWERING_POLLS

    def request_status(self) -> None:
        """Ask the pump its status at the next poll (a NOT_PROGRAMMED pump
        is then programmed, once its prices are known)"""
        self._queue.append(_Block((CD1Command(Command.RETURN_STATUS),)))

    def start(self) -> None:
        "Ask the pump its status (done by the first poll_once anyway)"
        if not self._started:
            self._started = True
            self._queue.append(_Block((CD1Command(Command.RETURN_STATUS),)))

    async def poll_once(self) -> None:
        """Send what is queued, then POLL and handle the answer

        A TransportError leaves the queue as it was (the block being sent
        is sent again by the next call) and propagates."""
        self.start()
        if self.answering:
            self._maybe_queue_prices()
            while self._queue and self.answering:
                block = self._queue[0]
                # on a TransportError the block stays queued
                sent = await self._send_block(block)
                # by identity: callbacks may have queued more, even equal
                self._queue = [b for b in self._queue if b is not block]
                if not sent:
                    break  # the POLL below tells whether the pump is there
        answered = await self._poll()
        if answered:
            if not self.answering:
                logger.warning(
                    "%s: pump answers again after %s missed polls",
                    self.device, self.missed_polls)
                # it may have been reset or powered off meanwhile
                self._last_rx = None
                self._resync = True
            if self._resync:
                # what a lost block was to do is redone from the status
                self._resync = False
                self._queue.insert(
                    0, _Block((CD1Command(Command.RETURN_STATUS),)))
            self.missed_polls = 0
        else:
            self.missed_polls += 1
            if self.missed_polls == NOT_ANSWERING_POLLS:
                logger.error(
                    "%s: pump not answering (%s polls missed)",
                    self.device, self.missed_polls)
            else:
                logger.debug("%s: no answer to POLL", self.device)
        self._confirm_polled()
        if answered:
            self._check_expiry()
        if self._status_polls is not None and answered:
            self._status_polls += 1
            if self._status_polls >= STATUS_RETRY_POLLS:
                # ACKed and not executed: taken for a repeat of the last
                # block it received (same sequence), e.g. by a pump whose
                # master restarted; a new block has the next sequence
                logger.warning(
                    "%s: no status %s polls after it was asked: asked "
                    "again", self.device, self._status_polls)
                self._status_polls = None
                self.request_status()
        if self._sale.closing and answered:
            self._sale.closing_polls += 1
            if self._sale.closing_polls >= CLOSE_RETRY_POLLS:
                logger.warning(
                    "%s: no final filling information or totals yet: "
                    "asked again", self.device)
                self._close_sale()

    async def run(self) -> None:
        "Poll until cancelled; line errors are logged and polling goes on"
        interval = self.config.poll_interval
        while True:
            try:
                await self.poll_once()
            except TransportError as error:
                logger.error("%s: line error: %s", self.device, error)
            await asyncio.sleep(interval)

    # --- pump messages ------------------------------------------------

    def _event(self, kind: EventKind, payload: Mapping[str, Any]) -> None:
        self.outbox.append(kind, self.device, dt.datetime.now(dt.UTC), {
            'version': PAYLOAD_VERSION, 'pump_address': self.address,
            **payload})

    def _nozzle_payload(self, nozzle: int | None) -> dict[str, Any]:
        return {
            'nozzle': nozzle,
            'station_nozzle': self.nozzles.get(nozzle) if nozzle else None}

    def _update_point(self) -> None:
        if self.pump_status is None:
            return
        new = from_dart(self.pump_status, self.nozzle_out is not None)
        try:
            self.point.transition(new)
        except IllegalTransition:
            self.point.resync(new)  # the pump is the truth; logged above

    def _handle(self, message: Message) -> None:
        if isinstance(message, DC1Status):
            self._status(message.status)
        elif isinstance(message, DC2FilledVolumeAmount):
            self._filled(message)
        elif isinstance(message, DC3PriceNozzle):
            self._nozzle(message)
        elif isinstance(message, DC101Totals):
            if self._sale.closing:
                self._sale.totals[message.counter] = message
                self._maybe_finish_sale()
            else:
                logger.info("%s: totals %s", self.device, message)
                self._idle_total(message)
        elif isinstance(message, DC5Alarm):
            logger.warning("%s: alarm %s", self.device, message.alarm)
            self._event(EventKind.ALARM, {'code': message.alarm})
        else:
            logger.info("%s: %s", self.device, message)

    def _status(self, status: PumpStatus) -> None:
        self._status_polls = None
        old, self.pump_status = self.pump_status, status
        if old is not status:
            logger.info(
                "%s: pump %s", self.device, status.name)
        if self._sale.closing and status not in SALE_ENDED:
            # the end of sale that started the closing was stale (our
            # RESET had gone out already): nothing to record
            logger.warning(
                "%s: pump in %s while closing a sale: stale end of sale, "
                "not recorded", self.device, status.name)
            self._sale = _Sale()
        if self._restore:
            self._restore_authorization(status)
        elif status in IDLE and not self._sale.closing and (
                self._sale.expired and not self._sale.flowed):
            # our STOP ended the unused authorisation without a sale (a
            # pump that goes back to RESET rather than FILLING_COMPLETED)
            self._record_expired(self._sale)
            self._sale = _Sale()
        elif status in IDLE and not self._sale.closing and (
                self._held_authorization):
            # its sale was recorded, or the pump (reset) forgot it
            self._drop_authorization()
        if status in (PumpStatus.AUTHORIZED, PumpStatus.FILLING) and (
                self._sale.nozzle is None):
            self._sale.nozzle = self.nozzle_out
            self._sale.unit_price = self._price_of(self.nozzle_out)
        self._update_point()
        if self._confirming:
            self._confirm(status)
        if status is PumpStatus.NOT_PROGRAMMED and (
                self._sale.nozzle is not None or self._sale.closing):
            # a reset pump forgot the sale: nothing left to read back
            logger.error(
                "%s: pump reset during the sale on nozzle %s: its filling "
                "information is lost (the totalizers keep the volume)",
                self.device, self._sale.nozzle)
            self._sale = _Sale()
            self._last_running_total = None
            self._baseline_wanted = True  # the totals grew by a lost sale
        if status is PumpStatus.NOT_PROGRAMMED:
            self.reported_prices.clear()  # a reset pump has no prices
        if self._baseline_wanted and status in IDLE and not (
                self._sale.closing or self._sale.nozzle is not None):
            # no sale pending: the totals now are those after the last
            # sale (a sale made while the driver was not running is closed
            # first: the pump stays in FILLING_COMPLETED until our RESET)
            self._baseline_wanted = False
            self._idle_totals.clear()
            self._queue.append(_Block(tuple(
                CD101RequestTotals(n) for n in sorted(self.nozzles))))
        if status is PumpStatus.NOT_PROGRAMMED and not self._programming:
            block = self._price_block()
            if block is not None:
                self._programming = True
                price_acked, price_failed = block.on_ack, block.on_fail

                def on_ack() -> None:
                    # done: a later NOT_PROGRAMMED (a new reset) programs
                    # the pump again
                    self._programming = False
                    if price_acked is not None:
                        price_acked()

                def on_fail(error: Exception) -> None:
                    self._programming = False  # retried after a resync
                    if price_failed is not None:
                        price_failed(error)

                self._queue.insert(0, _Block(
                    block.messages + (CD1Command(Command.RESET),),
                    on_ack=on_ack, on_fail=on_fail))
        elif status is PumpStatus.RESET:
            self._programming = False
        elif status in SALE_ENDED and not self._sale.closing:
            self._close_sale()

    def _price_of(self, nozzle: int | None) -> Decimal | None:
        if nozzle is None:
            return None
        return self.reported_prices.get(nozzle, self.prices.get(nozzle))

    def _filled(self, message: DC2FilledVolumeAmount) -> None:
        if self._sale.closing:
            self._sale.final = message
            self._maybe_finish_sale()
            return
        if message.volume > 0 and self.pump_status in (
                PumpStatus.FILLING, PumpStatus.AUTHORIZED):
            self._sale.flowed = True  # used: never expired
        if self.pump_status not in (
                PumpStatus.FILLING, PumpStatus.AUTHORIZED):
            return
        now = self._clock()
        last = self._last_running_total
        if last is not None and now - last < self.running_total_interval:
            return
        self._last_running_total = now
        self._event(EventKind.RUNNING_TOTAL, {
            **self._nozzle_payload(self._sale.nozzle or self.nozzle_out),
            'volume': message.volume, 'amount': message.amount})

    def _nozzle(self, message: DC3PriceNozzle) -> None:
        if message.nozzle and message.nozzle not in self.nozzles:
            logger.warning(
                "%s: DC3 of nozzle %s, not configured: ignored",
                self.device, message.nozzle)
            return
        if message.nozzle and message.price:
            self.reported_prices[message.nozzle] = message.price
        sale = self._sale
        if sale.closing and sale.final is not None and message.nozzle:
            # with the final filling information: the sale's nozzle and
            # the price it was sold at, as the pump reports them
            sale.reported = (message.nozzle, message.price)
        new = message.nozzle if message.nozzle_out else None
        if new is None and message.nozzle and (
                self.nozzle_out not in (None, message.nozzle)):
            # "nozzle n is in" says nothing of another nozzle that is out
            new = self.nozzle_out
        old, self.nozzle_out = self.nozzle_out, new
        if old is not None and old != new:
            self._event(EventKind.NOZZLE_DOWN, self._nozzle_payload(old))
        if new is not None and old != new:
            self._event(EventKind.NOZZLE_UP, {
                **self._nozzle_payload(new), 'unit_price': message.price})
        self._update_point()

    # --- end of sale --------------------------------------------------

    def _close_sale(self) -> None:
        "Ask the final filling information and the totals of all nozzles"
        self._sale.closing = True
        self._sale.closing_polls = 0
        self._sale.final = None
        self._sale.reported = None
        self._sale.totals.clear()
        # the status first: if the pump is no longer in an ended sale (a
        # stale DC1 started this), the closing is dropped before the DC2
        self._queue.append(_Block(
            (CD1Command(Command.RETURN_STATUS),
                CD1Command(Command.RETURN_FILLING_INFORMATION))
            + tuple(CD101RequestTotals(n) for n in sorted(self.nozzles))))

    def _sale_nozzle(self, sale: _Sale) -> tuple[int | None, Decimal | None]:
        """The nozzle of an ended sale and its unit price: as seen lifted
        when it was authorised, else as the pump reported it with the
        filling information (DC3), else the one nozzle whose totals grew
        since the last sale recorded (a driver restarted mid-sale did not
        see the lift); the price the pump reported, else the one known"""
        reported = sale.reported
        if reported is not None and reported[0] not in self.nozzles:
            reported = None
        if sale.nozzle is not None:
            if reported is None:
                return sale.nozzle, sale.unit_price or self._price_of(
                    sale.nozzle)
            if reported[0] == sale.nozzle:
                return sale.nozzle, reported[1] or sale.unit_price
            logger.warning(
                "%s: sale seen on nozzle %s, the pump reports nozzle %s: "
                "as the pump says", self.device, sale.nozzle, reported[0])
        if reported is not None:
            logger.info(
                "%s: sale on nozzle %s at %s, as the pump reports it",
                self.device, reported[0], reported[1])
            return reported[0], reported[1] or self._price_of(reported[0])
        grown = [
            n for n, t in sorted(sale.totals.items())
            if n in self._baseline
            and t.volume_total != self._baseline[n][0]]
        if len(grown) == 1 and set(self._baseline) == set(self.nozzles):
            nozzle = grown[0]
            logger.info(
                "%s: sale on nozzle %s, the only one whose totals grew",
                self.device, nozzle)
            return nozzle, self._price_of(nozzle)
        return None, None

    def _idle_total(self, message: DC101Totals) -> None:
        "Totals asked while no sale was pending: kept once all came"
        if message.counter not in self.nozzles:
            return
        self._idle_totals[message.counter] = message
        if set(self._idle_totals) != set(self.nozzles):
            return
        self._baseline = {
            n: (t.volume_total, t.amount_total)
            for n, t in self._idle_totals.items()}
        self._idle_totals.clear()
        self.outbox.put(self.totals_key, {
            str(n): list(t) for n, t in self._baseline.items()})

    def _maybe_finish_sale(self) -> None:
        sale = self._sale
        if sale.final is None or set(sale.totals) != set(self.nozzles):
            return
        final = sale.final
        key = ':'.join([
            self.device, 'sale', *(
                f'{t.volume_total}/{t.amount_total}'
                for _, t in sorted(sale.totals.items())),
            str(final.volume), str(final.amount)])
        # stopped by its lift timeout, nothing delivered: the authorisation
        # expired, there was no sale
        expired = sale.expired and not final.volume and not sale.flowed
        nozzle, unit_price = self._sale_nozzle(sale)
        totals = sale.totals.get(nozzle) if nozzle else None
        if nozzle is None and not expired:
            logger.warning(
                "%s: sale of %s on an unknown nozzle", self.device,
                final.volume)
        payload = {
            'version': PAYLOAD_VERSION, 'pump_address': self.address,
            **self._nozzle_payload(nozzle),
            'volume': final.volume, 'amount': final.amount,
            'unit_price': unit_price,
            'totalizer_volume': totals.volume_total if totals else None,
            'totalizer_amount': totals.amount_total if totals else None,
            'price_set_id': self.price_set_id,
            'authorization': sale.authorization}
        kind, base_key = EventKind.TRANSACTION_COMPLETED, key
        if expired:
            # one event under the sale's key: never both
            kind = EventKind.AUTHORIZATION_EXPIRED
            # two expired in a row leave the same totals: the command
            # tells them apart (a driver restarted before its RESET went
            # out does not know it: see the module)
            key = f'{key}:expired:{sale.authorization}'
            nozzle = sale.authorized_nozzle
            payload = {
                'version': PAYLOAD_VERSION, 'pump_address': self.address,
                'authorization': sale.authorization,
                'nozzle': nozzle,
                'station_number': self.nozzles.get(nozzle)
                if nozzle else None,
                'lift_timeout': Decimal(str(sale.lift_timeout)),
                }
        baseline = {
            n: (t.volume_total, t.amount_total)
            for n, t in sale.totals.items()}
        stored_totals = {str(n): list(t) for n, t in baseline.items()}
        put: dict[str, Mapping[str, Any]] = {self.totals_key: stored_totals}
        if self._held_authorization:
            put[self.authorization_key] = {}  # recorded: nothing held
        if expired:
            # the same figures as a sale would not be recorded again
            put[base_key] = {'recorded': True, 'expired': sale.authorization}
        # the event, its key and the totals after it in one transaction:
        # never twice, and a restarted driver compares with these totals
        event = self.outbox.append_once(
            kind, self.device,
            dt.datetime.now(dt.UTC), payload, key=key,
            result={'recorded': True}, put=put)
        if event is not None:
            self._held_authorization = {}
        self._baseline = baseline
        if event is None:
            logger.info("%s: sale %s already recorded", self.device, key)
            self.outbox.put(self.totals_key, stored_totals)
        elif kind is EventKind.AUTHORIZATION_EXPIRED:
            logger.info(
                "%s: authorisation %s expired unused (seq %s)", self.device,
                sale.authorization, event.seq)
        else:
            logger.info(
                "%s: sale on nozzle %s: %s for %s (seq %s)", self.device,
                nozzle, final.volume, final.amount, event.seq)
        self._sale = _Sale()
        self._last_running_total = None
        messages: tuple[Message, ...] = ()
        on_ack = on_fail = None
        if self._price_commands:
            block = self._price_block()
            if block is not None:
                messages, on_ack, on_fail = (
                    block.messages, block.on_ack, block.on_fail)
        self._queue.append(_Block(
            messages + (CD1Command(Command.RESET),), on_ack, on_fail))

