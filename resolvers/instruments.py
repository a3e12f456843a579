"""What the resolvers measure for /metrics (kept in the answering API process; summed over
the API processes in multiprocess mode, README, Observability)."""

from __future__ import annotations

from prometheus_client import Counter

LOCK_COMPETITION = Counter(
    "partnerbill_lock_competition",
    "Operations answered LOCK_COMPETITION: a write waited the tenant's lockWait for an "
    "account's lock and gave up, writing nothing (retryable).",
)
