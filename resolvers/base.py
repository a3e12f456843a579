"""How a root field runs: one transaction, domain errors become UserErrors."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import strawberry
from sqlalchemy.ext.asyncio import AsyncSession

from billing import idempotency
from billing.dbutil import DatabaseError, is_transient, translate
from billing.errors import BillingError, Unavailable, ValidationFailed
from billing.metrics import SYNC, Written
from db import pg
from db.pg import Db
from resolvers.context import Context
from resolvers.errors import TOO_LARGE, to_user_error, too_large
from schema.errors import UserError

log = logging.getLogger("partnerbill.graphql")

R = TypeVar("R")
P = TypeVar("P")


async def mutation_payload(
    ctx: Context,
    work: Callable[[AsyncSession], Awaitable[Any]],
    out: Callable[[AsyncSession, Any], Awaitable[Any]],
    payload: Callable[..., P],
    field: str,
) -> P:
    """The usual mutation: ``work`` writes in one transaction, ``out`` turns its row into
    the GraphQL object in that transaction, and the payload carries it (or the errors)."""

    async def go(s: AsyncSession) -> Any:
        return await out(s, await work(s))

    obj, errors = await in_transaction(ctx, go)
    return payload(**{field: obj, "errors": errors})


async def in_transaction(
    ctx: Context, work: Callable[[AsyncSession], Awaitable[R]]
) -> tuple[R | None, list[UserError]]:
    """Run ``work`` in one transaction; on a domain error roll back and return it.
    After the commit, the metric updates it made are announced to subscribers."""
    try:
        async with ctx.sessionmaker() as session:
            try:
                async with session.begin():
                    result = await work(session)
            except DatabaseError as exc:
                mapped = translate(exc)
                if mapped is exc:
                    raise
                raise mapped from exc
            await announce(ctx, session)
        return result, []
    except BillingError as exc:
        return None, [to_user_error(exc)]
    except Exception as exc:
        return None, [to_user_error(expected_failure(exc))]


UNAVAILABLE = "The database is unavailable for a moment; nothing was written, send it again"


def expected_failure(exc: Exception) -> BillingError:
    """The domain error an exception that is not the code's fault means: numbers that
    outgrow their column (VALIDATION), or a transient database failure, such as a restart,
    a lost or refused connection or too many clients (UNAVAILABLE, retryable). Anything
    else is re-raised: a bug, masked as "Unexpected error." and logged."""
    if too_large(exc):
        log.info("refused: a value or sum overflows its column (%s)", exc)
        return ValidationFailed(TOO_LARGE)
    if is_transient(exc):
        log.warning("database unavailable: %r", exc)
        return Unavailable(UNAVAILABLE)
    raise exc


def blank(value: str | None, field: list[str]) -> list[UserError]:
    """A VALIDATION UserError when a given text is empty or only spaces, else none."""
    if value is None or value.strip():
        return []
    return [to_user_error(ValidationFailed("Must not be empty or blank", field))]


async def one_statement(
    ctx: Context, work: Callable[[Db], Awaitable[Written]]
) -> tuple[Written | None, list[UserError]]:
    """Run one of billing's one-statement writes on an autocommit connection (the statement
    is its own transaction); a domain error becomes a UserError. After the commit, the
    ordinary accounts whose metrics moved are announced to subscribers."""
    try:
        async with pg.autocommit(ctx.services.pg, ctx.sessionmaker.kw["bind"]) as conn:
            result = await work(conn)
    except BillingError as exc:
        return None, [to_user_error(exc)]
    except Exception as exc:
        return None, [to_user_error(expected_failure(exc))]
    if result.synced_account_ids and ctx.services.events is not None:
        ctx.services.events.announce_metrics(ctx.tenant_id, result.synced_account_ids, SYNC)
    return result, []


def event_hub(ctx: Context) -> Any:
    """The process's event hub (jobs.events.EventHub), which subscriptions listen on."""
    if ctx.services.events is None:
        raise RuntimeError("Subscriptions need Redis: no event hub was configured")
    return ctx.services.events


async def announce(ctx: Context, session: AsyncSession) -> None:
    """Tell subscribers about the metric updates of a committed session (never raises)."""
    if ctx.services.events is not None:
        await ctx.services.events.publish_committed(session)


async def idempotent(
    ctx: Context,
    key: str | None,
    operation: str,
    payload: Any,
    work: Callable[[AsyncSession], Awaitable[R]],
    remember: Callable[[R], dict[str, Any]],
    replay: Callable[[AsyncSession, dict[str, Any]], Awaitable[R]],
) -> tuple[R | None, list[UserError]]:
    """``in_transaction`` with an optional idempotency key: a repeat with the same key and
    input returns the first result and writes nothing."""
    if key is None:
        return await in_transaction(ctx, work)
    if errors := blank(key, ["idempotencyKey"]):
        return None, errors

    async def guarded(session: AsyncSession) -> R:
        stored = await idempotency.claim(session, ctx.tenant_id, key, operation, payload)
        if stored is not None:
            return await replay(session, stored)
        result = await work(session)
        await idempotency.store(session, ctx.tenant_id, key, remember(result))
        return result

    return await in_transaction(ctx, guarded)


async def keyed_payload(
    ctx: Context,
    input: Any,
    operation: str,
    work: Callable[[AsyncSession], Awaitable[Any]],
    out: Callable[[AsyncSession, Any], Awaitable[Any]],
    by_id: Callable[[AsyncSession, int], Awaitable[Any]],
    payload: Callable[..., P],
    field: str,
) -> P:
    """``mutation_payload`` under the input's optional ``idempotency_key``: a repeat with the
    same key and input answers the first result (its row read again by id, ``by_id``) and
    writes nothing; the same key with another input is IDEMPOTENCY_KEY_REUSED."""
    data = strawberry.asdict(input)
    data.pop("idempotency_key", None)

    async def go(s: AsyncSession) -> Any:
        return await out(s, await work(s))

    async def replay(s: AsyncSession, stored: dict[str, Any]) -> Any:
        return await out(s, await by_id(s, stored["id"]))

    # Taken whole, not unpacked at the call (see resolvers.documents.create_payment).
    result = await idempotent(
        ctx, input.idempotency_key, operation, data, go, lambda r: {"id": r.db_id}, replay
    )
    obj, errors = result
    return payload(**{field: obj, "errors": errors})


async def read_one(ctx: Context, work: Callable[[Db], Awaitable[R]]) -> R:
    """A read of one statement (billing's hot reads) on an autocommit connection; a
    transient database failure is a retryable UNAVAILABLE error."""
    try:
        async with pg.autocommit(ctx.services.pg, ctx.sessionmaker.kw["bind"]) as conn:
            return await work(conn)
    except BillingError:
        raise
    except Exception as exc:
        raise expected_failure(exc) from exc


async def read(ctx: Context, work: Callable[[AsyncSession], Awaitable[R]]) -> R:
    """A read in its own short session (root query fields); a transient database failure
    is a retryable UNAVAILABLE error."""
    try:
        async with ctx.sessionmaker() as session:
            return await work(session)
    except BillingError:
        raise
    except Exception as exc:
        raise expected_failure(exc) from exc
