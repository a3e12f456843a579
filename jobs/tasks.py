"""arq job functions. Every job is idempotent: arq may run any job twice."""

from __future__ import annotations

import logging
from typing import Any

from billing import metrics

log = logging.getLogger("partnerbill.jobs")


async def refresh_due_tenants(ctx: dict[str, Any]) -> dict[str, int]:
    """Cron tick: refresh the partner accounts of every tenant whose interval has passed.

    Claiming a tenant is one UPDATE ... RETURNING, so two workers never take the same
    tenant in the same interval; each account is still guarded by its advisory lock."""
    engine = ctx["engine"]
    done = {"tenants": 0, "accounts": 0, "skipped": 0}
    for tenant_id in await metrics.claim_due_tenants(engine):
        report = await metrics.refresh_tenant(engine, tenant_id)
        done["tenants"] += 1
        done["accounts"] += report.accounts_refreshed
        done["skipped"] += report.accounts_skipped
        if report.accounts_refreshed or report.accounts_skipped:
            log.info(
                "tenant %s: refreshed %s accounts (%s changes), skipped %s",
                tenant_id, report.accounts_refreshed, report.changes_folded, report.accounts_skipped,
            )  # fmt: skip
    return done


async def refresh_tenant_metrics(ctx: dict[str, Any], tenant_id: int) -> dict[str, int]:
    """Refresh one tenant's changed partner accounts now."""
    report = await metrics.refresh_tenant(ctx["engine"], tenant_id)
    return {
        "accounts": report.accounts_refreshed,
        "skipped": report.accounts_skipped,
        "changes": report.changes_folded,
    }


FUNCTIONS: list[Any] = [refresh_tenant_metrics]


async def create_order(ctx: dict[str, Any], job_id: str) -> str:
    """Run an asynchronous order. Idempotent: the job row is locked for the run and a job
    that already COMPLETED or FAILED is left alone; the order and the COMPLETED status
    commit together."""
    from sqlalchemy.exc import DBAPIError

    from billing import orders
    from billing.dbutil import translate
    from billing.errors import BillingError

    sessionmaker = ctx["sessionmaker"]
    async with sessionmaker.begin() as s:
        row = await orders.claim_job_any_tenant(s, job_id)
        if row is None or row["status"] in ("COMPLETED", "FAILED"):
            return row["status"] if row is not None else "MISSING"
        await orders.set_job(s, job_id, "PROCESSING")
    try:
        async with sessionmaker() as s:
            try:
                async with s.begin():
                    row = await orders.claim_job_any_tenant(s, job_id)
                    if row is None or row["status"] in ("COMPLETED", "FAILED"):
                        return row["status"] if row is not None else "MISSING"
                    order_id = await orders.create_order(s, row["tenant_id"], dict(row["input"]))
                    order = await orders.get_order(s, row["tenant_id"], order_id=order_id)
                    assert order is not None
                    await orders.set_job(
                        s, job_id, "COMPLETED",
                        result={"orderId": order_id, "orderNumber": order["order_number"]},
                    )
            except DBAPIError as exc:
                mapped = translate(exc)
                if mapped is exc:
                    raise
                raise mapped from exc
        return "COMPLETED"
    except BillingError as exc:
        if exc.retryable and ctx.get("job_try", 1) < 5:
            from arq import Retry

            raise Retry(defer=ctx.get("job_try", 1)) from exc
        async with sessionmaker.begin() as s:
            await orders.set_job(
                s, job_id, "FAILED",
                errors=[{"code": exc.code, "message": exc.message, "field": exc.field, "retryable": exc.retryable}],
            )
        return "FAILED"


FUNCTIONS.append(create_order)
