"""arq worker: settings importable for the plain ``arq jobs.worker.WorkerSettings`` too.

Environment: DATABASE_URL and REDIS_URL (and PARTNERBILL_STATEMENT_CACHE).
"""

from __future__ import annotations

import os
from typing import Any

from arq import cron

from db.engine import create_engine, create_sessionmaker
from jobs.redis import redis_settings_from_url


def _functions() -> list[Any]:
    from jobs import tasks

    return list(tasks.FUNCTIONS)


def _cron_jobs() -> list[Any]:
    from jobs import tasks

    # A one-second tick: each tenant is refreshed when its own interval has passed. Its
    # results (what each tick refreshed, and how long it took) are kept for 10 minutes.
    return [cron(tasks.refresh_due_tenants, second=None, unique=True, timeout=300, keep_result=600)]


def worker_kwargs(database_url: str) -> dict[str, Any]:
    """Everything arq's Worker needs but the Redis settings."""

    async def on_startup(ctx: dict[str, Any]) -> None:
        # PARTNERBILL_STATEMENT_CACHE=0 behind a PgBouncer that keeps no prepared statements.
        cache = int(os.environ.get("PARTNERBILL_STATEMENT_CACHE") or 100)
        engine = create_engine(database_url, pool_size=10, max_overflow=10, statement_cache=cache)
        ctx["engine"] = engine
        ctx["sessionmaker"] = create_sessionmaker(engine)
        from jobs import tasks

        await tasks.resume_bill_runs(ctx)  # unfinished bill runs of a killed worker

    async def on_shutdown(ctx: dict[str, Any]) -> None:
        engine = ctx.get("engine")
        if engine is not None:
            await engine.dispose()

    return {
        "functions": _functions(),
        "cron_jobs": _cron_jobs(),
        "on_startup": on_startup,
        "on_shutdown": on_shutdown,
        "max_jobs": 20,
        "poll_delay": 0.2,
        "keep_result": 3600,
        "job_timeout": 3600,
    }


class WorkerSettings:
    """For ``arq jobs.worker.WorkerSettings`` with DATABASE_URL and REDIS_URL set."""

    redis_settings = redis_settings_from_url(os.environ.get("REDIS_URL", "redis://127.0.0.1:6379"))


for _name, _value in worker_kwargs(os.environ.get("DATABASE_URL", "")).items():
    setattr(WorkerSettings, _name, _value)
