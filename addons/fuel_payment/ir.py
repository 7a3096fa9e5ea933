# This file is part of fuelpay.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
from trytond.pool import PoolMeta


class Cron(metaclass=PoolMeta):
    __name__ = 'ir.cron'

    @classmethod
    def __setup__(cls):
        super().__setup__()
        cls.method.selection.append(
            ('fuel.payment.gateway.payment|check_pending',
                "Query the Gateway Payments Being Paid"))
        cls.method.selection.append(
            ('fuel.payment.reconciliation|fetch_bills',
                "Reconcile Yesterday's Payment Channel Bills"))
