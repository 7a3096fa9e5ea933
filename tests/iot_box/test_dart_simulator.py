# This file is part of fuelpay.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""The simulated DART pump as a state machine, driven frame by frame"""
from __future__ import annotations

import asyncio
import contextlib
import os
import pathlib
import select
import signal
import subprocess
import sys
import tty
from collections.abc import Iterator
from decimal import Decimal

import pytest

from iot_box.protocols.dart import (
    CD1Command,
    CD2AllowedNozzles,
    CD3PresetVolume,
    CD4PresetAmount,
    CD5PriceUpdate,
    CD101RequestTotals,
    Command,
    ControlType,
    CrcError,
    DC1Status,
    DC2FilledVolumeAmount,
    DC3PriceNozzle,
    DC7PumpParameters,
    DC9Identity,
    DC101Totals,
    Direction,
    Frame,
    PumpParameters,
    PumpStatus,
    Transaction,
    decode_frame,
    decode_transactions,
    encode_frame,
    encode_messages,
    make_control,
    next_seq,
)
from iot_box.simulators.dart_pump import (
    Faults,
    SimulatedPump,
    SimulatedStation,
    auto_fill,
    demo_pumps,
    load_totals,
    run_flow,
    save_totals,
)

D = Decimal
ROOT = pathlib.Path(__file__).resolve().parents[2]
PRICES = CD5PriceUpdate((D('7.890'), D('8.120')))
NOZZLES = {1: 'unleaded 95', 2: 'diesel'}


class Master:
    "The master side of the line, talking to one pump without transport"

    def __init__(self, pump: SimulatedPump) -> None:
        self.pump = pump
        self.seq = 0

    def send(self, *messages) -> Frame:
        "One DATA block; returns the pump's answer (ACK or NAK)"
        frame = Frame(
            self.pump.address, make_control(ControlType.DATA, self.seq),
            encode_messages(messages, self.pump.params))
        self.seq = next_seq(self.seq)
        return self.send_frame(frame)

    def send_frame(self, frame: Frame) -> Frame:
        replies = self.pump.handle(frame)
        assert len(replies) == 1
        return decode_frame(replies[0])

    def poll(self, ack: bool = True) -> tuple:
        "The messages of the pump's block (ACKed), () on EOT"
        replies = self.pump.handle(Frame(self.pump.address, 0x20))
        assert len(replies) == 1
        frame = decode_frame(replies[0])
        if frame.kind is ControlType.EOT:
            return ()
        assert frame.kind is ControlType.DATA
        if ack:
            assert self.pump.handle(Frame(
                self.pump.address,
                make_control(ControlType.ACK, frame.seq))) == []
        return decode_transactions(
            frame, Direction.PUMP_TO_MASTER, self.pump.params)


def programmed(address: int = 0x51) -> tuple[SimulatedPump, Master]:
    "A pump with prices, in RESET, nothing pending"
    pump = SimulatedPump(address, NOZZLES)
    master = Master(pump)
    assert master.send(PRICES, CD1Command(Command.RESET)).kind is (
        ControlType.ACK)
    assert master.poll() == (DC1Status(PumpStatus.RESET),)
    return pump, master


def test_typical_sale():
    pump = SimulatedPump(0x51, NOZZLES)
    master = Master(pump)
    assert pump.status is PumpStatus.NOT_PROGRAMMED
    assert master.poll() == ()  # EOT: nothing to say
    # RESET before prices is refused: ACKed, status unchanged
    assert master.send(CD1Command(Command.RESET)).kind is ControlType.ACK
    assert master.poll() == (DC1Status(PumpStatus.NOT_PROGRAMMED),)

    assert master.send(PRICES).kind is ControlType.ACK
    assert pump.status is PumpStatus.NOT_PROGRAMMED
    master.send(CD1Command(Command.RESET))
    assert master.poll() == (DC1Status(PumpStatus.RESET),)

    pump.lift(1)
    assert master.poll() == (DC3PriceNozzle(D('7.890'), 1, True),)
    master.send(CD1Command(Command.AUTHORIZE))
    assert master.poll() == (DC1Status(PumpStatus.AUTHORIZED),)

    assert pump.tick(D('10.000')) == D('10.000')
    assert master.poll() == (
        DC1Status(PumpStatus.FILLING),
        DC2FilledVolumeAmount(D('10.000'), D('78.90')))
    pump.tick(D('7.000'))
    pump.tick(D('8.340'))  # unpolled running totals: the latest only
    assert master.poll() == (
        DC2FilledVolumeAmount(D('25.340'), D('199.93')),)
    pump.hang()
    assert master.poll() == (
        DC3PriceNozzle(D('7.890'), 1, False),
        DC1Status(PumpStatus.FILLING_COMPLETED))
    assert pump.tick(D('1.000')) == 0  # the valve is closed

    master.send(
        CD1Command(Command.RETURN_FILLING_INFORMATION),
        CD101RequestTotals(1))
    # the filling: volume and amount, its nozzle and the price sold at
    assert master.poll() == (
        DC2FilledVolumeAmount(D('25.340'), D('199.93')),
        DC3PriceNozzle(D('7.890'), 1, False),
        DC101Totals(1, D('25.340'), D('199.93')))
    master.send(CD1Command(Command.RESET))
    assert master.poll() == (DC1Status(PumpStatus.RESET),)
    assert (pump.filled_volume, pump.filled_amount) == (0, 0)


def test_totalizers_advance_by_exactly_the_sale():
    pump, master = programmed()
    sales = []
    for nozzle, ticks in ((1, ['0.333'] * 7), (2, ['1.001', '0.005', '2'])):
        before = [list(pump.totals[n]) for n in (1, 2)]
        pump.lift(nozzle)
        master.send(CD1Command(Command.AUTHORIZE))
        for volume in ticks:
            pump.tick(D(volume))
        pump.hang()
        master.poll()
        master.send(CD1Command(Command.RETURN_FILLING_INFORMATION))
        final, dc3 = master.poll()
        assert dc3 == DC3PriceNozzle(PRICES.prices[nozzle - 1], nozzle, False)
        assert isinstance(final, DC2FilledVolumeAmount)
        # the amount is computed from the whole volume, never summed
        price = PRICES.prices[nozzle - 1]
        assert final.volume == sum(map(D, ticks))
        assert final.amount == (final.volume * price).quantize(D('0.01'))
        after = [list(pump.totals[n]) for n in (1, 2)]
        other = 2 - nozzle
        assert after[other] == before[other]
        assert after[nozzle - 1] == [
            before[nozzle - 1][0] + final.volume,
            before[nozzle - 1][1] + final.amount]
        sales.append(final)
        master.send(CD1Command(Command.RESET))
        master.poll()
    assert sales[0] == DC2FilledVolumeAmount(D('2.331'), D('18.39'))
    master.send(*(CD101RequestTotals(c) for c in (1, 2, 9)))
    assert master.poll() == (
        DC101Totals(1, D('2.331'), D('18.39')),
        DC101Totals(2, D('3.006'), D('24.41')),
        DC101Totals(9, D('5.337'), D('42.80')))


def test_preset_volume_reached():
    pump, master = programmed()
    pump.lift(2)
    master.send(CD3PresetVolume(D('20.000')), CD1Command(Command.AUTHORIZE))
    master.poll()
    assert pump.tick(D('15.000')) == D('15.000')
    assert pump.tick(D('15.000')) == D('5.000')
    assert pump.status is PumpStatus.MAX_REACHED
    assert master.poll()[-2:] == (
        DC2FilledVolumeAmount(D('20.000'), D('162.40')),
        DC1Status(PumpStatus.MAX_REACHED))
    assert pump.tick(D('1.000')) == 0
    assert pump.totals[2] == [D('20.000'), D('162.40')]


def test_preset_amount_reached_exactly():
    pump, master = programmed()
    pump.lift(1)
    master.send(CD4PresetAmount(D('50.00')), CD1Command(Command.AUTHORIZE))
    pump.tick(D('6.000'))
    pump.tick(D('6.000'))
    assert pump.status is PumpStatus.MAX_REACHED
    # 6.337 l x 7.890 = 49.99893 -> 50.00; one more millilitre is 50.01
    assert (pump.filled_volume, pump.filled_amount) == (
        D('6.337'), D('50.00'))


def test_authorize_refused_outside_reset():
    pump = SimulatedPump(0x50, NOZZLES)
    master = Master(pump)
    reply = master.send(CD1Command(Command.AUTHORIZE))
    assert reply.kind is ControlType.ACK  # received; refused, not NAKed
    assert master.poll() == (DC1Status(PumpStatus.NOT_PROGRAMMED),)
    pump, master = programmed()
    master.send(CD1Command(Command.AUTHORIZE))
    master.poll()
    master.send(CD1Command(Command.AUTHORIZE))  # already authorized
    assert master.poll() == (DC1Status(PumpStatus.AUTHORIZED),)
    master.send(CD1Command(Command.STOP))  # an empty sale ends
    assert master.poll() == (DC1Status(PumpStatus.FILLING_COMPLETED),)
    master.send(CD1Command(Command.AUTHORIZE))
    assert master.poll() == (DC1Status(PumpStatus.FILLING_COMPLETED),)
    pump.lift(1)
    assert pump.tick(D('1.000')) == 0


def test_price_change_refused_while_filling():
    pump, master = programmed()
    pump.lift(1)
    master.send(CD1Command(Command.AUTHORIZE))
    pump.tick(D('1.000'))
    master.poll()
    new_prices = CD5PriceUpdate((D('9.990'), D('9.990')))
    assert master.send(new_prices).kind is ControlType.ACK
    assert master.poll() == (DC1Status(PumpStatus.FILLING),)
    pump.tick(D('1.000'))
    assert pump.filled_amount == D('15.78')  # 2 l at the old 7.890
    master.send(CD1Command(Command.RESET))  # not while filling either
    assert pump.status is PumpStatus.FILLING
    master.send(CD1Command(Command.STOP))
    master.send(new_prices)  # completed: accepted, for the next sale
    assert pump.prices == {1: D('9.990'), 2: D('9.990')}
    assert pump.filled_amount == D('15.78')
    assert master.poll()[-2:] == (
        DC1Status(PumpStatus.FILLING_COMPLETED),
        DC3PriceNozzle(D('9.990'), 1, True))


def test_allowed_nozzles():
    pump, master = programmed()
    master.send(CD2AllowedNozzles((2,)), CD1Command(Command.AUTHORIZE))
    pump.lift(1)
    assert pump.tick(D('1.000')) == 0
    pump.hang()
    pump.lift(2)
    assert pump.tick(D('1.000')) == D('1.000')
    with pytest.raises(ValueError, match='already out'):
        pump.lift(1)
    with pytest.raises(ValueError, match='decimals'):
        pump.tick(D('0.0001'))


def test_parameters_and_identity():
    params = PumpParameters(2, 2, 2)
    pump = SimulatedPump(0x6F, {1: 'diesel'}, params, identity=1234567890)
    master = Master(pump)
    master.send(
        CD1Command(Command.RETURN_PUMP_PARAMETERS),
        CD1Command(Command.RETURN_IDENTITY))
    assert master.poll() == (
        DC7PumpParameters(params, D('9999.00')), DC9Identity(1234567890))


def test_block_sequences_and_repeats():
    pump, master = programmed(0x52)
    master.send(CD101RequestTotals(1))
    first = pump.handle(Frame(0x52, 0x20))
    again = pump.handle(Frame(0x52, 0x20))  # not ACKed: sent again
    assert first == again
    frame = decode_frame(first[0])
    assert frame.kind is ControlType.DATA and frame.seq == 1
    assert pump.handle(Frame(0x52, make_control(ControlType.NAK, 1))) == (
        first)
    assert pump.handle(Frame(0x52, make_control(ControlType.ACK, 1))) == []
    eot = decode_frame(pump.handle(Frame(0x52, 0x20))[0])
    assert (eot.kind, eot.seq) == (ControlType.EOT, 2)

    # a repeated block (our ACK was lost) is ACKed, not executed twice
    block = Frame(0x52, 0x37, encode_messages([CD101RequestTotals(2)]))
    assert master.send_frame(block) == Frame(0x52, 0xC7)
    assert master.send_frame(block) == Frame(0x52, 0xC7)
    assert master.poll() == (DC101Totals(2, D(0), D(0)),)

    # a block that does not decode is NAKed, and none of it is executed
    bad = Frame(0x52, 0x38, (
        CD1Command(Command.AUTHORIZE).encode(), Transaction(0x01, b'\x01')))
    assert master.send_frame(bad) == Frame(0x52, 0x58)
    assert pump.status is PumpStatus.RESET
    assert pump.handle(Frame(0x53, 0x20)) == []  # not this pump's address


def test_nozzle_numbers_checked():
    with pytest.raises(ValueError):
        SimulatedPump(0x50, {1: 'a', 3: 'b'})
    with pytest.raises(ValueError):
        demo_pumps(33)
    assert [p.address for p in demo_pumps(3)] == [0x50, 0x51, 0x52]


@contextlib.contextmanager
def simulator(*args: str) -> Iterator[tuple[subprocess.Popen[str], int]]:
    """Run python -m iot_box.simulators.dart_pump on a free UDP port;
    yield the process and the port, killed if still running at the end"""
    process = subprocess.Popen(
        [sys.executable, '-m', 'iot_box.simulators.dart_pump',
            '--udp', '127.0.0.1:0', *args],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
        text=True, env={**os.environ, 'PYTHONPATH': str(ROOT)})
    try:
        assert process.stdout is not None
        line = process.stdout.readline()  # printed once bound
        assert line.startswith('DART line on udp:127.0.0.1:'), line
        yield process, int(line.rsplit(':', 1)[1])
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=5)
        if process.stdout is not None:
            process.stdout.close()


def test_command_line_serves_udp_until_ctrl_c():
    "python -m iot_box.simulators.dart_pump answers a POLL, stops on SIGINT"
    with simulator('--pumps', '2') as (process, port):
        assert asyncio.run(_poll_udp(port, 0x51)) == encode_frame(0x51, 0x70)
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=5) == 0


async def _poll_udp(port: int, address: int) -> bytes:
    from iot_box.interfaces.udp import UdpTransport
    async with UdpTransport('127.0.0.1', port) as line:
        await line.send(encode_frame(address, 0x20))
        return await line.receive(timeout=5)


# --- faults, power, fills that run by themselves ---------------------------

def test_faults_are_deterministic_and_checked():
    def run(seed: int) -> list[bytes]:
        pump, _ = programmed()
        pump.faults = Faults(crc_error_rate=0.5, drop_rate=0.3, seed=seed)
        pump.lift(1)
        out = []
        for _ in range(30):
            out += pump.respond(Frame(pump.address, 0x20))
        return out

    first = run(5)
    assert first == run(5)  # same seed, same faults
    assert first != run(6)
    bad = 0
    for raw in first:
        try:
            decode_frame(raw)
        except CrcError:
            bad += 1
    assert bad and len(first) < 30  # corrupted and lost ones
    with pytest.raises(ValueError):
        Faults(drop_rate=1.5)


def test_ignored_command_is_acked_and_reports_the_status():
    pump, master = programmed()
    pump.faults = Faults(ignore=frozenset({Command.AUTHORIZE}))
    pump.lift(1)
    frame = Frame(
        pump.address, make_control(ControlType.DATA, master.seq),
        encode_messages([CD1Command(Command.AUTHORIZE)]))
    ack, = pump.respond(frame)
    assert decode_frame(ack).kind is ControlType.ACK
    assert pump.status is PumpStatus.RESET
    assert DC1Status(PumpStatus.RESET) in master.poll()


def test_silence_and_server_faults_reach_the_pump():
    pump, _ = programmed()
    pump.silence(60)
    assert pump.respond(Frame(pump.address, 0x20)) == []
    pump.silence(0)
    assert pump.respond(Frame(pump.address, 0x20)) != []
    assert pump.respond(Frame(0x5F, 0x20)) == []  # not its address
    lossy = Faults(drop_rate=1.0)
    assert pump.respond(Frame(pump.address, 0x20), lossy) == []
    assert lossy.dropped == 1


def test_power_on_reset_keeps_only_the_totals():
    pump, master = programmed()
    pump.lift(1)
    master.send(CD1Command(Command.AUTHORIZE))
    pump.tick(D('2.000'))
    master.poll()
    pump.power_on_reset()
    assert pump.status is PumpStatus.NOT_PROGRAMMED
    assert pump.prices == {} and pump.filled_volume == 0
    assert pump.totals[1] == [D('2.000'), D('15.78')]
    assert pump.tick(D('1.000')) == 0
    master.seq = 0  # the pump's line state restarted too
    assert master.poll() == (DC1Status(PumpStatus.NOT_PROGRAMMED),)


def test_power_loss_mid_fill_keeps_the_filling():
    pump, master = programmed()
    pump.lift(2)
    master.send(CD1Command(Command.AUTHORIZE))
    pump.tick(D('1.500'))
    master.poll()
    pump.power_loss()
    assert pump.tick(D('1.000')) == 0
    assert pump.respond(Frame(pump.address, 0x20)) == []
    pump.power_restored()
    assert pump.status is PumpStatus.FILLING_COMPLETED
    messages = master.poll()
    assert DC1Status(PumpStatus.FILLING_COMPLETED) in messages
    assert pump.filled_volume == D('1.500')
    assert pump.filled_amount == D('12.18')
    assert pump.prices == dict(enumerate(PRICES.prices, 1))
    master.send(CD1Command(Command.RETURN_FILLING_INFORMATION))
    assert master.poll() == (
        DC2FilledVolumeAmount(D('1.500'), D('12.18')),
        DC3PriceNozzle(D('8.120'), 2, True))


def test_auto_fill_and_run_flow_in_real_time():
    async def main():
        pump, master = programmed()
        pump.flow_rate = D('20')  # fast: the test lasts a fraction of a s
        filling = asyncio.create_task(auto_fill(
            pump, 1, D('3.000'), interval=0.01))
        await asyncio.sleep(0.05)
        assert pump.nozzle_out == 1 and pump.status is PumpStatus.RESET
        master.send(CD1Command(Command.AUTHORIZE))  # the box's answer
        assert await asyncio.wait_for(filling, 5) == D('3.000')
        assert pump.nozzle_out is None
        assert pump.status is PumpStatus.FILLING_COMPLETED
        assert pump.totals[1][0] == D('3.000')
        # never authorised: the customer gives up
        assert await auto_fill(
            pump, 2, D('1.000'), authorize_wait=0.05, interval=0.01) == 0
        assert pump.nozzle_out is None

        master.send(CD1Command(Command.RESET))
        pump.lift(2)
        master.send(CD1Command(Command.AUTHORIZE))
        flowing = asyncio.create_task(run_flow([pump], interval=0.01))
        try:
            for _ in range(200):
                if pump.filled_volume >= D('1.000'):
                    break
                await asyncio.sleep(0.01)
        finally:
            flowing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await flowing
        assert pump.filled_volume >= D('1.000')
        assert pump.status is PumpStatus.FILLING
    asyncio.run(main())


def test_simulated_station_fills_now_and_then():
    async def main():
        pumps = demo_pumps(2)
        masters = [Master(pump) for pump in pumps]
        for pump, master in zip(pumps, masters, strict=True):
            pump.flow_rate = D('50')
            master.send(PRICES, CD1Command(Command.RESET))
        station = SimulatedStation(
            pumps, 0.02, volumes=(D('1'), D('2')), seed=3)
        running = asyncio.create_task(station.run())
        try:
            for _ in range(300):  # a box: authorise what is lifted
                for pump, master in zip(pumps, masters, strict=True):
                    if pump.nozzle_out and pump.status is PumpStatus.RESET:
                        master.send(CD1Command(Command.AUTHORIZE))
                    elif pump.status is PumpStatus.FILLING_COMPLETED and (
                            pump.nozzle_out is None):
                        master.send(CD1Command(Command.RESET))
                if len(station.fills) >= 3:
                    break
                await asyncio.sleep(0.01)
        finally:
            running.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await running
        assert len(station.fills) >= 3
        for _, _, volume in station.fills:
            assert D('1') <= volume <= D('2')
    asyncio.run(main())


def test_command_line_serves_a_pty():
    "--pty prints the device path; a POLL written there is answered"
    process = subprocess.Popen(
        [sys.executable, '-m', 'iot_box.simulators.dart_pump',
            '--pty', '--pumps', '1', '--auto-fill-every', '60',
            '--flow-rate', '0.8', '--drop-rate', '0', '--seed', '1'],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, env={**os.environ, 'PYTHONPATH': str(ROOT)})
    try:
        line = process.stdout.readline()
        assert line.startswith('DART line on pty:/dev/'), line
        path = line.split(':', 1)[1].strip()
        fd = os.open(path, os.O_RDWR | os.O_NOCTTY)
        try:
            tty.setraw(fd)
            os.write(fd, encode_frame(0x50, 0x20))
            ready, _, _ = select.select([fd], [], [], 5)
            assert ready
            assert os.read(fd, 100) == encode_frame(0x50, 0x70)  # EOT
        finally:
            os.close(fd)
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=5) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=5)
        process.stdout.close()
        process.stderr.close()


def test_totals_survive_a_restart(tmp_path: pathlib.Path) -> None:
    "--state: a restarted simulator goes on from its totalizers"
    state = tmp_path / 'pumps.json'
    pumps = demo_pumps(2)
    pumps[1].totals[2] = [Decimal('1234.567'), Decimal('9876.54')]
    load_totals(pumps, state)  # no file yet: unchanged
    assert pumps[1].totals[2] == [Decimal('1234.567'), Decimal('9876.54')]
    save_totals(pumps, state)

    restarted = demo_pumps(2)
    load_totals(restarted, state)
    assert restarted[1].totals == pumps[1].totals
    assert restarted[0].totals[1] == [Decimal(0), Decimal(0)]
    assert isinstance(restarted[1].totals[2][0], Decimal)


def test_command_line_keeps_state_on_sigterm(tmp_path: pathlib.Path) -> None:
    "--state FILE: totals loaded at start and written when terminated"
    state = tmp_path / 'pumps.json'
    pumps = demo_pumps(1)
    pumps[0].totals[1] = [D('500.000'), D('3945.00')]
    save_totals(pumps, state)
    with simulator('--pumps', '1', '--state', str(state)) as (process, _):
        state.unlink()
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=5) == 0
    restarted = demo_pumps(1)
    load_totals(restarted, state)
    assert restarted[0].totals[1] == [D('500.000'), D('3945.00')]
