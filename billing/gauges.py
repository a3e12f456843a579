"""What /metrics reads from the database: the same from whichever process answers."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from db.statuses import BillRunStatus

# Bill runs whose accounts are still being rated.
RUNNING = (BillRunStatus.PENDING, BillRunStatus.PROCESSING)


@dataclass(frozen=True)
class TenantFreshness:
    """How far a tenant's partner metrics trail its writes."""

    tenant_id: int
    refresh_interval_s: int
    pending_changes: int  # metrics_change rows not folded yet
    lag_s: float  # age of the oldest of them: 0 when none
    set_aside: int  # accounts the refresh set aside (metrics_refresh_failure)


@dataclass(frozen=True)
class BillRunProgress:
    tenant_id: int
    bill_run_number: str
    status: BillRunStatus
    accounts_total: int
    accounts_processed: int


@dataclass(frozen=True)
class GaugeReadings:
    tenants: list[TenantFreshness]
    bill_runs: list[BillRunProgress]


# One pass over the ledger grouped by tenant (its size is the backlog, which the refresh
# keeps small), joined with the set-aside accounts; tenants with neither are left out, so
# the series a scrape returns grow with the tenants that have something waiting.
_FRESHNESS = """
WITH pending AS (
  SELECT tenant_id, count(*) AS n, min(created_at) AS oldest
  FROM metrics_change GROUP BY tenant_id
), aside AS (
  SELECT tenant_id, count(*) AS n FROM metrics_refresh_failure GROUP BY tenant_id
)
SELECT t.id, t.metrics_refresh_interval,
       coalesce(p.n, 0) AS pending,
       coalesce(extract(epoch FROM statement_timestamp() - p.oldest), 0)::float8 AS lag,
       coalesce(f.n, 0) AS aside
FROM tenant t
LEFT JOIN pending p ON p.tenant_id = t.id
LEFT JOIN aside f ON f.tenant_id = t.id
WHERE p.tenant_id IS NOT NULL OR f.tenant_id IS NOT NULL
ORDER BY t.id
"""

# bill_run.accounts_processed is settled when the run completes; while it runs, its account
# rows say how far it got, as billing.billruns.progress counts them.
_BILL_RUNS = """
SELECT r.tenant_id, r.bill_run_number, r.status, r.accounts_total,
       (SELECT count(*) FROM bill_run_account x
         WHERE x.bill_run_id = r.id AND x.status <> 'PENDING') AS processed
FROM bill_run r WHERE r.status = ANY(:running)
ORDER BY r.tenant_id, r.id
"""


async def read_gauges(conn: AsyncConnection, *, timeout_ms: int) -> GaugeReadings:
    """Per-tenant freshness and running bill runs, in one read-only snapshot whose
    statements give up after ``timeout_ms`` (a scrape must not queue behind a slow read)."""
    async with conn.begin():
        await conn.execute(text("SET TRANSACTION READ ONLY ISOLATION LEVEL REPEATABLE READ"))
        await conn.execute(
            text("SELECT set_config('statement_timeout', :ms, true)"), {"ms": str(timeout_ms)}
        )
        tenants = [
            TenantFreshness(int(t), int(interval), int(n), float(lag), int(aside))
            for t, interval, n, lag, aside in (await conn.execute(text(_FRESHNESS))).all()
        ]
        runs = [
            BillRunProgress(int(t), str(number), BillRunStatus(status), int(total), int(done))
            for t, number, status, total, done in (
                await conn.execute(text(_BILL_RUNS), {"running": [s.value for s in RUNNING]})
            ).all()
        ]
    return GaugeReadings(tenants, runs)
