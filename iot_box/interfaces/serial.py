# This file is part of fuelpay.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""Serial transport (RS-485 or current loop adapter) with pyserial

pyserial blocks, so each read and write runs in the default executor; a
read waits at most its timeout, and `close` cancels a read in progress
(pyserial's cancel_read) and waits for it before closing the port."""
from __future__ import annotations

import asyncio
import logging
import time

import serial  # pyserial

from .transport import (
    BaseTransport,
    TransportClosedError,
    TransportError,
    log_bytes,
)

logger = logging.getLogger(__name__)

# DART line settings (DART_NOTES.md): 9600 baud, 8 data bits, odd parity,
# 1 stop bit; some pumps run at 19200, so all of them are parameters.
DEFAULT_BAUDRATE = 9600
DEFAULT_BYTESIZE = 8
DEFAULT_PARITY = 'O'
DEFAULT_STOPBITS = 1
# pyserial reconfigures the port (tcsetattr) each time its timeout changes,
# and a pty refuses that once odd parity is asked; so the port keeps one
# short timeout and a receive reads in slices up to its own deadline.
# A byte ends a slice at once: 50 ms only bounds how late a deadline or a
# close is noticed.
READ_SLICE = 0.05


class SerialTransport(BaseTransport):
    "`async with SerialTransport('/dev/ttyUSB0') as line:` bytes of a line"

    def __init__(
            self, port: str, baudrate: int = DEFAULT_BAUDRATE,
            bytesize: int = DEFAULT_BYTESIZE, parity: str = DEFAULT_PARITY,
            stopbits: float = DEFAULT_STOPBITS) -> None:
        if bytesize not in serial.Serial.BYTESIZES:
            raise ValueError(f"byte size {bytesize!r}")
        if parity not in serial.Serial.PARITIES:
            raise ValueError(f"parity {parity!r}")
        if stopbits not in serial.Serial.STOPBITS:
            raise ValueError(f"stop bits {stopbits!r}")
        self.port = port
        self.baudrate = baudrate
        self.bytesize = bytesize
        self.parity = parity
        self.stopbits = stopbits
        self.name = f'serial:{port}'
        self._serial: serial.Serial | None = None
        self._reading: asyncio.Future[bytes] | None = None
        self._closing = False

    @property
    def is_open(self) -> bool:
        return self._serial is not None and self._serial.is_open

    async def open(self) -> None:
        if self._serial is not None:
            raise RuntimeError(f"{self.name}: already open")
        self._closing = False
        try:
            self._serial = await asyncio.to_thread(
                serial.Serial, port=self.port, baudrate=self.baudrate,
                bytesize=self.bytesize, parity=self.parity,
                stopbits=self.stopbits, timeout=READ_SLICE)
        except (serial.SerialException, OSError) as error:
            raise TransportError(f"{self.name}: {error}") from error
        logger.info(
            "%s: open at %s %s%s%s", self.name, self.baudrate,
            self.bytesize, self.parity, self.stopbits)

    def _read(self, timeout: float) -> bytes:
        "In a worker thread: the first byte within `timeout`, then the rest"
        port = self._serial
        assert port is not None
        deadline = time.monotonic() + timeout
        data: bytes = b''
        while not data and not self._closing and (
                time.monotonic() < deadline):
            data = port.read(1)  # returns at the first byte or the slice
        if data:
            waiting = port.in_waiting
            if waiting:
                data += port.read(waiting)
        return data

    async def send(self, data: bytes) -> None:
        self._require_open()
        log_bytes(logger, self.name, '>', data)
        assert self._serial is not None
        try:
            await asyncio.to_thread(self._serial.write, data)
        except serial.SerialException as error:
            raise TransportClosedError(
                f"{self.name}: write failed: {error}") from error

    async def receive(self, timeout: float) -> bytes:
        "What arrived, or b'' after `timeout` seconds without any byte"
        self._require_open()
        if self._reading is None:
            loop = asyncio.get_running_loop()
            self._reading = loop.run_in_executor(None, self._read, timeout)
        # else a cancelled receive left its read running: take its bytes
        reading = self._reading
        try:
            # shielded: cancelling the caller leaves the read running in
            # its thread; the next receive or close() collects it
            data = await asyncio.shield(reading)
        except serial.SerialException as error:
            raise TransportClosedError(
                f"{self.name}: read failed: {error}") from error
        finally:
            if reading.done() and self._reading is reading:
                self._reading = None
        if data:
            log_bytes(logger, self.name, '<', data)
        return data

    async def close(self) -> None:
        port, self._serial = self._serial, None
        if port is None:
            return
        reading, self._reading = self._reading, None
        try:
            if reading is not None and not reading.done():
                self._closing = True  # ends the read loop between slices
                port.cancel_read()
                await asyncio.wait([reading])
            if reading is not None and reading.done() and (
                    not reading.cancelled()):
                error = reading.exception()  # nobody else will read it
                if error is not None:
                    logger.debug("%s: read at close: %s", self.name, error)
        finally:
            port.close()
            logger.info("%s: closed", self.name)
