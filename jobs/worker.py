"""arq worker: settings importable for the plain ``arq jobs.worker.WorkerSettings`` too.

Environment: DATABASE_URL and REDIS_URL (and PARTNERBILL_STATEMENT_CACHE).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from typing import Any

from arq import cron
from arq.connections import create_pool, log_redis_info
from arq.constants import in_progress_key_prefix
from arq.worker import Worker

from db.engine import create_engine, create_sessionmaker
from jobs.enqueue import REDIS_DOWN
from jobs.redis import redis_settings_from_url

log = logging.getLogger("partnerbill.worker")

REDIS_WAIT_S = (0.2, 2.0)  # first and longest pause between tries while Redis is away
SWEEP_SECONDS = {0, 30}  # when each minute the stranded-job sweep runs


def _functions() -> list[Any]:
    from jobs import tasks

    return list(tasks.FUNCTIONS)


def _cron_jobs() -> list[Any]:
    from jobs import tasks, webhooks

    # A one-second tick: each tenant is refreshed when its own interval has passed. Its
    # results (what each tick refreshed, and how long it took) are kept for 10 minutes.
    return [
        cron(tasks.refresh_due_tenants, second=None, unique=True, timeout=300, keep_result=600),
        # What committed while its enqueue failed is queued here (jobs.tasks).
        cron(tasks.sweep_stranded_jobs, second=SWEEP_SECONDS, unique=True, timeout=300),
        # Events older than PARTNERBILL_EVENT_RETENTION_DAYS, once an hour.
        cron(tasks.prune_events, minute=17, second=0, unique=True, timeout=600),
        # Webhook deliveries: each run keeps going while there is work (jobs.webhooks).
        cron(webhooks.deliver_webhooks, second=None, unique=True, timeout=120),
    ]


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


class ResilientWorker(Worker):
    """arq's Worker, riding out a Redis outage instead of ending.

    arq's poll loop lets the first failed Redis call end the worker (and ``partnerbill
    worker`` with it), and a job whose bookkeeping failed stays marked running in Redis for
    the in-progress timeout (an hour here). This worker waits for Redis instead: at start,
    and whenever a poll fails it pauses (REDIS_WAIT_S) and polls again; redis-py reconnects
    by itself. When Redis answers again it forgets the cron ticks it missed (no burst of
    catch-up ticks: the next tick is the next second), unmarks the jobs of its own whose
    bookkeeping failed so they run again (every job is idempotent), and runs
    ``jobs.tasks.recover_after_outage``: what the outage kept from being queued or lost is
    queued. Anything but a Redis failure still ends the worker (with an error)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.redis_down_since: float | None = None
        self.recovery_due = False
        self.orphaned_jobs: set[str] = set()  # ours, their bookkeeping in Redis failed
        self._pause = REDIS_WAIT_S[0]

    async def async_run(self) -> None:
        await self._connect()
        await super().async_run()

    async def _connect(self) -> None:
        """Open the Redis pool, waiting for Redis as long as it takes."""
        while self._pool is None:
            assert self.redis_settings is not None
            try:
                pool = await create_pool(
                    self.redis_settings,
                    retry=self.redis_settings.conn_retries,  # the last try raises
                    job_deserializer=self.job_deserializer,
                    job_serializer=self.job_serializer,
                    default_queue_name=self.queue_name,
                    expires_extra_ms=self.expires_extra_ms,
                )
                await log_redis_info(pool, log.debug)
            except REDIS_DOWN as exc:
                self._went_away(exc)
                await self._wait()
                continue
            self._pool = pool

    async def _poll_iteration(self) -> None:
        try:
            await super()._poll_iteration()
        except REDIS_DOWN as exc:
            self._went_away(exc)
            await self._wait()
            return
        if self.redis_down_since is not None or self.recovery_due:
            await self._came_back()

    async def run_job(self, job_id: str, score: int) -> None:
        try:
            await super().run_job(job_id, score)
        except REDIS_DOWN as exc:
            # The job may have run; arq could not record it. Run it again after the outage.
            log.warning("job %s: Redis failed around it (%r); it runs again", job_id, exc)
            self.orphaned_jobs.add(job_id)
            self.recovery_due = True

    def _went_away(self, exc: BaseException) -> None:
        if self.redis_down_since is None:
            self.redis_down_since = time.monotonic()
            log.warning("Redis is unreachable (%r); the worker waits for it", exc)
        self.recovery_due = True

    async def _wait(self) -> None:
        await asyncio.sleep(self._pause)
        self._pause = min(self._pause * 2, REDIS_WAIT_S[1])

    async def _came_back(self) -> None:
        self._pause = REDIS_WAIT_S[0]
        if self.redis_down_since is not None:
            away = time.monotonic() - self.redis_down_since
            self.redis_down_since = None
            log.warning("Redis is back after %.1f s; recovering the jobs", away)
            for cron_job in self.cron_jobs:
                cron_job.next_run = None
        try:
            if self.orphaned_jobs:
                keys = [in_progress_key_prefix + job_id for job_id in self.orphaned_jobs]
                await self.pool.delete(*keys)
                self.orphaned_jobs.clear()
            from jobs import tasks

            done = await tasks.recover_after_outage(self.ctx)
        except Exception:
            # Redis went away again, or the database is away: try again next poll.
            log.warning("recovering the jobs after the outage failed; trying again", exc_info=True)
            return
        self.recovery_due = False
        log.info("after the outage: %s", done)


def build_worker(database_url: str, redis_url: str, **overrides: Any) -> ResilientWorker:
    """The project's worker; construct it inside the running event loop (arq binds it)."""
    return ResilientWorker(
        **{**worker_kwargs(database_url), **overrides},
        redis_settings=redis_settings_from_url(redis_url),
        handle_signals=False,
    )


class WorkerSettings:
    """For ``arq jobs.worker.WorkerSettings`` with DATABASE_URL and REDIS_URL set."""

    redis_settings = redis_settings_from_url(os.environ.get("REDIS_URL", "redis://127.0.0.1:6379"))


for _name, _value in worker_kwargs(os.environ.get("DATABASE_URL", "")).items():
    setattr(WorkerSettings, _name, _value)
