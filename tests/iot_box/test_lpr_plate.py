# This file is part of fuelpay.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""Plate texts: every format validates, near misses do not; colours the
text implies; voting over the frames of a pass; the offline list"""
from __future__ import annotations

import datetime as dt
import random
from decimal import Decimal
from typing import Any

import pytest

from iot_box.lpr.offline import WINDOW, OfflineList, OfflineListError
from iot_box.lpr.plate import (
    PROVINCES,
    PlateColour,
    PlateFormat,
    colour_from_text,
    is_valid,
    normalise,
    plate_format,
)
from iot_box.lpr.synth import plate_kinds, random_plate
from iot_box.lpr.voting import Observation, Voter, vote

VALID = [
    ('京A12345', PlateFormat.ORDINARY, None),
    ('沪B0C8D9', PlateFormat.ORDINARY, None),
    ('粤BD12345', PlateFormat.NEW_ENERGY_SMALL, PlateColour.GREEN),
    ('粤BF1A345', PlateFormat.NEW_ENERGY_SMALL, PlateColour.GREEN),
    ('粤B12345D', PlateFormat.NEW_ENERGY_LARGE, PlateColour.GREEN),
    ('京A1234学', PlateFormat.SUFFIX, PlateColour.YELLOW),
    ('鄂S7525挂', PlateFormat.SUFFIX, PlateColour.YELLOW),
    ('鲁W6469警', PlateFormat.SUFFIX, PlateColour.WHITE),
    ('粤Z1234港', PlateFormat.SUFFIX, PlateColour.BLACK),
    ('粤Z1234澳', PlateFormat.SUFFIX, PlateColour.BLACK),
    ('沪A1234领', PlateFormat.SUFFIX, PlateColour.BLACK),
    ('使014578', PlateFormat.EMBASSY, PlateColour.BLACK),
    ]

INVALID = [
    '',
    '京A1234',  # 6 characters
    '京A123456',  # 8 characters, not new energy
    'AA12345',  # no province
    '京112345',  # region must be a letter
    '京I12345',  # no I on plates
    '京A1O345',  # O (normalise reads it 0)
    '京A12345学',  # suffix after 5 characters
    '京A1234',
    '粤BX12345',  # 8 characters: D or F only
    '粤B1234AD',  # large new energy: 5 digits
    '使01457',  # embassy: 6 digits
    '港A12345',  # not a province
    '京a12345',  # lower case (normalise upper-cases)
    ]


@pytest.mark.parametrize(('text', 'format_', 'colour'), VALID)
def test_valid_formats(
        text: str, format_: PlateFormat, colour: PlateColour | None) -> None:
    assert plate_format(text) is format_
    assert is_valid(text)
    assert colour_from_text(text) == colour


@pytest.mark.parametrize('text', INVALID)
def test_invalid_formats(text: str) -> None:
    assert plate_format(text) is None
    assert not is_valid(text)
    assert colour_from_text(text) is None


def test_every_province() -> None:
    assert len(PROVINCES) == len(set(PROVINCES)) == 31
    for province in PROVINCES:
        assert is_valid(f'{province}A12345')


@pytest.mark.parametrize(('raw', 'text'), [
    ('京A·12345', '京A12345'),
    ('京 A 1234 5', '京A12345'),
    ('京a-1O34I', '京A10341'),  # O and I after the region letter
    ('粤b.D12345', '粤BD12345'),
    ('京O12345', '京O12345'),  # the region letter is left as read
    ])
def test_normalise(raw: str, text: str) -> None:
    assert normalise(raw) == text


def test_generated_plates_validate() -> None:
    "Every kind the generator makes is a valid plate of its colour"
    rng = random.Random(3)
    for kind in plate_kinds():
        for _ in range(20):
            text, colour, _ = random_plate(rng, kind)
            assert is_valid(text), (kind, text)
            implied = colour_from_text(text)
            assert implied in {None, colour}, (kind, text)


T0 = dt.datetime(2026, 12, 5, 8, 0, tzinfo=dt.UTC)


def seen(plate: str, confidence: float, second: int = 0,
        zone: str = 'island-1',
        colour: PlateColour = PlateColour.BLUE) -> Observation:
    return Observation(
        plate, colour, confidence, T0 + dt.timedelta(seconds=second), zone)


def test_vote_weighs_by_confidence() -> None:
    result = vote([
            seen('京A12345', 0.9, 0), seen('京A12345', 0.95, 1),
            seen('浙A12345', 0.6, 2)])
    assert result.plate == '京A12345'
    assert result.frames == 3
    assert result.time == T0 + dt.timedelta(seconds=1)  # the best frame
    # the best read's confidence times the winner's share of the weight
    assert result.confidence == pytest.approx(0.95 * 1.85 / 2.45)


def test_vote_unanimous_keeps_confidence() -> None:
    result = vote([seen('京A12345', 0.9), seen('京A12345', 0.8)])
    assert result.confidence == pytest.approx(0.9)
    with pytest.raises(ValueError):
        vote([])


def test_voter_groups_a_pass_and_ends_it_after_the_gap() -> None:
    voter = Voter(gap=2.0, max_frames=10)
    assert voter.add(seen('京A12345', 0.9), 0.0) == []
    assert voter.add(seen('京A12845', 0.7), 0.5) == []  # a misread
    assert voter.add(seen('苏E99887', 0.9), 0.6) == []  # another car
    assert voter.open_passes == 2
    assert voter.finished(2.4) == []  # the first car was read at 0.5
    votes = voter.finished(2.5)
    assert [v.plate for v in votes] == ['京A12345']
    assert votes[0].frames == 2
    assert [v.plate for v in voter.finished(2.6)] == ['苏E99887']
    assert voter.open_passes == 0


def test_voter_keeps_zones_apart() -> None:
    voter = Voter(gap=1.0)
    voter.add(seen('京A12345', 0.9, zone='entrance'), 0.0)
    voter.add(seen('京A12345', 0.9, zone='island-1'), 0.1)
    votes = voter.finished(5.0)
    assert sorted(v.zone for v in votes) == ['entrance', 'island-1']


def test_voter_reports_a_staying_car_once() -> None:
    voter = Voter(gap=2.0, max_frames=3)
    assert voter.add(seen('京A12345', 0.9), 0.0) == []
    assert voter.add(seen('京A12345', 0.9), 0.5) == []
    votes = voter.add(seen('京A12345', 0.9), 1.0)
    assert [(v.plate, v.frames) for v in votes] == [('京A12345', 3)]
    # still in view: no second event, neither by frames nor at the end
    for i in range(10):
        assert voter.add(seen('京A12345', 0.9), 1.5 + i) == []
    assert voter.finished(11.0) == []
    assert voter.finished(20.0) == []
    assert voter.open_passes == 0
    # it comes back later: a new pass
    voter.add(seen('京A12345', 0.9), 30.0)
    assert [v.plate for v in voter.flush()] == ['京A12345']


def test_vote_colour_by_weight() -> None:
    result = vote([
            seen('京A12345', 0.9, colour=PlateColour.BLUE),
            seen('京A12345', 0.5, colour=PlateColour.BLACK),
            seen('京A12345', 0.8, colour=PlateColour.BLUE)])
    assert result.colour is PlateColour.BLUE


# --- the offline list --------------------------------------------------------

class MemoryStore:
    "The outbox's key-value store, in memory"

    def __init__(self) -> None:
        self.values: dict[str, Any] = {}

    def put(self, key: str, value: Any) -> None:
        self.values[key] = value

    def command_result(self, key: str) -> Any:
        return self.values.get(key)


LIST = {
    'version': 1, 'generated': '2026-12-05T08:00:00+00:00',
    'frictionless_plates': [
        {'plate': '京A12345', 'colour': 'blue', 'limit': Decimal('300.00')},
        {'plate': '粤BD12345', 'colour': 'green', 'limit': '80'},
        ]}


def test_offline_list_replace_and_load() -> None:
    store = MemoryStore()
    offline = OfflineList(store)
    assert offline.replace(LIST) == 2
    assert offline.plates == {
        ('京A12345', 'blue'): Decimal('300.00'),
        ('粤BD12345', 'green'): Decimal('80')}
    again = OfflineList(store)
    again.load()
    assert again.plates == offline.plates
    assert again.generated == '2026-12-05T08:00:00+00:00'
    # an empty list replaces it
    assert offline.replace({'version': 1, 'frictionless_plates': []}) == 0
    assert offline.plates == {} and offline.generated is None


@pytest.mark.parametrize(('payload', 'message'), [
    ({'version': 2, 'frictionless_plates': []}, 'version 2'),
    ({'frictionless_plates': []}, 'version None'),
    ({'version': 1}, 'not a list'),
    ({'version': 1, 'frictionless_plates': ['京A12345']}, 'not an object'),
    ({'version': 1, 'frictionless_plates': [
        {'plate': '京A12345', 'colour': 'blue', 'limit': 'ten'}]},
        'not a decimal'),
    ({'version': 1, 'frictionless_plates': [
        {'plate': '京A12345', 'colour': 'blue', 'limit': 0}]},
        'must be positive'),
    ({'version': 1, 'frictionless_plates': [
        {'plate': '京A12345', 'colour': 'blue', 'limit': True}]},
        'not a decimal'),
    ({'version': 1, 'frictionless_plates': [
        {'plate': 12345, 'colour': 'blue', 'limit': 1}]},
        'plate and colour'),
    ])
def test_offline_list_refused(payload: Any, message: str) -> None:
    store = MemoryStore()
    offline = OfflineList(store)
    offline.replace(LIST)
    with pytest.raises(OfflineListError, match=message):
        offline.replace(payload)
    assert len(offline.plates) == 2  # the list kept is unchanged
    assert len(store.values['offline_list']['plates']) == 2


def test_offline_list_marks() -> None:
    now = [100.0]
    offline = OfflineList(MemoryStore(), clock=lambda: now[0])
    offline.replace(LIST)
    # not listed, wrong colour, not trusted enough, no nozzles: nothing
    assert offline.read('京B12345', 'blue', 0.99, (1, 2)) is None
    assert offline.read('京A12345', 'yellow', 0.99, (1, 2)) is None
    assert offline.read('京A12345', 'blue', 0.89, (1, 2)) is None
    assert offline.read('京A12345', 'blue', 0.99, ()) is None
    assert offline.marked == {}
    assert offline.read('京A12345', 'blue', 0.95, (1, 2)) == Decimal(
        '300.00')
    assert offline.marked == {1: '京A12345', 2: '京A12345'}
    assert offline.member_at(2) == ('京A12345', Decimal('300.00'))
    assert offline.member_at(3) is None
    offline.used('京A12345')  # filled on one nozzle: none other
    assert offline.member_at(1) is None
    # a mark lasts WINDOW seconds
    offline.read('粤BD12345', 'green', 0.95, (3,))
    now[0] += WINDOW - 1
    assert offline.member_at(3) == ('粤BD12345', Decimal('80'))
    now[0] += 2
    assert offline.member_at(3) is None
    assert offline.marked == {}
