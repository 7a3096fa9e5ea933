# This file is part of fuelpay.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
from trytond.pool import PoolMeta


class Cron(metaclass=PoolMeta):
    __name__ = 'ir.cron'

    @classmethod
    def __setup__(cls):
        super().__setup__()
        cls.method.selection.append(
            ('fuel.promotion.coupon|expire_coupons', "Expire Coupons"))
        cls.method.selection.append(
            ('fuel.promotion.member|update_all_levels',
                "Update Member Levels"))
