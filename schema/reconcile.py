"""Metrics reconciliation: stored, live and recomputed metrics of an account side by side."""

from __future__ import annotations

import strawberry

from schema.accounts import Account, AccountMetrics


@strawberry.type(
    description="One account's metrics three ways, read in one snapshot: as stored, live "
    "(stored plus the pending changes) and recomputed from the documents alone."
)
class MetricsReconciliation:
    account: Account = strawberry.field(description="The account.")
    stored: AccountMetrics = strawberry.field(
        description="The stored metrics (for a partner account: as of lastMetricsUpdate)."
    )
    live: AccountMetrics = strawberry.field(
        description="The stored metrics plus the pending changes (Account.liveMetrics)."
    )
    recomputed: AccountMetrics = strawberry.field(
        description="The metrics from the invoices, memos, payments and subscriptions alone."
    )
    matches: bool = strawberry.field(
        description="live equals recomputed: nothing is lost or counted twice between the "
        "documents and the metrics."
    )
