"""Invoices, payments and applications."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from enum import Enum
from typing import TYPE_CHECKING, Annotated

import strawberry
from strawberry import Private

from schema.errors import UserError

if TYPE_CHECKING:
    from schema.accounts import Account
    from schema.memos import CreditMemo, DebitMemo


@strawberry.enum(description="Lifecycle of an invoice or memo.")
class DocumentStatus(Enum):
    DRAFT = "DRAFT"
    POSTED = "POSTED"
    CANCELED = "CANCELED"


@strawberry.enum(description="Where an invoice came from.")
class InvoiceSource(Enum):
    BILL_RUN = "BILL_RUN"
    ORDER = "ORDER"
    STANDALONE = "STANDALONE"


@strawberry.enum(description="How a payment was made.")
class PaymentMethod(Enum):
    CHECK = "CHECK"
    CASH = "CASH"
    WIRE = "WIRE"
    CREDIT_CARD = "CREDIT_CARD"
    OTHER = "OTHER"


@strawberry.enum(description="Lifecycle of a payment.")
class PaymentStatus(Enum):
    PROCESSED = "PROCESSED"
    CANCELED = "CANCELED"


@strawberry.type(description="One line of an invoice.")
class InvoiceItem:
    id: strawberry.ID
    charge_name: str
    subscription_number: str | None = None
    charge_number: str | None = None
    service_start_date: date | None = None
    service_end_date: date | None = None
    quantity: Decimal = strawberry.field(
        description="Quantity, at its own precision (up to 4 places, trailing zeros dropped)."
    )
    unit_price: Decimal = strawberry.field(
        description="Price of one unit, at its own precision: up to 4 places, finer than the "
        "currency's minor unit when it was given so (trailing zeros dropped)."
    )
    amount: Decimal = strawberry.field(description="Amount of the line.")


@strawberry.type(
    description="Money applied from a payment or credit memo to an invoice or debit memo."
)
class Application:
    id: strawberry.ID
    amount: Decimal
    payment_number: str | None = None
    credit_memo_number: str | None = None
    invoice_number: str | None = None
    debit_memo_number: str | None = None
    created_at: datetime


@strawberry.type(description="A bill to an invoice-owner account.")
class Invoice:
    db_id: Private[int]
    account_id: Private[int]
    id: strawberry.ID
    invoice_number: str
    account_number: str
    currency: str
    invoice_date: date
    due_date: date
    target_date: date | None
    status: DocumentStatus
    amount: Decimal = strawberry.field(description="Sum of the items.")
    balance: Decimal = strawberry.field(description="What is still open.")
    source: InvoiceSource
    created_at: datetime

    @strawberry.field(description="The invoice's lines.")
    async def items(self, info: strawberry.Info) -> list[InvoiceItem]:
        return await info.context.fetch.invoice_items(self.db_id, self.currency)  # type: ignore[no-any-return]

    @strawberry.field(description="Payments and credit memos applied to this invoice.")
    async def applications(self, info: strawberry.Info) -> list[Application]:
        return await info.context.fetch.applications("invoice_id", self.db_id, self.currency)  # type: ignore[no-any-return]

    @strawberry.field(description="Credit memos made from this invoice.")
    async def credit_memos(
        self, info: strawberry.Info
    ) -> list[Annotated[CreditMemo, strawberry.lazy("schema.memos")]]:
        return await info.context.fetch.invoice_memos("credit_memo", self.db_id)  # type: ignore[no-any-return]

    @strawberry.field(description="Debit memos made from this invoice.")
    async def debit_memos(
        self, info: strawberry.Info
    ) -> list[Annotated[DebitMemo, strawberry.lazy("schema.memos")]]:
        return await info.context.fetch.invoice_memos("debit_memo", self.db_id)  # type: ignore[no-any-return]

    @strawberry.field(description="The invoice-owner account.")
    async def account(
        self, info: strawberry.Info
    ) -> Annotated[Account, strawberry.lazy("schema.accounts")]:
        return await info.context.fetch.account(self.account_id)  # type: ignore[no-any-return]


@strawberry.type(description="An external payment received from an account.")
class Payment:
    db_id: Private[int]
    account_id: Private[int]
    id: strawberry.ID
    payment_number: str
    account_number: str
    currency: str
    amount: Decimal
    applied_amount: Decimal
    refund_amount: Decimal
    unapplied_amount: Decimal = strawberry.field(description="amount - applied - refunded.")
    effective_date: date
    type: str
    method: PaymentMethod
    status: PaymentStatus
    created_at: datetime

    @strawberry.field(description="Where this payment is applied.")
    async def applications(self, info: strawberry.Info) -> list[Application]:
        return await info.context.fetch.applications("payment_id", self.db_id, self.currency)  # type: ignore[no-any-return]

    @strawberry.field(description="The paying account.")
    async def account(
        self, info: strawberry.Info
    ) -> Annotated[Account, strawberry.lazy("schema.accounts")]:
        return await info.context.fetch.account(self.account_id)  # type: ignore[no-any-return]


@strawberry.enum(description="Status a standalone invoice is created in.")
class NewInvoiceStatus(Enum):
    DRAFT = "DRAFT"
    POSTED = "POSTED"


@strawberry.input(
    description="A line of a standalone invoice; amount defaults to quantity x unitPrice."
)
class InvoiceItemInput:
    charge_name: str
    quantity: Decimal | None = None
    unit_price: Decimal | None = None
    amount: Decimal | None = None
    service_start_date: date | None = None
    service_end_date: date | None = None


@strawberry.input(description="An invoice not made by a bill run (migrations, one-off charges).")
class CreateStandaloneInvoiceInput:
    account_number: str
    invoice_date: date
    items: list[InvoiceItemInput]
    invoice_number: str | None = None
    due_date: date | None = None
    status: NewInvoiceStatus = NewInvoiceStatus.DRAFT
    currency: str | None = None
    idempotency_key: str | None = None


@strawberry.input(description="Names an invoice.")
class InvoiceNumberInput:
    invoice_number: str


@strawberry.type(description="Result of an invoice mutation.")
class InvoicePayload:
    invoice: Invoice | None = None
    errors: list[UserError] = strawberry.field(default_factory=list)


@strawberry.input(description="An amount applied to one invoice.")
class InvoiceApplicationInput:
    invoice_number: str
    amount: Decimal


@strawberry.input(description="An amount applied to one debit memo.")
class DebitMemoApplicationInput:
    memo_number: str
    amount: Decimal


@strawberry.input(
    description="A payment received; applied to invoices/debit memos, unapplied, or both."
)
class CreatePaymentInput:
    account_number: str
    amount: Decimal
    effective_date: date
    method: PaymentMethod = PaymentMethod.OTHER
    currency: str | None = None
    reference: str | None = None
    invoices: list[InvoiceApplicationInput] = strawberry.field(default_factory=list)
    debit_memos: list[DebitMemoApplicationInput] = strawberry.field(default_factory=list)
    idempotency_key: str | None = None


@strawberry.input(description="Apply or unapply part of a payment.")
class PaymentApplicationInput:
    payment_number: str
    invoices: list[InvoiceApplicationInput] = strawberry.field(default_factory=list)
    debit_memos: list[DebitMemoApplicationInput] = strawberry.field(default_factory=list)
    idempotency_key: str | None = None


@strawberry.type(description="Result of a payment mutation.")
class PaymentPayload:
    payment: Payment | None = None
    errors: list[UserError] = strawberry.field(default_factory=list)
