# This file is part of fuelpay.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""Payments through a gateway: the customer's payment code scanned by the
attendant (付款码), a QR the customer scans or a payment in the driver's
wallet app (official account page, mini program, mobile app), bound to a
fuel order,
polled while the customer confirms, reversed at the deadline, settled by
the first valid notification or query, refunded in whole or part"""
import datetime as dt
import ipaddress
import json
import logging
from decimal import Decimal

from trytond import config
from trytond.bus import Bus
from trytond.i18n import gettext
from trytond.model import Index, ModelSQL, ModelView, Unique, Workflow, fields
from trytond.modules.currency.fields import Monetary
from trytond.pool import Pool
from trytond.pyson import Eval
from trytond.rpc import RPC
from trytond.transaction import Transaction, without_check_access

from . import aggregator, alipay, wechat  # noqa: F401 (providers)
from .exceptions import GatewayError, LoginError
from .gateway import (
    APP_CLIENTS,
    ForgedNotification,
    PermanentError,
    TransientError,
    code_channel,
    mask_code,
)

logger = logging.getLogger(__name__)

# a transient failure is tried again after this many seconds, doubling
RETRY_DELAY = 5
MAX_ATTEMPTS = 8


def _now():
    return dt.datetime.now()


class GatewayPayment(Workflow, ModelSQL, ModelView):
    "Fuel Gateway Payment"
    __name__ = 'fuel.payment.gateway.payment'
    _rec_name = 'number'

    number = fields.Char(
        "Number", required=True, readonly=True,
        help="Our order number at the channel (out_trade_no): the "
        "idempotency key of every call about this payment.")
    company = fields.Many2One(
        'company.company', "Operator", required=True, readonly=True)
    order = fields.Many2One(
        'fuel.payment.order', "Order", readonly=True, ondelete='RESTRICT',
        help="The order the payment settles; a pre-payment gets the order "
        "of its fuelling once it is captured.")
    prepay = fields.Many2One(
        'fuel.payment.prepay', "Pre-payment", readonly=True,
        ondelete='RESTRICT')
    station = fields.Many2One(
        'fuel.station', "Station", required=True, readonly=True,
        ondelete='RESTRICT')
    method = fields.Many2One(
        'sale.point.payment.method', "Method", required=True,
        readonly=True, ondelete='RESTRICT')
    gateway = fields.Many2One(
        'fuel.payment.gateway', "Gateway", required=True, readonly=True,
        ondelete='RESTRICT')
    kind = fields.Selection([
            ('code', "Payment Code"),
            ('qr', "QR Code"),
            ('app', "In-App"),
            ], "Kind", required=True, readonly=True)
    source = fields.Selection([
            ('attendant', "Attendant"),
            ('face', "Face Device"),
            ('customer', "Customer"),
            ('post', "Payment Post"),
            ], "Source", required=True, readonly=True)
    code = fields.Char(
        "Payment Code", readonly=True,
        help="The prefix of the customer's code; the rest is not kept.")
    code_url = fields.Char("QR Content", readonly=True)
    client = fields.Selection(
        [(None, "")] + APP_CLIENTS, "Client", readonly=True,
        states={
            'invisible': Eval('kind') != 'app',
            },
        help="Where the driver pays an in-app payment.")
    client_app = fields.Char(
        "Client App ID", readonly=True,
        states={
            'invisible': Eval('kind') != 'app',
            },
        help="The application (appid) the driver pays from.")
    payer = fields.Char(
        "Payer", readonly=True,
        states={
            'invisible': Eval('kind') != 'app',
            },
        help="The driver's identifier in the client application (WeChat "
        "openid, Alipay user id).")
    client_ip = fields.Char(
        "Client IP Address", readonly=True,
        states={
            'invisible': ~Eval('client_ip'),
            },
        help="The public address of the driver's phone that opened the "
        "payment page (H5, UnionPay JS).")
    client_params = fields.Text(
        "Client Parameters", readonly=True,
        states={
            'invisible': Eval('kind') != 'app',
            },
        help="What the client application hands to the wallet to pay "
        "(JSON); signed, not secret.")
    amount = Monetary(
        "Amount", currency='currency', digits='currency', required=True,
        readonly=True)
    amount_refunded = fields.Function(Monetary(
            "Refunded", currency='currency', digits='currency'),
        'get_amount_refunded')
    currency = fields.Function(
        fields.Many2One('currency.currency', "Currency"),
        'on_change_with_currency')
    reference = fields.Char(
        "Reference", readonly=True,
        help="The channel's transaction number.")
    deadline = fields.DateTime("Deadline", readonly=True)
    next_check = fields.DateTime("Next Check", readonly=True)
    attempts = fields.Integer("Attempts", readonly=True)
    paid_date = fields.DateTime("Paid on", readonly=True)
    error = fields.Text("Error", readonly=True)
    order_payment = fields.Many2One(
        'fuel.payment.order.payment', "Order Payment", readonly=True,
        ondelete='RESTRICT')
    refunds = fields.One2Many(
        'fuel.payment.gateway.refund', 'payment', "Refunds", readonly=True)
    state = fields.Selection([
            ('draft', "Draft"),
            ('pending', "Being Paid"),
            ('succeeded', "Succeeded"),
            ('failed', "Failed"),
            ('cancelled', "Cancelled"),
            ], "State", required=True, readonly=True, sort=False)

    @classmethod
    def __setup__(cls):
        super().__setup__()
        cls.__access__.add('station')
        t = cls.__table__()
        cls._sql_constraints = [
            ('number_unique', Unique(t, t.gateway, t.number),
                'fuel_payment.msg_gateway_payment_number_unique'),
            ]
        cls._sql_indexes.add(
            Index(t, (t.state, Index.Equality(cardinality='low')),
                where=t.state.in_(['draft', 'pending'])))
        cls._order = [('create_date', 'DESC'), ('id', 'DESC')]
        cls._transitions |= {
            ('draft', 'pending'),
            ('draft', 'succeeded'),
            ('draft', 'failed'),
            ('draft', 'cancelled'),
            ('pending', 'succeeded'),
            ('pending', 'failed'),
            ('pending', 'cancelled'),
            # the channel took the money after all (late_success)
            ('failed', 'succeeded'),
            ('cancelled', 'succeeded'),
            }
        cls._buttons.update({
                'check': {
                    'invisible': ~Eval('state').in_(['draft', 'pending']),
                    'depends': ['state'],
                    },
                })
        cls.__rpc__.update({
                'pay_code': RPC(readonly=False, result=int),
                'create_qr': RPC(readonly=False, result=int),
                'create_app': RPC(readonly=False, result=int),
                'identify': RPC(),
                'status': RPC(instantiate=0),
                })

    @classmethod
    def default_state(cls):
        return 'draft'

    @classmethod
    def default_attempts(cls):
        return 0

    @classmethod
    def default_source(cls):
        return 'attendant'

    @fields.depends('company')
    def on_change_with_currency(self, name=None):
        return self.company.currency if self.company else None

    @classmethod
    def get_amount_refunded(cls, payments, name):
        return {
            p.id: sum(
                (r.amount for r in p.refunds
                    if r.state in {'draft', 'pending', 'succeeded'}),
                Decimal(0))
            for p in payments}

    # ---- starting a payment ------------------------------------------

    @classmethod
    def _new_prepay(
            cls, prepay, method, kind, source, code=None, **values):
        """Return a new payment of the pre-payment's amount; values: the
        in-app fields (check_app)"""
        timeout = method.gateway.code_timeout if kind == 'code' else (
            method.gateway.qr_timeout)
        payment = cls(
            company=prepay.company, prepay=prepay, station=prepay.station,
            method=method, gateway=method.gateway, kind=kind, source=source,
            code=mask_code(code) if code else None, amount=prepay.amount,
            deadline=_now() + dt.timedelta(seconds=timeout),
            next_check=_now(), **values)
        payment.number = f'new-prepay-{prepay.id}-{_now().timestamp()}'
        with without_check_access():
            payment.save()
            payment.number = f'{prepay.station.code}V{payment.id}'.replace(
                '-', '')
            payment.save()
        return payment

    @classmethod
    def check_amount(cls, order, amount):
        """Return amount (the rest to pay when None) rounded; raise a
        translated error unless order is a draft with that much left to
        pay besides its payments in progress"""
        if order.state != 'draft':
            raise GatewayError(gettext(
                    'fuel_payment.msg_order_not_draft',
                    order=order.rec_name))
        pending = sum(
            (p.amount for p in cls.search([
                        ('order', '=', order.id),
                        ('state', 'in', ['draft', 'pending']),
                        ])),
            Decimal(0))
        if amount is None:
            amount = order.amount_to_pay - pending
        amount = order.currency.round(Decimal(amount))
        if amount <= 0 or amount > order.amount_to_pay - pending:
            raise GatewayError(gettext(
                    'fuel_payment.msg_gateway_amount',
                    order=order.rec_name,
                    amount=order.amount_to_pay - pending))
        return amount

    @classmethod
    def _new(cls, order, method, amount, kind, source, code=None,
            **values):
        pool = Pool()
        Order = pool.get('fuel.payment.order')
        Order.lock([order])
        order = Order(order.id)
        amount = cls.check_amount(order, amount)
        gateway = method.gateway
        timeout = gateway.code_timeout if kind == 'code' else (
            gateway.qr_timeout)
        payment = cls(
            company=order.company, order=order, station=order.station,
            method=method, gateway=gateway, kind=kind, source=source,
            code=mask_code(code) if code else None, amount=amount,
            deadline=_now() + dt.timedelta(seconds=timeout),
            next_check=_now(), **values)
        # a unique placeholder until the id is known
        payment.number = f'new-{order.id}-{_now().timestamp()}'
        # the user may pay the order (read above, under its rules); the
        # payment is the platform's record of the channel's answers
        with without_check_access():
            payment.save()
            payment.number = f'{order.number}P{payment.id}'.replace('-', '')
            payment.save()
        return payment

    @classmethod
    def method_for_code(cls, company, code, source='attendant'):
        "Return the payment method that takes code (付款码) by its prefix"
        pool = Pool()
        Method = pool.get('sale.point.payment.method')
        channel = code_channel(code)
        if channel is None:
            raise GatewayError(gettext(
                    'fuel_payment.msg_gateway_code_unknown',
                    code=mask_code(code)))
        with without_check_access():
            method = Method.for_channel(
                company, channel, face=source == 'face')
        if method is None:
            raise GatewayError(gettext(
                    'fuel_payment.msg_gateway_no_method', channel=channel))
        return method

    @classmethod
    def pay_code(cls, order, code, amount=None, source='attendant'):
        """Charge the customer's payment code (付款码) for order: the
        channel is chosen by the code's prefix, the call runs in the queue;
        return the payment id (follow it with `status`)"""
        pool = Pool()
        Order = pool.get('fuel.payment.order')
        order = Order(int(order))
        code = (code or '').strip()
        method = cls.method_for_code(order.company, code, source)
        payment = cls._new(order, method, amount, 'code', source, code=code)
        # the code is single use and short lived: the payment keeps its
        # prefix only, the whole code travels in the queue task's arguments
        cls.__queue__.submit([payment], code)
        return payment.id

    @classmethod
    def create_qr(cls, order, method, amount=None):
        """Create a QR of method's channel for order, shown on the payment
        post or the nozzle; return the payment id (its code_url comes with
        `status` once the channel answered)"""
        pool = Pool()
        Order = pool.get('fuel.payment.order')
        order = Order(int(order))
        method = cls.check_method(order.company, method)
        payment = cls._new(order, method, amount, 'qr', 'customer')
        cls.__queue__.submit([payment])
        return payment.id

    @classmethod
    def check_method(cls, company, method, error=GatewayError):
        "Return the method (id) of company that takes payments by gateway"
        pool = Pool()
        Method = pool.get('sale.point.payment.method')
        method = Method(int(method))
        if (method.company != company or not method.gateway
                or not method.gateway.active):
            raise error(gettext(
                    'fuel_payment.msg_order_method_invalid',
                    method=method.rec_name))
        return method

    @classmethod
    def check_app(cls, method, client, payer=None, app=None,
            client_ip=None, code=None):
        """Return the in-app fields of a payment by method's gateway from
        client (APP_CLIENTS) of app for payer (or the user of the login
        code the wallet gave the client, login.GatewayApp.identify) from
        client_ip; raise a translated error if the channel does not pay
        from client, the payer or the phone's address is missing, both
        payer and code are given or the merchant has not bound app"""
        gateway = method.gateway
        with without_check_access():
            provider = gateway.get_provider()
        if client not in dict(APP_CLIENTS) or (
                not provider.supports_app(method, client)):
            raise GatewayError(gettext(
                    'fuel_payment.msg_gateway_app_client',
                    client=client or '', gateway=gateway.rec_name))
        payer = (payer or '').strip() or None
        code = (code or '').strip() or None
        if payer and code:
            raise LoginError(gettext(
                    'fuel_payment.msg_login_payer_and_code', client=client))
        if code and client not in provider.payer_clients:
            raise LoginError(gettext(
                    'fuel_payment.msg_login_code_client', client=client))
        if client in provider.payer_clients and not (payer or code):
            raise GatewayError(gettext(
                    'fuel_payment.msg_gateway_app_payer', client=client))
        client_ip = (client_ip or '').strip() or None
        # ip_clients names clients, or (wallet, client) pairs where only
        # one of the channel's wallets needs the address
        if (client in provider.ip_clients
                or (method.fuel_kind, client) in provider.ip_clients):
            try:
                ipaddress.ip_address(client_ip or '')
            except ValueError:
                raise GatewayError(gettext(
                        'fuel_payment.msg_gateway_app_client_ip',
                        client=client, address=client_ip or '')) from None
        client_app = gateway.check_client_app(app)
        if code:
            # single use: resolved once, here; nothing of the login (WeChat's
            # session_key, the access tokens) is kept
            payer = Pool().get('fuel.payment.gateway.app').identify(
                method, client, client_app, code)
        return {
            'client': client,
            'client_app': client_app,
            'payer': payer,
            'client_ip': client_ip,
            }

    @classmethod
    def create_app(cls, order, method, client, payer=None, app=None,
            amount=None, client_ip=None, code=None):
        """Create an in-app payment of method's channel for order, made
        from client (jsapi: an official account page, mini_program, app: a
        mobile app, h5: a page in the phone's browser at client_ip) of the
        application app (the gateway's App ID when empty) by payer (the
        driver's openid or user id in that app, where the client needs
        it) or by the user of code (the login code the wallet gave the
        client: wx.login, WeChat's web page authorization, my.getAuthCode;
        exactly one of payer and code); return the payment id: its `status`
        gives the client_params the app hands to the wallet once the
        channel answered"""
        pool = Pool()
        Order = pool.get('fuel.payment.order')
        order = Order(int(order))
        method = cls.check_method(order.company, method)
        # checked again under the order's lock by _new; first here, so that
        # a payment refused for its amount does not use up a login code
        cls.check_amount(order, amount)
        values = cls.check_app(
            method, client, payer=payer, app=app, client_ip=client_ip,
            code=code)
        payment = cls._new(
            order, method, amount, 'app', 'customer', **values)
        cls.__queue__.submit([payment])
        return payment.id

    @classmethod
    def identify(cls, method, client, code, app=None, client_ip=None):
        """Return the payer (WeChat openid, Alipay user id or open id,
        UnionPay user id) of the login code the wallet gave client
        (mini_program, jsapi) in app (the gateway's App ID when empty), for
        a client application that remembers it; client_ip where the
        payment would need it (UnionPay JS); the code is used up"""
        pool = Pool()
        Method = pool.get('sale.point.payment.method')
        method = Method(int(method))
        method = cls.check_method(method.company, method)
        payer = cls.check_app(
            method, client, app=app, code=code, client_ip=client_ip)['payer']
        if not payer:
            raise LoginError(gettext(
                    'fuel_payment.msg_login_code_client', client=client))
        return payer

    @property
    def label(self):
        "What the customer's app shows for the payment"
        what = self.order.number if self.order else (
            self.prepay.rec_name if self.prepay else self.number)
        return f'{self.station.name} {what}'

    def status(self):
        "What the attendant's screen shows of the payment"
        return {
            'id': self.id,
            'number': self.number,
            'state': self.state,
            'amount': self.amount,
            'code_url': self.code_url,
            'client_params': (
                json.loads(self.client_params) if self.client_params
                else None),
            'error': self.error,
            'order_state': self.order.state if self.order else None,
            'prepay_state': self.prepay.state if self.prepay else None,
            }

    # ---- talking to the channel (queue) ------------------------------

    @classmethod
    def submit(cls, payments, code=None):
        "Send draft payments to their channel (queue)"
        for payment in payments:
            cls.lock([payment])
            payment = cls(payment.id)
            if payment.state != 'draft':
                continue
            with without_check_access():
                provider = payment.gateway.get_provider()
            try:
                if payment.kind == 'code':
                    result = provider.pay_code(payment, code)
                elif payment.kind == 'app':
                    result = provider.create_app(payment)
                else:
                    result = provider.create_qr(payment)
            except TransientError as exception:
                # the code may have reached the channel: ask it, and
                # reverse at the deadline if it never answers
                payment.error = str(exception)
                cls.save([payment])
                cls.wait([payment])
                continue
            except PermanentError as exception:
                payment.error = str(exception)
                cls.save([payment])
                cls.fail([payment])
                continue
            cls.apply(payment, result)

    @classmethod
    def poll(cls, payments):
        """Query payments being paid; reverse or close those past their
        deadline (queue and cron)"""
        for payment in payments:
            cls.lock([payment])
            payment = cls(payment.id)
            if payment.state not in {'draft', 'pending'}:
                continue
            with without_check_access():
                provider = payment.gateway.get_provider()
            try:
                result = provider.query(payment)
            except (TransientError, PermanentError) as exception:
                payment.error = str(exception)
                result = None
            missing = result is not None and result.state == 'missing'
            if result is not None and not missing:
                cls.apply(payment, result)
                payment = cls(payment.id)
                if payment.state not in {'draft', 'pending'}:
                    continue
            if _now() >= payment.deadline:
                cls.give_up(payment, provider, missing=missing)
            else:
                cls.schedule(payment, retry=result is None)

    @classmethod
    def give_up(cls, payment, provider, missing=False):
        """Reverse a code payment or close a QR whose time is over;
        missing: the channel said it does not know the payment"""
        try:
            if payment.kind == 'code':
                provider.reverse(payment)
            else:
                provider.close(payment)
        except TransientError as exception:
            payment.error = str(exception)
            cls.schedule(payment, retry=True)
            return
        except PermanentError as exception:
            payment.error = str(exception)
            if not missing:
                # the channel may have it paid: the next query decides
                cls.schedule(payment, retry=True)
                return
        payment.error = gettext('fuel_payment.msg_gateway_timeout')
        cls.save([payment])
        cls.cancel([payment])

    @classmethod
    def schedule(cls, payment, retry=False):
        "Query payment again later, in the queue"
        delay = payment.gateway.poll_interval
        if retry:
            payment.attempts = (payment.attempts or 0) + 1
            delay *= 2 ** min(payment.attempts, MAX_ATTEMPTS)
        payment.next_check = _now() + dt.timedelta(seconds=delay)
        cls.save([payment])
        if config.getboolean('queue', 'worker', default=False):
            with Transaction().set_context(
                    queue_scheduled_at=dt.timedelta(seconds=delay)):
                cls.__queue__.poll([payment])
        # without workers, tasks run at the end of the request that
        # queued them: the cron (check_pending) polls by next_check

    @classmethod
    def apply(cls, payment, result):
        "Bring payment to the state the channel gave"
        if result.code_url:
            payment.code_url = result.code_url
        if result.params is not None:
            payment.client_params = json.dumps(
                result.params, sort_keys=True, ensure_ascii=False)
        if result.reference:
            payment.reference = result.reference
        if result.state == 'succeeded':
            if (result.amount is not None
                    and result.amount != payment.amount):
                payment.error = gettext(
                    'fuel_payment.msg_gateway_amount_mismatch',
                    payment=payment.number, amount=result.amount)
                logger.warning(
                    "payment %s: channel amount %s differs",
                    payment.number, result.amount)
                cls.save([payment])
                return
            payment.paid_date = result.date or _now()
            payment.error = None
            cls.save([payment])
            cls.succeed([payment])
        elif result.state == 'failed':
            payment.error = result.error
            cls.save([payment])
            cls.fail([payment])
        elif result.state == 'cancelled':
            cls.save([payment])
            cls.cancel([payment])
        else:
            cls.save([payment])
            if payment.state == 'draft':
                cls.wait([payment])

    @classmethod
    def late_success(cls, payment):
        """A success notified for a payment given up (reversed, closed,
        failed): notifications may come out of order (one sent before a
        reversal arrives after it), so the channel is asked what holds now;
        money it did take is booked on the order while the order is open,
        else given back (succeed)"""
        with without_check_access():
            provider = payment.gateway.get_provider()
        # TransientError goes up: the notification is answered as failed
        # and the channel sends it again
        result = provider.query(payment)
        if result.state != 'succeeded':
            logger.info(
                "payment %s: late success notification, the channel says "
                "%s now: ignored", payment.number, result.state)
            return
        if result.amount is not None and result.amount != payment.amount:
            payment.error = gettext(
                'fuel_payment.msg_gateway_amount_mismatch',
                payment=payment.number, amount=result.amount)
            cls.save([payment])
            return
        logger.warning(
            "payment %s: paid at the channel after it was %s",
            payment.number, payment.state)
        if result.reference:
            payment.reference = result.reference
        payment.paid_date = result.date or _now()
        payment.error = gettext(
            'fuel_payment.msg_gateway_late_success', payment=payment.number)
        cls.save([payment])
        cls.succeed([payment])

    @classmethod
    @ModelView.button
    def check(cls, payments):
        "Ask the channel now"
        cls.poll(payments)

    @classmethod
    def check_pending(cls):
        """Cron: query the payments whose check is due, so that a payment
        whose notification never came is settled or reversed"""
        payments = cls.search([
                ('state', 'in', ['draft', 'pending']),
                ('next_check', '<=', _now()),
                ])
        if config.getboolean('queue', 'worker', default=False):
            # one task, so one transaction, per payment
            for payment in payments:
                cls.__queue__.poll([payment])
        else:
            cls.poll(payments)

    # ---- transitions --------------------------------------------------

    @classmethod
    @Workflow.transition('pending')
    def wait(cls, payments):
        for payment in payments:
            cls.schedule(payment)
        cls.publish(payments)

    @classmethod
    @Workflow.transition('failed')
    def fail(cls, payments):
        cls.close_prepays(payments)
        cls.publish(payments)

    @classmethod
    @Workflow.transition('cancelled')
    def cancel(cls, payments):
        cls.close_prepays(payments)
        cls.publish(payments)

    @classmethod
    def close_prepays(cls, payments):
        "Cancel the pre-payments that will not be paid"
        PrePay = Pool().get('fuel.payment.prepay')
        PrePay.cancel([
                p.prepay for p in payments
                if p.prepay and p.prepay.state == 'draft'])

    @classmethod
    @Workflow.transition('succeeded')
    def succeed(cls, payments):
        """Book the money on the order; an order no longer open gives it
        back: no fuelling is ever paid twice"""
        pool = Pool()
        Order = pool.get('fuel.payment.order')
        PrePay = pool.get('fuel.payment.prepay')
        Refund = pool.get('fuel.payment.gateway.refund')
        refunds = []
        for payment in payments:
            if payment.prepay:
                prepay = PrePay(payment.prepay.id)
                if prepay.state == 'draft':
                    PrePay.hold([prepay])
                else:
                    refunds.append(Refund(
                            payment=payment, company=payment.company,
                            amount=payment.amount,
                            reason=gettext(
                                'fuel_payment.msg_prepay_aborted')))
                continue
            order = Order(payment.order.id)
            if order.state != 'draft' or (
                    payment.amount > order.amount_to_pay):
                refunds.append(Refund(
                        payment=payment, company=payment.company,
                        amount=payment.amount,
                        reason=gettext(
                            'fuel_payment.msg_gateway_order_closed',
                            order=order.rec_name)))
                continue
            with Transaction().set_context(_fuel_gateway=True), \
                    without_check_access():
                payment.order_payment = Order.add_payment(
                    order, payment.method, payment.amount,
                    reference=payment.reference, uuid=payment.number)
                payment.save()
                order = Order(order.id)
                if not order.amount_to_pay:
                    Order.process([order])
        if refunds:
            Refund.save(refunds)
            Refund.__queue__.submit(refunds)
        cls.publish(payments)

    @classmethod
    def publish(cls, payments):
        "Tell the station's screens (bus: PostgreSQL only)"
        for payment in payments:
            Bus.publish(
                f'fuel.payment.gateway.payment:{payment.station.id}',
                {'id': payment.id, 'state': payment.state})

    # ---- refunds ------------------------------------------------------

    @classmethod
    def refund(cls, payments, amount=None, reason=None):
        """Give back amount (all that is left when None) of each succeeded
        payment through its channel; return the refunds"""
        pool = Pool()
        Refund = pool.get('fuel.payment.gateway.refund')
        refunds = []
        for payment in payments:
            cls.lock([payment])
            payment = cls(payment.id)
            left = payment.amount - payment.amount_refunded
            value = left if amount is None else payment.currency.round(
                Decimal(amount))
            if payment.state != 'succeeded' or value <= 0 or value > left:
                raise GatewayError(gettext(
                        'fuel_payment.msg_gateway_refund_amount',
                        payment=payment.number, amount=left))
            refunds.append(Refund(
                    payment=payment, company=payment.company, amount=value,
                    reason=reason))
        Refund.save(refunds)
        Refund.__queue__.submit(refunds)
        return refunds

    @classmethod
    def check_no_pending(cls, orders):
        "Refuse to close orders whose customer is paying right now"
        payments = cls.search([
                ('order', 'in', [o.id for o in orders]),
                ('state', 'in', ['draft', 'pending']),
                ], limit=1)
        if payments:
            payment, = payments
            raise GatewayError(gettext(
                    'fuel_payment.msg_gateway_order_pending',
                    order=payment.order.rec_name, payment=payment.number))

    @classmethod
    def refund_orders(cls, orders, reason=None):
        "Give back every succeeded gateway payment of orders"
        payments = cls.search([
                ('order', 'in', [o.id for o in orders]),
                ('state', '=', 'succeeded'),
                ])
        payments = [p for p in payments if p.amount > p.amount_refunded]
        if payments:
            cls.refund(payments, reason=reason)


class GatewayRefund(Workflow, ModelSQL, ModelView):
    "Fuel Gateway Refund"
    __name__ = 'fuel.payment.gateway.refund'
    _rec_name = 'number'

    number = fields.Char("Number", readonly=True)
    company = fields.Many2One(
        'company.company', "Operator", required=True, readonly=True)
    payment = fields.Many2One(
        'fuel.payment.gateway.payment', "Payment", required=True,
        readonly=True, ondelete='RESTRICT')
    amount = Monetary(
        "Amount", currency='currency', digits='currency', required=True,
        readonly=True)
    currency = fields.Function(
        fields.Many2One('currency.currency', "Currency"),
        'on_change_with_currency')
    reason = fields.Text("Reason", readonly=True)
    reference = fields.Char("Reference", readonly=True)
    done_date = fields.DateTime("Done on", readonly=True)
    attempts = fields.Integer("Attempts", readonly=True)
    error = fields.Text("Error", readonly=True)
    state = fields.Selection([
            ('draft', "Draft"),
            ('pending', "Pending"),
            ('succeeded', "Succeeded"),
            ('failed', "Failed"),
            ], "State", required=True, readonly=True, sort=False)

    @classmethod
    def __setup__(cls):
        super().__setup__()
        cls.__access__.add('payment')
        cls._order = [('create_date', 'DESC'), ('id', 'DESC')]
        cls._transitions |= {
            ('draft', 'pending'),
            ('draft', 'succeeded'),
            ('draft', 'failed'),
            ('pending', 'succeeded'),
            ('pending', 'failed'),
            }

    @classmethod
    def default_state(cls):
        return 'draft'

    @classmethod
    def default_attempts(cls):
        return 0

    @fields.depends('company')
    def on_change_with_currency(self, name=None):
        return self.company.currency if self.company else None

    @classmethod
    def create(cls, vlist):
        refunds = super().create(vlist)
        for refund in refunds:
            # out_refund_no: the idempotency key of the refund
            refund.number = f'{refund.payment.number}R{refund.id}'
        cls.save(refunds)
        return refunds

    @classmethod
    def submit(cls, refunds):
        "Ask the channel to give the money back (queue)"
        for refund in refunds:
            cls.lock([refund])
            refund = cls(refund.id)
            if refund.state not in {'draft', 'pending'}:
                continue
            with without_check_access():
                provider = refund.payment.gateway.get_provider()
            try:
                # the same out_refund_no again is answered, not repeated
                result = provider.refund(refund)
            except TransientError as exception:
                refund.error = str(exception)
                refund.attempts = (refund.attempts or 0) + 1
                refund.save()
                if refund.attempts < MAX_ATTEMPTS:
                    delay = RETRY_DELAY * 2 ** refund.attempts
                    with Transaction().set_context(
                            queue_scheduled_at=dt.timedelta(seconds=delay)):
                        cls.__queue__.submit([refund])
                continue
            except PermanentError as exception:
                refund.error = str(exception)
                refund.save()
                cls.fail([refund])
                continue
            refund.reference = result.reference
            refund.error = result.error
            refund.save()
            if result.state == 'succeeded':
                cls.succeed([refund])
            elif result.state == 'failed':
                cls.fail([refund])
            elif refund.state == 'draft':
                cls.wait([refund])

    @classmethod
    @Workflow.transition('pending')
    def wait(cls, refunds):
        pass

    @classmethod
    @Workflow.transition('succeeded')
    def succeed(cls, refunds):
        for refund in refunds:
            refund.done_date = _now()
        cls.save(refunds)

    @classmethod
    @Workflow.transition('failed')
    def fail(cls, refunds):
        pass


class GatewayNotification(ModelSQL, ModelView):
    "Fuel Gateway Notification"
    __name__ = 'fuel.payment.gateway.notification'

    company = fields.Many2One(
        'company.company', "Operator", required=True, readonly=True)
    gateway = fields.Many2One(
        'fuel.payment.gateway', "Gateway", required=True, readonly=True,
        ondelete='CASCADE')
    notification = fields.Char(
        "Notification ID", readonly=True,
        help="The channel's identifier of the notification.")
    payment = fields.Many2One(
        'fuel.payment.gateway.payment', "Payment", readonly=True,
        ondelete='RESTRICT')
    received = fields.DateTime("Received", required=True, readonly=True)
    state = fields.Selection([
            ('accepted', "Accepted"),
            ('refused', "Refused"),
            ], "State", required=True, readonly=True)
    error = fields.Char("Error", readonly=True)

    @classmethod
    def __setup__(cls):
        super().__setup__()
        cls.__access__.add('gateway')
        t = cls.__table__()
        cls._sql_constraints = [
            ('notification_unique', Unique(t, t.gateway, t.notification),
                'fuel_payment.msg_gateway_notification_unique'),
            ]
        cls._order = [('received', 'DESC'), ('id', 'DESC')]

    @classmethod
    def receive(cls, gateway, headers, body):
        """Verify, decrypt and apply a notification of gateway

        Return 'accepted' (the first valid one, applied), 'duplicate'
        (answered, ignored) or 'refused' (forged or unknown, logged
        without its content)."""
        pool = Pool()
        Payment = pool.get('fuel.payment.gateway.payment')
        provider = gateway.get_provider()
        try:
            notification = provider.parse_notification(headers, body)
        except ForgedNotification as exception:
            logger.warning(
                "gateway %s: notification refused: %s",
                gateway.id, exception)
            cls.create([{
                        'company': gateway.company.id,
                        'gateway': gateway.id,
                        'received': _now(),
                        'state': 'refused',
                        'error': str(exception)[:200],
                        }])
            return 'refused'
        if cls.search([
                    ('gateway', '=', gateway.id),
                    ('notification', '=', notification.id),
                    ], limit=1):
            return 'duplicate'
        payments = Payment.search([
                ('gateway', '=', gateway.id),
                ('number', '=', notification.number),
                ], limit=1)
        if not payments:
            logger.warning(
                "gateway %s: notification for unknown payment %s",
                gateway.id, notification.number)
            return 'refused'
        payment, = payments
        Payment.lock(payments)
        payment = Payment(payment.id)
        cls.create([{
                    'company': gateway.company.id,
                    'gateway': gateway.id,
                    'notification': notification.id,
                    'payment': payment.id,
                    'received': _now(),
                    'state': 'accepted',
                    }])
        if payment.state in {'draft', 'pending'}:
            Payment.apply(payment, notification.result)
        elif (payment.state in {'failed', 'cancelled'}
                and notification.result.state == 'succeeded'):
            Payment.late_success(payment)
        return 'accepted'
