"""Set-up commands behind ./fuel: `up` (demo server) and `test` (all phases).

Run through ./fuel, which prepares .venv first. Standard library only.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import os
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
import xml.etree.ElementTree as ET
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import IO, Any
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
VAR = ROOT / 'var'
VENV_BIN = ROOT / '.venv' / 'bin'
CONFIG = 'trytond.conf'
DB_NAME = 'fuelpay'
MODULES = [
    'fuel_station', 'fuel_payment', 'fuel_promotion', 'fuel_device',
    'fuel_plate']
ADMIN_EMAIL = 'admin@example.com'
# loaded with the modules so users can pick Chinese in their preferences
LANGUAGES = ['zh_CN']
ADMIN_PASSWORD_FILE = VAR / 'admin-password'
# The simulated station of ./fuel up: the demo box's files (tools/demo.py
# writes box.toml and box.key there) and its two DART pumps behind the
# UDP gateway the demo data gives A01's islands; a customer comes about
# every AUTO_FILL_EVERY seconds and fills 5-40 L at FLOW_RATE L/s, so that
# fills arrive within a minute or so of the start
BOX_DIR = VAR / 'box'
DEMO_GATEWAY = '127.0.0.1:5001'
AUTO_FILL_EVERY = '15'
# The lane camera of island 1 (tools/demo.py DEMO_BOX, CAMERA_DIR) and the
# enrolled car it sees (DEMO_VEHICLE): tools/demo_camera.py drops frames
# of it there before each customer of island 1
DEMO_CAMERA_DIR = 'camera'
DEMO_PLATE = '浙A66888'
FLOW_RATE = '1.5'
# sao refuses a server of another major.minor; 8.0.11 is the last 8.0 on npm
SAO_VERSION = '8.0.11'
SAO_DIR = VAR / 'sao'
SAO_ROOT = SAO_DIR / 'package'
CHROMIUM = Path('/usr/bin/chromium')
CHROMIUM_PACKAGES = ['chromium', 'fonts-noto-cjk', 'fonts-dejavu-core']
# The plate recognition tests and the demo camera render synthetic plates
# with this font (iot_box/lpr/synth.py); Chromium may be there without it
CJK_FONT = Path('/usr/share/fonts/opentype/noto/NotoSansCJK-Bold.ttc')
SERVER_START_TIMEOUT = 60  # seconds; a cold trytond loads every module
CHILD_STOP_TIMEOUT = 10  # seconds between SIGTERM and SIGKILL
PYTEST_NO_TESTS = 5  # pytest's exit code when nothing was collected

# Runs with the venv's python (psycopg comes with trytond[postgresql]) so
# that this file stays standard library only.
PG_CREATE = """\
import sys
import psycopg
from psycopg import sql
uri, name = sys.argv[1:]
with psycopg.connect(uri, dbname='postgres', autocommit=True) as conn:
    query = 'SELECT 1 FROM pg_database WHERE datname = %s'
    if not conn.execute(query, (name,)).fetchone():
        conn.execute(sql.SQL(
                "CREATE DATABASE {} TEMPLATE template0 ENCODING 'UTF8'"
                ).format(sql.Identifier(name)))
        print('created')
"""


class FuelError(Exception):
    "A failure explained to the user in one line."


def log(message: str) -> None:
    print(f'fuel: {message}', flush=True)


def is_root() -> bool:
    return os.geteuid() == 0


def raise_on_termination() -> None:
    """Make SIGTERM and SIGHUP behave like Ctrl-C so `finally` blocks run.

    SIGINT too: a shell starting us in the background leaves it ignored,
    and Python keeps an inherited SIG_IGN."""
    def handler(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGHUP, handler)
    signal.signal(signal.SIGINT, signal.default_int_handler)


def run(cmd: Sequence[str | Path], **kwargs: Any) -> None:
    subprocess.run([str(c) for c in cmd], check=True, **kwargs)


def venv_tool(name: str) -> str:
    return str(VENV_BIN / name)


def addons_digest(extra: bytes = b'') -> str:
    "sha256 over the relative path and content of every addons/ file."
    digest = hashlib.sha256()
    files = sorted(
        p for p in (ROOT / 'addons').rglob('*')
        if p.is_file() and '__pycache__' not in p.parts
        and p.suffix != '.pyc')
    for path in files:
        digest.update(path.relative_to(ROOT).as_posix().encode() + b'\0')
        digest.update(path.read_bytes() + b'\0')
    digest.update(extra)
    return digest.hexdigest()


def pip_freeze() -> bytes:
    # --exclude-editable: the project's own line names the git commit, and
    # its code is hashed from addons/ already.
    return subprocess.run(
        [venv_tool('python'), '-m', 'pip', 'freeze', '--exclude-editable'],
        check=True, capture_output=True).stdout


# ----- system packages and the web client ------------------------------

def find_pg_bin() -> Path | None:
    "The bin folder of the highest PostgreSQL version installed."
    found = [p.parent for p in Path('/usr/lib/postgresql').glob('*/bin/initdb')
        if p.parent.parent.name.isdigit()]
    return max(found, key=lambda p: int(p.parent.name)) if found else None


def apt_install(packages: list[str]) -> None:
    if not is_root():
        raise FuelError('missing system packages; install them and run '
            f'again: sudo apt-get install {" ".join(packages)}')
    log(f'installing {" ".join(packages)} with apt-get')
    env = dict(os.environ, DEBIAN_FRONTEND='noninteractive')
    run(['apt-get', 'update', '-qq'], env=env)
    run(['apt-get', 'install', '-y', '-qq', *packages], env=env,
        stdout=subprocess.DEVNULL)


def ensure_sao() -> Path:
    "Download sao (the web client) into var/sao/package once per version."
    stamp = SAO_DIR / '.fuel-version'
    if ((SAO_ROOT / 'index.html').exists() and stamp.exists()
            and stamp.read_text().strip() == SAO_VERSION):
        return SAO_ROOT
    if shutil.which('npm') is None:
        # Debian's npm brings nodejs
        apt_install(['npm'])
    log(f'downloading the web client tryton-sao {SAO_VERSION}')
    shutil.rmtree(SAO_DIR, ignore_errors=True)
    SAO_DIR.mkdir(parents=True)
    run(['npm', 'pack', '--silent', f'tryton-sao@{SAO_VERSION}'],
        cwd=SAO_DIR, stdout=subprocess.DEVNULL)
    tarball, = SAO_DIR.glob('tryton-sao-*.tgz')
    with tarfile.open(tarball) as tar:
        tar.extractall(SAO_DIR, filter='data')
    tarball.unlink()
    # inside package/: index.html loads node_modules/ relative to itself
    run(['npm', 'install', '--omit=dev', '--legacy-peer-deps',
            '--no-audit', '--no-fund', '--loglevel=error'], cwd=SAO_ROOT)
    stamp.write_text(SAO_VERSION + '\n')
    return SAO_ROOT


# ----- the database for `up` -------------------------------------------

@dataclass(frozen=True)
class Database:
    name: str
    uri: str  # the server, without a database name

    @property
    def sqlite(self) -> bool:
        return self.uri.startswith('sqlite:')

    @property
    def sqlite_file(self) -> Path:
        return VAR / 'db' / f'{self.name}.sqlite'

    @property
    def env(self) -> dict[str, str]:
        env = {'TRYTOND_DATABASE__URI': self.uri}
        if self.sqlite:
            env['TRYTOND_DATABASE__PATH'] = str(self.sqlite_file.parent)
        return env

    @property
    def label(self) -> str:
        if self.sqlite:
            return f'SQLite file {self.sqlite_file.relative_to(ROOT)}'
        host = urlsplit(self.uri).hostname or 'the local socket'
        return f'PostgreSQL database {self.name} on {host}'

    @property
    def state_file(self) -> Path:
        "Holds the addons/ hash of the last set-up of this database."
        key = hashlib.sha256(f'{self.uri}|{self.name}'.encode()).hexdigest()
        return VAR / 'db-state' / f'{self.name}-{key[:16]}'


def parse_database(uri: str | None) -> Database:
    if not uri or uri == 'sqlite://':
        return Database(DB_NAME, 'sqlite://')
    parts = urlsplit(uri)
    if parts.scheme not in ('postgresql', 'postgres'):
        raise FuelError(f'--database: {parts.scheme!r} is not postgresql')
    server = urlunsplit(parts._replace(path='/', query='', fragment=''))
    return Database(parts.path.strip('/') or DB_NAME, server)


def create_database(db: Database) -> bool:
    "Create the empty database when missing; tell whether it is new."
    if not db.sqlite:
        result = subprocess.run(
            [venv_tool('python'), '-c', PG_CREATE, db.uri, db.name],
            capture_output=True, text=True, check=False)
        if result.returncode:  # the last line names the cause
            reason = (result.stderr.strip().splitlines() or ['?'])[-1]
            raise FuelError(f'cannot create database {db.name}: {reason}')
        return result.stdout.strip() == 'created'
    db.sqlite_file.parent.mkdir(parents=True, exist_ok=True)
    new = not db.sqlite_file.exists() or not db.sqlite_file.stat().st_size
    db.sqlite_file.touch()  # trytond-admin does not create SQLite files
    return new


def stored_password() -> str | None:
    if not ADMIN_PASSWORD_FILE.exists():
        return None
    return ADMIN_PASSWORD_FILE.read_text().strip()


def store_password(password: str) -> None:
    ADMIN_PASSWORD_FILE.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(ADMIN_PASSWORD_FILE, os.O_WRONLY | os.O_CREAT | os.O_TRUNC,
        0o600)
    os.fchmod(fd, 0o600)  # also when the file was there before
    with os.fdopen(fd, 'w') as file:
        file.write(password + '\n')


@contextlib.contextmanager
def password_file(password: str) -> Iterator[Path]:
    "A private temporary file holding the password, deleted after use."
    fd, name = tempfile.mkstemp(prefix='fuel-pass-')  # mode 0600
    try:
        with os.fdopen(fd, 'w') as file:
            file.write(password + '\n')
        yield Path(name)
    finally:
        os.unlink(name)


def read_state(db: Database) -> dict[str, str]:
    "What the last set-up gave the database: addons/ and password hashes."
    if not db.state_file.exists():
        return {}
    lines = db.state_file.read_text().splitlines()
    return dict(line.split(' ', 1) for line in lines if ' ' in line)


def set_up_database(db: Database, env: dict[str, str], password: str) -> None:
    "Activate or update the modules, set the password: one trytond-admin."
    new = create_database(db)
    state = {} if new else read_state(db)
    wanted = {'addons': addons_digest(), 'password': hashlib.sha256(
            f'{db.state_file.name}|{password}'.encode()).hexdigest()}
    args: list[str] = []
    if 'addons' not in state:
        # also after a failed first set-up: the database may have tables
        # (trytond-admin then keeps the password as is) but no modules
        log(f'activating {", ".join(MODULES)} in the {db.label}')
        args += ['-u', *MODULES, '--activate-dependencies',
            '--email', ADMIN_EMAIL, '--password', '-l', *LANGUAGES]
    else:
        if state['addons'] != wanted['addons']:
            log(f'addons/ changed: updating the modules of the {db.label}')
            args += ['--all', '-l', *LANGUAGES]
        if state.get('password') != wanted['password']:
            log(f'setting the admin password of the {db.label}')
            args.append('--password')
    if not args:
        return
    with password_file(password) as passfile:
        run([venv_tool('trytond-admin'), '-c', CONFIG, '-d', db.name, *args],
            cwd=ROOT, env=dict(env, TRYTONPASSFILE=str(passfile)))
    db.state_file.parent.mkdir(parents=True, exist_ok=True)
    db.state_file.write_text(
        ''.join(f'{key} {value}\n' for key, value in wanted.items()))


def load_demo(db: Database, env: dict[str, str], password: str,
        server_url: str) -> None:
    log('loading the demo data (python -m tools.demo)')
    with password_file(password) as passfile:
        result = subprocess.run([venv_tool('python'), '-m', 'tools.demo',
                '--database', db.name, '--config', CONFIG,
                '--admin-password-file', str(passfile),
                '--box-dir', str(BOX_DIR), '--server-url', server_url],
            cwd=ROOT, env=env, check=False)
    if result.returncode:
        raise FuelError(
            f'the demo data loader failed (exit {result.returncode})')


# ----- serving ---------------------------------------------------------

Children = dict[str, subprocess.Popen[bytes]]


def port_answers(host: str, port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(
            (host, port), timeout=1):
        return True
    return False


def http_answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2):
            return True
    except urllib.error.HTTPError:
        return True  # any HTTP status means the server is up
    except (urllib.error.URLError, OSError):
        return False


def dead_child(children: Children) -> str | None:
    for name, child in children.items():
        if child.poll() is not None:
            return f'{name} exited with status {child.returncode}'
    return None


def signal_group(child: subprocess.Popen[bytes], signum: int) -> None:
    "Signal the child's process group: trytond-cron forks workers."
    with contextlib.suppress(ProcessLookupError):
        os.killpg(child.pid, signum)


def stop_children(children: Children) -> None:
    for child in children.values():
        signal_group(child, signal.SIGTERM)
    for child in children.values():
        try:
            child.wait(timeout=CHILD_STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
        signal_group(child, signal.SIGKILL)  # workers left behind


def wait_until_up(url: str, children: Children) -> None:
    deadline = time.monotonic() + SERVER_START_TIMEOUT
    while not http_answers(url):
        if dead := dead_child(children):
            raise FuelError(dead)
        if time.monotonic() > deadline:
            raise FuelError(
                f'{url} did not answer within {SERVER_START_TIMEOUT} s')
        time.sleep(0.5)


def serve(db: Database, env: dict[str, str], host: str, port: int,
        password: str) -> int:
    if port_answers(host, port):
        raise FuelError(f'{host}:{port} is already in use')
    children: Children = {}
    try:
        # own process groups: Ctrl-C reaches only us and we stop them
        # -d for trytond too: loads the pool now; a lazy load fails the
        # first login on SQLite with trytond 8.0.12 (KeyError 'res.user')
        for name in ['trytond', 'trytond-cron']:
            children[name] = subprocess.Popen(
                [venv_tool(name), '-c', CONFIG, '-d', db.name],
                cwd=ROOT, env=env, process_group=0)
        wait_until_up(f'http://{host}:{port}/', children)
        shown = '127.0.0.1' if host in ('0.0.0.0', '') else host
        start_station(children)
        print(f'\nfuelpay is running on the {db.label}\n'
            f'  URL:      http://{shown}:{port}/#{db.name}\n'
            '  login:    admin\n'
            f'  password: {password}  (stored in '
            f'{ADMIN_PASSWORD_FILE.relative_to(ROOT)})\n'
            '  station:  simulated pumps and the box of A01 (West Lake); '
            'box status on http://127.0.0.1:8470/\n'
            '  logs:     trytond, trytond-cron, the pumps and the box '
            'write to this terminal\n'
            'Ctrl-C to stop.', flush=True)
        while not (dead := dead_child(children)):
            time.sleep(0.5)
        log(f'{dead}; stopping')
        return 1
    except KeyboardInterrupt:
        log('stopping the station, trytond and trytond-cron')
        return 0
    finally:
        stop_children(children)


def start_station(children: Children) -> None:
    """The simulated DART pumps and the lane camera of island 1, then the
    box that drives them"""
    host, port = DEMO_GATEWAY.split(':')
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.bind((host, int(port)))
        except OSError as error:
            raise FuelError(f'cannot serve the simulated pumps on UDP '
                f'{DEMO_GATEWAY}: {error.strerror}') from None
    # the pumps' customers; those of island 1 pass the lane camera first
    # (frames of the demo car into the box's folder camera), so that the
    # platform charges their fills to the enrolled member
    children['dart-simulator'] = subprocess.Popen(
        [venv_tool('python'), '-m', 'tools.demo_camera',
            '--udp', DEMO_GATEWAY, '--pumps', '2', '--nozzles', '2',
            '--auto-fill-every', AUTO_FILL_EVERY, '--flow-rate', FLOW_RATE,
            '--camera-dir', str(BOX_DIR / DEMO_CAMERA_DIR),
            '--plate', DEMO_PLATE,
            # the pumps' totalizers go on across restarts, as on a real pump
            '--state', str(BOX_DIR / 'pumps.json')],
        cwd=ROOT, process_group=0)
    children['iot-box'] = subprocess.Popen(
        [venv_tool('python'), '-m', 'iot_box', 'run',
            '--config', str(BOX_DIR / 'box.toml')],
        cwd=ROOT, process_group=0)


def command_up(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog='./fuel up',
        description='Set up the fuelpay database and run the server.')
    parser.add_argument('--database', metavar='URI',
        help='postgresql://user@host:port/[name] (default: SQLite in var/db)')
    parser.add_argument('--host', default='127.0.0.1')
    parser.add_argument('--port', type=int, default=8000)
    options = parser.parse_args(argv)
    raise_on_termination()
    sao = ensure_sao()
    if not CJK_FONT.exists():  # the demo camera's synthetic scenes
        apt_install(['fonts-noto-cjk'])
    db = parse_database(options.database)
    env = dict(os.environ, **db.env, TRYTOND_WEB__ROOT=str(sao),
        TRYTOND_WEB__LISTEN=f'{options.host}:{options.port}')
    stored = stored_password()
    password = (os.environ.get('FUEL_ADMIN_PASSWORD') or stored
        or secrets.token_urlsafe(12))
    set_up_database(db, env, password)
    if password != stored:  # once the database has it
        store_password(password)
    shown = '127.0.0.1' if options.host in ('0.0.0.0', '') else options.host
    load_demo(db, env, password, f'http://{shown}:{options.port}')
    return serve(db, env, options.host, options.port, password)


# ----- tests -----------------------------------------------------------

def ensure_test_packages(external_pg: bool) -> None:
    missing = [] if CHROMIUM.exists() else list(CHROMIUM_PACKAGES)
    if not CJK_FONT.exists() and 'fonts-noto-cjk' not in missing:
        missing.append('fonts-noto-cjk')
    if not external_pg and find_pg_bin() is None:
        missing.append('postgresql')
    if missing:
        apt_install(missing)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        port: int = sock.getsockname()[1]
        return port


def as_postgres(cmd: list[str]) -> list[str]:
    "initdb refuses root: run the cluster as the postgres user."
    return ['runuser', '-u', 'postgres', '--', *cmd] if is_root() else cmd


@contextlib.contextmanager
def private_cluster(pg_bin: Path) -> Iterator[str]:
    "A throw-away PostgreSQL cluster; yields its URI."
    folder = Path(tempfile.mkdtemp(prefix='fuel-pg-'))
    data, log_file = folder / 'data', folder / 'log'
    pg_ctl = str(pg_bin / 'pg_ctl')
    try:
        if is_root():
            shutil.chown(folder, 'postgres', 'postgres')
        port = free_port()
        log(f'starting a private PostgreSQL on 127.0.0.1:{port} in {folder}')
        run(as_postgres([str(pg_bin / 'initdb'), '-D', str(data),
                    '-U', 'fuel', '--auth=trust', '--encoding=UTF8']),
            cwd=folder, stdout=subprocess.DEVNULL)
        try:
            run(as_postgres([pg_ctl, '-D', str(data), '-l', str(log_file),
                        '-o', f'-p {port} -c listen_addresses=127.0.0.1 '
                        f'-k {folder}', '-w', 'start']),
                cwd=folder, stdout=subprocess.DEVNULL)
        except subprocess.CalledProcessError:
            if log_file.exists():
                print(log_file.read_text(), file=sys.stderr)
            raise
        yield f'postgresql://fuel@127.0.0.1:{port}/'
    finally:
        if (data / 'postmaster.pid').exists():
            log('stopping the private PostgreSQL')
            subprocess.run(as_postgres(
                    [pg_ctl, '-D', str(data), 'stop', '-m', 'fast']),
                cwd=folder, stdout=subprocess.DEVNULL, check=False)
        shutil.rmtree(folder, ignore_errors=True)


def prepare_db_cache() -> Path:
    "var/cache/db/<hash of sources and packages>; drop the stale ones."
    parent = VAR / 'cache' / 'db'
    cache = parent / addons_digest(pip_freeze())
    cache.mkdir(parents=True, exist_ok=True)
    for sibling in parent.iterdir():
        if sibling != cache:
            shutil.rmtree(sibling)
    return cache


@dataclass(frozen=True)
class Phase:
    name: str
    target: str
    env: dict[str, str]
    # pytest-xdist workers (0: one process); each worker gets its own
    # database (addons/conftest.py) and the phase fills DB_CACHE first
    workers: int = 0


@dataclass(frozen=True)
class Counts:
    tests: int = 0
    failed: int = 0  # failures + errors
    skipped: int = 0

    def __add__(self, other: Counts) -> Counts:
        return Counts(self.tests + other.tests,
            self.failed + other.failed, self.skipped + other.skipped)

    @property
    def passed(self) -> int:
        return self.tests - self.failed - self.skipped


def junit_counts(path: Path) -> Counts:
    "Count test cases: the `tests` attribute also counts pytest 9 subtests."
    total = Counts()
    if not path.exists():
        return total
    for case in ET.parse(path).getroot().iter('testcase'):
        tags = {child.tag for child in case}
        failed = bool(tags & {'failure', 'error'})
        total += Counts(1, int(failed), int(not failed and 'skipped' in tags))
    return total


def build_phases(pg_uri: str, pg_bin: Path | None, cache: Path,
        sao: Path) -> list[Phase]:
    base = {k: v for k, v in os.environ.items()
        if k not in ('TRYTOND_DATABASE_URI', 'DB_NAME', 'DB_CACHE')}
    if pg_bin:  # DB_CACHE runs pg_dump/pg_restore: use the server's version
        base['PATH'] = f'{pg_bin}{os.pathsep}{base.get("PATH", "")}'
    return [
        Phase('sqlite', 'addons', dict(base,
                DB_NAME=':memory:', DB_CACHE=str(cache))),
        Phase('postgresql', 'addons', dict(base,
                TRYTOND_DATABASE_URI=pg_uri,
                DB_NAME=f'test_fuel_{os.getpid()}', DB_CACHE=str(cache)),
            workers=PG_WORKERS),
        Phase('system', 'tests', dict(base,
                TRYTOND_DATABASE_URI=pg_uri, FUEL_SAO_ROOT=str(sao),
                FUEL_CHROMIUM=str(CHROMIUM))),
        ]


# The module phases run side by side: the SQLite one keeps one core busy,
# the PostgreSQL one splits between pytest and the server.  PostgreSQL's is
# twice as long, so it runs in two workers that take test classes as they
# come free: they share the cores while SQLite's runs and have both after.
PARALLEL_PHASES = ('sqlite', 'postgresql')
PG_WORKERS = 2

# Activates the test modules once on the phase's database so that DB_CACHE
# holds them before several workers read it (trytond writes a cache entry
# when it misses, and a worker could restore one half written).
WARM_DB_CACHE = """\
from trytond.tests.test_tryton import activate_module, drop_db
from addons.fuel_station.tests.tools import TEST_MODULES
activate_module(TEST_MODULES)
drop_db()
"""


def pytest_command(phase: Phase, args: list[str], report: Path) -> list[str]:
    # with workers, each passed subtest would print a letter (70,000)
    workers = (['-n', str(phase.workers), '--dist', 'loadscope',
            '-o', 'verbosity_subtests=0']
        if phase.workers else [])
    return [str(venv_tool('python')), '-m', 'pytest', '-q',
        '-p', 'no:cacheprovider', f'--junitxml={report}', *workers,
        phase.target, *args]


def warm_db_cache(phase: Phase, output: IO[bytes] | None = None) -> Phase:
    """Fill DB_CACHE before a phase's workers start (see WARM_DB_CACHE);
    return the phase to run: in one process when that failed, so that
    the tests show why without workers racing on the cache."""
    if not phase.workers:
        return phase
    code = subprocess.run([str(venv_tool('python')), '-c', WARM_DB_CACHE],
        cwd=ROOT, env=phase.env, stdout=output, stderr=subprocess.STDOUT,
        check=False).returncode
    return dataclasses.replace(phase, workers=0) if code else phase


def phase_header(phase: Phase, args: list[str], note: str = '') -> None:
    print(f'\n===== phase {phase.name}: '
        f'{shlex.join(["pytest", phase.target, *args])} ====={note}',
        flush=True)


def phase_counts(code: int, report: Path) -> Counts | None:
    "A phase's counts, or None when it collected nothing."
    if code == PYTEST_NO_TESTS:
        return None
    counts = junit_counts(report)
    if code and not counts.failed:
        # e.g. a usage error before any report: keep the total honest
        counts += Counts(tests=1, failed=1)
    return counts


def run_phase(phase: Phase, args: list[str], report: Path) -> Counts | None:
    "Run one phase with its output streamed."
    phase_header(phase, args)
    sys.stdout.flush()
    phase = warm_db_cache(phase)
    code = subprocess.run(pytest_command(phase, args, report),
        cwd=ROOT, env=phase.env, check=False).returncode
    return phase_counts(code, report)


def run_parallel_phases(phases: list[Phase], args: list[str],
        results: Path) -> dict[str, Counts | None]:
    "Run phases at once; show each one's output whole when it ends."
    outcome: dict[str, Counts | None] = {}
    with contextlib.ExitStack() as stack:
        running = []
        log('running the phases ' + ', '.join(p.name for p in phases)
            + ' side by side; each shows its output when it ends')
        for phase in phases:
            output = stack.enter_context(
                open(results / f'{phase.name}.log', 'wb+'))
            phase = warm_db_cache(phase, output)
            process = subprocess.Popen(
                pytest_command(phase, args, results / f'{phase.name}.xml'),
                cwd=ROOT, env=phase.env, stdout=output,
                stderr=subprocess.STDOUT)
            stack.callback(stop_process, process)
            running.append((phase, process, output))
        for phase, process, output in running:
            code = process.wait()
            phase_header(phase, args)
            output.seek(0)
            sys.stdout.flush()
            shutil.copyfileobj(output, sys.stdout.buffer)
            sys.stdout.buffer.flush()
            outcome[phase.name] = phase_counts(
                code, results / f'{phase.name}.xml')
    return outcome


def stop_process(process: subprocess.Popen[bytes]) -> None:
    "Stop a phase still running (interrupted run)."
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=CHILD_STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def run_phases(
        phases: list[Phase], args: list[str]) -> dict[str, Counts | None]:
    results = VAR / 'test-results'
    shutil.rmtree(results, ignore_errors=True)
    results.mkdir(parents=True)
    parallel = [p for p in phases if p.name in PARALLEL_PHASES]
    outcome = run_parallel_phases(parallel, args, results)
    for phase in phases:
        if phase not in parallel:
            outcome[phase.name] = run_phase(
                phase, args, results / f'{phase.name}.xml')
    return outcome


def command_test(args: list[str]) -> int:
    raise_on_termination()
    external_uri = os.environ.get('TRYTOND_DATABASE_URI')
    ensure_test_packages(external_pg=bool(external_uri))
    sao = ensure_sao()
    cache = prepare_db_cache()
    pg_bin = find_pg_bin()
    with contextlib.ExitStack() as stack:
        if external_uri:
            pg_uri = external_uri
        else:
            assert pg_bin, 'ensure_test_packages installs PostgreSQL'
            pg_uri = stack.enter_context(private_cluster(pg_bin))
        outcome = run_phases(build_phases(pg_uri, pg_bin, cache, sao), args)
    total = sum((c for c in outcome.values() if c), Counts())
    ok = not total.failed and any(outcome.values())
    print('\nfuel: ' + ', '.join(
            f'{name}: ' + (f'{c.tests} tests' if c else 'nothing collected')
            for name, c in outcome.items())
        + f'; {total.skipped} skipped; ' + ('OK' if ok else 'FAILED'))
    print(f'total: {total.passed} passed, {total.failed} failed', flush=True)
    return 0 if ok else 1


USAGE = """\
usage: ./fuel up [--database URI] [--host HOST] [--port PORT]
       ./fuel test [pytest args...]"""


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in ('up', 'test'):
        print(USAGE, file=sys.stderr)
        return 0 if argv[:1] in (['-h'], ['--help']) else 2
    try:
        if argv[0] == 'up':
            return command_up(argv[1:])
        return command_test(argv[1:])
    except FuelError as error:
        log(f'error: {error}')
        return 1
    except subprocess.CalledProcessError as error:
        name = Path(error.cmd[0]).name
        log(f'error: {name} failed with exit status {error.returncode}')
        return 1
    except KeyboardInterrupt:
        log('interrupted')
        return 130


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
