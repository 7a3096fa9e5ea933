# This file is part of fuelpay.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""A TCP relay between the box and the server whose link can be cut

System tests use it for a network outage: the server keeps running (other
tests share it) while the box cannot reach it.  While the link is down,
open connections are closed and new ones are closed at once, which the box
sees as a server that cannot be reached."""
import contextlib
import selectors
import socket
import threading

# Bytes read at once from either side
CHUNK = 65536
# How often the relay thread looks at the stop flag
SELECT_TIMEOUT = 0.2


class LinkRelay:
    "Listen on 127.0.0.1 and relay every connection to target"

    def __init__(self, target_host, target_port):
        self.target = (target_host, target_port)
        self._listener = socket.create_server(('127.0.0.1', 0))
        self.port = self._listener.getsockname()[1]
        self._up = threading.Event()
        self._up.set()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._pairs = []
        self._thread = threading.Thread(
            target=self._accept, name='link-relay', daemon=True)
        self._thread.start()

    @property
    def url(self):
        return f'http://127.0.0.1:{self.port}'

    def cut(self):
        "Take the link down: close what is open, refuse what comes"
        self._up.clear()
        with self._lock:
            pairs, self._pairs = self._pairs, []
        for pair in pairs:
            for sock in pair:
                with contextlib.suppress(OSError):
                    sock.close()

    def restore(self):
        self._up.set()

    def close(self):
        self._stop.set()
        self.cut()
        self._listener.close()
        self._thread.join(timeout=5)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _accept(self):
        self._listener.settimeout(SELECT_TIMEOUT)
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            if not self._up.is_set():
                client.close()
                continue
            try:
                server = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._pairs.append((client, server))
            threading.Thread(
                target=self._relay, args=(client, server), daemon=True,
                name='link-relay-pair').start()

    def _relay(self, client, server):
        peers = {client: server, server: client}
        with selectors.DefaultSelector() as selector:
            for sock in peers:
                sock.setblocking(False)
                selector.register(sock, selectors.EVENT_READ)
            try:
                while not self._stop.is_set() and self._up.is_set():
                    for key, _ in selector.select(SELECT_TIMEOUT):
                        data = key.fileobj.recv(CHUNK)
                        if not data:
                            return
                        peers[key.fileobj].setblocking(True)
                        peers[key.fileobj].sendall(data)
                        peers[key.fileobj].setblocking(False)
            except OSError:
                return
            finally:
                for sock in peers:
                    with contextlib.suppress(OSError):
                        sock.close()
                with self._lock:
                    if (client, server) in self._pairs:
                        self._pairs.remove((client, server))
