# This file is part of fuelpay.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""The payer of an in-app payment from the login code the wallet gave the
client application: WeChat's code2Session (mini program, wx.login) and
web page authorization (official account page), with the AppSecret of the
application kept on the gateway; Alipay's alipay.system.oauth.token (mini
program and life account page, my.getAuthCode), signed with the gateway's
own application keys"""
import json
import logging
import urllib.error
import urllib.parse
import urllib.request

from trytond.i18n import gettext
from trytond.model import ModelSQL, ModelView, Unique, fields
from trytond.pool import PoolMeta
from trytond.transaction import Transaction, without_check_access
from trytond.wizard import Button, StateTransition, StateView, Wizard

from .exceptions import LoginError
from .gateway import PermanentError, TransientError

logger = logging.getLogger(__name__)

# api.weixin.qq.com (not WeChat Pay's api.mch.weixin.qq.com)
WECHAT_LOGIN_URL = 'https://api.weixin.qq.com'
# the clients whose users log in with a code, the path exchanging it and
# the name of the code in its query (WeChat's code2Session and web page
# authorization pages, 2026)
LOGIN_CLIENTS = [
    ('mini_program', "Mini Program"),
    ('jsapi', "Official Account Page (JSAPI)"),
    ]
WECHAT_LOGIN_PATHS = {
    'mini_program': ('/sns/jscode2session', 'js_code'),
    'jsapi': ('/sns/oauth2/access_token', 'code'),
    }
# seconds: the driver waits for the answer at the pump
TIMEOUT = 10
# WeChat's errcodes of the two calls: invalid (also expired) code, code
# already used, minute quota reached, system busy; an app ID or AppSecret
# it does not know (40013 invalid appid, 40125 invalid appsecret)
WECHAT_CODE_INVALID = 40029
WECHAT_CODE_USED = 40163
WECHAT_RATE = 45011
WECHAT_BUSY = -1
WECHAT_CREDENTIALS = {40013, 40125, 40001}
# web page authorization's flag of a page opened as a snapshot (快照页,
# a link shared in Moments opened without the user's consent): its
# openid is a placeholder that cannot pay
WECHAT_SNAPSHOT = 1
# Alipay's sub_code of a wrong, used or expired auth code
ALIPAY_CODE_INVALID = 'isv.code-invalid'


class Gateway(metaclass=PoolMeta):
    __name__ = 'fuel.payment.gateway'
    login_apps = fields.One2Many(
        'fuel.payment.gateway.app', 'gateway', "Login Apps",
        help="The WeChat applications (mini programs, official accounts) "
        "whose users' login codes this gateway turns into the payer's "
        "openid, with their AppSecret.")


class GatewayApp(ModelSQL, ModelView):
    "Fuel Payment Gateway Login App"
    __name__ = 'fuel.payment.gateway.app'
    _rec_name = 'app'

    gateway = fields.Many2One(
        'fuel.payment.gateway', "Gateway", required=True,
        ondelete='CASCADE')
    app = fields.Char(
        "App ID", required=True,
        help="The WeChat application (appid) drivers pay from; the gateway "
        "must accept it (its App ID, In-App App IDs or Sub-merchant App "
        "ID).")
    client = fields.Selection(
        LOGIN_CLIENTS, "Client", required=True,
        help="Mini Program: codes of wx.login (code2Session). Official "
        "Account Page: codes of WeChat's web page authorization.")
    url = fields.Char(
        "Login URL",
        help="Leave empty for WeChat's api.weixin.qq.com (or the gateway's "
        "URL on a WeChat Pay gateway that has one).")
    # secret: nobody reads it through the ORM (login.xml)
    secret = fields.Char("AppSecret", loading='lazy', strip=False)
    has_secret = fields.Function(
        fields.Boolean("AppSecret Set"), 'get_has_secret')

    @classmethod
    def __setup__(cls):
        super().__setup__()
        cls.__access__.add('gateway')
        t = cls.__table__()
        cls._sql_constraints = [
            ('gateway_app_unique', Unique(t, t.gateway, t.app, t.client),
                'fuel_payment.msg_login_app_unique'),
            ]
        cls._buttons.update({
                'set_secret': {},
                })

    @classmethod
    def get_has_secret(cls, apps, name):
        table = cls.__table__()
        cursor = Transaction().connection.cursor()
        cursor.execute(*table.select(
                table.id,
                where=fields.SQL_OPERATORS['in'](
                    table.id, [a.id for a in apps])
                & (table.secret != None)))  # noqa: E711
        with_secret = {i for i, in cursor}
        return {a.id: a.id in with_secret for a in apps}

    @classmethod
    def validate_fields(cls, apps, field_names):
        super().validate_fields(apps, field_names)
        if field_names & {'gateway', 'app'}:
            for app in apps:
                gateway = app.gateway
                if gateway.channel not in {'wechat', 'aggregator'}:
                    raise LoginError(gettext(
                            'fuel_payment.msg_login_app_channel',
                            gateway=gateway.rec_name))
                # the same message as a payment from an app not bound
                gateway.check_client_app(app.app)

    @classmethod
    def copy(cls, apps, default=None):
        default = default.copy() if default is not None else {}
        default.setdefault('secret', None)
        return super().copy(apps, default=default)

    @classmethod
    @ModelView.button_action('fuel_payment.wizard_gateway_app_set_secret')
    def set_secret(cls, apps):
        pass

    def _secret(self):
        "The AppSecret, read by SQL"
        table = self.__table__()
        cursor = Transaction().connection.cursor()
        cursor.execute(*table.select(
                table.secret, where=table.id == self.id))
        secret, = cursor.fetchone()
        return secret

    @classmethod
    def find(cls, gateway, app, client):
        """Return the login app of app for client with an AppSecret on
        gateway, else on its platform account (the platform's own
        applications in partner mode), or None"""
        for holder in filter(None, [gateway, gateway.platform_account]):
            with without_check_access():
                apps = cls.search([
                        ('gateway', '=', holder.id),
                        ('app', '=', app),
                        ('client', '=', client),
                        ], limit=1)
            if apps and apps[0].has_secret:
                return apps[0]
        return None

    # ---- resolving a code ----------------------------------------------

    @classmethod
    def identify(cls, method, client, app, code):
        """Return the payer (openid, Alipay user id or open id) of the login
        code the driver's client got in app, for a payment by method;
        raise a translated LoginError"""
        gateway = method.gateway
        if gateway.channel in {'wechat', 'alipay'}:
            wallet = gateway.channel
        else:
            wallet = method.fuel_kind
        if wallet == 'wechat' and gateway.channel in {
                'wechat', 'aggregator'}:
            return cls._wechat(gateway, client, app, code)
        if wallet == 'alipay' and gateway.channel == 'alipay':
            return cls._alipay(gateway, app, code)
        if (wallet == 'unionpay' and gateway.channel == 'aggregator'
                and client == 'jsapi'):
            return cls._unionpay(gateway, code)
        raise LoginError(gettext(
                'fuel_payment.msg_login_unsupported',
                gateway=gateway.rec_name, wallet=wallet))

    @classmethod
    def _wechat(cls, gateway, client, app, code):
        login = cls.find(gateway, app, client)
        secret = login._secret() if login else None
        if not secret:
            raise LoginError(gettext(
                    'fuel_payment.msg_login_no_secret',
                    gateway=gateway.rec_name, app=app, client=client))
        base = login.url
        if not base and gateway.channel == 'wechat':
            # a WeChat Pay gateway pointed elsewhere (a test simulator, a
            # proxy) logs in there too
            base = gateway.account.url
        path, name = WECHAT_LOGIN_PATHS[client]
        query = urllib.parse.urlencode({
                'appid': app,
                'secret': secret,
                name: code,
                'grant_type': 'authorization_code',
                })
        # urllib, not requests: urllib3 logs the whole URL (with the
        # AppSecret WeChat wants in the query) at debug level
        url = f'{(base or WECHAT_LOGIN_URL).rstrip("/")}{path}?{query}'
        try:
            with urllib.request.urlopen(url, timeout=TIMEOUT) as response:
                data = json.loads(response.read().decode())
        except (OSError, ValueError) as exception:
            # the session_key and access_token are never kept nor logged
            logger.info(
                "WeChat login of app %s unreachable: %s", app,
                type(exception).__name__)
            raise LoginError(gettext(
                    'fuel_payment.msg_login_busy',
                    channel="WeChat")) from None
        errcode = data.get('errcode') or 0
        if errcode == WECHAT_CODE_INVALID:
            raise LoginError(gettext('fuel_payment.msg_login_code_invalid'))
        elif errcode == WECHAT_CODE_USED:
            raise LoginError(gettext('fuel_payment.msg_login_code_used'))
        elif errcode == WECHAT_RATE:
            raise LoginError(gettext(
                    'fuel_payment.msg_login_rate', app=app))
        elif errcode == WECHAT_BUSY:
            raise LoginError(gettext(
                    'fuel_payment.msg_login_busy', channel="WeChat"))
        elif errcode in WECHAT_CREDENTIALS:
            raise LoginError(gettext(
                    'fuel_payment.msg_login_secret_refused',
                    gateway=gateway.rec_name, app=app,
                    error=f"{errcode} {data.get('errmsg', '')}".strip()))
        elif errcode or not data.get('openid'):
            raise LoginError(gettext(
                    'fuel_payment.msg_login_refused', channel="WeChat",
                    error=f"{errcode} {data.get('errmsg', '')}".strip()))
        if data.get('is_snapshotuser') == WECHAT_SNAPSHOT:
            raise LoginError(gettext('fuel_payment.msg_login_snapshot'))
        return data['openid']

    @classmethod
    def _alipay(cls, gateway, app, code):
        with without_check_access():
            provider = gateway.get_provider()
        # the code must be of the application signing the call: the
        # gateway's own, or (ISV) the operator's authorizing application
        expected = (
            gateway.auth_app if provider.auth_token
            else provider.credentials.app)
        if expected and app != expected:
            raise LoginError(gettext(
                    'fuel_payment.msg_login_alipay_app',
                    gateway=gateway.rec_name, app=app, expected=expected))
        try:
            return provider.user_of_code(code)
        except TransientError:
            raise LoginError(gettext(
                    'fuel_payment.msg_login_busy',
                    channel="Alipay")) from None
        except PermanentError as exception:
            if str(exception) == ALIPAY_CODE_INVALID:
                raise LoginError(gettext(
                        'fuel_payment.msg_login_code_invalid')) from None
            raise LoginError(gettext(
                    'fuel_payment.msg_login_refused', channel="Alipay",
                    error=str(exception))) from None


    @classmethod
    def _unionpay(cls, gateway, code):
        """The 银联用户标识 of the user authorization code UnionPay's
        userAuth page gave the page in the UnionPay app, asked of Huifu
        (no application secret: Huifu's merchant keys sign the query)"""
        with without_check_access():
            provider = gateway.get_provider()
        try:
            return provider.unionpay_user(code)
        except TransientError:
            raise LoginError(gettext(
                    'fuel_payment.msg_login_busy',
                    channel="UnionPay")) from None
        except PermanentError as exception:
            raise LoginError(gettext(
                    'fuel_payment.msg_login_refused', channel="UnionPay",
                    error=str(exception))) from None


class GatewayAppSetSecretStart(ModelView):
    "Set App Secret"
    __name__ = 'fuel.payment.gateway.app.set_secret.start'
    app = fields.Char("App ID", readonly=True)
    secret = fields.Char(
        "AppSecret", strip=False,
        help="Paste the AppSecret of the application (WeChat's "
        "mp.weixin.qq.com, Development > Basic Settings); leave empty to "
        "remove it.")


class GatewayAppSetSecret(Wizard):
    "Set App Secret"
    __name__ = 'fuel.payment.gateway.app.set_secret'
    start = StateView(
        'fuel.payment.gateway.app.set_secret.start',
        'fuel_payment.gateway_app_set_secret_start_view_form', [
            Button("Cancel", 'end', 'tryton-cancel'),
            Button("Set", 'set_', 'tryton-ok', default=True),
            ])
    set_ = StateTransition()

    def default_start(self, fields):
        return {'app': self.record.app}

    def transition_set_(self):
        secret = (self.start.secret or '').strip() or None
        # the wizard's session must not keep it
        self.start.secret = None
        self.model.write([self.record], {'secret': secret})
        return 'end'

