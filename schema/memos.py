"""Credit memos, debit memos and refunds."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Annotated

import strawberry
from strawberry import Private

from schema.documents import (
    Application,
    DebitMemoApplicationInput,
    DocumentStatus,
    InvoiceApplicationInput,
    InvoiceItemInput,
    PaymentMethod,
)
from schema.errors import UserError

if TYPE_CHECKING:
    from schema.accounts import Account


@strawberry.type(description="One line of a credit or debit memo.")
class MemoItem:
    id: strawberry.ID = strawberry.field(description="Opaque identifier.")
    charge_name: str = strawberry.field(description="What the line is for.")
    quantity: Decimal = strawberry.field(
        description="Quantity, at its own precision (up to 4 places, trailing zeros dropped)."
    )
    unit_price: Decimal = strawberry.field(
        description="Price of one unit, at its own precision: up to 4 places, finer than the "
        "currency's minor unit when it was given so (trailing zeros dropped)."
    )
    amount: Decimal = strawberry.field(description="Amount of the line.")


@strawberry.type(description="Credit given to an account, from an invoice or standalone.")
class CreditMemo:
    db_id: Private[int]
    account_id: Private[int]
    id: strawberry.ID = strawberry.field(description="Opaque identifier.")
    memo_number: str = strawberry.field(description="Business number (CM...).")
    account_number: str = strawberry.field(description="The credited account.")
    invoice_number: str | None = strawberry.field(
        description="The invoice it was made from, if any."
    )
    currency: str = strawberry.field(description="The account's currency.")
    memo_date: date = strawberry.field(description="Date of the memo.")
    status: DocumentStatus = strawberry.field(description="DRAFT, POSTED or CANCELED.")
    amount: Decimal = strawberry.field(description="Sum of the items.")
    applied_amount: Decimal = strawberry.field(description="Applied to invoices and debit memos.")
    refund_amount: Decimal = strawberry.field(description="Paid out by refunds.")
    unapplied_amount: Decimal = strawberry.field(description="amount - applied - refunded.")
    reason_code: str | None = strawberry.field(description="Why the credit was given.")
    created_at: datetime = strawberry.field(description="When the memo was created.")

    @strawberry.field(description="The memo's lines.")
    async def items(self, info: strawberry.Info) -> list[MemoItem]:
        return await info.context.fetch.memo_items("credit_memo", self.db_id, self.currency)  # type: ignore[no-any-return]

    @strawberry.field(description="Where this memo is applied.")
    async def applications(self, info: strawberry.Info) -> list[Application]:
        return await info.context.fetch.applications("credit_memo_id", self.db_id, self.currency)  # type: ignore[no-any-return]

    @strawberry.field(description="The credited account.")
    async def account(
        self, info: strawberry.Info
    ) -> Annotated[Account, strawberry.lazy("schema.accounts")]:
        return await info.context.fetch.account(self.account_id)  # type: ignore[no-any-return]


@strawberry.type(description="An extra charge to an account, from an invoice or standalone.")
class DebitMemo:
    db_id: Private[int]
    account_id: Private[int]
    id: strawberry.ID = strawberry.field(description="Opaque identifier.")
    memo_number: str = strawberry.field(description="Business number (DM...).")
    account_number: str = strawberry.field(description="The charged account.")
    invoice_number: str | None = strawberry.field(
        description="The invoice it was made from, if any."
    )
    currency: str = strawberry.field(description="The account's currency.")
    memo_date: date = strawberry.field(description="Date of the memo.")
    due_date: date = strawberry.field(description="memoDate plus the account's payment term.")
    status: DocumentStatus = strawberry.field(description="DRAFT, POSTED or CANCELED.")
    amount: Decimal = strawberry.field(description="Sum of the items.")
    balance: Decimal = strawberry.field(description="What is still open.")
    reason_code: str | None = strawberry.field(description="Why the charge was made.")
    created_at: datetime = strawberry.field(description="When the memo was created.")

    @strawberry.field(description="The memo's lines.")
    async def items(self, info: strawberry.Info) -> list[MemoItem]:
        return await info.context.fetch.memo_items("debit_memo", self.db_id, self.currency)  # type: ignore[no-any-return]

    @strawberry.field(description="Payments and credit memos applied to this debit memo.")
    async def applications(self, info: strawberry.Info) -> list[Application]:
        return await info.context.fetch.applications("debit_memo_id", self.db_id, self.currency)  # type: ignore[no-any-return]

    @strawberry.field(description="The charged account.")
    async def account(
        self, info: strawberry.Info
    ) -> Annotated[Account, strawberry.lazy("schema.accounts")]:
        return await info.context.fetch.account(self.account_id)  # type: ignore[no-any-return]


@strawberry.type(
    description="Money paid back from a payment's or a credit memo's unapplied amount."
)
class Refund:
    db_id: Private[int]
    id: strawberry.ID = strawberry.field(description="Opaque identifier.")
    refund_number: str = strawberry.field(description="Business number (R...).")
    account_number: str = strawberry.field(description="The refunded account.")
    amount: Decimal = strawberry.field(description="Amount refunded.")
    refund_date: date = strawberry.field(description="Date of the refund.")
    method: PaymentMethod = strawberry.field(description="How the money was paid back.")
    payment_number: str | None = strawberry.field(description="The refunded payment, if any.")
    credit_memo_number: str | None = strawberry.field(
        description="The refunded credit memo, if any."
    )
    created_at: datetime = strawberry.field(description="When the refund was recorded.")


@strawberry.input(description="A new credit or debit memo: from an invoice or on an account, "
                  "with items or one amount.")  # fmt: skip
class CreateMemoInput:
    account_number: str | None = strawberry.field(
        default=None, description="Standalone memo on this account."
    )
    invoice_number: str | None = strawberry.field(
        default=None, description="Memo made from this posted invoice."
    )
    items: list[InvoiceItemInput] | None = strawberry.field(
        default=None, description="Lines of the memo."
    )
    amount: Decimal | None = strawberry.field(
        default=None, description="One amount instead of items."
    )
    reason_code: str | None = strawberry.field(default=None, description="Why.")
    memo_date: date | None = strawberry.field(default=None, description="Defaults to today.")
    auto_post: bool = strawberry.field(default=False, description="Post at once.")
    idempotency_key: str | None = strawberry.field(default=None, description="Makes a retry safe.")


@strawberry.input(description="A new credit memo (see CreateMemoInput).")
class CreateCreditMemoInput(CreateMemoInput):
    pass


@strawberry.input(description="A new debit memo (see CreateMemoInput).")
class CreateDebitMemoInput(CreateMemoInput):
    pass


@strawberry.input(description="Names a memo.")
class MemoNumberInput:
    memo_number: str = strawberry.field(description="CM... or DM... number.")


@strawberry.input(description="Apply or unapply part of a credit memo.")
class CreditMemoApplicationInput:
    memo_number: str = strawberry.field(description="The credit memo.")
    invoices: list[InvoiceApplicationInput] = strawberry.field(
        default_factory=list, description="Amounts per invoice."
    )
    debit_memos: list[DebitMemoApplicationInput] = strawberry.field(
        default_factory=list, description="Amounts per debit memo."
    )
    idempotency_key: str | None = strawberry.field(default=None, description="Makes a retry safe.")


@strawberry.input(description="Refund part of a credit memo's unapplied amount.")
class RefundCreditMemoInput:
    memo_number: str = strawberry.field(description="The credit memo.")
    amount: Decimal = strawberry.field(description="At most the unapplied amount.")
    refund_date: date | None = strawberry.field(default=None, description="Defaults to today.")
    method: PaymentMethod = strawberry.field(
        default=PaymentMethod.OTHER, description="How paid back."
    )
    idempotency_key: str | None = strawberry.field(default=None, description="Makes a retry safe.")


@strawberry.input(description="Refund part of a payment's unapplied amount.")
class RefundPaymentInput:
    payment_number: str = strawberry.field(description="The payment.")
    amount: Decimal = strawberry.field(description="At most the unapplied amount.")
    refund_date: date | None = strawberry.field(default=None, description="Defaults to today.")
    method: PaymentMethod = strawberry.field(
        default=PaymentMethod.OTHER, description="How paid back."
    )
    idempotency_key: str | None = strawberry.field(default=None, description="Makes a retry safe.")


@strawberry.input(description="Names a payment.")
class PaymentNumberInput:
    payment_number: str = strawberry.field(description="P... number.")
    idempotency_key: str | None = strawberry.field(default=None, description="Makes a retry safe.")


@strawberry.type(description="Result of a credit memo mutation.")
class CreditMemoPayload:
    credit_memo: CreditMemo | None = strawberry.field(default=None, description="The memo.")
    errors: list[UserError] = strawberry.field(default_factory=list, description="What went wrong.")


@strawberry.type(description="Result of a debit memo mutation.")
class DebitMemoPayload:
    debit_memo: DebitMemo | None = strawberry.field(default=None, description="The memo.")
    errors: list[UserError] = strawberry.field(default_factory=list, description="What went wrong.")


@strawberry.type(description="Result of a refund mutation.")
class RefundPayload:
    refund: Refund | None = strawberry.field(default=None, description="The refund.")
    errors: list[UserError] = strawberry.field(default_factory=list, description="What went wrong.")
