# This file is part of fuelpay.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""The lifecycle of an operator's Alipay authorization of the platform's
third-party application (ISV, 第三方应用授权): the authorization link, the
exchange of its code, the daily check and refresh of the token

Facts (sources in doc/modules/fuel_payment.md, Alipay ISV authorization):

- the operator's account holder opens
  https://openauth.alipay.com/oauth2/appToAppAuth.htm?app_id=<the
  platform's app>&redirect_uri=<its 授权回调地址, exactly as configured
  on the application>&state=<ours>; Alipay then sends the browser to
  redirect_uri?app_id=..&app_auth_code=.. (state carried along, as the
  integrations that put a merchant id in it rely on);
- alipay.open.auth.token.app exchanges the code (grant_type
  authorization_code: once, within 24 hours) or the refresh token
  (grant_type refresh_token: the answer's app_refresh_token) for
  app_auth_token, app_refresh_token, user_id, auth_app_id, expires_in and
  re_expires_in, at the answer's top level or in its `tokens` list;
- after a refresh the old app_auth_token still works for 10 minutes;
  expires_in is marked obsolete (tokens are now long lived) but still
  given;
- Alipay also posts to the application's gateway (应用网关, one address
  set on the application in Alipay's console) the authorization notice
  (notify_type open_app_auth_notify, status execute_auth, the token,
  refresh token, user_id, auth_app_id, expires_in, re_expires_in and
  auth_time in biz_content's detail) and, to a subscriber of its message
  service, the cancellation (msg_method
  alipay.open.auth.appauth.cancelled, biz_content's auth_app_id), both
  signed over the sorted pairs without sign and sign_type and answered
  "success" (routes.alipay_app); a repeated authorization replaces the
  token."""
import datetime as dt
import hashlib
import hmac
import html
import json
import logging
import secrets
import urllib.parse

from trytond.i18n import gettext
from trytond.model import ModelView, fields
from trytond.pool import Pool, PoolMeta
from trytond.protocols.wrappers import Response
from trytond.pyson import Eval
from trytond.transaction import Transaction, without_check_access
from trytond.wizard import Button, StateView, Wizard

from .exceptions import GatewayError
from .gateway import ForgedNotification, PermanentError, TransientError

logger = logging.getLogger(__name__)

# Alipay's authorization page of a third-party application (production;
# the sandbox's page is another host, not offered here)
AUTHORIZE_URL = 'https://openauth.alipay.com/oauth2/appToAppAuth.htm'
# the route Alipay sends the account holder back to (routes.py), beside
# the notification route on the same public address
NOTIFY_PATH = '/fuel_payment/notify/'
REDIRECT_PATH = '/fuel_payment/alipay/authorized'
# refresh a token whose end is this near: a month leaves the daily cron
# many tries before a token Alipay still dates (expires_in, a year) ends
REFRESH_BEFORE = dt.timedelta(days=30)
# how long an authorization link stays valid: it is sent to the
# operator's account holder, who may open it days later; a new link
# replaces it
REQUEST_VALIDITY = dt.timedelta(days=7)
AUTH_STATUSES = [
    (None, ""),
    ('valid', "Valid"),
    ('expiring', "Expiring"),
    ('expired', "Expired"),
    ('withdrawn', "Withdrawn"),
    ]
# the authorization states its administrators are told about, once
NOTIFIED_STATUSES = {'expiring', 'expired', 'withdrawn'}
# the values that reset an authorization: emptied, replaced or copied
AUTH_FIELDS = [
    'app_refresh_token', 'auth_refresh_expiry', 'auth_status',
    'auth_checked', 'auth_request', 'auth_request_expiry']


def utcnow():
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


def digest(nonce):
    "What is stored of an authorization link's nonce"
    return hashlib.sha256(nonce.encode()).hexdigest()


def redirect_uri(notify_url):
    """The address of the authorization route on the server whose
    notification route is notify_url, or None"""
    base, found, _ = (notify_url or '').partition(NOTIFY_PATH)
    if not found or not base:
        return None
    return base + REDIRECT_PATH


def page(text, status=200):
    "A small HTML page of text for the account holder's browser"
    body = (
        '<!DOCTYPE html><html><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width">'
        f'<title>Alipay</title></head><body><p>{html.escape(text)}</p>'
        '</body></html>')
    return Response(body, status=status, content_type='text/html')


class Gateway(metaclass=PoolMeta):
    __name__ = 'fuel.payment.gateway'

    # secret like the token: nobody reads it through the ORM
    # (alipay_auth.xml)
    app_refresh_token = fields.Char(
        "App Refresh Token", loading='lazy', strip=False,
        help="Alipay ISV mode: the refresh token of the operator's "
        "authorization (app_refresh_token), kept to renew the token.")
    auth_refresh_expiry = fields.DateTime(
        "Refresh Token Expiry", readonly=True,
        states={
            'invisible': Eval('channel') != 'alipay',
            },
        help="Alipay ISV mode: when the refresh token ends, as Alipay "
        "told (re_expires_in).")
    auth_status = fields.Selection(
        AUTH_STATUSES, "Authorization", readonly=True,
        states={
            'invisible': Eval('channel') != 'alipay',
            },
        help="Alipay ISV mode: the operator's authorization as Alipay "
        "last told: valid, expiring (near its end and not renewed), "
        "expired, or withdrawn by the operator; checked daily.")
    auth_status_string = auth_status.translated('auth_status')
    auth_checked = fields.DateTime(
        "Authorization Checked", readonly=True,
        states={
            'invisible': Eval('channel') != 'alipay',
            },
        help="Alipay ISV mode: when Alipay was last asked about the "
        "authorization.")
    # the digest of the nonce of the authorization link last shown
    auth_request = fields.Char("Authorization Request", loading='lazy')
    auth_request_expiry = fields.DateTime(
        "Authorization Link Expiry", readonly=True,
        states={
            'invisible': Eval('channel') != 'alipay',
            },
        help="Alipay ISV mode: until when the last authorization link "
        "shown by Authorize on Alipay can be used.")

    @classmethod
    def __setup__(cls):
        super().__setup__()
        cls._buttons.update({
                'alipay_authorize': {
                    'invisible': (
                        (Eval('channel') != 'alipay') | Eval('shared', False)),
                    'depends': ['channel', 'shared'],
                    },
                })

    @classmethod
    def copy(cls, gateways, default=None):
        default = default.copy() if default is not None else {}
        for name in AUTH_FIELDS:
            default.setdefault(name, None)
        return super().copy(gateways, default=default)

    @classmethod
    @ModelView.button_action('fuel_payment.wizard_gateway_alipay_authorize')
    def alipay_authorize(cls, gateways):
        pass

    def auth_refresh_token(self):
        "Return the refresh token of the Alipay authorization, read by SQL"
        token, = self._read_secrets('app_refresh_token')
        return token

    def alipay_authorization(self, info):
        """Return the values storing the authorization Alipay gave
        (AlipayProvider.exchange_auth_token) once it is the operator's:
        its user_id the gateway's Merchant ID; raise otherwise"""
        if info['user_id'] != self.merchant:
            raise GatewayError(gettext(
                    'fuel_payment.msg_gateway_alipay_token_seller',
                    gateway=self.rec_name, user=info['user_id'] or '',
                    merchant=self.merchant))
        return {
            'app_auth_token': info['app_auth_token'],
            'app_refresh_token': info['app_refresh_token'],
            'auth_app': info['auth_app_id'],
            'auth_expiry': info['expiry'],
            'auth_refresh_expiry': info['refresh_expiry'],
            'auth_status': 'valid',
            'auth_checked': utcnow(),
            'auth_request': None,
            'auth_request_expiry': None,
            }

    def exchange_alipay_code(self, code):
        """Return the values storing the authorization whose code
        (app_auth_code) the operator's approval gave; raise GatewayError
        when Alipay cannot be reached or refuses it"""
        # imported here: alipay.py imports gateway.py as this file does
        from .alipay import AuthCodeRefused
        try:
            info = self.get_provider().exchange_auth_token(
                'authorization_code', code)
        except TransientError:
            raise GatewayError(gettext(
                    'fuel_payment.msg_gateway_alipay_token_unreachable',
                    gateway=self.rec_name)) from None
        except PermanentError as exception:
            error = str(exception)
            if isinstance(exception, AuthCodeRefused):
                error = gettext(
                    'fuel_payment.msg_gateway_alipay_auth_code', code=error)
            raise GatewayError(gettext(
                    'fuel_payment.msg_gateway_alipay_token_refused',
                    gateway=self.rec_name, error=error)) from None
        return self.alipay_authorization(info)

    def alipay_authorize_url(self):
        """Return a new authorization link of the gateway (the previous one
        is no more valid) and its expiry: the platform application's
        authorization page with the route as redirect_uri and a state
        naming the gateway with a single-use nonce, kept as a digest"""
        redirect = redirect_uri(self.notify_url)
        if not redirect:
            raise GatewayError(gettext(
                    'fuel_payment.msg_gateway_alipay_auth_redirect',
                    gateway=self.rec_name))
        nonce = secrets.token_urlsafe(24)
        expiry = utcnow() + REQUEST_VALIDITY
        with without_check_access():
            self.__class__.write([self], {
                    'auth_request': digest(nonce),
                    'auth_request_expiry': expiry,
                    })
        query = urllib.parse.urlencode({
                'app_id': self.account.app,
                'redirect_uri': redirect,
                'state': f'{self.id}.{nonce}',
                })
        return f'{AUTHORIZE_URL}?{query}', expiry

    @classmethod
    def from_alipay_state(cls, state, app_id):
        """Return the gateway an authorization link's state names if its
        nonce is the one last shown, not used nor expired, and app_id is
        its application; None otherwise"""
        gateway_id, _, nonce = (state or '').partition('.')
        if not gateway_id.isdigit() or not nonce:
            return None
        gateways = cls.search([
                ('id', '=', int(gateway_id)),
                ('channel', '=', 'alipay'),
                ], limit=1)
        if not gateways:
            return None
        gateway, = gateways
        stored, = gateway._read_secrets('auth_request')
        if (not stored
                or not hmac.compare_digest(stored, digest(nonce))
                or not gateway.auth_request_expiry
                or gateway.auth_request_expiry < utcnow()
                or app_id != gateway.account.app):
            return None
        return gateway

    @classmethod
    def check_alipay_authorizations(cls):
        """Cron: ask Alipay about the authorization of every Alipay
        gateway holding one, refresh it near its end; one gateway locked
        and committed at a time (a refreshed token must not be lost with
        another gateway's failure)"""
        table = cls.__table__()
        cursor = Transaction().connection.cursor()
        cursor.execute(*table.select(
                table.id,
                where=(table.channel == 'alipay')
                & (table.app_auth_token != None)  # noqa: E711
                & (table.active == True),  # noqa: E712
                order_by=table.id))
        ids = [i for i, in cursor]
        for gateway_id in ids:
            gateway = cls(gateway_id)
            cls.lock([gateway])
            cls.check_alipay_authorization([gateway])
            Transaction().commit()

    @classmethod
    def check_alipay_authorization(cls, gateways):
        """Ask Alipay about each gateway's authorization: fill its
        application and end, refresh it with the refresh token when it
        ends within REFRESH_BEFORE, flag it expiring, expired or
        withdrawn; leave it as it was when Alipay cannot be reached"""
        for gateway in gateways:
            values = gateway._check_alipay_authorization()
            if values:
                cls.write_authorization(gateway, values)

    @classmethod
    def write_authorization(cls, gateway, values):
        """Write the values of gateway's authorization; tell its
        administrators when they turn it expiring, expired or withdrawn"""
        before = gateway.auth_status
        cls.write([gateway], values)
        status = values.get('auth_status')
        if status in NOTIFIED_STATUSES and status != before:
            gateway.notify_authorization()

    def notify_authorization(self):
        """Tell the platform administrators and the operator's
        administrators, each in their language, that the gateway's
        authorization needs them (a notification in their client)"""
        pool = Pool()
        ModelData = pool.get('ir.model.data')
        Notification = pool.get('res.notification')
        User = pool.get('res.user')
        platform = ModelData.get_id('fuel_station', 'group_fuel_admin')
        operator = ModelData.get_id(
            'fuel_station', 'group_fuel_operator_admin')
        users = User.search(['OR',
                ('groups', '=', platform),
                [
                    ('groups', '=', operator),
                    ('companies', '=', self.company.id),
                    ],
                ])
        notifications = []
        for user in users:
            language = user.language.code if user.language else None
            with Transaction().set_context(language=language):
                gateway = self.__class__(self.id)
                notifications.append({
                        'user': user.id,
                        'label': gettext(
                            'fuel_payment.msg_gateway_alipay_auth_notify',
                            gateway=gateway.rec_name,
                            status=gateway.auth_status_string),
                        'description': gettext(
                            'fuel_payment'
                            '.msg_gateway_alipay_auth_notify_description'),
                        'icon': 'tryton-warning',
                        'model': self.__name__,
                        'records': json.dumps([self.id]),
                        })
        Notification.create(notifications)

    @classmethod
    def receive_alipay_app_message(cls, application, body):
        """Verify and apply a message Alipay posted to the gateway of the
        application of gateway application (a platform account, or a
        gateway holding the platform's keys itself): the operator's
        authorization or its cancellation

        Return 'accepted' (applied, or ignored and logged), 'duplicate'
        (its notify_id already received) or 'refused' (forged, logged
        without its content); each is kept as a notification of
        application, its notify_id deduplicated like a payment's."""
        pool = Pool()
        Notification = pool.get('fuel.payment.gateway.notification')
        try:
            message = application.get_provider().parse_app_message(body)
        except ForgedNotification as exception:
            logger.warning(
                "gateway %s: Alipay application message refused: %s",
                application.id, exception)
            Notification.create([{
                        'company': application.company.id,
                        'gateway': application.id,
                        'received': utcnow(),
                        'state': 'refused',
                        'error': str(exception)[:200],
                        }])
            return 'refused'
        if Notification.search([
                    ('gateway', '=', application.id),
                    ('notification', '=', message.id),
                    ], limit=1):
            return 'duplicate'
        ignored = cls._apply_alipay_app_message(application, message)
        Notification.create([{
                    'company': application.company.id,
                    'gateway': application.id,
                    'notification': message.id,
                    'received': utcnow(),
                    'state': 'accepted',
                    'error': ignored,
                    }])
        return 'accepted'

    @classmethod
    def _apply_alipay_app_message(cls, application, message):
        """Store the authorization of a granted message on the gateways of
        application that asked for it, flag those of a cancelled one
        withdrawn; return None, or why nothing was done (logged)"""
        if message.kind not in {'granted', 'cancelled'}:
            logger.info(
                "gateway %s: Alipay message %s is not an authorization: "
                "ignored", application.id, message.id)
            return "ignored: not an authorization"
        if application.shared:
            domain = [('platform_account', '=', application.id)]
        else:
            domain = [('id', '=', application.id)]
        domain.append(('channel', '=', 'alipay'))
        if message.kind == 'granted':
            targets = cls._alipay_grant_targets(domain, message)
        else:
            targets = cls._alipay_cancel_targets(domain, message)
        if not targets:
            logger.warning(
                "gateway %s: Alipay %s authorization of merchant %s "
                "(application %s) matches no gateway asking for it: "
                "ignored", application.id, message.kind, message.user,
                message.auth_app)
            return "ignored: no gateway"
        done = False
        for gateway in targets:
            cls.lock([gateway])
            gateway = cls(gateway.id)
            # the gateway knows newer: stored, checked or told since
            if (gateway.auth_token() and gateway.auth_checked
                    and message.time and message.time < gateway.auth_checked):
                logger.info(
                    "gateway %s: Alipay message %s older than its "
                    "authorization: ignored", gateway.id, message.id)
                continue
            if message.kind == 'granted':
                values = gateway.alipay_authorization(message.authorization)
                # the link stays open for the browser's redirect, which
                # Alipay sends at the same time: its exchange closes it
                del values['auth_request'], values['auth_request_expiry']
                values['auth_checked'] = message.time or values[
                    'auth_checked']
                cls.write([gateway], values)
                logger.info(
                    "gateway %s: Alipay authorization stored from Alipay's "
                    "message %s", gateway.id, message.id)
            else:
                cls.write_authorization(gateway, {
                        'auth_status': 'withdrawn',
                        'auth_checked': message.time or utcnow(),
                        })
                logger.warning(
                    "Alipay authorization of gateway %s withdrawn "
                    "(Alipay's message %s)", gateway.id, message.id)
            done = True
        return None if done else "ignored: older than the authorization"

    @classmethod
    def _alipay_grant_targets(cls, domain, message):
        """The gateways of domain an authorization message is for: of its
        merchant, and either with an authorization link not expired (the
        operator was asked) or already authorized by the same application
        (a renewal); never another gateway: a message nobody asked for
        binds nothing"""
        authorization = message.authorization or {}
        if not message.user or not authorization.get('app_auth_token'):
            return []
        now = utcnow()
        gateways = cls.search(
            domain + [('merchant', '=', message.user)], order=[('id', 'ASC')])
        return [
            g for g in gateways
            if (g.auth_app and g.auth_app == message.auth_app)
            or (g.auth_request_expiry and g.auth_request_expiry > now)]

    @classmethod
    def _alipay_cancel_targets(cls, domain, message):
        """The gateways of domain authorized by the application a
        cancellation names (and of its merchant when it names one) that
        hold a token"""
        if not message.auth_app:
            return []
        domain = domain + [('auth_app', '=', message.auth_app)]
        if message.user:
            domain.append(('merchant', '=', message.user))
        return [
            g for g in cls.search(domain, order=[('id', 'ASC')])
            if g.auth_token()]

    def _check_alipay_authorization(self):
        token = self.auth_token()
        if self.channel != 'alipay' or not token:
            return None
        # imported here: alipay.py imports gateway.py as this file does
        from .alipay import AuthTokenRefused
        provider = self.get_provider()
        now = utcnow()
        try:
            info = provider.query_auth_token(token)
        except TransientError as exception:
            logger.warning(
                "Alipay could not be asked about the authorization of "
                "gateway %s: %s", self.id, exception)
            return None
        except AuthTokenRefused:
            logger.warning(
                "Alipay authorization of gateway %s withdrawn", self.id)
            return {'auth_status': 'withdrawn', 'auth_checked': now}
        except PermanentError as exception:
            logger.warning(
                "Alipay refused the query of the authorization of gateway "
                "%s: %s", self.id, exception)
            return {'auth_checked': now}
        values = {
            'auth_app': info['auth_app_id'] or self.auth_app,
            'auth_expiry': info['expiry'],
            'auth_status': 'valid',
            'auth_checked': now,
            }
        expiry = info['expiry']
        if info['user_id'] != self.merchant:
            # not the operator's any more: nothing is paid with it
            logger.warning(
                "Alipay authorization of gateway %s is of another merchant",
                self.id)
            return {'auth_status': 'withdrawn', 'auth_checked': now}
        if not expiry or expiry - now > REFRESH_BEFORE:
            return values
        refresh = self.auth_refresh_token()
        if refresh and not (
                self.auth_refresh_expiry and self.auth_refresh_expiry <= now):
            try:
                renewed = provider.exchange_auth_token(
                    'refresh_token', refresh)
            except (TransientError, PermanentError) as exception:
                logger.warning(
                    "Alipay authorization of gateway %s not refreshed: %s",
                    self.id, exception)
            else:
                try:
                    values.update(self.alipay_authorization(renewed))
                except GatewayError:
                    logger.warning(
                        "Alipay refreshed the authorization of gateway %s "
                        "for another merchant: not kept", self.id)
                else:
                    logger.info(
                        "Alipay authorization of gateway %s refreshed",
                        self.id)
                    return values
        values['auth_status'] = 'expired' if expiry <= now else 'expiring'
        logger.warning(
            "Alipay authorization of gateway %s is %s (ends %s)",
            self.id, values['auth_status'], expiry)
        return values


class GatewayAlipayAuthorizeStart(ModelView):
    "Authorize on Alipay"
    __name__ = 'fuel.payment.gateway.alipay_authorize.start'
    url = fields.Char(
        "Authorization Link", readonly=True,
        help="Send this link to the operator's Alipay account holder: "
        "opened and approved, Alipay sends the browser back to the "
        "server, which stores the authorization. It works once.")
    expiry = fields.DateTime(
        "Valid Until", readonly=True,
        help="A new link replaces this one.")
    redirect = fields.Char(
        "Authorization Callback", readonly=True,
        help="The address Alipay sends the account holder back to: it "
        "must be the authorization callback (授权回调地址) configured on "
        "the platform's Alipay application.")


class GatewayAlipayAuthorize(Wizard):
    "Authorize on Alipay"
    __name__ = 'fuel.payment.gateway.alipay_authorize'
    start = StateView(
        'fuel.payment.gateway.alipay_authorize.start',
        'fuel_payment.gateway_alipay_authorize_start_view_form', [
            Button("Close", 'end', 'tryton-close', default=True),
            ])

    def default_start(self, fields):
        gateway = self.record
        url, expiry = gateway.alipay_authorize_url()
        return {
            'url': url,
            'expiry': expiry,
            'redirect': redirect_uri(gateway.notify_url),
            }


class Cron(metaclass=PoolMeta):
    __name__ = 'ir.cron'

    @classmethod
    def __setup__(cls):
        super().__setup__()
        cls.method.selection.append(
            ('fuel.payment.gateway|check_alipay_authorizations',
                "Check and Refresh the Alipay ISV Authorizations"))


def receive_app_message(request, pool, gateway_id):
    """Apply a message Alipay posted to the gateway of the application
    gateway_id holds (routes.py): a gateway holding its own keys, usually
    the platform account; answer as Alipay expects ("success")"""
    Gateway = pool.get('fuel.payment.gateway')
    body = request.get_data(as_text=True)
    with without_check_access():
        gateways = Gateway.search([
                ('id', '=', gateway_id),
                ('channel', '=', 'alipay'),
                ('platform_account', '=', None),
                ], limit=1)
        if not gateways:
            return Response(status=404)
        application, = gateways
        outcome = Gateway.receive_alipay_app_message(application, body)
        status, text, content_type = application.get_provider().answer(
            outcome, body)
    return Response(text, status=status, content_type=content_type)


def receive_authorization(request, pool):
    """Store the authorization whose code Alipay's redirect carries for
    the gateway its state names; return the page answering the browser
    (routes.py)"""
    Gateway = pool.get('fuel.payment.gateway')
    Lang = pool.get('ir.lang')
    languages = [
        lang.code for lang in Lang.search([('translatable', '=', True)])]
    language = request.accept_languages.best_match(
        languages, default=Transaction().language)
    args = request.args
    with Transaction().set_context(language=language), \
            without_check_access():
        gateway = Gateway.from_alipay_state(
            args.get('state'), args.get('app_id'))
        code = (args.get('app_auth_code') or '').strip()
        if gateway is None or not code:
            return page(gettext(
                    'fuel_payment.msg_gateway_alipay_auth_state'), 400)
        try:
            values = gateway.exchange_alipay_code(code)
        except GatewayError as exception:
            return page(exception.message, 400)
        Gateway.write([gateway], values)
        logger.info("Alipay authorization of gateway %s stored", gateway.id)
        return page(gettext(
                'fuel_payment.msg_gateway_alipay_authorized',
                gateway=gateway.rec_name))
