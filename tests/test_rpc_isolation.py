# This file is part of fuelpay.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""Tenant isolation over XML-RPC and JSON-RPC on a running server

The demo has two operators: Lanshan Energy (stations A01, A02) and Heping
Fuel (station B01).  Their users must not see each other's stations, price
sets or shifts, and station staff only their stations."""
import base64
import json
import urllib.parse
import urllib.request
import xmlrpc.client
from decimal import Decimal

import pytest


def xmlrpc_proxy(server, login):
    parts = urllib.parse.urlsplit(server.rpc_url())
    netloc = '%s:%s@%s' % (
        urllib.parse.quote(login), urllib.parse.quote(server.password),
        parts.netloc)
    url = urllib.parse.urlunsplit(parts._replace(netloc=netloc))
    return xmlrpc.client.ServerProxy(url, allow_none=True, use_datetime=True)


def call(proxy, model, method, *args):
    return getattr(proxy, f'model.{model}.{method}')(*args, {})


def codes(proxy, model='fuel.station', field='code'):
    ids = call(proxy, model, 'search', [], 0, None, None)
    return sorted(r[field] for r in call(proxy, model, 'read', ids, [field]))


def station_id(server, code):
    admin = xmlrpc_proxy(server, 'admin')
    ids = call(admin, 'fuel.station', 'search', [('code', '=', code)],
        0, None, None)
    assert len(ids) == 1
    return ids[0]


class JsonRpc:
    "A JSON-RPC client logged in with common.db.login"

    def __init__(self, server, login):
        self.url = server.rpc_url()
        self.id = 0
        user_id, session, *_ = self.post(
            'common.db.login', login, {'password': server.password}, 'en')
        token = f'{login}:{user_id}:{session}'.encode()
        self.authorization = 'Session ' + base64.b64encode(token).decode()

    def post(self, method, *params, authorization=None):
        self.id += 1
        request = urllib.request.Request(
            self.url, method='POST',
            data=json.dumps({
                    'id': self.id, 'method': method,
                    'params': list(params)}).encode(),
            headers={'Content-Type': 'application/json'})
        if authorization:
            request.add_header('Authorization', authorization)
        with urllib.request.urlopen(request, timeout=30) as response:
            answer = json.load(response)
        if answer.get('error'):
            raise RuntimeError(answer['error'])
        return answer['result']

    def __call__(self, model, method, *params):
        return self.post(
            f'model.{model}.{method}', *params, {},
            authorization=self.authorization)


def test_platform_administrator_sees_every_operator(server):
    admin = xmlrpc_proxy(server, 'admin')
    assert codes(admin) == ['A01', 'A02', 'B01']
    assert codes(admin, 'company.company', 'rec_name') == [
        'Heping Fuel', 'Lanshan Energy']


@pytest.mark.parametrize('login, stations', [
        ('lanshan.admin', ['A01', 'A02']),
        ('lanshan.accountant', ['A01', 'A02']),
        ('lanshan.a01.manager', ['A01']),
        ('lanshan.a01.attendant', ['A01']),
        ('heping.admin', ['B01']),
        ('heping.b01.attendant', ['B01']),
        ])
def test_xmlrpc_users_see_their_stations(server, login, stations):
    proxy = xmlrpc_proxy(server, login)
    assert codes(proxy) == stations
    station_codes = {
        r['rec_name'].split(' ')[0]
        for r in call(proxy, 'fuel.station.nozzle', 'search_read',
            [], 0, None, None, ['rec_name'])}
    assert station_codes == set(stations)


def test_xmlrpc_operator_cannot_read_or_write_other_operator(server):
    b01 = station_id(server, 'B01')
    proxy = xmlrpc_proxy(server, 'lanshan.admin')
    with pytest.raises(xmlrpc.client.Fault):
        call(proxy, 'fuel.station', 'read', [b01], ['name'])
    with pytest.raises(xmlrpc.client.Fault):
        call(proxy, 'fuel.station', 'write', [b01], {'name': "Taken over"})
    with pytest.raises(xmlrpc.client.Fault):
        call(proxy, 'fuel.station', 'delete', [b01])

    admin = xmlrpc_proxy(server, 'admin')
    name, = call(admin, 'fuel.station', 'read', [b01], ['name'])
    assert name['name'] == "Harbour Road Station"


def test_xmlrpc_price_sets_and_shifts_isolated(server):
    lanshan = xmlrpc_proxy(server, 'lanshan.admin')
    heping = xmlrpc_proxy(server, 'heping.admin')
    assert codes(lanshan, 'fuel.station.price', 'name') == [
        "A02 local prices", "Opening prices"]
    assert codes(heping, 'fuel.station.price', 'name') == ["Opening prices"]
    lanshan_shifts = {
        s['rec_name'][:3] for s in call(lanshan, 'fuel.station.shift',
            'search_read', [], 0, None, None, ['rec_name'])}
    assert lanshan_shifts == {'A01'}

    heping_price, = call(heping, 'fuel.station.price', 'search', [],
        0, None, None)
    with pytest.raises(xmlrpc.client.Fault):
        call(lanshan, 'fuel.station.price', 'read', [heping_price], ['name'])
    with pytest.raises(xmlrpc.client.Fault):
        call(lanshan, 'fuel.station.price', 'write', [heping_price],
            {'name': "Hijacked"})
    with pytest.raises(xmlrpc.client.Fault):
        call(lanshan, 'fuel.station.price', 'approve', [heping_price])
    heping_shift, = call(heping, 'fuel.station.shift', 'search', [],
        0, None, None)
    with pytest.raises(xmlrpc.client.Fault):
        call(lanshan, 'fuel.station.shift', 'read', [heping_shift],
            ['number'])
    with pytest.raises(xmlrpc.client.Fault):
        call(lanshan, 'fuel.station.shift', 'write', [heping_shift],
            {'notes': "x"})


def test_xmlrpc_attendant_limited_to_own_station(server):
    a02 = station_id(server, 'A02')
    attendant = xmlrpc_proxy(server, 'lanshan.a01.attendant')
    with pytest.raises(xmlrpc.client.Fault):
        call(attendant, 'fuel.station', 'read', [a02], ['name'])
    # the station-scoped price of A02 is not the attendant's business
    assert codes(attendant, 'fuel.station.price', 'name') == [
        "Opening prices"]


def test_xmlrpc_price_in_force(server):
    a02 = station_id(server, 'A02')
    b01 = station_id(server, 'B01')
    proxy = xmlrpc_proxy(server, 'lanshan.admin')
    h2, = call(proxy, 'product.product', 'search',
        [('code', '=', 'FUEL-H2')], 0, None, None)
    result = call(proxy, 'fuel.station.price', 'price_in_force',
        a02, h2, None)
    # XML-RPC carries it as <bigdecimal>, never as a float
    assert result['unit_price'] == Decimal('33.8000')
    assert isinstance(result['unit_price'], Decimal)
    with pytest.raises(xmlrpc.client.Fault) as info:
        call(proxy, 'fuel.station.price', 'price_in_force', b01, h2, None)
    assert 'does not exist or you may not see it' in info.value.faultString


def test_jsonrpc_isolation(server):
    b01 = station_id(server, 'B01')
    rpc = JsonRpc(server, 'lanshan.admin')
    ids = rpc('fuel.station', 'search', [], 0, None, None)
    names = sorted(
        r['code'] for r in rpc('fuel.station', 'read', ids, ['code']))
    assert names == ['A01', 'A02']
    with pytest.raises(RuntimeError):
        rpc('fuel.station', 'read', [b01], ['name'])
    with pytest.raises(RuntimeError):
        rpc('fuel.station', 'write', [b01], {'phone': '110'})

    heping = JsonRpc(server, 'heping.admin')
    assert heping('fuel.station', 'search', [], 0, None, None) == [b01]


def test_rpc_refuses_wrong_password(server):
    proxy = xmlrpc.client.ServerProxy(
        server.rpc_url().replace('://', '://lanshan.admin:wrong@'),
        allow_none=True)
    with pytest.raises(xmlrpc.client.ProtocolError) as info:
        call(proxy, 'fuel.station', 'search', [], 0, None, None)
    assert info.value.errcode == 401
