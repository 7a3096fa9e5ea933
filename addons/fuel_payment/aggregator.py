# This file is part of fuelpay.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""UnionPay (and the other channels an acquirer carries) through Huifu's
aggregator API (汇付斗拱, `https://api.huifu.com`): payment codes, QRs
and payments in the driver's WeChat, Alipay or UnionPay app

Every call is a JSON POST of `{sys_id, product_id, data, sign}` where
sign is base64 SHA256withRSA (merchant key) of `data` sorted by key,
empty values left out, dumped without spaces or ASCII escapes; the
answer `{data, sign}` is verified the same way with Huifu's public key.
Notifications are forms `resp_code, resp_data, sign`, the signature over
the raw `resp_data` text. This is the protocol of Huifu's own SDKs
(dg-sdk); it is spoken here with requests and cryptography."""
import base64
import csv
import datetime as dt
import io
import json
import re
import secrets
import urllib.parse
import zipfile
from decimal import Decimal, InvalidOperation

import requests
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding
from trytond.i18n import gettext

from .gateway import (
    BillFormatError,
    ForgedNotification,
    Notification,
    PermanentError,
    Provider,
    Result,
    TransientError,
    provider,
)

DEFAULT_URL = 'https://api.huifu.com'
MICROPAY = '/v2/trade/payment/micropay'
JSPAY = '/v2/trade/payment/jspay'
QUERY = '/v2/trade/payment/scanpay/query'
CLOSE = '/v2/trade/payment/scanpay/close'
REFUND = '/v2/trade/payment/scanpay/refund'
# 交易结算对账单查询: the files generated on file_date (trade day + 1)
FILEQUERY = '/v2/trade/check/filequery'
TRADE_BILL = 'TRADE_BILL'
# 年月日_商户号_order_批次号.csv, published file name rule
ORDER_FILE = re.compile(r'^\d{8}_\d+_order(_[^/]*)?\.csv$')
# the columns read, by header name: Huifu's field names in Chinese; the
# published material gives no column list (see the design doc)
BILL_COLUMNS = [
    '商户号', '请求日期', '请求流水号', '汇付全局流水号', '原请求流水号',
    '交易类型', '交易状态', '交易金额', '手续费', '交易完成时间',
    ]
BILL_STATES = {
    'S': 'succeeded',
    'F': 'failed',
    }
# (connect, read) seconds
TIMEOUT = (5, 20)
SUCCESS = '00000000'
PROCESSING = '00000100'
TRADE_STATES = {
    'S': 'succeeded',
    'P': 'pending',
    'I': 'pending',
    'F': 'failed',
    }
# the QR of each channel (trade_type of jspay)
QR_TYPES = {
    'unionpay': 'U_NATIVE',
    'wechat': 'T_NATIVE',
    'alipay': 'A_NATIVE',
    }
# the in-app payments of jspay by (wallet, client): trade_type, the JSON
# string field of the wallet's parameters and the key of the payer in it
# (None: the client names none); from the dg-sdk demos of
# V2TradePaymentJspayRequest (wx_data, alipay_data, unionpay_data) and
# Huifu's own skill pages (dg-payment-skills: T_JSAPI 微信公众号 and
# T_MINIAPP 微信小程序 need sub_openid, A_JSAPI 支付宝JS needs buyer_id,
# T_APP 微信APP names no payer, U_JSAPI 银联JS needs the 银联用户标识
# user_id and the driver's IP customer_ip)
APP_TYPES = {
    ('wechat', 'jsapi'): ('T_JSAPI', 'wx_data', 'sub_openid'),
    ('wechat', 'mini_program'): ('T_MINIAPP', 'wx_data', 'sub_openid'),
    # the operator's mobile app (its WeChat open platform AppID, required
    # as sub_appid); Huifu documents T_APP for WeChat 直连 merchants only
    ('wechat', 'app'): ('T_APP', 'wx_data', None),
    # an Alipay mini program pays by A_JSAPI naming itself in op_app_id
    ('alipay', 'jsapi'): ('A_JSAPI', 'alipay_data', 'buyer_id'),
    ('alipay', 'mini_program'): ('A_JSAPI', 'alipay_data', 'buyer_id'),
    # a page opened in the UnionPay app (云闪付)
    ('unionpay', 'jsapi'): ('U_JSAPI', 'unionpay_data', 'user_id'),
    }
# where the client's application goes in each payer field
APP_KEYS = {
    'wx_data': 'sub_appid',
    'alipay_data': 'op_app_id',
    }
# the trade types whose client must name an application of its own
APP_REQUIRED = {'T_APP'}
# the trade types answering the address the page opens as pay_info (the
# Huifu demo cashier sends the browser to U_JSAPI's pay_info), the others
# a JSON object the client hands to the wallet
URL_TYPES = {'U_JSAPI'}
# 获取银联用户标识: the user_id of a UnionPay user authorization code
USERMARK = '/v2/trade/payment/usermark2/query'
BEIJING = dt.timezone(dt.timedelta(hours=8))


def _canonical(data):
    "The signed text of data: sorted keys, no empty values, compact"
    def clean(value):
        if isinstance(value, dict):
            return {
                k: clean(v) for k, v in sorted(value.items())
                if v not in (None, '', {}, [])}
        return value
    return json.dumps(
        clean(data), ensure_ascii=False, separators=(',', ':'))


def _load_private(pem):
    return serialization.load_pem_private_key(pem.encode(), password=None)


def _load_public(pem):
    return serialization.load_pem_public_key(pem.encode())


def sign(private_key, text):
    return base64.b64encode(private_key.sign(
            text.encode(), padding.PKCS1v15(), hashes.SHA256())).decode()


def verify(public_key, text, signature):
    try:
        public_key.verify(
            base64.b64decode(signature), text.encode(), padding.PKCS1v15(),
            hashes.SHA256())
    except (ValueError, InvalidSignature):
        return False
    return True


def request_date(payment):
    "The req_date of payment: its creation day in Beijing, stable"
    created = payment.create_date or dt.datetime.now()
    return created.replace(tzinfo=dt.UTC).astimezone(BEIJING).strftime(
        '%Y%m%d')


@provider('aggregator')
class HuifuProvider(Provider):
    "The acquirer Huifu: sys_id is the App ID, huifu_id the Merchant ID"

    def __init__(self, gateway):
        super().__init__(gateway)
        private_key, _ = gateway.secrets()
        self.private_key = _load_private(private_key)
        self.public_key = _load_public(gateway.platform_key)
        self.url = (gateway.url or DEFAULT_URL).rstrip('/')

    def _post(self, path, data):
        "Return the verified answer data of path; raise on failure"
        text = _canonical(data)
        body = {
            'sys_id': self.gateway.app,
            'product_id': self.gateway.product or '',
            'data': json.loads(text),
            'sign': sign(self.private_key, text),
            }
        try:
            response = requests.post(
                self.url + path, json=body, timeout=TIMEOUT,
                headers={'Content-Type': 'application/json;charset=utf-8'})
        except requests.RequestException as exception:
            raise TransientError(type(exception).__name__) from exception
        if response.status_code >= 500:
            raise TransientError(f"HTTP {response.status_code}")
        try:
            answer = response.json()
        except ValueError:
            raise TransientError("answer is not JSON") from None
        data = answer.get('data') or {}
        if not verify(
                self.public_key, _canonical(data), answer.get('sign', '')):
            raise TransientError("bad answer signature")
        code = data.get('resp_code')
        if code not in {SUCCESS, PROCESSING}:
            message = f"{code}: {data.get('resp_desc', '')}"
            if response.status_code >= 400 or not code:
                raise PermanentError(message)
            if code.startswith('9'):
                # 9xxxxxxx: Huifu's system is busy, ask again
                raise TransientError(message)
            raise PermanentError(message)
        return data

    def _base(self, payment):
        return {
            'huifu_id': self.gateway.merchant,
            'req_date': request_date(payment),
            'req_seq_id': payment.number,
            }

    def _trade_result(self, data):
        state = TRADE_STATES.get(data.get('trans_stat'), 'failed')
        try:
            amount = Decimal(data['trans_amt']).quantize(Decimal('0.01'))
        except (KeyError, TypeError, InvalidOperation):
            amount = None
        end = data.get('end_time')
        date = None
        if end:
            date = dt.datetime.strptime(end, '%Y%m%d%H%M%S').replace(
                tzinfo=BEIJING).astimezone(dt.UTC).replace(tzinfo=None)
        return Result(
            state=state, reference=data.get('hf_seq_id'), amount=amount,
            date=date,
            error=data.get('resp_desc') if state == 'failed' else None)

    def pay_code(self, payment, code):
        data = self._post(MICROPAY, dict(
                self._base(payment),
                trans_amt=str(payment.amount),
                goods_desc=payment.label[:40],
                auth_code=code,
                notify_url=self.gateway.notify_url,
                risk_check_data=json.dumps(
                    {'ip_addr': '127.0.0.1'}, separators=(',', ':'))))
        return self._trade_result(data)

    def _jspay(self, payment, trade_type, **values):
        "Return the answer of 聚合正扫 for payment as trade_type"
        expire = dt.datetime.now(BEIJING) + dt.timedelta(
            seconds=self.gateway.qr_timeout)
        return self._post(JSPAY, dict(
                self._base(payment),
                trade_type=trade_type,
                trans_amt=str(payment.amount),
                goods_desc=payment.label[:40],
                notify_url=self.gateway.notify_url,
                time_expire=expire.strftime('%Y%m%d%H%M%S'),
                **values))

    def create_qr(self, payment):
        trade_type = QR_TYPES.get(payment.method.fuel_kind)
        if trade_type is None:
            raise PermanentError(f"no QR for {payment.method.fuel_kind}")
        data = self._jspay(payment, trade_type)
        return Result(state='pending', code_url=data.get('qr_code'))

    app_clients = frozenset(client for _, client in APP_TYPES)
    # the driver names himself in every in-app payment Huifu takes but
    # the mobile app's (T_APP)
    payer_clients = frozenset(
        client for (_, client), (_, _, payer) in APP_TYPES.items()
        if payer)
    # (wallet, client): a UnionPay JS payment names the phone's address
    # (customer_ip, 持卡人ip: JS 支付必填)
    ip_clients = frozenset({('unionpay', 'jsapi')})

    def supports_app(self, method, client):
        return (method.fuel_kind, client) in APP_TYPES

    def create_app(self, payment):
        """Create the in-app payment by jspay: the payer (and the client's
        application unless it is the gateway's own sys_id, when Huifu uses
        the application configured for the merchant; a mobile app must be
        named) in wx_data, alipay_data or unionpay_data, a JSON string as
        the dg-sdk sends it; the answer's pay_info is what the client hands
        to the wallet: a JSON object, or for UnionPay JS the address the
        page opens"""
        key = (payment.method.fuel_kind, payment.client)
        if key not in APP_TYPES:
            raise PermanentError(
                "no in-app payment for %s from %s" % key)
        trade_type, field, payer_key = APP_TYPES[key]
        extra = {}
        if trade_type == 'U_JSAPI':
            # a user_id carried in a page address may come back with
            # spaces for its '+' (Huifu's demo cashier mends them)
            extra[payer_key] = re.sub(r'\s', '+', payment.payer or '')
            extra['customer_ip'] = payment.client_ip
        elif payer_key:
            extra[payer_key] = payment.payer
        app = payment.client_app
        if app and app != self.gateway.app and field in APP_KEYS:
            extra[APP_KEYS[field]] = app
        elif trade_type in APP_REQUIRED:
            raise PermanentError(gettext(
                    'fuel_payment.msg_gateway_huifu_app_required',
                    gateway=self.gateway.rec_name, client=payment.client))
        data = self._jspay(payment, trade_type, **{
                field: json.dumps(
                    extra, ensure_ascii=False, separators=(',', ':'))})
        # trans_stat is optional in the answer: only F says it failed
        if data.get('trans_stat') == 'F':
            return Result(
                state='failed', reference=data.get('hf_seq_id'),
                error=data.get('resp_desc') or data.get('bank_message'))
        pay_info = data.get('pay_info') or ''
        if trade_type in URL_TYPES:
            address = urllib.parse.urlsplit(pay_info)
            params = None
            if address.scheme in {'https', 'http'} and address.netloc:
                params = {'url': pay_info}
        else:
            try:
                params = json.loads(pay_info)
            except ValueError:
                params = None
        if not isinstance(params, dict) or not params:
            # nothing the driver could pay with: Huifu lets it lapse at
            # time_expire
            raise PermanentError(f"{trade_type} answer without pay_info")
        return Result(
            state='pending', params=params,
            reference=data.get('hf_seq_id'))

    def unionpay_user(self, code, identifier=None):
        """Return the 银联用户标识 (user_id) a UnionPay JS payment names,
        of the user authorization code (userAuthCode) UnionPay's userAuth
        page hands the page it sends back to, by 获取银联用户标识;
        identifier is the UnionPay app's app_up_identifier (from its user
        agent, e.g. "UnionPay/1.0 CloudPay") where the page has it"""
        today = dt.datetime.now(BEIJING)
        data = self._post(USERMARK, {
                'huifu_id': self.gateway.merchant,
                'req_date': today.strftime('%Y%m%d'),
                'req_seq_id': 'U%s%s' % (
                    today.strftime('%Y%m%d%H%M%S'), secrets.token_hex(4)),
                'auth_code': code,
                'app_up_identifier': identifier,
                })
        user = data.get('user_id')
        if not user:
            raise PermanentError("usermark answer without user_id")
        return user

    def query(self, payment):
        try:
            data = self._post(QUERY, {
                    'huifu_id': self.gateway.merchant,
                    'org_req_date': request_date(payment),
                    'org_req_seq_id': payment.number,
                    })
        except PermanentError as exception:
            if 'ORDER_NOT_EXIST' in str(exception):
                return Result(state='missing')
            raise
        return self._trade_result(data)

    def _close(self, payment):
        self._post(CLOSE, {
                'huifu_id': self.gateway.merchant,
                'req_date': dt.datetime.now(BEIJING).strftime('%Y%m%d'),
                'req_seq_id': f'{payment.number}C',
                'org_req_date': request_date(payment),
                'org_req_seq_id': payment.number,
                })
        return Result(state='cancelled')

    def reverse(self, payment):
        # a code payment still processing is closed like a QR
        return self._close(payment)

    def close(self, payment):
        return self._close(payment)

    def refund(self, refund):
        payment = refund.payment
        data = self._post(REFUND, {
                'huifu_id': self.gateway.merchant,
                'req_date': request_date(refund),
                'req_seq_id': refund.number,
                'ord_amt': str(refund.amount),
                'org_req_date': request_date(payment),
                'org_req_seq_id': payment.number,
                })
        result = self._trade_result(data)
        return Result(
            state={'succeeded': 'succeeded', 'pending': 'pending'}.get(
                result.state, 'failed'),
            reference=data.get('hf_seq_id'), error=result.error)

    def parse_notification(self, headers, body):
        params = dict(urllib.parse.parse_qsl(
                body or '', keep_blank_values=True))
        text = params.get('resp_data', '')
        if not verify(self.public_key, text, params.get('sign', '')):
            raise ForgedNotification("signature")
        try:
            data = json.loads(text)
        except ValueError:
            raise ForgedNotification("resp_data") from None
        if data.get('huifu_id') != self.gateway.merchant:
            raise ForgedNotification("another merchant")
        if not data.get('hf_seq_id') or not data.get('req_seq_id'):
            raise ForgedNotification("incomplete")
        return Notification(
            id=f"{data['hf_seq_id']}:{data.get('trans_stat', '')}",
            number=data['req_seq_id'], result=self._trade_result(data))

    def answer(self, outcome, body):
        if outcome == 'refused':
            return 400, 'failure', 'text/plain'
        params = dict(urllib.parse.parse_qsl(
                body or '', keep_blank_values=True))
        try:
            number = json.loads(params.get('resp_data', '{}'))['req_seq_id']
        except (ValueError, KeyError, TypeError):
            number = ''
        # Huifu stops notifying once it reads RECV_ORD_ID_<req_seq_id>
        return 200, f'RECV_ORD_ID_{number}', 'text/plain'

    def fetch_bill(self, date):
        """Ask `/v2/trade/check/filequery` for the TRADE_BILL generated the
        day after date (Huifu's file_date) and download it: a zip of CSV"""
        today = dt.datetime.now(BEIJING)
        data = self._post(FILEQUERY, {
                'huifu_id': self.gateway.merchant,
                'req_date': today.strftime('%Y%m%d'),
                'req_seq_id': 'B%s%s' % (
                    today.strftime('%Y%m%d%H%M%S'), secrets.token_hex(4)),
                'file_date': (date + dt.timedelta(days=1)).strftime('%Y%m%d'),
                'bill_type': TRADE_BILL,
                })
        files = [
            f for f in data.get('file_details') or []
            if _bill_type(f) == TRADE_BILL and f.get('download_url')]
        if not files:
            tasks = [
                t for t in data.get('task_details') or []
                if _bill_type(t) == TRADE_BILL]
            if tasks and all(t.get('task_stat') == 'S' for t in tasks):
                # the task ran and wrote no file: no trade that day
                return empty_bill()
            raise TransientError("bill not generated yet")
        contents = [self._download(f['download_url']) for f in files]
        if len(contents) == 1:
            return contents[0]
        # a day may come in several files: one zip of all their members
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, 'w', zipfile.ZIP_DEFLATED) as merged:
            for content in contents:
                with zipfile.ZipFile(io.BytesIO(content)) as archive:
                    for name in archive.namelist():
                        merged.writestr(name, archive.read(name))
        return buffer.getvalue()

    def _download(self, url):
        "The zip at url, a short-lived link of Huifu's file service"
        try:
            response = requests.get(url, timeout=TIMEOUT)
        except requests.RequestException as exception:
            raise TransientError(type(exception).__name__) from exception
        if response.status_code >= 500:
            raise TransientError(f"HTTP {response.status_code}")
        if response.status_code >= 300:
            raise PermanentError(f"HTTP {response.status_code}")
        if not zipfile.is_zipfile(io.BytesIO(response.content)):
            raise TransientError("bill is not a zip")
        return response.content

    def parse_bill(self, data):
        return parse_trade_bill(data, self.gateway.merchant)

    def bill_name(self, date):
        return f'huifu-{self.gateway.merchant}-{date.isoformat()}.zip'


def _bill_type(detail):
    # the published example names it bill_type, older clients file_type
    return detail.get('bill_type') or detail.get('file_type')


def empty_bill():
    "A zip without any order file: the bill of a day without trades"
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, 'w'):
        pass
    return buffer.getvalue()


def _decode(raw):
    for encoding in ('utf-8-sig', 'gbk'):
        try:
            return raw.decode(encoding)
        except UnicodeDecodeError:
            continue
    raise BillFormatError("encoding")


def _amount(value):
    try:
        return Decimal((value or '0').strip()).quantize(Decimal('0.01'))
    except InvalidOperation:
        raise BillFormatError(f"amount {value!r}") from None


def parse_trade_bill(data, merchant=None):
    """Return the rows of Huifu's TRADE_BILL zip: every member
    `<date>_<huifu_id>_order[_<batch>].csv` (a day over 400,000 rows is
    split), a header of BILL_COLUMNS (in any order, other columns
    ignored) then one row per trade; a refund names the payment in
    原请求流水号. Rows of another merchant than merchant are skipped."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, ValueError):
        raise BillFormatError("zip") from None
    rows = []
    with archive:
        members = [
            n for n in archive.namelist()
            if ORDER_FILE.match(n.rsplit('/', 1)[-1])]
        if not members and archive.namelist():
            raise BillFormatError("no order file")
        for name in sorted(members):
            reader = csv.reader(io.StringIO(_decode(archive.read(name))))
            header = [c.strip() for c in next(reader, [])]
            missing = [c for c in BILL_COLUMNS if c not in header]
            if missing:
                raise BillFormatError("columns " + ",".join(missing))
            index = {c: header.index(c) for c in BILL_COLUMNS}
            for values in reader:
                if not any(v.strip() for v in values):
                    continue
                if len(values) != len(header):
                    raise BillFormatError(f"{name}: row of {len(values)}")
                row = {c: values[i].strip() for c, i in index.items()}
                if merchant and row['商户号'] != merchant:
                    continue
                status = BILL_STATES.get(row['交易状态'])
                if status is None:
                    raise BillFormatError(f"state {row['交易状态']!r}")
                amount, fee = _amount(row['交易金额']), _amount(row['手续费'])
                if row['原请求流水号']:
                    rows.append({
                            'type': 'refund',
                            'number': row['原请求流水号'],
                            'refund_number': row['请求流水号'],
                            'reference': row['汇付全局流水号'],
                            'amount': abs(amount), 'status': status,
                            # the fee of a refund is given back
                            'fee': -abs(fee),
                            })
                else:
                    rows.append({
                            'type': 'payment',
                            'number': row['请求流水号'],
                            'reference': row['汇付全局流水号'],
                            'amount': amount, 'status': status,
                            'fee': fee,
                            })
    return rows
