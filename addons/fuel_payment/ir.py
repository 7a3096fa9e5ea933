# This file is part of fuelpay.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
from trytond.pool import PoolMeta

from .gateway import mask_code


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


class Queue(metaclass=PoolMeta):
    __name__ = 'ir.queue'

    def run(self):
        super().run()
        data = self.data or {}
        if (data.get('model') == 'fuel.payment.gateway.payment'
                and data.get('method') == 'submit' and data.get('args')):
            # the customer's payment code travels in the task's arguments
            # only: once sent to the channel, the finished task keeps its
            # prefix, as the payment does (a failed run keeps it to retry)
            self.data = dict(data, args=[
                    mask_code(a) if isinstance(a, str) else a
                    for a in data['args']])
            self.save()
