# This file is part of fuelpay.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""Recharge bonuses (充值赠送) through fuel_payment's bonus hook"""
import datetime as dt
from decimal import Decimal

from trytond.pool import Pool, PoolMeta
from trytond.transaction import Transaction, without_check_access


class Wallet(metaclass=PoolMeta):
    __name__ = 'fuel.payment.wallet'

    @classmethod
    def recharge(cls, wallet, amount, method, station, **kwargs):
        # the hook is not told the station: pass it in the context
        with Transaction().set_context(
                fuel_promotion_station=station.id if station else None):
            return super().recharge(wallet, amount, method, station, **kwargs)

    @classmethod
    def get_recharge_bonus(cls, wallet, amount, method):
        """Return the bonus of the recharge bonus rule in force that gives
        the most: the highest tier the amount reaches of each rule"""
        pool = Pool()
        Rule = pool.get('fuel.promotion.rule')
        Member = pool.get('fuel.promotion.member')
        bonus = super().get_recharge_bonus(wallet, amount, method)
        station_id = Transaction().context.get('fuel_promotion_station')
        with without_check_access():
            rules = Rule.in_force(wallet.company, dt.datetime.now(), [
                    'recharge'])
            level = Member.level_of(wallet.company, wallet.party)
            bonuses = [
                r.get_bonus(amount) for r in rules
                if (not r.stations
                    or station_id in {s.id for s in r.stations})
                and (not r.levels or level in r.levels)]
        return max([bonus, *bonuses], default=Decimal(0))
