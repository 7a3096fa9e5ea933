# This file is part of fuelpay.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""The DART driver against a faulty simulated pump, over real loopback UDP
and over a pty (the serial transport)

CRC errors and lost frames are drawn from a seeded random.Random, so each
run sees the same faults.  The test plays the customer and the hydraulics
between `poll_once()` calls; every wait is bounded."""
from __future__ import annotations

import asyncio
import contextlib
import pathlib
from collections.abc import AsyncIterator, Callable
from decimal import Decimal

import pytest

from iot_box.config import Connection, DispenserConfig, NozzleConfig
from iot_box.drivers.dispenser.dart import (
    CommandNotExecuted,
    DartDispenserDriver,
)
from iot_box.events import Event, EventKind
from iot_box.interfaces.serial import SerialTransport
from iot_box.interfaces.tcp import TcpTransport
from iot_box.interfaces.transport import Transport, TransportError
from iot_box.interfaces.udp import UdpTransport
from iot_box.outbox import Outbox
from iot_box.protocols.dart import Command, PumpStatus
from iot_box.simulators.dart_pump import Faults, PumpServer, SimulatedPump

D = Decimal
ADDRESS = 0x50
NOZZLES = {1: 'unleaded 95', 2: 'diesel'}
PRICES = {1: D('7.890'), 2: D('8.120')}
# Loopback and a pty answer in well under a millisecond; 100 ms keeps the
# lost-frame retries quick yet far above a busy machine's scheduling delay
RESPONSE_TIMEOUT = 0.1
STEP_TIMEOUT = 5.0  # one poll_once: three tries of each block at most
# a step takes 1-3 polls on a clean line; lost and corrupted frames cost
# a retry each, so allow many more before calling the line stuck
MAX_POLLS = 60
FLOW_STEP = D('0.500')
# faults heavy enough to hit every exchange kind during a sale
NOISY = {'crc_error_rate': 0.15, 'drop_rate': 0.1}


class Station:
    "A pump on a PumpServer, one driver on UDP or a pty, an outbox"

    def __init__(
            self, pump: SimulatedPump, server: PumpServer, outbox: Outbox,
            driver: DartDispenserDriver) -> None:
        self.pump = pump
        self.server = server
        self.outbox = outbox
        self.driver = driver

    def events(self, kind: EventKind) -> list[Event]:
        return [e for e in self.outbox.pending(10_000) if e.kind == kind]

    async def poll(self, times: int = 1) -> None:
        for _ in range(times):
            await asyncio.wait_for(self.driver.poll_once(), STEP_TIMEOUT)

    async def until(self, condition: Callable[[], bool], what: str) -> int:
        for polls in range(MAX_POLLS):
            if condition():
                return polls
            await self.poll()
        raise AssertionError(f"{what}: not after {MAX_POLLS} polls")

    async def started(self) -> None:
        await self.until(
            lambda: self.pump.status is PumpStatus.RESET
            and self.driver.pump_status is PumpStatus.RESET,
            "programmed and reset")

    async def authorized(self, nozzle: int, command_id: str, **preset) -> None:
        "Authorize until it works (a block may be lost three times)"
        for attempt in range(5):
            result = self.driver.authorize(
                nozzle, f'{command_id}-{attempt}', **preset)
            await self.until(result.done, "authorize answered")
            if result.exception() is None:
                return
        raise AssertionError("never authorised")

    async def fill(self, step: Decimal = FLOW_STEP) -> None:
        for _ in range(MAX_POLLS):
            if self.pump.status is PumpStatus.MAX_REACHED:
                return
            self.pump.tick(step)
            await self.poll()
        raise AssertionError("the preset was never reached")

    async def recorded(self) -> Event:
        "The sale recorded once, the pump RESET again"
        await self.until(
            lambda: self.events(EventKind.TRANSACTION_COMPLETED)
            and self.pump.status is PumpStatus.RESET, "sale recorded")
        await self.poll(5)
        sale, = self.events(EventKind.TRANSACTION_COMPLETED)
        return sale


@contextlib.asynccontextmanager
async def station(
        tmp_path: pathlib.Path, connection: Connection = Connection.UDP,
        faults: Faults | None = None) -> AsyncIterator[Station]:
    pump = SimulatedPump(ADDRESS, NOZZLES, faults=faults)
    async with contextlib.AsyncExitStack() as stack:
        server = await stack.enter_async_context(PumpServer([pump]))
        transport: Transport
        if connection is Connection.SERIAL:
            path = await server.start_pty()
            transport = SerialTransport(path)
            config = DispenserConfig(
                name='pump-1', connection=connection, address=ADDRESS,
                nozzles=(NozzleConfig(1, 11), NozzleConfig(2, 12)),
                serial_port=path)
        else:
            host, port = await (
                server.start_tcp() if connection is Connection.TCP
                else server.start_udp())
            transport = (
                TcpTransport(host, port, reconnect_interval=0)
                if connection is Connection.TCP else UdpTransport(host, port))
            config = DispenserConfig(
                name='pump-1', connection=connection, address=ADDRESS,
                nozzles=(NozzleConfig(1, 11), NozzleConfig(2, 12)),
                host=host, port=port)
        await asyncio.wait_for(
            stack.enter_async_context(transport), STEP_TIMEOUT)
        outbox = stack.enter_context(Outbox(tmp_path / 'outbox.sqlite'))
        driver = DartDispenserDriver(
            config, transport, outbox, prices=PRICES, price_set_id=7,
            response_timeout=RESPONSE_TIMEOUT)
        yield Station(pump, server, outbox, driver)


def run(coroutine) -> None:
    asyncio.run(asyncio.wait_for(coroutine, 30))


async def noisy_sale(line: Station) -> Faults:
    "A whole sale on a line with CRC errors and lost frames"
    pump = line.pump
    await line.started()
    pump.lift(1)
    await line.authorized(1, 'auth', preset_amount=D('10.00'))
    await line.fill()
    volume, amount = pump.filled_volume, pump.filled_amount
    sale = await line.recorded()
    assert sale.payload['volume'] == volume
    assert sale.payload['amount'] == amount == D('10.00')
    assert sale.payload['totalizer_volume'] == pump.totals[1][0] == volume
    assert sale.payload['totalizer_amount'] == pump.totals[1][1] == amount
    assert len(line.events(EventKind.NOZZLE_UP)) == 1
    faults = pump.faults
    assert faults is not None and faults.corrupted + faults.dropped >= 3
    return faults


def test_crc_errors_and_lost_frames_over_udp(tmp_path) -> None:
    corrupted = dropped = 0
    for seed in (1, 2, 3):
        async def main(seed: int = seed) -> Faults:
            async with station(
                    tmp_path / str(seed), faults=Faults(**NOISY, seed=seed),
                    ) as line:
                return await noisy_sale(line)
        (tmp_path / str(seed)).mkdir()
        faults = asyncio.run(asyncio.wait_for(main(), 30))
        corrupted += faults.corrupted
        dropped += faults.dropped
    assert corrupted and dropped  # both kinds were met


def test_crc_errors_and_lost_frames_over_a_pty(tmp_path) -> None:
    async def main() -> None:
        async with station(
                tmp_path, Connection.SERIAL, Faults(**NOISY, seed=4)) as line:
            await noisy_sale(line)
    run(main())


@pytest.mark.parametrize('connection', [Connection.UDP, Connection.SERIAL])
def test_silent_pump_is_reported_and_recovers(tmp_path, connection) -> None:
    async def main() -> None:
        async with station(tmp_path, connection) as line:
            await line.started()
            assert line.driver.answering
            line.pump.silence(60)
            await line.poll(4)
            assert line.driver.missed_polls == 4
            assert not line.driver.answering
            line.pump.silence(0)
            await line.poll()
            assert line.driver.answering and line.driver.missed_polls == 0
            # still in business
            line.pump.lift(2)
            await line.authorized(2, 'auth', preset_volume=D('1.000'))
            await line.fill()
            sale = await line.recorded()
            assert sale.payload['volume'] == D('1.000')
    run(main())


def test_pump_reset_while_idle_is_programmed_again(tmp_path) -> None:
    async def main() -> None:
        async with station(tmp_path) as line:
            pump = line.pump
            await line.started()
            pump.power_on_reset()
            assert pump.status is PumpStatus.NOT_PROGRAMMED
            assert not pump.prices
            await line.until(
                lambda: pump.status is PumpStatus.RESET, "programmed again")
            assert pump.prices == PRICES
            pump.lift(1)
            await line.authorized(1, 'auth', preset_volume=D('1.500'))
            await line.fill()
            sale = await line.recorded()
            assert sale.payload['amount'] == pump.amount_of(
                D('1.500'), D('7.890'))
    run(main())


def test_pump_reset_while_silent_is_found_by_the_resync(tmp_path) -> None:
    "Reset while the line is down: its DC1 is lost with the line state"
    async def main() -> None:
        async with station(tmp_path) as line:
            pump = line.pump
            await line.started()
            pump.silence(60)
            await line.poll(3)
            pump.power_on_reset()
            pump._outbox.clear()  # its report was lost
            pump.silence(0)
            await line.until(
                lambda: pump.status is PumpStatus.RESET
                and pump.prices == PRICES, "programmed again")
    run(main())


@pytest.mark.parametrize('connection', [Connection.UDP, Connection.SERIAL])
def test_power_loss_mid_fill_records_the_partial_sale_once(
        tmp_path, connection) -> None:
    async def main() -> None:
        async with station(tmp_path, connection) as line:
            pump = line.pump
            await line.started()
            pump.lift(2)
            await line.authorized(2, 'auth', preset_volume=D('20.000'))
            for _ in range(3):
                pump.tick(D('1.250'))
                await line.poll()
            pump.power_loss()
            assert pump.tick(D('1.000')) == 0  # no power, no flow
            await line.poll(4)
            assert not line.driver.answering
            assert not line.events(EventKind.TRANSACTION_COMPLETED)
            pump.power_restored()
            assert pump.status is PumpStatus.FILLING_COMPLETED
            sale = await line.recorded()
            assert sale.payload['nozzle'] == 2
            assert sale.payload['volume'] == D('3.750')
            assert sale.payload['amount'] == D('30.45')
            assert sale.payload['totalizer_volume'] == D('3.750')
            assert sale.payload['totalizer_amount'] == D('30.45')
            # the next sale starts clean and is recorded too
            pump.hang()
            pump.lift(2)
            await line.authorized(2, 'next', preset_volume=D('1.000'))
            await line.fill()
            await line.until(
                lambda: len(line.events(
                    EventKind.TRANSACTION_COMPLETED)) == 2, "second sale")
            await line.poll(5)
            sales = line.events(EventKind.TRANSACTION_COMPLETED)
            assert [s.payload['volume'] for s in sales] == [
                D('3.750'), D('1.000')]
    run(main())


def test_power_loss_after_the_sale_is_recorded_once(tmp_path) -> None:
    "Power lost after the pump stopped: the same sale is read again"
    async def main() -> None:
        async with station(tmp_path) as line:
            pump = line.pump
            await line.started()
            pump.lift(1)
            await line.authorized(1, 'auth', preset_volume=D('2.000'))
            await line.fill()
            await line.until(
                lambda: line.events(EventKind.TRANSACTION_COMPLETED),
                "sale recorded")
            # the RESET has not reached the pump yet
            assert pump.status is PumpStatus.MAX_REACHED
            pump.power_loss()
            await line.poll(4)
            pump.power_restored()
            await line.until(
                lambda: pump.status is PumpStatus.RESET, "reset")
            await line.poll(5)
            assert len(line.events(EventKind.TRANSACTION_COMPLETED)) == 1
    run(main())


def test_authorize_acknowledged_and_ignored_fails(tmp_path) -> None:
    async def main() -> None:
        faults = Faults(ignore=frozenset({Command.AUTHORIZE}))
        async with station(tmp_path, faults=faults) as line:
            await line.started()
            line.pump.lift(1)
            result = line.driver.authorize(1, 'auth-1')
            polls = await line.until(result.done, "authorize answered")
            assert polls <= 4
            with pytest.raises(CommandNotExecuted, match='auth-1'):
                result.result()
            assert line.pump.status is PumpStatus.RESET
            # not recorded as executed: the server may send it again
            assert line.outbox.command_result('auth-1') is None
    run(main())


def test_authorize_refused_outside_reset_fails_at_once(tmp_path) -> None:
    async def main() -> None:
        async with station(tmp_path) as line:
            pump = line.pump
            await line.started()
            pump.lift(1)
            await line.authorized(1, 'auth', preset_volume=D('1.000'))
            await line.fill()
            # the pump waits in MAX_REACHED for the driver's RESET; an
            # AUTHORIZE now is ACKed and refused
            refused = line.driver.authorize(1, 'auth-early')
            await line.poll()
            assert pump.status is not PumpStatus.AUTHORIZED
            await line.until(refused.done, "refusal seen")
            with pytest.raises(CommandNotExecuted, match='MAX_REACHED'):
                refused.result()
            await line.recorded()
    run(main())


def test_tcp_gateway_drop_mid_sale_loses_nothing(tmp_path) -> None:
    async def main() -> None:
        async with station(tmp_path, Connection.TCP) as line:
            pump = line.pump
            await line.started()
            pump.lift(1)
            await line.authorized(1, 'auth', preset_volume=D('1.500'))
            pump.tick(D('0.500'))
            await line.poll()
            assert line.server.drop_connections() == 1
            errors = 0
            for _ in range(MAX_POLLS):
                if pump.status is PumpStatus.MAX_REACHED:
                    break
                pump.tick(FLOW_STEP)
                try:
                    await line.poll()
                except TransportError:
                    errors += 1  # the exchange lost; reconnects next time
            assert errors >= 1
            transport = line.driver.transport
            assert isinstance(transport, TcpTransport)
            assert transport.reconnections == 1
            sale = await line.recorded()
            assert sale.payload['volume'] == D('1.500')
    run(main())
