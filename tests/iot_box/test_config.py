# This file is part of fuelpay.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""Box configuration: the fixture loads; each mistake names its key"""
from __future__ import annotations

import os
import pathlib
import re
import tomllib
from decimal import Decimal

import pytest

import iot_box.config
from iot_box.config import (
    DEFAULT_FALLBACK_AFTER,
    BoxConfig,
    ConfigError,
    Connection,
    FallbackMode,
    ListenAddress,
    Parity,
    Protocol,
    load_config,
)

FIXTURE = pathlib.Path(__file__).parent / 'fixtures' / 'box.toml'
KEY = 'k3y-t0p-s3cret-value'


@pytest.fixture
def box_dir(tmp_path: pathlib.Path) -> pathlib.Path:
    "A copy of the fixture with its key file (mode 0600) in tmp_path"
    (tmp_path / 'box.toml').write_text(FIXTURE.read_text())
    key = tmp_path / 'box.key'
    key.write_text(KEY + '\n')
    key.chmod(0o600)
    return tmp_path


def edit(box_dir: pathlib.Path, old: str, new: str) -> pathlib.Path:
    "Replace one occurrence of old in the fixture copy"
    path = box_dir / 'box.toml'
    text = path.read_text()
    assert text.count(old) == 1, old
    path.write_text(text.replace(old, new))
    return path


def test_fixture_loads(box_dir: pathlib.Path) -> None:
    config = load_config(box_dir / 'box.toml')

    assert isinstance(config, BoxConfig)
    assert config.station_code == 'ST001'
    assert config.outbox_path == box_dir / 'var' / 'outbox.sqlite'
    assert config.status_listen == ListenAddress('127.0.0.1', 8470)
    assert str(config.status_listen) == '127.0.0.1:8470'
    server = config.server
    assert server.url == 'https://fuelpay.example.com/iot'
    assert server.key_file == box_dir / 'box.key'
    assert server.key.reveal() == KEY
    assert server.verify_tls is True
    assert server.timeout == 7.5
    # the fixture names no database: the uplink refuses to start then
    assert server.database is None
    assert config.fallback.mode == FallbackMode.ATTENDED_POSTPAY
    # exact Decimals, from a TOML float and from a string
    assert config.fallback.max_amount == Decimal('150.00')
    assert str(config.fallback.max_amount) == '150.00'
    assert str(config.fallback.max_volume) == '100.000'
    # the fixture gives no `after`: the default
    assert config.fallback.after == DEFAULT_FALLBACK_AFTER == 60.0

    serial, udp = config.dispensers
    assert serial.name == 'pump-1'
    assert serial.protocol == Protocol.DART
    assert serial.connection == Connection.SERIAL
    assert serial.serial_port == '/dev/ttyUSB0'
    assert (serial.baudrate, serial.parity) == (9600, Parity.ODD)
    assert serial.address == 0x50
    assert serial.poll_interval == 0.05
    assert [(n.number, n.station_number) for n in serial.nozzles] == [
        (1, 1), (2, 2)]
    assert udp.connection == Connection.UDP
    assert (udp.host, udp.port, udp.address) == ('192.168.1.40', 4001, 0x51)
    assert udp.serial_port is None
    assert [(n.number, n.station_number) for n in udp.nozzles] == [
        (1, 3), (2, 4)]


def test_config_is_frozen(box_dir: pathlib.Path) -> None:
    config = load_config(box_dir / 'box.toml')
    with pytest.raises(AttributeError):
        config.station_code = 'other'  # type: ignore[misc]
    assert isinstance(config.dispensers, tuple)


def test_key_not_in_repr(box_dir: pathlib.Path) -> None:
    config = load_config(box_dir / 'box.toml')

    for text in (repr(config), str(config), repr(config.server),
            repr(config.server.key), str(config.server.key)):
        assert KEY not in text
    assert 'box.key' in repr(config.server)


@pytest.mark.parametrize('mode', [0o644, 0o640, 0o604, 0o660])
def test_key_readable_by_others_refused(
        box_dir: pathlib.Path, mode: int) -> None:
    (box_dir / 'box.key').chmod(mode)
    with pytest.raises(ConfigError, match=(
            rf"server\.key_file: .*mode {mode:04o}.*chmod 600")) as info:
        load_config(box_dir / 'box.toml')
    assert KEY not in str(info.value)


def test_key_0400_accepted(box_dir: pathlib.Path) -> None:
    (box_dir / 'box.key').chmod(0o400)
    assert load_config(box_dir / 'box.toml').server.key.reveal() == KEY


def test_key_missing_or_empty(box_dir: pathlib.Path) -> None:
    (box_dir / 'box.key').unlink()
    with pytest.raises(ConfigError, match=r"server\.key_file: key file"):
        load_config(box_dir / 'box.toml')
    key = box_dir / 'box.key'
    key.write_text('\n')
    key.chmod(0o600)
    with pytest.raises(ConfigError, match=r"server\.key_file: .*empty"):
        load_config(box_dir / 'box.toml')


# (text in the fixture, replacement, the key path the error must name)
INVALID = [
    ('url = "https://fuelpay.example.com/iot"',
        'url = "http://fuelpay.example.com/iot"', r'server\.url: must use'),
    ('url = "https://fuelpay.example.com/iot"',
        'url = "ftp://fuelpay.example.com"', r'server\.url'),
    ('url = "https://fuelpay.example.com/iot"',
        'url = "https://box:pw@fuelpay.example.com"', r'server\.url'),
    ('url = "https://fuelpay.example.com/iot"',
        'url = "https://fuelpay.example.com/iot?db=x"', r'server\.url'),
    ('timeout = 7.5', 'timeout = 7.5\ndatabase = "a/b"',
        r'server\.database: .* must not contain'),
    ('timeout = 7.5', 'timeout = 7.5\ndatabase = " fuel"',
        r'server\.database: must be'),
    ('timeout = 7.5', 'timeout = 7.5\ndatabase = 3',
        r'server\.database: must be a non-empty string'),
    ('timeout = 7.5', 'timeout = 0', r'server\.timeout'),
    ('timeout = 7.5', 'timeout = "7"', r'server\.timeout'),
    ('timeout = 7.5', 'timout = 7.5', r'server\.timout: unknown key'),
    ('station_code = "ST001"', 'station_code = ""', r'^station_code: must be'),
    ('station_code = "ST001"\n', '', r'station_code: missing'),
    ('status_listen = "127.0.0.1:8470"',
        'status_listen = "0.0.0.0:8470"', r'status_listen: .*loopback'),
    ('status_listen = "127.0.0.1:8470"',
        'status_listen = "127.0.0.1"', r'status_listen'),
    ('status_listen = "127.0.0.1:8470"',
        'status_listen = "localhost:70000"', r'status_listen: port'),
    ('mode = "attended_postpay"', 'mode = "prepay"', r'fallback\.mode'),
    ('max_amount = 150.00', 'max_amount = -1', r'fallback\.max_amount'),
    ('max_amount = 150.00', 'max_amount = "lots"', r'fallback\.max_amount'),
    ('max_volume = "100.000"\n', '', r'fallback\.max_volume: missing'),
    ('max_volume = "100.000"', 'max_volume = true',
        r'fallback\.max_volume'),
    ('max_volume = "100.000"', 'max_volume = "100.000"\nafter = 0',
        r'fallback\.after: must be a positive number of seconds'),
    ('max_volume = "100.000"', 'max_volume = "100.000"\nafter = -30',
        r'fallback\.after: must be a positive'),
    ('max_volume = "100.000"', 'max_volume = "100.000"\nafter = "60"',
        r'fallback\.after: must be a positive'),
    ('max_volume = "100.000"', 'max_volume = "100.000"\nafter = true',
        r'fallback\.after: must be a positive'),
    ('max_volume = "100.000"', 'max_volume = "100.000"\nafter = inf',
        r'fallback\.after: must be a positive'),
    ('max_volume = "100.000"', 'max_volume = "100.000"\nafterr = 60',
        r'fallback\.afterr: unknown key'),
    ('address = 0x50', 'address = 0x70',
        r'dispensers\[0\]\.address: 112 is out of range 80-111'),
    ('address = 0x50', 'address = true', r'dispensers\[0\]\.address'),
    ('address = 0x51', 'address = 0x4F', r'dispensers\[1\]\.address'),
    ('parity = "O"', 'parity = "X"', r'dispensers\[0\]\.parity'),
    ('baudrate = 9600', 'baudrate = 9601', r'dispensers\[0\]\.baudrate'),
    ('connection = "serial"', 'connection = "usb"',
        r'dispensers\[0\]\.connection'),
    ('connection = "serial"\n', '', r'dispensers\[0\]\.connection: missing'),
    ('serial_port = "/dev/ttyUSB0"\n', '',
        r'dispensers\[0\]\.serial_port: missing'),
    ('host = "192.168.1.40"', 'host = "192.168.1.40"\nbaudrate = 9600',
        r'dispensers\[1\]\.baudrate: not used by a udp'),
    ('port = 4001', 'port = 0', r'dispensers\[1\]\.port'),
    ('protocol = "dart"', 'protocol = "ifsf"', r'dispensers\[1\]\.protocol'),
    ('poll_interval = 0.05', 'poll_intervall = 0.05',
        r'dispensers\[0\]\.poll_intervall: unknown key'),
    ('poll_interval = 0.05', 'poll_interval = -0.05',
        r'dispensers\[0\]\.poll_interval'),
    ('name = "pump-2"', 'name = "pump-1"',
        r'dispensers\[1\]\.name: .*twice'),
    ('{number = 2, station_number = 2}', '{number = 1, station_number = 2}',
        r'dispensers\[0\]\.nozzles\[1\]\.number: nozzle 1 appears twice'),
    ('{number = 2, station_number = 2}', '{number = 16, station_number = 2}',
        r'dispensers\[0\]\.nozzles\[1\]\.number'),
    ('{number = 2, station_number = 2}',
        '{number = 2, station_number = 2, grade = "E10"}',
        r'dispensers\[0\]\.nozzles\[1\]\.grade: unknown key'),
    ('station_number = 3', 'station_number = 1',
        r'dispensers\[1\]\.nozzles\[0\]\.station_number: 1 is already'),
    ('station_number = 4', 'station_numer = 4',
        r'dispensers\[1\]\.nozzles\[1\]\.station_numer: unknown key'),
    ('[fallback]', '[fallbak]',
        r'^fallbak: unknown key \(known: dispensers, fallback'),
    ('outbox_path = "var/outbox.sqlite"',
        'outbox_path = "var/outbox.sqlite"\nstation = "x"',
        r'station: unknown key'),
    ]


@pytest.mark.parametrize(('old', 'new', 'message'), INVALID)
def test_invalid(
        box_dir: pathlib.Path, old: str, new: str, message: str) -> None:
    path = edit(box_dir, old, new)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    text = str(info.value)
    # the file, then the key path
    assert text.startswith(f"{path}: "), text
    assert re.search(message, text.removeprefix(f"{path}: ")), text


def test_same_address_on_same_line_refused(box_dir: pathlib.Path) -> None:
    edit(box_dir, 'address = 0x51', 'address = 0x50')
    # a different line: fine
    assert len(load_config(box_dir / 'box.toml').dispensers) == 2
    # the same line
    edit(box_dir, 'connection = "udp"\nhost = "192.168.1.40"\nport = 4001',
        'connection = "serial"\nserial_port = "/dev/ttyUSB0"')
    with pytest.raises(ConfigError, match=(
            r"dispensers\[1\]\.address: 0x50 is already used by 'pump-1'")):
        load_config(box_dir / 'box.toml')


def test_plain_http_to_loopback_allowed(box_dir: pathlib.Path) -> None:
    edit(box_dir, 'url = "https://fuelpay.example.com/iot"',
        'url = "http://127.0.0.1:8000"')
    assert load_config(box_dir / 'box.toml').server.url == (
        'http://127.0.0.1:8000')


def test_not_toml_or_missing(tmp_path: pathlib.Path) -> None:
    with pytest.raises(ConfigError, match='cannot read'):
        load_config(tmp_path / 'absent.toml')
    (tmp_path / 'bad.toml').write_text('station_code = \n')
    with pytest.raises(ConfigError, match='invalid TOML'):
        load_config(tmp_path / 'bad.toml')


def test_fixture_is_valid_toml() -> None:
    # the fixture itself is what a newcomer copies: it must stay parseable
    with FIXTURE.open('rb') as file:
        assert tomllib.load(file)['station_code'] == 'ST001'
    assert not os.access(FIXTURE.parent / 'box.key', os.F_OK)


@pytest.mark.parametrize(('text', 'seconds'), [
    ('after = 90', 90.0), ('after = 2.5', 2.5), ('after = 1e3', 1000.0)])
def test_fallback_after(
        box_dir: pathlib.Path, text: str, seconds: float) -> None:
    path = edit(
        box_dir, 'max_volume = "100.000"', f'max_volume = "100.000"\n{text}')
    fallback = load_config(path).fallback
    assert fallback.after == seconds
    assert isinstance(fallback.after, float)


def test_docstring_example_loads(tmp_path: pathlib.Path) -> None:
    "The module docstring's example loads, `[fallback] after` included"
    doc = iot_box.config.__doc__ or ''
    example = doc.split('Example::', 1)[1]
    text = '\n'.join(line[4:] for line in example.splitlines())
    assert 'after = 60' in text
    (tmp_path / 'box.toml').write_text(text)
    (tmp_path / 'box.key').write_text(KEY)
    (tmp_path / 'box.key').chmod(0o600)
    config = load_config(tmp_path / 'box.toml')
    assert config.fallback.after == 60.0


def test_database_read(box_dir: pathlib.Path) -> None:
    edit(box_dir, 'timeout = 7.5', 'timeout = 7.5\ndatabase = "fuelpay"')
    assert load_config(box_dir / 'box.toml').server.database == 'fuelpay'


def test_identifier_defaults_to_station_code(box_dir: pathlib.Path) -> None:
    config = load_config(box_dir / 'box.toml')
    assert config.identifier == 'ST001'
    assert config.box_identifier == 'ST001'
    path = edit(
        box_dir, 'station_code = "ST001"\n',
        'station_code = "ST001"\nidentifier = "box-st001"\n')
    assert load_config(path).box_identifier == 'box-st001'
    edit(box_dir, 'identifier = "box-st001"', 'identifier = ""')
    with pytest.raises(ConfigError, match='identifier: must be a non-empty'):
        load_config(path)
