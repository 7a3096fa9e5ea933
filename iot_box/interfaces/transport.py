# This file is part of fuelpay.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""What every transport offers, and what they share

A transport carries the bytes of one line: `receive` returns whatever
arrived (possibly part of a frame, possibly several frames) or b'' when
nothing came within the timeout.  Cutting frames is the codec's job
(`iot_box.protocols.dart.FrameSplitter`)."""
from __future__ import annotations

import logging
from types import TracebackType
from typing import Protocol, Self, runtime_checkable


class TransportError(ConnectionError):
    "The line cannot carry bytes: not open, closed, or its peer went away"


class TransportClosedError(TransportError):
    "The transport was closed, or the peer closed the connection"


@runtime_checkable
class Transport(Protocol):
    "The bytes of one line, opened by `async with` (or `open`)"

    @property
    def name(self) -> str: ...  # device or peer id, for logs

    @property
    def is_open(self) -> bool: ...

    async def open(self) -> None: ...

    async def send(self, data: bytes) -> None: ...

    async def receive(self, timeout: float) -> bytes: ...

    async def close(self) -> None: ...

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
            self, exc_type: type[BaseException] | None,
            exc: BaseException | None, tb: TracebackType | None) -> None: ...


class BaseTransport:
    "The async context manager: `open` on entry, `close` on exit, always"

    name: str

    @property
    def is_open(self) -> bool:
        raise NotImplementedError

    async def open(self) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        try:
            await self.open()
        except BaseException:
            await self.close()  # a half-opened transport frees what it holds
            raise
        return self

    async def __aexit__(
            self, exc_type: type[BaseException] | None,
            exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.close()

    def _require_open(self) -> None:
        if not self.is_open:
            raise TransportClosedError(f"{self.name}: transport not open")


class HexBytes:
    "Formats bytes as hex only when a log record is actually emitted"
    __slots__ = ('data',)

    def __init__(self, data: bytes) -> None:
        self.data = data

    def __str__(self) -> str:
        return self.data.hex(' ')


def log_bytes(
        logger: logging.Logger, name: str, direction: str,
        data: bytes) -> None:
    logger.debug("%s %s %s", name, direction, HexBytes(data))
