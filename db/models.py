"""SQLModel tables: the whole persistent model of partnerbill.

Every business row carries ``tenant_id``; business numbers are unique per tenant.
Money columns are NUMERIC; the currency sits on the owning document or account.
Hot and bulk paths use the tables through SQLAlchemy Core (``table_of(Model)``).
"""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    Date,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    Numeric,
    String,
    Table,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlmodel import Field, SQLModel

from db.statuses import (
    AccountStatus,
    BillingTiming,
    BillRunAccountStatus,
    BillRunStatus,
    InvoiceSource,
    InvoiceStatus,
    JobStatus,
    MemoStatus,
    OrderStatus,
    PaymentMethod,
    PaymentStatus,
    PaymentType,
    SubscriptionStatus,
    TermType,
)


def table_of(model: type[SQLModel]) -> Table:
    """The Core table of a ``table=True`` model. SQLModel sets ``__table__`` on those classes
    at runtime but does not declare it, so a type checker cannot see it; the billing code takes
    it through here."""
    table: Table = model.__table__  # type: ignore[attr-defined]
    return table


MONEY = Numeric(20, 4)
MRR = Numeric(24, 6)
QTY = Numeric(20, 4)


def _pk() -> Any:
    return Field(default=None, sa_column=Column(BigInteger, primary_key=True, autoincrement=True))


def _fk(target: str, *, nullable: bool = False, index: bool = False) -> Any:
    return Field(
        default=None,
        sa_column=Column(
            BigInteger, ForeignKey(target, ondelete="CASCADE"), nullable=nullable, index=index
        ),
    )


def _tenant() -> Any:
    return Field(sa_column=Column(BigInteger, ForeignKey("tenant.id"), nullable=False))


def _tenant_of_hot_table() -> Any:
    """tenant_id without a foreign key: the tables every write inserts into (migration 0007
    says why)."""
    return Field(sa_column=Column(BigInteger, nullable=False))


def _money(default: str | None = "0", nullable: bool = False) -> Any:
    return Field(
        default=Decimal(default) if default is not None else None,
        sa_column=Column(
            MONEY, nullable=nullable, server_default=text(default) if default is not None else None
        ),
    )


def _created() -> Any:
    return Field(
        default=None,
        sa_column=Column(DateTime(timezone=True), nullable=False, server_default=func.now()),
    )


def _date(nullable: bool = True) -> Any:
    return Field(default=None, sa_column=Column(Date, nullable=nullable))


def _str(nullable: bool = False, default: str | None = None) -> Any:
    return Field(
        default=default,
        sa_column=Column(
            String, nullable=nullable, server_default=text(f"'{default}'") if default else None
        ),
    )


def _json(nullable: bool = True) -> Any:
    return Field(default=None, sa_column=Column(JSON, nullable=nullable))


# --------------------------------------------------------------------------- tenants


class Tenant(SQLModel, table=True):
    __tablename__ = "tenant"
    id: int | None = _pk()
    name: str = _str()
    metrics_refresh_interval: int = Field(
        default=3600, sa_column=Column(Integer, nullable=False, server_default=text("3600"))
    )
    lock_wait_ms: int = Field(
        default=2000, sa_column=Column(Integer, nullable=False, server_default=text("2000"))
    )
    metrics_refreshed_at: datetime | None = Field(
        default=None,
        sa_column=Column(DateTime(timezone=True), nullable=False, server_default=func.now()),
    )
    # The start of the last complete refresh pass (migration 0010): every change committed
    # before it is folded, for every partner account the refresh did not set aside.
    metrics_current_as_of: datetime | None = Field(
        default=None, sa_column=Column(DateTime(timezone=True), nullable=True)
    )
    created_at: datetime | None = _created()


class ApiKey(SQLModel, table=True):
    __tablename__ = "api_key"
    id: int | None = _pk()
    tenant_id: int = _tenant()
    key_hash: str = Field(sa_column=Column(String, nullable=False, unique=True))
    prefix: str = _str()
    created_at: datetime | None = _created()


class IdempotencyKey(SQLModel, table=True):
    __tablename__ = "idempotency_key"
    tenant_id: int = Field(sa_column=Column(BigInteger, ForeignKey("tenant.id"), primary_key=True))
    key: str = Field(sa_column=Column(String, primary_key=True))
    operation: str = _str()
    request_hash: str = _str()
    result: dict[str, Any] | None = _json()
    created_at: datetime | None = _created()


# --------------------------------------------------------------------------- accounts


class Account(SQLModel, table=True):
    __tablename__ = "account"
    __table_args__ = (
        UniqueConstraint("tenant_id", "account_number"),
        Index("ix_account_tenant_partner", "tenant_id", "partner_account"),
        Index("ix_account_tenant_batch", "tenant_id", "batch"),
        Index("ix_account_tenant_bcd", "tenant_id", "bill_cycle_day"),
    )
    id: int | None = _pk()
    tenant_id: int = _tenant()
    account_number: str = _str()
    name: str = _str()
    currency: str = _str()
    status: str = _str(default=AccountStatus.ACTIVE)
    bill_cycle_day: int = Field(default=1, sa_column=Column(Integer, nullable=False))
    payment_term: str = _str(default="DUE_UPON_RECEIPT")
    batch: str = _str(default="Batch1")
    partner_account: bool = Field(
        default=False, sa_column=Column(Boolean, nullable=False, server_default=text("false"))
    )
    bill_to: dict[str, Any] | None = _json(nullable=False)
    sold_to: dict[str, Any] | None = _json(nullable=False)
    created_at: datetime | None = _created()
    updated_at: datetime | None = _created()


class AccountMetrics(SQLModel, table=True):
    """The stored metrics of one account: exact for ordinary accounts, as of
    ``last_metrics_update`` for partner accounts."""

    __tablename__ = "account_metrics"
    account_id: int = Field(
        sa_column=Column(BigInteger, ForeignKey("account.id", ondelete="CASCADE"), primary_key=True)
    )
    tenant_id: int = _tenant()
    total_invoice_balance: Decimal = _money()
    total_debit_memo_balance: Decimal = _money()
    unapplied_payment_amount: Decimal = _money()
    unapplied_credit_memo_amount: Decimal = _money()
    credit_balance: Decimal = _money()
    contracted_mrr: Decimal = Field(
        default=Decimal(0), sa_column=Column(MRR, nullable=False, server_default=text("0"))
    )
    last_invoice_date: date | None = _date()
    last_metrics_update: datetime | None = Field(
        default=None, sa_column=Column(DateTime(timezone=True), nullable=True)
    )


class MetricsChange(SQLModel, table=True):
    """Append-only ledger of metric deltas for partner accounts.

    Writers only INSERT here (no row or lock is shared between them); the refresh
    consumes rows with DELETE ... RETURNING, so a row that commits during a refresh
    is simply left for the next one.
    """

    __tablename__ = "metrics_change"
    __table_args__ = (Index("ix_metrics_change_tenant_account", "tenant_id", "account_id"),)
    id: int | None = _pk()
    tenant_id: int = _tenant_of_hot_table()
    account_id: int = Field(
        sa_column=Column(BigInteger, ForeignKey("account.id", ondelete="CASCADE"), nullable=False)
    )
    d_invoice_balance: Decimal = _money()
    d_debit_memo_balance: Decimal = _money()
    d_unapplied_payment: Decimal = _money()
    d_unapplied_credit_memo: Decimal = _money()
    d_contracted_mrr: Decimal = Field(
        default=Decimal(0), sa_column=Column(MRR, nullable=False, server_default=text("0"))
    )
    created_at: datetime | None = _created()


class MetricsRefreshFailure(SQLModel, table=True):
    """A partner account the refresh set aside because folding its ledger rows failed
    (migration 0009): the error, how many tries failed, and when to try again."""

    __tablename__ = "metrics_refresh_failure"
    __table_args__ = (Index("ix_metrics_refresh_failure_tenant", "tenant_id"),)
    account_id: int = Field(
        sa_column=Column(BigInteger, ForeignKey("account.id", ondelete="CASCADE"), primary_key=True)
    )
    tenant_id: int = _tenant()
    error: str = Field(sa_column=Column(Text, nullable=False))
    failures: int = Field(
        default=1, sa_column=Column(Integer, nullable=False, server_default=text("1"))
    )
    first_failed_at: datetime | None = Field(
        default=None,
        sa_column=Column(DateTime(timezone=True), nullable=False, server_default=func.now()),
    )
    last_failed_at: datetime | None = Field(
        default=None,
        sa_column=Column(DateTime(timezone=True), nullable=False, server_default=func.now()),
    )
    retry_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))


# --------------------------------------------------------------------------- catalog


class Product(SQLModel, table=True):
    __tablename__ = "product"
    __table_args__ = (UniqueConstraint("tenant_id", "product_number"),)
    id: int | None = _pk()
    tenant_id: int = _tenant()
    product_number: str = _str()
    name: str = _str()
    sku: str | None = _str(nullable=True)
    description: str | None = _str(nullable=True)
    created_at: datetime | None = _created()


class ProductRatePlan(SQLModel, table=True):
    __tablename__ = "product_rate_plan"
    __table_args__ = (UniqueConstraint("tenant_id", "rate_plan_number"),)
    id: int | None = _pk()
    tenant_id: int = _tenant()
    product_id: int = _fk("product.id", index=True)
    rate_plan_number: str = _str()
    name: str = _str()


class ProductRatePlanCharge(SQLModel, table=True):
    __tablename__ = "product_rate_plan_charge"
    __table_args__ = (UniqueConstraint("tenant_id", "charge_number"),)
    id: int | None = _pk()
    tenant_id: int = _tenant()
    rate_plan_id: int = _fk("product_rate_plan.id", index=True)
    charge_number: str = _str()
    name: str = _str()
    charge_type: str = _str()
    charge_model: str = _str()
    list_price: Decimal = _money()
    billing_period: str = _str(default="MONTH")
    billing_timing: str = _str(default=BillingTiming.IN_ADVANCE)
    default_quantity: Decimal = Field(
        default=Decimal(1), sa_column=Column(QTY, nullable=False, server_default=text("1"))
    )
    uom: str | None = _str(nullable=True)


# --------------------------------------------------------------------------- subscriptions


class Subscription(SQLModel, table=True):
    __tablename__ = "subscription"
    __table_args__ = (
        UniqueConstraint("tenant_id", "subscription_number"),
        Index("ix_subscription_owner", "owner_account_id"),
        Index("ix_subscription_invoice_owner", "invoice_owner_account_id"),
    )
    id: int | None = _pk()
    tenant_id: int = _tenant_of_hot_table()
    subscription_number: str = _str()
    owner_account_id: int = _fk("account.id")
    invoice_owner_account_id: int = _fk("account.id")
    currency: str = _str()
    status: str = _str(default=SubscriptionStatus.ACTIVE)
    term_type: str = _str(default=TermType.TERMED)
    initial_term: int | None = Field(default=12, sa_column=Column(Integer, nullable=True))
    renewal_term: int | None = Field(default=12, sa_column=Column(Integer, nullable=True))
    auto_renew: bool = Field(default=False, sa_column=Column(Boolean, nullable=False))
    contract_effective_date: date = _date(nullable=False)
    term_start_date: date = _date(nullable=False)
    term_end_date: date | None = _date()
    cancelled_date: date | None = _date()
    invoice_separately: bool = Field(default=False, sa_column=Column(Boolean, nullable=False))
    mrr: Decimal = Field(
        default=Decimal(0), sa_column=Column(MRR, nullable=False, server_default=text("0"))
    )
    version: int = Field(default=1, sa_column=Column(Integer, nullable=False))
    created_at: datetime | None = _created()
    updated_at: datetime | None = _created()


class SubscriptionSuspension(SQLModel, table=True):
    __tablename__ = "subscription_suspension"
    id: int | None = _pk()
    tenant_id: int = _tenant()
    subscription_id: int = _fk("subscription.id", index=True)
    start_date: date = _date(nullable=False)
    end_date: date | None = _date()


class SubscriptionRatePlan(SQLModel, table=True):
    __tablename__ = "subscription_rate_plan"
    id: int | None = _pk()
    tenant_id: int = _tenant_of_hot_table()
    subscription_id: int = _fk("subscription.id", index=True)
    product_rate_plan_id: int = _fk("product_rate_plan.id")
    name: str = _str()
    effective_start_date: date = _date(nullable=False)
    effective_end_date: date | None = _date()


class SubscriptionCharge(SQLModel, table=True):
    """One segment of a subscription charge; UpdateProduct closes a segment and
    opens the next with the same ``charge_number``."""

    __tablename__ = "subscription_charge"
    __table_args__ = (
        Index("ix_subscription_charge_subscription", "subscription_id"),
        Index("ix_subscription_charge_number", "tenant_id", "charge_number"),
        Index("ix_subscription_charge_rate_plan", "subscription_rate_plan_id"),
    )
    id: int | None = _pk()
    tenant_id: int = _tenant_of_hot_table()
    subscription_id: int = _fk("subscription.id")
    subscription_rate_plan_id: int = _fk("subscription_rate_plan.id")
    product_rate_plan_charge_id: int = _fk("product_rate_plan_charge.id")
    charge_number: str = _str()
    segment: int = Field(default=1, sa_column=Column(Integer, nullable=False))
    is_last_segment: bool = Field(default=True, sa_column=Column(Boolean, nullable=False))
    name: str = _str()
    charge_type: str = _str()
    charge_model: str = _str()
    price: Decimal = _money()
    quantity: Decimal = Field(
        default=Decimal(1), sa_column=Column(QTY, nullable=False, server_default=text("1"))
    )
    billing_period: str = _str(default="MONTH")
    billing_timing: str = _str(default=BillingTiming.IN_ADVANCE)
    effective_start_date: date = _date(nullable=False)
    effective_end_date: date | None = _date()
    charged_through_date: date | None = _date()
    mrr: Decimal = Field(
        default=Decimal(0), sa_column=Column(MRR, nullable=False, server_default=text("0"))
    )


class Order(SQLModel, table=True):
    __tablename__ = "sales_order"
    __table_args__ = (
        UniqueConstraint("tenant_id", "order_number"),
        Index("ix_sales_order_account", "account_id"),
    )
    id: int | None = _pk()
    tenant_id: int = _tenant_of_hot_table()
    order_number: str = _str()
    account_id: int = _fk("account.id")
    order_date: date = _date(nullable=False)
    status: str = _str(default=OrderStatus.COMPLETED)
    created_at: datetime | None = _created()


class OrderAction(SQLModel, table=True):
    __tablename__ = "order_action"
    id: int | None = _pk()
    tenant_id: int = _tenant_of_hot_table()
    order_id: int = _fk("sales_order.id", index=True)
    subscription_id: int = _fk("subscription.id", index=True)
    sequence: int = Field(sa_column=Column(Integer, nullable=False))
    action_type: str = _str()
    effective_date: date = _date(nullable=False)
    payload: dict[str, Any] | None = _json()


# --------------------------------------------------------------------------- documents


class Invoice(SQLModel, table=True):
    __tablename__ = "invoice"
    __table_args__ = (
        UniqueConstraint("tenant_id", "invoice_number"),
        Index("ix_invoice_account_status", "account_id", "status", "invoice_date"),
        Index("ix_invoice_bill_run", "bill_run_id"),
        # the drafts a bill run's post or cancel still has to walk
        Index(
            "ix_invoice_bill_run_draft",
            "bill_run_id",
            "id",
            postgresql_where=text("status = 'DRAFT'"),
        ),
    )
    id: int | None = _pk()
    tenant_id: int = _tenant_of_hot_table()
    invoice_number: str = _str()
    account_id: int = _fk("account.id")
    currency: str = _str()
    invoice_date: date = _date(nullable=False)
    due_date: date = _date(nullable=False)
    target_date: date | None = _date()
    status: str = _str(default=InvoiceStatus.DRAFT)
    amount: Decimal = _money()
    balance: Decimal = _money()
    source: str = _str(default=InvoiceSource.STANDALONE)
    bill_run_id: int | None = _fk("bill_run.id", nullable=True)
    order_id: int | None = _fk("sales_order.id", nullable=True)
    subscription_id: int | None = _fk("subscription.id", nullable=True)
    posted_at: datetime | None = Field(
        default=None, sa_column=Column(DateTime(timezone=True), nullable=True)
    )
    created_at: datetime | None = _created()


class InvoiceItem(SQLModel, table=True):
    __tablename__ = "invoice_item"
    id: int | None = _pk()
    tenant_id: int = _tenant_of_hot_table()
    invoice_id: int = _fk("invoice.id", index=True)
    charge_name: str = _str()
    subscription_id: int | None = _fk("subscription.id", nullable=True)
    subscription_charge_id: int | None = _fk("subscription_charge.id", nullable=True)
    service_start_date: date | None = _date()
    service_end_date: date | None = _date()
    quantity: Decimal = Field(
        default=Decimal(1), sa_column=Column(QTY, nullable=False, server_default=text("1"))
    )
    unit_price: Decimal = _money()
    amount: Decimal = _money()
    previous_charged_through_date: date | None = _date()


class CreditMemo(SQLModel, table=True):
    __tablename__ = "credit_memo"
    __table_args__ = (
        UniqueConstraint("tenant_id", "memo_number"),
        Index("ix_credit_memo_account_status", "account_id", "status"),
        Index("ix_credit_memo_invoice", "invoice_id"),
    )
    id: int | None = _pk()
    tenant_id: int = _tenant()
    memo_number: str = _str()
    account_id: int = _fk("account.id")
    currency: str = _str()
    invoice_id: int | None = _fk("invoice.id", nullable=True)
    memo_date: date = _date(nullable=False)
    status: str = _str(default=MemoStatus.DRAFT)
    amount: Decimal = _money()
    applied_amount: Decimal = _money()
    refund_amount: Decimal = _money()
    reason_code: str | None = _str(nullable=True)
    created_at: datetime | None = _created()


class DebitMemo(SQLModel, table=True):
    __tablename__ = "debit_memo"
    __table_args__ = (
        UniqueConstraint("tenant_id", "memo_number"),
        Index("ix_debit_memo_account_status", "account_id", "status"),
        Index("ix_debit_memo_invoice", "invoice_id"),
    )
    id: int | None = _pk()
    tenant_id: int = _tenant()
    memo_number: str = _str()
    account_id: int = _fk("account.id")
    currency: str = _str()
    invoice_id: int | None = _fk("invoice.id", nullable=True)
    memo_date: date = _date(nullable=False)
    due_date: date = _date(nullable=False)
    status: str = _str(default=MemoStatus.DRAFT)
    amount: Decimal = _money()
    balance: Decimal = _money()
    reason_code: str | None = _str(nullable=True)
    created_at: datetime | None = _created()


class MemoItem(SQLModel, table=True):
    """An item of a credit or a debit memo (``memo_type`` says which)."""

    __tablename__ = "memo_item"
    __table_args__ = (Index("ix_memo_item_memo", "memo_type", "memo_id"),)
    id: int | None = _pk()
    tenant_id: int = _tenant()
    memo_type: str = _str()
    memo_id: int = Field(sa_column=Column(BigInteger, nullable=False))
    invoice_item_id: int | None = _fk("invoice_item.id", nullable=True)
    charge_name: str = _str()
    quantity: Decimal = Field(
        default=Decimal(1), sa_column=Column(QTY, nullable=False, server_default=text("1"))
    )
    unit_price: Decimal = _money()
    amount: Decimal = _money()


class Payment(SQLModel, table=True):
    __tablename__ = "payment"
    __table_args__ = (
        UniqueConstraint("tenant_id", "payment_number"),
        Index("ix_payment_account_status", "account_id", "status"),
    )
    id: int | None = _pk()
    tenant_id: int = _tenant_of_hot_table()
    payment_number: str = _str()
    account_id: int = _fk("account.id")
    currency: str = _str()
    amount: Decimal = _money()
    applied_amount: Decimal = _money()
    refund_amount: Decimal = _money()
    effective_date: date = _date(nullable=False)
    type: str = _str(default=PaymentType.EXTERNAL)
    method: str = _str(default=PaymentMethod.OTHER)
    status: str = _str(default=PaymentStatus.PROCESSED)
    reference: str | None = _str(nullable=True)
    created_at: datetime | None = _created()


class Application(SQLModel, table=True):
    """Money applied from a payment or credit memo to an invoice or debit memo."""

    __tablename__ = "application"
    __table_args__ = (
        Index("ix_application_payment", "payment_id"),
        Index("ix_application_credit_memo", "credit_memo_id"),
        Index("ix_application_invoice", "invoice_id"),
        Index("ix_application_debit_memo", "debit_memo_id"),
    )
    id: int | None = _pk()
    tenant_id: int = _tenant()
    payment_id: int | None = _fk("payment.id", nullable=True)
    credit_memo_id: int | None = _fk("credit_memo.id", nullable=True)
    invoice_id: int | None = _fk("invoice.id", nullable=True)
    debit_memo_id: int | None = _fk("debit_memo.id", nullable=True)
    amount: Decimal = _money()
    created_at: datetime | None = _created()


class Refund(SQLModel, table=True):
    __tablename__ = "refund"
    __table_args__ = (UniqueConstraint("tenant_id", "refund_number"),)
    id: int | None = _pk()
    tenant_id: int = _tenant()
    refund_number: str = _str()
    account_id: int = _fk("account.id", index=True)
    payment_id: int | None = _fk("payment.id", nullable=True, index=True)
    credit_memo_id: int | None = _fk("credit_memo.id", nullable=True, index=True)
    amount: Decimal = _money()
    refund_date: date = _date(nullable=False)
    method: str = _str(default=PaymentMethod.OTHER)
    created_at: datetime | None = _created()


# --------------------------------------------------------------------------- bill runs, jobs


class BillRun(SQLModel, table=True):
    """``posting`` marks the post ('POST') or cancel ('CANCEL') under way: the status stays
    COMPLETED (or ERROR) until the transaction that leaves the run no draft."""

    __tablename__ = "bill_run"
    __table_args__ = (
        UniqueConstraint("tenant_id", "bill_run_number"),
        CheckConstraint(
            "posting IS NULL OR posting IN ('POST', 'CANCEL')", name="ck_bill_run_posting"
        ),
    )
    id: int | None = _pk()
    tenant_id: int = _tenant()
    bill_run_number: str = _str()
    target_date: date = _date(nullable=False)
    invoice_date: date = _date(nullable=False)
    selection: dict[str, Any] | None = _json()
    auto_post: bool = Field(default=False, sa_column=Column(Boolean, nullable=False))
    status: str = _str(default=BillRunStatus.PENDING)
    accounts_total: int = Field(default=0, sa_column=Column(Integer, nullable=False))
    accounts_processed: int = Field(default=0, sa_column=Column(Integer, nullable=False))
    invoices_generated: int = Field(default=0, sa_column=Column(Integer, nullable=False))
    created_at: datetime | None = _created()
    completed_at: datetime | None = Field(
        default=None, sa_column=Column(DateTime(timezone=True), nullable=True)
    )
    posting: str | None = _str(nullable=True)
    posting_started_at: datetime | None = Field(
        default=None, sa_column=Column(DateTime(timezone=True), nullable=True)
    )


class BillRunAccount(SQLModel, table=True):
    """One invoice-owner account of a bill run: the unit of resumable work."""

    __tablename__ = "bill_run_account"
    bill_run_id: int = Field(
        sa_column=Column(
            BigInteger, ForeignKey("bill_run.id", ondelete="CASCADE"), primary_key=True
        )
    )
    account_id: int = Field(
        sa_column=Column(BigInteger, ForeignKey("account.id", ondelete="CASCADE"), primary_key=True)
    )
    tenant_id: int = _tenant()
    status: str = _str(default=BillRunAccountStatus.PENDING)
    invoices: int = Field(default=0, sa_column=Column(Integer, nullable=False))
    error_code: str | None = _str(nullable=True)
    error_message: str | None = _str(nullable=True)


class Job(SQLModel, table=True):
    __tablename__ = "job"
    id: str = Field(sa_column=Column(String, primary_key=True))
    tenant_id: int = _tenant()
    kind: str = _str()
    status: str = _str(default=JobStatus.QUEUED)
    input: dict[str, Any] | None = _json()
    result: dict[str, Any] | None = _json()
    errors: list[dict[str, Any]] | None = _json()
    created_at: datetime | None = _created()
    updated_at: datetime | None = _created()


TABLES = SQLModel.metadata
