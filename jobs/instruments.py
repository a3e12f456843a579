"""What the worker measures for /metrics: the refresh passes it runs.

They live in the process that runs the refresh. In one ``partnerbill serve`` process that
is the API process itself; under ``serve --workers N`` the worker is a child process writing
to the same PROMETHEUS_MULTIPROC_DIR as the API processes, so any of them reports its
figures (README, Observability)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

from billing.metrics import RefreshReport

REFRESH_SECONDS = Histogram(
    "partnerbill_metrics_refresh_seconds",
    "Duration of one tenant's refresh pass over its partner accounts.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0),
)
ACCOUNTS_FOLDED = Counter(
    "partnerbill_metrics_refresh_accounts_folded",
    "Partner accounts whose pending changes a refresh pass folded into their metrics.",
)
CHANGES_FOLDED = Counter(
    "partnerbill_metrics_refresh_changes_folded",
    "Pending metric changes (metrics_change rows) folded by refresh passes.",
)


def observe_refresh(report: RefreshReport, seconds: float) -> None:
    """Count one finished refresh pass."""
    REFRESH_SECONDS.observe(seconds)
    ACCOUNTS_FOLDED.inc(report.accounts_refreshed)
    CHANGES_FOLDED.inc(report.changes_folded)
