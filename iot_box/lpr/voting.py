# This file is part of fuelpay.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""Voting over the frames of one vehicle pass

A camera reads the same plate in many frames while a vehicle rolls in;
the box sends one read per pass.  `Voter` groups the valid reads of a zone
into passes: a read joins the open pass of its zone whose plate is close
to its own (at most `MAX_DIFFERENCES` characters differ: the same plate
misread), else opens a pass of its own.  A pass is finished when no frame
has read it for `gap` seconds, or after `max_frames` frames (the later
frames of a car that stays only keep its pass open: one vote per pass).

The vote weighs each distinct text by the sum of its reads' confidences.
The result's confidence is the best winning read's confidence (detector
score x mean character probability) times the winner's share of the
weight: a pass read 5 times the same way keeps its confidence; one read
3 ways loses some.
"""
from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

from iot_box.lpr.plate import PlateColour

__all__ = ['Observation', 'Vote', 'Voter']

# Seconds without a read of a pass before it is finished: a car stopping
# at the island is read in every frame; 2 s is several frames missed in a
# row (snapshots every 0.5 s) and short enough to report a car at an
# entrance before it reaches the island
DEFAULT_GAP = 2.0
# Frames after which a pass is voted even if the car stays: a car that
# stops in front of the camera for the whole fill is reported after this
# many frames (about 10 s at 2 frames a second), not when it leaves; its
# later frames only keep the pass open, so it is reported once
DEFAULT_MAX_FRAMES = 20
# Two reads of one vehicle differ in at most this many characters (a
# province or a Q/0 confusion in one frame); two cars differ in more
MAX_DIFFERENCES = 2


@dataclass(frozen=True, slots=True)
class Observation:
    "One valid read of one frame"
    plate: str
    colour: PlateColour
    confidence: float
    time: dt.datetime
    zone: str
    # the rectified plate of this frame, BGR, kept for the best one
    crop: np.ndarray | None = field(default=None, repr=False, compare=False)


@dataclass(frozen=True, slots=True)
class Vote:
    plate: str
    colour: PlateColour
    confidence: float
    zone: str
    frames: int
    time: dt.datetime  # of the best frame
    crop: np.ndarray | None = field(repr=False, compare=False)


def _differences(a: str, b: str) -> int:
    if len(a) != len(b):
        return max(len(a), len(b))
    return sum(x != y for x, y in zip(a, b, strict=True))


@dataclass(slots=True)
class _Pass:
    observations: list[Observation]
    last: float  # monotonic seconds of the last read
    reported: bool = False  # voted at max_frames, the car still there

    def close_to(self, plate: str) -> bool:
        return any(
            _differences(o.plate, plate) <= MAX_DIFFERENCES
            for o in self.observations)


def vote(observations: Iterable[Observation]) -> Vote:
    "The vote over the observations of one pass"
    observations = list(observations)
    if not observations:
        raise ValueError("nothing to vote on")
    weights: dict[str, float] = {}
    for o in observations:
        weights[o.plate] = weights.get(o.plate, 0.0) + o.confidence
    total = sum(weights.values())
    plate = max(weights, key=lambda p: (weights[p], p))
    winners = [o for o in observations if o.plate == plate]
    colours: dict[PlateColour, float] = {}
    for o in winners:
        colours[o.colour] = colours.get(o.colour, 0.0) + o.confidence
    colour = max(colours, key=lambda c: (colours[c], c))
    best = max(winners, key=lambda o: o.confidence)
    share = weights[plate] / total if total > 0 else 0.0
    return Vote(
        plate=plate, colour=colour, confidence=best.confidence * share,
        zone=best.zone, frames=len(observations), time=best.time,
        crop=best.crop)


class Voter:
    "Passes of one camera; `add` reads, `finished` the votes due"

    def __init__(
            self, gap: float = DEFAULT_GAP,
            max_frames: int = DEFAULT_MAX_FRAMES) -> None:
        self.gap = gap
        self.max_frames = max_frames
        self._passes: list[_Pass] = []

    @property
    def open_passes(self) -> int:
        return len(self._passes)

    def add(self, observation: Observation, now: float) -> list[Vote]:
        """Add a read seen at monotonic time now; returns the votes of
        passes it completed (max_frames reached)"""
        for pass_ in self._passes:
            if (pass_.observations[0].zone == observation.zone
                    and pass_.close_to(observation.plate)):
                pass_.last = now
                if pass_.reported:
                    return []
                pass_.observations.append(observation)
                if len(pass_.observations) >= self.max_frames:
                    pass_.reported = True
                    return [vote(pass_.observations)]
                return []
        self._passes.append(_Pass([observation], now))
        return []

    def finished(self, now: float) -> list[Vote]:
        "The votes of the passes not read for `gap` seconds, closed"
        done = [p for p in self._passes if now - p.last >= self.gap]
        for pass_ in done:
            self._passes.remove(pass_)
        return [vote(p.observations) for p in done if not p.reported]

    def flush(self) -> list[Vote]:
        "Every open pass voted now (at a stop)"
        passes, self._passes = self._passes, []
        return [vote(p.observations) for p in passes if not p.reported]
