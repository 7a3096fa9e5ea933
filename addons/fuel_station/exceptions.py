# This file is part of fuelpay.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
from trytond.exceptions import UserError
from trytond.model.exceptions import AccessError, ValidationError


class StationValidationError(ValidationError):
    pass


class GradeUnitError(ValidationError):
    pass


class DispenserValidationError(ValidationError):
    pass


class NozzleValidationError(ValidationError):
    pass


class PriceValidationError(ValidationError):
    pass


class PriceConflictError(ValidationError):
    pass


class PriceModificationError(AccessError):
    pass


class ShiftValidationError(ValidationError):
    pass


class ShiftModificationError(AccessError):
    pass


class ReadingBackwardsError(ValidationError):
    pass


class ShiftCloseError(UserError):
    pass
