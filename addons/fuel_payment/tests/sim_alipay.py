# This file is part of fuelpay.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""An Alipay open API gateway (gateway.do) on 127.0.0.1 for the tests

It checks the application's RSA2 signature over the sorted `k=v` pairs
without `sign`, answers `<method>_response` objects signed over their
exact JSON text with its own key, sends form notifications signed over
the sorted pairs without `sign` and `sign_type`, and keeps the trades.

`paying_queries` (None: pay at once; n: WAIT_BUYER_PAY until the n-th
query; -1: for ever), `refuse` (a sub_code for the next call) and `down`
(answer 500) set what it answers.

Given `auth_tokens` ({app_auth_token: (seller PID, auth_app_id)}), it
takes the application as a third-party application (ISV) of those
merchants: every call must carry a known `app_auth_token` among its
signed common parameters (`20001` `aop.invalid-app-auth-token`
otherwise), acts for that token's seller (trades, bills) and notifies
with `seller_id` and `auth_app_id`. It answers
`alipay.open.auth.token.app.query` (the token in biz_content, none among
the common parameters) with the token's `user_id`, `auth_app_id`,
`expires_in`, `auth_start`, `auth_end`, `auth_methods` and `status`
(`invalid` for the tokens of `withdrawn_tokens`), 20001
`aop.invalid-app-auth-token` for an unknown one.

The authorization lifecycle: `approve()` opens an authorization link
(appToAppAuth.htm) as the merchant's account holder and returns Alipay's
redirect with a single-use `app_auth_code` valid a day (`issue_code()`
gives one directly); `alipay.open.auth.token.app` exchanges it
(grant_type authorization_code) or a refresh token (refresh_token) for a
new token and refresh token, at the answer's top level and in `tokens`;
a refresh replaces the refresh token at once and the token after 10
minutes; `withdraw()` cancels an authorization; `auth_ends` sets the
auth_end the query gives. Refusals come as `error_response`
(isv.code-invalid, isv.refresh-token-invalid, ...).
`grant()` gives an authorization and `auth_notification()` the notice
(open_app_auth_notify) Alipay posts of it to the application's gateway,
`auth_cancelled()` withdraws one and gives the message of its
cancellation (alipay.open.auth.appauth.cancelled), both signed as a
payment notification is (`forge`: with another key).

In-app: it makes `alipay.trade.create` trades (JSAPI_PAY) bound to their
buyer and mini program, and `client_pays` acts as the Alipay client that
pays them (my.tradePay {tradeNO}) or opens a mobile app's order string
(alipay.trade.app.pay), verified as Alipay verifies a request. Its
`get_auth_code` is my.getAuthCode: a code bound to one application and
user, single use, AUTH_CODE_TTL, that `alipay.system.oauth.token`
(grant_type and code among the signed common parameters) turns into the
`user_id` or `open_id`, for the calling application or, with an
app_auth_token, the token's authorizing application; its failures come as
`error_response`. `GET /oauth2/publicAppAuthorize.htm` (beside
/gateway.do) plays openauth.alipay.com's web page authorization for the
user `authorize_user`: 302 back to redirect_uri with app_id, source,
scope, an auth_code and the state.

With `cert_mode`, it is an application in public key certificate mode
(公钥证书模式): it makes a root CA (and a non-RSA root, which the root SN
leaves out), an intermediate CA, Alipay's certificate and the
application's certificate per run, refuses requests whose app_cert_sn or
alipay_root_cert_sn are not those certificates' SNs, signs its answers
and notifications with the key of its certificate and names it in
`alipay_cert_sn`; `rotate()` renews its certificate, `forge_answers`
signs answers with another key."""
import base64
import datetime as dt
import hashlib
import io
import json
import secrets
import threading
import urllib.parse
import zipfile
from decimal import ROUND_HALF_UP, Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding
from cryptography.x509.oid import NameOID

from .sim_wechat import new_key, private_pem, public_pem, sign

BEIJING = dt.timezone(dt.timedelta(hours=8))
# Alipay's answer to an unknown, expired or withdrawn app_auth_token
INVALID_AUTH_TOKEN = {
    'code': '20001', 'msg': 'Insufficient Token Permissions',
    'sub_code': 'aop.invalid-app-auth-token',
    'sub_msg': '无效的应用授权令牌'}
# the query of an authorization: the token is its subject, not a common
# parameter
AUTH_TOKEN_QUERY = 'alipay.open.auth.token.app.query'
# how long the simulated authorizations last (Alipay's are given for a
# year, as its expires_in examples show)
AUTH_SECONDS = 365 * 24 * 3600
# the exchange of an operator's authorization code or refresh token
# (alipay.open.auth.token.app); the code is valid a day and once, the old
# token 10 minutes after a refresh (Alipay's API page and FAQ); failures
# come as error_response (sub codes of Alipay's token errors:
# isv.code-invalid, isv.refresh-token-invalid, isv.refresh-token-time-out)
AUTH_TOKEN_APP = 'alipay.open.auth.token.app'
APP_AUTH_CODE_TTL = 24 * 3600
REFRESH_GRACE = 600
REFRESH_SECONDS = 372 * 24 * 3600
# Alipay's authorization page of third-party applications
AUTHORIZE_URL = 'https://openauth.alipay.com/oauth2/appToAppAuth.htm'
# an auth code of my.getAuthCode is valid this long (5 minutes assumed,
# as WeChat's; Alipay's page on its errors says at most 24 hours) and once
AUTH_CODE_TTL = 300
# openauth.alipay.com's web page authorization (网页授权), played here too
AUTHORIZE_PATH = '/oauth2/publicAppAuthorize.htm'
# certificate mode: Alipay's answers to a request without or with unknown
# certificate SNs (sub codes as Alipay's SDKs and users report them:
# isv.app-cert-not-exist "应用公钥证书不存在" for an SN Alipay does not
# know, isv.invalid-alipay-root-cert-sn "无效支付宝根证书序列号")
CERT_ERRORS = {
    'missing_app': 'isv.missing-app-cert-sn',
    'missing_root': 'isv.missing-alipay-root-cert-sn',
    'app': 'isv.app-cert-not-exist',
    'root': 'isv.invalid-alipay-root-cert-sn',
    }
# the issuer names of Alipay's CAs (as in its certificates)
ROOT_NAME = "Ant Financial Certification Authority R1"
CLASS2_NAME = "Ant Financial Certification Authority Class 2 R1"
# the service fee rate of the simulated merchant (0.6 %)
FEE_RATE = Decimal('0.006')
BILL_HEADER = (
    '支付宝交易号,商户订单号,业务类型,商品名称,创建时间,完成时间,门店编号,'
    '门店名称,操作员,终端号,对方账户,订单金额（元）,商家实收（元）,'
    '支付宝红包（元）,集分宝（元）,支付宝优惠（元）,商家优惠（元）,'
    '券核销金额（元）,券名称,商家红包消费金额（元）,卡消费金额（元）,'
    '退款批次号/请求号,服务费（元）,分润（元）,备注')


def fee_of(amount):
    return (amount * FEE_RATE).quantize(
        Decimal('0.01'), rounding=ROUND_HALF_UP)


def now_text():
    return dt.datetime.now(BEIJING).strftime('%Y-%m-%d %H:%M:%S')


def ca_name(common_name):
    return x509.Name([
            x509.NameAttribute(NameOID.COUNTRY_NAME, 'CN'),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, 'Ant Financial'),
            x509.NameAttribute(
                NameOID.ORGANIZATIONAL_UNIT_NAME, 'Certification Authority'),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
            ])


def issue(subject, key, issuer, issuer_key, ca=False):
    "A certificate of key for subject signed by issuer_key"
    now = dt.datetime.now(dt.UTC)
    return (x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=365))
        .add_extension(
            x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .sign(issuer_key, hashes.SHA256()))


def cert_pem(*certificates):
    return ''.join(
        c.public_bytes(serialization.Encoding.PEM).decode()
        for c in certificates)


def cert_sn(certificate):
    """The SN Alipay gives a certificate: md5 of its issuer's name written
    as RFC 2253 does (CN=..,OU=..,O=..,C=..) followed by its decimal
    serial number"""
    return hashlib.md5((
            certificate.issuer.rfc4514_string()
            + str(certificate.serial_number)).encode()).hexdigest()


def root_sn(certificates):
    "The SNs of the RSA-signed certificates of the root file, joined by _"
    return '_'.join(
        cert_sn(c) for c in certificates
        if c.signature_algorithm_oid.dotted_string.startswith(
            '1.2.840.113549.1.1.'))


def parse_time(text):
    return dt.datetime.strptime(text, '%Y-%m-%d %H:%M:%S').replace(
        tzinfo=BEIJING)


class ClientRefused(Exception):
    "The Alipay client does not pay: the sub code it shows"


class Trade:
    def __init__(self, biz, kind, seller=None):
        self.biz = biz
        self.kind = kind
        # ISV: the (seller PID, auth_app_id) of the token that made it
        self.seller = seller
        self.out_trade_no = biz['out_trade_no']
        self.total = Decimal(biz['total_amount'])
        self.trade_no = dt.datetime.now().strftime('%Y%m%d') + (
            '2200' + secrets.token_hex(8))[:20]
        self.status = 'WAIT_BUYER_PAY'
        self.gmt_payment = None
        self.queries = 0
        self.refunds = {}
        self.refund_times = {}
        self.qr_code = None
        self.notify_url = None
        # in-app: who may pay it, in which application
        self.buyer = None
        self.app = None

    def expire(self):
        "Close the trade unpaid once its time_expire is past"
        expire = self.biz.get('time_expire')
        if (self.status == 'WAIT_BUYER_PAY' and expire
                and parse_time(expire) <= dt.datetime.now(BEIJING)):
            self.status = 'TRADE_CLOSED'

    def same(self, biz):
        keys = ['subject', 'total_amount', 'auth_code']
        return all(self.biz.get(k) == biz.get(k) for k in keys)

    def pay(self):
        self.status = 'TRADE_SUCCESS'
        self.gmt_payment = now_text()

    def values(self):
        result = {
            'trade_no': self.trade_no,
            'out_trade_no': self.out_trade_no,
            'trade_status': self.status,
            'total_amount': str(self.total),
            'buyer_logon_id': 'sim***@example.com',
            }
        if self.gmt_payment:
            result['send_pay_date'] = self.gmt_payment
        return result


class AlipaySimulator:

    def __init__(self, app_id='2021000000000001', pid='2088000000000001',
            auth_tokens=None, cert_mode=False):
        self.app_id = app_id
        self.pid = pid
        self.auth_tokens = dict(auth_tokens or {})
        # tokens the operators withdrew: the query says status invalid
        self.withdrawn_tokens = set()
        # the ISV authorization lifecycle: codes of the merchants'
        # approvals {code: {seller, apps, used, expires}}, refresh tokens
        # {refresh token: (token, expires)}, the end of a token replaced
        # by a refresh {token: datetime}, the auth_end the query gives
        # {token: datetime} (a year from now otherwise)
        self.app_auth_codes = {}
        self.refresh_tokens = {}
        self.token_ends = {}
        self.auth_ends = {}
        self.app_key = new_key()
        self.alipay_key = new_key()
        self.cert_mode = cert_mode
        self.forge_answers = False
        # the common parameters of the requests (without sign)
        self.calls = []
        if cert_mode:
            self.make_certificates()
        self.trades = {}
        self.requests = []
        self.paying_queries = None
        self.refuse = None
        self.down = False
        self.lock = threading.Lock()
        self.server = None
        self.bills = {}
        # alipay.system.oauth.token: {code: {app, user, used, expires}}
        self.auth_codes = {}
        # the Alipay user who passes the web page authorization
        self.authorize_user = None

    # ---- the client's auth codes (my.getAuthCode) -------------------

    def get_auth_code(self, app, user):
        """The authCode my.getAuthCode (scope auth_base) gives user (a 2088
        user id or an open id) in the mini program (life account) app:
        single use, valid AUTH_CODE_TTL"""
        code = secrets.token_hex(16)
        self.auth_codes[code] = {
            'app': app, 'user': user, 'used': False,
            'expires': dt.datetime.now() + dt.timedelta(
                seconds=AUTH_CODE_TTL),
            }
        return code

    def authorize(self, request, url):
        """publicAppAuthorize.htm as Alipay's client meets it for the user
        `authorize_user`: the application app_id, scope auth_base or
        auth_user, then 302 to redirect_uri with app_id, source, scope, a
        new auth_code (get_auth_code) and the state; 400 otherwise"""
        query = dict(urllib.parse.parse_qsl(url.query))
        redirect_uri = query.get('redirect_uri', '')
        if (not query.get('app_id')
                or query.get('scope') not in {'auth_base', 'auth_user'}
                or not redirect_uri.startswith(('http://', 'https://'))
                or not self.authorize_user):
            request.send_response(400)
            request.send_header('Content-Length', '0')
            request.end_headers()
            return
        back = {
            'app_id': query['app_id'],
            'source': 'alipay_wallet',
            'scope': query['scope'],
            'auth_code': self.get_auth_code(
                query['app_id'], self.authorize_user),
            }
        if 'state' in query:
            back['state'] = query['state']
        separator = '&' if '?' in redirect_uri else '?'
        request.send_response(302)
        request.send_header(
            'Location',
            redirect_uri + separator + urllib.parse.urlencode(back))
        request.send_header('Content-Length', '0')
        request.end_headers()

    def expire_auth_code(self, code):
        self.auth_codes[code]['expires'] = dt.datetime.now() - (
            dt.timedelta(seconds=1))

    def start(self):
        simulator = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                simulator.handle(self)

            def do_POST(self):
                simulator.handle(self)

            def log_message(self, format, *args):
                pass

        self.server = ThreadingHTTPServer(('127.0.0.1', 0), Handler)
        threading.Thread(
            target=self.server.serve_forever, daemon=True).start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()

    @property
    def url(self):
        return 'http://127.0.0.1:%s/gateway.do' % (
            self.server.server_address[1])

    def gateway_values(self, auth_token=None):
        """The values of a fuel.payment.gateway; with auth_token an ISV
        gateway of that token's seller; in certificate mode with the
        certificates and no public key"""
        if auth_token:
            seller, _ = self.auth_tokens[auth_token]
            return dict(self.gateway_values(), merchant=seller,
                app_auth_token=auth_token)
        values = {
            'channel': 'alipay',
            'merchant': self.pid,
            'app': self.app_id,
            'private_key': private_pem(self.app_key),
            'platform_key': public_pem(self.alipay_key),
            'url': self.url,
            'notify_url': 'https://fuel.example.com/db/fuel_payment/notify/2',
            }
        if self.cert_mode:
            values.update(platform_key=None, **self.certificates())
        return values

    # ---- certificate mode ------------------------------------------------

    def make_certificates(self):
        self.root_key = new_key()
        root = issue(
            ca_name(ROOT_NAME), self.root_key, ca_name(ROOT_NAME),
            self.root_key, ca=True)
        # Alipay's root file also holds a non-RSA (SM2) root: ECDSA here
        other_key = ec.generate_private_key(ec.SECP256R1())
        other_name = ca_name("iTrusChina Class 2 Root CA - G3")
        other = issue(other_name, other_key, other_name, other_key, ca=True)
        self.roots = [other, root]
        self.class2_key = new_key()
        self.class2 = issue(
            ca_name(CLASS2_NAME), self.class2_key, ca_name(ROOT_NAME),
            self.root_key, ca=True)
        self.app_cert = self.leaf(self.app_id, self.app_key)
        self.rotate(self.alipay_key)

    def leaf(self, name, key):
        return issue(
            x509.Name([
                    x509.NameAttribute(NameOID.COUNTRY_NAME, 'CN'),
                    x509.NameAttribute(NameOID.ORGANIZATION_NAME, name),
                    x509.NameAttribute(NameOID.COMMON_NAME, name),
                    ]),
            key, ca_name(CLASS2_NAME), self.class2_key)

    def rotate(self, key=None):
        """Renew Alipay's certificate (a new key unless given): answers and
        notifications are signed with the new one"""
        self.alipay_key = key or new_key()
        self.alipay_cert = self.leaf('Alipay', self.alipay_key)

    def certificates(self):
        """The three certificates as Alipay gives them: the leaf with its
        CA, the root file's certificates one after the other"""
        return {
            'app_cert': cert_pem(self.app_cert, self.class2),
            'platform_cert': cert_pem(self.alipay_cert, self.class2),
            'root_cert': cert_pem(*self.roots),
            }

    def check_certificates(self, params):
        "Return the failure of a request's certificate SNs, or None"
        if not self.cert_mode:
            return None
        if not params.get('app_cert_sn'):
            error = 'missing_app'
        elif not params.get('alipay_root_cert_sn'):
            error = 'missing_root'
        elif params['app_cert_sn'] != cert_sn(self.app_cert):
            error = 'app'
        elif params['alipay_root_cert_sn'] != root_sn(self.roots):
            error = 'root'
        else:
            return None
        return {
            'code': '40002', 'msg': 'Invalid Arguments',
            'sub_code': CERT_ERRORS[error], 'sub_msg': CERT_ERRORS[error]}

    # ---- HTTP ------------------------------------------------------------

    def handle(self, request):
        url = urllib.parse.urlsplit(request.path)
        if url.path == AUTHORIZE_PATH:
            with self.lock:
                self.authorize(request, url)
            return
        if url.path == '/bill':
            token = urllib.parse.parse_qs(url.query).get('token', [''])[0]
            content = self.bills.pop(token, b'')
            request.send_response(200 if content else 404)
            request.send_header('Content-Type', 'application/zip')
            request.send_header('Content-Length', str(len(content)))
            request.end_headers()
            request.wfile.write(content)
            return
        length = int(request.headers.get('Content-Length') or 0)
        query = url.query
        if length:
            query += '&' + request.rfile.read(length).decode()
        params = dict(urllib.parse.parse_qsl(query, keep_blank_values=True))
        with self.lock:
            self.requests.append(params.get('method'))
            if self.down:
                request.send_response(500)
                request.end_headers()
                return
            method = params.get('method', '')
            response_type = method.replace('.', '_') + '_response'
            self.calls.append({
                    k: v for k, v in params.items() if k != 'sign'})
            failure = self.check_certificates(params)
            if failure:
                self.answer(request, response_type, failure)
                return
            if not self.verify(params):
                self.answer(request, response_type, {
                        'code': '40002', 'msg': 'Invalid Arguments',
                        'sub_code': 'isv.invalid-signature',
                        'sub_msg': '验签出错'})
                return
            biz = json.loads(params.get('biz_content') or '{}')
            seller = None
            if self.auth_tokens and method not in {
                    AUTH_TOKEN_QUERY, AUTH_TOKEN_APP}:
                seller = self.token_seller(params.get('app_auth_token'))
                if seller is None:
                    self.answer(request, response_type, INVALID_AUTH_TOKEN)
                    return
            params['seller'] = seller
            if self.refuse:
                sub_code, self.refuse = self.refuse, None
                self.answer(request, response_type, self.failure(sub_code))
                return
            handler = getattr(self, method.replace('.', '_'), None)
            if handler is None:
                self.answer(request, response_type, {
                        'code': '40004', 'msg': 'Business Failed',
                        'sub_code': 'isv.invalid-method'})
                return
            data = handler(biz, params)
            # a few methods answer their failures as error_response
            self.answer(
                request, data.pop('_response', response_type), data)

    def verify(self, params):
        params = dict(params)
        signature = params.pop('sign', '')
        if (params.get('app_id') != self.app_id
                or params.get('sign_type') != 'RSA2'):
            return False
        message = '&'.join('%s=%s' % kv for kv in sorted(params.items()))
        try:
            self.app_key.public_key().verify(
                base64.b64decode(signature), message.encode(),
                padding.PKCS1v15(), hashes.SHA256())
        except (ValueError, InvalidSignature):
            return False
        return True

    def answer(self, request, response_type, data):
        text = json.dumps(data, ensure_ascii=False, separators=(',', ':'))
        key = new_key() if self.forge_answers else self.alipay_key
        if self.cert_mode:
            # the certificate whose key signed the answer
            body = '{"%s":%s,"alipay_cert_sn":"%s","sign":"%s"}' % (
                response_type, text, cert_sn(self.alipay_cert),
                sign(key, text))
        else:
            body = '{"%s":%s,"sign":"%s"}' % (
                response_type, text, sign(key, text))
        body = body.encode()
        request.send_response(200)
        request.send_header('Content-Type', 'text/html;charset=utf-8')
        request.send_header('Content-Length', str(len(body)))
        request.end_headers()
        request.wfile.write(body)

    @staticmethod
    def failure(sub_code):
        return {
            'code': '40004', 'msg': 'Business Failed',
            'sub_code': sub_code, 'sub_msg': sub_code}

    @staticmethod
    def success(values):
        return dict({'code': '10000', 'msg': 'Success'}, **values)

    # ---- methods -----------------------------------------------------

    def find(self, biz, params):
        "The trade of biz's out_trade_no made for the request's seller"
        trade = self.trades.get(biz.get('out_trade_no'))
        if trade is not None and trade.seller == params['seller']:
            return trade
        return None

    def alipay_trade_pay(self, biz, params):
        trade = self.find(biz, params)
        if trade is None:
            if not (biz.get('auth_code', '')[:2] in {
                        '25', '26', '27', '28', '29', '30'}
                    and 16 <= len(biz['auth_code']) <= 24):
                return self.failure('ACQ.PAYMENT_AUTH_CODE_INVALID')
            trade = Trade(biz, 'code', params['seller'])
            self.trades[trade.out_trade_no] = trade
            if self.paying_queries is None:
                trade.pay()
        elif not trade.same(biz):
            return self.failure('ACQ.CONTEXT_INCONSISTENT')
        values = trade.values()
        if trade.status == 'WAIT_BUYER_PAY':
            return dict(
                values, code='10003', msg='order success pay inprocess')
        if trade.status == 'TRADE_CLOSED':
            return self.failure('ACQ.TRADE_HAS_CLOSE')
        return self.success(dict(values, gmt_payment=trade.gmt_payment))

    def alipay_trade_precreate(self, biz, params):
        trade = self.find(biz, params)
        if trade is not None and not trade.same(biz):
            return self.failure('ACQ.CONTEXT_INCONSISTENT')
        if trade is None:
            trade = Trade(biz, 'qr', params['seller'])
            trade.notify_url = params.get('notify_url')
            trade.qr_code = 'https://qr.alipay.com/%s' % (
                secrets.token_hex(8))
            self.trades[trade.out_trade_no] = trade
        return self.success({
                'out_trade_no': trade.out_trade_no,
                'qr_code': trade.qr_code})

    def alipay_trade_create(self, biz, params):
        """A trade a mini program or life account page pays (my.tradePay
        with its trade_no), for the buyer it names (buyer_id: a 2088 user
        id, buyer_open_id: an open id)"""
        if biz.get('product_code') != 'JSAPI_PAY' or not (
                biz.get('subject') and biz.get('total_amount')):
            return self.failure('ACQ.INVALID_PARAMETER')
        buyer_id, open_id = biz.get('buyer_id'), biz.get('buyer_open_id')
        if bool(buyer_id) == bool(open_id) or (
                buyer_id and not (
                    buyer_id.startswith('2088') and len(buyer_id) == 16
                    and buyer_id.isdigit())):
            return self.failure('ACQ.INVALID_PARAMETER')
        trade = self.find(biz, params)
        if trade is not None and not trade.same(biz):
            return self.failure('ACQ.CONTEXT_INCONSISTENT')
        if trade is None:
            trade = Trade(biz, 'create', params['seller'])
            trade.notify_url = params.get('notify_url')
            trade.buyer = buyer_id or open_id
            trade.app = biz.get('op_app_id') or params['app_id']
            self.trades[trade.out_trade_no] = trade
        return self.success({
                'out_trade_no': trade.out_trade_no,
                'trade_no': trade.trade_no})

    def alipay_open_auth_token_app_query(self, biz, params):
        token = biz.get('app_auth_token')
        if self.token_seller(token) is None:
            return INVALID_AUTH_TOKEN
        seller, app = self.auth_tokens[token]
        start = dt.datetime.now(BEIJING)
        end = self.auth_ends.get(token) or (
            start + dt.timedelta(seconds=AUTH_SECONDS))
        return self.success({
                'user_id': seller,
                'auth_app_id': app,
                'expires_in': AUTH_SECONDS,
                'auth_methods': ['alipay.trade.pay', 'alipay.trade.refund'],
                'auth_start': start.strftime('%Y-%m-%d %H:%M:%S'),
                'auth_end': end.strftime('%Y-%m-%d %H:%M:%S'),
                'status': (
                    'invalid' if token in self.withdrawn_tokens
                    else 'valid'),
                })

    def alipay_system_oauth_token(self, biz, params):
        """The user of an auth code: grant_type and code are common
        (signed) parameters, not biz_content; the code must be of the
        calling application, or of the authorizing application of the
        app_auth_token (ISV); failures come as error_response (as
        python-alipay-sdk's docstring shows one: 40002
        isv.code-invalid)"""
        def refused(sub_code, sub_msg):
            return {
                '_response': 'error_response', 'code': '40002',
                'msg': 'Invalid Arguments', 'sub_code': sub_code,
                'sub_msg': sub_msg}

        if params.get('grant_type') != 'authorization_code':
            return refused('isv.grant-type-invalid', "grant_type参数不正确")
        code = self.auth_codes.get(params.get('code', ''))
        if code is None or code['used'] or (
                code['expires'] < dt.datetime.now()):
            return refused(
                'isv.code-invalid', "授权码(auth_code) 错误、状态不对或过期")
        app = params['seller'][1] if params['seller'] else params['app_id']
        if code['app'] != app:
            return refused(
                'isv.unmatched-app-id',
                "调用接口的应用标识(app_id)与令牌授权的应用不相符")
        code['used'] = True
        user = code['user']
        values = {
            'access_token': 'authusrB' + secrets.token_hex(16),
            'expires_in': 1296000,
            'refresh_token': 'authusrB' + secrets.token_hex(16),
            're_expires_in': 2592000,
            'auth_start': now_text(),
            }
        if user.startswith('2088'):
            values['user_id'] = user
        else:
            values['open_id'] = user
        # the success carries no code (as the API page's example; the
        # provider takes 10000 too)
        return values

    # ---- the ISV authorization lifecycle ------------------------------

    def token_seller(self, token):
        """The (seller PID, auth_app_id) of an app_auth_token, or None when
        Alipay does not know it (any more: replaced by a refresh 10
        minutes ago)"""
        end = self.token_ends.get(token)
        if end is not None and end <= dt.datetime.now():
            return None
        return self.auth_tokens.get(token)

    def issue_code(self, seller, *apps):
        """The app_auth_code Alipay gives when the merchant seller approves
        the platform's application for its applications apps (one; several
        for a batch authorization): once, within a day"""
        code = secrets.token_hex(16)
        self.app_auth_codes[code] = {
            'seller': seller, 'apps': apps, 'used': False,
            'expires': dt.datetime.now() + dt.timedelta(
                seconds=APP_AUTH_CODE_TTL)}
        return code

    def approve(self, url, seller, *apps):
        """Open the authorization link url as the account holder of seller
        does and approve it for apps: return where Alipay sends the
        browser (redirect_uri with app_id, app_auth_code and state)"""
        split = urllib.parse.urlsplit(url)
        query = dict(urllib.parse.parse_qsl(split.query))
        if (f'{split.scheme}://{split.netloc}{split.path}' != AUTHORIZE_URL
                or query.get('app_id') != self.app_id
                or not query.get('redirect_uri')):
            raise ClientRefused('invalid authorization link')
        redirect = {
            'app_id': self.app_id,
            'app_auth_code': self.issue_code(seller, *apps)}
        if 'state' in query:
            redirect['state'] = query['state']
        return query['redirect_uri'] + '?' + urllib.parse.urlencode(
            redirect)

    def withdraw(self, token):
        "The merchant cancels its authorization: the token is refused"
        self.withdrawn_tokens.add(token)
        self.token_ends[token] = dt.datetime.now()

    def new_tokens(self, seller, app):
        token = dt.datetime.now().strftime('%Y%m') + 'BB' + (
            secrets.token_hex(16))
        refresh = dt.datetime.now().strftime('%Y%m') + 'BB' + (
            secrets.token_hex(16))
        self.auth_tokens[token] = (seller, app)
        self.refresh_tokens[refresh] = (token, dt.datetime.now()
            + dt.timedelta(seconds=REFRESH_SECONDS))
        return {
            'app_auth_token': token,
            'app_refresh_token': refresh,
            'auth_app_id': app,
            'user_id': seller,
            'expires_in': AUTH_SECONDS,
            're_expires_in': REFRESH_SECONDS,
            }

    def alipay_open_auth_token_app(self, biz, params):
        """Exchange an approval's code (grant_type authorization_code) or
        a refresh token (refresh_token) for a new token and refresh token:
        at the answer's top level and in `tokens` (as Alipay's newer
        answers), in `tokens` only for a batch authorization; a refresh
        replaces the token (the old one works 10 more minutes) and the
        refresh token"""
        def refused(sub_code, sub_msg):
            return {
                '_response': 'error_response', 'code': '40002',
                'msg': 'Invalid Arguments', 'sub_code': sub_code,
                'sub_msg': sub_msg}

        now = dt.datetime.now()
        if biz.get('grant_type') == 'authorization_code':
            code = self.app_auth_codes.get(biz.get('code') or '')
            if code is None or code['used'] or code['expires'] <= now:
                return refused('isv.code-invalid', '授权码code无效')
            code['used'] = True
            # the authorization its notice already gave (grant())
            entries = code.get('entries') or [
                self.new_tokens(code['seller'], a) for a in code['apps']]
        elif biz.get('grant_type') == 'refresh_token':
            refresh = self.refresh_tokens.pop(
                biz.get('refresh_token') or '', None)
            if refresh is None:
                return refused(
                    'isv.refresh-token-invalid', '刷新令牌错误或状态不对')
            token, expires = refresh
            if expires <= now:
                return refused('isv.refresh-token-time-out', '刷新令牌过期')
            if self.token_seller(token) is None:
                return refused('isv.refresh-token-invalid', '授权已失效')
            entries = [self.new_tokens(*self.auth_tokens[token])]
            self.token_ends[token] = now + dt.timedelta(
                seconds=REFRESH_GRACE)
        else:
            return refused('isv.grant-type-invalid', 'grant_type参数不正确')
        if len(entries) > 1:
            return self.success({'tokens': entries})
        return self.success(dict(entries[0], tokens=entries))

    def alipay_trade_query(self, biz, params):
        trade = self.find(biz, params)
        if trade is None:
            return self.failure('ACQ.TRADE_NOT_EXIST')
        trade.expire()
        trade.queries += 1
        if (trade.status == 'WAIT_BUYER_PAY' and trade.kind == 'code'
                and self.paying_queries is not None
                and self.paying_queries >= 0
                and trade.queries >= self.paying_queries):
            trade.pay()
        return self.success(trade.values())

    def alipay_trade_cancel(self, biz, params):
        trade = self.find(biz, params)
        if trade is None:
            return self.failure('ACQ.TRADE_NOT_EXIST')
        action = 'refund' if trade.status == 'TRADE_SUCCESS' else 'close'
        trade.status = 'TRADE_CLOSED'
        return self.success({
                'out_trade_no': trade.out_trade_no,
                'trade_no': trade.trade_no, 'retry_flag': 'N',
                'action': action})

    def alipay_trade_close(self, biz, params):
        trade = self.find(biz, params)
        if trade is None:
            return self.failure('ACQ.TRADE_NOT_EXIST')
        if trade.status != 'WAIT_BUYER_PAY':
            return self.failure('ACQ.TRADE_STATUS_ERROR')
        trade.status = 'TRADE_CLOSED'
        return self.success({
                'out_trade_no': trade.out_trade_no,
                'trade_no': trade.trade_no})

    def alipay_trade_refund(self, biz, params):
        trade = self.find(biz, params)
        if trade is None or trade.status not in {
                'TRADE_SUCCESS', 'TRADE_CLOSED'} or not trade.gmt_payment:
            return self.failure('ACQ.TRADE_NOT_EXIST')
        number = biz.get('out_request_no') or trade.out_trade_no
        amount = Decimal(biz['refund_amount'])
        change = 'N'
        if number not in trade.refunds:
            if sum(trade.refunds.values()) + amount > trade.total:
                return self.failure('ACQ.REFUND_AMT_NOT_EQUAL_TOTAL')
            trade.refunds[number] = amount
            trade.refund_times[number] = now_text()
            change = 'Y'
            if sum(trade.refunds.values()) == trade.total:
                trade.status = 'TRADE_CLOSED'
        return self.success({
                'trade_no': trade.trade_no,
                'out_trade_no': trade.out_trade_no,
                'fund_change': change,
                'refund_fee': str(sum(trade.refunds.values())),
                'gmt_refund_pay': now_text()})

    # ---- the Alipay client (my.tradePay, the app SDK) ------------------

    def client_pays(self, params, buyer=None, app=None):
        """Pay as the Alipay client given the client parameters of an
        in-app payment: {tradeNO} by buyer in the mini program app, or
        {orderStr} opened in the mobile app; return the paid trade or
        raise ClientRefused"""
        with self.lock:
            if 'orderStr' in params:
                trade = self.open_order(params['orderStr'])
            elif 'url' in params:
                # the phone's browser opens the signed wap.pay address
                trade = self.open_order(
                    urllib.parse.urlsplit(params['url']).query, wap=True)
            else:
                trades = [
                    t for t in self.trades.values()
                    if t.trade_no == params.get('tradeNO')]
                if not trades:
                    raise ClientRefused('ACQ.TRADE_NOT_EXIST')
                trade, = trades
                if buyer != trade.buyer:
                    raise ClientRefused('ACQ.BUYER_NOT_MATCH')
                if app is not None and app != trade.app:
                    raise ClientRefused('ACQ.APP_NOT_MATCH')
            trade.expire()
            if trade.status != 'WAIT_BUYER_PAY':
                raise ClientRefused('ACQ.TRADE_STATUS_ERROR')
            trade.pay()
            return trade

    def open_order(self, order, wap=False):
        """The trade of a mobile app's order string, verified as a request:
        the app's RSA2 signature over the sorted k=v of the url-decoded
        parameters without sign, the certificate SNs in certificate mode"""
        params = dict(urllib.parse.parse_qsl(order, keep_blank_values=True))
        failure = self.check_certificates(params)
        if failure:
            raise ClientRefused(failure['sub_code'])
        method = 'alipay.trade.wap.pay' if wap else 'alipay.trade.app.pay'
        if not self.verify(params) or params.get('method') != method:
            raise ClientRefused('isv.invalid-signature')
        seller = None
        if self.auth_tokens:
            seller = self.auth_tokens.get(params.get('app_auth_token'))
            if seller is None:
                raise ClientRefused(INVALID_AUTH_TOKEN['sub_code'])
        biz = json.loads(params['biz_content'])
        if biz.get('product_code') != (
                'QUICK_WAP_WAY' if wap else 'QUICK_MSECURITY_PAY'):
            raise ClientRefused('ACQ.INVALID_PARAMETER')
        trade = self.find(biz, {'seller': seller})
        if trade is None:
            trade = Trade(biz, 'app', seller)
            trade.notify_url = params.get('notify_url')
            trade.app = params['app_id']
            self.trades[trade.out_trade_no] = trade
        elif not trade.same(biz):
            raise ClientRefused('ACQ.CONTEXT_INCONSISTENT')
        return trade

    # ---- notifications ---------------------------------------------------

    def pay(self, out_trade_no):
        with self.lock:
            self.trades[out_trade_no].pay()

    def notification(self, out_trade_no, forge=False, notify_id=None,
            seller_id=None, auth_app_id=None):
        """Return (headers, body) of the form Alipay posts to notify_url;
        seller_id (auth_app_id) names another seller (authorizer's
        application) in it (signed as Alipay signs any)"""
        trade = self.trades[out_trade_no]
        params = {
            'notify_time': now_text(),
            'notify_type': 'trade_status_sync',
            'notify_id': notify_id or secrets.token_hex(16),
            'charset': 'utf-8',
            'version': '1.0',
            'app_id': self.app_id,
            'seller_id': trade.seller[0] if trade.seller else self.pid,
            'trade_no': trade.trade_no,
            'out_trade_no': trade.out_trade_no,
            'trade_status': trade.status,
            'total_amount': str(trade.total),
            'receipt_amount': str(trade.total),
            'subject': trade.biz.get('subject', ''),
            'gmt_create': trade.gmt_payment or now_text(),
            }
        if trade.gmt_payment:
            params['gmt_payment'] = trade.gmt_payment
        if trade.seller:
            params['auth_app_id'] = trade.seller[1]
        if seller_id:
            params['seller_id'] = seller_id
        if auth_app_id:
            params['auth_app_id'] = auth_app_id
        message = '&'.join('%s=%s' % kv for kv in sorted(params.items()))
        params['sign'] = sign(new_key() if forge else self.alipay_key, message)
        params['sign_type'] = 'RSA2'
        headers = {
            'Content-Type': 'application/x-www-form-urlencoded; charset=utf-8'}
        return headers, urllib.parse.urlencode(params)

    # ---- the application's gateway (应用网关) -------------------------------

    def app_message(self, params, forge=False):
        """Return (headers, body) of the form Alipay posts to the
        application's gateway: params signed over the sorted pairs without
        sign and sign_type (with another key if forge)"""
        params = dict(params, app_id=params.get('app_id', self.app_id),
            charset='utf-8')
        message = '&'.join('%s=%s' % kv for kv in sorted(params.items()))
        params['sign'] = sign(new_key() if forge else self.alipay_key, message)
        params['sign_type'] = 'RSA2'
        headers = {
            'Content-Type': 'application/x-www-form-urlencoded; charset=utf-8'}
        return headers, urllib.parse.urlencode(params)

    def grant(self, seller, app, code=None):
        """The authorization seller gives for its application app: a new
        token and refresh token; with the code of the approval (issue_code,
        approve) the exchange of that code gives the same ones"""
        entry = self.new_tokens(seller, app)
        if code is not None:
            self.app_auth_codes[code]['entries'] = [entry]
        return entry

    def auth_notification(self, entry, forge=False, notify_id=None,
            status='execute_auth', when=None, code=None):
        """Return (headers, body) of the authorization notice
        (open_app_auth_notify) of entry (grant()) as Alipay posts it to
        the application's gateway, its biz_content's detail as in Alipay's
        examples; when: the auth_time (now)"""
        when = when or dt.datetime.now(dt.UTC)
        detail = {
            'app_auth_token': entry['app_auth_token'],
            'user_id': entry['user_id'],
            're_expires_in': entry['re_expires_in'],
            'auth_time': int(when.timestamp() * 1000),
            'app_refresh_token': entry['app_refresh_token'],
            'auth_app_id': entry['auth_app_id'],
            'app_id': self.app_id,
            'expires_in': entry['expires_in'],
            'app_auth_code': code or secrets.token_hex(16),
            }
        biz = {
            'notify_context': {'trigger': 'auth_link'},
            'detail': detail,
            'error': {},
            }
        return self.app_message({
                'notify_id': notify_id or secrets.token_hex(16),
                'notify_type': 'open_app_auth_notify',
                'notify_time': when.astimezone(BEIJING).strftime(
                    '%Y-%m-%d %H:%M:%S'),
                'status': status,
                'version': '1.0',
                'auth_app_id': entry['auth_app_id'],
                'biz_content': json.dumps(biz, separators=(',', ':')),
                }, forge=forge)

    def auth_cancelled(self, token, forge=False, notify_id=None, when=None):
        """Withdraw the authorization of token (withdraw()) and return
        (headers, body) of the message Alipay's message service posts to
        the application's gateway (msg_method
        alipay.open.auth.appauth.cancelled, version 1.1, utc_timestamp in
        ms); biz_content names the authorizer's auth_app_id, msg_uid and
        msg_app_id the merchant and its application (assumed)"""
        seller, app = self.auth_tokens[token]
        self.withdraw(token)
        when = when or dt.datetime.now(dt.UTC)
        return self.app_message({
                'notify_id': notify_id or secrets.token_hex(16),
                'utc_timestamp': str(int(when.timestamp() * 1000)),
                'msg_method': 'alipay.open.auth.appauth.cancelled',
                'msg_type': 'app',
                'msg_uid': seller,
                'msg_app_id': app,
                'version': '1.1',
                'biz_content': json.dumps(
                    {'auth_app_id': app}, separators=(',', ':')),
                }, forge=forge)

    # ---- bills -----------------------------------------------------------

    def alipay_data_dataservice_bill_downloadurl_query(self, biz, params):
        date = dt.date.fromisoformat(biz['bill_date'])
        token = secrets.token_hex(8)
        self.bills[token] = self.bill(date, params['seller'])
        return self.success({
                'bill_download_url': '%s?token=%s' % (
                    self.url.replace('/gateway.do', '/bill'), token)})

    def bill(self, date, seller=None):
        """Return the zip of the trade bill of date: the GBK CSV of the
        details with its comment lines, and the summary file; of the
        trades made for seller (ISV: (PID, auth_app_id)), else of the
        application's own"""
        day = date.strftime('%Y%m%d')
        pid = seller[0] if seller else self.pid
        rows = []
        paid = refunded = Decimal(0)
        for trade in self.trades.values():
            if not trade.gmt_payment or trade.seller != seller:
                continue
            if trade.gmt_payment.startswith(date.isoformat()):
                rows.append(self.bill_row(
                        trade, '交易', trade.total, '', -fee_of(trade.total),
                        trade.gmt_payment))
                paid += trade.total
            for number, amount in trade.refunds.items():
                when = trade.refund_times[number]
                if when.startswith(date.isoformat()):
                    rows.append(self.bill_row(
                            trade, '退款', -amount, number, fee_of(amount),
                            when))
                    refunded += amount
        detail = '\r\n'.join([
                '#支付宝业务明细查询',
                '#账号：[%s0156]' % pid,
                '#起始日期：[%s 00:00:00]   终止日期：[%s 00:00:00]' % (
                    date.strftime('%Y年%m月%d日'),
                    (date + dt.timedelta(days=1)).strftime('%Y年%m月%d日')),
                '#' + '-' * 40 + '业务明细列表' + '-' * 40,
                BILL_HEADER,
                ] + rows + [
                '#' + '-' * 40 + '业务明细列表结束' + '-' * 36,
                '#交易合计：%s笔，商家实收共：%s元，商家优惠共：0.00元' % (
                    sum(1 for r in rows if ',交易,' in r), paid),
                '#退款合计：%s笔，商家实收退款共：-%s元，商家优惠退款共：0.00元'
                % (sum(1 for r in rows if ',退款,' in r), refunded),
                '#导出时间：[%s]' % dt.datetime.now(BEIJING).strftime(
                    '%Y年%m月%d日 %H:%M:%S'),
                ]) + '\r\n'
        summary = '\r\n'.join([
                '#支付宝业务汇总查询',
                '门店编号,门店名称,交易订单总笔数,退款订单总笔数,订单金额（元）',
                '合计,,%s,%s,%s' % (len(rows), 0, paid - refunded),
                ]) + '\r\n'
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, 'w', zipfile.ZIP_DEFLATED) as archive:
            prefix = '%s0156_%s' % (pid, day)
            archive.writestr(
                prefix + '_业务明细.csv', detail.encode('gbk'))
            archive.writestr(
                prefix + '_业务明细(汇总).csv', summary.encode('gbk'))
        return buffer.getvalue()

    def bill_row(self, trade, kind, amount, number, fee, when):
        values = [
            trade.trade_no + '\t', trade.out_trade_no + '\t', kind,
            trade.biz.get('subject', ''), trade.gmt_payment, when,
            trade.biz.get('store_id', ''), '', '', '',
            'sim***@example.com', str(amount), str(amount), '0.00',
            '0.00', '0.00', '0.00', '0.00', '', '0.00', '0.00',
            number + '\t' if number else '', str(fee), '0.00', '']
        return ','.join(values)
