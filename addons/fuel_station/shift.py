# This file is part of fuelpay.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
import datetime as dt
from decimal import Decimal

from sql import Literal
from sql.operators import Equal
from trytond.i18n import gettext
from trytond.model import (
    Exclude,
    ModelSQL,
    ModelView,
    Unique,
    Workflow,
    fields,
)
from trytond.pool import Pool
from trytond.pyson import Eval
from trytond.transaction import Transaction
from trytond.wizard import Button, StateAction, StateView, Wizard

from .exceptions import (
    ReadingBackwardsError,
    ShiftCloseError,
    ShiftModificationError,
)
from .station import CompanyFromStationMixin

VOLUME_DIGITS = (18, 3)
AMOUNT_DIGITS = (18, 2)


class Shift(CompanyFromStationMixin, Workflow, ModelSQL, ModelView):
    __name__ = 'fuel.station.shift'
    _rec_name = 'number'
    station = fields.Many2One(
        'fuel.station', "Station", required=True, ondelete='RESTRICT',
        states={
            'readonly': (Eval('state') != 'draft') | Eval('readings', [0]),
            })
    number = fields.Char("Number", readonly=True)
    attendants = fields.Many2Many(
        'fuel.station.shift-company.employee', 'shift', 'employee',
        "Attendants",
        domain=[('company', '=', Eval('company', -1))],
        states={
            'readonly': Eval('state') == 'closed',
            })
    start_date = fields.DateTime("Start", readonly=True)
    end_date = fields.DateTime("End", readonly=True)
    previous = fields.Many2One(
        'fuel.station.shift', "Previous Shift", readonly=True,
        domain=[('station', '=', Eval('station', -1))])
    readings = fields.One2Many(
        'fuel.station.shift.reading', 'shift', "Totalizer Readings",
        states={
            'readonly': Eval('state') == 'closed',
            })
    opened_by = fields.Many2One('res.user', "Opened by", readonly=True)
    closed_by = fields.Many2One('res.user', "Closed by", readonly=True)
    notes = fields.Text("Notes")
    state = fields.Selection([
            ('draft', "Draft"),
            ('open', "Open"),
            ('closed', "Closed"),
            ], "State", readonly=True, required=True, sort=False)
    state_string = state.translated('state')

    @classmethod
    def __setup__(cls):
        super().__setup__()
        cls.__access__.add('station')
        t = cls.__table__()
        cls._sql_constraints = [
            ('open_unique',
                Exclude(t, (t.station, Equal),
                    where=t.state == Literal('open')),
                'fuel_station.msg_shift_open_unique'),
            ]
        cls._order = [
            ('start_date', 'DESC NULLS FIRST'),
            ('id', 'DESC'),
            ]
        cls._transitions |= {
            ('draft', 'open'),
            ('open', 'closed'),
            }
        cls._buttons.update({
                'open': {
                    'invisible': Eval('state') != 'draft',
                    'depends': ['state'],
                    },
                'close': {
                    'invisible': Eval('state') != 'open',
                    'depends': ['state'],
                    },
                'hand_over': {
                    'invisible': Eval('state') != 'open',
                    'depends': ['state'],
                    },
                'fill_readings': {
                    'invisible': Eval('state') != 'draft',
                    'depends': ['state'],
                    },
                })

    @classmethod
    def default_state(cls):
        return 'draft'

    @classmethod
    def check_modification(cls, mode, shifts, values=None, external=False):
        super().check_modification(
            mode, shifts, values=values, external=external)
        if mode == 'delete':
            for shift in shifts:
                if shift.state != 'draft':
                    raise ShiftModificationError(gettext(
                            'fuel_station.msg_shift_delete_draft',
                            shift=shift.rec_name))

    @classmethod
    def last_closed(cls, station):
        shifts = cls.search([
                ('station', '=', station.id),
                ('state', '=', 'closed'),
                ], order=[('end_date', 'DESC'), ('id', 'DESC')], limit=1)
        return shifts[0] if shifts else None

    @classmethod
    @ModelView.button
    def fill_readings(cls, shifts):
        "Add a reading for every active nozzle of the station"
        pool = Pool()
        Reading = pool.get('fuel.station.shift.reading')
        to_save = []
        for shift in shifts:
            previous = shift.previous or cls.last_closed(shift.station)
            closing = {}
            if previous:
                closing = {r.nozzle: r for r in previous.readings}
            present = {r.nozzle for r in shift.readings}
            for nozzle in shift.station.nozzles:
                if nozzle.state != 'active' or nozzle in present:
                    continue
                reading = Reading(shift=shift, nozzle=nozzle)
                last = closing.get(nozzle)
                reading.opening_volume = (
                    last.closing_volume if last else Decimal(0))
                reading.opening_amount = (
                    last.closing_amount if last else Decimal(0))
                to_save.append(reading)
        Reading.save(to_save)

    @classmethod
    @ModelView.button
    @Workflow.transition('open')
    def open(cls, shifts):
        pool = Pool()
        Reading = pool.get('fuel.station.shift.reading')
        cls.fill_readings(shifts)
        for shift in shifts:
            previous = shift.previous or cls.last_closed(shift.station)
            if previous:
                Reading.check_continuity(previous, shift)
            shift.previous = previous
            shift.start_date = dt.datetime.now()
            shift.opened_by = Transaction().user
            shift.number = shift.get_number()
        cls.save(shifts)

    def get_rec_name(self, name):
        return self.number or '%s (%s)' % (
            self.station.code, self.state_string)

    def get_number(self):
        # the id keeps two shifts opened in the same second apart
        return '%s-%s-%s' % (
            self.station.code, self.start_date.strftime('%Y%m%d-%H%M'),
            self.id)

    @classmethod
    @ModelView.button
    @Workflow.transition('closed')
    def close(cls, shifts):
        for shift in shifts:
            for reading in shift.readings:
                if (reading.closing_volume is None
                        or reading.closing_amount is None):
                    raise ShiftCloseError(gettext(
                            'fuel_station.msg_shift_reading_missing',
                            shift=shift.rec_name,
                            nozzle=reading.nozzle.rec_name))
            shift.end_date = dt.datetime.now()
            shift.closed_by = Transaction().user
        cls.save(shifts)

    @classmethod
    @ModelView.button_action('fuel_station.wizard_shift_hand_over')
    def hand_over(cls, shifts):
        pass

    @classmethod
    def hand_over_to(cls, shifts, attendants=None):
        """Close the shifts and open the next ones, the closing readings
        becoming the opening readings; return the new shifts"""
        cls.close(shifts)
        next_shifts = []
        for shift in shifts:
            next_shift = cls(
                station=shift.station,
                previous=shift,
                attendants=(
                    attendants if attendants is not None
                    else shift.attendants))
            next_shifts.append(next_shift)
        cls.save(next_shifts)
        cls.open(next_shifts)
        return next_shifts


class ShiftAttendant(ModelSQL):
    __name__ = 'fuel.station.shift-company.employee'
    shift = fields.Many2One(
        'fuel.station.shift', "Shift", required=True, ondelete='CASCADE')
    employee = fields.Many2One(
        'company.employee', "Employee", required=True, ondelete='RESTRICT')


class Reading(ModelSQL, ModelView):
    __name__ = 'fuel.station.shift.reading'
    shift = fields.Many2One(
        'fuel.station.shift', "Shift", required=True, ondelete='CASCADE',
        states={
            'readonly': Eval('shift_state') != 'draft',
            })
    station = fields.Function(
        fields.Many2One('fuel.station', "Station"),
        'on_change_with_station')
    nozzle = fields.Many2One(
        'fuel.station.nozzle', "Nozzle", required=True, ondelete='RESTRICT',
        domain=[('station', '=', Eval('station', -1))],
        states={
            'readonly': Eval('shift_state') != 'draft',
            })
    unit = fields.Function(
        fields.Many2One('product.uom', "Unit"), 'on_change_with_unit')
    opening_volume = fields.Numeric(
        "Opening Volume", digits=VOLUME_DIGITS, required=True,
        domain=[('opening_volume', '>=', 0)],
        states={
            'readonly': Eval('shift_state') != 'draft',
            },
        help="The volume totalizer when the shift opens, "
        "in the unit of the grade.")
    opening_amount = fields.Numeric(
        "Opening Amount", digits=AMOUNT_DIGITS, required=True,
        domain=[('opening_amount', '>=', 0)],
        states={
            'readonly': Eval('shift_state') != 'draft',
            })
    closing_volume = fields.Numeric(
        "Closing Volume", digits=VOLUME_DIGITS,
        states={
            'readonly': Eval('shift_state') == 'closed',
            })
    closing_amount = fields.Numeric(
        "Closing Amount", digits=AMOUNT_DIGITS,
        states={
            'readonly': Eval('shift_state') == 'closed',
            })
    dispensed_volume = fields.Function(
        fields.Numeric("Dispensed Volume", digits=VOLUME_DIGITS),
        'on_change_with_dispensed_volume')
    dispensed_amount = fields.Function(
        fields.Numeric("Dispensed Amount", digits=AMOUNT_DIGITS),
        'on_change_with_dispensed_amount')
    shift_state = fields.Function(
        fields.Selection('get_shift_states', "Shift State"),
        'on_change_with_shift_state')

    @classmethod
    def __setup__(cls):
        super().__setup__()
        cls.__access__.add('shift')
        t = cls.__table__()
        cls._sql_constraints = [
            ('nozzle_unique', Unique(t, t.shift, t.nozzle),
                'fuel_station.msg_reading_nozzle_unique'),
            ]
        cls._order.insert(0, ('shift', 'ASC'))
        cls._order.insert(1, ('nozzle', 'ASC'))

    @classmethod
    def default_opening_volume(cls):
        return Decimal(0)

    @classmethod
    def default_opening_amount(cls):
        return Decimal(0)

    @classmethod
    def default_shift_state(cls):
        return 'draft'

    @classmethod
    def get_shift_states(cls):
        pool = Pool()
        Shift = pool.get('fuel.station.shift')
        return Shift.fields_get(['state'])['state']['selection']

    @fields.depends('shift', '_parent_shift.station')
    def on_change_with_station(self, name=None):
        return self.shift.station if self.shift else None

    @fields.depends('shift', '_parent_shift.state')
    def on_change_with_shift_state(self, name=None):
        return self.shift.state if self.shift else 'draft'

    @fields.depends('nozzle', '_parent_nozzle.grade')
    def on_change_with_unit(self, name=None):
        return self.nozzle.unit if self.nozzle else None

    @fields.depends('opening_volume', 'closing_volume')
    def on_change_with_dispensed_volume(self, name=None):
        if self.closing_volume is not None and self.opening_volume is not None:
            return self.closing_volume - self.opening_volume

    @fields.depends('opening_amount', 'closing_amount')
    def on_change_with_dispensed_amount(self, name=None):
        if self.closing_amount is not None and self.opening_amount is not None:
            return self.closing_amount - self.opening_amount

    def get_rec_name(self, name):
        return f'{self.shift.rec_name} / {self.nozzle.rec_name}'

    @classmethod
    def validate_fields(cls, readings, field_names):
        super().validate_fields(readings, field_names)
        for reading in readings:
            reading.check_backwards()

    def check_backwards(self):
        for kind in ['volume', 'amount']:
            opening = getattr(self, f'opening_{kind}')
            closing = getattr(self, f'closing_{kind}')
            if closing is not None and closing < opening:
                raise ReadingBackwardsError(gettext(
                        'fuel_station.msg_reading_backwards',
                        nozzle=self.nozzle.rec_name,
                        field=self.__names__(
                            f'closing_{kind}')['field'],
                        closing=closing, opening=opening))

    @classmethod
    def check_continuity(cls, previous, shift):
        "Check the opening readings follow the previous closing ones"
        closing = {r.nozzle: r for r in previous.readings}
        for reading in shift.readings:
            last = closing.get(reading.nozzle)
            if not last or last.closing_volume is None:
                continue
            if (reading.opening_volume < last.closing_volume
                    or reading.opening_amount < last.closing_amount):
                raise ReadingBackwardsError(gettext(
                        'fuel_station.msg_reading_backwards_previous',
                        nozzle=reading.nozzle.rec_name,
                        shift=previous.rec_name,
                        volume=last.closing_volume,
                        amount=last.closing_amount))

    @classmethod
    def check_modification(cls, mode, readings, values=None, external=False):
        super().check_modification(
            mode, readings, values=values, external=external)
        locked = (values or {}).keys() & {
            'shift', 'nozzle', 'opening_volume', 'opening_amount'}
        for reading in readings:
            if reading.shift.state == 'closed':
                raise ShiftModificationError(gettext(
                        'fuel_station.msg_shift_closed_modify',
                        shift=reading.shift.rec_name))
            if (reading.shift.state != 'draft'
                    and (mode in {'create', 'delete'} or locked)):
                raise ShiftModificationError(gettext(
                        'fuel_station.msg_reading_opening_locked',
                        shift=reading.shift.rec_name,
                        nozzle=reading.nozzle.rec_name))


class HandOverStart(ModelView):
    __name__ = 'fuel.station.shift.hand_over.start'
    shift = fields.Many2One('fuel.station.shift', "Shift", readonly=True)
    company = fields.Many2One('company.company', "Operator", readonly=True)
    attendants = fields.Many2Many(
        'company.employee', None, None, "Next Attendants",
        domain=[('company', '=', Eval('company', -1))],
        help="Who takes over the station.")


class HandOver(Wizard):
    __name__ = 'fuel.station.shift.hand_over'
    start = StateView(
        'fuel.station.shift.hand_over.start',
        'fuel_station.shift_hand_over_start_view_form', [
            Button("Cancel", 'end', 'tryton-cancel'),
            Button("Hand Over", 'hand_over', 'tryton-ok', default=True),
            ])
    hand_over = StateAction('fuel_station.act_shift_form')

    def default_start(self, fields):
        return {
            'shift': self.record.id,
            'company': self.record.company.id,
            'attendants': [e.id for e in self.record.attendants],
            }

    def do_hand_over(self, action):
        pool = Pool()
        Shift = pool.get('fuel.station.shift')
        next_shift, = Shift.hand_over_to(
            [self.record], attendants=list(self.start.attendants))
        action['res_id'] = [next_shift.id]
        action['views'].reverse()
        return action, {}
