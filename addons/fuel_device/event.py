# This file is part of fuelpay.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
import datetime as dt
import json
from decimal import Decimal

from trytond.i18n import gettext
from trytond.model import Index, ModelSQL, ModelView, Unique, fields
from trytond.pool import Pool
from trytond.pyson import Eval

# The kinds the station service writes in its outbox (iot_box.events)
EVENT_KINDS = [
    (None, ""),
    ('transaction_completed', "Transaction Completed"),
    ('nozzle_up', "Nozzle Up"),
    ('nozzle_down', "Nozzle Down"),
    ('running_total', "Running Total"),
    ('totalizers', "Totalizers"),
    ('alarm', "Alarm"),
    ('plate_read', "Plate Read"),
    ('payment_code', "Payment Code"),
    ('authorization_expired', "Authorization Expired"),
    ]
# A uuid is 36 characters; leave room for other client formats but refuse
# to index arbitrary text.
UUID_MAX_LENGTH = 64


def dumps(value):
    "JSON text of value with Decimals written as their exact digits"
    def default(obj):
        if isinstance(obj, Decimal):
            return str(obj)
        raise TypeError(repr(obj))
    return json.dumps(value, default=default, sort_keys=True)


def loads(text):
    "Parse JSON text; numbers with a fraction become Decimal, never float"
    return json.loads(text, parse_float=Decimal)


def parse_datetime(value):
    "Return a naive UTC datetime from an ISO 8601 string"
    date = dt.datetime.fromisoformat(value)
    if date.tzinfo is not None:
        date = date.astimezone(dt.UTC).replace(tzinfo=None)
    return date


class Event(ModelSQL, ModelView):
    "The inbox of what boxes report, stored as received"
    __name__ = 'fuel.device.event'
    _rec_name = 'uuid'

    box = fields.Many2One(
        'fuel.device.box', "Box", required=True, ondelete='RESTRICT',
        readonly=True)
    company = fields.Function(
        fields.Many2One('company.company', "Operator"),
        'on_change_with_company', searcher='search_company')
    uuid = fields.Char("UUID", readonly=True, strip=False)
    seq = fields.Integer(
        "Sequence", readonly=True,
        help="The monotonic number of the event on its box.")
    kind = fields.Selection(EVENT_KINDS, "Kind", readonly=True)
    device = fields.Char("Device", readonly=True)
    device_time = fields.DateTime(
        "Device Time", readonly=True, help="In UTC, as the box dated it.")
    received_date = fields.DateTime("Received on", readonly=True)
    payload = fields.Text(
        "Payload", readonly=True,
        help="The JSON text received; numbers keep their exact digits.")
    state = fields.Selection([
            ('received', "Received"),
            ('processed', "Processed"),
            ('error', "Error"),
            ], "State", readonly=True, required=True, sort=False)
    error = fields.Text(
        "Error", readonly=True,
        states={
            'invisible': Eval('state') != 'error',
            })

    @classmethod
    def __setup__(cls):
        super().__setup__()
        cls.__access__.add('box')
        t = cls.__table__()
        cls._sql_constraints = [
            ('uuid_unique', Unique(t, t.uuid),
                'fuel_device.msg_event_uuid_unique'),
            ('seq_unique', Unique(t, t.box, t.seq),
                'fuel_device.msg_event_seq_unique'),
            ]
        cls._sql_indexes.add(
            Index(t, (t.state, Index.Equality(cardinality='low')),
                where=t.state.in_(['received', 'error'])))
        cls._order = [
            ('received_date', 'DESC'),
            ('id', 'DESC'),
            ]

    @classmethod
    def default_state(cls):
        return 'received'

    @classmethod
    def default_received_date(cls):
        return dt.datetime.now()

    @fields.depends('box', '_parent_box.station')
    def on_change_with_company(self, name=None):
        return self.box.station.company if self.box else None

    @classmethod
    def search_company(cls, name, clause):
        return [('box.station.' + clause[0],) + tuple(clause[1:])]

    @property
    def result(self):
        "The answer the box gets for this event"
        return {
            'uuid': self.uuid,
            'status': 'error' if self.state == 'error' else 'accepted',
            'error': self.error,
            }

    @classmethod
    def ingest(cls, box, items):
        """Store the items a box sent and return one result per item

        An item whose uuid is already stored creates nothing and gets the
        first result with status 'duplicate'. An item that cannot be
        accepted is stored in state error with its reason, so nothing the
        box sent is ever lost; it never stops the other items."""
        pool = Pool()
        Box = pool.get('fuel.device.box')
        # Serialize the batches of one box so a retry racing the original
        # sees its events instead of hitting the unique constraints.
        Box.lock([box])
        uuids = [
            i['uuid'] for i in items
            if isinstance(i, dict) and isinstance(i.get('uuid'), str)]
        stored = {}
        for sub in (uuids[i:i + 500] for i in range(0, len(uuids), 500)):
            for event in cls.search([('uuid', 'in', sub)]):
                stored[event.uuid] = event
        seqs = {
            e.seq: e.uuid for e in cls.search([
                    ('box', '=', box.id),
                    ('seq', 'in', [
                            i['seq'] for i in items
                            if isinstance(i, dict)
                            and type(i.get('seq')) is int]),
                    ])}
        results, to_create = [], []
        for item in items:
            values = cls._item_values(box, item)
            uuid = values['uuid']
            if uuid in stored:
                event = stored[uuid]
                if event.box == box:
                    results.append(dict(event.result, status='duplicate'))
                    continue
                values.update(
                    uuid=None, state='error',
                    error=gettext(
                        'fuel_device.msg_event_uuid_taken', uuid=uuid))
            seq = values.get('seq')
            if seq is not None and seq in seqs:
                values.update(
                    seq=None, state='error',
                    error=values.get('error') or gettext(
                        'fuel_device.msg_event_seq_taken',
                        seq=seq, uuid=seqs[seq]))
            elif seq is not None:
                seqs[seq] = uuid
            event = cls(**values)
            if event.uuid is not None:
                stored[event.uuid] = event
            to_create.append(event)
            results.append(event)
        cls.save(to_create)
        cls.process_alarms([
                e for e in to_create
                if e.kind == 'alarm' and e.state == 'received'])
        return [r.result if isinstance(r, cls) else r for r in results]

    @classmethod
    def process_alarms(cls, events):
        "Open a dispenser alarm for each alarm event"
        pool = Pool()
        Alarm = pool.get('fuel.device.alarm')
        if events:
            Alarm.from_events(events)

    @classmethod
    def _item_values(cls, box, item):
        "Return the values of an event for item, in state error if invalid"
        values = {
            'box': box,
            'uuid': None,
            'state': 'received',
            'payload': dumps(item),
            }
        errors = []
        raw = item

        def invalid(field, value):
            errors.append(gettext(
                    'fuel_device.msg_value_invalid',
                    field=field, value=dumps(value)))

        if not isinstance(item, dict):
            invalid('item', item)
            item = {}
        else:
            values['payload'] = dumps(item.get('payload'))
        for field in ['uuid', 'seq', 'kind']:
            if item.get(field) is None:
                errors.append(gettext(
                        'fuel_device.msg_value_missing', field=field))
        uuid = item.get('uuid')
        if uuid is not None:
            if isinstance(uuid, str) and 0 < len(uuid) <= UUID_MAX_LENGTH:
                values['uuid'] = uuid
            else:
                invalid('uuid', uuid)
        seq = item.get('seq')
        if seq is not None:
            if type(seq) is int and seq >= 0:
                values['seq'] = seq
            else:
                invalid('seq', seq)
        kind = item.get('kind')
        if kind is not None:
            if kind in dict(EVENT_KINDS) and kind:
                values['kind'] = kind
            else:
                invalid('kind', kind)
        device = item.get('device')
        if device is not None:
            if isinstance(device, str):
                values['device'] = device
            else:
                invalid('device', device)
        device_time = item.get('device_time')
        if device_time is not None:
            try:
                values['device_time'] = parse_datetime(device_time)
            except (TypeError, ValueError):
                invalid('device_time', device_time)
        if errors:
            values['state'] = 'error'
            values['error'] = '\n'.join(errors)
            # keep the whole item: what was wrong may be outside payload
            values['payload'] = dumps(raw)
        return values
