# This file is part of fuelpay.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""Dispenser drivers: one fuelling-point model, one driver per protocol

Modules are imported by name (`iot_box.drivers.dispenser.dart`, ...)."""
