# This file is part of fuelpay.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""A plate camera: frames -> plate reads -> votes -> ``plate_read`` events

`CameraDriver.run()` takes a frame from its source every `interval`
seconds (a folder camera: every file as it comes, looking again every
`interval`), reads the plates in it with the shared `Pipeline` (one
inference at a time for all cameras: the box has 2 cores), keeps the valid
reads whose centre lies in one of the camera's zones, and votes over the
frames of each vehicle pass (`iot_box.lpr.voting`).  Each finished pass
with a confidence of at least `min_confidence` becomes one ``plate_read``
event in the outbox (payload version 1, see `payload`).
"""
from __future__ import annotations

import asyncio
import base64
import datetime as dt
import enum
import logging
import threading
import time
from collections.abc import Callable
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any, Protocol

import cv2
import numpy as np

from iot_box.config import CameraConfig, CameraSource
from iot_box.drivers.camera.sources import Frame, FrameSource, SourceError
from iot_box.drivers.state import DeviceStateMachine, IllegalTransition
from iot_box.events import EVENT_VERSION, Event, EventKind
from iot_box.lpr.pipeline import Pipeline
from iot_box.lpr.voting import Observation, Vote, Voter

__all__ = [
    'CameraDriver',
    'CameraState',
    'IllegalTransition',
    'encode_crop',
    'payload',
]

logger = logging.getLogger(__name__)

# The contract caps the base64 image of a read at 64 KiB
MAX_IMAGE_BASE64 = 64 * 1024
# JPEG qualities tried in turn until the crop fits (a plate crop is a few
# KiB at 85)
JPEG_QUALITIES = (85, 70, 50, 30)
CONFIDENCE_PLACES = Decimal('0.0001')
# A source failing keeps being retried, at most this often, so that a
# camera that is off does not fill the log
RETRY_INTERVAL = 5.0


class CameraState(enum.StrEnum):
    STARTING = 'starting'  # no frame yet
    RUNNING = 'running'  # frames arrive
    FAILING = 'failing'  # the source fails; retried
    STOPPED = 'stopped'


_TRANSITIONS = {
    CameraState.STARTING: {
        CameraState.RUNNING, CameraState.FAILING, CameraState.STOPPED},
    CameraState.RUNNING: {CameraState.FAILING, CameraState.STOPPED},
    CameraState.FAILING: {CameraState.RUNNING, CameraState.STOPPED},
    CameraState.STOPPED: set(),
    }


class EventSink(Protocol):
    def append(
            self, kind: EventKind | str, device: str,
            device_time: dt.datetime, payload: Any) -> Event: ...


def encode_crop(crop: np.ndarray) -> str | None:
    "Base64 JPEG of a plate crop within the contract's limit, or None"
    for quality in JPEG_QUALITIES:
        ok, data = cv2.imencode(
            '.jpg', crop, [cv2.IMWRITE_JPEG_QUALITY, quality])
        if not ok:
            return None
        text = base64.b64encode(data.tobytes()).decode('ascii')
        if len(text) <= MAX_IMAGE_BASE64:
            return text
    return None


def payload(vote: Vote, camera: CameraConfig) -> dict[str, Any]:
    "The ``plate_read`` payload (version 1) of a vote"
    zone = next(z for z in camera.zones if z.code == vote.zone)
    result: dict[str, Any] = {
        'version': EVENT_VERSION,
        'plate': vote.plate,
        'colour': str(vote.colour),
        'confidence': Decimal(repr(vote.confidence)).quantize(
            CONFIDENCE_PLACES, rounding=ROUND_HALF_EVEN),
        'zone': zone.code,
        'zone_kind': str(zone.kind),
        'frames': vote.frames,
        }
    if vote.crop is not None:
        image = encode_crop(vote.crop)
        if image is not None:
            result['image'] = image
            result['image_format'] = 'jpeg'
    return result


class CameraDriver(DeviceStateMachine):
    "One camera; `run()` until cancelled"
    transitions = _TRANSITIONS
    connected_state = CameraState.RUNNING
    failing_state = CameraState.FAILING
    log = logger

    def __init__(
            self, config: CameraConfig, source: FrameSource,
            pipeline: Pipeline, outbox: EventSink, *,
            min_confidence: Decimal, lock: threading.Lock | None = None,
            voter: Voter | None = None,
            clock: Callable[[], float] = time.monotonic,
            on_vote: Callable[[Vote, Event | None], None] | None = None
            ) -> None:
        self.config = config
        self.source = source
        self.pipeline = pipeline
        self.outbox = outbox
        self.min_confidence = float(min_confidence)
        # one inference at a time for all the cameras of the box
        self.lock = lock if lock is not None else threading.Lock()
        self.voter = voter if voter is not None else Voter()
        # the voter is used from the worker thread and the loop's
        self._voter_lock = threading.Lock()
        self.clock = clock
        self.on_vote = on_vote
        self.state = CameraState.STARTING
        self.frames = 0
        self.last_error: str | None = None
        self.last_frame: dt.datetime | None = None

    @property
    def device(self) -> str:
        return self.config.id


    # --- frames ---------------------------------------------------------

    def observe(self, frame: Frame) -> list[Observation]:
        "The valid reads of a frame in one of the zones (blocking)"
        with self.lock:
            reads = self.pipeline.read(frame.image)
        height, width = frame.image.shape[:2]
        observations = []
        for read in reads:
            if not read.valid:
                continue
            x, y = read.centre
            zone = self.config.zone_at(x / width, y / height)
            if zone is None:
                continue
            observations.append(Observation(
                    plate=read.plate, colour=read.colour,
                    confidence=read.confidence, time=frame.time,
                    zone=zone.code, crop=read.crop))
        return observations

    def process(self, frame: Frame) -> list[Vote]:
        """Read a frame and vote; the votes of the passes it finished
        (blocking: run in a worker thread, the votes written by `emit` in
        the loop's thread, where the outbox lives)"""
        observations = self.observe(frame)
        now = self.clock()
        self.frames += 1
        self.last_frame = frame.time
        votes: list[Vote] = []
        with self._voter_lock:
            for observation in observations:
                votes += self.voter.add(observation, now)
            return votes + self.voter.finished(now)

    def emit(self, votes: list[Vote]) -> list[Event]:
        "One plate_read event per vote of enough confidence"
        events = []
        for vote in votes:
            event = None
            if vote.confidence >= self.min_confidence:
                event = self.outbox.append(
                    EventKind.PLATE_READ, self.device, vote.time,
                    payload(vote, self.config))
                events.append(event)
                logger.info(
                    "%s: plate %s (%s) in %s, confidence %.3f over %s "
                    "frame(s), seq %s", self.device, vote.plate,
                    vote.colour, vote.zone, vote.confidence, vote.frames,
                    event.seq)
            else:
                logger.info(
                    "%s: plate %s not sent: confidence %.3f under %s",
                    self.device, vote.plate, vote.confidence,
                    self.min_confidence)
            if self.on_vote is not None:
                self.on_vote(vote, event)
        return events

    # --- life -----------------------------------------------------------

    async def step(self) -> bool:
        "Take and process one frame; False when the source had none"
        try:
            frame = await asyncio.to_thread(self.source.grab)
        except SourceError as error:
            if self.state is not CameraState.FAILING:
                logger.error("%s: %s", self.device, error)
            self.last_error = str(error)
            self._set_state(CameraState.FAILING)
            return False
        self._set_state(CameraState.RUNNING)
        if frame is None:
            # nothing new (a folder): passes may still end by time
            with self._voter_lock:
                votes = self.voter.finished(self.clock())
            self.emit(votes)
            return False
        self.emit(await asyncio.to_thread(self.process, frame))
        return True

    async def run(self) -> None:
        logger.info("%s: camera (%s) started", self.device,
            self.config.source)
        try:
            while True:
                started = self.clock()
                got = await self.step()
                if self.state is CameraState.FAILING:
                    await asyncio.sleep(
                        max(self.config.interval, RETRY_INTERVAL))
                elif got and self.config.source is CameraSource.FOLDER:
                    continue  # a folder's backlog is read without waiting
                else:
                    spent = self.clock() - started
                    await asyncio.sleep(
                        max(0.0, self.config.interval - spent))
        finally:
            # the passes open at a stop are voted and written (a frame
            # being read at that moment is dropped with its thread)
            with self._voter_lock:
                votes = self.voter.flush()
            self.emit(votes)
            self.source.close()
            self._set_state(CameraState.STOPPED)
