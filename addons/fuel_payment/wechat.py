# This file is part of fuelpay.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""WeChat Pay API v3 through wechatpayv3 (direct merchant or partner mode
(服务商) with a sub-merchant, platform public key mode)"""
import datetime as dt
import gzip
import hashlib
import json
import logging
import secrets
import time
from decimal import Decimal, InvalidOperation

import requests
from wechatpayv3 import WeChatPay, WeChatPayType

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

    def pay_code(self, payment, code):
        status, data = self._call(
            self.client.pay,
            description=self._description(payment),
            out_trade_no=payment.number,
            amount={
                'total': to_fen(payment.amount),
                'currency': payment.currency.code},
            payer={'auth_code': code},
            scene_info={'store_info': {'out_id': payment.station.code}},
            pay_type=WeChatPayType.CODEPAY,
            **self._sub(app=True))
        if status == 202 or data.get('code') == 'USERPAYING':
            # the customer confirms on the phone: query until the deadline
            return Result(state='pending')
        return self._trade_result(data)

    def create_qr(self, payment):
        expire = dt.datetime.now(dt.UTC) + dt.timedelta(
            seconds=self.gateway.qr_timeout)
        _status, data = self._call(
            self.client.pay,
            description=self._description(payment),
            out_trade_no=payment.number,
            amount={
                'total': to_fen(payment.amount),
                'currency': payment.currency.code},
            time_expire=expire.isoformat(timespec='seconds'),
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
        expire = dt.datetime.now(dt.UTC) + dt.timedelta(
            seconds=gateway.qr_timeout)
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
            description=self._description(payment),
            out_trade_no=payment.number,
            amount={
                'total': to_fen(payment.amount),
                'currency': payment.currency.code},
            time_expire=expire.isoformat(timespec='seconds'),
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
