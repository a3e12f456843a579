"""Tenants and API keys. Keys are shown once and stored as SHA-256 hashes."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Row, delete, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from billing.errors import NotFound, ValidationFailed
from billing.numbering import create_sequences
from db.models import ApiKey, Tenant, table_of

tenant_t = table_of(Tenant)
api_key_t = table_of(ApiKey)

DEV_TENANT_NAME = "development"


@dataclass(frozen=True)
class TenantSettings:
    tenant_id: int
    name: str
    metrics_refresh_interval: int
    lock_wait_ms: int


def hash_key(key: str) -> str:
    """The stored form of an API key."""
    return hashlib.sha256(key.encode()).hexdigest()


async def create_tenant(session: AsyncSession, name: str) -> tuple[int, str]:
    """Create a tenant with its numbering sequences and one API key; returns (id, key)."""
    if not name.strip():
        raise ValidationFailed("Tenant name must not be empty", ["name"])
    tenant_id = (
        await session.execute(insert(tenant_t).values(name=name.strip()).returning(tenant_t.c.id))
    ).scalar_one()
    await create_sequences(session, tenant_id)
    key = await create_api_key(session, tenant_id)
    return tenant_id, key


async def create_api_key(session: AsyncSession, tenant_id: int) -> str:
    """A new API key for the tenant (returned once, stored hashed)."""
    key = "pb_" + secrets.token_urlsafe(32)
    await session.execute(
        insert(api_key_t).values(tenant_id=tenant_id, key_hash=hash_key(key), prefix=key[:7])
    )
    return key


@dataclass(frozen=True)
class ApiKeyInfo:
    """What is known of a stored key: never the key itself, only its first characters."""

    id: int
    tenant_id: int
    prefix: str
    created_at: datetime


@dataclass(frozen=True)
class TenantInfo:
    id: int
    name: str
    created_at: datetime
    keys: list[ApiKeyInfo]


def _key_info(row: Row[Any]) -> ApiKeyInfo:
    return ApiKeyInfo(row.id, row.tenant_id, row.prefix, row.created_at)


async def list_tenants(session: AsyncSession) -> list[TenantInfo]:
    """Every tenant with its API keys (their ids and prefixes), in creation order."""
    tenants = (await session.execute(select(tenant_t).order_by(tenant_t.c.id))).all()
    keys = (await session.execute(select(api_key_t).order_by(api_key_t.c.id))).all()
    by_tenant: dict[int, list[ApiKeyInfo]] = {}
    for k in keys:
        by_tenant.setdefault(k.tenant_id, []).append(_key_info(k))
    return [TenantInfo(t.id, t.name, t.created_at, by_tenant.get(t.id, [])) for t in tenants]


async def rotate_api_key(
    session: AsyncSession, tenant_id: int, *, keep_old: bool = False
) -> tuple[str, list[ApiKeyInfo]]:
    """A new key for the tenant; its other keys are revoked unless ``keep_old`` (then
    revoke them later, once every client has the new one). Returns (new key, revoked)."""
    found = await session.execute(
        select(tenant_t.c.id).where(tenant_t.c.id == tenant_id).with_for_update()
    )
    if found.scalar_one_or_none() is None:
        raise NotFound(f"Tenant {tenant_id} not found", ["tenant"])
    revoked: list[ApiKeyInfo] = []
    if not keep_old:
        rows = await session.execute(
            delete(api_key_t).where(api_key_t.c.tenant_id == tenant_id).returning(api_key_t)
        )
        revoked = sorted((_key_info(r) for r in rows), key=lambda k: k.id)
    return await create_api_key(session, tenant_id), revoked


async def revoke_api_key(session: AsyncSession, key_id: int) -> ApiKeyInfo:
    """Revoke one key by its id (``list_tenants``): requests with it are refused from the
    commit on (API processes cache a key for less than a second)."""
    row = (
        await session.execute(
            delete(api_key_t).where(api_key_t.c.id == key_id).returning(api_key_t)
        )
    ).first()
    if row is None:
        raise NotFound(f"API key {key_id} not found", ["key"])
    return _key_info(row)


async def api_key_id(session: AsyncSession, key: str) -> int | None:
    """The id of a stored key, given the key itself, or None."""
    res = await session.execute(select(api_key_t.c.id).where(api_key_t.c.key_hash == hash_key(key)))
    return res.scalar_one_or_none()


async def tenant_for_api_key(session: AsyncSession, key: str) -> int | None:
    """The tenant an API key belongs to, or None."""
    res = await session.execute(
        select(api_key_t.c.tenant_id).where(api_key_t.c.key_hash == hash_key(key))
    )
    return res.scalar_one_or_none()


async def ensure_dev_tenant(session: AsyncSession) -> tuple[int, str | None]:
    """The development tenant of the embedded default run; creates it (and a key) once.

    Returns (tenant id, the new key or None when it already existed)."""
    res = await session.execute(
        select(tenant_t.c.id).where(tenant_t.c.name == DEV_TENANT_NAME).order_by(tenant_t.c.id)
    )
    existing = res.scalars().first()
    if existing is not None:
        return existing, None
    return await create_tenant(session, DEV_TENANT_NAME)


async def get_settings(session: AsyncSession, tenant_id: int) -> TenantSettings:
    """The tenant's settings."""
    row = (await session.execute(select(tenant_t).where(tenant_t.c.id == tenant_id))).one()
    return TenantSettings(row.id, row.name, row.metrics_refresh_interval, row.lock_wait_ms)


async def update_settings(
    session: AsyncSession,
    tenant_id: int,
    *,
    metrics_refresh_interval: int | None = None,
    lock_wait_ms: int | None = None,
) -> TenantSettings:
    """Change the refresh interval (1 s .. 7 days) and the lock wait (0 .. 60 s)."""
    values: dict[str, int] = {}
    if metrics_refresh_interval is not None:
        if not 1 <= metrics_refresh_interval <= 7 * 86400:
            raise ValidationFailed(
                "metricsRefreshInterval must be between 1 and 604800 seconds",
                ["metricsRefreshInterval"],
            )
        values["metrics_refresh_interval"] = metrics_refresh_interval
    if lock_wait_ms is not None:
        if not 0 <= lock_wait_ms <= 60000:
            raise ValidationFailed("lockWait must be between 0 and 60000 ms", ["lockWait"])
        values["lock_wait_ms"] = lock_wait_ms
    if values:
        await session.execute(update(tenant_t).where(tenant_t.c.id == tenant_id).values(**values))
    return await get_settings(session, tenant_id)
