# This file is part of fuelpay.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""The payment page of the printed station and nozzle QR codes
(paypage.py), over HTTP: WeChat's and Alipay's in-wallet flows (the
wallets' authorization and client played by the simulators), the phone
browser's H5 flow, the fill-finding rule, the OAuth state, the token, the
status JSON and the printed codes"""
import functools
import html
import json
import re
import urllib.error
import urllib.parse
import urllib.request
from decimal import Decimal
from unittest import mock

from trytond.model.exceptions import SQLConstraintError
from trytond.modules.company.tests import create_company, set_company
from trytond.pool import Pool
from trytond.protocols.wrappers import Request
from trytond.tests.test_tryton import DB_NAME, RouteTestCase
from trytond.transaction import Transaction, TransactionError
from werkzeug.exceptions import Forbidden
from werkzeug.test import EnvironBuilder

from addons.fuel_station.tests.tools import FuelDatabaseMixin

from .. import paypage, paypage_qr
from . import sim_alipay, sim_wechat
from .sim_alipay import AlipaySimulator
from .sim_wechat import WeChatSimulator
from .test_gateway import create_gateway
from .test_login import login_app
from .test_module import message as _message
from .tools import SimulatorsMixin, create_payment_setup, fill, run_committed

WECHAT_UA = (
    'Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) '
    'AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148 '
    'MicroMessenger/8.0.50(0x1800323c) NetType/WIFI Language/zh_CN')
ALIPAY_UA = (
    'Mozilla/5.0 (Linux; Android 14) AppleWebKit/537.36 (KHTML, like '
    'Gecko) Chrome/120.0 Mobile Safari/537.36 AlipayClient/10.5.86.8000')
BROWSER_UA = (
    'Mozilla/5.0 (Linux; Android 14) AppleWebKit/537.36 (KHTML, like '
    'Gecko) Chrome/120.0 Mobile Safari/537.36')
OPENID = 'oPayPageUser000000000000001'
USER_ID = '2088000000000777'
PHONE = '203.0.113.9'
PUBLIC = 'https://fuel.example.com/db'
# one nozzle per test: the fills of one do not meet another's
NOZZLES = range(1, 14)
DATA = re.compile(
    r'<script type="application/json" id="pay-data">(.*?)</script>', re.S)


def message(msg_id, **values):
    "The English text of msg_id (read in a transaction of its own)"
    if Transaction().database is not None:
        return _message(msg_id, **values)
    with Transaction().start(DB_NAME, 0):
        return _message(msg_id, **values)


def money(amount):
    "amount as the English page shows it, in the operator's currency"
    with Transaction().start(DB_NAME, 0):
        pool = Pool()
        Currency = pool.get('currency.currency')
        Lang = pool.get('ir.lang')
        currency, = Currency.search([], limit=1)
        return Lang.get('en').currency(Decimal(amount), currency)


def run_rolled_back(test):
    """Run test in a transaction of its own, rolled back (its queue tasks
    never run); retried as run_committed when a table must be locked"""
    extras = {}
    while True:
        with Transaction().start(DB_NAME, 0, **extras) as transaction:
            try:
                test()
            except TransactionError as error:
                transaction.rollback()
                error.fix(extras)
                continue
            finally:
                transaction.tasks.clear()
            transaction.rollback()
        return


class PayPageTestCase(SimulatorsMixin, FuelDatabaseMixin, RouteTestCase):
    "Test the payment page of the station and nozzle QR codes"

    simulators = {
        'wechat': WeChatSimulator,
        'alipay': functools.partial(
            AlipaySimulator, app_id='2021000000000555',
            pid='2088000000000555'),
        }

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        run_committed(cls.prepare)

    @classmethod
    def prepare(cls):
        pool = Pool()
        Gateway = pool.get('fuel.payment.gateway')
        Lang = pool.get('ir.lang')
        Method = pool.get('sale.point.payment.method')
        Nozzle = pool.get('fuel.station.nozzle')
        Translation = pool.get('ir.translation')
        lang, = Lang.search([('code', '=', 'zh_CN')])
        Lang.write([lang], {'translatable': True})
        Translation.translation_import(
            'zh_CN', 'fuel_payment',
            str(paypage.TEMPLATE.with_name('locale') / 'zh_CN.po'))
        company = create_company()
        with set_company(company):
            setup = create_payment_setup(company, 'PP1')
            nozzle = setup['nozzle']
            for number in NOZZLES[1:]:
                Nozzle.copy([nozzle], default={
                        'number': number, 'station_number': number})
            wechat = create_gateway(
                company, cls.wechat, setup['methods']['wechat'])
            login_app(
                wechat, cls.wechat.appid, 'jsapi',
                cls.wechat.secret_of(cls.wechat.appid))
            alipay, = Gateway.create([dict(
                        cls.alipay.gateway_values(), name="Alipay",
                        company=company.id)])
            Method.write([setup['methods']['alipay']], {
                    'gateway': alipay.id})
        # an operator without gateways
        bare = create_company(name="Bare Operator")
        with set_company(bare):
            bare_setup = create_payment_setup(bare, 'PP2')
        cls.station_id = setup['station'].id
        cls.wechat_id = wechat.id
        cls.alipay_id = alipay.id
        cls.bare_station_id = bare_setup['station'].id

    def setUp(self):
        super().setUp()
        self.wechat.refuse = None
        self.alipay.refuse = None
        # the wallets' authorization pages are the simulators'
        for name, url in [
                ('WECHAT_AUTHORIZE_URL',
                    self.wechat.url + sim_wechat.AUTHORIZE_PATH),
                ('ALIPAY_AUTHORIZE_URL',
                    self.alipay.url.removesuffix('/gateway.do')
                    + sim_alipay.AUTHORIZE_PATH),
                ]:
            patcher = mock.patch.object(paypage, name, url)
            patcher.start()
            self.addCleanup(patcher.stop)

    # ---- helpers -------------------------------------------------------

    def token(self, station_id=None):
        with Transaction().start(DB_NAME, 0):
            Station = Pool().get('fuel.station')
            return Station(station_id or self.station_id).pay_token

    def url(self, nozzle=None, token=None, station_id=None, **query):
        url = (f'/{DB_NAME}{paypage.PAY_PATH}'
            f'{token or self.token(station_id)}')
        if nozzle is not None:
            url += f'/{nozzle}'
        if query:
            url += '?' + urllib.parse.urlencode(query)
        return url

    def local(self, url):
        "The route of a public page address"
        self.assertTrue(url.startswith(PUBLIC + paypage.PAY_PATH), url)
        return f'/{DB_NAME}{paypage.PAY_PATH}' + url.split(
            paypage.PAY_PATH, 1)[1]

    def ingest(self, nozzle, quantity='20', station_id=None):
        "Commit a fill at nozzle; return its id"
        result = {}

        def ingest():
            pool = Pool()
            Station = pool.get('fuel.station')
            FuelTransaction = pool.get('fuel.payment.transaction')
            station = Station(station_id or self.station_id)
            with set_company(station.company):
                item, = FuelTransaction.ingest(
                    [fill(station, quantity, nozzle=nozzle)])
            result['id'] = item['id']
        run_committed(ingest)
        return result['id']

    def get(self, url, agent=BROWSER_UA, language='en', **kwargs):
        return self.client().get(url, headers={
                'User-Agent': agent, 'Accept-Language': language}, **kwargs)

    def post(self, url, fill_id, wallet, agent=BROWSER_UA, ip='127.0.0.1',
            origin='http://localhost'):
        "Press a pay button of the page (same origin, as a browser does)"
        return self.client().post(
            url, data={'fill': str(fill_id), 'wallet': wallet},
            headers={
                'User-Agent': agent, 'Accept-Language': 'en',
                'Origin': origin},
            environ_overrides={'REMOTE_ADDR': ip})

    def wallet_redirect(self, location):
        """Open location (a wallet's authorization page) as the wallet's
        browser does; return the route of the page it sends back to"""
        class Stop(urllib.request.HTTPRedirectHandler):
            def redirect_request(self, *args, **kwargs):
                return None

        opener = urllib.request.build_opener(Stop)
        with self.assertRaises(urllib.error.HTTPError) as cm:
            opener.open(location, timeout=10)
        self.assertEqual(cm.exception.code, 302)
        cm.exception.close()
        return self.local(cm.exception.headers['Location'])

    def text(self, response):
        return response.get_data(as_text=True)

    def data(self, response):
        "The JSON the page hands its script"
        return json.loads(DATA.search(self.text(response)).group(1))

    def status(self, url):
        response = self.get(url)
        self.assertEqual(response.status_code, 200)
        self.assertEqual(response.content_type, 'application/json')
        return json.loads(self.text(response))

    def payments(self, fill_id):
        "The gateway payments of the fill's order"
        with Transaction().start(DB_NAME, 0):
            pool = Pool()
            FuelTransaction = pool.get('fuel.payment.transaction')
            Payment = pool.get('fuel.payment.gateway.payment')
            fill_ = FuelTransaction(fill_id)
            if not fill_.order:
                return []
            return [
                (p.number, p.state, p.amount, p.client, p.payer,
                    p.client_ip, p.method.fuel_kind)
                for p in Payment.search([('order', '=', fill_.order.id)])]

    def fill_state(self, fill_id):
        with Transaction().start(DB_NAME, 0):
            FuelTransaction = Pool().get('fuel.payment.transaction')
            fill_ = FuelTransaction(fill_id)
            return (
                fill_.state, fill_.order.state if fill_.order else None,
                fill_.amount_due)

    def notify(self, gateway_id, headers, body):
        response = self.client().post(
            f'/{DB_NAME}/fuel_payment/notify/{gateway_id}', data=body,
            headers=headers)
        self.assertIn(response.status_code, {200, 204})

    # ---- tests ---------------------------------------------------------

    def test_unknown_token(self):
        "Test an unknown token or nozzle is answered 404 and nothing else"
        self.ingest(1, '5')
        for url in [
                self.url(token='nosuchtoken'),
                self.url(1, token='nosuchtoken'),
                self.url(1, token='nosuchtoken') + '/status',
                self.url(99),
                self.url(99) + '/status',
                ]:
            with self.subTest(url=url):
                response = self.get(url)
                self.assertEqual(response.status_code, 404)
                self.assertNotIn('PP1', self.text(response))
        response = self.client().post(
            self.url(1, token='nosuchtoken'), data={'fill': '1'})
        self.assertEqual(response.status_code, 404)
        self.assertEqual(self.get(self.url(1)).status_code, 200)

    def test_renewed_token(self):
        "Test renewing the pay token refuses the printed codes"
        old = self.token()
        self.assertEqual(len(old), 22)

        def renew():
            Station = Pool().get('fuel.station')
            Station.renew_pay_token([Station(self.station_id)])
        run_committed(renew)
        new = self.token()
        self.assertNotEqual(new, old)
        self.assertEqual(self.get(self.url(2, token=old)).status_code, 404)
        self.assertEqual(self.get(self.url(token=old)).status_code, 404)
        self.assertEqual(self.get(self.url(2, token=new)).status_code, 200)

        def copy():
            Station = Pool().get('fuel.station')
            station = Station(self.station_id)
            copy, = Station.copy([station], default={
                    'code': 'PP9', 'tanks': None, 'dispensers': None,
                    'nozzles': None})
            self.assertEqual(len(copy.pay_token), 22)
            self.assertNotEqual(copy.pay_token, station.pay_token)
        run_rolled_back(copy)

    def test_token_unique(self):
        "Test two stations cannot share a pay token"
        with Transaction().start(DB_NAME, 0) as transaction:
            Station = Pool().get('fuel.station')
            with self.assertRaises(SQLConstraintError) as cm:
                Station.write(
                    [Station(self.bare_station_id)],
                    {'pay_token': Station(self.station_id).pay_token})
            self.assertEqual(
                cm.exception.message, message('msg_paypage_token_unique'))
            transaction.rollback()

    def test_no_fill(self):
        "Test a nozzle without a fill says so, in English or Chinese"
        url = self.url(3)
        response = self.get(url)
        self.assertEqual(response.status_code, 200)
        self.assertIn(
            message('msg_paypage_no_fill', nozzle=3), self.text(response))
        self.assertNotIn('<form', self.text(response))
        self.assertEqual(
            self.status(url + '/status'),
            {'fills': [], 'being_paid': False})
        response = self.get(url, language='zh-CN,zh;q=0.9')
        self.assertIn(
            '3 号油枪没有待支付的加油', self.text(response))
        self.assertIn('<html lang="zh-CN">', self.text(response))

    def test_several_fills(self):
        """Test two fills at the nozzle are listed with their time and
        amount, each with its buttons; the station page links the
        nozzle; the status JSON lists them"""
        first = self.ingest(4, '10')
        second = self.ingest(4, '20')
        response = self.get(self.url(4))
        text = self.text(response)
        self.assertIn('<title>%s</title>' % html.escape(
                message('msg_paypage_title', station='PP1') + ' · '
                + message('msg_paypage_nozzle', nozzle=4)), text)
        self.assertIn(
            message('msg_paypage_several', nozzle=4), text)
        self.assertIn(f'id="fill-{first}"', text)
        self.assertIn(f'id="fill-{second}"', text)
        for msg_id in [
                'msg_paypage_label_nozzle', 'msg_paypage_label_grade',
                'msg_paypage_label_quantity', 'msg_paypage_label_time',
                'msg_paypage_label_amount', 'msg_paypage_pay_wechat',
                'msg_paypage_pay_alipay']:
            self.assertIn(message(msg_id), text)
        self.assertIn(money('75.80'), text)
        self.assertIn(money('151.60'), text)
        self.assertEqual(text.count('<form'), 4)
        status = self.status(self.url(4) + '/status')
        self.assertEqual(
            [(f['id'], Decimal(f['amount']), Decimal(f['quantity']),
                    f['nozzle'])
                for f in status['fills']],
            [(first, Decimal('75.80'), Decimal(10), 4),
                (second, Decimal('151.60'), Decimal(20), 4)])
        self.assertEqual(
            sorted(status['fills'][0]),
            ['amount', 'amount_text', 'grade', 'id', 'nozzle', 'quantity',
                'time', 'unit'])
        # the station's page links the nozzles with a fill to pay
        response = self.get(self.url())
        text = self.text(response)
        self.assertIn(message('msg_paypage_station_nozzles'), text)
        self.assertIn(
            f'href="{PUBLIC}{paypage.PAY_PATH}{self.token()}/4"', text)
        self.assertIn(message('msg_paypage_nozzle', nozzle=4), text)
        # another's fill of the same station is not payable here
        response = self.post(self.url(5), first, 'wechat')
        self.assertEqual(response.status_code, 409)
        self.assertIn(message('msg_paypage_fill_gone'), self.text(response))
        response = self.post(self.url(4), 'x', 'wechat')
        self.assertEqual(response.status_code, 400)

    def test_h5(self):
        """Test the phone browser pays with WeChat Pay's H5: the payment is
        for the fill's amount from the phone's address, the page follows
        it; pressing the button again or reloading pays nothing twice;
        the fill is being paid for anybody else"""
        self.wechat.orders.clear()
        fill_id = self.ingest(6)
        url = self.url(6)
        response = self.get(url)
        self.assertEqual(
            response.headers['Referrer-Policy'], 'same-origin')
        # another site's form cannot press the button (trytond's Origin
        # check aborts the request)
        with self.assertRaises(Forbidden):
            self.post(
                url, fill_id, 'wechat', ip=PHONE,
                origin='https://evil.example')
        self.assertEqual(self.payments(fill_id), [])
        response = self.post(url, fill_id, 'wechat', ip=PHONE)
        self.assertEqual(response.status_code, 303)
        page = self.local(response.headers['Location'])
        self.assertIn('?r=', page)
        (number, state, amount, client, payer, ip, kind), = (
            self.payments(fill_id))
        self.assertEqual(
            (state, amount, client, payer, ip, kind),
            ('pending', Decimal('151.60'), 'h5', None, PHONE, 'wechat'))
        self.assertEqual(self.fill_state(fill_id)[2], Decimal('151.60'))
        response = self.get(page)
        self.assertEqual(response.status_code, 200)
        data = self.data(response)
        params = data['payment']['client_params']
        self.assertEqual(list(params), ['h5_url'])
        self.assertEqual(data['client'], 'h5')
        self.assertEqual(data['payment']['amount'], '151.60')
        self.assertEqual(data['payment']['message'], message(
                'msg_paypage_pending', amount=money('151.60'),
                wallet=message('msg_paypage_wallet_wechat')))
        self.assertEqual(self.local(data['return_url']), page)
        # pressed again: refused, one payment
        response = self.post(url, fill_id, 'wechat', ip=PHONE)
        self.assertEqual(response.status_code, 409)
        self.assertIn(
            message('msg_paypage_being_paid', nozzle=6), self.text(response))
        self.assertEqual(len(self.payments(fill_id)), 1)
        # anybody else sees it being paid
        response = self.get(url)
        self.assertIn(
            message('msg_paypage_being_paid', nozzle=6), self.text(response))
        self.assertEqual(
            self.status(url + '/status'), {'fills': [], 'being_paid': True})
        # the phone opens h5_url and pays; WeChat notifies
        self.wechat.client_pays(params, ip=PHONE)
        self.notify(self.wechat_id, *self.wechat.notification(number))
        status_url = page.replace('?', '/status?', 1)
        self.assertEqual(data['status_url'].split(paypage.PAY_PATH)[1],
            status_url.split(paypage.PAY_PATH)[1])
        status = self.status(status_url)
        self.assertEqual(status['state'], 'succeeded')
        self.assertIsNone(status['client_params'])
        self.assertEqual(status['message'], message(
                'msg_paypage_paid', amount=money('151.60')))
        self.assertEqual(self.fill_state(fill_id)[:2], ('paid', 'paid'))
        # reloaded: the same payment, paid once
        self.assertEqual(self.get(page).status_code, 200)
        self.assertEqual(
            [p[1] for p in self.payments(fill_id)], ['succeeded'])
        response = self.get(url)
        self.assertIn(
            message('msg_paypage_no_fill', nozzle=6), self.text(response))

    def test_h5_alipay_refused(self):
        """Test Alipay's WAP address for the phone browser; a payment the
        channel refuses is shown not paid, with a way to pay again"""
        fill_id = self.ingest(7)
        response = self.post(self.url(7), fill_id, 'alipay', ip=PHONE)
        page = self.local(response.headers['Location'])
        data = self.data(self.get(page))
        self.assertEqual(list(data['payment']['client_params']), ['url'])
        self.assertTrue(data['payment']['client_params']['url'].startswith(
                self.alipay.url))
        self.assertEqual(
            [p[-1] for p in self.payments(fill_id)], ['alipay'])
        # the trade is known once the phone opens it; cancel by closing
        # it: WeChat next, refused by the channel
        self.wechat.refuse = 'NOAUTH'
        fill_id = self.ingest(8)
        response = self.post(self.url(8), fill_id, 'wechat', ip=PHONE)
        page = self.local(response.headers['Location'])
        response = self.get(page)
        data = self.data(response)
        self.assertEqual(data['payment']['state'], 'failed')
        self.assertEqual(
            data['payment']['message'], message('msg_paypage_not_paid'))
        self.assertIn(message('msg_paypage_retry'), self.text(response))
        self.assertIn(message('msg_paypage_pay_again'), self.text(response))
        # the fill is payable again
        response = self.get(self.url(8))
        self.assertIn(f'id="fill-{fill_id}"', self.text(response))

    def test_wechat(self):
        """Test the page in WeChat: the driver is sent to WeChat's web page
        authorization with a state; back with the code, the payment is
        made for the openid; the page hands the signed parameters to
        WeixinJSBridge; the state cannot be used again nor forged"""
        fill_id = self.ingest(9)
        url = self.url(9)
        response = self.get(url, agent=WECHAT_UA)
        text = self.text(response)
        self.assertIn(message('msg_paypage_pay_wechat'), text)
        self.assertNotIn(message('msg_paypage_pay_alipay'), text)
        response = self.post(url, fill_id, 'wechat', agent=WECHAT_UA)
        self.assertEqual(response.status_code, 303)
        location = response.headers['Location']
        authorize, fragment = location.split('#')
        self.assertEqual(fragment, 'wechat_redirect')
        base, query = authorize.split('?')
        self.assertEqual(base, paypage.WECHAT_AUTHORIZE_URL)
        query = dict(urllib.parse.parse_qsl(query))
        self.assertEqual(
            sorted(query),
            ['appid', 'redirect_uri', 'response_type', 'scope', 'state'])
        self.assertEqual(query['appid'], self.wechat.appid)
        self.assertEqual(
            (query['response_type'], query['scope']), ('code', 'snsapi_base'))
        self.assertEqual(
            query['redirect_uri'],
            f'{PUBLIC}{paypage.PAY_PATH}{self.token()}/9')
        state = query['state']
        self.assertEqual(self.payments(fill_id), [])
        # a forged state
        response = self.get(
            self.local(query['redirect_uri']) + '?' + urllib.parse.urlencode(
                {'code': self.wechat.oauth_code(self.wechat.appid, OPENID),
                    'state': 'forged'}),
            agent=WECHAT_UA)
        self.assertEqual(response.status_code, 400)
        self.assertIn(
            message('msg_paypage_state_invalid'), self.text(response))
        # WeChat's authorization page sends the browser back with a code
        self.wechat.authorize_openid = OPENID
        back = self.wallet_redirect(location)
        self.assertEqual(
            dict(urllib.parse.parse_qsl(back.split('?')[1]))['state'], state)
        response = self.get(back, agent=WECHAT_UA)
        self.assertEqual(response.status_code, 303)
        page = self.local(response.headers['Location'])
        (number, state_, amount, client, payer, _, kind), = (
            self.payments(fill_id))
        self.assertEqual(
            (state_, amount, client, payer, kind),
            ('pending', Decimal('151.60'), 'jsapi', OPENID, 'wechat'))
        data = self.data(self.get(page, agent=WECHAT_UA))
        self.assertEqual((data['client'], data['wallet']), ('jsapi', 'wechat'))
        params = data['payment']['client_params']
        self.assertEqual(
            sorted(params),
            ['appId', 'nonceStr', 'package', 'paySign', 'signType',
                'timeStamp'])
        # the state is used up: reused with another code, refused
        response = self.get(
            self.local(query['redirect_uri']) + '?' + urllib.parse.urlencode(
                {'code': self.wechat.oauth_code(self.wechat.appid, OPENID),
                    'state': state}),
            agent=WECHAT_UA)
        self.assertEqual(response.status_code, 400)
        self.assertEqual(len(self.payments(fill_id)), 1)
        # another user cannot pay it; the driver does
        with self.assertRaisesRegex(ValueError, 'OPENID_NOT_MATCH'):
            self.wechat.client_pays(params, openid='oSomeoneElse')
        self.assertEqual(
            self.wechat.client_pays(params, openid=OPENID), number)
        self.notify(self.wechat_id, *self.wechat.notification(number))
        status = self.status(page.replace('?', '/status?', 1))
        self.assertEqual(status['state'], 'succeeded')
        self.assertEqual(self.fill_state(fill_id)[:2], ('paid', 'paid'))

    def test_wechat_refusals(self):
        """Test an expired state and a code WeChat refuses are told on the
        page; the Alipay button is not for WeChat's browser"""
        fill_id = self.ingest(10)
        url = self.url(10)
        response = self.post(url, fill_id, 'alipay', agent=WECHAT_UA)
        self.assertEqual(response.status_code, 400)
        response = self.post(url, fill_id, 'wechat', agent=WECHAT_UA)
        query = dict(urllib.parse.parse_qsl(
                response.headers['Location'].split('#')[0].split('?')[1]))
        back = self.local(query['redirect_uri'])
        # WeChat refuses the code (expired)
        code = self.wechat.oauth_code(self.wechat.appid, OPENID)
        self.wechat.expire_code(code)
        response = self.get(back + '?' + urllib.parse.urlencode(
                {'code': code, 'state': query['state']}), agent=WECHAT_UA)
        self.assertEqual(response.status_code, 409)
        self.assertIn(message(
                'msg_paypage_refused',
                error=message('msg_login_code_invalid')),
            self.text(response))
        self.assertEqual(self.payments(fill_id), [])
        # an expired state
        response = self.post(url, fill_id, 'wechat', agent=WECHAT_UA)
        query = dict(urllib.parse.parse_qsl(
                response.headers['Location'].split('#')[0].split('?')[1]))

        def expire():
            Request = Pool().get('fuel.payment.page.request')
            requests = Request.search([
                    ('state_key', '=', paypage.digest(query['state']))])
            Request.write(requests, {
                    'expiry': paypage.utcnow() - paypage.REQUEST_VALIDITY})
        run_committed(expire)
        response = self.get(back + '?' + urllib.parse.urlencode({
                    'code': self.wechat.oauth_code(self.wechat.appid, OPENID),
                    'state': query['state']}), agent=WECHAT_UA)
        self.assertEqual(response.status_code, 400)
        self.assertEqual(self.payments(fill_id), [])

    def test_wechat_without_login_app(self):
        """Test WeChat's browser is told WeChat Pay is not taken while the
        official account's login app has no AppSecret"""
        fill_id = self.ingest(12, '5')

        def set_secret(secret):
            GatewayApp = Pool().get('fuel.payment.gateway.app')
            GatewayApp.write(
                GatewayApp.search([('gateway', '=', self.wechat_id)]),
                {'secret': secret})
        run_committed(functools.partial(set_secret, None))
        try:
            url = self.url(12)
            unavailable = message(
                'msg_paypage_unavailable',
                wallet=message('msg_paypage_wallet_wechat'))
            response = self.get(url, agent=WECHAT_UA)
            self.assertIn(unavailable, self.text(response))
            self.assertNotIn('<form', self.text(response))
            response = self.post(url, fill_id, 'wechat', agent=WECHAT_UA)
            self.assertIn(unavailable, self.text(response))
            self.assertEqual(self.payments(fill_id), [])
        finally:
            run_committed(functools.partial(
                    set_secret, self.wechat.secret_of(self.wechat.appid)))
        response = self.get(url, agent=WECHAT_UA)
        self.assertIn(
            message('msg_paypage_pay_wechat'), self.text(response))

    def test_alipay(self):
        """Test the page in Alipay: the driver is sent to Alipay's web page
        authorization; back with the auth code, the trade is made for
        the buyer; the page hands its tradeNO to AlipayJSBridge"""
        fill_id = self.ingest(11)
        url = self.url(11)
        response = self.get(url, agent=ALIPAY_UA)
        text = self.text(response)
        self.assertIn(message('msg_paypage_pay_alipay'), text)
        self.assertNotIn(message('msg_paypage_pay_wechat'), text)
        response = self.post(url, fill_id, 'alipay', agent=ALIPAY_UA)
        self.assertEqual(response.status_code, 303)
        base, query = response.headers['Location'].split('?')
        self.assertEqual(base, paypage.ALIPAY_AUTHORIZE_URL)
        query = dict(urllib.parse.parse_qsl(query))
        self.assertEqual(
            (query['app_id'], query['scope']),
            (self.alipay.app_id, 'auth_base'))
        self.alipay.authorize_user = USER_ID
        back = self.wallet_redirect(response.headers['Location'])
        self.assertEqual(
            sorted(dict(urllib.parse.parse_qsl(back.split('?')[1]))),
            ['app_id', 'auth_code', 'scope', 'source', 'state'])
        response = self.get(back, agent=ALIPAY_UA)
        self.assertEqual(response.status_code, 303)
        page = self.local(response.headers['Location'])
        (number, _, amount, client, payer, _, kind), = self.payments(fill_id)
        self.assertEqual(
            (amount, client, payer, kind),
            (Decimal('151.60'), 'jsapi', USER_ID, 'alipay'))
        data = self.data(self.get(page, agent=ALIPAY_UA))
        self.assertEqual(data['wallet'], 'alipay')
        params = data['payment']['client_params']
        self.assertEqual(list(params), ['tradeNO'])
        self.alipay.client_pays(params, buyer=USER_ID)
        self.notify(self.alipay_id, *self.alipay.notification(number))
        status = self.status(page.replace('?', '/status?', 1))
        self.assertEqual(status['state'], 'succeeded')
        self.assertEqual(self.fill_state(fill_id)[:2], ('paid', 'paid'))

    def test_not_configured(self):
        """Test a station whose operator has no gateway tells the wallet
        is not taken, and the browser that it pays in no wallet; its codes
        cannot be printed without a public address"""
        response = self.get(self.url(station_id=self.bare_station_id))
        self.assertEqual(response.status_code, 200)
        self.assertIn(
            message('msg_paypage_station_none'), self.text(response))
        fill_id = self.ingest(1, station_id=self.bare_station_id)
        url = self.url(1, station_id=self.bare_station_id)
        response = self.get(url, agent=WECHAT_UA)
        self.assertIn(message(
                'msg_paypage_unavailable',
                wallet=message('msg_paypage_wallet_wechat')),
            self.text(response))
        self.assertNotIn('<form', self.text(response))
        response = self.post(url, fill_id, 'wechat', agent=WECHAT_UA)
        self.assertIn(message(
                'msg_paypage_unavailable',
                wallet=message('msg_paypage_wallet_wechat')),
            self.text(response))
        response = self.get(url, agent=ALIPAY_UA)
        self.assertIn(message(
                'msg_paypage_unavailable',
                wallet=message('msg_paypage_wallet_alipay')),
            self.text(response))
        response = self.get(url)
        self.assertIn(
            html.escape(message('msg_paypage_browser_none')),
            self.text(response))
        with Transaction().start(DB_NAME, 0):
            pool = Pool()
            Report = pool.get('fuel.station.pay_qr', type='report')
            Station = pool.get('fuel.station')
            station = Station(self.bare_station_id)
            with self.assertRaises(paypage.PayPageError) as cm:
                Report.execute([station.id], {})
            self.assertEqual(cm.exception.message, message(
                    'msg_paypage_no_base', station=station.rec_name))

    def test_print(self):
        """Test the printed page holds the station's code and one per
        nozzle, with their addresses; a station without a token is
        refused"""
        with Transaction().start(DB_NAME, 0) as transaction:
            pool = Pool()
            Report = pool.get('fuel.station.pay_qr', type='report')
            Station = pool.get('fuel.station')
            station = Station(self.station_id)
            ext, content, _, _ = Report.execute([station.id], {})
            self.assertEqual(ext, 'html')
            content = content.decode() if isinstance(
                content, bytes) else content
            station_url = f'{PUBLIC}{paypage.PAY_PATH}{station.pay_token}'
            for url in [station_url] + [
                    f'{station_url}/{n}' for n in NOZZLES]:
                with self.subTest(url=url):
                    self.assertIn(f'alt="{url}"', content)
                    self.assertIn(paypage_qr.qr_data_uri(url), content)
            self.assertEqual(
                content.count('data:image/svg+xml;base64,'),
                len(NOZZLES) + 1)
            Station.write([station], {'pay_token': None})
            with self.assertRaises(paypage.PayPageError) as cm:
                Report.execute([station.id], {})
            self.assertEqual(cm.exception.message, message(
                    'msg_paypage_no_token', station=station.rec_name))
            transaction.rollback()

    def test_waiting(self):
        """Test a payment the channel has not answered yet (a queue
        worker's) is shown as being prepared"""
        fill_id = self.ingest(13)
        shown = {}

        def show():
            pool = Pool()
            FuelTransaction = pool.get('fuel.payment.transaction')
            Method = pool.get('sale.point.payment.method')
            Order = pool.get('fuel.payment.order')
            Payment = pool.get('fuel.payment.gateway.payment')
            Station = pool.get('fuel.station')
            station = Station(self.station_id)
            with set_company(station.company):
                order = Order.create_for([FuelTransaction(fill_id)])
                method = Method.for_channel(station.company, 'wechat')
                payment = Payment(Payment.create_app(
                        order.id, method.id, 'h5', client_ip=PHONE))
            request = Request(EnvironBuilder(
                    headers={'User-Agent': BROWSER_UA}).get_environ())
            page = paypage.PayPage(request, pool, station.pay_token, 13)
            shown['status'] = page.payment_status(payment)
            shown['message'] = _message(
                'msg_paypage_waiting',
                wallet=_message('msg_paypage_wallet_wechat'))
        run_rolled_back(show)
        self.assertEqual(shown['status'], {
                'state': 'draft', 'amount': '151.60',
                'message': shown['message'], 'client_params': None,
                })
