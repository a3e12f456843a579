"""Reconciliation: an account's stored, live and recomputed-from-documents metrics side by
side, for sign-off after a migration (Query.metricsReconciliation, partnerbill reconcile)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from billing import accounts as acc
from billing.metrics import AccountState, Metrics, account_states, recompute
from billing.pages import Page


@dataclass(frozen=True)
class Reconciliation:
    """One account's metrics three ways, all read in one snapshot."""

    account: Any  # the account row (billing.accounts.account_select)
    state: AccountState  # stored, and live: stored plus the pending ledger
    recomputed: Metrics  # from the documents alone (billing.metrics.recompute)

    @property
    def live(self) -> Metrics:
        assert self.state.live is not None  # read with_pending
        return self.state.live

    @property
    def matches(self) -> bool:
        """The stored metrics and the pending changes add up to what the documents say."""
        return self.live.values() == self.recomputed.values()


@dataclass(frozen=True)
class ReconciliationPage:
    page: Page  # of account rows
    items: list[Reconciliation]


async def reconcile_accounts(
    session: AsyncSession,
    tenant_id: int,
    flt: acc.AccountFilter,
    first: int | None,
    after: str | None,
) -> ReconciliationPage:
    """Reconcile a page of the tenant's accounts (filtered as Query.accounts; numbers in
    ``flt.account_numbers`` must all exist, or NOT_FOUND). The page, the stored and live
    metrics and the recompute are read in ONE repeatable-read snapshot, so a write committing
    meanwhile cannot make an account look mismatched. Read only."""
    await session.execute(text("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY"))
    if flt.account_numbers:
        await acc.account_ids_by_numbers(session, tenant_id, flt.account_numbers)
    page = await acc.list_accounts(session, tenant_id, flt, first, after)
    ids = [int(r["id"]) for r in page.rows]
    states = await account_states(session, tenant_id, ids, with_pending=True)
    items = [
        Reconciliation(row, states[int(row["id"])], await recompute(session, int(row["id"])))
        for row in page.rows
    ]
    return ReconciliationPage(page, items)
