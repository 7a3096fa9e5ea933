# This file is part of fuelpay.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""Alarms of boxes and devices, the history of device statuses and the
availability computed from it"""
import datetime as dt

from sql import Cast, Literal, Null, Select, Union
from sql.aggregate import Min, Sum
from sql.conditionals import Case, Coalesce, Greatest, Least
from sql.functions import CurrentTimestamp, Extract
from trytond.model import Index, ModelSQL, ModelView, Workflow, fields
from trytond.pool import Pool
from trytond.pyson import Eval
from trytond.transaction import Transaction

from .event import dumps, loads

ALARM_KINDS = [
    ('box_silent', "Box Silent"),
    ('device_silent', "Device Silent"),
    ('device_error', "Device Error"),
    ('dispenser', "Dispenser Alarm"),
    ]
DEVICE_STATUSES = [
    ('connected', "Connected"),
    ('disconnected', "Disconnected"),
    ('error', "Error"),
    ]
# The availability is computed over the last days only: one row per
# device and day, and a calendar of that many days built for each query.
AVAILABILITY_DAYS = 366


class Alarm(Workflow, ModelSQL, ModelView):
    "Something wrong with a box or one of its devices"
    __name__ = 'fuel.device.alarm'

    box = fields.Many2One(
        'fuel.device.box', "Box", required=True, readonly=True,
        ondelete='CASCADE')
    device = fields.Many2One(
        'fuel.device.device', "Device", readonly=True, ondelete='CASCADE',
        domain=[('box', '=', Eval('box', -1))])
    station = fields.Function(
        fields.Many2One('fuel.station', "Station"),
        'on_change_with_station', searcher='search_box_field')
    company = fields.Function(
        fields.Many2One('company.company', "Operator"),
        'on_change_with_company', searcher='search_box_field')
    kind = fields.Selection(
        ALARM_KINDS, "Kind", required=True, readonly=True)
    message = fields.Text("Message", readonly=True)
    payload = fields.Text(
        "Payload", readonly=True,
        help="The JSON the box reported with a dispenser alarm.")
    date = fields.DateTime("Date", required=True, readonly=True)
    cleared_date = fields.DateTime("Cleared on", readonly=True)
    state = fields.Selection([
            ('open', "Open"),
            ('cleared', "Cleared"),
            ], "State", required=True, readonly=True, sort=False)

    @classmethod
    def __setup__(cls):
        super().__setup__()
        cls.__access__.add('box')
        t = cls.__table__()
        cls._sql_indexes.add(
            Index(t,
                (t.box, Index.Range()),
                (t.kind, Index.Equality(cardinality='low')),
                where=t.state == 'open'))
        cls._order = [('date', 'DESC'), ('id', 'DESC')]
        cls._transitions |= {
            ('open', 'cleared'),
            }
        cls._buttons.update({
                'clear': {
                    'invisible': Eval('state') != 'open',
                    'depends': ['state'],
                    },
                })

    @classmethod
    def default_state(cls):
        return 'open'

    @classmethod
    def default_date(cls):
        return dt.datetime.now()

    @fields.depends('box', '_parent_box.station')
    def on_change_with_station(self, name=None):
        return self.box.station if self.box else None

    @fields.depends('box', '_parent_box.station')
    def on_change_with_company(self, name=None):
        return self.box.station.company if self.box else None

    @classmethod
    def search_box_field(cls, name, clause):
        nested = 'station.company' if name == 'company' else 'station'
        return [(f'box.{nested}' + clause[0][len(name):],)
            + tuple(clause[1:])]

    def get_rec_name(self, name):
        target = self.device.rec_name if self.device else self.box.rec_name
        return f'{target} {self.kind}'

    @classmethod
    def search_rec_name(cls, name, clause):
        return ['OR',
            [('box.identifier',) + tuple(clause[1:])],
            [('device.identifier',) + tuple(clause[1:])],
            ]

    @classmethod
    @ModelView.button
    @Workflow.transition('cleared')
    def clear(cls, alarms):
        cls.write(alarms, {'cleared_date': dt.datetime.now()})

    @classmethod
    def _open_keys(cls, kinds):
        return {
            (a.box.id, a.device.id if a.device else None, a.kind): a
            for a in cls.search([
                    ('state', '=', 'open'),
                    ('kind', 'in', kinds),
                    ], order=[])}

    @classmethod
    def open_once(cls, targets, kind, message=None):
        """Open an alarm of kind for each (box, device) of targets that
        has none open"""
        keys = cls._open_keys([kind])
        alarms, seen = [], set()
        for box, device in targets:
            key = (box.id, device.id if device else None, kind)
            if key in keys or key in seen:
                continue
            seen.add(key)
            alarms.append(cls(
                    box=box, device=device, kind=kind, message=message))
        cls.save(alarms)
        return alarms

    @classmethod
    def clear_heard(cls, boxes=None, devices=None, kinds=None):
        """Clear the open silence and error alarms of boxes and devices
        heard again"""
        domain = [('state', '=', 'open')]
        if kinds is not None:
            domain.append(('kind', 'in', kinds))
        targets = []
        if boxes:
            targets.append([
                    ('box', 'in', [b.id for b in boxes]),
                    ('device', '=', None),
                    ('kind', '=', 'box_silent'),
                    ])
        if devices:
            targets.append([
                    ('device', 'in', [d.id for d in devices]),
                    ('kind', 'in', ['device_silent', 'device_error']),
                    ])
        if not targets:
            return []
        alarms = cls.search(domain + [['OR', *targets]], order=[])
        cls.clear(alarms)
        return alarms

    @classmethod
    def heard(cls, devices):
        """Open or clear the alarms of the devices a box reported with
        their new status"""
        cls.clear_heard(
            devices=[d for d in devices if d.status == 'connected'])
        cls.clear_heard(
            devices=[d for d in devices if d.status == 'error'],
            kinds=['device_silent'])
        cls.open_once(
            [(d.box, d) for d in devices if d.status == 'error'],
            'device_error')

    @classmethod
    def check_silence(cls):
        """Cron: open one alarm per active box, and per device of a box
        still heard, silent for longer than the silence delay; clear those
        heard again"""
        pool = Pool()
        Box = pool.get('fuel.device.box')
        Device = pool.get('fuel.device.device')
        Configuration = pool.get('fuel.device.configuration')
        delay = dt.timedelta(seconds=Configuration(1).silence_delay)
        threshold = dt.datetime.now() - delay

        def silent(record):
            return not record.last_seen or record.last_seen < threshold

        boxes = Box.search([('state', '=', 'active')])
        silent_boxes = [b for b in boxes if silent(b)]
        heard_boxes = [b for b in boxes if not silent(b)]
        devices = Device.search([('box', 'in', [b.id for b in heard_boxes])])
        silent_devices = [d for d in devices if silent(d)]
        heard_devices = [d for d in devices if not silent(d)]
        cls.clear_heard(
            boxes=heard_boxes, devices=heard_devices,
            kinds=['box_silent', 'device_silent'])
        cls.open_once([(b, None) for b in silent_boxes], 'box_silent')
        cls.open_once([(d.box, d) for d in silent_devices], 'device_silent')

    @classmethod
    def from_events(cls, events):
        """Open a dispenser alarm for each alarm event and mark the events
        processed"""
        pool = Pool()
        Event = pool.get('fuel.device.event')
        alarms = []
        for event in events:
            devices = {d.identifier: d for d in event.box.devices}
            payload = loads(event.payload or 'null')
            message = (
                payload.get('message') if isinstance(payload, dict)
                else None)
            if not isinstance(message, str):
                message = dumps(payload)
            alarms.append(cls(
                    box=event.box,
                    device=devices.get(event.device),
                    kind='dispenser',
                    message=message,
                    payload=event.payload,
                    date=event.device_time or event.received_date))
            event.state = 'processed'
        cls.save(alarms)
        Event.save(events)
        return alarms


class StatusLog(ModelSQL, ModelView):
    "A change of status of a device"
    __name__ = 'fuel.device.status.log'
    device = fields.Many2One(
        'fuel.device.device', "Device", required=True, readonly=True,
        ondelete='CASCADE')
    status = fields.Selection(
        DEVICE_STATUSES, "Status", required=True, readonly=True)
    date = fields.DateTime("Date", required=True, readonly=True)

    @classmethod
    def __setup__(cls):
        super().__setup__()
        cls.__access__.add('device')
        t = cls.__table__()
        cls._sql_indexes.add(
            Index(t,
                (t.device, Index.Range()),
                (t.date, Index.Range())))
        cls._order = [('date', 'DESC'), ('id', 'DESC')]

    @classmethod
    def default_date(cls):
        return dt.datetime.now()

    @classmethod
    def record(cls, devices, previous):
        """Log the status of the devices whose status differs from
        previous (a dict of device id to status)"""
        now = dt.datetime.now()
        logs = [
            cls(device=d, status=d.status, date=now) for d in devices
            if previous.get(d.id) != d.status]
        cls.save(logs)
        return logs


class Availability(ModelSQL, ModelView):
    "Share of each day a device was connected, from its status log"
    __name__ = 'fuel.device.availability'
    device = fields.Many2One(
        'fuel.device.device', "Device", required=True, readonly=True)
    box = fields.Many2One(
        'fuel.device.box', "Box", required=True, readonly=True)
    date = fields.Date("Date", readonly=True, help="In UTC.")
    availability = fields.Float(
        "Availability", digits=(1, 4), readonly=True,
        help="The share of the day (of the time passed, today) "
        "the device was connected.")

    @classmethod
    def __setup__(cls):
        super().__setup__()
        cls.__access__.add('box')
        cls._order = [('date', 'DESC'), ('device', 'ASC'), ('id', 'ASC')]

    @classmethod
    def table_query(cls):
        """Each interval between two status changes of a device, cut at
        the days of a calendar; the connected seconds over the seconds of
        the day"""
        pool = Pool()
        Log = pool.get('fuel.device.status.log')
        Device = pool.get('fuel.device.device')
        log = Log.__table__()
        following = Log.__table__()
        device = Device.__table__()
        cursor = Transaction().connection.cursor()
        now = dt.datetime.now()
        today = now.date()

        cursor.execute(*log.select(Min(log.date)))
        first, = cursor.fetchone()
        if isinstance(first, str):
            first = dt.datetime.fromisoformat(first)
        first_day = first.date() if first else today
        first_day = max(
            first_day, today - dt.timedelta(days=AVAILABILITY_DAYS - 1))

        def timestamp(value):
            return Log.date.sql_cast(Literal(value))

        days = []
        day = first_day
        while day <= today:
            start = dt.datetime.combine(day, dt.time())
            end = min(start + dt.timedelta(days=1), now)
            days.append(Select([
                        cls.date.sql_cast(Literal(day)).as_('day'),
                        Literal(day.toordinal()).as_('ordinal'),
                        timestamp(start).as_('start'),
                        timestamp(end).as_('end'),
                        ]))
            day += dt.timedelta(days=1)
        calendar = Union(*days, all_=True) if len(days) > 1 else days[0]
        next_date = following.select(
            Min(following.date),
            where=(following.device == log.device)
            & (following.date > log.date))
        interval = log.select(
            log.device, log.status,
            log.date.as_('start'),
            Coalesce(next_date, timestamp(now)).as_('end'))

        def epoch(value):
            return Extract('EPOCH', value)

        overlap = (
            epoch(Least(interval.end, calendar.end))
            - epoch(Greatest(interval.start, calendar.start)))
        connected = Sum(Case(
                (interval.status == 'connected', overlap), else_=Literal(0)))
        length = epoch(calendar.end) - epoch(calendar.start)
        return (interval
            .join(calendar,
                condition=(interval.start < calendar.end)
                & (interval.end > calendar.start))
            .join(device, condition=interval.device == device.id)
            .select(
                # stable over time: the device and the day's ordinal
                (Cast(interval.device, 'BIGINT') * Literal(10_000_000)
                    + calendar.ordinal).as_('id'),
                interval.device.as_('device'),
                device.box.as_('box'),
                calendar.day.as_('date'),
                cls.availability.sql_cast(
                    connected / Greatest(length, Literal(1))
                    ).as_('availability'),
                Literal(0).as_('create_uid'),
                CurrentTimestamp().as_('create_date'),
                cls.write_uid.sql_cast(Null).as_('write_uid'),
                cls.write_date.sql_cast(Null).as_('write_date'),
                group_by=[
                    interval.device, device.box, calendar.day,
                    calendar.ordinal, calendar.start, calendar.end]))
