"""Refunds from a payment's or a posted credit memo's unapplied amount (domain.md, 5 and 6)."""

from __future__ import annotations

from datetime import date

from sqlalchemy import insert, select, update
from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncSession

from billing import numbering
from billing.dbutil import db_errors
from billing.errors import AmountExceedsUnapplied, InvalidState, NotFound, ValidationFailed
from billing.memos import credit_memo_t, credit_unapplied, get_memo
from billing.metrics import MetricsWriter
from billing.money import check_amount
from billing.payments import get_payment, payment_t, unapplied
from db.models import Refund, table_of
from db.statuses import MemoKind, MemoStatus, PaymentMethod, PaymentStatus

refund_t = table_of(Refund)
METHODS = tuple(PaymentMethod)


async def _insert(
    session: AsyncSession,
    tenant_id: int,
    account_id: int,
    amount: object,
    refund_date: date | None,
    method: str,
    **source: int,
) -> RowMapping:
    number = await numbering.next_number(session, tenant_id, "refund")
    async with db_errors():
        refund_id = (
            await session.execute(
                insert(refund_t)
                .values(
                    tenant_id=tenant_id,
                    refund_number=number,
                    account_id=account_id,
                    amount=amount,
                    refund_date=refund_date or date.today(),
                    method=method,
                    **source,
                )
                .returning(refund_t.c.id)
            )
        ).scalar_one()
    return await get_refund_by_id(session, refund_id)


def _check_method(method: str) -> None:
    if method not in METHODS:
        raise ValidationFailed(f"Unknown refund method {method!r}", ["method"])


async def refund_payment(
    session: AsyncSession,
    tenant_id: int,
    number: str,
    amount: object,
    *,
    refund_date: date | None = None,
    method: str = PaymentMethod.OTHER,
) -> RowMapping:
    """Give back part of a processed payment's unapplied amount."""
    _check_method(method)
    pay = await get_payment(session, tenant_id, number)
    value = check_amount(amount, pay["currency"], ["amount"])
    writer = MetricsWriter(session, tenant_id)
    await writer.lock(pay["account_id"])
    pay = await get_payment(session, tenant_id, number, for_update=True)
    if pay["status"] != PaymentStatus.PROCESSED:
        raise InvalidState(
            f"Payment {number} is {pay['status']}; only PROCESSED payments are refunded"
        )
    if value > unapplied(pay):  # type: ignore[operator]
        raise AmountExceedsUnapplied(
            f"{value} exceeds the payment's unapplied amount {unapplied(pay)}", ["amount"]
        )
    await session.execute(
        update(payment_t)
        .where(payment_t.c.id == pay["id"])
        .values(refund_amount=payment_t.c.refund_amount + value)
    )
    refund = await _insert(
        session, tenant_id, pay["account_id"], value, refund_date, method, payment_id=pay["id"]
    )
    writer.add(pay["account_id"], unapplied_payment=-value)
    await writer.flush()
    return refund


async def refund_credit_memo(
    session: AsyncSession,
    tenant_id: int,
    number: str,
    amount: object,
    *,
    refund_date: date | None = None,
    method: str = PaymentMethod.OTHER,
) -> RowMapping:
    """Pay out part of a posted credit memo's unapplied amount."""
    _check_method(method)
    memo = await get_memo(session, tenant_id, MemoKind.CREDIT_MEMO, number)
    value = check_amount(amount, memo["currency"], ["amount"])
    writer = MetricsWriter(session, tenant_id)
    await writer.lock(memo["account_id"])
    memo = await get_memo(session, tenant_id, MemoKind.CREDIT_MEMO, number, for_update=True)
    if memo["status"] != MemoStatus.POSTED:
        raise InvalidState(
            f"Credit memo {number} is {memo['status']}; only POSTED memos are refunded"
        )
    if value > credit_unapplied(memo):
        raise AmountExceedsUnapplied(
            f"{value} exceeds the credit memo's unapplied amount {credit_unapplied(memo)}",
            ["amount"],
        )
    await session.execute(
        update(credit_memo_t)
        .where(credit_memo_t.c.id == memo["id"])
        .values(refund_amount=credit_memo_t.c.refund_amount + value)
    )
    refund = await _insert(
        session,
        tenant_id,
        memo["account_id"],
        value,
        refund_date,
        method,
        credit_memo_id=memo["id"],
    )
    writer.add(memo["account_id"], unapplied_credit_memo=-value)
    await writer.flush()
    return refund


async def get_refund_by_id(session: AsyncSession, refund_id: int) -> RowMapping:
    """The refund with that id (the caller already checked the tenant)."""
    return (
        (await session.execute(select(refund_t).where(refund_t.c.id == refund_id))).mappings().one()
    )


async def find_refund(session: AsyncSession, tenant_id: int, number: str) -> RowMapping | None:
    """The refund with that number in the tenant, or None."""
    res = await session.execute(
        select(refund_t).where(
            refund_t.c.tenant_id == tenant_id, refund_t.c.refund_number == number
        )
    )
    return res.mappings().one_or_none()


async def get_refund(session: AsyncSession, tenant_id: int, number: str) -> RowMapping:
    """The refund with that number, or NOT_FOUND."""
    row = await find_refund(session, tenant_id, number)
    if row is None:
        raise NotFound(f"Refund {number} not found", ["refundNumber"])
    return row
