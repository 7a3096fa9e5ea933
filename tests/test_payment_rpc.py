# This file is part of fuelpay.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""Fuel payments over XML-RPC and JSON-RPC on a running server

The demo gives Lanshan Energy's station A01 an open shift, nozzle 1 on
92# at 7.58 CNY a litre, a point of sale and a payment method of every
kind; Heping Fuel has station B01 and wallets of its own.  Fills are
ingested by the station manager's login (attendants may pay but not
create fuelling transactions); the attendant takes the payments."""
import base64
import datetime as dt
import threading
import uuid
import xmlrpc.client
from decimal import Decimal
from http import HTTPStatus

import pytest
from test_rpc_isolation import JsonRpc, call, station_id, xmlrpc_proxy

UNIT_PRICE = Decimal('7.5800')  # 92# at Lanshan in the demo
RACE_ROUNDS = 5
# seconds a racer waits for the other before giving up
BARRIER_TIMEOUT = 30


def fill(station, quantity, amount, nozzle=1):
    """Return an ingestion item for a completed fill; numbers travel as
    strings, XML-RPC has no decimal type to send"""
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    return {
        'uuid': str(uuid.uuid4()),
        'station': station,
        'nozzle': nozzle,
        'start_date': (now - dt.timedelta(minutes=2)).isoformat(),
        'end_date': now.isoformat(),
        'quantity': quantity,
        'unit_price': str(UNIT_PRICE),
        'amount': amount,
        }


def method_id(server, company, kind):
    admin = xmlrpc_proxy(server, 'admin')
    ids = call(admin, 'sale.point.payment.method', 'search', [
            ('company.party.name', '=', company),
            ('fuel_kind', '=', kind)], 0, None, None)
    assert len(ids) == 1
    return ids[0]


def session_proxy(server, login):
    """Return an XML-RPC proxy on a session of its own, opened with
    common.db.login, and the user id"""
    anonymous = xmlrpc.client.ServerProxy(
        server.rpc_url(), allow_none=True, use_datetime=True)
    user_id, session, *_ = getattr(anonymous, 'common.db.login')(
        login, {'password': server.password}, 'en')
    token = base64.b64encode(f'{login}:{user_id}:{session}'.encode())
    return xmlrpc.client.ServerProxy(
        server.rpc_url(), allow_none=True, use_datetime=True,
        headers=[('Authorization', 'Session ' + token.decode())])


def ingest(proxy, *items):
    return call(proxy, 'fuel.payment.transaction', 'ingest', list(items))


def paid_order(proxy, transaction_ids):
    order = call(proxy, 'fuel.payment.order', 'create_for', transaction_ids)
    assert isinstance(order, int)
    return order


def test_attendant_pays_cash_and_sees_change(server):
    a01 = station_id(server, 'A01')
    cash = method_id(server, "Lanshan Energy", 'cash')
    station = xmlrpc_proxy(server, 'lanshan.a01.manager')
    attendant = xmlrpc_proxy(server, 'lanshan.a01.attendant')

    item = fill(a01, '30.000', '227.40')
    result, = ingest(station, item)
    assert result['status'] == 'created', result
    assert result['state'] == 'to_pay'
    assert result['flags'] == []
    # XML-RPC carries it as <bigdecimal>, never as a float
    assert result['amount_due'] == Decimal('227.40')
    assert isinstance(result['amount_due'], Decimal)
    # the same fill sent again is answered, not created twice
    again, = ingest(station, item)
    assert again['status'] == 'duplicate'
    assert again['id'] == result['id']

    order = paid_order(attendant, [result['id']])
    paid = call(attendant, 'fuel.payment.order', 'pay_rpc', order, [{
                'method': cash, 'amount': '227.40', 'tendered': '300',
                'uuid': str(uuid.uuid4())}])
    assert paid['state'] == 'paid'
    assert paid['total'] == Decimal('227.40')
    assert paid['amount_to_pay'] == Decimal('0.00')
    assert paid['change'] == Decimal('72.60')
    assert isinstance(paid['change'], Decimal)

    record, = call(attendant, 'fuel.payment.order', 'read', [order],
        ['state', 'sale', 'employee.rec_name', 'station.code'])
    assert record['state'] == 'paid'
    assert record['sale']  # settled as a POS sale
    assert record['employee.']['rec_name'] == "Zhang Wei"
    assert record['station.']['code'] == 'A01'
    transaction, = call(attendant, 'fuel.payment.transaction', 'read',
        [result['id']], ['state', 'amount', 'quantity', 'shift'])
    assert transaction['state'] == 'paid'
    assert transaction['amount'] == Decimal('227.40')
    assert transaction['quantity'] == Decimal('30.000')
    assert transaction['shift']  # the open shift of A01


def test_attendant_cannot_pay_cash_short(server):
    a01 = station_id(server, 'A01')
    cash = method_id(server, "Lanshan Energy", 'cash')
    station = xmlrpc_proxy(server, 'lanshan.a01.manager')
    attendant = xmlrpc_proxy(server, 'lanshan.a01.attendant')
    result, = ingest(station, fill(a01, '10.000', '75.80'))
    order = paid_order(attendant, [result['id']])
    with pytest.raises(xmlrpc.client.Fault) as info:
        call(attendant, 'fuel.payment.order', 'pay_rpc', order, [{
                    'method': cash, 'amount': '75.80', 'tendered': '50'}])
    assert 'tendered' in info.value.faultString.lower()
    record, = call(attendant, 'fuel.payment.order', 'read', [order],
        ['state', 'payments'])
    assert record == {'id': order, 'state': 'draft', 'payments': []}


def void(proxy, transaction, reason):
    "Void the transaction with the void wizard over XML-RPC"
    name = 'wizard.fuel.payment.transaction.cancel'
    context = {
        'active_model': 'fuel.payment.transaction',
        'active_id': transaction, 'active_ids': [transaction]}
    session, _, _ = getattr(proxy, f'{name}.create')(context)
    try:
        getattr(proxy, f'{name}.execute')(
            session, {'start': {'reason': reason}}, 'void', context)
    finally:
        getattr(proxy, f'{name}.delete')(session, context)


def test_void_right_comes_with_the_role(server):
    "Station managers may void a fill, attendants may not"
    a01 = station_id(server, 'A01')
    manager = xmlrpc_proxy(server, 'lanshan.a01.manager')
    attendant = xmlrpc_proxy(server, 'lanshan.a01.attendant')
    result, = ingest(manager, fill(a01, '2.000', '15.16'))
    with pytest.raises(xmlrpc.client.Fault) as info:
        void(attendant, result['id'], "Test fill")
    assert 'not allowed to void' in info.value.faultString
    record, = call(manager, 'fuel.payment.transaction', 'read',
        [result['id']], ['state'])
    assert record['state'] == 'to_pay'
    void(manager, result['id'], "Test fill")
    record, = call(manager, 'fuel.payment.transaction', 'read',
        [result['id']], ['state', 'cancel_reason'])
    assert record['state'] == 'cancelled'
    assert record['cancel_reason'] == "Test fill"


def test_transactions_orders_and_wallets_isolated(server):
    a01 = station_id(server, 'A01')
    a02 = station_id(server, 'A02')
    b01 = station_id(server, 'B01')
    lanshan = xmlrpc_proxy(server, 'lanshan.a01.manager')
    result, = ingest(lanshan, fill(a01, '5.000', '37.90'))
    transaction = result['id']
    order = paid_order(lanshan, [transaction])

    # Heping's staff neither find nor read Lanshan's fills and orders
    for login in ['heping.admin', 'heping.b01.attendant']:
        heping = xmlrpc_proxy(server, login)
        ids = call(heping, 'fuel.payment.transaction', 'search', [],
            0, None, None)
        assert transaction not in ids
        stations = {r['station'] for r in call(
                heping, 'fuel.payment.transaction', 'read', ids,
                ['station'])}
        assert stations <= {b01}
        assert order not in call(heping, 'fuel.payment.order', 'search',
            [], 0, None, None)
        with pytest.raises(xmlrpc.client.Fault):
            call(heping, 'fuel.payment.transaction', 'read', [transaction],
                ['amount'])
        with pytest.raises(xmlrpc.client.Fault):
            call(heping, 'fuel.payment.order', 'read', [order], ['number'])

    # a fill for a station that is not the user's is refused, item by item
    heping = xmlrpc_proxy(server, 'heping.admin')
    foreign, own = ingest(heping,
        fill(a01, '5.000', '37.90'), fill(b01, '5.000', None))
    assert foreign['status'] == 'error'
    assert foreign['id'] is None
    assert 'is not yours' in foreign['message']
    assert own['status'] == 'created'
    # also another station of the manager's own operator
    other, = ingest(lanshan, fill(a02, '5.000', None))
    assert other['status'] == 'error'
    admin = xmlrpc_proxy(server, 'admin')
    assert call(admin, 'fuel.payment.transaction', 'search',
        [('uuid', '=', foreign['uuid'])], 0, None, None) == []

    # wallets and cards: each operator sees its own members only
    lanshan_admin = xmlrpc_proxy(server, 'lanshan.admin')
    lanshan_wallets = call(lanshan_admin, 'fuel.payment.wallet',
        'search_read', [], 0, None, None, ['number'])
    assert {'LS-0001', 'LS-0002', 'LS-CORP-01'} <= {
        w['number'] for w in lanshan_wallets}
    assert 'HP-0001' not in {w['number'] for w in lanshan_wallets}
    lanshan_card = call(lanshan_admin, 'fuel.payment.wallet.card',
        'search', [('number', '=', 'LS-C-0001')], 0, None, None)
    assert len(lanshan_card) == 1
    rpc = JsonRpc(server, 'heping.admin')
    heping_numbers = {w['number'] for w in rpc(
            'fuel.payment.wallet', 'search_read', [], 0, None, None,
            ['number'])}
    assert 'HP-0001' in heping_numbers
    assert not heping_numbers & {w['number'] for w in lanshan_wallets}
    assert rpc('fuel.payment.wallet.card', 'search',
        [('plate', '=', '浙A12345')], 0, None, None) == []
    with pytest.raises(RuntimeError):
        rpc('fuel.payment.wallet', 'read', [lanshan_wallets[0]['id']],
            ['balance'])
    with pytest.raises(RuntimeError):
        rpc('fuel.payment.wallet.card', 'read', lanshan_card, ['holder'])
    heping_attendant = xmlrpc_proxy(server, 'heping.b01.attendant')
    with pytest.raises(xmlrpc.client.Fault):
        call(heping_attendant, 'fuel.payment.wallet.card', 'read',
            lanshan_card, ['plate'])


def test_demo_members(server):
    "The demo wallets: recharged by WeChat, corporate sub-cards with limits"
    proxy = xmlrpc_proxy(server, 'lanshan.admin')
    wallet, = call(proxy, 'fuel.payment.wallet', 'search_read',
        [('number', '=', 'LS-0001')], 0, None, None,
        ['kind', 'party.rec_name', 'cards'])  # 8.0 nests 'party.'
    assert wallet['kind'] == 'personal'
    assert wallet['party.']['rec_name'] == "Liu Yang"
    card, = call(proxy, 'fuel.payment.wallet.card', 'read',
        wallet['cards'], ['has_pin', 'number'])
    assert card['has_pin'] is True
    recharge, = call(proxy, 'fuel.payment.wallet.move', 'search_read',
        [('wallet', '=', wallet['id']), ('kind', '=', 'recharge')],
        0, None, None, ['amount', 'reference'])
    assert recharge['amount'] == Decimal('500.00')
    assert recharge['reference'] == 'DEMO-WX-1'

    corporate, = call(proxy, 'fuel.payment.wallet', 'search_read',
        [('party.name', '=', "Lanshan Logistics")], 0, None, None,
        ['kind', 'credit_limit', 'cards'])
    assert corporate['kind'] == 'corporate'
    assert corporate['credit_limit'] == Decimal('2000.00')
    cards = call(proxy, 'fuel.payment.wallet.card', 'read',
        corporate['cards'], ['plate', 'day_limit'])
    assert sorted(c['plate'] for c in cards) == ['浙A12345', '浙A67890']
    assert {c['day_limit'] for c in cards} == {Decimal('800.00')}


def new_wallet(server, name, amount):
    """Create a personal wallet with a card for a new member through the
    operator administrator's RPC and recharge it by WeChat with the
    recharge wizard; return the wallet and card ids"""
    a01 = station_id(server, 'A01')
    wechat = method_id(server, "Lanshan Energy", 'wechat')
    proxy = xmlrpc_proxy(server, 'lanshan.admin')
    company, = call(proxy, 'company.company', 'search',
        [('party.name', '=', "Lanshan Energy")], 0, None, None)
    party, = call(proxy, 'party.party', 'create', [{'name': name}])
    wallet, = call(proxy, 'fuel.payment.wallet', 'create', [{
                'company': company, 'party': party, 'kind': 'personal'}])
    card, = call(proxy, 'fuel.payment.wallet.card', 'create', [{
                'wallet': wallet, 'holder': name}])

    # JSON-RPC carries decimals, the wizard's amount is one
    rpc = JsonRpc(server, 'lanshan.admin')
    context = {
        'active_model': 'fuel.payment.wallet', 'active_id': wallet,
        'active_ids': [wallet]}
    name_ = 'wizard.fuel.payment.wallet.recharge'
    session, _, _ = rpc.post(
        f'{name_}.create', context, authorization=rpc.authorization)
    rpc.post(f'{name_}.execute', session, {}, 'start', context,
        authorization=rpc.authorization)
    currency, = rpc('company.company', 'read', [company], ['currency'])
    rpc.post(f'{name_}.execute', session, {'start': {
                'wallet': wallet, 'company': company,
                'currency': currency['currency'], 'station': a01,
                'method': wechat, 'reference': f'WX-{uuid.uuid4().hex}',
                'amount': {'__class__': 'Decimal', 'decimal': amount},
                }}, 'recharge', context, authorization=rpc.authorization)
    rpc.post(f'{name_}.delete', session, context,
        authorization=rpc.authorization)
    balance, = call(proxy, 'fuel.payment.wallet', 'read', [wallet],
        ['balance'])
    assert balance['balance'] == Decimal(amount)
    return wallet, card


@pytest.mark.parametrize('round_', range(RACE_ROUNDS))
def test_concurrent_wallet_payments_never_overdraw(server, round_):
    """Two tills pay from one wallet at the same moment: each payment fits
    the balance, both together do not; exactly one goes through"""
    a01 = station_id(server, 'A01')
    method = method_id(server, "Lanshan Energy", 'wallet')
    wallet, card = new_wallet(server, f"Race Driver {round_}", '100.00')

    station = xmlrpc_proxy(server, 'lanshan.a01.manager')
    results = ingest(station,
        fill(a01, '10.000', '75.80'), fill(a01, '10.000', '75.80'))
    assert [r['status'] for r in results] == ['created', 'created']
    attendant = xmlrpc_proxy(server, 'lanshan.a01.attendant')
    orders = [paid_order(attendant, [r['id']]) for r in results]

    # two tills: two connections, each with a session of its own
    tills = [session_proxy(server, 'lanshan.a01.attendant')
        for _ in orders]
    barrier = threading.Barrier(len(tills), timeout=BARRIER_TIMEOUT)
    outcomes = [None] * len(tills)

    def pay(index):
        return call(
            tills[index], 'fuel.payment.order', 'pay_rpc', orders[index], [{
                    'method': method, 'amount': '75.80', 'card': card,
                    'uuid': str(uuid.uuid4())}])

    def race(index):
        try:
            barrier.wait()
            outcomes[index] = pay(index)
        except Exception as exception:  # reported by the asserts below
            outcomes[index] = exception

    threads = [threading.Thread(target=race, args=(i,))
        for i in range(len(tills))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(t.is_alive() for t in threads)

    for index, outcome in enumerate(outcomes):
        # the wallet is locked without waiting: when the other payment
        # holds it longer than trytond's retries last, the server answers
        # 503 and the till tries again, as sao does
        if (isinstance(outcome, xmlrpc.client.ProtocolError)
                and outcome.errcode == HTTPStatus.SERVICE_UNAVAILABLE):
            try:
                outcomes[index] = pay(index)
            except xmlrpc.client.Fault as fault:
                outcomes[index] = fault

    paid = [o for o in outcomes if isinstance(o, dict)]
    refused = [o for o in outcomes if isinstance(o, xmlrpc.client.Fault)]
    assert len(paid) == 1, outcomes
    assert len(refused) == 1, outcomes
    assert paid[0]['state'] == 'paid'
    assert 'available and cannot pay' in refused[0].faultString, (
        refused[0].faultString)

    admin = xmlrpc_proxy(server, 'lanshan.admin')
    balance, = call(admin, 'fuel.payment.wallet', 'read', [wallet],
        ['balance'])
    assert balance['balance'] == Decimal('24.20')
    moves = call(admin, 'fuel.payment.wallet.move', 'search_read',
        [('wallet', '=', wallet), ('kind', '=', 'payment')],
        0, None, None, ['amount'])
    assert [m['amount'] for m in moves] == [Decimal('-75.80')]
    states = call(admin, 'fuel.payment.order', 'read', orders,
        ['state', 'payments'])
    assert sorted(s['state'] for s in states) == ['draft', 'paid']
    refused_order, = [s for s in states if s['state'] == 'draft']
    assert refused_order['payments'] == []
