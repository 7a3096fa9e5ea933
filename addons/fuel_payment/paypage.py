# This file is part of fuelpay.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""The payment page of the printed QR codes of a station and its nozzles
(扫码付): the driver scans the code at the pump and pays the fill waiting
at the nozzle with WeChat Pay or Alipay, inside the wallet's own browser
(JSAPI: the wallet's login tells the payer) or from the phone's browser
(H5: the channel's cashier page)

The code holds `<public base>/fuel_payment/pay/<station pay token>[/<nozzle
station number>]`; the public base is the one of the operator's gateways'
notification URLs (`https://<host>/<database>`, as alipay_auth's
redirect). The token is random and revocable (Renew Pay Token); nothing
else authenticates the page: it shows only the fill's nozzle, grade,
quantity, amount and time, and its payments are bound to the browser
that started them by a single-use nonce (fuel.payment.page.request).

Facts about the wallets, with their sources (read 2026; not checked
against the live services here, the tests play them with the simulators):

- WeChat's web page authorization (网页授权, developers.weixin.qq.com,
  公众号 > 网页开发 > 网页授权): the page sends the browser to
  https://open.weixin.qq.com/connect/oauth2/authorize?appid=..
  &redirect_uri=<urlencoded>&response_type=code&scope=snsapi_base
  &state=..#wechat_redirect; WeChat comes back to
  redirect_uri?code=..&state=..; the code is exchanged once within five
  minutes (login.py); the redirect_uri's domain must be the official
  account's authorized domain (网页授权域名);
- WeChat Pay JSAPI (pay.weixin.qq.com, JSAPI调起支付): the page calls
  WeixinJSBridge.invoke('getBrandWCPayRequest', {appId, timeStamp,
  nonceStr, package, signType, paySign}, callback) once the
  WeixinJSBridgeReady event fired; the page's address must be under a
  JSAPI payment directory (支付授权目录) of the merchant;
- WeChat Pay H5 (H5下单, h5_url): the phone's browser opens h5_url, to
  which `&redirect_url=<urlencoded>` may be added for the way back;
- Alipay's web page authorization (opendocs.alipay.com, 网页授权获取用户
  信息): https://openauth.alipay.com/oauth2/publicAppAuthorize.htm
  ?app_id=..&scope=auth_base&redirect_uri=<urlencoded>&state=.. comes back
  to redirect_uri?app_id=..&source=alipay_wallet&scope=auth_base
  &auth_code=..&state=..; the redirect_uri's domain must be the
  application's authorization callback domain (授权回调地址);
- Alipay's JSAPI in its client (AlipayJSBridge.call('tradePay',
  {tradeNO}, callback), after the AlipayJSBridgeReady event);
- the wallets' browsers name themselves in the User-Agent:
  `MicroMessenger` (WeChat), `AlipayClient` (Alipay)."""
import datetime as dt
import hashlib
import hmac
import html
import json
import logging
import secrets
import string
import urllib.parse
from pathlib import Path
from zoneinfo import ZoneInfo

from sql import Null
from trytond.exceptions import UserError
from trytond.i18n import gettext
from trytond.model import Index, ModelSQL, ModelView, Unique, fields
from trytond.pool import Pool, PoolMeta
from trytond.protocols.wrappers import Response, redirect
from trytond.transaction import Transaction, without_check_access

from .alipay_auth import NOTIFY_PATH

logger = logging.getLogger(__name__)

PAY_PATH = '/fuel_payment/pay/'
# the wallets' authorization pages (production; tests and a proxy may
# point them elsewhere)
WECHAT_AUTHORIZE_URL = 'https://open.weixin.qq.com/connect/oauth2/authorize'
ALIPAY_AUTHORIZE_URL = (
    'https://openauth.alipay.com/oauth2/publicAppAuthorize.htm')
# the wallets' in-app browsers by the word their User-Agent carries
WALLET_AGENTS = [
    ('MicroMessenger', 'wechat'),
    ('AlipayClient', 'alipay'),
    ]
# the wallets the page offers, in their order on the page
WALLETS = ['wechat', 'alipay']
# bytes of randomness of a station's pay token (printed, 22 characters)
# and of a page request's nonces
TOKEN_BYTES = 16
NONCE_BYTES = 24
# a WeChat or Alipay authorization round trip takes seconds; WeChat's
# code itself lives five minutes
REQUEST_VALIDITY = dt.timedelta(minutes=10)
# page requests are kept this long for the way back from the cashier
REQUEST_KEPT = dt.timedelta(days=1)
# seconds between two status queries of the page
POLL_SECONDS = 2
TEMPLATE = Path(__file__).with_name('paypage.html')


def utcnow():
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


def digest(nonce):
    "What is stored of a page request's nonce"
    return hashlib.sha256(nonce.encode()).hexdigest()


def wallet_of(user_agent):
    "The wallet whose browser sends user_agent, or None (a phone browser)"
    for word, wallet in WALLET_AGENTS:
        if word in (user_agent or ''):
            return wallet
    return None


def public_base(company):
    """The public address of the server and database
    (`https://<host>/<database>`) of company's gateways' notification
    URLs, or None"""
    Gateway = Pool().get('fuel.payment.gateway')
    with without_check_access():
        gateways = Gateway.search([
                ('company', '=', company.id),
                ('notify_url', 'like', f'%{NOTIFY_PATH}%'),
                ], order=[('id', 'ASC')])
    for gateway in gateways:
        base, _, _ = gateway.notify_url.partition(NOTIFY_PATH)
        if base:
            return base.rstrip('/')
    return None


class PageRefusal(Exception):
    "What the page tells the driver instead of going on, and its status"

    def __init__(self, text, status=200):
        super().__init__(text)
        self.text = text
        self.status = status


class Station(metaclass=PoolMeta):
    __name__ = 'fuel.station'
    pay_token = fields.Char(
        "Pay Token", readonly=True, strip=False,
        help="The random part of the payment page address printed in the "
        "station's and nozzles' QR codes; Renew Pay Token makes the printed "
        "codes useless.")

    @classmethod
    def __setup__(cls):
        super().__setup__()
        t = cls.__table__()
        cls._sql_constraints += [
            ('pay_token_unique', Unique(t, t.pay_token),
                'fuel_payment.msg_paypage_token_unique'),
            ]
        cls._buttons.update({
                'renew_pay_token': {},
                })

    @classmethod
    def __register__(cls, module):
        super().__register__(module)
        # the stations made before the payment page get their token
        table = cls.__table__()
        cursor = Transaction().connection.cursor()
        cursor.execute(*table.select(
                table.id, where=table.pay_token == Null))
        for station_id, in cursor.fetchall():
            cursor.execute(*table.update(
                    [table.pay_token], [secrets.token_urlsafe(TOKEN_BYTES)],
                    where=table.id == station_id))

    @classmethod
    def default_pay_token(cls):
        return secrets.token_urlsafe(TOKEN_BYTES)

    @classmethod
    def copy(cls, stations, default=None):
        default = default.copy() if default is not None else {}
        # a copy is another station: its own codes
        default.setdefault(
            'pay_token', lambda data: secrets.token_urlsafe(TOKEN_BYTES))
        return super().copy(stations, default=default)

    @classmethod
    @ModelView.button
    def renew_pay_token(cls, stations):
        "Give each station a new pay token: the printed codes stop working"
        for station in stations:
            station.pay_token = secrets.token_urlsafe(TOKEN_BYTES)
        cls.save(stations)

    def pay_url(self, nozzle=None):
        """The address the QR code of the station (or of its nozzle, a
        station number) holds; raise when there is no public address"""
        if not self.pay_token:
            raise PayPageError(gettext(
                    'fuel_payment.msg_paypage_no_token',
                    station=self.rec_name))
        base = public_base(self.company)
        if not base:
            raise PayPageError(gettext(
                    'fuel_payment.msg_paypage_no_base',
                    station=self.rec_name))
        url = f'{base}{PAY_PATH}{self.pay_token}'
        if nozzle is not None:
            url += f'/{nozzle}'
        return url


class PayPageError(UserError):
    "The station's payment page cannot be printed"


class FuellingTransaction(metaclass=PoolMeta):
    __name__ = 'fuel.payment.transaction'

    @classmethod
    def to_pay_at(cls, station, numbers):
        """Return the fills of station's nozzles numbered numbers (station
        numbers) waiting to be paid, oldest first, as (payable,
        being_paid): a fill being paid has a payment under way on its
        order or is merged with others (the payment post's and the payment
        page's rule)"""
        pool = Pool()
        Payment = pool.get('fuel.payment.gateway.payment')
        fills = cls.search([
                ('station', '=', station.id),
                ('state', '=', 'to_pay'),
                ('nozzle.station_number', 'in', list(numbers)),
                ['OR',
                    ('order', '=', None),
                    ('order.state', '=', 'draft'),
                    ],
                ], order=[('end_date', 'ASC'), ('id', 'ASC')])
        payable, being_paid = [], []
        for fill in fills:
            order = fill.order
            if order and (len(order.transactions) > 1 or Payment.search([
                            ('order', '=', order.id),
                            ('state', 'in', ['draft', 'pending']),
                            ], limit=1)):
                being_paid.append(fill)
            else:
                payable.append(fill)
        return payable, being_paid


class PageRequest(ModelSQL):
    """A payment the page started or is about to start, bound to the
    browser that asked by two nonces kept as digests: the OAuth state of
    the wallet's authorization (single use, short lived) and the key of
    the page that follows the payment"""
    __name__ = 'fuel.payment.page.request'
    station = fields.Many2One(
        'fuel.station', "Station", required=True, ondelete='CASCADE')
    nozzle = fields.Integer("Nozzle", required=True)
    fill = fields.Many2One(
        'fuel.payment.transaction', "Fill", required=True,
        ondelete='CASCADE')
    method = fields.Many2One(
        'sale.point.payment.method', "Method", required=True,
        ondelete='CASCADE')
    client = fields.Char("Client", required=True)
    app = fields.Char("App ID")
    state_key = fields.Char("State")
    view_key = fields.Char("View")
    expiry = fields.DateTime("Expiry", required=True)
    used = fields.Boolean("Used")
    payment = fields.Many2One(
        'fuel.payment.gateway.payment', "Payment", ondelete='CASCADE')

    @classmethod
    def __setup__(cls):
        super().__setup__()
        t = cls.__table__()
        # found by the digests of the nonces the browser holds
        cls._sql_indexes.update({
                Index(t, (t.state_key, Index.Equality())),
                Index(t, (t.view_key, Index.Equality())),
                })

    @classmethod
    def default_used(cls):
        return False

    @classmethod
    def purge(cls):
        "Delete the requests older than REQUEST_KEPT"
        table = cls.__table__()
        cursor = Transaction().connection.cursor()
        cursor.execute(*table.delete(
                where=table.expiry < utcnow() - REQUEST_KEPT))

    @classmethod
    def by_key(cls, name, nonce, station, nozzle):
        "Return the request of station's nozzle whose key name is nonce"
        if not nonce:
            return None
        requests = cls.search([
                (name, '=', digest(nonce)),
                ('station', '=', station.id),
                ('nozzle', '=', nozzle),
                ], limit=1)
        if not requests or not hmac.compare_digest(
                getattr(requests[0], name), digest(nonce)):
            return None
        return requests[0]


class PayPage:
    """The payment page of a station or nozzle for one HTTP request
    (routes.py): finds the station by the token or answers 404, speaks the
    driver's language, never shows more than the fills"""

    def __init__(self, request, pool, token, nozzle=None):
        self.request = request
        self.pool = pool
        self.nozzle = nozzle
        self.wallet = wallet_of(request.headers.get('User-Agent'))
        Station = pool.get('fuel.station')
        Lang = pool.get('ir.lang')
        with without_check_access():
            stations = Station.search([
                    ('pay_token', '=', token or ''),
                    ], limit=1) if token else []
            languages = [
                lang.code
                for lang in Lang.search([('translatable', '=', True)])]
        self.station = stations[0] if stations and hmac.compare_digest(
            stations[0].pay_token, token) else None
        self.language = request.accept_languages.best_match(
            languages, default=Transaction().language) or 'en'
        self.token = token

    # ---- the routes' entries -----------------------------------------

    def answer(self, method):
        "Run method (a name) in the driver's language; a Response"
        if self.station is None:
            return Response(status=404)
        context = {
            'language': self.language,
            'company': self.station.company.id,
            }
        with Transaction().set_context(**context), without_check_access():
            if self.nozzle is not None and not self.nozzles([self.nozzle]):
                return Response(status=404)
            try:
                return getattr(self, method)()
            except PageRefusal as refusal:
                return self.render(
                    [self.paragraph(refusal.text, 'error')],
                    status=refusal.status)

    def get(self):
        "The page: the station's nozzles, or the nozzle's fills"
        args = self.request.args
        if self.nozzle is None:
            return self.station_page()
        if args.get('state'):
            # back from the wallet's authorization
            return self.authorized(
                args.get('state'),
                args.get('code') or args.get('auth_code'))
        if args.get('r'):
            return self.payment_page(args['r'])
        return self.nozzle_page()

    def post(self):
        "Start paying the fill the driver chose with the wallet chosen"
        form = self.request.form
        kind = form.get('wallet')
        try:
            fill_id = int(form.get('fill', ''))
        except ValueError:
            fill_id = None
        if kind not in WALLETS or fill_id is None:
            raise PageRefusal(
                gettext('fuel_payment.msg_paypage_fill_gone'), 400)
        fill = self.payable_fill(fill_id)
        if self.wallet is None:
            return self.start_h5(fill, kind)
        if kind != self.wallet:
            raise PageRefusal(
                gettext('fuel_payment.msg_paypage_fill_gone'), 400)
        return self.start_jsapi(fill, kind)

    def status(self):
        "JSON: the payment the page follows, or the nozzle's fills"
        nonce = self.request.args.get('r')
        if nonce:
            request = self.page_request('view_key', nonce)
            return self.json(self.payment_status(request.payment))
        payable, being_paid = self.fills()
        return self.json({
                'fills': [self.fill_values(f) for f in payable],
                'being_paid': bool(being_paid and not payable),
                })

    # ---- finding ---------------------------------------------------------

    def nozzles(self, numbers=None):
        "The station's active nozzles (of numbers)"
        Nozzle = self.pool.get('fuel.station.nozzle')
        domain = [
            ('station', '=', self.station.id),
            ('state', '=', 'active'),
            ]
        if numbers is not None:
            domain.append(('station_number', 'in', numbers))
        return Nozzle.search(domain, order=[('station_number', 'ASC')])

    def fills(self, numbers=None):
        FuelTransaction = self.pool.get('fuel.payment.transaction')
        return FuelTransaction.to_pay_at(
            self.station, numbers or [self.nozzle])

    def payable_fill(self, fill_id):
        "The fill of the nozzle, locked, if it is still payable; or refuse"
        FuelTransaction = self.pool.get('fuel.payment.transaction')
        fills = FuelTransaction.search([('id', '=', fill_id)], limit=1)
        if fills:
            FuelTransaction.lock(fills)
        payable, being_paid = self.fills()
        for fill in payable:
            if fill.id == fill_id:
                return fill
        if any(f.id == fill_id for f in being_paid):
            raise PageRefusal(gettext(
                    'fuel_payment.msg_paypage_being_paid',
                    nozzle=self.nozzle), 409)
        raise PageRefusal(
            gettext('fuel_payment.msg_paypage_fill_gone'), 409)

    def methods(self, client):
        """The payment methods by wallet the page offers to client (jsapi
        in the wallet, h5 in a phone browser): {wallet: method}"""
        Method = self.pool.get('sale.point.payment.method')
        company = self.station.company
        wallets = [self.wallet] if client == 'jsapi' else WALLETS
        result = {}
        for wallet in wallets:
            method = Method.for_channel(company, wallet)
            if method is None:
                continue
            provider = method.gateway.get_provider()
            if not provider.supports_app(method, client):
                continue
            # in the wallet, the authorization needs its application
            if client == 'jsapi' and not self.login_app(method):
                continue
            result[wallet] = method
        return result

    def login_app(self, method):
        """The application whose users the wallet's authorization page
        names for method's gateway, or None: WeChat's official account
        with a login app (jsapi) holding an AppSecret, that the merchant
        bound; Alipay's application signing the payments (the operator's
        authorizing application in ISV mode)"""
        GatewayApp = self.pool.get('fuel.payment.gateway.app')
        gateway = method.gateway
        if self.wallet == 'wechat':
            holders = [h.id for h in filter(
                    None, [gateway, gateway.platform_account])]
            for app in GatewayApp.search([
                        ('gateway', 'in', holders),
                        ('client', '=', 'jsapi'),
                        ], order=[('id', 'ASC')]):
                if not app.has_secret:
                    continue
                try:
                    gateway.check_client_app(app.app)
                except UserError:
                    continue
                return app.app
            return None
        if gateway.channel != 'alipay':
            return None
        provider = gateway.get_provider()
        return (
            gateway.auth_app if provider.auth_token
            else provider.credentials.app) or None

    def page_request(self, name, nonce):
        "The request of the nozzle whose key name is nonce, or refuse"
        Request = self.pool.get('fuel.payment.page.request')
        request = Request.by_key(name, nonce, self.station, self.nozzle)
        if request is None:
            raise PageRefusal(
                gettext('fuel_payment.msg_paypage_state_invalid'), 400)
        return request

    # ---- starting a payment ----------------------------------------------

    def new_request(self, fill, method, client, app=None):
        """Return a new page request and the nonce of its OAuth state
        (jsapi: the wallet's authorization comes first)"""
        Request = self.pool.get('fuel.payment.page.request')
        Request.purge()
        nonce = secrets.token_urlsafe(NONCE_BYTES)
        request = Request(
            station=self.station, nozzle=self.nozzle, fill=fill,
            method=method, client=client, app=app,
            state_key=digest(nonce) if client == 'jsapi' else None,
            used=client != 'jsapi',
            expiry=utcnow() + REQUEST_VALIDITY)
        request.save()
        return request, nonce

    def start_jsapi(self, fill, wallet):
        "Send the wallet's browser to its authorization page"
        method = self.methods('jsapi').get(wallet)
        if method is None:
            raise PageRefusal(self.unavailable(wallet))
        app = self.login_app(method)
        _, nonce = self.new_request(fill, method, 'jsapi', app=app)
        redirect_uri = self.page_url()
        if wallet == 'wechat':
            query = urllib.parse.urlencode({
                    'appid': app,
                    'redirect_uri': redirect_uri,
                    'response_type': 'code',
                    'scope': 'snsapi_base',
                    'state': nonce,
                    })
            url = f'{WECHAT_AUTHORIZE_URL}?{query}#wechat_redirect'
        else:
            query = urllib.parse.urlencode({
                    'app_id': app,
                    'scope': 'auth_base',
                    'redirect_uri': redirect_uri,
                    'state': nonce,
                    })
            url = f'{ALIPAY_AUTHORIZE_URL}?{query}'
        return redirect(url, code=303)

    def authorized(self, nonce, code):
        """Back from the wallet's authorization: the state must be the
        nonce of a request of this nozzle, unused and not expired; the
        code tells the payer, the payment is made for the fill"""
        Request = self.pool.get('fuel.payment.page.request')
        request = Request.by_key('state_key', nonce, self.station, self.nozzle)
        if (request is None or request.used
                or request.client != 'jsapi'
                or request.expiry < utcnow()):
            raise PageRefusal(
                gettext('fuel_payment.msg_paypage_state_invalid'), 400)
        Request.lock([request])
        request = Request(request.id)
        if request.used:
            raise PageRefusal(
                gettext('fuel_payment.msg_paypage_state_invalid'), 400)
        # the refusals below keep it used (they answer a page, the
        # transaction is committed): the code is spent
        request.used = True
        request.save()
        code = (code or '').strip()
        if not code:
            raise PageRefusal(
                gettext('fuel_payment.msg_paypage_state_invalid'), 400)
        fill = self.payable_fill(request.fill.id)
        payment = self.create_payment(
            fill, request.method, 'jsapi', app=request.app, code=code)
        return self.follow(request, payment)

    def start_h5(self, fill, wallet):
        "Create the H5 payment of the fill and follow it on the page"
        method = self.methods('h5').get(wallet)
        if method is None:
            raise PageRefusal(self.unavailable(wallet))
        payment = self.create_payment(
            fill, method, 'h5', client_ip=self.request.remote_addr)
        request, _ = self.new_request(fill, method, 'h5')
        return self.follow(request, payment)

    def create_payment(self, fill, method, client, **kwargs):
        "Create the in-app payment of fill's order; refuse with the reason"
        Order = self.pool.get('fuel.payment.order')
        Payment = self.pool.get('fuel.payment.gateway.payment')
        try:
            order = fill.order or Order.create_for([fill])
            return Payment(Payment.create_app(
                    order.id, method.id, client, **kwargs))
        except UserError as exception:
            logger.info(
                "payment page of station %s nozzle %s: %s",
                self.station.id, self.nozzle, exception.message)
            raise PageRefusal(gettext(
                    'fuel_payment.msg_paypage_refused',
                    error=exception.message), 409) from None

    def follow(self, request, payment):
        "Bind payment to a new view key of request; go to its page"
        nonce = secrets.token_urlsafe(NONCE_BYTES)
        request.payment = payment
        request.view_key = digest(nonce)
        request.expiry = utcnow() + REQUEST_VALIDITY
        request.save()
        return redirect(self.page_url(r=nonce), code=303)

    # ---- pages -------------------------------------------------------------

    def page_url(self, **query):
        "The public address of this page (with query)"
        base = public_base(self.station.company)
        if base:
            url = f'{base}{PAY_PATH}{self.token}'
        else:
            url = self.request.base_url.rsplit(PAY_PATH, 1)[0] + (
                f'{PAY_PATH}{self.token}')
        if self.nozzle is not None:
            url += f'/{self.nozzle}'
        if query:
            url += '?' + urllib.parse.urlencode(query)
        return url

    def station_page(self):
        parts = []
        numbers = [n.station_number for n in self.nozzles()]
        payable, _ = self.fills(numbers) if numbers else ([], [])
        waiting = sorted({f.nozzle.station_number for f in payable})
        if not waiting:
            parts.append(self.paragraph(gettext(
                        'fuel_payment.msg_paypage_station_none')))
        else:
            parts.append(self.paragraph(gettext(
                        'fuel_payment.msg_paypage_station_nozzles')))
            links = ''.join(
                '<a class="button" href="%s">%s</a>' % (
                    html.escape(f'{self.page_url()}/{number}'),
                    html.escape(gettext(
                            'fuel_payment.msg_paypage_nozzle',
                            nozzle=number)))
                for number in waiting)
            parts.append(f'<div class="nozzles">{links}</div>')
        return self.render(parts)

    def nozzle_page(self):
        payable, being_paid = self.fills()
        if not payable:
            if being_paid:
                raise PageRefusal(gettext(
                        'fuel_payment.msg_paypage_being_paid',
                        nozzle=self.nozzle))
            raise PageRefusal(gettext(
                    'fuel_payment.msg_paypage_no_fill', nozzle=self.nozzle))
        client = 'jsapi' if self.wallet else 'h5'
        methods = self.methods(client)
        parts = []
        if len(payable) > 1:
            parts.append(self.paragraph(gettext(
                        'fuel_payment.msg_paypage_several',
                        nozzle=self.nozzle)))
        if self.wallet and self.wallet not in methods:
            parts.append(self.paragraph(
                    self.unavailable(self.wallet), 'error'))
        elif not methods:
            parts.append(self.paragraph(gettext(
                        'fuel_payment.msg_paypage_browser_none'), 'error'))
        for fill in payable:
            parts.append(self.fill_html(fill, methods))
        return self.render(parts, data={
                'status_url': self.page_url() + '/status',
                })

    def payment_page(self, nonce):
        request = self.page_request('view_key', nonce)
        payment = request.payment
        parts = [self.fill_html(request.fill)]
        status = self.payment_status(payment)
        parts.append(
            '<p id="message" class="message">%s</p>'
            % html.escape(status['message']))
        parts.append(
            '<p><button type="button" id="pay" class="button" hidden>'
            '%s</button></p>' % html.escape(
                gettext('fuel_payment.msg_paypage_pay_again')))
        parts.append(
            '<p><a id="retry" class="link" href="%s" hidden>%s</a></p>' % (
                html.escape(self.page_url()),
                html.escape(gettext('fuel_payment.msg_paypage_retry'))))
        return self.render(parts, data={
                'status_url': self.page_url(r=nonce).replace(
                    '?', '/status?', 1),
                'return_url': self.page_url(r=nonce),
                'client': request.client,
                'wallet': self.wallet,
                'payment': status,
                'poll': POLL_SECONDS * 1000,
                })

    def payment_status(self, payment):
        "What the page shows of payment: state, what to pay with, message"
        lang = self.lang()
        amount = lang.currency(payment.amount, payment.currency)
        wallet = self.wallet_name(payment.method.fuel_kind)
        state = payment.state
        if state == 'succeeded':
            message = gettext(
                'fuel_payment.msg_paypage_paid', amount=amount)
        elif state == 'pending':
            message = gettext(
                'fuel_payment.msg_paypage_pending', amount=amount,
                wallet=wallet)
        elif state == 'draft':
            message = gettext(
                'fuel_payment.msg_paypage_waiting', wallet=wallet)
        else:
            message = gettext('fuel_payment.msg_paypage_not_paid')
        return {
            'state': state,
            'amount': str(payment.amount),
            'message': message,
            'client_params': (
                json.loads(payment.client_params)
                if payment.client_params and state == 'pending' else None),
            }

    def fill_values(self, fill):
        "What the page may show of fill (JSON)"
        lang = self.lang()
        return {
            'id': fill.id,
            'nozzle': fill.nozzle.station_number,
            'grade': fill.grade.rec_name if fill.grade else '',
            'quantity': str(fill.quantity),
            'unit': fill.unit.symbol if fill.unit else '',
            'amount': str(fill.amount_due),
            'amount_text': lang.currency(fill.amount_due, fill.currency),
            'time': self.local_time(fill.end_date),
            }

    def fill_html(self, fill, methods=None):
        "A fill's card, with a form per wallet of methods"
        values = self.fill_values(fill)
        rows = [
            (gettext('fuel_payment.msg_paypage_label_nozzle'),
                str(values['nozzle'])),
            (gettext('fuel_payment.msg_paypage_label_grade'),
                values['grade']),
            (gettext('fuel_payment.msg_paypage_label_quantity'),
                f"{values['quantity']} {values['unit']}".strip()),
            (gettext('fuel_payment.msg_paypage_label_time'),
                values['time']),
            (gettext('fuel_payment.msg_paypage_label_amount'),
                values['amount_text']),
            ]
        table = ''.join(
            f'<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>'
            for k, v in rows)
        forms = ''.join(
            '<form method="post" action="%s">'
            '<input type="hidden" name="fill" value="%s">'
            '<input type="hidden" name="wallet" value="%s">'
            '<button type="submit" class="button %s">%s</button></form>' % (
                html.escape(self.page_url()), fill.id, wallet, wallet,
                html.escape(gettext(f'fuel_payment.msg_paypage_pay_{wallet}')))
            for wallet in WALLETS if wallet in (methods or {}))
        return (
            f'<div class="fill" id="fill-{fill.id}"><table>{table}</table>'
            f'{forms}</div>')

    def render(self, parts, status=200, data=None):
        "The page of the HTML parts (escaped already)"
        title = gettext(
            'fuel_payment.msg_paypage_title', station=self.station.name)
        if self.nozzle is not None:
            title += ' · ' + gettext(
                'fuel_payment.msg_paypage_nozzle', nozzle=self.nozzle)
        # JSON inside <script>: no "</" can close it
        data = json.dumps(data or {}, ensure_ascii=False).replace(
            '<', '\\u003c')
        page = string.Template(TEMPLATE.read_text()).substitute(
            lang=html.escape(self.language.replace('_', '-')),
            title=html.escape(title),
            body='\n'.join(parts),
            data=data)
        return Response(
            page, status=status, content_type='text/html; charset=utf-8',
            headers={
                'Cache-Control': 'no-store',
                # not no-referrer: browsers would then send the page's
                # POST with "Origin: null", which trytond refuses
                'Referrer-Policy': 'same-origin',
                })

    def json(self, values):
        return Response(
            json.dumps(values, ensure_ascii=False), status=200,
            content_type='application/json',
            headers={'Cache-Control': 'no-store'})

    # ---- words -------------------------------------------------------------

    def lang(self):
        return self.pool.get('ir.lang').get(self.language)

    def local_time(self, value):
        if value is None:
            return ''
        zone = ZoneInfo(self.station.timezone or 'UTC')
        local = value.replace(tzinfo=dt.UTC).astimezone(zone)
        return local.strftime('%Y-%m-%d %H:%M')

    @staticmethod
    def paragraph(text, css='message'):
        return f'<p class="{css}">{html.escape(text)}</p>'

    @staticmethod
    def wallet_name(kind):
        if kind in WALLETS:
            return gettext(f'fuel_payment.msg_paypage_wallet_{kind}')
        return kind or ''

    def unavailable(self, wallet):
        return gettext(
            'fuel_payment.msg_paypage_unavailable',
            wallet=self.wallet_name(wallet))
