"""Webhook endpoints: where the worker delivers the event feed, and what each attempt did.

Each endpoint has its own position in the feed (the cursor of the last event it accepted)
and is delivered to sequentially: an event is retried until the endpoint accepts it, and
the endpoint's later events wait behind it. That gives at least once, in order (per
endpoint, so per account too). A failing endpoint is retried with exponential backoff with
jitter; once it has failed continuously for the policy's window it is disabled (updating
it with ``enabled: true`` starts it again where it stopped).

The signing secret is stored as it is (it must be used to sign each delivery): it is shown
once, when created or rotated, never read back by the API, and protected by the database's
access control like the rest of the tenant's data.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import text
from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncSession

from billing.errors import NotFound, ValidationFailed
from billing.events import Conn, Event, FeedPosition, new_secret, read_events
from billing.pages import Page, bigint, decode_cursor, encode_cursor
from db.statuses import EventType

MAX_URL = 2000
MAX_DESCRIPTION = 1000


@dataclass(frozen=True)
class EndpointData:
    url: str
    event_types: list[EventType]  # empty: every type
    description: str | None = None


@dataclass(frozen=True)
class EndpointChanges:
    url: str | None = None
    event_types: list[EventType] | None = None
    description: str | None = None
    enabled: bool | None = None


@dataclass(frozen=True)
class RetryPolicy:
    """How a failing endpoint is retried: the first wait, the longest, and how long it may
    fail continuously before it is disabled (at least 24 hours in production)."""

    first: float = 5.0
    most: float = 3600.0
    disable_after: float = 24 * 3600.0

    def wait(self, failures: int) -> float:
        """Seconds before the next try: doubling per failure up to ``most``, with jitter
        (half to the whole of it) so endpoints that failed together do not retry together."""
        base = min(self.most, self.first * 2 ** min(failures - 1, 30))
        return float(base * (0.5 + random.random() / 2))


def _check_url(url: str, field: list[str]) -> str:
    url = url.strip()
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname or len(url) > MAX_URL:
        raise ValidationFailed("url must be an http or https URL with a host", field)
    return url


def _check_description(description: str | None) -> str | None:
    if description is not None and len(description) > MAX_DESCRIPTION:
        raise ValidationFailed(
            f"description may be at most {MAX_DESCRIPTION} characters", ["description"]
        )
    return description


ENDPOINT_COLUMNS = (
    "id, tenant_id, url, event_types, description, enabled, disabled_reason, failing_since, "
    "failures, next_attempt_at, created_at, updated_at"
)


async def create_endpoint(
    session: AsyncSession, tenant_id: int, data: EndpointData
) -> tuple[RowMapping, str]:
    """A new endpoint and its signing secret (returned here only). It receives the events
    committed from now on: its cursor starts at the feed's current watermark."""
    url = _check_url(data.url, ["url"])
    secret = new_secret()
    row = (
        (
            await session.execute(
                text(
                    "INSERT INTO webhook_endpoint (tenant_id, url, event_types, description, "
                    "secret, cursor_xid) "
                    "VALUES (:t, :u, :e, :d, :s, pg_snapshot_xmin(pg_current_snapshot())) "
                    f"RETURNING {ENDPOINT_COLUMNS}"
                ),
                {
                    "t": tenant_id,
                    "u": url,
                    "e": [str(t) for t in data.event_types],
                    "d": _check_description(data.description),
                    "s": secret,
                },
            )
        )
        .mappings()
        .one()
    )
    return row, secret


async def get_endpoint(session: AsyncSession, tenant_id: int, endpoint_id: str) -> RowMapping:
    """The tenant's endpoint with that id, or NOT_FOUND."""
    try:
        ident = bigint(endpoint_id)
    except ValueError:
        raise NotFound(f"Webhook endpoint {endpoint_id} not found", ["id"]) from None
    row = (
        (
            await session.execute(
                text(
                    f"SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoint "
                    "WHERE id = :i AND tenant_id = :t"
                ),
                {"i": ident, "t": tenant_id},
            )
        )
        .mappings()
        .one_or_none()
    )
    if row is None:
        raise NotFound(f"Webhook endpoint {endpoint_id} not found", ["id"])
    return row


async def update_endpoint(
    session: AsyncSession, tenant_id: int, endpoint_id: str, changes: EndpointChanges
) -> RowMapping:
    """Change an endpoint; enabling a disabled one clears its failures and delivers again
    from where it stopped."""
    current = await get_endpoint(session, tenant_id, endpoint_id)
    url = current["url"] if changes.url is None else _check_url(changes.url, ["url"])
    types = (
        current["event_types"]
        if changes.event_types is None
        else [str(t) for t in changes.event_types]
    )
    description = (
        current["description"]
        if changes.description is None
        else _check_description(changes.description)
    )
    restart = changes.enabled is True and not current["enabled"]
    enabled = current["enabled"] if changes.enabled is None else changes.enabled
    return (
        (
            await session.execute(
                text(
                    "UPDATE webhook_endpoint SET url = :u, event_types = :e, description = :d, "
                    "enabled = :en, updated_at = now(), "
                    "disabled_reason = CASE WHEN :en THEN NULL ELSE coalesce(disabled_reason, "
                    "'disabled by the tenant') END, "
                    "failing_since = CASE WHEN :restart THEN NULL ELSE failing_since END, "
                    "failures = CASE WHEN :restart THEN 0 ELSE failures END, "
                    "next_attempt_at = CASE WHEN :restart THEN now() ELSE next_attempt_at END "
                    f"WHERE id = :i RETURNING {ENDPOINT_COLUMNS}"
                ),
                {
                    "i": current["id"],
                    "u": url,
                    "e": types,
                    "d": description,
                    "en": enabled,
                    "restart": restart,
                },
            )
        )
        .mappings()
        .one()
    )


async def delete_endpoint(session: AsyncSession, tenant_id: int, endpoint_id: str) -> RowMapping:
    """Remove an endpoint and its attempts; returns it as it was."""
    current = await get_endpoint(session, tenant_id, endpoint_id)
    await session.execute(text("DELETE FROM webhook_endpoint WHERE id = :i"), {"i": current["id"]})
    return current


async def rotate_secret(
    session: AsyncSession, tenant_id: int, endpoint_id: str
) -> tuple[RowMapping, str]:
    """A new signing secret for the endpoint (returned here only); the old one stops signing
    at once."""
    current = await get_endpoint(session, tenant_id, endpoint_id)
    secret = new_secret()
    await session.execute(
        text("UPDATE webhook_endpoint SET secret = :s, updated_at = now() WHERE id = :i"),
        {"s": secret, "i": current["id"]},
    )
    return current, secret


async def _page(
    session: AsyncSession, sql: str, params: dict[str, Any], first: int, after: str | None
) -> Page:
    from billing.events import check_first

    n = check_first(first)
    after_id = decode_cursor(after) if after else 0
    rows = list(
        (
            await session.execute(
                text(sql + " AND id > :after ORDER BY id LIMIT :n"),
                {**params, "after": after_id, "n": n + 1},
            )
        ).mappings()
    )
    total = (await session.execute(text(f"SELECT count(*) FROM ({sql}) c"), params)).scalar_one()
    return Page(rows[:n], len(rows) > n, int(total), [encode_cursor(r["id"]) for r in rows[:n]])


async def list_endpoints(
    session: AsyncSession, tenant_id: int, first: int | None, after: str | None
) -> Page:
    """The tenant's endpoints in creation order."""
    from billing.pages import DEFAULT_PAGE

    return await _page(
        session,
        f"SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoint WHERE tenant_id = :t",
        {"t": tenant_id},
        DEFAULT_PAGE if first is None else first,
        after,
    )


async def list_deliveries(
    session: AsyncSession, tenant_id: int, endpoint_id: str, first: int | None, after: str | None
) -> Page:
    """Every attempt to deliver to the endpoint, oldest first."""
    from billing.pages import DEFAULT_PAGE

    endpoint = await get_endpoint(session, tenant_id, endpoint_id)
    return await _page(
        session,
        "SELECT id, event_id, event_type, attempt, succeeded, status_code, duration_ms, error, "
        "created_at FROM webhook_delivery WHERE endpoint_id = :e",
        {"e": endpoint["id"]},
        DEFAULT_PAGE if first is None else first,
        after,
    )


# --------------------------------------------------------------------------- the worker's side


@dataclass(frozen=True)
class Claimed:
    """An endpoint leased to one deliverer: its secret, its filter and its place in the feed."""

    id: int
    tenant_id: int
    url: str
    secret: str
    event_types: list[EventType]
    position: FeedPosition
    failures: int
    failing_since: datetime | None


async def claim_due_endpoints(conn: Conn, lease_seconds: float, limit: int = 50) -> list[Claimed]:
    """Lease the enabled endpoints due for a delivery (two deliverers never hold the same
    endpoint: the lease is taken in one statement with SKIP LOCKED)."""
    res = await conn.execute(
        text(
            """
            UPDATE webhook_endpoint w SET lease_until = now() + make_interval(secs => :lease)
            FROM (SELECT id FROM webhook_endpoint
                  WHERE enabled AND next_attempt_at <= now()
                    AND (lease_until IS NULL OR lease_until < now())
                  ORDER BY next_attempt_at LIMIT :n FOR UPDATE SKIP LOCKED) due
            WHERE w.id = due.id
            RETURNING w.id, w.tenant_id, w.url, w.secret, w.event_types, w.cursor_xid::text AS xid,
                      w.cursor_id, w.failures, w.failing_since
            """
        ),
        {"lease": lease_seconds, "n": limit},
    )
    return [
        Claimed(
            id=int(r["id"]),
            tenant_id=int(r["tenant_id"]),
            url=r["url"],
            secret=r["secret"],
            event_types=[EventType(t) for t in r["event_types"]],
            position=FeedPosition(int(r["xid"]), int(r["cursor_id"])),
            failures=int(r["failures"]),
            failing_since=r["failing_since"],
        )
        for r in res.mappings()
    ]


async def next_events(conn: Conn, endpoint: Claimed, limit: int) -> list[Event]:
    """The endpoint's next events after its cursor, in feed order."""
    page = await read_events(
        conn, endpoint.tenant_id, endpoint.position, limit, types=endpoint.event_types or None
    )
    return page.events


@dataclass(frozen=True)
class Attempt:
    event: Event
    attempt: int
    succeeded: bool
    status_code: int | None
    duration_ms: float
    error: str | None


async def record_attempt(conn: Conn, endpoint: Claimed, a: Attempt, policy: RetryPolicy) -> Claimed:
    """Record one attempt; a success moves the endpoint's cursor past the event and clears
    its failures, a failure schedules the next try (or disables the endpoint once it has
    failed for ``policy.disable_after`` seconds). Returns the endpoint as it now stands."""
    await conn.execute(
        text(
            "INSERT INTO webhook_delivery (tenant_id, endpoint_id, event_id, event_type, attempt, "
            "succeeded, status_code, duration_ms, error) "
            "VALUES (:t, :e, :ev, :ty, :n, :ok, :code, :ms, :err)"
        ),
        {
            "t": endpoint.tenant_id,
            "e": endpoint.id,
            "ev": a.event.id,
            "ty": str(a.event.type),
            "n": a.attempt,
            "ok": a.succeeded,
            "code": a.status_code,
            "ms": a.duration_ms,
            "err": a.error,
        },
    )
    if a.succeeded:
        await conn.execute(
            text(
                "UPDATE webhook_endpoint SET cursor_xid = CAST(:x AS text)::xid8, cursor_id = :i, "
                "failures = 0, failing_since = NULL WHERE id = :e"
            ),
            {"x": str(a.event.position.xid), "i": a.event.position.id, "e": endpoint.id},
        )
        return Claimed(
            endpoint.id, endpoint.tenant_id, endpoint.url, endpoint.secret,
            endpoint.event_types, a.event.position, 0, None,
        )  # fmt: skip
    failures = endpoint.failures + 1
    row = (
        await conn.execute(
            text(
                """
                UPDATE webhook_endpoint SET
                  failures = :f,
                  failing_since = coalesce(failing_since, now()),
                  next_attempt_at = now() + make_interval(secs => :wait),
                  lease_until = NULL,
                  enabled = now() - coalesce(failing_since, now())
                            < make_interval(secs => :window),
                  disabled_reason = CASE
                    WHEN now() - coalesce(failing_since, now()) >= make_interval(secs => :window)
                    THEN 'failing since ' || coalesce(failing_since, now())::text
                    ELSE NULL END
                WHERE id = :e
                RETURNING failing_since
                """
            ),
            {
                "f": failures,
                "wait": policy.wait(failures),
                "window": policy.disable_after,
                "e": endpoint.id,
            },
        )
    ).one()
    return Claimed(
        endpoint.id, endpoint.tenant_id, endpoint.url, endpoint.secret,
        endpoint.event_types, endpoint.position, failures, row[0],
    )  # fmt: skip


RECORD_SUCCESSES = """
WITH attempts AS (
  INSERT INTO webhook_delivery (tenant_id, endpoint_id, event_id, event_type, attempt,
                                succeeded, status_code, duration_ms)
  SELECT :t, :e, a.event_id, a.event_type, a.attempt, true, a.code, a.ms
  FROM unnest(CAST(:ids AS bigint[]), CAST(:types AS text[]), CAST(:attempts AS int[]),
              CAST(:codes AS int[]), CAST(:mss AS float8[])) AS a(event_id, event_type, attempt,
                                                                   code, ms)
)
UPDATE webhook_endpoint SET cursor_xid = CAST(:x AS text)::xid8, cursor_id = :i, failures = 0,
                            failing_since = NULL
WHERE id = :e
"""


async def record_successes(conn: Conn, endpoint: Claimed, done: list[Attempt]) -> Claimed:
    """Record a run of accepted deliveries and move the endpoint's cursor past the last, in one
    statement. Recording them together is safe: a deliverer that dies before this re-sends
    them (at least once), in the same order."""
    if not done:
        return endpoint
    last = done[-1].event.position
    await conn.execute(
        text(RECORD_SUCCESSES),
        {
            "t": endpoint.tenant_id,
            "e": endpoint.id,
            "ids": [a.event.id for a in done],
            "types": [str(a.event.type) for a in done],
            "attempts": [a.attempt for a in done],
            "codes": [a.status_code for a in done],
            "mss": [a.duration_ms for a in done],
            "x": str(last.xid),
            "i": last.id,
        },
    )
    return Claimed(
        endpoint.id, endpoint.tenant_id, endpoint.url, endpoint.secret,
        endpoint.event_types, last, 0, None,
    )  # fmt: skip


async def release(conn: Conn, endpoint_id: int) -> None:
    """Give the endpoint's lease back (it is due again at once when it did not fail)."""
    await conn.execute(
        text("UPDATE webhook_endpoint SET lease_until = NULL WHERE id = :e"), {"e": endpoint_id}
    )
