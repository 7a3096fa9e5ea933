# This file is part of fuelpay.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""JD Pay's daily order bill (对账单): its download from JD's file
service and its format

No JD document was in the material used. What follows is read from
integrations' code (public merchant code that calls JD, not JD's own
document); what none of it shows is marked as assumed.

Download (integrations' code): a form POST to
`https://bapi.jdpay.com/api/download.do` (one integration sends the same
fields in the query string of a GET) of `owner` (the merchant number's
first 8 or 9 digits: "owner为 商户号（8位或9位）", `substr(merId, 0, 9)`),
`data` (base64 of the JSON `{"name": <file>, "path": <folder>}`) and
`md5` (lowercase hex MD5 of `data` followed by the bill key, 对账单密钥,
a secret the merchant configures with JD, neither the DES nor the RSA
key). The order bill is `<YYYYMMDD>ordercreate_<merchant number>.zip` in
`0001/0001`. The answer is the zip itself; the `Return-Code` header says
`0000` (or nothing) on success, `00111` merchant not authorized (商户未授权),
`00112` IP address not authorized (商户IP未授权), `00124` no such file
(请求文件无效, also a file not made yet); any other code is a failure.

Assumed: the file's date. One integration asks for the file dated the
day after the business day it checks (FILE_DATE_OFFSET); another only
passes a date through. A file of another day would show as amounts
missing on both sides, never as matched.

Format (integrations' code, JDBillUtil of mojieai and a PHP checker): the
zip holds one CSV, GBK encoded, a header line then one line per trade,
comma separated; most cells are written for Excel as `="value"` (the
integrations strip `=`, `"` and tabs), amounts plainly. The header's
names are not in the material: the cells are read by position, 0-based:
0 our order number (tradeNum), 1 JD's trade number, 2 the amount in yuan
(negative on a refund), 5 the status (`成功` success), 10 the refund
number (our refund's tradeNum), 11 the fee (手续费). The other cells
(pay and business types, refund amount, times, account and bank names,
memos, third-party and JD exchange numbers) are not read. A line has 17
cells, or up to 19 in the longer layout the integration reads up to
position 18; any other shape is refused.

Decided here: a line with a negative amount is a refund, and must name
its refund number; the revoke (撤销) of a paid trade gives the money back
under the revoke's tradeNum, `<order number>C` (jdpay.py), and is read as
the payment cancelled; a status other than `成功` (no other word is in the
material) is read as failed; the fee is taken as written, negative when
JD gives it back."""
import base64
import datetime as dt
import hashlib
import io
import json
import re
import zipfile
from decimal import Decimal, InvalidOperation

import requests
from trytond.i18n import gettext

from .gateway import BillFormatError, PermanentError, TransientError

BILL_URL = 'https://bapi.jdpay.com/api/download.do'
# the path of the download on a gateway's own URL (a test host)
DOWNLOAD = '/api/download.do'
ORDER_BILL = 'ordercreate'
ORDER_BILL_PATH = '0001/0001'
# assumed, see above: the order bill of a day is named after the next day
FILE_DATE_OFFSET = dt.timedelta(days=1)
# the owner is the merchant number's first 9 digits (all 8 of an 8-digit
# one): the merchant registered at JD of a 12-digit merchant number
OWNER_DIGITS = 9
# (connect, read) seconds: a day's zip may be large
TIMEOUT = (5, 60)
RETURN_CODE = 'Return-Code'
DOWNLOADED = {'', '0000'}
UNAUTHORIZED = '00111'
IP_UNAUTHORIZED = '00112'
NO_FILE = '00124'
ENCODING = 'gbk'
# the suffix of the tradeNum of our revoke of a trade (jdpay.py)
REVOKE_SUFFIX = 'C'
# cell positions and the shapes of a line
ORDER, TRADE, AMOUNT, STATUS, REFUND_NUMBER, FEE = 0, 1, 2, 5, 10, 11
CELL_COUNTS = frozenset({17, 18, 19})
SUCCESS = '成功'
# a raw cell: `="..."`, `"..."` (a quote doubled inside) or plain text
RAW_CELL = re.compile(r'[ \t]*(=?"(?:[^"]|"")*"|[^,"]*)[ \t]*(,|$)')


def file_date(date):
    "The date in the name of the order bill of the business day date"
    return date + FILE_DATE_OFFSET


def file_name(merchant, date):
    "The name of the order bill of date for merchant"
    return f'{file_date(date):%Y%m%d}{ORDER_BILL}_{merchant}.zip'


def owner(merchant):
    return merchant[:OWNER_DIGITS]


def request_data(name, path=ORDER_BILL_PATH):
    "The data field naming file name in path: base64 of its JSON"
    text = json.dumps({'name': name, 'path': path}, separators=(',', ':'))
    return base64.b64encode(text.encode('utf-8')).decode('ascii')


def request_md5(data, key):
    "The md5 field of data: lowercase hex MD5 of data then the bill key"
    return hashlib.md5((data + key).encode('utf-8')).hexdigest()


def download_params(merchant, key, date):
    "The form fields asking for the order bill of date"
    data = request_data(file_name(merchant, date))
    return {
        'owner': owner(merchant),
        'data': data,
        'md5': request_md5(data, key),
        }


def download(url, gateway, key, date):
    """Return the zip of the order bill of date for gateway; raise
    TransientError when it is worth asking again (no file yet, network,
    JD's server) and PermanentError when JD refuses the merchant. Neither
    the key nor the md5 is ever put in an error."""
    name = file_name(gateway.merchant, date)
    try:
        response = requests.post(
            url, data=download_params(gateway.merchant, key, date),
            timeout=TIMEOUT)
    except requests.RequestException as exception:
        raise TransientError(type(exception).__name__) from None
    if response.status_code >= 500:
        raise TransientError(f"HTTP {response.status_code}")
    code = (response.headers.get(RETURN_CODE) or '').strip()
    values = {'gateway': gateway.rec_name, 'code': code, 'file': name}
    if code == UNAUTHORIZED:
        raise PermanentError(gettext(
                'fuel_payment.msg_jdpay_bill_unauthorized', **values))
    elif code == IP_UNAUTHORIZED:
        raise PermanentError(gettext(
                'fuel_payment.msg_jdpay_bill_ip', **values))
    elif code == NO_FILE:
        raise TransientError(gettext(
                'fuel_payment.msg_jdpay_bill_not_ready', **values))
    elif code not in DOWNLOADED or response.status_code >= 300:
        raise PermanentError(gettext(
                'fuel_payment.msg_jdpay_bill_refused',
                **dict(values, code=code or response.status_code)))
    if not zipfile.is_zipfile(io.BytesIO(response.content)):
        raise TransientError("bill is not a zip")
    return response.content


def clean_cell(raw):
    """The value of a raw cell: `="value"` and `"value"` unwrapped (a
    doubled quote inside is one quote), spaces and tabs around the value
    and inside the quotes dropped"""
    text = raw.strip(' \t')
    if text.startswith('='):
        text = text[1:]
    if len(text) >= 2 and text[0] == text[-1] == '"':
        text = text[1:-1].replace('""', '"')
    return text.strip(' \t')


def split_cells(line):
    "The cleaned cells of a line; a comma inside quotes is kept"
    cells, position = [], 0
    while True:
        match = RAW_CELL.match(line, position)
        if match is None:
            raise BillFormatError(f"cell at {position + 1}")
        raw, separator = match.groups()
        cells.append(clean_cell(raw))
        if not separator:
            return cells
        position = match.end()


def _amount(value, line):
    try:
        amount = Decimal(value)
    except InvalidOperation:
        amount = None
    if amount is None or not amount.is_finite():
        raise BillFormatError(f"line {line}: amount {value!r}")
    return amount.quantize(Decimal('0.01'))


def read_lines(data):
    "The cells of each trade line of the zip of an order bill"
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            members = [i for i in archive.infolist() if not i.is_dir()]
            if len(members) != 1:
                raise BillFormatError(f"{len(members)} files in the zip")
            raw = archive.read(members[0])
    except (zipfile.BadZipFile, ValueError, EOFError, NotImplementedError):
        raise BillFormatError("zip") from None
    try:
        text = raw.decode(ENCODING)
    except UnicodeDecodeError:
        raise BillFormatError("not GBK") from None
    lines = [
        (number, line) for number, line in enumerate(text.splitlines(), 1)
        if line.strip()]
    if not lines:
        raise BillFormatError("no header")
    for number, line in lines[1:]:
        try:
            cells = split_cells(line)
        except BillFormatError as exception:
            raise BillFormatError(f"line {number}: {exception}") from None
        if len(cells) not in CELL_COUNTS:
            raise BillFormatError(f"line {number}: {len(cells)} cells")
        yield number, cells


def parse_order_bill(data):
    "Return the rows of Provider.parse_bill of the zip of an order bill"
    rows, paid, revokes = [], {}, []
    for line, cells in read_lines(data):
        number, reference = cells[ORDER], cells[TRADE] or None
        if not number:
            raise BillFormatError(f"line {line}: no order number")
        amount = _amount(cells[AMOUNT], line)
        fee = _amount(cells[FEE], line)
        status = 'succeeded' if cells[STATUS] == SUCCESS else 'failed'
        if amount >= 0:
            if status == 'succeeded':
                paid[number] = len(rows)
            rows.append({
                    'type': 'payment', 'number': number,
                    'reference': reference, 'amount': amount,
                    'status': status, 'fee': fee,
                    })
            continue
        refund_number = cells[REFUND_NUMBER]
        if not refund_number:
            raise BillFormatError(f"line {line}: refund without number")
        if refund_number == number + REVOKE_SUFFIX:
            if status == 'succeeded':
                # a revoke that failed gave nothing back
                revokes.append({
                        'type': 'payment', 'number': number,
                        'reference': reference, 'amount': -amount,
                        'status': 'cancelled', 'fee': fee,
                        })
            continue
        rows.append({
                'type': 'refund', 'number': number,
                'refund_number': refund_number, 'reference': reference,
                'amount': -amount, 'status': status, 'fee': fee,
                })
    for revoke in revokes:
        index = paid.pop(revoke['number'], None)
        if index is None:
            # paid on an earlier day
            rows.append(revoke)
        else:
            # paid and given back the same day: one payment, cancelled
            payment = rows[index]
            rows[index] = dict(
                payment, status='cancelled',
                fee=payment['fee'] + revoke['fee'])
    return rows
