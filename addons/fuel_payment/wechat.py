# This file is part of fuelpay.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""WeChat Pay API v3 through wechatpayv3 (direct merchant or partner mode
(服务商) with a sub-merchant; platform public key mode (平台公钥模式), or
platform certificate mode (平台证书模式) for a gateway without a Platform
Public Key: the certificates are downloaded from /v3/certificates,
checked and cached on the merchant account's gateway)"""
import datetime as dt
import gzip
import hashlib
import json
import logging
import secrets
import time
from decimal import Decimal, InvalidOperation

import requests
from cryptography import x509
from trytond.transaction import Transaction
from wechatpayv3 import WeChatPay, WeChatPayType
from wechatpayv3.core import Core
from wechatpayv3.utils import aes_decrypt, rsa_verify

from .gateway import (
    BillFormatError,
    ForgedNotification,
    Notification,
    PermanentError,
    Provider,
    Result,
    TransientError,
    from_fen,
    point_sdk_at,
    provider,
    to_fen,
)

logger = logging.getLogger(__name__)

# (connect, read) seconds: a code payment answers within seconds or
# says USERPAYING
TIMEOUT = (5, 20)
# a notification older than this is a replay (WeChat signs its time)
NOTIFICATION_MAX_AGE = 300
# platform certificate mode: WeChat's 下载平台证书 page advises to download
# the list at intervals under 12 hours (a new certificate is listed 24
# hours before it is used, the old one's expire_time moved 24 hours ahead)
CERTIFICATES_MAX_AGE = dt.timedelta(hours=12)
CERTIFICATES_PATH = '/v3/certificates'
# error codes WeChat documents as "try again" rather than refusals
TRANSIENT_CODES = {
    'SYSTEM_ERROR', 'SYSTEMERROR', 'BANKERROR', 'FREQUENCY_LIMITED'}
TRADE_STATES = {
    'SUCCESS': 'succeeded',
    # refunded afterwards: it was paid
    'REFUND': 'succeeded',
    'USERPAYING': 'pending',
    'NOTPAY': 'pending',
    'CLOSED': 'cancelled',
    'REVOKED': 'cancelled',
    'PAYERROR': 'failed',
    }
# the trade bill (交易账单, bill_type ALL): 27 columns, then a summary
BILL_COLUMNS = (
    '交易时间,公众账号ID,商户号,特约商户号,设备号,微信订单号,商户订单号,'
    '用户标识,交易类型,交易状态,付款银行,货币种类,应结订单金额,代金券金额,'
    '微信退款单号,商户退款单号,退款金额,充值券退款金额,退款类型,退款状态,'
    '商品名称,商户数据包,手续费,费率,订单金额,申请退款金额,费率备注'
    )
BILL_HEADER = BILL_COLUMNS.split(',')
BILL_SUMMARY = '总交易单数'
BILL_STATES = {
    'SUCCESS': 'succeeded',
    'REVOKED': 'cancelled',
    }
REFUND_STATES = {
    'SUCCESS': 'succeeded',
    'PROCESSING': 'pending',
    'CLOSED': 'failed',
    'ABNORMAL': 'failed',
    }


# the pay_type of each in-app client (APP_CLIENTS)
APP_PAY_TYPES = {
    'jsapi': WeChatPayType.JSAPI,
    'mini_program': WeChatPayType.MINIPROG,
    'app': WeChatPayType.APP,
    'h5': WeChatPayType.H5,
    }


def parse_time(value):
    "RFC 3339 time of WeChat as a naive UTC datetime"
    if not value:
        return None
    date = dt.datetime.fromisoformat(value)
    if date.tzinfo:
        date = date.astimezone(dt.UTC).replace(tzinfo=None)
    return date


@provider('wechat')
class WeChatProvider(Provider):
    app_clients = frozenset(APP_PAY_TYPES)
    # JSAPI and mini programs pay as the openid of the user in the app
    payer_clients = frozenset({'jsapi', 'mini_program'})
    # H5 (a page in the phone's browser): WeChat checks the phone that
    # opens the h5_url is at the address given
    ip_clients = frozenset({'h5'})

    def __init__(self, gateway):
        super().__init__(gateway)
        # partner mode: merchant, app and keys are the platform's (sp_mchid,
        # sp_appid; on the gateway or on its platform account), the SDK
        # takes the partner paths and every call names the operator's
        # sub-merchant
        self.credentials = credentials = gateway.credentials()
        if not (credentials.platform_key or credentials.platform_key_id):
            # platform certificate mode (平台证书模式): the platform's
            # certificates, cached on the account's gateway
            self.client = point_sdk_at(CertificateWeChatPay(
                    PlatformCertificates(gateway.account),
                    wechatpay_type=WeChatPayType.NATIVE,
                    mchid=credentials.merchant,
                    private_key=credentials.private_key,
                    cert_serial_no=credentials.key_serial,
                    appid=credentials.app,
                    apiv3_key=credentials.api_key,
                    notify_url=gateway.notify_url,
                    partner_mode=gateway.partner,
                    timeout=TIMEOUT), credentials.url)
            return
        self.client = point_sdk_at(WeChatPay(
                wechatpay_type=WeChatPayType.NATIVE,
                mchid=credentials.merchant,
                private_key=credentials.private_key,
                cert_serial_no=credentials.key_serial,
                appid=credentials.app,
                apiv3_key=credentials.api_key,
                notify_url=gateway.notify_url,
                partner_mode=gateway.partner,
                timeout=TIMEOUT,
                public_key=credentials.platform_key,
                public_key_id=credentials.platform_key_id), credentials.url)

    def _sub(self, app=False):
        """The sub-merchant keywords of an SDK call in partner mode:
        sub_mchid, and sub_appid when app and the gateway has one"""
        if not self.gateway.partner:
            return {}
        result = {'sub_mchid': self.gateway.sub_merchant}
        if app and self.gateway.sub_app:
            result['sub_appid'] = self.gateway.sub_app
        return result

    def _call(self, method, *args, **kwargs):
        "Return (status, data) of an SDK call; raise on failure"
        try:
            status, text = method(*args, **kwargs)
        except requests.RequestException as exception:
            raise TransientError(type(exception).__name__) from exception
        except Exception as exception:
            # the SDK raises a bare Exception on a bad answer signature
            raise TransientError(str(exception)) from exception
        try:
            data = json.loads(text) if text else {}
        except (TypeError, ValueError):
            data = {}
        if status >= 500:
            raise TransientError(f"HTTP {status} {data.get('code', '')}")
        if status >= 300 and status != 404:
            code = data.get('code', '')
            message = f"{code}: {data.get('message', '')}"
            if code in TRANSIENT_CODES or status == 429:
                raise TransientError(message)
            raise PermanentError(message)
        return status, data

    def _trade_result(self, data):
        state = TRADE_STATES.get(data.get('trade_state'), 'failed')
        amount = data.get('amount') or {}
        return Result(
            state=state,
            reference=data.get('transaction_id'),
            amount=(
                from_fen(amount['total']) if 'total' in amount else None),
            date=parse_time(data.get('success_time')),
            error=(
                data.get('trade_state_desc') if state == 'failed'
                else None))

    def _description(self, payment):
        return payment.label[:127]

    def _order(self, payment, expire=True):
        """The keywords of an order of payment's amount; with expire, closed
        by WeChat at the QR deadline"""
        values = {
            'description': self._description(payment),
            'out_trade_no': payment.number,
            'amount': {
                'total': to_fen(payment.amount),
                'currency': payment.currency.code},
            }
        if expire:
            values['time_expire'] = (
                dt.datetime.now(dt.UTC) + dt.timedelta(
                    seconds=self.gateway.qr_timeout)).isoformat(
                timespec='seconds')
        return values

    def pay_code(self, payment, code):
        status, data = self._call(
            self.client.pay,
            **self._order(payment, expire=False),
            payer={'auth_code': code},
            scene_info={'store_info': {'out_id': payment.station.code}},
            pay_type=WeChatPayType.CODEPAY,
            **self._sub(app=True))
        if status == 202 or data.get('code') == 'USERPAYING':
            # the customer confirms on the phone: query until the deadline
            return Result(state='pending')
        return self._trade_result(data)

    def create_qr(self, payment):
        _status, data = self._call(
            self.client.pay,
            **self._order(payment),
            scene_info={'store_info': {'id': payment.station.code}},
            pay_type=WeChatPayType.NATIVE,
            **self._sub(app=True))
        return Result(state='pending', code_url=data.get('code_url'))

    def create_app(self, payment):
        """Create the prepay_id of an in-app payment
        (/v3/pay/transactions/jsapi or /app, the partner paths in partner
        mode) and sign what the client hands to the wallet with the
        merchant's key (RSA, "调起支付" signature)"""
        gateway = self.gateway
        app = payment.client_app
        kwargs = self._sub()
        payer = None
        if gateway.partner:
            # the sub-merchant's own app pays as sub_openid, the
            # platform's app as sp_openid
            if gateway.sub_app:
                kwargs['sub_appid'] = gateway.sub_app
            own = app == gateway.sub_app
            appid = self.credentials.app
            if payment.payer:
                payer = {
                    'sub_openid' if own else 'sp_openid': payment.payer}
            if not own:
                appid = app
        else:
            appid = app
            if payment.payer:
                payer = {'openid': payment.payer}
        _status, data = self._call(
            self.client.pay,
            **self._order(payment),
            payer=payer if payment.client in self.payer_clients else None,
            scene_info=(
                {'payer_client_ip': payment.client_ip,
                    'h5_info': {'type': 'Wap'}}
                if payment.client == 'h5' else None),
            appid=appid,
            pay_type=APP_PAY_TYPES[payment.client],
            **kwargs)
        if payment.client == 'h5':
            # the page sends the browser there (adding &redirect_url= to
            # come back), WeChat opens and pays it
            if not data.get('h5_url'):
                raise PermanentError("no h5_url")
            return Result(state='pending', params={'h5_url': data['h5_url']})
        prepay_id = data.get('prepay_id')
        if not prepay_id:
            raise PermanentError("no prepay_id")
        timestamp = str(int(time.time()))
        nonce = secrets.token_hex(16)
        if payment.client == 'app':
            # the mobile SDK's PayReq: the merchant is the one of the
            # call (the service provider in partner mode)
            params = {
                'appid': app,
                'partnerid': self.credentials.merchant,
                'prepayid': prepay_id,
                'package': 'Sign=WXPay',
                'noncestr': nonce,
                'timestamp': timestamp,
                'sign': self.client.sign([app, timestamp, nonce, prepay_id]),
                }
        else:
            # wx.requestPayment / WeixinJSBridge getBrandWCPayRequest
            package = f'prepay_id={prepay_id}'
            params = {
                'appId': app,
                'timeStamp': timestamp,
                'nonceStr': nonce,
                'package': package,
                'signType': 'RSA',
                'paySign': self.client.sign([app, timestamp, nonce, package]),
                }
        return Result(state='pending', params=params)

    def query(self, payment):
        status, data = self._call(
            self.client.query, out_trade_no=payment.number,
            **self._sub())
        if status == 404:
            return Result(state='missing')
        return self._trade_result(data)

    def reverse(self, payment):
        self._call(
            self.client.codepay_reverse, out_trade_no=payment.number,
            **self._sub(app=True))
        return Result(state='cancelled')

    def close(self, payment):
        self._call(
            self.client.close, out_trade_no=payment.number, **self._sub())
        return Result(state='cancelled')

    def refund(self, refund):
        payment = refund.payment
        _status, data = self._call(
            self.client.refund,
            out_refund_no=refund.number,
            out_trade_no=payment.number,
            amount={
                'refund': to_fen(refund.amount),
                'total': to_fen(payment.amount),
                'currency': payment.currency.code},
            reason=(refund.reason or '')[:80] or None,
            **self._sub())
        state = REFUND_STATES.get(data.get('status'), 'failed')
        return Result(
            state=state, reference=data.get('refund_id'),
            date=parse_time(data.get('success_time')),
            error=data.get('status') if state == 'failed' else None)

    def fetch_bill(self, date):
        _, data = self._call(
            self.client.trade_bill, bill_date=date.isoformat(),
            bill_type='ALL', tar_type='GZIP', **self._sub())
        url = data.get('download_url')
        if not url:
            raise PermanentError("no download_url")
        # the file is not signed: its hash is, in the signed answer
        _, content = self._call_raw(self.client.download_bill, url)
        try:
            raw = gzip.decompress(content)
        except (OSError, EOFError) as exception:
            raise TransientError("bill is not gzip") from exception
        if (data.get('hash_type') == 'SHA1' and hashlib.sha1(
                    raw).hexdigest() != data.get('hash_value', '').lower()):
            raise TransientError("bill hash differs")
        return content

    def _call_raw(self, method, *args):
        try:
            status, content = method(*args)
        except requests.RequestException as exception:
            raise TransientError(type(exception).__name__) from exception
        if status >= 500:
            raise TransientError(f"HTTP {status}")
        if status >= 300:
            raise PermanentError(f"HTTP {status}")
        if isinstance(content, str):
            content = content.encode()
        return status, content

    def parse_bill(self, data):
        return parse_trade_bill(
            data,
            sub_merchant=(
                self.gateway.sub_merchant if self.gateway.partner
                else None))

    def bill_name(self, date):
        merchant = self.credentials.merchant
        if self.gateway.partner:
            merchant += f'-{self.gateway.sub_merchant}'
        return f'wechat-{merchant}-{date.isoformat()}.csv.gz'

    def answer(self, outcome, body):
        # 204 (or 200) accepted; 4xx with a JSON FAIL: notify again later
        if outcome == 'refused':
            return 400, '{"code": "FAIL", "message": "refused"}', (
                'application/json')
        return 204, '', None

    def parse_notification(self, headers, body):
        headers = {k.title(): v for k, v in headers.items()}
        try:
            timestamp = int(headers.get('Wechatpay-Timestamp', ''))
        except ValueError:
            raise ForgedNotification("no timestamp") from None
        if abs(time.time() - timestamp) > NOTIFICATION_MAX_AGE:
            raise ForgedNotification("stale timestamp")
        try:
            data = self.client.callback(headers, body)
        except Exception as exception:
            raise ForgedNotification(str(exception)) from exception
        if not data:
            raise ForgedNotification("signature or decryption failed")
        resource = data.get('resource') or {}
        if self.gateway.partner:
            # signed for the platform: any of its sub-merchants' payments
            if (resource.get('sp_mchid') != self.credentials.merchant
                    or resource.get('sub_mchid')
                    != self.gateway.sub_merchant):
                raise ForgedNotification("another sub-merchant")
        elif resource.get('mchid') != self.credentials.merchant:
            raise ForgedNotification("another merchant")
        if not data.get('id') or not resource.get('out_trade_no'):
            raise ForgedNotification("incomplete")
        return Notification(
            id=data['id'], number=resource['out_trade_no'],
            result=self._trade_result(resource))


class CertificateListError(Exception):
    "A certificate list (/v3/certificates) that does not check"


def _utcnow():
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


def _serial(value):
    "A certificate serial (hex, any case, leading zeros) as an integer"
    try:
        return int(value or '', 16)
    except ValueError:
        return None


class PlatformCertificates:
    """The WeChat Pay platform certificates of a merchant account (the
    gateway, or its platform account in partner mode) cached in its
    platform_certs as JSON: {"fetched": UTC time of the download,
    "certificates": {serial: {"effective": ..., "expire": ..., "pem":
    ...}}, "merchant": the merchant ID they were downloaded for (a cache
    of another, copied with the gateway, is ignored)}; public, read and
    written by SQL (operators may not write the platform's record, the
    provider runs without access rights)"""

    def __init__(self, gateway):
        self.gateway = gateway
        self.merchant = gateway.merchant

    def read(self):
        table = self.gateway.__table__()
        cursor = Transaction().connection.cursor()
        cursor.execute(*table.select(
                table.platform_certs, where=table.id == self.gateway.id))
        row = cursor.fetchone()
        try:
            data = json.loads(row[0]) if row and row[0] else {}
        except ValueError:
            data = {}
        return data if isinstance(data, dict) else {}

    def certificates(self, data=None):
        "The x509 certificates of the cache valid now"
        data = self.read() if data is None else data
        if data.get('merchant') != self.merchant:
            return []
        now = _utcnow()
        result = []
        for serial, value in (data.get('certificates') or {}).items():
            try:
                certificate = x509.load_pem_x509_certificate(
                    value['pem'].encode())
            except (KeyError, TypeError, ValueError):
                continue
            if (certificate.serial_number == _serial(serial)
                    and _valid(certificate, now)):
                result.append(certificate)
        return result

    def stale(self, data=None):
        """Whether the cache should be downloaded again: empty, fetched
        CERTIFICATES_MAX_AGE ago or more, or its newest certificate expires
        within CERTIFICATES_MAX_AGE"""
        data = self.read() if data is None else data
        certificates = self.certificates(data)
        if not certificates:
            return True
        now = _utcnow()
        try:
            fetched = dt.datetime.fromisoformat(data['fetched'])
        except (KeyError, TypeError, ValueError):
            return True
        newest = max(c.not_valid_after_utc for c in certificates)
        return (now - fetched >= CERTIFICATES_MAX_AGE
            or newest.replace(tzinfo=None) - now <= CERTIFICATES_MAX_AGE)

    def write(self, items):
        "Store the checked certificates items (serial, effective, expire, pem)"
        data = {
            'fetched': _utcnow().isoformat(timespec='seconds'),
            'merchant': self.merchant,
            'certificates': {
                serial: {'effective': effective, 'expire': expire, 'pem': pem}
                for serial, effective, expire, pem in items},
            }
        transaction = Transaction()
        if transaction.readonly:
            # kept for this provider only; the next one downloads again
            return
        table = self.gateway.__table__()
        transaction.connection.cursor().execute(*table.update(
                [table.platform_certs],
                [json.dumps(data, indent=1, sort_keys=True)],
                where=table.id == self.gateway.id))


def _valid(certificate, now):
    return (certificate.not_valid_before_utc.replace(tzinfo=None) <= now
        <= certificate.not_valid_after_utc.replace(tzinfo=None))


class CertificateCore(Core):
    """wechatpayv3's Core in platform certificate mode, its certificates
    taken from and stored in a PlatformCertificates cache

    The SDK's own way is unfit here: it downloads the list in its
    constructor (from the production host, before point_sdk_at), keeps the
    certificates in memory or files (cert_dir) and does not verify the
    signature of the list's answer (skip_verify). Here the list is
    downloaded when the cache is stale or an answer or a notification names
    an unknown serial (Wechatpay-Serial), at most once per provider (the
    SDK then looks the serial up again and refuses it if still unknown),
    and accepted only whole: every certificate decrypts with the APIv3 key
    (AEAD_AES_256_GCM), is valid now and has the serial it is listed
    under, and the answer's signature verifies with a listed or a cached
    certificate."""

    def __init__(self, cache, **kwargs):
        self._cache = cache
        self._refreshed = False
        self._listing = None
        super().__init__(**kwargs)

    def _init_certificates(self):
        # called by Core.__init__ (no public key): no download here
        data = self._cache.read()
        self._certificates[:] = self._cache.certificates(data)
        self._stale = self._cache.stale(data)

    def _update_certificates(self):
        # the SDK calls it on an unknown serial
        if self._refreshed or self._listing is not None:
            return
        self._refreshed = True
        self._stale = False
        self._listing = []
        try:
            status, _ = self.request(CERTIFICATES_PATH)
            if status != 200:
                raise CertificateListError(f"HTTP {status}")
            items = self._listing
        except CertificateListError as exception:
            # the cached certificates stay
            logger.warning(
                "WeChat certificate list of %s refused: %s",
                self._mchid, exception)
            return
        finally:
            self._listing = None
        self._certificates[:] = [c for *_, c in items]
        self._cache.write([item[:4] for item in items])
        logger.info(
            "WeChat certificates of %s downloaded: %s", self._mchid,
            ', '.join(item[0] for item in items))

    def _decrypt_list(self, body):
        """Return the (serial, effective, expire, pem, certificate) of the
        list body; raise CertificateListError unless all check"""
        try:
            data = json.loads(body).get('data')
        except (AttributeError, TypeError, ValueError):
            data = None
        if not data or not isinstance(data, list):
            raise CertificateListError("no certificates")
        now = _utcnow()
        items = []
        for value in data:
            encrypted = value.get('encrypt_certificate') or {}
            serial = value.get('serial_no')
            if encrypted.get('algorithm') != 'AEAD_AES_256_GCM':
                raise CertificateListError(f"algorithm of {serial}")
            try:
                pem = aes_decrypt(
                    nonce=encrypted.get('nonce') or '',
                    ciphertext=encrypted.get('ciphertext') or '',
                    associated_data=encrypted.get('associated_data') or '',
                    apiv3_key=self._apiv3_key)
            except ValueError:
                pem = None
            if not pem:
                raise CertificateListError(
                    f"{serial} does not decrypt with the APIv3 key")
            try:
                certificate = x509.load_pem_x509_certificate(pem.encode())
            except ValueError:
                raise CertificateListError(
                    f"{serial} is no certificate") from None
            if certificate.serial_number != _serial(serial):
                raise CertificateListError(f"serial of {serial}")
            if not _valid(certificate, now):
                # listed until WeChat drops it: not kept
                continue
            items.append((
                    serial.upper(), value.get('effective_time'),
                    value.get('expire_time'), pem, certificate))
        if not items:
            raise CertificateListError("no valid certificate")
        return items

    def _verify_signature(self, headers, body):
        if self._listing is not None:
            # the list's answer: signed by one of its certificates or a
            # cached one
            items = self._decrypt_list(body)
            serial = _serial(headers.get('Wechatpay-Serial'))
            keys = [c for *_, c in items] + list(self._certificates)
            certificate = next(
                (c for c in keys if c.serial_number == serial), None)
            if (certificate is None
                    or headers.get('Wechatpay-Signature-Type')
                    != 'WECHATPAY2-SHA256-RSA2048'
                    or not rsa_verify(
                        headers.get('Wechatpay-Timestamp', ''),
                        headers.get('Wechatpay-Nonce', ''), body,
                        headers.get('Wechatpay-Signature', ''),
                        certificate.public_key())):
                raise CertificateListError("signature")
            self._listing[:] = items
            return True
        if self._stale:
            try:
                self._update_certificates()
            except requests.RequestException as exception:
                if not self._certificates:
                    raise
                # the cached ones still serve
                logger.warning(
                    "WeChat certificate list of %s not downloaded: %s",
                    self._mchid, type(exception).__name__)
        return super()._verify_signature(headers, body)


class CertificateWeChatPay(WeChatPay):
    """WeChatPay on a CertificateCore: WeChatPay.__init__ would build a
    Core that downloads the certificates at once; this sets the attributes
    it sets (wechatpayv3 2.0.x, pinned as for point_sdk_at)"""

    def __init__(self, cache, wechatpay_type, mchid, private_key,
            cert_serial_no, appid, apiv3_key, notify_url=None,
            partner_mode=False, timeout=None):
        self._type = wechatpay_type
        self._mchid = mchid
        self._appid = appid
        self._notify_url = notify_url
        self._partner_mode = partner_mode
        self._core = CertificateCore(
            cache, mchid=mchid, cert_serial_no=cert_serial_no,
            private_key=private_key, apiv3_key=apiv3_key, timeout=timeout)


def _bill_amount(value):
    try:
        return Decimal(value or '0').quantize(Decimal('0.01'))
    except InvalidOperation:
        raise BillFormatError(f"amount {value!r}") from None


def parse_trade_bill(data, sub_merchant=None):
    """Parse a trade bill (gzip or plain CSV, each value prefixed with a
    back-quote, amounts in yuan) into the rows of Provider.parse_bill;
    with sub_merchant (partner mode) the rows of another sub-merchant
    (特约商户号) are left out"""
    if data[:2] == b'\x1f\x8b':
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError) as exception:
            raise BillFormatError("gzip") from exception
    try:
        lines = data.decode('utf-8-sig').splitlines()
    except UnicodeDecodeError:
        raise BillFormatError("encoding") from None
    if not lines or lines[0].split(',') != BILL_HEADER:
        raise BillFormatError("header")
    rows = []
    for line in lines[1:]:
        if not line.strip():
            continue
        if line.startswith(BILL_SUMMARY):
            break
        if not line.startswith('`'):
            raise BillFormatError(f"line {line[:20]!r}")
        # values may hold commas; each one starts with a back-quote
        values = [v.strip() for v in line[1:].split(',`')]
        if len(values) != len(BILL_HEADER):
            raise BillFormatError(f"{len(values)} columns")
        value = dict(zip(BILL_HEADER, values, strict=True)).get
        if sub_merchant and value('特约商户号') != sub_merchant:
            continue
        state = value('交易状态')
        if state == 'REFUND':
            rows.append({
                    'type': 'refund',
                    'number': value('商户订单号'),
                    'refund_number': value('商户退款单号'),
                    'reference': value('微信退款单号'),
                    'amount': _bill_amount(value('申请退款金额')),
                    'status': REFUND_STATES.get(
                        value('退款状态'), 'failed'),
                    'fee': _bill_amount(value('手续费')),
                    })
        else:
            rows.append({
                    'type': 'payment',
                    'number': value('商户订单号'),
                    'reference': value('微信订单号'),
                    'amount': _bill_amount(value('订单金额')),
                    'status': BILL_STATES.get(state, 'failed'),
                    'fee': _bill_amount(value('手续费')),
                    })
    return rows
