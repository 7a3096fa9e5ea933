# This file is part of fuelpay.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""A payment post's code reader on a real pty pair: the test writes what a
scanner or a face device in scanner mode sends on the master side, the
driver reads the slave with pyserial; every wait is bounded"""
from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import pathlib
import sqlite3
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
from test_app import (
    FLOW,
    POLICY,
    TIMING,
    box_config,
    nozzles_answer,
    until,
)
from test_config import box_dir  # noqa: F401 (a fixture)
from test_uplink import FakeServer

from iot_box.app import App
from iot_box.config import (
    ConfigError,
    PaymentPostConfig,
    PostSource,
    load_config,
)
from iot_box.drivers.codereader.driver import (
    CodeReaderDriver,
    IllegalTransition,
    LineSplitter,
    ReaderState,
    is_code,
    payload,
)
from iot_box.drivers.dispenser.fuelling_point import FPState
from iot_box.events import EventKind, decode_json, mask_code
from iot_box.outbox import Outbox
from iot_box.protocols.dart import PumpStatus
from iot_box.simulators.dart_pump import PumpServer, demo_pumps

WECHAT_CODE = '134567890123456789'
ALIPAY_CODE = '284567890123456789012'
TEST_TIMEOUT = 10.0
# Reopening a vanished port: short in tests
REOPEN = 0.05


def run(coroutine: Any) -> None:
    asyncio.run(asyncio.wait_for(coroutine, TEST_TIMEOUT))


class Clock:
    "A monotonic clock the test moves"

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Pty:
    """A pty pair behind a symlink, as udev names a USB reader
    (/dev/serial/by-id/...): `unplug` closes it, `plug` makes a new pair
    behind the same name"""

    def __init__(self, folder: pathlib.Path) -> None:
        self.link = folder / 'reader'
        self.master: int | None = None
        self.slave: int | None = None
        self.plug()

    def plug(self) -> None:
        self.master, self.slave = os.openpty()
        self.link.unlink(missing_ok=True)
        self.link.symlink_to(os.ttyname(self.slave))

    def unplug(self) -> None:
        for fd in (self.master, self.slave):
            if fd is not None:
                os.close(fd)
        self.master = self.slave = None
        self.link.unlink(missing_ok=True)

    def write(self, data: bytes) -> None:
        assert self.master is not None
        os.write(self.master, data)


@pytest.fixture
def pty(tmp_path: pathlib.Path) -> Iterator[Pty]:
    pair = Pty(tmp_path)
    try:
        yield pair
    finally:
        pair.unplug()


@pytest.fixture
def outbox(tmp_path: pathlib.Path) -> Iterator[Outbox]:
    with Outbox(tmp_path / 'outbox.sqlite') as box:
        yield box


def post_config(
        port: str | os.PathLike[str], source: PostSource = PostSource.FACE,
        ) -> PaymentPostConfig:
    return PaymentPostConfig(
        name='post-1', port=os.fspath(port), source=source, nozzles=(1, 2))


def codes(outbox: Outbox) -> list[str]:
    return [
        e.payload['code'] for e in outbox.pending()
        if e.kind is EventKind.PAYMENT_CODE]


async def running(
        driver: CodeReaderDriver) -> asyncio.Task[None]:
    task = asyncio.create_task(driver.run())
    await until(lambda: driver.state is ReaderState.READING, task)
    return task


async def stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


# --- lines ----------------------------------------------------------------

def test_line_ends_and_pieces() -> None:
    splitter = LineSplitter()
    assert splitter.feed(b'1234\r5678\n9012\r\n') == [
        b'1234', b'5678', b'9012']
    # a line across reads; the LF of a CR LF split from its CR
    assert splitter.feed(b'34') == []
    assert splitter.feed(b'56\r') == [b'3456']
    assert splitter.feed(b'\n\n\r78\n') == [b'78']
    # a line too long is dropped whole, up to its end, counted once
    assert splitter.feed(b'9' * 70) == []
    assert splitter.feed(b'9' * 70) == []
    assert splitter.feed(b'99\r\n42\r') == [b'42']
    assert splitter.overflows == 1
    # the bound is on what waits for its end: a whole line is given
    assert splitter.feed(b'9' * 65 + b'\r7\n') == [b'9' * 65, b'7']
    assert splitter.overflows == 1


def test_is_code() -> None:
    assert is_code(WECHAT_CODE.encode())
    assert is_code(b'1' * 16) and is_code(b'1' * 24)
    assert not is_code(b'1' * 15)
    assert not is_code(b'1' * 25)
    assert not is_code(b'13456789012345678X')
    assert not is_code('١٢٣٤٥٦٧٨٩٠١٢٣٤٥٦٧'.encode())  # Arabic digits
    assert not is_code(b'')


# --- the driver on a pty --------------------------------------------------

def test_codes_become_events(pty: Pty, outbox: Outbox) -> None:
    "CR, LF and CR LF lines, split or together, one event per code"
    driver = CodeReaderDriver(post_config(pty.link), outbox)

    async def main() -> None:
        task = await running(driver)
        assert driver.status == 'connected'
        pty.write(WECHAT_CODE.encode() + b'\r')
        await until(lambda: len(codes(outbox)) == 1, task)
        pty.write(ALIPAY_CODE[:5].encode())
        await asyncio.sleep(0.05)
        pty.write(ALIPAY_CODE[5:].encode() + b'\r\n')
        pty.write(b'6234567890123456789\n')
        await until(lambda: len(codes(outbox)) == 3, task)
        await stop(task)

    run(main())
    assert codes(outbox) == [
        WECHAT_CODE, ALIPAY_CODE, '6234567890123456789']
    event = outbox.pending()[0]
    assert event.device == 'post-1'
    assert event.device_time.tzinfo is not None
    assert dict(event.payload) == {
        'version': 1, 'code': WECHAT_CODE, 'source': 'face',
        'post': 'post-1', 'nozzles': [1, 2]}
    assert driver.codes == 3 and driver.dropped == 0
    assert driver.state is ReaderState.STOPPED
    assert driver._port is None  # closed at the stop


def test_payload_calling() -> None:
    "calling: the post's own nozzles, each once, ascending; or no field"
    config = post_config('/dev/null')
    assert 'calling' not in payload(WECHAT_CODE, config)
    assert payload(WECHAT_CODE, config, [])['calling'] == []
    # 9 is another post's nozzle
    assert payload(WECHAT_CODE, config, [2, 9, 1, 2])['calling'] == [1, 2]


def test_calling_read_with_the_code(outbox: Outbox) -> None:
    "The nozzles calling when each code is read, not when the driver began"
    calling = [2]
    driver = CodeReaderDriver(
        post_config('/dev/null'), outbox, calling=lambda: list(calling))
    first, = driver.feed(WECHAT_CODE.encode() + b'\r\n')
    calling[:] = []
    second, = driver.feed(ALIPAY_CODE.encode() + b'\r\n')
    assert first.payload['calling'] == [2]
    assert second.payload['calling'] == []
    assert dict(outbox.pending()[0].payload) == {
        'version': 1, 'code': WECHAT_CODE, 'source': 'face',
        'post': 'post-1', 'nozzles': [1, 2], 'calling': [2]}


def test_bad_lines_dropped_without_showing_them(
        pty: Pty, outbox: Outbox, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    driver = CodeReaderDriver(
        post_config(pty.link, PostSource.SCANNER), outbox)
    bad = [
        b'hello', b'123456789012345', b'1234567890123456789012345',
        b'13456789012345678X', b'6901234567892']  # the last: a product

    async def main() -> None:
        task = await running(driver)
        for line in bad:
            pty.write(line + b'\r\n')
        pty.write(b'7' * 100)  # no line end: a reader at the wrong rate
        pty.write(b'\r' + WECHAT_CODE.encode() + b'\r\n')
        await until(lambda: codes(outbox), task)
        await stop(task)

    run(main())
    assert codes(outbox) == [WECHAT_CODE]
    assert outbox.pending()[0].payload['source'] == 'scanner'
    assert driver.dropped == len(bad) + 1
    warnings = [
        r.getMessage() for r in caplog.records
        if r.levelno == logging.WARNING]
    assert len(warnings) == len(bad) + 1
    assert 'dropped a line of 5 byte(s)' in warnings[0]
    text = caplog.text
    for line in bad:
        assert line.decode() not in text
    # the code itself shows nowhere in the log: only its first digits
    assert WECHAT_CODE not in text
    assert WECHAT_CODE[4:] not in text
    assert mask_code(WECHAT_CODE) in text


def test_same_code_debounced(pty: Pty, outbox: Outbox) -> None:
    clock = Clock()
    driver = CodeReaderDriver(
        post_config(pty.link), outbox, debounce=3.0, clock=clock)

    async def read(line: str, count: int, task: asyncio.Task[None]) -> None:
        seen = driver.codes + driver.repeats
        pty.write(line.encode() + b'\r\n')
        await until(lambda: driver.codes + driver.repeats > seen, task)
        assert len(codes(outbox)) == count

    async def main() -> None:
        task = await running(driver)
        await read(WECHAT_CODE, 1, task)
        clock.now += 1
        await read(WECHAT_CODE, 1, task)  # held in front of the reader
        clock.now += 2.5  # 3.5 s after the first, 2.5 after the last
        await read(WECHAT_CODE, 1, task)
        await read(ALIPAY_CODE, 2, task)  # another code is another payment
        clock.now += 3
        await read(ALIPAY_CODE, 3, task)  # the same, presented again
        await stop(task)

    run(main())
    assert codes(outbox) == [WECHAT_CODE, ALIPAY_CODE, ALIPAY_CODE]
    assert driver.repeats == 2


def test_reconnects_when_the_port_disappears(
        pty: Pty, outbox: Outbox) -> None:
    driver = CodeReaderDriver(
        post_config(pty.link), outbox, reopen_delay=REOPEN)

    async def main() -> None:
        task = await running(driver)
        pty.write(WECHAT_CODE.encode() + b'\r\n')
        await until(lambda: len(codes(outbox)) == 1, task)
        pty.write(b'1234')  # half a line when the cable is pulled
        await asyncio.sleep(0.05)
        pty.unplug()
        await until(lambda: driver.state is ReaderState.FAILING, task)
        assert driver.status == 'error'
        assert driver.last_error
        await asyncio.sleep(REOPEN * 3)  # retried: still missing
        assert driver.state is ReaderState.FAILING
        pty.plug()
        await until(lambda: driver.state is ReaderState.READING, task)
        assert driver.last_error is None
        pty.write(ALIPAY_CODE.encode() + b'\r\n')
        await until(lambda: len(codes(outbox)) == 2, task)
        await stop(task)

    run(main())
    # the half line before the unplug did not stick to the next code
    assert codes(outbox) == [WECHAT_CODE, ALIPAY_CODE]


def test_missing_port_is_retried(tmp_path: pathlib.Path,
        outbox: Outbox) -> None:
    pty = Pty(tmp_path)
    pty.unplug()  # a name, no device yet
    driver = CodeReaderDriver(
        post_config(pty.link), outbox, reopen_delay=REOPEN)

    async def main() -> None:
        task = asyncio.create_task(driver.run())
        await until(lambda: driver.state is ReaderState.FAILING, task)
        assert driver.status == 'error'
        assert 'cannot open' in (driver.last_error or '')
        pty.plug()
        try:
            await until(lambda: driver.state is ReaderState.READING, task)
            pty.write(WECHAT_CODE.encode() + b'\n')
            await until(lambda: codes(outbox), task)
            await stop(task)
        finally:
            pty.unplug()

    run(main())
    assert codes(outbox) == [WECHAT_CODE]


def test_illegal_transition(pty: Pty, outbox: Outbox) -> None:
    driver = CodeReaderDriver(post_config(pty.link), outbox)
    driver._set_state(ReaderState.STOPPED)
    with pytest.raises(IllegalTransition, match='post-1'):
        driver._set_state(ReaderState.READING)


# --- the outbox forgets the code ------------------------------------------

def test_sent_code_is_masked_in_the_outbox(
        tmp_path: pathlib.Path, outbox: Outbox) -> None:
    config = post_config('/dev/null')
    driver = CodeReaderDriver(config, outbox)
    first, = driver.feed(WECHAT_CODE.encode() + b'\r\n')
    second, = driver.feed(ALIPAY_CODE.encode() + b'\r\n')
    alarm = outbox.append(
        EventKind.ALARM, 'pump-1', first.device_time, {'code': 'x' * 20})

    assert outbox.mark_sent(e.uuid for e in [first, alarm]) == 2

    rows = dict(sqlite3.connect(tmp_path / 'outbox.sqlite').execute(
        'SELECT uuid, payload FROM event').fetchall())
    sent = decode_json(rows[first.uuid])
    assert sent['code'] == '1345' + '*' * 14 == mask_code(WECHAT_CODE)
    assert sent['post'] == 'post-1' and sent['nozzles'] == [1, 2]
    assert WECHAT_CODE not in ''.join(rows.values())
    # not sent yet: the code must still reach the server
    assert decode_json(rows[second.uuid])['code'] == ALIPAY_CODE
    assert [e.payload['code'] for e in outbox.pending()] == [ALIPAY_CODE]
    # only payment codes are masked
    assert decode_json(rows[alarm.uuid])['code'] == 'x' * 20
    # marking again changes nothing
    assert outbox.mark_sent([first.uuid]) == 0
    assert outbox.mark_sent([second.uuid]) == 1
    assert outbox.pending() == []


# --- configuration --------------------------------------------------------

POST = '''
[[payment_posts]]
name = "post-1"
port = "/dev/ttyACM0"
source = "face"
nozzles = [1, 2]
'''


def add_post(folder: pathlib.Path, text: str = POST) -> pathlib.Path:
    path = folder / 'box.toml'
    path.write_text(path.read_text() + text)
    return path


def test_config_payment_posts(box_dir: pathlib.Path) -> None:  # noqa: F811
    assert load_config(box_dir / 'box.toml').payment_posts == ()
    config = load_config(add_post(box_dir, POST + POST.replace(
                'post-1', 'post-2').replace('ttyACM0', 'ttyACM1').replace(
                '"face"', '"scanner"').replace(
                '[1, 2]', '[3]\nbaudrate = 115200')))
    first, second = config.payment_posts
    assert first == PaymentPostConfig(
        name='post-1', port='/dev/ttyACM0', source=PostSource.FACE,
        nozzles=(1, 2), baudrate=9600)
    assert (second.source, second.nozzles, second.baudrate) == (
        PostSource.SCANNER, (3,), 115200)


@pytest.mark.parametrize(('old', 'new', 'message'), [
        ('source = "face"\n', '', r'payment_posts\[0\]\.source: missing'),
        ('"face"', '"nfc"',
            r"payment_posts\[0\]\.source: 'nfc' is not one of"),
        ('[1, 2]', '[]',
            r'payment_posts\[0\]\.nozzles: must be a non-empty array'),
        ('[1, 2]', '["1"]',
            r'payment_posts\[0\]\.nozzles: must be a non-empty array'),
        ('[1, 2]', '[1, 1]',
            r'payment_posts\[0\]\.nozzles: nozzle 1 appears twice'),
        ('[1, 2]', '[1, 9]',
            r'payment_posts\[0\]\.nozzles: no nozzle 9 on this box'),
        ('"post-1"', '"pump-1"',
            r"payment_posts\[0\]\.name: 'pump-1' is already used by a "
            "device"),
        ('/dev/ttyACM0', '/dev/ttyUSB0',
            r"payment_posts\[0\]\.port: '/dev/ttyUSB0' is already used"),
        ('port = "/dev/ttyACM0"\n', '',
            r'payment_posts\[0\]\.port: missing'),
        ('name = "post-1"\n', 'name = "post-1"\nbaudrate = 1234\n',
            r'payment_posts\[0\]\.baudrate: 1234 is not a standard rate'),
        ('name = "post-1"\n', 'name = "post-1"\nparity = "E"\n',
            r'payment_posts\[0\]\.parity: unknown key'),
        ])
def test_config_payment_post_errors(
        box_dir: pathlib.Path, old: str, new: str,  # noqa: F811
        message: str) -> None:
    assert POST.count(old) == 1
    path = add_post(box_dir, POST.replace(old, new))
    with pytest.raises(ConfigError, match=message):
        load_config(path)


def test_config_two_posts_on_one_port(
        box_dir: pathlib.Path) -> None:  # noqa: F811
    path = add_post(box_dir, POST + POST.replace('post-1', 'post-2'))
    with pytest.raises(ConfigError, match=(
            r"payment_posts\[1\]\.port: '/dev/ttyACM0' is already used")):
        load_config(path)


# --- in the app -------------------------------------------------------------

def test_post_in_the_app(
        tmp_path: pathlib.Path, pty: Pty,
        caplog: pytest.LogCaptureFixture) -> None:
    """A code read at the post reaches the server as an event; the post is
    a device of setup and heartbeat and shows on the status page; the
    outbox keeps only the masked code once the server has it"""
    caplog.set_level(logging.DEBUG)

    async def main(server: FakeServer) -> None:
        async with PumpServer(demo_pumps(2, 2)) as line:
            _, port = await line.start_udp()
            config = dataclasses.replace(
                box_config(tmp_path, server.url, port),
                payment_posts=(post_config(pty.link),))
            app = App(config, timing=TIMING)
            task = asyncio.create_task(app.run())
            try:
                await until(lambda: app.posts and app.posts[
                        'post-1'].state is ReaderState.READING, task)
                pty.write(WECHAT_CODE.encode() + b'\r\n')

                def received() -> list[dict[str, Any]]:
                    with server.changed:
                        return [
                            e for e in server.events
                            if e['kind'] == 'payment_code']
                await until(received, task)
                await until(lambda: not app.outbox.depth(), task)
                event, = received()
                assert event['device'] == 'post-1'
                assert event['payload']['code'] == WECHAT_CODE
                assert event['payload']['nozzles'] == [1, 2]
                setup = server.routes('setup')[0].data
                post, = [
                    d for d in setup['devices']
                    if d['kind'] == 'payment_post']
                del post['status']  # setup may come before the port opens
                assert post == {
                    'identifier': 'post-1', 'kind': 'payment_post',
                    'protocol': 'face', 'connection': f'serial:{pty.link}'}

                def beat() -> dict[str, Any] | None:
                    with server.changed:
                        devices = server.heartbeats[-1]['devices'] if (
                            server.heartbeats) else []
                    return next((
                            d for d in devices if d['identifier'] == 'post-1'
                            and d['status'] == 'connected'), None)
                await until(beat, task)
                status = app.status()
                row, = status['payment_posts']
                assert (row['name'], row['state'], row['codes']) == (
                    'post-1', 'reading', 1)
                assert WECHAT_CODE not in str(status)
            finally:
                app.stop()
                await asyncio.wait_for(task, 5)

    with FakeServer() as server:
        server.policy = dict(POLICY)
        server.nozzles = nozzles_answer()
        run(main(server))
    with sqlite3.connect(tmp_path / 'outbox.sqlite') as db:
        payloads = [
            p for p, in db.execute(
                "SELECT payload FROM event WHERE kind = 'payment_code'")]
    assert len(payloads) == 1
    assert decode_json(payloads[0])['code'] == mask_code(WECHAT_CODE)
    assert WECHAT_CODE not in caplog.text



def test_post_names_the_calling_nozzle(
        tmp_path: pathlib.Path, pty: Pty) -> None:
    """Under pre-pay, a code read while a nozzle of the post is lifted and
    waits names it in ``calling``; a nozzle of another post does not
    count; once an authorize command released the nozzle (the server's
    pre-payment), a code read names none, even after the fill while the
    nozzle is still out"""

    def codes_sent(server: FakeServer) -> list[dict[str, Any]]:
        with server.changed:
            return [
                e['payload'] for e in server.events
                if e['kind'] == 'payment_code']

    async def main(server: FakeServer) -> None:
        pumps = demo_pumps(2, 2)
        async with PumpServer(pumps) as line:
            _, port = await line.start_udp()
            config = dataclasses.replace(
                box_config(tmp_path, server.url, port),
                payment_posts=(post_config(pty.link),))
            app = App(config, timing=TIMING)
            task = asyncio.create_task(app.run())

            async def read(code: str, count: int) -> dict[str, Any]:
                pty.write(code.encode() + b'\r\n')
                await until(lambda: len(codes_sent(server)) == count, task)
                return codes_sent(server)[-1]

            try:
                await until(lambda: app.posts and app.posts[
                        'post-1'].state is ReaderState.READING and all(
                        p.status is PumpStatus.RESET for p in pumps), task)
                pump1, pump2 = pumps
                assert (await read(WECHAT_CODE, 1))['calling'] == []
                pump2.lift(1)  # station nozzle 3: not the post's
                pump1.lift(2)  # station nozzle 2
                await until(lambda: app._calling((2, 3)) == [2, 3], task)
                sent = await read(ALIPAY_CODE, 2)
                assert (sent['nozzles'], sent['calling']) == ([1, 2], [2])
                # the server pre-paid nozzle 2: its authorize command
                server.add_command(40, 'authorize', {
                        'version': 1, 'station_number': 2,
                        'preset_amount': '10.00', 'prepay': 7})
                await until(
                    lambda: pump1.status is PumpStatus.AUTHORIZED, task)
                assert pump1.preset_amount == Decimal('10.00')
                assert (await read(WECHAT_CODE, 3))['calling'] == []
                # the preset is reached with the nozzle still out
                while pump1.tick(FLOW):
                    await asyncio.sleep(0.03)
                await until(lambda: app.drivers['pump-1'].point.state
                    is FPState.CALLING, task)
                # the fill is over, the nozzle still out: not calling
                assert (await read(ALIPAY_CODE, 4))['calling'] == []
            finally:
                app.stop()
                await asyncio.wait_for(task, 5)

    with FakeServer() as server:
        server.policy = {**POLICY, 'authorization': 'prepay'}
        server.nozzles = nozzles_answer()
        run(main(server))
