# This file is part of fuelpay.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
import datetime as dt

from trytond.i18n import gettext
from trytond.model import ModelSQL, ModelView, Unique, Workflow, fields
from trytond.pool import Pool
from trytond.pyson import Eval
from trytond.transaction import without_check_access

from addons.fuel_station.station import CompanyFromStationMixin

from .exceptions import BoxPairError, PayloadError
from .res import APPLICATION

DEVICE_KINDS = [
    ('dispenser', "Dispenser"),
    ('payment_post', "Payment Post"),
    ('kiosk', "Kiosk"),
    ('pos_terminal', "POS Terminal"),
    ('printer', "Printer"),
    ('camera', "Camera"),
    ('charger', "Charger"),
    ]
KEY_STATES = [
    (None, ""),
    ('requested', "Requested"),
    ('validated', "Validated"),
    ('cancelled', "Cancelled"),
    ]


class Box(CompanyFromStationMixin, Workflow, ModelSQL, ModelView):
    __name__ = 'fuel.device.box'
    _rec_name = 'identifier'
    _states = {
        'readonly': Eval('state') != 'pending',
        }

    station = fields.Many2One(
        'fuel.station', "Station", required=True, ondelete='RESTRICT',
        states=_states)
    identifier = fields.Char(
        "Identifier", required=True, strip=True, states=_states,
        help="The serial number of the box, unique on the platform.")
    user = fields.Many2One(
        'res.user', "User", ondelete='RESTRICT',
        states={
            'readonly': _states['readonly'],
            'required': Eval('state').in_(['paired', 'active']),
            },
        help="The technical user the box requests its key for; "
        "the key identifies the box on every call.")
    key_state = fields.Function(fields.Selection(
            KEY_STATES, "Key State",
            help="The state of the newest key of the user "
            "for the fuel station box application."),
        'get_key_state')
    version = fields.Char("Version", readonly=True)
    last_seen = fields.DateTime("Last Seen", readonly=True)
    devices = fields.One2Many(
        'fuel.device.device', 'box', "Devices",
        states={
            'readonly': Eval('state') == 'retired',
            })
    state = fields.Selection([
            ('pending', "Pending"),
            ('paired', "Paired"),
            ('active', "Active"),
            ('retired', "Retired"),
            ], "State", readonly=True, required=True, sort=False)

    del _states

    @classmethod
    def __setup__(cls):
        super().__setup__()
        cls.__access__.add('station')
        t = cls.__table__()
        cls._sql_constraints = [
            ('identifier_unique', Unique(t, t.identifier),
                'fuel_device.msg_box_identifier_unique'),
            ('user_unique', Unique(t, t.user),
                'fuel_device.msg_box_user_unique'),
            ]
        cls._order.insert(0, ('station', 'ASC'))
        cls._order.insert(1, ('identifier', 'ASC'))
        cls._transitions |= {
            ('pending', 'paired'),
            ('paired', 'active'),
            ('pending', 'retired'),
            ('paired', 'retired'),
            ('active', 'retired'),
            }
        cls._buttons.update({
                'pair': {
                    'invisible': Eval('state') != 'pending',
                    'depends': ['state'],
                    },
                'activate': {
                    'invisible': Eval('state') != 'paired',
                    'depends': ['state'],
                    },
                'retire': {
                    'invisible': Eval('state') == 'retired',
                    'depends': ['state'],
                    },
                })

    @classmethod
    def default_state(cls):
        return 'pending'

    @classmethod
    def _applications(cls, boxes, states):
        pool = Pool()
        UserApplication = pool.get('res.user.application')
        users = [b.user.id for b in boxes if b.user]
        if not users:
            return []
        return UserApplication.search([
                ('user', 'in', users),
                ('application', '=', APPLICATION),
                ('state', 'in', states),
                ], order=[('id', 'ASC')])

    @classmethod
    def get_key_state(cls, boxes, name):
        states = dict.fromkeys(b.id for b in boxes)
        with without_check_access():
            applications = cls._applications(
                boxes, ['requested', 'validated', 'cancelled'])
            by_user = {a.user.id: a.state for a in applications}
        for box in boxes:
            if box.user:
                states[box.id] = by_user.get(box.user.id)
        return states

    @classmethod
    def seen(cls, boxes, version=None):
        "Record that the boxes called the server now"
        pool = Pool()
        Alarm = pool.get('fuel.device.alarm')
        values = {'last_seen': dt.datetime.now()}
        if version is not None:
            values['version'] = version
        cls.write(boxes, values)
        Alarm.clear_heard(boxes=boxes)

    @classmethod
    @ModelView.button
    @Workflow.transition('paired')
    def pair(cls, boxes):
        """Validate the key each box requested for its user

        The operator administrator pairs the box it has in front of it, so
        it needs no access to every user's keys."""
        pool = Pool()
        UserApplication = pool.get('res.user.application')
        with without_check_access():
            applications = cls._applications(
                boxes, ['requested', 'validated'])
            users = {a.user for a in applications}
            for box in boxes:
                if not box.user or box.user not in users:
                    raise BoxPairError(gettext(
                            'fuel_device.msg_box_no_key',
                            box=box.rec_name,
                            user=box.user.rec_name if box.user else ''))
            UserApplication.validate_([
                    a for a in applications if a.state == 'requested'])

    @classmethod
    @ModelView.button
    @Workflow.transition('active')
    def activate(cls, boxes):
        pass

    @classmethod
    @ModelView.button
    @Workflow.transition('retired')
    def retire(cls, boxes):
        "Revoke the keys of the boxes: their next call gets 401"
        pool = Pool()
        UserApplication = pool.get('res.user.application')
        with without_check_access():
            UserApplication.cancel(
                cls._applications(boxes, ['requested', 'validated']))


class Device(ModelSQL, ModelView):
    __name__ = 'fuel.device.device'
    box = fields.Many2One(
        'fuel.device.box', "Box", required=True, ondelete='CASCADE')
    station = fields.Function(
        fields.Many2One('fuel.station', "Station"),
        'on_change_with_station')
    company = fields.Function(
        fields.Many2One('company.company', "Operator"),
        'on_change_with_company', searcher='search_company')
    kind = fields.Selection(DEVICE_KINDS, "Kind", required=True)
    identifier = fields.Char(
        "Identifier", required=True, strip=True,
        help="How the box names the device, unique on the box.")
    protocol = fields.Char("Protocol", help="As reported by the box.")
    connection = fields.Char(
        "Connection", help="As reported by the box, e.g. udp://host:port.")
    dispenser = fields.Many2One(
        'fuel.station.dispenser', "Dispenser", ondelete='SET NULL',
        domain=[('station', '=', Eval('station', -1))],
        states={
            'invisible': Eval('kind') != 'dispenser',
            })
    status = fields.Selection([
            ('connected', "Connected"),
            ('disconnected', "Disconnected"),
            ('error', "Error"),
            ], "Status", readonly=True, required=True, sort=False)
    last_seen = fields.DateTime("Last Seen", readonly=True)

    @classmethod
    def __setup__(cls):
        super().__setup__()
        cls.__access__.add('box')
        t = cls.__table__()
        cls._sql_constraints = [
            ('identifier_unique', Unique(t, t.box, t.identifier),
                'fuel_device.msg_device_identifier_unique'),
            ]
        cls._order.insert(0, ('box', 'ASC'))
        cls._order.insert(1, ('identifier', 'ASC'))

    @classmethod
    def default_status(cls):
        return 'disconnected'

    @fields.depends('box', '_parent_box.station')
    def on_change_with_station(self, name=None):
        return self.box.station if self.box else None

    @fields.depends('box', '_parent_box.station')
    def on_change_with_company(self, name=None):
        return self.box.station.company if self.box else None

    @classmethod
    def search_company(cls, name, clause):
        return [('box.station.' + clause[0],) + tuple(clause[1:])]

    def get_rec_name(self, name):
        return f'{self.box.identifier} / {self.identifier}'

    @classmethod
    def report(cls, box, items):
        """Create or update the devices of box from what it reported

        The devices the box did not report are disconnected. The link to
        a dispenser is the operator's and is kept."""
        pool = Pool()
        Alarm = pool.get('fuel.device.alarm')
        Log = pool.get('fuel.device.status.log')
        now = dt.datetime.now()
        kinds = dict(DEVICE_KINDS)
        existing = {d.identifier: d for d in box.devices}
        previous = {d.id: d.status for d in box.devices}
        reported = []
        for item in items:
            identifier = cls._reported_identifier(item)
            kind = item.get('kind')
            if kind not in kinds:
                raise PayloadError(gettext(
                        'fuel_device.msg_value_invalid',
                        field='kind', value=str(kind)))
            device = existing.pop(identifier, None)
            if device is None:
                device = cls(box=box, identifier=identifier)
            device.kind = kind
            for field in ['protocol', 'connection']:
                value = item.get(field)
                setattr(
                    device, field, str(value) if value is not None else None)
            device.status = (
                'error' if item.get('status') == 'error' else 'connected')
            device.last_seen = now
            reported.append(device)
        for device in existing.values():
            device.status = 'disconnected'
        devices = reported + list(existing.values())
        cls.save(devices)
        Log.record(devices, previous)
        Alarm.heard(devices)

    @staticmethod
    def _reported_identifier(item):
        "The stripped identifier of a device item the box sent"
        if not isinstance(item, dict):
            raise PayloadError(gettext(
                    'fuel_device.msg_value_invalid',
                    field='device', value=str(item)))
        identifier = item.get('identifier')
        if not isinstance(identifier, str) or not identifier.strip():
            raise PayloadError(gettext(
                    'fuel_device.msg_value_missing', field='identifier'))
        return identifier.strip()

    @classmethod
    def heartbeat(cls, box, items):
        """Record the status of the devices the box reports

        A device reported connected or in error is seen now; the alarms of
        the devices heard again are cleared, a device in error gets one."""
        pool = Pool()
        Alarm = pool.get('fuel.device.alarm')
        Log = pool.get('fuel.device.status.log')
        now = dt.datetime.now()
        existing = {
            d.identifier: d for d in cls.search([('box', '=', box.id)])}
        previous = {d.id: d.status for d in existing.values()}
        statuses = {s for s, _ in cls.status.selection}
        devices = {}
        for item in items:
            identifier = cls._reported_identifier(item)
            status = item.get('status')
            device = existing.get(identifier)
            if device is None:
                raise PayloadError(gettext(
                        'fuel_device.msg_device_unknown',
                        device=identifier, box=box.identifier))
            if status not in statuses:
                raise PayloadError(gettext(
                        'fuel_device.msg_value_invalid',
                        field='status', value=str(status)))
            device.status = status
            if status != 'disconnected':
                device.last_seen = now
            devices[device.id] = device
        devices = list(devices.values())
        cls.save(devices)
        Log.record(devices, previous)
        Alarm.heard(devices)
        return devices

    @classmethod
    def search_rec_name(cls, name, clause):
        return [('identifier',) + tuple(clause[1:])]
