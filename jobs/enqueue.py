"""The one module that enqueues arq jobs. Job ids are deterministic, so a repeat of the
same enqueue while the job is queued, running or kept is a no-op.

Asynchronous orders: one ``create_order`` job per job row.

A bill run is driven by ``bill_run_drive`` (one per run and *generation*); it hands the
run's pending accounts to ``bill_run_batch`` jobs of BATCH_SIZE accounts each. Generation
"0" is the first drive after createBillRun; a worker that starts re-drives every unfinished
run under a new generation (see jobs.tasks.resume_bill_runs), because the ids of a killed
worker's jobs stay taken until arq's in-progress timeout."""

from __future__ import annotations

from typing import Any

BATCH_SIZE = 200


def drive_job_id(tenant_id: int, run_id: int, generation: str) -> str:
    return f"billrun:{tenant_id}:{run_id}:{generation}:drive"


def batch_job_id(tenant_id: int, run_id: int, generation: str, first_account_id: int) -> str:
    return f"billrun:{tenant_id}:{run_id}:{generation}:batch:{first_account_id}"


async def enqueue_bill_run(redis: Any, tenant_id: int, run_id: int, generation: str = "0") -> None:
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


def arq_job_id(job_id: str) -> str:
    """The arq job id of a partnerbill job row."""
    return f"pb:create_order:{job_id}"


async def enqueue_create_order(redis: Any, job_id: str) -> None:
    """Queue the asynchronous order recorded in job row ``job_id`` (after its commit)."""
    await redis.enqueue_job("create_order", job_id, _job_id=arq_job_id(job_id))
