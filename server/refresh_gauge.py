"""The /metrics lines of the partner accounts the refresh set aside."""

from __future__ import annotations

import asyncio
import logging

from sqlalchemy.ext.asyncio import AsyncEngine

from billing.metrics import count_set_aside

log = logging.getLogger("partnerbill.server")

READ_TIMEOUT = 2.0  # seconds: /metrics answers without these lines rather than hang


async def set_aside_lines(engine: AsyncEngine | None) -> str:
    """The gauge of partner accounts the refresh set aside (billing.metrics.refresh_tenant),
    in total and per tenant, read from the database: the worker that sets them aside may be
    another process. Nothing when the database cannot be read in time (/healthz says why)."""
    if engine is None:
        return ""
    try:
        async with asyncio.timeout(READ_TIMEOUT):
            async with engine.connect() as conn:
                counts = await count_set_aside(conn)
    except Exception as e:
        log.warning("/metrics: set-aside accounts not counted: %r", e)
        return ""
    lines = [
        "# HELP partnerbill_metrics_refresh_failed_accounts Partner accounts whose metrics "
        "refresh failed and was set aside (retried later).",
        "# TYPE partnerbill_metrics_refresh_failed_accounts gauge",
        f"partnerbill_metrics_refresh_failed_accounts {sum(counts.values())}",
    ]
    if counts:
        lines += [
            "# HELP partnerbill_metrics_refresh_failed_accounts_by_tenant The same, per tenant.",
            "# TYPE partnerbill_metrics_refresh_failed_accounts_by_tenant gauge",
        ]
    for tenant_id, n in sorted(counts.items()):
        lines.append(
            f'partnerbill_metrics_refresh_failed_accounts_by_tenant{{tenant="{tenant_id}"}} {n}'
        )
    return "\n".join(lines) + "\n"
