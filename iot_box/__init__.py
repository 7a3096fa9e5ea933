# This file is part of fuelpay.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""The fuelpay station service (IoT box)

It will run on the station LAN, poll the dispensers (Wayne DART over serial,
TCP or UDP), keep a store-and-forward outbox and talk to the server.  Only
the pure DART codec (protocols/dart.py) is built: see issue "fuel_device +
iot_box" and doc/modules/iot_box.md.
"""
