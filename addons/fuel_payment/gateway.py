# This file is part of fuelpay.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""Payment gateways: an operator's merchant account at a channel (WeChat
Pay, Alipay, JD Pay, an acquirer) and the one interface every channel's
provider implements"""
import dataclasses
import datetime as dt
import re
from decimal import Decimal

from trytond.i18n import gettext
from trytond.model import ModelSQL, ModelView, fields
from trytond.model.exceptions import AccessError
from trytond.pool import Pool, PoolMeta
from trytond.pyson import Bool, Eval
from trytond.transaction import Transaction
from trytond.wizard import Button, StateTransition, StateView, Wizard

from .exceptions import GatewayError

CHANNELS = [
    ('wechat', "WeChat Pay"),
    ('alipay', "Alipay"),
    ('aggregator', "Huifu Aggregator (UnionPay)"),
    ('jdpay', "JD Pay"),
    ]

# Payment codes (付款码) by the prefix the channels document; the
# attendant's scanner gives only digits, the channel is chosen by them.
CODE_ROUTES = [
    ('wechat', re.compile(r'^1[0-5]\d{16}$')),
    ('alipay', re.compile(r'^(2[5-9]|30)\d{14,22}$')),
    ('unionpay', re.compile(r'^62\d{17}$')),
    # JD's own codes: 18 digits starting 18 (one source only, a payment
    # library's routing comment; JD's wallet also shows UnionPay codes,
    # 62..., which stay on the UnionPay route)
    ('jd', re.compile(r'^18\d{16}$')),
    ]
# the wallet clients an in-app payment (kind app) is made from: WeChat's
# official account pages (JSAPI) and Alipay's life account pages, a mini
# program, a mobile app with the wallet's SDK, a web page in the phone's
# browser that hands over to the wallet (H5)
APP_CLIENTS = [
    ('jsapi', "Official Account Page (JSAPI)"),
    ('mini_program', "Mini Program"),
    ('app', "Mobile App"),
    ('h5', "Phone Browser (H5)"),
    ]
# the code channels each gateway's provider charges: an aggregator takes
# the wallets' codes through its own merchant account
GATEWAY_CODES = {
    'wechat': {'wechat'},
    'alipay': {'alipay'},
    'aggregator': {'unionpay', 'wechat', 'alipay'},
    'jdpay': {'jd'},
    }
# the channels whose gateways may charge through a platform account:
# WeChat Pay partner mode (服务商) and Alipay ISV mode
PLATFORM_CHANNELS = ['wechat', 'alipay']
# the fields only platform administrators change on a gateway charging
# through a platform account: they say for whom it charges
PLATFORM_GUARDED = {
    'channel', 'merchant', 'sub_merchant', 'sub_app', 'platform_account'}
# what a gateway on a platform account takes from it: the merchant
# account (WeChat; Alipay's seller stays the operator's), its app, keys
# and certificates, and the channel's address; the rest (sub-merchant,
# Alipay authorization and seller, notify_url, apps, deadlines,
# accounts) stays the gateway's own
PLATFORM_FIELDS = [
    'merchant', 'app', 'key_serial', 'platform_key', 'platform_key_id',
    'app_cert', 'platform_cert', 'root_cert', 'url']


def code_channel(code):
    "Return the channel of payment code (付款码) or None"
    code = (code or '').strip()
    for channel, pattern in CODE_ROUTES:
        if pattern.match(code):
            return channel
    return None


def mask_code(code):
    "A payment code as it may be kept and shown: its prefix only"
    code = (code or '').strip()
    return code[:4] + '*' * max(len(code) - 4, 0)


def to_fen(amount):
    "Decimal yuan to integer fen"
    return int((Decimal(amount) * 100).to_integral_value())


def from_fen(fen):
    return (Decimal(int(fen)) / 100).quantize(Decimal('0.01'))


def point_sdk_at(client, url):
    """Point an SDK client at url instead of the channel's host: the only
    place that touches the SDKs' private gateway attributes (pinned
    versions: wechatpayv3 2.0.x `_core._gate_way`, python-alipay-sdk 3.4.x
    `_gateway`)"""
    if not url:
        return client
    url = url.rstrip('/')
    core = getattr(client, '_core', None)
    if core is not None and hasattr(core, '_gate_way'):
        core._gate_way = url
    elif hasattr(client, '_gateway'):
        client._gateway = url
    else:
        raise TypeError(f"unknown SDK client {type(client).__name__}")
    return client


@dataclasses.dataclass(frozen=True)
class Result:
    """What a channel says about a payment

    state: succeeded, pending (user paying or QR not scanned yet),
    failed, cancelled (reversed or closed), missing (the channel does not
    know it)."""
    state: str
    reference: str | None = None
    amount: Decimal | None = None
    date: dt.datetime | None = None
    code_url: str | None = None
    error: str | None = None
    # in-app payments: what the client hands to the wallet (JSON-able)
    params: dict | None = None


@dataclasses.dataclass(frozen=True)
class Notification:
    "A verified, decrypted notification of a channel"
    id: str
    number: str
    result: Result


@dataclasses.dataclass(frozen=True)
class Credentials:
    """What a provider signs, verifies and calls with: the gateway's own,
    or its platform account's (Gateway.credentials)"""
    merchant: str | None
    app: str | None
    key_serial: str | None
    private_key: str | None
    api_key: str | None
    platform_key: str | None
    platform_key_id: str | None
    app_cert: str | None
    platform_cert: str | None
    root_cert: str | None
    url: str | None


class TransientError(Exception):
    "The channel could not be reached or asked to retry"


class PermanentError(Exception):
    "The channel refused the request for good"


class ForgedNotification(Exception):
    "A notification whose signature or content does not verify"


class BillFormatError(Exception):
    "A bill that is not in the channel's format"


class Provider:
    """The interface of a channel, built on a gateway account

    Money is Decimal in the currency unit; each provider converts to what
    its channel wants. Methods raise TransientError when it is worth
    trying again and PermanentError otherwise."""
    channel = None
    # whether the channel publishes a daily bill; without one the day is
    # reconciled by querying each payment (fuel.payment.reconciliation)
    bill = True
    # the in-app clients (APP_CLIENTS) the channel pays from, and those
    # that must name the payer (the customer's id in the client app)
    app_clients = frozenset()
    payer_clients = frozenset()
    # those that must name the IP address of the driver's phone
    ip_clients = frozenset()

    def __init__(self, gateway):
        self.gateway = gateway

    def pay_code(self, payment, code):
        "Charge the customer's payment code; return a Result"
        raise NotImplementedError

    def create_qr(self, payment):
        "Create a QR the customer scans; return a Result with code_url"
        raise NotImplementedError

    def supports_app(self, method, client):
        "Whether payments of method can be made in-app from client"
        return client in self.app_clients

    def create_app(self, payment):
        """Create an in-app payment from payment.client (APP_CLIENTS) of
        the app payment.client_app, for payment.payer where the client
        names one; return a pending Result whose params the client app
        hands to the wallet (wx.requestPayment, my.tradePay, the SDKs)"""
        raise NotImplementedError

    def query(self, payment):
        raise NotImplementedError

    def reverse(self, payment):
        "Cancel a code payment, giving the money back if it was taken"
        raise NotImplementedError

    def close(self, payment):
        "Close an unpaid QR payment"
        raise NotImplementedError

    def refund(self, refund):
        "Return a Result for the refund (reference: the channel's)"
        raise NotImplementedError

    def parse_notification(self, headers, body):
        "Return a Notification or raise ForgedNotification"
        raise NotImplementedError

    def fetch_bill(self, date):
        "Return the raw daily bill of date"
        raise NotImplementedError

    def parse_bill(self, data):
        """Return the rows of a raw daily bill: dicts of type (payment or
        refund), number (our order number), refund_number, reference (the
        channel's), amount, status (succeeded, cancelled or failed) and
        fee (what the channel keeps, negative when it gives it back)"""
        raise NotImplementedError

    def bill_name(self, date):
        "The file name of the bill of date"
        raise NotImplementedError

    def answer(self, outcome, body):
        """Return (HTTP status, text, content type) answering a
        notification whose outcome is accepted, duplicate or refused"""
        raise NotImplementedError


PROVIDERS = {}


def provider(channel):
    "Register a Provider class for channel"
    def register(cls):
        cls.channel = channel
        PROVIDERS[channel] = cls
        return cls
    return register


class Gateway(ModelSQL, ModelView):
    "Fuel Payment Gateway"
    __name__ = 'fuel.payment.gateway'

    name = fields.Char("Name", required=True)
    company = fields.Many2One(
        'company.company', "Operator", required=True, ondelete='CASCADE')
    active = fields.Boolean("Active")
    channel = fields.Selection(CHANNELS, "Channel", required=True)
    merchant = fields.Char(
        "Merchant ID",
        states={
            'required': Eval('channel') != 'wechat',
            },
        help="The merchant number the channel gave (mchid, partner id); "
        "Alipay ISV: the operator's PID (seller); empty for a WeChat "
        "gateway on a platform account (the platform's is used).")
    # a SaaS platform's own merchant account (WeChat Pay service
    # provider, Alipay ISV application) that the operators' gateways
    # charge through: its credentials are kept once, on it
    shared = fields.Boolean(
        "Shared Platform Account",
        states={
            'invisible': ~Eval('channel').in_(PLATFORM_CHANNELS),
            },
        help="The platform's own merchant account (WeChat Pay service "
        "provider, Alipay third-party application) that the operators' "
        "gateways name as their Platform Account; only platform "
        "administrators see it.")
    platform_account = fields.Many2One(
        'fuel.payment.gateway', "Platform Account", ondelete='RESTRICT',
        # the channel is checked by validate_fields, with its own message
        domain=[('shared', '=', True)],
        states={
            'invisible': ~Eval('channel').in_(PLATFORM_CHANNELS),
            },
        help="The platform's shared account whose merchant ID, app, keys "
        "and certificates this gateway charges with (WeChat Pay partner "
        "mode for the Sub-merchant ID, Alipay ISV mode with the "
        "operator's authorization); set by platform administrators.")
    platform_account_name = fields.Function(
        fields.Char(
            "Platform Account",
            states={
                'invisible': ~Eval('platform_account_name'),
                }),
        'get_platform_account_name')
    app = fields.Char(
        "App ID", help="The application the merchant is bound to (appid).")
    client_apps = fields.Char(
        "In-App App IDs",
        help="The other applications bound to the merchant account that "
        "drivers pay from in-app (mini program, mobile app, official "
        "account), separated by spaces; the App ID is always accepted.")
    key_serial = fields.Char(
        "Certificate Serial",
        help="The serial number of the merchant's API certificate.")
    product = fields.Char(
        "Product ID",
        help="The product the acquirer gave with the keys (Huifu "
        "product_id).")
    # partner mode (服务商): merchant and app are the platform's
    sub_merchant = fields.Char(
        "Sub-merchant ID",
        states={
            'invisible': Eval('channel') != 'wechat',
            },
        help="WeChat Pay partner mode (服务商): the operator's sub-merchant "
        "number (sub_mchid) under the platform's merchant ID; empty for a "
        "direct merchant.")
    sub_app = fields.Char(
        "Sub-merchant App ID",
        states={
            'invisible': (Eval('channel') != 'wechat') | ~Eval('sub_merchant'),
            },
        help="WeChat Pay partner mode: the operator's own app (sub_appid), "
        "if any.")
    # secrets: nobody reads them through the ORM (see gateway.xml)
    private_key = fields.Text(
        "Private Key", loading='lazy',
        help="The merchant's RSA private key (PEM).")
    api_key = fields.Char(
        "API Key", loading='lazy', strip=False,
        help="The key that encrypts the channel's messages: WeChat's "
        "APIv3 key, JD Pay's DES key (base64).")
    bill_key = fields.Char(
        "Bill Key", loading='lazy', strip=False,
        help="JD Pay: the key of the bill download (对账单密钥) the merchant "
        "configured with JD; without it JD's days are reconciled by "
        "querying each payment.")
    app_auth_token = fields.Char(
        "App Auth Token", loading='lazy',
        help="Alipay third-party application mode (ISV): the operator's "
        "authorization of the platform's application (app_auth_token).")
    auth_app = fields.Char(
        "Authorizer App ID", readonly=True,
        states={
            'invisible': Eval('channel') != 'alipay',
            },
        help="Alipay ISV mode: the operator's application the "
        "authorization was given from (auth_app_id), as Alipay told when "
        "Set Keys checked the token; notifications of another are "
        "refused.")
    auth_expiry = fields.DateTime(
        "Authorization Expiry", readonly=True,
        states={
            'invisible': Eval('channel') != 'alipay',
            },
        help="Alipay ISV mode: when the operator's authorization ends, as "
        "Alipay told when Set Keys checked the token.")
    platform_key = fields.Text(
        "Platform Public Key",
        help="The channel's public key (PEM) that signs its answers.")
    platform_key_id = fields.Char(
        "Platform Public Key ID")
    # WeChat platform certificate mode (平台证书模式): public, not secret;
    # written by the provider (wechat.PlatformCertificates)
    platform_certs = fields.Text(
        "WeChat Platform Certificates", readonly=True,
        states={
            'invisible': Eval('channel') != 'wechat',
            },
        help="WeChat Pay without a Platform Public Key (platform "
        "certificate mode): the platform certificates downloaded from "
        "WeChat Pay (serial, validity, PEM), checked with the APIv3 key "
        "and refreshed automatically.")
    # Alipay public key certificate mode (公钥证书模式): public, not secret
    app_cert = fields.Text(
        "App Public Key Certificate",
        states={
            'invisible': Eval('channel') != 'alipay',
            },
        help="Alipay certificate mode: the application's public key "
        "certificate (appCertPublicKey_<App ID>.crt, PEM).")
    platform_cert = fields.Text(
        "Alipay Public Key Certificate",
        states={
            'invisible': Eval('channel') != 'alipay',
            },
        help="Alipay certificate mode: Alipay's public key certificate "
        "(alipayCertPublicKey_RSA2.crt, PEM); when set, answers and "
        "notifications are verified with its key instead of the Platform "
        "Public Key. Paste the new one when Alipay renews it.")
    root_cert = fields.Text(
        "Alipay Root Certificate",
        states={
            'invisible': Eval('channel') != 'alipay',
            },
        help="Alipay certificate mode: Alipay's root certificate "
        "(alipayRootCert.crt, PEM, all its certificates).")
    has_keys = fields.Function(
        fields.Boolean("Keys Set"), 'get_has_keys')
    has_bill_key = fields.Function(
        fields.Boolean(
            "Bill Key Set",
            states={
                'invisible': Eval('channel') != 'jdpay',
                },
            help="JD Pay: whether its daily bill is downloaded (Bill Key "
            "set with Set Keys) or each payment of the day is queried."),
        'get_has_keys')
    has_app_auth_token = fields.Function(
        fields.Boolean(
            "ISV Authorization Set",
            states={
                'invisible': Eval('channel') != 'alipay',
                }),
        'get_has_keys')
    notify_url = fields.Char(
        "Notification URL",
        help="The public address of this gateway's notification route: "
        "https://<host>/<database>/fuel_payment/notify/<gateway id>.")
    url = fields.Char(
        "Gateway URL",
        help="Leave empty for the channel's production host.")
    code_timeout = fields.Integer(
        "Code Payment Deadline", required=True,
        help="Seconds a customer has to confirm a code payment on the "
        "phone before it is reversed.")
    qr_timeout = fields.Integer(
        "QR Deadline", required=True,
        help="Seconds a QR stays payable before it is closed.")
    poll_interval = fields.Integer(
        "Poll Interval", required=True,
        help="Seconds between two queries of a payment being paid.")
    fee_account = fields.Many2One(
        'account.account', "Fee Account", ondelete='RESTRICT',
        domain=[('company', '=', Eval('company', -1))],
        help="The expense account of the channel's fees.")
    journal = fields.Many2One(
        'account.journal', "Journal", ondelete='RESTRICT',
        help="The journal of the fee moves.")
    methods = fields.One2Many(
        'sale.point.payment.method', 'gateway', "Payment Methods",
        domain=[('company', '=', Eval('company', -1))])

    @classmethod
    def __setup__(cls):
        super().__setup__()
        cls._buttons.update({
                'set_keys': {},
                })

    @classmethod
    def default_active(cls):
        return True

    @classmethod
    def default_company(cls):
        return Transaction().context.get('company')

    @classmethod
    def default_code_timeout(cls):
        # WeChat and Alipay advise to give up after 30 to 60 s
        return 60

    @classmethod
    def default_qr_timeout(cls):
        return 300

    @classmethod
    def default_poll_interval(cls):
        # both channels advise a query about every 5 s
        return 5

    @classmethod
    def get_has_keys(cls, gateways, name):
        # read by SQL: nobody may read the keys through the ORM; the keys
        # of a gateway on a platform account are the platform account's,
        # its authorization its own
        table = cls.__table__()
        cursor = Transaction().connection.cursor()
        if name == 'has_keys':
            holders = {g.id: g.account.id for g in gateways}
        else:
            holders = {g.id: g.id for g in gateways}
        column = {
            'has_keys': table.private_key,
            'has_app_auth_token': table.app_auth_token,
            'has_bill_key': table.bill_key,
            }[name]
        cursor.execute(*table.select(
                table.id,
                where=fields.SQL_OPERATORS['in'](
                    table.id, list(set(holders.values())))
                & (column != None)))  # noqa: E711
        with_keys = {i for i, in cursor}
        return {g: h in with_keys for g, h in holders.items()}

    @classmethod
    def get_platform_account_name(cls, gateways, name):
        # the name only: operator users may not read the platform's
        # record (gateway.xml), its name is all they are shown of it
        return {
            g.id: g.platform_account.name if g.platform_account else None
            for g in gateways}

    @property
    def account(self):
        """The gateway whose merchant account, app and keys the channel's
        calls use: the platform account, else the gateway itself"""
        return self.platform_account or self

    def _read_secrets(self, *names, gateway=None):
        """Return the values of the secret columns names of gateway (this
        one by default), read by SQL: the ORM never reads them"""
        table = self.__table__()
        cursor = Transaction().connection.cursor()
        cursor.execute(*table.select(
                *(getattr(table, n) for n in names),
                where=table.id == (gateway or self).id))
        return cursor.fetchone()

    def secrets(self):
        """Return the private key and API key, read by SQL: the platform
        account's for a gateway on one"""
        return self._read_secrets(
            'private_key', 'api_key', gateway=self.account)

    def credentials(self):
        """Return the Credentials the provider uses: those of the platform
        account (PLATFORM_FIELDS and its keys) for a gateway on one, but
        Alipay's merchant, which stays the operator's PID (the seller);
        the gateway's own otherwise"""
        account = self.account
        values = {name: getattr(account, name) for name in PLATFORM_FIELDS}
        if self.channel != 'wechat':
            values['merchant'] = self.merchant
        values['private_key'], values['api_key'] = self.secrets()
        return Credentials(**values)

    def bill_secret(self):
        "Return JD Pay's bill key or None, read by SQL"
        key, = self._read_secrets('bill_key')
        return key

    def auth_token(self):
        "Return Alipay's app_auth_token (ISV mode) or None, read by SQL"
        token, = self._read_secrets('app_auth_token')
        return token

    @property
    def partner(self):
        """Whether the gateway charges for the operator as the platform's
        sub-merchant: WeChat Pay partner mode (服务商) with sub_merchant;
        Alipay's ISV mode has a secret token instead (auth_token)"""
        return self.channel == 'wechat' and bool(self.sub_merchant)

    @classmethod
    def validate_fields(cls, gateways, field_names):
        super().validate_fields(gateways, field_names)
        if field_names & {
                'channel', 'merchant', 'shared', 'platform_account',
                'sub_merchant'}:
            cls.check_platform_account(gateways)
        if field_names & {'channel', 'sub_merchant', 'sub_app'}:
            for gateway in gateways:
                if ((gateway.sub_merchant and gateway.channel != 'wechat')
                        or (gateway.sub_app and not gateway.sub_merchant)):
                    raise GatewayError(gettext(
                            'fuel_payment.msg_gateway_sub_merchant',
                            gateway=gateway.rec_name))
        if field_names & {'channel', 'app_cert', 'platform_cert', 'root_cert'}:
            # imported here: the providers import this module
            from .alipay import check_certificates
            for gateway in gateways:
                check_certificates(gateway)

    @classmethod
    def check_platform_account(cls, gateways):
        "Check the platform accounts of gateways and their merchant ID"
        for gateway in gateways:
            platform = gateway.platform_account
            if not gateway.merchant and not (
                    platform and gateway.channel == 'wechat'):
                raise GatewayError(gettext(
                        'fuel_payment.msg_gateway_merchant',
                        gateway=gateway.rec_name))
            if gateway.shared and (
                    gateway.channel not in PLATFORM_CHANNELS):
                raise GatewayError(gettext(
                        'fuel_payment.msg_gateway_platform_channel',
                        gateway=gateway.rec_name,
                        platform=gateway.rec_name))
            # a shared account holds its own credentials: the accounts
            # never chain (nor name themselves)
            if gateway.shared and platform:
                raise GatewayError(gettext(
                        'fuel_payment.msg_gateway_platform_nested',
                        gateway=gateway.rec_name,
                        platform=platform.rec_name))
            if not platform:
                continue
            # not shared: unmarked after the gateway named it
            if (platform.channel != gateway.channel
                    or not platform.shared):
                raise GatewayError(gettext(
                        'fuel_payment.msg_gateway_platform_channel',
                        gateway=gateway.rec_name,
                        platform=platform.rec_name))
            if gateway.channel == 'wechat' and not gateway.sub_merchant:
                raise GatewayError(gettext(
                        'fuel_payment.msg_gateway_platform_sub_merchant',
                        gateway=gateway.rec_name,
                        platform=platform.rec_name))
        # the gateways charging through a platform account made shared no
        # more or moved to another channel
        shared = [g for g in gateways if g.id is not None and g.id >= 0]
        if shared:
            users = cls.search([('platform_account', 'in', shared)])
            users = [g for g in users if g not in gateways]
            if users:
                cls.check_platform_account(users)

    @classmethod
    def check_modification(cls, mode, gateways, values=None, external=False):
        super().check_modification(
            mode, gateways, values=values, external=external)
        # the sub-merchant (WeChat) and the seller (Alipay) say for whom
        # the platform's merchant account charges and refunds: only the
        # platform's administrators change them, as the link itself
        # (field access in gateway.xml)
        if (mode == 'write' and external
                and values.keys() & PLATFORM_GUARDED
                and not cls._platform_administrator()):
            for gateway in gateways:
                if gateway.platform_account:
                    raise AccessError(gettext(
                            'fuel_payment.msg_gateway_platform_write',
                            gateway=gateway.rec_name,
                            platform=gateway.platform_account.rec_name))

    @staticmethod
    def _platform_administrator():
        pool = Pool()
        ModelData = pool.get('ir.model.data')
        User = pool.get('res.user')
        return ModelData.get_id('fuel_station', 'group_fuel_admin') in (
            User.get_groups())

    def get_provider(self):
        return PROVIDERS[self.channel](self)

    def check_client_app(self, app):
        """Return the app id an in-app payment is made from (the gateway's
        App ID when app is empty); raise if the merchant has not bound it"""
        app_id = self.account.app
        allowed = [app_id] if app_id else []
        allowed += (self.client_apps or '').split()
        if self.sub_app:
            allowed.append(self.sub_app)
        app = (app or '').strip() or app_id
        if not app or app not in allowed:
            raise GatewayError(gettext(
                    'fuel_payment.msg_gateway_client_app',
                    app=app or '', gateway=self.rec_name))
        return app

    @classmethod
    def copy(cls, gateways, default=None):
        default = default.copy() if default is not None else {}
        for name in [
                'private_key', 'api_key', 'bill_key', 'app_auth_token',
                'auth_app', 'auth_expiry']:
            default.setdefault(name, None)
        return super().copy(gateways, default=default)

    @classmethod
    @ModelView.button_action('fuel_payment.wizard_gateway_set_keys')
    def set_keys(cls, gateways):
        pass


class GatewaySetKeysStart(ModelView):
    "Set Gateway Keys"
    __name__ = 'fuel.payment.gateway.set_keys.start'
    private_key = fields.Text(
        "Private Key",
        states={
            'required': ~Eval('platform'),
            'invisible': Bool(Eval('platform')),
            },
        help="Paste the merchant's RSA private key (PEM).")
    api_key = fields.Char(
        "API Key", strip=False,
        states={
            'invisible': Bool(Eval('platform')),
            },
        help="WeChat Pay: the APIv3 key. JD Pay: the DES key (base64), "
        "required.")
    bill_key = fields.Char(
        "Bill Key", strip=False,
        states={
            'invisible': Eval('channel') != 'jdpay',
            },
        help="JD Pay: the key of the bill download (对账单密钥) the merchant "
        "configured with JD; empty to reconcile each day by querying its "
        "payments.")
    channel = fields.Selection(CHANNELS, "Channel", readonly=True)
    platform = fields.Boolean(
        "On a Platform Account", readonly=True,
        help="The gateway charges with its platform account's keys: only "
        "the operator's Alipay authorization is set here.")
    app_auth_token = fields.Char(
        "App Auth Token",
        states={
            'invisible': Eval('channel') != 'alipay',
            },
        help="Alipay ISV mode: the app_auth_token the operator's "
        "authorization of the platform's application gave; empty for a "
        "direct merchant.")
    app_auth_code = fields.Char(
        "Authorization Code",
        states={
            'invisible': Eval('channel') != 'alipay',
            },
        help="Alipay ISV mode: instead of the token, the authorization "
        "code (app_auth_code) Alipay gave when the operator approved the "
        "platform's application; exchanged once for the token and its "
        "refresh token.")


class GatewaySetKeys(Wizard):
    "Set Gateway Keys"
    __name__ = 'fuel.payment.gateway.set_keys'
    start = StateView(
        'fuel.payment.gateway.set_keys.start',
        'fuel_payment.gateway_set_keys_start_view_form', [
            Button("Cancel", 'end', 'tryton-cancel'),
            Button("Set", 'set_', 'tryton-ok', default=True),
            ])
    set_ = StateTransition()

    def default_start(self, fields):
        values = {'channel': self.record.channel}
        platform = self.record.platform_account
        if platform:
            if self.record.channel != 'alipay':
                # nothing of the operator's own to set
                raise GatewayError(gettext(
                        'fuel_payment.msg_gateway_platform_keys',
                        gateway=self.record.rec_name,
                        platform=platform.rec_name))
            values['platform'] = True
        return values

    def transition_set_(self):
        gateway = self.record
        token = code = None
        if gateway.channel == 'alipay':
            token = (self.start.app_auth_token or '').strip() or None
            code = (self.start.app_auth_code or '').strip() or None
        values = {
            'private_key': self.start.private_key,
            'api_key': self.start.api_key,
            'bill_key': (
                (self.start.bill_key or '').strip() or None
                if gateway.channel == 'jdpay' else None),
            }
        # the wizard's session must not keep the keys
        self.start.private_key = self.start.api_key = None
        self.start.bill_key = None
        self.start.app_auth_token = self.start.app_auth_code = None
        if token and code:
            raise GatewayError(gettext(
                    'fuel_payment.msg_gateway_alipay_auth_code_token',
                    gateway=gateway.rec_name))
        if gateway.channel == 'jdpay':
            # imported here: the providers import this module
            from .jdpay import des_key
            try:
                des_key(values['api_key'])
            except ValueError:
                raise GatewayError(gettext(
                        'fuel_payment.msg_gateway_jdpay_des_key',
                        gateway=gateway.rec_name)) from None
        if not gateway.platform_account:
            # first: the token is checked with these keys; an error below
            # rolls the whole wizard back
            self.model.write([gateway], values)
        if code:
            # alipay_auth.py: the code exchanged for token and refresh token
            self.model.write([gateway], gateway.exchange_alipay_code(code))
        elif gateway.channel == 'alipay':
            self.model.write([gateway], self._authorization(gateway, token))
        return 'end'

    @staticmethod
    def _authorization(gateway, token):
        """Return the values storing the operator's Alipay authorization
        (ISV mode) once Alipay said it is valid and the operator's (its
        user_id the gateway's Merchant ID), with its application and
        expiry; raise otherwise"""
        # a token pasted by hand comes without its refresh token
        # (alipay_auth.py): the lifecycle's values start again
        values = {
            'app_auth_token': token, 'auth_app': None, 'auth_expiry': None,
            'app_refresh_token': None, 'auth_refresh_expiry': None,
            'auth_status': None, 'auth_checked': None,
            }
        if token:
            try:
                info = gateway.get_provider().query_auth_token(token)
            except TransientError:
                raise GatewayError(gettext(
                        'fuel_payment.msg_gateway_alipay_token_unreachable',
                        gateway=gateway.rec_name)) from None
            except PermanentError as exception:
                raise GatewayError(gettext(
                        'fuel_payment.msg_gateway_alipay_token_refused',
                        gateway=gateway.rec_name,
                        error=str(exception))) from None
            if info['user_id'] != gateway.merchant:
                raise GatewayError(gettext(
                        'fuel_payment.msg_gateway_alipay_token_seller',
                        gateway=gateway.rec_name,
                        user=info['user_id'] or '',
                        merchant=gateway.merchant))
            values['auth_app'] = info['auth_app_id']
            values['auth_expiry'] = info['expiry']
            values['auth_status'] = 'valid'
            values['auth_checked'] = dt.datetime.now(dt.UTC).replace(
                tzinfo=None)
        return values


class PaymentMethod(metaclass=PoolMeta):
    __name__ = 'sale.point.payment.method'
    gateway = fields.Many2One(
        'fuel.payment.gateway', "Gateway", ondelete='RESTRICT',
        domain=[('company', '=', Eval('company', -1))],
        states={
            'invisible': ~Eval('fuel_kind').in_(
                ['wechat', 'alipay', 'unionpay', 'jd', 'face']),
            },
        help="The merchant account that takes this method's payments; "
        "without one, the attendant types the reference of an external "
        "terminal.")

    @classmethod
    def for_channel(cls, company, channel, face=False):
        """Return the active method of company whose gateway takes
        payments of channel (the face method first for a face payment)"""
        kinds = (['face'] if face else []) + [channel]
        for kind in kinds:
            methods = cls.search([
                    ('company', '=', company.id),
                    ('fuel_kind', '=', kind),
                    ('gateway', '!=', None),
                    ('gateway.active', '=', True),
                    ] + ([('gateway.channel', 'in', [
                                g for g, codes in GATEWAY_CODES.items()
                                if channel in codes])]
                        if kind == 'face' else []),
                limit=1)
            if methods:
                return methods[0]
        return None
