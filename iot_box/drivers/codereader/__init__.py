# This file is part of fuelpay.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""Payment-post code readers: a payment-code scanner or a face-pay device
in scanner mode, whose codes become ``payment_code`` events"""
