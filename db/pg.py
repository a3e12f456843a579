"""asyncpg for the hot write paths: a pool of raw connections, and the connection under a
SQLAlchemy session when a write must join a session's transaction.

Why beside SQLAlchemy: a statement built and run through SQLAlchemy costs about 0.16-0.27 ms
of Python; the same statement as an asyncpg prepared statement costs about 0.035 ms. The hot
writes (standalone invoices, payments, new subscriptions) are one statement each and run
here; everything else keeps the ORM's convenience.

Prepared statements and PgBouncer: asyncpg prepares every statement by name and caches it per
connection. Behind PgBouncer in transaction mode that needs PgBouncer 1.21+ with
``max_prepared_statements`` set; otherwise set ``PARTNERBILL_STATEMENT_CACHE=0`` and asyncpg
uses unnamed statements only.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Protocol

import asyncpg
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession


def server_settings() -> dict[str, str]:
    """The settings of every connection the service opens. PARTNERBILL_EVENTS=0 turns event
    writing off (``partnerbill.events``, read by pb_events_on()): for the bench's comparison
    only, never in production (webhooks and the feed then miss every change)."""
    out = {"jit": "off", "application_name": "partnerbill"}
    if os.environ.get("PARTNERBILL_EVENTS", "1").strip().lower() in ("0", "off", "false"):
        out["partnerbill.events"] = "off"
    return out


SERVER_SETTINGS = server_settings()


class Db(Protocol):
    """What a hot write needs of a connection: asyncpg.Connection and asyncpg.Pool both fit."""

    async def fetch(self, query: str, *args: Any) -> list[asyncpg.Record]: ...

    async def fetchrow(self, query: str, *args: Any) -> asyncpg.Record | None: ...

    async def fetchval(self, query: str, *args: Any) -> Any: ...


def asyncpg_dsn(url: str) -> str:
    """A libpq-style DSN asyncpg takes, from any PostgreSQL URL the service is given."""
    u = make_url(url)
    return u.set(drivername="postgresql").render_as_string(hide_password=False)


async def create_pool(
    url: str, *, min_size: int = 0, max_size: int = 10, statement_cache_size: int = 256
) -> asyncpg.Pool:
    """A pool of autocommit connections for one-statement writes. With min_size 0 it
    connects on first use, so the service starts (and says so on /healthz) while the
    database is still down."""
    pool = await asyncpg.create_pool(
        asyncpg_dsn(url),
        min_size=min_size,
        max_size=max_size,
        statement_cache_size=statement_cache_size,
        server_settings=SERVER_SETTINGS,
        reset=_keep_as_is,
    )
    assert pool is not None
    return pool


async def _keep_as_is(conn: asyncpg.Connection) -> None:
    """asyncpg resets a connection when the pool takes it back (advisory unlock, CLOSE ALL,
    UNLISTEN, RESET ALL): one more round trip per request. Nothing on this pool leaves
    session state to reset: each statement is its own transaction, settings are changed
    with set_config(..., true) (transaction-local), and nothing listens, opens cursors or
    takes session-level locks. (asyncpg still rolls back a transaction left open, and
    drops a connection whose reset failed, before this runs.)"""


async def connection_of(db: Db | AsyncSession) -> Db:
    """``db`` itself, or for a session the asyncpg connection under it, inside the session's
    transaction, so that what runs on it commits or rolls back with the session."""
    if not isinstance(db, AsyncSession):
        return db
    conn = await db.connection()
    raw = await conn.get_raw_connection()
    adapted: Any = raw.dbapi_connection
    # SQLAlchemy's asyncpg adapter sends BEGIN lazily, with the first statement it runs
    # itself; a statement sent straight to the driver before that would run outside the
    # session's transaction. Start it now (the adapter's own method, which records it).
    if getattr(adapted, "_transaction", None) is None:
        await adapted._start_transaction()
    driver: Db = raw.driver_connection  # type: ignore[assignment]
    return driver


@asynccontextmanager
async def autocommit(pool: asyncpg.Pool | None, engine: AsyncEngine) -> AsyncIterator[Db]:
    """A connection on which each statement is its own transaction: from the asyncpg pool,
    or, where none was made (tests, tools), borrowed from the SQLAlchemy engine's pool (its
    adapter sends no BEGIN until it runs a statement itself, and it runs none here)."""
    if pool is not None:
        async with pool.acquire() as conn:
            yield conn
        return
    async with engine.connect() as sa_conn:
        raw = await sa_conn.get_raw_connection()
        driver: Db = raw.driver_connection  # type: ignore[assignment]
        yield driver
