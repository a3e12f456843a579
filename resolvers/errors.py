"""The one mapping from domain errors to GraphQL UserErrors."""

from __future__ import annotations

from typing import Any

from billing import errors as be
from schema.errors import ERROR_TYPES, ErrorCode, TopLevelUserError, UserError

CODE_OF: dict[type[be.BillingError], ErrorCode] = {
    be.ValidationFailed: ErrorCode.VALIDATION,
    be.NotFound: ErrorCode.NOT_FOUND,
    be.Duplicate: ErrorCode.DUPLICATE,
    be.InvalidState: ErrorCode.INVALID_STATE,
    be.CurrencyMismatch: ErrorCode.CURRENCY_MISMATCH,
    be.AmountExceedsOpenBalance: ErrorCode.AMOUNT_EXCEEDS_OPEN_BALANCE,
    be.AmountExceedsUnapplied: ErrorCode.AMOUNT_EXCEEDS_UNAPPLIED,
    be.LockCompetition: ErrorCode.LOCK_COMPETITION,
    be.IdempotencyKeyReused: ErrorCode.IDEMPOTENCY_KEY_REUSED,
    be.LimitExceeded: ErrorCode.LIMIT_EXCEEDED,
}


def code_of(exc: be.BillingError) -> ErrorCode:
    """The ErrorCode of a domain error (exhaustive over BillingError subclasses)."""
    for cls in type(exc).__mro__:
        if cls in CODE_OF:
            return CODE_OF[cls]
    # The architecture test keeps CODE_OF exhaustive.
    raise TypeError(f"No ErrorCode for {type(exc).__name__}")  # pragma: no cover


def to_user_error(exc: be.BillingError) -> UserError:
    """The UserError a domain error answers with (exhaustive over BillingError subclasses)."""
    code = code_of(exc)
    return ERROR_TYPES[code](
        code=code, message=exc.message, field=exc.field, retryable=exc.retryable
    )


def to_graphql_error(exc: be.BillingError, info: Any = None) -> TopLevelUserError:
    """The same failure as a top-level GraphQL error (located at ``info``'s field), for
    fields without a payload."""
    return TopLevelUserError(code_of(exc), exc.message, exc.field, exc.retryable, info)
