# This file is part of fuelpay.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""Several DART pumps on one line: polled strictly in turn

A DART line (one RS-485 bus, or one serial-server gateway over UDP/TCP)
carries one exchange at a time: the master sends, the addressed pump
answers.  `DartLine` owns the line's one `Transport` and calls each
driver's `poll_once()` in turn, never two at once, so there is never more
than one request outstanding on the line.  The drivers are built with the
same transport object; each reads only frames of its own address (a late
answer of another pump is dropped by `DartDispenserDriver._receive_frame`,
which checks the address).

A line error (`TransportError`) marks the driver being polled 'error'
and, when the transport reports itself closed, the line reopens it after
`reopen_delay` (TCP has no reconnection of its own).  Each driver's
status for the server's heartbeat is `connected` while its pump answers,
`disconnected` before its first answer and while it is not answering (the
driver's `answering`: `NOT_ANSWERING_POLLS` polls in a row without
answer), and `error` after a line error (until its pump answers again).

`after_poll(driver)` is called after each poll of a driver: the app uses
it to authorise a lifted nozzle on the same cycle.
"""
from __future__ import annotations

import asyncio
import enum
import logging
from collections.abc import Callable, Sequence

from iot_box.interfaces.transport import Transport, TransportError

from .dart import DartDispenserDriver

__all__ = ['DartLine', 'DeviceStatus', 'LineDriver']

logger = logging.getLogger(__name__)

# A closed transport (TCP gateway restarted, USB adapter pulled) is
# reopened after this long: soon enough for a sale, slow enough not to
# flood the log
REOPEN_DELAY = 2.0


class DeviceStatus(enum.StrEnum):
    "As the server's heartbeat route knows them"
    CONNECTED = 'connected'
    DISCONNECTED = 'disconnected'
    ERROR = 'error'


class LineDriver(DartDispenserDriver):
    "The DART driver, plus its status for the heartbeat (`link_error`)"

    link_error: bool = False  # set and cleared by DartLine

    @property
    def status(self) -> DeviceStatus:
        if self.link_error:
            return DeviceStatus.ERROR
        if self.pump_status is None or not self.answering:
            return DeviceStatus.DISCONNECTED
        return DeviceStatus.CONNECTED


class DartLine:
    "The pumps of one line, polled in turn over one transport"

    def __init__(
            self, transport: Transport, drivers: Sequence[LineDriver], *,
            poll_interval: float,
            after_poll: Callable[[LineDriver], None] | None = None,
            reopen_delay: float = REOPEN_DELAY) -> None:
        if not drivers:
            raise ValueError("a line needs at least one driver")
        addresses = [d.address for d in drivers]
        if len(set(addresses)) != len(addresses):
            raise ValueError(
                f"{transport.name}: two drivers at the same address")
        for driver in drivers:
            if driver.transport is not transport:
                raise ValueError(
                    f"{driver.device}: not built with the line's transport")
        self.transport = transport
        self.drivers = tuple(drivers)
        self.poll_interval = poll_interval
        self.after_poll = after_poll
        self.reopen_delay = reopen_delay
        self.cycles = 0

    @property
    def name(self) -> str:
        return self.transport.name

    async def poll_cycle(self) -> None:
        "Poll each driver once, in address order of configuration"
        for driver in self.drivers:
            try:
                await driver.poll_once()
            except TransportError as error:
                driver.link_error = True
                logger.error("%s: line error: %s", driver.device, error)
                if not self.transport.is_open:
                    return  # the rest of the cycle would fail the same way
            else:
                if driver.missed_polls == 0:
                    driver.link_error = False
            if self.after_poll is not None:
                self.after_poll(driver)
        self.cycles += 1

    async def _reopen(self) -> None:
        await asyncio.sleep(self.reopen_delay)
        await self.transport.close()
        try:
            await self.transport.open()
        except (OSError, TimeoutError) as error:
            logger.error("%s: cannot reopen: %s", self.name, error)
            await self.transport.close()
        else:
            logger.info("%s: reopened", self.name)

    async def run(self) -> None:
        "Poll until cancelled; the transport must be open"
        logger.info(
            "%s: polling %s", self.name,
            ', '.join(f'{d.device} ({d.address:#04x})' for d in self.drivers))
        while True:
            if not self.transport.is_open:
                await self._reopen()
                continue
            await self.poll_cycle()
            await asyncio.sleep(self.poll_interval)
