"""Payments: creation (applied, unapplied or both), apply and unapply (domain.md, 5 and 6)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from typing import Any

from sqlalchemy import insert, select, text, update
from sqlalchemy.dialects.postgresql import distinct_on
from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncSession

from billing import numbering
from billing.accounts import (
    WRITE_ATTEMPTS,
    account_for_write,
    get_account,
    get_account_by_id,
    locked_account_cte,
)
from billing.applications import TargetAmount, apply, resolve_targets, unapply
from billing.dbutil import db_errors
from billing.errors import (
    AmountExceedsUnapplied,
    CurrencyMismatch,
    InvalidState,
    LockCompetition,
    NotFound,
    ValidationFailed,
)
from billing.metrics import MetricsWriter, Written, metrics_ctes, written
from billing.money import check_amount
from billing.pages import Page, paginate
from db.models import Payment, table_of
from db.pg import Db, connection_of
from db.statuses import PaymentMethod, PaymentStatus

payment_t = table_of(Payment)
METHODS = tuple(PaymentMethod)


@dataclass
class PaymentData:
    account_number: str
    amount: object
    effective_date: date
    method: str = PaymentMethod.OTHER
    currency: str | None = None
    reference: str | None = None
    invoices: list[TargetAmount] = field(default_factory=list)
    debit_memos: list[TargetAmount] = field(default_factory=list)


CREATE_UNAPPLIED_PAYMENT = f"""
WITH {
    locked_account_cte(
        id_param="$1", tenant_param="$2", lock_timeout_param="$3", extra="AND a.currency = $4::text"
    )
},
pay AS (
  INSERT INTO payment (tenant_id, payment_number, account_id, currency, amount, applied_amount,
                       effective_date, method, reference)
  SELECT acc.tenant_id, {numbering.number_sql("payment", "$5")}, acc.id, $4::text,
         $6::numeric, 0, $7::date, $8::text, $9::text
  FROM acc
  ON CONFLICT (tenant_id, payment_number) DO NOTHING
  RETURNING *
),
{metrics_ctes(document="pay", unapplied_payment="$6::numeric")}
SELECT pay.*, EXISTS (SELECT 1 FROM metrics_sync) AS metrics_synced
FROM acc LEFT JOIN pay ON TRUE
"""


def _check_payment(data: PaymentData, account_number: str, currency: str) -> Decimal:
    if data.currency is not None and data.currency.upper() != currency:
        raise CurrencyMismatch(
            f"Account {account_number} uses {currency}, not {data.currency}", ["currency"]
        )
    if data.method not in METHODS:
        raise ValidationFailed(f"Unknown payment method {data.method!r}", ["method"])
    return check_amount(data.amount, currency, ["amount"])


async def create_unapplied_payment(
    db: Db | AsyncSession, tenant_id: int, data: PaymentData
) -> Written:
    """A processed external payment applied to nothing: all of it is unapplied.

    Two round trips: the account is read, then one statement locks it (FOR SHARE), writes
    the payment and moves the metrics the account's way."""
    if data.invoices or data.debit_memos:
        raise ValidationFailed("This payment applies to documents", ["invoices"])
    conn = await connection_of(db)
    for _ in range(WRITE_ATTEMPTS):
        account = await account_for_write(conn, tenant_id, data.account_number)
        amount = _check_payment(data, account.account_number, account.currency)
        async with db_errors():
            row = await conn.fetchrow(
                CREATE_UNAPPLIED_PAYMENT,
                account.id, tenant_id, account.lock_timeout, account.currency,
                numbering.sequence_name(tenant_id, "payment"),
                amount, data.effective_date, data.method, data.reference,
            )  # fmt: skip
        if row is not None and row["id"] is not None:
            return written(db, tenant_id, row, [account.id] if row["metrics_synced"] else [])
    raise LockCompetition("The account changed while the payment was written, please retry")


async def create_payment(session: AsyncSession, tenant_id: int, data: PaymentData) -> Any:
    """A processed external payment; what is not applied stays unapplied on the account."""
    if not data.invoices and not data.debit_memos:
        return (await create_unapplied_payment(session, tenant_id, data)).row
    account = await get_account(session, tenant_id, data.account_number)
    amount = _check_payment(data, account["account_number"], account["currency"])
    writer = MetricsWriter(session, tenant_id)
    await writer.lock(account["id"])
    targets = await resolve_targets(session, tenant_id, account, data.invoices, data.debit_memos)
    wanted = sum((t.amount for t in targets), amount * 0)
    if wanted > amount:
        raise AmountExceedsUnapplied(
            f"Applications total {wanted}, more than the payment's {amount}", ["amount"]
        )
    number = await numbering.next_number(session, tenant_id, "payment")
    async with db_errors():
        payment_id = (
            await session.execute(
                insert(payment_t)
                .values(
                    tenant_id=tenant_id,
                    payment_number=number,
                    account_id=account["id"],
                    currency=account["currency"],
                    amount=amount,
                    applied_amount=wanted,
                    effective_date=data.effective_date,
                    method=data.method,
                    reference=data.reference,
                )
                .returning(payment_t.c.id)
            )
        ).scalar_one()
    await apply(session, tenant_id, "payment", payment_id, targets, writer)
    writer.add(account["id"], unapplied_payment=amount - wanted)
    await writer.flush()
    return await get_payment_by_id(session, payment_id)


async def find_payment(
    session: AsyncSession, tenant_id: int, number: str, *, for_update: bool = False
) -> RowMapping | None:
    """The payment with that number in the tenant, or None."""
    stmt = select(payment_t).where(
        payment_t.c.tenant_id == tenant_id, payment_t.c.payment_number == number
    )
    if for_update:
        stmt = stmt.with_for_update()
    return (await session.execute(stmt)).mappings().one_or_none()


async def get_payment(
    session: AsyncSession, tenant_id: int, number: str, *, for_update: bool = False
) -> RowMapping:
    """The payment with that number, or NOT_FOUND."""
    row = await find_payment(session, tenant_id, number, for_update=for_update)
    if row is None:
        raise NotFound(f"Payment {number} not found", ["paymentNumber"])
    return row


async def get_payment_by_id(session: AsyncSession, payment_id: int) -> RowMapping:
    """The payment with that id (the caller already checked the tenant)."""
    return (
        (await session.execute(select(payment_t).where(payment_t.c.id == payment_id)))
        .mappings()
        .one()
    )


def unapplied(row: RowMapping) -> object:
    """What a payment still has to apply or refund."""
    return row["amount"] - row["applied_amount"] - row["refund_amount"]


async def apply_payment(
    session: AsyncSession,
    tenant_id: int,
    number: str,
    invoices: list[TargetAmount],
    debit_memos: list[TargetAmount],
) -> RowMapping:
    """Apply part of a processed payment's unapplied amount to posted invoices and debit memos."""
    if not invoices and not debit_memos:
        raise ValidationFailed("Name at least one invoice or debit memo", ["invoices"])
    pay = await get_payment(session, tenant_id, number)
    writer = MetricsWriter(session, tenant_id)
    await writer.lock(pay["account_id"])
    pay = await get_payment(session, tenant_id, number, for_update=True)
    if pay["status"] != PaymentStatus.PROCESSED:
        raise InvalidState(f"Payment {number} is {pay['status']}")
    account = await get_account_by_id(session, tenant_id, pay["account_id"])
    targets = await resolve_targets(session, tenant_id, account, invoices, debit_memos)
    total = sum((t.amount for t in targets), pay["amount"] * 0)
    if total > unapplied(pay):  # type: ignore[operator]
        raise AmountExceedsUnapplied(
            f"{total} exceeds the payment's unapplied amount {unapplied(pay)}", ["invoices"]
        )
    await apply(session, tenant_id, "payment", pay["id"], targets, writer)
    await session.execute(
        update(payment_t)
        .where(payment_t.c.id == pay["id"])
        .values(applied_amount=payment_t.c.applied_amount + total)
    )
    writer.add(pay["account_id"], unapplied_payment=-total)
    await writer.flush()
    return await get_payment_by_id(session, pay["id"])


async def unapply_payment(
    session: AsyncSession,
    tenant_id: int,
    number: str,
    invoices: list[TargetAmount],
    debit_memos: list[TargetAmount],
) -> RowMapping:
    """Take applied money back to the payment's unapplied amount."""
    pay = await get_payment(session, tenant_id, number)
    writer = MetricsWriter(session, tenant_id)
    await writer.lock(pay["account_id"])
    pay = await get_payment(session, tenant_id, number, for_update=True)
    if pay["status"] != PaymentStatus.PROCESSED:
        raise InvalidState(f"Payment {number} is {pay['status']}")
    account = await get_account_by_id(session, tenant_id, pay["account_id"])
    total = await unapply(
        session, tenant_id, "payment", pay["id"], account, invoices, debit_memos, writer
    )
    await session.execute(
        update(payment_t)
        .where(payment_t.c.id == pay["id"])
        .values(applied_amount=payment_t.c.applied_amount - total)
    )
    writer.add(pay["account_id"], unapplied_payment=total)
    await writer.flush()
    return await get_payment_by_id(session, pay["id"])


async def payments_of_account(
    session: AsyncSession, account_id: int, status: str | None, first: int | None, after: str | None
) -> Page:
    """An account's payments, optionally of one status."""
    stmt = select(payment_t).where(payment_t.c.account_id == account_id)
    if status:
        stmt = stmt.where(payment_t.c.status == status)
    return await paginate(session, stmt, payment_t.c.id, first, after)


async def cancel_payment(session: AsyncSession, tenant_id: int, number: str) -> RowMapping:
    """PROCESSED -> CANCELED, only while nothing is applied or refunded; its unapplied
    amount leaves the account's metrics."""
    pay = await get_payment(session, tenant_id, number)
    writer = MetricsWriter(session, tenant_id)
    await writer.lock(pay["account_id"])
    pay = await get_payment(session, tenant_id, number, for_update=True)
    if pay["status"] != PaymentStatus.PROCESSED:
        raise InvalidState(
            f"Payment {number} is {pay['status']}; only PROCESSED payments are canceled"
        )
    if pay["applied_amount"] != 0 or pay["refund_amount"] != 0:
        raise InvalidState(f"Payment {number} is applied or refunded; unapply it first")
    await session.execute(
        update(payment_t).where(payment_t.c.id == pay["id"]).values(status=PaymentStatus.CANCELED)
    )
    writer.add(pay["account_id"], unapplied_payment=-pay["amount"])
    await writer.flush()
    return await get_payment_by_id(session, pay["id"])


async def last_payments(session: AsyncSession, account_ids: list[int]) -> dict[int, RowMapping]:
    """Each account's latest processed payment (by effective date, then creation)."""
    if not account_ids:
        return {}
    stmt = (
        select(payment_t)
        .where(
            payment_t.c.account_id.in_(account_ids), payment_t.c.status == PaymentStatus.PROCESSED
        )
        .ext(distinct_on(payment_t.c.account_id))
        .order_by(payment_t.c.account_id, payment_t.c.effective_date.desc(), payment_t.c.id.desc())
    )
    return {r["account_id"]: r for r in (await session.execute(stmt)).mappings()}


async def payment_number_of(session: AsyncSession, payment_id: int | None) -> str | None:
    """The business number of a payment a document points at (None when it points at none)."""
    if payment_id is None:
        return None
    res = await session.execute(
        text("SELECT payment_number FROM payment WHERE id = :i"), {"i": payment_id}
    )
    return str(res.scalar_one())
