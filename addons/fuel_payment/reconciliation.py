# This file is part of fuelpay.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""Reconciliation (对账): a channel's daily bill matched to our gateway
payments and refunds, by our order number and the channel's transaction
number, and the channel's fees posted to accounting"""
import datetime as dt
import logging
from collections import Counter
from decimal import Decimal

from trytond import config
from trytond.i18n import gettext
from trytond.model import ModelSQL, ModelView, Unique, Workflow, fields
from trytond.modules.currency.fields import Monetary
from trytond.pool import Pool, PoolMeta
from trytond.pyson import Eval
from trytond.transaction import Transaction, without_check_access

from .exceptions import ReconciliationError
from .gateway import BillFormatError, PermanentError, TransientError

logger = logging.getLogger(__name__)

# the channels' bills follow the Beijing calendar day
BILL_TIMEZONE = dt.timezone(dt.timedelta(hours=8))
# days before yesterday whose draft days the cron asks for again: a bill
# not made yet, a channel down or a refusal since corrected
RETRY_DAYS = 7

LINE_KINDS = [
    ('matched', "Matched"),
    ('missing_ours', "Missing on Our Side"),
    ('missing_channel', "Missing on the Channel's Side"),
    ('amount', "Amount Mismatch"),
    ('status', "Status Mismatch"),
    ]


def day_range(date):
    "The naive UTC bounds of date's Beijing calendar day"
    start = dt.datetime.combine(date, dt.time(), BILL_TIMEZONE)
    end = start + dt.timedelta(days=1)
    return tuple(
        d.astimezone(dt.UTC).replace(tzinfo=None) for d in (start, end))


class Reconciliation(Workflow, ModelSQL, ModelView):
    "Fuel Payment Reconciliation"
    __name__ = 'fuel.payment.reconciliation'

    _states = {'readonly': Eval('state') != 'draft'}

    company = fields.Many2One(
        'company.company', "Operator", required=True, readonly=True)
    gateway = fields.Many2One(
        'fuel.payment.gateway', "Gateway", required=True,
        ondelete='RESTRICT', states=_states,
        domain=[('company', '=', Eval('company', -1))])
    date = fields.Date("Date", required=True, states=_states)
    bill = fields.Binary(
        "Bill", filename='bill_name', states=_states,
        help="The channel's daily bill as it was downloaded, or a file "
        "imported by hand.")
    bill_name = fields.Char("Bill Name", states=_states)
    source = fields.Selection([
            (None, ""),
            ('download', "Downloaded"),
            ('import', "Imported"),
            ('query', "Queried"),
            ], "Source", readonly=True,
        help="Where the channel's side comes from: its bill, downloaded or "
        "imported, or, for a channel without a bill, its answers to a "
        "query about each payment of the day.")
    lines = fields.One2Many(
        'fuel.payment.reconciliation.line', 'reconciliation', "Lines",
        readonly=True)
    matched = fields.Function(fields.Integer("Matched"), 'get_counts')
    discrepancies = fields.Function(
        fields.Integer("Discrepancies"), 'get_counts')
    unresolved = fields.Function(
        fields.Integer("Unresolved"), 'get_counts')
    fee = Monetary(
        "Fees", currency='currency', digits='currency', readonly=True)
    currency = fields.Function(
        fields.Many2One('currency.currency', "Currency"),
        'on_change_with_currency')
    move = fields.Many2One(
        'account.move', "Fee Move", readonly=True, ondelete='RESTRICT')
    error = fields.Text("Error", readonly=True)
    state = fields.Selection([
            ('draft', "Draft"),
            ('matched', "Matched"),
            ('done', "Done"),
            ], "State", required=True, readonly=True, sort=False)

    @classmethod
    def __setup__(cls):
        super().__setup__()
        t = cls.__table__()
        cls._sql_constraints = [
            ('gateway_date_unique', Unique(t, t.gateway, t.date),
                'fuel_payment.msg_reconciliation_unique'),
            ]
        cls._order = [('date', 'DESC'), ('id', 'DESC')]
        cls._transitions |= {
            ('draft', 'matched'),
            ('matched', 'draft'),
            ('matched', 'done'),
            }
        cls._buttons.update({
                'download': {
                    'invisible': Eval('state') != 'draft',
                    'depends': ['state'],
                    },
                'match': {
                    'invisible': Eval('state') != 'draft',
                    'depends': ['state'],
                    },
                'reset': {
                    'invisible': Eval('state') != 'matched',
                    'depends': ['state'],
                    },
                'post': {
                    'invisible': Eval('state') != 'matched',
                    'depends': ['state'],
                    },
                })

    @classmethod
    def default_company(cls):
        return Transaction().context.get('company')

    @classmethod
    def default_state(cls):
        return 'draft'

    @fields.depends('company')
    def on_change_with_currency(self, name=None):
        return self.company.currency if self.company else None

    @classmethod
    def get_counts(cls, reconciliations, names):
        result = {n: {} for n in names}
        for reconciliation in reconciliations:
            kinds = Counter(line.kind for line in reconciliation.lines)
            values = {
                'matched': kinds['matched'],
                'discrepancies': sum(kinds.values()) - kinds['matched'],
                'unresolved': sum(
                    1 for line in reconciliation.lines
                    if line.kind != 'matched' and not line.resolved),
                }
            for name in names:
                result[name][reconciliation.id] = values[name]
        return result

    def get_rec_name(self, name):
        return f'{self.gateway.rec_name} {self.date}'

    @classmethod
    def check_modification(
            cls, mode, reconciliations, values=None, external=False):
        super().check_modification(
            mode, reconciliations, values=values, external=external)
        if mode == 'delete':
            for reconciliation in reconciliations:
                if reconciliation.state != 'draft':
                    raise ReconciliationError(gettext(
                            'fuel_payment.msg_reconciliation_delete',
                            reconciliation=reconciliation.rec_name))

    @classmethod
    def write(cls, *args):
        changed = []
        for reconciliations, values in zip(
                args[::2], args[1::2], strict=True):
            if 'bill' in values and 'source' not in values:
                # a bill written by a person is imported by hand
                values = dict(values, source='import')
            changed.extend((reconciliations, values))
        super().write(*changed)

    @classmethod
    @ModelView.button
    def download(cls, reconciliations):
        "Download the bills from their channel (queue)"
        cls.__queue__.fetch(reconciliations)

    @classmethod
    def fetch(cls, reconciliations):
        """Download and match the bills; a transient failure is left for
        the next run, a permanent one kept on the record"""
        for reconciliation in reconciliations:
            cls.lock([reconciliation])
            reconciliation = cls(reconciliation.id)
            if reconciliation.state != 'draft':
                continue
            with without_check_access():
                provider = reconciliation.gateway.get_provider()
            if not provider.bill:
                reconciliation.source = 'query'
                reconciliation.save()
                try:
                    cls.match([reconciliation])
                except ReconciliationError as exception:
                    # the channel could not be asked: the next run tries
                    reconciliation.error = exception.message
                    reconciliation.save()
                continue
            try:
                data = provider.fetch_bill(reconciliation.date)
            except (TransientError, PermanentError) as exception:
                reconciliation.error = str(exception)
                reconciliation.save()
                continue
            reconciliation.bill = data
            reconciliation.bill_name = provider.bill_name(
                reconciliation.date)
            reconciliation.source = 'download'
            reconciliation.error = None
            reconciliation.save()
            try:
                cls.match([reconciliation])
            except ReconciliationError as exception:
                # a bill that cannot be read is kept for a person to see;
                # the other gateways' days go on
                reconciliation.error = exception.message
                reconciliation.save()

    @classmethod
    def fetch_bills(cls, date=None):
        """Reconcile date for every active gateway; the cron (no date):
        yesterday (Beijing), and again the days of the RETRY_DAYS before
        it still draft without a bill imported by hand"""
        pool = Pool()
        Gateway = pool.get('fuel.payment.gateway')
        reconciliations = []
        if date is None:
            date = dt.datetime.now(BILL_TIMEZONE).date() - dt.timedelta(
                days=1)
            reconciliations.extend(cls.search([
                        ('state', '=', 'draft'),
                        ('gateway.active', '=', True),
                        ('date', '>=', date - dt.timedelta(days=RETRY_DAYS)),
                        ('date', '<', date),
                        ['OR',
                            ('source', '!=', 'import'),
                            ('source', '=', None),
                            ],
                        ], order=[('date', 'ASC'), ('id', 'ASC')]))
        for gateway in Gateway.search([('active', '=', True)]):
            existing = cls.search([
                    ('gateway', '=', gateway.id), ('date', '=', date)])
            if existing:
                reconciliations.extend(
                    r for r in existing if r.state == 'draft')
            else:
                reconciliation = cls(
                    company=gateway.company, gateway=gateway, date=date)
                reconciliation.save()
                reconciliations.append(reconciliation)
        if config.getboolean('queue', 'worker', default=False):
            for reconciliation in reconciliations:
                cls.__queue__.fetch([reconciliation])
        else:
            cls.fetch(reconciliations)
        return reconciliations

    @classmethod
    @ModelView.button
    @Workflow.transition('matched')
    def match(cls, reconciliations):
        """Parse each bill and match its rows to our payments and refunds
        of the day"""
        pool = Pool()
        Line = pool.get('fuel.payment.reconciliation.line')
        Line.delete([line for r in reconciliations for line in r.lines])
        lines = []
        for reconciliation in reconciliations:
            if reconciliation.source == 'query':
                new = reconciliation.get_lines(
                    reconciliation.query_rows(), refunds=False)
                lines.extend(new)
                reconciliation.fee = Decimal(0)
                reconciliation.error = None
                continue
            if not reconciliation.bill:
                raise ReconciliationError(gettext(
                        'fuel_payment.msg_reconciliation_no_bill',
                        reconciliation=reconciliation.rec_name))
            with without_check_access():
                provider = reconciliation.gateway.get_provider()
            try:
                rows = provider.parse_bill(bytes(reconciliation.bill))
            except BillFormatError as exception:
                raise ReconciliationError(gettext(
                        'fuel_payment.msg_reconciliation_format',
                        reconciliation=reconciliation.rec_name,
                        error=str(exception))) from exception
            new = reconciliation.get_lines(rows)
            lines.extend(new)
            reconciliation.fee = sum(
                (line.fee or Decimal(0) for line in new), Decimal(0))
            reconciliation.error = None
        Line.save(lines)
        cls.save(reconciliations)

    def query_rows(self):
        """The channel's side of the day for a channel without a bill:
        each payment of ours of the day (paid that day, or started that day
        and not paid here) as the channel answers a query about it; the
        channel gives no fee, and refunds are not queried"""
        pool = Pool()
        Payment = pool.get('fuel.payment.gateway.payment')
        start, end = day_range(self.date)
        with without_check_access():
            provider = self.gateway.get_provider()
        rows = []
        for payment in Payment.search([
                    ('gateway', '=', self.gateway.id),
                    ['OR', [
                            ('state', '=', 'succeeded'),
                            ('paid_date', '>=', start),
                            ('paid_date', '<', end),
                            ], [
                            ('state', '!=', 'succeeded'),
                            ('create_date', '>=', start),
                            ('create_date', '<', end),
                            ]],
                    ], order=[('id', 'ASC')]):
            try:
                result = provider.query(payment)
            except (TransientError, PermanentError) as exception:
                raise ReconciliationError(gettext(
                        'fuel_payment.msg_reconciliation_query',
                        reconciliation=self.rec_name,
                        payment=payment.number,
                        error=str(exception))) from exception
            if result.state == 'missing' or (
                    result.state != 'succeeded'
                    and payment.state != 'succeeded'):
                # no money on either side (still being paid, reversed,
                # closed, refused): nothing to reconcile
                continue
            rows.append({
                    'type': 'payment',
                    'number': payment.number,
                    'reference': result.reference,
                    'amount': (
                        result.amount if result.amount is not None
                        else payment.amount),
                    'status': result.state,
                    'fee': Decimal(0),
                    })
        return rows

    def get_lines(self, rows, refunds=True):
        """Return the lines matching rows to our records of the day;
        refunds: whether the rows hold the channel's refunds"""
        pool = Pool()
        Payment = pool.get('fuel.payment.gateway.payment')
        Refund = pool.get('fuel.payment.gateway.refund')
        Line = pool.get('fuel.payment.reconciliation.line')
        start, end = day_range(self.date)
        lines = []
        seen_payments, seen_refunds = set(), set()
        for row in rows:
            line = Line(
                reconciliation=self, company=self.company,
                type=row['type'], number=row['number'],
                refund_number=row.get('refund_number'),
                reference=row.get('reference'),
                channel_amount=row['amount'], channel_status=row['status'],
                fee=row.get('fee') or Decimal(0))
            if row['type'] == 'payment':
                records = Payment.search([
                        ('gateway', '=', self.gateway.id),
                        ('number', '=', row['number']),
                        ], limit=1)
                line.payment = records[0] if records else None
                record = line.payment
                if record:
                    seen_payments.add(record.id)
            else:
                records = Refund.search([
                        ('payment.gateway', '=', self.gateway.id),
                        ('number', '=', row.get('refund_number')),
                        ], limit=1)
                line.refund = records[0] if records else None
                record = line.refund
                if record:
                    seen_refunds.add(record.id)
                    line.payment = record.payment
            if record is None:
                line.kind = 'missing_ours'
            else:
                line.amount = record.amount
                line.status = record.state
                if row['status'] != record.state:
                    line.kind = 'status'
                elif record.amount != row['amount']:
                    line.kind = 'amount'
                else:
                    line.kind = 'matched'
            lines.append(line)
        for payment in Payment.search([
                    ('gateway', '=', self.gateway.id),
                    ('state', '=', 'succeeded'),
                    ('paid_date', '>=', start),
                    ('paid_date', '<', end),
                    ('id', 'not in', list(seen_payments)),
                    ]):
            lines.append(Line(
                    reconciliation=self, company=self.company,
                    type='payment', kind='missing_channel',
                    number=payment.number, reference=payment.reference,
                    payment=payment, amount=payment.amount,
                    status=payment.state, fee=Decimal(0)))
        if not refunds:
            return lines
        for refund in Refund.search([
                    ('payment.gateway', '=', self.gateway.id),
                    ('state', '=', 'succeeded'),
                    ('done_date', '>=', start),
                    ('done_date', '<', end),
                    ('id', 'not in', list(seen_refunds)),
                    ]):
            lines.append(Line(
                    reconciliation=self, company=self.company,
                    type='refund', kind='missing_channel',
                    number=refund.payment.number,
                    refund_number=refund.number, payment=refund.payment,
                    refund=refund, amount=refund.amount,
                    status=refund.state, fee=Decimal(0)))
        return lines

    @classmethod
    @ModelView.button
    @Workflow.transition('draft')
    def reset(cls, reconciliations):
        pass

    @classmethod
    @ModelView.button
    @Workflow.transition('done')
    def post(cls, reconciliations):
        "Post the channel's fees of the day to accounting"
        pool = Pool()
        Move = pool.get('account.move')
        moves = []
        for reconciliation in reconciliations:
            if reconciliation.fee:
                reconciliation.move = reconciliation.get_move()
                moves.append(reconciliation.move)
        Move.save(moves)
        Move.post(moves)
        cls.save(reconciliations)

    def get_move(self):
        "Return the move of the fees: an expense out of the clearing account"
        pool = Pool()
        Move = pool.get('account.move')
        MoveLine = pool.get('account.move.line')
        Period = pool.get('account.period')
        gateway = self.gateway
        methods = [m for m in gateway.methods if m.account]
        if not gateway.fee_account or not gateway.journal or not methods:
            raise ReconciliationError(gettext(
                    'fuel_payment.msg_reconciliation_fee_accounts',
                    gateway=gateway.rec_name))
        clearing = methods[0].account
        period = Period.find(self.company, date=self.date)
        description = gettext(
            'fuel_payment.msg_reconciliation_fee_description',
            gateway=gateway.rec_name, date=self.date)
        debit, credit = (
            (self.fee, Decimal(0)) if self.fee > 0
            else (Decimal(0), -self.fee))
        return Move(
            company=self.company, journal=gateway.journal, period=period,
            date=self.date, origin=self, description=description,
            lines=[
                MoveLine(
                    account=gateway.fee_account, debit=debit,
                    credit=credit),
                MoveLine(
                    account=clearing, debit=credit, credit=debit),
                ])


class ReconciliationLine(ModelSQL, ModelView):
    "Fuel Payment Reconciliation Line"
    __name__ = 'fuel.payment.reconciliation.line'

    reconciliation = fields.Many2One(
        'fuel.payment.reconciliation', "Reconciliation", required=True,
        ondelete='CASCADE', readonly=True)
    company = fields.Many2One(
        'company.company', "Operator", required=True, readonly=True)
    date = fields.Function(
        fields.Date("Date"), 'on_change_with_date',
        searcher='search_date')
    type = fields.Selection([
            ('payment', "Payment"),
            ('refund', "Refund"),
            ], "Type", required=True, readonly=True)
    kind = fields.Selection(LINE_KINDS, "Result", required=True,
        readonly=True)
    number = fields.Char("Order Number", readonly=True)
    refund_number = fields.Char("Refund Number", readonly=True)
    reference = fields.Char("Channel Number", readonly=True)
    payment = fields.Many2One(
        'fuel.payment.gateway.payment', "Payment", readonly=True,
        ondelete='RESTRICT')
    refund = fields.Many2One(
        'fuel.payment.gateway.refund', "Refund", readonly=True,
        ondelete='RESTRICT')
    amount = Monetary(
        "Our Amount", currency='currency', digits='currency',
        readonly=True)
    channel_amount = Monetary(
        "Channel Amount", currency='currency', digits='currency',
        readonly=True)
    status = fields.Char("Our State", readonly=True)
    channel_status = fields.Char("Channel State", readonly=True)
    fee = Monetary(
        "Fee", currency='currency', digits='currency', readonly=True)
    currency = fields.Function(
        fields.Many2One('currency.currency', "Currency"),
        'on_change_with_currency')
    resolved = fields.Boolean(
        "Resolved", readonly=True,
        states={'invisible': Eval('kind') == 'matched'})
    note = fields.Text(
        "Note", states={
            'invisible': Eval('kind') == 'matched',
            'readonly': Eval('resolved', False),
            })
    resolved_by = fields.Many2One('res.user', "Resolved by", readonly=True)

    @classmethod
    def __setup__(cls):
        super().__setup__()
        cls.__access__.add('reconciliation')
        cls._order = [('kind', 'DESC'), ('id', 'ASC')]
        cls._buttons.update({
                'resolve': {
                    'invisible': (
                        (Eval('kind') == 'matched') | Eval('resolved')),
                    'depends': ['kind', 'resolved'],
                    },
                'check': {
                    'invisible': (
                        (Eval('kind') == 'matched') | Eval('resolved')
                        | ~Eval('payment')),
                    'depends': ['kind', 'resolved', 'payment'],
                    },
                })

    @classmethod
    def default_resolved(cls):
        return False

    @fields.depends('reconciliation', '_parent_reconciliation.date')
    def on_change_with_date(self, name=None):
        return self.reconciliation.date if self.reconciliation else None

    @classmethod
    def search_date(cls, name, clause):
        return [('reconciliation.date',) + tuple(clause[1:])]

    @fields.depends('company')
    def on_change_with_currency(self, name=None):
        return self.company.currency if self.company else None

    @classmethod
    @ModelView.button
    def resolve(cls, lines):
        "Close discrepancies a person explained in the note"
        for line in lines:
            if not (line.note or '').strip():
                raise ReconciliationError(gettext(
                        'fuel_payment.msg_reconciliation_note_required'))
        cls.write(lines, {
                'resolved': True,
                'resolved_by': Transaction().user,
                })

    @classmethod
    @ModelView.button
    def check(cls, lines):
        "Ask the channel again about the payments of the lines"
        pool = Pool()
        Payment = pool.get('fuel.payment.gateway.payment')
        payments = [
            line.payment for line in lines
            if line.payment and line.payment.state in {'draft', 'pending'}]
        Payment.poll(payments)
        for line in lines:
            payment = line.payment
            if payment and payment.state in {'cancelled', 'failed'}:
                # given up here, maybe paid there: booked or given back
                Payment.lock([payment])
                try:
                    Payment.late_success(Payment(payment.id))
                except TransientError as exception:
                    raise ReconciliationError(gettext(
                            'fuel_payment.msg_reconciliation_query',
                            reconciliation=line.reconciliation.rec_name,
                            payment=payment.number,
                            error=str(exception))) from exception


class Move(metaclass=PoolMeta):
    __name__ = 'account.move'

    @classmethod
    def _get_origin(cls):
        return super()._get_origin() + ['fuel.payment.reconciliation']
