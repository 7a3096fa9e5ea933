# This file is part of fuelpay.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""Transports over real loopback UDP and TCP (to the simulated pumps) and
over a pty pair (serial); every wait is bounded"""
from __future__ import annotations

import asyncio
import os
import select
import socket
import time
from decimal import Decimal

import pytest

from iot_box.interfaces.serial import SerialTransport
from iot_box.interfaces.tcp import TcpTransport
from iot_box.interfaces.transport import (
    Transport,
    TransportClosedError,
    TransportError,
)
from iot_box.interfaces.udp import UdpTransport
from iot_box.protocols.dart import (
    CD1Command,
    CD5PriceUpdate,
    CD101RequestTotals,
    Command,
    ControlType,
    DC1Status,
    DC2FilledVolumeAmount,
    DC3PriceNozzle,
    DC101Totals,
    Direction,
    Frame,
    FrameSplitter,
    PumpStatus,
    decode_frame,
    decode_transactions,
    encode_frame,
    encode_messages,
    make_control,
    next_seq,
)
from iot_box.simulators.dart_pump import PumpServer, SimulatedPump, demo_pumps

D = Decimal
TEST_TIMEOUT = 5.0  # seconds for a whole test: loopback answers in ms
REPLY_TIMEOUT = 2.0  # for one expected answer
SILENCE = 0.2  # how long to wait to show that nothing answers


class LineMaster:
    "The master of a DART line over any transport"

    def __init__(self, line: Transport) -> None:
        self.line = line
        self.splitter = FrameSplitter()
        self.seqs: dict[int, int] = {}
        self.frames: list[bytes] = []  # received, not yet taken

    async def frame(self, timeout: float = REPLY_TIMEOUT) -> Frame | None:
        "The next frame received, None if none within `timeout`"
        deadline = time.monotonic() + timeout
        while not self.frames:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            self.frames += self.splitter.feed(await self.line.receive(left))
        return decode_frame(self.frames.pop(0))

    async def send(self, address: int, *messages) -> Frame | None:
        seq = self.seqs.get(address, 0)
        self.seqs[address] = next_seq(seq)
        await self.line.send(encode_frame(
            address, make_control(ControlType.DATA, seq),
            encode_messages(messages)))
        return await self.frame()

    async def poll(self, address: int) -> tuple:
        await self.line.send(encode_frame(address, 0x20))
        frame = await self.frame()
        assert frame is not None and frame.address == address
        if frame.kind is ControlType.EOT:
            return ()
        await self.line.send(encode_frame(
            address, make_control(ControlType.ACK, frame.seq)))
        return decode_transactions(frame, Direction.PUMP_TO_MASTER)


async def sale_over_the_line(master: LineMaster, server: PumpServer) -> None:
    "A whole sale on pump 0x51 while pump 0x50 shares the line"
    pump = server.pumps[0x51]
    assert await master.poll(0x50) == ()
    ack = await master.send(
        0x51, CD5PriceUpdate((D('7.890'), D('8.120'))),
        CD1Command(Command.RESET))
    assert ack == Frame(0x51, 0xC0)
    assert await master.poll(0x51) == (DC1Status(PumpStatus.RESET),)
    pump.lift(2)
    assert await master.send(0x51, CD1Command(Command.AUTHORIZE)) == (
        Frame(0x51, 0xC1))
    assert await master.poll(0x51) == (
        DC3PriceNozzle(D('8.120'), 2, True),
        DC1Status(PumpStatus.AUTHORIZED))
    pump.tick(D('12.345'))
    pump.hang()
    await master.poll(0x51)
    await master.send(
        0x51, CD1Command(Command.RETURN_FILLING_INFORMATION),
        CD101RequestTotals(2))
    assert await master.poll(0x51) == (
        DC2FilledVolumeAmount(D('12.345'), D('100.24')),
        DC3PriceNozzle(D('8.120'), 2, False),
        DC101Totals(2, D('12.345'), D('100.24')))
    assert await master.poll(0x50) == ()  # the other pump saw nothing
    assert server.pumps[0x50].status is PumpStatus.NOT_PROGRAMMED
    # no pump at 0x52 on this line: silence
    await master.line.send(encode_frame(0x52, 0x20))
    assert await master.frame(SILENCE) is None


def run(coroutine) -> None:
    asyncio.run(asyncio.wait_for(coroutine, TEST_TIMEOUT))


# Loop iterations between an arrival and a cancellation tried by
# `cancel_as_data_arrives`: an arrival reaches the receiving task in about
# four (selector, the wait's future, its task, the caller)
ARRIVAL_STEPS = 10


async def cancel_as_data_arrives(line: Transport, push) -> None:
    """A receive cancelled at each loop iteration around an arrival is
    cancelled (not turned into a result, as asyncio.wait_for does on
    Python 3.11), and the bytes are kept for the next receive"""
    cancelled = 0
    for steps in range(ARRIVAL_STEPS):
        receive = asyncio.create_task(line.receive(REPLY_TIMEOUT))
        for _ in range(3):
            await asyncio.sleep(0)
        assert not receive.done()
        data = bytes([0x40 + steps])
        push(data)
        for _ in range(steps):
            await asyncio.sleep(0)
        if receive.done():
            assert receive.result() == data
            continue
        receive.cancel()
        with pytest.raises(asyncio.CancelledError):
            await receive
        cancelled += 1
        assert await line.receive(REPLY_TIMEOUT) == data
    assert cancelled  # the early steps at least


# --- UDP -------------------------------------------------------------------

def test_udp_sale_with_the_simulator():
    async def main():
        async with PumpServer(demo_pumps(2)) as server:
            host, port = await server.start_udp()
            async with UdpTransport(host, port) as line:
                assert isinstance(line, Transport)
                await sale_over_the_line(LineMaster(line), server)
            assert not line.is_open
    run(main())


def test_udp_frame_split_across_datagrams():
    async def main():
        async with PumpServer([SimulatedPump(0x5A, {1: 'x'})]) as server:
            _, port = await server.start_udp()
            async with UdpTransport('127.0.0.1', port) as line:
                raw = encode_frame(0x5A, 0x30, encode_messages(
                    [CD1Command(Command.RETURN_STATUS)]))
                await line.send(raw[:4])
                assert await line.receive(SILENCE) == b''  # incomplete
                await line.send(raw[4:] + encode_frame(0x5A, 0x20))
                master = LineMaster(line)
                assert await master.frame() == Frame(0x5A, 0xC0)
                poll = await master.frame()  # the second reply
                assert poll is not None and decode_transactions(
                    poll, Direction.PUMP_TO_MASTER) == (
                        DC1Status(PumpStatus.NOT_PROGRAMMED),)
            with pytest.raises(TransportClosedError):
                await line.send(b'\x5a\x20\xfa')
    run(main())


def test_udp_unreachable_gateway_is_reported():
    "Linux reports ICMP port unreachable on a connected UDP socket"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(('127.0.0.1', 0))
        port = probe.getsockname()[1]
    # the port is free now: nobody listens there

    async def main():
        async with UdpTransport('127.0.0.1', port) as line:
            await line.send(b'\x50\x20\xfa')
            with pytest.raises(TransportClosedError, match='refused'):
                await line.receive(REPLY_TIMEOUT)
    run(main())


def test_udp_cancellation_as_a_datagram_arrives_is_not_lost():
    async def main():
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as gateway:
            gateway.bind(('127.0.0.1', 0))
            gateway.settimeout(REPLY_TIMEOUT)
            async with UdpTransport(*gateway.getsockname()) as line:
                await line.send(b'\x00')
                _, box = gateway.recvfrom(16)
                await cancel_as_data_arrives(
                    line, lambda data: gateway.sendto(data, box))
    run(main())


# --- TCP -------------------------------------------------------------------

def test_tcp_cancellation_as_bytes_arrive_is_not_lost():
    async def main():
        connected: asyncio.Queue[asyncio.StreamWriter] = asyncio.Queue()

        async def accept(_, writer: asyncio.StreamWriter) -> None:
            await connected.put(writer)

        gateway = await asyncio.start_server(accept, '127.0.0.1', 0)
        async with gateway:
            host, port = gateway.sockets[0].getsockname()[:2]
            async with TcpTransport(host, port) as line:
                writer = await connected.get()
                try:
                    await cancel_as_data_arrives(line, writer.write)
                finally:
                    writer.close()
    run(main())


def test_tcp_sale_with_the_simulator():
    async def main():
        async with PumpServer(demo_pumps(2)) as server:
            host, port = await server.start_tcp()
            async with TcpTransport(host, port) as line:
                await sale_over_the_line(LineMaster(line), server)
            assert not line.is_open
    run(main())


def test_tcp_disconnect_raises():
    async def main():
        server = PumpServer(demo_pumps(1))
        _, port = await server.start_tcp()
        async with TcpTransport('127.0.0.1', port) as line:
            assert await LineMaster(line).poll(0x50) == ()
            await server.close()
            with pytest.raises(TransportClosedError, match='closed by'):
                await line.receive(REPLY_TIMEOUT)
            assert not line.is_open
            with pytest.raises(TransportClosedError):
                await line.send(b'\x50\x20\xfa')
    run(main())


def test_tcp_connection_refused():
    with socket.socket() as probe:
        probe.bind(('127.0.0.1', 0))
        port = probe.getsockname()[1]

    async def main():
        line = TcpTransport('127.0.0.1', port)
        with pytest.raises(ConnectionRefusedError):
            async with line:
                pytest.fail("opened a closed port")
        assert not line.is_open
    run(main())


# --- serial over a pty pair ----------------------------------------------

def read_fd(fd: int, size: int, timeout: float = REPLY_TIMEOUT) -> bytes:
    "Exactly `size` bytes from the pty master, within `timeout`"
    deadline = time.monotonic() + timeout
    data = b''
    while len(data) < size:
        left = deadline - time.monotonic()
        ready, _, _ = select.select([fd], [], [], max(left, 0))
        if not ready:
            raise TimeoutError(f"{len(data)} of {size} bytes")
        data += os.read(fd, size - len(data))
    return data


@pytest.fixture
def pty_pair():
    "(master fd, slave device path); both ends closed afterwards"
    master, slave = os.openpty()
    try:
        yield master, os.ttyname(slave)
    finally:
        os.close(slave)
        os.close(master)


def test_serial_bytes_flow_both_ways(pty_pair):
    master_fd, path = pty_pair
    every_byte = bytes(range(256))  # 8-bit clean: no XON/XOFF, CR, strip

    async def main():
        async with SerialTransport(path) as line:
            assert line.is_open and line.name == f'serial:{path}'
            await line.send(every_byte)
            assert read_fd(master_fd, 256) == every_byte
            os.write(master_fd, every_byte)
            received = b''
            while len(received) < 256:
                chunk = await line.receive(REPLY_TIMEOUT)
                assert chunk, "timed out"
                received += chunk
            assert received == every_byte
            assert await line.receive(SILENCE) == b''
    run(main())


def test_serial_pump_on_the_pty(pty_pair):
    "The master talks through SerialTransport; the pump plays on the pty"
    master_fd, path = pty_pair
    pump = SimulatedPump(0x50, {1: 'diesel'})
    pump_splitter = FrameSplitter()

    def pump_answers(size: int) -> None:
        frames = pump_splitter.feed(read_fd(master_fd, size))
        for raw in frames:
            for reply in pump.handle(decode_frame(raw)):
                os.write(master_fd, reply[:2])  # part of a frame first
                os.write(master_fd, reply[2:])

    async def main():
        async with SerialTransport(path, baudrate=19200) as line:
            master = LineMaster(line)
            block = encode_frame(0x50, 0x30, encode_messages([
                CD5PriceUpdate((D('1.234'),)), CD1Command(Command.RESET)]))
            await line.send(block)
            pump_answers(len(block))
            assert await master.frame() == Frame(0x50, 0xC0)
            await line.send(b'\x50\x20\xfa')
            pump_answers(3)
            frame = await master.frame()
            assert frame is not None and decode_transactions(
                frame, Direction.PUMP_TO_MASTER) == (
                    DC1Status(PumpStatus.RESET),)
    run(main())


def test_serial_port_closed_after_an_exception(pty_pair):
    _, path = pty_pair

    async def main():
        line = SerialTransport(path)
        with pytest.raises(ZeroDivisionError):
            async with line:
                port = line._serial
                assert port is not None and port.is_open
                1 / 0  # noqa: B018
        assert not line.is_open
        assert not port.is_open
    run(main())


def test_serial_close_interrupts_a_receive(pty_pair):
    _, path = pty_pair

    async def main():
        async with SerialTransport(path) as line:
            receiving = asyncio.create_task(line.receive(30))
            await asyncio.sleep(0.05)  # let the read start in its thread
            started = time.monotonic()
            await line.close()
            assert await receiving == b''  # cancelled, not after 30 s
            assert time.monotonic() - started < 1
            with pytest.raises(TransportClosedError):
                await line.receive(0.1)
    run(main())


def test_serial_missing_port_and_bad_settings():
    async def main():
        line = SerialTransport('/dev/nonexistent-fuelpay-tty')
        with pytest.raises(TransportError):
            async with line:
                pytest.fail("opened a missing port")
        assert not line.is_open
    run(main())
    with pytest.raises(ValueError):
        SerialTransport('/dev/null', parity='X')


def test_tcp_reconnects_after_the_gateway_drops_the_connection():
    "The gateway closes the first connection once; the next send reconnects"
    connections: list[int] = []

    async def gateway(reader, writer):
        connections.append(len(connections) + 1)
        try:
            data = await reader.read(100)
            if len(connections) == 1:
                return  # drop the first connection without answering
            while data:
                writer.write(data)  # then echo
                await writer.drain()
                data = await reader.read(100)
        finally:
            writer.close()

    async def main():
        server = await asyncio.start_server(gateway, '127.0.0.1', 0)
        port = server.sockets[0].getsockname()[1]
        try:
            async with TcpTransport(
                    '127.0.0.1', port, reconnect_interval=0) as line:
                await line.send(b'\x50\x20\xfa')
                with pytest.raises(TransportClosedError, match='closed by'):
                    await line.receive(REPLY_TIMEOUT)
                assert not line.is_open
                await line.send(b'\x51\x20\xfa')  # reconnects first
                assert line.is_open and line.reconnections == 1
                assert await line.receive(REPLY_TIMEOUT) == b'\x51\x20\xfa'
            assert connections == [1, 2]
            # closed by its owner: no reconnection
            with pytest.raises(TransportClosedError):
                await line.send(b'\x50\x20\xfa')
        finally:
            server.close()
            await server.wait_closed()
    run(main())


def test_tcp_reconnection_is_rate_limited_and_survives_a_refusal():
    async def main():
        async with PumpServer(demo_pumps(1)) as server:
            host, port = await server.start_tcp()
            async with TcpTransport(
                    host, port, reconnect_interval=0.2) as line:
                master = LineMaster(line)
                assert await master.poll(0x50) == ()
                assert server.drop_connections() == 1
                with pytest.raises(TransportClosedError):
                    await line.receive(REPLY_TIMEOUT)
                # too soon after the last attempt: refused without trying
                with pytest.raises(TransportClosedError, match='next attempt'):
                    await line.send(b'\x50\x20\xfa')
                await asyncio.sleep(0.25)
                master.splitter = FrameSplitter()
                assert await master.poll(0x50) == ()  # reconnected
                assert line.reconnections == 1
    run(main())
