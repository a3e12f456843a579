"""The event feed and the webhook endpoints that receive it.

Events are appended by the statement that makes each change (migration 0011's triggers,
billing.metrics, the fold), so an event exists if and only if its change committed. This
module reads them.

Commit order, not id order: ids are drawn when rows are inserted, and transactions commit
in another order, so "every id above my last one" would skip an event whose transaction
committed after a later id was handed out. Each event carries its writing transaction's id
(``xid``), the feed is ordered by (xid, id), and a read returns only events with an xid below
its snapshot's ``xmin``: every transaction below that bound has ended, so nothing can still
commit behind a position already handed out. A cursor is that (xid, id) position. The price:
an event becomes readable once every transaction that began before its own has ended (a
long transaction anywhere on the server holds the feed back; nothing is lost).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from billing.errors import LimitExceeded, ValidationFailed
from billing.pages import DEFAULT_PAGE, MAX_PAGE, bigint
from db.statuses import EventType, ImportKind

Conn = AsyncSession | AsyncConnection

RETENTION_DAYS = 30  # events are kept at least this long (PARTNERBILL_EVENT_RETENTION_DAYS)


@dataclass(frozen=True, order=True)
class FeedPosition:
    """A place in the feed: the writing transaction's id, then the event id."""

    xid: int
    id: int

    def cursor(self) -> str:
        """The opaque cursor of this position."""
        return base64.urlsafe_b64encode(f"e:{self.xid}:{self.id}".encode()).decode()


START = FeedPosition(0, 0)


def decode_position(cursor: str | None, field: str = "after") -> FeedPosition:
    """The position inside a feed cursor (START for none); a forged one is VALIDATION."""
    if not cursor:
        return START
    try:
        tag, xid, ident = base64.urlsafe_b64decode(cursor.encode()).decode().split(":")
        if tag != "e":
            raise ValueError(tag)
        return FeedPosition(bigint(xid), bigint(ident))
    except (ValueError, UnicodeDecodeError):
        raise ValidationFailed("Invalid cursor", [field]) from None


@dataclass(frozen=True)
class Event:
    id: int
    position: FeedPosition
    type: EventType
    occurred_at: datetime
    account_id: int | None
    account_number: str | None
    data: dict[str, Any]

    def payload(self) -> dict[str, Any]:
        """The event as a webhook body and as ``partnerbill events tail`` prints it."""
        return {
            "id": str(self.id),
            "cursor": self.position.cursor(),
            "type": str(self.type),
            "occurredAt": self.occurred_at.isoformat(),
            "accountNumber": self.account_number,
            "data": self.data,
        }


@dataclass(frozen=True)
class EventPage:
    events: list[Event]
    has_next: bool
    end: FeedPosition  # where the next read starts (the given position when nothing came)


FEED = """
SELECT e.id, e.xid::text AS xid, e.type, e.occurred_at, e.account_id, a.account_number, e.data
FROM event e LEFT JOIN account a ON a.id = e.account_id
WHERE e.tenant_id = :t AND (e.xid, e.id) > (CAST(:xid AS text)::xid8, :id)
  -- Only transactions that have all ended: none can still commit behind the cursor.
  AND e.xid < pg_snapshot_xmin(pg_current_snapshot())
  AND (CAST(:types AS text[]) IS NULL OR e.type = ANY(CAST(:types AS text[])))
  AND (CAST(:accounts AS bigint[]) IS NULL OR e.account_id = ANY(CAST(:accounts AS bigint[])))
ORDER BY e.xid, e.id
LIMIT :n
"""


def check_first(first: int | None) -> int:
    """A page size: DEFAULT_PAGE when absent, refused below 0 or above MAX_PAGE."""
    n = DEFAULT_PAGE if first is None else first
    if n < 0:
        raise ValidationFailed("first must not be negative", ["first"])
    if n > MAX_PAGE:
        raise LimitExceeded(f"first may be at most {MAX_PAGE}", ["first"])
    return n


async def read_events(
    conn: Conn,
    tenant_id: int,
    after: FeedPosition,
    first: int,
    *,
    types: Sequence[EventType] | None = None,
    account_ids: Sequence[int] | None = None,
) -> EventPage:
    """The tenant's events after ``after`` in commit order, at most ``first``: a reader that
    always continues from the page's ``end`` sees every event once."""
    res = await conn.execute(
        text(FEED),
        {
            "t": tenant_id,
            "xid": str(after.xid),
            "id": after.id,
            "types": None if types is None else [str(t) for t in types],
            "accounts": None if account_ids is None else list(account_ids),
            "n": first + 1,
        },
    )
    rows = list(res.mappings())
    events = [
        Event(
            id=int(r["id"]),
            position=FeedPosition(int(r["xid"]), int(r["id"])),
            type=EventType(r["type"]),
            occurred_at=r["occurred_at"],
            account_id=r["account_id"],
            account_number=r["account_number"],
            data=r["data"] if isinstance(r["data"], dict) else json.loads(r["data"]),
        )
        for r in rows[:first]
    ]
    return EventPage(events, len(rows) > first, events[-1].position if events else after)


@dataclass(frozen=True)
class ImportSummary:
    """What an import client did with one file (IMPORT_FINISHED)."""

    kind: str
    file: str
    rows: int
    written: int
    failed: int


async def record_import_finished(session: AsyncSession, tenant_id: int, s: ImportSummary) -> None:
    """Append the IMPORT_FINISHED event of an import client's file, after checking that its
    counts add up."""
    if s.kind not in tuple(ImportKind):
        raise ValidationFailed(f"kind must be one of {', '.join(ImportKind)}", ["kind"])
    if not s.file.strip() or len(s.file) > 255:
        raise ValidationFailed("file must be 1-255 characters", ["file"])
    if min(s.rows, s.written, s.failed) < 0 or s.written + s.failed > s.rows:
        raise ValidationFailed("written and failed are counts of the file's rows", ["rows"])
    data = {"kind": s.kind, "file": s.file, "rows": s.rows, "written": s.written,
            "failed": s.failed}  # fmt: skip
    await session.execute(
        text(
            "INSERT INTO event (tenant_id, type, account_id, data) "
            "VALUES (:t, :type, NULL, CAST(:data AS jsonb))"
        ),
        {"t": tenant_id, "type": str(EventType.IMPORT_FINISHED), "data": json.dumps(data)},
    )


async def prune_events(conn: Conn, older_than_days: int) -> int:
    """Delete events (and webhook attempts) older than the retention; returns the events
    deleted. An endpoint still behind them skips what is gone."""
    res = await conn.execute(
        text("DELETE FROM event WHERE occurred_at < now() - make_interval(days => :d)"),
        {"d": older_than_days},
    )
    await conn.execute(
        text("DELETE FROM webhook_delivery WHERE created_at < now() - make_interval(days => :d)"),
        {"d": older_than_days},
    )
    return int(getattr(res, "rowcount", 0) or 0)


# --------------------------------------------------------------------------- signatures


SIGNATURE_HEADER = "Partnerbill-Signature"
SIGNATURE_TOLERANCE = 300  # seconds a receiver accepts between the signature's t and now


def new_secret() -> str:
    """A signing secret: 32 random bytes, prefixed so it is recognised when leaked."""
    return "whsec_" + secrets.token_hex(32)


def sign(secret: str, body: bytes, at: int | None = None) -> str:
    """The signature header's value: ``t=<unix>,v1=<hex HMAC-SHA256(secret, "t.body")>``."""
    t = int(time.time()) if at is None else at
    mac = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={t},v1={mac}"


def verify(
    secret: str,
    header: str,
    body: bytes,
    *,
    tolerance: int = SIGNATURE_TOLERANCE,
    now: int | None = None,
) -> bool:
    """True when ``header`` signs ``body`` with ``secret`` within ``tolerance`` seconds."""
    parts: dict[str, list[str]] = {}
    for item in header.split(","):
        key, _, value = item.strip().partition("=")
        parts.setdefault(key, []).append(value)
    try:
        t = int(parts["t"][0])
    except (KeyError, ValueError):
        return False
    if abs((int(time.time()) if now is None else now) - t) > tolerance:
        return False
    expected = sign(secret, body, t).split("v1=", 1)[1]
    return any(hmac.compare_digest(expected, v) for v in parts.get("v1", []))
