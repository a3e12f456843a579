"""Idempotency keys: a repeat with the same key and input returns the first result."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from billing.errors import IdempotencyKeyReused, ValidationFailed

KEY_TTL_HOURS = 24


def request_hash(operation: str, payload: Any) -> str:
    """A stable hash of an operation's input (the key itself excluded by the caller)."""
    blob = json.dumps([operation, payload], sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()


async def claim(
    session: AsyncSession, tenant_id: int, key: str, operation: str, payload: Any
) -> dict[str, Any] | None:
    """Claim the key for this request, or return the stored result of the first one.

    A concurrent request with the same key waits on the key's row until the first
    commits (then replays it) or rolls back (then proceeds itself)."""
    if not key or len(key) > 255:
        raise ValidationFailed("idempotencyKey must be 1-255 characters", ["idempotencyKey"])
    h = request_hash(operation, payload)
    # Keys older than the TTL are forgotten; a stale one is replaced.
    await session.execute(
        text(
            "DELETE FROM idempotency_key WHERE tenant_id = :t AND key = :k "
            f"AND created_at < now() - interval '{KEY_TTL_HOURS} hours'"
        ),
        {"t": tenant_id, "k": key},
    )
    inserted = (
        await session.execute(
            text(
                "INSERT INTO idempotency_key (tenant_id, key, operation, request_hash) "
                "VALUES (:t, :k, :o, :h) ON CONFLICT DO NOTHING RETURNING key"
            ),
            {"t": tenant_id, "k": key, "o": operation, "h": h},
        )
    ).first()
    if inserted is not None:
        return None
    row = (
        (
            await session.execute(
                text(
                    "SELECT operation, request_hash, result FROM idempotency_key "
                    "WHERE tenant_id = :t AND key = :k"
                ),
                {"t": tenant_id, "k": key},
            )
        )
        .mappings()
        .one()
    )
    if row["operation"] != operation or row["request_hash"] != h:
        raise IdempotencyKeyReused(
            f"idempotencyKey {key!r} was used with a different input", ["idempotencyKey"]
        )
    return dict(row["result"] or {})


async def store(session: AsyncSession, tenant_id: int, key: str, result: dict[str, Any]) -> None:
    """Remember the result of the request that claimed the key (same transaction)."""
    await session.execute(
        text(
            "UPDATE idempotency_key SET result = CAST(:r AS json) WHERE tenant_id = :t AND key = :k"
        ),
        {"t": tenant_id, "k": key, "r": json.dumps(result)},
    )
