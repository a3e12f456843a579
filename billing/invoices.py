"""Invoices: standalone creation, post, unpost, cancel (domain.md, 5 and 6)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import insert, select, text, update
from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncSession

from billing import numbering
from billing.accounts import PAYMENT_TERMS, get_account
from billing.dbutil import db_errors
from billing.errors import Duplicate, InvalidState, LimitExceeded, NotFound, ValidationFailed
from billing.metrics import MetricsWriter
from billing.money import ZERO, check_amount, check_price, check_quantity, quantize
from billing.pages import Page, paginate
from db.models import Application, Invoice, InvoiceItem, table_of

I = table_of(Invoice)  # noqa: E741
II = table_of(InvoiceItem)
AP = table_of(Application)

MAX_ITEMS = 10_000


@dataclass
class ItemData:
    charge_name: str
    quantity: Decimal | None = None
    unit_price: Decimal | None = None
    amount: Decimal | None = None
    service_start_date: date | None = None
    service_end_date: date | None = None


@dataclass
class StandaloneInvoiceData:
    account_number: str
    invoice_date: date
    items: list[ItemData] = field(default_factory=list)
    invoice_number: str | None = None
    due_date: date | None = None
    status: str = "DRAFT"
    currency: str | None = None


def due_date_for(invoice_date: date, payment_term: str) -> date:
    """invoiceDate plus the account's payment term."""
    return invoice_date + timedelta(days=PAYMENT_TERMS[payment_term])


def price_items(items: list[ItemData], currency: str, path: str = "items") -> list[dict[str, Any]]:
    """Validate items and fix each amount (quantity x unitPrice, in the currency's unit)."""
    if not items:
        raise ValidationFailed("At least one item is required", [path])
    if len(items) > MAX_ITEMS:
        raise LimitExceeded(f"At most {MAX_ITEMS} items", [path])
    out = []
    for n, it in enumerate(items):
        where = [path, str(n)]
        name = (it.charge_name or "").strip()
        if not name:
            raise ValidationFailed("chargeName is required", [*where, "chargeName"])
        qty = check_quantity(it.quantity if it.quantity is not None else 1, [*where, "quantity"])
        if it.unit_price is None and it.amount is None:
            raise ValidationFailed("unitPrice or amount is required", [*where, "unitPrice"])
        if it.amount is not None:
            amount = check_amount(it.amount, currency, [*where, "amount"])
            unit_price = (
                check_price(it.unit_price, [*where, "unitPrice"])
                if it.unit_price is not None
                else amount / qty
            )
            if it.unit_price is not None and quantize(qty * unit_price, currency) != amount:
                raise ValidationFailed(
                    f"amount {amount} is not quantity x unitPrice ({qty} x {unit_price})",
                    [*where, "amount"],
                )
            if it.unit_price is None:
                unit_price = (amount / qty).quantize(Decimal("0.0001"))
        else:
            unit_price = check_price(it.unit_price, [*where, "unitPrice"])
            amount = quantize(qty * unit_price, currency)
            if amount <= 0:
                raise ValidationFailed("Item amount must be positive", [*where, "unitPrice"])
        if (
            it.service_start_date
            and it.service_end_date
            and it.service_end_date < it.service_start_date
        ):
            raise ValidationFailed(
                "serviceEndDate is before serviceStartDate", [*where, "serviceEndDate"]
            )
        out.append(
            {
                "charge_name": name,
                "quantity": qty,
                "unit_price": unit_price,
                "amount": amount,
                "service_start_date": it.service_start_date,
                "service_end_date": it.service_end_date,
            }
        )
    return out


async def create_standalone_invoice(
    session: AsyncSession, tenant_id: int, data: StandaloneInvoiceData
) -> RowMapping:
    """A standalone invoice, DRAFT or POSTED; its amount is the sum of its items."""
    if data.status not in ("DRAFT", "POSTED"):
        raise ValidationFailed("status must be DRAFT or POSTED", ["status"])
    account = await get_account(session, tenant_id, data.account_number)
    currency = account["currency"]
    if data.currency is not None and data.currency.upper() != currency:
        from billing.errors import CurrencyMismatch

        raise CurrencyMismatch(
            f"Account {account['account_number']} bills in {currency}, not {data.currency}",
            ["currency"],
        )
    items = price_items(data.items, currency)
    due = data.due_date or due_date_for(data.invoice_date, account["payment_term"])
    if due < data.invoice_date:
        raise ValidationFailed("dueDate is before invoiceDate", ["dueDate"])
    writer = MetricsWriter(session, tenant_id)
    if data.status == "POSTED":
        await writer.lock(account["id"])
    number = await _invoice_number(session, tenant_id, data.invoice_number)
    total = sum((i["amount"] for i in items), ZERO)
    async with db_errors():
        invoice_id = (
            await session.execute(
                insert(I)
                .values(
                    tenant_id=tenant_id,
                    invoice_number=number,
                    account_id=account["id"],
                    currency=currency,
                    invoice_date=data.invoice_date,
                    due_date=due,
                    status=data.status,
                    amount=total,
                    balance=total,
                    source="STANDALONE",
                    posted_at=text("now()") if data.status == "POSTED" else None,
                )
                .returning(I.c.id)
            )
        ).scalar_one()
    await session.execute(
        insert(II), [{"tenant_id": tenant_id, "invoice_id": invoice_id, **i} for i in items]
    )
    if data.status == "POSTED":
        writer.add(account["id"], invoice_balance=total, invoice_dates=True)
        await writer.flush()
    return await get_invoice_by_id(session, invoice_id)


async def _invoice_number(session: AsyncSession, tenant_id: int, given: str | None) -> str:
    if given is not None:
        number = given.strip()
        if not number or len(number) > 64:
            raise ValidationFailed("invoiceNumber must be 1-64 characters", ["invoiceNumber"])
        if await find_invoice(session, tenant_id, number) is not None:
            raise Duplicate(f"Invoice number {number} is already used", ["invoiceNumber"])
        return number
    number = await numbering.next_number(session, tenant_id, "invoice")
    while await find_invoice(session, tenant_id, number) is not None:
        number = await numbering.next_number(session, tenant_id, "invoice")
    return number


async def find_invoice(
    session: AsyncSession, tenant_id: int, number: str, *, for_update: bool = False
) -> RowMapping | None:
    """The invoice with that number in the tenant, or None."""
    stmt = select(I).where(I.c.tenant_id == tenant_id, I.c.invoice_number == number)
    if for_update:
        stmt = stmt.with_for_update()
    return (await session.execute(stmt)).mappings().one_or_none()


async def get_invoice(
    session: AsyncSession,
    tenant_id: int,
    number: str,
    *,
    for_update: bool = False,
    field: list[str] | None = None,
) -> RowMapping:
    """The invoice with that number, or NOT_FOUND."""
    row = await find_invoice(session, tenant_id, number, for_update=for_update)
    if row is None:
        raise NotFound(f"Invoice {number} not found", field or ["invoiceNumber"])
    return row


async def get_invoice_by_id(session: AsyncSession, invoice_id: int) -> RowMapping:
    """The invoice with that id (the caller already checked the tenant)."""
    return (await session.execute(select(I).where(I.c.id == invoice_id))).mappings().one()


async def post_invoice(session: AsyncSession, tenant_id: int, number: str) -> RowMapping:
    """DRAFT -> POSTED; the invoice's balance joins the account's metrics."""
    inv = await get_invoice(session, tenant_id, number)
    writer = MetricsWriter(session, tenant_id)
    await writer.lock(inv["account_id"])
    inv = await get_invoice(session, tenant_id, number, for_update=True)
    if inv["status"] != "DRAFT":
        raise InvalidState(f"Invoice {number} is {inv['status']}; only a DRAFT can be posted")
    await session.execute(
        update(I)
        .where(I.c.id == inv["id"])
        .values(status="POSTED", balance=inv["amount"], posted_at=text("now()"))
    )
    writer.add(inv["account_id"], invoice_balance=inv["amount"], invoice_dates=True)
    await writer.flush()
    return await get_invoice_by_id(session, inv["id"])


async def unpost_invoice(session: AsyncSession, tenant_id: int, number: str) -> RowMapping:
    """POSTED -> DRAFT, refused while anything is applied to the invoice or a memo was
    made from it."""
    inv = await get_invoice(session, tenant_id, number)
    writer = MetricsWriter(session, tenant_id)
    await writer.lock(inv["account_id"])
    inv = await get_invoice(session, tenant_id, number, for_update=True)
    if inv["status"] != "POSTED":
        raise InvalidState(
            f"Invoice {number} is {inv['status']}; only a POSTED one can be unposted"
        )
    applied = (
        await session.execute(select(AP.c.id).where(AP.c.invoice_id == inv["id"]).limit(1))
    ).first()
    if applied is not None or inv["balance"] != inv["amount"]:
        raise InvalidState(f"Invoice {number} has payments or credits applied; unapply them first")
    memo = (
        await session.execute(
            text(
                "SELECT 1 FROM credit_memo WHERE invoice_id = :i AND status <> 'CANCELED' "
                "UNION ALL SELECT 1 FROM debit_memo WHERE invoice_id = :i AND status <> 'CANCELED' "
                "LIMIT 1"
            ),
            {"i": inv["id"]},
        )
    ).first()
    if memo is not None:
        raise InvalidState(f"Invoice {number} has memos made from it; cancel them first")
    await session.execute(
        update(I).where(I.c.id == inv["id"]).values(status="DRAFT", posted_at=None)
    )
    writer.add(inv["account_id"], invoice_balance=-inv["balance"], invoice_dates=True)
    await writer.flush()
    return await get_invoice_by_id(session, inv["id"])


async def cancel_invoice(session: AsyncSession, tenant_id: int, number: str) -> RowMapping:
    """DRAFT -> CANCELED (posted invoices are unposted first); moves no metric."""
    inv = await get_invoice(session, tenant_id, number, for_update=True)
    if inv["status"] != "DRAFT":
        raise InvalidState(f"Invoice {number} is {inv['status']}; only a DRAFT can be canceled")
    await session.execute(
        update(I).where(I.c.id == inv["id"]).values(status="CANCELED", balance=ZERO)
    )
    # Billed periods go back to the subscriptions (bill runs and runBilling set them).
    await session.execute(
        text(
            """
            UPDATE subscription_charge c
            SET charged_through_date = CASE WHEN x.had_null THEN NULL ELSE x.prev END
            FROM (SELECT subscription_charge_id AS cid, min(previous_charged_through_date) AS prev,
                         bool_or(previous_charged_through_date IS NULL) AS had_null
                  FROM invoice_item WHERE invoice_id = :i AND subscription_charge_id IS NOT NULL
                  GROUP BY subscription_charge_id) x
            WHERE c.id = x.cid
            """
        ),
        {"i": inv["id"]},
    )
    return await get_invoice_by_id(session, inv["id"])


async def invoice_items(
    session: AsyncSession, invoice_ids: list[int]
) -> dict[int, list[RowMapping]]:
    """Items per invoice, in insertion order (DataLoader batch)."""
    out: dict[int, list[RowMapping]] = {i: [] for i in invoice_ids}
    if invoice_ids:
        res = await session.execute(
            select(II).where(II.c.invoice_id.in_(invoice_ids)).order_by(II.c.id)
        )
        for r in res.mappings():
            out[r["invoice_id"]].append(r)
    return out


async def invoices_of_account(
    session: AsyncSession,
    account_id: int,
    status: str | None,
    first: int | None,
    after: str | None,
) -> Page:
    """An account's invoices, optionally of one status."""
    stmt = select(I).where(I.c.account_id == account_id)
    if status:
        stmt = stmt.where(I.c.status == status)
    return await paginate(session, stmt, I.c.id, first, after)
