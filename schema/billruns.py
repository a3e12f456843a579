"""Bill runs: the month-end billing of many invoice-owner accounts."""

from __future__ import annotations

from datetime import date, datetime
from enum import Enum

import strawberry
from strawberry import Private

from schema.errors import UserError


@strawberry.enum(description="Lifecycle of a bill run.")
class BillRunStatus(Enum):
    PENDING = "PENDING"
    PROCESSING = "PROCESSING"
    COMPLETED = "COMPLETED"
    POSTED = "POSTED"
    CANCELED = "CANCELED"
    ERROR = "ERROR"


@strawberry.enum(description="The operation walking a bill run's drafts.")
class BillRunPosting(Enum):
    POST = "POST"
    CANCEL = "CANCEL"


@strawberry.type(description="Why one account of a bill run was not billed.")
class BillRunError:
    account_number: str = strawberry.field(description="The invoice-owner account.")
    code: str = strawberry.field(description="The error's code (an ErrorCode name, or INTERNAL).")
    message: str = strawberry.field(description="What went wrong.")


@strawberry.type(description="A run that bills the due charges of a set of invoice-owner accounts.")
class BillRun:
    db_id: Private[int]
    id: strawberry.ID = strawberry.field(description="Global id.")
    bill_run_number: str = strawberry.field(description="Business number, BR00000001.")
    status: BillRunStatus = strawberry.field(description="Where the run is.")
    target_date: date = strawberry.field(description="Charges due by this date are billed.")
    invoice_date: date = strawberry.field(description="The date of the invoices made.")
    auto_post: bool = strawberry.field(description="Post the invoices when the run completes.")
    accounts_total: int = strawberry.field(description="Invoice-owner accounts selected.")
    accounts_processed: int = strawberry.field(description="Accounts billed or failed so far.")
    invoices_generated: int = strawberry.field(description="Invoices made so far.")
    errors: list[BillRunError] = strawberry.field(description="Accounts that failed, with why.")
    created_at: datetime = strawberry.field(description="When the run was created.")
    completed_at: datetime | None = strawberry.field(description="When the last account was done.")
    posting: BillRunPosting | None = strawberry.field(
        default=None,
        description="A postBillRun or cancelBillRun under way: its drafts are being posted or "
        "canceled, and status stays COMPLETED (or ERROR) until the last one is, when it "
        "becomes POSTED or CANCELED. Null when none is.",
    )
    posting_started_at: datetime | None = strawberry.field(
        default=None, description="When the post or cancel under way began."
    )


@strawberry.input(
    description="Which accounts to bill and as of when; the criteria combine "
    "(all accounts when none is given)."
)
class CreateBillRunInput:
    target_date: date = strawberry.field(description="Bill what is due by this date.")
    invoice_date: date | None = strawberry.field(
        default=None, description="Invoice date (default targetDate)."
    )
    account_numbers: list[str] | None = strawberry.field(
        default=None, description="Only these accounts."
    )
    batch: str | None = strawberry.field(default=None, description="Only accounts of this batch.")
    bill_cycle_day: int | None = strawberry.field(
        default=None, description="Only accounts with this bill cycle day."
    )
    auto_post: bool = strawberry.field(
        default=False, description="Post the invoices when the run completes."
    )
    idempotency_key: str | None = strawberry.field(default=None, description="Repeat-safe key.")


@strawberry.input(description="Names a bill run.")
class BillRunNumberInput:
    bill_run_number: str = strawberry.field(description="The run's number.")


@strawberry.type(description="Result of a bill run mutation.")
class BillRunPayload:
    bill_run: BillRun | None = strawberry.field(default=None, description="The run.")
    errors: list[UserError] = strawberry.field(
        default_factory=list,
        description="Why nothing was done; or, beside a new run, UNAVAILABLE when it is "
        "recorded but the job queue could not be reached: it starts once the queue is back.",
    )
