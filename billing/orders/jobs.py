"""Asynchronous orders: the job row that holds an order's input until the worker runs it."""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from typing import Any

from sqlalchemy import select, text, update
from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncSession

from billing.errors import IdempotencyKeyReused, NotFound
from billing.orders.data import input_hash, jsonable
from db.models import Job, table_of
from db.statuses import JobKind, JobStatus

J = table_of(Job)


def order_job_id(tenant_id: int, idempotency_key: str | None, fresh: str) -> str:
    """Deterministic job id: from the idempotency key when there is one."""
    if idempotency_key:
        return "ord-" + hashlib.sha256(f"{tenant_id}:{idempotency_key}".encode()).hexdigest()[:32]
    return "ord-" + fresh


async def create_order_job(
    session: AsyncSession, tenant_id: int, job_id: str, data: dict[str, Any]
) -> tuple[RowMapping, bool]:
    """Record an asynchronous order as QUEUED; a repeat with the same id and input returns the
    first job (second value False: nothing new to enqueue)."""
    payload = jsonable(data)
    res = await session.execute(
        text(
            "INSERT INTO job (id, tenant_id, kind, status, input, errors) VALUES "
            "(:id, :t, 'create_order', 'QUEUED', CAST(:i AS json), CAST('[]' AS json)) "
            "ON CONFLICT (id) DO NOTHING RETURNING id"
        ),
        {"id": job_id, "t": tenant_id, "i": json.dumps(payload)},
    )
    created = res.first() is not None
    row = await get_job(session, tenant_id, job_id)
    if row is None:
        raise NotFound(f"Job {job_id} not found")
    if not created and input_hash(row["input"]) != input_hash(payload):
        raise IdempotencyKeyReused(
            "The idempotency key was used with a different order", ["idempotencyKey"]
        )
    return row, created


async def get_job(
    session: AsyncSession, tenant_id: int, job_id: str, *, for_update: bool = False
) -> RowMapping | None:
    """A job of the tenant."""
    stmt = select(J).where(J.c.tenant_id == tenant_id, J.c.id == job_id)
    if for_update:
        stmt = stmt.with_for_update()
    return (await session.execute(stmt)).mappings().one_or_none()


async def claim_job_any_tenant(session: AsyncSession, job_id: str) -> RowMapping | None:
    """The job row locked for this run (the worker does not know the tenant beforehand)."""
    return (
        (await session.execute(select(J).where(J.c.id == job_id).with_for_update()))
        .mappings()
        .one_or_none()
    )


async def set_job(
    session: AsyncSession,
    job_id: str,
    status: JobStatus,
    *,
    result: dict[str, Any] | None = None,
    errors: list[dict[str, Any]] | None = None,
) -> None:
    """Move a job to a status, with its result or errors."""
    values: dict[str, Any] = {"status": status, "updated_at": text("now()")}
    if result is not None:
        values["result"] = result
    if errors is not None:
        values["errors"] = errors
    await session.execute(update(J).where(J.c.id == job_id).values(**values))


async def unfinished_jobs(session: AsyncSession) -> list[tuple[str, datetime]]:
    """(id, created_at) of every asynchronous order not yet COMPLETED or FAILED, of every
    tenant: what the worker makes sure is queued (its arq job id is derived from both)."""
    res = await session.execute(
        select(J.c.id, J.c.created_at)
        .where(
            J.c.kind == JobKind.CREATE_ORDER,
            J.c.status.in_([JobStatus.QUEUED, JobStatus.PROCESSING]),
        )
        .order_by(J.c.created_at)
    )
    return [(r[0], r[1]) for r in res]
