# This file is part of fuelpay.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""A WeChat Pay API v3 gateway on 127.0.0.1 for the tests

It checks the merchant's request signature as WeChat does
(WECHATPAY2-SHA256-RSA2048 over `METHOD\\nPATH?QUERY\\nTIMESTAMP\\nNONCE\\n
BODY\\n`), signs its answers with its platform key (platform public key
mode: `Wechatpay-Serial` is the key id), encrypts notifications with
AEAD_AES_256_GCM under the APIv3 key and keeps the orders it was given.

What it answers is set on the object: `paying_queries` (None: pay at
once; n: USERPAYING until the n-th query; -1: USERPAYING for ever),
`refuse` (an error code for the next call), `down` (answer 500).

Given `sub_mchids`, it is a service provider's (服务商) gateway too: the
partner paths (`/v3/pay/partner/transactions/...`) want `sp_mchid` (the
signing merchant), `sp_appid` where WeChat requires it and a `sub_mchid`
bound to it (403 `NO_AUTH` 受理关系不存在 otherwise); refunds and bills
take `sub_mchid`; an order is found only under the sub-merchant that
made it; partner notifications and bills carry sp_/sub_ fields.

With `cert_mode` it is in platform certificate mode (平台证书模式): it
makes a platform certificate (RSA 2048, its serial in hex) per run, signs
answers and notifications with its key (`Wechatpay-Serial` the serial) and
serves `GET /v3/certificates` (each certificate AEAD_AES_256_GCM under the
APIv3 key, associated_data "certificate", the answer signed by the newest);
`rotate()` adds a new certificate that signs from then on (both listed, as
during WeChat's rotation); `certificates_api_key` and
`certificates_signer` forge the list (another key, another signer).

It is api.weixin.qq.com too (same host): `GET /sns/jscode2session` (a
mini program's wx.login code) and `GET /sns/oauth2/access_token` (the
code an official account page gets from WeChat's authorization redirect)
check `appid` and `secret` (the AppSecrets of `app_secrets`, 40013 /
40125 otherwise) and answer the openid the code was issued for: codes
come from `wx_login` / `oauth_code` (the client's side), are bound to one
app and one kind, single use (40163) and expire after LOGIN_CODE_TTL
(40029, as an unknown code); `login_error` sets the errcode of the next
login call (45011, -1). These answers are not signed (WeChat signs only
WeChat Pay's). `GET /connect/oauth2/authorize` plays open.weixin.qq.com's
web page authorization for the user `authorize_openid`: 302 back to
redirect_uri with a code and the state."""
import base64
import datetime as dt
import gzip
import hashlib
import json
import secrets
import threading
import time
import urllib.parse
from decimal import ROUND_HALF_UP, Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

# the largest clock difference WeChat accepts in a request signature
MAX_SKEW = 300
# a login code (wx.login, the OAuth redirect) is valid this many seconds
# (WeChat's login guide: 5 minutes) and once
LOGIN_CODE_TTL = 300
LOGIN_PATHS = {
    '/sns/jscode2session': ('mini_program', 'js_code'),
    '/sns/oauth2/access_token': ('jsapi', 'code'),
    }
# open.weixin.qq.com's web page authorization (网页授权), played here too
AUTHORIZE_PATH = '/connect/oauth2/authorize'
PARTNER = '/v3/pay/partner/transactions'
DIRECT = '/v3/pay/transactions'
# the fee rate the simulated merchant pays (0.6 %), rounded to the fen
FEE_RATE = Decimal('0.006')
BEIJING = dt.timezone(dt.timedelta(hours=8))
BILL_HEADER = (
    '交易时间,公众账号ID,商户号,特约商户号,设备号,微信订单号,商户订单号,'
    '用户标识,交易类型,交易状态,付款银行,货币种类,应结订单金额,代金券金额,'
    '微信退款单号,商户退款单号,退款金额,充值券退款金额,退款类型,退款状态,'
    '商品名称,商户数据包,手续费,费率,订单金额,申请退款金额,费率备注')
SUMMARY_HEADER = (
    '总交易单数,应结订单总金额,退款总金额,充值券退款总金额,手续费总金额,'
    '订单总金额,申请退款总金额')


def yuan(fen):
    return '%.2f' % (Decimal(fen) / 100)


def fee_of(fen):
    return (Decimal(fen) / 100 * FEE_RATE).quantize(
        Decimal('0.01'), rounding=ROUND_HALF_UP)


def new_key():
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def private_pem(key):
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()).decode()


def public_pem(key):
    return key.public_key().public_bytes(
        serialization.Encoding.PEM,
        serialization.PublicFormat.SubjectPublicKeyInfo).decode()


def sign(key, message):
    return base64.b64encode(key.sign(
            message.encode(), padding.PKCS1v15(), hashes.SHA256())).decode()


# the trade_type WeChat reports for each kind of order
TRADE_TYPES = {
    'code': 'MICROPAY',
    'qr': 'NATIVE',
    'jsapi': 'JSAPI',
    'app': 'APP',
    'h5': 'MWEB',
    }


class Order:
    def __init__(self, data, kind):
        self.data = data
        self.kind = kind
        self.out_trade_no = data['out_trade_no']
        self.total = data['amount']['total']
        self.state = 'NOTPAY'
        self.transaction_id = '42' + secrets.token_hex(4).upper() + str(
            int(time.time() * 1000))[-20:]
        self.success_time = None
        self.queries = 0
        self.refunds = {}
        self.code_url = None
        # partner mode: the sub-merchant the order belongs to
        self.sub_mchid = data.get('sub_mchid')
        self.sub_appid = data.get('sub_appid')
        # in-app orders: the prepay_id the client pays, the app and the
        # user (openid in that app) who may pay it
        self.prepay_id = None
        payer = data.get('payer') or {}
        if 'sub_openid' in payer:
            self.app, self.openid = self.sub_appid, payer['sub_openid']
        else:
            self.app = data.get('appid') or data.get('sp_appid')
            self.openid = payer.get('openid') or payer.get('sp_openid')
        self.time_expire = (
            dt.datetime.fromisoformat(data['time_expire'])
            if data.get('time_expire') else None)

    def same(self, data):
        "Whether data repeats the request that created the order"
        keys = ['description', 'amount', 'payer']
        return all(self.data.get(k) == data.get(k) for k in keys)

    def pay(self):
        self.state = 'SUCCESS'
        self.success_time = dt.datetime.now(
            dt.timezone(dt.timedelta(hours=8))).isoformat(
            timespec='seconds')

    def resource(self, mchid, appid):
        if self.sub_mchid:
            ids = {
                'sp_appid': appid, 'sp_mchid': mchid,
                'sub_mchid': self.sub_mchid,
                }
            if self.sub_appid:
                ids['sub_appid'] = self.sub_appid
            payer = {'sp_openid': self.openid or 'o-sim-payer'}
        else:
            ids = {'appid': appid, 'mchid': mchid}
            payer = {'openid': self.openid or 'o-sim-payer'}
        result = dict(ids, **{
            'out_trade_no': self.out_trade_no,
            'transaction_id': self.transaction_id,
            'trade_type': TRADE_TYPES[self.kind],
            'trade_state': self.state,
            'trade_state_desc': self.state,
            'bank_type': 'OTHERS',
            'payer': payer,
            'amount': {
                'total': self.total, 'payer_total': self.total,
                'currency': 'CNY', 'payer_currency': 'CNY'},
            })
        if self.success_time:
            result['success_time'] = self.success_time
        return result


class WeChatSimulator:

    def __init__(self, mchid='1900000109', appid='wxsim0000000001',
            sub_mchids=(), apps=(), cert_mode=False):
        self.mchid = mchid
        self.appid = appid
        # the applications bound to mchid besides appid (mini programs,
        # mobile apps, official accounts: 关联 AppID)
        self.apps = {appid, *apps}
        # the sub-merchants bound to mchid as their service provider
        self.sub_mchids = set(sub_mchids)
        self.serial = secrets.token_hex(20).upper()
        self.merchant_key = new_key()
        self.platform_key = new_key()
        self.platform_key_id = 'PUB_KEY_ID_' + secrets.token_hex(8).upper()
        self.api_key = secrets.token_hex(16)
        self.orders = {}
        self.requests = []
        self.paying_queries = None
        self.refuse = None
        self.down = False
        self.lock = threading.Lock()
        self.server = None
        self.bills = {}
        # platform certificate mode: (serial, key, PEM, not_before,
        # not_after) of the listed certificates, the newest last
        self.cert_mode = cert_mode
        # api.weixin.qq.com: {appid: AppSecret}, {code: LoginCode}
        self.app_secrets = {}
        self.login_codes = {}
        self.login_error = None
        # the WeChat user who passes the web page authorization
        self.authorize_openid = None
        self.certificates = []
        self.certificates_api_key = None
        self.certificates_signer = None
        if cert_mode:
            self.rotate()

    def rotate(self, days=90):
        """Make a new platform certificate valid for days: it signs from
        now on, the older ones stay listed"""
        key = new_key()
        now = dt.datetime.now(dt.UTC)
        name = x509.Name([x509.NameAttribute(
                    x509.NameOID.COMMON_NAME, 'Tenpay.com Root CA')])
        certificate = x509.CertificateBuilder().subject_name(
            x509.Name([x509.NameAttribute(
                        x509.NameOID.COMMON_NAME, 'Tenpay.com sign')])
            ).issuer_name(name).public_key(key.public_key()).serial_number(
            x509.random_serial_number()).not_valid_before(
            now - dt.timedelta(hours=1)).not_valid_after(
            now + dt.timedelta(days=days)).sign(key, hashes.SHA256())
        serial = '%040X' % certificate.serial_number
        self.certificates.append((
                serial, key,
                certificate.public_bytes(serialization.Encoding.PEM).decode(),
                now - dt.timedelta(hours=1), now + dt.timedelta(days=days)))
        self.platform_key = key
        self.platform_key_id = serial
        return serial

    def certificate_list(self):
        "The body of GET /v3/certificates"
        data = []
        for serial, _key, pem, start, end in self.certificates:
            nonce = secrets.token_hex(6)
            ciphertext = AESGCM(
                (self.certificates_api_key or self.api_key).encode()).encrypt(
                nonce.encode(), pem.encode(), b'certificate')
            data.append({
                    'serial_no': serial,
                    'effective_time': start.astimezone(BEIJING).isoformat(
                        timespec='seconds'),
                    'expire_time': end.astimezone(BEIJING).isoformat(
                        timespec='seconds'),
                    'encrypt_certificate': {
                        'algorithm': 'AEAD_AES_256_GCM',
                        'nonce': nonce,
                        'associated_data': 'certificate',
                        'ciphertext': base64.b64encode(ciphertext).decode(),
                        },
                    })
        return {'data': data}

    # ---- life cycle --------------------------------------------------

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.stop()

    def start(self):
        simulator = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                simulator.handle(self, 'GET')

            def do_POST(self):
                simulator.handle(self, 'POST')

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
        return 'http://127.0.0.1:%s' % self.server.server_address[1]

    def gateway_values(self, sub_mchid=None, sub_appid=None):
        """The values of a fuel.payment.gateway for this simulator; with
        sub_mchid a partner-mode gateway of that sub-merchant"""
        partner = {}
        if sub_mchid:
            partner = {'sub_merchant': sub_mchid, 'sub_app': sub_appid}
        values = dict(partner, **{
            'channel': 'wechat',
            'merchant': self.mchid,
            'app': self.appid,
            'key_serial': self.serial,
            'private_key': private_pem(self.merchant_key),
            'api_key': self.api_key,
            'platform_key': public_pem(self.platform_key),
            'platform_key_id': self.platform_key_id,
            'url': self.url,
            'notify_url': 'https://fuel.example.com/db/fuel_payment/notify/1',
            })
        if self.cert_mode:
            # no platform public key: the certificates are downloaded
            values.update(platform_key=None, platform_key_id=None)
        return values

    # ---- HTTP ----------------------------------------------------------

    def verify(self, request, method, body):
        "Check the merchant's signature as WeChat does; return an error"
        authorization = request.headers.get('Authorization', '')
        scheme, _, params = authorization.partition(' ')
        if scheme != 'WECHATPAY2-SHA256-RSA2048':
            return 'SIGN_ERROR'
        values = dict(
            (k.strip(), v.strip().strip('"'))
            for k, _, v in (p.partition('=') for p in params.split(',')))
        if (values.get('mchid') != self.mchid
                or values.get('serial_no') != self.serial):
            return 'SIGN_ERROR'
        try:
            if abs(time.time() - int(values['timestamp'])) > MAX_SKEW:
                return 'SIGN_ERROR'
            message = '%s\n%s\n%s\n%s\n%s\n' % (
                method, request.path, values['timestamp'],
                values['nonce_str'], body)
            self.merchant_key.public_key().verify(
                base64.b64decode(values['signature']), message.encode(),
                padding.PKCS1v15(), hashes.SHA256())
        except (KeyError, ValueError, InvalidSignature):
            return 'SIGN_ERROR'
        return None

    def signed_headers(self, body, key=None):
        timestamp = str(int(time.time()))
        nonce = secrets.token_hex(16)
        return {
            'Wechatpay-Timestamp': timestamp,
            'Wechatpay-Nonce': nonce,
            'Wechatpay-Serial': self.platform_key_id,
            'Wechatpay-Signature': sign(
                key or self.platform_key,
                '%s\n%s\n%s\n' % (timestamp, nonce, body)),
            'Wechatpay-Signature-Type': 'WECHATPAY2-SHA256-RSA2048',
            }

    def answer(self, request, status, data=None, key=None):
        body = json.dumps(data, ensure_ascii=False) if data is not None else ''
        request.send_response(status)
        for name, value in self.signed_headers(body, key=key).items():
            request.send_header(name, value)
        if body:
            request.send_header('Content-Type', 'application/json')
        request.send_header('Content-Length', str(len(body.encode())))
        request.end_headers()
        request.wfile.write(body.encode())

    def error(self, request, status, code, message=None):
        self.answer(
            request, status, {'code': code, 'message': message or code})

    def handle(self, request, method):
        length = int(request.headers.get('Content-Length') or 0)
        body = request.rfile.read(length).decode() if length else ''
        url = urllib.parse.urlsplit(request.path)
        if url.path == AUTHORIZE_PATH:
            with self.lock:
                self.requests.append((method, url.path))
                self.authorize(request, url)
            return
        if url.path in LOGIN_PATHS:
            with self.lock:
                # the query holds the secret: only the path is recorded
                self.requests.append((method, url.path))
                self.login(request, method, url)
            return
        with self.lock:
            self.requests.append((method, request.path))
            if self.down:
                self.error(request, 500, 'SYSTEM_ERROR')
                return
            refused = self.verify(request, method, body)
            if refused:
                self.error(request, 401, refused)
                return
            if self.refuse:
                code, self.refuse = self.refuse, None
                self.error(request, 403, code)
                return
            url = urllib.parse.urlsplit(request.path)
            data = json.loads(body) if body else {}
            self.route(request, method, url.path, data)

    # ---- api.weixin.qq.com: login codes ------------------------------

    def secret_of(self, appid):
        "The AppSecret of appid, made on first use"
        return self.app_secrets.setdefault(appid, secrets.token_hex(16))

    def issue_code(self, appid, openid, kind, snapshot=False):
        code = secrets.token_hex(16)
        self.login_codes[code] = {
            'app': appid, 'openid': openid, 'kind': kind, 'used': False,
            'expires': time.time() + LOGIN_CODE_TTL, 'snapshot': snapshot,
            }
        return code

    def wx_login(self, appid, openid):
        "The code wx.login gives a mini program's user"
        return self.issue_code(appid, openid, 'mini_program')

    def oauth_code(self, appid, openid, snapshot=False):
        """The code WeChat's authorization redirect (snsapi_base) gives an
        official account page; snapshot: the page opened as a snapshot
        (快照页), whose openid WeChat flags is_snapshotuser 1"""
        return self.issue_code(appid, openid, 'jsapi', snapshot=snapshot)

    def expire_code(self, code):
        self.login_codes[code]['expires'] = time.time() - 1

    def authorize(self, request, url):
        """open.weixin.qq.com/connect/oauth2/authorize as WeChat's browser
        meets it for the user `authorize_openid`: an official account it
        knows (an AppSecret made), response_type code, scope snsapi_base
        or snsapi_userinfo, then 302 to redirect_uri with a new code
        (oauth_code) and the state; a plain 400 page otherwise"""
        query = dict(urllib.parse.parse_qsl(url.query))
        redirect_uri = query.get('redirect_uri', '')
        if (query.get('appid') not in self.app_secrets
                or query.get('response_type') != 'code'
                or query.get('scope') not in {
                    'snsapi_base', 'snsapi_userinfo'}
                or not redirect_uri.startswith(('http://', 'https://'))
                or not self.authorize_openid):
            request.send_response(400)
            request.send_header('Content-Length', '0')
            request.end_headers()
            return
        code = self.issue_code(query['appid'], self.authorize_openid, 'jsapi')
        back = {'code': code}
        if 'state' in query:
            back['state'] = query['state']
        separator = '&' if '?' in redirect_uri else '?'
        request.send_response(302)
        request.send_header(
            'Location',
            redirect_uri + separator + urllib.parse.urlencode(back))
        request.send_header('Content-Length', '0')
        request.end_headers()

    def login_answer(self, request, data):
        body = json.dumps(data).encode()
        request.send_response(200)
        request.send_header('Content-Type', 'application/json')
        request.send_header('Content-Length', str(len(body)))
        request.end_headers()
        request.wfile.write(body)

    def login(self, request, method, url):
        """jscode2session / oauth2 access_token as WeChat answers them:
        HTTP 200 with openid, or errcode and errmsg"""
        kind, code_name = LOGIN_PATHS[url.path]
        query = dict(urllib.parse.parse_qsl(url.query))

        def error(errcode, errmsg):
            self.login_answer(request, {'errcode': errcode, 'errmsg': errmsg})

        if method != 'GET':
            return error(43001, "require GET method")
        if self.login_error is not None:
            errcode, self.login_error = self.login_error, None
            return error(errcode, {
                    45011: "api minute-quota reach limit",
                    -1: "system error"}.get(errcode, "error"))
        if query.get('grant_type') != 'authorization_code':
            return error(40002, "invalid grant_type")
        appid = query.get('appid')
        if appid not in self.app_secrets:
            return error(40013, "invalid appid")
        if not secrets.compare_digest(
                query.get('secret', ''), self.app_secrets[appid]):
            return error(40125, "invalid appsecret")
        code = self.login_codes.get(query.get(code_name, ''))
        if (code is None or code['app'] != appid or code['kind'] != kind
                or code['expires'] < time.time()):
            return error(40029, "invalid code")
        if code['used']:
            return error(40163, "code been used")
        code['used'] = True
        if kind == 'mini_program':
            return self.login_answer(request, {
                    'openid': code['openid'],
                    'session_key': base64.b64encode(
                        secrets.token_bytes(16)).decode(),
                    })
        answer = {
            'access_token': secrets.token_urlsafe(32),
            'expires_in': 7200,
            'refresh_token': secrets.token_urlsafe(32),
            'openid': code['openid'],
            'scope': 'snsapi_base',
            }
        if code['snapshot']:
            answer['is_snapshotuser'] = 1
        return self.login_answer(request, answer)

    def partner_refusal(self, values, required_app):
        """Return (status, code, message) refusing the partner fields of
        values (body or query), or None"""
        if values.get('sp_mchid') != self.mchid:
            # the merchant of the signature must be the service provider
            return 400, 'PARAM_ERROR', "sp_mchid"
        if ((required_app or 'sp_appid' in values)
                and values.get('sp_appid') not in self.apps):
            return 400, 'APPID_MCHID_NOT_MATCH', "appid和mch_id不匹配"
        if values.get('sub_mchid') not in self.sub_mchids:
            return 403, 'NO_AUTH', "受理关系不存在"
        return None

    def find(self, out_trade_no, sub_mchid):
        "The order of out_trade_no made under sub_mchid (None: direct)"
        order = self.orders.get(out_trade_no)
        if order is not None and order.sub_mchid == sub_mchid:
            return order
        return None

    def route(self, request, method, path, data):
        query = dict(urllib.parse.parse_qsl(
                urllib.parse.urlsplit(request.path).query))
        sub_mchid = None
        if path.startswith(PARTNER + '/'):
            values = data if method == 'POST' else query
            refused = self.partner_refusal(
                values,
                path.endswith(
                    ('/codepay', '/native', '/jsapi', '/app', '/h5')))
            if refused:
                self.error(request, *refused)
                return
            sub_mchid = values['sub_mchid']
            # then answered as the direct path, for that sub-merchant
            path = DIRECT + path[len(PARTNER):]
        elif 'sub_mchid' in data or 'sub_mchid' in query:
            # refunds and bills: the service provider names the
            # sub-merchant
            sub_mchid = data.get('sub_mchid') or query.get('sub_mchid')
            if sub_mchid not in self.sub_mchids:
                self.error(request, 403, 'NO_AUTH', "受理关系不存在")
                return
        parts = path.strip('/').split('/')
        if method == 'GET' and path == '/v3/certificates':
            if not self.cert_mode:
                self.error(request, 404, 'NOT_FOUND')
                return
            self.answer(
                request, 200, self.certificate_list(),
                key=self.certificates_signer)
        elif method == 'POST' and path == '/v3/pay/transactions/codepay':
            self.codepay(request, data)
        elif method == 'POST' and path == '/v3/pay/transactions/native':
            order = self.find(data['out_trade_no'], sub_mchid)
            if order is not None and not order.same(data):
                self.error(request, 403, 'OUT_TRADE_NO_USED')
                return
            if order is None:
                order = Order(data, 'qr')
                order.code_url = (
                    'weixin://wxpay/bizpayurl?pr=%s'
                    % secrets.token_urlsafe(6))
                self.orders[order.out_trade_no] = order
            self.answer(request, 200, {'code_url': order.code_url})
        elif method == 'POST' and path in {
                '/v3/pay/transactions/jsapi', '/v3/pay/transactions/app',
                '/v3/pay/transactions/h5'}:
            self.prepay(request, data, parts[-1], sub_mchid)
        elif (method == 'GET'
                and path.startswith('/v3/pay/transactions/out-trade-no/')):
            self.query(request, parts[-1], sub_mchid)
        elif method == 'POST' and parts[-1] in {'reverse', 'close'}:
            order = self.find(parts[-2], sub_mchid)
            if order is None:
                self.error(request, 404, 'ORDER_NOT_EXIST')
            elif order.state == 'SUCCESS' and parts[-1] == 'close':
                self.error(request, 400, 'ORDERPAID')
            else:
                order.state = 'REVOKED' if parts[-1] == 'reverse' else (
                    'CLOSED')
                self.answer(request, 204 if parts[-1] == 'close' else 200,
                    None if parts[-1] == 'close' else {})
        elif method == 'POST' and path == '/v3/refund/domestic/refunds':
            self.refund(request, data)
        elif method == 'GET' and path == '/v3/bill/tradebill':
            self.trade_bill(request, request.path, sub_mchid)
        elif method == 'GET' and path == '/v3/billdownload/file':
            token = urllib.parse.parse_qs(
                urllib.parse.urlsplit(request.path).query)['token'][0]
            content = self.bills.pop(token, None)
            if content is None:
                self.error(request, 404, 'RESOURCE_NOT_EXISTS')
                return
            request.send_response(200)
            request.send_header('Content-Type', 'application/octet-stream')
            request.send_header('Content-Length', str(len(content)))
            request.end_headers()
            request.wfile.write(content)
        else:
            self.error(request, 404, 'NOT_FOUND')

    def codepay(self, request, data):
        auth_code = data.get('payer', {}).get('auth_code', '')
        if not (len(auth_code) == 18 and auth_code[:2] in {
                    '10', '11', '12', '13', '14', '15'}):
            self.error(request, 400, 'AUTH_CODE_INVALID')
            return
        order = self.find(data['out_trade_no'], data.get('sub_mchid'))
        if order is not None:
            # the same request again is answered as the first one was
            if not order.same(data):
                self.error(request, 403, 'OUT_TRADE_NO_USED')
            elif order.state == 'USERPAYING':
                self.error(request, 202, 'USERPAYING')
            elif order.state in {'SUCCESS', 'REFUND'}:
                self.answer(
                    request, 200, order.resource(self.mchid, self.appid))
            else:
                self.error(request, 400, 'ORDERCLOSED')
            return
        order = Order(data, 'code')
        self.orders[order.out_trade_no] = order
        if self.paying_queries is None:
            order.pay()
            self.answer(request, 200, order.resource(self.mchid, self.appid))
        else:
            order.state = 'USERPAYING'
            self.error(request, 202, 'USERPAYING', "需要用户输入支付密码")

    def prepay(self, request, data, kind, sub_mchid):
        "JSAPI / mini program (jsapi) and APP orders: answer a prepay_id"
        if sub_mchid is None and data.get('appid') not in self.apps:
            self.error(request, 400, 'APPID_MCHID_NOT_MATCH',
                "appid和mch_id不匹配")
            return
        payer = data.get('payer') or {}
        if kind == 'jsapi' and not (
                payer.get('openid') if sub_mchid is None
                else payer.get('sp_openid') or payer.get('sub_openid')):
            self.error(request, 400, 'PARAM_ERROR', "payer.openid")
            return
        if 'sub_openid' in payer and not data.get('sub_appid'):
            self.error(request, 400, 'PARAM_ERROR', "sub_appid")
            return
        scene = data.get('scene_info') or {}
        if kind == 'h5' and not (
                scene.get('payer_client_ip')
                and (scene.get('h5_info') or {}).get('type')):
            self.error(request, 400, 'PARAM_ERROR', "scene_info")
            return
        order = self.find(data['out_trade_no'], sub_mchid)
        if order is not None and not order.same(data):
            self.error(request, 403, 'OUT_TRADE_NO_USED')
            return
        if order is None:
            order = Order(data, kind)
            order.prepay_id = 'wx%s%s' % (
                time.strftime('%d%H%M%S'), secrets.token_hex(12))
            self.orders[order.out_trade_no] = order
        if kind == 'h5':
            # the page WeChat's cashier opens from the phone's browser
            self.answer(request, 200, {'h5_url': (
                        'https://wx.tenpay.com/cgi-bin/mmpayweb-bin/checkmweb'
                        '?prepay_id=%s&package=%s' % (
                            order.prepay_id, secrets.randbelow(10 ** 10)))})
            return
        self.answer(request, 200, {'prepay_id': order.prepay_id})

    def client_pays(self, params, openid=None, ip=None):
        """The customer pays an in-app order in the WeChat client with the
        params the merchant's server gave (wx.requestPayment for JSAPI and
        mini programs, PayReq for apps), as WeChat checks them: the
        prepay_id exists, the app is the order's, the signature is the
        merchant's over appid, timestamp, nonce and package (prepayid for
        apps), the user (openid) is the order's payer, the order is open;
        raise ValueError with WeChat's reason otherwise; an h5_url is opened
        by the phone's browser at ip, which must be the order's
        payer_client_ip"""
        if 'h5_url' in params:
            query = dict(urllib.parse.parse_qsl(
                    urllib.parse.urlsplit(params['h5_url']).query))
            with self.lock:
                orders = [
                    o for o in self.orders.values()
                    if o.prepay_id == query.get('prepay_id')
                    and o.kind == 'h5']
                if not orders:
                    raise ValueError('PREPAY_ID_INVALID')
                order, = orders
                scene = order.data['scene_info']
                if ip != scene['payer_client_ip']:
                    # 网络环境未能通过安全验证
                    raise ValueError('IP_NOT_MATCH')
                if order.state != 'NOTPAY':
                    raise ValueError('ORDER_' + order.state)
                order.pay()
                return order.out_trade_no
        if 'prepayid' in params:
            app, prepay_id = params['appid'], params['prepayid']
            message = [
                app, params['timestamp'], params['noncestr'], prepay_id]
            signature = params['sign']
            if (params.get('package') != 'Sign=WXPay'
                    or params.get('partnerid') != self.mchid):
                raise ValueError('PARAM_ERROR')
        else:
            app, package = params['appId'], params['package']
            prepay_id = package.removeprefix('prepay_id=')
            message = [app, params['timeStamp'], params['nonceStr'], package]
            signature = params['paySign']
            if params.get('signType') != 'RSA':
                raise ValueError('SIGN_ERROR')
        with self.lock:
            orders = [
                o for o in self.orders.values() if o.prepay_id == prepay_id]
            if not orders:
                raise ValueError('PREPAY_ID_INVALID')
            order, = orders
            if app != order.app:
                raise ValueError('APPID_NOT_MATCH')
            try:
                self.merchant_key.public_key().verify(
                    base64.b64decode(signature),
                    ('\n'.join(message) + '\n').encode(),
                    padding.PKCS1v15(), hashes.SHA256())
            except (ValueError, InvalidSignature):
                raise ValueError('SIGN_ERROR') from None
            if order.kind == 'jsapi' and openid != order.openid:
                raise ValueError('OPENID_NOT_MATCH')
            if order.time_expire and dt.datetime.now(
                    dt.UTC) > order.time_expire:
                raise ValueError('ORDER_EXPIRED')
            if order.state != 'NOTPAY':
                raise ValueError('ORDER_' + order.state)
            order.pay()
            return order.out_trade_no

    def query(self, request, out_trade_no, sub_mchid=None):
        order = self.find(out_trade_no, sub_mchid)
        if order is None:
            self.error(request, 404, 'ORDER_NOT_EXIST')
            return
        order.queries += 1
        if (order.state == 'USERPAYING' and self.paying_queries is not None
                and self.paying_queries >= 0
                and order.queries >= self.paying_queries):
            order.pay()
        self.answer(request, 200, order.resource(self.mchid, self.appid))

    def refund(self, request, data):
        order = self.find(data.get('out_trade_no'), data.get('sub_mchid'))
        if order is None or order.state not in {'SUCCESS', 'REFUND'}:
            self.error(request, 404, 'RESOURCE_NOT_EXISTS')
            return
        amount = data['amount']
        if amount['total'] != order.total:
            self.error(request, 400, 'PARAM_ERROR', "total")
            return
        number = data['out_refund_no']
        if number not in order.refunds:
            refunded = sum(r['refund'] for r in order.refunds.values())
            if refunded + amount['refund'] > order.total:
                self.error(request, 403, 'NOT_ENOUGH')
                return
            order.refunds[number] = {
                'refund_id': '50' + secrets.token_hex(8),
                'refund': amount['refund'],
                'time': dt.datetime.now(BEIJING),
                }
            order.state = 'REFUND'
        refund = order.refunds[number]
        self.answer(request, 200, {
                'refund_id': refund['refund_id'],
                'out_refund_no': number,
                'transaction_id': order.transaction_id,
                'out_trade_no': order.out_trade_no,
                'channel': 'ORIGINAL',
                'status': 'SUCCESS',
                'success_time': order.success_time,
                'amount': {
                    'total': order.total, 'refund': refund['refund'],
                    'payer_total': order.total,
                    'payer_refund': refund['refund'],
                    'currency': 'CNY'},
                })

    # ---- notifications ------------------------------------------------

    def pay(self, out_trade_no):
        "The customer pays the order (scans the QR, confirms the code)"
        with self.lock:
            self.orders[out_trade_no].pay()

    def notification(self, out_trade_no, forge=False, api_key=None,
            notification_id=None, sub_mchid=None):
        """Return (headers, body) of the TRANSACTION.SUCCESS notification
        of out_trade_no; forge signs it with another key; sub_mchid
        names another sub-merchant in it (signed as WeChat signs any)"""
        order = self.orders[out_trade_no]
        resource = order.resource(self.mchid, self.appid)
        if sub_mchid:
            resource['sub_mchid'] = sub_mchid
        plaintext = json.dumps(resource, ensure_ascii=False)
        nonce = secrets.token_urlsafe(9)[:12]
        ciphertext = AESGCM((api_key or self.api_key).encode()).encrypt(
            nonce.encode(), plaintext.encode(), b'transaction')
        body = json.dumps({
                'id': notification_id or secrets.token_hex(16),
                'create_time': dt.datetime.now(
                    dt.timezone(dt.timedelta(hours=8))).isoformat(
                    timespec='seconds'),
                'resource_type': 'encrypt-resource',
                'event_type': 'TRANSACTION.SUCCESS',
                'summary': '支付成功',
                'resource': {
                    'original_type': 'transaction',
                    'algorithm': 'AEAD_AES_256_GCM',
                    'ciphertext': base64.b64encode(ciphertext).decode(),
                    'associated_data': 'transaction',
                    'nonce': nonce,
                    },
                })
        key = new_key() if forge else None
        return self.signed_headers(body, key=key), body


    # ---- bills --------------------------------------------------------

    def bill(self, date, sub_mchid=None):
        """Return the trade bill (ALL) of date as WeChat writes it: UTF-8
        CSV, each value prefixed with a back-quote, amounts in yuan; with
        sub_mchid, that sub-merchant's orders only"""
        rows = []
        totals = dict.fromkeys(['count', 'paid', 'refund', 'fee', 'total',
                'asked'], Decimal(0))
        for order in self.orders.values():
            if not order.success_time:
                continue
            if sub_mchid and order.sub_mchid != sub_mchid:
                continue
            paid = dt.datetime.fromisoformat(order.success_time)
            common = {
                'appid': self.appid, 'mchid': self.mchid,
                'sub_mchid': order.sub_mchid or '0',
                'transaction_id': order.transaction_id,
                'out_trade_no': order.out_trade_no,
                'trade_type': 'MICROPAY' if order.kind == 'code' else 'NATIVE',
                'total': order.total,
                }
            if paid.date() == date:
                state = 'REVOKED' if order.state == 'REVOKED' else 'SUCCESS'
                rows.append(self.bill_row(paid, common, state, fee_of(
                            order.total)))
                totals['paid'] += Decimal(order.total) / 100
                totals['total'] += Decimal(order.total) / 100
            for number, refund in order.refunds.items():
                if refund['time'].date() != date:
                    continue
                fee = -fee_of(refund['refund'])
                rows.append(self.bill_row(
                        refund['time'], common, 'REFUND', fee,
                        refund=(number, refund)))
                totals['refund'] += Decimal(refund['refund']) / 100
                totals['asked'] += Decimal(refund['refund']) / 100
        for row in rows:
            totals['count'] += 1
            totals['fee'] += Decimal(row.rsplit(',`', 5)[1])
        summary = ','.join('`%s' % v for v in [
                int(totals['count']), '%.2f' % totals['paid'],
                '%.2f' % totals['refund'], '0.00', '%.2f' % totals['fee'],
                '%.2f' % totals['total'], '%.2f' % totals['asked']])
        return '\r\n'.join(
            [BILL_HEADER] + rows + [SUMMARY_HEADER, summary]).encode() + (
            b'\r\n')

    @staticmethod
    def bill_row(time_, common, state, fee, refund=None):
        number, values = refund or ('', {})
        amount = yuan(common['total'])
        values = [
            time_.strftime('%Y-%m-%d %H:%M:%S'), common['appid'],
            common['mchid'], common['sub_mchid'], '',
            common['transaction_id'],
            common['out_trade_no'], 'o-sim-payer', common['trade_type'],
            state, 'OTHERS', 'CNY', amount if not refund else '0.00',
            '0.00', values.get('refund_id', ''), number,
            yuan(values['refund']) if refund else '0.00', '0.00',
            'ORIGINAL' if refund else '', 'SUCCESS' if refund else '',
            '加油, 92#', '', '%.2f' % fee, '0.60%', amount,
            yuan(values['refund']) if refund else '0.00', '']
        return ','.join('`' + v for v in values)

    def trade_bill(self, request, path, sub_mchid=None):
        query = urllib.parse.parse_qs(urllib.parse.urlsplit(path).query)
        date = dt.date.fromisoformat(query['bill_date'][0])
        raw = self.bill(date, sub_mchid)
        token = secrets.token_hex(8)
        self.bills[token] = gzip.compress(raw)
        self.answer(request, 200, {
                'hash_type': 'SHA1',
                'hash_value': hashlib.sha1(raw).hexdigest(),
                'download_url': (
                    '%s/v3/billdownload/file?token=%s' % (self.url, token)),
                })
