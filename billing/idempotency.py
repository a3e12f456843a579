"""Idempotency keys: a repeat with the same key and input returns the first result."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from billing.errors import IdempotencyKeyReused, ValidationFailed
from db.pg import Db

KEY_TTL_HOURS = 24


def request_hash(operation: str, payload: Any) -> str:
    """A stable hash of an operation's input (the key itself excluded by the caller)."""
    blob = json.dumps([operation, payload], sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()


def check_key(key: str, field: list[str]) -> None:
    """An idempotency key is 1-255 characters."""
    if not key or len(key) > 255:
        raise ValidationFailed("idempotencyKey must be 1-255 characters", field)


async def claim(
    session: AsyncSession, tenant_id: int, key: str, operation: str, payload: Any
) -> dict[str, Any] | None:
    """Claim the key for this request, or return the stored result of the first one.

    A concurrent request with the same key waits on the key's row until the first
    commits (then replays it) or rolls back (then proceeds itself)."""
    check_key(key, ["idempotencyKey"])
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


# --------------------------------------------------------------------------- many keys at once


@dataclass
class Claims:
    """What claiming the keys of a bulk call found: keys whose first request committed
    (with its stored result) and keys that were used with another input."""

    replayed: dict[str, dict[str, Any]] = field(default_factory=dict)
    reused: set[str] = field(default_factory=set)


CLAIM_MANY = """
INSERT INTO idempotency_key (tenant_id, key, operation, request_hash)
SELECT $1::bigint, u.k, $2::text, u.h
FROM unnest($3::text[], $4::text[]) AS u(k, h)
ORDER BY u.k
ON CONFLICT DO NOTHING
RETURNING key
"""


async def claim_many(db: Db, tenant_id: int, operation: str, hashes: dict[str, str]) -> Claims:
    """Claim many keys (key -> request hash, each checked with check_key) in one statement,
    as :func:`claim` claims one. Keys are inserted in sorted order, so two calls that share
    keys wait for each other in one order and never deadlock; a key another transaction
    holds waits until that one commits (then it is replayed) or rolls back (then it is
    claimed here)."""
    out = Claims()
    if not hashes:
        return out
    keys = sorted(hashes)
    await db.fetch(
        "DELETE FROM idempotency_key WHERE tenant_id = $1 AND key = ANY($2::text[]) "
        f"AND created_at < now() - interval '{KEY_TTL_HOURS} hours' RETURNING key",
        tenant_id,
        keys,
    )
    claimed = {
        r["key"]
        for r in await db.fetch(CLAIM_MANY, tenant_id, operation, keys, [hashes[k] for k in keys])
    }
    taken = [k for k in keys if k not in claimed]
    if not taken:
        return out
    rows = await db.fetch(
        "SELECT key, operation, request_hash, result::text AS result FROM idempotency_key "
        "WHERE tenant_id = $1 AND key = ANY($2::text[])",
        tenant_id,
        taken,
    )
    for r in rows:
        if r["operation"] != operation or r["request_hash"] != hashes[r["key"]]:
            out.reused.add(r["key"])
        else:
            out.replayed[r["key"]] = json.loads(r["result"] or "{}")
    return out


async def store_ids(db: Db, tenant_id: int, ids: dict[str, int]) -> None:
    """Remember ``{"id": id}`` as the result of each key claimed by :func:`claim_many`."""
    if not ids:
        return
    keys = list(ids)
    await db.fetch(
        "UPDATE idempotency_key k SET result = json_build_object('id', u.id) "
        "FROM unnest($2::text[], $3::bigint[]) AS u(key, id) "
        "WHERE k.tenant_id = $1 AND k.key = u.key RETURNING k.key",
        tenant_id,
        keys,
        [ids[k] for k in keys],
    )


async def release(db: Db, tenant_id: int, keys: list[str]) -> None:
    """Forget keys claimed by rows that were then refused (a retry of those rows must
    write them, not replay a failure)."""
    if keys:
        await db.fetch(
            "DELETE FROM idempotency_key WHERE tenant_id = $1 AND key = ANY($2::text[]) "
            "RETURNING key",
            tenant_id,
            keys,
        )
