# This file is part of fuelpay.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""Plate text recognition: PP-OCRv4 restricted to plate characters

The PP-OCRv4 recogniser (rapidocr_onnxruntime's weights) reads 6,623
characters; a plate has 71 possible ones.  Its CTC output is decoded over
those only (the probability of O and I folded into 0 and 1, a separator
dot counted as blank), then each character is chosen again among the
characters its position allows (province first, a letter second, a
suffix or D/F last), which fixes most province and Q/0 confusions a free
read makes.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from iot_box.lpr import models
from iot_box.lpr.plate import (
    DIGITS,
    LETTERS,
    NEW_ENERGY,
    PLATE_CHARACTERS,
    PROVINCES,
    SUFFIXES,
)

__all__ = ['Reading', 'TextRecognizer']

# The model's input height (PP-OCRv4 rec, as exported)
HEIGHT = 48
# Width an image is padded to at least: the model's default 320 px
MIN_WIDTH = 320
# Characters read as blank: separators printed on plates
SEPARATORS = '·•.-'
# Folded into the character a plate can carry
FOLDS = {'O': '0', 'I': '1', 'o': '0'}


@dataclass(frozen=True, slots=True)
class Reading:
    text: str
    probabilities: tuple[float, ...]  # one per character

    @property
    def mean(self) -> float:
        if not self.probabilities:
            return 0.0
        return float(np.mean(self.probabilities))


def _dictionary(session: object) -> list[str]:
    meta = session.get_modelmeta().custom_metadata_map  # type: ignore
    characters = meta['character'].splitlines()
    # as PaddleOCR's CTC label decoder: blank first, space last
    return ['<blank>', *characters, ' ']


def _mask(chars: str) -> np.ndarray:
    "Which of the plate characters are allowed (PLATE_CHARACTERS order)"
    result = np.zeros(len(PLATE_CHARACTERS), bool)
    result[[PLATE_CHARACTERS.index(c) for c in chars]] = True
    return result


class TextRecognizer:
    "Loaded once; `read` / `read_double` for rectified plates (BGR)"

    def __init__(
            self, path: Path | None = None,
            threads: int = models.DEFAULT_THREADS) -> None:
        self.session = models.session(
            path or models.recognizer_path(), threads)
        self.input = self.session.get_inputs()[0].name
        dictionary = _dictionary(self.session)
        index = {c: i for i, c in enumerate(dictionary)}
        self.characters = PLATE_CHARACTERS
        # column of each plate character; blank is column 0
        self._columns = np.array(
            [index[c] for c in PLATE_CHARACTERS], np.int64)
        self._folds = [
            (index[a], PLATE_CHARACTERS.index(b))
            for a, b in FOLDS.items() if a in index]
        self._blanks = [index[c] for c in SEPARATORS if c in index]
        self._first = _mask(PROVINCES + '使')
        # the region letter; an embassy plate (使) has digits from here on
        self._second = _mask(LETTERS)
        self._embassy = _mask(DIGITS)
        self._middle = _mask(LETTERS + DIGITS)
        self._last = _mask(LETTERS + DIGITS + SUFFIXES + NEW_ENERGY)
        # the last character of a double-row plate's bottom row
        self._bottom_last = _mask(LETTERS + DIGITS + '挂学')

    @staticmethod
    def _prepare(images: list[np.ndarray]) -> np.ndarray:
        widths = [
            max(1, round(HEIGHT * i.shape[1] / i.shape[0])) for i in images]
        width = max(MIN_WIDTH, *widths)
        batch = np.zeros((len(images), 3, HEIGHT, width), np.float32)
        for k, (image, w) in enumerate(zip(images, widths, strict=True)):
            resized = cv2.resize(image, (w, HEIGHT),
                interpolation=cv2.INTER_AREA if image.shape[0] > HEIGHT
                else cv2.INTER_CUBIC)
            pixels = resized.astype(np.float32).transpose(2, 0, 1)
            batch[k, :, :, :w] = (pixels / 255 - 0.5) / 0.5
        return batch

    def probabilities(self, images: list[np.ndarray]) -> list[np.ndarray]:
        """Per image: (time steps, 1 + plate characters) probabilities,
        column 0 blank"""
        output = self.session.run(None, {self.input: self._prepare(images)})[0]
        result = []
        for probs in output:
            plate = probs[:, self._columns].copy()
            for source, target in self._folds:
                plate[:, target] += probs[:, source]
            blank = probs[:, 0] + probs[:, self._blanks].sum(axis=1)
            result.append(np.concatenate([blank[:, None], plate], axis=1))
        return result

    def decode(
            self, probs: np.ndarray,
            masks: list[np.ndarray] | None = None) -> Reading:
        """Greedy CTC decoding; then each character chosen again among the
        characters its position allows (masks, by position, or the plate
        positions when None)"""
        best = probs.argmax(axis=1)
        runs: list[tuple[int, int]] = []  # (start, end) of each character
        previous = 0
        for t, k in enumerate(best):
            if k != 0 and k != previous:
                runs.append((t, t + 1))
            elif k != 0:
                runs[-1] = (runs[-1][0], t + 1)
            previous = k
        if masks is None:
            masks = self._positions(len(runs))
        text: list[str] = []
        probabilities = []
        for i, (start, end) in enumerate(runs):
            window = probs[start:end, 1:]
            allowed = masks[i] if i < len(masks) else masks[-1]
            if text and text[0] == '使':
                allowed = self._embassy
            scores = np.where(allowed, window.max(axis=0), -1)
            choice = int(scores.argmax())
            text.append(self.characters[choice])
            probabilities.append(float(scores[choice]))
        return Reading(''.join(text), tuple(probabilities))

    def _positions(self, count: int) -> list[np.ndarray]:
        if count < 3:
            return [self._first, self._second][:count] or [self._first]
        return ([self._first, self._second]
            + [self._middle] * (count - 3) + [self._last])

    def read(self, images: list[np.ndarray]) -> list[Reading]:
        "The plate text of each single-row image"
        return [self.decode(p) for p in self.probabilities(images)]

    def read_double(
            self, tops: list[np.ndarray],
            bottoms: list[np.ndarray]) -> list[Reading]:
        """Double-row plates: province and letter on top, 5 characters
        (the last may be 挂) below"""
        probs = self.probabilities([*tops, *bottoms])
        top_masks = [self._first, self._second]
        bottom_masks = [self._middle] * 4 + [self._bottom_last]
        result = []
        for top, bottom in zip(
                probs[:len(tops)], probs[len(tops):], strict=True):
            upper = self.decode(top, top_masks)
            lower = self.decode(bottom, bottom_masks)
            result.append(Reading(
                upper.text + lower.text,
                upper.probabilities + lower.probabilities))
        return result
