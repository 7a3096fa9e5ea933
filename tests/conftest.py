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


@pytest.fixture(scope='session')
def server(tmp_path_factory):
    "The demo platform most system tests share"
    with run_server(tmp_path_factory, 'systest') as running:
        yield running


@pytest.fixture(scope='session')
def station_server(tmp_path_factory):
    """A platform of its own for the station box tests: they change prices
    and sell fuel, which the other tests must not see"""
    with run_server(tmp_path_factory, 'station') as running:
        yield running


@contextlib.contextmanager
def run_server(tmp_path_factory, name):
    """Create a database with the demo data, run trytond on it, drop it
    at the end"""
    uri = database_uri()
    database = f'fuel_{name}_{os.getpid()}'
    password = secrets.token_urlsafe(12)
    tmp = tmp_path_factory.mktemp(name)
    password_file = tmp / 'password'
    password_file.write_text(password)
    password_file.chmod(0o600)
    env = dict(os.environ,
        TRYTOND_DATABASE__URI=uri,
        TRYTONPASSFILE=str(password_file))
    env.pop('TRYTOND_DATABASE_URI', None)
    port = free_port()
    env['TRYTOND_WEB__LISTEN'] = f'127.0.0.1:{port}'
    if os.environ.get('FUEL_SAO_ROOT'):
        env['TRYTOND_WEB__ROOT'] = os.environ['FUEL_SAO_ROOT']
    config = str(ROOT / 'trytond.conf')
    url = f'http://127.0.0.1:{port}'
    box_dir = tmp / 'box'

    run_sql(uri, f'CREATE DATABASE "{database}"')
    process = None
    log = open(tmp / 'trytond.log', 'w')  # noqa: SIM115 closed below
    try:
        subprocess.run([
                VENV_BIN / 'trytond-admin', '-c', config, '-d', database,
                '-u', *MODULES, '--activate-dependencies',
                '--email', 'admin@example.com'],
            env=env, check=True, cwd=ROOT, capture_output=True)
        subprocess.run([
                sys.executable, '-m', 'tools.demo', '--database', database,
                '--config', config,
                '--admin-password-file', str(password_file),
                '--box-dir', str(box_dir), '--server-url', url],
            env=env, check=True, cwd=ROOT)
        process = subprocess.Popen(
            # -d loads the pool at start: a first request authenticated
            # with HTTP Basic on an unloaded pool fails in trytond 8.0
            [VENV_BIN / 'trytond', '-c', config, '-d', database],
            env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        wait_for(url, process)
        yield Server(
            url=url, database=database, password=password, box_dir=box_dir)
    finally:
        if process:
            process.terminate()
            process.wait(timeout=30)
        log.close()
        run_sql(uri, f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')


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
