# This file is part of fuelpay.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""System tests: a real trytond server on PostgreSQL with the demo data

`./fuel test` sets TRYTOND_DATABASE_URI to its PostgreSQL cluster,
FUEL_SAO_ROOT to the web client and FUEL_CHROMIUM to Debian's chromium."""
import contextlib
import os
import pathlib
import secrets
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
VENV_BIN = pathlib.Path(sys.executable).parent
# the modules ./fuel up activates (tools/fuel.py MODULES)
MODULES = [
    'fuel_station', 'fuel_payment', 'fuel_promotion', 'fuel_device',
    'fuel_plate']
# trytond-admin on a fresh PostgreSQL database takes about two minutes on
# two cores with the five modules; the server starts in a few seconds
SERVER_START_TIMEOUT = 60


@dataclass(frozen=True)
class Server:
    url: str
    database: str
    password: str
    # where the demo wrote the demo box's box.toml and box.key
    box_dir: pathlib.Path

    def rpc_url(self):
        return f'{self.url}/{self.database}/rpc/'


def free_port():
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


def database_uri():
    uri = os.environ.get('TRYTOND_DATABASE_URI', '')
    if not uri.startswith('postgresql://'):
        pytest.fail(
            "System tests run on PostgreSQL: set TRYTOND_DATABASE_URI "
            "(./fuel test does)", pytrace=False)
    return uri


def run_sql(uri, sql):
    import psycopg
    base = uri.rstrip('/') + '/postgres'
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(sql)


@dataclass(frozen=True)
class DemoDatabase:
    name: str
    password_file: pathlib.Path
    # where the demo wrote the demo box's box.toml and box.key
    box_dir: pathlib.Path


@pytest.fixture(scope='session')
def demo_databases(tmp_path_factory):
    """The demo database, made once (trytond-admin and the demo loader take
    minutes), and a copy of it (a PostgreSQL template copy takes seconds)
    for the station tests, which change prices and sell fuel that the
    other tests must not see, and one for the frictionless pay tests
    (their fills must not count in the station tests' totalizers); all
    dropped at the end"""
    uri = database_uri()
    tmp = tmp_path_factory.mktemp('demo')
    password_file = tmp / 'password'
    password_file.write_text(secrets.token_urlsafe(12))
    password_file.chmod(0o600)
    box_dir = tmp / 'box'
    names = {
        name: f'fuel_{name}_{os.getpid()}'
        for name in ['systest', 'station', 'plate']}
    env = server_env(uri, password_file)
    config = str(ROOT / 'trytond.conf')
    run_sql(uri, f'CREATE DATABASE "{names["systest"]}"')
    try:
        subprocess.run([
                VENV_BIN / 'trytond-admin', '-c', config,
                '-d', names['systest'], '-u', *MODULES,
                '--activate-dependencies', '--email', 'admin@example.com'],
            env=env, check=True, cwd=ROOT, capture_output=True)
        subprocess.run([
                sys.executable, '-m', 'tools.demo',
                '--database', names['systest'], '--config', config,
                '--admin-password-file', str(password_file),
                '--box-dir', str(box_dir)],
            env=env, check=True, cwd=ROOT)
        # nothing is connected to it now, as a template copy needs
        run_sql(uri, 'CREATE DATABASE "{station}" TEMPLATE "{systest}"'
            .format(**names))
        run_sql(uri, 'CREATE DATABASE "{plate}" TEMPLATE "{systest}"'
            .format(**names))
        yield {
            key: DemoDatabase(name, password_file, box_dir)
            for key, name in names.items()}
    finally:
        for name in names.values():
            run_sql(uri, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope='session')
def server(demo_databases, tmp_path_factory):
    "The demo platform most system tests share"
    with run_server(demo_databases['systest'], tmp_path_factory) as running:
        yield running


@pytest.fixture(scope='session')
def station_server(demo_databases, tmp_path_factory):
    "A platform of its own for the station box tests"
    with run_server(demo_databases['station'], tmp_path_factory) as running:
        yield running


@pytest.fixture(scope='session')
def plate_server(demo_databases, tmp_path_factory):
    "A platform of its own for the frictionless pay station tests"
    with run_server(demo_databases['plate'], tmp_path_factory) as running:
        yield running


def server_env(uri, password_file):
    env = dict(os.environ,
        TRYTOND_DATABASE__URI=uri,
        TRYTONPASSFILE=str(password_file))
    env.pop('TRYTOND_DATABASE_URI', None)
    if os.environ.get('FUEL_SAO_ROOT'):
        env['TRYTOND_WEB__ROOT'] = os.environ['FUEL_SAO_ROOT']
    return env


@contextlib.contextmanager
def run_server(database, tmp_path_factory):
    "Run trytond on the database until the end of the context"
    env = server_env(database_uri(), database.password_file)
    port = free_port()
    env['TRYTOND_WEB__LISTEN'] = f'127.0.0.1:{port}'
    url = f'http://127.0.0.1:{port}'
    tmp = tmp_path_factory.mktemp('server')
    process = None
    log = open(tmp / 'trytond.log', 'w')  # noqa: SIM115 closed below
    try:
        process = subprocess.Popen(
            # -d loads the pool at start: a first request authenticated
            # with HTTP Basic on an unloaded pool fails in trytond 8.0
            [VENV_BIN / 'trytond', '-c', str(ROOT / 'trytond.conf'),
                '-d', database.name],
            env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        wait_for(url, process)
        yield Server(
            url=url, database=database.name,
            password=database.password_file.read_text(),
            box_dir=database.box_dir)
    finally:
        if process:
            process.terminate()
            process.wait(timeout=30)
        log.close()


def wait_for(url, process):
    deadline = time.monotonic() + SERVER_START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail("trytond exited with %s" % process.returncode)
        try:
            urllib.request.urlopen(url + '/', timeout=2).close()
            return
        except urllib.error.HTTPError:
            return
        except OSError:
            time.sleep(0.3)
    pytest.fail("trytond did not answer on %s" % url)
