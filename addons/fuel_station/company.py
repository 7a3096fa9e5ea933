# This file is part of fuelpay.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
from trytond.pool import Pool, PoolMeta


class Company(metaclass=PoolMeta):
    __name__ = 'company.company'

    @classmethod
    def on_modification(cls, mode, companies, field_names=None):
        super().on_modification(mode, companies, field_names=field_names)
        if mode == 'create':
            cls.add_to_platform_administrators(companies)

    @classmethod
    def add_to_platform_administrators(cls, companies):
        """Give the platform administrators the new operators: the company
        rules show a user only the companies listed on the user"""
        pool = Pool()
        ModelData = pool.get('ir.model.data')
        User = pool.get('res.user')
        group_id = ModelData.get_id('fuel_station', 'group_fuel_admin')
        # users without company yet get their first one from the company
        # configuration wizard, which looks for them
        users = User.search([
                ('groups', '=', group_id),
                ('companies', '!=', None),
                ])
        if users:
            User.write(users, {
                    'companies': [('add', [c.id for c in companies])],
                    })
