# This file is part of fuelpay.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""HTTP routes the station service (box) calls

The bearer key identifies the box: it belongs to the box's technical user
(`fuel.device.box.user`). Once the box is known, the routes only read and
write that box, its station and its records, so they run without the
access rights of the technical user, which needs no group."""
import contextlib
import datetime as dt
import logging
import time
from decimal import Decimal
from functools import wraps

from trytond.exceptions import UserError, UserWarning
from trytond.i18n import gettext
from trytond.protocols.wrappers import (
    HTTPStatus,
    Response,
    abort,
    user_application,
    with_pool,
    with_transaction,
)
from trytond.transaction import Transaction, without_check_access
from trytond.wsgi import app
from werkzeug.exceptions import HTTPException

from . import wakeup
from .event import dumps, loads
from .exceptions import BoxIdentifierError, PayloadError
from .res import APPLICATION

# The version of the JSON the routes answer; a box refuses a major it
# does not know.
VERSION = 1
# The longest a box waits for a command in one call (seconds): below the
# usual 60 s idle timeout of HTTP proxies.
MAX_WAIT = 60
# How often the wait route looks at the table without a bus (SQLite), and
# at the latest with one, should a notification be lost (seconds).
POLL_INTERVAL = 0.5
BUS_POLL_INTERVAL = 5

logger = logging.getLogger(__name__)

fuel_device_application = user_application(APPLICATION)
# for a route that answers by itself after the transaction is over
fuel_device_key = user_application(APPLICATION, json=False)


def server_errors(func):
    """Answer an unexpected failure 500, logged with its traceback

    Below `with_pool`: for a JSON body without an RPC method, with_pool
    would answer any failure 400 "Unable to get RPC method", which a box
    takes for a refusal of its request instead of a server failure to
    retry.  User errors are already answered 400 by user_application."""
    @wraps(func)
    def wrapper(request, *args, **kwargs):
        try:
            return func(request, *args, **kwargs)
        except (HTTPException, UserError, UserWarning):
            raise
        except Exception:
            logger.exception("%s failed", request.path)
            abort(HTTPStatus.INTERNAL_SERVER_ERROR)
    return wrapper


def _data(request):
    "The JSON body, numbers with a fraction as Decimal"
    try:
        data = loads(request.get_data(as_text=True) or '{}')
    except ValueError:
        data = None
    if not isinstance(data, dict):
        raise PayloadError(gettext(
                'fuel_device.msg_value_invalid', field='body', value='...'))
    return data


def _box(pool, states):
    "The box of the key's user, or 403 when it is not in states"
    Box = pool.get('fuel.device.box')
    boxes = Box.search([
            ('user', '=', Transaction().user),
            ('state', 'in', states),
            ], limit=1)
    if not boxes:
        abort(HTTPStatus.FORBIDDEN)
    box, = boxes
    return box


def _list(data, field):
    items = data.get(field)
    if not isinstance(items, list):
        raise PayloadError(gettext(
                'fuel_device.msg_value_missing', field=field))
    return items


def _decimal(value):
    return str(value) if value is not None else None


@app.route('/<database_name>/fuel_device/setup', methods=['POST'])
@with_pool
@server_errors
@with_transaction()
@fuel_device_application
def setup(request, pool):
    """The box reports itself and its devices; answer the configuration
    of its station"""
    Box = pool.get('fuel.device.box')
    Device = pool.get('fuel.device.device')
    Price = pool.get('fuel.station.price')
    Configuration = pool.get('fuel.device.configuration')
    data = _data(request)
    with without_check_access():
        box = _box(pool, ['paired', 'active'])
        if data.get('identifier') != box.identifier:
            raise BoxIdentifierError(gettext(
                    'fuel_device.msg_box_identifier_mismatch',
                    identifier=str(data.get('identifier'))))
        version = data.get('version')
        Box.seen([box], version=str(version) if version else None)
        Device.report(box, _list(data, 'devices'))

        station = box.station
        now = dt.datetime.now()
        nozzles = []
        for nozzle in station.nozzles:
            price, unit_price = Price.get_price(station, nozzle.grade, now)
            nozzles.append({
                    'station_number': nozzle.station_number,
                    'number': nozzle.number,
                    'dispenser': nozzle.dispenser.name,
                    'bus_address': nozzle.dispenser.bus_address,
                    'state': nozzle.state,
                    'grade': {
                        'id': nozzle.grade.id,
                        'name': nozzle.grade.rec_name,
                        'unit': nozzle.grade.default_uom.symbol,
                        },
                    'price': price.id if price else None,
                    'unit_price': _decimal(unit_price),
                    })
        return {
            'version': VERSION,
            'box': box.identifier,
            'state': box.state,
            'station': {
                'code': station.code,
                'name': station.name,
                'timezone': station.timezone,
                'state': station.state,
                },
            'devices': [{
                    'identifier': d.identifier,
                    'kind': d.kind,
                    'dispenser': d.dispenser.name if d.dispenser else None,
                    } for d in box.devices],
            'nozzles': nozzles,
            'policy': Configuration(1).policy(),
            }


@app.route('/<database_name>/fuel_device/events', methods=['POST'])
@with_pool
@server_errors
@with_transaction()
@fuel_device_application
def events(request, pool):
    "Store a batch of outbox events, one result per item"
    Box = pool.get('fuel.device.box')
    Event = pool.get('fuel.device.event')
    data = _data(request)
    with without_check_access():
        box = _box(pool, ['active'])
        items = _list(data, 'events')
        Box.seen([box])
        return {
            'version': VERSION,
            'results': Event.ingest(box, items),
            }


@app.route('/<database_name>/fuel_device/commands', methods=['GET'])
@with_pool
@server_errors
@with_transaction(readonly=False)
@fuel_device_application
def commands(request, pool):
    "The commands the box has not answered yet"
    Box = pool.get('fuel.device.box')
    Command = pool.get('fuel.device.command')
    with without_check_access():
        box = _box(pool, ['active'])
        Box.seen([box])
        return {
            'version': VERSION,
            'commands': [c.to_json() for c in Command.fetch(box)],
            }


@app.route('/<database_name>/fuel_device/ack', methods=['POST'])
@with_pool
@server_errors
@with_transaction()
@fuel_device_application
def ack(request, pool):
    "Record the answers of the box to its commands"
    Box = pool.get('fuel.device.box')
    Command = pool.get('fuel.device.command')
    data = _data(request)
    with without_check_access():
        box = _box(pool, ['active'])
        items = _list(data, 'commands')
        Box.seen([box])
        return {
            'version': VERSION,
            'results': Command.answer(box, items),
            }


@app.route('/<database_name>/fuel_device/heartbeat', methods=['POST'])
@with_pool
@server_errors
@with_transaction()
@fuel_device_application
def heartbeat(request, pool):
    "The box is alive and reports the status of its devices"
    Box = pool.get('fuel.device.box')
    Device = pool.get('fuel.device.device')
    Command = pool.get('fuel.device.command')
    data = _data(request)
    with without_check_access():
        box = _box(pool, ['active'])
        items = data.get('devices', [])
        if not isinstance(items, list):
            raise PayloadError(gettext(
                    'fuel_device.msg_value_invalid',
                    field='devices', value=dumps(items)))
        Box.seen([box])
        Device.heartbeat(box, items)
        return {
            'version': VERSION,
            'pending': Command.pending_count(box),
            }


@with_transaction()
@fuel_device_key
def _wait_start(request, pool):
    "The id of the box, the seconds to wait and whether the bus works"
    Box = pool.get('fuel.device.box')
    Configuration = pool.get('fuel.device.configuration')
    data = _data(request)
    with without_check_access():
        box = _box(pool, ['active'])
        timeout = data.get('timeout')
        if timeout is None:
            timeout = Configuration(1).command_wait
        elif (not isinstance(timeout, (int, Decimal))
                or isinstance(timeout, bool) or timeout < 0):
            raise PayloadError(gettext(
                    'fuel_device.msg_value_invalid',
                    field='timeout', value=dumps(timeout)))
        Box.seen([box])
        return (
            box.id, min(float(timeout), MAX_WAIT),
            Transaction().database.has_channel())


@with_transaction(readonly=True)
def _pending(request, pool, box_id):
    Box = pool.get('fuel.device.box')
    Command = pool.get('fuel.device.command')
    with without_check_access():
        return Command.pending_count(Box(box_id))


@app.route('/<database_name>/fuel_device/wait', methods=['POST'])
@with_pool
@server_errors
def wait(request, pool):
    """Answer the number of pending commands of the box as soon as there
    is one, or 0 after the timeout

    No transaction is open while it waits: each look at the table is a
    transaction of its own. With PostgreSQL, the creation of a command
    wakes it (see wakeup); otherwise it polls."""
    box_id, timeout, has_channel = _wait_start(request, pool)
    deadline = time.monotonic() + timeout
    if has_channel:
        waiting = wakeup.waiting(pool.database_name, box_id)
    else:
        waiting = contextlib.nullcontext()
    with waiting as event:
        # the listener is registered before the first look: a command
        # created in between still wakes it
        pending = _pending(request, pool, box_id)
        while not pending:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            if event is not None:
                event.wait(min(remaining, BUS_POLL_INTERVAL))
                event.clear()
            else:
                time.sleep(min(remaining, POLL_INTERVAL))
            pending = _pending(request, pool, box_id)
    return Response(
        dumps({'version': VERSION, 'pending': pending}),
        content_type='application/json')
