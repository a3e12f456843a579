"""Accounts, contacts, metrics and tenant settings."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from enum import Enum
from typing import TYPE_CHECKING, Annotated

import strawberry
from strawberry import Private

from schema.common import Connection
from schema.errors import UserError

if TYPE_CHECKING:
    from schema.documents import Invoice, Payment
    from schema.memos import CreditMemo, DebitMemo
    from schema.orders import Order, Subscription, SubscriptionRole


@strawberry.enum(description="Days between invoice date and due date.")
class PaymentTerm(Enum):
    DUE_UPON_RECEIPT = "DUE_UPON_RECEIPT"
    NET_15 = "NET_15"
    NET_30 = "NET_30"
    NET_45 = "NET_45"
    NET_60 = "NET_60"
    NET_90 = "NET_90"


@strawberry.enum(description="Lifecycle of an account.")
class AccountStatus(Enum):
    ACTIVE = "ACTIVE"
    CANCELED = "CANCELED"


@strawberry.type(description="A person to bill or to ship to.")
class Contact:
    first_name: str
    last_name: str
    work_email: str | None = None
    work_phone: str | None = None
    address1: str | None = None
    address2: str | None = None
    city: str | None = None
    state: str | None = None
    postal_code: str | None = None
    country: str | None = None


@strawberry.input(description="A person to bill or to ship to.")
class ContactInput:
    first_name: str
    last_name: str
    work_email: str | None = None
    work_phone: str | None = None
    address1: str | None = None
    address2: str | None = None
    city: str | None = None
    state: str | None = None
    postal_code: str | None = None
    country: str | None = None


@strawberry.type(
    description="The account's metrics. For a partner account they are as of lastMetricsUpdate; "
    "for an ordinary account they are always current."
)
class AccountMetrics:
    balance: Decimal = strawberry.field(
        description="totalInvoiceBalance + totalDebitMemoBalance - unappliedPaymentAmount "
        "- unappliedCreditMemoAmount."
    )
    credit_balance: Decimal = strawberry.field(
        description="Kept for compatibility; always 0 "
        "(credit lives in memos and unapplied payments)."
    )
    total_invoice_balance: Decimal = strawberry.field(
        description="Open balance of posted invoices."
    )
    total_debit_memo_balance: Decimal = strawberry.field(
        description="Open balance of posted debit memos."
    )
    unapplied_payment_amount: Decimal = strawberry.field(
        description="Money of processed payments neither applied nor refunded."
    )
    unapplied_credit_memo_amount: Decimal = strawberry.field(
        description="Credit of posted credit memos neither applied nor refunded."
    )
    contracted_mrr: Decimal = strawberry.field(
        description="Monthly recurring revenue of the subscriptions this account owns. Kept to "
        "6 decimal places, not rounded to the currency's minor unit: the monthly share of an "
        "annual or quarterly charge is rarely a whole number of cents (100.00 a year is "
        '"8.333333"). Trailing zeros are dropped ("100", not "100.000000").'
    )
    last_invoice_date: date | None = strawberry.field(description="Latest posted invoice date.")
    last_metrics_update: datetime | None = strawberry.field(
        description="When these values were computed."
    )
    currency: str = strawberry.field(description="The account's currency.")


@strawberry.type(description="A customer account: reseller, end customer, or both.")
class Account:
    db_id: Private[int]
    id: strawberry.ID = strawberry.field(description="Opaque identifier.")
    account_number: str = strawberry.field(description="Business number, unique per tenant.")
    name: str = strawberry.field(description="Display name.")
    currency: str = strawberry.field(description="ISO currency of every document; immutable.")
    status: AccountStatus = strawberry.field(description="Lifecycle status.")
    bill_cycle_day: int = strawberry.field(
        description="Day of month billing aligns to (31 = month end)."
    )
    payment_term: PaymentTerm = strawberry.field(description="Sets invoice due dates.")
    batch: str = strawberry.field(description="Bill-run batch.")
    partner_account: bool = strawberry.field(
        description="True: metrics are computed by the periodic refresh, writes never take the "
        "account lock."
    )
    bill_to_contact: Contact = strawberry.field(description="Who receives the invoices.")
    sold_to_contact: Contact = strawberry.field(description="Who the service is sold to.")
    created_at: datetime = strawberry.field(description="When the account was created.")

    @strawberry.field(
        description="When the stored metrics were last computed; never moves backwards. Read "
        "in one snapshot with metrics, liveMetrics, pendingMetricChanges and "
        "metricsCurrentAsOf: the fields of one account in one response always belong together."
    )
    async def last_metrics_update(self, info: strawberry.Info) -> datetime | None:
        return await info.context.fetch.last_metrics_update(self.db_id, info)  # type: ignore[no-any-return]

    @strawberry.field(description="The account's stored metrics (see AccountMetrics).")
    async def metrics(self, info: strawberry.Info) -> AccountMetrics:
        return await info.context.fetch.account_metrics(self.db_id, info)  # type: ignore[no-any-return]

    @strawberry.field(
        description="The stored metrics plus the pending changes folded on read: exact as of "
        "the read, for a partner account too. Reads the account's pending changes (its cost "
        "grows with pendingMetricChanges), takes no lock and writes nothing; its "
        "lastMetricsUpdate is the instant of the read."
    )
    async def live_metrics(self, info: strawberry.Info) -> AccountMetrics:
        return await info.context.fetch.live_metrics(self.db_id, info)  # type: ignore[no-any-return]

    @strawberry.field(
        description="Changes written to this partner account and not yet folded into metrics "
        "(0 for an ordinary account)."
    )
    async def pending_metric_changes(self, info: strawberry.Info) -> int:
        return await info.context.fetch.pending_metric_changes(self.db_id, info)  # type: ignore[no-any-return]

    @strawberry.field(
        description="Every change committed before this instant is included in metrics (a "
        "change is committed when its write has answered). Ordinary account: the instant of "
        "the read. Partner account: the later of lastMetricsUpdate and the start of the last "
        "complete refresh pass over the tenant (a pass advances every partner account it "
        "covered, those with nothing pending too); while the refresh has set the account "
        "aside (metricsRefreshError), lastMetricsUpdate alone. The bound holds because a "
        "change's ledger row commits with its write, and a refresh reads the clock before "
        "the snapshot it folds with."
    )
    async def metrics_current_as_of(self, info: strawberry.Info) -> datetime | None:
        return await info.context.fetch.metrics_current_as_of(self.db_id, info)  # type: ignore[no-any-return]

    @strawberry.field(
        description="Null unless the periodic refresh set this partner account aside: why "
        "folding its pending changes failed (for example totals that would outgrow their "
        "columns). Its metrics then stay as of lastMetricsUpdate while every other account "
        "is refreshed; the refresh tries it again later (waiting 1 s after the first failure, "
        "doubling up to an hour) and clears this once a fold succeeds."
    )
    async def metrics_refresh_error(self, info: strawberry.Info) -> str | None:
        return await info.context.fetch.metrics_refresh_error(self.db_id)  # type: ignore[no-any-return]

    @strawberry.field(description="Invoices of this account, newest last.")
    async def invoices(
        self,
        info: strawberry.Info,
        status: str | None = None,
        first: int | None = None,
        after: str | None = None,
    ) -> Connection[Annotated[Invoice, strawberry.lazy("schema.documents")]]:
        return await info.context.fetch.account_invoices(self.db_id, status, first, after)  # type: ignore[no-any-return]

    @strawberry.field(description="Payments of this account, newest last.")
    async def payments(
        self,
        info: strawberry.Info,
        status: str | None = None,
        first: int | None = None,
        after: str | None = None,
    ) -> Connection[Annotated[Payment, strawberry.lazy("schema.documents")]]:
        return await info.context.fetch.account_payments(self.db_id, status, first, after)  # type: ignore[no-any-return]

    @strawberry.field(description="Credit memos of this account, newest last.")
    async def credit_memos(
        self,
        info: strawberry.Info,
        status: str | None = None,
        first: int | None = None,
        after: str | None = None,
    ) -> Connection[Annotated[CreditMemo, strawberry.lazy("schema.memos")]]:
        return await info.context.fetch.account_memos(  # type: ignore[no-any-return]
            "credit_memo", self.db_id, status, first, after
        )

    @strawberry.field(description="Debit memos of this account, newest last.")
    async def debit_memos(
        self,
        info: strawberry.Info,
        status: str | None = None,
        first: int | None = None,
        after: str | None = None,
    ) -> Connection[Annotated[DebitMemo, strawberry.lazy("schema.memos")]]:
        return await info.context.fetch.account_memos(  # type: ignore[no-any-return]
            "debit_memo", self.db_id, status, first, after
        )

    @strawberry.field(description="Effective date of the latest processed payment, or null.")
    async def last_payment_date(self, info: strawberry.Info) -> date | None:
        last = await info.context.fetch.last_payment(self.db_id)
        return last.effective_date if last is not None else None

    @strawberry.field(description="Amount of the latest processed payment, or null.")
    async def last_payment_amount(self, info: strawberry.Info) -> Decimal | None:
        last = await info.context.fetch.last_payment(self.db_id)
        return last.amount if last is not None else None

    @strawberry.field(
        description="Subscriptions this account owns (OWNER, the default) or is invoice owner of."
    )
    async def subscriptions(
        self,
        info: strawberry.Info,
        role: Annotated[SubscriptionRole, strawberry.lazy("schema.orders")] | None = None,
        first: int | None = None,
        after: str | None = None,
    ) -> Connection[Annotated[Subscription, strawberry.lazy("schema.orders")]]:
        r = role.value if role is not None else "OWNER"
        return await info.context.fetch.account_subscriptions(self.db_id, r, first, after)  # type: ignore[no-any-return]

    @strawberry.field(description="Orders placed on this account, oldest first.")
    async def orders(
        self, info: strawberry.Info, first: int | None = None, after: str | None = None
    ) -> Connection[Annotated[Order, strawberry.lazy("schema.orders")]]:
        return await info.context.fetch.account_orders(self.db_id, first, after)  # type: ignore[no-any-return]


@strawberry.enum(description="Why an account's stored metrics changed.")
class MetricsUpdateReason(Enum):
    SYNC = strawberry.enum_value(
        "SYNC", description="An ordinary account: a write moved the metrics in its own transaction."
    )
    REFRESH = strawberry.enum_value(
        "REFRESH",
        description="A refresh (periodic, refreshAccountMetrics, or switching partnerAccount "
        "off) folded the pending changes and stamped lastMetricsUpdate.",
    )


@strawberry.type(
    description="An account's stored metrics changed (accountMetricsUpdated). The values are "
    "the committed ones, read when the event is sent: they may already include later changes."
)
class AccountMetricsEvent:
    account_number: str = strawberry.field(description="The account whose metrics changed.")
    reason: MetricsUpdateReason = strawberry.field(description="What changed them.")
    metrics: AccountMetrics = strawberry.field(
        description="The metrics as stored now, with their lastMetricsUpdate."
    )
    account: Account = strawberry.field(description="The account as it is now.")
    cursor: str | None = strawberry.field(
        default=None,
        description="With `after`: the feed position of the latest change this event reports. "
        "Resubscribe with it as `after` to miss nothing; null without `after`.",
    )


@strawberry.input(description="A new account.")
class CreateAccountInput:
    name: str
    currency: str
    bill_to_contact: ContactInput
    account_number: str | None = None
    sold_to_contact: ContactInput | None = None
    bill_cycle_day: int = 1
    payment_term: PaymentTerm = PaymentTerm.DUE_UPON_RECEIPT
    batch: str = "Batch1"
    partner_account: bool = False
    idempotency_key: str | None = None


@strawberry.input(description="Changes to an account; absent fields stay as they are.")
class UpdateAccountInput:
    account_number: str
    name: str | None = None
    bill_cycle_day: int | None = None
    payment_term: PaymentTerm | None = None
    batch: str | None = None
    status: AccountStatus | None = None
    partner_account: bool | None = None
    bill_to_contact: ContactInput | None = None
    sold_to_contact: ContactInput | None = None


@strawberry.input(description="Which account to refresh.")
class RefreshAccountMetricsInput:
    account_number: str


@strawberry.input(description="Filters for the accounts list.")
class AccountFilter:
    partner_account: bool | None = None
    status: AccountStatus | None = None
    batch: str | None = None
    name_contains: str | None = None
    metrics_stale_since: datetime | None = strawberry.field(
        default=None, description="Accounts whose lastMetricsUpdate is older than this."
    )
    has_pending_metric_changes: bool | None = strawberry.field(
        default=None,
        description="True: accounts with changes not yet folded into metrics; false: without.",
    )
    last_metrics_update_before: datetime | None = strawberry.field(
        default=None, description="Accounts whose lastMetricsUpdate is before this instant."
    )
    last_metrics_update_after: datetime | None = strawberry.field(
        default=None, description="Accounts whose lastMetricsUpdate is after this instant."
    )


@strawberry.type(description="Result of an account mutation.")
class AccountPayload:
    account: Account | None = None
    errors: list[UserError] = strawberry.field(default_factory=list)


@strawberry.type(description="Tenant-wide settings.")
class TenantSettings:
    metrics_refresh_interval: int = strawberry.field(
        description="Seconds between refreshes of partner accounts' metrics."
    )
    lock_wait: int = strawberry.field(
        description="Milliseconds an ordinary account's write waits for its lock (0 to "
        "60000); 0 means do not wait: a held lock answers LOCK_COMPETITION at once."
    )


@strawberry.input(description="Changes to the tenant's settings.")
class UpdateTenantSettingsInput:
    metrics_refresh_interval: int | None = None
    lock_wait: int | None = None


@strawberry.type(description="Result of updateTenantSettings.")
class TenantSettingsPayload:
    tenant_settings: TenantSettings | None = None
    errors: list[UserError] = strawberry.field(default_factory=list)
