# This file is part of fuelpay.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""Alipay (open API, RSA2) through python-alipay-sdk, as the merchant's
own application or as the platform's third-party application (ISV) with
the operator's app_auth_token, in public key mode or in public key
certificate mode (公钥证书模式)"""
import dataclasses
import datetime as dt
import json
import logging
import re
import urllib.parse
import urllib.request
from decimal import Decimal, InvalidOperation

from alipay import AliPay, DCAliPay
from alipay.exceptions import AliPayException, AliPayValidationError
from alipay.utils import AliPayConfig
from cryptography import x509
from trytond.i18n import gettext

from .alipay_bill import parse_trade_bill
from .exceptions import GatewayError
from .gateway import (
    ForgedNotification,
    Notification,
    PermanentError,
    Provider,
    Result,
    TransientError,
    point_sdk_at,
    provider,
)

logger = logging.getLogger(__name__)

# seconds to wait for an answer; a bar code payment answers within
# seconds or says 10003 (user paying)
TIMEOUT = 20
SUCCESS = '10000'
USER_PAYING = '10003'
# "unknown": the call may have been done, ask again
UNKNOWN = '20000'
TRADE_STATES = {
    'TRADE_SUCCESS': 'succeeded',
    'TRADE_FINISHED': 'succeeded',
    'WAIT_BUYER_PAY': 'pending',
    'TRADE_CLOSED': 'cancelled',
    }
NOT_FOUND = 'ACQ.TRADE_NOT_EXIST'
# what Alipay says of an operator's app_auth_token, asked by the platform's
# application with the token in biz_content: user_id (the operator's PID),
# auth_app_id (its application), expires_in (seconds), auth_start,
# auth_end, auth_methods and status valid/invalid (the answer's fields as
# two independent SDKs declare them, Alipay's docs not checked directly;
# an unknown token is taken to answer 20001 aop.invalid-app-auth-token as
# any call with it does)
AUTH_TOKEN_QUERY = 'alipay.open.auth.token.app.query'
# the user of a client's auth code (my.getAuthCode); its failures' sub
# codes (isv.code-invalid: wrong, used or expired code) are read from the
# error_response the SDK raises with
OAUTH_TOKEN = 'alipay.system.oauth.token'
SUB_CODE = re.compile(r'"sub_code"\s*:\s*"([^"]+)"')
# the operator's authorization code (app_auth_code, once, for a day) or
# the refresh token exchanged for its app_auth_token (grant_type
# authorization_code / refresh_token); the answer names the token, the
# refresh token, the authorizer's user_id and auth_app_id, expires_in and
# re_expires_in (seconds) at its top level or in a `tokens` list (batch
# authorization). Source: Alipay's API page alipay.open.auth.token.app and
# its generated SDKs' AlipayOpenAuthTokenAppResponse (see alipay_auth.py)
AUTH_TOKEN_APP = 'alipay.open.auth.token.app'
# the operator's app_auth_token is unknown, expired or withdrawn (code
# 20001); "-no-api": it does not grant the method called
INVALID_AUTH_TOKEN = 'aop.invalid-app-auth-token'
# what Alipay posts to the application's gateway (应用网关, one address
# per application, set in Alipay's console): the operator's authorization
# (notify_type open_app_auth_notify, status execute_auth, biz_content
# {"notify_context": {...}, "detail": {app_auth_token, app_refresh_token,
# user_id, auth_app_id, app_id, expires_in, re_expires_in, auth_time (ms),
# app_auth_code}}: Alipay's examples of its authorization notice, quoted
# by integrations) and the message of its cancellation (message service:
# msg_method alipay.open.auth.appauth.cancelled, notify_id, utc_timestamp
# (ms), app_id, biz_content with the authorizer's auth_app_id, as an
# integration reads it; msg_uid, msg_app_id as an SDK declares the
# message's fields); see alipay_auth.py
AUTH_NOTIFY = 'open_app_auth_notify'
AUTH_EXECUTED = 'execute_auth'
AUTH_CANCELLED = 'alipay.open.auth.appauth.cancelled'


@dataclasses.dataclass(frozen=True)
class AppMessage:
    """A verified message of the application's gateway: kind granted
    (authorization, its values as exchange_auth_token gives them),
    cancelled or other; the authorizer's user (PID) and application, the
    time Alipay gives (naive UTC or None)"""
    id: str
    kind: str
    user: str | None
    auth_app: str | None
    time: dt.datetime | None
    authorization: dict | None = None


# Alipay's times are Beijing time without zone
BEIJING = dt.timezone(dt.timedelta(hours=8))
TIME_FORMAT = '%Y-%m-%d %H:%M:%S'
# in-app: a mini program or life account page (生活号) pays a trade made
# by alipay.trade.create with my.tradePay / AlipayJSBridge tradePay
# {tradeNO}; a mobile app opens the order string the server signed for
# the SDK (alipay.trade.app.pay, no server call)
JSAPI_PAY = 'JSAPI_PAY'
APP_PAY = 'QUICK_MSECURITY_PAY'
# a page in the phone's browser sends it to the signed address of
# alipay.trade.wap.pay (手机网站支付)
WAP_PAY = 'QUICK_WAP_WAY'
# the payer of alipay.trade.create: the user id (buyer_id, 16 digits
# starting 2088) or the newer per-application open id (buyer_open_id,
# e.g. 074a1CcTG1LelxKe4x...); routed by the value's form
USER_ID = re.compile(r'^2088\d{12}$')
# certificate mode: Alipay does not know the application's certificate
# (a wrong app_cert_sn) or the root certificate's SN; missing ones
CERT_ERRORS = {
    'isv.app-cert-not-exist',
    'isv.invalid-alipay-root-cert-sn',
    'isv.missing-app-cert-sn',
    'isv.missing-alipay-root-cert-sn',
    'isv.app-cert-expired',
    }
PEM_CERTIFICATE = re.compile(
    r'-----BEGIN CERTIFICATE-----[A-Za-z0-9+/=\s]+?-----END CERTIFICATE-----')
# the certificate fields of a gateway, in the order they are checked
CERT_FIELDS = ['app_cert', 'platform_cert', 'root_cert']


def format_time(date):
    "A naive local datetime as Alipay's Beijing 'yyyy-MM-dd HH:mm:ss'"
    return date.astimezone(BEIJING).strftime(TIME_FORMAT)


def pem_certificates(text):
    """Return the PEM blocks of certificates in text, each on lines of its
    own, as the SDK reads them (it splits a chain on blank lines); raise
    ValueError if there is none or one does not parse"""
    blocks = []
    for match in PEM_CERTIFICATE.finditer(text or ''):
        body = ''.join(match.group(0).split()[2:-2])
        block = '\n'.join([
                '-----BEGIN CERTIFICATE-----',
                *(body[i:i + 64] for i in range(0, len(body), 64)),
                '-----END CERTIFICATE-----'])
        x509.load_pem_x509_certificate(block.encode())
        blocks.append(block)
    if not blocks:
        raise ValueError("no certificate")
    return blocks


def is_rsa_signed(certificate):
    "Whether a certificate is signed with RSA (the root SN keeps those)"
    return certificate.signature_algorithm_oid.dotted_string.startswith(
        '1.2.840.113549.1.1.')


def check_certificates(gateway):
    """Raise if an Alipay gateway has some but not all of the three
    certificates of certificate mode, or one that does not parse"""
    if gateway.channel != 'alipay':
        return
    values = {name: getattr(gateway, name) for name in CERT_FIELDS}
    if not any(values.values()):
        return
    for name, value in values.items():
        try:
            blocks = pem_certificates(value)
            if name == 'root_cert' and not any(
                    is_rsa_signed(x509.load_pem_x509_certificate(b.encode()))
                    for b in blocks):
                raise ValueError("no RSA root")
        except ValueError:
            field = gateway.__class__.fields_get([name])[name]['string']
            raise GatewayError(gettext(
                    'fuel_payment.msg_gateway_alipay_certificate',
                    gateway=gateway.rec_name, field=field)) from None


class CertificateRotated(Exception):
    "An answer signed under another Alipay certificate than the gateway's"


class AuthTokenRefused(PermanentError):
    """Alipay does not take the operator's app_auth_token (20001: unknown,
    expired or withdrawn; or its query says it is not valid)"""


class AuthCodeRefused(PermanentError):
    """Alipay does not exchange an authorization code or refresh token:
    its sub code (isv.code-invalid: wrong, used or expired)"""


class CertAliPay(DCAliPay):
    """The SDK's certificate mode client (DCAliPay: app_cert_sn and
    alipay_root_cert_sn on each request, answers verified with the key of
    the Alipay public key certificate) that also checks the answer's
    alipay_cert_sn and takes the timeout of config; it overrides the SDK's
    _verify_and_return_sync_response and reads its certificate attribute
    (python-alipay-sdk 3.4.x internals, pinned)"""

    def __init__(self, *args, config=None, **kwargs):
        super().__init__(*args, **kwargs)
        # DCAliPay 3.4 does not pass config on (pinned version)
        self._config = config or AliPayConfig()

    @property
    def alipay_cert_sn(self):
        return self.get_cert_sn(self._alipay_public_key_cert_string)

    def _verify_and_return_sync_response(self, raw_string, response_type):
        # Alipay names the certificate that signed the answer; a new one
        # (Alipay renewed it) must be pasted on the gateway first
        sn = json.loads(raw_string).get('alipay_cert_sn')
        if sn and sn != self.alipay_cert_sn:
            raise CertificateRotated(sn)
        return super()._verify_and_return_sync_response(
            raw_string, response_type)


def parse_time(value):
    "Alipay's 'YYYY-MM-DD HH:MM:SS' (Beijing) as naive UTC"
    if not value:
        return None
    date = dt.datetime.strptime(value, '%Y-%m-%d %H:%M:%S')
    return date.replace(tzinfo=BEIJING).astimezone(dt.UTC).replace(
        tzinfo=None)


def parse_amount(value):
    try:
        return Decimal(value).quantize(Decimal('0.01'))
    except (TypeError, InvalidOperation):
        return None


@provider('alipay')
class AlipayProvider(Provider):

    def __init__(self, gateway):
        super().__init__(gateway)
        # ISV mode: the app and keys are the platform's (on the gateway or
        # on its platform account); each call carries the operator's token
        # as a common (signed) parameter, which the SDK's server_api adds
        # to the request like notify_url (its ISVAliPay would do the same,
        # without the timeout of config)
        self.credentials = credentials = gateway.credentials()
        self.auth_token = gateway.auth_token()
        if credentials.platform_cert:
            client = CertAliPay(
                appid=credentials.app,
                app_notify_url=gateway.notify_url,
                app_private_key_string=credentials.private_key,
                app_public_key_cert_string='\n'.join(
                    pem_certificates(credentials.app_cert)),
                alipay_public_key_cert_string='\n'.join(
                    pem_certificates(credentials.platform_cert)),
                alipay_root_cert_string='\n\n'.join(
                    pem_certificates(credentials.root_cert)),
                sign_type='RSA2',
                config=AliPayConfig(timeout=TIMEOUT))
        else:
            client = AliPay(
                appid=credentials.app,
                app_notify_url=gateway.notify_url,
                app_private_key_string=credentials.private_key,
                alipay_public_key_string=credentials.platform_key,
                sign_type='RSA2',
                config=AliPayConfig(timeout=TIMEOUT))
        self.client = point_sdk_at(client, credentials.url)

    def _check_isv(self):
        """Refuse to charge for an operator on the platform's application
        without its authorization: the call would be the platform's own"""
        if self.gateway.platform_account and not self.auth_token:
            raise PermanentError(gettext(
                    'fuel_payment.msg_gateway_platform_auth_token',
                    gateway=self.gateway.rec_name,
                    platform=self.gateway.platform_account.rec_name))

    def _call(self, method, biz_content, isv=True, **kwargs):
        """Return the verified response of method; raise on failure; isv:
        for the operator whose token the call carries"""
        if isv:
            self._check_isv()
        if isv and self.auth_token:
            kwargs['app_auth_token'] = self.auth_token
        try:
            response = self.client.server_api(method, biz_content, **kwargs)
        except OSError as exception:
            # URLError, HTTPError, timeouts
            raise TransientError(type(exception).__name__) from exception
        except AliPayValidationError as exception:
            raise TransientError("bad answer signature") from exception
        except CertificateRotated as exception:
            raise TransientError(gettext(
                    'fuel_payment.msg_gateway_alipay_cert_sn',
                    gateway=self.gateway.rec_name,
                    sn=str(exception))) from exception
        except AliPayException as exception:
            raise PermanentError(str(exception)[:200]) from exception
        except ValueError as exception:
            # not JSON: a proxy's page, a cut answer
            raise TransientError("bad answer") from exception
        code = response.get('code')
        if code in {SUCCESS, USER_PAYING}:
            return response
        message = f"{code} {response.get('sub_code', '')}".strip()
        if code == UNKNOWN:
            raise TransientError(message)
        if (response.get('sub_code') or '').startswith(INVALID_AUTH_TOKEN):
            raise AuthTokenRefused(gettext(
                    'fuel_payment.msg_gateway_alipay_auth_token',
                    gateway=self.gateway.rec_name,
                    code=response['sub_code']))
        if response.get('sub_code') in CERT_ERRORS:
            raise PermanentError(gettext(
                    'fuel_payment.msg_gateway_alipay_cert_refused',
                    gateway=self.gateway.rec_name,
                    code=response['sub_code']))
        if response.get('sub_code') == NOT_FOUND:
            return response
        raise PermanentError(message)

    def query_auth_token(self, token):
        """Return what Alipay says of an operator's authorization token
        (AUTH_TOKEN_QUERY): a dict with user_id, auth_app_id and expiry (a
        naive UTC datetime or None); raise PermanentError when Alipay does
        not know it or says it is not valid"""
        data = self._call(
            AUTH_TOKEN_QUERY, {'app_auth_token': token}, isv=False)
        if data.get('status') != 'valid':
            raise AuthTokenRefused(gettext(
                    'fuel_payment.msg_gateway_alipay_auth_token',
                    gateway=self.gateway.rec_name,
                    code=f"status {data.get('status')}"))
        try:
            expiry = parse_time(data.get('auth_end'))
        except ValueError:
            expiry = None
        if expiry is None and data.get('expires_in') not in {None, ''}:
            try:
                expiry = dt.datetime.now(dt.UTC).replace(
                    tzinfo=None) + dt.timedelta(
                    seconds=int(data['expires_in']))
            except (TypeError, ValueError):
                expiry = None
        return {
            'user_id': data.get('user_id'),
            'auth_app_id': data.get('auth_app_id'),
            'expiry': expiry,
            }

    def user_of_code(self, code):
        """Return the Alipay user of an auth code a mini program or life
        account page got from the Alipay client (my.getAuthCode, scope
        auth_base): user_id (2088…) or, for an application on open ids,
        open_id; by alipay.system.oauth.token with grant_type and code
        among the signed common parameters, in ISV mode with the
        operator's app_auth_token (the code is then of the operator's
        authorizing application). Raise TransientError, or PermanentError
        with Alipay's sub_code. The access token is not kept."""
        kwargs = {'grant_type': 'authorization_code', 'code': code}
        self._check_isv()
        if self.auth_token:
            kwargs['app_auth_token'] = self.auth_token
        try:
            data = self.client.server_api(OAUTH_TOKEN, None, **kwargs)
        except OSError as exception:
            raise TransientError(type(exception).__name__) from exception
        except (AliPayValidationError, CertificateRotated) as exception:
            raise TransientError("bad answer signature") from exception
        except AliPayException as exception:
            # its failures come as error_response, which the SDK raises
            # with the answer's text
            match = SUB_CODE.search(str(exception))
            raise PermanentError(
                match.group(1) if match else 'refused') from exception
        except ValueError as exception:
            raise TransientError("bad answer") from exception
        # the success has no code; a failure under the method's key has
        if data.get('code') not in {None, SUCCESS}:
            if data.get('code') == UNKNOWN:
                raise TransientError(data.get('sub_code') or UNKNOWN)
            raise PermanentError(data.get('sub_code') or data.get('code'))
        user = data.get('user_id') or data.get('open_id')
        if not user:
            raise PermanentError("no user_id")
        return user

    def exchange_auth_token(self, grant_type, value):
        """Exchange the operator's authorization code (grant_type
        authorization_code) or the refresh token of its authorization
        (refresh_token) for its app_auth_token (AUTH_TOKEN_APP), asked by
        the platform's application without a token among the common
        parameters; return a dict of user_id, auth_app_id, app_auth_token,
        app_refresh_token, expiry and refresh_expiry (naive UTC or None).
        Raise TransientError, or PermanentError naming Alipay's sub code
        (a wrong, used or expired code or refresh token)."""
        key = 'code' if grant_type == 'authorization_code' else (
            'refresh_token')
        try:
            data = self._call(
                AUTH_TOKEN_APP, {'grant_type': grant_type, key: value},
                isv=False)
        except PermanentError as exception:
            # a refused code comes as error_response, which the SDK
            # raises with the answer's text (no token in it)
            cause = exception.__cause__
            match = SUB_CODE.search(str(cause)) if cause else None
            if match:
                raise AuthCodeRefused(match.group(1)) from exception
            raise
        tokens = data.get('tokens') or []
        if data.get('app_auth_token'):
            entry = data
        elif len(tokens) == 1:
            entry = tokens[0]
        elif tokens:
            # a batch authorization of several of the operator's
            # applications: which one charges is not to be guessed
            raise PermanentError(gettext(
                    'fuel_payment.msg_gateway_alipay_auth_batch',
                    gateway=self.gateway.rec_name,
                    apps=', '.join(
                        str(t.get('auth_app_id')) for t in tokens)))
        else:
            raise PermanentError(f"{data.get('code')} no app_auth_token")
        now = dt.datetime.now(dt.UTC).replace(tzinfo=None)

        def after(seconds):
            try:
                return now + dt.timedelta(seconds=int(seconds))
            except (TypeError, ValueError):
                return None
        return {
            'user_id': entry.get('user_id'),
            'auth_app_id': entry.get('auth_app_id'),
            'app_auth_token': entry['app_auth_token'],
            'app_refresh_token': entry.get('app_refresh_token'),
            'expiry': after(entry.get('expires_in')),
            'refresh_expiry': after(entry.get('re_expires_in')),
            }

    def _trade_result(self, data):
        if data.get('sub_code') == NOT_FOUND:
            return Result(state='missing')
        return Result(
            state=TRADE_STATES.get(data.get('trade_status'), 'failed'),
            reference=data.get('trade_no'),
            amount=parse_amount(data.get('total_amount')),
            date=parse_time(
                data.get('gmt_payment') or data.get('send_pay_date')))

    def _subject(self, payment):
        return payment.label[:256]

    def pay_code(self, payment, code):
        data = self._call('alipay.trade.pay', {
                'out_trade_no': payment.number,
                'scene': 'bar_code',
                'auth_code': code,
                'subject': self._subject(payment),
                'total_amount': str(payment.amount),
                'store_id': payment.station.code,
                'timeout_express': '%sm' % max(
                    1, self.gateway.code_timeout // 60),
                })
        if data['code'] == USER_PAYING:
            return Result(state='pending', reference=data.get('trade_no'))
        return Result(
            state='succeeded', reference=data.get('trade_no'),
            amount=parse_amount(data.get('total_amount')),
            date=parse_time(data.get('gmt_payment')))

    def create_qr(self, payment):
        data = self._call('alipay.trade.precreate', {
                'out_trade_no': payment.number,
                'subject': self._subject(payment),
                'total_amount': str(payment.amount),
                'store_id': payment.station.code,
                'timeout_express': '%sm' % max(
                    1, self.gateway.qr_timeout // 60),
                })
        return Result(state='pending', code_url=data.get('qr_code'))

    # ---- in-app --------------------------------------------------------

    app_clients = frozenset({'mini_program', 'jsapi', 'app', 'h5'})
    payer_clients = frozenset({'mini_program', 'jsapi'})

    def create_app(self, payment):
        if payment.client in {'app', 'h5'}:
            return self._app_order(payment)
        biz_content = {
            'out_trade_no': payment.number,
            'subject': self._subject(payment),
            'total_amount': str(payment.amount),
            'product_code': JSAPI_PAY,
            'store_id': payment.station.code,
            # closed by Alipay then, as the payment is by us
            'time_expire': format_time(payment.deadline),
            }
        if USER_ID.match(payment.payer):
            biz_content['buyer_id'] = payment.payer
        else:
            biz_content['buyer_open_id'] = payment.payer
        if (payment.client_app
                and payment.client_app != self.credentials.app):
            # the mini program (life account) the driver pays in, bound to
            # the merchant, when it is not the calling application
            biz_content['op_app_id'] = payment.client_app
        data = self._call('alipay.trade.create', biz_content)
        trade_no = data.get('trade_no')
        if not trade_no:
            raise PermanentError(f"{data.get('code')} no trade_no")
        # my.tradePay({tradeNO}) in a mini program, AlipayJSBridge's
        # tradePay in a life account page
        return Result(
            state='pending', reference=trade_no,
            params={'tradeNO': trade_no})

    def _app_order(self, payment):
        """The order string of alipay.trade.app.pay the mobile app hands to
        Alipay's SDK, or for a page in the phone's browser (h5) the address
        of alipay.trade.wap.pay it sends the browser to: signed here, sent
        by the driver's phone; Alipay knows the trade once the driver opens
        it"""
        app = self.credentials.app
        if (payment.client_app or app) != app:
            # the string is signed with the gateway's application key
            raise PermanentError(gettext(
                    'fuel_payment.msg_gateway_alipay_app_order',
                    gateway=self.gateway.rec_name,
                    app=payment.client_app))
        kwargs = {}
        self._check_isv()
        if self.auth_token:
            kwargs['app_auth_token'] = self.auth_token
        wap = payment.client == 'h5'
        order = self.client.client_api(
            'alipay.trade.wap.pay' if wap else 'alipay.trade.app.pay', {
                'out_trade_no': payment.number,
                'subject': self._subject(payment),
                'total_amount': str(payment.amount),
                'product_code': WAP_PAY if wap else APP_PAY,
                'time_expire': format_time(payment.deadline),
                }, **kwargs)
        if wap:
            # a GET of the gateway with the signed parameters (the SDK's
            # gateway address, the channel's or the gateway's URL)
            return Result(
                state='pending',
                params={'url': f'{self.client._gateway}?{order}'})
        return Result(state='pending', params={'orderStr': order})

    def query(self, payment):
        return self._trade_result(self._call(
                'alipay.trade.query', {'out_trade_no': payment.number}))

    def reverse(self, payment):
        data = self._call(
            'alipay.trade.cancel', {'out_trade_no': payment.number})
        if data.get('sub_code') == NOT_FOUND:
            raise PermanentError(NOT_FOUND)
        return Result(state='cancelled')

    def close(self, payment):
        data = self._call(
            'alipay.trade.close', {'out_trade_no': payment.number})
        if data.get('sub_code') == NOT_FOUND:
            raise PermanentError(NOT_FOUND)
        return Result(state='cancelled')

    def refund(self, refund):
        biz_content = {
            'out_trade_no': refund.payment.number,
            'refund_amount': str(refund.amount),
            # the partial refund's key: the same one is not repeated
            'out_request_no': refund.number,
            }
        if refund.reason:
            biz_content['refund_reason'] = refund.reason[:256]
        data = self._call('alipay.trade.refund', biz_content)
        if data.get('sub_code') == NOT_FOUND:
            raise PermanentError(NOT_FOUND)
        # fund_change N: already refunded by this out_request_no
        return Result(
            state='succeeded', reference=data.get('trade_no'),
            date=parse_time(data.get('gmt_refund_pay')))

    def fetch_bill(self, date):
        data = self._call('alipay.data.dataservice.bill.downloadurl.query', {
                'bill_type': 'trade',
                'bill_date': date.isoformat(),
                })
        url = data.get('bill_download_url')
        if not url:
            raise PermanentError(data.get('sub_code') or "no bill")
        try:
            # a short-lived address Alipay signed for us
            with urllib.request.urlopen(url, timeout=TIMEOUT) as response:
                return response.read()
        except OSError as exception:
            raise TransientError(type(exception).__name__) from exception

    def parse_bill(self, data):
        return parse_trade_bill(data)

    def bill_name(self, date):
        return f'alipay-{self.gateway.merchant}-{date.isoformat()}.zip'

    def answer(self, outcome, body):
        # the plain text "success"; anything else and Alipay notifies again
        if outcome == 'refused':
            return 400, 'failure', 'text/plain'
        return 200, 'success', 'text/plain'

    def _verified_params(self, body):
        """The form fields Alipay posted in body, verified (sorted pairs
        without sign and sign_type, the application's Alipay key or
        certificate) and addressed to the gateway's application; raise
        ForgedNotification"""
        params = dict(urllib.parse.parse_qsl(
                body or '', keep_blank_values=True))
        signature = params.pop('sign', None)
        if not signature:
            raise ForgedNotification("no signature")
        try:
            verified = self.client.verify(dict(params), signature)
        except (AliPayException, ValueError, TypeError) as exception:
            raise ForgedNotification(type(exception).__name__) from None
        if not verified:
            raise ForgedNotification("signature")
        if params.get('app_id') != self.credentials.app:
            raise ForgedNotification("another application")
        return params

    def parse_notification(self, headers, body):
        params = self._verified_params(body)
        # ISV on a platform account: the operator's application its
        # authorization was checked for (Set Keys)
        if (self.auth_token and self.gateway.auth_app
                and params.get('auth_app_id') != self.gateway.auth_app):
            raise ForgedNotification("another operator")
        # ISV: every operator's notifications are signed for the platform's
        # application; the seller is the operator (its PID)
        if self.auth_token and params.get('seller_id') != (
                self.gateway.merchant):
            raise ForgedNotification("another seller")
        if not params.get('notify_id') or not params.get('out_trade_no'):
            raise ForgedNotification("incomplete")
        return Notification(
            id=params['notify_id'], number=params['out_trade_no'],
            result=self._trade_result(params))

    def parse_app_message(self, body):
        """Verify and read a message Alipay posts to the application's
        gateway (应用网关, alipay_auth.py): the operator's authorization
        (AUTH_NOTIFY, form fields and biz_content as Alipay's examples show)
        or its cancellation (AUTH_CANCELLED, a message of Alipay's message
        service); verified as a payment notification is (sorted pairs
        without sign and sign_type, the application's Alipay key or
        certificate). Return an AppMessage; raise ForgedNotification."""
        params = self._verified_params(body)
        if not params.get('notify_id'):
            raise ForgedNotification("incomplete")
        try:
            biz = json.loads(params.get('biz_content') or '{}')
        except ValueError:
            raise ForgedNotification("biz_content") from None
        if not isinstance(biz, dict):
            raise ForgedNotification("biz_content")
        if params.get('notify_type') == AUTH_NOTIFY:
            detail = biz.get('detail')
            if not isinstance(detail, dict):
                raise ForgedNotification("incomplete")
            if detail.get('app_id', params['app_id']) != params['app_id']:
                raise ForgedNotification("another application")
            when = _epoch_ms(detail.get('auth_time'))
            if when is None:
                try:
                    when = parse_time(params.get('notify_time'))
                except ValueError:
                    when = None
            base = when or dt.datetime.now(dt.UTC).replace(tzinfo=None)
            return AppMessage(
                id=params['notify_id'],
                kind=(
                    'granted'
                    if params.get('status', AUTH_EXECUTED) == AUTH_EXECUTED
                    else 'other'),
                user=detail.get('user_id'),
                auth_app=(
                    detail.get('auth_app_id') or params.get('auth_app_id')),
                time=when,
                authorization={
                    'user_id': detail.get('user_id'),
                    'auth_app_id': (
                        detail.get('auth_app_id')
                        or params.get('auth_app_id')),
                    'app_auth_token': detail.get('app_auth_token'),
                    'app_refresh_token': detail.get('app_refresh_token'),
                    'expiry': _after(base, detail.get('expires_in')),
                    'refresh_expiry': _after(
                        base, detail.get('re_expires_in')),
                    })
        if params.get('msg_method') == AUTH_CANCELLED:
            return AppMessage(
                id=params['notify_id'], kind='cancelled',
                user=biz.get('user_id') or params.get('msg_uid'),
                auth_app=biz.get('auth_app_id') or params.get('msg_app_id'),
                time=_epoch_ms(params.get('utc_timestamp')))
        return AppMessage(
            id=params['notify_id'], kind='other', user=None, auth_app=None,
            time=None)


def _epoch_ms(value):
    "Alipay's milliseconds since the epoch as naive UTC, or None"
    try:
        return dt.datetime.fromtimestamp(
            int(value) / 1000, dt.UTC).replace(tzinfo=None)
    except (TypeError, ValueError, OverflowError, OSError):
        return None


def _after(base, seconds):
    try:
        return base + dt.timedelta(seconds=int(seconds))
    except (TypeError, ValueError, OverflowError):
        return None
