"""The one mapping from domain errors to GraphQL UserErrors."""

from __future__ import annotations

import logging
from decimal import InvalidOperation, Overflow
from typing import Any

from graphql import GraphQLError
from strawberry.extensions import MaskErrors

from billing import errors as be
from billing.dbutil import sqlstate
from resolvers.instruments import LOCK_COMPETITION
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
    be.Unavailable: ErrorCode.UNAVAILABLE,
}


def code_of(exc: be.BillingError) -> ErrorCode:
    """The ErrorCode of a domain error (exhaustive over BillingError subclasses)."""
    for cls in type(exc).__mro__:
        if cls in CODE_OF:
            return CODE_OF[cls]
    # The architecture test keeps CODE_OF exhaustive.
    raise TypeError(f"No ErrorCode for {type(exc).__name__}")  # pragma: no cover


def answered_code(exc: be.BillingError) -> ErrorCode:
    """The code a domain error is answered with, counted on /metrics when it says the
    write lost a lock competition (every way of answering one goes through here)."""
    code = code_of(exc)
    if code is ErrorCode.LOCK_COMPETITION:
        LOCK_COMPETITION.inc()
    return code


def to_user_error(exc: be.BillingError) -> UserError:
    """The UserError a domain error answers with (exhaustive over BillingError subclasses)."""
    code = answered_code(exc)
    return ERROR_TYPES[code](
        code=code, message=exc.message, field=exc.field, retryable=exc.retryable
    )


def to_graphql_error(exc: be.BillingError, info: Any = None) -> TopLevelUserError:
    """The same failure as a top-level GraphQL error (located at ``info``'s field), for
    fields without a payload."""
    return TopLevelUserError(answered_code(exc), exc.message, exc.field, exc.retryable, info)


log = logging.getLogger("partnerbill.graphql")

NUMERIC_OUT_OF_RANGE = "22003"
TOO_LARGE = "A value or a sum of values is too large to store (at most 16 integer digits)"


def too_large(exc: BaseException) -> bool:
    """True when the work failed because numbers from the input outgrow a NUMERIC column
    (PostgreSQL's numeric_value_out_of_range) or Decimal's precision."""
    return isinstance(exc, (InvalidOperation, Overflow)) or sqlstate(exc) == NUMERIC_OUT_OF_RANGE


def is_unexpected(error: GraphQLError) -> bool:
    """True for an exception a resolver did not mean to raise (a bug or an outage): those
    are masked. GraphQL's own errors (syntax, validation, variable coercion, refusals
    before execution) and the domain's errors are the client's to read."""
    original = error.original_error
    if original is None or isinstance(original, (GraphQLError, be.BillingError)):
        return False
    return not too_large(original)


def expose(error: GraphQLError) -> GraphQLError:
    """A domain error raised by a field without a payload as a typed GraphQL error."""
    original = error.original_error
    if original is not None and too_large(original):
        original = be.ValidationFailed(TOO_LARGE)
    if not isinstance(original, be.BillingError):
        return error
    return GraphQLError(
        original.message,
        nodes=error.nodes,
        source=error.source,
        positions=error.positions,
        path=error.path,
        extensions={
            "code": answered_code(original).value,
            "field": original.field,
            "retryable": original.retryable,
        },
    )


class ErrorPolicy(MaskErrors):
    """Mask only unexpected exceptions; answer domain errors with their code."""

    def __init__(self) -> None:
        super().__init__(should_mask_error=is_unexpected)

    def _process_errors(self, errors: list[GraphQLError]) -> list[GraphQLError]:
        return [self.anonymise_error(e) if is_unexpected(e) else expose(e) for e in errors]


def log_errors(errors: list[GraphQLError]) -> None:
    """Unexpected errors at ERROR with their traceback; the client's mistakes at INFO."""
    for error in errors:
        if is_unexpected(error):
            original = error.original_error
            assert original is not None
            log.error(
                "%s (path %s)",
                error.message,
                error.path,
                exc_info=(type(original), original, original.__traceback__),
            )
        else:
            log.info("client error: %s", error.message)
