"""The refresh job run by a real arq worker (burst mode) against Redis."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Any

from arq import create_pool
from arq.worker import Worker
from sqlalchemy import text

from billing import invoices as inv
from billing import metrics as met
from billing.tenants import update_settings
from jobs.redis import redis_settings_from_url
from jobs.worker import worker_kwargs
from tests.test_partner_metrics import make_account, posted_invoice, stored


def _worker(database_url: str, redis_url: str, queue: str) -> Worker:
    kwargs = worker_kwargs(database_url)
    kwargs["poll_delay"] = 0.05
    kwargs["queue_name"] = queue  # a queue of its own: no other test's worker takes the job
    kwargs["cron_jobs"] = []  # the one-second cron tick would keep a burst worker busy forever
    return Worker(
        **kwargs,
        redis_settings=redis_settings_from_url(redis_url),
        burst=True,
        handle_signals=False,
    )


async def test_refresh_job_runs_in_a_real_worker(
    database_url: str, redis_url: str, sessionmaker: Any, tenant: Any
) -> None:
    a = await make_account(sessionmaker, tenant.id, "JOB", partner=True)
    async with sessionmaker.begin() as s:
        await inv.create_standalone_invoice(s, tenant.id, posted_invoice("JOB", "42.00"))
    assert (await stored(sessionmaker, a["id"])).total_invoice_balance == 0
    pool = await create_pool(redis_settings_from_url(redis_url))
    try:
        queue = f"test-refresh-{tenant.id}-{id(pool)}"
        job = await pool.enqueue_job("refresh_tenant_metrics", tenant.id, _queue_name=queue)
        assert job is not None
        worker = _worker(database_url, redis_url, queue)
        await worker.main()
        await worker.close()
        result = await job.result(timeout=10)
    finally:
        await pool.aclose()
    assert result == {"accounts": 1, "skipped": 0, "changes": 1}
    m = await stored(sessionmaker, a["id"])
    assert m.total_invoice_balance == Decimal("42")
    async with sessionmaker() as s:
        assert m.values() == (await met.recompute(s, a["id"])).values()


async def test_cron_tick_refreshes_due_tenants(
    database_url: str, sessionmaker: Any, engine: Any, tenant: Any
) -> None:
    from jobs.tasks import refresh_due_tenants

    a = await make_account(sessionmaker, tenant.id, "CRON", partner=True)
    async with sessionmaker.begin() as s:
        await inv.create_standalone_invoice(s, tenant.id, posted_invoice("CRON", "8.00"))
        await update_settings(s, tenant.id, metrics_refresh_interval=10)
        await s.execute(
            text(
                "UPDATE tenant SET metrics_refreshed_at = now() - interval '11 seconds' "
                "WHERE id = :t"
            ),
            {"t": tenant.id},
        )
    done = await refresh_due_tenants({"engine": engine})
    assert done["accounts"] >= 1
    assert done["changes"] >= 1
    assert done["by_tenant"][tenant.id] == {
        **done["by_tenant"][tenant.id],
        "accounts": 1,
        "changes": 1,
    }
    assert done["seconds"] > 0
    m = await stored(sessionmaker, a["id"])
    assert m.total_invoice_balance == Decimal("8")
    assert m.last_invoice_date == date(2026, 11, 1)
