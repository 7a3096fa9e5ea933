# This file is part of fuelpay.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""An authorisation with a lift timeout (a pre-payment's) that is not used
is stopped: the DART driver against the simulated pump over loopback UDP

The driver's clock is the test's (`Clock`): the timeout runs out when the
test says so; the test plays the customer between `poll_once()` calls."""
from __future__ import annotations

import asyncio
import contextlib
import pathlib
from collections.abc import AsyncIterator
from decimal import Decimal

import pytest
from test_dart_driver import (
    ADDRESS,
    NOZZLES,
    PRICE_SET,
    PRICES,
    STEP_TIMEOUT,
    dispenser,
    poll,
    until,
)

from iot_box.config import Connection
from iot_box.drivers.dispenser.dart import (
    CommandError,
    DartDispenserDriver,
)
from iot_box.drivers.dispenser.fuelling_point import FPState
from iot_box.events import Event, EventKind
from iot_box.interfaces.udp import UdpTransport
from iot_box.outbox import Outbox
from iot_box.protocols.dart import Command, PumpStatus
from iot_box.simulators.dart_pump import Faults, PumpServer, SimulatedPump

D = Decimal
TIMEOUT = 180.0  # seconds of the fake clock
COMMAND = 41  # the server's authorize command


class Clock:
    "The driver's monotonic clock, moved by the test"

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Rig:
    def __init__(
            self, pump: SimulatedPump, outbox: Outbox,
            driver: DartDispenserDriver, clock: Clock,
            sent: list[bytes]) -> None:
        self.pump = pump
        self.outbox = outbox
        self.driver = driver
        self.clock = clock
        self.sent = sent  # the frames the driver sent

    def events(self, kind: EventKind) -> list[Event]:
        return [e for e in self.outbox.pending(10_000) if e.kind == kind]

    def stops(self) -> int:
        "STOP commands the driver sent (CD1 08 in a DATA block)"
        return sum(
            1 for frame in self.sent
            if frame[1] & 0xF0 == 0x30
            and bytes((0x01, 0x01, Command.STOP)) in frame)

    async def authorized(self, nozzle: int = 1) -> None:
        "The server's authorize command with a lift timeout, confirmed"
        result = self.driver.authorize(
            nozzle, f'{COMMAND}:pump-1', preset_amount=D('50.00'),
            reference=COMMAND, lift_timeout=TIMEOUT)
        await until(self.driver, result.done, "authorize confirmed")
        assert result.result()['status'] == 'authorized'
        assert self.pump.status is PumpStatus.AUTHORIZED

    async def ended(self) -> None:
        "Until the sale is closed and the pump reset"
        await until(
            self.driver, lambda: (
                self.events(EventKind.TRANSACTION_COMPLETED)
                or self.events(EventKind.AUTHORIZATION_EXPIRED))
            and self.pump.status is PumpStatus.RESET, "closed and reset")
        await poll(self.driver, 3)  # nothing more comes


class Recording:
    "A transport that keeps what is sent"

    def __init__(self, inner: UdpTransport, sent: list[bytes]) -> None:
        self.inner = inner
        self.name = inner.name
        self.is_open = True
        self.sent = sent

    async def send(self, data: bytes) -> None:
        self.sent.append(data)
        await self.inner.send(data)

    async def receive(self, timeout: float) -> bytes:
        return await self.inner.receive(timeout)


@contextlib.asynccontextmanager
async def rig(
        tmp_path: pathlib.Path, faults: Faults | None = None,
        hang_ends_authorization: bool = False,
        stop_resets_authorization: bool = False) -> AsyncIterator[Rig]:
    pump = SimulatedPump(
        ADDRESS, NOZZLES, faults=faults,
        hang_ends_authorization=hang_ends_authorization,
        stop_resets_authorization=stop_resets_authorization)
    async with contextlib.AsyncExitStack() as stack:
        server = await stack.enter_async_context(PumpServer([pump]))
        host, port = await server.start_udp()
        outbox = stack.enter_context(Outbox(tmp_path / 'outbox.sqlite'))
        transport = UdpTransport(host, port)
        await asyncio.wait_for(
            stack.enter_async_context(transport), STEP_TIMEOUT)
        sent: list[bytes] = []
        clock = Clock()
        driver = DartDispenserDriver(
            dispenser(Connection.UDP, host, port),
            Recording(transport, sent),  # type: ignore[arg-type]
            outbox, prices=PRICES, price_set_id=PRICE_SET, clock=clock)
        await until(
            driver, lambda: pump.status is PumpStatus.RESET
            and driver.point.state is FPState.IDLE, "programmed and reset")
        yield Rig(pump, outbox, driver, clock, sent)


def run(coroutine: object) -> None:
    asyncio.run(asyncio.wait_for(coroutine, 20))  # type: ignore[arg-type]


def test_never_lifted_is_stopped_after_the_timeout(tmp_path) -> None:
    async def main() -> None:
        async with rig(tmp_path) as r:
            await r.authorized()
            r.clock.now += TIMEOUT - 1
            await poll(r.driver, 3)
            # not yet: the pump stays authorised
            assert r.pump.status is PumpStatus.AUTHORIZED
            assert r.stops() == 0

            r.clock.now += 1
            await r.ended()
            assert r.stops() == 1
            assert not r.events(EventKind.TRANSACTION_COMPLETED)
            expired, = r.events(EventKind.AUTHORIZATION_EXPIRED)
            assert expired.device == 'pump-1'
            assert dict(expired.payload) == {
                'version': 1, 'pump_address': ADDRESS,
                'authorization': COMMAND, 'nozzle': 1,
                'station_number': 11, 'lift_timeout': D('180.0')}
            # the pump is free, its preset gone: the next driver is not
            # served on the first one's money
            assert r.driver.point.state is FPState.IDLE
            assert r.pump.preset_amount is None
            r.pump.lift(1)
            await poll(r.driver, 3)
            assert r.pump.status is PumpStatus.RESET
            assert r.pump.tick(D('1.000')) == 0
    run(main())


def test_fuelling_before_the_timeout_is_a_normal_fill(tmp_path) -> None:
    async def main() -> None:
        async with rig(tmp_path) as r:
            await r.authorized()
            r.clock.now += TIMEOUT / 2
            r.pump.lift(1)
            r.pump.tick(D('1.000'))
            await until(
                r.driver, lambda: r.driver.point.state is FPState.FUELLING,
                "fuelling")
            # the driver fuels slowly, past the timeout: never stopped
            r.clock.now += TIMEOUT
            for _ in range(3):
                r.pump.tick(D('0.500'))
                await poll(r.driver)
            assert r.pump.status is PumpStatus.FILLING
            r.pump.hang()
            await r.ended()
            assert r.stops() == 0
            assert not r.events(EventKind.AUTHORIZATION_EXPIRED)
            sale, = r.events(EventKind.TRANSACTION_COMPLETED)
            assert sale.payload['volume'] == D('2.500')
            assert sale.payload['authorization'] == COMMAND
    run(main())


def test_lift_at_the_last_moment_sends_only_the_fill(tmp_path) -> None:
    """The timeout runs out with the pump authorised; the driver lifts and
    fuel flows before the STOP reaches the pump: the STOP ends the fill,
    and only that fill is recorded, naming the command"""
    async def main() -> None:
        async with rig(tmp_path) as r:
            await r.authorized()
            r.clock.now += TIMEOUT
            # this poll finds it still authorised and queues the STOP...
            await poll(r.driver)
            assert r.driver._sale.expired
            assert r.stops() == 0
            # ...which goes out at the next poll, after this
            r.pump.lift(1)
            r.pump.tick(D('0.300'))
            await r.ended()
            assert r.stops() == 1
            assert not r.events(EventKind.AUTHORIZATION_EXPIRED)
            sale, = r.events(EventKind.TRANSACTION_COMPLETED)
            assert sale.payload['volume'] == D('0.300')
            assert sale.payload['authorization'] == COMMAND
            assert sale.payload['station_nozzle'] == 11
    run(main())


def test_nozzle_held_out_waits_and_hung_up_expires(tmp_path) -> None:
    """Lifted without fuelling (started): never stopped while held; hung
    up without flow after the timeout, it expires at once"""
    async def main() -> None:
        async with rig(tmp_path) as r:
            await r.authorized(2)
            r.pump.lift(2)
            await until(
                r.driver, lambda: r.driver.point.state is FPState.STARTED,
                "started")
            r.clock.now += TIMEOUT * 2
            await poll(r.driver, 4)
            assert r.pump.status is PumpStatus.AUTHORIZED
            assert r.stops() == 0
            r.pump.hang()  # the simulated pump keeps the authorisation
            await r.ended()
            assert r.stops() == 1
            assert not r.events(EventKind.TRANSACTION_COMPLETED)
            expired, = r.events(EventKind.AUTHORIZATION_EXPIRED)
            assert expired.payload['station_number'] == 12
            assert expired.payload['nozzle'] == 2
    run(main())


def test_pump_ending_it_on_hang_up_is_a_zero_fill(tmp_path) -> None:
    """A pump that ends an authorisation itself when the nozzle is hung up
    without flow: the driver sent no STOP, the zero fill names the command
    (the server gives the pre-payment back as for any zero fill)"""
    async def main() -> None:
        async with rig(tmp_path, hang_ends_authorization=True) as r:
            await r.authorized()
            r.pump.lift(1)
            await until(
                r.driver, lambda: r.driver.point.state is FPState.STARTED,
                "started")
            r.pump.hang()
            await r.ended()
            r.clock.now += TIMEOUT
            await poll(r.driver, 3)
            assert r.stops() == 0
            assert not r.events(EventKind.AUTHORIZATION_EXPIRED)
            sale, = r.events(EventKind.TRANSACTION_COMPLETED)
            assert sale.payload['volume'] == 0
            assert sale.payload['authorization'] == COMMAND
    run(main())


def test_stop_ignored_is_sent_again(tmp_path) -> None:
    async def main() -> None:
        faults = Faults(ignore=frozenset({Command.STOP}))
        async with rig(tmp_path, faults) as r:
            await r.authorized()
            r.clock.now += TIMEOUT
            await until(r.driver, lambda: r.stops() == 2, "STOP again")
            assert r.pump.status is PumpStatus.AUTHORIZED
            assert r.stops() == 2
            faults.ignore = frozenset()
            await r.ended()
            assert r.stops() == 3
            assert len(r.events(EventKind.AUTHORIZATION_EXPIRED)) == 1
            assert not r.events(EventKind.TRANSACTION_COMPLETED)
    run(main())


def test_two_expired_in_a_row_are_two_events(tmp_path) -> None:
    "Same totals, nothing delivered twice: each command has its event"
    async def main() -> None:
        async with rig(tmp_path) as r:
            for command in (41, 42):
                result = r.driver.authorize(
                    1, f'{command}:pump-1', preset_amount=D('50.00'),
                    reference=command, lift_timeout=TIMEOUT)
                await until(r.driver, result.done, "authorized")
                r.clock.now += TIMEOUT
                await until(
                    r.driver, lambda: r.pump.status is PumpStatus.RESET
                    and not r.driver._sale.expired, "expired, reset")
            events = r.events(EventKind.AUTHORIZATION_EXPIRED)
            assert [e.payload['authorization'] for e in events] == [41, 42]
    run(main())


def test_without_timeout_nothing_expires(tmp_path) -> None:
    """An authorisation without a timeout (an older server, a plate
    preset) is never stopped: the pump stays authorised with its preset
    and no event comes"""
    async def main() -> None:
        async with rig(tmp_path) as r:
            result = r.driver.authorize(
                1, '7:pump-1', preset_amount=D('50.00'), reference=7)
            await until(r.driver, result.done, "authorized")
            r.clock.now += 10 * TIMEOUT
            await poll(r.driver, 4)
            assert r.pump.status is PumpStatus.AUTHORIZED
            assert r.pump.preset_amount == D('50.00')
            assert r.stops() == 0
            assert not r.events(EventKind.AUTHORIZATION_EXPIRED)
            with pytest.raises(CommandError, match='lift timeout'):
                r.driver.authorize(1, 'x', lift_timeout=0)
            with pytest.raises(CommandError, match='lift timeout'):
                r.driver.authorize(1, 'y', lift_timeout=5.0)
    run(main())


def restarted(r: Rig) -> DartDispenserDriver:
    "A new driver (the box restarted) on the same line and outbox"
    return DartDispenserDriver(
        r.driver.config, r.driver.transport, r.outbox, prices=PRICES,
        clock=r.clock)


def test_restarted_driver_takes_up_the_authorization(tmp_path) -> None:
    """A box restarted while the pump is authorised takes the authorisation
    and its timeout up from the outbox: stopped when it runs out, and a
    fill names the command"""
    async def main() -> None:
        async with rig(tmp_path) as r:
            await r.authorized()
            r.driver = restarted(r)
            await until(
                r.driver, lambda: r.driver._sale.authorization == COMMAND,
                "taken up")
            # the time left is kept as a wall-clock deadline (a monotonic
            # clock does not survive a restart): what is left of it counts
            r.clock.now += TIMEOUT - 5
            await poll(r.driver, 3)
            assert r.stops() == 0
            assert r.pump.status is PumpStatus.AUTHORIZED
            r.clock.now += 5
            await r.ended()
            assert r.stops() == 1
            expired, = r.events(EventKind.AUTHORIZATION_EXPIRED)
            assert expired.payload['authorization'] == COMMAND
            assert not r.events(EventKind.TRANSACTION_COMPLETED)
            # recorded: nothing left for a next restart
            assert r.outbox.command_result(r.driver.authorization_key) == {}
            r.driver = restarted(r)
            await poll(r.driver, 3)
            assert r.driver._sale.authorization is None

            result = r.driver.authorize(
                1, '43:pump-1', preset_amount=D('50.00'), reference=43,
                lift_timeout=TIMEOUT)
            await until(r.driver, result.done, "authorized")
            r.pump.lift(1)
            r.pump.tick(D('1.000'))
            await poll(r.driver)
            r.driver = restarted(r)  # mid-fill
            r.pump.tick(D('1.000'))
            r.pump.hang()
            await r.ended()
            sale, = r.events(EventKind.TRANSACTION_COMPLETED)
            assert sale.payload['authorization'] == 43
            assert sale.payload['volume'] == D('2.000')
            assert len(r.events(EventKind.AUTHORIZATION_EXPIRED)) == 1
    run(main())


def test_restarted_after_recording_the_expiry_adds_nothing(
        tmp_path) -> None:
    """Killed after recording the expiry, before its RESET reached the
    pump: the restarted driver closes the same zero sale and records
    nothing more (neither a second expiry nor a zero fill)"""
    async def main() -> None:
        async with rig(tmp_path) as r:
            await r.authorized()
            r.clock.now += TIMEOUT
            await until(
                r.driver, lambda: r.events(EventKind.AUTHORIZATION_EXPIRED),
                "expiry recorded")
            assert r.pump.status is PumpStatus.FILLING_COMPLETED
            r.driver = restarted(r)
            await until(
                r.driver, lambda: r.pump.status is PumpStatus.RESET,
                "reset by the restarted driver")
            await poll(r.driver, 3)
            assert len(r.events(EventKind.AUTHORIZATION_EXPIRED)) == 1
            assert not r.events(EventKind.TRANSACTION_COMPLETED)
    run(main())


def test_pump_back_to_reset_after_stop_is_an_expiry(tmp_path) -> None:
    """A pump that answers the STOP of an unused authorisation by going
    back to RESET (no sale to close) still gives one expiry, and the next
    fill on that nozzle names no command"""
    async def main() -> None:
        async with rig(tmp_path, stop_resets_authorization=True) as r:
            await r.authorized()
            r.clock.now += TIMEOUT
            await r.ended()
            assert r.stops() == 1
            expired, = r.events(EventKind.AUTHORIZATION_EXPIRED)
            assert dict(expired.payload) == {
                'version': 1, 'pump_address': ADDRESS,
                'authorization': COMMAND, 'nozzle': 1,
                'station_number': 11, 'lift_timeout': D('180.0')}
            assert not r.events(EventKind.TRANSACTION_COMPLETED)
            assert r.outbox.command_result(r.driver.authorization_key) == {}
            assert r.driver._sale.authorization is None
            await poll(r.driver, 3)
            assert len(r.events(EventKind.AUTHORIZATION_EXPIRED)) == 1
    run(main())


def test_restarted_after_stop_reset_records_the_expiry(tmp_path) -> None:
    """Killed after deciding the STOP, before seeing the pump back to
    RESET: the restarted driver finds the pump idle and records the expiry
    once (the earlier run had stopped it: nothing was delivered)"""
    async def main() -> None:
        async with rig(tmp_path, stop_resets_authorization=True) as r:
            await r.authorized()
            # the run decided the STOP (kept in the outbox) and is gone;
            # the pump executed it and is back to RESET
            held = dict(r.outbox.command_result(r.driver.authorization_key))
            assert held['authorization'] == COMMAND
            r.outbox.put(
                r.driver.authorization_key, dict(held, expired=True))
            r.pump._new_sale()
            r.pump._set_status(PumpStatus.RESET)
            r.driver = restarted(r)
            await until(
                r.driver, lambda: r.events(EventKind.AUTHORIZATION_EXPIRED),
                "expiry recorded")
            await poll(r.driver, 3)
            expired, = r.events(EventKind.AUTHORIZATION_EXPIRED)
            assert expired.payload['authorization'] == COMMAND
            assert not r.events(EventKind.TRANSACTION_COMPLETED)
            assert r.outbox.command_result(r.driver.authorization_key) == {}
    run(main())
