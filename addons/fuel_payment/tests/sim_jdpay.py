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
material we had names only `000000` (success), see the design doc.

It also serves JD's bill download (`/api/download.do`, GET or POST, see
jdpay_bill.py): the owner and md5 are checked as JD does, with its
`bill_key`, and the answer is the zip of the GBK CSV of the order bill of
a day built from its trades (payments, refunds, paid trades revoked), a
fee on each line, cells written `="..."`, or a `Return-Code` refusal:
`00111` wrong owner or md5, `00112` when `bill_ip_allowed` is off, `00124`
a file it does not have or while `bill_ready` is off, `bill_refusal` when
set; `bill_body` replaces the zip. `bill_cells` (17 or
19) picks the layout; the header's names and the cells jdpay_bill.py does
not read are its own (the material names none)."""
import base64
import binascii
import datetime as dt
import hashlib
import io
import json
import re
import secrets
import threading
import time
import urllib.parse
import zipfile
from decimal import ROUND_HALF_UP, Decimal
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
from ..jdpay_bill import (
    DOWNLOAD,
    FILE_DATE_OFFSET,
    IP_UNAUTHORIZED,
    NO_FILE,
    ORDER_BILL_PATH,
    RETURN_CODE,
    UNAUTHORIZED,
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
# the fee rate of the simulated merchant (0.6 %), rounded to the fen
FEE_RATE = Decimal('0.006')
CENT = Decimal('0.01')
BILL_NAME = re.compile(r'^(\d{8})ordercreate_(\d+)\.zip$')
# the simulator's own header (JD's names are not in the material)
BILL_HEADER_17 = (
    '商户订单号,交易号,交易金额,支付方式,业务类型,交易状态,退款金额,备用,'
    '交易时间,完成时间,退款单号,手续费,账户名,备用,备注,银行名称,第三方单号')
BILL_HEADER_19 = (
    BILL_HEADER_17.rsplit(',', 2)[0] + ',备注2,银行名称,第三方单号,交易流水号')


def fee_of(fen):
    return (Decimal(fen) / 100 * FEE_RATE).quantize(
        CENT, rounding=ROUND_HALF_UP)


def yuan(fen):
    return (Decimal(fen) / 100).quantize(CENT)


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
        # JD's number and the time of each refund, by our refund number
        self.refund_ids = {}
        self.refund_times = {}
        # (our revoke's tradeNum, time) of a trade revoked
        self.revoked = None
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
        self.bill_key = secrets.token_urlsafe(12)
        self.bill_ip_allowed = True
        self.bill_ready = True
        self.bill_cells = 17
        # another Return-Code to answer, or other bytes than the bill
        self.bill_refusal = None
        self.bill_body = None
        self.bill_requests = []
        self.lock = threading.Lock()
        self.server = None

    def start(self):
        simulator = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                if urllib.parse.urlsplit(self.path).path == DOWNLOAD:
                    simulator.download(self)
                else:
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
            trade.revoked = (values['tradeNum'], now())
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
            trade.refund_ids[number] = secrets.token_hex(10)
            trade.refund_times[number] = now()
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


    # ---- bill ------------------------------------------------------------

    def download(self, request):
        "Answer a bill download: the zip, or a Return-Code refusal"
        split = urllib.parse.urlsplit(request.path)
        if split.path != DOWNLOAD:
            self.refuse(request, 404, NO_FILE)
            return
        if request.command == 'POST':
            length = int(request.headers.get('Content-Length') or 0)
            query = request.rfile.read(length).decode('ascii')
        else:
            query = split.query
        params = dict(urllib.parse.parse_qsl(query))
        with self.lock:
            self.bill_requests.append((request.command, params))
            if self.down:
                self.refuse(request, 500, '')
                return
            code, date = self.bill_file(params)
            code = code or self.bill_refusal
            if code:
                self.refuse(request, 200, code)
                return
            data = self.bill_body or self.bill(date)
        request.send_response(200)
        request.send_header(RETURN_CODE, '0000')
        request.send_header('Content-Type', 'application/octet-stream')
        request.send_header('Content-Length', str(len(data)))
        request.end_headers()
        request.wfile.write(data)

    def refuse(self, request, status, code):
        request.send_response(status)
        if code:
            request.send_header(RETURN_CODE, code)
        request.send_header('Content-Length', '0')
        request.end_headers()

    def bill_file(self, params):
        """Return (refusal code or None, business day) of the file params
        ask for, checked as JD does"""
        if not self.bill_ip_allowed:
            return IP_UNAUTHORIZED, None
        data = params.get('data', '')
        digest = hashlib.md5(
            (data + self.bill_key).encode('utf-8')).hexdigest()
        if (params.get('owner') != self.merchant[:9]
                or params.get('md5') != digest):
            return UNAUTHORIZED, None
        try:
            wanted = json.loads(base64.b64decode(data, validate=True))
            name, path = wanted['name'], wanted['path']
        except (binascii.Error, ValueError, KeyError, TypeError):
            return NO_FILE, None
        match = BILL_NAME.match(str(name))
        if (path != ORDER_BILL_PATH or not match
                or match.group(2) != self.merchant or not self.bill_ready):
            return NO_FILE, None
        named = dt.datetime.strptime(match.group(1), '%Y%m%d').date()
        return None, named - FILE_DATE_OFFSET

    def bill_lines(self, date):
        """The lines of the order bill of date (Beijing): payments, refunds
        and the revokes of paid trades done that day"""
        day = date.strftime('%Y%m%d')
        lines = []
        for trade in self.trades.values():
            if trade.paid and trade.paid[:8] == day:
                lines.append(self.bill_line(
                        trade.number, trade.order_id, yuan(trade.amount),
                        fee_of(trade.amount), trade.paid))
            for number, amount in trade.refunds.items():
                when = trade.refund_times[number]
                if when[:8] == day:
                    lines.append(self.bill_line(
                            trade.number, trade.refund_ids[number],
                            -yuan(amount), -fee_of(amount), when, number))
            if trade.revoked and trade.paid and trade.revoked[1][:8] == day:
                number, when = trade.revoked
                lines.append(self.bill_line(
                        trade.number, trade.order_id + 'C',
                        -yuan(trade.amount), -fee_of(trade.amount), when,
                        number))
        return lines

    def bill_line(self, number, jd_number, amount, fee, when, refund=''):
        "A line of the bill: most cells `=\"...\"`, amounts and status plain"
        time_ = dt.datetime.strptime(when, '%Y%m%d%H%M%S').strftime(
            '%Y-%m-%d %H:%M:%S')
        cells = [
            f'="{number}\t"', f'="{jd_number}"', f'{amount:.2f}',
            '="京东支付"', '="退款"' if refund else '="消费"', '成功',
            f'{-amount if refund else 0:.2f}', '=""', time_, f'="{time_}"',
            f'="{refund}"', f'="{fee:.2f}"', '"加油站测试商户"', '=""',
            '"加油"', '""',
            ]
        if self.bill_cells == 19:
            cells += ['"招商银行"', '="-1"', f'="{jd_number}"']
        else:
            cells += ['="-1"']
        return ','.join(cells)

    def bill(self, date):
        "The zip of the GBK CSV of the order bill of date"
        header = BILL_HEADER_19 if self.bill_cells == 19 else BILL_HEADER_17
        text = '\r\n'.join([header] + self.bill_lines(date)) + '\r\n'
        named = (date + FILE_DATE_OFFSET).strftime('%Y%m%d')
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, 'w', zipfile.ZIP_DEFLATED) as archive:
            archive.writestr(
                f'{named}ordercreate_{self.merchant}.csv',
                text.encode('gbk'))
        return buffer.getvalue()
