# This file is part of fuelpay.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""The integrator example of doc/integrator.md works as printed there"""
import os
import pathlib
import subprocess
import sys

EXAMPLE = pathlib.Path(__file__).resolve().parent.parent / (
    'doc/examples/xmlrpc_stations.py')


def run_example(server, login, password=None):
    return subprocess.run(
        [sys.executable, str(EXAMPLE), '--url', server.url,
            '--database', server.database, '--login', login],
        env=dict(os.environ, FUEL_PASSWORD=password or server.password),
        capture_output=True, text=True, timeout=60)


def test_example_lists_own_nozzles_with_prices(server):
    result = run_example(server, 'lanshan.admin')
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    nozzle = next(line for line in lines if line.startswith('A01 nozzle 1 '))
    assert '92# Petrol' in nozzle and '7.5800' in nozzle
    hydrogen = next(
        line for line in lines
        if line.startswith('A02 nozzle') and 'Hydrogen' in line)
    assert '33.8000' in hydrogen  # the A02 station price
    assert not any(line.startswith('B01') for line in lines)


def test_example_refuses_wrong_password(server):
    result = run_example(server, 'lanshan.admin', password='wrong-password')
    assert result.returncode == 1
    assert '401' in result.stderr
