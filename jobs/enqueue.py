"""The one module that enqueues arq jobs. Job ids are deterministic, so a repeat
enqueue of the same work is a no-op while the job is queued, running or kept."""

from __future__ import annotations

from typing import Any


def arq_job_id(job_id: str) -> str:
    """The arq job id of a partnerbill job row."""
    return f"pb:create_order:{job_id}"


async def enqueue_create_order(redis: Any, job_id: str) -> None:
    """Queue the asynchronous order recorded in job row ``job_id`` (after its commit)."""
    await redis.enqueue_job("create_order", job_id, _job_id=arq_job_id(job_id))
