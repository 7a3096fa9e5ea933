# This file is part of fuelpay.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""Plate colour from the background of a rectified plate

Otsu splits the plate's pixels into light and dark; the larger group is
the background (characters cover less than half a plate).  Its median
Lab colour decides: a clear chroma is blue, yellow or green by hue, else
the lightness says white or black.  The text then has the last word where
it implies a colour (`plate.colour_from_text`: 8 characters are green, 警
white, 学/挂 yellow, 港/澳/领/使 black).
"""
from __future__ import annotations

import math

import cv2
import numpy as np

from iot_box.lpr.plate import PlateColour, colour_from_text

__all__ = ['background_colour', 'plate_colour']

# Fraction of each side cut off before measuring: the frame of the plate
# and what the rectification padding brought in
INSET = 0.1
# Chroma (Lab a*b* distance from grey, 0-~128) above which the plate is
# coloured: a grey or washed-out white plate stays under ~12, the palest
# plate colour (the white top of a new-energy gradient aside) over ~25
CHROMA_COLOURED = 18.0
# Hue angles (degrees of atan2(b*, a*)) separating the plate colours:
# yellow around 80-100, green around 130-170, blue around 250-300
YELLOW_GREEN = 115.0
GREEN_BLUE = 200.0
RED_YELLOW = 40.0
# Lightness (0-255 in OpenCV's 8-bit Lab) between black and white plates
LIGHT = 128


def background_colour(plate: np.ndarray) -> tuple[PlateColour, float]:
    """(colour, chroma) of the background of a rectified BGR plate image"""
    height, width = plate.shape[:2]
    dy, dx = int(height * INSET), int(width * INSET)
    inner = plate[dy:height - dy or height, dx:width - dx or width]
    gray = cv2.cvtColor(inner, cv2.COLOR_BGR2GRAY)
    _, split = cv2.threshold(gray, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    light = split > 0
    group = light if light.sum() * 2 >= light.size else ~light
    lab = cv2.cvtColor(inner, cv2.COLOR_BGR2LAB)[group].astype(np.float32)
    lightness, a, b = np.median(lab, axis=0)
    a, b = a - 128, b - 128
    chroma = math.hypot(a, b)
    if chroma >= CHROMA_COLOURED:
        hue = math.degrees(math.atan2(b, a)) % 360
        if RED_YELLOW <= hue < YELLOW_GREEN:
            return PlateColour.YELLOW, chroma
        if YELLOW_GREEN <= hue < GREEN_BLUE:
            return PlateColour.GREEN, chroma
        if hue >= GREEN_BLUE:
            return PlateColour.BLUE, chroma
        # reddish-orange: a yellow plate under warm light
        return PlateColour.YELLOW, chroma
    if lightness >= LIGHT:
        return PlateColour.WHITE, chroma
    return PlateColour.BLACK, chroma


def plate_colour(plate: np.ndarray, text: str) -> PlateColour:
    "The colour of a plate, its text checked against its background"
    implied = colour_from_text(text)
    if implied is not None:
        return implied
    colour, _ = background_colour(plate)
    return colour
