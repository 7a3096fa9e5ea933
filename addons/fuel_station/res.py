# This file is part of fuelpay.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
from trytond.cache import Cache
from trytond.model import ModelSQL, fields
from trytond.pool import Pool, PoolMeta
from trytond.pyson import Eval
from trytond.transaction import Transaction


class User(metaclass=PoolMeta):
    __name__ = 'res.user'
    stations = fields.Many2Many(
        'fuel.station-res.user', 'user', 'station', "Fuel Stations",
        domain=[
            ('company', 'in', Eval('companies', [])),
            ],
        help="The stations whose data the user may see "
        "as station manager or attendant.")
    _get_stations_cache = Cache(
        __name__ + '.get_stations', context=False)

    @classmethod
    def get_stations(cls):
        "Return an ordered tuple of the station ids of the user"
        transaction = Transaction()
        user_id = transaction.user
        stations = cls._get_stations_cache.get(user_id)
        if stations is not None:
            return stations
        if user_id:
            stations = tuple(sorted(s.id for s in cls(user_id).stations))
        else:
            stations = ()
        return cls._get_stations_cache.set(user_id, stations)

    @classmethod
    def on_modification(cls, mode, users, field_names=None):
        super().on_modification(mode, users, field_names=field_names)
        if mode in {'write', 'delete'}:
            cls._get_stations_cache.clear()


class UserStation(ModelSQL):
    __name__ = 'fuel.station-res.user'
    station = fields.Many2One(
        'fuel.station', "Station", ondelete='CASCADE', required=True)
    user = fields.Many2One(
        'res.user', "User", ondelete='CASCADE', required=True)

    @classmethod
    def on_modification(cls, mode, records, field_names=None):
        pool = Pool()
        User = pool.get('res.user')
        super().on_modification(mode, records, field_names=field_names)
        User._get_stations_cache.clear()
