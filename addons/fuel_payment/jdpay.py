# This file is part of fuelpay.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""JD Pay (京东支付) through its own merchant API, version V2.0
(`https://paygate.jd.com/service/...`)

Every call is an XML POST `<jdpay><version/><merchant/><encrypt/>
</jdpay>`. `encrypt` is base64 of the hex of the 3DES-ECB encryption
(the merchant's base64 DES key) of the whole request XML, itself signed:
its `<sign>` is base64 of the merchant's RSA private key applied with
PKCS#1 v1.5 padding to the lowercase hex SHA-256 of the XML without the
`<sign>` element (JD names it "encryptByPrivateKey": the digest's hex
text is padded as it is, without an ASN.1 DigestInfo). The 3DES input is
the length of the text on 4 bytes big endian, the UTF-8 text, then zero
bytes up to a multiple of 8. Answers `<jdpay><result><code/><desc/>
</result><encrypt/></jdpay>` (`000000` success) and notifications carry
the same `encrypt`, signed by JD's key. This is the protocol of JD's
demo code as the public SDKs reproduce it; it is spoken here with
requests and cryptography. The daily order bill (对账单) is in
jdpay_bill.py."""
import base64
import binascii
import datetime as dt
import hashlib
import hmac
import re
import struct
import xml.etree.ElementTree as ET
from xml.sax.saxutils import escape

import requests
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.hazmat.primitives.ciphers import Cipher, modes

from . import jdpay_bill
from .gateway import (
    ForgedNotification,
    Notification,
    PermanentError,
    Provider,
    Result,
    TransientError,
    from_fen,
    provider,
    to_fen,
)

DEFAULT_URL = 'https://paygate.jd.com'
FKMPAY = '/service/fkmPay'
UNIORDER = '/service/uniorder'
QUERY = '/service/query'
REVOKE = '/service/revoke'
REFUND = '/service/refund'
VERSION = 'V2.0'
XML_HEAD = '<?xml version="1.0" encoding="UTF-8"?>'
SUCCESS = '000000'
# JD's code for a trade it does not know is not named in the material we
# had: this is the simulator's own (as for Huifu), see the design doc
TRADE_NOT_FOUND = 'TRADE_NOT_EXIST'
# (connect, read) seconds: JD advises 15 s for fkmPay, a bank behind a
# quick payment may be slow; a timeout is queried, not failed
TIMEOUT = (5, 15)
# tradeType of uniorder for a QR (扫一扫) and of query for a payment
QR = 'QR'
CONSUME = '0'
# orderType: 0 physical goods (fuel), 1 virtual
PHYSICAL = '0'
# status of a payment (query, fkmPay, notification): 0 created and
# 1 processing are waited for, 2 is success; anything else is a failure
TRADE_STATES = {
    '0': 'pending',
    '1': 'pending',
    '2': 'succeeded',
    }
# status of a refund or a revoke: 0 processing, 1 done
REFUND_STATES = {
    '0': 'pending',
    '1': 'succeeded',
    }
BEIJING = dt.timezone(dt.timedelta(hours=8))
# DES keys are 24 bytes (three keys of 3DES)
DES_KEY_LENGTH = 24


def des_key(text):
    "The 3DES key of the base64 text JD gives; raise ValueError if bad"
    try:
        key = base64.b64decode((text or '').strip(), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("DES key is not base64") from None
    if len(key) != DES_KEY_LENGTH:
        raise ValueError("DES key is not 24 bytes")
    return key


def des_encrypt(key, text):
    "base64 of the hex of 3DES-ECB over len(4 bytes) + text + zeros"
    data = text.encode('utf-8')
    block = struct.pack('>I', len(data)) + data
    block += b'\0' * (-len(block) % 8)
    encryptor = Cipher(TripleDES(key), modes.ECB()).encryptor()
    cipher = encryptor.update(block) + encryptor.finalize()
    return base64.b64encode(cipher.hex().encode('ascii')).decode('ascii')


def des_decrypt(key, encrypted):
    "The text of des_encrypt's output; raise ValueError if it is not one"
    try:
        hex_text = base64.b64decode(encrypted, validate=True)
        cipher = bytes.fromhex(hex_text.decode('ascii'))
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise ValueError("encrypt is not base64 hex") from None
    if not cipher or len(cipher) % 8:
        raise ValueError("encrypt is not whole blocks")
    decryptor = Cipher(TripleDES(key), modes.ECB()).decryptor()
    block = decryptor.update(cipher) + decryptor.finalize()
    length, = struct.unpack('>I', block[:4])
    if length > len(block) - 4:
        raise ValueError("encrypt length")
    try:
        return block[4:4 + length].decode('utf-8')
    except UnicodeDecodeError:
        raise ValueError("encrypt is not UTF-8") from None


def load_private(text):
    "The RSA private key of PEM text or of the bare base64 JD hands out"
    text = (text or '').strip()
    if text.startswith('-----'):
        return serialization.load_pem_private_key(
            text.encode(), password=None)
    return serialization.load_der_private_key(
        base64.b64decode(text), password=None)


def load_public(text):
    text = (text or '').strip()
    if text.startswith('-----'):
        return serialization.load_pem_public_key(text.encode())
    return serialization.load_der_public_key(base64.b64decode(text))


def _digest(text):
    return hashlib.sha256(text.encode('utf-8')).hexdigest().encode('ascii')


def sign(private_key, text):
    """JD's signature of text: the PKCS#1 v1.5 (block type 1) padded hex
    SHA-256 of text, raised to the private exponent"""
    numbers = private_key.private_numbers()
    modulus = numbers.public_numbers.n
    size = (modulus.bit_length() + 7) // 8
    digest = _digest(text)
    block = b'\0\1' + b'\xff' * (size - len(digest) - 3) + b'\0' + digest
    value = pow(int.from_bytes(block, 'big'), numbers.d, modulus)
    return base64.b64encode(value.to_bytes(size, 'big')).decode('ascii')


def verify(public_key, text, signature):
    "Whether signature is JD's signature of text by public_key's owner"
    try:
        recovered = public_key.recover_data_from_signature(
            base64.b64decode(signature or '', validate=True),
            padding.PKCS1v15(), None)
    except (binascii.Error, ValueError, InvalidSignature):
        return False
    return hmac.compare_digest(recovered, _digest(text))


SIGN_ELEMENT = re.compile(r'<sign>(.*?)</sign>', re.S)


def signed_text(xml):
    "Return (xml without its sign element, the signature) of a JD XML"
    match = SIGN_ELEMENT.search(xml)
    if not match:
        return xml, ''
    return xml[:match.start()] + xml[match.end():], match.group(1).strip()


def _candidates(text):
    """The texts JD may have signed: as received, and as JD's demo code
    normalises it (tabs and line breaks dropped with the spaces around
    them, the XML declaration added when missing)"""
    flat = ''.join(
        part.strip() for part in re.split(r'[\t\r\n]', text))
    if not flat.startswith('<?xml'):
        flat = XML_HEAD + flat
    return [text] if flat == text else [text, flat]


def to_xml(values):
    "The <jdpay> XML of values (text, or dicts for nested elements)"
    def element(name, value):
        if isinstance(value, dict):
            inner = ''.join(element(k, v) for k, v in value.items())
            return f'<{name}>{inner}</{name}>'
        return f'<{name}>{escape(str(value))}</{name}>'
    body = ''.join(
        element(k, v) for k, v in values.items() if v is not None)
    return XML_HEAD + f'<jdpay>{body}</jdpay>'


def parse_xml(text):
    """The root element of a JD XML; raise ValueError on anything else
    (a DTD is refused: nothing of the sender is expanded)"""
    if '<!DOCTYPE' in text or '<!ENTITY' in text:
        raise ValueError("DTD")
    try:
        root = ET.fromstring(text)
    except ET.ParseError:
        raise ValueError("not XML") from None
    if root.tag != 'jdpay':
        raise ValueError("not jdpay")
    return root


def values_of(root):
    "The text of root's children by tag; result code and desc flattened"
    values = {}
    for child in root:
        if child.tag == 'result':
            values['code'] = (child.findtext('code') or '').strip()
            values['desc'] = (child.findtext('desc') or '').strip()
        elif child.tag == 'payList':
            values['payList'] = [
                {c.tag: (c.text or '').strip() for c in pay}
                for pay in child]
        else:
            values[child.tag] = (child.text or '').strip()
    return values


def encrypt_request(private_key, key, merchant, values):
    "The XML body of a request of values, signed and encrypted"
    text = to_xml(dict(version=VERSION, merchant=merchant, **values))
    signed = text[:-len('</jdpay>')] + (
        f'<sign>{sign(private_key, text)}</sign></jdpay>')
    return to_xml({
            'version': VERSION,
            'merchant': merchant,
            'encrypt': des_encrypt(key, signed),
            })


def decrypt_envelope(public_key, key, body):
    """The verified values of a JD envelope (answer or notification):
    raise ValueError naming what did not verify, never its content"""
    outer = values_of(parse_xml(body))
    if outer.get('code', SUCCESS) != SUCCESS and not outer.get('encrypt'):
        return outer
    if not outer.get('encrypt'):
        raise ValueError("no encrypt")
    text = des_decrypt(key, outer['encrypt'])
    unsigned, signature = signed_text(text)
    if not signature or not any(
            verify(public_key, t, signature) for t in _candidates(unsigned)):
        raise ValueError("signature")
    values = values_of(parse_xml(text))
    values.pop('sign', None)
    return values


def trade_time(record):
    "tradeTime of record: its creation in Beijing, stable between tries"
    created = record.create_date or dt.datetime.now()
    return created.replace(tzinfo=dt.UTC).astimezone(BEIJING).strftime(
        '%Y%m%d%H%M%S')


def parse_time(value):
    if not value:
        return None
    try:
        return dt.datetime.strptime(value, '%Y%m%d%H%M%S').replace(
            tzinfo=BEIJING).astimezone(dt.UTC).replace(tzinfo=None)
    except ValueError:
        return None


def _fen(value):
    try:
        return from_fen(int(value))
    except (TypeError, ValueError):
        return None


@provider('jdpay')
class JdPayProvider(Provider):
    """JD Pay's own merchant API: Merchant ID is JD's merchant number,
    the Private Key the merchant's RSA key, the API Key the base64 DES key
    and the Platform Public Key JD's RSA key; the Bill Key the key of
    the bill download (对账单密钥)"""

    # JD's order bill (jdpay_bill.py), once the gateway has its bill key:
    # without one the day is reconciled by querying each payment
    bill = True

    def __init__(self, gateway):
        super().__init__(gateway)
        private_key, api_key = gateway.secrets()
        self.private_key = load_private(private_key)
        self.key = des_key(api_key)
        self.public_key = load_public(gateway.platform_key)
        self.url = (gateway.url or DEFAULT_URL).rstrip('/')
        self.bill_key = gateway.bill_secret()
        self.bill = bool(self.bill_key)

    def _post(self, path, values):
        "Return the verified values JD answers to path; raise on failure"
        body = encrypt_request(
            self.private_key, self.key, self.gateway.merchant, values)
        try:
            response = requests.post(
                self.url + path, data=body.encode('utf-8'), timeout=TIMEOUT,
                headers={'Content-Type': 'application/xml;charset=utf-8'})
        except requests.RequestException as exception:
            raise TransientError(type(exception).__name__) from exception
        if response.status_code >= 500:
            raise TransientError(f"HTTP {response.status_code}")
        try:
            answer = decrypt_envelope(
                self.public_key, self.key, response.content.decode('utf-8'))
        except (ValueError, UnicodeDecodeError) as exception:
            raise TransientError(f"bad answer: {exception}") from None
        code = answer.get('code', '')
        if code != SUCCESS:
            raise PermanentError(f"{code}: {answer.get('desc', '')}")
        return answer

    def _trade_result(self, values):
        status = values.get('status')
        state = TRADE_STATES.get(status, 'failed')
        pays = values.get('payList') or []
        return Result(
            state=state,
            # JD keys a trade by our tradeNum: the one it confirms is kept
            reference=values.get('tradeNum') or None,
            amount=_fen(values.get('amount')),
            date=parse_time(pays[0].get('tradeTime')) if pays else None,
            error=(
                f"status {status}: {values.get('desc', '')}"
                if state == 'failed' else None))

    def _order(self, payment):
        return {
            'tradeNum': payment.number,
            'tradeName': payment.label[:64],
            'tradeTime': trade_time(payment),
            'amount': str(to_fen(payment.amount)),
            'currency': payment.currency.code,
            'notifyUrl': self.gateway.notify_url,
            }

    def pay_code(self, payment, code):
        values = self._post(FKMPAY, dict(
                token=code,
                device=payment.station.code,
                **self._order(payment)))
        return self._trade_result(values)

    def create_qr(self, payment):
        values = self._post(UNIORDER, dict(
                self._order(payment),
                orderType=PHYSICAL,
                tradeType=QR,
                # the customer is anonymous: the station is the user
                userId=payment.station.code,
                device=payment.station.code,
                expireTime=str(self.gateway.qr_timeout)))
        if not values.get('qrCode'):
            raise TransientError("no qrCode")
        return Result(state='pending', code_url=values['qrCode'])

    def query(self, payment):
        try:
            values = self._post(QUERY, {
                    'tradeNum': payment.number,
                    'tradeType': CONSUME,
                    })
        except PermanentError as exception:
            if str(exception).startswith(TRADE_NOT_FOUND):
                return Result(state='missing')
            raise
        return self._trade_result(values)

    def _revoke(self, payment):
        """Revoke (撤销): an unpaid trade can no longer be paid, a paid
        one is refunded in full"""
        values = self._post(REVOKE, {
                'tradeNum': payment.number + jdpay_bill.REVOKE_SUFFIX,
                'oTradeNum': payment.number,
                'amount': str(to_fen(payment.amount)),
                'currency': payment.currency.code,
                'tradeTime': trade_time(payment),
                })
        state = REFUND_STATES.get(values.get('status'), 'failed')
        if state == 'pending':
            raise TransientError("revoke processing")
        if state == 'failed':
            raise PermanentError(f"revoke status {values.get('status')}")
        return Result(state='cancelled')

    def reverse(self, payment):
        return self._revoke(payment)

    def close(self, payment):
        # JD's V2 API has no close: a QR not paid is revoked
        return self._revoke(payment)

    def refund(self, refund):
        payment = refund.payment
        values = self._post(REFUND, {
                'tradeNum': refund.number,
                'oTradeNum': payment.number,
                'amount': str(to_fen(refund.amount)),
                'currency': payment.currency.code,
                'tradeTime': trade_time(refund),
                'note': (refund.reason or '')[:64] or None,
                })
        status = values.get('status')
        state = REFUND_STATES.get(status, 'failed')
        return Result(
            state=state, reference=values.get('tradeNum') or None,
            error=f"status {status}" if state == 'failed' else None)

    def parse_notification(self, headers, body):
        try:
            values = decrypt_envelope(self.public_key, self.key, body or '')
        except ValueError as exception:
            raise ForgedNotification(str(exception)) from None
        if values.get('merchant') != self.gateway.merchant:
            raise ForgedNotification("another merchant")
        if values.get('code') != SUCCESS:
            raise ForgedNotification("result code")
        if not values.get('tradeNum') or not values.get('status'):
            raise ForgedNotification("incomplete")
        return Notification(
            id=f"{values['tradeNum']}:{values['status']}",
            number=values['tradeNum'], result=self._trade_result(values))

    def answer(self, outcome, body):
        if outcome == 'refused':
            # anything but success: JD notifies again
            return 400, 'fail', 'text/plain'
        return 200, 'success', 'text/plain'

    def fetch_bill(self, date):
        if not self.bill_key:
            raise PermanentError("JD Pay: no bill key")
        # a Gateway URL (a test host) serves the download as well
        url = (
            self.url + jdpay_bill.DOWNLOAD if self.gateway.url
            else jdpay_bill.BILL_URL)
        return jdpay_bill.download(url, self.gateway, self.bill_key, date)

    def parse_bill(self, data):
        return jdpay_bill.parse_order_bill(data)

    def bill_name(self, date):
        return f'jdpay-{self.gateway.merchant}-{date.isoformat()}.zip'
