"""Business numbers from per-tenant PostgreSQL sequences.

``nextval`` is not transactional and takes no row lock, so parallel writers never
queue behind a numbering row (a numbering lock caused billing-day lock storms
elsewhere). Gaps after rollbacks are expected and harmless.
"""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from billing.errors import ValidationFailed
from db.pg import Db

PREFIXES: dict[str, str] = {
    "account": "A",
    "subscription": "S",
    "charge": "C",
    "order": "O",
    "invoice": "INV",
    "credit_memo": "CM",
    "debit_memo": "DM",
    "payment": "P",
    "refund": "R",
    "bill_run": "BR",
    "product": "PC",
    "rate_plan": "PRP",
    "rate_plan_charge": "PRPC",
}


def sequence_name(tenant_id: int, kind: str) -> str:
    """The sequence that numbers ``kind`` in one tenant."""
    if kind not in PREFIXES:
        raise KeyError(kind)
    return f"pb_seq_t{int(tenant_id)}_{kind}"


async def create_sequences(session: AsyncSession, tenant_id: int) -> None:
    """Create every numbering sequence of a new tenant."""
    for kind in PREFIXES:
        await session.execute(
            text(f"CREATE SEQUENCE IF NOT EXISTS {sequence_name(tenant_id, kind)}")
        )


def caller_number(given: str | None, path: list[str]) -> str | None:
    """A business number the caller gave, stripped (None when none was given); it must be
    1-64 characters. ``path`` is the input field, whose name the message uses."""
    if given is None:
        return None
    number = str(given).strip()
    if not number or len(number) > 64:
        raise ValidationFailed(f"{path[-1]} must be 1-64 characters", path)
    return number


def format_number(kind: str, n: int) -> str:
    """``INV00000042``: the prefix and eight digits (more when needed)."""
    return f"{PREFIXES[kind]}{n:08d}"


def format_sql(kind: str, value_sql: str) -> str:
    """SQL formatting a drawn value as format_number does (prefix, eight digits or more)."""
    v = value_sql
    return (
        f"'{PREFIXES[kind]}' || CASE WHEN {v} < 100000000 THEN lpad({v}::text, 8, '0') "
        f"ELSE {v}::text END"
    )


def number_sql(kind: str, sequence_param: str) -> str:
    """SQL drawing ONE generated number of ``kind`` inside a statement (a scalar subquery:
    PostgreSQL evaluates it once per statement, so never use it for several rows; draw
    those with nextval in a MATERIALIZED CTE and format_sql). ``sequence_param`` is the
    parameter holding sequence_name(...)."""
    return (
        f"(SELECT {format_sql(kind, 's.n')} "
        f"FROM (SELECT nextval({sequence_param}::text::regclass) AS n) s)"
    )


async def next_number(session: AsyncSession, tenant_id: int, kind: str) -> str:
    """The next generated number of ``kind`` in the tenant."""
    res = await session.execute(text(f"SELECT nextval('{sequence_name(tenant_id, kind)}')"))
    return format_number(kind, int(res.scalar_one()))


async def next_numbers(session: AsyncSession, tenant_id: int, kind: str, count: int) -> list[str]:
    """``count`` generated numbers in one round trip (bulk paths)."""
    if count <= 0:
        return []
    res = await session.execute(
        text(f"SELECT nextval('{sequence_name(tenant_id, kind)}') FROM generate_series(1, :n)"),
        {"n": count},
    )
    return [format_number(kind, int(v)) for v in res.scalars()]


async def draw_numbers(db: Db, tenant_id: int, kind: str, count: int) -> list[str]:
    """``count`` generated numbers of ``kind`` in one round trip on an asyncpg connection
    (the bulk writes draw every number of a call at once)."""
    if count <= 0:
        return []
    rows = await db.fetch(
        "SELECT nextval($1::text::regclass) AS n FROM generate_series(1, $2::int)",
        sequence_name(tenant_id, kind),
        count,
    )
    return [format_number(kind, int(r["n"])) for r in rows]
