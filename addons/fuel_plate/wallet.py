# This file is part of fuelpay.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
from trytond.pool import Pool, PoolMeta
from trytond.transaction import Transaction, without_check_access


class Card(metaclass=PoolMeta):
    __name__ = 'fuel.payment.wallet.card'

    def check_pin(self, pin):
        """An active frictionless agreement of the card stands for its
        PIN: the member agreed to be charged without typing it

        The agreement comes in a context key starting with '_', which
        RPC clients cannot set."""
        pool = Pool()
        Agreement = pool.get('fuel.plate.agreement')
        agreement_id = Transaction().context.get('_fuel_plate_agreement')
        if agreement_id is not None and not self.pin_locked:
            with without_check_access():
                agreements = Agreement.search([
                        ('id', '=', agreement_id),
                        ('card', '=', self.id),
                        ('state', '=', 'active'),
                        ], limit=1)
            if agreements:
                return
        return super().check_pin(pin)
