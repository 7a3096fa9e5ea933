# This file is part of fuelpay.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""An in-app payment over XML-RPC on a running server: the driver's mini
program (its back end calling as an integrator) pays the fill it chose;
the WeChat Pay simulator plays the channel and the WeChat client, and
notifies the server's notification route over HTTP

Lanshan's WeChat Pay method gets a gateway on the simulator for this
module only: the other system tests pay it with a terminal reference,
which a method with a gateway refuses."""
import datetime as dt
import uuid
from decimal import Decimal

import pytest
import requests
from test_payment_rpc import UNIT_PRICE, method_id
from test_rpc_isolation import call, station_id, xmlrpc_proxy

from addons.fuel_payment.tests.sim_wechat import WeChatSimulator

MINI_APP = 'wxminifuelpay001'
OPENID = 'oLanshanDriver0000000000001'
OPERATOR = "Lanshan Energy"


@pytest.fixture(scope='module')
def simulator():
    simulator = WeChatSimulator(apps=[MINI_APP])
    simulator.start()
    try:
        yield simulator
    finally:
        simulator.stop()


@pytest.fixture(scope='module')
def app_gateway(server, simulator):
    "Lanshan's WeChat Pay method on a gateway of the simulator"
    admin = xmlrpc_proxy(server, 'admin')
    company, = call(admin, 'company.company', 'search',
        [('party.name', '=', OPERATOR)], 0, None, None)
    wechat = method_id(server, OPERATOR, 'wechat')
    gateway, = call(admin, 'fuel.payment.gateway', 'create', [
            dict(simulator.gateway_values(), name="WeChat Pay (app)",
                company=company, client_apps=MINI_APP)])
    call(admin, 'fuel.payment.gateway', 'write', [gateway], {
            'notify_url': (
                f'{server.url}/{server.database}/fuel_payment/notify/'
                f'{gateway}')})
    call(admin, 'sale.point.payment.method', 'write', [wechat],
        {'gateway': gateway})
    try:
        yield gateway, wechat
    finally:
        call(admin, 'sale.point.payment.method', 'write', [wechat],
            {'gateway': None})
        call(admin, 'fuel.payment.gateway', 'write', [gateway],
            {'active': False})


def order_to_pay(server, quantity):
    "A fill of quantity at A01's nozzle 1 and its draft order"
    manager = xmlrpc_proxy(server, 'lanshan.a01.manager')
    attendant = xmlrpc_proxy(server, 'lanshan.a01.attendant')
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    amount = (Decimal(quantity) * UNIT_PRICE).quantize(Decimal('0.01'))
    result, = call(manager, 'fuel.payment.transaction', 'ingest', [{
                'uuid': str(uuid.uuid4()),
                'station': station_id(server, 'A01'), 'nozzle': 1,
                'end_date': now.isoformat(), 'quantity': quantity,
                'unit_price': str(UNIT_PRICE), 'amount': str(amount),
                }])
    assert result['status'] == 'created', result
    order = call(attendant, 'fuel.payment.order', 'create_for',
        [result['id']])
    return attendant, order, amount


def status(proxy, payment):
    return call(proxy, 'fuel.payment.gateway.payment', 'status', payment)


def test_mini_program_pays_the_fill(server, simulator, app_gateway):
    """create_app gives the signed wx.requestPayment parameters; the
    driver pays them in WeChat; the channel's notification to the
    server's route settles the order"""
    gateway, wechat = app_gateway
    attendant, order, amount = order_to_pay(server, '12.000')
    payment = call(attendant, 'fuel.payment.gateway.payment', 'create_app',
        order, wechat, 'mini_program', OPENID, MINI_APP)
    # without queue workers the submit runs when the request ends
    state = status(attendant, payment)
    assert state['state'] == 'pending', state
    params = state['client_params']
    assert params['appId'] == MINI_APP
    assert params['package'].startswith('prepay_id=')
    sim_order = simulator.orders[state['number']]
    assert sim_order.data['payer'] == {'openid': OPENID}
    assert sim_order.data['notify_url'].endswith(
        f'/fuel_payment/notify/{gateway}')
    assert sim_order.total == int(amount * 100)

    assert simulator.client_pays(params, openid=OPENID) == state['number']
    headers, body = simulator.notification(state['number'])
    answer = requests.post(
        sim_order.data['notify_url'], data=body.encode(),
        headers=dict(headers, **{'Content-Type': 'application/json'}),
        timeout=30)
    assert answer.status_code == 204, answer.text
    state = status(attendant, payment)
    assert state['state'] == 'succeeded', state
    assert state['order_state'] == 'paid'
    # the same notification again is answered and changes nothing
    answer = requests.post(
        sim_order.data['notify_url'], data=body.encode(),
        headers=dict(headers, **{'Content-Type': 'application/json'}),
        timeout=30)
    assert answer.status_code == 204, answer.text


def test_app_not_bound_refused(server, app_gateway):
    "An app the operator did not bind gets a clear error, nothing is made"
    _gateway, wechat = app_gateway
    attendant, order, amount = order_to_pay(server, '3.000')
    with pytest.raises(Exception) as info:
        call(attendant, 'fuel.payment.gateway.payment', 'create_app',
            order, wechat, 'mini_program', OPENID, 'wxnotbound000001')
    assert 'is not bound to the merchant account' in str(info.value)
    assert call(attendant, 'fuel.payment.gateway.payment', 'search', [
            ('order', '=', order)], 0, None, None) == []
    # the order can still be paid otherwise
    paid = call(attendant, 'fuel.payment.order', 'pay_rpc', order, [{
                'method': method_id(server, OPERATOR, 'cash'),
                'amount': str(amount), 'uuid': str(uuid.uuid4())}])
    assert paid['state'] == 'paid'
