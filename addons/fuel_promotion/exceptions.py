# This file is part of fuelpay.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
from trytond.exceptions import UserError
from trytond.model.exceptions import ValidationError


class RuleValidationError(ValidationError):
    pass


class RuleStateError(UserError):
    pass


class CouponError(UserError):
    pass


class CouponValidationError(ValidationError):
    pass


class MemberError(UserError):
    pass


class PushError(UserError):
    pass


class GiftError(UserError):
    pass
