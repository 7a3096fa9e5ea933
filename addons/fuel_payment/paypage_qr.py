# This file is part of fuelpay.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""The printed QR codes of a station's payment page (paypage.py): the
station's code and one per active nozzle, as inline SVG made by qrcode,
on an HTML report (paypage_qr.html) like the wallet statement"""
import base64
import io

import qrcode
import qrcode.image.svg
from trytond.pool import Pool
from trytond.report import Report


def qr_data_uri(content):
    "An SVG image of a QR code of content, as a data URI for <img>"
    image = qrcode.make(
        content, image_factory=qrcode.image.svg.SvgPathImage,
        error_correction=qrcode.constants.ERROR_CORRECT_M)
    buffer = io.BytesIO()
    image.save(buffer)
    return 'data:image/svg+xml;base64,' + base64.b64encode(
        buffer.getvalue()).decode()


class PayQRReport(Report):
    "Payment QR Codes"
    __name__ = 'fuel.station.pay_qr'

    @classmethod
    def get_context(cls, records, header, data):
        pool = Pool()
        Station = pool.get('fuel.station')
        context = super().get_context(records, header, data)
        codes = {}
        for station in Station.browse(records):
            url = station.pay_url()
            nozzles = []
            for nozzle in sorted(
                    station.nozzles, key=lambda n: n.station_number):
                if nozzle.state != 'active':
                    continue
                nozzle_url = station.pay_url(nozzle.station_number)
                nozzles.append({
                        'number': nozzle.station_number,
                        'grade': nozzle.grade.rec_name,
                        'url': nozzle_url,
                        'image': qr_data_uri(nozzle_url),
                        })
            codes[station.id] = {
                'url': url,
                'image': qr_data_uri(url),
                'nozzles': nozzles,
                }
        context['codes'] = codes
        return context

