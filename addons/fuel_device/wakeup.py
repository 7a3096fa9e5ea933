# This file is part of fuelpay.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""Wake up the boxes waiting for commands

On PostgreSQL, creating a command sends a NOTIFY on CHANNEL with the box
id as payload; PostgreSQL delivers it when the transaction commits, so a
box never fetches a command that could still be rolled back. Each server
process runs one listener thread per database while boxes wait (the
number of waiting boxes costs no connection), as trytond's bus does for
clients. Backends without channels (SQLite) have no listener: the wait
route polls the table instead."""
import collections
import contextlib
import logging
import os
import selectors
import threading

from trytond import backend
from trytond.transaction import Transaction

logger = logging.getLogger(__name__)

# the PostgreSQL channel; payloads are box ids
CHANNEL = 'fuel_device_command'
# how often the listener checks whether anyone still waits (seconds)
SELECT_TIMEOUT = 1
# keep listening that long after the last waiter left, so boxes calling
# in a row do not restart it each time (seconds)
LINGER = 10
# how long a waiter gives the listener to start before falling back to
# polling (seconds)
START_TIMEOUT = 5


def notify(box_ids):
    "Wake up the boxes at the commit of the current transaction"
    transaction = Transaction()
    database = transaction.database
    if not database.has_channel():
        return
    for box_id in sorted(set(box_ids)):
        database.notify(transaction.connection, CHANNEL, str(box_id))


class _Listener:
    _lock = threading.Lock()
    # (pid, database name) -> listener
    _listeners = {}

    def __init__(self, database_name):
        self.database_name = database_name
        self.waiters = collections.defaultdict(set)
        self.ready = threading.Event()
        self.stopping = threading.Event()
        self.thread = threading.Thread(
            target=self.run, daemon=True,
            name=f'fuel_device wake-up {database_name}')

    @classmethod
    @contextlib.contextmanager
    def waiting(cls, database_name, box_id):
        """Yield an Event set when a command is created for box_id, or None
        when the listener could not start"""
        key = (os.getpid(), database_name)
        event = threading.Event()
        with cls._lock:
            listener = cls._listeners.get(key)
            if listener is None:
                listener = cls._listeners[key] = cls(database_name)
                listener.thread.start()
            listener.waiters[box_id].add(event)
        try:
            if not listener.ready.wait(START_TIMEOUT):
                event = None
            yield event
        finally:
            with cls._lock:
                events = listener.waiters.get(box_id)
                if events is not None:
                    events.discard(event)
                    if not events:
                        del listener.waiters[box_id]

    def run(self):
        key = (os.getpid(), self.database_name)
        database = backend.Database(self.database_name).connect()
        connection = None
        selector = selectors.DefaultSelector()
        try:
            connection = database.get_connection(autocommit=True)
            cursor = connection.cursor()
            cursor.execute(f'LISTEN "{CHANNEL}"')
            self.ready.set()
            logger.info("listen for box commands on '%s'", self.database_name)
            selector.register(connection, selectors.EVENT_READ)
            idle = 0
            while not self.stopping.is_set():
                selector.select(timeout=SELECT_TIMEOUT)
                for notification in database.get_notifications(connection):
                    self.wake(notification.payload)
                with self._lock:
                    if self.stopping.is_set():
                        break
                    if self.waiters:
                        idle = 0
                    else:
                        idle += SELECT_TIMEOUT
                        if idle >= LINGER:
                            if self._listeners.get(key) is self:
                                del self._listeners[key]
                            break
        except Exception:
            logger.exception(
                "box command listener on '%s' crashed", self.database_name)
            with self._lock:
                if self._listeners.get(key) is self:
                    del self._listeners[key]
                # the waiters fall back to polling
                for events in self.waiters.values():
                    for event in events:
                        event.set()
            raise
        finally:
            selector.close()
            if connection is not None:
                database.put_connection(connection)

    @classmethod
    def stop(cls, database_name, timeout=None):
        """Stop the listener of the database in this process and wait for
        it to give its connection back, e.g. before dropping the database;
        a box still waiting falls back to polling"""
        with cls._lock:
            listener = cls._listeners.pop(
                (os.getpid(), database_name), None)
            if listener is not None:
                listener.stopping.set()
        if listener is not None:
            listener.thread.join(timeout)

    def wake(self, payload):
        try:
            box_id = int(payload)
        except ValueError:
            return
        with self._lock:
            events = list(self.waiters.get(box_id, ()))
        for event in events:
            event.set()


waiting = _Listener.waiting
stop = _Listener.stop
