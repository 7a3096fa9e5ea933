# This file is part of fuelpay.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""Simulated Wayne DART pumps, and a server hosting several on one line

`SimulatedPump` is the pump side of DART_NOTES.md as a pure state machine:
`handle(frame)` returns the frames to send back, `lift`, `hang` and `tick`
play the customer and the hydraulics.  `PumpServer` puts pumps behind one
serial-server gateway on loopback UDP and/or TCP, as a real line would be::

    python -m iot_box.simulators.dart_pump --udp 127.0.0.1:5001 --pumps 2

Line-level behaviour:

- POLL: the pending block (DATA, several transactions), or EOT if none.
  An unacknowledged block is sent again, same sequence, on the next POLL
  or on NAK; an ACK of its sequence releases it and advances the sequence.
- DATA from the master: ACK with its sequence, then execute; a repeat of
  the last block (same sequence and content: our ACK was lost) is ACKed
  again, not executed twice.  A block whose transactions do not decode is
  answered with NAK and nothing of it is executed.
- Frames with a bad CRC, or for addresses not hosted, get no answer (the
  address of a corrupted frame cannot be trusted).

Faults (`Faults`, per pump or for the whole server, deterministic from a
seed): answers sent with a corrupted CRC, frames lost in either direction,
CD1 commands acknowledged and ignored; and, called by a test or the demo,
`silence()` (no answer for a while), `power_on_reset()` and
`power_loss()` / `power_restored()`.

Assumption on filling information (the notes say nothing): CD1 RETURN
FILLING INFORMATION is answered with DC2 (volume, amount) and DC3 (the
nozzle the filling was made with, its unit price, the nozzle-out bit), as
the price computer keeps them until the next RESET: a master restarted
mid-fill learns the sale's nozzle from it.

Assumption on power loss (the notes say nothing): like real DART pumps,
the price computer keeps in non-volatile memory the prices, the totals
and the last filling (nozzle, price, volume, amount).  A fill cut by a
power loss stops; the pump comes back in FILLING_COMPLETED with what was
filled, so the master reads it and the totals as for any sale end.  The
line state (sequence, unacknowledged block) is volatile.  A pump *reset*
is harsher: back to NOT_PROGRAMMED, prices and the running sale lost,
only the totals (the electro-mechanical/NV counters) kept.

Fills may run by themselves: `flow_rate` (volume per second) and
`run_flow()` tick the pumps in real time; `auto_fill()` plays a customer
(lift, wait for the authorisation, fill, hang) and `SimulatedStation`
starts one now and then::

    python -m iot_box.simulators.dart_pump --pty --pumps 2 \
        --auto-fill-every 20 --flow-rate 0.5

Application-level refusals (AUTHORIZE outside RESET, CD5 prices while
authorized or filling, ...) are ACKed, *not* NAKed, and ignored; the pump
reports its unchanged status in DC1.  NAK means "block not received" on
the line layer and makes a master repeat the block, which would repeat the
refused command forever; an ACK plus the unchanged DC1 tells the master
that the block arrived and the command had no effect.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import random
import signal
import sys
import time
import tty
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import ROUND_DOWN, ROUND_HALF_UP, Decimal
from pathlib import Path
from types import MappingProxyType, TracebackType
from typing import Self, cast

from iot_box.protocols.dart import (
    DEFAULT_PARAMETERS,
    MAX_ADDRESS,
    MIN_ADDRESS,
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
    DC7PumpParameters,
    DC9Identity,
    DC101Totals,
    Direction,
    Frame,
    FrameError,
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

logger = logging.getLogger(__name__)

# Assumed (notes: "counter 01-09 per nozzle"): counters 1-8 are the logical
# nozzles, 9 the sum of all nozzles, as in Wayne's rev 2.11 description.
ALL_NOZZLES_COUNTER = 9
MAX_NOZZLES = ALL_NOZZLES_COUNTER - 1
# The price computer rounds the displayed amount half up, to the amount
# decimals, from the whole volume (never by summing rounded increments).
AMOUNT_ROUNDING = ROUND_HALF_UP
# DC7 max amount of a sale when none is configured: 9999.00, the example
# of the notes' pumps; a fill stops there (status MAX_REACHED).
DEFAULT_MAX_AMOUNT = Decimal('9999.00')
ZERO = Decimal(0)

# Legal status changes; anything else is a bug in this module and raises.
# SUSPENDED is not simulated (CD14/15 come later).
TRANSITIONS: Mapping[PumpStatus, frozenset[PumpStatus]] = MappingProxyType({
    PumpStatus.NOT_PROGRAMMED: frozenset({
        PumpStatus.RESET, PumpStatus.SWITCHED_OFF}),
    PumpStatus.RESET: frozenset({
        PumpStatus.RESET, PumpStatus.AUTHORIZED, PumpStatus.SWITCHED_OFF}),
    PumpStatus.AUTHORIZED: frozenset({
        PumpStatus.RESET, PumpStatus.FILLING, PumpStatus.FILLING_COMPLETED,
        PumpStatus.SWITCHED_OFF}),
    PumpStatus.FILLING: frozenset({
        PumpStatus.FILLING_COMPLETED, PumpStatus.MAX_REACHED}),
    PumpStatus.FILLING_COMPLETED: frozenset({
        PumpStatus.RESET, PumpStatus.SWITCHED_OFF}),
    PumpStatus.MAX_REACHED: frozenset({
        PumpStatus.RESET, PumpStatus.SWITCHED_OFF}),
    PumpStatus.SWITCHED_OFF: frozenset({PumpStatus.RESET}),
    PumpStatus.SUSPENDED: frozenset(),
    })
# Prices of a sale are fixed once it is authorized: a CD5 then is refused
# (the amount must stay volume x one price); it is accepted again once the
# sale is completed, and the driver sends it before the next RESET.
PRICE_LOCKED = frozenset({
    PumpStatus.AUTHORIZED, PumpStatus.FILLING, PumpStatus.SUSPENDED})
DISPENSING = frozenset({PumpStatus.AUTHORIZED, PumpStatus.FILLING})
# Messages that describe the current state: a newer one replaces an unsent
# older one, as a real pump reports its state, not its history.  DC3 is
# the state of ONE nozzle: it replaces only an older DC3 of that nozzle
# (the filling information of nozzle 2 must not hide that nozzle 1 was
# lifted meanwhile).
LATEST_ONLY = (DC1Status, DC2FilledVolumeAmount, DC3PriceNozzle)


# A customer fills a tank at 0.5-1 L/s on a car pump: the demo's default
DEFAULT_FLOW_RATE = Decimal('0.5')
# run_flow() advances the fills this often: smooth running totals at a
# fraction of the cost of the line's own traffic
FLOW_TICK = 0.2
# auto_fill() waits this long for the master's authorisation, then gives up
# (hangs the nozzle): a box that is down must not leave a nozzle out forever
AUTHORIZE_WAIT = 30.0


class IllegalTransition(RuntimeError):
    "A status change that TRANSITIONS does not allow"


@dataclass
class Faults:
    """Faults injected on a pump's line, deterministic from `seed`

    crc_error_rate: share of answers sent with a corrupted CRC;
    drop_rate: share of frames lost, each direction drawn separately;
    ignore: CD1 commands acknowledged and ignored (status unchanged)."""
    crc_error_rate: float = 0.0
    drop_rate: float = 0.0
    ignore: frozenset[Command] = frozenset()
    seed: int = 0
    corrupted: int = 0  # counters, for tests and logs
    dropped: int = 0
    rng: random.Random = field(init=False, repr=False)

    def __post_init__(self) -> None:
        for name in ('crc_error_rate', 'drop_rate'):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} outside 0-1")
        self.rng = random.Random(self.seed)

    def lose(self) -> bool:
        if self.drop_rate and self.rng.random() < self.drop_rate:
            self.dropped += 1
            return True
        return False

    def corrupt(self, frame: bytes) -> bytes:
        "The frame, or a copy with its CRC damaged (long frames only)"
        if len(frame) <= 3 or not self.crc_error_rate or (
                self.rng.random() >= self.crc_error_rate):
            return frame
        self.corrupted += 1
        # flip a bit of the low CRC byte: just before CRC-H ETX SF (a
        # stuffed CRC byte then holds DLE 0xFA: still a bad frame)
        damaged = bytearray(frame)
        damaged[-4] ^= 0x01
        if damaged[-4] == 0xFA and damaged[-5] != 0x10:
            damaged[-4] ^= 0x02  # do not make a stray stop flag
        return bytes(damaged)


class SimulatedPump:
    """One DART pump: `handle` frames from the master, `lift`/`hang`
    nozzles and `tick` the fill for tests and demos

    nozzles maps nozzle numbers 1..N (contiguous: CD5 gives the prices in
    nozzle order) to a grade name, shown in logs."""

    def __init__(
            self, address: int, nozzles: Mapping[int, str],
            params: PumpParameters = DEFAULT_PARAMETERS, *,
            max_amount: Decimal = DEFAULT_MAX_AMOUNT,
            identity: int | None = None, faults: Faults | None = None,
            flow_rate: Decimal = DEFAULT_FLOW_RATE,
            hang_ends_authorization: bool = False,
            stop_resets_authorization: bool = False) -> None:
        self.address = validate_address(address)
        if sorted(nozzles) != list(range(1, len(nozzles) + 1)) or not (
                1 <= len(nozzles) <= MAX_NOZZLES):
            raise ValueError(
                f"nozzles must be numbered 1..N, N <= {MAX_NOZZLES}: "
                f"{sorted(nozzles)}")
        self.nozzles = MappingProxyType(dict(nozzles))
        self.params = params
        self.max_amount = max_amount
        self.identity = address if identity is None else identity
        self.name = f'dart:{address:#04x}'
        self.faults = faults  # None: those of the server, if any
        self.flow_rate = flow_rate
        # unconfirmed (the notes say nothing): some pumps end an authorised
        # sale, with nothing filled, when its nozzle is hung up without
        # flow; by default the authorisation stays until STOP or a fill
        self.hang_ends_authorization = hang_ends_authorization
        # unconfirmed too: some pumps may answer STOP of an authorisation
        # never used by going back to RESET, with no sale to close
        self.stop_resets_authorization = stop_resets_authorization
        self.powered = True
        self._silent_until = 0.0  # time.monotonic(); silent before it
        self._volume_quantum = Decimal(1).scaleb(-params.volume_decimals)
        self._amount_quantum = Decimal(1).scaleb(-params.amount_decimals)

        self.status = PumpStatus.NOT_PROGRAMMED
        self.prices: dict[int, Decimal] = {}
        self.nozzle_out: int | None = None
        self.allowed: frozenset[int] | None = None  # None: all nozzles
        self.preset_volume: Decimal | None = None
        self.preset_amount: Decimal | None = None
        self.fill_nozzle: int | None = None
        self.fill_price = ZERO
        self.filled_volume = ZERO
        self.filled_amount = ZERO
        self._fill_limit: Decimal | None = None  # volume where it stops
        # per nozzle: [volume total, amount total], advanced while filling
        self.totals = {nozzle: [ZERO, ZERO] for nozzle in self.nozzles}

        self._outbox: list[Message] = []  # to send in the next DATA block
        self._tx_seq = 0
        self._in_flight: bytes | None = None  # sent, not yet ACKed
        self._last_received: Frame | None = None

    # --- faults -------------------------------------------------------

    def respond(
            self, frame: Frame, faults: Faults | None = None) -> list[bytes]:
        """`handle` as the line sees it: silent when powered off or
        silenced, frames lost or corrupted per `self.faults` (else
        `faults`, the server's)"""
        if frame.address != self.address:
            return []
        faults = self.faults or faults
        if not self.powered or time.monotonic() < self._silent_until:
            return []
        if faults is not None and faults.lose():
            logger.debug("%s: lost %s from the master", self.name, frame)
            return []
        if faults is not None and faults.ignore and (
                frame.kind is ControlType.DATA):
            frame = self._without_ignored(frame, faults.ignore)
        replies = self.handle(frame)
        if faults is None:
            return replies
        return [faults.corrupt(r) for r in replies if not faults.lose()]

    def _without_ignored(
            self, frame: Frame, ignore: frozenset[Command]) -> Frame:
        "The frame minus the CD1 commands to ignore (still ACKed)"
        kept = []
        for transaction in frame.transactions:
            if transaction.code == CD1Command.CODE and len(
                    transaction.data) == 1 and transaction.data[0] in ignore:
                logger.warning(
                    "%s: ignores %s (fault)", self.name,
                    Command(transaction.data[0]).name)
                self._report(DC1Status(self.status))
                continue
            kept.append(transaction)
        return Frame(frame.address, frame.control, tuple(kept))

    def silence(self, seconds: float) -> None:
        "Answer nothing for `seconds` (0: answer again now)"
        self._silent_until = time.monotonic() + seconds

    def _line_reset(self) -> None:
        self._outbox.clear()
        self._tx_seq = 0
        self._in_flight = None
        self._last_received = None

    def power_on_reset(self) -> None:
        """The pump restarts as at power-on: NOT_PROGRAMMED, no prices, the
        running sale forgotten; the totals are kept"""
        logger.warning("%s: reset (was %s)", self.name, self.status.name)
        self._line_reset()
        self.prices = {}
        self._new_sale()
        self.status = PumpStatus.NOT_PROGRAMMED
        self._report(DC1Status(self.status))

    def power_loss(self) -> None:
        "The power goes: no answer, the fill stops (see the module doc)"
        logger.warning("%s: power lost in %s", self.name, self.status.name)
        self.powered = False

    def power_restored(self) -> None:
        """The power comes back: a sale cut short is completed with what
        was filled (kept in non-volatile memory)"""
        self.powered = True
        self._line_reset()
        if self.status in DISPENSING:
            self.status = PumpStatus.FILLING_COMPLETED
        logger.warning(
            "%s: power back in %s, filled %s", self.name, self.status.name,
            self.filled_volume)
        self._report(DC1Status(self.status))
        if self.nozzle_out is not None or self.fill_nozzle is not None:
            self._report(self._dc3())

    # --- line layer ---------------------------------------------------

    def handle(self, frame: Frame) -> list[bytes]:
        "The frames to send back for a frame the master sent"
        if frame.address != self.address:
            return []
        kind = frame.kind
        if kind is ControlType.POLL:
            return self._poll()
        if kind is ControlType.ACK:
            self._acked(frame.seq)
            return []
        if kind is ControlType.ACKPOLL:
            self._acked(frame.seq)
            return self._poll()
        if kind is ControlType.NAK:
            return [] if self._in_flight is None else [self._in_flight]
        if kind is ControlType.DATA:
            return self._data(frame)
        logger.debug("%s: ignores %s from the master", self.name, kind.name)
        return []

    def _control(self, kind: ControlType, seq: int) -> bytes:
        return encode_frame(self.address, make_control(kind, seq))

    def _poll(self) -> list[bytes]:
        if self._in_flight is None and self._outbox:
            transactions = encode_messages(self._outbox, self.params)
            self._outbox.clear()
            self._in_flight = encode_frame(
                self.address, make_control(ControlType.DATA, self._tx_seq),
                transactions)
        if self._in_flight is not None:
            return [self._in_flight]
        return [self._control(ControlType.EOT, self._tx_seq)]

    def _acked(self, seq: int) -> None:
        if self._in_flight is not None and seq == self._tx_seq:
            self._in_flight = None
            self._tx_seq = next_seq(self._tx_seq)
        else:
            logger.debug(
                "%s: ACK %s for no block in flight (seq %s)", self.name,
                seq, self._tx_seq)

    def _data(self, frame: Frame) -> list[bytes]:
        ack = [self._control(ControlType.ACK, frame.seq)]
        if frame == self._last_received:
            logger.info(
                "%s: block %s repeated, ACKed again, not executed",
                self.name, frame.seq)
            return ack
        try:
            messages = decode_transactions(
                frame, Direction.MASTER_TO_PUMP, self.params)
        except DartError as error:
            logger.warning(
                "%s: NAK block %s: %s", self.name, frame.seq, error)
            return [self._control(ControlType.NAK, frame.seq)]
        self._last_received = frame
        for message in messages:
            self._execute(message)
        return ack

    def _report(self, message: Message) -> None:
        if isinstance(message, DC3PriceNozzle):
            self._outbox = [
                m for m in self._outbox if not (
                    isinstance(m, DC3PriceNozzle)
                    and m.nozzle == message.nozzle)]
        elif isinstance(message, LATEST_ONLY):
            self._outbox = [
                m for m in self._outbox if type(m) is not type(message)]
        self._outbox.append(message)

    @property
    def pending(self) -> tuple[Message, ...]:
        "Messages waiting for the next POLL (not those in flight)"
        return tuple(self._outbox)

    # --- application layer --------------------------------------------

    def _set_status(self, status: PumpStatus) -> None:
        if status not in TRANSITIONS[self.status]:
            logger.error(
                "%s: illegal transition %s -> %s", self.name,
                self.status.name, status.name)
            raise IllegalTransition(
                f"{self.name}: {self.status.name} -> {status.name}")
        if status is not self.status:
            logger.info(
                "%s: %s -> %s", self.name, self.status.name, status.name)
        self.status = status
        self._report(DC1Status(status))

    def _refuse(self, message: Message, reason: str) -> None:
        logger.warning(
            "%s: refuses %s in %s: %s", self.name, message,
            self.status.name, reason)
        self._report(DC1Status(self.status))

    def _execute(self, message: Message) -> None:
        if isinstance(message, CD1Command):
            self._command(message)
        elif isinstance(message, CD2AllowedNozzles):
            if self.status is not PumpStatus.RESET:
                self._refuse(message, "allowed nozzles only in RESET")
            else:
                self.allowed = frozenset(message.nozzles)
        elif isinstance(message, CD3PresetVolume):
            if self.status is not PumpStatus.RESET:
                self._refuse(message, "presets only in RESET")
            else:
                self.preset_volume = message.volume
        elif isinstance(message, CD4PresetAmount):
            if self.status is not PumpStatus.RESET:
                self._refuse(message, "presets only in RESET")
            else:
                self.preset_amount = message.amount
        elif isinstance(message, CD5PriceUpdate):
            self._price_update(message)
        elif isinstance(message, CD101RequestTotals):
            self._totals(message)
        else:
            logger.warning("%s: ignores %s", self.name, message)

    def _command(self, message: CD1Command) -> None:
        command, status = message.command, self.status
        if command is Command.RETURN_STATUS:
            self._report(DC1Status(status))
        elif command is Command.RETURN_PUMP_PARAMETERS:
            self._report(DC7PumpParameters(self.params, self.max_amount))
        elif command is Command.RETURN_IDENTITY:
            self._report(DC9Identity(self.identity))
        elif command is Command.RETURN_FILLING_INFORMATION:
            # the filling: volume and amount (DC2), and the nozzle it was
            # made with and its unit price (DC3), as the price computer
            # keeps them until the next RESET
            self._report(DC2FilledVolumeAmount(
                self.filled_volume, self.filled_amount))
            if self.fill_nozzle is not None:
                self._report(DC3PriceNozzle(
                    self.fill_price, self.fill_nozzle,
                    self.nozzle_out == self.fill_nozzle))
        elif command is Command.RESET:
            if not self.prices:
                self._refuse(message, "no prices yet (CD5)")
            elif status is PumpStatus.FILLING:
                self._refuse(message, "filling: STOP first")
            else:
                self._new_sale()
                self._set_status(PumpStatus.RESET)
        elif command is Command.AUTHORIZE:
            if status is not PumpStatus.RESET:
                self._refuse(message, "AUTHORIZE only in RESET")
            else:
                self._set_status(PumpStatus.AUTHORIZED)
        elif command is Command.STOP:
            # an authorized sale that never started ends too, with 0
            if status not in DISPENSING:
                self._refuse(message, "nothing to stop")
            elif status is PumpStatus.AUTHORIZED and (
                    self.stop_resets_authorization):
                self._new_sale()
                self._set_status(PumpStatus.RESET)
            else:
                self._set_status(PumpStatus.FILLING_COMPLETED)
        elif command is Command.SWITCH_OFF:
            if status is PumpStatus.FILLING:
                self._refuse(message, "filling: STOP first")
            else:
                self._set_status(PumpStatus.SWITCHED_OFF)

    def _price_update(self, message: CD5PriceUpdate) -> None:
        if self.status in PRICE_LOCKED:
            self._refuse(message, "prices are locked during a sale")
        elif len(message.prices) != len(self.nozzles):
            self._refuse(message, (
                f"{len(message.prices)} prices for "
                f"{len(self.nozzles)} nozzles"))
        else:
            self.prices = dict(enumerate(message.prices, 1))
            logger.info("%s: prices %s", self.name, self.prices)
            if self.nozzle_out is not None:
                self._report(self._dc3())

    def _totals(self, message: CD101RequestTotals) -> None:
        counter = message.counter
        if counter == ALL_NOZZLES_COUNTER:
            volume = sum((t[0] for t in self.totals.values()), ZERO)
            amount = sum((t[1] for t in self.totals.values()), ZERO)
        elif counter in self.totals:
            volume, amount = self.totals[counter]
        else:
            self._refuse(message, f"no nozzle {counter}")
            return
        self._report(DC101Totals(counter, volume, amount))

    def _new_sale(self) -> None:
        self.allowed = None
        self.preset_volume = self.preset_amount = None
        self.fill_nozzle = None
        self.fill_price = ZERO
        self.filled_volume = self.filled_amount = ZERO
        self._fill_limit = None

    def _dc3(self) -> DC3PriceNozzle:
        nozzle = self.nozzle_out or self.fill_nozzle or 0
        return DC3PriceNozzle(
            self.prices.get(nozzle, ZERO), nozzle,
            self.nozzle_out is not None)

    # --- the forecourt ------------------------------------------------

    def lift(self, nozzle: int) -> None:
        "The customer takes `nozzle` out of its holster"
        if nozzle not in self.nozzles:
            raise ValueError(f"{self.name}: no nozzle {nozzle}")
        if self.nozzle_out is not None:
            raise ValueError(
                f"{self.name}: nozzle {self.nozzle_out} is already out")
        self.nozzle_out = nozzle
        logger.info(
            "%s: nozzle %s (%s) out", self.name, nozzle, self.nozzles[nozzle])
        self._report(self._dc3())

    def hang(self) -> None:
        "The customer puts the nozzle back: a running fill completes"
        if self.nozzle_out is None:
            raise ValueError(f"{self.name}: no nozzle is out")
        nozzle, self.nozzle_out = self.nozzle_out, None
        logger.info("%s: nozzle %s back", self.name, nozzle)
        self._report(DC3PriceNozzle(
            self.prices.get(nozzle, ZERO), nozzle, False))
        if self.status is PumpStatus.FILLING or (
                self.status is PumpStatus.AUTHORIZED
                and self.hang_ends_authorization):
            self._set_status(PumpStatus.FILLING_COMPLETED)

    def amount_of(self, volume: Decimal, price: Decimal) -> Decimal:
        "What the price computer shows for `volume` at `price`"
        return (volume * price).quantize(
            self._amount_quantum, rounding=AMOUNT_ROUNDING)

    def _volume_for_amount(self, amount: Decimal, price: Decimal) -> Decimal:
        "The largest volume (in volume steps) whose amount <= `amount`"
        step = self._volume_quantum
        volume = (amount / price).quantize(step, rounding=ROUND_DOWN)
        while self.amount_of(volume + step, price) <= amount:
            volume += step  # half-up rounding lets a step or two more
        return volume

    def _limit(self, price: Decimal) -> Decimal | None:
        limits = []
        if self.preset_volume is not None:
            limits.append(self.preset_volume)
        if price:
            for amount in (self.preset_amount, self.max_amount):
                if amount is not None:
                    limits.append(self._volume_for_amount(amount, price))
        return min(limits, default=None)

    def tick(self, volume: Decimal) -> Decimal:
        """Let `volume` flow if the pump can: authorized or filling, with
        an allowed nozzle out.  Returns the volume that flowed (less at a
        preset or the max amount, 0 when the valve is closed)."""
        if not isinstance(volume, Decimal) or volume < 0 or (
                volume != volume.quantize(self._volume_quantum)):
            raise ValueError(
                f"{self.name}: volume {volume!r} is not a non-negative "
                f"Decimal with {self.params.volume_decimals} decimals")
        nozzle = self.nozzle_out
        if not self.powered or self.status not in DISPENSING or (
                nozzle is None) or (
                self.allowed is not None and nozzle not in self.allowed):
            return ZERO
        if self.status is PumpStatus.AUTHORIZED:
            self.fill_nozzle = nozzle
            self.fill_price = self.prices[nozzle]
            self._fill_limit = self._limit(self.fill_price)
            self._set_status(PumpStatus.FILLING)
        limit = self._fill_limit
        if limit is not None:
            volume = min(volume, limit - self.filled_volume)
        new_volume = self.filled_volume + volume
        new_amount = self.amount_of(new_volume, self.fill_price)
        total = self.totals[nozzle]
        total[0] += volume
        total[1] += new_amount - self.filled_amount
        self.filled_volume, self.filled_amount = new_volume, new_amount
        self._report(DC2FilledVolumeAmount(new_volume, new_amount))
        if limit is not None and new_volume >= limit:
            self._set_status(PumpStatus.MAX_REACHED)
        return volume


# --- the line: several pumps behind one gateway ----------------------------

class PumpServer:
    """Pumps on one line behind a serial-server gateway on loopback

    Bytes from a peer are cut into frames (one splitter per UDP peer or
    TCP connection); each frame goes to the pump at its address, whose
    replies go back to that peer.  Frames that do not decode, or for
    addresses not hosted, are dropped without an answer."""

    def __init__(
            self, pumps: Iterable[SimulatedPump],
            faults: Faults | None = None) -> None:
        self.faults = faults  # for the pumps without their own
        self.pumps: dict[int, SimulatedPump] = {}
        for pump in pumps:
            if pump.address in self.pumps:
                raise ValueError(f"two pumps at {pump.address:#04x}")
            self.pumps[pump.address] = pump
        self.dropped_frames = 0
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._pty: tuple[int, int] | None = None  # master, slave fds

    def feed(self, splitter: FrameSplitter, data: bytes, peer: str
            ) -> list[bytes]:
        "The replies to the frames completed by `data`"
        replies = []
        for raw in splitter.feed(data):
            try:
                frame = decode_frame(raw)
            except FrameError as error:
                self.dropped_frames += 1
                logger.warning("line %s: frame dropped: %s", peer, error)
                continue
            pump = self.pumps.get(frame.address)
            if pump is not None:
                replies += pump.respond(frame, self.faults)
        return replies

    async def start_udp(
            self, host: str = '127.0.0.1', port: int = 0) -> tuple[str, int]:
        "Serve the line over UDP; returns the bound address (port 0: any)"
        if self._udp is not None:
            raise RuntimeError("UDP already started")
        loop = asyncio.get_running_loop()
        self._udp, _ = await loop.create_datagram_endpoint(
            lambda: _GatewayProtocol(self), local_addr=(host, port))
        address = self._udp.get_extra_info('sockname')[:2]
        logger.info("DART line on udp:%s:%s", *address)
        return address

    async def start_tcp(
            self, host: str = '127.0.0.1', port: int = 0) -> tuple[str, int]:
        "Serve the line over TCP; returns the bound address (port 0: any)"
        if self._tcp is not None:
            raise RuntimeError("TCP already started")
        self._tcp = await asyncio.start_server(self._serve_tcp, host, port)
        address = self._tcp.sockets[0].getsockname()[:2]
        logger.info("DART line on tcp:%s:%s", *address)
        return address

    async def start_pty(self) -> str:
        """Serve the line on a new pty; returns the path of its device
        end, for a SerialTransport (a real RS-485 adapter's place)"""
        if self._pty is not None:
            raise RuntimeError("pty already started")
        master, slave = os.openpty()
        try:
            tty.setraw(slave)  # 8-bit clean: no echo, no CR/LF mapping
            os.set_blocking(master, False)
            path = os.ttyname(slave)
            splitter = FrameSplitter()
            asyncio.get_running_loop().add_reader(
                master, self._read_pty, master, splitter, path)
        except BaseException:
            os.close(master)
            os.close(slave)
            raise
        self._pty = (master, slave)
        logger.info("DART line on %s", path)
        return path

    def _read_pty(
            self, master: int, splitter: FrameSplitter, path: str) -> None:
        try:
            data = os.read(master, 4096)
        except BlockingIOError:
            return
        except OSError as error:  # EIO: nobody holds the device end
            logger.debug("line %s: %s", path, error)
            return
        for reply in self.feed(splitter, data, path):
            os.write(master, reply)

    def drop_connections(self) -> int:
        "Close the TCP connections (a gateway restart); how many"
        writers = list(self._writers)
        for writer in writers:
            writer.close()
        return len(writers)

    async def _serve_tcp(
            self, reader: asyncio.StreamReader,
            writer: asyncio.StreamWriter) -> None:
        peer = '%s:%s' % writer.get_extra_info('peername')[:2]
        splitter = FrameSplitter()
        self._writers.add(writer)
        logger.info("line tcp %s: connected", peer)
        try:
            while data := await reader.read(4096):
                replies = self.feed(splitter, data, peer)
                if replies:
                    writer.write(b''.join(replies))
                    await writer.drain()
        except ConnectionError as error:
            logger.info("line tcp %s: %s", peer, error)
        finally:
            self._writers.discard(writer)
            writer.close()
            logger.info("line tcp %s: closed", peer)

    async def close(self) -> None:
        pty, self._pty = self._pty, None
        if pty is not None:
            asyncio.get_running_loop().remove_reader(pty[0])
            for fd in pty:
                os.close(fd)
        udp, self._udp = self._udp, None
        if udp is not None:
            udp.close()
        tcp, self._tcp = self._tcp, None
        if tcp is not None:
            tcp.close()
            for writer in list(self._writers):
                writer.close()
            await tcp.wait_closed()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
            self, exc_type: type[BaseException] | None,
            exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.close()


class _GatewayProtocol(asyncio.DatagramProtocol):
    def __init__(self, server: PumpServer) -> None:
        self.server = server
        # one per peer: a frame may span datagrams; the peers of a line are
        # its master (and a test or two), so this stays small
        self.splitters: dict[object, FrameSplitter] = {}
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # not a DatagramTransport subclass on Python 3.11, yet one
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        splitter = self.splitters.setdefault(addr, FrameSplitter())
        assert self.transport is not None
        for reply in self.server.feed(splitter, data, '%s:%s' % addr[:2]):
            self.transport.sendto(reply, addr)

    def error_received(self, exc: Exception) -> None:
        logger.warning("line udp: %s", exc)


# --- fills that run by themselves ------------------------------------------

def flow_step(pump: SimulatedPump, seconds: float) -> Decimal:
    "The volume `pump` lets flow in `seconds`, in whole volume steps"
    return (pump.flow_rate * Decimal(repr(seconds))).quantize(
        pump._volume_quantum, rounding=ROUND_DOWN)


async def run_flow(
        pumps: Iterable[SimulatedPump], interval: float = FLOW_TICK) -> None:
    """Tick every pump in real time at its flow_rate until cancelled

    A pump that cannot flow (not authorised, nozzle in, no power) ticks
    nothing; the remainder of a step smaller than the volume resolution
    is carried over, so a slow flow still advances."""
    pumps = list(pumps)
    loop = asyncio.get_running_loop()
    last = loop.time()
    carried = {pump.address: 0.0 for pump in pumps}
    while True:
        await asyncio.sleep(interval)
        now = loop.time()
        elapsed, last = now - last, now
        for pump in pumps:
            seconds = carried[pump.address] + elapsed
            volume = flow_step(pump, seconds)
            if volume and pump.flow_rate:
                carried[pump.address] = seconds - float(
                    volume / pump.flow_rate)
                pump.tick(volume)
            else:
                carried[pump.address] = seconds


async def auto_fill(
        pump: SimulatedPump, nozzle: int, volume: Decimal,
        flow_rate: Decimal | None = None, *,
        authorize_wait: float = AUTHORIZE_WAIT,
        interval: float = FLOW_TICK) -> Decimal:
    """A customer: lift `nozzle`, wait for the master's authorisation,
    fill up to `volume` at `flow_rate` (the pump's by default) in real
    time, hang up.  Returns the volume filled (less at a preset or the
    max amount; 0 if never authorised within `authorize_wait` seconds)."""
    rate = pump.flow_rate if flow_rate is None else flow_rate
    if rate <= 0:
        raise ValueError(f"{pump.name}: flow rate {rate} <= 0")
    loop = asyncio.get_running_loop()
    pump.lift(nozzle)
    try:
        deadline = loop.time() + authorize_wait
        while pump.status is not PumpStatus.AUTHORIZED:
            if loop.time() >= deadline:
                logger.info(
                    "%s: not authorised within %s s: nozzle hung",
                    pump.name, authorize_wait)
                return ZERO
            await asyncio.sleep(interval)
        filled = ZERO
        last = loop.time()
        while filled < volume and pump.status in DISPENSING:
            await asyncio.sleep(interval)
            now = loop.time()
            step = (rate * Decimal(repr(now - last))).quantize(
                pump._volume_quantum, rounding=ROUND_DOWN)
            if not step:
                continue  # less than one volume step yet: keep `last`
            last = now
            flowed = pump.tick(min(step, volume - filled))
            filled += flowed
            if not flowed and pump.powered:
                break  # the pump stopped it (STOP, preset reached)
        return filled
    finally:
        if pump.nozzle_out == nozzle:
            pump.hang()


class SimulatedStation:
    """Customers now and then: every `every` seconds (on average, seeded)
    a free pump gets an `auto_fill` of a random nozzle and volume"""

    def __init__(
            self, pumps: Sequence[SimulatedPump], every: float, *,
            flow_rate: Decimal | None = None,
            volumes: tuple[Decimal, Decimal] = (Decimal(5), Decimal(40)),
            seed: int = 0) -> None:
        if every <= 0:
            raise ValueError(f"every {every} <= 0")
        self.pumps = list(pumps)
        self.every = every
        self.flow_rate = flow_rate
        self.volumes = volumes
        self.rng = random.Random(seed)
        # the fills done: pump name, nozzle, volume
        self.fills: list[tuple[str, int, Decimal]] = []
        self._tasks: set[asyncio.Task[None]] = set()

    def _volume(self, pump: SimulatedPump) -> Decimal:
        low, high = self.volumes
        return Decimal(repr(self.rng.uniform(float(low), float(high)))
            ).quantize(pump._volume_quantum, rounding=ROUND_DOWN)

    async def _customer(self, pump: SimulatedPump) -> None:
        nozzle = self.rng.choice(sorted(pump.nozzles))
        filled = await auto_fill(
            pump, nozzle, self._volume(pump), self.flow_rate)
        self.fills.append((pump.name, nozzle, filled))

    async def run(self) -> None:
        "Send customers until cancelled (their fills are cancelled too)"
        try:
            while True:
                await asyncio.sleep(self.rng.expovariate(1 / self.every))
                busy = {task.get_name() for task in self._tasks}
                free = [
                    p for p in self.pumps if p.name not in busy
                    and p.nozzle_out is None]
                if not free:
                    continue
                pump = self.rng.choice(free)
                task = asyncio.create_task(
                    self._customer(pump), name=pump.name)
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
        finally:
            for task in list(self._tasks):
                task.cancel()
            if self._tasks:
                await asyncio.wait(list(self._tasks))


# --- command line ----------------------------------------------------------

def demo_pumps(count: int, nozzles: int = 2) -> list[SimulatedPump]:
    "`count` pumps at 0x50, 0x51, ... with `nozzles` nozzles each"
    if not 1 <= count <= MAX_ADDRESS - MIN_ADDRESS + 1:
        raise ValueError(f"{count} pumps on one line")
    grades = {n: f'grade {n}' for n in range(1, nozzles + 1)}
    return [SimulatedPump(MIN_ADDRESS + i, grades) for i in range(count)]


def _host_port(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(':')
    if not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"HOST:PORT expected, not {text!r}")
    return host, int(port)


# How often --state writes the totalizers: a killed simulator forgets at
# most the fills of the last seconds, like a pump's slow EEPROM write
STATE_SAVE_INTERVAL = 2.0


def load_totals(pumps: Sequence[SimulatedPump], path: Path) -> None:
    """Set the pumps' totalizers from a state file written by save_totals
    (a missing file leaves them at zero): a real pump keeps them in
    non-volatile memory, so a restarted demo station continues its
    totalizers instead of starting again from zero"""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return
    for pump in pumps:
        for nozzle, (volume, amount) in data.get(pump.name, {}).items():
            if int(nozzle) in pump.totals:
                pump.totals[int(nozzle)] = [Decimal(volume), Decimal(amount)]


def save_totals(pumps: Sequence[SimulatedPump], path: Path) -> None:
    "Write the pumps' totalizers to path atomically, as decimal strings"
    data = {
        pump.name: {
            str(nozzle): [str(volume), str(amount)]
            for nozzle, (volume, amount) in pump.totals.items()}
        for pump in pumps}
    temporary = path.with_name(path.name + '.tmp')
    temporary.write_text(json.dumps(data, indent=1))
    os.replace(temporary, path)


async def _keep_totals(
        pumps: Sequence[SimulatedPump], path: Path) -> None:
    try:
        while True:
            await asyncio.sleep(STATE_SAVE_INTERVAL)
            save_totals(pumps, path)
    finally:
        save_totals(pumps, path)


async def serve(
        pumps: Sequence[SimulatedPump], udp: tuple[str, int] | None,
        tcp: tuple[str, int] | None, *, pty: bool = False,
        faults: Faults | None = None,
        auto_fill_every: float | None = None, seed: int = 0,
        state: Path | None = None) -> None:
    "Serve until cancelled (Ctrl-C)"
    if state is not None:
        load_totals(pumps, state)
        keeper = asyncio.create_task(_keep_totals(pumps, state))
    async with PumpServer(pumps, faults) as server:
        if udp is not None:
            print('DART line on udp:%s:%s' % await server.start_udp(*udp),
                flush=True)
        if tcp is not None:
            print('DART line on tcp:%s:%s' % await server.start_tcp(*tcp),
                flush=True)
        if pty:
            print(f'DART line on pty:{await server.start_pty()}', flush=True)
        try:
            if auto_fill_every is None:
                await asyncio.Event().wait()
            else:
                station = SimulatedStation(pumps, auto_fill_every, seed=seed)
                await station.run()
        finally:
            if state is not None:
                keeper.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await keeper


def _rate(text: str) -> float:
    value = float(text)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"{text}: a share from 0 to 1")
    return value


def _positive(text: str) -> Decimal:
    value = Decimal(text)
    if not value.is_finite() or value <= 0:
        raise argparse.ArgumentTypeError(f"{text}: not a positive number")
    return value


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog='python -m iot_box.simulators.dart_pump',
        description="Simulated Wayne DART pumps at 0x50, 0x51, ... on one "
        "line, behind a UDP and/or TCP gateway or on a pty")
    parser.add_argument('--udp', type=_host_port, metavar='HOST:PORT')
    parser.add_argument('--tcp', type=_host_port, metavar='HOST:PORT')
    parser.add_argument(
        '--pty', action='store_true',
        help="serve on a new pty and print the path of its device end")
    parser.add_argument('--pumps', type=int, default=2)
    parser.add_argument('--nozzles', type=int, default=2)
    parser.add_argument(
        '--auto-fill-every', type=float, metavar='SECONDS',
        help="a customer lifts a nozzle about this often (mean)")
    parser.add_argument(
        '--flow-rate', type=_positive, default=DEFAULT_FLOW_RATE,
        metavar='L_PER_S', help="volume per second of a fill")
    parser.add_argument('--crc-error-rate', type=_rate, default=0.0)
    parser.add_argument('--drop-rate', type=_rate, default=0.0)
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument(
        '--state', type=Path, metavar='FILE',
        help="keep the totalizers in FILE across restarts (JSON)")
    parser.add_argument('-v', '--verbose', action='store_true')
    args = parser.parse_args(argv)
    if args.udp is None and args.tcp is None and not args.pty:
        parser.error("give --udp, --tcp and/or --pty")
    if args.auto_fill_every is not None and args.auto_fill_every <= 0:
        parser.error("--auto-fill-every must be positive")
    try:
        pumps = demo_pumps(args.pumps, args.nozzles)
    except ValueError as error:
        parser.error(str(error))
    for pump in pumps:
        pump.flow_rate = args.flow_rate
    faults = None
    if args.crc_error_rate or args.drop_rate:
        faults = Faults(
            crc_error_rate=args.crc_error_rate, drop_rate=args.drop_rate,
            seed=args.seed)
    # SIGTERM (./fuel up stopping its children) ends like Ctrl-C: the
    # tasks are cancelled, so --state is written one last time
    signal.signal(signal.SIGTERM, _interrupt)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format='%(asctime)s %(levelname)s %(name)s: %(message)s')
    try:
        asyncio.run(serve(
            pumps, args.udp, args.tcp, pty=args.pty, faults=faults,
            auto_fill_every=args.auto_fill_every, seed=args.seed,
            state=args.state))
    except KeyboardInterrupt:
        logger.info("stopped")
    return 0


if __name__ == '__main__':
    sys.exit(main())
