# This file is part of fuelpay.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""TCP transport to a serial-server gateway: the line as a byte stream

No reconnection here: a closed or reset connection raises
TransportClosedError, and the caller decides what to do."""
from __future__ import annotations

import asyncio
import logging

from .transport import BaseTransport, TransportClosedError, log_bytes

logger = logging.getLogger(__name__)

# A gateway answers a SYN within milliseconds on a LAN; 5 s tells a dead
# gateway from a slow one without blocking a poll loop for long.
CONNECT_TIMEOUT = 5.0
# Larger than any DART frame (1 KiB max): one read returns all that waits
READ_SIZE = 4096


class TcpTransport(BaseTransport):
    "`async with TcpTransport(host, port) as line:` send and receive bytes"

    def __init__(
            self, host: str, port: int,
            connect_timeout: float = CONNECT_TIMEOUT) -> None:
        self.host = host
        self.port = port
        self.connect_timeout = connect_timeout
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
        self._reader, self._writer = await asyncio.wait_for(
            asyncio.open_connection(self.host, self.port),
            self.connect_timeout)
        self._lost = False
        logger.info(
            "%s: connected from %s", self.name,
            self._writer.get_extra_info('sockname'))

    def _lose(self, reason: str) -> TransportClosedError:
        self._lost = True
        logger.warning("%s: %s", self.name, reason)
        return TransportClosedError(f"{self.name}: {reason}")

    async def send(self, data: bytes) -> None:
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
            data = await asyncio.wait_for(
                self._reader.read(READ_SIZE), timeout)
        except TimeoutError:
            return b''
        except ConnectionError as error:
            raise self._lose(f"receive failed: {error}") from error
        if not data:
            raise self._lose("connection closed by the peer")
        log_bytes(logger, self.name, '<', data)
        return data

    async def close(self) -> None:
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
