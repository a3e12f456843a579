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
