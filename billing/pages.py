"""Keyset pagination over id-ordered queries (Relay cursors are opaque ids)."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Select, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from billing.errors import LimitExceeded, ValidationFailed

MAX_PAGE = 500
DEFAULT_PAGE = 50


def encode_cursor(ident: int) -> str:
    """An opaque cursor for a row id."""
    return base64.urlsafe_b64encode(f"c:{ident}".encode()).decode()


#: Ids, and the transaction ids of the event feed, are PostgreSQL bigints.
BIGINT_MAX = 2**63 - 1


def bigint(text: str) -> int:
    """A non-negative id read from a client's text (a cursor, an ID argument): ValueError when
    it is no number or lies beyond the bigint columns, which PostgreSQL would refuse with an
    error that is no client mistake of its kind."""
    value = int(text)
    if not 0 <= value <= BIGINT_MAX:
        raise ValueError(text)
    return value


def decode_cursor(cursor: str) -> int:
    """The row id inside a cursor; a forged cursor is a VALIDATION error."""
    try:
        raw = base64.urlsafe_b64decode(cursor.encode()).decode()
        if not raw.startswith("c:"):
            raise ValueError(raw)
        return bigint(raw[2:])
    except (ValueError, UnicodeDecodeError):
        raise ValidationFailed("Invalid cursor", ["after"]) from None


@dataclass
class Page:
    rows: list[Any]
    has_next: bool
    total: int
    cursors: list[str]

    @property
    def end_cursor(self) -> str | None:
        return self.cursors[-1] if self.cursors else None


async def paginate(
    session: AsyncSession, stmt: Select[Any], id_col: Any, first: int | None, after: str | None
) -> Page:
    """One page of ``stmt`` ordered by ``id_col``, plus the total count."""
    n = DEFAULT_PAGE if first is None else first
    if n < 0:
        raise ValidationFailed("first must not be negative", ["first"])
    if n > MAX_PAGE:
        raise LimitExceeded(f"first may be at most {MAX_PAGE}", ["first"])
    total = (await session.execute(select(func.count()).select_from(stmt.subquery()))).scalar_one()
    page_stmt = stmt
    if after:
        page_stmt = page_stmt.where(id_col > decode_cursor(after))
    rows = list((await session.execute(page_stmt.order_by(id_col).limit(n + 1))).mappings())
    has_next = len(rows) > n
    rows = rows[:n]
    return Page(rows, has_next, int(total), [encode_cursor(r["id"]) for r in rows])
