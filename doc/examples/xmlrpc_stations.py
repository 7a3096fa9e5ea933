#!/usr/bin/env python3
# This file is part of fuelpay.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""List the fuel stations a user may see over XML-RPC, with their nozzles
and the unit price in force for each nozzle's grade.

Standard library only.  The password is read from the FUEL_PASSWORD
environment variable so that it stays out of the shell history:

    FUEL_PASSWORD=... python3 doc/examples/xmlrpc_stations.py \\
        --url http://127.0.0.1:8000 --database fuelpay --login admin
"""
import argparse
import base64
import os
import sys
import xmlrpc.client


def connect(url, database, login, password):
    """Return a proxy on the database's RPC endpoint that authenticates
    every call with HTTP Basic

    The credentials go in a header, not in the URL: xmlrpc.client puts the
    URL in its error messages."""
    token = base64.b64encode(f'{login}:{password}'.encode()).decode()
    return xmlrpc.client.ServerProxy(
        f'{url.rstrip("/")}/{database}/rpc/',
        allow_none=True,  # None travels as <nil/>
        use_datetime=True,
        headers=[('Authorization', f'Basic {token}')])


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--url', default='http://127.0.0.1:8000')
    parser.add_argument('--database', default='fuelpay')
    parser.add_argument('--login', required=True)
    options = parser.parse_args(argv)
    password = os.environ.get('FUEL_PASSWORD')
    if not password:
        parser.error('set FUEL_PASSWORD to the password of the login')

    server = connect(options.url, options.database, options.login, password)
    # The context dict is always the last argument.  {} is enough to read:
    # the record rules use the companies and stations stored on the user.
    # To create records with the user's defaults (company, language), pass
    # server.model.res.user.get_preferences(True, {}) instead.
    context = {}
    try:
        # search_read(domain, offset, limit, order, fields, context); the
        # record rules of the server give only the stations of the user
        stations = server.model.fuel.station.search_read(
            [], 0, None, [('code', 'ASC')],
            ['code', 'name', 'state', 'company.rec_name',
                'company.currency.code'],
            context)
        nozzles = server.model.fuel.station.nozzle.search_read(
            [('station', 'in', [s['id'] for s in stations])], 0, None,
            [('station_number', 'ASC')],
            ['station', 'rec_name', 'state', 'grade', 'grade.name',
                'unit.symbol'],
            context)
        prices = {}
        for station in stations:
            company = station['company.']
            print(f"[{station['code']}] {station['name']}"
                f" ({company['rec_name']}, {station['state']})")
            currency = company['currency.']['code']
            for nozzle in nozzles:
                if nozzle['station'] != station['id']:
                    continue
                key = station['id'], nozzle['grade']
                if key not in prices:
                    # None: now; Decimal values arrive as <bigdecimal>
                    prices[key] = server.model.fuel.station.price \
                        .price_in_force(*key, None, context)
                unit_price = prices[key]['unit_price']
                price = (f'{unit_price} {currency}/{nozzle["unit."]["symbol"]}'
                    if unit_price is not None else 'no price in force')
                blocked = '  (blocked)' if nozzle['state'] == 'blocked' else ''
                print(f"{nozzle['rec_name']:<14}{nozzle['grade.']['name']:<18}"
                    f"{price}{blocked}")
    except xmlrpc.client.Fault as fault:
        # a user error of the server, e.g. a record the user may not see
        sys.exit(f'error: {fault.faultString}')
    except xmlrpc.client.ProtocolError as error:
        # 401: wrong login or password; 403: too many failed logins
        sys.exit(f'error: HTTP {error.errcode} {error.errmsg}')


if __name__ == '__main__':
    main()
