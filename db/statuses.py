"""Statuses and kinds stored in the tables, shared by db/ and billing/.

String-valued enums: a member is the very string stored in its column and written in SQL, so
comparing a row's value with a member, or writing a member, behaves as the bare string did.
schema/ mirrors the ones the API shows as GraphQL enums with the same values.
"""

from __future__ import annotations

from enum import StrEnum


class AccountStatus(StrEnum):
    ACTIVE = "ACTIVE"
    CANCELED = "CANCELED"


class InvoiceStatus(StrEnum):
    DRAFT = "DRAFT"
    POSTED = "POSTED"
    CANCELED = "CANCELED"


class MemoStatus(StrEnum):
    DRAFT = "DRAFT"
    POSTED = "POSTED"
    CANCELED = "CANCELED"


class PaymentStatus(StrEnum):
    PROCESSED = "PROCESSED"
    CANCELED = "CANCELED"


class SubscriptionStatus(StrEnum):
    ACTIVE = "ACTIVE"
    SUSPENDED = "SUSPENDED"
    CANCELLED = "CANCELLED"
    EXPIRED = "EXPIRED"
    PENDING_ACTIVATION = "PENDING_ACTIVATION"


class OrderStatus(StrEnum):
    COMPLETED = "COMPLETED"
    PENDING = "PENDING"
    FAILED = "FAILED"


class BillRunStatus(StrEnum):
    PENDING = "PENDING"
    PROCESSING = "PROCESSING"
    COMPLETED = "COMPLETED"
    POSTED = "POSTED"
    CANCELED = "CANCELED"
    ERROR = "ERROR"


class BillRunPosting(StrEnum):
    """The operation walking a bill run's drafts (bill_run.posting; NULL when none)."""

    POST = "POST"
    CANCEL = "CANCEL"


class BillRunAccountStatus(StrEnum):
    PENDING = "PENDING"
    DONE = "DONE"
    ERROR = "ERROR"


class JobStatus(StrEnum):
    QUEUED = "QUEUED"
    PROCESSING = "PROCESSING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"


class JobKind(StrEnum):
    CREATE_ORDER = "create_order"


class InvoiceSource(StrEnum):
    BILL_RUN = "BILL_RUN"
    ORDER = "ORDER"
    STANDALONE = "STANDALONE"


class MemoKind(StrEnum):
    """Which memo table (and memo_item.memo_type) a memo lives in."""

    CREDIT_MEMO = "credit_memo"
    DEBIT_MEMO = "debit_memo"


class PaymentType(StrEnum):
    EXTERNAL = "EXTERNAL"


class PaymentMethod(StrEnum):
    CHECK = "CHECK"
    CASH = "CASH"
    WIRE = "WIRE"
    CREDIT_CARD = "CREDIT_CARD"
    OTHER = "OTHER"


class ChargeType(StrEnum):
    ONE_TIME = "ONE_TIME"
    RECURRING = "RECURRING"
    USAGE = "USAGE"


class ChargeModel(StrEnum):
    FLAT_FEE = "FLAT_FEE"
    PER_UNIT = "PER_UNIT"


class BillingTiming(StrEnum):
    IN_ADVANCE = "IN_ADVANCE"
    IN_ARREARS = "IN_ARREARS"


class TermType(StrEnum):
    TERMED = "TERMED"
    EVERGREEN = "EVERGREEN"


class MetricsUpdateReason(StrEnum):
    """Why an account's stored metrics changed."""

    SYNC = "SYNC"  # an ordinary account's metrics moved with the write itself
    REFRESH = "REFRESH"  # a refresh folded pending changes and stamped lastMetricsUpdate


class EventType(StrEnum):
    """The kinds of event of the feed (``event.type``; written by migration 0011's triggers,
    billing.metrics and the fold)."""

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


class ImportKind(StrEnum):
    """The kinds of file `partnerbill import` sends, as its command line names them and its
    IMPORT_FINISHED event's data (``kind``) keeps them."""

    INVOICES = "invoices"
    PAYMENTS = "payments"
    CREDIT_MEMOS = "credit-memos"
    DEBIT_MEMOS = "debit-memos"
