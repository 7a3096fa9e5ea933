# This file is part of fuelpay.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""UDP transport to a serial-server gateway (RS-485 <-> Ethernet)

Each datagram carries bytes of the line, in both directions; a frame may
span datagrams and a datagram may hold several frames.  The socket is
connected to the gateway, so the kernel drops datagrams from anyone else.
"""
from __future__ import annotations

import asyncio
import collections
import logging

from .transport import BaseTransport, TransportClosedError, log_bytes

logger = logging.getLogger(__name__)

# A poll cycle produces a few datagrams; 256 unread ones mean nobody reads
# the line, so the oldest are dropped (and logged) instead of growing.
MAX_PENDING_DATAGRAMS = 256


class _LineProtocol(asyncio.DatagramProtocol):
    def __init__(self, name: str) -> None:
        self.name = name
        self.datagrams: collections.deque[bytes] = collections.deque()
        self.error: Exception | None = None
        self.closed = False
        self.dropped = 0
        self.arrived = asyncio.Event()

    def datagram_received(self, data: bytes, addr: object) -> None:
        if len(self.datagrams) >= MAX_PENDING_DATAGRAMS:
            self.datagrams.popleft()
            self.dropped += 1
            logger.warning(
                "%s: %s unread datagrams, oldest dropped (%s so far)",
                self.name, MAX_PENDING_DATAGRAMS, self.dropped)
        self.datagrams.append(data)
        self.arrived.set()

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable and the like: reported by the next receive
        logger.warning("%s: %s", self.name, exc)
        self.error = exc
        self.arrived.set()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.arrived.set()


class UdpTransport(BaseTransport):
    "`async with UdpTransport(host, port) as line:` send and receive bytes"

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self.name = f'udp:{host}:{port}'
        self._transport: asyncio.DatagramTransport | None = None
        self._protocol: _LineProtocol | None = None

    @property
    def is_open(self) -> bool:
        return (self._transport is not None and self._protocol is not None
            and not self._protocol.closed)

    async def open(self) -> None:
        if self._transport is not None:
            raise RuntimeError(f"{self.name}: already open")
        loop = asyncio.get_running_loop()
        self._transport, self._protocol = (
            await loop.create_datagram_endpoint(
                lambda: _LineProtocol(self.name),
                remote_addr=(self.host, self.port)))
        logger.info(
            "%s: open from %s", self.name,
            self._transport.get_extra_info('sockname'))

    async def send(self, data: bytes) -> None:
        self._require_open()
        assert self._transport is not None
        log_bytes(logger, self.name, '>', data)
        self._transport.sendto(data)

    async def receive(self, timeout: float) -> bytes:
        """The datagrams that arrived, joined; b'' after `timeout` seconds
        without any.  A pending ICMP error is raised here."""
        self._require_open()
        protocol = self._protocol
        assert protocol is not None
        if not protocol.datagrams and protocol.error is None:
            protocol.arrived.clear()
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for
            # returns the result of a wait that ends as the caller is
            # cancelled, and the cancellation is lost
            try:
                async with asyncio.timeout(timeout):
                    await protocol.arrived.wait()
            except TimeoutError:
                return b''
        if protocol.error is not None:
            error, protocol.error = protocol.error, None
            raise TransportClosedError(f"{self.name}: {error}") from error
        if protocol.closed and not protocol.datagrams:
            raise TransportClosedError(f"{self.name}: socket closed")
        data = b''.join(protocol.datagrams)
        protocol.datagrams.clear()
        log_bytes(logger, self.name, '<', data)
        return data

    async def close(self) -> None:
        transport, self._transport = self._transport, None
        if transport is not None:
            transport.close()
            logger.info("%s: closed", self.name)
