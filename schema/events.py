"""The event feed and webhook endpoints: shapes only."""

from __future__ import annotations

from datetime import datetime
from enum import Enum

import strawberry
from strawberry.scalars import JSON

from schema.common import PageInfo
from schema.errors import UserError


@strawberry.enum(
    description="What changed. *_POSTED includes a document created POSTED; "
    "ACCOUNT_METRICS_REFRESHED comes from the refresh of a partner account (or "
    "refreshAccountMetrics), ACCOUNT_METRICS_CHANGED from a write that moved an ordinary "
    "account's metrics; BILL_RUN_PROGRESSED carries an accountNumber when it is one account "
    "of the run billed; IMPORT_FINISHED is recorded by an import client when its file is done "
    "(recordImportFinished, which `partnerbill import` sends)."
)
class EventType(Enum):
    ACCOUNT_CREATED = "ACCOUNT_CREATED"
    ACCOUNT_UPDATED = "ACCOUNT_UPDATED"
    ACCOUNT_METRICS_REFRESHED = "ACCOUNT_METRICS_REFRESHED"
    ACCOUNT_METRICS_CHANGED = "ACCOUNT_METRICS_CHANGED"
    INVOICE_POSTED = "INVOICE_POSTED"
    INVOICE_UNPOSTED = "INVOICE_UNPOSTED"
    INVOICE_CANCELED = "INVOICE_CANCELED"
    CREDIT_MEMO_POSTED = "CREDIT_MEMO_POSTED"
    CREDIT_MEMO_UNPOSTED = "CREDIT_MEMO_UNPOSTED"
    CREDIT_MEMO_CANCELED = "CREDIT_MEMO_CANCELED"
    DEBIT_MEMO_POSTED = "DEBIT_MEMO_POSTED"
    DEBIT_MEMO_UNPOSTED = "DEBIT_MEMO_UNPOSTED"
    DEBIT_MEMO_CANCELED = "DEBIT_MEMO_CANCELED"
    PAYMENT_CREATED = "PAYMENT_CREATED"
    PAYMENT_APPLIED = "PAYMENT_APPLIED"
    PAYMENT_UNAPPLIED = "PAYMENT_UNAPPLIED"
    PAYMENT_REFUNDED = "PAYMENT_REFUNDED"
    PAYMENT_CANCELED = "PAYMENT_CANCELED"
    ORDER_COMPLETED = "ORDER_COMPLETED"
    ORDER_FAILED = "ORDER_FAILED"
    BILL_RUN_PROGRESSED = "BILL_RUN_PROGRESSED"
    BILL_RUN_SETTLED = "BILL_RUN_SETTLED"
    IMPORT_FINISHED = "IMPORT_FINISHED"


@strawberry.type(
    description="One committed change, written in the same transaction as the change: it "
    "exists if and only if the change committed."
)
class Event:
    id: strawberry.ID = strawberry.field(description="The event's id (unique, not ordered).")
    cursor: str = strawberry.field(
        description="Its position in the feed: pass as `after` to read what follows it."
    )
    type: EventType = strawberry.field(description="What changed.")
    occurred_at: datetime = strawberry.field(description="When the change was written.")
    account_number: str | None = strawberry.field(
        description="The account it concerns (none for a bill run as a whole or a failed "
        "asynchronous order)."
    )
    data: JSON = strawberry.field(
        description="The changed object after the change, in the API's names; amounts as strings."
    )


@strawberry.type(description="One event of a page with its cursor.")
class EventEdge:
    cursor: str = strawberry.field(description="The event's position in the feed.")
    node: Event = strawberry.field(description="The event.")


@strawberry.type(
    description="A page of the feed in commit order. Poll with `after: pageInfo.endCursor`: "
    "no event is missed or repeated, including events committed out of order by concurrent "
    "transactions. endCursor is the position reached even when the page is empty."
)
class EventConnection:
    edges: list[EventEdge] = strawberry.field(description="The events of this page.")
    page_info: PageInfo = strawberry.field(description="Pagination state.")


@strawberry.input(
    description="What an import client did with one file, once it is done: its counts, for "
    "the IMPORT_FINISHED event (the rows themselves were written, each with its own events, "
    "by the bulk mutations)."
)
class RecordImportFinishedInput:
    kind: str = strawberry.field(
        description="invoices, payments, credit-memos or debit-memos (as `partnerbill import`)."
    )
    file: str = strawberry.field(description="The file's name (at most 255 characters).")
    rows: int = strawberry.field(description="Rows in the file.")
    written: int = strawberry.field(description="Rows written, by this run or an earlier one.")
    failed: int = strawberry.field(description="Rows refused (in the failed-rows file).")


@strawberry.type(description="Result of recordImportFinished.")
class ImportFinishedPayload:
    recorded: bool = strawberry.field(description="The IMPORT_FINISHED event is in the feed.")
    errors: list[UserError] = strawberry.field(
        default_factory=list, description="Why nothing was recorded."
    )
