# This file is part of fuelpay.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""JD Pay's merchant API V2.0 (京东支付) on 127.0.0.1 for the tests

It reads the envelope `<jdpay><version/><merchant/><encrypt/></jdpay>`,
decrypts `encrypt` with the merchant's DES key and verifies the
merchant's signature of the XML without `<sign>` as JD does, answers
`<jdpay><result/><encrypt/></jdpay>` with the answer signed by its own
key and encrypted, posts-to-be notifications the same way and keeps the
trades. Keys are made per run.

`paying_queries` (None: pay at once; n: status 1 until the n-th query;
-1: for ever), `down` (answer 500) and `hang` (the paths whose next
request is kept, then answered after `hang_seconds`: the client times
out) set what it answers. The result codes of a refusal are its own: the
material we had names only `000000` (success), see the design doc."""
import base64
import datetime as dt
import secrets
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from ..jdpay import (
    FKMPAY,
    QUERY,
    REFUND,
    REVOKE,
    SUCCESS,
    TRADE_NOT_FOUND,
    UNIORDER,
    VERSION,
    des_decrypt,
    des_encrypt,
    parse_xml,
    sign,
    signed_text,
    to_xml,
    values_of,
    verify,
)
from .sim_wechat import new_key, private_pem, public_pem

BEIJING = dt.timezone(dt.timedelta(hours=8))
# the simulator's own refusal codes (JD's are not in the material used)
SIGN_ERROR = 'SIGN_ERROR'
TOKEN_INVALID = 'TOKEN_INVALID'
REFUND_EXCEEDED = 'REFUND_EXCEEDED'
NOT_REVOCABLE = 'NOT_REVOCABLE'
# a trade the customer confirmed; 1 processing; 3 failed
PAID, PROCESSING, FAILED = '2', '1', '3'
# the simulator's own status of a revoked trade: not a payment
REVOKED = 'REVOKED'


def now():
    return dt.datetime.now(BEIJING).strftime('%Y%m%d%H%M%S')


class Trade:
    def __init__(self, values, kind):
        self.values = values
        self.kind = kind
        self.number = values['tradeNum']
        self.amount = int(values['amount'])
        self.order_id = secrets.token_hex(11)
        self.status = PROCESSING
        self.paid = None
        self.queries = 0
        self.refunds = {}
        self.qr_code = None

    def pay(self):
        self.status = PAID
        self.paid = now()

    def answer(self):
        "The fields JD gives of a trade (query, fkmPay, notification)"
        result = {
            'tradeNum': self.number,
            'amount': str(self.amount),
            'currency': 'CNY',
            'tradeTime': self.values.get('tradeTime'),
            'note': '',
            'status': self.status,
            }
        if self.paid:
            result['payList'] = {'pay': {
                    'payType': '0', 'amount': str(self.amount),
                    'currency': 'CNY', 'tradeTime': self.paid}}
        return result


class JdPaySimulator:

    def __init__(self, merchant='110000000001'):
        self.merchant = merchant
        self.merchant_key = new_key()
        self.jd_key = new_key()
        self.des_key = secrets.token_bytes(24)
        self.trades = {}
        self.requests = []
        self.paying_queries = None
        self.down = False
        self.hang = set()
        self.hang_seconds = 1
        self.lock = threading.Lock()
        self.server = None

    def start(self):
        simulator = self

        class Handler(BaseHTTPRequestHandler):
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
        return 'http://127.0.0.1:%s' % self.server.server_address[1]

    @property
    def api_key(self):
        return base64.b64encode(self.des_key).decode()

    def gateway_values(self):
        return {
            'channel': 'jdpay',
            'merchant': self.merchant,
            'private_key': private_pem(self.merchant_key),
            'api_key': self.api_key,
            'platform_key': public_pem(self.jd_key),
            'url': self.url,
            'notify_url': 'https://fuel.example.com/db/fuel_payment/notify/4',
            }

    # ---- HTTP ------------------------------------------------------------

    def reply(self, request, status, text):
        data = text.encode('utf-8')
        try:
            request.send_response(status)
            request.send_header(
                'Content-Type', 'application/xml;charset=utf-8')
            request.send_header('Content-Length', str(len(data)))
            request.end_headers()
            request.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            # a client that gave up waiting (hang)
            pass

    def handle(self, request):
        length = int(request.headers.get('Content-Length') or 0)
        body = request.rfile.read(length).decode('utf-8')
        path = urllib.parse.urlsplit(request.path).path
        hang = False
        with self.lock:
            if self.down:
                self.reply(request, 500, '')
                return
            answer = self.answer(path, body)
            if path in self.hang:
                self.hang.discard(path)
                hang = True
        if hang:
            # the request reached JD and was done; its answer comes late
            time.sleep(self.hang_seconds)
        self.reply(request, 200, answer)

    def answer(self, path, body):
        "The XML JD answers to body posted on path"
        try:
            outer = values_of(parse_xml(body))
            text = des_decrypt(self.des_key, outer['encrypt'])
        except (ValueError, KeyError):
            return self.refusal('ENCRYPT_ERROR', '解密失败')
        unsigned, signature = signed_text(text)
        if (outer.get('merchant') != self.merchant
                or outer.get('version') != VERSION
                or not verify(
                    self.merchant_key.public_key(), unsigned, signature)):
            return self.refusal(SIGN_ERROR, '验签失败')
        values = values_of(parse_xml(text))
        if values.get('merchant') != self.merchant:
            return self.refusal(SIGN_ERROR, '商户号不符')
        self.requests.append((path, values))
        handler = {
            FKMPAY: self.fkmpay,
            UNIORDER: self.uniorder,
            QUERY: self.query,
            REVOKE: self.revoke,
            REFUND: self.refund,
            }.get(path)
        if handler is None:
            return self.refusal('NO_SERVICE', '接口不存在')
        result = handler(values)
        if isinstance(result, tuple):
            return self.refusal(*result)
        return self.encrypted(result)

    def refusal(self, code, desc):
        "An answer without encrypt: a refusal"
        return to_xml({
                'version': VERSION, 'merchant': self.merchant,
                'result': {'code': code, 'desc': desc}})

    def signed(self, values, key=None):
        "The XML of values as JD signs it, <sign> last"
        text = to_xml(dict(
                version=VERSION, merchant=self.merchant,
                result={'code': SUCCESS, 'desc': '成功'}, **values))
        signature = sign(key or self.jd_key, text)
        return text[:-len('</jdpay>')] + f'<sign>{signature}</sign></jdpay>'

    def encrypted(self, values, key=None, des_key=None):
        return to_xml({
                'version': VERSION, 'merchant': self.merchant,
                'result': {'code': SUCCESS, 'desc': '成功'},
                'encrypt': des_encrypt(
                    des_key or self.des_key, self.signed(values, key)),
                })

    # ---- services --------------------------------------------------------

    def fkmpay(self, values):
        trade = self.trades.get(values['tradeNum'])
        if trade is None:
            token = values.get('token', '')
            if not (token.isdigit() and len(token) == 18
                    and token.startswith('18')):
                return TOKEN_INVALID, '付款码无效'
            trade = Trade(values, 'code')
            self.trades[trade.number] = trade
            if self.paying_queries is None:
                trade.pay()
        return trade.answer()

    def uniorder(self, values):
        trade = self.trades.get(values['tradeNum'])
        if trade is None:
            trade = Trade(values, 'qr')
            trade.status = '0'
            trade.qr_code = (
                'https://h5pay.jd.com/code?c=' + secrets.token_hex(7))
            self.trades[trade.number] = trade
        return {
            'tradeNum': trade.number,
            'orderId': trade.order_id,
            'amount': str(trade.amount),
            'expireTime': values.get('expireTime', ''),
            'qrCode': trade.qr_code,
            }

    def query(self, values):
        trade = self.trades.get(values.get('tradeNum'))
        if trade is None:
            return TRADE_NOT_FOUND, '交易不存在'
        trade.queries += 1
        if (trade.status == PROCESSING and trade.kind == 'code'
                and self.paying_queries is not None
                and self.paying_queries >= 0
                and trade.queries >= self.paying_queries):
            trade.pay()
        return dict(trade.answer(), tradeType='0')

    def revoke(self, values):
        trade = self.trades.get(values.get('oTradeNum'))
        if trade is None:
            return TRADE_NOT_FOUND, '交易不存在'
        if trade.status == REVOKED:
            pass
        elif trade.refunds or int(values['amount']) != trade.amount:
            return NOT_REVOCABLE, '交易不可撤销'
        else:
            # unpaid: can no longer be paid; paid: given back in full
            trade.status = REVOKED
        return {
            'tradeNum': values['tradeNum'],
            'oTradeNum': trade.number,
            'amount': str(trade.amount),
            'currency': 'CNY',
            'tradeTime': now(),
            'status': '1',
            }

    def refund(self, values):
        trade = self.trades.get(values.get('oTradeNum'))
        if trade is None or trade.status != PAID:
            return TRADE_NOT_FOUND, '交易不存在'
        number = values['tradeNum']
        amount = int(values['amount'])
        if number not in trade.refunds:
            if sum(trade.refunds.values()) + amount > trade.amount:
                return REFUND_EXCEEDED, '退款金额超限'
            trade.refunds[number] = amount
        return {
            'tradeNum': number,
            'tradeType': '1',
            'oTradeNum': trade.number,
            'amount': str(trade.refunds[number]),
            'currency': 'CNY',
            'tradeTime': now(),
            'note': '',
            'status': '1',
            }

    # ---- notifications ---------------------------------------------------

    def pay(self, number):
        with self.lock:
            self.trades[number].pay()

    def notification(self, number, forge=False, des_key=None):
        """Return (headers, body) of the XML JD posts to notifyUrl; forge:
        signed with another key; des_key: encrypted with another key"""
        trade = self.trades[number]
        body = self.encrypted(
            dict(trade.answer(), tradeType='0'),
            key=new_key() if forge else None, des_key=des_key)
        return {'Content-Type': 'text/xml;charset=utf-8'}, body

