# This file is part of fuelpay.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""The routes the payment channels call: their notifications

A channel proves itself by its signature, not by a session or a bearer
key: the route verifies it with the gateway's platform key before it
reads anything, and runs without access rights once it has. Each
provider answers in its channel's words (WeChat 204, Alipay "success",
Huifu "RECV_ORD_ID_<number>").

The payment page of the printed station and nozzle QR codes has its
routes at the end: the station's random pay token in the path is all that
opens it (paypage.py)."""
from trytond.protocols.wrappers import (
    HTTPStatus,
    Response,
    with_pool,
    with_transaction,
)
from trytond.transaction import Transaction, without_check_access
from trytond.wsgi import app

from .alipay_auth import receive_app_message, receive_authorization
from .gateway import TransientError
from .paypage import PayPage


@app.route(
    '/<database_name>/fuel_payment/notify/<int:gateway_id>',
    methods=['POST'])
@with_pool
@with_transaction()
def notify(request, pool, gateway_id):
    "A channel's notification of a payment of gateway_id"
    Gateway = pool.get('fuel.payment.gateway')
    Notification = pool.get('fuel.payment.gateway.notification')
    body = request.get_data(as_text=True)
    with without_check_access():
        gateways = Gateway.search([('id', '=', gateway_id)], limit=1)
        if not gateways:
            return Response(status=HTTPStatus.NOT_FOUND)
        gateway, = gateways
        try:
            outcome = Notification.receive(
                gateway, dict(request.headers), body)
        except TransientError:
            # the channel could not be asked what a late success is worth
            # now: nothing is kept, the channel notifies again
            Transaction().rollback()
            outcome = 'refused'
        status, text, content_type = gateway.get_provider().answer(
            outcome, body)
    return Response(text, status=status, content_type=content_type)


@app.route(
    '/<database_name>/fuel_payment/alipay/authorized', methods=['GET'])
@with_pool
@with_transaction(readonly=False)
def alipay_authorized(request, pool):
    """Alipay's redirect once the operator's account holder authorized the
    platform's application: ?app_id=..&app_auth_code=..&state=..; the
    state names the gateway (alipay_auth.py), the answer is a page"""
    return receive_authorization(request, pool)


@app.route(
    '/<database_name>/fuel_payment/alipay/app/<int:gateway_id>',
    methods=['POST'])
@with_pool
@with_transaction()
def alipay_app(request, pool, gateway_id):
    """The gateway (应用网关) of the Alipay application gateway_id holds (the
    platform account): Alipay's messages of the operators' authorizations
    and of their cancellation (alipay_auth.py); answered with the plain
    text success as Alipay expects"""
    return receive_app_message(request, pool, gateway_id)


# ---- the payment page of the printed QR codes (paypage.py) -------------

@app.route(
    '/<database_name>/fuel_payment/pay/<token>', methods=['GET'])
@with_pool
@with_transaction(readonly=True)
def pay_station(request, pool, token):
    "The page of a station's QR code: its nozzles with a fill to pay"
    return PayPage(request, pool, token).answer('get')


@app.route(
    '/<database_name>/fuel_payment/pay/<token>/<int:nozzle>',
    methods=['GET', 'POST'])
@with_pool
@with_transaction(readonly=False)
def pay_nozzle(request, pool, token, nozzle):
    """The page of a nozzle's QR code: GET shows its fill (and is where the
    wallets' authorizations come back), POST starts paying it"""
    page = PayPage(request, pool, token, nozzle)
    return page.answer('post' if request.method == 'POST' else 'get')


@app.route(
    '/<database_name>/fuel_payment/pay/<token>/<int:nozzle>/status',
    methods=['GET'])
@with_pool
@with_transaction(readonly=True)
def pay_nozzle_status(request, pool, token, nozzle):
    "JSON for the page to poll: its payment, or the nozzle's fills"
    return PayPage(request, pool, token, nozzle).answer('status')
