"""Applying money from a source (payment, credit memo) to targets (posted invoices and
debit memos), and taking it back. Shared by payments and credit memos."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from sqlalchemy import and_, bindparam, delete, insert, select, text, update
from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncSession

from billing.errors import (
    AmountExceedsOpenBalance,
    CurrencyMismatch,
    InvalidState,
    NotFound,
    ValidationFailed,
)
from billing.metrics import MetricsWriter
from billing.money import ZERO, check_amount
from db.models import Application, DebitMemo, Invoice, table_of
from db.statuses import InvoiceStatus

application_t = table_of(Application)
TARGETS = {"invoice": table_of(Invoice), "debit_memo": table_of(DebitMemo)}
NUMBER_COL = {"invoice": "invoice_number", "debit_memo": "memo_number"}
SOURCE_COL = {"payment": "payment_id", "credit_memo": "credit_memo_id"}
TARGET_COL = {"invoice": "invoice_id", "debit_memo": "debit_memo_id"}
LABEL = {"invoice": "Invoice", "debit_memo": "Debit memo"}


@dataclass
class TargetAmount:
    number: str
    amount: object


@dataclass
class Target:
    kind: str  # "invoice" | "debit_memo"
    row: RowMapping
    amount: Decimal


def _field(kind: str, n: int) -> list[str]:
    return ["invoices" if kind == "invoice" else "debitMemos", str(n)]


async def resolve_targets(
    session: AsyncSession,
    tenant_id: int,
    account: RowMapping,
    invoices: list[TargetAmount],
    debit_memos: list[TargetAmount],
) -> list[Target]:
    """Validate amounts and lock each target row (ascending id, so appliers never deadlock)."""
    wanted: dict[tuple[str, str], Decimal] = {}
    fields: dict[tuple[str, str], list[str]] = {}
    for kind, items in (("invoice", invoices), ("debit_memo", debit_memos)):
        for n, item in enumerate(items):
            f = _field(kind, n)
            amount = check_amount(item.amount, account["currency"], [*f, "amount"])
            key = (kind, item.number)
            wanted[key] = wanted.get(key, ZERO) + amount
            fields.setdefault(key, f)
    out: list[Target] = []
    for kind in ("invoice", "debit_memo"):
        numbers = [num for (k, num) in wanted if k == kind]
        if not numbers:
            continue
        table = TARGETS[kind]
        res = await session.execute(
            select(table)
            .where(table.c.tenant_id == tenant_id, table.c[NUMBER_COL[kind]].in_(numbers))
            .order_by(table.c.id)
            .with_for_update()
        )
        rows = {r[NUMBER_COL[kind]]: r for r in res.mappings()}
        for num in numbers:
            f = fields[(kind, num)]
            row = rows.get(num)
            if row is None:
                raise NotFound(f"{LABEL[kind]} {num} not found", f)
            if row["account_id"] != account["id"]:
                raise ValidationFailed(f"{LABEL[kind]} {num} belongs to another account", f)
            if row["currency"] != account["currency"]:
                raise CurrencyMismatch(f"{LABEL[kind]} {num} is in {row['currency']}", f)
            if row["status"] != InvoiceStatus.POSTED:
                raise InvalidState(
                    f"{LABEL[kind]} {num} is {row['status']}; "
                    "only POSTED documents take applications",
                    f,
                )
            amount = wanted[(kind, num)]
            if amount > row["balance"]:
                raise AmountExceedsOpenBalance(
                    f"{amount} exceeds the open balance {row['balance']} "
                    f"of {LABEL[kind].lower()} {num}",
                    [*f, "amount"],
                )
            out.append(Target(kind, row, amount))
    return out


async def apply(
    session: AsyncSession,
    tenant_id: int,
    source_kind: str,
    source_id: int,
    targets: list[Target],
    writer: MetricsWriter,
) -> Decimal:
    """Record the applications and lower each target's balance; returns the total applied."""
    total = ZERO
    for t in targets:
        table = TARGETS[t.kind]
        await session.execute(
            update(table)
            .where(table.c.id == t.row["id"])
            .values(balance=table.c.balance - t.amount)
        )
        await session.execute(
            insert(application_t).values(
                tenant_id=tenant_id,
                **{SOURCE_COL[source_kind]: source_id, TARGET_COL[t.kind]: t.row["id"]},
                amount=t.amount,
            )
        )
        if t.kind == "invoice":
            writer.add(t.row["account_id"], invoice_balance=-t.amount)
        else:
            writer.add(t.row["account_id"], debit_memo_balance=-t.amount)
        total += t.amount
    return total


async def unapply(
    session: AsyncSession,
    tenant_id: int,
    source_kind: str,
    source_id: int,
    account: RowMapping,
    invoices: list[TargetAmount],
    debit_memos: list[TargetAmount],
    writer: MetricsWriter,
) -> Decimal:
    """Take back applied amounts (never more than was applied); targets regain balance."""
    if not invoices and not debit_memos:
        raise ValidationFailed("Name at least one invoice or debit memo", ["invoices"])
    total = ZERO
    for kind, items in (("invoice", invoices), ("debit_memo", debit_memos)):
        table = TARGETS[kind]
        for n, item in enumerate(items):
            f = _field(kind, n)
            amount = check_amount(item.amount, account["currency"], [*f, "amount"])
            row = (
                (
                    await session.execute(
                        select(table)
                        .where(
                            table.c.tenant_id == tenant_id, table.c[NUMBER_COL[kind]] == item.number
                        )
                        .with_for_update()
                    )
                )
                .mappings()
                .one_or_none()
            )
            if row is None:
                raise NotFound(f"{LABEL[kind]} {item.number} not found", f)
            cond = and_(
                application_t.c[SOURCE_COL[source_kind]] == source_id,
                application_t.c[TARGET_COL[kind]] == row["id"],
            )
            apps = list(
                (
                    await session.execute(
                        select(application_t)
                        .where(cond)
                        .order_by(application_t.c.id)
                        .with_for_update()
                    )
                ).mappings()
            )
            applied = sum((a["amount"] for a in apps), ZERO)
            if amount > applied:
                raise ValidationFailed(
                    f"Only {applied} is applied to {LABEL[kind].lower()} {item.number}",
                    [*f, "amount"],
                )
            await session.execute(delete(application_t).where(cond))
            if applied - amount > 0:
                await session.execute(
                    insert(application_t).values(
                        tenant_id=tenant_id,
                        **{SOURCE_COL[source_kind]: source_id, TARGET_COL[kind]: row["id"]},
                        amount=applied - amount,
                    )
                )
            await session.execute(
                update(table)
                .where(table.c.id == row["id"])
                .values(balance=table.c.balance + amount)
            )
            if kind == "invoice":
                writer.add(row["account_id"], invoice_balance=amount)
            else:
                writer.add(row["account_id"], debit_memo_balance=amount)
            total += amount
    return total


# Built once per document column: a statement built per call with .in_(values) leaves its
# new bind parameter in a reference cycle (SQLAlchemy's _cloned_set holds it).
APPLICATIONS_OF = {
    column: select(application_t)
    .where(application_t.c[column].in_(bindparam("ids", expanding=True)))
    .order_by(application_t.c.id)
    for column in ("payment_id", "credit_memo_id", "invoice_id", "debit_memo_id")
}


async def applications_of(
    session: AsyncSession, column: str, ids: list[int]
) -> dict[int, list[RowMapping]]:
    """Applications grouped by one of payment_id, credit_memo_id, invoice_id, debit_memo_id."""
    out: dict[int, list[RowMapping]] = {i: [] for i in ids}
    if ids:
        res = await session.execute(APPLICATIONS_OF[column], {"ids": ids})
        for r in res.mappings():
            out[r[column]].append(r)
    return out


DOCUMENT_NUMBERS = {
    "payment": "SELECT id, payment_number FROM payment WHERE id = ANY(:i)",
    "credit_memo": "SELECT id, memo_number FROM credit_memo WHERE id = ANY(:i)",
    "invoice": "SELECT id, invoice_number FROM invoice WHERE id = ANY(:i)",
    "debit_memo": "SELECT id, memo_number FROM debit_memo WHERE id = ANY(:i)",
}


async def document_numbers(session: AsyncSession, rows: list[Any]) -> dict[tuple[str, int], str]:
    """Business numbers of the documents application rows point at, by (kind, id)."""
    wanted: dict[str, set[int]] = {}
    for r in rows:
        for kind in DOCUMENT_NUMBERS:
            if r[f"{kind}_id"] is not None:
                wanted.setdefault(kind, set()).add(r[f"{kind}_id"])
    out: dict[tuple[str, int], str] = {}
    for kind, ids in wanted.items():
        for ident, number in await session.execute(text(DOCUMENT_NUMBERS[kind]), {"i": list(ids)}):
            out[(kind, ident)] = number
    return out
