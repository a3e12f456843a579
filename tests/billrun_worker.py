"""Run the real arq worker in-process until its queue is empty (burst mode)."""

from __future__ import annotations

from typing import Any

from arq.connections import create_pool
from arq.worker import Worker

from jobs.redis import redis_settings_from_url
from jobs.worker import worker_kwargs


async def drain(database_url: str, redis_url: str) -> None:
    """Process every queued job (and those they enqueue) with the project's worker settings."""
    kwargs = worker_kwargs(database_url)
    kwargs.pop("cron_jobs")
    pool = await create_pool(redis_settings_from_url(redis_url))
    worker = Worker(redis_pool=pool, burst=True, handle_signals=False, **kwargs)
    try:
        await worker.main()
    finally:
        await worker.close()
        await pool.aclose()


async def arq_pool(redis_url: str) -> Any:
    return await create_pool(redis_settings_from_url(redis_url))
