# This file is part of fuelpay.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""Events the box sends to the server, and their JSON form

An event carries a `uuid` (the server deduplicates on it), a per-box
monotonic `seq` (the outbox assigns it; the server can see gaps), the
device it comes from and the device's own time (timezone-aware).  Its
`payload` is a mapping of JSON values where Decimals and datetimes are
allowed: JSON has neither, so they are written as marker objects,
``{"__decimal__": "12.345"}`` and ``{"__datetime__": "2024-...+02:00"}``,
and come back exact.  `version` is the version of the payload layout.
"""
from __future__ import annotations

import datetime as dt
import enum
import json
import types
import uuid as uuid_
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

__all__ = [
    'EVENT_VERSION',
    'AlarmCode',
    'Event',
    'EventError',
    'EventKind',
    'decode_json',
    'encode_json',
    'mask_code',
]

# Version of the event payload layout; the server refuses versions it does
# not know instead of misreading them
EVENT_VERSION = 1
DECIMAL_MARKER = '__decimal__'
DATETIME_MARKER = '__datetime__'


class EventError(ValueError):
    "An event is malformed"


class EventKind(enum.StrEnum):
    TRANSACTION_COMPLETED = 'transaction_completed'
    NOZZLE_UP = 'nozzle_up'
    NOZZLE_DOWN = 'nozzle_down'
    RUNNING_TOTAL = 'running_total'
    TOTALIZERS = 'totalizers'
    ALARM = 'alarm'
    PLATE_READ = 'plate_read'
    # a customer's payment code read at a payment post (scanner or face
    # device); a one-time credential: see `mask_code`
    PAYMENT_CODE = 'payment_code'
    # a server's authorisation (a pre-payment's) stopped by the box because
    # the nozzle was not used within its lift timeout: nothing delivered
    AUTHORIZATION_EXPIRED = 'authorization_expired'


class AlarmCode(enum.StrEnum):
    "The `code` of the alarm events the box raises itself (not the pump's)"
    NOT_ANSWERING = 'not_answering'  # a pump stopped answering its polls
    ANSWERING_AGAIN = 'answering_again'  # and answers again


def mask_code(code: str) -> str:
    """A payment code as it may be logged or kept: its first 4 digits, as
    the server's gateway.mask_code; the whole code charges the customer"""
    code = code.strip()
    return code[:4] + '*' * max(len(code) - 4, 0)


def _is_aware(value: dt.datetime) -> bool:
    return value.tzinfo is not None and value.utcoffset() is not None


def _default(value: Any) -> Any:
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise EventError(f"cannot encode non-finite Decimal {value}")
        return {DECIMAL_MARKER: str(value)}
    if isinstance(value, dt.datetime):
        if not _is_aware(value):
            raise EventError(f"cannot encode naive datetime {value}")
        return {DATETIME_MARKER: value.isoformat()}
    if isinstance(value, Mapping):  # e.g. a MappingProxyType payload
        return dict(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _object_hook(obj: dict[str, Any]) -> Any:
    if len(obj) == 1:
        if DECIMAL_MARKER in obj:
            try:
                return Decimal(obj[DECIMAL_MARKER])
            except (InvalidOperation, TypeError) as exc:
                raise EventError(
                    f"invalid decimal {obj[DECIMAL_MARKER]!r}") from exc
        if DATETIME_MARKER in obj:
            try:
                value = dt.datetime.fromisoformat(obj[DATETIME_MARKER])
            except (ValueError, TypeError) as exc:
                raise EventError(
                    f"invalid datetime {obj[DATETIME_MARKER]!r}") from exc
            if not _is_aware(value):
                raise EventError(f"naive datetime {value}")
            return value
    return obj


def encode_json(value: Any) -> str:
    "JSON text of value, with Decimals and aware datetimes as markers"
    # Decimal and datetime go through `default`; bool/int/float/str as
    # usual.  allow_nan=False: NaN is not JSON
    return json.dumps(
        value, default=_default, allow_nan=False, sort_keys=True,
        separators=(',', ':'), ensure_ascii=False)


def decode_json(text: str | bytes) -> Any:
    "Inverse of `encode_json`"
    try:
        return json.loads(text, object_hook=_object_hook)
    except json.JSONDecodeError as exc:
        raise EventError(f"invalid JSON: {exc}") from exc


@dataclass(frozen=True, slots=True)
class Event:
    uuid: str
    seq: int
    kind: EventKind
    device: str
    device_time: dt.datetime
    payload: Mapping[str, Any]
    version: int = EVENT_VERSION

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, 'kind', EventKind(self.kind))
        except ValueError:
            raise EventError(f"unknown event kind {self.kind!r}") from None
        try:
            uuid_.UUID(self.uuid)
        except (ValueError, TypeError, AttributeError):
            raise EventError(f"invalid uuid {self.uuid!r}") from None
        if (not isinstance(self.seq, int) or isinstance(self.seq, bool)
                or self.seq < 1):
            raise EventError(f"invalid seq {self.seq!r}")
        if not isinstance(self.device, str) or not self.device:
            raise EventError("device must be a non-empty string")
        if (not isinstance(self.device_time, dt.datetime)
                or not _is_aware(self.device_time)):
            raise EventError(
                f"device_time must be a timezone-aware datetime, not "
                f"{self.device_time!r}")
        if not isinstance(self.payload, Mapping):
            raise EventError("payload must be a mapping")
        # a read-only view, so that a frozen event stays unchanged
        object.__setattr__(
            self, 'payload', types.MappingProxyType(dict(self.payload)))
        if self.version != EVENT_VERSION:
            raise EventError(f"unsupported event version {self.version!r}")

    def to_dict(self) -> dict[str, Any]:
        "A dict ready for `encode_json` (payload values not yet encoded)"
        return {
            'uuid': self.uuid,
            'seq': self.seq,
            'kind': str(self.kind),
            'device': self.device,
            'device_time': self.device_time,
            'payload': dict(self.payload),
            'version': self.version,
            }

    def to_json(self) -> str:
        return encode_json(self.to_dict())

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Event:
        "From a mapping as `decode_json` returns it"
        fields = {
            'uuid', 'seq', 'kind', 'device', 'device_time', 'payload',
            'version'}
        if not isinstance(data, Mapping) or set(data) != fields:
            keys = sorted(data) if isinstance(data, Mapping) else data
            raise EventError(
                f"an event needs exactly {sorted(fields)}, got {keys!r}")
        return cls(**data)

    @classmethod
    def from_json(cls, text: str | bytes) -> Event:
        return cls.from_dict(decode_json(text))
