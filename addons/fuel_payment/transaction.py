# This file is part of fuelpay.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""Fuelling transactions (加注订单): what the dispenser reports, what the
platform computes, and the checks between the two"""
import bisect
import datetime as dt
import math
import sqlite3
import uuid as uuid_
from collections import defaultdict
from decimal import Decimal, InvalidOperation

from sql import As, Column, Literal
from sql.functions import CurrentTimestamp
from trytond import backend
from trytond.i18n import gettext
from trytond.model import Index, ModelSQL, ModelView, Unique, Workflow, fields
from trytond.model.exceptions import SQLConstraintError
from trytond.modules.currency.fields import Monetary
from trytond.modules.product import round_price
from trytond.pool import Pool
from trytond.pyson import Eval
from trytond.rpc import RPC
from trytond.tools import grouped_slice
from trytond.transaction import (
    Transaction,
    record_cache_size,
    without_check_access,
)
from trytond.wizard import (
    Button,
    StateAction,
    StateTransition,
    StateView,
    Wizard,
)

from addons.fuel_station.price import IN_FORCE

from .exceptions import (
    IngestError,
    TransactionStateError,
    TransactionValidationError,
    VoidRightError,
)

QUANTITY_DIGITS = (18, 3)
PRICE_DIGITS = (16, 4)
MAX_BATCH = 1000
# ids per IN (...) clause
CHUNK = 500
# records per browse of new transactions: browse checks every id of the
# list for each record it makes
BROWSE = 100

FLAGS = [
    ('amount_mismatch', "Amount Mismatch"),
    ('totalizer_gap', "Totalizer Gap"),
    ('totalizer_overlap', "Totalizer Overlap"),
    ('totalizer_quantity', "Totalizers Disagree with Quantity"),
    ('quantity_not_positive', "Quantity Not Positive"),
    ('unknown_nozzle', "Unknown Nozzle"),
    ('no_price', "No Price in Force"),
    ]

# the names an ingested item may carry, and how each is parsed
ITEM_DECIMALS = {
    'quantity': 'quantity',
    'unit_price': 'reported_unit_price',
    'amount': 'reported_amount',
    'totalizer_start': 'totalizer_start',
    'totalizer_end': 'totalizer_end',
    }
ITEM_DATES = {'start_date': 'start_date', 'end_date': 'end_date'}


def to_decimal(value):
    "Return value as Decimal, exactly as written; None stays None"
    if value is None or isinstance(value, Decimal):
        return value
    if isinstance(value, bool):
        raise ValueError(value)
    if isinstance(value, (int, float, str)):
        # str() of a float is the shortest text that reads back the same
        result = Decimal(str(value).strip())
        if not result.is_finite():
            raise ValueError(value)
        return result
    if isinstance(value, dict) and '__decimal__' in value:
        return to_decimal(value['__decimal__'])
    if (isinstance(value, dict) and value.get('__class__') == 'Decimal'):
        return to_decimal(value['decimal'])
    raise ValueError(value)


def to_datetime(value):
    "Return value as a naive UTC datetime; None stays None"
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        result = value
    elif isinstance(value, str):
        result = dt.datetime.fromisoformat(value.replace('Z', '+00:00'))
    elif isinstance(value, dict) and value.get('__class__') == 'datetime':
        result = dt.datetime(
            value['year'], value['month'], value['day'],
            value.get('hour', 0), value.get('minute', 0),
            value.get('second', 0), value.get('microsecond', 0))
    else:
        raise ValueError(value)
    if result.tzinfo is not None:
        result = result.astimezone(dt.UTC).replace(tzinfo=None)
    return result


def _has_returning(database):
    "Whether INSERT ... RETURNING works on the database"
    # trytond says no for SQLite, whose RETURNING came with 3.35
    return database.has_returning() or (
        backend.name == 'sqlite' and sqlite3.sqlite_version_info >= (3, 35))


def _fits(value, digits):
    "Whether the number fits the digits, as ModelStorage validates them"
    int_size, dec_size = digits
    if (int_size is not None and value
            and math.ceil(math.log10(abs(value))) > int_size):
        return False
    if dec_size is not None and isinstance(value, Decimal):
        return value.as_tuple().exponent >= -dec_size
    return True


def check_void_right():
    "Raise unless the user may void, refund and accept flagged fills"
    pool = Pool()
    Group = pool.get('res.group')
    ModelData = pool.get('ir.model.data')
    User = pool.get('res.user')
    user_id = Transaction().user
    if user_id == 0:
        return
    with without_check_access():
        group = Group(ModelData.get_id('fuel_payment', 'group_void'))
        allowed = group in User(user_id).groups
    if not allowed:
        raise VoidRightError(gettext('fuel_payment.msg_void_right'))


class FuellingTransaction(Workflow, ModelSQL, ModelView):
    "Fuelling Transaction"
    __name__ = 'fuel.payment.transaction'
    _rec_name = 'uuid'

    uuid = fields.Char("UUID", required=True, readonly=True, strip=False)
    company = fields.Many2One(
        'company.company', "Operator", required=True, readonly=True)
    station = fields.Many2One(
        'fuel.station', "Station", required=True, readonly=True,
        ondelete='RESTRICT')
    shift = fields.Many2One(
        'fuel.station.shift', "Shift", readonly=True, ondelete='RESTRICT',
        domain=[('station', '=', Eval('station', -1))])
    nozzle = fields.Many2One(
        'fuel.station.nozzle', "Nozzle", readonly=True, ondelete='RESTRICT')
    nozzle_number = fields.Integer(
        "Reported Nozzle", readonly=True,
        help="The station nozzle number (枪号) the dispenser reported.")
    grade = fields.Many2One(
        'product.product', "Grade", readonly=True, ondelete='RESTRICT',
        context={'company': Eval('company', -1)}, depends={'company'})
    unit = fields.Function(
        fields.Many2One('product.uom', "Unit"), 'on_change_with_unit')
    dispenser_reference = fields.Char(
        "Dispenser Transaction", readonly=True,
        help="The dispenser's own transaction number.")
    start_date = fields.DateTime("Start", readonly=True)
    end_date = fields.DateTime("End", readonly=True)
    quantity = fields.Numeric(
        "Quantity", digits=QUANTITY_DIGITS, required=True, readonly=True)
    reported_unit_price = fields.Numeric(
        "Reported Unit Price", digits=PRICE_DIGITS, readonly=True,
        help="The unit price the dispenser displayed, kept for audit.")
    reported_amount = fields.Numeric(
        "Reported Amount", digits=(16, 2), readonly=True,
        help="The amount the dispenser displayed, kept for audit.")
    totalizer_start = fields.Numeric(
        "Totalizer Before", digits=QUANTITY_DIGITS, readonly=True)
    totalizer_end = fields.Numeric(
        "Totalizer After", digits=QUANTITY_DIGITS, readonly=True)
    price = fields.Many2One(
        'fuel.station.price', "Price Set", readonly=True,
        ondelete='RESTRICT')
    unit_price = fields.Numeric(
        "Unit Price", digits=PRICE_DIGITS, readonly=True,
        help="The unit price in force at the end of the fill.")
    amount = Monetary(
        "Amount", currency='currency', digits='currency', readonly=True,
        help="Quantity times the unit price in force, computed by the "
        "platform.")
    discount = Monetary(
        "Discount", currency='currency', digits='currency', required=True,
        readonly=True)
    amount_due = Monetary(
        "Amount Due", currency='currency', digits='currency', readonly=True)
    currency = fields.Function(
        fields.Many2One('currency.currency', "Currency"),
        'on_change_with_currency')
    customer = fields.Many2One(
        'party.party', "Member", readonly=True, ondelete='RESTRICT',
        context={'company': Eval('company', -1)}, depends={'company'})
    plate = fields.Char("Plate", readonly=True)
    order = fields.Many2One(
        'fuel.payment.order', "Order", readonly=True, ondelete='RESTRICT')
    flags = fields.MultiSelection(FLAGS, "Flags", readonly=True)
    flag_details = fields.Text("Flag Details", readonly=True)
    reviewed_by = fields.Many2One('res.user', "Reviewed by", readonly=True)
    cancel_reason = fields.Text("Void Reason", readonly=True)
    cancelled_by = fields.Many2One('res.user', "Voided by", readonly=True)
    cancelled_date = fields.DateTime("Voided on", readonly=True)
    state = fields.Selection([
            ('fuelling', "Fuelling"),
            ('review', "To Review"),
            ('to_pay', "To Pay"),
            ('paid', "Paid"),
            ('posted', "Posted"),
            ('cancelled', "Voided"),
            ], "State", readonly=True, required=True, sort=False)
    state_string = state.translated('state')

    @classmethod
    def __setup__(cls):
        super().__setup__()
        cls.__access__.add('station')
        t = cls.__table__()
        cls._sql_constraints = [
            ('uuid_unique', Unique(t, t.uuid),
                'fuel_payment.msg_transaction_uuid_unique'),
            ]
        cls._sql_indexes.update({
                Index(t, (t.nozzle, Index.Range()),
                    (t.end_date, Index.Range(order='DESC'))),
                Index(t, (t.state, Index.Equality(cardinality='low')),
                    where=t.state.in_(['fuelling', 'review', 'to_pay'])),
                Index(t, (t.shift, Index.Range())),
                Index(t, (t.end_date, Index.Range())),
                })
        cls._order = [('end_date', 'DESC NULLS FIRST'), ('id', 'DESC')]
        cls._transitions |= {
            ('fuelling', 'to_pay'),
            ('fuelling', 'review'),
            ('review', 'to_pay'),
            ('review', 'cancelled'),
            ('to_pay', 'paid'),
            ('to_pay', 'cancelled'),
            ('paid', 'to_pay'),
            ('paid', 'posted'),
            ('posted', 'to_pay'),
            }
        cls._buttons.update({
                'accept': {
                    'invisible': Eval('state') != 'review',
                    'depends': ['state'],
                    },
                'cancel': {
                    'invisible': ~Eval('state').in_(['review', 'to_pay']),
                    'depends': ['state'],
                    },
                })
        cls.__rpc__.update({
                'ingest': RPC(readonly=False),
                })

    @classmethod
    def default_state(cls):
        return 'fuelling'

    @classmethod
    def default_discount(cls):
        return Decimal(0)

    @classmethod
    def default_flags(cls):
        return []

    @fields.depends('grade')
    def on_change_with_unit(self, name=None):
        return self.grade.default_uom if self.grade else None

    @fields.depends('company')
    def on_change_with_currency(self, name=None):
        return self.company.currency if self.company else None

    @classmethod
    def validate_fields(cls, transactions, field_names):
        super().validate_fields(transactions, field_names)
        if field_names & {'discount', 'amount', 'amount_due'}:
            for transaction in transactions:
                if transaction.discount < 0 or (
                        transaction.amount is not None
                        and transaction.discount > transaction.amount):
                    raise TransactionValidationError(gettext(
                            'fuel_payment.msg_transaction_discount',
                            transaction=transaction.rec_name))

    @classmethod
    def check_modification(
            cls, mode, transactions, values=None, external=False):
        super().check_modification(
            mode, transactions, values=values, external=external)
        if mode == 'delete':
            raise TransactionStateError(gettext(
                    'fuel_payment.msg_transaction_delete'))

    def get_rec_name(self, name):
        station = self.station.code if self.station else ''
        return '%s/%s %s' % (
            station, self.nozzle_number or '?',
            self.dispenser_reference or self.uuid[:8])

    @classmethod
    def search_rec_name(cls, name, clause):
        _, operator, value = clause[:3]
        bool_op = 'AND' if operator.startswith('!') else 'OR'
        return [bool_op,
            ('uuid', operator, value),
            ('dispenser_reference', operator, value),
            ('plate', operator, value),
            ]

    # ---- workflow ----------------------------------------------------

    @classmethod
    @ModelView.button
    @Workflow.transition('to_pay')
    def accept(cls, transactions):
        "A manager accepts flagged transactions as they are"
        check_void_right()
        for transaction in transactions:
            transaction.reviewed_by = Transaction().user
        cls.save(transactions)

    @classmethod
    @ModelView.button_action('fuel_payment.wizard_transaction_cancel')
    def cancel(cls, transactions):
        pass

    @classmethod
    @Workflow.transition('cancelled')
    def void(cls, transactions, reason):
        "Void the transactions for the reason; needs the void right"
        check_void_right()
        if not (reason or '').strip():
            raise TransactionValidationError(gettext(
                    'fuel_payment.msg_void_reason_required'))
        for transaction in transactions:
            if transaction.order and transaction.order.state != 'cancelled':
                raise TransactionStateError(gettext(
                        'fuel_payment.msg_transaction_void_ordered',
                        transaction=transaction.rec_name,
                        order=transaction.order.rec_name))
            transaction.cancel_reason = reason.strip()
            transaction.cancelled_by = Transaction().user
            transaction.cancelled_date = dt.datetime.now()
        cls.save(transactions)

    @classmethod
    @Workflow.transition('paid')
    def mark_paid(cls, transactions):
        pass

    @classmethod
    @Workflow.transition('to_pay')
    def mark_unpaid(cls, transactions):
        pass

    @classmethod
    @Workflow.transition('posted')
    def mark_posted(cls, transactions):
        pass

    @classmethod
    @Workflow.transition('to_pay')
    def finish(cls, transactions):
        pass

    @classmethod
    @Workflow.transition('review')
    def flag(cls, transactions):
        pass

    def set_discount(self, discount):
        "Set the discount and the amount due (before payment only)"
        if self.state not in {'fuelling', 'review', 'to_pay'}:
            raise TransactionStateError(gettext(
                    'fuel_payment.msg_transaction_discount_state',
                    transaction=self.rec_name))
        self.discount = discount
        self.amount_due = (self.amount or Decimal(0)) - discount

    # ---- ingestion ---------------------------------------------------

    @classmethod
    def ingest(cls, items):
        """Create or complete transactions from a batch of 1 to 1,000 items
        and return one result per item, in order

        Each item is a dict: uuid, station (id), nozzle (station nozzle
        number), dispenser_reference, start_date, end_date, quantity,
        unit_price and amount (as the dispenser reports them),
        totalizer_start, totalizer_end, plate, and status ('completed',
        the default, or 'fuelling' for a fill in progress). A result is
        {'uuid', 'status': 'created' | 'completed' | 'duplicate' | 'error',
        'id', 'state', 'amount_due', 'flags', 'message'}. The same uuid
        sent again returns the first result and creates nothing; a bad
        item is refused with its reason and does not stop the others."""
        if not isinstance(items, (list, tuple)) or not (
                1 <= len(items) <= MAX_BATCH):
            raise IngestError(gettext(
                    'fuel_payment.msg_ingest_batch_size',
                    maximum=MAX_BATCH))
        results = [None] * len(items)
        parsed = {}
        for index, item in enumerate(items):
            try:
                parsed[index] = cls._parse_item(item)
            except IngestError as exception:
                results[index] = cls._error_result(item, exception)

        existing = cls._existing(
            {v['uuid'] for v in parsed.values()})
        seen = {}
        to_create, to_complete, duplicates = [], [], []
        for index, values in list(parsed.items()):
            uuid = values['uuid']
            previous = existing.get(uuid)
            if uuid in seen:
                # a repeat inside the batch answers like the first
                results[index] = ('same', seen[uuid])
                continue
            seen[uuid] = index
            if previous is None:
                to_create.append((index, values))
            elif (previous[1] == 'fuelling'
                    and values['status'] == 'completed'):
                to_complete.append((index, values, cls(previous[0])))
            else:
                duplicates.append((index, previous[0]))
        for index, record in zip(
                (i for i, _ in duplicates),
                cls.browse([p for _, p in duplicates]), strict=True):
            results[index] = record.ingest_result('duplicate')
        cls._resolve(
            [v for _, v in to_create] + [v for _, v, _ in to_complete],
            results, [i for i, _ in to_create]
            + [i for i, _, _ in to_complete])

        creatable = [(i, v) for i, v in to_create if results[i] is None]
        completable = [
            (i, v, p) for i, v, p in to_complete if results[i] is None]
        if creatable:
            vlist = [cls._record_values(v) for _, v in creatable]
            ids = cls._insert(vlist)
            if ids is None:
                ids = [r.id for r in cls.create(vlist)]
            for (index, _), record_values, id_ in zip(
                    creatable, vlist, ids, strict=True):
                results[index] = cls._result(
                    'created', dict(record_values, id=id_))
        for index, values, previous in completable:
            record_values = cls._record_values(values)
            for name in ['uuid', 'company', 'station', 'state']:
                record_values.pop(name, None)
            cls.write([previous], record_values)
            if values['flags']:
                cls.flag([previous])
            else:
                cls.finish([previous])
            results[index] = previous.ingest_result('completed')
        for index, result in enumerate(results):
            if isinstance(result, tuple):
                first = results[result[1]]
                results[index] = dict(first, status='duplicate')
        done = [
            r['id'] for r in results
            if r['status'] in {'created', 'completed'}
            and r['state'] in {'to_pay', 'review'}]
        if done:
            # a fill of a nozzle paid in advance is paid by it
            Pool().get('fuel.payment.prepay').capture(cls.browse(done))
        return results

    @staticmethod
    def _error_result(item, exception):
        uuid = item.get('uuid') if isinstance(item, dict) else None
        return {
            'uuid': uuid, 'status': 'error', 'id': None, 'state': None,
            'amount_due': None, 'flags': [], 'message': exception.message,
            }

    def ingest_result(self, status):
        return self._result(status, {
                'uuid': self.uuid,
                'id': self.id,
                'state': self.state,
                'amount_due': self.amount_due,
                'flags': self.flags,
                })

    @staticmethod
    def _result(status, values):
        "The ingestion result of the transaction values (as stored)"
        return {
            'uuid': values['uuid'],
            'status': status,
            'id': values['id'],
            'state': values['state'],
            'amount_due': values['amount_due'],
            # stored sorted and without repeats, as MultiSelection does
            'flags': sorted(set(values['flags'] or [])),
            'message': None,
            }

    @classmethod
    def _insert(cls, vlist):
        """Insert the complete values of new transactions, made by
        `_resolve`, in bulk and return their ids in order; or return
        None, having inserted nothing, when a value would fail a check of
        create's validation or the database cannot return the ids, for
        `create` to refuse or insert them

        Does what ModelSQL.create does with such values (access checks,
        defaults, the SQL constraint errors, modification checks and
        hooks, triggers) except re-reading each record to validate it:
        the values come from records of this transaction, the shift from
        the station's, and `_insertable` vouches for the rest."""
        pool = Pool()
        Company = pool.get('company.company')
        Trigger = pool.get('ir.trigger')
        transaction = Transaction()
        if (cls._history or cls._path_fields or cls._mptt_fields
                or not _has_returning(transaction.database)):
            return None
        currency_digits = {
            c.id: c.currency.get_digits()
            for c in Company.browse({v['company'] for v in vlist})}
        if not all(
                cls._insertable(v, currency_digits[v['company']])
                for v in vlist):
            return None
        vlist = cls._before_create(vlist)
        names = sorted(set().union(*vlist))
        missing = [
            n for n, f in cls._fields.items()
            if n not in names and n not in {
                'id', 'create_uid', 'create_date', 'write_uid',
                'write_date'}
            and not (isinstance(f, fields.Function) and not f.setter)]
        defaults = cls._clean_defaults(
            cls.default_get(missing, with_rec_name=False))
        names += sorted(defaults)
        field_list = [cls._fields[n] for n in names]
        if any(hasattr(f, 'set') or getattr(f, 'translate', False)
                for f in field_list):
            raise NotImplementedError(names)

        table = cls.__table__()
        columns = [table.create_uid, table.create_date] + [
            Column(table, n) for n in names]
        user = transaction.user
        rows = [
            [user] + [
                f.sql_format(values[n] if n in values else defaults[n])
                for n, f in zip(names, field_list, strict=True)]
            for values in vlist]
        cursor = transaction.connection.cursor()
        try:
            # the ids from the sequence, as ModelSQL.create does where the
            # backend gives them, then one statement executed for every
            # row (psycopg pipelines them) instead of a statement of
            # thousands of parameters that it parses again each batch
            ids = transaction.database.nextid(
                transaction.connection, cls._table, count=len(rows))
            if isinstance(ids, int):
                ids = [ids]
            if ids is not None:
                query, _ = tuple(table.insert(
                        columns + [table.id],
                        [[Literal(None), CurrentTimestamp()]
                            + [Literal(None)] * len(names)
                            + [Literal(None)]]))
                cursor.executemany(query, [
                        row + [id_]
                        for row, id_ in zip(rows, ids, strict=True)])
            else:
                ids = cls._insert_returning(table, columns, rows, vlist)
        except backend.DatabaseIntegrityError as exception:
            # the failed statement aborted the transaction
            with transaction.new_transaction():
                cls._raise_constraint_error(exception)
            raise

        check_access = transaction.user and transaction.check_access
        with without_check_access():
            triggers = Trigger.get_triggers(cls.__name__, 'create')
            for sub_ids in grouped_slice(
                    ids, min(record_cache_size(transaction), BROWSE)):
                records = cls.browse(sub_ids)
                cls.check_modification(
                    'create', records, external=check_access)
                cls._compute_fields(records)
                cls.on_modification('create', records)
                for trigger in triggers:
                    trigger.queue_trigger_action(records)
            transaction.create_records[cls.__name__].extend(ids)
        return ids

    @classmethod
    def _insert_returning(cls, table, columns, rows, vlist):
        "Insert rows with RETURNING and return the ids in vlist's order"
        # bare column names: SQLite refuses the table alias that python-sql
        # qualifies RETURNING columns with, and As writes only the name
        returning = [As(table.id, 'id'), As(table.uuid, 'uuid')]
        cursor = Transaction().connection.cursor()
        now = CurrentTimestamp()
        ids = {}
        for sub in grouped_slice(
                rows, backend.MAX_QUERY_PARAMS // len(columns)):
            cursor.execute(*table.insert(
                    columns, [[r[0], now, *r[1:]] for r in sub], returning))
            ids.update((u, i) for i, u in cursor)
        return [ids[v['uuid']] for v in vlist]

    @classmethod
    def _insertable(cls, values, currency_digits):
        """Whether the values pass the checks create's validation does but
        `_resolve` does not ensure: digits, forbidden characters and
        validate_fields' discount rule"""
        for name, value in values.items():
            if value is None:
                continue
            field = cls._fields[name]
            digits = getattr(field, 'digits', None)
            if digits == 'currency':
                digits = currency_digits
            elif digits is not None and not isinstance(digits, tuple):
                return False
            if digits and not _fits(value, digits):
                return False
            forbidden = getattr(field, 'forbidden_chars', None)
            if (forbidden and isinstance(value, str)
                    and any(c in value for c in forbidden)):
                return False
        amount = values['amount']
        return values['discount'] >= 0 and (
            amount is None or values['discount'] <= amount)

    @classmethod
    def _raise_constraint_error(cls, exception):
        "Raise the error of the SQL constraint that refused an INSERT"
        # as ModelSQL does: PostgreSQL names the constraint, SQLite the
        # columns of a unique index
        for name, _, error in cls._sql_constraints:
            name = backend.TableHandler.convert_name(
                cls._table + '_' + name)
            if name in str(exception):
                raise SQLConstraintError(gettext(error)) from exception
        for _, constraint, error in cls._sql_constraints:
            if (isinstance(constraint, Unique)
                    and all(isinstance(c, Column) for c in constraint.columns)
                    and all(c.name in str(exception)
                        for c in constraint.columns)):
                raise SQLConstraintError(gettext(error)) from exception

    @classmethod
    def _parse_item(cls, item):
        "Return the values of item, or raise IngestError with the reason"
        if not isinstance(item, dict):
            raise IngestError(gettext('fuel_payment.msg_ingest_item_type'))
        uuid = item.get('uuid')
        try:
            uuid = str(uuid_.UUID(str(uuid)))
        except ValueError:
            raise IngestError(gettext(
                    'fuel_payment.msg_ingest_uuid', uuid=uuid)) from None
        values = {'uuid': uuid, 'item': item}
        for key, name in ITEM_DECIMALS.items():
            try:
                values[name] = to_decimal(item.get(key))
            except (ValueError, InvalidOperation, TypeError):
                raise IngestError(gettext(
                        'fuel_payment.msg_ingest_number',
                        field=key, value=item.get(key))) from None
        for key, name in ITEM_DATES.items():
            try:
                values[name] = to_datetime(item.get(key))
            except (ValueError, TypeError, KeyError):
                raise IngestError(gettext(
                        'fuel_payment.msg_ingest_date',
                        field=key, value=item.get(key))) from None
        status = item.get('status') or 'completed'
        if status not in {'completed', 'fuelling'}:
            raise IngestError(gettext(
                    'fuel_payment.msg_ingest_status', status=status))
        values['status'] = status
        if status == 'completed':
            for name in ['quantity', 'end_date']:
                if values[name] is None:
                    raise IngestError(gettext(
                            'fuel_payment.msg_ingest_required',
                            field=name))
        elif values['quantity'] is None:
            values['quantity'] = Decimal(0)
        for key in ['station', 'nozzle']:
            value = item.get(key)
            if value is None and key == 'station':
                raise IngestError(gettext(
                        'fuel_payment.msg_ingest_required', field=key))
            try:
                values[key] = int(value) if value is not None else None
            except (TypeError, ValueError):
                raise IngestError(gettext(
                        'fuel_payment.msg_ingest_number',
                        field=key, value=value)) from None
        for key in ['dispenser_reference', 'plate']:
            value = item.get(key)
            values[key] = str(value)[:64] if value is not None else None
        return values

    @classmethod
    def _existing(cls, uuids):
        "Return {uuid: (id, state)} of the transactions already stored"
        table = cls.__table__()
        cursor = Transaction().connection.cursor()
        existing = {}
        uuids = sorted(uuids)
        for i in range(0, len(uuids), CHUNK):
            cursor.execute(*table.select(
                    table.uuid, table.id, table.state,
                    where=table.uuid.in_(uuids[i:i + CHUNK])))
            existing.update((u, (id_, s)) for u, id_, s in cursor)
        return existing

    @classmethod
    def _resolve(cls, values_list, results, indexes):
        """Fill in station, nozzle, grade, shift, price, amounts and flags
        of values_list; put an error in results for those refused"""
        pool = Pool()
        Station = pool.get('fuel.station')
        Nozzle = pool.get('fuel.station.nozzle')
        Shift = pool.get('fuel.station.shift')
        Configuration = pool.get('fuel.payment.configuration')
        if not values_list:
            return
        tolerance = Configuration(1).amount_tolerance

        # stations the caller may see; record rules apply over RPC
        station_ids = {v['station'] for v in values_list}
        stations = {s.id: s for s in Station.search([
                    ('id', 'in', list(station_ids)),
                    ])}
        nozzles = {
            (n.station.id, n.station_number): n
            for n in Nozzle.search([
                    ('station', 'in', list(stations)),
                    ])}
        shifts = {
            s.station.id: s for s in Shift.search([
                    ('station', 'in', list(stations)),
                    ('state', '=', 'open'),
                    ])}
        prices = PriceTable(list(stations.values()))
        by_nozzle = defaultdict(list)
        for values, index in zip(values_list, indexes, strict=True):
            station = stations.get(values['station'])
            if station is None:
                results[index] = cls._error_result(
                    values['item'], IngestError(gettext(
                            'fuel_payment.msg_ingest_station',
                            station=values['station'])))
                continue
            flags = []
            values['station'] = station
            values['company'] = station.company
            values['shift'] = shifts.get(station.id)
            nozzle = nozzles.get((station.id, values['nozzle']))
            values['nozzle_number'] = values.pop('nozzle')
            values['nozzle'] = nozzle
            values['grade'] = nozzle.grade if nozzle else None
            if nozzle is None:
                flags.append('unknown_nozzle')
            values['price'] = values['unit_price'] = None
            values['amount'] = values['amount_due'] = None
            if values['status'] == 'completed':
                if values['quantity'] <= 0:
                    flags.append('quantity_not_positive')
                if nozzle is not None:
                    price, unit_price = prices.get(
                        station, nozzle.grade, values['end_date'])
                    if price is None:
                        flags.append('no_price')
                    else:
                        currency = station.company.currency
                        values['price'] = price
                        # at the field's digits on every backend
                        values['unit_price'] = round_price(unit_price)
                        values['amount'] = currency.round(
                            values['quantity'] * unit_price)
                        values['amount_due'] = values['amount']
                        reported = values['reported_amount']
                        if (reported is not None
                                and abs(reported - values['amount'])
                                > tolerance):
                            flags.append('amount_mismatch')
                    by_nozzle[nozzle].append(values)
                    start = values['totalizer_start']
                    end = values['totalizer_end']
                    if (start is not None and end is not None
                            and end - start != values['quantity']):
                        flags.append('totalizer_quantity')
            values['flags'] = flags
        cls._check_totalizers(by_nozzle)
        for values in values_list:
            if isinstance(values['station'], int):
                continue
            if values['status'] == 'fuelling':
                values['state'] = 'fuelling'
            else:
                values['state'] = 'review' if values['flags'] else 'to_pay'

    @classmethod
    def _check_totalizers(cls, by_nozzle):
        "Flag gaps and overlaps with the previous fill of each nozzle"
        table = cls.__table__()
        cursor = Transaction().connection.cursor()
        for nozzle, values_list in by_nozzle.items():
            values_list.sort(key=lambda v: v['end_date'])
            first = values_list[0]
            cursor.execute(*table.select(
                    table.totalizer_end,
                    where=(table.nozzle == nozzle.id)
                    & (table.end_date < first['end_date'])
                    & (table.state != 'cancelled')
                    & (table.totalizer_end != None),  # noqa: E711
                    order_by=[table.end_date.desc], limit=1))
            row = cursor.fetchone()
            previous_end = to_decimal(row[0]) if row else None
            for values in values_list:
                start = values['totalizer_start']
                if previous_end is not None and start is not None:
                    if start > previous_end:
                        values['flags'].append('totalizer_gap')
                    elif start < previous_end:
                        values['flags'].append('totalizer_overlap')
                if values['totalizer_end'] is not None:
                    previous_end = values['totalizer_end']

    @classmethod
    def _record_values(cls, values):
        record = {
            'uuid': values['uuid'],
            'company': values['company'].id,
            'station': values['station'].id,
            'shift': values['shift'].id if values['shift'] else None,
            'nozzle': values['nozzle'].id if values['nozzle'] else None,
            'nozzle_number': values['nozzle_number'],
            'grade': values['grade'].id if values['grade'] else None,
            'price': values['price'].id if values['price'] else None,
            'state': values['state'],
            'flags': values['flags'],
            'discount': Decimal(0),
            }
        for name in [
                'dispenser_reference', 'start_date', 'end_date', 'quantity',
                'reported_unit_price', 'reported_amount', 'totalizer_start',
                'totalizer_end', 'unit_price', 'amount', 'amount_due',
                'plate']:
            record[name] = values[name]
        return record


class PriceTable:
    """The price sets in force at some stations, loaded once per batch and
    answering as PriceSet.get_price does"""

    def __init__(self, stations):
        pool = Pool()
        Line = pool.get('fuel.station.price.line')
        self.lines = defaultdict(list)
        companies = {s.company.id for s in stations}
        if not companies:
            return
        lines = Line.search([
                ('price.company', 'in', list(companies)),
                ('price.state', 'in', IN_FORCE),
                ])
        for line in lines:
            price = line.price
            key = (price.company.id, line.grade.id)
            # station sets sort after operator sets at equal time and win
            self.lines[key].append((
                    price.effective_date, price.scope == 'station',
                    price.station.id if price.station else None,
                    price, line.unit_price))
        for entries in self.lines.values():
            entries.sort(key=lambda e: (e[0], e[1]))

    def get(self, station, grade, date):
        entries = self.lines.get((station.company.id, grade.id), [])
        position = bisect.bisect_right(
            [e[0] for e in entries], date)
        for entry in reversed(entries[:position]):
            _, is_station, station_id, price, unit_price = entry
            if not is_station or station_id == station.id:
                return price, unit_price
        return None, None


class TransactionCancelStart(ModelView):
    "Void Fuelling Transactions"
    __name__ = 'fuel.payment.transaction.cancel.start'
    reason = fields.Text("Reason", required=True)


class TransactionCancel(Wizard):
    "Void Fuelling Transactions"
    __name__ = 'fuel.payment.transaction.cancel'
    start = StateView(
        'fuel.payment.transaction.cancel.start',
        'fuel_payment.transaction_cancel_start_view_form', [
            Button("Cancel", 'end', 'tryton-cancel'),
            Button("Void", 'void', 'tryton-ok', default=True),
            ])
    void = StateTransition()

    def transition_void(self):
        self.model.void(self.records, self.start.reason)
        return 'end'



class CreateOrder(Wizard):
    "Pay Fuelling Transactions"
    __name__ = 'fuel.payment.transaction.order'
    start_state = 'open_'
    open_ = StateAction('fuel_payment.act_order_form')

    def do_open_(self, action):
        pool = Pool()
        Order = pool.get('fuel.payment.order')
        order = Order.create_for(self.records)
        action['res_id'] = [order.id]
        action['views'].reverse()
        return action, {}
