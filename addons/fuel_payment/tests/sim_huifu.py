# This file is part of fuelpay.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""Huifu's aggregator API (汇付斗拱) on 127.0.0.1 for the tests

It checks the envelope `{sys_id, product_id, data, sign}` (SHA256withRSA
of the sorted, compact `data` with the merchant key), answers `{data,
sign}` signed the same way with its own key, sends form notifications
`resp_code, resp_data, sign` and keeps the trades.

jspay takes the QRs (U_NATIVE, T_NATIVE, A_NATIVE) and the in-app
payments T_JSAPI, T_MINIAPP (wx_data with sub_openid, sub_appid if any
among `wechat_apps`) and A_JSAPI (alipay_data with buyer_id or
buyer_logon_id, op_app_id if any among `alipay_apps`), each JSON strings
as the dg-sdk sends them. An in-app payment is answered with `pay_info`:
for WeChat the parameters of wx.requestPayment whose paySign (WeChat's
RSA signature over `appId\ntimeStamp\nnonceStr\npackage\n`, made with
the merchant key Huifu holds at WeChat) is made here with `wechat_key`
(`verify_pay_info`); for Alipay the tradeNO my.tradePay takes. It stays
P until `pay`.

T_APP (the WeChat mobile app) is served only when `wechat_direct` (Huifu
offers it to WeChat 直连 merchants; else 23000004 交易类型不支持), for a
sub_appid among `wechat_mobile_apps`: pay_info is the PayReq of WeChat's
app SDK, signed like paySign over `appid\ntimestamp\nnoncestr\nprepayid\n`
(`verify_app_pay_info`; `wechat_app_pays` plays the SDK paying it).
U_JSAPI takes unionpay_data with a user_id it gave out and the phone's
customer_ip and answers as pay_info the address the page opens
(`unionpay_opens` plays the UnionPay app paying it as a user);
`unionpay_authorize` plays UnionPay's userAuth page (a userAuthCode) and
`/v2/trade/payment/usermark2/query` turns the code into the user_id,
once. Codes and texts for refused in-app requests are the
simulator's own, bar 'sub_mch_id与sub_appid不匹配' (Huifu's FAQ) and
23000004 交易类型不支持 (Huifu's 聚合正扫 error list).

`paying_queries` (None: pay at once; n: P until the n-th query; -1: for
ever), `down` (answer 500), `bill_state` (ready; pending: the file task
still running; empty: the task ran and wrote no file) and `files` (how
many files a day's bill is split into) set what it answers. `bill(date)`
is the TRADE_BILL zip of a day as `/v2/trade/check/filequery` hands it
out (file_date = date + 1, fetched by GET at its download_url). The code
it gives for an unknown order (ORDER_NOT_EXIST) is its own: the material
we had does not name Huifu's."""
import base64
import csv
import datetime as dt
import io
import ipaddress
import json
import secrets
import threading
import time
import urllib.parse
import zipfile
from decimal import ROUND_HALF_UP, Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding

from ..aggregator import BILL_COLUMNS, _canonical, sign, verify
from .sim_wechat import new_key, private_pem, public_pem

BEIJING = dt.timezone(dt.timedelta(hours=8))
# what the simulated acquirer keeps of a trade (0.38 %, a common UnionPay
# QR merchant rate), given back in proportion with a refund
FEE_RATE = Decimal('0.0038')
CENT = Decimal('0.01')
QR_TYPES = {'U_NATIVE', 'T_NATIVE', 'A_NATIVE'}
WECHAT_APP_TYPES = {'T_JSAPI', 'T_MINIAPP'}
ALIPAY_APP_TYPES = {'A_JSAPI'}
# the WeChat mobile app (微信APP), for WeChat 直连 merchants only
WECHAT_MOBILE_TYPES = {'T_APP'}
UNIONPAY_APP_TYPES = {'U_JSAPI'}


def fee(amount):
    return (amount * FEE_RATE).quantize(CENT, rounding=ROUND_HALF_UP)


class Trade:
    def __init__(self, data, kind):
        self.data = data
        self.kind = kind
        self.number = data['req_seq_id']
        self.amount = Decimal(data['trans_amt'])
        self.hf_seq_id = '0029000top' + secrets.token_hex(15)
        self.state = 'P'
        self.end_time = None
        self.queries = 0
        self.refunds = {}
        self.qr_code = None
        self.pay_info = None
        # the UnionPay user_id of a U_JSAPI trade
        self.payer = None

    @property
    def trade_type(self):
        "The trade_type it was made with (trans_type in bills, notices)"
        return self.data.get('trade_type') or 'U_MICROPAY'

    def pay(self):
        self.state = 'S'
        self.end_time = dt.datetime.now(BEIJING).strftime('%Y%m%d%H%M%S')

    def values(self, huifu_id):
        result = {
            'huifu_id': huifu_id,
            'req_date': self.data['req_date'],
            'req_seq_id': self.number,
            'hf_seq_id': self.hf_seq_id,
            'trans_amt': str(self.amount),
            'trans_stat': self.state,
            'out_trans_id': '62' + self.hf_seq_id[-10:],
            }
        if self.end_time:
            result['end_time'] = self.end_time
        return result


class HuifuSimulator:

    def __init__(self, sys_id='6666000100000001', product_id='YYZY',
            huifu_id='6666000100000002'):
        self.sys_id = sys_id
        self.product_id = product_id
        self.huifu_id = huifu_id
        self.merchant_key = new_key()
        self.huifu_key = new_key()
        # the key Huifu's WeChat merchant signs paySign with, and the
        # applications bound to the merchant (the first: its default)
        self.wechat_key = new_key()
        self.wechat_apps = ['wx8888888888888801', 'wx8888888888888802']
        self.alipay_apps = ['2021000000000001']
        # the merchant's mobile apps (WeChat open platform) and whether it
        # is a WeChat 直连 merchant, the only kind T_APP serves; its WeChat
        # merchant number, the partnerid of the app's PayReq
        self.wechat_mobile_apps = ['wx8888888888888803']
        self.wechat_direct = False
        self.wechat_mch_id = '1900000109'
        # UnionPay user authorization codes given out (userAuthCode ->
        # user_id), each good for one 获取银联用户标识, and the users
        self.unionpay_codes = {}
        self.unionpay_users = set()
        self.trades = {}
        self.paying_queries = None
        self.down = False
        self.bill_state = 'ready'
        self.files = 1
        self.downloads = {}
        self.lock = threading.Lock()
        self.server = None

    def start(self):
        simulator = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                simulator.handle(self)

            def do_GET(self):
                simulator.download(self)

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

    def gateway_values(self):
        return {
            'channel': 'aggregator',
            'merchant': self.huifu_id,
            'app': self.sys_id,
            'product': self.product_id,
            'private_key': private_pem(self.merchant_key),
            'platform_key': public_pem(self.huifu_key),
            'url': self.url,
            'notify_url': 'https://fuel.example.com/db/fuel_payment/notify/3',
            }

    # ---- HTTP ------------------------------------------------------------

    def handle(self, request):
        length = int(request.headers.get('Content-Length') or 0)
        body = json.loads(request.rfile.read(length) or b'{}')
        with self.lock:
            if self.down:
                request.send_response(500)
                request.send_header('Content-Length', '0')
                request.end_headers()
                return
            data = body.get('data') or {}
            if (body.get('sys_id') != self.sys_id
                    or body.get('product_id') != self.product_id
                    or not verify(
                        self.merchant_key.public_key(), _canonical(data),
                        body.get('sign', ''))):
                answer = {'resp_code': '10000001', 'resp_desc': '验签失败'}
            else:
                handler = {
                    '/v2/trade/payment/micropay': self.micropay,
                    '/v2/trade/payment/jspay': self.jspay,
                    '/v2/trade/payment/usermark2/query': self.usermark,
                    '/v2/trade/payment/scanpay/query': self.query,
                    '/v2/trade/payment/scanpay/close': self.close,
                    '/v2/trade/payment/scanpay/refund': self.refund,
                    '/v2/trade/check/filequery': self.filequery,
                    }.get(urllib.parse.urlsplit(request.path).path)
                answer = handler(data) if handler else {
                    'resp_code': '10000002', 'resp_desc': '接口不存在'}
            text = json.dumps({
                    'data': answer,
                    'sign': sign(self.huifu_key, _canonical(answer)),
                    }, ensure_ascii=False).encode()
            request.send_response(200)
            request.send_header('Content-Type', 'application/json')
            request.send_header('Content-Length', str(len(text)))
            request.end_headers()
            request.wfile.write(text)

    @staticmethod
    def code(trade):
        return {
            'S': ('00000000', '交易成功'),
            'P': ('00000100', '交易处理中'),
            }.get(trade.state, ('00000000', '交易失败'))

    def answer_trade(self, trade, **values):
        code, desc = self.code(trade)
        return dict(
            trade.values(self.huifu_id), resp_code=code, resp_desc=desc,
            **values)

    def micropay(self, data):
        trade = self.trades.get(data['req_seq_id'])
        if trade is None:
            auth_code = data.get('auth_code', '')
            if not (auth_code[:2] == '62' and len(auth_code) == 19):
                return {'resp_code': '21000000', 'resp_desc': '付款码无效'}
            trade = Trade(data, 'code')
            self.trades[trade.number] = trade
            if self.paying_queries is None:
                trade.pay()
        return self.answer_trade(trade)

    def jspay(self, data):
        trade = self.trades.get(data['req_seq_id'])
        if trade is not None:
            return self.answer_trade(
                trade, trade_type=trade.trade_type, qr_code=trade.qr_code,
                pay_info=trade.pay_info)
        trade_type = data.get('trade_type')
        if trade_type in QR_TYPES:
            trade = Trade(data, 'qr')
            trade.qr_code = 'https://qr.95516.com/00010000/%s' % (
                secrets.token_hex(8))
        elif trade_type in (
                WECHAT_APP_TYPES | ALIPAY_APP_TYPES | WECHAT_MOBILE_TYPES
                | UNIONPAY_APP_TYPES):
            pay_info, refused = self.app_pay_info(data)
            if refused:
                return refused
            trade = Trade(data, 'app')
            if trade_type in UNIONPAY_APP_TYPES:
                # the address the page opens, not a JSON object
                trade.pay_info = pay_info
                trade.payer = json.loads(data['unionpay_data'])['user_id']
            else:
                trade.pay_info = json.dumps(
                    pay_info, ensure_ascii=False, separators=(',', ':'))
        else:
            return {'resp_code': '10000000', 'resp_desc': '交易类型不支持'}
        self.trades[trade.number] = trade
        return self.answer_trade(
            trade, trade_type=trade_type, qr_code=trade.qr_code,
            pay_info=trade.pay_info)

    @staticmethod
    def channel_data(data, field):
        "The JSON object of the JSON string field of data, or None"
        value = data.get(field)
        if not isinstance(value, str):
            return None
        try:
            value = json.loads(value)
        except ValueError:
            return None
        return value if isinstance(value, dict) else None

    def app_pay_info(self, data):
        """Return (pay_info, None) for an in-app jspay request, or (None,
        answer) refusing it"""
        def refuse(desc, code='10000000'):
            return None, {'resp_code': code, 'resp_desc': desc}
        if data['trade_type'] in WECHAT_MOBILE_TYPES:
            return self.mobile_pay_info(data, refuse)
        if data['trade_type'] in UNIONPAY_APP_TYPES:
            return self.unionpay_pay_info(data, refuse)
        if data['trade_type'] in WECHAT_APP_TYPES:
            wx_data = self.channel_data(data, 'wx_data')
            if wx_data is None:
                return refuse('wx_data格式错误')
            if not wx_data.get('sub_openid'):
                return refuse('sub_openid不能为空')
            app = wx_data.get('sub_appid') or self.wechat_apps[0]
            if app not in self.wechat_apps:
                return refuse('sub_mch_id与sub_appid不匹配')
            pay_info = {
                'appId': app,
                'timeStamp': str(int(time.time())),
                'nonceStr': secrets.token_hex(16),
                'package': 'prepay_id=wx%s' % secrets.token_hex(15),
                'signType': 'RSA',
                }
            pay_info['paySign'] = sign(
                self.wechat_key, self.pay_sign_text(pay_info))
            return pay_info, None
        alipay_data = self.channel_data(data, 'alipay_data')
        if alipay_data is None:
            return refuse('alipay_data格式错误')
        if not (alipay_data.get('buyer_id')
                or alipay_data.get('buyer_logon_id')):
            return refuse('buyer_id和buyer_logon_id不能同时为空')
        app = alipay_data.get('op_app_id')
        if app and app not in self.alipay_apps:
            return refuse('op_app_id未绑定')
        trade_no = dt.datetime.now(BEIJING).strftime('%Y%m%d') + (
            '22001' + ''.join(secrets.choice('0123456789')
                for _ in range(15)))
        return {'tradeNO': trade_no}, None

    def mobile_pay_info(self, data, refuse):
        """The PayReq of WeChat's mobile app SDK for a T_APP request (the
        keys and the signed text are WeChat's APP 调起支付 ones; Huifu's
        pay_info for T_APP is not published)"""
        if not self.wechat_direct:
            # the code and text of Huifu's 聚合正扫 error list
            return refuse('交易类型不支持', '23000004')
        wx_data = self.channel_data(data, 'wx_data')
        if wx_data is None:
            return refuse('wx_data格式错误')
        app = wx_data.get('sub_appid')
        if not app:
            return refuse('sub_appid不能为空')
        if app not in self.wechat_mobile_apps:
            return refuse('sub_mch_id与sub_appid不匹配')
        pay_info = {
            'appid': app,
            'partnerid': self.wechat_mch_id,
            'prepayid': 'wx%s' % secrets.token_hex(15),
            'package': 'Sign=WXPay',
            'noncestr': secrets.token_hex(16),
            'timestamp': str(int(time.time())),
            }
        pay_info['sign'] = sign(
            self.wechat_key, self.app_sign_text(pay_info))
        return pay_info, None

    def unionpay_pay_info(self, data, refuse):
        """The address the page in the UnionPay app opens to pay a U_JSAPI
        request (Huifu's demo cashier opens pay_info; the address's form
        is the simulator's own), for a user_id given out by usermark and
        the phone's IP"""
        unionpay_data = self.channel_data(data, 'unionpay_data')
        if unionpay_data is None:
            return refuse('unionpay_data格式错误')
        user = unionpay_data.get('user_id')
        if not user:
            return refuse('user_id不能为空')
        if user not in self.unionpay_users:
            return refuse('user_id无效')
        try:
            ipaddress.ip_address(unionpay_data.get('customer_ip') or '')
        except ValueError:
            return refuse('customer_ip格式错误')
        return 'https://qr.95516.com/qrcGtwWeb-web/pay/%s' % (
            secrets.token_hex(16)), None

    def usermark(self, data):
        """获取银联用户标识: the user_id of a user authorization code, once
        (codes and texts of its refusals are the simulator's own)"""
        user = self.unionpay_codes.pop(data.get('auth_code'), None)
        if user is None:
            return {'resp_code': '10000000', 'resp_desc': 'auth_code无效'}
        return {
            'resp_code': '00000000', 'resp_desc': '成功',
            'huifu_id': self.huifu_id, 'req_date': data['req_date'],
            'req_seq_id': data['req_seq_id'], 'user_id': user,
            }

    # ---- the wallets' clients --------------------------------------------

    def unionpay_authorize(self, user=None):
        """Play UnionPay's userAuth page (qr.95516.com): the user agrees
        and the page gets a userAuthCode; return (code, user_id). A
        user_id holds base64's '+' (inside) as UnionPay's do"""
        if user is None:
            user = 'U%s+%sQ' % (
                base64.b64encode(secrets.token_bytes(12)).decode(),
                base64.b64encode(secrets.token_bytes(6)).decode())
        code = secrets.token_urlsafe(16)
        with self.lock:
            self.unionpay_codes[code] = user
            self.unionpay_users.add(user)
        return code, user

    def unionpay_opens(self, url, user):
        """Play the UnionPay app opening a U_JSAPI pay_info address for
        user and paying it: whether it was paid (only the trade's own
        user, while it is open)"""
        with self.lock:
            for trade in self.trades.values():
                if trade.pay_info == url and trade.trade_type == 'U_JSAPI':
                    if trade.payer != user or trade.state != 'P':
                        return False
                    trade.pay()
                    return True
        return False

    def wechat_app_pays(self, pay_info):
        """Play WeChat's mobile app SDK paying a T_APP PayReq: whether it
        was paid (a valid sign, an open trade)"""
        if not self.verify_app_pay_info(pay_info):
            return False
        with self.lock:
            for trade in self.trades.values():
                if (trade.trade_type == 'T_APP' and trade.pay_info
                        and json.loads(trade.pay_info)['prepayid']
                        == pay_info['prepayid']):
                    if trade.state != 'P':
                        return False
                    trade.pay()
                    return True
        return False

    @staticmethod
    def app_sign_text(pay_info):
        "What WeChat's APP sign signs (API v3, RSA)"
        return ''.join(f'{pay_info[k]}\n' for k in [
                'appid', 'timestamp', 'noncestr', 'prepayid'])

    def verify_app_pay_info(self, pay_info):
        "Whether the T_APP pay_info carries a sign made here"
        try:
            self.wechat_key.public_key().verify(
                base64.b64decode(pay_info['sign']),
                self.app_sign_text(pay_info).encode(),
                padding.PKCS1v15(), hashes.SHA256())
        except (KeyError, ValueError, InvalidSignature):
            return False
        return True

    @staticmethod
    def pay_sign_text(pay_info):
        "What WeChat's paySign signs (JSAPI and mini program, RSA)"
        return ''.join(f'{pay_info[k]}\n' for k in [
                'appId', 'timeStamp', 'nonceStr', 'package'])

    def verify_pay_info(self, pay_info):
        "Whether the WeChat pay_info carries a paySign made here"
        try:
            self.wechat_key.public_key().verify(
                base64.b64decode(pay_info['paySign']),
                self.pay_sign_text(pay_info).encode(),
                padding.PKCS1v15(), hashes.SHA256())
        except (KeyError, ValueError, InvalidSignature):
            return False
        return True

    def query(self, data):
        trade = self.trades.get(data.get('org_req_seq_id'))
        if trade is None:
            return {'resp_code': '23000003', 'resp_desc': 'ORDER_NOT_EXIST'}
        trade.queries += 1
        if (trade.state == 'P' and trade.kind == 'code'
                and self.paying_queries is not None
                and self.paying_queries >= 0
                and trade.queries >= self.paying_queries):
            trade.pay()
        return self.answer_trade(trade)

    def close(self, data):
        trade = self.trades.get(data.get('org_req_seq_id'))
        if trade is None:
            return {'resp_code': '23000003', 'resp_desc': 'ORDER_NOT_EXIST'}
        if trade.state != 'P':
            return {'resp_code': '23000004', 'resp_desc': '交易状态不允许关单'}
        trade.state = 'F'
        return {
            'resp_code': '00000000', 'resp_desc': '关单成功',
            'huifu_id': self.huifu_id, 'req_seq_id': data['req_seq_id'],
            'trans_stat': 'S'}

    def refund(self, data):
        trade = self.trades.get(data.get('org_req_seq_id'))
        if trade is None or trade.state != 'S':
            return {'resp_code': '23000003', 'resp_desc': 'ORDER_NOT_EXIST'}
        number = data['req_seq_id']
        amount = Decimal(data['ord_amt'])
        if number not in trade.refunds:
            refunded = sum(r['amount'] for r in trade.refunds.values())
            if refunded + amount > trade.amount:
                return {'resp_code': '23000005', 'resp_desc': '退款金额超限'}
            trade.refunds[number] = {
                'amount': amount, 'req_date': data['req_date'],
                'hf_seq_id': 'R' + secrets.token_hex(15),
                'time': dt.datetime.now(BEIJING),
                }
        return {
            'resp_code': '00000000', 'resp_desc': '退款成功',
            'huifu_id': self.huifu_id, 'req_seq_id': number,
            'hf_seq_id': trade.refunds[number]['hf_seq_id'],
            'ord_amt': str(amount),
            'trans_stat': 'S'}

    # ---- notifications ---------------------------------------------------

    def pay(self, number):
        with self.lock:
            self.trades[number].pay()

    def notification(self, number, forge=False):
        "Return (headers, body) of the form Huifu posts to notify_url"
        trade = self.trades[number]
        resp_data = json.dumps(
            dict(trade.values(self.huifu_id), resp_code='00000000',
                trans_type=trade.trade_type),
            ensure_ascii=False, separators=(',', ':'))
        key = new_key() if forge else self.huifu_key
        body = urllib.parse.urlencode({
                'resp_code': '00000000',
                'resp_data': resp_data,
                'sign': sign(key, resp_data),
                })
        return {'Content-Type': 'application/x-www-form-urlencoded'}, body

    # ---- bills -----------------------------------------------------------

    def filequery(self, data):
        file_date = dt.datetime.strptime(data['file_date'], '%Y%m%d').date()
        date = file_date - dt.timedelta(days=1)
        name = f"{data['file_date']}_{self.huifu_id}_order.zip"
        answer = {
            'resp_code': '00000000', 'resp_desc': '查询成功',
            'req_date': data['req_date'], 'req_seq_id': data['req_seq_id'],
            }
        if data.get('bill_type') != 'TRADE_BILL':
            return dict(answer, file_details=[], task_details=[])
        task = {
            'data_date': date.strftime('%Y%m%d'), 'file_name': name,
            'bill_type': 'TRADE_BILL', 'huifu_id': self.huifu_id,
            'task_stat': 'P' if self.bill_state == 'pending' else 'S',
            }
        details = []
        for part in range(self.files if self.bill_state == 'ready' else 0):
            token = secrets.token_hex(8)
            self.downloads[token] = self.bill(date, part, self.files)
            details.append({
                    'download_url': f'{self.url}/bill/{token}',
                    'file_date': data['file_date'], 'file_id': token,
                    'file_Name': name, 'huifu_id': self.huifu_id,
                    'bill_type': 'TRADE_BILL'})
        return dict(answer, file_details=details, task_details=[task])

    def download(self, request):
        token = urllib.parse.urlsplit(request.path).path.rsplit('/', 1)[-1]
        with self.lock:
            content = self.downloads.get(token)
        if content is None:
            request.send_response(404)
            request.send_header('Content-Length', '0')
            request.end_headers()
            return
        request.send_response(200)
        request.send_header('Content-Type', 'application/zip')
        request.send_header('Content-Length', str(len(content)))
        request.end_headers()
        request.wfile.write(content)

    def bill_rows(self, date):
        "The rows of date (Beijing): trades that succeeded, refunds done"
        rows = []
        day = date.strftime('%Y%m%d')
        for trade in self.trades.values():
            if trade.state == 'S' and trade.end_time[:8] == day:
                rows.append({
                        '商户号': self.huifu_id,
                        '请求日期': trade.data['req_date'],
                        '请求流水号': trade.number,
                        '汇付全局流水号': trade.hf_seq_id,
                        '原请求流水号': '',
                        '交易类型': trade.trade_type,
                        '交易状态': 'S',
                        '交易金额': str(trade.amount),
                        '手续费': str(fee(trade.amount)),
                        '交易完成时间': trade.end_time,
                        })
            for number, refund in trade.refunds.items():
                if refund['time'].date() != date:
                    continue
                rows.append({
                        '商户号': self.huifu_id,
                        '请求日期': refund['req_date'],
                        '请求流水号': number,
                        '汇付全局流水号': refund['hf_seq_id'],
                        '原请求流水号': trade.number,
                        '交易类型': 'TRANS_REFUND',
                        '交易状态': 'S',
                        '交易金额': str(refund['amount']),
                        '手续费': str(fee(refund['amount'])),
                        '交易完成时间': refund['time'].strftime(
                            '%Y%m%d%H%M%S'),
                        })
        return rows

    def bill(self, date, part=0, parts=1):
        """The TRADE_BILL zip of date, or its part-th of parts:
        年月日_商户号_order_批次号.csv"""
        text = io.StringIO()
        writer = csv.DictWriter(
            text, fieldnames=BILL_COLUMNS, lineterminator='\r\n')
        writer.writeheader()
        writer.writerows(self.bill_rows(date)[part::parts])
        file_date = (date + dt.timedelta(days=1)).strftime('%Y%m%d')
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, 'w', zipfile.ZIP_DEFLATED) as archive:
            archive.writestr(
                f'{file_date}_{self.huifu_id}_order_{part + 1}.csv',
                text.getvalue().encode('utf-8'))
        return buffer.getvalue()
