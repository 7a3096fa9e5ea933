# This file is part of fuelpay.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""Station service configuration: one TOML file, validated once

`load_config(path)` reads the TOML file into frozen dataclasses and checks
everything it can before anything starts: a typo, a missing key or a value
out of range raises `ConfigError` naming the key path (for example
``dispensers[1].nozzles[0].station_number``).  Unknown keys are refused.

Relative paths (`server.key_file`, `outbox_path`) are relative to the
directory of the configuration file.  TOML floats are read as Decimals so
that money and volume limits are exact; the box key lives in a separate
file that must not be readable by group or others, and is held in a
`Secret` that never shows in a repr.

Example::

    station_code = "ST001"
    identifier = "box-st001"  # optional; the station_code by default
    outbox_path = "outbox.sqlite"
    status_listen = "127.0.0.1:8470"

    [server]
    url = "https://fuelpay.example.com"
    database = "fuelpay"
    key_file = "box.key"

    [fallback]
    max_amount = 150.00
    max_volume = 100.000
    after = 60  # optional: seconds without the server before fallback

    [[dispensers]]
    name = "pump-1"
    connection = "serial"
    serial_port = "/dev/ttyUSB0"
    address = 0x50
    nozzles = [{number = 1, station_number = 1}]

    [lpr]  # optional: plate recognition and its cameras
    min_confidence = 0.5  # reads voted under it are not sent
    threads = 1  # onnxruntime threads per inference
    dark_plates = true  # also search the negative (black plates)

    [[lpr.cameras]]
    id = "cam-island-1"  # its device identifier on the server
    source = "snapshot"  # snapshot (HTTP JPEG), rtsp, or folder
    url = "http://192.168.1.64/ISAPI/Streaming/channels/1/picture"
    interval = 0.5  # seconds between frames (snapshot, rtsp)
    # nozzles: the station numbers an island serves (optional; the box
    # authorises them in fallback for a plate of the offline list)
    zones = [{code = "island-1", kind = "island", nozzles = [1]}]

    [[lpr.cameras]]
    id = "cam-entrance"
    source = "folder"  # JPEGs pushed by the camera (FTP) into path
    path = "/srv/ftp/cam-entrance"
    # a zone's region: x0, y0, x1, y1 as fractions of the frame (the
    # whole frame by default); a plate belongs to the first zone holding
    # its centre
    zones = [
        {code = "entrance", kind = "entrance", region = [0, 0, 0.5, 1]},
        {code = "exit", kind = "exit", region = [0.5, 0, 1, 1]},
    ]

    [[payment_posts]]  # optional: a code reader at a payment post
    name = "post-1"  # its device identifier on the server
    port = "/dev/serial/by-id/usb-face-device-if00"  # scanner mode (CDC)
    baudrate = 9600  # optional; 8 data bits, no parity, 1 stop bit
    source = "face"  # face (刷脸设备) or scanner (付款码扫码枪)
    nozzles = [1]  # the station numbers the post serves
"""
from __future__ import annotations

import enum
import ipaddress
import logging
import os
import stat
import tomllib
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, TypeVar

from iot_box.protocols.dart import MAX_ADDRESS, MAX_NOZZLE, MIN_ADDRESS

__all__ = [
    'DEFAULT_FALLBACK_AFTER',
    'BoxConfig',
    'CameraConfig',
    'CameraSource',
    'ConfigError',
    'Connection',
    'DispenserConfig',
    'FallbackMode',
    'FallbackPolicy',
    'ListenAddress',
    'LprConfig',
    'NozzleConfig',
    'Parity',
    'PaymentPostConfig',
    'PostSource',
    'Protocol',
    'Secret',
    'ServerConfig',
    'ZoneConfig',
    'ZoneKind',
    'check_database',
    'check_server_url',
    'load_config',
    'read_key',
]

logger = logging.getLogger(__name__)

# A request to the server that takes longer than this is treated as a
# link failure (fallback mode); long enough for a slow mobile uplink
DEFAULT_TIMEOUT = 10.0
# DART lines run at 9600 baud, odd parity (DART_NOTES.md, line layer)
DEFAULT_BAUDRATE = 9600
# One poll cycle over a DART line of a few pumps takes tens of
# milliseconds at 9600 baud; 0.1 s keeps authorisation latency low without
# saturating the line
DEFAULT_POLL_INTERVAL = 0.1
# A server unreachable for a minute is down, not slow: the request timeout
# (10 s) and a few backoff retries fit in it, and a customer waiting at a
# lifted nozzle for longer would leave.  `[fallback] after` overrides it.
DEFAULT_FALLBACK_AFTER = 60.0
# Rates that RS-485 serial servers and USB adapters commonly support
BAUDRATES = frozenset({
        1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200})
# The key file must not be readable, writable or executable by group or
# others: any of these bits set is refused
KEY_FILE_FORBIDDEN_BITS = stat.S_IRWXG | stat.S_IRWXO
MAX_PORT = 65535
# Characters of a database name that would change the route's path if
# put in a URL, or that Tryton's database names never contain
DATABASE_FORBIDDEN = frozenset('/\\?#%')

# Seconds between two frames of a snapshot or RTSP camera: a car entering
# an island at walking pace is in view for 2-5 s, 2 frames a second give
# several frames to vote on and leave CPU for the 2-core box
DEFAULT_CAMERA_INTERVAL = 0.5
# Faster than this a camera's frames would queue behind the recogniser
# (~40 ms a frame on one core) and starve the pump lines
MIN_CAMERA_INTERVAL = 0.1
# Reads voted under this confidence are not sent: most are not plates
# (bench/lpr.py measures precision by threshold)
DEFAULT_MIN_CONFIDENCE = Decimal('0.5')
# Threads per inference: one core of two, the other for the service
DEFAULT_LPR_THREADS = 1
MAX_LPR_THREADS = 16

_E = TypeVar('_E', bound=enum.StrEnum)


class ConfigError(ValueError):
    "The configuration is invalid; the message names the key path"


class Protocol(enum.StrEnum):
    DART = 'dart'


class Connection(enum.StrEnum):
    SERIAL = 'serial'
    TCP = 'tcp'
    UDP = 'udp'


class Parity(enum.StrEnum):
    "pyserial's parity letters"
    NONE = 'N'
    EVEN = 'E'
    ODD = 'O'
    MARK = 'M'
    SPACE = 'S'


class FallbackMode(enum.StrEnum):
    # keep selling when the server is unreachable: the attendant lets the
    # customer fill within the limits, then takes payment
    ATTENDED_POSTPAY = 'attended_postpay'
    # stop authorising fills while the server is unreachable
    DISABLED = 'disabled'


class CameraSource(enum.StrEnum):
    SNAPSHOT = 'snapshot'  # HTTP(S) GET of a JPEG every interval
    RTSP = 'rtsp'  # a video stream (OpenCV), one frame every interval
    FOLDER = 'folder'  # JPEG files dropped into a folder (FTP push)


class PostSource(enum.StrEnum):
    "What reads the customer's code at a payment post"
    FACE = 'face'  # a face-pay device (青蛙 Pro, 蜻蜓) in scanner mode
    SCANNER = 'scanner'  # a payment-code (付款码) scanner


class ZoneKind(enum.StrEnum):
    ENTRANCE = 'entrance'
    ISLAND = 'island'
    EXIT = 'exit'


@dataclass(frozen=True, slots=True)
class Secret:
    "A secret string that never shows in a repr, str or log line"
    _value: str = field(repr=False)

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return 'Secret(****)'

    __str__ = __repr__


@dataclass(frozen=True, slots=True)
class ListenAddress:
    host: str
    port: int

    def __str__(self) -> str:
        if ':' in self.host:
            return f'[{self.host}]:{self.port}'
        return f'{self.host}:{self.port}'


@dataclass(frozen=True, slots=True)
class ServerConfig:
    url: str
    key_file: Path
    key: Secret = field(repr=False, compare=False)
    verify_tls: bool = True
    timeout: float = DEFAULT_TIMEOUT
    # the Tryton database the routes live in: {url}/{database}/fuel_device;
    # None when the file does not give it (the uplink then refuses to
    # start, naming the key)
    database: str | None = None


@dataclass(frozen=True, slots=True)
class NozzleConfig:
    number: int  # as the dispenser numbers it (DART: 1-15)
    station_number: int  # as the station and the server number it


@dataclass(frozen=True, slots=True)
class DispenserConfig:
    name: str
    connection: Connection
    address: int
    nozzles: tuple[NozzleConfig, ...]
    protocol: Protocol = Protocol.DART
    serial_port: str | None = None
    baudrate: int = DEFAULT_BAUDRATE
    parity: Parity = Parity.ODD
    host: str | None = None
    port: int | None = None
    poll_interval: float = DEFAULT_POLL_INTERVAL

    @property
    def line(self) -> tuple[str, ...]:
        "Identifies the bus the dispenser is on (several pumps per line)"
        if self.connection == Connection.SERIAL:
            assert self.serial_port is not None
            return (self.connection, self.serial_port)
        return (self.connection, str(self.host), str(self.port))


@dataclass(frozen=True, slots=True)
class FallbackPolicy:
    max_amount: Decimal
    max_volume: Decimal
    mode: FallbackMode = FallbackMode.ATTENDED_POSTPAY
    # seconds without an answer of the server before fallback mode
    after: float = DEFAULT_FALLBACK_AFTER


@dataclass(frozen=True, slots=True)
class ZoneConfig:
    code: str  # e.g. "island-1", as the server knows it
    kind: ZoneKind
    # x0, y0, x1, y1 as fractions of the frame
    region: tuple[float, float, float, float] = (0.0, 0.0, 1.0, 1.0)
    # station numbers of the nozzles an island zone serves: a car read
    # there may be authorised on them in fallback (the offline list)
    nozzles: tuple[int, ...] = ()

    def contains(self, x: float, y: float) -> bool:
        "Whether the point (fractions of the frame) is in the region"
        x0, y0, x1, y1 = self.region
        return x0 <= x <= x1 and y0 <= y <= y1


@dataclass(frozen=True, slots=True)
class CameraConfig:
    id: str
    source: CameraSource
    zones: tuple[ZoneConfig, ...]
    url: str | None = None  # snapshot, rtsp
    path: Path | None = None  # folder
    interval: float = DEFAULT_CAMERA_INTERVAL

    def zone_at(self, x: float, y: float) -> ZoneConfig | None:
        "The first zone holding the point (fractions of the frame)"
        return next((z for z in self.zones if z.contains(x, y)), None)


@dataclass(frozen=True, slots=True)
class LprConfig:
    min_confidence: Decimal = DEFAULT_MIN_CONFIDENCE
    threads: int = DEFAULT_LPR_THREADS
    # a second detector pass on the frame's negative finds black plates
    # (港/澳/领/使) the model misses; about half the detection time more
    dark_plates: bool = True


@dataclass(frozen=True, slots=True)
class PaymentPostConfig:
    "A payment post's code reader on a serial line (scanner mode)"
    name: str  # the post's device identifier on the server
    port: str  # the serial device (USB CDC or RS-232)
    source: PostSource
    nozzles: tuple[int, ...]  # station numbers of the nozzles it serves
    baudrate: int = DEFAULT_BAUDRATE


@dataclass(frozen=True, slots=True)
class BoxConfig:
    server: ServerConfig
    station_code: str
    outbox_path: Path
    status_listen: ListenAddress
    dispensers: tuple[DispenserConfig, ...]
    fallback: FallbackPolicy
    # the box's identifier on the server (setup checks it); None: the
    # station code, as `load_config` fills it when the file has none
    identifier: str | None = None
    cameras: tuple[CameraConfig, ...] = ()
    lpr: LprConfig = LprConfig()
    payment_posts: tuple[PaymentPostConfig, ...] = ()

    @property
    def box_identifier(self) -> str:
        return self.identifier or self.station_code


def load_config(path: str | os.PathLike[str]) -> BoxConfig:
    "Read and validate the TOML configuration file at path"
    path = Path(path)
    try:
        with path.open('rb') as file:
            data = tomllib.load(file, parse_float=Decimal)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from exc
    try:
        return _box(data, path.parent)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def read_key(path: Path, key_path: str = 'server.key_file') -> Secret:
    """Read the box key from path, refusing a file others could read

    The key is returned wrapped, so that it shows in no repr or log."""
    try:
        info = path.stat()
    except OSError as exc:
        raise ConfigError(
            f"{key_path}: key file {path}: {exc.strerror}") from exc
    if not stat.S_ISREG(info.st_mode):
        raise ConfigError(f"{key_path}: key file {path} is not a file")
    if info.st_mode & KEY_FILE_FORBIDDEN_BITS:
        raise ConfigError(
            f"{key_path}: key file {path} has mode "
            f"{stat.S_IMODE(info.st_mode):04o}; it must not be accessible "
            f"by group or others (chmod 600 {path})")
    try:
        value = path.read_text(encoding='utf-8').strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(
            f"{key_path}: cannot read key file {path}") from exc
    if not value:
        raise ConfigError(f"{key_path}: key file {path} is empty")
    return Secret(value)


class _Table:
    "A TOML table being read: typed getters and refusal of unknown keys"

    def __init__(self, data: Any, path: str, known: frozenset[str]) -> None:
        if not isinstance(data, Mapping):
            raise ConfigError(f"{path or 'top level'}: must be a table")
        self.data = data
        self.path = path
        # unknown keys first: a typo reports itself, not as a missing key
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(
                f"{self.key(unknown[0])}: unknown key "
                f"(known: {', '.join(sorted(known))})")

    def key(self, name: str) -> str:
        return f"{self.path}.{name}" if self.path else name

    def has(self, name: str) -> bool:
        return name in self.data

    def raw(self, name: str, required: bool) -> Any:
        if name not in self.data:
            if required:
                raise ConfigError(f"{self.key(name)}: missing")
            return None
        return self.data[name]

    def string(self, name: str, required: bool = True) -> str | None:
        value = self.raw(name, required)
        if value is None:
            return None
        if not isinstance(value, str) or not value.strip():
            raise ConfigError(f"{self.key(name)}: must be a non-empty string")
        return value

    def integer(
            self, name: str, minimum: int, maximum: int,
            required: bool = True) -> int | None:
        value = self.raw(name, required)
        if value is None:
            return None
        # bool is an int in Python; `true` is not a number in TOML
        if not isinstance(value, int) or isinstance(value, bool):
            raise ConfigError(f"{self.key(name)}: must be an integer")
        if not minimum <= value <= maximum:
            raise ConfigError(
                f"{self.key(name)}: {value} is out of range "
                f"{minimum}-{maximum}")
        return value

    def boolean(self, name: str, default: bool) -> bool:
        value = self.raw(name, False)
        if value is None:
            return default
        if not isinstance(value, bool):
            raise ConfigError(f"{self.key(name)}: must be true or false")
        return value

    def decimal(self, name: str) -> Decimal:
        "A positive Decimal: a TOML number or a string like \"12.50\""
        value = self.raw(name, True)
        if isinstance(value, bool):
            value = None
        elif isinstance(value, int):
            value = Decimal(value)
        elif isinstance(value, str):
            try:
                value = Decimal(value)
            except InvalidOperation:
                value = None
        if not isinstance(value, Decimal) or not value.is_finite():
            raise ConfigError(f"{self.key(name)}: must be a decimal number")
        if value <= 0:
            raise ConfigError(f"{self.key(name)}: must be positive")
        return value

    def seconds(self, name: str, default: float) -> float:
        value = self.raw(name, False)
        if value is None:
            return default
        if isinstance(value, int) and not isinstance(value, bool):
            value = Decimal(value)
        if (not isinstance(value, Decimal)
                or not value.is_finite() or value <= 0):
            raise ConfigError(
                f"{self.key(name)}: must be a positive number of seconds")
        return float(value)

    def choice(
            self, name: str, enum_type: type[_E], default: _E) -> _E:
        value = self.raw(name, False)
        if value is None:
            return default
        try:
            return enum_type(value)
        except ValueError:
            choices = ', '.join(repr(m.value) for m in enum_type)
            raise ConfigError(
                f"{self.key(name)}: {value!r} is not one of "
                f"{choices}") from None

    def tables(self, name: str, known: frozenset[str]) -> list[_Table]:
        value = self.raw(name, True)
        if not isinstance(value, list) or not value:
            raise ConfigError(
                f"{self.key(name)}: must be a non-empty array of tables")
        return [
            _Table(item, f"{self.key(name)}[{i}]", known)
            for i, item in enumerate(value)]

    def table(self, name: str, known: frozenset[str]) -> _Table:
        return _Table(self.raw(name, True), self.key(name), known)


def _is_loopback(host: str) -> bool:
    if host == 'localhost':
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _resolve(base: Path, value: str) -> Path:
    path = Path(value).expanduser()
    return path if path.is_absolute() else base / path


_BOX_KEYS = frozenset({
        'server', 'station_code', 'identifier', 'outbox_path',
        'status_listen', 'dispensers', 'fallback', 'lpr', 'payment_posts'})
_LPR_KEYS = frozenset({'min_confidence', 'threads', 'dark_plates', 'cameras'})
_CAMERA_KEYS = frozenset({'id', 'source', 'url', 'path', 'interval', 'zones'})
_ZONE_KEYS = frozenset({'code', 'kind', 'region', 'nozzles'})
_SERVER_KEYS = frozenset({
        'url', 'database', 'key_file', 'verify_tls', 'timeout'})
_DISPENSER_KEYS = frozenset({
        'name', 'protocol', 'connection', 'serial_port', 'baudrate',
        'parity', 'host', 'port', 'address', 'poll_interval', 'nozzles'})
_NOZZLE_KEYS = frozenset({'number', 'station_number'})
_FALLBACK_KEYS = frozenset({'mode', 'max_amount', 'max_volume', 'after'})
_POST_KEYS = frozenset({'name', 'port', 'baudrate', 'source', 'nozzles'})


def _box(data: Any, base: Path) -> BoxConfig:
    top = _Table(data, '', _BOX_KEYS)
    server = _server(top.table('server', _SERVER_KEYS), base)
    station_code = top.string('station_code')
    identifier = top.string('identifier', required=False) or station_code
    outbox_path = _resolve(base, top.string('outbox_path'))
    status_listen = _listen(top.string('status_listen'), 'status_listen')
    dispensers = tuple(
        _dispenser(t) for t in top.tables('dispensers', _DISPENSER_KEYS))
    fallback = _fallback(top.table('fallback', _FALLBACK_KEYS))
    _check_dispensers(dispensers)
    cameras: tuple[CameraConfig, ...] = ()
    lpr = LprConfig()
    if top.has('lpr'):
        table = top.table('lpr', _LPR_KEYS)
        lpr = _lpr(table)
        if table.has('cameras'):
            cameras = tuple(
                _camera(t, base)
                for t in table.tables('cameras', _CAMERA_KEYS))
            _check_cameras(cameras, dispensers)
    payment_posts: tuple[PaymentPostConfig, ...] = ()
    if top.has('payment_posts'):
        payment_posts = tuple(
            _payment_post(t) for t in top.tables('payment_posts', _POST_KEYS))
        _check_payment_posts(payment_posts, dispensers, cameras)
    return BoxConfig(
        server=server,
        station_code=station_code,
        outbox_path=outbox_path,
        status_listen=status_listen,
        dispensers=dispensers,
        fallback=fallback,
        identifier=identifier,
        cameras=cameras,
        lpr=lpr,
        payment_posts=payment_posts)


def check_server_url(url: str, key: str = 'server.url') -> str:
    """Return url if the box may call it, else raise ConfigError

    An http(s) URL with a host; plain http only to a loopback host (the
    key travels in every request); no credentials in it."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in {'http', 'https'} or not parts.hostname:
        raise ConfigError(f"{key}: {url!r} is not an http(s) URL")
    if parts.scheme != 'https' and not _is_loopback(parts.hostname):
        raise ConfigError(
            f"{key}: must use https (plain http is only "
            "allowed to a loopback host)")
    if parts.username or parts.password:
        raise ConfigError(
            f"{key}: must not carry credentials; the key "
            "goes in key_file")
    if parts.query or parts.fragment:
        raise ConfigError(f"{key}: must not have a query or fragment")
    return url


def check_database(name: str, key: str = 'server.database') -> str:
    "Return the Tryton database name if it fits in a URL path, else raise"
    if not name.strip() or name != name.strip():
        raise ConfigError(
            f"{key}: must be a database name without spaces around it")
    if DATABASE_FORBIDDEN & set(name):
        raise ConfigError(
            f"{key}: {name!r} must not contain any of "
            f"{' '.join(sorted(DATABASE_FORBIDDEN))}")
    return name


def _server(table: _Table, base: Path) -> ServerConfig:
    url = check_server_url(table.string('url'), table.key('url'))
    database = table.string('database', required=False)
    if database is not None:
        database = check_database(database, table.key('database'))
    key_file = _resolve(base, table.string('key_file'))
    key = read_key(key_file, table.key('key_file'))
    verify_tls = table.boolean('verify_tls', True)
    if not verify_tls:
        logger.warning(
            "%s is false: the server certificate will not be verified",
            table.key('verify_tls'))
    timeout = table.seconds('timeout', DEFAULT_TIMEOUT)
    return ServerConfig(
        url=url, key_file=key_file, key=key, verify_tls=verify_tls,
        timeout=timeout, database=database)


def _listen(value: str, key: str) -> ListenAddress:
    host, sep, port = value.rpartition(':')
    if host.startswith('[') and host.endswith(']'):
        host = host[1:-1]
    if not sep or not host or not port.isdigit():
        raise ConfigError(f"{key}: {value!r} is not host:port")
    if not _is_loopback(host):
        raise ConfigError(
            f"{key}: the status page must listen on a loopback address, "
            f"not {host!r}")
    number = int(port)
    if not 1 <= number <= MAX_PORT:
        raise ConfigError(f"{key}: port {number} is out of range")
    return ListenAddress(host, number)


def _dispenser(table: _Table) -> DispenserConfig:
    name = table.string('name')
    protocol = table.choice('protocol', Protocol, Protocol.DART)
    if not table.has('connection'):
        raise ConfigError(f"{table.key('connection')}: missing")
    connection = table.choice('connection', Connection, Connection.SERIAL)
    serial_only = ('serial_port', 'baudrate', 'parity')
    network_only = ('host', 'port')
    wrong = network_only if connection == Connection.SERIAL else serial_only
    for name_ in wrong:
        if table.has(name_):
            raise ConfigError(
                f"{table.key(name_)}: not used by a {connection} "
                "connection")
    serial_port = host = port = None
    baudrate, parity = DEFAULT_BAUDRATE, Parity.ODD
    if connection == Connection.SERIAL:
        serial_port = table.string('serial_port')
        baudrate = table.integer('baudrate', 1, 10_000_000, required=False)
        if baudrate is None:
            baudrate = DEFAULT_BAUDRATE
        elif baudrate not in BAUDRATES:
            raise ConfigError(
                f"{table.key('baudrate')}: {baudrate} is not a standard "
                "rate")
        parity = table.choice('parity', Parity, Parity.ODD)
    else:
        host = table.string('host')
        port = table.integer('port', 1, MAX_PORT)
    # Protocol.DART is the only protocol so far; another one brings its
    # own address and nozzle ranges here
    address = table.integer('address', MIN_ADDRESS, MAX_ADDRESS)
    max_nozzle = MAX_NOZZLE
    poll_interval = table.seconds('poll_interval', DEFAULT_POLL_INTERVAL)
    nozzles = tuple(
        _nozzle(t, max_nozzle)
        for t in table.tables('nozzles', _NOZZLE_KEYS))
    numbers = [n.number for n in nozzles]
    for i, number in enumerate(numbers):
        if number in numbers[:i]:
            raise ConfigError(
                f"{table.key('nozzles')}[{i}].number: nozzle {number} "
                "appears twice")
    return DispenserConfig(
        name=name, protocol=protocol, connection=connection,
        serial_port=serial_port, baudrate=baudrate, parity=parity,
        host=host, port=port, address=address,
        poll_interval=poll_interval, nozzles=nozzles)


def _nozzle(table: _Table, max_nozzle: int) -> NozzleConfig:
    number = table.integer('number', 1, max_nozzle)
    # station numbers are what the attendant reads on the pump: small
    station_number = table.integer('station_number', 1, 999)
    return NozzleConfig(number=number, station_number=station_number)


def _fallback(table: _Table) -> FallbackPolicy:
    mode = table.choice('mode', FallbackMode, FallbackMode.ATTENDED_POSTPAY)
    max_amount = table.decimal('max_amount')
    max_volume = table.decimal('max_volume')
    after = table.seconds('after', DEFAULT_FALLBACK_AFTER)
    return FallbackPolicy(
        mode=mode, max_amount=max_amount, max_volume=max_volume, after=after)


def _check_dispensers(dispensers: tuple[DispenserConfig, ...]) -> None:
    names: set[str] = set()
    addresses: dict[tuple[tuple[str, ...], int], str] = {}
    station_numbers: dict[int, str] = {}
    for i, dispenser in enumerate(dispensers):
        key = f"dispensers[{i}]"
        if dispenser.name in names:
            raise ConfigError(
                f"{key}.name: {dispenser.name!r} appears twice")
        names.add(dispenser.name)
        other = addresses.setdefault(
            (dispenser.line, dispenser.address), dispenser.name)
        if other != dispenser.name:
            raise ConfigError(
                f"{key}.address: {dispenser.address:#04x} is already used "
                f"by {other!r} on the same line")
        for j, nozzle in enumerate(dispenser.nozzles):
            other = station_numbers.setdefault(
                nozzle.station_number, dispenser.name)
            if other != dispenser.name or any(
                    n.station_number == nozzle.station_number
                    for n in dispenser.nozzles[:j]):
                raise ConfigError(
                    f"{key}.nozzles[{j}].station_number: "
                    f"{nozzle.station_number} is already used")


def _lpr(table: _Table) -> LprConfig:
    min_confidence = DEFAULT_MIN_CONFIDENCE
    if table.has('min_confidence'):
        min_confidence = table.decimal('min_confidence')
        if min_confidence >= 1:
            raise ConfigError(
                f"{table.key('min_confidence')}: must be under 1")
    threads = table.integer('threads', 1, MAX_LPR_THREADS, required=False)
    return LprConfig(
        min_confidence=min_confidence,
        threads=threads if threads is not None else DEFAULT_LPR_THREADS,
        dark_plates=table.boolean('dark_plates', True))


def _camera(table: _Table, base: Path) -> CameraConfig:
    id_ = table.string('id')
    if not table.has('source'):
        raise ConfigError(f"{table.key('source')}: missing")
    source = table.choice('source', CameraSource, CameraSource.SNAPSHOT)
    url = path = None
    if source is CameraSource.FOLDER:
        if table.has('url'):
            raise ConfigError(
                f"{table.key('url')}: not used by a folder camera")
        path = _resolve(base, table.string('path'))
    else:
        if table.has('path'):
            raise ConfigError(
                f"{table.key('path')}: not used by a {source} camera")
        url = _camera_url(table.string('url'), source, table.key('url'))
    interval = table.seconds('interval', DEFAULT_CAMERA_INTERVAL)
    if interval < MIN_CAMERA_INTERVAL:
        raise ConfigError(
            f"{table.key('interval')}: at least {MIN_CAMERA_INTERVAL} s")
    zones = tuple(_zone(t) for t in table.tables('zones', _ZONE_KEYS))
    codes = [z.code for z in zones]
    for i, code in enumerate(codes):
        if code in codes[:i]:
            raise ConfigError(
                f"{table.key('zones')}[{i}].code: {code!r} appears twice")
    return CameraConfig(
        id=id_, source=source, zones=zones, url=url, path=path,
        interval=interval)


def _camera_url(url: str, source: CameraSource, key: str) -> str:
    """The URL of a camera: http(s) for snapshots, rtsp for streams, a
    host, no credentials (they would show in logs and the status page)"""
    parts = urllib.parse.urlsplit(url)
    schemes = {'http', 'https'} if source is CameraSource.SNAPSHOT else {
        'rtsp', 'rtsps'}
    if parts.scheme not in schemes or not parts.hostname:
        raise ConfigError(
            f"{key}: {url!r} is not a {' or '.join(sorted(schemes))} URL")
    if parts.username or parts.password:
        raise ConfigError(f"{key}: must not carry credentials")
    return url


def _zone(table: _Table) -> ZoneConfig:
    code = table.string('code')
    if not table.has('kind'):
        raise ConfigError(f"{table.key('kind')}: missing")
    kind = table.choice('kind', ZoneKind, ZoneKind.ISLAND)
    region = (0.0, 0.0, 1.0, 1.0)
    if table.has('region'):
        value = table.raw('region', True)
        if (not isinstance(value, list) or len(value) != 4 or any(
                    isinstance(v, bool) or not isinstance(v, int | Decimal)
                    for v in value)):
            raise ConfigError(
                f"{table.key('region')}: must be [x0, y0, x1, y1]")
        x0, y0, x1, y1 = (float(v) for v in value)
        if not (0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1):
            raise ConfigError(
                f"{table.key('region')}: must be fractions of the frame "
                "with x0 < x1 and y0 < y1")
        region = (x0, y0, x1, y1)
    nozzles: tuple[int, ...] = ()
    if table.has('nozzles'):
        value = table.raw('nozzles', True)
        if kind is not ZoneKind.ISLAND:
            raise ConfigError(
                f"{table.key('nozzles')}: only an island zone serves "
                "nozzles")
        if (not isinstance(value, list) or not value or any(
                    isinstance(v, bool) or not isinstance(v, int)
                    for v in value)):
            raise ConfigError(
                f"{table.key('nozzles')}: must be a non-empty array of "
                "station numbers")
        nozzles = tuple(value)
    return ZoneConfig(code=code, kind=kind, region=region, nozzles=nozzles)


def _check_cameras(
        cameras: tuple[CameraConfig, ...],
        dispensers: tuple[DispenserConfig, ...]) -> None:
    """Camera ids are device identifiers: unique among all the devices;
    the nozzles of the zones exist"""
    seen = {d.name for d in dispensers}
    station_numbers = {
        n.station_number for d in dispensers for n in d.nozzles}
    for i, camera in enumerate(cameras):
        if camera.id in seen:
            raise ConfigError(
                f"lpr.cameras[{i}].id: {camera.id!r} is already used by a "
                "device")
        seen.add(camera.id)
        for j, zone in enumerate(camera.zones):
            for number in zone.nozzles:
                if number not in station_numbers:
                    raise ConfigError(
                        f"lpr.cameras[{i}].zones[{j}].nozzles: no nozzle "
                        f"{number} on this box")


def _payment_post(table: _Table) -> PaymentPostConfig:
    name = table.string('name')
    port = table.string('port')
    baudrate = table.integer('baudrate', 1, 10_000_000, required=False)
    if baudrate is None:
        baudrate = DEFAULT_BAUDRATE
    elif baudrate not in BAUDRATES:
        raise ConfigError(
            f"{table.key('baudrate')}: {baudrate} is not a standard rate")
    if not table.has('source'):
        raise ConfigError(f"{table.key('source')}: missing")
    source = table.choice('source', PostSource, PostSource.SCANNER)
    value = table.raw('nozzles', True)
    if (not isinstance(value, list) or not value or any(
                isinstance(v, bool) or not isinstance(v, int)
                for v in value)):
        raise ConfigError(
            f"{table.key('nozzles')}: must be a non-empty array of station "
            "numbers")
    for i, number in enumerate(value):
        if number in value[:i]:
            raise ConfigError(
                f"{table.key('nozzles')}: nozzle {number} appears twice")
    return PaymentPostConfig(
        name=name, port=port, source=source, nozzles=tuple(value),
        baudrate=baudrate)


def _check_payment_posts(
        posts: tuple[PaymentPostConfig, ...],
        dispensers: tuple[DispenserConfig, ...],
        cameras: tuple[CameraConfig, ...]) -> None:
    """Post names are device identifiers: unique among all the devices;
    the nozzles exist on the box; a port is neither a pump line nor
    another post's"""
    seen = {d.name for d in dispensers} | {c.id for c in cameras}
    station_numbers = {
        n.station_number for d in dispensers for n in d.nozzles}
    ports = {d.serial_port for d in dispensers if d.serial_port}
    for i, post in enumerate(posts):
        key = f"payment_posts[{i}]"
        if post.name in seen:
            raise ConfigError(
                f"{key}.name: {post.name!r} is already used by a device")
        seen.add(post.name)
        if post.port in ports:
            raise ConfigError(
                f"{key}.port: {post.port!r} is already used by another "
                "device")
        ports.add(post.port)
        for number in post.nozzles:
            if number not in station_numbers:
                raise ConfigError(
                    f"{key}.nozzles: no nozzle {number} on this box")
