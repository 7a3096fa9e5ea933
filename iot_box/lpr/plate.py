# This file is part of fuelpay.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""Chinese plate texts: normalisation, format validation, colours

Pure Python, no model: the server has its own validator (fuel_plate); this
one decides on the box which reads are worth sending.  Formats (GA 36-2018,
the plates a fuel station sees):

- ordinary 7 characters: province, letter, 5 letters or digits
  (``京A12345``; blue, yellow, or black for some foreign-owned cars);
- with a suffix: province, letter, 4 letters or digits, one of
  学 (learner, yellow), 挂 (trailer, yellow), 警 (police, white),
  港 / 澳 (Hong Kong / Macau cross-border, black), 领 (consulate, black),
  使 (embassy, black): ``京A1234学``, ``粤Z1234港``;
- embassy: 使 then 6 digits (``使014578``; black);
- new energy, 8 characters (green): province, letter, then D/F (battery /
  hybrid) and 5 letters or digits for small cars (``粤BD12345``), or 5
  digits then D/F for large ones (``粤B12345D``).

Letters I and O never appear on a plate (they read as 1 and 0).
"""
from __future__ import annotations

import enum
import re

__all__ = [
    'PROVINCES',
    'SUFFIXES',
    'PlateColour',
    'PlateFormat',
    'colour_from_text',
    'is_valid',
    'normalise',
    'plate_format',
]

# The 31 provincial abbreviations of mainland plates
PROVINCES = '京津沪渝冀豫云辽黑湘皖鲁新苏浙赣鄂桂甘晋蒙陕吉闽贵粤青藏川宁琼'
LETTERS = 'ABCDEFGHJKLMNPQRSTUVWXYZ'  # no I, no O
DIGITS = '0123456789'
SUFFIXES = '学挂警港澳领使'
NEW_ENERGY = 'DF'
# Every character a plate can carry (what the recogniser is restricted to)
PLATE_CHARACTERS = PROVINCES + LETTERS + DIGITS + SUFFIXES
# Separators printed or read between the characters
_SEPARATORS = re.compile(r'[\s·•．.\-_]')
_ALNUM = f'[{LETTERS}{DIGITS}]'
_P = f'[{PROVINCES}]'
_L = f'[{LETTERS}]'


class PlateColour(enum.StrEnum):
    BLUE = 'blue'
    YELLOW = 'yellow'
    GREEN = 'green'  # new energy
    WHITE = 'white'  # police, military
    BLACK = 'black'  # Hong Kong / Macau, consulates, embassies


class PlateFormat(enum.StrEnum):
    ORDINARY = 'ordinary'
    SUFFIX = 'suffix'
    EMBASSY = 'embassy'
    NEW_ENERGY_SMALL = 'new_energy_small'
    NEW_ENERGY_LARGE = 'new_energy_large'


_FORMATS = (
    (PlateFormat.ORDINARY, re.compile(f'{_P}{_L}{_ALNUM}{{5}}')),
    (PlateFormat.SUFFIX, re.compile(f'{_P}{_L}{_ALNUM}{{4}}[{SUFFIXES}]')),
    (PlateFormat.EMBASSY, re.compile(f'使[{DIGITS}]{{6}}')),
    (PlateFormat.NEW_ENERGY_SMALL,
        re.compile(f'{_P}{_L}[{NEW_ENERGY}]{_ALNUM}{{5}}')),
    (PlateFormat.NEW_ENERGY_LARGE,
        re.compile(f'{_P}{_L}[{DIGITS}]{{5}}[{NEW_ENERGY}]')),
    )

# Text that decides the colour whatever the background looks like
_SUFFIX_COLOURS = {
    '学': PlateColour.YELLOW,
    '挂': PlateColour.YELLOW,
    '警': PlateColour.WHITE,
    '港': PlateColour.BLACK,
    '澳': PlateColour.BLACK,
    '领': PlateColour.BLACK,
    '使': PlateColour.BLACK,
    }


def normalise(text: str) -> str:
    """The plate text without separators, upper case, and with O / I read
    as 0 / 1 after the province and region letter"""
    text = _SEPARATORS.sub('', text).upper()
    if len(text) > 2:
        head, tail = text[:2], text[2:]
        text = head + tail.replace('O', '0').replace('I', '1')
    return text


def plate_format(text: str) -> PlateFormat | None:
    "The format of a normalised plate text, None when it is not a plate"
    for format_, pattern in _FORMATS:
        if pattern.fullmatch(text):
            return format_
    return None


def is_valid(text: str) -> bool:
    return plate_format(text) is not None


def colour_from_text(text: str) -> PlateColour | None:
    """The colour the text implies (8 characters: green; the suffixes), None
    when the text leaves it open (blue, yellow and black 7-character
    plates look alike)"""
    format_ = plate_format(text)
    if format_ in {PlateFormat.NEW_ENERGY_SMALL, PlateFormat.NEW_ENERGY_LARGE}:
        return PlateColour.GREEN
    if format_ is PlateFormat.EMBASSY:
        return PlateColour.BLACK
    if format_ is PlateFormat.SUFFIX:
        return _SUFFIX_COLOURS[text[-1]]
    return None
