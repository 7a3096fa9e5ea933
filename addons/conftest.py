# This file is part of fuelpay.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""Give each pytest-xdist worker its own test database.

trytond's test tools read DB_NAME once, when trytond.tests.test_tryton is
first imported; pytest loads this file before it collects any test module,
so the name is changed in time.  SQLite's ':memory:' is private to each
process already.  The workers share DB_CACHE: `./fuel test` fills it before
it starts them (tools/fuel.py, warm_db_cache), so none of them writes it
while another one reads it."""
import os

_worker = os.environ.get('PYTEST_XDIST_WORKER')
_name = os.environ.get('DB_NAME')
if _worker and _name and _name != ':memory:':
    os.environ['DB_NAME'] = f'{_name}_{_worker}'
