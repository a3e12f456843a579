"""Domain errors. Each maps to one GraphQL ErrorCode (resolvers/errors.py)."""

from __future__ import annotations


class BillingError(Exception):
    """Base of every expected failure; nothing the operation wrote is kept."""

    code = "VALIDATION"
    retryable = False

    def __init__(self, message: str, field: list[str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


class ValidationFailed(BillingError):
    """Input breaks a rule of its own (amount precision, dates, sizes)."""

    code = "VALIDATION"


class NotFound(BillingError):
    """A referenced object does not exist in this tenant."""

    code = "NOT_FOUND"


class Duplicate(BillingError):
    """A caller-given number is already used in this tenant."""

    code = "DUPLICATE"


class InvalidState(BillingError):
    """The object's status does not allow the operation."""

    code = "INVALID_STATE"


class CurrencyMismatch(BillingError):
    """Two sides of an operation use different currencies."""

    code = "CURRENCY_MISMATCH"


class AmountExceedsOpenBalance(BillingError):
    """An application would take a target below zero."""

    code = "AMOUNT_EXCEEDS_OPEN_BALANCE"


class AmountExceedsUnapplied(BillingError):
    """An application or refund would take a source's unapplied amount below zero."""

    code = "AMOUNT_EXCEEDS_UNAPPLIED"


class LockCompetition(BillingError):
    """The account lock was not had within the tenant's lock wait; retry later."""

    code = "LOCK_COMPETITION"
    retryable = True


class IdempotencyKeyReused(BillingError):
    """The idempotency key was used before with a different input."""

    code = "IDEMPOTENCY_KEY_REUSED"


class LimitExceeded(BillingError):
    """A request is larger than the service accepts."""

    code = "LIMIT_EXCEEDED"


class Unavailable(BillingError):
    """The database or the job queue failed for a moment (a restart, a lost connection, too
    many clients). Alone, it means the operation wrote nothing and may be sent again; beside
    the job or bill run it committed, that its start waits for the job queue."""

    code = "UNAVAILABLE"
    retryable = True


ALL_ERRORS: tuple[type[BillingError], ...] = (
    ValidationFailed,
    NotFound,
    Duplicate,
    InvalidState,
    CurrencyMismatch,
    AmountExceedsOpenBalance,
    AmountExceedsUnapplied,
    LockCompetition,
    IdempotencyKeyReused,
    LimitExceeded,
    Unavailable,
)
