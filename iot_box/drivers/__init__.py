# This file is part of fuelpay.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""Drivers: the behaviour of each device kind above its protocol codec"""
