# This file is part of fuelpay.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""TCP transport to a serial-server gateway: the line as a byte stream

A connection closed or reset by the gateway raises TransportClosedError
from the call that saw it (the exchange under way is lost: the caller
decides whether to repeat it).  With `reconnect` (the default) the next
`send` connects again, at most once per `reconnect_interval` seconds so
that a dead gateway is not hammered; until then, and when connecting
fails, `send` raises TransportClosedError.  `close()` ends it for good."""
from __future__ import annotations

import asyncio
import logging
import time

from .transport import BaseTransport, TransportClosedError, log_bytes

logger = logging.getLogger(__name__)

# A gateway answers a SYN within milliseconds on a LAN; 5 s tells a dead
# gateway from a slow one without blocking a poll loop for long.
CONNECT_TIMEOUT = 5.0
# Larger than any DART frame (1 KiB max): one read returns all that waits
READ_SIZE = 4096
# Gateways drop idle or stale connections and accept a new one at once; a
# dead one refuses: one attempt a second keeps a poll loop going without
# flooding the gateway's log
RECONNECT_INTERVAL = 1.0


class TcpTransport(BaseTransport):
    "`async with TcpTransport(host, port) as line:` send and receive bytes"

    def __init__(
            self, host: str, port: int,
            connect_timeout: float = CONNECT_TIMEOUT, *,
            reconnect: bool = True,
            reconnect_interval: float = RECONNECT_INTERVAL) -> None:
        self.host = host
        self.port = port
        self.connect_timeout = connect_timeout
        self.reconnect = reconnect
        self.reconnect_interval = reconnect_interval
        self.reconnections = 0  # successful ones, for status and tests
        self._last_attempt = float('-inf')  # time.monotonic()
        self._wanted = False  # opened and not closed by the owner
        self.name = f'tcp:{host}:{port}'
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._lost = False

    @property
    def is_open(self) -> bool:
        return self._writer is not None and not self._lost

    async def open(self) -> None:
        if self._writer is not None:
            raise RuntimeError(f"{self.name}: already open")
        self._wanted = True
        await self._connect()

    async def _connect(self) -> None:
        self._last_attempt = time.monotonic()
        # asyncio.timeout, not wait_for: on Python 3.11 wait_for can lose
        # a cancellation that arrives as its awaitable completes
        async with asyncio.timeout(self.connect_timeout):
            self._reader, self._writer = await asyncio.open_connection(
                self.host, self.port)
        self._lost = False
        logger.info(
            "%s: connected from %s", self.name,
            self._writer.get_extra_info('sockname'))

    def _lose(self, reason: str) -> TransportClosedError:
        self._lost = True
        logger.warning("%s: %s", self.name, reason)
        return TransportClosedError(f"{self.name}: {reason}")

    async def _reconnect(self) -> None:
        "Connect again after the peer dropped us, if allowed now"
        wait = self._last_attempt + self.reconnect_interval - (
            time.monotonic())
        if wait > 0:
            raise TransportClosedError(
                f"{self.name}: connection lost, next attempt in {wait:.1f} s")
        old, self._writer = self._writer, None
        self._reader = None
        if old is not None:
            old.close()  # its socket is dead; wait_closed would only fail
        try:
            await self._connect()
        except (OSError, TimeoutError) as error:
            logger.warning("%s: reconnect failed: %s", self.name, error)
            raise TransportClosedError(
                f"{self.name}: reconnect failed: {error}") from error
        self.reconnections += 1
        logger.info("%s: reconnected (%s)", self.name, self.reconnections)

    async def send(self, data: bytes) -> None:
        if self._lost and self.reconnect and self._wanted:
            await self._reconnect()
        self._require_open()
        assert self._writer is not None
        log_bytes(logger, self.name, '>', data)
        try:
            self._writer.write(data)
            await self._writer.drain()
        except ConnectionError as error:
            raise self._lose(f"send failed: {error}") from error

    async def receive(self, timeout: float) -> bytes:
        "What arrived, or b'' after `timeout` seconds without any byte"
        self._require_open()
        assert self._reader is not None
        try:
            # cancelling a pending read loses nothing: bytes stay buffered
            # (asyncio.timeout, not wait_for: see _connect)
            async with asyncio.timeout(timeout):
                data = await self._reader.read(READ_SIZE)
        except TimeoutError:
            return b''
        except ConnectionError as error:
            raise self._lose(f"receive failed: {error}") from error
        if not data:
            raise self._lose("connection closed by the peer")
        log_bytes(logger, self.name, '<', data)
        return data

    async def close(self) -> None:
        self._wanted = False
        writer, self._writer = self._writer, None
        self._reader = None
        if writer is None:
            return
        writer.close()
        try:
            await writer.wait_closed()
        except ConnectionError as error:  # already reset: closed anyway
            logger.debug("%s: while closing: %s", self.name, error)
        logger.info("%s: closed", self.name)
