"""UserError: expected failures, returned in payloads with nothing written."""

from __future__ import annotations

from enum import Enum
from typing import Any

import strawberry
from graphql import GraphQLError


@strawberry.enum(description="Why an operation wrote nothing.")
class ErrorCode(Enum):
    VALIDATION = "VALIDATION"
    NOT_FOUND = "NOT_FOUND"
    DUPLICATE = "DUPLICATE"
    INVALID_STATE = "INVALID_STATE"
    CURRENCY_MISMATCH = "CURRENCY_MISMATCH"
    AMOUNT_EXCEEDS_OPEN_BALANCE = "AMOUNT_EXCEEDS_OPEN_BALANCE"
    AMOUNT_EXCEEDS_UNAPPLIED = "AMOUNT_EXCEEDS_UNAPPLIED"
    LOCK_COMPETITION = "LOCK_COMPETITION"
    IDEMPOTENCY_KEY_REUSED = "IDEMPOTENCY_KEY_REUSED"
    LIMIT_EXCEEDED = "LIMIT_EXCEEDED"
    UNAVAILABLE = "UNAVAILABLE"
    RATE_LIMITED = "RATE_LIMITED"
    QUERY_TOO_COMPLEX = "QUERY_TOO_COMPLEX"


@strawberry.interface(description="An expected failure; the operation wrote nothing.")
class UserError:
    code: ErrorCode = strawberry.field(description="Machine-readable reason.")
    message: str = strawberry.field(description="Human-readable explanation.")
    field: list[str] | None = strawberry.field(
        default=None, description="Path of the input field at fault, when one is."
    )
    retryable: bool = strawberry.field(
        default=False, description="True when the same request may succeed if sent again later."
    )


@strawberry.type(description="The input breaks a rule (format, range, precision, size).")
class ValidationError(UserError):
    pass


@strawberry.type(description="A referenced object does not exist.")
class NotFoundError(UserError):
    pass


@strawberry.type(description="A caller-given number is already used in this tenant.")
class DuplicateError(UserError):
    pass


@strawberry.type(description="The object's status does not allow the operation.")
class InvalidStateError(UserError):
    pass


@strawberry.type(description="The currencies of the two sides differ.")
class CurrencyMismatchError(UserError):
    pass


@strawberry.type(description="An application would exceed the target's open balance.")
class AmountExceedsOpenBalanceError(UserError):
    pass


@strawberry.type(description="An application or refund would exceed the source's unapplied amount.")
class AmountExceedsUnappliedError(UserError):
    pass


@strawberry.type(
    description="The account lock was busy for longer than the tenant's lock wait; retry."
)
class LockCompetitionError(UserError):
    pass


@strawberry.type(description="The idempotency key was used before with a different input.")
class IdempotencyKeyReusedError(UserError):
    pass


@strawberry.type(description="The request is larger than the service accepts.")
class LimitExceededError(UserError):
    pass


@strawberry.type(
    description="The database or the job queue failed for a moment; nothing was written. "
    "Send the same request again (retryable)."
)
class UnavailableError(UserError):
    pass


ERROR_TYPES: dict[ErrorCode, type[UserError]] = {
    ErrorCode.VALIDATION: ValidationError,
    ErrorCode.NOT_FOUND: NotFoundError,
    ErrorCode.DUPLICATE: DuplicateError,
    ErrorCode.INVALID_STATE: InvalidStateError,
    ErrorCode.CURRENCY_MISMATCH: CurrencyMismatchError,
    ErrorCode.AMOUNT_EXCEEDS_OPEN_BALANCE: AmountExceedsOpenBalanceError,
    ErrorCode.AMOUNT_EXCEEDS_UNAPPLIED: AmountExceedsUnappliedError,
    ErrorCode.LOCK_COMPETITION: LockCompetitionError,
    ErrorCode.IDEMPOTENCY_KEY_REUSED: IdempotencyKeyReusedError,
    ErrorCode.LIMIT_EXCEEDED: LimitExceededError,
    ErrorCode.UNAVAILABLE: UnavailableError,
}


class TopLevelUserError(GraphQLError):
    """An expected failure where the field has no ``errors`` list to carry it (the
    subscriptions, whose event types are fixed): a top-level GraphQL error whose
    ``extensions`` hold the UserError fields (code, field, retryable). Never masked."""

    def __init__(
        self,
        code: ErrorCode,
        message: str,
        field: list[str] | None,
        retryable: bool,
        info: Any = None,
    ) -> None:
        raw = getattr(info, "_raw_info", info)  # graphql-core's info under strawberry's
        super().__init__(
            message,
            nodes=raw.field_nodes if raw is not None else None,
            path=raw.path.as_list() if raw is not None else None,
            extensions={"code": code.value, "field": field, "retryable": retryable},
        )
