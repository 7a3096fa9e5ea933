# This file is part of fuelpay.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""Where a camera's frames come from

Each source has a blocking `grab()` returning the next `Frame` or None
when there is none yet; the driver calls it in a worker thread.

- `SnapshotSource`: HTTP(S) GET of a JPEG (most IP cameras have a
  snapshot URL), the frame time is the box's clock at the answer;
- `RtspSource`: a video stream through OpenCV, read continuously in a
  thread (only the latest frame kept), reopened after a failure;
- `FolderSource`: JPEG files a camera pushes (FTP) into a folder; each is
  read once it stopped growing, then deleted; its time is the file's
  modification time.
"""
from __future__ import annotations

import datetime as dt
import logging
import os
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

from iot_box.config import CameraConfig, CameraSource

__all__ = [
    'FolderSource',
    'Frame',
    'FrameSource',
    'RtspSource',
    'SnapshotSource',
    'SourceError',
    'decode_jpeg',
    'source_for',
]

logger = logging.getLogger(__name__)

# A snapshot takes tens of milliseconds on the LAN; a camera that has not
# answered in 5 s is down, and a stop should not wait longer than that
SNAPSHOT_TIMEOUT = 5.0
# A snapshot bigger than this is not a JPEG frame of a station camera
# (a 4K JPEG is 1-3 MB)
MAX_SNAPSHOT_BYTES = 16 * 1024 * 1024
# A file whose modification time is this recent may still be being
# written by the FTP server: it is left for the next look
SETTLE = 0.3
JPEG_SUFFIXES = frozenset({'.jpg', '.jpeg'})


class SourceError(Exception):
    "The source failed (camera unreachable, not a JPEG); the driver retries"


@dataclass(frozen=True, slots=True)
class Frame:
    image: np.ndarray = field(repr=False)  # BGR uint8
    time: dt.datetime  # aware
    name: str = ''  # file name or URL, for logs


class FrameSource(Protocol):
    def grab(self) -> Frame | None:
        "The next frame, None when there is none yet; SourceError"

    def close(self) -> None: ...


def decode_jpeg(data: bytes, name: str) -> np.ndarray:
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise SourceError(f"{name}: not an image")
    return image


class SnapshotSource:
    "An HTTP(S) snapshot URL: one GET per frame"

    def __init__(self, url: str, timeout: float = SNAPSHOT_TIMEOUT) -> None:
        self.url = url
        self.timeout = timeout

    def grab(self) -> Frame:
        request = urllib.request.Request(
            self.url, headers={'Accept': 'image/jpeg'})
        try:
            # TLS is verified (the default context)
            with urllib.request.urlopen(
                    request, timeout=self.timeout) as response:
                data = response.read(MAX_SNAPSHOT_BYTES + 1)
        except urllib.error.HTTPError as error:
            raise SourceError(
                f"{self.url}: HTTP {error.code}") from None
        except (urllib.error.URLError, OSError) as error:
            reason = getattr(error, 'reason', error)
            raise SourceError(f"{self.url}: {reason}") from None
        if len(data) > MAX_SNAPSHOT_BYTES:
            raise SourceError(f"{self.url}: snapshot too big")
        return Frame(
            decode_jpeg(data, self.url), dt.datetime.now(dt.UTC), self.url)

    def close(self) -> None:
        pass


class RtspSource:
    """A video stream (RTSP) read with OpenCV in a thread of its own

    A live stream must be read as fast as it comes, or OpenCV's buffer
    hands out frames seconds old: the reader thread keeps only the latest
    frame, and `grab()` returns it once (None when there is no new one
    yet).  A stream that fails or ends is reported by the next `grab()`,
    and the one after opens it again."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._lock = threading.Lock()
        self._latest: Frame | None = None
        self._error: str | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    def _read(self, stop: threading.Event) -> None:
        capture = cv2.VideoCapture(self.url, cv2.CAP_FFMPEG)
        try:
            if not capture.isOpened():
                error = "cannot open the stream"
            else:
                error = "stream ended"
                while not stop.is_set():
                    ok, image = capture.read()
                    if not ok or image is None:
                        break
                    frame = Frame(image, dt.datetime.now(dt.UTC), self.url)
                    with self._lock:
                        self._latest = frame
        finally:
            capture.release()
        with self._lock:
            self._error = None if stop.is_set() else error

    def grab(self) -> Frame | None:
        with self._lock:
            frame, self._latest = self._latest, None
            error = self._error
            if frame is None and error is not None:
                self._error = None
                self._thread = None  # opened again at the next grab
                raise SourceError(f"{self.url}: {error}")
            if self._thread is None:
                self._stop = threading.Event()
                self._thread = threading.Thread(
                    target=self._read, args=(self._stop,),
                    name=f'rtsp-{self.url}', daemon=True)
                self._thread.start()
        return frame

    def close(self) -> None:
        with self._lock:
            thread, self._thread = self._thread, None
            self._stop.set()
        if thread is not None:
            # a read returns within a frame interval or the stream's
            # timeout; the thread is a daemon if it does not
            thread.join(timeout=SNAPSHOT_TIMEOUT)


class FolderSource:
    """JPEG files dropped into a folder, oldest first; each is deleted once
    read (a file that is not a JPEG image is deleted too, and reported)"""

    def __init__(
            self, path: Path, settle: float = SETTLE,
            clock: object = time.time) -> None:
        self.path = path
        self.settle = settle
        self._clock = clock

    def _ready(self) -> list[os.DirEntry[str]]:
        now = self._clock()  # type: ignore[operator]
        entries = []
        try:
            with os.scandir(self.path) as scan:
                for entry in scan:
                    if (Path(entry.name).suffix.lower() in JPEG_SUFFIXES
                            and not entry.name.startswith('.')
                            and entry.is_file()):
                        entries.append(entry)
        except OSError as error:
            raise SourceError(
                f"{self.path}: {error.strerror}") from None
        ready = [
            e for e in entries if now - e.stat().st_mtime >= self.settle]
        ready.sort(key=lambda e: (e.stat().st_mtime, e.name))
        return ready

    def grab(self) -> Frame | None:
        for entry in self._ready():
            path = Path(entry.path)
            mtime = entry.stat().st_mtime
            try:
                data = path.read_bytes()
            except FileNotFoundError:
                continue  # taken by someone else
            finally:
                path.unlink(missing_ok=True)
            time_ = dt.datetime.fromtimestamp(mtime, dt.UTC)
            return Frame(decode_jpeg(data, entry.name), time_, entry.name)
        return None

    def close(self) -> None:
        pass


def source_for(config: CameraConfig) -> FrameSource:
    if config.source is CameraSource.FOLDER:
        assert config.path is not None
        return FolderSource(config.path)
    assert config.url is not None
    if config.source is CameraSource.RTSP:
        return RtspSource(config.url)
    return SnapshotSource(config.url)
