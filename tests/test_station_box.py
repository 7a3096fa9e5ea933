# This file is part of fuelpay.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""The station end to end: simulated DART pumps -> the box -> the platform

A real trytond on PostgreSQL with the demo data (`station_server`, a
database of its own), the demo box of station A01 (paired and activated by
the demo loader), two simulated DART pumps on one UDP gateway line
(0x50: nozzles 1 92# and 2 95#; 0x51: nozzles 3 92# and 4 0#), and a TCP
relay between the box and the server whose link the fallback test cuts.

The tests share one box, its outbox and the pumps, in file order, as a
station does: a box keeps its outbox (its event seq goes on) across
restarts.  The box runs in this process (an asyncio loop in a thread) or,
for the kill -9 test, as `python -m iot_box run`.  The last test checks
that the platform has exactly what the pumps' totalizers say was sold."""
import asyncio
import datetime as dt
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from decimal import ROUND_DOWN, Decimal

import pytest
from conftest import ROOT, free_port
from netcut import LinkRelay
from test_rpc_isolation import call, xmlrpc_proxy

from iot_box.app import App, LinkState, Timing
from iot_box.config import load_config
from iot_box.outbox import Outbox
from iot_box.protocols.dart import PumpStatus
from iot_box.simulators.dart_pump import PumpServer, demo_pumps
from tools.demo import DEMO_BOX, box_config

D = Decimal
# Bounds every wait on the station: loopback steps take milliseconds, a
# fill reaching the platform a second or two
STEP_TIMEOUT = 30.0
# The box in this process: short periods so that a test's steps follow
# each other quickly (the box in a process uses its defaults)
TIMING = Timing(
    fallback_threshold=1.5, auth_retry=1.0, command_poll=0.5,
    command_min_interval=0.05, idle_check=0.2, backoff_base=0.1,
    backoff_cap=1.0, poll_interval=0.02, heartbeat_interval=2.0)
# The demo's opening prices at Lanshan, as the pumps hold them (3 decimals)
OPENING = {1: D('7.580'), 2: D('8.090'), 3: D('7.580'), 4: D('7.260')}
# station nozzle number -> (pump index, DART nozzle)
NOZZLES = {1: (0, 1), 2: (0, 2), 3: (1, 1), 4: (1, 2)}
TRANSACTION_FIELDS = [
    'quantity', 'unit_price', 'amount', 'reported_amount',
    'reported_unit_price', 'totalizer_start', 'totalizer_end', 'flags',
    'state', 'nozzle_number', 'price', 'dispenser_price', 'authorization',
    'uuid']
STOP_TIMEOUT = 15


class LoopThread:
    "An asyncio loop in a thread, for the pumps and the box"

    def __init__(self):
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(
            target=self.loop.run_forever, name='station', daemon=True)
        self.thread.start()

    def run(self, coroutine, timeout=STEP_TIMEOUT):
        return asyncio.run_coroutine_threadsafe(
            coroutine, self.loop).result(timeout)

    def call(self, function, *args):
        "Call function in the loop's thread (the pumps live there)"
        async def wrapper():
            return function(*args)
        return self.run(wrapper())

    def until(self, condition, timeout=STEP_TIMEOUT, what=None):
        """Wait until condition() is true; it runs in the caller's thread
        (reading the pumps' attributes there is safe; changing them is
        done through call)"""
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                pytest.fail(f"timed out waiting for {what or condition}")
            time.sleep(0.05)

    def close(self):
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        self.loop.close()


class Station:
    "The simulated forecourt, the box's files and the box, in or out of us"

    def __init__(self, server, directory):
        self.server = server
        self.directory = directory
        self.loop = LoopThread()
        self.pumps = demo_pumps(2)
        self.gateway = PumpServer(self.pumps)
        self.gateway_address = self.loop.run(
            self.gateway.start_udp('127.0.0.1', 0))
        host, port = server.url.rsplit('/', 1)[-1].split(':')
        self.relay = LinkRelay(host, int(port))
        shutil.copy(server.box_dir / 'box.key', directory / 'box.key')
        (directory / 'box.key').chmod(0o600)
        self.status_port = free_port()
        self.config_path = directory / 'box.toml'
        self.config_path.write_text(box_config(
                DEMO_BOX, self.relay.url, server.database,
                gateway=self.gateway_address,
                status_listen=f'127.0.0.1:{self.status_port}'))
        self.app = self.app_future = self.process = None
        self.admin = xmlrpc_proxy(server, 'admin')

    def close(self):
        self.stop()
        self.loop.run(self.gateway.close())
        self.loop.close()
        self.relay.close()

    # --- the box ---------------------------------------------------------

    def start(self):
        "Run the box in this process (restarting it if it runs)"
        self.stop()
        self.app = App(load_config(self.config_path), timing=TIMING)
        self.app_future = asyncio.run_coroutine_threadsafe(
            self.app.run(), self.loop.loop)

    def start_process(self):
        "Run the box as the station runs it"
        if self.app is not None:
            self.stop()
        self.process = subprocess.Popen(
            [sys.executable, '-m', 'iot_box', 'run',
                '--config', str(self.config_path)],
            cwd=ROOT, stdout=subprocess.DEVNULL,
            stderr=open(self.directory / 'box.log', 'a'))  # noqa: SIM115

    def kill(self):
        "kill -9 the box process: no chance to finish anything"
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=STOP_TIMEOUT)
        self.process = None

    def stop(self):
        if self.app is not None:
            self.loop.loop.call_soon_threadsafe(self.app.stop)
            self.app_future.result(STOP_TIMEOUT)
            self.app = self.app_future = None
        if self.process is not None:
            self.process.send_signal(signal.SIGTERM)
            assert self.process.wait(timeout=STOP_TIMEOUT) == 0
            self.process = None

    def link(self):
        "The box's link state, read in its thread"
        return self.loop.call(lambda: self.app.link)

    def outbox_depth(self):
        outbox = Outbox(self.directory / 'outbox.sqlite')
        try:
            return outbox.depth()
        finally:
            outbox.close()

    def until_delivered(self):
        deadline = time.monotonic() + STEP_TIMEOUT
        while self.outbox_depth():
            if time.monotonic() > deadline:
                pytest.fail("the box did not deliver its outbox")
            time.sleep(0.2)

    # --- the forecourt ---------------------------------------------------

    def pump(self, nozzle):
        index, number = NOZZLES[nozzle]
        return self.pumps[index], number

    def prices(self, nozzle):
        pump, number = self.pump(nozzle)
        return self.loop.call(lambda: pump.prices.get(number))

    def totalizer(self, nozzle):
        pump, number = self.pump(nozzle)
        return self.loop.call(lambda: pump.totals[number][0])

    def lift(self, nozzle, authorised=True):
        pump, number = self.pump(nozzle)
        self.loop.call(pump.lift, number)
        if authorised:
            self.loop.until(
                lambda: pump.status is PumpStatus.AUTHORIZED,
                what=f"nozzle {nozzle} authorised")

    def flow(self, nozzle, volume, ticks=4):
        pump, _ = self.pump(nozzle)
        step = (volume / ticks).quantize(D('0.001'), rounding=ROUND_DOWN)
        flowed = D(0)
        for tick in range(ticks):
            last = tick == ticks - 1
            flowed += self.loop.call(
                pump.tick, volume - step * (ticks - 1) if last else step)
            time.sleep(0.05)
        assert flowed == volume
        return flowed

    def hang(self, nozzle):
        pump, _ = self.pump(nozzle)
        self.loop.call(pump.hang)

    def amount(self, nozzle):
        pump, _ = self.pump(nozzle)
        return self.loop.call(lambda: pump.filled_amount)

    def sale(self, nozzle, volume):
        self.lift(nozzle)
        self.flow(nozzle, volume)
        amount = self.amount(nozzle)
        self.hang(nozzle)
        pump, _ = self.pump(nozzle)
        self.loop.until(
            lambda: pump.status is PumpStatus.RESET,
            what=f"nozzle {nozzle} back to RESET")
        return amount

    # --- the platform ----------------------------------------------------

    def transactions(self, domain=()):
        ids = call(self.admin, 'fuel.payment.transaction', 'search', [
                ('station.code', '=', DEMO_BOX['station']),
                ('dispenser_reference', 'like', 'island-%'),
                *domain], 0, None, [('id', 'ASC')])
        return call(
            self.admin, 'fuel.payment.transaction', 'read', ids,
            TRANSACTION_FIELDS)

    def last_id(self):
        ids = call(self.admin, 'fuel.payment.transaction', 'search', [],
            0, 1, [('id', 'DESC')])
        return ids[0] if ids else 0

    def new_transactions(self, after, count):
        deadline = time.monotonic() + STEP_TIMEOUT
        while True:
            found = self.transactions([('id', '>', after)])
            if len(found) >= count or time.monotonic() > deadline:
                return found
            time.sleep(0.3)


@pytest.fixture(scope='module')
def station(station_server, tmp_path_factory):
    station = Station(station_server, tmp_path_factory.mktemp('box'))
    try:
        yield station
    finally:
        station.close()


def amount_of(volume, unit_price):
    return (volume * unit_price).quantize(D('0.01'))


def test_fill_is_priced_by_the_platform(station):
    "lift -> the box authorises (post-pay) -> fill -> priced by the server"
    station.start()
    for nozzle, price in OPENING.items():
        station.loop.until(
            lambda n=nozzle, p=price: station.prices(n) == p,
            what=f"nozzle {nozzle} programmed at {price}")
    before = station.last_id()

    reported = station.sale(1, D('12.345'))

    transaction, = station.new_transactions(before, 1)
    assert transaction['quantity'] == D('12.345')
    assert transaction['nozzle_number'] == 1
    # the platform's price and amount, next to what the pump said
    assert transaction['unit_price'] == D('7.5800')
    assert transaction['amount'] == amount_of(D('12.345'), D('7.58'))
    assert transaction['reported_amount'] == reported
    assert transaction['reported_unit_price'] == D('7.580')
    assert transaction['totalizer_end'] == station.totalizer(1)
    assert transaction['flags'] == []
    assert transaction['state'] == 'to_pay'


def test_price_change_reaches_the_pumps_at_its_effective_time(station):
    "A new price set for A01 reaches both pumps when it takes effect"
    admin = xmlrpc_proxy(station.server, 'lanshan.admin')
    station_id, = call(admin, 'fuel.station', 'search', [
            ('code', '=', DEMO_BOX['station'])], 0, None, None)
    nozzle_1, = call(admin, 'fuel.station.nozzle', 'search', [
            ('station', '=', station_id), ('station_number', '=', 1)],
        0, None, None)
    grade_92 = call(
        admin, 'fuel.station.nozzle', 'read', [nozzle_1], ['grade'])[0][
        'grade']
    company = call(
        admin, 'fuel.station', 'read', [station_id], ['company'])[0][
        'company']
    effective = dt.datetime.now(dt.UTC).replace(
        tzinfo=None, microsecond=0) + dt.timedelta(seconds=4)
    price_id, = call(admin, 'fuel.station.price', 'create', [{
                'company': company,
                'name': "A01 evening 92#", 'scope': 'station',
                'station': station_id, 'effective_date': effective,
                'lines': [('create', [{
                                'grade': grade_92,
                                'unit_price': D('7.9900')}])],
                }])
    call(admin, 'fuel.station.price', 'approve', [price_id])
    # nothing reaches the pumps before the effective time
    assert station.prices(1) == OPENING[1]

    while dt.datetime.now(dt.UTC).replace(tzinfo=None) < effective:
        time.sleep(0.2)
    # what the price cron does at its next run (trytond-cron is not run)
    assert price_id in call(admin, 'fuel.station.price', 'activate_due')

    for nozzle in (1, 3):  # the two 92# nozzles, one on each pump
        station.loop.until(
            lambda n=nozzle: station.prices(n) == D('7.990'),
            what=f"nozzle {nozzle} at 7.990")
    assert station.prices(2) == OPENING[2]
    nozzles = call(admin, 'fuel.station.nozzle', 'search', [
            ('station', '=', station_id),
            ('station_number', 'in', [1, 3])], 0, None, None)

    def held():
        return {
            (n['held_price'], n['held_unit_price']) for n in call(
                admin, 'fuel.station.nozzle', 'read', nozzles,
                ['held_price', 'held_unit_price'])}
    deadline = time.monotonic() + STEP_TIMEOUT
    while held() != {(price_id, D('7.9900'))}:
        assert time.monotonic() < deadline, held()
        time.sleep(0.3)

    before = station.last_id()
    station.sale(3, D('20.000'))
    transaction, = station.new_transactions(before, 1)
    assert transaction['unit_price'] == D('7.9900')
    assert transaction['amount'] == D('159.80')
    assert transaction['price'] == price_id
    assert transaction['dispenser_price'] == price_id
    assert transaction['flags'] == []


def test_box_killed_during_fuelling_loses_nothing(station):
    "kill -9 of the box mid-fill and right after a fill: 0 lost, 0 twice"
    station.stop()
    station.start_process()
    before = station.last_id()

    station.lift(2)
    station.flow(2, D('5.000'))
    station.kill()  # mid-fill: the pump goes on without the box
    station.flow(2, D('7.500'))
    station.hang(2)
    station.start_process()
    pump, _ = station.pump(2)
    station.loop.until(
        lambda: pump.status is PumpStatus.RESET, what="sale 1 closed")

    station.lift(4)
    station.flow(4, D('30.000'))
    station.hang(4)
    station.loop.until(
        lambda: station.pump(4)[0].status is PumpStatus.RESET,
        what="sale 2 closed")
    station.kill()  # right after the sale was recorded
    station.start_process()
    station.until_delivered()

    sales = station.new_transactions(before, 2)
    assert [(t['nozzle_number'], t['quantity']) for t in sales] == [
        (2, D('12.500')), (4, D('30.000'))]
    assert [t['totalizer_end'] for t in sales] == [
        station.totalizer(2), station.totalizer(4)]
    assert all(t['flags'] == [] for t in sales)
    time.sleep(1)  # a duplicate would arrive now
    assert len(station.transactions([('id', '>', before)])) == 2
    station.stop()


def test_server_unreachable_fallback_then_replay(station):
    """The link to the server goes down during fuelling: the box sells on
    under its local policy and replays everything when the link returns"""
    station.start()
    station.loop.until(
        lambda: station.link() is LinkState.ONLINE, what="box online")
    before = station.last_id()

    station.lift(1)
    station.flow(1, D('4.000'))
    station.relay.cut()
    station.flow(1, D('6.000'))
    station.hang(1)
    station.loop.until(
        lambda: station.link() is LinkState.FALLBACK, what="fallback")
    # a new customer while the server cannot be reached
    station.sale(2, D('8.000'))
    station.sale(4, D('15.000'))
    assert station.outbox_depth() >= 3
    # the platform has none of them yet
    assert station.transactions([('id', '>', before)]) == []

    station.relay.restore()
    station.loop.until(
        lambda: station.link() is LinkState.ONLINE, what="back online")
    station.until_delivered()
    sales = station.new_transactions(before, 3)
    assert sorted((t['nozzle_number'], t['quantity']) for t in sales) == [
        (1, D('10.000')), (2, D('8.000')), (4, D('15.000'))]
    assert all(t['flags'] == [] for t in sales)

    # everything the pumps sold since the demo started is on the platform,
    # once: per nozzle, the transactions add up to the pump's totalizer
    everything = station.transactions()
    assert len({t['uuid'] for t in everything}) == len(everything)
    for nozzle in NOZZLES:
        sold = sum(
            (t['quantity'] for t in everything
                if t['nozzle_number'] == nozzle), D(0))
        assert sold == station.totalizer(nozzle), nozzle
    station.stop()


def test_command_wakes_a_waiting_box_at_once(station):
    """A box waiting for commands (POST wait) is answered as soon as the
    server creates one, through PostgreSQL's NOTIFY, not at its timeout"""
    key = (station.directory / 'box.key').read_text().strip()
    box_id, = call(station.admin, 'fuel.device.box', 'search', [
            ('identifier', '=', DEMO_BOX['identifier'])], 0, None, None)
    answer = {}

    def wait():
        request = urllib.request.Request(
            f'{station.server.url}/{station.server.database}'
            '/fuel_device/wait', method='POST',
            data=json.dumps({'version': 1, 'timeout': 30}).encode(),
            headers={
                'Authorization': f'Bearer {key}',
                'Content-Type': 'application/json'})
        start = time.monotonic()
        with urllib.request.urlopen(request, timeout=60) as response:
            answer.update(json.load(response))
        answer['elapsed'] = time.monotonic() - start
    waiter = threading.Thread(target=wait)
    waiter.start()
    time.sleep(1)
    call(station.admin, 'fuel.device.command', 'create', [{
                'box': box_id, 'kind': 'configuration', 'payload': '{}'}])
    waiter.join(timeout=40)
    assert answer['pending'] >= 1
    # within 3 s of the command: the wait route's own look at the table
    # comes only every 5 s
    assert answer['elapsed'] < 4


def test_status_command_and_refused_key(station, tmp_path):
    "The box's status command tells whether the server accepts its key"
    status = [sys.executable, '-m', 'iot_box', 'status', '--config']
    good = subprocess.run(
        [*status, str(station.config_path)], cwd=ROOT,
        capture_output=True, text=True, timeout=60)
    assert good.returncode == 0, good.stderr
    assert 'accepts the key' in good.stdout

    bad = tmp_path / 'bad'
    bad.mkdir()
    shutil.copy(station.config_path, bad / 'box.toml')
    key = bad / 'box.key'
    key.write_text('not-a-validated-key\n')
    os.chmod(key, 0o600)
    refused = subprocess.run(
        [*status, str(bad / 'box.toml')], cwd=ROOT,
        capture_output=True, text=True, timeout=60)
    assert refused.returncode == 1
    assert 'not accepted' in refused.stderr
    assert 'not-a-validated-key' not in refused.stderr + refused.stdout
