# This file is part of fuelpay.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""Fuzzed bytes against the DART codec and the driver's receive path

Random bytes and mutated valid frames never make the codec raise anything
but its typed errors (`DartError`), and never make the driver's
`poll_once()` raise at all: it drops or NAKs what it cannot use and keeps
polling.  Example counts stay modest so the suite stays fast."""
from __future__ import annotations

import asyncio
import contextlib
import pathlib
import tempfile
from collections.abc import Iterator
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from iot_box.config import Connection, DispenserConfig, NozzleConfig
from iot_box.drivers.dispenser.dart import DartDispenserDriver
from iot_box.outbox import Outbox
from iot_box.protocols.dart import (
    ControlType,
    DartError,
    DC1Status,
    DC2FilledVolumeAmount,
    DC3PriceNozzle,
    DC101Totals,
    Direction,
    Frame,
    FrameSplitter,
    PumpStatus,
    Transaction,
    decode_frame,
    decode_transactions,
    encode_frame,
    encode_messages,
    make_control,
)

D = Decimal
ADDRESS = 0x50
# hypothesis examples per test: enough to reach CRC-valid nonsense and
# every mutation, few enough for about a second each (each driver example
# runs an event loop and commits events with an fsync)
CODEC_EXAMPLES = 200
DRIVER_EXAMPLES = 60
SETTINGS = {
    'deadline': None, 'derandomize': True,
    'suppress_health_check': [
        HealthCheck.too_slow, HealthCheck.function_scoped_fixture]}

# TRANS code and data size of DC1, DC2, DC3, DC5, DC7, DC9, DC101
PUMP_MESSAGE_SIZES = [
    (0x01, 1), (0x02, 8), (0x03, 4), (0x05, 1), (0x07, 7), (0x09, 5),
    (0x65, 11)]
VALID = [
    encode_frame(ADDRESS, 0x20),
    encode_frame(ADDRESS, make_control(ControlType.EOT, 3)),
    encode_frame(ADDRESS, make_control(ControlType.DATA, 5), encode_messages([
        DC1Status(PumpStatus.FILLING),
        DC2FilledVolumeAmount(D('12.345'), D('97.40')),
        DC3PriceNozzle(D('7.890'), 1, True)])),
    encode_frame(ADDRESS, make_control(ControlType.DATA, 6), encode_messages([
        DC101Totals(1, D('1234.567'), D('9876.54'))])),
    ]


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    "A valid frame with bytes flipped, inserted, deleted or cut"
    frame = bytearray(draw(st.sampled_from(VALID)))
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(('flip', 'insert', 'delete', 'cut')))
        at = draw(st.integers(0, max(len(frame) - 1, 0)))
        if op == 'flip' and frame:
            frame[at] ^= draw(st.integers(1, 255))
        elif op == 'insert':
            frame.insert(at, draw(st.integers(0, 255)))
        elif op == 'delete' and frame:
            del frame[at]
        elif op == 'cut':
            frame = frame[:at]
    return bytes(frame)


@st.composite
def crc_valid_nonsense(draw: st.DrawFn) -> bytes:
    "Frames with a correct CRC whose transactions are random"
    any_transaction = st.builds(
        Transaction, st.integers(0, 255), st.binary(max_size=12))
    # pump messages with their own size: their fields are what is random
    sized = st.sampled_from(PUMP_MESSAGE_SIZES).flatmap(
        lambda code_size: st.builds(
            Transaction, st.just(code_size[0]),
            st.binary(min_size=code_size[1], max_size=code_size[1])))
    transactions = draw(st.lists(
        st.one_of(any_transaction, sized), min_size=1, max_size=4))
    seq = draw(st.integers(0, 15))
    return Frame(
        ADDRESS, make_control(ControlType.DATA, seq),
        tuple(transactions)).encode()


line_bytes = st.one_of(
    st.binary(max_size=64), mutated(), crc_valid_nonsense())


@settings(max_examples=CODEC_EXAMPLES, **SETTINGS)
@given(st.lists(line_bytes, max_size=5))
def test_codec_raises_only_its_own_errors(chunks: list[bytes]) -> None:
    splitter = FrameSplitter()
    for chunk in chunks:
        for raw in splitter.feed(chunk):
            try:
                frame = decode_frame(raw)
                for direction in Direction:
                    decode_transactions(frame, direction)
            except DartError:
                pass
        with contextlib.suppress(DartError):
            decode_frame(chunk)


class Scripted:
    "A transport whose pump answers each request with scripted bytes"

    def __init__(self, answers: list[bytes]) -> None:
        self.name = 'fuzz'
        self.is_open = True
        self.answers = list(answers)
        self.sent: list[bytes] = []
        self._due = False

    async def open(self) -> None:
        pass

    async def close(self) -> None:
        pass

    async def send(self, data: bytes) -> None:
        self.sent.append(data)
        if data[1] & 0xF0 not in (ControlType.ACK, ControlType.NAK):
            self._due = True  # a request (POLL or DATA) gets an answer

    async def receive(self, timeout: float) -> bytes:
        if self._due and self.answers:
            self._due = False
            return self.answers.pop(0)
        return b''


def driver_for(transport: Scripted, outbox: Outbox) -> DartDispenserDriver:
    config = DispenserConfig(
        name='pump-fuzz', connection=Connection.UDP, address=ADDRESS,
        nozzles=(NozzleConfig(1, 11), NozzleConfig(2, 12)),
        host='127.0.0.1', port=9)
    return DartDispenserDriver(
        config, transport, outbox,  # type: ignore[arg-type]
        prices={1: D('7.890'), 2: D('8.120')}, response_timeout=0.001)


@pytest.fixture(scope='module')
def outbox() -> Iterator[Outbox]:
    "One outbox for all examples: opening one per example costs fsyncs"
    with tempfile.TemporaryDirectory() as directory, Outbox(
            pathlib.Path(directory) / 'outbox.sqlite') as box:
        yield box


@settings(max_examples=DRIVER_EXAMPLES, **SETTINGS)
@given(answers=st.lists(line_bytes, min_size=1, max_size=8))
def test_driver_survives_fuzzed_answers(
        outbox: Outbox, answers: list[bytes]) -> None:
    async def main() -> None:
        transport = Scripted(answers)
        driver = driver_for(transport, outbox)
        for _ in range(len(answers) + 2):
            await driver.poll_once()  # raises nothing
        before = len(transport.sent)
        await driver.poll_once()
        assert len(transport.sent) > before  # still polling

    asyncio.run(asyncio.wait_for(main(), 10))
