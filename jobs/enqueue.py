"""The one module that enqueues arq jobs. Job ids are deterministic, so a repeat of the
same enqueue while the job is queued, running or kept is a no-op.

Asynchronous orders: one ``create_order`` job per job row.

A bill run is driven by ``bill_run_drive`` (one per run and *generation*); it hands the
run's pending accounts to ``bill_run_batch`` jobs of BATCH_SIZE accounts each. The first
drive's generation is the run's creation time (``first_generation``): a repeated
createBillRun finds its job id taken, while a run of a database created afresh, whose ids
start over, never meets a finished job id kept in Redis from an earlier database (arq keeps
results for an hour and ignores an enqueue under a kept id). A worker that starts re-drives
every unfinished run under a new generation (see jobs.tasks.resume_bill_runs), because the
ids of a killed worker's jobs stay taken until arq's in-progress timeout."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from redis.exceptions import RedisError

BATCH_SIZE = 200

# What an enqueue (any call to Redis) raises while Redis is away or restarting: refused or
# reset connections, timeouts, "LOADING" while it reads its dump back.
REDIS_DOWN: tuple[type[BaseException], ...] = (RedisError, OSError, TimeoutError)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def drive_job_id(tenant_id: int, run_id: int, generation: str) -> str:
    return f"billrun:{tenant_id}:{run_id}:{generation}:drive"


def batch_job_id(tenant_id: int, run_id: int, generation: str, first_account_id: int) -> str:
    return f"billrun:{tenant_id}:{run_id}:{generation}:batch:{first_account_id}"


def first_generation(created_at: datetime) -> str:
    """The generation of a run's first drive: its creation time in microseconds."""
    return f"c{(created_at - EPOCH) // timedelta(microseconds=1)}"


async def enqueue_bill_run(redis: Any, tenant_id: int, run_id: int, generation: str) -> None:
    """Start (or re-drive) a bill run. Call only after the run's transaction committed."""
    await redis.enqueue_job(
        "bill_run_drive",
        tenant_id,
        run_id,
        generation,
        _job_id=drive_job_id(tenant_id, run_id, generation),
    )


async def enqueue_bill_run_batches(
    redis: Any, tenant_id: int, run_id: int, generation: str, account_ids: list[int]
) -> int:
    """One bill_run_batch job per BATCH_SIZE accounts; returns how many were enqueued."""
    n = 0
    for i in range(0, len(account_ids), BATCH_SIZE):
        chunk = account_ids[i : i + BATCH_SIZE]
        await redis.enqueue_job(
            "bill_run_batch",
            tenant_id,
            run_id,
            chunk,
            _job_id=batch_job_id(tenant_id, run_id, generation, chunk[0]),
        )
        n += 1
    return n


def arq_job_id(job_id: str, created_at: datetime) -> str:
    """The arq job id of a partnerbill job row. Its creation time keeps it apart from a row
    of the same id in a database created afresh (see first_generation)."""
    return f"pb:create_order:{job_id}:{(created_at - EPOCH) // timedelta(microseconds=1)}"


async def enqueue_create_order(redis: Any, job_id: str, created_at: datetime) -> None:
    """Queue the asynchronous order recorded in job row ``job_id`` (after its commit)."""
    await redis.enqueue_job("create_order", job_id, _job_id=arq_job_id(job_id, created_at))
