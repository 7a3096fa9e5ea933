# This file is part of fuelpay.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""Transports: move bytes of a line (serial, or a serial-server gateway
over UDP or TCP); frames are cut by the protocol codec, not here

Modules are imported by name (`iot_box.interfaces.udp`, ...), so that the
UDP and TCP transports do not need pyserial."""
