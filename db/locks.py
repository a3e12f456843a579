"""Transaction-scoped advisory locks (never session-level: they leak through pools).

Keys are two int4s: a namespace and the object id,
folded into int4 range. Collisions only cost a spurious wait, never correctness,
because every lock holder re-reads its rows after taking the lock.
"""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

# Namespaces (first key of the two-key advisory lock functions): every user takes them from
# here. Migrations 0002 and 0003 wrote NS_ACCOUNT_METRICS into pb_refresh_account (0006 drops
# it; their downgrades put it back), and a migration's text is fixed once released, so they
# pin the literal; tests/test_locks.py holds every such literal to these values.
NS_MIGRATIONS = 7100  # exclusive while db.migrate upgrades the schema
NS_ACCOUNT_METRICS = 7101  # exclusive: ordinary writers, refreshAccountMetrics, the partner switch
NS_ACCOUNT_MODE = 7102  # shared by writers, exclusive when partnerAccount flips
NS_TENANT_REFRESH = 7103


def key_of(ident: int) -> int:
    """Fold a bigint id into PostgreSQL's int4 range for the two-key lock functions."""
    return ((ident + 2**31) % 2**32) - 2**31


def lock_timeout_sql(lock_wait_ms: str) -> str:
    """The lock_timeout setting (an SQL text expression) for a lock wait given as an SQL
    expression in milliseconds. A lock wait of 0 means do not wait, but PostgreSQL reads
    lock_timeout 0 as wait forever: 0 becomes the smallest positive wait, 1 ms. The session
    writes (bound_lock_waits) and the one-statement writes (account_for_write) use it."""
    return f"(greatest({lock_wait_ms}, 1)::text || 'ms')"


def key_sql(ident_sql: str) -> str:
    """key_of in SQL, for a lock taken inside a statement."""
    return f"((({ident_sql}) + 2147483648) % 4294967296 - 2147483648)::int"


def write_locks_sql(lock_timeout_sql: str, account_id_sql: str, ordinary_sql: str) -> str:
    """A condition for the scan of a one-statement write's accounts (below its row lock):
    first bounds the statement's lock waits with ``lock_timeout_sql``, then, where
    ``ordinary_sql`` holds, takes the account's metrics lock (NS_ACCOUNT_METRICS), which
    every session write on an ordinary account takes too. Writers of one ordinary account
    then queue on that one lock, granted in turn, instead of all waking on every commit
    to fight for its metrics row (which cost PostgreSQL several times the write itself).
    CASE fixes the order: the lock wait is in force before the first wait."""
    return (
        f"CASE WHEN set_config('lock_timeout', {lock_timeout_sql}, true) IS NULL THEN false "
        f"WHEN NOT ({ordinary_sql}) THEN true "
        f"ELSE (SELECT true FROM pg_advisory_xact_lock({NS_ACCOUNT_METRICS}, "
        f"{key_sql(account_id_sql)})) END"
    )


def lock_waits_end_cte(locked: str, name: str) -> str:
    """A CTE ``name`` yielding the rows of the CTE ``locked`` (which took a one-statement
    write's account locks under the tenant's lock wait, write_locks_sql) only once every one
    of them is locked, and after the statement's lock_timeout is back to the server's: the
    statement's own lock waits as in unbound_lock_waits. Each row of ``name`` needs the row of
    the subquery that counts all of ``locked`` and then resets the setting, so no consumer
    sees a row, and no write runs, before that."""
    return f"""{name} AS (
  SELECT l.* FROM {locked} l,
       (SELECT set_config('lock_timeout', NULL, true) FROM (SELECT count(*) FROM {locked}) n) w
)"""


async def bound_lock_waits(session: AsyncSession, tenant_id: int) -> None:
    """From here on, a lock wait of this transaction ends after the tenant's lock wait
    (SQLSTATE 55P03, which the domain reports as LOCK_COMPETITION)."""
    await session.execute(
        text(
            f"SELECT set_config('lock_timeout', {lock_timeout_sql('lock_wait_ms')}, true) "
            "FROM tenant WHERE id = :t"
        ),
        {"t": tenant_id},
    )


async def unbound_lock_waits(session: AsyncSession) -> None:
    """Back to the server's lock_timeout for the rest of the transaction. The tenant's lock
    wait bounds taking the contended locks (account, subscription rows), not the short
    incidental waits of the writes after them (a relation extension, an index page): with
    a tight lock wait those would fail a partner account's write for no reason."""
    await session.execute(text("SET LOCAL lock_timeout TO DEFAULT"))


async def xact_lock(session: AsyncSession, ns: int, ident: int) -> None:
    """Exclusive transaction lock; waits up to the transaction's lock_timeout."""
    await session.execute(
        text("SELECT pg_advisory_xact_lock(:ns, :k)"), {"ns": ns, "k": key_of(ident)}
    )


async def xact_lock_shared(session: AsyncSession, ns: int, ident: int) -> None:
    """Shared transaction lock; waits up to the transaction's lock_timeout."""
    await session.execute(
        text("SELECT pg_advisory_xact_lock_shared(:ns, :k)"), {"ns": ns, "k": key_of(ident)}
    )


async def try_xact_lock(session: AsyncSession, ns: int, ident: int) -> bool:
    """Exclusive transaction lock, or False at once if someone holds it."""
    res = await session.execute(
        text("SELECT pg_try_advisory_xact_lock(:ns, :k)"), {"ns": ns, "k": key_of(ident)}
    )
    return bool(res.scalar_one())
