# This file is part of fuelpay.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""Alipay's trade bill (交易账单, alipay.data.dataservice.bill.downloadurl.
query bill_type trade): a zip of GBK CSV files, whose business detail
file (业务明细) is read"""
import csv
import io
import zipfile
from decimal import Decimal, InvalidOperation

from .gateway import BillFormatError

# the detail file of the trade bill (业务明细): 25 columns
BILL_COLUMNS = (
    '支付宝交易号,商户订单号,业务类型,商品名称,创建时间,完成时间,门店编号,'
    '门店名称,操作员,终端号,对方账户,订单金额（元）,商家实收（元）,'
    '支付宝红包（元）,集分宝（元）,支付宝优惠（元）,商家优惠（元）,'
    '券核销金额（元）,券名称,商家红包消费金额（元）,卡消费金额（元）,'
    '退款批次号/请求号,服务费（元）,分润（元）,备注')
BILL_HEADER = BILL_COLUMNS.split(',')
BILL_DETAIL = '_业务明细.csv'
def _zip_name(info):
    "A member name: Alipay writes GBK names without the UTF-8 flag"
    if info.flag_bits & 0x800:
        return info.filename
    try:
        return info.filename.encode('cp437').decode('gbk')
    except (UnicodeEncodeError, UnicodeDecodeError):
        return info.filename


def _bill_amount(value):
    try:
        return Decimal(value or '0').quantize(Decimal('0.01'))
    except InvalidOperation:
        raise BillFormatError(f"amount {value!r}") from None


def parse_trade_bill(data):
    """Parse the zip of a trade bill: the GBK CSV of its details, between
    the `#` comment lines, amounts in yuan, refunds negative, the service
    fee negative when Alipay keeps it"""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile as exception:
        raise BillFormatError("zip") from exception
    with archive:
        details = [
            i for i in archive.infolist()
            if _zip_name(i).endswith(BILL_DETAIL)]
        if len(details) != 1:
            raise BillFormatError("no detail file")
        try:
            text = archive.read(details[0]).decode('gbk')
        except UnicodeDecodeError:
            raise BillFormatError("encoding") from None
    lines = [
        line for line in text.splitlines()
        if line.strip() and not line.startswith('#')]
    records = list(csv.reader(lines))
    if not records or [v.strip() for v in records[0]] != BILL_HEADER:
        raise BillFormatError("header")
    rows = []
    for record in records[1:]:
        # values are often padded with a tab
        values = [v.strip() for v in record]
        if len(values) != len(BILL_HEADER):
            raise BillFormatError(f"{len(values)} columns")
        value = dict(zip(BILL_HEADER, values, strict=True)).get
        fee = -_bill_amount(value('服务费（元）'))
        if value('业务类型') == '退款':
            rows.append({
                    'type': 'refund',
                    'number': value('商户订单号'),
                    'refund_number': value('退款批次号/请求号'),
                    'reference': value('支付宝交易号'),
                    'amount': -_bill_amount(value('订单金额（元）')),
                    'status': 'succeeded',
                    'fee': fee,
                    })
        elif value('业务类型') == '交易':
            rows.append({
                    'type': 'payment',
                    'number': value('商户订单号'),
                    'reference': value('支付宝交易号'),
                    'amount': _bill_amount(value('订单金额（元）')),
                    'status': 'succeeded',
                    'fee': fee,
                    })
        else:
            raise BillFormatError(f"type {value('业务类型')!r}")
    return rows
