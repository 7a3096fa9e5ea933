# This file is part of fuelpay.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""The station service end to end: simulated DART pumps over loopback UDP,
the App, and a fake server (test_uplink.FakeServer)

Two pumps on one line (0x50, 0x51), two nozzles each (station numbers 1-4).
The test plays the customer (`lift`, `tick`, `hang`); every wait is
bounded by `until`."""
from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import pathlib
import signal
import socket
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from decimal import Decimal
from typing import Any

import pytest
from test_uplink import DATABASE, KEY, FakeServer

from iot_box.__main__ import main
from iot_box.app import AUTO_AUTHORIZE_RETRIES, App, LinkState, Timing
from iot_box.config import (
    BoxConfig,
    Connection,
    DispenserConfig,
    FallbackMode,
    FallbackPolicy,
    ListenAddress,
    NozzleConfig,
    Secret,
    ServerConfig,
)
from iot_box.drivers.dispenser.dart import CONFIRM_POLLS
from iot_box.events import AlarmCode, EventKind
from iot_box.protocols.dart import (
    CD1Command,
    Command,
    Direction,
    PumpStatus,
    decode_transactions,
)
from iot_box.simulators.dart_pump import (
    Faults,
    PumpServer,
    SimulatedPump,
    demo_pumps,
)

D = Decimal
# Setup prices per station number: pump-1 nozzles 1, 2; pump-2 nozzles 3, 4
PRICES = {1: '7.890', 2: '8.120', 3: '6.500', 4: '9.990'}
POLICY = {
    'authorization': 'postpay', 'max_amount': '100.00',
    'max_volume': '50.000', 'heartbeat_interval': 1, 'command_wait': 1}
# Small periods: every step of a test is a few poll cycles
TIMING = Timing(
    fallback_threshold=0.5, auth_retry=0.3, command_poll=0.2,
    command_min_interval=0.05, idle_check=0.2, backoff_base=0.05,
    backoff_cap=0.2, poll_interval=0.02, heartbeat_interval=0.3)
# Bounds a step; loopback steps take tens of milliseconds
STEP_TIMEOUT = 5.0
FLOW = D('0.500')


def nozzles_answer() -> list[dict[str, Any]]:
    return [
        {'station_number': n, 'number': (n - 1) % 2 + 1, 'price': 7,
            'unit_price': p} for n, p in PRICES.items()]


def box_config(
        tmp_path: pathlib.Path, url: str, port: int,
        mode: FallbackMode = FallbackMode.ATTENDED_POSTPAY,
        after: float = 60.0) -> BoxConfig:
    key = tmp_path / 'box.key'
    key.write_text(KEY)
    key.chmod(0o600)

    def dispenser(name: str, address: int, first: int) -> DispenserConfig:
        return DispenserConfig(
            name=name, connection=Connection.UDP, address=address,
            host='127.0.0.1', port=port, nozzles=(
                NozzleConfig(1, first), NozzleConfig(2, first + 1)))

    return BoxConfig(
        server=ServerConfig(
            url=url, key_file=key, key=Secret(KEY), timeout=2.0,
            database=DATABASE),
        station_code='ST001', identifier='box-st001',
        outbox_path=tmp_path / 'outbox.sqlite',
        status_listen=ListenAddress('127.0.0.1', 0),
        dispensers=(
            dispenser('pump-1', 0x50, 1), dispenser('pump-2', 0x51, 3)),
        fallback=FallbackPolicy(D('150.00'), D('100.000'), mode, after))


async def until(
        condition: Callable[[], Any], task: asyncio.Task[None] | None = None,
        timeout: float = STEP_TIMEOUT) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        if task is not None and task.done():
            task.result()  # raises what stopped the app
            raise AssertionError("the app stopped")
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {condition}")
        await asyncio.sleep(0.01)


@dataclasses.dataclass
class Station:
    app: App
    task: asyncio.Task[None]
    pumps: list[SimulatedPump]
    server: FakeServer

    async def until(self, condition: Callable[[], Any]) -> None:
        await until(condition, self.task)

    def completed(self) -> list[dict[str, Any]]:
        with self.server.changed:
            return [
                e for e in self.server.events
                if e['kind'] == EventKind.TRANSACTION_COMPLETED]

    def acks(self, command_id: int) -> list[dict[str, Any]]:
        with self.server.changed:
            return [a for a in self.server.acks if a['id'] == command_id]

    def alarms(self) -> list[dict[str, Any]]:
        with self.server.changed:
            return [
                e for e in self.server.events
                if e['kind'] == EventKind.ALARM]

    async def sale(
            self, pump: SimulatedPump, nozzle: int, ticks: int,
            authorised: bool = True) -> None:
        pump.lift(nozzle)
        if authorised:
            await self.until(lambda: pump.status is PumpStatus.AUTHORIZED)
        for _ in range(ticks):
            pump.tick(FLOW)
            await asyncio.sleep(0.03)
        pump.hang()
        await self.until(lambda: pump.status is PumpStatus.RESET)


@pytest.fixture
def server() -> Iterator[FakeServer]:
    with FakeServer() as fake:
        fake.policy = dict(POLICY)
        fake.nozzles = nozzles_answer()
        yield fake


@contextlib.asynccontextmanager
async def station(
        tmp_path: pathlib.Path, server: FakeServer, *,
        timing: Timing = TIMING,
        mode: FallbackMode = FallbackMode.ATTENDED_POSTPAY,
        after: float = 60.0,
        pumps: list[SimulatedPump] | None = None,
        programmed: bool = True) -> AsyncIterator[Station]:
    pumps = pumps if pumps is not None else demo_pumps(2, 2)
    async with PumpServer(pumps) as line:
        _, port = await line.start_udp()
        app = App(
            box_config(tmp_path, server.url, port, mode, after),
            timing=timing)
        task = asyncio.create_task(app.run())
        try:
            st = Station(app, task, pumps, server)
            await st.until(lambda: app.status_server is not None)
            if programmed:
                await st.until(lambda: all(
                        p.status is PumpStatus.RESET for p in pumps))
            yield st
        finally:
            app.stop()
            await asyncio.wait_for(task, STEP_TIMEOUT)


def run(coroutine: Any) -> None:
    asyncio.run(asyncio.wait_for(coroutine, 30))


# --- a sale ---------------------------------------------------------------

def test_postpay_sale_reaches_the_server_once(
        tmp_path: pathlib.Path, server: FakeServer) -> None:
    async def main() -> None:
        async with station(tmp_path, server) as st:
            pump = st.pumps[0]
            # programmed with the setup prices
            assert pump.prices == {1: D('7.890'), 2: D('8.120')}
            assert st.pumps[1].prices == {1: D('6.500'), 2: D('9.990')}
            pump.lift(1)
            await st.until(lambda: pump.status is PumpStatus.AUTHORIZED)
            # min(100.00, 50.000 x 7.890)
            assert pump.preset_amount == D('100.00')
            for _ in range(3):
                pump.tick(FLOW)
                await asyncio.sleep(0.03)
            expected_amount = pump.filled_amount
            pump.hang()
            await st.until(lambda: pump.status is PumpStatus.RESET)
            await st.until(
                lambda: st.completed() and not st.app.outbox.depth())
            await asyncio.sleep(0.2)  # nothing more comes
            event, = st.completed()
            payload = event['payload']
            assert event['device'] == 'pump-1'
            assert payload['volume'] == D('1.500')
            assert str(payload['volume']) == '1.500'
            assert payload['amount'] == expected_amount == D('11.84')
            assert str(payload['unit_price']) == '7.890'
            assert payload['station_nozzle'] == 1
            assert payload['price_set_id'] == 7
            # released by the box's own postpay policy, not a command
            assert payload['authorization'] is None
            assert 'fallback' not in payload
            seqs = [e['seq'] for e in server.events]
            assert seqs == sorted(seqs) == list(range(1, len(seqs) + 1))

            setup = server.routes('setup')[0].data
            assert setup['identifier'] == 'box-st001'
            assert [d['identifier'] for d in setup['devices']] == [
                'pump-1', 'pump-2']
            assert setup['devices'][0]['kind'] == 'dispenser'
            assert setup['devices'][0]['protocol'] == 'dart'
            assert 'address 0x50' in setup['devices'][0]['connection']
            await st.until(lambda: server.heartbeats)
            beat = server.heartbeats[-1]
            assert beat['version'] == 1
            assert {d['status'] for d in beat['devices']} == {'connected'}
            assert st.app.link is LinkState.ONLINE

    run(main())


def test_prepay_waits_for_an_authorize_command(
        tmp_path: pathlib.Path, server: FakeServer) -> None:
    server.policy = {**POLICY, 'authorization': 'prepay'}

    async def main() -> None:
        async with station(tmp_path, server) as st:
            pump = st.pumps[1]
            pump.lift(2)
            await asyncio.sleep(0.3)
            assert pump.status is PumpStatus.RESET
            server.add_command(30, 'authorize', {
                    'version': 1, 'station_number': 4,
                    'preset_volume': '2.000', 'preset_amount': None})
            await st.until(lambda: pump.status is PumpStatus.AUTHORIZED)
            assert pump.preset_volume == D('2.000')
            await st.until(lambda: st.acks(30))
            ack, = st.acks(30)
            assert ack['status'] == 'acked'
            assert ack['result']['station_number'] == 4
            for _ in range(3):
                pump.tick(FLOW)
                await asyncio.sleep(0.03)
            pump.hang()
            await st.until(lambda: st.completed())
            event, = st.completed()
            # the sale names the command that released it: the server
            # finds the pre-payment it answers
            assert event['payload']['authorization'] == 30
            assert event['payload']['station_nozzle'] == 4

    run(main())


# --- commands -------------------------------------------------------------

def test_price_change_between_sales_acked_per_nozzle(
        tmp_path: pathlib.Path, server: FakeServer) -> None:
    async def main() -> None:
        async with station(tmp_path, server) as st:
            pump1, pump2 = st.pumps
            server.add_command(10, 'price_change', {
                    'version': 1, 'price': 9, 'price_name': 'Dec',
                    'effective_date': '2026-12-05T10:00:00',
                    'nozzles': [
                        {'station_number': 1, 'unit_price': '7.990'},
                        # as Tryton writes Decimals
                        {'station_number': 3, 'unit_price': D('6.600')},
                        {'station_number': 99, 'unit_price': '1.000'}]})
            await st.until(lambda: st.acks(10))
            ack, = st.acks(10)
            assert pump1.prices == {1: D('7.990'), 2: D('8.120')}
            assert pump2.prices == {1: D('6.600'), 2: D('9.990')}
            assert ack['status'] == 'failed'  # 99 is unknown
            rows = {r['station_number']: r for r in ack['result']['nozzles']}
            assert ack['result']['price'] == 9
            assert rows[1] == {
                'station_number': 1, 'unit_price': '7.990',
                'status': 'applied', 'error': None}
            assert rows[3]['status'] == 'applied'
            assert rows[99]['status'] == 'failed'
            assert 'no nozzle 99' in rows[99]['error']
            assert st.app.drivers['pump-1'].price_set_id == 9

            # during a sale: applied after it, other commands not blocked
            pump1.lift(2)
            await st.until(lambda: pump1.status is PumpStatus.AUTHORIZED)
            pump1.tick(FLOW)
            server.add_command(11, 'price_change', {
                    'version': 1, 'price': 10, 'nozzles': [
                        {'station_number': 2, 'unit_price': '8.220'}]})
            server.add_command(12, 'print', {'version': 1, 'text': 'x'})
            await st.until(lambda: st.acks(12))
            print_ack, = st.acks(12)
            assert print_ack['status'] == 'failed'
            assert 'not supported' in print_ack['result']['error']
            await asyncio.sleep(0.3)
            assert not st.acks(11)
            assert pump1.prices[2] == D('8.120')
            pump1.tick(FLOW)
            pump1.hang()
            await st.until(lambda: st.acks(11))
            assert st.acks(11)[0]['status'] == 'acked'
            assert pump1.prices[2] == D('8.220')
            await st.until(lambda: st.completed())
            sale, = st.completed()
            # the sale kept the price it was authorised at
            assert sale['payload']['unit_price'] == D('8.120')
            assert sale['payload']['amount'] == D('8.12')

    run(main())


def resend(server: FakeServer, command_id: int) -> None:
    "The server gives a command again (an operator sent it again)"
    with server.changed:
        server.command_state[command_id] = 'pending'
        server.changed.notify_all()


def test_repeated_command_not_executed_twice(
        tmp_path: pathlib.Path, server: FakeServer,
        caplog: pytest.LogCaptureFixture) -> None:
    server.policy = {**POLICY, 'authorization': 'prepay'}
    caplog.set_level(logging.INFO, logger='iot_box.app')

    async def main() -> None:
        async with station(tmp_path, server) as st:
            pump = st.pumps[1]
            server.add_command(20, 'authorize', {
                    'version': 1, 'station_number': 3,
                    'preset_amount': '10.00', 'preset_volume': None})
            await st.until(lambda: st.acks(20))
            assert pump.status is PumpStatus.AUTHORIZED
            assert pump.preset_amount == D('10.00')
            server.add_command(21, 'stop', {'version': 1, 'station_number': 3})
            await st.until(lambda: st.acks(21))
            await st.until(lambda: pump.status is PumpStatus.RESET)
            resend(server, 20)
            await st.until(lambda: len(st.acks(20)) == 2)
            await asyncio.sleep(0.2)
            assert pump.status is PumpStatus.RESET  # not authorised again
            first, second = st.acks(20)
            assert first == second
        # across a restart too
        async with station(
                tmp_path, server, pumps=st.pumps, programmed=False) as st:
            resend(server, 20)
            await st.until(lambda: len(st.acks(20)) == 3)
            await asyncio.sleep(0.2)
            assert st.pumps[1].status is PumpStatus.RESET
            assert st.acks(20)[2] == st.acks(20)[0]
        assert 'command 20 (authorize) already executed' in caplog.text

    run(main())


def test_authorize_ignored_by_the_pump_failed_and_not_recorded(
        tmp_path: pathlib.Path, server: FakeServer) -> None:
    server.policy = {**POLICY, 'authorization': 'prepay'}

    async def main() -> None:
        async with station(tmp_path, server) as st:
            pump = st.pumps[1]
            pump.faults = Faults(ignore=frozenset({Command.AUTHORIZE}))
            pump.lift(1)
            server.add_command(50, 'authorize', {
                    'version': 1, 'station_number': 3,
                    'preset_amount': '10.00', 'preset_volume': None})
            await st.until(lambda: st.acks(50))
            ack, = st.acks(50)
            assert ack['status'] == 'failed'
            assert set(ack['result']) == {'version', 'error'}
            assert ack['result']['version'] == 1
            error = ack['result']['error']
            assert 'not executed' in error and 'pump-2' in error
            assert f'within {CONFIRM_POLLS} polls' in error
            assert pump.status is PumpStatus.RESET
            # not recorded: sent again, it is executed again
            assert st.app.outbox.command_result('command:50') is None
            pump.faults = None
            resend(server, 50)
            await st.until(lambda: len(st.acks(50)) == 2)
            assert st.acks(50)[1]['status'] == 'acked'
            assert pump.status is PumpStatus.AUTHORIZED
            assert st.app.outbox.command_result('command:50') is not None

    run(main())


def test_postpay_authorisation_ignored_is_retried_a_few_times(
        tmp_path: pathlib.Path, server: FakeServer,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger='iot_box.app')

    def failures() -> list[logging.LogRecord]:
        return [
            r for r in caplog.records if r.name == 'iot_box.app'
            and 'not authorised by the box' in r.getMessage()]

    async def main() -> None:
        async with station(tmp_path, server) as st:
            pump = st.pumps[0]
            pump.faults = Faults(ignore=frozenset({Command.AUTHORIZE}))
            pump.lift(2)
            attempts = AUTO_AUTHORIZE_RETRIES + 1
            await st.until(lambda: len(failures()) == attempts)
            await asyncio.sleep(0.3)  # many polls: no more attempts
            assert len(failures()) == attempts
            *retried, given_up = failures()
            assert all(r.levelno == logging.WARNING for r in retried)
            assert given_up.levelno == logging.ERROR
            assert given_up.getMessage().startswith('pump-1: nozzle 2 ')
            assert 'hung up' in given_up.getMessage()
            assert pump.status is PumpStatus.RESET
            # hung up and lifted again: tried again, and authorised now
            pump.faults = None
            pump.hang()
            await asyncio.sleep(0.1)
            pump.lift(2)
            await st.until(lambda: pump.status is PumpStatus.AUTHORIZED)
            assert len(failures()) == attempts

    run(main())


def test_configuration_command_and_server_without_wait(
        tmp_path: pathlib.Path, server: FakeServer) -> None:
    server.missing = {'wait', 'heartbeat'}

    async def main() -> None:
        async with station(tmp_path, server) as st:
            server.add_command(40, 'configuration', {'version': 1})
            await st.until(lambda: st.acks(40))
            assert st.acks(40)[0]['status'] == 'acked'
            assert len(server.routes('setup')) == 2
            assert st.app.link is LinkState.ONLINE

    run(main())


# --- fallback -------------------------------------------------------------

def test_fallback_sale_then_replay(
        tmp_path: pathlib.Path, server: FakeServer) -> None:
    async def main() -> None:
        async with station(tmp_path, server) as st:
            pump1, pump2 = st.pumps
            await st.sale(pump1, 1, 2)
            await st.until(lambda: len(st.completed()) == 1)
            server.mode = 'down'
            await st.until(lambda: st.app.link is LinkState.FALLBACK)
            await st.sale(pump2, 2, 4)
            # min(150.00, 100.000 x 9.990): the local limits
            await st.until(lambda: st.app.fallback.totals.totals())
            total, = st.app.fallback.totals.totals()
            assert (total.station_number, total.count) == (4, 1)
            assert (total.volume, total.amount) == (D('2.000'), D('19.98'))
            status = st.app.status()
            assert status['link'] == 'fallback'
            assert status['fallback']['active'] is True
            assert status['fallback']['totals'][0]['amount'] == '19.98'
            assert status['outbox']['depth'] > 0
            assert len(st.completed()) == 1

            server.mode = 'ok'
            await st.until(lambda: st.app.link is LinkState.ONLINE)
            await st.until(lambda: not st.app.outbox.depth())
            first, second = st.completed()
            assert 'fallback' not in first['payload']
            assert second['payload']['fallback'] is True
            assert second['payload']['volume'] == D('2.000')
            assert second['payload']['amount'] == D('19.98')
            uuids = [e['uuid'] for e in server.events]
            assert len(uuids) == len(set(uuids))
            seqs = [e['seq'] for e in server.events]
            assert seqs == list(range(1, len(seqs) + 1))
            assert st.app.fallback_exits == 1
            assert st.app.status()['fallback']['exits'] == 1
        # the totals survive a restart
        async with station(
                tmp_path, server, pumps=st.pumps, programmed=False) as st:
            assert st.app.status()['fallback']['totals'][0]['count'] == 1

    run(main())


def test_fallback_disabled_authorises_nothing(
        tmp_path: pathlib.Path, server: FakeServer) -> None:
    # no threshold in Timing: the configuration's `[fallback] after`
    timing = dataclasses.replace(TIMING, fallback_threshold=None)

    async def main() -> None:
        async with station(
                tmp_path, server, mode=FallbackMode.DISABLED, after=0.4,
                timing=timing) as st:
            assert st.app.fallback.threshold == 0.4
            server.mode = 'down'
            await st.until(lambda: st.app.link is LinkState.FALLBACK)
            st.pumps[0].lift(1)
            await asyncio.sleep(0.3)
            assert st.pumps[0].status is PumpStatus.RESET

    run(main())


# --- the box restarted mid-fill ---------------------------------------------

def test_box_restarted_mid_fill_closes_the_sale_and_serves_the_line(
        tmp_path: pathlib.Path, server: FakeServer,
        caplog: pytest.LogCaptureFixture) -> None:
    """The box stops dead mid-fill (no chance to close anything) and is
    started again on the same outbox after the nozzle was hung: the sale
    is recorded once, on its nozzle, at the price the pump sold at, with
    the whole volume; and the other pump of the line, which the restarted
    box's first block reaches with the same sequence and content as the
    last block it received, is still served"""
    caplog.set_level(logging.INFO)
    server.policy = {**POLICY, 'max_amount': '150.00'}  # 12.5 L fit
    prices = {1: '7.990', 2: '8.090', 3: '6.500', 4: '9.990'}
    server.nozzles = [
        {**n, 'unit_price': D(prices[n['station_number']])}
        for n in nozzles_answer()]

    async def main() -> None:
        pumps = demo_pumps(2, 2)
        pump1, pump2 = pumps
        async with PumpServer(pumps) as line:
            _, port = await line.start_udp()
            config = box_config(tmp_path, server.url, port)

            async def start() -> Station:
                app = App(config, timing=TIMING)
                st = Station(app, asyncio.create_task(app.run()), pumps,
                    server)
                await st.until(lambda: app.status_server is not None)
                return st

            # an earlier run programmed the pumps
            st = await start()
            await st.until(lambda: all(
                    p.status is PumpStatus.RESET for p in pumps))
            st.app.stop()
            await asyncio.wait_for(st.task, STEP_TIMEOUT)

            # this run finds them programmed: RETURN_STATUS is all it
            # sends to pump 0x51 (its last block, as the next run's first)
            st = await start()
            await st.until(lambda: all(
                    d.pump_status is PumpStatus.RESET
                    for d in st.app.drivers.values()))
            pump1.lift(2)
            await st.until(lambda: pump1.status is PumpStatus.AUTHORIZED)
            for _ in range(10):
                pump1.tick(FLOW)
                await asyncio.sleep(0.01)
            # dead: its tasks end where they are, nothing closes the sale
            st.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(st.task, STEP_TIMEOUT)
            assert not st.completed()
            pump1.tick(D('7.500'))  # the pump goes on without the box
            pump1.hang()
            assert pump1.status is PumpStatus.FILLING_COMPLETED
            # meanwhile the price of nozzle 2 changed on the server
            server.nozzles = [
                {**n, 'unit_price': D('8.190')} if n['station_number'] == 2
                else n for n in server.nozzles]

            # what the next run sends first is what pump 0x51 last
            # received: it is ACKed and taken for a repeat
            last = pump2._last_received
            assert last is not None and last.seq == 0
            assert decode_transactions(
                last, Direction.MASTER_TO_PUMP) == (
                CD1Command(Command.RETURN_STATUS),)
            caplog.clear()
            st = await start()
            try:
                await st.until(lambda: pump1.status is PumpStatus.RESET)
                await st.until(
                    lambda: st.completed() and not st.app.outbox.depth())
                sale, = st.completed()
                payload = sale['payload']
                assert sale['device'] == 'pump-1'
                assert (payload['nozzle'], payload['station_nozzle']) == (
                    2, 2)
                assert payload['volume'] == D('12.500')
                assert payload['amount'] == D('101.13')
                # the price the pump sold at, not the server's new one
                assert payload['unit_price'] == D('8.090')
                assert payload['totalizer_volume'] == pump1.totals[2][0]
                assert 'unknown nozzle' not in caplog.text
                assert "differ from the pump's {}" not in caplog.text
                assert "differ from the pump's {2: Decimal('8.090')}" in (
                    caplog.text)

                # the other pump of the line answers the restarted box
                await st.until(lambda: st.app.drivers['pump-2'].pump_status
                    is PumpStatus.RESET)
                await st.sale(pump2, 2, 2)
                await st.until(lambda: len(st.completed()) == 2)
                # its first block was taken for a repeat: asked again
                assert 'pump-2: no status 3 polls after it was asked' in (
                    caplog.text)
                second = st.completed()[1]['payload']
                assert second['station_nozzle'] == 4
                assert second['volume'] == D('1.000')
                assert second['unit_price'] == D('9.990')
                await asyncio.sleep(0.2)  # nothing more comes
                assert len(st.completed()) == 2
            finally:
                st.app.stop()
                await asyncio.wait_for(st.task, STEP_TIMEOUT)

    run(main())


# --- a pump that stops answering ---------------------------------------------

def test_silent_pump_raises_one_alarm_each_way(
        tmp_path: pathlib.Path, server: FakeServer) -> None:
    # a short response timeout: three missed polls in 0.3 s
    timing = dataclasses.replace(TIMING, response_timeout=0.1)

    def statuses() -> list[str]:
        with server.changed:
            return [
                d['status'] for beat in server.heartbeats
                for d in beat['devices'] if d['identifier'] == 'pump-1']

    async def main() -> None:
        async with station(tmp_path, server, timing=timing) as st:
            assert not st.alarms()
            st.pumps[0].silence(1.5)
            await st.until(lambda: st.alarms())
            await st.until(lambda: 'disconnected' in statuses())
            assert st.app.status()['dispensers'][0]['status'] == (
                'disconnected')
            assert st.app.status()['dispensers'][1]['status'] == 'connected'
            await st.until(lambda: len(st.alarms()) == 2)
            await st.until(lambda: statuses()[-1] == 'connected')
            await asyncio.sleep(0.3)  # no more alarms
            silent, again = st.alarms()
            assert (silent['device'], again['device']) == ('pump-1', 'pump-1')
            assert silent['payload']['code'] == AlarmCode.NOT_ANSWERING
            assert again['payload']['code'] == AlarmCode.ANSWERING_AGAIN
            assert 'does not answer' in silent['payload']['message']
            assert 'pump-1' in silent['payload']['message']
            assert silent['payload']['version'] == 1
            assert silent['seq'] < again['seq']
            assert len(st.alarms()) == 2

    run(main())


# --- link refused, status page --------------------------------------------

def test_auth_error_marks_the_link_refused(
        tmp_path: pathlib.Path, server: FakeServer) -> None:
    server.mode = 'auth'

    async def main() -> None:
        async with station(tmp_path, server, programmed=False) as st:
            await st.until(lambda: st.app.link is LinkState.REFUSED)
            await asyncio.sleep(0.2)
            # not hammered: one setup per auth_retry
            assert len(server.routes('setup')) <= 2
            assert st.app.status()['link'] == 'refused'
            assert st.pumps[0].status is PumpStatus.NOT_PROGRAMMED
            server.mode = 'ok'
            await st.until(lambda: st.app.link is LinkState.ONLINE)
            # programmed once the prices are known
            await st.until(lambda: st.pumps[0].status is PumpStatus.RESET)

    run(main())


async def http_get(port: int, path: str) -> tuple[str, str]:
    reader, writer = await asyncio.open_connection('127.0.0.1', port)
    try:
        writer.write(f'GET {path} HTTP/1.1\r\nHost: x\r\n\r\n'.encode())
        data = await reader.read()
    finally:
        writer.close()
    head, _, body = data.decode().partition('\r\n\r\n')
    return head.split('\r\n')[0], body


def test_status_json(tmp_path: pathlib.Path, server: FakeServer) -> None:
    async def main() -> None:
        async with station(tmp_path, server) as st:
            st.pumps[0].lift(2)
            await st.until(
                lambda: st.pumps[0].status is PumpStatus.AUTHORIZED)
            assert st.app.status_server is not None
            port = st.app.status_server.port
            line, body = await http_get(port, '/status.json')
            assert line == 'HTTP/1.0 200 OK'
            status = json.loads(body)
            assert KEY not in body
            assert status['box'] == 'box-st001'
            assert status['station_code'] == 'ST001'
            assert status['link'] == 'online'
            assert status['last_sync'] is not None
            assert status['outbox']['last_seq'] >= 1
            assert status['policy']['max_amount'] == '100.00'
            pump1, pump2 = status['dispensers']
            assert pump1['name'] == 'pump-1' and pump1['address'] == '0x50'
            assert pump1['status'] == 'connected'
            assert pump1['fp_state'] in {'authorised', 'started'}
            assert pump1['price_set_id'] == 7
            assert pump1['nozzles'][1] == {
                'station_number': 2, 'nozzle': 2, 'out': True,
                'unit_price': '8.120'}
            assert pump2['fp_state'] == 'idle'
            assert status['fallback']['active'] is False
            line, body = await http_get(port, '/')
            assert line == 'HTTP/1.0 200 OK'
            assert 'box-st001' in body and 'http-equiv="refresh"' in body
            line, _ = await http_get(port, '/nope')
            assert line.startswith('HTTP/1.0 404')

    run(main())


# --- the command line -------------------------------------------------------

def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


def test_cli_run_stops_cleanly_on_sigterm(
        tmp_path: pathlib.Path, server: FakeServer) -> None:
    (tmp_path / 'box.key').write_text(KEY)
    (tmp_path / 'box.key').chmod(0o600)
    config = tmp_path / 'box.toml'
    config.write_text(f"""
station_code = "ST001"
outbox_path = "outbox.sqlite"
status_listen = "127.0.0.1:{free_port()}"
[server]
url = "{server.url}"
database = "{DATABASE}"
key_file = "box.key"
[fallback]
max_amount = 150.00
max_volume = 100.000
[[dispensers]]
name = "pump-1"
connection = "udp"
host = "127.0.0.1"
port = {free_port()}
address = 0x50
nozzles = [{{number = 1, station_number = 1}}]
""")
    timer = threading.Timer(1.0, os.kill, (os.getpid(), signal.SIGTERM))
    timer.start()
    try:
        assert main(['run', '--config', str(config)]) == 0
    finally:
        timer.cancel()
    setup, = server.routes('setup')[:1]
    assert setup.data['identifier'] == 'ST001'  # the station code
    assert (tmp_path / 'outbox.sqlite').exists()
