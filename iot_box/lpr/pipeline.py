# This file is part of fuelpay.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""Frame -> plate reads: detection, rectification, recognition, colour

    pipeline = Pipeline()             # loads both models, once
    for read in pipeline.read(frame):  # BGR uint8 frame
        read.plate, read.colour, read.confidence, read.valid

1. `PlateDetector` finds plates and their 4 corners;
2. each plate is warped flat to a fixed height with a little padding; a
   plate whose width/height ratio is low is a double-row plate, and its two
   rows are read separately;
3. `TextRecognizer` reads it restricted to plate characters, position by
   position; the text is normalised and its format validated;
4. the colour comes from the background, checked against the text;
5. confidence = detector score x mean character probability.

Only `valid` reads (a known format) should leave the box.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from iot_box.lpr import models
from iot_box.lpr.colour import plate_colour
from iot_box.lpr.detector import Detection, PlateDetector
from iot_box.lpr.plate import PlateColour, is_valid, normalise
from iot_box.lpr.recognizer import HEIGHT, Reading, TextRecognizer

__all__ = ['AUTO_CHARGE_CONFIDENCE', 'Pipeline', 'PlateRead']

# Width/height ratio under which a plate is double-row: single-row plates
# are 3.1 (440 x 140 mm) to 3.4 (480 x 140), double-row 2.0 (440 x 220);
# the detector's corners of a double-row plate often miss part of the top
# row, which raises the ratio to ~2.4
DOUBLE_ROW_RATIO = 2.7
# Padding added around a single-row plate before recognition, as fractions
# of its width and height: the corners are a few pixels off at times and a
# character cut at the edge is lost
PAD_X = 0.03
PAD_Y = 0.12
# A double-row plate's corners from the detector cover the bottom row and
# part of the top one: the quad is extended upwards by this fraction of
# its height (more padding costs nothing: the rows are cut at the gap)
DOUBLE_EXTEND_TOP = 0.25
# Where the two rows meet, as a fraction of a double-row plate's height
# (GA 36: top row 15-75 mm, bottom row 90-200 mm of 220 mm)
DOUBLE_SPLIT = 0.37
# Height double-row plates are warped to before cutting the rows
DOUBLE_HEIGHT = 144
# Confidence from which a read is trusted to charge a member without a
# person looking (frictionless fuelling, the offline list): on the
# generated frames of bench/lpr.py no read at or above it was wrong
# (precision goal 99.5 %); the server applies its own threshold
AUTO_CHARGE_CONFIDENCE = 0.9
# Plates narrower than this (pixels in the frame) are not read: too few
# pixels per character for a read worth sending (LPR_NOTES: < ~120 px)
MIN_PLATE_WIDTH = 60


@dataclass(frozen=True, slots=True)
class PlateRead:
    plate: str
    colour: PlateColour
    confidence: float  # detector score x mean character probability
    detection: Detection
    probabilities: tuple[float, ...]
    crop: np.ndarray = field(repr=False)  # the rectified plate, BGR
    double_row: bool = False

    @property
    def valid(self) -> bool:
        return is_valid(self.plate)

    @property
    def centre(self) -> tuple[float, float]:
        x, y = self.detection.corners.mean(axis=0)
        return float(x), float(y)


def _size(corners: np.ndarray) -> tuple[float, float]:
    tl, tr, br, bl = corners
    width = (np.linalg.norm(tr - tl) + np.linalg.norm(br - bl)) / 2
    height = (np.linalg.norm(bl - tl) + np.linalg.norm(br - tr)) / 2
    return float(width), float(max(height, 1.0))


def _expand(
        corners: np.ndarray, left: float, right: float, top: float,
        bottom: float) -> np.ndarray:
    "The quad grown by fractions of its own edges"
    tl, tr, br, bl = corners.astype(np.float32)
    across_top, across_bottom = tr - tl, br - bl
    down_left, down_right = bl - tl, br - tr
    return np.array([
            tl - left * across_top - top * down_left,
            tr + right * across_top - top * down_right,
            br + right * across_bottom + bottom * down_right,
            bl - left * across_bottom + bottom * down_left], np.float32)


def rectify(
        frame: np.ndarray, corners: np.ndarray, width: int,
        height: int) -> np.ndarray:
    target = np.array(
        [[0, 0], [width, 0], [width, height], [0, height]], np.float32)
    matrix = cv2.getPerspectiveTransform(corners.astype(np.float32), target)
    return cv2.warpPerspective(
        frame, matrix, (width, height), flags=cv2.INTER_CUBIC,
        borderMode=cv2.BORDER_REPLICATE)


class Pipeline:
    "Detector and recogniser, loaded once; `read(frame)` per frame"

    def __init__(
            self, threads: int = models.DEFAULT_THREADS,
            detector: PlateDetector | None = None,
            recognizer: TextRecognizer | None = None,
            dark_plates: bool = True) -> None:
        self.detector = detector or PlateDetector(
            threads=threads, dark_plates=dark_plates)
        self.recognizer = recognizer or TextRecognizer(threads=threads)

    def read(self, frame: np.ndarray) -> list[PlateRead]:
        "Every plate found in the frame, valid or not, best first"
        singles: list[tuple[Detection, np.ndarray]] = []
        doubles: list[tuple[Detection, np.ndarray]] = []
        for detection in self.detector.detect(frame):
            width, height = _size(detection.corners)
            if width < MIN_PLATE_WIDTH:
                continue
            if width / height < DOUBLE_ROW_RATIO:
                doubles.append((detection, self._double(frame, detection)))
            else:
                singles.append((detection, self._single(frame, detection)))
        reads: list[PlateRead] = []
        if singles:
            readings = self.recognizer.read([crop for _, crop in singles])
            for (detection, crop), reading in zip(
                    singles, readings, strict=True):
                reads.append(self._read(detection, crop, reading, False))
        if doubles:
            tops, bottoms = [], []
            for _, crop in doubles:
                split = round(crop.shape[0] * DOUBLE_SPLIT)
                tops.append(self._top_row(crop[:split]))
                bottoms.append(crop[split:])
            readings = self.recognizer.read_double(tops, bottoms)
            for (detection, crop), reading in zip(
                    doubles, readings, strict=True):
                reads.append(self._read(detection, crop, reading, True))
        reads.sort(key=lambda r: (r.valid, r.confidence), reverse=True)
        return reads

    @staticmethod
    def _read(
            detection: Detection, crop: np.ndarray, reading: Reading,
            double_row: bool) -> PlateRead:
        text = normalise(reading.text)
        probabilities = reading.probabilities
        mean = float(np.mean(probabilities)) if probabilities else 0.0
        return PlateRead(
            plate=text, colour=plate_colour(crop, text),
            confidence=detection.score * mean, detection=detection,
            probabilities=probabilities, crop=crop, double_row=double_row)

    @staticmethod
    def _single(frame: np.ndarray, detection: Detection) -> np.ndarray:
        corners = _expand(detection.corners, PAD_X, PAD_X, PAD_Y, PAD_Y)
        width, height = _size(corners)
        # twice the recogniser's height: it shrinks the crop with area
        # averaging, which smooths the warp's interpolation, and the crop
        # sent with the event stays legible for a person
        out_height = HEIGHT * 2
        return rectify(
            frame, corners, round(out_height * width / height), out_height)

    @staticmethod
    def _double(frame: np.ndarray, detection: Detection) -> np.ndarray:
        corners = _expand(
            detection.corners, PAD_X, PAD_X, DOUBLE_EXTEND_TOP, PAD_Y / 2)
        width, height = _size(corners)
        return rectify(
            frame, corners, round(DOUBLE_HEIGHT * width / height),
            DOUBLE_HEIGHT)

    @staticmethod
    def _top_row(row: np.ndarray) -> np.ndarray:
        """The middle of the top row: its two characters sit in the centre
        half of the plate (GA 36: 110-330 mm of 440)"""
        width = row.shape[1]
        return row[:, int(width * 0.2):int(width * 0.8)]
