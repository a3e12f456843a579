"""Root fields for accounts, metrics refresh and tenant settings."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from functools import partial
from typing import Any

import strawberry
from sqlalchemy.ext.asyncio import AsyncSession

from billing import accounts as acc
from billing import events as ev
from billing import metrics as met
from billing import tenants
from billing.errors import BillingError
from billing.pages import MAX_PAGE
from db.statuses import EventType
from resolvers import convert
from resolvers.base import blank, event_hub, idempotent, in_transaction, read, read_one
from resolvers.errors import to_graphql_error
from schema.accounts import (
    Account,
    AccountFilter,
    AccountMetricsEvent,
    AccountPayload,
    CreateAccountInput,
    MetricsUpdateReason,
    RefreshAccountMetricsInput,
    TenantSettings,
    TenantSettingsPayload,
    UpdateAccountInput,
    UpdateTenantSettingsInput,
)
from schema.common import Connection
from schema.errors import ErrorCode, TopLevelUserError


def _settings(s: tenants.TenantSettings) -> TenantSettings:
    return TenantSettings(
        metrics_refresh_interval=s.metrics_refresh_interval, lock_wait=s.lock_wait_ms
    )


def input_payload(obj: Any) -> Any:
    """A strawberry input as plain data (for idempotency hashes and job arguments)."""
    return strawberry.asdict(obj) if obj is not None else None


def account_data(i: CreateAccountInput) -> acc.AccountData:
    return acc.AccountData(
        name=i.name,
        currency=i.currency,
        bill_to=convert.contact_dict(i.bill_to_contact) or {},
        sold_to=convert.contact_dict(i.sold_to_contact),
        account_number=i.account_number,
        bill_cycle_day=i.bill_cycle_day,
        payment_term=i.payment_term.value,
        batch=i.batch,
        partner_account=i.partner_account,
    )


def account_filter(f: AccountFilter, numbers: list[str] | None = None) -> acc.AccountFilter:
    return acc.AccountFilter(
        partner_account=f.partner_account,
        status=f.status.value if f.status else None,
        batch=f.batch,
        name_contains=f.name_contains,
        metrics_stale_since=f.metrics_stale_since,
        account_numbers=list(numbers or []),
        has_pending_metric_changes=f.has_pending_metric_changes,
        last_metrics_update_before=f.last_metrics_update_before,
        last_metrics_update_after=f.last_metrics_update_after,
    )


@strawberry.type
class AccountQueries:
    @strawberry.field(description="One account by its number.")
    async def account(self, info: strawberry.Info, account_number: str) -> Account | None:
        ctx = info.context
        pending = ctx.fetch.with_pending(info)
        found = await read_one(
            ctx,
            lambda db: acc.find_account_with_state(
                db, ctx.tenant_id, account_number, with_pending=pending
            ),
        )
        if found is None:
            return None
        row, state = found
        # Read with the account, in the same snapshot: account { metrics } costs no more.
        ctx.fetch.prime_state(state)
        return convert.account(row)

    @strawberry.field(description="Accounts of the tenant, filtered, in creation order.")
    async def accounts(
        self,
        info: strawberry.Info,
        filter: AccountFilter | None = None,
        first: int | None = None,
        after: str | None = None,
    ) -> Connection[Account]:
        flt = account_filter(filter) if filter is not None else None
        page = await read(
            info.context, lambda s: acc.list_accounts(s, info.context.tenant_id, flt, first, after)
        )
        return convert.connection(page, convert.account)

    @strawberry.field(description="The calling tenant's settings.")
    async def tenant_settings(self, info: strawberry.Info) -> TenantSettings:
        s = await read(info.context, lambda s: tenants.get_settings(s, info.context.tenant_id))
        return _settings(s)


@strawberry.type
class AccountMutations:
    @strawberry.mutation(description="Create an account (partnerAccount settable).")
    async def create_account(
        self, info: strawberry.Info, input: CreateAccountInput
    ) -> AccountPayload:
        ctx = info.context
        if errors := blank(input.batch, ["batch"]):
            return AccountPayload(account=None, errors=errors)
        payload = input_payload(input)
        payload.pop("idempotency_key", None)

        async def work(s: AsyncSession) -> Any:
            return await acc.create_account(s, ctx.tenant_id, account_data(input))

        async def replay(s: AsyncSession, stored: dict[str, Any]) -> Any:
            return await acc.get_account_by_id(s, ctx.tenant_id, stored["id"])

        # Taken whole, not unpacked at the call: unpacking makes mypy solve R as the tuple's
        # optional first item and type the lambda's argument as optional.
        result = await idempotent(
            ctx,
            input.idempotency_key,
            "createAccount",
            payload,
            work,
            lambda r: {"id": r["id"]},
            replay,
        )
        row, errors = result
        return AccountPayload(account=convert.account(row) if row else None, errors=errors)

    @strawberry.mutation(
        description="Change an account; switching partnerAccount off "
        "brings the metrics current first."
    )
    async def update_account(
        self, info: strawberry.Info, input: UpdateAccountInput
    ) -> AccountPayload:
        ctx = info.context
        if errors := blank(input.batch, ["batch"]):
            return AccountPayload(account=None, errors=errors)
        changes = acc.AccountChanges(
            name=input.name,
            bill_cycle_day=input.bill_cycle_day,
            payment_term=input.payment_term.value if input.payment_term else None,
            batch=input.batch,
            status=input.status.value if input.status else None,
            partner_account=input.partner_account,
            bill_to=convert.contact_dict(input.bill_to_contact),
            sold_to=convert.contact_dict(input.sold_to_contact),
        )
        row, errors = await in_transaction(
            ctx, lambda s: acc.update_account(s, ctx.tenant_id, input.account_number, changes)
        )
        return AccountPayload(account=convert.account(row) if row else None, errors=errors)

    @strawberry.mutation(
        description="Fold the account's pending metric changes now, under its lock, "
        "and stamp lastMetricsUpdate."
    )
    async def refresh_account_metrics(
        self, info: strawberry.Info, input: RefreshAccountMetricsInput
    ) -> AccountPayload:
        ctx = info.context

        async def work(s: AsyncSession) -> Any:
            row = await acc.get_account(s, ctx.tenant_id, input.account_number)
            await met.refresh_account(s, ctx.tenant_id, row["id"])
            return await acc.get_account_by_id(s, ctx.tenant_id, row["id"])

        row, errors = await in_transaction(ctx, work)
        return AccountPayload(account=convert.account(row) if row else None, errors=errors)

    @strawberry.mutation(
        description="Change the tenant's refresh interval (seconds) and lock wait (ms)."
    )
    async def update_tenant_settings(
        self, info: strawberry.Info, input: UpdateTenantSettingsInput
    ) -> TenantSettingsPayload:
        ctx = info.context
        s, errors = await in_transaction(
            ctx,
            lambda s: tenants.update_settings(
                s,
                ctx.tenant_id,
                metrics_refresh_interval=input.metrics_refresh_interval,
                lock_wait_ms=input.lock_wait,
            ),
        )
        return TenantSettingsPayload(tenant_settings=_settings(s) if s else None, errors=errors)


async def metrics_events(
    s: AsyncSession, tenant_id: int, updated: dict[int, str]
) -> list[AccountMetricsEvent]:
    """The events of updated accounts ({id: reason}), with their committed state now."""
    ids = list(updated)
    rows = await acc.accounts_by_ids(s, tenant_id, ids)
    stored = await met.stored_metrics_by_account(s, tenant_id, ids)
    return [
        AccountMetricsEvent(
            account_number=rows[i]["account_number"],
            reason=MetricsUpdateReason(updated[i]),
            metrics=convert.metrics(stored[i], rows[i]["currency"]),
            account=convert.account(rows[i]),
        )
        for i in ids
        if i in rows and i in stored  # the tenant's own accounts only
    ]


METRIC_EVENTS = {
    EventType.ACCOUNT_METRICS_CHANGED: met.SYNC,
    EventType.ACCOUNT_METRICS_REFRESHED: met.REFRESH,
}
FEED_POLL = 1.0  # seconds between feed reads when no announcement wakes the subscription


async def metrics_from_feed(
    ctx: Any, start: ev.FeedPosition, wanted: set[int] | None
) -> AsyncGenerator[AccountMetricsEvent, None]:
    """accountMetricsUpdated with ``after``: the metric events of the feed after ``start``,
    replayed, then followed live (an announcement wakes the read; a read every FEED_POLL
    seconds catches what the watermark let through later). Each page yields one event per
    account, at the account's last change in the page, in feed order, with that change's
    cursor: a client that resubscribes after the last cursor it received misses nothing."""
    hub = event_hub(ctx)
    cursor = start
    async with hub.metrics_feed(ctx.tenant_id) as feed:
        while True:
            page = await read(
                ctx,
                lambda s, at=cursor: ev.read_events(  # type: ignore[misc]
                    s, ctx.tenant_id, at, MAX_PAGE,
                    types=list(METRIC_EVENTS),
                    account_ids=None if wanted is None else sorted(wanted),
                ),
            )  # fmt: skip
            last: dict[int, ev.Event] = {}
            for e in page.events:
                if e.account_id is not None:
                    last.pop(e.account_id, None)
                    last[e.account_id] = e
            if last:
                updated: dict[int, str] = {a: METRIC_EVENTS[e.type] for a, e in last.items()}
                load = partial(metrics_events, tenant_id=ctx.tenant_id, updated=updated)
                by_number = {x.account_number: x for x in await read(ctx, load)}
                for e in last.values():
                    event = by_number.get(e.account_number or "")
                    if event is not None:
                        event.cursor = e.position.cursor()
                        ctx.loaders.clear()
                        yield event
            cursor = page.end
            if page.has_next:
                continue
            if await feed.get(within=FEED_POLL) is None:
                return  # the server is shutting down


@strawberry.type
class AccountSubscriptions:
    @strawberry.subscription(
        description="An event each time an account's stored metrics change: after a write "
        "moves an ordinary account's metrics (SYNC) and after a refresh folds a partner "
        "account's pending changes (REFRESH); a partner account's writes alone send nothing. "
        "Every account of the tenant, or only `accountNumbers` (an unknown number is a "
        "NOT_FOUND error, `extensions.field` naming it). Events are sent after the commit and "
        "carry the committed values; delivery is at most once, to connected subscribers. With "
        "`after` (a cursor of the event feed, or of an earlier event of this subscription) the "
        "changes after it are replayed from the feed first, then followed live: a client that "
        "resubscribes with the last `cursor` it received misses nothing."
    )
    async def account_metrics_updated(
        self,
        info: strawberry.Info,
        account_numbers: list[str] | None = None,
        after: str | None = None,
    ) -> AsyncGenerator[AccountMetricsEvent, None]:
        ctx = info.context
        hub = event_hub(ctx)
        wanted: set[int] | None = None
        try:
            start = None if after is None else ev.decode_position(after)
        except BillingError as exc:
            raise to_graphql_error(exc, info) from None
        if account_numbers is not None:
            numbers = account_numbers
            try:
                ids = await read(
                    ctx, lambda s: acc.account_ids_by_numbers(s, ctx.tenant_id, numbers)
                )
            except BillingError as exc:
                raise to_graphql_error(exc, info) from None
            wanted = set(ids)
        if start is not None:
            async for event in metrics_from_feed(ctx, start, wanted):
                yield event
            return
        async with hub.metrics_feed(ctx.tenant_id) as feed:
            while True:
                messages = await feed.get()
                if messages is None:
                    return  # the server is shutting down
                if feed.lost:
                    raise TopLevelUserError(
                        ErrorCode.LIMIT_EXCEEDED,
                        "Too many metric events were waiting for this subscription; "
                        "subscribe again",
                        None,
                        True,
                        info,
                    )
                updated: dict[int, str] = {}
                for m in messages:
                    for account_id in m.get("accounts", ()):
                        if wanted is None or account_id in wanted:
                            updated.pop(account_id, None)  # keep the latest reason, in order
                            updated[account_id] = m.get("reason", met.SYNC)
                if not updated:
                    continue
                load = partial(metrics_events, tenant_id=ctx.tenant_id, updated=updated)
                events = await read(ctx, load)
                for event in events:
                    ctx.loaders.clear()  # nested fields must not see an earlier event's cache
                    yield event
