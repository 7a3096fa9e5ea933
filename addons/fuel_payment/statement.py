# This file is part of fuelpay.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""The member statement: a wallet's movements over a period with the
balance before, after each movement, and at the end"""
from decimal import Decimal

from sql.aggregate import Sum
from trytond import backend
from trytond.i18n import gettext
from trytond.model import ModelView, fields
from trytond.pool import Pool
from trytond.pyson import Eval
from trytond.report import Report
from trytond.tools import sqlite_apply_types
from trytond.transaction import Transaction
from trytond.wizard import Button, StateReport, StateView, Wizard

from .exceptions import WalletError
from .reporting import company_timezone, utc_bounds


class StatementStart(ModelView):
    "Wallet Statement"
    __name__ = 'fuel.payment.wallet.statement.start'

    from_date = fields.Date(
        "From Date", required=True,
        domain=[('from_date', '<=', Eval('to_date'))])
    to_date = fields.Date(
        "To Date", required=True,
        domain=[('to_date', '>=', Eval('from_date'))])

    @classmethod
    def default_from_date(cls):
        pool = Pool()
        Date = pool.get('ir.date')
        return Date.today().replace(day=1)

    @classmethod
    def default_to_date(cls):
        pool = Pool()
        Date = pool.get('ir.date')
        return Date.today()


class PrintStatement(Wizard):
    "Print Wallet Statement"
    __name__ = 'fuel.payment.wallet.statement.print'

    start = StateView(
        'fuel.payment.wallet.statement.start',
        'fuel_payment.wallet_statement_start_view_form', [
            Button("Cancel", 'end', 'tryton-cancel'),
            Button("Print", 'print_', 'tryton-print', default=True),
            ])
    print_ = StateReport('fuel.payment.wallet.statement')

    def do_print_(self, action):
        return action, {
            'ids': [r.id for r in self.records],
            'from_date': self.start.from_date,
            'to_date': self.start.to_date,
            }


class StatementReport(Report):
    "Wallet Statement"
    __name__ = 'fuel.payment.wallet.statement'

    @classmethod
    def get_context(cls, records, header, data):
        pool = Pool()
        Lang = pool.get('ir.lang')
        context = super().get_context(records, header, data)
        from_date, to_date = data.get('from_date'), data.get('to_date')
        if from_date and to_date and from_date > to_date:
            raise WalletError(gettext(
                    'fuel_payment.msg_statement_dates',
                    from_date=from_date, to_date=to_date))
        context['lang'] = Lang.get()
        context['from_date'] = from_date
        context['to_date'] = to_date
        context['statements'] = {
            w.id: cls.statement(w, from_date, to_date) for w in records}
        return context

    @classmethod
    def statement(cls, wallet, from_date=None, to_date=None):
        """Return the opening balance, the movements of the period each
        with the balance after it, and the closing balance"""
        pool = Pool()
        Move = pool.get('fuel.payment.wallet.move')
        start, end = utc_bounds(
            from_date, to_date, company_timezone(wallet.company.id))
        opening = Decimal(0)
        if start:
            move = Move.__table__()
            query = move.select(
                Sum(move.amount).as_('opening'),
                where=(move.wallet == wallet.id) & (move.date < start))
            if backend.name == 'sqlite':
                sqlite_apply_types(query, ['NUMERIC'])
            cursor = Transaction().connection.cursor()
            cursor.execute(*query)
            opening = cursor.fetchone()[0] or Decimal(0)
        domain = [('wallet', '=', wallet.id)]
        if start:
            domain.append(('date', '>=', start))
        if end:
            domain.append(('date', '<', end))
        lines = []
        balance = wallet.currency.round(opening)
        credit = debit = Decimal(0)
        for move in Move.search(
                domain, order=[('date', 'ASC'), ('id', 'ASC')]):
            balance += move.amount
            if move.amount > 0:
                credit += move.amount
            else:
                debit -= move.amount
            lines.append((move, balance))
        return {
            'opening': wallet.currency.round(opening),
            'lines': lines,
            'credit': credit,
            'debit': debit,
            'closing': balance,
            }
