# This file is part of fuelpay.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""The offline list: frictionless plates the box may serve in fallback

The server pushes the enrolled plates with a ``configuration`` command
(payload version 1: ``frictionless_plates`` ``[{"plate", "colour",
"limit"}]`` and ``generated``).  `OfflineList.replace` validates and
stores the latest one in the outbox's key-value store, so that it
survives a restart (`load`).

`read` records a listed plate voted at an island with enough confidence:
the island's nozzles are marked for `WINDOW` seconds; `member_at` tells
the App whether a lifted nozzle has such a member, `used` clears the
marks of a plate once its fill is authorised.  Pure Python: no model is
loaded by this module.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from decimal import Decimal, InvalidOperation
from typing import Any, Protocol

__all__ = [
    'AUTO_CHARGE_CONFIDENCE',
    'STORE_KEY',
    'VERSION',
    'WINDOW',
    'OfflineList',
    'OfflineListError',
]

VERSION = 1
# Where the list is kept in the outbox's store
STORE_KEY = 'offline_list'
# A member read at an island has this long to lift a nozzle there: time
# to get out, open the tank and choose the nozzle; longer, and the next
# car could use the read
WINDOW = 120.0
# Confidence of a vote from which a listed plate is trusted without the
# server (iot_box.lpr.pipeline.AUTO_CHARGE_CONFIDENCE, repeated here so
# that a box loads no model to use the list; a test checks they agree)
AUTO_CHARGE_CONFIDENCE = 0.9


class OfflineListError(ValueError):
    "The offline list of a command cannot be used"


class Store(Protocol):
    def put(self, key: str, value: Mapping[str, Any]) -> None: ...

    def command_result(self, key: str) -> Mapping[str, Any] | None: ...


def _limit(value: Any) -> Decimal:
    if isinstance(value, bool) or not isinstance(
            value, str | int | Decimal):
        raise OfflineListError(f"limit: not a decimal: {value!r}")
    try:
        limit = Decimal(str(value))
    except InvalidOperation:
        raise OfflineListError(
            f"limit: not a decimal: {value!r}") from None
    if not limit.is_finite() or limit <= 0:
        raise OfflineListError(f"limit: must be positive: {value!r}")
    return limit


class OfflineList:
    def __init__(
            self, store: Store,
            clock: Callable[[], float] = time.monotonic) -> None:
        self.store = store
        self.clock = clock
        self.plates: dict[tuple[str, str], Decimal] = {}
        self.generated: str | None = None
        # station number -> (plate, limit, expiry on the clock)
        self._marks: dict[int, tuple[str, Decimal, float]] = {}

    def load(self) -> None:
        "The list stored by a previous run, if any"
        stored = self.store.command_result(STORE_KEY)
        if not stored:
            return
        self.plates = {
            (item['plate'], item['colour']): Decimal(item['limit'])
            for item in stored.get('plates', [])}
        self.generated = stored.get('generated')

    def replace(self, payload: Mapping[str, Any]) -> int:
        """Validate and store the list of a configuration command; the
        number of plates.  Raises OfflineListError (the list kept is
        unchanged)"""
        if payload.get('version') != VERSION:
            raise OfflineListError(
                f"offline list version {payload.get('version')!r} is not "
                "supported")
        items = payload.get('frictionless_plates')
        if not isinstance(items, list):
            raise OfflineListError("frictionless_plates: not a list")
        plates: dict[tuple[str, str], Decimal] = {}
        for item in items:
            if not isinstance(item, Mapping):
                raise OfflineListError(
                    f"frictionless_plates: not an object: {item!r}")
            plate, colour = item.get('plate'), item.get('colour')
            if not isinstance(plate, str) or not isinstance(colour, str):
                raise OfflineListError(
                    f"frictionless_plates: plate and colour: {item!r}")
            plates[plate, colour] = _limit(item.get('limit'))
        generated = payload.get('generated')
        generated = str(generated) if generated else None
        self.store.put(STORE_KEY, {
                'version': VERSION,
                'generated': generated,
                'plates': [
                    {'plate': p, 'colour': c, 'limit': limit}
                    for (p, c), limit in plates.items()]})
        self.plates = plates
        self.generated = generated
        return len(plates)

    def read(
            self, plate: str, colour: str, confidence: float,
            nozzles: Iterable[int]) -> Decimal | None:
        """A plate voted at an island serving nozzles: its limit when it is
        listed and trusted (its nozzles are then marked), else None"""
        nozzles = tuple(nozzles)
        limit = self.plates.get((plate, colour))
        if (limit is None or not nozzles
                or confidence < AUTO_CHARGE_CONFIDENCE):
            return None
        expires = self.clock() + WINDOW
        for number in nozzles:
            self._marks[number] = (plate, limit, expires)
        return limit

    def member_at(self, station_number: int) -> tuple[str, Decimal] | None:
        "(plate, limit) of a member read at this nozzle's island, if any"
        now = self.clock()
        for number, (_, _, expires) in list(self._marks.items()):
            if expires < now:
                del self._marks[number]
        mark = self._marks.get(station_number)
        return (mark[0], mark[1]) if mark else None

    def used(self, plate: str) -> None:
        "One read, one fill: the plate's marks on every nozzle are cleared"
        self._marks = {
            n: mark for n, mark in self._marks.items() if mark[0] != plate}

    @property
    def marked(self) -> dict[int, str]:
        "Station number -> plate of the current marks (status, tests)"
        return {n: mark[0] for n, mark in self._marks.items()}
