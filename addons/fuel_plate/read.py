# This file is part of fuelpay.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""Camera zones and the plate reads of lane cameras"""
import datetime as dt

from trytond.model import Index, ModelSQL, ModelView, Unique, fields
from trytond.pool import Pool, PoolMeta
from trytond.pyson import Eval

from .plate import COLOURS, normalize_plate

ZONE_KINDS = [
    ('entrance', "Entrance"),
    ('island', "Island"),
    ('exit', "Exit"),
    ]
CONFIDENCE_DIGITS = (1, 4)


class Zone(ModelSQL, ModelView):
    "Camera Zone"
    __name__ = 'fuel.plate.camera.zone'

    company = fields.Many2One(
        'company.company', "Operator", required=True, readonly=True)
    station = fields.Many2One(
        'fuel.station', "Station", required=True, ondelete='CASCADE',
        domain=[('company', '=', Eval('company', -1))])
    camera = fields.Many2One(
        'fuel.device.device', "Camera", required=True, ondelete='CASCADE',
        domain=[
            ('kind', '=', 'camera'),
            ('box.station', '=', Eval('station', -1)),
            ])
    code = fields.Char(
        "Code", required=True, strip=True,
        help="The zone code of the camera's configuration on the box, "
        "e.g. island-1.")
    kind = fields.Selection(ZONE_KINDS, "Kind", required=True)
    nozzles = fields.One2Many(
        'fuel.station.nozzle', 'plate_zone', "Nozzles",
        domain=[('station', '=', Eval('station', -1))],
        states={
            'invisible': Eval('kind') != 'island',
            },
        help="The nozzles a vehicle read in this island zone fuels at.")

    @classmethod
    def __setup__(cls):
        super().__setup__()
        t = cls.__table__()
        cls._sql_constraints = [
            ('code_unique', Unique(t, t.camera, t.code),
                'fuel_plate.msg_zone_code_unique'),
            ]
        cls._order.insert(0, ('station', 'ASC'))
        cls._order.insert(1, ('code', 'ASC'))

    @classmethod
    def preprocess_values(cls, mode, values):
        pool = Pool()
        Station = pool.get('fuel.station')
        values = super().preprocess_values(mode, values)
        if values.get('station'):
            values['company'] = Station(values['station']).company.id
        return values

    @fields.depends('station', '_parent_station.company')
    def on_change_station(self):
        if self.station:
            self.company = self.station.company

    def get_rec_name(self, name):
        return '%s / %s' % (self.camera.identifier, self.code)


class Nozzle(metaclass=PoolMeta):
    __name__ = 'fuel.station.nozzle'
    plate_zone = fields.Many2One(
        'fuel.plate.camera.zone', "Plate Zone", ondelete='SET NULL',
        domain=[
            ('station', '=', Eval('station', -1)),
            ('kind', '=', 'island'),
            ],
        help="The island zone of the camera that reads the plates of the "
        "vehicles at this nozzle.")


class Read(ModelSQL, ModelView):
    "Plate Read"
    __name__ = 'fuel.plate.read'
    _rec_name = 'plate'

    uuid = fields.Char("UUID", required=True, readonly=True, strip=False)
    company = fields.Many2One(
        'company.company', "Operator", required=True, readonly=True)
    station = fields.Many2One(
        'fuel.station', "Station", required=True, readonly=True,
        ondelete='RESTRICT')
    camera = fields.Many2One(
        'fuel.device.device', "Camera", readonly=True, ondelete='SET NULL')
    zone = fields.Many2One(
        'fuel.plate.camera.zone', "Zone", readonly=True,
        ondelete='SET NULL')
    zone_code = fields.Char("Zone Code", readonly=True)
    zone_kind = fields.Selection(
        [(None, "")] + ZONE_KINDS, "Zone Kind", readonly=True)
    plate = fields.Char("Plate", required=True, readonly=True)
    colour = fields.Selection(
        [(None, "")] + COLOURS, "Colour", readonly=True)
    confidence = fields.Numeric(
        "Confidence", digits=CONFIDENCE_DIGITS, required=True,
        readonly=True)
    frames = fields.Integer("Frames", readonly=True)
    read_date = fields.DateTime(
        "Read on", required=True, readonly=True,
        help="The time of the best frame, in UTC.")
    # in the database, not the filestore: setting it to None erases it
    image = fields.Binary("Image", readonly=True,
        help="The crop of the plate; deleted after the retention days.")
    image_format = fields.Char("Image Format", readonly=True)
    image_state = fields.Selection([
            ('none', "None"),
            ('kept', "Kept"),
            ('deleted', "Deleted"),
            ], "Image State", readonly=True, required=True, sort=False,
        help="Deleted once the retention days are over.")
    event = fields.Many2One(
        'fuel.device.event', "Event", readonly=True, ondelete='RESTRICT')
    vehicle = fields.Many2One(
        'fuel.plate.vehicle', "Vehicle", readonly=True,
        ondelete='SET NULL')

    @classmethod
    def __setup__(cls):
        super().__setup__()
        cls.__access__.add('station')
        t = cls.__table__()
        cls._sql_constraints = [
            ('uuid_unique', Unique(t, t.uuid),
                'fuel_plate.msg_read_uuid_unique'),
            ]
        cls._sql_indexes.update({
                Index(t, (t.station, Index.Range()),
                    (t.read_date, Index.Range())),
                Index(t, (t.read_date, Index.Range()),
                    where=t.image_state == 'kept'),
                })
        cls._order = [('read_date', 'DESC'), ('id', 'DESC')]

    @classmethod
    def default_image_state(cls):
        return 'none'

    @classmethod
    def preprocess_values(cls, mode, values):
        pool = Pool()
        Vehicle = pool.get('fuel.plate.vehicle')
        values = super().preprocess_values(mode, values)
        if mode == 'create' and values.get('plate'):
            values['plate'] = normalize_plate(values['plate'])
            if not values.get('vehicle') and values.get('company'):
                domain = [
                    ('company', '=', values['company']),
                    ('plate', '=', values['plate']),
                    ]
                if values.get('colour'):
                    domain.append(('colour', '=', values['colour']))
                vehicles = Vehicle.search(domain, limit=1)
                if vehicles:
                    values['vehicle'] = vehicles[0].id
        return values

    def get_rec_name(self, name):
        return '%s %s' % (self.plate, self.read_date)

    @classmethod
    def purge_images(cls, date=None):
        """Delete the crops older than the retention days of the
        configuration, keeping the reads (cron)"""
        pool = Pool()
        Configuration = pool.get('fuel.plate.configuration')
        days = Configuration(1).image_retention_days
        date = date or dt.datetime.now()
        reads = cls.search([
                ('read_date', '<', date - dt.timedelta(days=days)),
                ('image_state', '=', 'kept'),
                ])
        cls.write(reads, {'image': None, 'image_state': 'deleted'})
        return reads


class Cron(metaclass=PoolMeta):
    __name__ = 'ir.cron'

    @classmethod
    def __setup__(cls):
        super().__setup__()
        cls.method.selection.extend([
                ('fuel.plate.read|purge_images',
                    "Delete the Expired Plate Images"),
                ('fuel.plate.agreement|push_offline_lists',
                    "Push the Frictionless Plates to the Boxes"),
                ])

