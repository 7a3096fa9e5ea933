# This file is part of fuelpay.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""Setting a card's PIN from the client: the driver types it twice at the
counter; only its scrypt hash is kept (Card.set_pin)"""
from trytond.i18n import gettext
from trytond.model import ModelView, fields
from trytond.wizard import Button, StateTransition, StateView, Wizard

from .exceptions import WalletPinError


class SetPinStart(ModelView):
    "Set Card PIN"
    __name__ = 'fuel.payment.wallet.card.set_pin.start'

    card = fields.Many2One(
        'fuel.payment.wallet.card', "Card", readonly=True)
    pin = fields.Char(
        "PIN", required=True, strip=False,
        help="4 to 6 digits, typed by the card holder.")
    confirmation = fields.Char(
        "Confirmation", required=True, strip=False,
        help="The same PIN again.")


class SetPin(Wizard):
    "Set Card PIN"
    __name__ = 'fuel.payment.wallet.card.set_pin'

    start = StateView(
        'fuel.payment.wallet.card.set_pin.start',
        'fuel_payment.card_set_pin_start_view_form', [
            Button("Cancel", 'end', 'tryton-cancel'),
            Button("Set", 'set_', 'tryton-ok', default=True),
            ])
    set_ = StateTransition()

    def default_start(self, fields):
        return {'card': self.record.id}

    def transition_set_(self):
        pin, confirmation = self.start.pin, self.start.confirmation
        # the wizard's session must not keep the PIN
        self.start.pin = self.start.confirmation = None
        if pin != confirmation:
            raise WalletPinError(gettext(
                    'fuel_payment.msg_card_pin_confirmation',
                    card=self.record.rec_name))
        self.record.set_pin(pin)
        return 'end'
