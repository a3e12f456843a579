"""Translate PostgreSQL failures into domain errors in one place."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sqlalchemy.exc import DBAPIError

from billing.errors import Duplicate, LockCompetition

LOCK_NOT_AVAILABLE = "55P03"
DEADLOCK_DETECTED = "40P01"
SERIALIZATION_FAILURE = "40001"
UNIQUE_VIOLATION = "23505"


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


def translate(exc: DBAPIError) -> Exception:
    """The domain error a database failure means, or the failure itself."""
    code = sqlstate(exc)
    if code in (LOCK_NOT_AVAILABLE, DEADLOCK_DETECTED, SERIALIZATION_FAILURE):
        return LockCompetition("Operation failed due to a lock competition, please retry later")
    if code == UNIQUE_VIOLATION:
        return Duplicate("A number given in the input is already used")
    return exc


@asynccontextmanager
async def db_errors() -> AsyncIterator[None]:
    """Re-raise lock timeouts, deadlocks and unique violations as domain errors."""
    try:
        yield
    except DBAPIError as exc:
        mapped = translate(exc)
        if mapped is exc:
            raise
        raise mapped from exc
