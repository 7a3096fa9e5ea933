# This file is part of fuelpay.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
from trytond.exceptions import UserError
from trytond.model.exceptions import ValidationError


class BoxPairError(ValidationError):
    pass


class BoxIdentifierError(UserError):
    pass


class PayloadError(UserError):
    pass
