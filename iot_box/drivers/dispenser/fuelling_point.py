# This file is part of fuelpay.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""The fuelling point on the IFSF states, common to all dispenser drivers

A driver maps what its protocol reports to `FPState` and moves its
`FuellingPoint` with `transition`; a change the table does not allow
raises `IllegalTransition` (logged with the device id).

DART mapping (`from_dart`), DC1 status + DC3 nozzle-out bit:

=====================  ===============  ===============
DC1 status             nozzle in        nozzle out
=====================  ===============  ===============
NOT_PROGRAMMED (0)     inoperative      inoperative
RESET (1)              idle             calling
AUTHORIZED (2)         authorised       started
FILLING (4)            fuelling         fuelling
FILLING_COMPLETED (5)  idle             calling
MAX_REACHED (6)        idle             calling
SWITCHED_OFF (7)       closed           closed
SUSPENDED (8)          suspended        suspended
=====================  ===============  ===============

IFSF "started" is an authorised point whose nozzle is out but nothing
flowed yet; DART says AUTHORIZED until the first volume (then FILLING).
A completed sale (5, 6) waits for the master's RESET, but the point is
free again for the customer: idle, or calling if the nozzle is still out.
"""
from __future__ import annotations

import enum
import logging
from collections.abc import Mapping
from types import MappingProxyType

from iot_box.protocols.dart import PumpStatus

__all__ = [
    'TRANSITIONS',
    'FPState',
    'FuellingPoint',
    'IllegalTransition',
    'from_dart',
]

logger = logging.getLogger(__name__)


class FPState(enum.StrEnum):
    INOPERATIVE = 'inoperative'
    CLOSED = 'closed'
    IDLE = 'idle'
    CALLING = 'calling'
    AUTHORISED = 'authorised'
    STARTED = 'started'
    FUELLING = 'fuelling'
    SUSPENDED = 'suspended'


S = FPState
# Legal changes (a state to itself is always legal).  A master polls, so it
# may miss short states: idle/calling -> fuelling (AUTHORIZED replaced by
# FILLING before the poll) and fuelling -> idle/calling (the end of sale)
# are allowed.  What stays illegal is what no pump can do: flow without
# having been authorised from a closed or inoperative point, or going back
# from fuelling to authorised/started.
TRANSITIONS: Mapping[FPState, frozenset[FPState]] = MappingProxyType({
    S.INOPERATIVE: frozenset({S.CLOSED, S.IDLE, S.CALLING}),
    S.CLOSED: frozenset({S.INOPERATIVE, S.IDLE, S.CALLING}),
    S.IDLE: frozenset({
        S.INOPERATIVE, S.CLOSED, S.CALLING, S.AUTHORISED, S.STARTED,
        S.FUELLING}),
    S.CALLING: frozenset({
        S.INOPERATIVE, S.CLOSED, S.IDLE, S.AUTHORISED, S.STARTED,
        S.FUELLING}),
    S.AUTHORISED: frozenset({
        S.INOPERATIVE, S.CLOSED, S.IDLE, S.CALLING, S.STARTED,
        S.FUELLING}),
    S.STARTED: frozenset({
        S.INOPERATIVE, S.CLOSED, S.IDLE, S.CALLING, S.AUTHORISED,
        S.FUELLING, S.SUSPENDED}),
    S.FUELLING: frozenset({
        S.INOPERATIVE, S.IDLE, S.CALLING, S.SUSPENDED}),
    S.SUSPENDED: frozenset({
        S.INOPERATIVE, S.IDLE, S.CALLING, S.FUELLING}),
    })
# States in which a sale is under way: prices must not change
SALE_STATES = frozenset({S.AUTHORISED, S.STARTED, S.FUELLING, S.SUSPENDED})

_DART: Mapping[PumpStatus, tuple[FPState, FPState]] = MappingProxyType({
    # status: (nozzle in, nozzle out)
    PumpStatus.NOT_PROGRAMMED: (S.INOPERATIVE, S.INOPERATIVE),
    PumpStatus.RESET: (S.IDLE, S.CALLING),
    PumpStatus.AUTHORIZED: (S.AUTHORISED, S.STARTED),
    PumpStatus.FILLING: (S.FUELLING, S.FUELLING),
    PumpStatus.FILLING_COMPLETED: (S.IDLE, S.CALLING),
    PumpStatus.MAX_REACHED: (S.IDLE, S.CALLING),
    PumpStatus.SWITCHED_OFF: (S.CLOSED, S.CLOSED),
    PumpStatus.SUSPENDED: (S.SUSPENDED, S.SUSPENDED),
    })


def from_dart(status: PumpStatus, nozzle_out: bool) -> FPState:
    "The IFSF state of a DART pump (see the module's table)"
    return _DART[PumpStatus(status)][1 if nozzle_out else 0]


class IllegalTransition(RuntimeError):
    "A fuelling-point state change that TRANSITIONS does not allow"

    def __init__(self, device: str, old: FPState, new: FPState) -> None:
        super().__init__(f"{device}: illegal transition {old} -> {new}")
        self.device = device
        self.old = old
        self.new = new


class FuellingPoint:
    "The state of one fuelling point (a dispenser side) of `device`"

    def __init__(
            self, device: str,
            state: FPState = FPState.INOPERATIVE) -> None:
        self.device = device
        self.state = FPState(state)

    def transition(self, new: FPState) -> bool:
        "Move to `new`; True if the state changed.  Raises if illegal."
        new = FPState(new)
        old = self.state
        if new is old:
            return False
        if new not in TRANSITIONS[old]:
            logger.error(
                "%s: illegal transition %s -> %s", self.device, old, new)
            raise IllegalTransition(self.device, old, new)
        logger.info("%s: %s -> %s", self.device, old, new)
        self.state = new
        return True

    def resync(self, new: FPState) -> None:
        """Take the state the device reports even if the table refuses it

        Only after `transition` raised and was logged: the device is the
        truth; the box must not stop following it."""
        logger.warning(
            "%s: resynchronised %s -> %s", self.device, self.state, new)
        self.state = FPState(new)

    @property
    def in_sale(self) -> bool:
        return self.state in SALE_STATES
