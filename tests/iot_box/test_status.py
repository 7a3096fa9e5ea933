# This file is part of fuelpay.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""The local status page: JSON and HTML of what the provider gives,
GET only, unknown paths 404, values escaped"""
from __future__ import annotations

import asyncio
import json
from decimal import Decimal
from typing import Any

from iot_box.config import ListenAddress
from iot_box.status import StatusServer, render_html

STATUS: dict[str, Any] = {
    'box': 'box-<st001>', 'station_code': 'ST001', 'link': 'online',
    'last_sync': '2026-12-05T10:00:00+00:00', 'last_error': None,
    'outbox': {'depth': 2, 'last_seq': 41},
    'dispensers': [{
            'name': 'pump-1', 'status': 'connected', 'fp_state': 'idle',
            'price_set_id': 7, 'nozzles': [{
                    'station_number': 1, 'nozzle': 1, 'out': False,
                    'unit_price': Decimal('7.890')}]}],
    'fallback': {
        'active': True, 'mode': 'attended_postpay', 'max_amount': '150.00',
        'max_volume': '100.000', 'totals': [{
                'station_number': 1, 'device': 'pump-1', 'count': 2,
                'volume': '3.000', 'amount': '23.67'}]},
    }


async def request(port: int, raw: bytes) -> tuple[str, str]:
    reader, writer = await asyncio.open_connection('127.0.0.1', port)
    try:
        writer.write(raw)
        data = await reader.read()
    finally:
        writer.close()
    head, _, body = data.decode().partition('\r\n\r\n')
    return head, body


def test_status_page() -> None:
    async def main() -> None:
        async with StatusServer(
                ListenAddress('127.0.0.1', 0), lambda: STATUS) as server:
            port = server.port
            head, body = await request(
                port, b'GET /status.json HTTP/1.1\r\nHost: x\r\n\r\n')
            assert head.startswith('HTTP/1.0 200 OK')
            assert 'application/json' in head
            data = json.loads(body)
            assert data['outbox'] == {'depth': 2, 'last_seq': 41}
            nozzle = data['dispensers'][0]['nozzles'][0]
            assert nozzle['unit_price'] == '7.890'  # exact, as a string
            head, body = await request(port, b'GET / HTTP/1.0\r\n\r\n')
            assert 'text/html' in head
            assert 'box-&lt;st001&gt;' in body and '<st001>' not in body
            assert 'ACTIVE' in body and '23.67' in body
            head, _ = await request(port, b'GET /x HTTP/1.0\r\n\r\n')
            assert head.startswith('HTTP/1.0 404')
            head, _ = await request(port, b'POST / HTTP/1.0\r\n\r\n')
            assert head.startswith('HTTP/1.0 405')
            head, _ = await request(port, b'nonsense\r\n\r\n')
            assert head.startswith('HTTP/1.0 400')
            head, body = await request(port, b'HEAD / HTTP/1.0\r\n\r\n')
            assert head.startswith('HTTP/1.0 200') and body == ''

    asyncio.run(asyncio.wait_for(main(), 10))


def test_render_empty() -> None:
    assert 'Link: <b>-</b>' in render_html({})
