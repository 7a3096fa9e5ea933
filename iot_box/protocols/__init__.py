# This file is part of fuelpay.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""Pure codecs of the station service: bytes <-> dataclasses, no I/O"""
