"""Invoices: standalone creation, post, unpost, cancel (domain.md, 5 and 6)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import bindparam, select, text, update
from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncSession

from billing import numbering
from billing.accounts import (
    PAYMENT_TERMS,
    WRITE_ATTEMPTS,
    AccountForWrite,
    account_for_write,
    locked_account_cte,
)
from billing.dbutil import db_errors
from billing.errors import (
    CurrencyMismatch,
    Duplicate,
    InvalidState,
    LimitExceeded,
    LockCompetition,
    NotFound,
    ValidationFailed,
)
from billing.metrics import MetricsWriter, Written, metrics_ctes, written
from billing.money import (
    PRICE_PLACES,
    ROUNDING,
    ZERO,
    check_amount,
    check_price,
    check_quantity,
    quantize,
)
from billing.pages import Page, paginate
from db.models import Application, Invoice, InvoiceItem, table_of
from db.pg import Db, connection_of
from db.statuses import InvoiceStatus

invoice_t = table_of(Invoice)
invoice_item_t = table_of(InvoiceItem)
application_t = table_of(Application)

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
    status: str = InvoiceStatus.DRAFT
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
                unit_price = (amount / qty).quantize(PRICE_PLACES, rounding=ROUNDING)
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


CREATE_STANDALONE_INVOICE = f"""
WITH {
    locked_account_cte(
        id_param="$1",
        tenant_param="$2",
        lock_timeout_param="$3",
        extra="AND a.currency = $4::text AND a.payment_term = $5::text",
    )
},
drawn AS (
  SELECT coalesce($6::text, {numbering.number_sql("invoice", "$7")}) AS invoice_number FROM acc
),
inv AS (
  INSERT INTO invoice (tenant_id, invoice_number, account_id, currency, invoice_date, due_date,
                       status, amount, balance, source, posted_at)
  SELECT acc.tenant_id, drawn.invoice_number, acc.id, $4::text, $8::date, $9::date,
         $10::text, $11::numeric, $11::numeric,
         'STANDALONE', CASE WHEN $10::text = 'POSTED' THEN now() END
  FROM acc, drawn
  ON CONFLICT (tenant_id, invoice_number) DO NOTHING
  RETURNING *
),
items AS (
  INSERT INTO invoice_item (tenant_id, invoice_id, charge_name, quantity, unit_price, amount,
                            service_start_date, service_end_date)
  SELECT inv.tenant_id, inv.id, i.charge_name, i.quantity, i.unit_price, i.amount, i.ss, i.se
  FROM inv, unnest($12::text[], $13::numeric[], $14::numeric[], $15::numeric[], $16::date[],
                   $17::date[]) WITH ORDINALITY AS i(charge_name, quantity, unit_price, amount,
                                                     ss, se, n)
  ORDER BY i.n
),
{
    metrics_ctes(
        document="inv",
        when="$10::text = 'POSTED'",
        invoice_balance="$11::numeric",
        posted_invoice_date="$8::date",
    )
}
SELECT inv.*, EXISTS (SELECT 1 FROM metrics_sync) AS metrics_synced
FROM acc LEFT JOIN inv ON TRUE
"""


@dataclass(frozen=True)
class CheckedInvoice:
    """A standalone invoice that passed its rules on its account, ready to be written."""

    given_number: str | None  # the caller's invoiceNumber, or None to draw one
    due_date: date
    items: list[dict[str, Any]]  # priced (price_items)
    amount: Decimal  # the sum of the items


def check_standalone_invoice(
    data: StandaloneInvoiceData, account: AccountForWrite
) -> CheckedInvoice:
    """The rules of a standalone invoice on the account it is for (createStandaloneInvoice and
    each row of createStandaloneInvoices): DRAFT or POSTED, the account's currency, priced
    items, a due date (from the account's payment term unless given) not before its date."""
    if data.status not in (InvoiceStatus.DRAFT, InvoiceStatus.POSTED):
        raise ValidationFailed("status must be DRAFT or POSTED", ["status"])
    given = numbering.caller_number(data.invoice_number, ["invoiceNumber"])
    currency = account.currency
    if data.currency is not None and data.currency.upper() != currency:
        raise CurrencyMismatch(
            f"Account {account.account_number} bills in {currency}, not {data.currency}",
            ["currency"],
        )
    items = price_items(data.items, currency)
    due = data.due_date or due_date_for(data.invoice_date, account.payment_term)
    if due < data.invoice_date:
        raise ValidationFailed("dueDate is before invoiceDate", ["dueDate"])
    return CheckedInvoice(given, due, items, sum((i["amount"] for i in items), ZERO))


async def create_standalone_invoice(
    db: Db | AsyncSession, tenant_id: int, data: StandaloneInvoiceData
) -> Written:
    """A standalone invoice, DRAFT or POSTED; its amount is the sum of its items.

    Two round trips: the account is read, then one statement locks it (FOR SHARE), writes
    the invoice and its items and moves the metrics the account's way."""
    conn = await connection_of(db)
    for _ in range(WRITE_ATTEMPTS):
        account = await account_for_write(conn, tenant_id, data.account_number)
        inv = check_standalone_invoice(data, account)
        given, items = inv.given_number, inv.items
        async with db_errors():
            row = await conn.fetchrow(
                CREATE_STANDALONE_INVOICE,
                account.id, tenant_id, account.lock_timeout, account.currency,
                account.payment_term, given, numbering.sequence_name(tenant_id, "invoice"),
                data.invoice_date, inv.due_date, data.status, inv.amount,
                [i["charge_name"] for i in items], [i["quantity"] for i in items],
                [i["unit_price"] for i in items], [i["amount"] for i in items],
                [i["service_start_date"] for i in items], [i["service_end_date"] for i in items],
            )  # fmt: skip
        if row is None:
            continue  # the account changed between the read and the write: read it again
        if row["id"] is None:
            if given is not None:
                raise Duplicate(f"Invoice number {given} is already used", ["invoiceNumber"])
            continue  # a generated number a caller had already given: draw the next
        return written(db, tenant_id, row, [account.id] if row["metrics_synced"] else [])
    raise LockCompetition("The account changed while the invoice was written, please retry")


async def find_invoice(
    session: AsyncSession, tenant_id: int, number: str, *, for_update: bool = False
) -> RowMapping | None:
    """The invoice with that number in the tenant, or None."""
    stmt = select(invoice_t).where(
        invoice_t.c.tenant_id == tenant_id, invoice_t.c.invoice_number == number
    )
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
    return (
        (await session.execute(select(invoice_t).where(invoice_t.c.id == invoice_id)))
        .mappings()
        .one()
    )


async def post_invoice(session: AsyncSession, tenant_id: int, number: str) -> RowMapping:
    """DRAFT -> POSTED; the invoice's balance joins the account's metrics."""
    inv = await get_invoice(session, tenant_id, number)
    writer = MetricsWriter(session, tenant_id)
    await writer.lock(inv["account_id"])
    inv = await get_invoice(session, tenant_id, number, for_update=True)
    if inv["status"] != InvoiceStatus.DRAFT:
        raise InvalidState(f"Invoice {number} is {inv['status']}; only a DRAFT can be posted")
    await session.execute(
        update(invoice_t)
        .where(invoice_t.c.id == inv["id"])
        .values(status=InvoiceStatus.POSTED, balance=inv["amount"], posted_at=text("now()"))
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
    if inv["status"] != InvoiceStatus.POSTED:
        raise InvalidState(
            f"Invoice {number} is {inv['status']}; only a POSTED one can be unposted"
        )
    applied = (
        await session.execute(
            select(application_t.c.id).where(application_t.c.invoice_id == inv["id"]).limit(1)
        )
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
        update(invoice_t)
        .where(invoice_t.c.id == inv["id"])
        .values(status=InvoiceStatus.DRAFT, posted_at=None)
    )
    writer.add(inv["account_id"], invoice_balance=-inv["balance"], invoice_dates=True)
    await writer.flush()
    return await get_invoice_by_id(session, inv["id"])


async def cancel_invoice(session: AsyncSession, tenant_id: int, number: str) -> RowMapping:
    """DRAFT -> CANCELED (posted invoices are unposted first); moves no metric."""
    inv = await get_invoice(session, tenant_id, number, for_update=True)
    if inv["status"] != InvoiceStatus.DRAFT:
        raise InvalidState(f"Invoice {number} is {inv['status']}; only a DRAFT can be canceled")
    await session.execute(
        update(invoice_t)
        .where(invoice_t.c.id == inv["id"])
        .values(status=InvoiceStatus.CANCELED, balance=ZERO)
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


# Built once: a statement built per call with .in_(values) leaves its new bind parameter in
# a reference cycle (SQLAlchemy's _cloned_set holds it), for the garbage collector.
ITEMS_OF_INVOICES = (
    select(invoice_item_t)
    .where(invoice_item_t.c.invoice_id.in_(bindparam("invoice_ids", expanding=True)))
    .order_by(invoice_item_t.c.id)
)


async def invoice_items(
    session: AsyncSession, invoice_ids: list[int]
) -> dict[int, list[RowMapping]]:
    """Items per invoice, in insertion order (DataLoader batch)."""
    out: dict[int, list[RowMapping]] = {i: [] for i in invoice_ids}
    if invoice_ids:
        res = await session.execute(ITEMS_OF_INVOICES, {"invoice_ids": invoice_ids})
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
    stmt = select(invoice_t).where(invoice_t.c.account_id == account_id)
    if status:
        stmt = stmt.where(invoice_t.c.status == status)
    return await paginate(session, stmt, invoice_t.c.id, first, after)


async def invoice_numbers(session: AsyncSession, ids: list[int | None]) -> dict[int, str]:
    """Business numbers of invoices by id; None and ids of no invoice are left out."""
    wanted = [i for i in set(ids) if i is not None]
    if not wanted:
        return {}
    res = await session.execute(
        text("SELECT id, invoice_number FROM invoice WHERE id = ANY(:i)"), {"i": wanted}
    )
    return {r[0]: r[1] for r in res}


async def invoice_number_of(session: AsyncSession, invoice_id: int | None) -> str | None:
    """The business number of an invoice a document points at (None when it points at none)."""
    if invoice_id is None:
        return None
    res = await session.execute(
        text("SELECT invoice_number FROM invoice WHERE id = :i"), {"i": invoice_id}
    )
    return str(res.scalar_one())


async def invoice_numbers_of_order(session: AsyncSession, order_id: int) -> list[str]:
    """Business numbers of the invoices an order billed, in the order they were created."""
    res = await session.execute(
        text("SELECT invoice_number FROM invoice WHERE order_id = :o ORDER BY id"),
        {"o": order_id},
    )
    return [str(n) for n in res.scalars()]
