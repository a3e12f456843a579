"""Root fields for accounts, metrics refresh and tenant settings."""

from __future__ import annotations

from typing import Any

import strawberry
from sqlalchemy.ext.asyncio import AsyncSession

from billing import accounts as acc
from billing import metrics as met
from billing import tenants
from resolvers import convert
from resolvers.base import idempotent, in_transaction, read
from schema.accounts import (
    Account,
    AccountFilter,
    AccountPayload,
    CreateAccountInput,
    RefreshAccountMetricsInput,
    TenantSettings,
    TenantSettingsPayload,
    UpdateAccountInput,
    UpdateTenantSettingsInput,
)
from schema.common import Connection


def _settings(s: tenants.TenantSettings) -> TenantSettings:
    return TenantSettings(metrics_refresh_interval=s.metrics_refresh_interval, lock_wait=s.lock_wait_ms)


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


@strawberry.type
class AccountQueries:
    @strawberry.field(description="One account by its number.")
    async def account(self, info: strawberry.Info, account_number: str) -> Account | None:
        row = await read(
            info.context, lambda s: acc.find_account(s, info.context.tenant_id, account_number)
        )
        return convert.account(row) if row is not None else None

    @strawberry.field(description="Accounts of the tenant, filtered, in creation order.")
    async def accounts(
        self,
        info: strawberry.Info,
        filter: AccountFilter | None = None,
        first: int | None = None,
        after: str | None = None,
    ) -> Connection[Account]:
        flt = None
        if filter is not None:
            flt = acc.AccountFilter(
                partner_account=filter.partner_account,
                status=filter.status.value if filter.status else None,
                batch=filter.batch,
                name_contains=filter.name_contains,
                metrics_stale_since=filter.metrics_stale_since,
            )
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
    async def create_account(self, info: strawberry.Info, input: CreateAccountInput) -> AccountPayload:
        ctx = info.context
        payload = input_payload(input)
        payload.pop("idempotency_key", None)

        async def work(s: AsyncSession) -> Any:
            return await acc.create_account(s, ctx.tenant_id, account_data(input))

        async def replay(s: AsyncSession, stored: dict[str, Any]) -> Any:
            return await acc.get_account_by_id(s, ctx.tenant_id, stored["id"])

        row, errors = await idempotent(
            ctx, input.idempotency_key, "createAccount", payload, work, lambda r: {"id": r["id"]}, replay
        )
        return AccountPayload(account=convert.account(row) if row else None, errors=errors)

    @strawberry.mutation(description="Change an account; switching partnerAccount off brings the metrics current first.")
    async def update_account(self, info: strawberry.Info, input: UpdateAccountInput) -> AccountPayload:
        ctx = info.context
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

    @strawberry.mutation(description="Fold the account's pending metric changes now, under its lock, and stamp lastMetricsUpdate.")
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

    @strawberry.mutation(description="Change the tenant's refresh interval (seconds) and lock wait (ms).")
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
