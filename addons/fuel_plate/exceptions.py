# This file is part of fuelpay.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
from trytond.exceptions import UserError
from trytond.model.exceptions import ValidationError


class PlateValidationError(ValidationError):
    "A plate number or its colour is not a Chinese plate"


class AgreementError(ValidationError):
    "A frictionless pay agreement is not consistent"


class BindingError(UserError):
    "A binding cannot be confirmed as asked"
