# This file is part of fuelpay.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""The box's local status page: HTTP on a loopback address

``GET /`` is a small HTML page that refreshes itself; ``GET
/status.json`` the same facts as JSON (see `App.status`): box and
station, link state, last sync, outbox depth and last seq, each
dispenser and nozzle, fallback state and totals, the payment posts'
readers (counts and dates, never a code).  Nothing secret is in it.
The configuration refuses a listen address that is not loopback
(config.py); the server here is the asyncio one, one short request per
connection (HTTP/1.0 style), GET and HEAD only.
"""
from __future__ import annotations

import asyncio
import html
import json
import logging
from collections.abc import Callable, Mapping
from decimal import Decimal
from http import HTTPStatus
from types import TracebackType
from typing import Any

from iot_box.config import ListenAddress

__all__ = ['StatusServer', 'render_html']

logger = logging.getLogger(__name__)

# A browser's request line and headers fit in a few KiB; more is not a
# status page visitor
MAX_REQUEST_BYTES = 16 * 1024
# A client that sends no full request within this long is dropped
REQUEST_TIMEOUT = 5.0
# The page refreshes itself this often: a glance at a sale in progress
REFRESH_SECONDS = 2

StatusProvider = Callable[[], Mapping[str, Any]]


def _json_default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)  # exact digits, as the server's strings
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _cell(value: Any) -> str:
    if value is None:
        return '-'
    if isinstance(value, Mapping):
        return ', '.join(f'{k}: {_cell(v)}' for k, v in value.items())
    return html.escape(str(value))


def render_html(status: Mapping[str, Any]) -> str:
    "The status as a small self-refreshing HTML page"
    rows = []
    for dispenser in status.get('dispensers', []):
        for nozzle in dispenser.get('nozzles', []):
            rows.append(
                '<tr>' + ''.join(f'<td>{_cell(v)}</td>' for v in (
                    dispenser['name'], dispenser['status'],
                    dispenser['fp_state'], nozzle['station_number'],
                    nozzle['nozzle'], 'out' if nozzle['out'] else 'in',
                    nozzle['unit_price'], dispenser['price_set_id']))
                + '</tr>')
    totals = ''.join(
        '<tr>' + ''.join(f'<td>{_cell(t[k])}</td>' for k in (
            'station_number', 'device', 'count', 'volume', 'amount')) + '</tr>'
        for t in status.get('fallback', {}).get('totals', []))
    posts = ''.join(
        '<tr>' + ''.join(f'<td>{_cell(p[k])}</td>' for k in (
            'name', 'source', 'port', 'state', 'codes', 'dropped',
            'last_code', 'last_error')) + '</tr>'
        for p in status.get('payment_posts', []))
    if posts:
        posts = (
            '<h2>Payment posts</h2><table border="1"><tr><th>post</th>'
            '<th>reader</th><th>port</th><th>state</th><th>codes</th>'
            '<th>dropped</th><th>last code</th><th>last error</th></tr>'
            f'{posts}</table>')
    outbox = status.get('outbox', {})
    fallback = status.get('fallback', {})
    return f"""<!DOCTYPE html>
<html><head><meta charset="utf-8">
<meta http-equiv="refresh" content="{REFRESH_SECONDS}">
<title>fuelpay box {_cell(status.get('box'))}</title>
<style>body{{font-family:sans-serif}}td,th{{padding:2px 8px}}</style>
</head><body>
<h1>Box {_cell(status.get('box'))}
(station {_cell(status.get('station_code'))})</h1>
<p>Link: <b>{_cell(status.get('link'))}</b>;
last sync {_cell(status.get('last_sync'))};
last error {_cell(status.get('last_error'))}</p>
<p>Outbox: {_cell(outbox.get('depth'))} event(s) waiting,
last seq {_cell(outbox.get('last_seq'))}</p>
<table border="1"><tr><th>dispenser</th><th>link</th><th>state</th>
<th>nozzle</th><th>DART nozzle</th><th>holster</th><th>unit price</th>
<th>price set</th></tr>{''.join(rows)}</table>
<h2>Fallback: {'ACTIVE' if fallback.get('active') else 'off'}
({_cell(fallback.get('mode'))}, max {_cell(fallback.get('max_amount'))} /
{_cell(fallback.get('max_volume'))})</h2>
<table border="1"><tr><th>nozzle</th><th>dispenser</th><th>sales</th>
<th>volume</th><th>amount</th></tr>{totals}</table>
{posts}
</body></html>
"""


class StatusServer:
    "`async with StatusServer(listen, app.status):` serves the page"

    def __init__(
            self, listen: ListenAddress, provider: StatusProvider) -> None:
        self.listen = listen
        self.provider = provider
        self._server: asyncio.Server | None = None

    @property
    def port(self) -> int:
        "The bound port (the configured one, or the one picked for 0)"
        assert self._server is not None
        return self._server.sockets[0].getsockname()[1]

    async def start(self) -> None:
        self._server = await asyncio.start_server(
            self._serve, self.listen.host, self.listen.port)
        logger.info(
            "status page on http://%s:%s/", self.listen.host, self.port)

    async def close(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
            await server.wait_closed()

    async def __aenter__(self) -> StatusServer:
        await self.start()
        return self

    async def __aexit__(
            self, exc_type: type[BaseException] | None,
            exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.close()

    def _answer(self, method: str, target: str) -> tuple[
            HTTPStatus, str, bytes]:
        if method not in {'GET', 'HEAD'}:
            return (HTTPStatus.METHOD_NOT_ALLOWED, 'text/plain',
                b'GET only\n')
        path = target.split('?', 1)[0]
        if path == '/status.json':
            body = json.dumps(
                self.provider(), default=_json_default, indent=1,
                sort_keys=True)
            return HTTPStatus.OK, 'application/json', body.encode()
        if path == '/':
            return (HTTPStatus.OK, 'text/html; charset=utf-8',
                render_html(self.provider()).encode())
        return HTTPStatus.NOT_FOUND, 'text/plain', b'not found\n'

    async def _serve(
            self, reader: asyncio.StreamReader,
            writer: asyncio.StreamWriter) -> None:
        try:
            try:
                async with asyncio.timeout(REQUEST_TIMEOUT):
                    head = await reader.readuntil(b'\r\n\r\n')
            except (asyncio.IncompleteReadError, asyncio.LimitOverrunError,
                    TimeoutError, ConnectionError):
                return
            if len(head) > MAX_REQUEST_BYTES:
                return
            parts = head.split(b'\r\n', 1)[0].decode(
                'latin-1').split(' ')
            if len(parts) != 3:
                status, kind, body = (
                    HTTPStatus.BAD_REQUEST, 'text/plain', b'bad request\n')
            else:
                status, kind, body = self._answer(parts[0], parts[1])
            writer.write(
                f'HTTP/1.0 {status.value} {status.phrase}\r\n'
                f'Content-Type: {kind}\r\n'
                f'Content-Length: {len(body)}\r\n'
                'Cache-Control: no-store\r\n'
                'Connection: close\r\n\r\n'.encode('latin-1'))
            if parts[0] != 'HEAD':
                writer.write(body)
            await writer.drain()
        except ConnectionError as error:
            logger.debug("status page: %s", error)
        finally:
            writer.close()
