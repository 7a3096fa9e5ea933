# This file is part of fuelpay.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""The state machine of a station device driver (lane camera, payment-post
reader): a table of allowed transitions and the status the server is told
of (connected, error, disconnected)"""
import enum
import logging
from collections.abc import Mapping

__all__ = ['DeviceStateMachine', 'IllegalTransition']

logger = logging.getLogger(__name__)


class IllegalTransition(RuntimeError):
    "A device state change the driver's table does not allow"


class DeviceStateMachine:
    """Mixin of a driver with `state`, `device` and the class attributes
    `transitions` (state -> the states it may go to), `connected_state`,
    `failing_state` and `log` (the driver module's logger)"""
    log = logger
    transitions: Mapping[enum.Enum, frozenset[enum.Enum]]
    connected_state: enum.Enum
    failing_state: enum.Enum
    state: enum.Enum

    @property
    def device(self) -> str:
        raise NotImplementedError

    @property
    def status(self) -> str:
        "As the server's device status: connected, error, disconnected"
        if self.state is self.connected_state:
            return 'connected'
        if self.state is self.failing_state:
            return 'error'
        return 'disconnected'

    def _set_state(self, state: enum.Enum) -> None:
        if state is self.state:
            return
        if state not in self.transitions[self.state]:
            self.log.error(
                "%s: illegal transition %s -> %s", self.device, self.state,
                state)
            raise IllegalTransition(f"{self.device}: {self.state} -> {state}")
        self.log.info("%s: %s -> %s", self.device, self.state, state)
        self.state = state
