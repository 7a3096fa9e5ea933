# This file is part of fuelpay.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
from trytond.exceptions import UserError
from trytond.model.exceptions import AccessError, ValidationError


class IngestError(UserError):
    "An item of an ingestion batch is refused"


class TransactionValidationError(ValidationError):
    pass


class TransactionStateError(UserError):
    pass


class OrderValidationError(ValidationError):
    pass


class OrderPaymentError(UserError):
    pass


class VoidRightError(AccessError):
    pass


class SettlementError(UserError):
    pass


class WalletError(UserError):
    pass


class WalletBalanceError(WalletError):
    pass


class WalletLimitError(WalletError):
    pass


class WalletPinError(WalletError):
    pass


class ShiftMoneyError(UserError):
    pass


class GatewayError(UserError):
    pass


class ReconciliationError(UserError):
    pass


class PrePayError(UserError):
    pass


class LoginError(GatewayError):
    pass
