# This file is part of fuelpay.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""The DART dispenser driver against the simulated pump over loopback

Deterministic: the test plays the customer and the hydraulics (`lift`,
`tick`, `hang`) between `poll_once()` calls; nothing sleeps.  Every await
on the line is bounded by `asyncio.wait_for`."""
from __future__ import annotations

import asyncio
import contextlib
import logging
import pathlib
from collections.abc import AsyncIterator, Callable
from decimal import Decimal

import pytest

from iot_box.config import Connection, DispenserConfig, NozzleConfig
from iot_box.drivers.dispenser.dart import DartDispenserDriver
from iot_box.drivers.dispenser.fuelling_point import (
    FPState,
    FuellingPoint,
    IllegalTransition,
    from_dart,
)
from iot_box.events import Event, EventKind
from iot_box.interfaces.tcp import TcpTransport
from iot_box.interfaces.transport import Transport
from iot_box.interfaces.udp import UdpTransport
from iot_box.outbox import Outbox
from iot_box.protocols.dart import ControlType, DC3PriceNozzle, PumpStatus
from iot_box.simulators.dart_pump import PumpServer, SimulatedPump

D = Decimal
ADDRESS = 0x50
NOZZLES = {1: 'unleaded 95', 2: 'diesel'}
PRICES = {1: D('7.890'), 2: D('8.120')}
PRICE_SET = 7
# Loopback answers in well under a millisecond; this only bounds a hang
STEP_TIMEOUT = 2.0
MAX_POLLS = 12  # a sale step takes 1-3 polls; more means it is stuck
FLOW_STEP = Decimal('0.500')  # volume per tick: a few ticks per sale


def dispenser(connection: Connection, host: str, port: int) -> DispenserConfig:
    return DispenserConfig(
        name='pump-1', connection=connection, address=ADDRESS,
        nozzles=(NozzleConfig(1, 11), NozzleConfig(2, 12)),
        host=host, port=port)


class Line:
    "A simulated pump behind a PumpServer, an outbox, and drivers"

    def __init__(
            self, pump: SimulatedPump, outbox: Outbox,
            connection: Connection, address: tuple[str, int],
            stack: contextlib.AsyncExitStack) -> None:
        self.pump = pump
        self.outbox = outbox
        self.connection = connection
        self.address = address
        self.stack = stack

    async def driver(
            self, wrap: Callable[[Transport], Transport] | None = None,
            ) -> DartDispenserDriver:
        "A new driver on a new connection to the line"
        host, port = self.address
        transport: Transport = (
            TcpTransport(host, port) if self.connection is Connection.TCP
            else UdpTransport(host, port))
        await asyncio.wait_for(
            self.stack.enter_async_context(transport), STEP_TIMEOUT)
        if wrap is not None:
            transport = wrap(transport)
        return DartDispenserDriver(
            dispenser(self.connection, host, port), transport, self.outbox,
            prices=PRICES, price_set_id=PRICE_SET)

    def events(self, kind: EventKind) -> list[Event]:
        return [e for e in self.outbox.pending(10_000) if e.kind == kind]


class Lossy:
    "A transport that loses the next frames sent with a given type"

    def __init__(self, inner: Transport) -> None:
        self.inner = inner
        self.name = inner.name
        self.is_open = True
        self.drop: list[int] = []  # control-byte high nibbles to lose
        self.dropped: list[bytes] = []

    async def send(self, data: bytes) -> None:
        if self.drop and data[1] & 0xF0 == self.drop[0]:
            self.drop.pop(0)
            self.dropped.append(data)
            return
        await self.inner.send(data)

    async def receive(self, timeout: float) -> bytes:
        return await self.inner.receive(timeout)


@contextlib.asynccontextmanager
async def line(
        tmp_path: pathlib.Path, connection: Connection = Connection.UDP,
        ) -> AsyncIterator[Line]:
    pump = SimulatedPump(ADDRESS, NOZZLES)
    async with contextlib.AsyncExitStack() as stack:
        server = await stack.enter_async_context(PumpServer([pump]))
        if connection is Connection.TCP:
            address = await server.start_tcp()
        else:
            address = await server.start_udp()
        outbox = stack.enter_context(Outbox(tmp_path / 'outbox.sqlite'))
        yield Line(pump, outbox, connection, address, stack)


async def poll(driver: DartDispenserDriver, times: int = 1) -> None:
    for _ in range(times):
        await asyncio.wait_for(driver.poll_once(), STEP_TIMEOUT)


async def until(
        driver: DartDispenserDriver, condition: Callable[[], bool],
        what: str) -> int:
    "Poll until condition holds; returns the number of polls it took"
    for polls in range(MAX_POLLS):
        if condition():
            return polls
        await poll(driver)
    raise AssertionError(f"{what}: not after {MAX_POLLS} polls")


async def started(line_: Line) -> DartDispenserDriver:
    driver = await line_.driver()
    await until(
        driver, lambda: line_.pump.status is PumpStatus.RESET
        and driver.point.state is FPState.IDLE, "programmed and reset")
    return driver


async def fill(pump: SimulatedPump, driver: DartDispenserDriver,
        step: Decimal = FLOW_STEP) -> None:
    "Let fuel flow until the pump stops by itself (preset reached)"
    for _ in range(100):
        if pump.status is PumpStatus.MAX_REACHED:
            return
        pump.tick(step)
        await poll(driver)
    raise AssertionError("the preset was never reached")


def test_fuelling_point_mapping_and_illegal_transition(caplog) -> None:
    assert from_dart(PumpStatus.RESET, False) is FPState.IDLE
    assert from_dart(PumpStatus.RESET, True) is FPState.CALLING
    assert from_dart(PumpStatus.AUTHORIZED, True) is FPState.STARTED
    assert from_dart(PumpStatus.FILLING, True) is FPState.FUELLING
    assert from_dart(PumpStatus.MAX_REACHED, False) is FPState.IDLE
    assert from_dart(PumpStatus.SWITCHED_OFF, True) is FPState.CLOSED
    assert from_dart(PumpStatus.NOT_PROGRAMMED, False) is (
        FPState.INOPERATIVE)
    point = FuellingPoint('pump-9')
    assert point.transition(FPState.IDLE)
    assert not point.transition(FPState.IDLE)
    point.transition(FPState.FUELLING)
    with pytest.raises(IllegalTransition, match='pump-9'):
        point.transition(FPState.AUTHORISED)
    assert point.state is FPState.FUELLING
    assert 'pump-9: illegal transition fuelling -> authorised' in caplog.text


def test_start_programs_prices_and_resets(tmp_path) -> None:
    async def main() -> None:
        async with line(tmp_path) as line_:
            assert line_.pump.status is PumpStatus.NOT_PROGRAMMED
            await started(line_)
            assert line_.pump.prices == PRICES
    asyncio.run(main())


def test_sale_with_amount_preset_over_udp(tmp_path) -> None:
    async def main() -> None:
        async with line(tmp_path) as line_:
            pump, driver = line_.pump, await started(line_)
            pump.lift(1)
            await until(
                driver, lambda: line_.events(EventKind.NOZZLE_UP),
                "nozzle_up")
            up, = line_.events(EventKind.NOZZLE_UP)
            assert up.payload['nozzle'] == 1
            assert up.payload['station_nozzle'] == 11
            assert driver.point.state is FPState.CALLING

            result = driver.authorize(
                1, 'auth-1', preset_amount=D('10.00'), reference=41)
            await until(driver, result.done, "authorize acknowledged")
            assert result.result()['status'] == 'authorized'
            assert pump.status is PumpStatus.AUTHORIZED
            await until(
                driver, lambda: driver.point.state is FPState.STARTED,
                "started")

            pump.tick(D('0.500'))
            await poll(driver)
            assert driver.point.state is FPState.FUELLING
            running = line_.events(EventKind.RUNNING_TOTAL)
            assert running and running[-1].payload['volume'] == D('0.500')

            await fill(pump, driver)
            volume, amount = pump.filled_volume, pump.filled_amount
            assert amount <= D('10.00') and volume > D('1.2')
            await until(
                driver, lambda: line_.events(
                    EventKind.TRANSACTION_COMPLETED)
                and pump.status is PumpStatus.RESET, "sale recorded")
            await poll(driver, 3)
            sale, = line_.events(EventKind.TRANSACTION_COMPLETED)
            payload = sale.payload
            assert payload['pump_address'] == ADDRESS
            assert payload['nozzle'] == 1
            assert payload['volume'] == volume
            assert payload['amount'] == amount
            assert payload['unit_price'] == D('7.890')
            assert payload['totalizer_volume'] == pump.totals[1][0]
            assert payload['totalizer_amount'] == pump.totals[1][1]
            assert payload['price_set_id'] == PRICE_SET
            assert payload['version'] == 1
            # the server's command that released the sale
            assert payload['authorization'] == 41

            pump.hang()
            await until(
                driver, lambda: line_.events(EventKind.NOZZLE_DOWN),
                "nozzle_down")
            assert driver.point.state is FPState.IDLE
    asyncio.run(asyncio.wait_for(main(), 10))


def test_repeated_authorize_is_not_executed_twice(tmp_path) -> None:
    async def main() -> None:
        async with line(tmp_path) as line_:
            pump, driver = line_.pump, await started(line_)
            pump.lift(2)
            first = driver.authorize(2, 'auth-7', preset_volume=D('5.000'))
            # the same id while the first is queued: the same answer
            assert driver.authorize(2, 'auth-7') is first
            await until(driver, first.done, "authorize acknowledged")
            stopped = driver.stop('stop-1')
            await until(
                driver, lambda: stopped.done()
                and pump.status is PumpStatus.RESET, "stopped, reset")
            again = driver.authorize(2, 'auth-7', preset_volume=D('5.000'))
            assert again.done()
            assert again.result() == first.result()
            await poll(driver, 3)
            assert pump.status is PumpStatus.RESET  # not authorised again
            # nor by a restarted driver on the same outbox
            other = await line_.driver()
            assert other.authorize(2, 'auth-7').done()
            await poll(other, 3)
            assert pump.status is PumpStatus.RESET
    asyncio.run(asyncio.wait_for(main(), 10))


def test_price_change_waits_for_the_end_of_the_sale(tmp_path) -> None:
    async def main() -> None:
        async with line(tmp_path) as line_:
            pump, driver = line_.pump, await started(line_)
            pump.lift(1)
            driver.authorize(1, 'auth-1', preset_volume=D('2.000'))
            await until(
                driver, lambda: pump.status is PumpStatus.AUTHORIZED,
                "authorised")
            pump.tick(D('1.000'))
            await poll(driver)
            change = driver.change_prices(
                {1: D('9.990')}, 'prices-1', price_set_id=8)
            await poll(driver, 3)
            assert pump.prices[1] == D('7.890')  # not mid-fill
            assert not change.done()
            await fill(pump, driver)
            assert pump.filled_amount == pump.amount_of(
                D('2.000'), D('7.890'))
            await until(
                driver, lambda: change.done()
                and pump.status is PumpStatus.RESET, "prices applied")
            assert change.result()['status'] == 'applied'
            assert pump.prices == {1: D('9.990'), 2: D('8.120')}
            first, = line_.events(EventKind.TRANSACTION_COMPLETED)
            # authorised without a server command: no authorization named
            assert first.payload['authorization'] is None
            assert first.payload['unit_price'] == D('7.890')
            assert first.payload['amount'] == D('15.78')
            assert first.payload['price_set_id'] == PRICE_SET

            pump.hang()
            pump.lift(1)
            driver.authorize(1, 'auth-2', preset_volume=D('1.000'))
            await until(
                driver, lambda: pump.status is PumpStatus.AUTHORIZED,
                "authorised")
            await fill(pump, driver)
            await until(
                driver, lambda: len(line_.events(
                    EventKind.TRANSACTION_COMPLETED)) == 2,
                "second sale")
            second = line_.events(EventKind.TRANSACTION_COMPLETED)[1]
            assert second.payload['unit_price'] == D('9.990')
            assert second.payload['amount'] == D('9.99')
            assert second.payload['price_set_id'] == 8
    asyncio.run(asyncio.wait_for(main(), 10))


def test_restart_does_not_duplicate_the_sale(tmp_path) -> None:
    async def main() -> None:
        async with line(tmp_path) as line_:
            pump, driver = line_.pump, await started(line_)
            pump.lift(1)
            driver.authorize(1, 'auth-1', preset_amount=D('5.00'))
            await until(
                driver, lambda: pump.status is PumpStatus.AUTHORIZED,
                "authorised")
            await fill(pump, driver)
            await until(
                driver, lambda: line_.events(
                    EventKind.TRANSACTION_COMPLETED), "sale recorded")
            # the box dies after storing the sale, before its RESET
            assert pump.status is PumpStatus.MAX_REACHED
            del driver
            restarted = await line_.driver()
            await until(
                restarted, lambda: pump.status is PumpStatus.RESET,
                "reset by the restarted driver")
            await poll(restarted, 3)
            assert len(line_.events(EventKind.TRANSACTION_COMPLETED)) == 1
    asyncio.run(asyncio.wait_for(main(), 10))


@pytest.mark.parametrize('with_dc3', [True, False])
def test_restarted_mid_fill_finds_the_nozzle_and_price_of_the_sale(
        tmp_path, caplog, with_dc3: bool) -> None:
    """A driver restarted mid-fill did not see the nozzle lifted: it takes
    the nozzle and the price sold at from the DC3 the pump reports with
    the filling information, or, from a pump that reports no DC3, from the
    one nozzle whose totals grew since those it stored"""
    caplog.set_level(logging.INFO, logger='iot_box.drivers')

    async def main() -> None:
        async with line(tmp_path) as line_:
            pump, driver = line_.pump, await started(line_)
            stored = line_.outbox.command_result
            # the totals of an idle pump, kept for a later restart
            await until(
                driver, lambda: stored('driver:pump-1:totals') is not None,
                "totals stored")
            if not with_dc3:
                report = pump._report
                pump._report = lambda m: None if isinstance(
                    m, DC3PriceNozzle) else report(m)
            pump.lift(2)
            driver.authorize(2, 'auth-1')
            await until(
                driver, lambda: pump.status is PumpStatus.AUTHORIZED,
                "authorised")
            pump.tick(D('1.000'))
            await poll(driver)
            del driver  # killed mid-fill
            pump.tick(D('0.500'))
            pump.hang()
            restarted = await line_.driver()
            await until(
                restarted, lambda: pump.status is PumpStatus.RESET,
                "closed by the restarted driver")
            sale, = line_.events(EventKind.TRANSACTION_COMPLETED)
            payload = sale.payload
            assert (payload['nozzle'], payload['station_nozzle']) == (2, 12)
            assert payload['volume'] == D('1.500')
            assert payload['amount'] == D('12.18')
            assert payload['unit_price'] == PRICES[2]
            assert payload['totalizer_volume'] == D('1.500')
            assert ('as the pump reports it' if with_dc3 else
                'the only one whose totals grew') in caplog.text
            # the totals after the sale, stored with it
            assert stored('driver:pump-1:totals') == {
                '1': [D('0.000'), D('0.00')], '2': [D('1.500'), D('12.18')]}
    asyncio.run(asyncio.wait_for(main(), 10))


def test_restarted_driver_asks_again_a_status_taken_for_a_repeat(
        tmp_path) -> None:
    """A restarted master starts again at block sequence 0: a pump whose
    last block received was the same RETURN_STATUS at sequence 0 ACKs it
    as a repeat and executes nothing; the status is asked again"""
    async def main() -> None:
        async with line(tmp_path) as line_:
            pump = line_.pump
            await started(line_)
            # a run that found the pump programmed sent it only this
            second = await line_.driver()
            await until(
                second, lambda: second.point.state is FPState.IDLE, "idle")
            assert pump._last_received is not None
            assert pump._last_received.seq == 0
            third = await line_.driver()
            polls = await until(
                third, lambda: third.pump_status is PumpStatus.RESET,
                "status known")
            assert polls > 3  # asked again
            pump.lift(1)
            third.authorize(1, 'auth-1')
            await until(
                third, lambda: pump.status is PumpStatus.AUTHORIZED,
                "authorised")
    asyncio.run(asyncio.wait_for(main(), 10))


def test_sale_over_tcp(tmp_path) -> None:
    async def main() -> None:
        async with line(tmp_path, Connection.TCP) as line_:
            pump, driver = line_.pump, await started(line_)
            pump.lift(2)
            driver.authorize(2, 'auth-1', preset_volume=D('3.000'))
            await until(
                driver, lambda: pump.status is PumpStatus.AUTHORIZED,
                "authorised")
            await fill(pump, driver, D('0.700'))
            await until(
                driver, lambda: line_.events(
                    EventKind.TRANSACTION_COMPLETED), "sale recorded")
            sale, = line_.events(EventKind.TRANSACTION_COMPLETED)
            assert sale.payload['nozzle'] == 2
            assert sale.payload['volume'] == D('3.000')
            assert sale.payload['amount'] == D('24.36')
            assert sale.payload['totalizer_volume'] == pump.totals[2][0]
    asyncio.run(asyncio.wait_for(main(), 10))


def test_lost_frames_are_repeated_and_handled_once(tmp_path) -> None:
    async def main() -> None:
        async with line(tmp_path) as line_:
            lossy: Lossy | None = None

            def wrap(transport: Transport) -> Transport:
                nonlocal lossy
                lossy = Lossy(transport)
                return lossy  # type: ignore[return-value]

            pump = line_.pump
            driver = await line_.driver(wrap)
            await until(
                driver, lambda: pump.status is PumpStatus.RESET, "reset")
            assert lossy is not None
            driver.running_total_interval = 0  # every DC2 is an event
            pump.lift(1)
            # our AUTHORIZE block is lost once: sent again after silence
            lossy.drop.append(ControlType.DATA)
            result = driver.authorize(1, 'auth-1')
            await until(driver, result.done, "authorize acknowledged")
            assert len(lossy.dropped) == 1 and not lossy.drop
            await until(
                driver, lambda: pump.status is PumpStatus.AUTHORIZED,
                "authorised")
            await poll(driver, 2)
            # our ACK of a running-total block is lost: the pump sends the
            # block again, which is ACKed again but not handled twice
            lossy.drop.append(ControlType.ACK)
            pump.tick(D('0.500'))
            await poll(driver)
            assert len(lossy.dropped) == 2
            await poll(driver, 2)
            assert not pump.pending
            running = line_.events(EventKind.RUNNING_TOTAL)
            assert [e.payload['volume'] for e in running] == [D('0.500')]
            assert len(line_.events(EventKind.NOZZLE_UP)) == 1
    asyncio.run(asyncio.wait_for(main(), 10))


def test_two_drivers_share_one_udp_transport(tmp_path) -> None:
    """Two pumps on one PumpServer, two drivers on ONE UdpTransport polled
    in turn (as a DartLine does): sales on both, each recorded once, and
    answers meant for the other pump (or late) ignored"""
    async def main() -> None:
        pumps = [SimulatedPump(0x50, NOZZLES), SimulatedPump(0x51, NOZZLES)]
        async with contextlib.AsyncExitStack() as stack:
            server = await stack.enter_async_context(PumpServer(pumps))
            host, port = await server.start_udp()
            outbox = stack.enter_context(Outbox(tmp_path / 'outbox.sqlite'))
            transport = await stack.enter_async_context(
                UdpTransport(host, port))
            drivers = [
                DartDispenserDriver(
                    DispenserConfig(
                        name=f'pump-{i + 1}', connection=Connection.UDP,
                        address=pump.address,
                        nozzles=(NozzleConfig(1, 11 + 10 * i),
                            NozzleConfig(2, 12 + 10 * i)),
                        host=host, port=port),
                    transport, outbox, prices=PRICES, price_set_id=PRICE_SET)
                for i, pump in enumerate(pumps)]

            async def cycle(times: int = 1) -> None:
                for _ in range(times):
                    for driver in drivers:
                        await asyncio.wait_for(
                            driver.poll_once(), STEP_TIMEOUT)

            async def until_both(condition: Callable[[], bool]) -> None:
                for _ in range(MAX_POLLS):
                    if condition():
                        return
                    await cycle()
                raise AssertionError("line stuck")

            await until_both(lambda: all(
                p.status is PumpStatus.RESET for p in pumps))
            # a late answer of pump 0x50 arrives while 0x51 is polled: a
            # POLL for 0x50 whose answer nobody waited for
            pumps[0].lift(1)
            await transport.send(bytes((0x50, 0x20, 0xFA)))
            await drivers[1].poll_once()
            assert drivers[1].nozzle_out is None
            pumps[1].lift(2)
            results = [
                drivers[0].authorize(1, 'a-1', preset_volume=D('2.000')),
                drivers[1].authorize(2, 'a-2', preset_amount=D('10.00'))]
            await until_both(lambda: all(r.done() for r in results))
            for _ in range(40):
                if all(p.status is PumpStatus.MAX_REACHED for p in pumps):
                    break
                for pump in pumps:
                    pump.tick(FLOW_STEP)
                await cycle()
            await until_both(lambda: all(
                p.status is PumpStatus.RESET for p in pumps))
            await cycle(3)
            sales = {
                e.device: e.payload for e in outbox.pending(1000)
                if e.kind == EventKind.TRANSACTION_COMPLETED}
            assert len([
                e for e in outbox.pending(1000)
                if e.kind == EventKind.TRANSACTION_COMPLETED]) == 2
            assert sales['pump-1']['volume'] == D('2.000')
            assert sales['pump-1']['pump_address'] == 0x50
            assert sales['pump-1']['totalizer_volume'] == (
                pumps[0].totals[1][0])
            # its only sale: the totalizer holds exactly its amount
            assert sales['pump-2']['amount'] == pumps[1].totals[2][1]
            assert sales['pump-2']['amount'] <= D('10.00')
            assert sales['pump-2']['station_nozzle'] == 22
            assert sales['pump-2']['totalizer_amount'] == (
                pumps[1].totals[2][1])
            assert [d.missed_polls for d in drivers] == [0, 0]
    asyncio.run(asyncio.wait_for(main(), 15))
