# This file is part of fuelpay.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
import datetime as dt

from trytond.i18n import gettext
from trytond.model import Index, ModelSQL, ModelView, Workflow, fields
from trytond.pool import Pool
from trytond.pyson import Eval

from . import wakeup
from .event import dumps, loads

COMMAND_KINDS = [
    ('authorize', "Authorize"),
    ('stop', "Stop"),
    ('price_change', "Price Change"),
    ('print', "Print"),
    ('configuration', "Configuration"),
    ]


class Command(Workflow, ModelSQL, ModelView):
    "What the server asks a box to do, kept until the box answers"
    __name__ = 'fuel.device.command'
    _states = {
        'readonly': Eval('state') != 'pending',
        }

    box = fields.Many2One(
        'fuel.device.box', "Box", required=True, ondelete='RESTRICT',
        states=_states)
    company = fields.Function(
        fields.Many2One('company.company', "Operator"),
        'on_change_with_company', searcher='search_company')
    kind = fields.Selection(
        COMMAND_KINDS, "Kind", required=True, states=_states)
    payload = fields.Text(
        "Payload", states=_states,
        help="JSON text; numbers keep their exact digits.")
    result = fields.Text("Result", readonly=True)
    sent_date = fields.DateTime("Sent on", readonly=True)
    done_date = fields.DateTime("Done on", readonly=True)
    state = fields.Selection([
            ('pending', "Pending"),
            ('sent', "Sent"),
            ('acked', "Acknowledged"),
            ('failed', "Failed"),
            ], "State", readonly=True, required=True, sort=False)

    del _states

    @classmethod
    def __setup__(cls):
        super().__setup__()
        cls.__access__.add('box')
        t = cls.__table__()
        cls._sql_indexes.add(
            Index(t,
                (t.box, Index.Range()),
                (t.state, Index.Equality(cardinality='low')),
                where=t.state.in_(['pending', 'sent'])))
        cls._order = [('id', 'ASC')]
        cls._transitions |= {
            ('pending', 'sent'),
            ('sent', 'acked'),
            ('sent', 'failed'),
            }

    @classmethod
    def default_state(cls):
        return 'pending'

    @classmethod
    def default_payload(cls):
        return '{}'

    @fields.depends('box', '_parent_box.station')
    def on_change_with_company(self, name=None):
        return self.box.station.company if self.box else None

    @classmethod
    def search_company(cls, name, clause):
        return [('box.station.' + clause[0],) + tuple(clause[1:])]

    def get_rec_name(self, name):
        return f'{self.box.identifier} #{self.id} {self.kind}'

    @classmethod
    def search_rec_name(cls, name, clause):
        return [('box.identifier',) + tuple(clause[1:])]

    @classmethod
    def prepare(cls, box, kind, payload):
        "Return a new pending command for box with payload as JSON"
        return cls(box=box, kind=kind, payload=dumps(payload))

    @classmethod
    def on_modification(cls, mode, commands, field_names=None):
        super().on_modification(mode, commands, field_names=field_names)
        if mode == 'create':
            # the boxes waiting for a command are woken at commit
            wakeup.notify([
                    c.box.id for c in commands if c.state == 'pending'])

    @classmethod
    def pending_count(cls, box):
        "The number of commands the box has not fetched yet"
        return cls.search([
                ('box', '=', box.id),
                ('state', '=', 'pending'),
                ], count=True)

    def to_json(self):
        return {
            'id': self.id,
            'kind': self.kind,
            'payload': loads(self.payload or '{}'),
            }

    @classmethod
    @Workflow.transition('sent')
    def send(cls, commands):
        cls.write(commands, {'sent_date': dt.datetime.now()})

    @classmethod
    @Workflow.transition('acked')
    def ack(cls, commands, result=None):
        cls.write(commands, {
                'done_date': dt.datetime.now(),
                'result': result,
                })
        cls.process_results(commands)

    @classmethod
    @Workflow.transition('failed')
    def fail(cls, commands, result=None):
        cls.write(commands, {
                'done_date': dt.datetime.now(),
                'result': result,
                })
        cls.process_results(commands)

    @classmethod
    def process_results(cls, commands):
        """Record what the answers of the boxes tell: the prices each
        nozzle holds after a price change, applied even when other nozzles
        of the command failed"""
        pool = Pool()
        Price = pool.get('fuel.station.price')
        Nozzle = pool.get('fuel.station.nozzle')
        for command in commands:
            if command.kind != 'price_change':
                continue
            payload = loads(command.payload or '{}')
            result = loads(command.result or 'null')
            if not isinstance(payload, dict) or not isinstance(result, dict):
                continue
            prices = Price.search([
                    ('id', '=', payload.get('price')),
                    ('company', '=', command.box.station.company.id),
                    ]) if type(payload.get('price')) is int else []
            items = result.get('nozzles')
            if not prices or not isinstance(items, list):
                continue
            price, = prices
            # only the nozzles the command priced
            numbers = {
                n.get('station_number') for n in payload.get('nozzles', [])
                if isinstance(n, dict)}
            Nozzle.hold_prices(
                command.box.station, price,
                [i for i in items
                    if isinstance(i, dict)
                    and i.get('station_number') in numbers],
                date=command.done_date)

    @classmethod
    def fetch(cls, box):
        """Return the commands the box has not answered, oldest first,
        and mark the pending ones sent

        Sent commands are given again: the box answers a command id it
        has executed without executing it twice."""
        commands = cls.search([
                ('box', '=', box.id),
                ('state', 'in', ['pending', 'sent']),
                ])
        cls.send([c for c in commands if c.state == 'pending'])
        return commands

    @classmethod
    def answer(cls, box, items):
        """Record the answers of the box to its commands

        Return one result per item: the command id and its status, the
        first answer winning over a repeat."""
        results = []
        ids = [i.get('id') for i in items if isinstance(i, dict)]
        commands = {c.id: c for c in cls.search([
                    ('box', '=', box.id),
                    ('id', 'in', [i for i in ids if type(i) is int]),
                    ])}
        for item in items:
            if not isinstance(item, dict):
                item = {}
            id_ = item.get('id')
            status = item.get('status')
            command = commands.get(id_)
            if command is None or status not in {'acked', 'failed'}:
                if command is None:
                    error = gettext(
                        'fuel_device.msg_command_unknown', command=id_)
                else:
                    error = gettext(
                        'fuel_device.msg_value_invalid',
                        field='status', value=dumps(status))
                results.append({'id': id_, 'status': 'error', 'error': error})
                continue
            if command.state in {'acked', 'failed'}:
                results.append({
                        'id': id_, 'status': 'duplicate',
                        'state': command.state, 'error': None})
                continue
            result = dumps(item.get('result'))
            if command.state == 'pending':
                cls.send([command])
            getattr(cls, 'ack' if status == 'acked' else 'fail')(
                [command], result)
            results.append({
                    'id': id_, 'status': 'accepted',
                    'state': command.state, 'error': None})
        return results
