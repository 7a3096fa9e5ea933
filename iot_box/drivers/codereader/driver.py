# This file is part of fuelpay.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""A payment post's code reader: serial lines -> ``payment_code`` events

Payment-code scanners (付款码扫码枪) and face-pay devices (WeChat 青蛙
Pro, Alipay 蜻蜓) at a payment post are connected in "scanner mode": they
send the customer's payment code, or the pay code of a face recognised by
the device, over a serial line (USB CDC or RS-232, 8N1) as ASCII digits
ended by CR, LF or CR LF.

`CodeReaderDriver.run()` opens the port with pyserial (blocking reads in
the default executor, at most `READ_SLICE` each, so that a stop is
noticed at once), cuts lines (`LineSplitter`), keeps the lines that are
payment codes (digits only, `MIN_CODE_DIGITS` to `MAX_CODE_DIGITS`: the
lengths of WeChat, Alipay and UnionPay codes; anything else is dropped
with a warning that does not show it), ignores the same code read again
within `debounce` seconds (a phone held in front of a scanner is read
several times a second) and appends one ``payment_code`` event per code
to the outbox (payload version 1, see `payload`).  The server charges the
code for the unpaid fill of the post's nozzles
(``addons/fuel_device/payment_post.py``), or without one, pre-pays a fill
up for the post's one ``calling`` nozzle (lifted, waiting for an
authorisation: given by the app, see `CodeReaderDriver`), and answers the
outcome.

A port that cannot be opened, or that fails (USB cable pulled: pyserial
raises at the next read), is closed and opened again every
`reopen_delay` seconds; the driver is 'failing' meanwhile (the heartbeat
reports the post ``error``).

The code is a one-time credential of the customer: it is logged masked
(`mask_code`, its first 4 digits) only, the debounce keeps a hash of it,
and the outbox masks it once the server confirmed the event
(`Outbox.mark_sent`).
"""
from __future__ import annotations

import asyncio
import datetime as dt
import enum
import functools
import hashlib
import logging
import re
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol

import serial  # pyserial

from iot_box.config import PaymentPostConfig
from iot_box.drivers.state import DeviceStateMachine, IllegalTransition
from iot_box.events import EVENT_VERSION, Event, EventKind, mask_code

__all__ = [
    'CodeReaderDriver',
    'IllegalTransition',
    'LineSplitter',
    'ReaderState',
    'is_code',
    'payload',
]

logger = logging.getLogger(__name__)

# WeChat codes have 18 digits, UnionPay QR codes 19, Alipay codes 16 to
# 24 (PAYMENT_NOTES.md): a line of another length or with other characters
# is noise, a barcode of a product or a misconfigured reader
MIN_CODE_DIGITS = 16
MAX_CODE_DIGITS = 24
# Bytes without a line end after which the pending bytes are dropped: a
# code line is at most 24 digits and CR LF, so this is a reader sending
# something else (or a wrong baud rate); it bounds the buffer
MAX_LINE = 64
# A phone held in front of a scanner is read again several times a second,
# and a face device may send its pay code twice; the same code within
# this many seconds of its last read is the same presentation, not a new
# payment (a new attempt after a refusal comes later than that)
DEBOUNCE = 3.0
# A port that is missing or failed is opened again after this long: a
# re-plugged USB reader is back within seconds, and the log is not flooded
REOPEN_DELAY = 2.0
# One blocking read waits at most this long for its first byte: bounds how
# late a stop is noticed (close() also cancels the read in progress)
READ_SLICE = 0.1
LINE_END = re.compile(rb'\r|\n')


class ReaderState(enum.StrEnum):
    STARTING = 'starting'  # the port not opened yet
    READING = 'reading'  # the port is open
    FAILING = 'failing'  # cannot open or read the port; opened again
    STOPPED = 'stopped'


_TRANSITIONS = {
    ReaderState.STARTING: {
        ReaderState.READING, ReaderState.FAILING, ReaderState.STOPPED},
    ReaderState.READING: {ReaderState.FAILING, ReaderState.STOPPED},
    ReaderState.FAILING: {ReaderState.READING, ReaderState.STOPPED},
    ReaderState.STOPPED: set(),
    }


class EventSink(Protocol):
    def append(
            self, kind: EventKind | str, device: str,
            device_time: dt.datetime, payload: Mapping[str, Any]) -> Event: ...


class LineSplitter:
    """Cuts the bytes of a reader into lines ended by CR, LF or CR LF

    Empty lines are skipped (the LF of a CR LF, a reader sending blank
    lines).  A line growing beyond `MAX_LINE` bytes is dropped whole, up
    to its line end (`overflows` counts them)."""

    def __init__(self, max_line: int = MAX_LINE) -> None:
        self.max_line = max_line
        self.overflows = 0
        self._pending = b''
        self._skipping = False  # in the rest of an overlong line

    def feed(self, data: bytes) -> list[bytes]:
        "The complete lines that data ends (several, one or none)"
        *complete, self._pending = LINE_END.split(self._pending + data)
        lines = []
        for line in complete:
            if self._skipping:
                self._skipping = False  # the end of the overlong line
            elif line:
                lines.append(line)
        if len(self._pending) > self.max_line:
            self._pending = b''
            if not self._skipping:
                self.overflows += 1
            self._skipping = True
        return lines


def is_code(line: bytes) -> bool:
    "Whether a line is a payment code: ASCII digits of a code's length"
    return (line.isascii() and line.isdigit()
        and MIN_CODE_DIGITS <= len(line) <= MAX_CODE_DIGITS)


def payload(
        code: str, config: PaymentPostConfig,
        calling: Iterable[int] | None = None) -> dict[str, Any]:
    """The ``payment_code`` payload (version 1) of a code read at a post

    ``code``: the digits read; ``source``: ``face`` or ``scanner``;
    ``post``: the post's name; ``nozzles``: the station numbers of the
    nozzles it serves; ``calling`` (optional, only when the box knows the
    dispensers' states): those of them that were lifted and waiting for an
    authorisation when the code was read, ascending (empty: none).  The
    field is an addition within version 1: a server that does not know it
    ignores it, and a server reads its absence as "none calling"."""
    result: dict[str, Any] = {
        'version': EVENT_VERSION,
        'code': code,
        'source': str(config.source),
        'post': config.name,
        'nozzles': list(config.nozzles),
        }
    if calling is not None:
        result['calling'] = sorted(
            n for n in set(calling) if n in config.nozzles)
    return result


def _close_opened(opening: asyncio.Future[serial.Serial]) -> None:
    if not opening.cancelled() and opening.exception() is None:
        opening.result().close()


class CodeReaderDriver(DeviceStateMachine):
    """The code reader of one payment post; `run()` until cancelled

    `calling`, if given, returns the station numbers of the nozzles that
    are lifted and wait for an authorisation now; it is called in the
    event loop when a code is read, and its answer (limited to the post's
    nozzles) goes in the event's ``calling``."""
    transitions = _TRANSITIONS
    connected_state = ReaderState.READING
    failing_state = ReaderState.FAILING
    log = logger

    def __init__(
            self, config: PaymentPostConfig, outbox: EventSink, *,
            debounce: float = DEBOUNCE, reopen_delay: float = REOPEN_DELAY,
            clock: Callable[[], float] = time.monotonic,
            calling: Callable[[], Iterable[int]] | None = None) -> None:
        self.config = config
        self.calling = calling
        self.outbox = outbox
        self.debounce = debounce
        self.reopen_delay = reopen_delay
        self.clock = clock
        self.state = ReaderState.STARTING
        self.splitter = LineSplitter()
        self.codes = 0  # codes sent to the outbox
        self.dropped = 0  # lines that were not payment codes
        self.repeats = 0  # codes ignored as read again (debounce)
        self.last_code: dt.datetime | None = None
        self.last_error: str | None = None
        self._port: serial.Serial | None = None
        self._reading: asyncio.Future[bytes] | None = None
        # (sha256 of the last code, clock of its last read): the code
        # itself is not kept
        self._last: tuple[bytes, float] | None = None

    @property
    def device(self) -> str:
        return self.config.name


    # --- lines ----------------------------------------------------------

    def feed(self, data: bytes) -> list[Event]:
        "The events of the codes that data completes"
        events = []
        overflows = self.splitter.overflows
        lines = self.splitter.feed(data)
        if self.splitter.overflows != overflows:
            self.dropped += 1
            logger.warning(
                "%s: dropped more than %s bytes without a line end (is the "
                "reader in scanner mode, at %s baud?)", self.device,
                self.splitter.max_line, self.config.baudrate)
        for line in lines:
            event = self.handle(line)
            if event is not None:
                events.append(event)
        return events

    def handle(self, line: bytes) -> Event | None:
        "One line of the reader: its event, or None (dropped, repeated)"
        line = line.strip()
        if not is_code(line):
            self.dropped += 1
            # never the line itself: it may be a code of another length
            logger.warning(
                "%s: dropped a line of %s byte(s) that is not a payment "
                "code (%s to %s digits)", self.device, len(line),
                MIN_CODE_DIGITS, MAX_CODE_DIGITS)
            return None
        code = line.decode('ascii')
        now = self.clock()
        digest = hashlib.sha256(line).digest()
        if self._last is not None and self._last[0] == digest and (
                now - self._last[1] < self.debounce):
            # still in front of the reader: the window starts again
            self._last = (digest, now)
            self.repeats += 1
            logger.info(
                "%s: code %s read again within %.0f s: ignored",
                self.device, mask_code(code), self.debounce)
            return None
        self._last = (digest, now)
        calling = self.calling() if self.calling is not None else None
        event = self.outbox.append(
            EventKind.PAYMENT_CODE, self.device, dt.datetime.now(dt.UTC),
            payload(code, self.config, calling))
        self.codes += 1
        self.last_code = event.device_time
        logger.info(
            "%s: code %s read (%s), seq %s", self.device, mask_code(code),
            self.config.source, event.seq)
        return event

    # --- the port -------------------------------------------------------

    async def _open(self) -> bool:
        "Open the port; False (logged, state failing) if it cannot be"
        opening = asyncio.get_running_loop().run_in_executor(
            None, functools.partial(
                serial.Serial, port=self.config.port,
                baudrate=self.config.baudrate, bytesize=serial.EIGHTBITS,
                parity=serial.PARITY_NONE, stopbits=serial.STOPBITS_ONE,
                timeout=READ_SLICE, exclusive=True))
        try:
            self._port = await asyncio.shield(opening)
        except asyncio.CancelledError:
            # a port its thread opens after all is closed, not leaked
            opening.add_done_callback(_close_opened)
            raise
        except (serial.SerialException, OSError, ValueError) as error:
            self._fail(f"cannot open {self.config.port}: {error}")
            return False
        self.splitter = LineSplitter()  # what a closed port left is lost
        self.last_error = None
        self._set_state(ReaderState.READING)
        return True

    def _fail(self, message: str) -> None:
        # logged once per failure, not at every retry
        if self.state is not ReaderState.FAILING:
            logger.error("%s: %s; retrying every %.0f s", self.device,
                message, self.reopen_delay)
        self.last_error = message
        self._set_state(ReaderState.FAILING)

    def _read(self) -> bytes:
        "In a worker thread: the first byte within a slice, then the rest"
        port = self._port
        assert port is not None
        data: bytes = port.read(1)
        if data:
            waiting = port.in_waiting
            if waiting:
                data += port.read(waiting)
        return data

    async def _receive(self) -> bytes:
        if self._reading is None:
            loop = asyncio.get_running_loop()
            self._reading = loop.run_in_executor(None, self._read)
        reading = self._reading
        try:
            # shielded: a cancelled run() leaves the read to close()
            return await asyncio.shield(reading)
        finally:
            if reading.done() and self._reading is reading:
                self._reading = None

    async def _close(self) -> None:
        port, self._port = self._port, None
        if port is None:
            return
        reading, self._reading = self._reading, None
        try:
            if reading is not None and not reading.done():
                port.cancel_read()
                await asyncio.wait([reading])
            if reading is not None and not reading.cancelled() and (
                    reading.exception() is not None):
                logger.debug("%s: read at close: %s", self.device,
                    reading.exception())
        finally:
            port.close()
            logger.info("%s: %s closed", self.device, self.config.port)

    async def run(self) -> None:
        logger.info(
            "%s: %s reader on %s, nozzles %s", self.device,
            self.config.source, self.config.port,
            ', '.join(map(str, self.config.nozzles)))
        try:
            while True:
                if self._port is None and not await self._open():
                    await asyncio.sleep(self.reopen_delay)
                    continue
                try:
                    data = await self._receive()
                except (serial.SerialException, OSError) as error:
                    self._fail(f"read failed: {error}")
                    await self._close()
                    await asyncio.sleep(self.reopen_delay)
                    continue
                if data:
                    self.feed(data)
        finally:
            await self._close()
            self._set_state(ReaderState.STOPPED)
