# This file is part of fuelpay.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""Fake devices that speak the real protocols, for tests and the demo"""
