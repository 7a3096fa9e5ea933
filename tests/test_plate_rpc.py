# This file is part of fuelpay.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""Vehicles and plate reads over XML-RPC and JSON-RPC on a running server

The platform administrator registers a lane camera of its own on West
Lake Station's box (A01-BOX-1) and one vehicle per operator (the demo's
car is left to tests/test_station_plate.py); the box posts a plate read
through its events route with its key.  Each operator's users see only
their own vehicles and reads, and station staff only the reads of their
stations."""
import datetime as dt
import json
import urllib.request
import uuid
import xmlrpc.client

import pytest
from test_rpc_isolation import JsonRpc, call, station_id, xmlrpc_proxy

BOX = 'A01-BOX-1'  # tools.demo DEMO_BOX
CAMERA = 'rpc-plate-cam'
LANSHAN_PLATE = '浙A12345'
HEPING_PLATE = '浙B54321'


def company_id(server, name):
    admin = xmlrpc_proxy(server, 'admin')
    ids = call(admin, 'company.company', 'search', [
            ('party.name', '=', name)], 0, None, None)
    assert len(ids) == 1
    return ids[0]


def post_events(server, *events):
    "POST events to the box route with the demo box's key"
    key = (server.box_dir / 'box.key').read_text().strip()
    request = urllib.request.Request(
        f'{server.url}/{server.database}/fuel_device/events',
        method='POST',
        data=json.dumps({'version': 1, 'events': list(events)}).encode(),
        headers={
            'Authorization': f'Bearer {key}',
            'Content-Type': 'application/json'})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.load(response)['results']


@pytest.fixture(scope='module')
def plates(server):
    """Register the camera, its island zone and a vehicle per operator,
    post one plate read of the Lanshan vehicle; return the ids"""
    admin = xmlrpc_proxy(server, 'admin')
    a01 = station_id(server, 'A01')
    box, = call(admin, 'fuel.device.box', 'search', [
            ('identifier', '=', BOX)], 0, None, None)
    camera, = call(admin, 'fuel.device.device', 'create', [{
                'box': box, 'kind': 'camera', 'identifier': CAMERA}])
    zone, = call(admin, 'fuel.plate.camera.zone', 'create', [{
                'station': a01, 'camera': camera, 'code': 'island-1',
                'kind': 'island'}])
    lanshan = company_id(server, "Lanshan Energy")
    heping = company_id(server, "Heping Fuel")
    lanshan_vehicle, = call(admin, 'fuel.plate.vehicle', 'create', [{
                'company': lanshan, 'plate': '浙a·12345',
                'colour': 'blue'}])
    heping_vehicle, = call(admin, 'fuel.plate.vehicle', 'create', [{
                'company': heping, 'plate': HEPING_PLATE,
                'colour': 'blue'}])
    read_uuid = str(uuid.uuid4())
    result, = post_events(server, {
            'uuid': read_uuid,
            # far above the demo box's own sequence numbers
            'seq': 10 ** 9 + 1,
            'kind': 'plate_read',
            'device': CAMERA,
            'device_time': dt.datetime.now(dt.UTC).isoformat(),
            'payload': {
                'plate': LANSHAN_PLATE, 'colour': 'blue',
                'confidence': '0.9700', 'zone': 'island-1',
                'zone_kind': 'island', 'frames': 4},
            })
    assert result['status'] == 'accepted', result
    read, = call(admin, 'fuel.plate.read', 'search', [
            ('uuid', '=', read_uuid)], 0, None, None)
    return {
        'lanshan_vehicle': lanshan_vehicle, 'heping_vehicle': heping_vehicle,
        'read': read, 'zone': zone, 'camera': camera}


def test_plate_read_event_becomes_a_read(server, plates):
    admin = xmlrpc_proxy(server, 'admin')
    read, = call(admin, 'fuel.plate.read', 'read', [plates['read']], [
            'plate', 'vehicle', 'zone', 'zone_kind', 'station.code'])
    assert read['plate'] == LANSHAN_PLATE
    assert read['vehicle'] == plates['lanshan_vehicle']
    assert read['zone'] == plates['zone']
    assert read['zone_kind'] == 'island'
    assert read['station.']['code'] == 'A01'
    vehicle, = call(admin, 'fuel.plate.vehicle', 'read',
        [plates['lanshan_vehicle']], ['plate'])
    # stored normalised
    assert vehicle['plate'] == LANSHAN_PLATE


@pytest.mark.parametrize('login, vehicles, reads', [
        ('lanshan.admin', [LANSHAN_PLATE], [LANSHAN_PLATE]),
        ('lanshan.a01.manager', [LANSHAN_PLATE], [LANSHAN_PLATE]),
        ('lanshan.a01.attendant', [LANSHAN_PLATE], [LANSHAN_PLATE]),
        ('heping.admin', [HEPING_PLATE], []),
        ('heping.b01.attendant', [HEPING_PLATE], []),
        ])
def test_xmlrpc_vehicles_and_reads_isolated(
        server, plates, login, vehicles, reads):
    proxy = xmlrpc_proxy(server, login)
    found = call(proxy, 'fuel.plate.vehicle', 'search_read', [
            ('plate', 'in', [LANSHAN_PLATE, HEPING_PLATE])],
        0, None, None, ['plate'])
    assert sorted(v['plate'] for v in found) == vehicles
    found = call(proxy, 'fuel.plate.read', 'search_read', [
            ('plate', 'in', [LANSHAN_PLATE, HEPING_PLATE])],
        0, None, None, ['plate'])
    assert [r['plate'] for r in found] == reads


def test_xmlrpc_other_operator_cannot_touch_vehicle_or_read(
        server, plates):
    heping = xmlrpc_proxy(server, 'heping.admin')
    with pytest.raises(xmlrpc.client.Fault):
        call(heping, 'fuel.plate.vehicle', 'read',
            [plates['lanshan_vehicle']], ['plate'])
    with pytest.raises(xmlrpc.client.Fault):
        call(heping, 'fuel.plate.vehicle', 'write',
            [plates['lanshan_vehicle']], {'owner': None})
    with pytest.raises(xmlrpc.client.Fault):
        call(heping, 'fuel.plate.read', 'read', [plates['read']], ['plate'])
    # reads come from the boxes only
    attendant = xmlrpc_proxy(server, 'lanshan.a01.attendant')
    with pytest.raises(xmlrpc.client.Fault):
        call(attendant, 'fuel.plate.read', 'write', [plates['read']],
            {'plate': HEPING_PLATE})


def test_jsonrpc_vehicles_isolated(server, plates):
    heping = JsonRpc(server, 'heping.b01.attendant')
    ids = heping('fuel.plate.vehicle', 'search', [
            ('plate', 'in', [LANSHAN_PLATE, HEPING_PLATE])], 0, None, None)
    assert ids == [plates['heping_vehicle']]
    with pytest.raises(RuntimeError):
        heping('fuel.plate.vehicle', 'read',
            [plates['lanshan_vehicle']], ['plate'])
    lanshan = JsonRpc(server, 'lanshan.a01.attendant')
    assert lanshan('fuel.plate.read', 'search', [
            ('id', '=', plates['read'])], 0, None, None) == [plates['read']]
