# This file is part of fuelpay.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
from decimal import Decimal

from trytond.model import ModelSingleton, ModelSQL, ModelView, fields

AUTHORIZATIONS = [
    ('postpay', "Post-pay"),
    ('prepay', "Pre-pay"),
    ]


class Configuration(ModelSingleton, ModelSQL, ModelView):
    "Fuel Device Configuration"
    __name__ = 'fuel.device.configuration'
    authorization = fields.Selection(
        AUTHORIZATIONS, "Authorization", required=True,
        help="Post-pay: the box authorizes a lifted nozzle itself and the "
        "attendant collects the payment after the fill.\n"
        "Pre-pay: the box waits for an authorize command.")
    max_amount = fields.Numeric(
        "Maximum Amount", digits=(16, 2), required=True,
        domain=[('max_amount', '>', 0)],
        help="The largest amount of a fill the box authorizes itself.")
    max_volume = fields.Numeric(
        "Maximum Volume", digits=(16, 3), required=True,
        domain=[('max_volume', '>', 0)],
        help="The largest volume of a fill the box authorizes itself.")
    heartbeat_interval = fields.Integer(
        "Heartbeat Interval", required=True,
        domain=[('heartbeat_interval', '>', 0)],
        help="In seconds: how often a box reports its devices.")
    command_wait = fields.Integer(
        "Command Wait", required=True,
        domain=[('command_wait', '>', 0)],
        help="In seconds: how long a box waits for a command in one call.")
    silence_delay = fields.Integer(
        "Silence Delay", required=True,
        domain=[('silence_delay', '>', 0)],
        help="In seconds: a box or device not heard for longer "
        "gets an alarm.")

    @classmethod
    def default_authorization(cls):
        return 'postpay'

    @classmethod
    def default_max_amount(cls):
        return Decimal('500.00')

    @classmethod
    def default_max_volume(cls):
        return Decimal('200.000')

    @classmethod
    def default_heartbeat_interval(cls):
        return 30

    @classmethod
    def default_command_wait(cls):
        return 25

    @classmethod
    def default_silence_delay(cls):
        return 120

    def policy(self):
        "The policy a box follows, as the setup route answers it"
        return {
            'authorization': self.authorization,
            'max_amount': str(self.max_amount.quantize(
                    Decimal(1).scaleb(-self.__class__.max_amount.digits[1]))),
            'max_volume': str(self.max_volume.quantize(
                    Decimal(1).scaleb(-self.__class__.max_volume.digits[1]))),
            'heartbeat_interval': self.heartbeat_interval,
            'command_wait': self.command_wait,
            }
