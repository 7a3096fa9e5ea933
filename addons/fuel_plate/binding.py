# This file is part of fuelpay.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""The binding engine: which vehicle fuelled a transaction, charged
through its agreement when the platform is sure, asked to an attendant
when it is not"""
import datetime as dt
import uuid as uuid_
from collections import defaultdict
from decimal import Decimal

from sql import Literal
from sql.operators import Equal
from trytond.exceptions import UserError
from trytond.i18n import gettext
from trytond.model import (
    Exclude,
    Index,
    ModelSQL,
    ModelView,
    Unique,
    Workflow,
    fields,
)
from trytond.modules.currency.fields import Monetary
from trytond.pool import Pool
from trytond.pyson import Eval, If
from trytond.transaction import Transaction, without_check_access

from .exceptions import BindingError
from .read import CONFIDENCE_DIGITS

# the weight of a read by where the camera saw the vehicle: at the
# island of the nozzle it is the strongest evidence; at the entrance or
# the exit it only says the vehicle was at the station then
ZONE_WEIGHTS = {
    'island': Decimal('1.0'),
    'entrance': Decimal('0.6'),
    'exit': Decimal('0.6'),
    None: Decimal('0.3'),
    }
# a plate not enrolled is less likely to be the one we are asked about
NOT_ENROLLED_WEIGHT = Decimal('0.9')
# a second vehicle read at the same island halves the certainty: the
# attendant decides
AMBIGUITY_WEIGHT = Decimal('0.5')
SCORE_QUANTUM = Decimal('0.0001')
# namespace of the payment uuids derived from a transaction's uuid, so a
# transaction can never be charged twice through the platform
PAYMENT_NAMESPACE = uuid_.UUID('5b1d3c52-6f0e-5c8a-9d7e-2f4a1c0b8e31')
AUTHORIZE_VERSION = 1
# states where a binding holds its read: no other transaction may use it
# (a failed charge still tells which vehicle fuelled)
HOLDING_STATES = ('draft', 'bound', 'charged', 'failed')


def payment_uuid(transaction):
    "The uuid of the frictionless payment of a fuelling transaction"
    return str(uuid_.uuid5(PAYMENT_NAMESPACE, transaction.uuid))


class Binding(Workflow, ModelSQL, ModelView):
    "Plate Binding"
    __name__ = 'fuel.plate.binding'
    _states = {
        'readonly': Eval('state') != 'waiting',
        }

    company = fields.Many2One(
        'company.company', "Operator", required=True, readonly=True)
    station = fields.Many2One(
        'fuel.station', "Station", required=True, readonly=True,
        ondelete='RESTRICT')
    nozzle = fields.Many2One(
        'fuel.station.nozzle', "Nozzle", required=True, readonly=True,
        ondelete='RESTRICT')
    lift_date = fields.DateTime(
        "Nozzle Lifted on", readonly=True,
        help="In UTC, as the box dated the lift.")
    transaction = fields.Many2One(
        'fuel.payment.transaction', "Transaction", readonly=True,
        ondelete='RESTRICT')
    plate_read = fields.Many2One(
        'fuel.plate.read', "Read", ondelete='RESTRICT',
        domain=[
            If(Eval('state') == 'waiting',
                ('id', 'in', Eval('candidate_reads', [])),
                ()),
            ],
        states=_states,
        help="The plate read of the vehicle that fuelled.")
    vehicle = fields.Many2One(
        'fuel.plate.vehicle', "Vehicle", ondelete='RESTRICT',
        domain=[('company', '=', Eval('company', -1))],
        states=_states)
    agreement = fields.Many2One(
        'fuel.plate.agreement', "Agreement", readonly=True,
        ondelete='RESTRICT')
    score = fields.Numeric(
        "Score", digits=CONFIDENCE_DIGITS, readonly=True)
    candidates = fields.One2Many(
        'fuel.plate.binding.candidate', 'binding', "Candidates",
        readonly=True,
        # as they were scored: at the lift, then at the end of the fill,
        # the best first
        order=[('id', 'ASC')])
    candidate_reads = fields.Function(fields.Many2Many(
            'fuel.plate.read', None, None, "Candidate Reads"),
        'get_candidate_reads')
    image = fields.Function(
        fields.Binary("Image"), 'get_image')
    preset_amount = Monetary(
        "Preset Amount", currency='currency', digits='currency',
        readonly=True,
        help="The amount the nozzle was authorized for at the lift.")
    currency = fields.Function(
        fields.Many2One('currency.currency', "Currency"),
        'on_change_with_currency')
    command = fields.Many2One(
        'fuel.device.command', "Authorization", readonly=True,
        ondelete='RESTRICT')
    order = fields.Many2One(
        'fuel.payment.order', "Order", readonly=True, ondelete='RESTRICT')
    reason = fields.Text("Reason", readonly=True)
    decided_by = fields.Many2One('res.user', "Decided by", readonly=True)
    decided_date = fields.DateTime("Decided on", readonly=True)
    state = fields.Selection([
            ('draft', "Fuelling"),
            ('waiting', "To Confirm"),
            ('bound', "Bound"),
            ('charged', "Charged"),
            ('failed', "Charge Failed"),
            ('rejected', "Rejected"),
            ], "State", readonly=True, required=True, sort=False)
    state_string = state.translated('state')

    del _states

    @classmethod
    def __setup__(cls):
        super().__setup__()
        cls.__access__.add('station')
        t = cls.__table__()
        cls._sql_constraints = [
            # one decision per transaction: never two drivers charged
            ('transaction_unique', Unique(t, t.transaction),
                'fuel_plate.msg_binding_transaction_unique'),
            # one transaction per vehicle pass: never one driver twice
            ('read_unique',
                Exclude(t, (t.plate_read, Equal),
                    where=t.state.in_(
                        [Literal(s) for s in HOLDING_STATES])),
                'fuel_plate.msg_binding_read_unique'),
            ]
        cls._sql_indexes.update({
                Index(t, (t.nozzle, Index.Range()),
                    (t.state, Index.Equality(cardinality='low')),
                    where=t.state == 'draft'),
                Index(t, (t.state, Index.Equality(cardinality='low')),
                    where=t.state == 'waiting'),
                })
        cls._order = [('create_date', 'DESC'), ('id', 'DESC')]
        cls._transitions |= {
            ('draft', 'waiting'),
            ('draft', 'bound'),
            ('draft', 'charged'),
            ('draft', 'failed'),
            ('draft', 'rejected'),
            ('waiting', 'bound'),
            ('waiting', 'charged'),
            ('waiting', 'failed'),
            ('waiting', 'rejected'),
            }
        cls._buttons.update({
                'confirm': {
                    'invisible': Eval('state') != 'waiting',
                    'depends': ['state'],
                    },
                'reject': {
                    'invisible': Eval('state') != 'waiting',
                    'depends': ['state'],
                    },
                })

    @classmethod
    def default_state(cls):
        return 'draft'

    @fields.depends('company')
    def on_change_with_currency(self, name=None):
        return self.company.currency if self.company else None

    @fields.depends('plate_read', 'vehicle')
    def on_change_plate_read(self):
        if self.plate_read and self.plate_read.vehicle:
            self.vehicle = self.plate_read.vehicle

    @classmethod
    def get_candidate_reads(cls, bindings, name):
        # a read may be a candidate at the lift and at the end of the fill
        return {
            b.id: list(dict.fromkeys(c.plate_read.id for c in b.candidates))
            for b in bindings}

    @classmethod
    def get_image(cls, bindings, name):
        return {
            b.id: b.plate_read.image if b.plate_read else None
            for b in bindings}

    def get_rec_name(self, name):
        return '%s/%s %s' % (
            self.station.code, self.nozzle.station_number,
            self.vehicle.rec_name if self.vehicle else '?')

    # ---- the engine --------------------------------------------------

    @classmethod
    def candidates_for(cls, nozzle, start, end, exclude=None):
        """Return the scored candidates of reads of the nozzle's station
        around [start, end], best first, and whether it is ambiguous

        Each candidate is a dict of the values of a
        fuel.plate.binding.candidate; reads of another nozzle's island,
        and reads held by another binding, are left out."""
        pool = Pool()
        Configuration = pool.get('fuel.plate.configuration')
        Read = pool.get('fuel.plate.read')
        window = dt.timedelta(seconds=Configuration(1).window)
        # a binding holds its read and the other reads of that pass
        held = set()
        for binding in cls.search([
                    ('plate_read.station', '=', nozzle.station.id),
                    ('plate_read.read_date', '>=', start - 2 * window),
                    ('plate_read.read_date', '<=', end + 2 * window),
                    ('state', 'in', HOLDING_STATES),
                    ('id', '!=', exclude.id if exclude else None),
                    ]):
            held.add(binding.plate_read.id)
            held.update(
                c.plate_read.id for c in binding.candidates
                if c.plate_read.plate == binding.plate_read.plate)
        reads = Read.search([
                ('station', '=', nozzle.station.id),
                ('read_date', '>=', start - window),
                ('read_date', '<=', end + window),
                ])
        zone = nozzle.plate_zone
        candidates = []
        for read in reads:
            if read.id in held:
                continue
            kind = read.zone_kind
            if kind == 'island' and read.zone != zone:
                continue
            if read.read_date < start:
                distance = start - read.read_date
            elif read.read_date > end:
                distance = read.read_date - end
            else:
                distance = dt.timedelta(0)
            time_weight = Decimal(1) - (
                Decimal(int(distance.total_seconds()))
                / Decimal(int(window.total_seconds())))
            zone_weight = ZONE_WEIGHTS.get(kind, ZONE_WEIGHTS[None])
            agreement = (
                read.vehicle.payer_agreement() if read.vehicle else None)
            score = read.confidence * zone_weight * max(time_weight, 0)
            if agreement is None:
                score *= NOT_ENROLLED_WEIGHT
            candidates.append({
                    'read': read,
                    'vehicle': read.vehicle,
                    'agreement': agreement,
                    'plate': read.plate,
                    'zone_weight': zone_weight,
                    'time_weight': max(time_weight, Decimal(0)).quantize(
                        SCORE_QUANTUM),
                    'score': score,
                    'note': None,
                    })
        # duplicate reads of one vehicle pass count once: its best read
        by_plate = defaultdict(list)
        for candidate in candidates:
            by_plate[candidate['plate']].append(candidate)
        for same in by_plate.values():
            same.sort(key=lambda c: (-c['score'], -c['read'].id))
            for duplicate in same[1:]:
                duplicate['note'] = 'duplicate'
        islands = {
            c['plate'] for c in candidates
            if c['read'].zone_kind == 'island' and c['score'] > 0}
        ambiguous = len(islands) > 1
        for candidate in candidates:
            if ambiguous and candidate['read'].zone_kind == 'island':
                candidate['score'] *= AMBIGUITY_WEIGHT
                candidate['note'] = candidate['note'] or 'several'
            candidate['score'] = candidate['score'].quantize(SCORE_QUANTUM)
        candidates.sort(key=lambda c: (
                c['note'] == 'duplicate', -c['score'], -c['read'].id))
        return candidates, ambiguous

    @classmethod
    def _set_candidates(cls, binding, candidates, trigger):
        pool = Pool()
        Candidate = pool.get('fuel.plate.binding.candidate')
        Candidate.save([
                Candidate(
                    binding=binding, trigger=trigger,
                    plate_read=c['read'], vehicle=c['vehicle'],
                    enrolled=c['agreement'] is not None,
                    zone_weight=c['zone_weight'],
                    time_weight=c['time_weight'],
                    score=c['score'], note=c['note'])
                for c in candidates])

    @classmethod
    def _decide(cls, candidates, ambiguous):
        """Return (best candidate or None, sure, reason) of the scored
        candidates"""
        pool = Pool()
        Configuration = pool.get('fuel.plate.configuration')
        threshold = Configuration(1).threshold
        if not candidates:
            return None, False, None
        best = candidates[0]
        if ambiguous:
            return best, False, gettext('fuel_plate.msg_reason_several')
        if best['score'] < threshold:
            return best, False, gettext(
                'fuel_plate.msg_reason_low_score',
                score=best['score'], threshold=threshold)
        if best['vehicle'] is None:
            return best, False, gettext(
                'fuel_plate.msg_reason_unknown_plate', plate=best['plate'])
        return best, True, None

    @classmethod
    def on_nozzle_up(cls, box, nozzle, date):
        """Open the binding of a lifted nozzle; when sure of an enrolled
        vehicle, queue the authorization of the nozzle with a preset of
        what its agreement may charge (limit, balance)"""
        pool = Pool()
        Command = pool.get('fuel.device.command')
        # a previous lift that never became a transaction is over
        stale = cls.search([
                ('nozzle', '=', nozzle.id),
                ('state', '=', 'draft'),
                ('transaction', '=', None),
                ])
        if stale:
            cls.write(stale, {
                    'reason': gettext('fuel_plate.msg_reason_no_fill'),
                    })
            cls.drop(stale)
        candidates, ambiguous = cls.candidates_for(nozzle, date, date)
        if not candidates:
            # no vehicle seen: nothing to authorize or hold
            return None
        best, sure, reason = cls._decide(candidates, ambiguous)
        binding = cls(
            company=nozzle.station.company, station=nozzle.station,
            nozzle=nozzle, lift_date=date, reason=reason, state='draft',
            score=best['score'])
        if sure:
            binding.plate_read = best['read']
            binding.vehicle = best['vehicle']
            binding.agreement = best['agreement']
        binding.save()
        cls._set_candidates(binding, candidates, 'nozzle_up')
        if sure and binding.agreement:
            preset = binding.agreement.available()
            if preset > 0:
                binding.preset_amount = preset
                binding.command = Command.prepare(box, 'authorize', {
                        'version': AUTHORIZE_VERSION,
                        'station_number': nozzle.station_number,
                        'preset_amount': preset,
                        })
                binding.command.save()
            else:
                binding.reason = gettext(
                    'fuel_plate.msg_reason_no_funds',
                    card=binding.agreement.card.rec_name)
            binding.save()
        return binding

    @classmethod
    def on_transactions(cls, transactions):
        """Bind each completed transaction to the vehicle that fuelled:
        charge it when sure of an enrolled vehicle, queue it for an
        attendant when an enrolled vehicle may have fuelled, else record
        what was seen"""
        bindings = []
        for transaction in transactions:
            if transaction.nozzle is None or transaction.end_date is None:
                continue
            if cls.search([('transaction', '=', transaction.id)]):
                continue
            binding = cls._bind(transaction)
            if binding:
                bindings.append(binding)
        return bindings

    @classmethod
    def _bind(cls, transaction):
        nozzle = transaction.nozzle
        end = transaction.end_date
        drafts = cls.search([
                ('nozzle', '=', nozzle.id),
                ('state', '=', 'draft'),
                ('transaction', '=', None),
                ('lift_date', '<=', end),
                ], order=[('lift_date', 'DESC'), ('id', 'DESC')], limit=1)
        if drafts:
            binding, = drafts
            cls.lock([binding])
            start = binding.lift_date
        else:
            binding = None
            start = transaction.start_date or end
        candidates, ambiguous = cls.candidates_for(
            nozzle, min(start, end), end, exclude=binding)
        best, sure, reason = cls._decide(candidates, ambiguous)
        enrolled = any(c['agreement'] for c in candidates)
        if binding is None:
            if not candidates or (not sure and not enrolled):
                # nothing the platform could charge: the driver pays
                return None
            binding = cls(
                company=transaction.company, station=transaction.station,
                nozzle=nozzle, state='draft')
        binding.transaction = transaction
        binding.reason = reason
        binding.score = best['score'] if best else None
        binding.plate_read = best['read'] if sure else None
        binding.vehicle = best['vehicle'] if sure else None
        binding.agreement = best['agreement'] if sure else None
        binding.save()
        cls._set_candidates(binding, candidates, 'completed')
        if sure and binding.agreement:
            cls._charge(binding)
        elif sure:
            cls.bind([binding])
        elif enrolled:
            cls.wait([binding])
        else:
            binding.reason = reason or gettext(
                'fuel_plate.msg_reason_no_read')
            binding.save()
            cls.drop([binding])
        return binding

    @classmethod
    def _charge_error(cls, binding, transaction):
        "Return why the binding's transaction cannot be charged, or None"
        agreement = binding.agreement
        if transaction.state != 'to_pay' or transaction.order:
            return gettext(
                'fuel_plate.msg_reason_not_payable',
                transaction=transaction.rec_name,
                state=transaction.state_string)
        vehicle = binding.vehicle
        if vehicle.grades and transaction.grade not in vehicle.grades:
            return gettext(
                'fuel_plate.msg_reason_grade',
                vehicle=vehicle.rec_name,
                grade=transaction.grade.rec_name
                if transaction.grade else '?')
        if (transaction.amount_due or 0) > agreement.limit:
            return gettext(
                'fuel_plate.msg_reason_over_limit',
                amount=transaction.amount_due,
                limit=agreement.currency.round(agreement.limit))
        return None

    @classmethod
    def _charge(cls, binding):
        """Pay the transaction of binding from the card of its agreement
        by an order, as the POS does; record the refusal otherwise"""
        pool = Pool()
        Order = pool.get('fuel.payment.order')
        Method = pool.get('sale.point.payment.method')
        FuelTransaction = pool.get('fuel.payment.transaction')
        transaction = FuelTransaction(binding.transaction.id)
        FuelTransaction.lock([transaction])
        error = cls._charge_error(binding, transaction)
        agreement = binding.agreement
        if error is None:
            kind = (
                'corporate' if agreement.card.wallet.kind == 'corporate'
                else 'wallet')
            methods = Method.search([
                    ('company', '=', binding.company.id),
                    ('fuel_kind', '=', kind),
                    ], limit=1)
            if not methods:
                error = gettext(
                    'fuel_plate.msg_reason_no_method', kind=kind)
        if error is not None:
            binding.reason = error
            binding.save()
            cls.fail([binding])
            return
        method, = methods
        FuelTransaction.write([transaction], {
                'customer': agreement.party.id,
                'plate': binding.vehicle.plate,
                })
        order = Order.create_for([transaction])
        try:
            with Transaction().set_context(
                    _fuel_plate_agreement=agreement.id):
                Order.add_payment(
                    order, method, transaction.amount_due,
                    card=agreement.card.id,
                    uuid=payment_uuid(transaction))
        except UserError as exception:
            # the card refused (balance, limits, blocked): nothing was
            # paid, the order goes and the driver pays at the counter
            FuelTransaction.write([transaction], {'order': None})
            Order.delete([order])
            binding.reason = exception.message
            binding.save()
            cls.fail([binding])
            return
        binding.order = order
        binding.save()
        cls.charge([binding])
        try:
            Order.process([order])
        except UserError as exception:
            # paid but not settled (a POS set-up missing): the order
            # stays draft and fully paid for the station to settle
            binding.reason = exception.message
            binding.save()

    # ---- workflow ----------------------------------------------------

    @classmethod
    @Workflow.transition('waiting')
    def wait(cls, bindings):
        pass

    @classmethod
    @Workflow.transition('bound')
    def bind(cls, bindings):
        FuelTransaction = Pool().get('fuel.payment.transaction')
        for binding in bindings:
            if binding.transaction and binding.vehicle:
                FuelTransaction.write([binding.transaction], {
                        'plate': binding.vehicle.plate,
                        })

    @classmethod
    @Workflow.transition('charged')
    def charge(cls, bindings):
        pass

    @classmethod
    @Workflow.transition('failed')
    def fail(cls, bindings):
        pass

    @classmethod
    @Workflow.transition('rejected')
    def drop(cls, bindings):
        pass

    @classmethod
    @ModelView.button
    def confirm(cls, bindings):
        """The attendant confirms the vehicle (or the read) that fuelled:
        charged through its agreement, or only bound when it has none"""
        bindings = [b for b in cls.browse(bindings) if b.state == 'waiting']
        cls.lock(bindings)
        for binding in bindings:
            vehicle = binding.vehicle or (
                binding.plate_read.vehicle if binding.plate_read else None)
            if vehicle is None:
                raise BindingError(gettext(
                        'fuel_plate.msg_binding_vehicle_required',
                        binding=binding.rec_name))
            binding.vehicle = vehicle
            binding.agreement = vehicle.payer_agreement()
            binding.decided_by = Transaction().user
            binding.decided_date = dt.datetime.now()
            binding.save()
        with without_check_access():
            # the order and the wallet debit are the platform's
            # bookkeeping of the attendant's decision
            for binding in bindings:
                if binding.agreement:
                    cls._charge(binding)
                else:
                    cls.bind([binding])

    @classmethod
    @ModelView.button
    def reject(cls, bindings):
        "None of the candidates fuelled: the driver pays at the counter"
        cls.write(bindings, {
                'decided_by': Transaction().user,
                'decided_date': dt.datetime.now(),
                'plate_read': None,
                })
        cls.drop(bindings)


class Candidate(ModelSQL, ModelView):
    "Plate Binding Candidate"
    __name__ = 'fuel.plate.binding.candidate'

    binding = fields.Many2One(
        'fuel.plate.binding', "Binding", required=True, ondelete='CASCADE',
        readonly=True)
    company = fields.Function(
        fields.Many2One('company.company', "Operator"),
        'on_change_with_company', searcher='search_company')
    trigger = fields.Selection([
            ('nozzle_up', "Nozzle Lifted"),
            ('completed', "Transaction Completed"),
            ], "Trigger", required=True, readonly=True)
    plate_read = fields.Many2One(
        'fuel.plate.read', "Read", required=True, readonly=True,
        ondelete='RESTRICT')
    vehicle = fields.Many2One(
        'fuel.plate.vehicle', "Vehicle", readonly=True, ondelete='SET NULL')
    enrolled = fields.Boolean("Enrolled", readonly=True)
    zone_weight = fields.Numeric(
        "Zone Weight", digits=CONFIDENCE_DIGITS, readonly=True)
    time_weight = fields.Numeric(
        "Time Weight", digits=CONFIDENCE_DIGITS, readonly=True)
    score = fields.Numeric("Score", digits=CONFIDENCE_DIGITS, readonly=True)
    note = fields.Selection([
            (None, ""),
            ('duplicate', "Duplicate Read"),
            ('several', "Several Vehicles"),
            ], "Note", readonly=True)

    @classmethod
    def __setup__(cls):
        super().__setup__()
        cls.__access__.add('binding')
        cls._order = [('binding', 'DESC'), ('id', 'ASC')]

    @fields.depends('binding', '_parent_binding.company')
    def on_change_with_company(self, name=None):
        return self.binding.company if self.binding else None

    @classmethod
    def search_company(cls, name, clause):
        return [('binding.' + clause[0],) + tuple(clause[1:])]
