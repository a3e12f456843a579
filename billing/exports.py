"""Everything of a tenant as rows, streamed at constant memory (``partnerbill export``).

Each export is one query read through a server-side cursor in one read-only transaction, so
the rows are one snapshot of the tenant, in id order, and memory holds one page of them
whatever the tenant's size. Column names are the GraphQL field names, so a file reads like
the API; money is written as the API answers it (:mod:`billing.money`), and
the accounts export carries every metric with ``lastMetricsUpdate`` and the number of
changes not yet folded, for reconciling a migration against its source system.
"""

from __future__ import annotations

import enum
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from billing.money import exact_out, money_out

PAGE_ROWS = 1000


class ExportKind(enum.StrEnum):
    ACCOUNTS = "accounts"
    INVOICES = "invoices"
    PAYMENTS = "payments"


@dataclass(frozen=True)
class ExportFilter:
    """Which rows: of partner accounts only; accounts whose metrics were last refreshed
    before an instant (or never); documents dated within [date_from, date_to]."""

    partner_only: bool = False
    metrics_stale_since: datetime | None = None
    date_from: date | None = None
    date_to: date | None = None


Cell = str | int | bool | None
Row = tuple[Cell, ...]


@dataclass(frozen=True)
class Column:
    name: str
    sql: str
    # How the database value becomes a cell: money at the row's currency, dates as ISO text.
    cell: Callable[[Any, str], Cell]


def _text(value: Any, currency: str) -> Cell:
    return None if value is None else str(value)


def _money(value: Decimal, currency: str) -> Cell:
    return str(money_out(value, currency))


def _exact(value: Decimal | None, currency: str) -> Cell:
    """A figure kept at its stored precision (MRR), as the API answers it."""
    return None if value is None else str(exact_out(value))


def _iso(value: date | datetime | None, currency: str) -> Cell:
    return None if value is None else value.isoformat()


def _plain(value: Any, currency: str) -> Cell:
    return value  # type: ignore[no-any-return]


_BALANCE = (
    "m.total_invoice_balance + m.total_debit_memo_balance - m.unapplied_payment_amount "
    "- m.unapplied_credit_memo_amount"
)

COLUMNS: dict[ExportKind, tuple[Column, ...]] = {
    ExportKind.ACCOUNTS: (
        Column("accountNumber", "a.account_number", _text),
        Column("name", "a.name", _text),
        Column("currency", "a.currency", _text),
        Column("status", "a.status", _text),
        Column("partnerAccount", "a.partner_account", _plain),
        Column("billCycleDay", "a.bill_cycle_day", _plain),
        Column("paymentTerm", "a.payment_term", _text),
        Column("batch", "a.batch", _text),
        Column("balance", _BALANCE, _money),
        Column("totalInvoiceBalance", "m.total_invoice_balance", _money),
        Column("totalDebitMemoBalance", "m.total_debit_memo_balance", _money),
        Column("unappliedPaymentAmount", "m.unapplied_payment_amount", _money),
        Column("unappliedCreditMemoAmount", "m.unapplied_credit_memo_amount", _money),
        Column("creditBalance", "m.credit_balance", _money),
        Column("contractedMrr", "m.contracted_mrr", _exact),
        Column("lastInvoiceDate", "m.last_invoice_date", _iso),
        Column("lastMetricsUpdate", "m.last_metrics_update", _iso),
        Column(
            "pendingMetricChanges",
            "(SELECT count(*) FROM metrics_change c "
            "WHERE c.tenant_id = a.tenant_id AND c.account_id = a.id)",
            _plain,
        ),
    ),
    ExportKind.INVOICES: (
        Column("invoiceNumber", "i.invoice_number", _text),
        Column("accountNumber", "a.account_number", _text),
        Column("currency", "i.currency", _text),
        Column("invoiceDate", "i.invoice_date", _iso),
        Column("dueDate", "i.due_date", _iso),
        Column("status", "i.status", _text),
        Column("amount", "i.amount", _money),
        Column("balance", "i.balance", _money),
        Column("source", "i.source", _text),
        Column("postedAt", "i.posted_at", _iso),
        Column("createdAt", "i.created_at", _iso),
    ),
    ExportKind.PAYMENTS: (
        Column("paymentNumber", "p.payment_number", _text),
        Column("accountNumber", "a.account_number", _text),
        Column("currency", "p.currency", _text),
        Column("effectiveDate", "p.effective_date", _iso),
        Column("method", "p.method", _text),
        Column("status", "p.status", _text),
        Column("amount", "p.amount", _money),
        Column("appliedAmount", "p.applied_amount", _money),
        Column("refundAmount", "p.refund_amount", _money),
        Column("unappliedAmount", "p.amount - p.applied_amount - p.refund_amount", _money),
        Column("reference", "p.reference", _text),
        Column("createdAt", "p.created_at", _iso),
    ),
}


@dataclass(frozen=True)
class Source:
    """Where an export's rows come from: the tables (the account is always ``a``), the
    document's alias, the column holding the row's currency, the date the date filters
    apply to, and the order of the rows."""

    tables: str
    alias: str
    currency: str
    dated_by: str | None
    order: str


SOURCES: dict[ExportKind, Source] = {
    ExportKind.ACCOUNTS: Source(
        "account a JOIN account_metrics m ON m.account_id = a.id", "a", "a.currency", None, "a.id"
    ),
    ExportKind.INVOICES: Source(
        "invoice i JOIN account a ON a.id = i.account_id",
        "i",
        "i.currency",
        "i.invoice_date",
        "i.id",
    ),
    ExportKind.PAYMENTS: Source(
        "payment p JOIN account a ON a.id = p.account_id",
        "p",
        "p.currency",
        "p.effective_date",
        "p.id",
    ),
}


def _where(source: Source, f: ExportFilter) -> tuple[str, dict[str, Any]]:
    clauses = [f"{source.alias}.tenant_id = :tenant", "a.tenant_id = :tenant"]
    params: dict[str, Any] = {}
    if f.partner_only:
        clauses.append("a.partner_account")
    if f.metrics_stale_since is not None:
        clauses.append(
            "EXISTS (SELECT 1 FROM account_metrics sm WHERE sm.account_id = a.id AND "
            "(sm.last_metrics_update IS NULL OR sm.last_metrics_update < :stale_since))"
        )
        params["stale_since"] = f.metrics_stale_since
    if source.dated_by is not None and f.date_from is not None:
        clauses.append(f"{source.dated_by} >= :date_from")
        params["date_from"] = f.date_from
    if source.dated_by is not None and f.date_to is not None:
        clauses.append(f"{source.dated_by} <= :date_to")
        params["date_to"] = f.date_to
    return " AND ".join(clauses), params


def header(kind: ExportKind) -> tuple[str, ...]:
    """The column names of ``kind``, in the order of every row's cells."""
    return tuple(c.name for c in COLUMNS[kind])


async def count(engine: AsyncEngine, tenant_id: int, kind: ExportKind, f: ExportFilter) -> int:
    """How many rows :func:`rows` will give (for a progress bar; read before the stream)."""
    source = SOURCES[kind]
    where, params = _where(source, f)
    async with engine.connect() as conn:
        n = await conn.scalar(
            text(f"SELECT count(*) FROM {source.tables} WHERE {where}"),
            {"tenant": tenant_id, **params},
        )
    return int(n or 0)


async def rows(
    engine: AsyncEngine, tenant_id: int, kind: ExportKind, f: ExportFilter
) -> AsyncIterator[list[Row]]:
    """The rows in pages of PAGE_ROWS, from one snapshot, through a server-side cursor."""
    columns = COLUMNS[kind]
    source = SOURCES[kind]
    where, params = _where(source, f)
    select = ", ".join([source.currency, *(c.sql for c in columns)])
    sql = text(f"SELECT {select} FROM {source.tables} WHERE {where} ORDER BY {source.order}")
    async with engine.connect() as conn:
        await conn.execute(text("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY"))
        result = await conn.stream(sql, {"tenant": tenant_id, **params})
        async for page in result.partitions(PAGE_ROWS):
            yield [
                tuple(c.cell(value, row[0]) for c, value in zip(columns, row[1:], strict=True))
                for row in page
            ]
