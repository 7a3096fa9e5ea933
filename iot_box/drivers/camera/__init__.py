# This file is part of fuelpay.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""Plate cameras: frame sources (HTTP snapshot, RTSP, folder) and the
driver that reads plates from their frames into the outbox"""
