"""Translate PostgreSQL failures into domain errors in one place."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from billing.errors import BillingError, Duplicate, LockCompetition

LOCK_NOT_AVAILABLE = "55P03"
DEADLOCK_DETECTED = "40P01"
SERIALIZATION_FAILURE = "40001"
UNIQUE_VIOLATION = "23505"
# A failure that says nothing about the work itself: the same work may well pass when
# it is tried again. Also every connection exception (class 08).
TRANSIENT = frozenset(
    {
        LOCK_NOT_AVAILABLE,
        DEADLOCK_DETECTED,
        SERIALIZATION_FAILURE,
        "40003",  # statement_completion_unknown
        "53300",  # too_many_connections
        "57P01",  # admin_shutdown
        "57P02",  # crash_shutdown
        "57P03",  # cannot_connect_now
    }
)


def sqlstate(exc: BaseException) -> str | None:
    """The SQLSTATE of a DBAPI error raised through SQLAlchemy and asyncpg, if any."""
    orig = getattr(exc, "orig", None)
    for obj in (orig, getattr(orig, "__cause__", None), exc):
        if obj is None:
            continue
        code = getattr(obj, "sqlstate", None) or getattr(obj, "pgcode", None)
        if code:
            return str(code)
    return None


# What a database failure looks like: through SQLAlchemy, or from asyncpg itself on the hot
# paths that use the driver directly (db.pg).
DatabaseError = (DBAPIError, asyncpg.PostgresError)


def translate(exc: DBAPIError | asyncpg.PostgresError) -> Exception:
    """The domain error a database failure means, or the failure itself."""
    code = sqlstate(exc)
    if code in (LOCK_NOT_AVAILABLE, DEADLOCK_DETECTED, SERIALIZATION_FAILURE):
        return LockCompetition("Operation failed due to a lock competition, please retry later")
    if code == UNIQUE_VIOLATION:
        return Duplicate("A number given in the input is already used")
    return exc


def is_transient(exc: BaseException) -> bool:
    """True when trying the same work again may well succeed: a retryable domain error
    (LOCK_COMPETITION), a lock timeout, deadlock or serialization failure, a lost, refused
    or shut-down database connection, a connection not had in time. Validation
    and data problems (anything else) are not."""
    if isinstance(exc, BillingError):
        return exc.retryable
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    if isinstance(exc, DatabaseError):
        code = sqlstate(exc)
        return code is not None and (code in TRANSIENT or code.startswith("08"))
    return isinstance(
        exc,
        (PoolTimeout, ConnectionError, TimeoutError, asyncpg.exceptions.InterfaceError),
    )


@asynccontextmanager
async def db_errors() -> AsyncIterator[None]:
    """Re-raise lock timeouts, deadlocks and unique violations as domain errors."""
    try:
        yield
    except DatabaseError as exc:
        mapped = translate(exc)
        if mapped is exc:
            raise
        raise mapped from exc
