# This file is part of fuelpay.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""Synthetic plates: crops and scenes with their labels

Renders plates of every colour and layout with Debian's CJK fonts
(fonts-noto-cjk, else fonts-wqy-zenhei), each character stretched into its
cell as on the plates (GA 36-2018 proportions), then degrades them
(perspective, blur, noise, light, JPEG) and places them into larger
scenes.  Everything comes from a `random.Random` seeded by the caller, so
a seed always gives the same images: tests assert on a fixed seed and
`bench/lpr.py` measures on the same frames for every pipeline.

    generator = PlateGenerator(seed=7)
    sample = generator.scene()      # .image (BGR), .plate, .colour, .corners
"""
from __future__ import annotations

import enum
import random
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from iot_box.lpr.plate import (
    DIGITS,
    LETTERS,
    PROVINCES,
    PlateColour,
)

__all__ = [
    'FONT_PATHS',
    'Layout',
    'PlateGenerator',
    'Sample',
    'find_font',
    'random_plate',
]

# Debian's CJK fonts, in order of preference (index of the SC face)
FONT_PATHS = (
    (Path('/usr/share/fonts/opentype/noto/NotoSansCJK-Bold.ttc'), 2),
    (Path('/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc'), 0),
    )
# Pixels per millimetre of the rendered plates: a 440 mm plate is 440 px,
# bigger than any camera sees it, so that warps only shrink
SCALE = 1.0
# The scene size of a 720p camera frame, what station cameras deliver
SCENE_SIZE = (1280, 720)
# Plate widths in a scene: from the narrowest a camera at an island should
# give (LPR_NOTES: under ~120 px reads degrade) to a close-up
SCENE_PLATE_WIDTH = (130, 300)
RED = (200, 20, 20)
WHITE = (245, 245, 245)
BLACK = (20, 20, 20)


class Layout(enum.StrEnum):
    SINGLE = 'single'  # one row, 7 characters (440 x 140 mm)
    NEW_ENERGY = 'new_energy'  # one row, 8 characters (480 x 140 mm)
    DOUBLE = 'double'  # two rows: 2 characters over 5 (440 x 220 mm)


@dataclass(frozen=True, slots=True)
class Sample:
    image: np.ndarray  # BGR, uint8
    plate: str
    colour: PlateColour
    layout: Layout
    # the plate's corners in the image: top-left, top-right, bottom-right,
    # bottom-left (x, y)
    corners: np.ndarray


@dataclass(frozen=True, slots=True)
class _Style:
    background: tuple[int, int, int]  # RGB
    text: tuple[int, int, int]
    suffix: tuple[int, int, int]  # colour of a suffix character
    # bottom colour of a vertical gradient (new-energy plates) or None
    gradient: tuple[int, int, int] | None = None


_STYLES = {
    PlateColour.BLUE: _Style((10, 70, 190), WHITE, WHITE),
    PlateColour.YELLOW: _Style((250, 195, 10), BLACK, BLACK),
    PlateColour.GREEN: _Style(
        (235, 250, 235), BLACK, BLACK, gradient=(40, 190, 90)),
    PlateColour.WHITE: _Style((240, 240, 240), BLACK, RED),
    PlateColour.BLACK: _Style(BLACK, WHITE, WHITE),
    }


def find_font() -> tuple[Path, int]:
    "The first CJK font installed, as (path, face index)"
    for path, index in FONT_PATHS:
        if path.exists():
            return path, index
    raise FileNotFoundError(
        "no CJK font: install fonts-noto-cjk or fonts-wqy-zenhei")


def _alnum(rng: random.Random, count: int, letters: int = 2) -> str:
    "count characters, at most `letters` of them letters (as issued)"
    chars = [rng.choice(DIGITS) for _ in range(count)]
    for i in rng.sample(range(count), rng.randint(0, letters)):
        chars[i] = rng.choice(LETTERS)
    return ''.join(chars)


# kinds of plates and how often a station sees them
_KINDS = (
    ('blue', 40), ('yellow', 10), ('green_small', 14), ('green_large', 4),
    ('yellow_double', 6), ('learner', 5), ('trailer', 4), ('police', 5),
    ('hk', 4), ('macau', 3), ('consulate', 3), ('embassy', 2))


def random_plate(
        rng: random.Random,
        kind: str | None = None) -> tuple[str, PlateColour, Layout]:
    "A random plate text with its colour and layout"
    if kind is None:
        kinds, weights = zip(*_KINDS, strict=True)
        kind = rng.choices(kinds, weights)[0]
    province = rng.choice(PROVINCES)
    letter = rng.choice(LETTERS)
    digits = ''.join(rng.choice(DIGITS) for _ in range(4))
    match kind:
        case 'blue':
            return (province + letter + _alnum(rng, 5), PlateColour.BLUE,
                Layout.SINGLE)
        case 'yellow':
            return (province + letter + _alnum(rng, 5), PlateColour.YELLOW,
                Layout.SINGLE)
        case 'yellow_double':
            return (province + letter + _alnum(rng, 5, 1),
                PlateColour.YELLOW, Layout.DOUBLE)
        case 'green_small':
            return (province + letter + rng.choice('DF') + _alnum(rng, 5, 1),
                PlateColour.GREEN, Layout.NEW_ENERGY)
        case 'green_large':
            return (province + letter + digits + rng.choice(DIGITS)
                + rng.choice('DF'), PlateColour.GREEN, Layout.NEW_ENERGY)
        case 'learner':
            return province + letter + digits + '学', PlateColour.YELLOW, (
                Layout.SINGLE)
        case 'trailer':
            return province + letter + digits + '挂', PlateColour.YELLOW, (
                Layout.DOUBLE)
        case 'police':
            return province + letter + digits + '警', PlateColour.WHITE, (
                Layout.SINGLE)
        case 'hk':
            return '粤Z' + digits + '港', PlateColour.BLACK, Layout.SINGLE
        case 'macau':
            return '粤Z' + digits + '澳', PlateColour.BLACK, Layout.SINGLE
        case 'consulate':
            return province + letter + digits + '领', PlateColour.BLACK, (
                Layout.SINGLE)
        case 'embassy':
            return ('使' + ''.join(rng.choice(DIGITS) for _ in range(6)),
                PlateColour.BLACK, Layout.SINGLE)
    raise ValueError(f"unknown plate kind {kind!r}")


def plate_kinds() -> tuple[str, ...]:
    return tuple(k for k, _ in _KINDS)


class PlateGenerator:
    "Deterministic plate images from a seed"

    def __init__(self, seed: int = 0) -> None:
        self.rng = random.Random(seed)
        path, index = find_font()
        self._font_path = str(path)
        self._font_index = index
        self._glyphs: dict[tuple[str, tuple[int, int, int], int, int],
            Image.Image] = {}
        self._font = ImageFont.truetype(self._font_path, 120, index=index)

    # --- rendering ------------------------------------------------------

    def _glyph(
            self, char: str, colour: tuple[int, int, int], width: int,
            height: int) -> Image.Image:
        "The character stretched into a cell of width x height (RGBA)"
        key = (char, colour, width, height)
        glyph = self._glyphs.get(key)
        if glyph is None:
            left, top, right, bottom = self._font.getbbox(char)
            mask = Image.new('L', (right - left, bottom - top), 0)
            ImageDraw.Draw(mask).text(
                (-left, -top), char, font=self._font, fill=255)
            mask = mask.resize((width, height), Image.Resampling.LANCZOS)
            glyph = Image.new('RGBA', (width, height), (*colour, 0))
            glyph.putalpha(mask)
            self._glyphs[key] = glyph
        return glyph

    def render(
            self, plate: str, colour: PlateColour,
            layout: Layout) -> np.ndarray:
        "The flat plate, RGB uint8, 1 px per mm"
        style = _STYLES[colour]
        if layout is Layout.DOUBLE:
            size = (440, 220)
        elif layout is Layout.NEW_ENERGY:
            size = (480, 140)
        else:
            size = (440, 140)
        width, height = size
        image = Image.new('RGB', size, style.background)
        if style.gradient is not None:
            top = np.array(style.background, dtype=np.float32)
            bottom = np.array(style.gradient, dtype=np.float32)
            ramp = np.linspace(0, 1, height, dtype=np.float32)[:, None]
            rows = (top * (1 - ramp) + bottom * ramp).astype(np.uint8)
            image = Image.fromarray(
                np.repeat(rows[:, None, :], width, axis=1), 'RGB')
        draw = ImageDraw.Draw(image)
        draw.rounded_rectangle(
            (3, 3, width - 4, height - 4), radius=8, outline=style.text,
            width=3)
        cells = self._cells(plate, layout)
        for char, (x, y, w, h) in zip(plate, cells, strict=True):
            red = char in '警使' or (char == '领' and colour is
                PlateColour.BLACK and self.rng.random() < 0.5)
            fill = style.suffix if char in '警' else (
                RED if red else style.text)
            glyph = self._glyph(char, fill, w, h)
            image.paste(glyph, (x, y), glyph)
        if layout is not Layout.DOUBLE and len(plate) >= 7:
            # the separator dot after the second character
            x = cells[1][0] + cells[1][2] + (cells[2][0] - cells[1][0]
                - cells[1][2]) // 2
            draw.ellipse((x - 5, 65, x + 5, 75), fill=style.text)
        return np.asarray(image)

    @staticmethod
    def _cells(
            plate: str,
            layout: Layout) -> list[tuple[int, int, int, int]]:
        "(x, y, width, height) of each character"
        if layout is Layout.DOUBLE:
            top = [(110, 15, 80, 60), (250, 15, 80, 60)]
            bottom = [(27 + i * 80, 90, 65, 110) for i in range(5)]
            return (top + bottom)[:len(plate)]
        if layout is Layout.NEW_ENERGY:
            widths, gap, wide_gap, left = 43, 9, 49, 15
        else:
            widths, gap, wide_gap, left = 45, 12, 34, 15
        cells = []
        x = left
        for i in range(len(plate)):
            cells.append((x, 25, widths, 90))
            x += widths + (wide_gap if i == 1 else gap)
        return cells

    # --- degradation ----------------------------------------------------

    def _degrade(self, image: np.ndarray, strength: float) -> np.ndarray:
        "Light, blur and noise; strength 0 (clean) to 1 (hard)"
        rng = self.rng
        out = image.astype(np.float32)
        gain = 1 + rng.uniform(-0.35, 0.25) * strength
        bias = rng.uniform(-30, 30) * strength
        out = out * gain + bias
        sigma = rng.uniform(0, 1.2) * strength
        if sigma > 0.2:
            out = cv2.GaussianBlur(out, (0, 0), sigma)
        noise = np.random.default_rng(rng.getrandbits(32)).normal(
            0, 1 + 7 * strength, out.shape)
        return np.clip(out + noise, 0, 255).astype(np.uint8)

    def _jpeg(self, image: np.ndarray, quality: int) -> np.ndarray:
        ok, data = cv2.imencode(
            '.jpg', image, [cv2.IMWRITE_JPEG_QUALITY, quality])
        assert ok
        return cv2.imdecode(data, cv2.IMREAD_COLOR)

    # --- samples --------------------------------------------------------

    def _pick(
            self, kind: str | None) -> tuple[str, PlateColour, Layout]:
        return random_plate(self.rng, kind)

    def crop(self, kind: str | None = None, strength: float = 0.5) -> Sample:
        """A tight crop of a plate with a little margin and tilt, BGR, about
        as wide as a camera sees a plate at a station"""
        rng = self.rng
        plate, colour, layout = self._pick(kind)
        flat = cv2.cvtColor(self.render(plate, colour, layout),
            cv2.COLOR_RGB2BGR)
        height, width = flat.shape[:2]
        target = rng.randint(*SCENE_PLATE_WIDTH)
        scale = target / width
        margin = int(0.12 * target)
        quad = self._quad(width * scale, height * scale, strength * 0.5)
        quad += margin
        size = (int(width * scale) + 2 * margin,
            int(height * scale) + 2 * margin)
        background = np.full((size[1], size[0], 3),
            rng.randint(40, 200), np.uint8)
        image = self._place(background, flat, quad)
        image = self._jpeg(self._degrade(image, strength),
            rng.randint(60, 95))
        return Sample(image, plate, colour, layout, quad)

    def scene(
            self, kind: str | None = None, strength: float = 0.5,
            plate: tuple[str, PlateColour, Layout] | None = None,
            size: tuple[int, int] = SCENE_SIZE) -> Sample:
        "A camera frame with one plate on a car-like shape, BGR"
        rng = self.rng
        text, colour, layout = plate if plate is not None else self._pick(
            kind)
        flat = cv2.cvtColor(self.render(text, colour, layout),
            cv2.COLOR_RGB2BGR)
        height, width = flat.shape[:2]
        scene = self._background(size)
        target = rng.randint(*SCENE_PLATE_WIDTH) * width / 440
        scale = target / width
        quad = self._quad(width * scale, height * scale, strength)
        span = quad.max(axis=0) - quad.min(axis=0)
        x = rng.uniform(0.1 * size[0], 0.9 * size[0] - span[0])
        y = rng.uniform(0.35 * size[1], 0.92 * size[1] - span[1])
        quad += np.array([x, y], np.float32) - quad.min(axis=0)
        # a car body around the plate
        car = np.array(
            [quad.min(axis=0) - (span[0] * 1.2, span[1] * 4),
                quad.max(axis=0) + (span[0] * 1.2, span[1] * 1.5)],
            np.int32)
        body = tuple(int(c) for c in rng.choice(
            [(30, 30, 30), (200, 200, 200), (40, 40, 150), (120, 90, 60),
                (230, 230, 230), (60, 60, 60), (20, 80, 30)]))
        cv2.rectangle(scene, tuple(car[0]), tuple(car[1]), body, -1)
        image = self._place(scene, flat, quad)
        image = self._jpeg(self._degrade(image, strength),
            rng.randint(70, 95))
        return Sample(image, text, colour, layout, quad)

    def _background(self, size: tuple[int, int]) -> np.ndarray:
        rng = self.rng
        width, height = size
        base = rng.randint(60, 180)
        ramp = np.linspace(base - 40, base + 40, height, dtype=np.float32)
        scene = np.repeat(ramp[:, None], width, axis=1)
        scene = np.repeat(scene[:, :, None], 3, axis=2)
        for _ in range(rng.randint(3, 8)):  # pillars, pumps, signs
            x0, y0 = rng.randrange(width), rng.randrange(height)
            x1 = x0 + rng.randint(20, 300)
            y1 = y0 + rng.randint(20, 300)
            colour = [rng.randint(0, 255) for _ in range(3)]
            cv2.rectangle(scene, (x0, y0), (x1, y1), colour, -1)
        return np.clip(scene, 0, 255).astype(np.uint8)

    def _quad(self, width: float, height: float,
            strength: float) -> np.ndarray:
        "The corners of a plate of width x height seen slightly skewed"
        rng = self.rng
        tilt = rng.uniform(-0.08, 0.08) * strength  # rotation, radians
        skew = rng.uniform(-0.15, 0.15) * strength  # perspective
        corners = np.array(
            [[0, 0], [width, 0], [width, height], [0, height]], np.float32)
        corners[:, 1] += np.array(
            [skew, -skew, -skew, skew], np.float32) * height * 0.5
        centre = corners.mean(axis=0)
        rotation = np.array(
            [[np.cos(tilt), -np.sin(tilt)], [np.sin(tilt), np.cos(tilt)]],
            np.float32)
        corners = (corners - centre) @ rotation.T + centre
        return (corners - corners.min(axis=0)).astype(np.float32)

    @staticmethod
    def _place(
            background: np.ndarray, flat: np.ndarray,
            quad: np.ndarray) -> np.ndarray:
        height, width = flat.shape[:2]
        source = np.array(
            [[0, 0], [width, 0], [width, height], [0, height]], np.float32)
        matrix = cv2.getPerspectiveTransform(source, quad)
        size = (background.shape[1], background.shape[0])
        warped = cv2.warpPerspective(
            flat, matrix, size, flags=cv2.INTER_AREA)
        mask = cv2.warpPerspective(
            np.full((height, width), 255, np.uint8), matrix, size,
            flags=cv2.INTER_AREA)
        alpha = (mask.astype(np.float32) / 255)[:, :, None]
        return (warped * alpha + background * (1 - alpha)).astype(np.uint8)
