# This file is part of fuelpay.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""Plate cameras: configuration and zones, the folder-watch and snapshot
drivers end to end into the outbox, and the App wiring cameras -> LPR ->
outbox -> server"""
from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import datetime as dt
import os
import pathlib
import re
import threading
import time
from collections.abc import Callable, Iterator
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import cv2
import numpy as np
import pytest
from test_app import POLICY, TIMING, box_config, nozzles_answer, until
from test_config import FIXTURE, KEY
from test_uplink import FakeServer

from iot_box.app import App, LinkState
from iot_box.config import (
    CameraConfig,
    CameraSource,
    ConfigError,
    FallbackMode,
    ZoneConfig,
    ZoneKind,
    load_config,
)
from iot_box.drivers.camera.driver import (
    MAX_IMAGE_BASE64,
    CameraDriver,
    CameraState,
    IllegalTransition,
    encode_crop,
)
from iot_box.drivers.camera.sources import (
    FolderSource,
    RtspSource,
    SnapshotSource,
    SourceError,
)
from iot_box.events import EventKind
from iot_box.lpr.offline import OfflineList
from iot_box.lpr.pipeline import Pipeline
from iot_box.lpr.plate import PlateColour
from iot_box.lpr.synth import Layout, PlateGenerator
from iot_box.lpr.voting import Voter
from iot_box.outbox import Outbox
from iot_box.protocols.dart import PumpStatus
from iot_box.simulators.dart_pump import PumpServer, demo_pumps

PLATE = ('粤BD12345', PlateColour.GREEN, Layout.NEW_ENERGY)
ISLAND = ZoneConfig('island-1', ZoneKind.ISLAND)
# Bounds every wait; a frame is read in well under a second
WAIT = 15.0


@pytest.fixture(scope='module')
def pipeline() -> Pipeline:
    return Pipeline(threads=1)


@pytest.fixture(scope='module')
def jpeg() -> bytes:
    "A camera frame of PLATE, as a camera would send it"
    sample = PlateGenerator(seed=21).scene(plate=PLATE, strength=0.3)
    ok, data = cv2.imencode('.jpg', sample.image)
    assert ok
    return data.tobytes()


def check_payload(payload: Any, frames: int | None = None) -> None:
    assert payload['version'] == 1
    assert payload['plate'] == '粤BD12345'
    assert payload['colour'] == 'green'
    confidence = payload['confidence']
    assert isinstance(confidence, Decimal)
    assert Decimal('0.5') <= confidence <= 1
    assert confidence.as_tuple().exponent == -4
    assert payload['zone'] == 'island-1'
    assert payload['zone_kind'] == 'island'
    if frames is not None:
        assert payload['frames'] == frames
    assert payload['image_format'] == 'jpeg'
    image = base64.b64decode(payload['image'])
    assert len(payload['image']) <= MAX_IMAGE_BASE64
    crop = cv2.imdecode(np.frombuffer(image, np.uint8), cv2.IMREAD_COLOR)
    assert crop is not None and crop.shape[1] > crop.shape[0]


# --- configuration ----------------------------------------------------------

@pytest.fixture
def box_dir(tmp_path: pathlib.Path) -> pathlib.Path:
    "The configuration fixture with its key file (mode 0600)"
    (tmp_path / 'box.toml').write_text(FIXTURE.read_text())
    key = tmp_path / 'box.key'
    key.write_text(KEY + '\n')
    key.chmod(0o600)
    return tmp_path


CAMERAS = '''
[lpr]
min_confidence = 0.8
threads = 2
dark_plates = false

[[lpr.cameras]]
id = "cam-1"
source = "snapshot"
url = "http://192.168.1.64/snapshot.jpg"
interval = 0.25
zones = [{code = "island-1", kind = "island", nozzles = [1, 3]}]

[[lpr.cameras]]
id = "cam-2"
source = "folder"
path = "ftp/cam-2"
zones = [
    {code = "entrance", kind = "entrance", region = [0, 0, 0.5, 1]},
    {code = "exit", kind = "exit", region = [0.5, 0, 1.0, 1]},
]
'''


def with_cameras(box_dir: pathlib.Path, old: str = '',
        new: str = '') -> pathlib.Path:
    path = box_dir / 'box.toml'
    text = CAMERAS
    if old:
        assert text.count(old) == 1, old
        text = text.replace(old, new)
    path.write_text(path.read_text() + text)
    return path


def test_camera_config(box_dir: pathlib.Path) -> None:
    config = load_config(with_cameras(box_dir))
    assert config.lpr.min_confidence == Decimal('0.8')
    assert config.lpr.threads == 2
    assert config.lpr.dark_plates is False
    snapshot, folder = config.cameras
    assert snapshot == CameraConfig(
        id='cam-1', source=CameraSource.SNAPSHOT,
        zones=(dataclasses.replace(ISLAND, nozzles=(1, 3)),),
        url='http://192.168.1.64/snapshot.jpg', interval=0.25)
    assert folder.zones[0].nozzles == ()
    assert folder.source is CameraSource.FOLDER
    assert folder.path == box_dir / 'ftp' / 'cam-2'
    assert folder.interval == 0.5
    assert folder.zone_at(0.2, 0.7).code == 'entrance'
    assert folder.zone_at(0.8, 0.1).code == 'exit'
    assert snapshot.zone_at(0.99, 0.99).code == 'island-1'


def test_no_cameras_by_default(box_dir: pathlib.Path) -> None:
    config = load_config(box_dir / 'box.toml')
    assert config.cameras == ()
    assert config.lpr.min_confidence == Decimal('0.5')
    assert config.lpr.dark_plates is True


@pytest.mark.parametrize(('old', 'new', 'message'), [
    ('source = "snapshot"', 'source = "mjpeg"',
        r"lpr\.cameras\[0\]\.source: 'mjpeg' is not one of"),
    ('source = "snapshot"\n', '',
        r"lpr\.cameras\[0\]\.source: missing"),
    ('http://192.168.1.64/', 'http://admin:pw@192.168.1.64/',
        r"lpr\.cameras\[0\]\.url: must not carry credentials"),
    ('http://192.168.1.64/', 'rtsp://192.168.1.64/',
        r"lpr\.cameras\[0\]\.url: .* is not a http or https URL"),
    ('path = "ftp/cam-2"', 'url = "http://x/y.jpg"',
        r"lpr\.cameras\[1\]\.url: not used by a folder camera"),
    ('interval = 0.25', 'interval = 0.01',
        r"lpr\.cameras\[0\]\.interval: at least"),
    ('id = "cam-2"', 'id = "pump-1"',
        r"lpr\.cameras\[1\]\.id: 'pump-1' is already used"),
    ('code = "exit"', 'code = "entrance"',
        r"lpr\.cameras\[1\]\.zones\[1\]\.code: 'entrance' appears twice"),
    ('kind = "exit"', 'kind = "parking"',
        r"zones\[1\]\.kind: 'parking' is not one of"),
    ('region = [0, 0, 0.5, 1]', 'region = [0.5, 0, 0.5, 1]',
        r"zones\[0\]\.region: must be fractions"),
    ('region = [0, 0, 0.5, 1]', 'region = [0, 0, 1]',
        r"zones\[0\]\.region: must be \[x0, y0, x1, y1\]"),
    ('zones = [{code = "island-1", kind = "island", nozzles = [1, 3]}]',
        'zones = []',
        r"lpr\.cameras\[0\]\.zones: must be a non-empty array"),
    ('nozzles = [1, 3]', 'nozzles = [1, 9]',
        r"lpr\.cameras\[0\]\.zones\[0\]\.nozzles: no nozzle 9 on this box"),
    ('nozzles = [1, 3]', 'nozzles = ["1"]',
        r"zones\[0\]\.nozzles: must be a non-empty array of station"),
    ('kind = "exit"', 'kind = "exit", nozzles = [2]',
        r"zones\[1\]\.nozzles: only an island zone serves nozzles"),
    ('min_confidence = 0.8', 'min_confidence = 1.5',
        r"lpr\.min_confidence: must be under 1"),
    ('threads = 2', 'threads = 0', r"lpr\.threads: 0 is out of range"),
    ('threads = 2', 'thread = 2', r"lpr\.thread: unknown key"),
    ('dark_plates = false', 'dark_plates = "no"',
        r"lpr\.dark_plates: must be true or false"),
    ])
def test_camera_config_errors(
        box_dir: pathlib.Path, old: str, new: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(with_cameras(box_dir, old, new))


# --- sources ----------------------------------------------------------------

def test_folder_source(tmp_path: pathlib.Path, jpeg: bytes) -> None:
    now = [time.time() + 10]
    source = FolderSource(tmp_path, settle=0.3, clock=lambda: now[0])
    assert source.grab() is None
    (tmp_path / 'b.jpg').write_bytes(jpeg)
    (tmp_path / 'a.JPEG').write_bytes(jpeg)
    (tmp_path / 'notes.txt').write_text('not a frame')
    os.utime(tmp_path / 'a.JPEG', (now[0] - 5, now[0] - 5))
    os.utime(tmp_path / 'b.jpg', (now[0] - 2, now[0] - 2))
    (tmp_path / 'c.jpg').write_bytes(jpeg)
    os.utime(tmp_path / 'c.jpg', (now[0], now[0]))  # still being written
    first = source.grab()
    assert first is not None and first.name == 'a.JPEG'  # oldest first
    assert first.time == dt.datetime.fromtimestamp(now[0] - 5, dt.UTC)
    assert first.image.shape == (720, 1280, 3)
    assert not (tmp_path / 'a.JPEG').exists()  # deleted once read
    assert source.grab().name == 'b.jpg'
    assert source.grab() is None  # c.jpg has not settled
    now[0] += 1
    assert source.grab().name == 'c.jpg'
    assert sorted(p.name for p in tmp_path.iterdir()) == ['notes.txt']
    # a broken JPEG is reported and removed, not retried forever
    (tmp_path / 'd.jpg').write_bytes(b'\xff\xd8 truncated')
    now[0] += 1
    with pytest.raises(SourceError, match=r'd\.jpg: not an image'):
        source.grab()
    assert not (tmp_path / 'd.jpg').exists()
    with pytest.raises(SourceError):
        FolderSource(tmp_path / 'missing').grab()


class Camera:
    "A snapshot camera on 127.0.0.1 serving `frames` in turn"

    def __init__(self, frames: list[bytes]) -> None:
        self.frames = frames
        self.status = 200
        self.served = 0
        camera = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if camera.status != 200 or self.path != '/snapshot.jpg':
                    self.send_error(
                        404 if camera.status == 200 else camera.status)
                    return
                body = camera.frames[camera.served % len(camera.frames)]
                camera.served += 1
                self.send_response(200)
                self.send_header('Content-Type', 'image/jpeg')
                self.send_header('Content-Length', str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.http = ThreadingHTTPServer(('127.0.0.1', 0), Handler)
        self.http.daemon_threads = True
        self.thread = threading.Thread(
            target=self.http.serve_forever, args=(0.05,), daemon=True)

    @property
    def url(self) -> str:
        return f'http://127.0.0.1:{self.http.server_address[1]}/snapshot.jpg'

    def __enter__(self) -> Camera:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.http.shutdown()
        self.http.server_close()


def test_snapshot_source(jpeg: bytes) -> None:
    with Camera([jpeg]) as camera:
        frame = SnapshotSource(camera.url).grab()
        assert frame.image.shape == (720, 1280, 3)
        assert frame.time.tzinfo is not None
        with pytest.raises(SourceError, match='HTTP 404'):
            SnapshotSource(camera.url.replace('snapshot', 'x')).grab()
        camera.frames = [b'<html>login</html>']
        with pytest.raises(SourceError, match='not an image'):
            SnapshotSource(camera.url).grab()
        port = camera.http.server_address[1]
    with pytest.raises(SourceError, match=re.escape(f'127.0.0.1:{port}')):
        SnapshotSource(camera.url, timeout=1).grab()


def test_rtsp_source(tmp_path: pathlib.Path, jpeg: bytes) -> None:
    """The stream source through OpenCV's FFmpeg backend (a video file
    stands for the RTSP stream): the latest frame, then the end of the
    stream reported, then the stream opened again"""
    image = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    video = tmp_path / 'stream.avi'
    writer = cv2.VideoWriter(
        str(video), cv2.VideoWriter_fourcc(*'MJPG'), 5, (1280, 720))
    assert writer.isOpened()
    for _ in range(3):
        writer.write(image)
    writer.release()
    source = RtspSource(str(video))

    def grabs() -> list[Any]:
        "Grabs until the stream ends: the frames, then the error"
        results: list[Any] = []
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            try:
                frame = source.grab()
            except SourceError as error:
                results.append(error)
                return results
            if frame is not None:
                results.append(frame)
            time.sleep(0.01)
        raise AssertionError("the stream did not end")
    try:
        for _ in range(2):  # opened again after the end
            *frames, end = grabs()
            assert frames and all(
                f.image.shape == (720, 1280, 3) for f in frames)
            assert 'stream ended' in str(end)
    finally:
        source.close()
    missing = RtspSource(str(tmp_path / 'missing.avi'))
    try:
        error: SourceError | None = None
        deadline = time.monotonic() + WAIT
        while error is None and time.monotonic() < deadline:
            try:
                missing.grab()
            except SourceError as failure:
                error = failure
            time.sleep(0.01)
        assert 'cannot open the stream' in str(error)
    finally:
        missing.close()


# --- drivers into the outbox ------------------------------------------------

def camera_config(source: CameraSource, **values: Any) -> CameraConfig:
    return CameraConfig(
        id='cam-1', source=source, zones=(ISLAND,), interval=0.1,
        **values)


async def run_until(
        driver: CameraDriver, condition: Callable[[], Any]) -> None:
    task = asyncio.create_task(driver.run())
    try:
        await until(condition, task, WAIT)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def test_folder_camera_end_to_end(
        tmp_path: pathlib.Path, pipeline: Pipeline, jpeg: bytes) -> None:
    "JPEGs dropped in the folder -> one plate_read event in the outbox"
    folder = tmp_path / 'ftp'
    folder.mkdir()
    config = camera_config(CameraSource.FOLDER, path=folder)
    with Outbox(tmp_path / 'outbox.sqlite') as outbox:
        driver = CameraDriver(
            config, FolderSource(folder, settle=0), pipeline, outbox,
            min_confidence=Decimal('0.5'), voter=Voter(gap=0.3))
        for i in range(3):
            (folder / f'{i}.jpg').write_bytes(jpeg)
        asyncio.run(run_until(driver, outbox.depth))
        assert driver.frames == 3
        assert list(folder.iterdir()) == []
        [event] = outbox.pending()
        assert event.kind is EventKind.PLATE_READ
        assert event.device == 'cam-1'
        # the time of the best frame: a file's modification time
        assert abs(event.device_time - dt.datetime.now(dt.UTC)) < (
            dt.timedelta(seconds=WAIT))
        check_payload(event.payload, frames=3)
        assert driver.state is CameraState.STOPPED


def test_snapshot_camera_end_to_end(
        tmp_path: pathlib.Path, pipeline: Pipeline, jpeg: bytes) -> None:
    """Snapshots from an HTTP camera -> a plate_read event when the car
    leaves; the camera failing is an error state, then recovers"""
    empty = PlateGenerator(seed=3)._background((1280, 720))
    ok, nothing = cv2.imencode('.jpg', empty)
    assert ok
    with Camera([jpeg, jpeg, nothing.tobytes()]) as camera, Outbox(
            tmp_path / 'outbox.sqlite') as outbox:
        config = camera_config(CameraSource.SNAPSHOT, url=camera.url)
        votes = []
        driver = CameraDriver(
            config, SnapshotSource(camera.url), pipeline, outbox,
            min_confidence=Decimal('0.5'), voter=Voter(gap=0.25),
            on_vote=lambda vote, event: votes.append(vote))
        asyncio.run(run_until(driver, outbox.depth))
        event = outbox.pending()[0]
        assert event.device == 'cam-1'
        check_payload(event.payload)
        assert event.payload['frames'] >= 2
        assert driver.status == 'disconnected'  # stopped
        # the camera answers 503: failing, reported as an error
        camera.status = 503
        driver = CameraDriver(
            config, SnapshotSource(camera.url), pipeline, outbox,
            min_confidence=Decimal('0.5'))

        async def failing() -> None:
            assert not await driver.step()
            assert driver.state is CameraState.FAILING
            assert driver.status == 'error'
            assert 'HTTP 503' in (driver.last_error or '')
            camera.status = 200
            assert await driver.step()
            assert driver.state is CameraState.RUNNING
            assert driver.status == 'connected'
        asyncio.run(failing())


def test_reads_outside_zones_and_under_threshold_are_not_sent(
        tmp_path: pathlib.Path, pipeline: Pipeline, jpeg: bytes) -> None:
    frame_path = tmp_path / 'frame.jpg'
    frame_path.write_bytes(jpeg)
    with Outbox(tmp_path / 'outbox.sqlite') as outbox:
        # a zone that covers a corner of the frame where no plate is
        corner = dataclasses.replace(
            camera_config(CameraSource.FOLDER, path=tmp_path),
            zones=(ZoneConfig(
                'exit', ZoneKind.EXIT, (0.0, 0.0, 0.05, 0.05)),))
        driver = CameraDriver(
            corner, FolderSource(tmp_path, settle=0), pipeline, outbox,
            min_confidence=Decimal('0.5'))
        frame = FolderSource(tmp_path, settle=0).grab()
        assert frame is not None
        assert driver.observe(frame) == []
        # in the zone, but the threshold is above any confidence
        votes = []
        driver = CameraDriver(
            camera_config(CameraSource.FOLDER, path=tmp_path),
            FolderSource(tmp_path, settle=0), pipeline, outbox,
            min_confidence=Decimal('0.9999'),
            on_vote=lambda vote, event: votes.append((vote, event)))
        [observation] = driver.observe(frame)
        assert observation.plate == '粤BD12345'
        driver.voter.add(observation, 0.0)
        assert driver.emit(driver.voter.flush()) == []
        assert [(v.plate, e) for v, e in votes] == [('粤BD12345', None)]
        assert outbox.depth() == 0


def test_illegal_transition(tmp_path: pathlib.Path) -> None:
    driver = CameraDriver(
        camera_config(CameraSource.FOLDER, path=tmp_path),
        FolderSource(tmp_path), pipeline=None,  # type: ignore[arg-type]
        outbox=None,  # type: ignore[arg-type]
        min_confidence=Decimal('0.5'))
    driver._set_state(CameraState.STOPPED)
    with pytest.raises(IllegalTransition, match='cam-1: stopped -> running'):
        driver._set_state(CameraState.RUNNING)


def test_crop_fits_the_image_limit() -> None:
    rng = np.random.default_rng(0)
    # noise compresses badly
    noise = rng.integers(0, 255, (600, 1800, 3), np.uint8)
    text = encode_crop(noise)
    assert text is None or len(text) <= MAX_IMAGE_BASE64
    small = encode_crop(noise[:96, :300])
    assert small is not None and len(small) <= MAX_IMAGE_BASE64


# --- the App: cameras -> LPR -> outbox -> server ----------------------------

@pytest.fixture
def server() -> Iterator[FakeServer]:
    with FakeServer() as fake:
        fake.policy = dict(POLICY)
        fake.nozzles = nozzles_answer()
        yield fake


def test_app_sends_plate_reads(
        tmp_path: pathlib.Path, server: FakeServer, jpeg: bytes) -> None:
    folder = tmp_path / 'ftp'
    folder.mkdir()

    async def scenario() -> None:
        async with PumpServer(demo_pumps(2, 2)) as line:
            _, port = await line.start_udp()
            config = dataclasses.replace(
                box_config(tmp_path, server.url, port),
                cameras=(camera_config(CameraSource.FOLDER, path=folder),))
            app = App(config, timing=TIMING)
            task = asyncio.create_task(app.run())
            try:
                await until(lambda: 'cam-1' in app.cameras, task, WAIT)
                # the camera is a device of the box
                [camera] = [
                    d for d in app.devices() if d['kind'] == 'camera']
                assert camera['identifier'] == 'cam-1'
                assert camera['protocol'] == 'folder'
                await until(lambda: server.routes('setup'), task, WAIT)
                [reported] = [
                    d for d in server.routes('setup')[0].data['devices']
                    if d['kind'] == 'camera']
                assert reported['identifier'] == 'cam-1'
                assert reported['connection'] == str(folder)
                (folder / 'frame.jpg').write_bytes(jpeg)

                def reads() -> list[dict[str, Any]]:
                    with server.changed:
                        return [
                            e for e in server.events
                            if e['kind'] == EventKind.PLATE_READ]
                await until(reads, task, WAIT)
                [event] = reads()
                assert event['device'] == 'cam-1'
                check_payload(event['payload'], frames=1)
                status = app.status()['cameras'][0]
                assert status['id'] == 'cam-1'
                assert status['frames'] == 1
                assert status['state'] == 'running'
            finally:
                app.stop()
                await asyncio.wait_for(task, WAIT)
    asyncio.run(scenario())


def test_offline_list_authorises_a_listed_member_in_fallback(
        tmp_path: pathlib.Path, server: FakeServer, jpeg: bytes) -> None:
    """The configuration command's frictionless plates are kept; in
    fallback (authorising nothing else), a listed plate read at an island
    authorises the next lift there with min(limit, fallback max amount)"""
    folder = tmp_path / 'ftp'
    folder.mkdir()
    island = ZoneConfig('island-1', ZoneKind.ISLAND, nozzles=(1,))
    timing = dataclasses.replace(TIMING, plate_vote_gap=0.3)
    offline_list = {
        'version': 1, 'generated': '2026-12-05T08:00:00+00:00',
        'frictionless_plates': [
            {'plate': '粤BD12345', 'colour': 'green', 'limit': '80.00'},
            {'plate': '京A12345', 'colour': 'blue', 'limit': '500.00'},
            ]}

    async def scenario() -> None:
        pumps = demo_pumps(2, 2)
        async with PumpServer(pumps) as line:
            _, port = await line.start_udp()
            config = dataclasses.replace(
                box_config(tmp_path, server.url, port,
                    mode=FallbackMode.DISABLED),
                cameras=(dataclasses.replace(
                    camera_config(CameraSource.FOLDER, path=folder),
                    zones=(island,)),))
            app = App(config, timing=timing)
            task = asyncio.create_task(app.run())

            def reads() -> list[dict[str, Any]]:
                with server.changed:
                    return [
                        e for e in server.events
                        if e['kind'] == EventKind.PLATE_READ]
            try:
                await until(lambda: all(
                        p.status is PumpStatus.RESET for p in pumps),
                    task, WAIT)
                server.add_command(50, 'configuration', offline_list)
                await until(lambda: [
                        a for a in server.acks if a['id'] == 50], task, WAIT)
                assert app.offline is not None
                assert app.offline.plates == {
                    ('粤BD12345', 'green'): Decimal('80.00'),
                    ('京A12345', 'blue'): Decimal('500.00')}
                assert app.status()['offline_list']['plates'] == 2
                # online: a read is only sent
                (folder / 'online.jpg').write_bytes(jpeg)
                await until(reads, task, WAIT)
                assert app.offline.marked == {}

                server.mode = 'down'
                await until(
                    lambda: app.link is LinkState.FALLBACK, task, WAIT)
                pumps[0].lift(1)
                await asyncio.sleep(0.3)
                # fallback mode 'disabled': nothing without a listed read
                assert pumps[0].status is PumpStatus.RESET
                (folder / 'fallback.jpg').write_bytes(jpeg)
                await until(
                    lambda: pumps[0].status is PumpStatus.AUTHORIZED,
                    task, WAIT)
                assert pumps[0].preset_amount == Decimal('80.00')
                # the read is used up once the pump confirmed
                await until(lambda: app.offline.marked == {}, task, WAIT)
            finally:
                app.stop()
                await asyncio.wait_for(task, WAIT)
        # the list survives a restart of the box
        with Outbox(config.outbox_path) as outbox:
            kept = OfflineList(outbox)
            kept.load()
        assert kept.plates[('粤BD12345', 'green')] == Decimal('80.00')
        assert kept.generated == '2026-12-05T08:00:00+00:00'
    asyncio.run(scenario())


@pytest.mark.parametrize(('payload', 'error'), [
    ({'version': 2, 'frictionless_plates': []}, 'version 2'),
    ({'version': 1, 'frictionless_plates': {}}, 'not a list'),
    ({'version': 1, 'frictionless_plates': [
        {'plate': '京A12345', 'colour': 'blue', 'limit': '-1'}]},
        'limit: must be positive'),
    ({'version': 1, 'frictionless_plates': [
        {'plate': '京A12345', 'limit': '10'}]}, 'plate and colour'),
    ])
def test_offline_list_refused(
        tmp_path: pathlib.Path, server: FakeServer, payload: Any,
        error: str) -> None:
    async def scenario() -> None:
        async with PumpServer(demo_pumps(2, 2)) as line:
            _, port = await line.start_udp()
            app = App(box_config(tmp_path, server.url, port), timing=TIMING)
            task = asyncio.create_task(app.run())
            try:
                await until(lambda: app.setup_done.is_set(), task, WAIT)
                server.add_command(60, 'configuration', payload)

                def acks() -> list[dict[str, Any]]:
                    with server.changed:
                        return [a for a in server.acks if a['id'] == 60]
                await until(acks, task, WAIT)
                [ack] = acks()
                assert ack['status'] == 'failed'
                assert error in ack['result']['error']
                assert app.offline is not None
                assert app.offline.plates == {}
            finally:
                app.stop()
                await asyncio.wait_for(task, WAIT)
    asyncio.run(scenario())
