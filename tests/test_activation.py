# This file is part of fuelpay.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""A module activates without the fuelpay modules it does not depend on

The module tests run on one database where every fuelpay module is active
(addons/fuel_station/tests/tools.py TEST_MODULES).  An operator may
install less: fuel_device without fuel_payment (it only extras_depend on
it) or fuel_payment without fuel_device.  trytond-admin activates each on
a database of its own, side by side, on SQLite: registration does not
depend on the backend."""
import sqlite3
import subprocess

from conftest import ROOT, VENV_BIN

# what trytond-admin activates, and the fuelpay modules it must leave out
ALONE = {
    'fuel_device': {'fuel_payment', 'fuel_plate', 'fuel_promotion'},
    'fuel_payment': {'fuel_device', 'fuel_plate', 'fuel_promotion'},
    }


def activated(path):
    with sqlite3.connect(path) as connection:
        return {name for name, in connection.execute(
                    "SELECT name FROM ir_module WHERE state = 'activated'")}


def test_modules_activate_alone(tmp_path):
    "Test fuel_device and fuel_payment each activate without the other"
    processes = {}
    for module in ALONE:
        folder = tmp_path / module
        folder.mkdir()
        (folder / 'password').write_text('admin')
        (folder / f'{module}.sqlite').touch()
        env = {
            'PATH': f'{VENV_BIN}:/usr/bin:/bin',
            'TRYTOND_DATABASE__URI': 'sqlite://',
            'TRYTOND_DATABASE__PATH': str(folder),
            'TRYTONPASSFILE': str(folder / 'password'),
            }
        processes[module] = subprocess.Popen([
                VENV_BIN / 'trytond-admin', '-c', ROOT / 'trytond.conf',
                '-d', module, '-u', module,
                '--activate-dependencies', '--email', 'admin@example.com'],
            env=env, cwd=ROOT, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT)
    for module, process in processes.items():
        output, _ = process.communicate(timeout=600)
        assert process.returncode == 0, output.decode()[-3000:]
        modules = activated(tmp_path / module / f'{module}.sqlite')
        assert module in modules
        assert 'fuel_station' in modules
        assert not (modules & ALONE[module]), modules & ALONE[module]
