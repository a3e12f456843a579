"""Query.metricsReconciliation."""

from __future__ import annotations

import strawberry
from sqlalchemy.ext.asyncio import AsyncSession

from billing import reconcile as rec
from billing.errors import BillingError, ValidationFailed
from resolvers import convert
from resolvers.accounts import account_filter
from resolvers.base import read
from resolvers.errors import to_graphql_error
from schema.accounts import AccountFilter
from schema.common import Connection
from schema.reconcile import MetricsReconciliation


def reconciliation(ctx: object, r: rec.Reconciliation) -> MetricsReconciliation:
    currency = r.state.currency
    # The node's account answers from the same snapshot as the rest of the node.
    ctx.fetch.prime_state(r.state)  # type: ignore[attr-defined]
    return MetricsReconciliation(
        account=convert.account(r.account),
        stored=convert.metrics(r.state.stored, currency),
        live=convert.metrics(r.live, currency),
        recomputed=convert.metrics(r.recomputed, currency),
        matches=r.matches,
    )


@strawberry.type
class ReconcileQueries:
    @strawberry.field(
        description="Per account, the stored, live and recomputed-from-documents metrics and "
        "whether they match (live equals recomputed), each page read in one snapshot: for "
        "sign-off after a migration (`partnerbill reconcile` walks a whole tenant). Every "
        "account of the tenant, or those of `accountNumbers` (an unknown one is NOT_FOUND), "
        "narrowed by `filter`, in creation order."
    )
    async def metrics_reconciliation(
        self,
        info: strawberry.Info,
        account_numbers: list[str] | None = None,
        filter: AccountFilter | None = None,
        first: int | None = None,
        after: str | None = None,
    ) -> Connection[MetricsReconciliation]:
        ctx = info.context

        if account_numbers is not None and not account_numbers:
            raise to_graphql_error(
                ValidationFailed("accountNumbers must not be empty", ["accountNumbers"]), info
            )
        flt = account_filter(filter or AccountFilter(), account_numbers)

        async def go(s: AsyncSession) -> rec.ReconciliationPage:
            return await rec.reconcile_accounts(s, ctx.tenant_id, flt, first, after)

        try:
            result = await read(ctx, go)
        except BillingError as exc:
            raise to_graphql_error(exc, info) from None
        by_id = {int(r.account["id"]): r for r in result.items}
        return convert.connection(result.page, lambda row: reconciliation(ctx, by_id[row["id"]]))
