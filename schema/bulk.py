"""Bulk mutations (migrations): many invoices, payments or memos in one call."""

from __future__ import annotations

import strawberry

from schema.common import ErrorPolicy
from schema.documents import CreatePaymentInput, CreateStandaloneInvoiceInput, Invoice, Payment
from schema.errors import UserError
from schema.memos import CreateCreditMemoInput, CreateDebitMemoInput, CreditMemo, DebitMemo

POLICY = (
    "REJECT_EVERYTHING (the default): one failing row writes nothing. REJECT_FAILED_ROWS: "
    "the rows that pass are written, the others say why."
)
ROW_ERRORS = (
    "Why this row was not written; each error's field is its path from the input "
    '(["invoices", "3", "items", "0", "amount"]). Empty on a row written or replayed, and on '
    "a good row of a call that REJECT_EVERYTHING rejected."
)
COUNT = "Results that carry a document (written by this call or replayed by its key)."
DRY_RUN = (
    "Check every row and answer as if written, then write nothing (the call's transaction is "
    "rolled back; numbers it drew are not used again): what `partnerbill import --dry-run` "
    "sends."
)


@strawberry.input(
    description="Many standalone invoices (at most PARTNERBILL_MAX_BULK_ROWS, 1,000 by "
    "default); each row may carry its idempotencyKey."
)
class CreateStandaloneInvoicesInput:
    invoices: list[CreateStandaloneInvoiceInput] = strawberry.field(description="The invoices.")
    error_policy: ErrorPolicy = strawberry.field(
        default=ErrorPolicy.REJECT_EVERYTHING, description=POLICY
    )
    dry_run: bool = strawberry.field(default=False, description=DRY_RUN)


@strawberry.input(description="Many payments (see CreateStandaloneInvoicesInput for the cap).")
class CreatePaymentsInput:
    payments: list[CreatePaymentInput] = strawberry.field(description="The payments.")
    error_policy: ErrorPolicy = strawberry.field(
        default=ErrorPolicy.REJECT_EVERYTHING, description=POLICY
    )
    dry_run: bool = strawberry.field(default=False, description=DRY_RUN)


@strawberry.input(description="Many credit memos (see CreateStandaloneInvoicesInput for the cap).")
class CreateCreditMemosInput:
    credit_memos: list[CreateCreditMemoInput] = strawberry.field(description="The credit memos.")
    error_policy: ErrorPolicy = strawberry.field(
        default=ErrorPolicy.REJECT_EVERYTHING, description=POLICY
    )
    dry_run: bool = strawberry.field(default=False, description=DRY_RUN)


@strawberry.input(description="Many debit memos (see CreateStandaloneInvoicesInput for the cap).")
class CreateDebitMemosInput:
    debit_memos: list[CreateDebitMemoInput] = strawberry.field(description="The debit memos.")
    error_policy: ErrorPolicy = strawberry.field(
        default=ErrorPolicy.REJECT_EVERYTHING, description=POLICY
    )
    dry_run: bool = strawberry.field(default=False, description=DRY_RUN)


@strawberry.type(description="One invoice of a bulk call.")
class BulkInvoiceResult:
    invoice: Invoice | None = strawberry.field(default=None, description="The invoice, if any.")
    errors: list[UserError] = strawberry.field(default_factory=list, description=ROW_ERRORS)


@strawberry.type(description="Result of createStandaloneInvoices: one result per input, in order.")
class BulkInvoicePayload:
    count: int = strawberry.field(description=COUNT)
    results: list[BulkInvoiceResult] = strawberry.field(description="One per input row.")


@strawberry.type(description="One payment of a bulk call.")
class BulkPaymentResult:
    payment: Payment | None = strawberry.field(default=None, description="The payment, if any.")
    errors: list[UserError] = strawberry.field(default_factory=list, description=ROW_ERRORS)


@strawberry.type(description="Result of createPayments: one result per input, in order.")
class BulkPaymentPayload:
    count: int = strawberry.field(description=COUNT)
    results: list[BulkPaymentResult] = strawberry.field(description="One per input row.")


@strawberry.type(description="One credit memo of a bulk call.")
class BulkCreditMemoResult:
    credit_memo: CreditMemo | None = strawberry.field(
        default=None, description="The credit memo, if any."
    )
    errors: list[UserError] = strawberry.field(default_factory=list, description=ROW_ERRORS)


@strawberry.type(description="Result of createCreditMemos: one result per input, in order.")
class BulkCreditMemoPayload:
    count: int = strawberry.field(description=COUNT)
    results: list[BulkCreditMemoResult] = strawberry.field(description="One per input row.")


@strawberry.type(description="One debit memo of a bulk call.")
class BulkDebitMemoResult:
    debit_memo: DebitMemo | None = strawberry.field(
        default=None, description="The debit memo, if any."
    )
    errors: list[UserError] = strawberry.field(default_factory=list, description=ROW_ERRORS)


@strawberry.type(description="Result of createDebitMemos: one result per input, in order.")
class BulkDebitMemoPayload:
    count: int = strawberry.field(description=COUNT)
    results: list[BulkDebitMemoResult] = strawberry.field(description="One per input row.")
