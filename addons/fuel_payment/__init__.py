# This file is part of fuelpay.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.

# The HTTP routes register themselves on import, like trytond.res's;
# so does the JD Pay provider (the others are imported by gateway_payment)
from . import jdpay, routes

__all__ = ['jdpay', 'routes']
