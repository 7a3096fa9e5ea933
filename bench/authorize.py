# This file is part of fuelpay.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""Nozzle lift -> pump authorized, in poll cycles, on the simulated line

`--pumps N` `SimulatedPump`s (0x50, 0x51, ...) behind one `PumpServer`
on loopback UDP (127.0.0.1, an ephemeral port) and one
`DartDispenserDriver` per pump, all on ONE `UdpTransport`, as a
`DartLine` polls them: a poll cycle is one `poll_once()` of each driver in
turn.  Each of SALES sales, on the pumps in turn:

1. the customer lifts a nozzle on the simulator (between two cycles);
2. the bench runs poll cycles and, right after the driver of that pump
   has emitted nozzle_up to the outbox (within the cycle, as the line's
   `after_poll` hook does), calls `driver.authorize(...)` the way the
   server's answer, or the box's local policy, would;
3. it counts the cycles from the lift until the simulator's pump reports
   AUTHORIZED (goal <= 2), then completes the sale (a few ticks to the
   preset, the sale recorded and the pump RESET, the nozzle hung) so the
   next one starts clean.

It prints min, median, p95 and max cycles and their ratio to the goal.

Wall clock is measured side by side in the same run: the time of each
`poll_once()` of the lift -> authorized window and of the whole window
(lift() to AUTHORIZED seen, the outbox read and `authorize()` included),
against a bare POLL/EOT round trip on the same socket (encode POLL, send,
receive and decode the EOT) and an idle `poll_once()` (POLL answered by
EOT), both taken between the sales while the pump is idle.  Ratios are
medians over the median bare round trip.

The bench plays the customer and the hydraulics; nothing sleeps, so the
cycles here are back to back: in service `run()` waits the dispenser's
poll_interval between cycles, so a lift waits up to two cycles plus two
intervals.  Both cycles of the window commit to the outbox with an fsync
(cycle 1 the nozzle_up event, before the pump's block is ACKed; cycle 2
the authorize result, when the pump ACKs the block): one outbox append to
a second outbox in the same directory is timed between the sales to show
that share.  Point --dir at the box's storage to see its fsync cost.
Figures only, no assertions on timing; a line that does not progress
within MAX_POLLS cycles of a step is an error.

    .venv/bin/python bench/authorize.py [--sales 200] [--pumps N] [--dir DIR]
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import logging
import math
import platform
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from decimal import Decimal
from pathlib import Path

from iot_box.config import Connection, DispenserConfig, NozzleConfig
from iot_box.drivers.dispenser.dart import DartDispenserDriver
from iot_box.drivers.dispenser.fuelling_point import FPState
from iot_box.events import EventKind
from iot_box.interfaces.udp import UdpTransport
from iot_box.outbox import Outbox
from iot_box.protocols.dart import (
    MAX_ADDRESS,
    ControlType,
    FrameSplitter,
    PumpStatus,
    decode_frame,
    encode_frame,
    make_control,
)
from iot_box.simulators.dart_pump import PumpServer, SimulatedPump

D = Decimal
SALES = 200
WARMUP = 5  # sales run first and not counted (imports, caches, sockets)
BARE = 10  # bare round trips and idle poll_once per sale, between sales
ADDRESS = 0x50  # the first pump; the others follow
NOZZLES = {1: 'unleaded 95', 2: 'diesel'}
PRICES = {1: D('7.890'), 2: D('8.120')}
PRICE_SET = 7
FLOW_STEP = D('0.500')  # volume per tick: 2-3 ticks per sale
# presets taking turns: a volume and an amount (both a few ticks)
PRESETS = ({'preset_volume': D('1.000')}, {'preset_amount': D('8.00')})
MAX_POLLS = 12  # a sale step takes 1-3 cycles; more means it is stuck
GOAL = 2
RUN_TIMEOUT = 120.0  # per pump: the whole run, a bound against a hung line


class Stuck(RuntimeError):
    "The line did not progress within MAX_POLLS cycles"


class Bench:
    def __init__(
            self, pumps: Sequence[SimulatedPump],
            drivers: Sequence[DartDispenserDriver], outbox: Outbox,
            probe: Outbox) -> None:
        self.pumps = list(pumps)
        self.drivers = list(drivers)
        self.pump = pumps[0]  # of the sale under way
        self.driver = drivers[0]
        # called after each driver's poll within a cycle (after_poll)
        self.hook: Callable[[DartDispenserDriver], None] | None = None
        self.outbox = outbox
        self.probe = probe  # another outbox in the same directory
        self.splitter = FrameSplitter()
        self.poll_frame = encode_frame(
            ADDRESS, make_control(ControlType.POLL))
        # per counted sale
        self.to_nozzle_up: list[int] = []
        self.to_authorized_after_call: list[int] = []
        self.to_authorized: list[int] = []
        self.window_ms: list[float] = []
        self.cycle_ms: list[float] = []  # every cycle of the windows
        self.first_cycle_ms: list[float] = []  # lift -> DC3, nozzle_up
        self.second_cycle_ms: list[float] = []  # AUTHORIZE block + POLL
        self.bare_ms: list[float] = []
        self.idle_ms: list[float] = []
        self.append_ms: list[float] = []
        self.acked_in_cycle = 0

    async def cycle(self) -> float:
        "One poll_once() of each driver in turn; the cycle's ms"
        start = time.perf_counter_ns()
        for driver in self.drivers:
            await driver.poll_once()
            if self.hook is not None:
                self.hook(driver)
        return (time.perf_counter_ns() - start) / 1e6

    async def until(self, condition: Callable[[], bool], what: str) -> int:
        for polls in range(MAX_POLLS):
            if condition():
                return polls
            await self.cycle()
        raise Stuck(f"{what}: not after {MAX_POLLS} cycles")

    def nozzle_up(self) -> bool:
        return any(
            e.kind is EventKind.NOZZLE_UP and e.device == self.driver.device
            for e in self.outbox.pending())

    def drain(self) -> None:
        "What the uplink does between sales: the events are sent"
        while events := self.outbox.pending():
            self.outbox.mark_sent(e.uuid for e in events)

    async def bare_round_trip(self) -> float:
        "POLL sent and EOT back on the line's socket, nothing else"
        transport = self.drivers[0].transport
        start = time.perf_counter_ns()
        await transport.send(self.poll_frame)
        frames: list[bytes] = []
        while not frames:
            data = await transport.receive(self.driver.response_timeout)
            if not data:
                raise Stuck("bare POLL: no answer")
            frames = self.splitter.feed(data)
        frame = decode_frame(frames[0])
        elapsed = (time.perf_counter_ns() - start) / 1e6
        if frame.kind is not ControlType.EOT or len(frames) != 1:
            raise Stuck(f"bare POLL: {frame.kind.name} from an idle pump")
        return elapsed

    def append(self) -> float:
        "One event into the probe outbox (a durable commit); ms"
        start = time.perf_counter_ns()
        self.probe.append(
            EventKind.NOZZLE_UP, 'probe', dt.datetime.now(dt.UTC),
            {'nozzle': 1, 'station_nozzle': 11, 'unit_price': D('7.890')})
        return (time.perf_counter_ns() - start) / 1e6

    async def idle_figures(self, count: bool) -> None:
        "Bare round trips, idle cycles and an outbox append, in turns"
        for _ in range(BARE):
            bare = await self.bare_round_trip()
            idle = await self.cycle()
            if count:
                self.bare_ms.append(bare)
                self.idle_ms.append(idle)
        append = self.append()
        if count:
            self.append_ms.append(append)

    async def sale(self, number: int, count: bool) -> None:
        index = number % len(self.pumps)
        self.pump = pump = self.pumps[index]
        self.driver = driver = self.drivers[index]
        nozzle = 1 + number // len(self.pumps) % 2
        preset = PRESETS[number % len(PRESETS)]
        if pump.status is not PumpStatus.RESET or pump.pending or (
                driver.point.state is not FPState.IDLE):
            raise Stuck(f"sale {number}: the line is not idle")
        await self.idle_figures(count)

        # lift -> nozzle_up -> authorize() -> pump AUTHORIZED
        cycles: list[float] = []
        futures: list[asyncio.Future[object]] = []
        up_at: list[int] = []

        def after_poll(polled: DartDispenserDriver) -> None:
            if polled is driver and not futures and self.nozzle_up():
                up_at.append(len(cycles))
                futures.append(driver.authorize(  # type: ignore[arg-type]
                    nozzle, f'bench-auth-{number}', **preset))

        self.hook = after_poll
        start = time.perf_counter_ns()
        pump.lift(nozzle)
        try:
            while pump.status is not PumpStatus.AUTHORIZED:
                if len(cycles) >= 2 * MAX_POLLS:
                    raise Stuck(f"sale {number}: not authorized")
                cycles.append(await self.cycle())
        finally:
            self.hook = None
        window = (time.perf_counter_ns() - start) / 1e6
        if not futures:
            raise Stuck(f"sale {number}: authorized without nozzle_up")
        up = up_at[0] + 1  # nozzle_up was emitted in that cycle
        result = futures[0]
        if count:
            self.to_nozzle_up.append(up)
            self.to_authorized_after_call.append(len(cycles) - up)
            self.to_authorized.append(len(cycles))
            self.window_ms.append(window)
            self.cycle_ms.extend(cycles)
            self.first_cycle_ms.append(cycles[0])
            if len(cycles) > 1:
                self.second_cycle_ms.append(cycles[1])
            self.acked_in_cycle += result.done()

        # the rest of the sale, so the next one starts clean
        await self.until(result.done, f"sale {number}: authorize ACK")
        while pump.status is not PumpStatus.MAX_REACHED:
            if pump.tick(FLOW_STEP) == 0:
                raise Stuck(f"sale {number}: no fuel flows")
            await self.cycle()
        await self.until(
            lambda: pump.status is PumpStatus.RESET and not pump.pending,
            f"sale {number}: recorded and reset")
        pump.hang()
        await self.until(
            lambda: driver.point.state is FPState.IDLE
            and driver.nozzle_out is None and not pump.pending,
            f"sale {number}: nozzle back")
        completed = [
            e for e in self.outbox.pending()
            if e.kind is EventKind.TRANSACTION_COMPLETED
            and e.device == driver.device]
        if len(completed) != 1:
            raise Stuck(f"sale {number}: {len(completed)} sales recorded")
        self.drain()


def nearest_rank(values: Sequence[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(share * len(ordered)) - 1)]


def row(label: str, values: Sequence[float], spec: str) -> str:
    return (
        f"  {label:38} {min(values):{spec}} "
        f"{statistics.median(values):{spec}} "
        f"{nearest_rank(values, 0.95):{spec}} {max(values):{spec}}")


async def run(sales: int, pumps_count: int, directory: Path) -> None:
    pumps = [
        SimulatedPump(ADDRESS + i, NOZZLES) for i in range(pumps_count)]
    async with contextlib.AsyncExitStack() as stack:
        server = await stack.enter_async_context(PumpServer(pumps))
        host, port = await server.start_udp('127.0.0.1', 0)
        outbox = stack.enter_context(Outbox(directory / 'outbox.sqlite'))
        probe = stack.enter_context(Outbox(directory / 'probe.sqlite'))
        # ONE transport: the pumps share the line
        transport = await stack.enter_async_context(UdpTransport(host, port))
        drivers = [
            DartDispenserDriver(
                DispenserConfig(
                    name=f'pump-{i + 1}', connection=Connection.UDP,
                    address=pump.address,
                    nozzles=(NozzleConfig(1, 10 * i + 11),
                        NozzleConfig(2, 10 * i + 12)),
                    host=host, port=port),
                transport, outbox, prices=PRICES, price_set_id=PRICE_SET)
            for i, pump in enumerate(pumps)]
        driver = drivers[0]
        bench = Bench(pumps, drivers, outbox, probe)
        # the drivers program the NOT_PROGRAMMED pumps and reset them
        await bench.until(
            lambda: all(
                p.status is PumpStatus.RESET and not p.pending
                for p in pumps) and all(
                d.point.state is FPState.IDLE for d in drivers),
            "programmed and reset")
        bench.drain()
        started = time.perf_counter()
        for number in range(WARMUP + sales):
            await bench.sale(number, count=number >= WARMUP)
        elapsed = time.perf_counter() - started

    print(
        f"DART nozzle lift -> pump authorized: udp:{host}:{port} loopback, "
        f"{pumps_count} pump(s) on one line, {sales} sales (+{WARMUP} "
        f"warm-up), Python {platform.python_version()}, {elapsed:.1f} s")
    print(
        f"\npoll cycles {'':26}    min median   p95   max   (goal: lift -> "
        f"authorized <= {GOAL})")
    for label, values in (
            ("lift -> nozzle_up emitted", bench.to_nozzle_up),
            ("authorize() -> pump AUTHORIZED", bench.to_authorized_after_call),
            ("lift -> pump AUTHORIZED", bench.to_authorized)):
        print(row(label, values, '6.0f'))
    cycles_median = statistics.median(bench.to_authorized)
    print(
        f"  ratio to the goal (lift -> AUTHORIZED / {GOAL}): median "
        f"{cycles_median / GOAL:.2f}x, max "
        f"{max(bench.to_authorized) / GOAL:.2f}x (<= 1 meets the goal)")
    over = sum(c > GOAL for c in bench.to_authorized)
    print(
        f"  sales over the goal: {over} of {sales}; authorize ACKed in "
        f"its first cycle: {bench.acked_in_cycle} of {sales}")
    print(
        f"\nwall clock, ms {'':23}    min median   p95   max   x bare "
        "(median)")
    bare = statistics.median(bench.bare_ms)
    for label, values in (
            ("bare POLL/EOT round trip", bench.bare_ms),
            ("idle cycle (POLL/EOT per pump)", bench.idle_ms),
            ("cycle, lift -> authorized", bench.cycle_ms),
            ("  cycle 1: POLL -> DC3, nozzle_up", bench.first_cycle_ms),
            ("  cycle 2: AUTHORIZE block + POLL", bench.second_cycle_ms),
            ("lift -> pump AUTHORIZED", bench.window_ms),
            ("outbox append, 1 event (fsync)", bench.append_ms)):
        print(
            f"{row(label, values, '6.3f')}   "
            f"{statistics.median(values) / bare:6.1f}x")
    interval = driver.config.poll_interval * 1000
    cycles = statistics.median(bench.to_authorized)
    cycle = statistics.median(bench.cycle_ms)
    print(
        f"\n  in service: at most about {cycles:.0f} x (cycle {cycle:.1f} + "
        f"poll_interval {interval:.0f} ms) = {cycles * (cycle + interval):.0f}"
        " ms from lift to authorized, server round trip not included")
    print(
        f"  bare round trips: {len(bench.bare_ms)}, missed polls: "
        f"{sum(d.missed_polls for d in drivers)}, frames dropped by the "
        f"line: {server.dropped_frames}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--sales', type=int, default=SALES)
    parser.add_argument(
        '--pumps', type=int, default=1,
        help="pumps on the one line (drivers sharing one transport)")
    parser.add_argument('--dir', type=Path, default=None)
    args = parser.parse_args()
    if args.sales < 1:
        parser.error("--sales must be at least 1")
    if not 1 <= args.pumps <= MAX_ADDRESS - ADDRESS + 1:
        parser.error(f"--pumps from 1 to {MAX_ADDRESS - ADDRESS + 1}")
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory(dir=args.dir) as directory:
        asyncio.run(asyncio.wait_for(
            run(args.sales, args.pumps, Path(directory)),
            RUN_TIMEOUT * args.pumps))


if __name__ == '__main__':
    main()
