"""Which failures are worth trying again (billing.dbutil.is_transient)."""

from __future__ import annotations

import pytest
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from billing.dbutil import is_transient, translate
from billing.errors import Duplicate, InvalidState, LockCompetition, ValidationFailed


class PgError(Exception):
    """What asyncpg raises: the SQLSTATE on the exception."""

    def __init__(self, sqlstate: str) -> None:
        super().__init__(f"SQLSTATE {sqlstate}")
        self.sqlstate = sqlstate


def db_error(sqlstate: str, invalidated: bool = False) -> DBAPIError:
    return DBAPIError("SELECT 1", {}, PgError(sqlstate), connection_invalidated=invalidated)


@pytest.mark.parametrize(
    "sqlstate",
    ["55P03", "40P01", "40001", "08006", "08003", "57P01", "57P03", "53300"],
)
def test_lock_serialization_and_connection_failures_are_transient(sqlstate: str) -> None:
    assert is_transient(db_error(sqlstate))


@pytest.mark.parametrize("sqlstate", ["23505", "23503", "22P02", "42703", "57014"])
def test_data_and_program_errors_are_not(sqlstate: str) -> None:
    assert not is_transient(db_error(sqlstate))


def test_domain_errors_follow_their_retryable_flag() -> None:
    assert is_transient(LockCompetition("busy"))
    for exc in (ValidationFailed("no"), InvalidState("no"), Duplicate("no")):
        assert not is_transient(exc)
    assert isinstance(translate(db_error("40001")), LockCompetition)


def test_a_dropped_or_missing_connection_is_transient() -> None:
    assert is_transient(db_error("XX000", invalidated=True))
    assert is_transient(ConnectionRefusedError())
    assert is_transient(PoolTimeout("QueuePool limit reached"))
    assert not is_transient(ValueError("bad period"))
    assert not is_transient(KeyError("FORTNIGHT"))
