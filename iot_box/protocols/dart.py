# This file is part of fuelpay.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""Wayne DART pump interface: a pure codec, bytes <-> dataclasses

Facts come from the project's DART notes (DART_NOTES.md: public
descriptions of Wayne's "Dart Pump Interface" rev 2.11).  Three layers:

- line: address, control byte (type + block sequence), CRC-16/ARC, DLE
  stuffing, splitting a byte stream into frames;
- BCD: packed big-endian integers and Decimals with a number of decimals;
- application: one frozen dataclass per transaction (CDn master -> pump,
  DCn pump -> master); unknown TRANS codes decode to `UnknownMessage`.

Layouts the notes do not give (DC7, DC101, CD101) are assumptions, written
next to the class that uses them; their offsets are named constants.
"""
from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, fields
from decimal import Decimal
from types import MappingProxyType
from typing import ClassVar, Self

# --- line layer --------------------------------------------------------

ETX = 0x03  # ends the data of a long frame, before SF
SF = 0xFA  # stop flag: ends every frame on the line
DLE = 0x10  # inserted before any 0xFA inside a frame so it is not an SF
MIN_ADDRESS = 0x50  # DART pump addresses are 0x50-0x6F (32 pumps per line)
MAX_ADDRESS = 0x6F
SEQ_MODULO = 16  # the block sequence is the low nibble of the control byte
TYPE_MASK = 0xF0  # the high nibble of the control byte is the block type
SEQ_MASK = 0x0F
MAX_TRANSACTION_DATA = 0xFF  # LNG is one byte
SHORT_FRAME_BODY = 2  # ADR CTRL (then SF)
CRC_SIZE = 2  # CRC-L CRC-H
# ADR CTRL + one TRANS LNG + CRC-L CRC-H + ETX: the shortest data frame
MIN_LONG_FRAME_BODY = 2 + 2 + CRC_SIZE + 1
CRC_POLY = 0xA001  # CRC-16/ARC, reflected form of 0x8005
# A frame holds a few transactions of at most ~50 bytes; 1 KiB without an
# SF means line noise or a lost SF, so a FrameSplitter drops what it holds.
MAX_FRAME_BYTES = 1024


class ControlType(enum.IntEnum):
    "High nibble of the control byte"
    POLL = 0x20  # the master asks the pump for data (no sequence)
    DATA = 0x30
    NAK = 0x50
    EOT = 0x70  # unconfirmed: "nothing to send"
    ACK = 0xC0
    ACKPOLL = 0xE0  # unconfirmed: acknowledge and poll in one frame


class DartError(ValueError):
    "Bytes or values the DART codec refuses"


class FrameError(DartError):
    "A frame that cannot be built or decoded"


class CrcError(FrameError):
    "The CRC of a received frame does not match its content"


class TerminatorError(FrameError):
    "SF missing or in the wrong place, or ETX missing"


class LengthError(FrameError):
    "A frame or transaction shorter or longer than its content says"


class AddressError(FrameError):
    "An address outside 0x50-0x6F"


class ControlError(FrameError):
    "An unknown control byte or a sequence outside 0-15"


class BcdError(DartError):
    "A non-BCD nibble, or a value that does not fit exactly"


class MessageError(DartError):
    "A transaction whose content does not match its TRANS code"


def validate_address(address: int) -> int:
    if not MIN_ADDRESS <= address <= MAX_ADDRESS:
        raise AddressError(
            f"pump address {address:#04x} outside "
            f"{MIN_ADDRESS:#04x}-{MAX_ADDRESS:#04x}")
    return address


def make_control(kind: ControlType, seq: int = 0) -> int:
    "Build a control byte from its type and block sequence (0-15)"
    kind = ControlType(kind)
    if not 0 <= seq < SEQ_MODULO:
        raise ControlError(f"block sequence {seq} outside 0-15")
    if kind is ControlType.POLL and seq:
        raise ControlError("POLL carries no block sequence")
    return kind | seq


def parse_control(control: int) -> tuple[ControlType, int]:
    "Split a control byte into its type and block sequence"
    if not 0 <= control <= 0xFF:
        raise ControlError(f"control byte {control} is not a byte")
    try:
        kind = ControlType(control & TYPE_MASK)
    except ValueError:
        raise ControlError(f"unknown control byte {control:#04x}") from None
    return kind, control & SEQ_MASK


def next_seq(seq: int) -> int:
    return (seq + 1) % SEQ_MODULO


def _crc_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ CRC_POLY if crc & 1 else crc >> 1
        table.append(crc)
    return tuple(table)


_CRC_TABLE = _crc_table()


def crc16_arc(data: bytes) -> int:
    "CRC-16/ARC: reflected polynomial 0xA001, init 0, no final xor"
    crc = 0
    for byte in data:
        crc = (crc >> 8) ^ _CRC_TABLE[(crc ^ byte) & 0xFF]
    return crc


@dataclass(frozen=True, slots=True)
class Transaction:
    "One TRANS LNG DATA group of a data block"
    code: int
    data: bytes = b''

    def __post_init__(self) -> None:
        if not 0 <= self.code <= 0xFF:
            raise MessageError(f"TRANS code {self.code} is not a byte")
        if not isinstance(self.data, bytes):
            raise TypeError("transaction data must be bytes")
        if len(self.data) > MAX_TRANSACTION_DATA:
            raise LengthError(
                f"transaction data of {len(self.data)} bytes: LNG is one "
                "byte")


@dataclass(frozen=True, slots=True)
class Frame:
    """A decoded frame: short (no transactions) or a data block

    Transactions travel only in DATA blocks; a DATA block without
    transactions is sent as a short frame."""
    address: int
    control: int
    transactions: tuple[Transaction, ...] = ()

    def __post_init__(self) -> None:
        validate_address(self.address)
        kind, _ = parse_control(self.control)
        if self.transactions and kind is not ControlType.DATA:
            raise ControlError(
                f"{kind.name} frames carry no transactions")

    @property
    def kind(self) -> ControlType:
        return parse_control(self.control)[0]

    @property
    def seq(self) -> int:
        return parse_control(self.control)[1]

    def encode(self) -> bytes:
        body = bytes((self.address, self.control))
        if not self.transactions:
            return body + bytes((SF,))
        for transaction in self.transactions:
            body += bytes((transaction.code, len(transaction.data)))
            body += transaction.data
        crc = crc16_arc(body)
        body += bytes((crc & 0xFF, crc >> 8, ETX))
        return body.replace(bytes((SF,)), bytes((DLE, SF))) + bytes((SF,))


def encode_frame(
        address: int, control: int,
        transactions: Sequence[Transaction] = ()) -> bytes:
    "The bytes to send: `ADR CTRL SF` or a stuffed data block"
    return Frame(address, control, tuple(transactions)).encode()


def _unstuff(stuffed: bytes) -> bytes:
    escaped = bytes((DLE, SF))
    if stuffed.count(SF) != stuffed.count(escaped):
        raise TerminatorError("SF inside the frame without DLE")
    return stuffed.replace(escaped, bytes((SF,)))


def decode_frame(raw: bytes) -> Frame:
    "Decode one frame as received, SF included"
    raw = bytes(raw)
    if not raw or raw[-1] != SF:
        raise TerminatorError("frame does not end with SF")
    body = _unstuff(raw[:-1])
    if len(body) == SHORT_FRAME_BODY:
        return Frame(validate_address(body[0]), body[1])
    if len(body) < MIN_LONG_FRAME_BODY:
        raise LengthError(f"frame of {len(raw)} bytes is too short")
    if body[-1] != ETX:
        raise TerminatorError("data frame without ETX before SF")
    payload = body[:-CRC_SIZE - 1]
    received = body[-3] | body[-2] << 8
    computed = crc16_arc(payload)
    if received != computed:
        raise CrcError(
            f"CRC {received:#06x} received, {computed:#06x} computed")
    address = validate_address(payload[0])
    kind, _ = parse_control(payload[1])
    if kind is not ControlType.DATA:
        raise ControlError(f"{kind.name} frame with data")
    transactions = []
    i = SHORT_FRAME_BODY
    while i < len(payload):
        if i + 2 > len(payload):
            raise LengthError(f"TRANS without LNG at offset {i}")
        code, length = payload[i], payload[i + 1]
        data = payload[i + 2:i + 2 + length]
        if len(data) != length:
            raise LengthError(
                f"TRANS {code:#04x} says {length} bytes, {len(data)} left")
        transactions.append(Transaction(code, data))
        i += 2 + length
    return Frame(address, payload[1], tuple(transactions))


def split_frames(buffer: bytes) -> tuple[list[bytes], bytes]:
    """Cut complete frames (SF included) off a received byte stream

    An SF not preceded by DLE ends a frame; what follows the last one is
    returned as the rest, to be prefixed to the next bytes received.  A
    lone SF (line idle) is not a frame and is skipped."""
    frames = []
    start = 0
    i = buffer.find(SF)
    while i >= 0:
        if i > start and buffer[i - 1] == DLE:
            i = buffer.find(SF, i + 1)
            continue
        if i > start:
            frames.append(bytes(buffer[start:i + 1]))
        start = i + 1
        i = buffer.find(SF, start)
    return frames, bytes(buffer[start:])


class FrameSplitter:
    "Accumulates received chunks and returns the complete frames"

    def __init__(self, max_frame_bytes: int = MAX_FRAME_BYTES) -> None:
        self.max_frame_bytes = max_frame_bytes
        self.dropped = 0  # bytes discarded because no SF came in time
        self._rest = b''

    def feed(self, chunk: bytes) -> list[bytes]:
        frames, self._rest = split_frames(self._rest + chunk)
        if len(self._rest) > self.max_frame_bytes:
            self.dropped += len(self._rest)
            self._rest = b''
        return frames

    @property
    def pending(self) -> bytes:
        return self._rest


# --- BCD ---------------------------------------------------------------

def encode_bcd(value: int, size: int) -> bytes:
    "Packed BCD, big-endian, on exactly `size` bytes"
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"BCD value must be an int, not {value!r}")
    if size < 1:
        raise BcdError(f"BCD size {size} < 1")
    if not 0 <= value < 10 ** (2 * size):
        raise BcdError(f"{value} does not fit in {size} BCD bytes")
    return bytes.fromhex(f"{value:0{2 * size}d}")


def decode_bcd(data: bytes) -> int:
    if not data:
        raise BcdError("empty BCD field")
    digits = data.hex()
    if not digits.isdigit():
        raise BcdError(f"non-BCD nibble in {data.hex(' ')}")
    return int(digits)


def decode_bcd_decimal(data: bytes, decimals: int) -> Decimal:
    "A BCD field with `decimals` decimal places: 00 00 04 28, 3 -> 0.428"
    digits = tuple(int(d) for d in str(decode_bcd(data)))
    return Decimal((0, digits, -decimals))


def encode_bcd_decimal(value: Decimal, size: int, decimals: int) -> bytes:
    "Refuses values that are negative, too large or too precise"
    if not isinstance(value, Decimal):
        raise TypeError(f"expected a Decimal, not {value!r}")
    if not value.is_finite() or value < 0:
        raise BcdError(f"{value} is not a non-negative number")
    if value and value.adjusted() + decimals >= 2 * size:
        raise BcdError(f"{value} does not fit in {size} BCD bytes")
    _, digits, exponent = value.as_tuple()
    assert isinstance(exponent, int)  # finite, checked above
    number = int(''.join(map(str, digits)))
    shift = exponent + decimals
    if shift >= 0:
        number *= 10 ** shift
    else:
        number, dropped = divmod(number, 10 ** -shift)
        if dropped:
            raise BcdError(f"{value} has more than {decimals} decimals")
    return encode_bcd(number, size)


# --- application layer -------------------------------------------------

VOLUME_SIZE = 4  # DC2, CD3: filled / preset volume, 4 BCD bytes
AMOUNT_SIZE = 4  # DC2, CD4, DC7: amounts, 4 BCD bytes
PRICE_SIZE = 3  # CD5, DC3: unit price, 3 BCD bytes
IDENTITY_SIZE = 5  # DC9: pump identity, 5 BCD bytes
TOTAL_SIZE = 5  # DC101: volume and amount totals, 5 BCD bytes
MAX_NOZZLE = 15  # nozzle numbers fit the low nibble of DC3's nozzle byte
NOZZLE_MASK = 0x0F  # DC3 nozzle byte: bits 0-3 nozzle number
NOZZLE_OUT = 0x10  # DC3 nozzle byte: bit 4 nozzle out of its holster
MIN_COUNTER, MAX_COUNTER = 1, 9  # CD101/DC101 counters 01-09 (notes)
MAX_DECIMALS = 8  # a 4-byte BCD field has 8 digits


class Direction(enum.StrEnum):
    MASTER_TO_PUMP = 'master_to_pump'
    PUMP_TO_MASTER = 'pump_to_master'


class Command(enum.IntEnum):
    "CD1 pump commands"
    RETURN_STATUS = 0x00
    RETURN_PUMP_PARAMETERS = 0x02
    RETURN_IDENTITY = 0x03
    RETURN_FILLING_INFORMATION = 0x04
    RESET = 0x05
    AUTHORIZE = 0x06
    STOP = 0x08
    SWITCH_OFF = 0x0A


class PumpStatus(enum.IntEnum):
    "DC1 pump status"
    NOT_PROGRAMMED = 0
    RESET = 1
    AUTHORIZED = 2
    FILLING = 4
    FILLING_COMPLETED = 5
    MAX_REACHED = 6  # max amount or volume reached
    SWITCHED_OFF = 7
    SUSPENDED = 8


@dataclass(frozen=True, slots=True)
class PumpParameters:
    """Decimal places of a pump's BCD fields (from DC7 or configuration)

    The defaults follow the Wayne example of the notes; Chinese pumps
    commonly use 2 decimals for the unit price."""
    volume_decimals: int = 3
    amount_decimals: int = 2
    price_decimals: int = 3

    def __post_init__(self) -> None:
        for name in ('volume_decimals', 'amount_decimals', 'price_decimals'):
            _check_range(getattr(self, name), 0, MAX_DECIMALS, name)


def _check_range(value: object, low: int, high: int, name: str) -> None:
    if (isinstance(value, bool) or not isinstance(value, int)
            or not low <= value <= high):
        raise MessageError(f"{name} {value!r} outside {low}-{high}")


def _require_decimal(value: object, name: str) -> None:
    if not isinstance(value, Decimal):
        raise TypeError(f"{name} must be a Decimal, not {value!r}")


DEFAULT_PARAMETERS = PumpParameters()


@dataclass(frozen=True, slots=True)
class _Byte:
    "One binary byte in low-high, or a member of an IntEnum"
    low: int = 0
    high: int = 0xFF
    kind: type[enum.IntEnum] | None = None
    size: ClassVar[int] = 1

    def check(self, value: object, name: str) -> None:
        if self.kind is None:
            _check_range(value, self.low, self.high, name)
        elif value not in set(self.kind):
            raise MessageError(f"{name}: unknown value {value!r}")

    def pack(self, value: int, params: PumpParameters) -> bytes:
        return bytes((value,))

    def unpack(self, data: bytes, params: PumpParameters) -> int:
        self.check(data[0], 'byte')
        return data[0] if self.kind is None else self.kind(data[0])


@dataclass(frozen=True, slots=True)
class _Bcd:
    """Packed BCD on `size` bytes: a Decimal scaled by the PumpParameters
    attribute named `decimals`, or an int when `decimals` is None"""
    size: int
    decimals: str | None = None

    def check(self, value: object, name: str) -> None:
        if self.decimals is None:
            _check_range(value, 0, 10 ** (2 * self.size) - 1, name)
        else:
            _require_decimal(value, name)

    def pack(self, value: Decimal | int, params: PumpParameters) -> bytes:
        if self.decimals is None:
            assert isinstance(value, int)
            return encode_bcd(value, self.size)
        assert isinstance(value, Decimal)
        return encode_bcd_decimal(
            value, self.size, getattr(params, self.decimals))

    def unpack(self, data: bytes, params: PumpParameters) -> Decimal | int:
        if self.decimals is None:
            return decode_bcd(data)
        return decode_bcd_decimal(data, getattr(params, self.decimals))


_Layout = tuple[_Byte | _Bcd, ...]


class _Message:
    """Base of the known messages: CODE, and either LAYOUT (one codec per
    field, packed in order) or their own __post_init__, _pack, _unpack"""
    __slots__ = ()
    CODE: ClassVar[int]
    LAYOUT: ClassVar[_Layout] = ()

    @classmethod
    def _codecs(cls) -> list[tuple[str, _Byte | _Bcd]]:
        return [(f.name, codec) for f, codec in zip(
            fields(cls), cls.LAYOUT, strict=True)]

    def __post_init__(self) -> None:
        for name, codec in self._codecs():
            codec.check(
                getattr(self, name), f"{type(self).__name__}.{name}")

    def encode(
            self, params: PumpParameters = DEFAULT_PARAMETERS
            ) -> Transaction:
        return Transaction(self.CODE, self._pack(params))

    @classmethod
    def decode(
            cls, transaction: Transaction,
            params: PumpParameters = DEFAULT_PARAMETERS) -> Self:
        if transaction.code != cls.CODE:
            raise MessageError(
                f"{cls.__name__}: TRANS {transaction.code:#04x}")
        try:
            return cls._unpack(transaction.data, params)
        except DartError as error:  # name the message in the error
            raise type(error)(f"{cls.__name__}: {error}") from error

    def _pack(self, params: PumpParameters) -> bytes:
        return b''.join(
            codec.pack(getattr(self, name), params)
            for name, codec in self._codecs())

    @classmethod
    def _unpack(cls, data: bytes, params: PumpParameters) -> Self:
        codecs = [codec for _, codec in cls._codecs()]
        _require_size(data, sum(codec.size for codec in codecs))
        values, offset = [], 0
        for codec in codecs:
            values.append(
                codec.unpack(data[offset:offset + codec.size], params))
            offset += codec.size
        return cls(*values)


def _require_size(data: bytes, size: int) -> None:
    if len(data) != size:
        raise MessageError(f"{len(data)} data bytes, {size} expected")


# master -> pump

@dataclass(frozen=True, slots=True)
class CD1Command(_Message):
    CODE: ClassVar[int] = 0x01
    LAYOUT: ClassVar[_Layout] = (_Byte(kind=Command),)
    command: Command


@dataclass(frozen=True, slots=True)
class CD2AllowedNozzles(_Message):
    "Nozzle numbers allowed for the next authorisation, one byte each"
    CODE: ClassVar[int] = 0x02
    nozzles: tuple[int, ...]

    def __post_init__(self) -> None:
        if not self.nozzles or len(set(self.nozzles)) != len(self.nozzles):
            raise MessageError("CD2 needs distinct nozzle numbers")
        for nozzle in self.nozzles:
            _check_range(nozzle, 1, MAX_NOZZLE, 'CD2 nozzle')

    def _pack(self, params: PumpParameters) -> bytes:
        return bytes(self.nozzles)

    @classmethod
    def _unpack(
            cls, data: bytes, params: PumpParameters) -> CD2AllowedNozzles:
        return cls(tuple(data))


@dataclass(frozen=True, slots=True)
class CD3PresetVolume(_Message):
    CODE: ClassVar[int] = 0x03
    LAYOUT: ClassVar[_Layout] = (_Bcd(VOLUME_SIZE, 'volume_decimals'),)
    volume: Decimal


@dataclass(frozen=True, slots=True)
class CD4PresetAmount(_Message):
    CODE: ClassVar[int] = 0x04
    LAYOUT: ClassVar[_Layout] = (_Bcd(AMOUNT_SIZE, 'amount_decimals'),)
    amount: Decimal


@dataclass(frozen=True, slots=True)
class CD5PriceUpdate(_Message):
    "Unit prices of nozzles 1, 2, ... in order, 3 BCD bytes each"
    CODE: ClassVar[int] = 0x05
    prices: tuple[Decimal, ...]

    def __post_init__(self) -> None:
        if not 1 <= len(self.prices) <= MAX_NOZZLE:
            raise MessageError(f"CD5 needs 1-{MAX_NOZZLE} prices")
        for price in self.prices:
            _require_decimal(price, 'CD5 price')

    def _pack(self, params: PumpParameters) -> bytes:
        return b''.join(
            encode_bcd_decimal(price, PRICE_SIZE, params.price_decimals)
            for price in self.prices)

    @classmethod
    def _unpack(cls, data: bytes, params: PumpParameters) -> CD5PriceUpdate:
        if len(data) % PRICE_SIZE:
            raise MessageError(f"{len(data)} bytes, not 3 per nozzle")
        return cls(tuple(
            decode_bcd_decimal(data[i:i + PRICE_SIZE], params.price_decimals)
            for i in range(0, len(data), PRICE_SIZE)))


@dataclass(frozen=True, slots=True)
class CD101RequestTotals(_Message):
    "Layout assumed: one byte, the counter 01-09 (binary = BCD here)"
    CODE: ClassVar[int] = 0x65
    LAYOUT: ClassVar[_Layout] = (_Byte(MIN_COUNTER, MAX_COUNTER),)
    counter: int


# pump -> master

@dataclass(frozen=True, slots=True)
class DC1Status(_Message):
    CODE: ClassVar[int] = 0x01
    LAYOUT: ClassVar[_Layout] = (_Byte(kind=PumpStatus),)
    status: PumpStatus


@dataclass(frozen=True, slots=True)
class DC2FilledVolumeAmount(_Message):
    CODE: ClassVar[int] = 0x02
    LAYOUT: ClassVar[_Layout] = (
        _Bcd(VOLUME_SIZE, 'volume_decimals'),
        _Bcd(AMOUNT_SIZE, 'amount_decimals'),
        )
    volume: Decimal
    amount: Decimal


@dataclass(frozen=True, slots=True)
class DC3PriceNozzle(_Message):
    "Price of the selected nozzle; nozzle 0 when none is selected"
    CODE: ClassVar[int] = 0x03
    price: Decimal
    nozzle: int
    nozzle_out: bool

    def __post_init__(self) -> None:
        _require_decimal(self.price, 'DC3 price')
        _check_range(self.nozzle, 0, MAX_NOZZLE, 'DC3 nozzle')

    def _pack(self, params: PumpParameters) -> bytes:
        nozzle_byte = self.nozzle | (NOZZLE_OUT if self.nozzle_out else 0)
        return encode_bcd_decimal(
            self.price, PRICE_SIZE, params.price_decimals) + bytes(
                (nozzle_byte,))

    @classmethod
    def _unpack(cls, data: bytes, params: PumpParameters) -> DC3PriceNozzle:
        _require_size(data, PRICE_SIZE + 1)
        nozzle_byte = data[PRICE_SIZE]
        if nozzle_byte & ~(NOZZLE_MASK | NOZZLE_OUT):
            raise MessageError(f"nozzle byte {nozzle_byte:#04x}")
        return cls(
            decode_bcd_decimal(data[:PRICE_SIZE], params.price_decimals),
            nozzle_byte & NOZZLE_MASK, bool(nozzle_byte & NOZZLE_OUT))


@dataclass(frozen=True, slots=True)
class DC5Alarm(_Message):
    "Layout assumed: one byte, the alarm code (binary)"
    CODE: ClassVar[int] = 0x05
    LAYOUT: ClassVar[_Layout] = (_Byte(),)
    alarm: int


# DC7 layout assumed (the notes name the fields, not their places):
# byte 0 volume decimals, 1 amount decimals, 2 unit price decimals (binary,
# 0-8), bytes 3-6 max amount (4 BCD, scaled by the amount decimals of this
# same message).  Rev 2.11 may pad with reserved bytes: change the offsets.
DC7_VOLUME_DECIMALS = 0
DC7_AMOUNT_DECIMALS = 1
DC7_PRICE_DECIMALS = 2
DC7_MAX_AMOUNT = 3
DC7_SIZE = DC7_MAX_AMOUNT + AMOUNT_SIZE


@dataclass(frozen=True, slots=True)
class DC7PumpParameters(_Message):
    """Pump parameters; their own decimals scale the max amount, whatever
    parameters encode/decode are given"""
    CODE: ClassVar[int] = 0x07
    parameters: PumpParameters
    max_amount: Decimal

    def __post_init__(self) -> None:
        _require_decimal(self.max_amount, 'DC7 max amount')

    def _pack(self, params: PumpParameters) -> bytes:
        own = self.parameters
        data = bytearray(DC7_SIZE)
        data[DC7_VOLUME_DECIMALS] = own.volume_decimals
        data[DC7_AMOUNT_DECIMALS] = own.amount_decimals
        data[DC7_PRICE_DECIMALS] = own.price_decimals
        data[DC7_MAX_AMOUNT:DC7_SIZE] = encode_bcd_decimal(
            self.max_amount, AMOUNT_SIZE, own.amount_decimals)
        return bytes(data)

    @classmethod
    def _unpack(
            cls, data: bytes, params: PumpParameters) -> DC7PumpParameters:
        _require_size(data, DC7_SIZE)
        own = PumpParameters(
            data[DC7_VOLUME_DECIMALS], data[DC7_AMOUNT_DECIMALS],
            data[DC7_PRICE_DECIMALS])
        return cls(own, decode_bcd_decimal(
            data[DC7_MAX_AMOUNT:DC7_SIZE], own.amount_decimals))


@dataclass(frozen=True, slots=True)
class DC9Identity(_Message):
    CODE: ClassVar[int] = 0x09
    LAYOUT: ClassVar[_Layout] = (_Bcd(IDENTITY_SIZE),)
    identity: int  # show as f"{identity:010d}"


@dataclass(frozen=True, slots=True)
class DC101Totals(_Message):
    """Layout assumed: byte 0 counter 01-09 (as in CD101), bytes 1-5 volume
    total (5 BCD, volume decimals), bytes 6-10 amount total (5 BCD, amount
    decimals)"""
    CODE: ClassVar[int] = 0x65
    LAYOUT: ClassVar[_Layout] = (
        _Byte(MIN_COUNTER, MAX_COUNTER),
        _Bcd(TOTAL_SIZE, 'volume_decimals'),
        _Bcd(TOTAL_SIZE, 'amount_decimals'),
        )
    counter: int
    volume_total: Decimal
    amount_total: Decimal


@dataclass(frozen=True, slots=True)
class UnknownMessage:
    "A transaction whose TRANS code this codec does not know"
    code: int
    data: bytes

    def encode(
            self, params: PumpParameters = DEFAULT_PARAMETERS
            ) -> Transaction:
        return Transaction(self.code, self.data)

    @classmethod
    def decode(
            cls, transaction: Transaction,
            params: PumpParameters = DEFAULT_PARAMETERS) -> UnknownMessage:
        return cls(transaction.code, transaction.data)


MasterMessage = (
    CD1Command | CD2AllowedNozzles | CD3PresetVolume | CD4PresetAmount
    | CD5PriceUpdate | CD101RequestTotals)
PumpMessage = (
    DC1Status | DC2FilledVolumeAmount | DC3PriceNozzle | DC5Alarm
    | DC7PumpParameters | DC9Identity | DC101Totals)
Message = MasterMessage | PumpMessage | UnknownMessage

# The same TRANS code means different things in each direction
MESSAGE_TYPES: Mapping[Direction, Mapping[int, type[_Message]]] = (
    MappingProxyType({
        direction: MappingProxyType({cls.CODE: cls for cls in classes})
        for direction, classes in (
            (Direction.MASTER_TO_PUMP, (
                CD1Command, CD2AllowedNozzles, CD3PresetVolume,
                CD4PresetAmount, CD5PriceUpdate, CD101RequestTotals)),
            (Direction.PUMP_TO_MASTER, (
                DC1Status, DC2FilledVolumeAmount, DC3PriceNozzle, DC5Alarm,
                DC7PumpParameters, DC9Identity, DC101Totals)))}))


def decode_message(
        transaction: Transaction, direction: Direction,
        params: PumpParameters = DEFAULT_PARAMETERS) -> Message:
    "Unknown TRANS codes give an UnknownMessage; bad content raises"
    cls = MESSAGE_TYPES[Direction(direction)].get(transaction.code)
    if cls is None:
        return UnknownMessage.decode(transaction)
    return cls.decode(transaction, params)  # type: ignore[return-value]


def decode_transactions(
        frame: Frame, direction: Direction,
        params: PumpParameters = DEFAULT_PARAMETERS) -> tuple[Message, ...]:
    "The typed messages of a frame; MessageError if one is malformed"
    return tuple(
        decode_message(transaction, direction, params)
        for transaction in frame.transactions)


def encode_messages(
        messages: Iterable[Message],
        params: PumpParameters = DEFAULT_PARAMETERS
        ) -> tuple[Transaction, ...]:
    return tuple(message.encode(params) for message in messages)
