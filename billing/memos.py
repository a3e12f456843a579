"""Credit and debit memos: create (from an invoice or standalone), post, unpost, cancel;
credit memos are applied to and unapplied from posted invoices and debit memos
(domain.md, 5 and 6)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from typing import Any

from sqlalchemy import Table, func, insert, select, text, update
from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncSession

from billing import numbering
from billing.accounts import get_account, get_account_by_id
from billing.applications import TargetAmount, apply, resolve_targets, unapply
from billing.dbutil import db_errors
from billing.errors import (
    AmountExceedsOpenBalance,
    AmountExceedsUnapplied,
    InvalidState,
    NotFound,
    ValidationFailed,
)
from billing.invoices import ItemData, due_date_for, get_invoice, price_items
from billing.metrics import MetricsWriter
from billing.money import ZERO, check_amount
from billing.pages import Page, paginate
from db.models import Application, CreditMemo, DebitMemo, MemoItem, table_of
from db.statuses import InvoiceStatus, MemoKind, MemoStatus

credit_memo_t = table_of(CreditMemo)
debit_memo_t = table_of(DebitMemo)
memo_item_t = table_of(MemoItem)
application_t = table_of(Application)

TABLE: dict[str, Table] = {MemoKind.CREDIT_MEMO: credit_memo_t, MemoKind.DEBIT_MEMO: debit_memo_t}
LABEL: dict[str, str] = {MemoKind.CREDIT_MEMO: "Credit memo", MemoKind.DEBIT_MEMO: "Debit memo"}


@dataclass
class MemoData:
    """A new memo: from an invoice (invoice_number) or standalone on an account."""

    account_number: str | None = None
    invoice_number: str | None = None
    items: list[ItemData] = field(default_factory=list)
    amount: object | None = None
    reason_code: str | None = None
    memo_date: date | None = None
    auto_post: bool = False


def credit_unapplied(row: RowMapping) -> Decimal:
    """What a credit memo still has to apply or refund."""
    return row["amount"] - row["applied_amount"] - row["refund_amount"]  # type: ignore[no-any-return]


def memo_lines(data: MemoData, currency: str, default_name: str) -> list[dict[str, Any]]:
    """A memo's lines: its items priced, or one line of its amount (not both, not neither)."""
    if data.items and data.amount is not None:
        raise ValidationFailed("Give items or amount, not both", ["amount"])
    if data.items:
        return price_items(data.items, currency)
    if data.amount is None:
        raise ValidationFailed("Give items or an amount", ["amount"])
    amount = check_amount(data.amount, currency, ["amount"])
    return [
        {
            "charge_name": default_name,
            "quantity": Decimal(1),
            "unit_price": amount,
            "amount": amount,
        }
    ]


async def _source(
    session: AsyncSession, tenant_id: int, data: MemoData
) -> tuple[RowMapping, RowMapping | None]:
    """The memo's account and, for a memo made from an invoice, the invoice (not locked yet:
    the account lock comes first, then :func:`_lock_invoice`)."""
    if (data.account_number is None) == (data.invoice_number is None):
        raise ValidationFailed(
            "Give exactly one of accountNumber and invoiceNumber", ["accountNumber"]
        )
    if data.invoice_number is not None:
        invoice = await get_invoice(session, tenant_id, data.invoice_number)
        _check_posted(invoice)
        account = await get_account_by_id(session, tenant_id, invoice["account_id"])
        return account, invoice
    return await get_account(session, tenant_id, data.account_number or ""), None


def _check_posted(invoice: RowMapping) -> None:
    if invoice["status"] != InvoiceStatus.POSTED:
        raise InvalidState(
            f"Invoice {invoice['invoice_number']} is {invoice['status']}; "
            "memos are made from POSTED invoices",
            ["invoiceNumber"],
        )


async def _lock_invoice(
    session: AsyncSession, tenant_id: int, invoice: RowMapping | None
) -> RowMapping | None:
    """Lock the source invoice (after the account lock) and check it is still POSTED."""
    if invoice is None:
        return None
    row = await get_invoice(session, tenant_id, invoice["invoice_number"], for_update=True)
    _check_posted(row)
    return row


async def _insert_items(
    session: AsyncSession, tenant_id: int, memo_type: str, memo_id: int, lines: list[dict[str, Any]]
) -> None:
    await session.execute(
        insert(memo_item_t),
        [
            {
                "tenant_id": tenant_id,
                "memo_type": memo_type,
                "memo_id": memo_id,
                "charge_name": ln["charge_name"],
                "quantity": ln["quantity"],
                "unit_price": ln["unit_price"],
                "amount": ln["amount"],
            }
            for ln in lines
        ],
    )


async def credited_from_invoice(session: AsyncSession, invoice_id: int) -> Decimal:
    """What earlier credit memos (not canceled) took from an invoice."""
    res = await session.execute(
        select(func.coalesce(func.sum(credit_memo_t.c.amount), 0)).where(
            credit_memo_t.c.invoice_id == invoice_id, credit_memo_t.c.status != MemoStatus.CANCELED
        )
    )
    return Decimal(res.scalar_one())


async def create_credit_memo(session: AsyncSession, tenant_id: int, data: MemoData) -> RowMapping:
    """A credit memo, DRAFT or (autoPost) POSTED. From an invoice it never exceeds the
    invoice's amount less what earlier credit memos took."""
    account, invoice = await _source(session, tenant_id, data)
    lines = memo_lines(data, account["currency"], data.reason_code or "Credit")
    total = sum((ln["amount"] for ln in lines), ZERO)
    writer = MetricsWriter(session, tenant_id)
    if data.auto_post:
        await writer.lock(account["id"])
    invoice = await _lock_invoice(session, tenant_id, invoice)
    if invoice is not None:
        room = invoice["amount"] - await credited_from_invoice(session, invoice["id"])
        if total > room:
            raise AmountExceedsOpenBalance(
                f"{total} exceeds what invoice {invoice['invoice_number']} "
                f"has left to credit ({room})",
                ["amount"],
            )
    number = await numbering.next_number(session, tenant_id, "credit_memo")
    async with db_errors():
        memo_id = (
            await session.execute(
                insert(credit_memo_t)
                .values(
                    tenant_id=tenant_id,
                    memo_number=number,
                    account_id=account["id"],
                    currency=account["currency"],
                    invoice_id=invoice["id"] if invoice is not None else None,
                    memo_date=data.memo_date or date.today(),
                    status=MemoStatus.POSTED if data.auto_post else MemoStatus.DRAFT,
                    amount=total,
                    reason_code=data.reason_code,
                )
                .returning(credit_memo_t.c.id)
            )
        ).scalar_one()
    await _insert_items(session, tenant_id, MemoKind.CREDIT_MEMO, memo_id, lines)
    if data.auto_post:
        writer.add(account["id"], unapplied_credit_memo=total)
        await writer.flush()
    return await get_memo_by_id(session, MemoKind.CREDIT_MEMO, memo_id)


async def create_debit_memo(session: AsyncSession, tenant_id: int, data: MemoData) -> RowMapping:
    """A debit memo, DRAFT or (autoPost) POSTED; due per the account's payment term."""
    account, invoice = await _source(session, tenant_id, data)
    lines = memo_lines(data, account["currency"], data.reason_code or "Charge")
    total = sum((ln["amount"] for ln in lines), ZERO)
    memo_date = data.memo_date or date.today()
    writer = MetricsWriter(session, tenant_id)
    if data.auto_post:
        await writer.lock(account["id"])
    invoice = await _lock_invoice(session, tenant_id, invoice)
    number = await numbering.next_number(session, tenant_id, "debit_memo")
    async with db_errors():
        memo_id = (
            await session.execute(
                insert(debit_memo_t)
                .values(
                    tenant_id=tenant_id,
                    memo_number=number,
                    account_id=account["id"],
                    currency=account["currency"],
                    invoice_id=invoice["id"] if invoice is not None else None,
                    memo_date=memo_date,
                    due_date=due_date_for(memo_date, account["payment_term"]),
                    status=MemoStatus.POSTED if data.auto_post else MemoStatus.DRAFT,
                    amount=total,
                    balance=total,
                    reason_code=data.reason_code,
                )
                .returning(debit_memo_t.c.id)
            )
        ).scalar_one()
    await _insert_items(session, tenant_id, MemoKind.DEBIT_MEMO, memo_id, lines)
    if data.auto_post:
        writer.add(account["id"], debit_memo_balance=total)
        await writer.flush()
    return await get_memo_by_id(session, MemoKind.DEBIT_MEMO, memo_id)


# --------------------------------------------------------------------------- lookups


async def find_memo(
    session: AsyncSession, tenant_id: int, kind: str, number: str, *, for_update: bool = False
) -> RowMapping | None:
    """The credit or debit memo with that number in the tenant, or None."""
    t = TABLE[kind]
    stmt = select(t).where(t.c.tenant_id == tenant_id, t.c.memo_number == number)
    if for_update:
        stmt = stmt.with_for_update()
    return (await session.execute(stmt)).mappings().one_or_none()


async def get_memo(
    session: AsyncSession, tenant_id: int, kind: str, number: str, *, for_update: bool = False
) -> RowMapping:
    """The memo with that number, or NOT_FOUND."""
    row = await find_memo(session, tenant_id, kind, number, for_update=for_update)
    if row is None:
        raise NotFound(f"{LABEL[kind]} {number} not found", ["memoNumber"])
    return row


async def get_memo_by_id(session: AsyncSession, kind: str, memo_id: int) -> RowMapping:
    """The memo with that id (the caller already checked the tenant)."""
    t = TABLE[kind]
    return (await session.execute(select(t).where(t.c.id == memo_id))).mappings().one()


async def _locked(
    session: AsyncSession, tenant_id: int, kind: str, number: str
) -> tuple[RowMapping, MetricsWriter]:
    """The account lock first, then the memo row."""
    memo = await get_memo(session, tenant_id, kind, number)
    writer = MetricsWriter(session, tenant_id)
    await writer.lock(memo["account_id"])
    return await get_memo(session, tenant_id, kind, number, for_update=True), writer


# --------------------------------------------------------------------------- state changes


async def post_memo(session: AsyncSession, tenant_id: int, kind: str, number: str) -> RowMapping:
    """DRAFT -> POSTED: a debit memo's balance, or a credit memo's unapplied amount,
    reaches the account's metrics."""
    memo, writer = await _locked(session, tenant_id, kind, number)
    if memo["status"] != MemoStatus.DRAFT:
        raise InvalidState(
            f"{LABEL[kind]} {number} is {memo['status']}; only a DRAFT can be posted"
        )
    t = TABLE[kind]
    if kind == MemoKind.DEBIT_MEMO:
        await session.execute(
            update(t)
            .where(t.c.id == memo["id"])
            .values(status=MemoStatus.POSTED, balance=memo["amount"])
        )
        writer.add(memo["account_id"], debit_memo_balance=memo["amount"])
    else:
        await session.execute(
            update(t).where(t.c.id == memo["id"]).values(status=MemoStatus.POSTED)
        )
        writer.add(memo["account_id"], unapplied_credit_memo=credit_unapplied(memo))
    await writer.flush()
    return await get_memo_by_id(session, kind, memo["id"])


async def unpost_memo(session: AsyncSession, tenant_id: int, kind: str, number: str) -> RowMapping:
    """POSTED -> DRAFT, refused while anything is applied to or from the memo (or refunded)."""
    memo, writer = await _locked(session, tenant_id, kind, number)
    if memo["status"] != MemoStatus.POSTED:
        raise InvalidState(
            f"{LABEL[kind]} {number} is {memo['status']}; only a POSTED one can be unposted"
        )
    t = TABLE[kind]
    applied = (
        await session.execute(
            select(application_t.c.id).where(application_t.c[f"{kind}_id"] == memo["id"]).limit(1)
        )
    ).first()
    if kind == MemoKind.DEBIT_MEMO:
        if applied is not None or memo["balance"] != memo["amount"]:
            raise InvalidState(
                f"Debit memo {number} has payments or credits applied; unapply them first"
            )
        writer.add(memo["account_id"], debit_memo_balance=-memo["balance"])
    else:
        if applied is not None or memo["applied_amount"] != 0 or memo["refund_amount"] != 0:
            raise InvalidState(f"Credit memo {number} is applied or refunded; unapply it first")
        writer.add(memo["account_id"], unapplied_credit_memo=-memo["amount"])
    await session.execute(update(t).where(t.c.id == memo["id"]).values(status=MemoStatus.DRAFT))
    await writer.flush()
    return await get_memo_by_id(session, kind, memo["id"])


async def cancel_memo(session: AsyncSession, tenant_id: int, kind: str, number: str) -> RowMapping:
    """DRAFT -> CANCELED; moves no metric."""
    memo = await get_memo(session, tenant_id, kind, number, for_update=True)
    if memo["status"] != MemoStatus.DRAFT:
        raise InvalidState(
            f"{LABEL[kind]} {number} is {memo['status']}; only a DRAFT can be canceled"
        )
    t = TABLE[kind]
    values: dict[str, Any] = {"status": MemoStatus.CANCELED}
    if kind == MemoKind.DEBIT_MEMO:
        values["balance"] = ZERO
    await session.execute(update(t).where(t.c.id == memo["id"]).values(**values))
    return await get_memo_by_id(session, kind, memo["id"])


# --------------------------------------------------------------------------- applications


async def apply_credit_memo(
    session: AsyncSession,
    tenant_id: int,
    number: str,
    invoices: list[TargetAmount],
    debit_memos: list[TargetAmount],
) -> RowMapping:
    """Apply part of a posted credit memo's unapplied amount to posted invoices and debit memos."""
    if not invoices and not debit_memos:
        raise ValidationFailed("Name at least one invoice or debit memo", ["invoices"])
    memo, writer = await _locked(session, tenant_id, MemoKind.CREDIT_MEMO, number)
    if memo["status"] != MemoStatus.POSTED:
        raise InvalidState(
            f"Credit memo {number} is {memo['status']}; only POSTED memos are applied"
        )
    account = await get_account_by_id(session, tenant_id, memo["account_id"])
    targets = await resolve_targets(session, tenant_id, account, invoices, debit_memos)
    total = sum((t.amount for t in targets), ZERO)
    if total > credit_unapplied(memo):
        raise AmountExceedsUnapplied(
            f"{total} exceeds the credit memo's unapplied amount {credit_unapplied(memo)}",
            ["invoices"],
        )
    await apply(session, tenant_id, MemoKind.CREDIT_MEMO, memo["id"], targets, writer)
    await session.execute(
        update(credit_memo_t)
        .where(credit_memo_t.c.id == memo["id"])
        .values(applied_amount=credit_memo_t.c.applied_amount + total)
    )
    writer.add(memo["account_id"], unapplied_credit_memo=-total)
    await writer.flush()
    return await get_memo_by_id(session, MemoKind.CREDIT_MEMO, memo["id"])


async def unapply_credit_memo(
    session: AsyncSession,
    tenant_id: int,
    number: str,
    invoices: list[TargetAmount],
    debit_memos: list[TargetAmount],
) -> RowMapping:
    """Take applied credit back to the memo's unapplied amount."""
    memo, writer = await _locked(session, tenant_id, MemoKind.CREDIT_MEMO, number)
    if memo["status"] != MemoStatus.POSTED:
        raise InvalidState(f"Credit memo {number} is {memo['status']}")
    account = await get_account_by_id(session, tenant_id, memo["account_id"])
    total = await unapply(
        session, tenant_id, MemoKind.CREDIT_MEMO, memo["id"], account, invoices, debit_memos, writer
    )
    await session.execute(
        update(credit_memo_t)
        .where(credit_memo_t.c.id == memo["id"])
        .values(applied_amount=credit_memo_t.c.applied_amount - total)
    )
    writer.add(memo["account_id"], unapplied_credit_memo=total)
    await writer.flush()
    return await get_memo_by_id(session, MemoKind.CREDIT_MEMO, memo["id"])


# --------------------------------------------------------------------------- lists


async def memo_items(
    session: AsyncSession, kind: str, memo_ids: list[int]
) -> dict[int, list[RowMapping]]:
    """Items per memo, in insertion order (DataLoader batch)."""
    out: dict[int, list[RowMapping]] = {i: [] for i in memo_ids}
    if memo_ids:
        res = await session.execute(
            select(memo_item_t)
            .where(memo_item_t.c.memo_type == kind, memo_item_t.c.memo_id.in_(memo_ids))
            .order_by(memo_item_t.c.id)
        )
        for r in res.mappings():
            out[r["memo_id"]].append(r)
    return out


async def memos_of_invoices(
    session: AsyncSession, kind: str, invoice_ids: list[int]
) -> dict[int, list[RowMapping]]:
    """The memos made from each invoice (DataLoader batch)."""
    t = TABLE[kind]
    out: dict[int, list[RowMapping]] = {i: [] for i in invoice_ids}
    if invoice_ids:
        res = await session.execute(
            select(t).where(t.c.invoice_id.in_(invoice_ids)).order_by(t.c.id)
        )
        for r in res.mappings():
            out[r["invoice_id"]].append(r)
    return out


async def memos_of_account(
    session: AsyncSession,
    kind: str,
    account_id: int,
    status: str | None,
    first: int | None,
    after: str | None,
) -> Page:
    """An account's credit or debit memos, optionally of one status."""
    t = TABLE[kind]
    stmt = select(t).where(t.c.account_id == account_id)
    if status:
        stmt = stmt.where(t.c.status == status)
    return await paginate(session, stmt, t.c.id, first, after)


async def credit_memo_number_of(session: AsyncSession, memo_id: int | None) -> str | None:
    """The business number of a credit memo a refund points at (None when it points at none)."""
    if memo_id is None:
        return None
    res = await session.execute(
        text("SELECT memo_number FROM credit_memo WHERE id = :i"), {"i": memo_id}
    )
    return str(res.scalar_one())
