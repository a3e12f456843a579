"""Reads of orders: one order, the actions of orders, the orders of an account."""

from __future__ import annotations

from sqlalchemy import select, text
from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncSession

from billing.pages import Page, paginate
from db.models import Order, table_of

SO = table_of(Order)


async def get_order(
    session: AsyncSession, tenant_id: int, *, order_id: int | None = None, number: str | None = None
) -> RowMapping | None:
    """An order with its account number, by id or number."""
    stmt = select(
        SO,
        text(
            "(SELECT account_number FROM account WHERE id = sales_order.account_id) "
            "AS account_number"
        ),
    ).where(SO.c.tenant_id == tenant_id)
    stmt = (
        stmt.where(SO.c.id == order_id)
        if order_id is not None
        else stmt.where(SO.c.order_number == number)
    )
    return (await session.execute(stmt)).mappings().one_or_none()


async def order_actions(session: AsyncSession, order_ids: list[int]) -> dict[int, list[RowMapping]]:
    """The actions of orders, in sequence, with their subscription numbers."""
    out: dict[int, list[RowMapping]] = {i: [] for i in order_ids}
    if order_ids:
        res = await session.execute(
            text(
                "SELECT oa.*, s.subscription_number FROM order_action oa JOIN subscription s "
                "ON s.id = oa.subscription_id WHERE oa.order_id = ANY(:i) "
                "ORDER BY oa.order_id, oa.sequence"
            ),
            {"i": order_ids},
        )
        for r in res.mappings():
            out[r["order_id"]].append(r)
    return out


async def orders_of_account(
    session: AsyncSession, account_id: int, first: int | None, after: str | None
) -> Page:
    """Orders placed on the account, oldest first."""
    stmt = select(
        SO,
        text(
            "(SELECT account_number FROM account WHERE id = sales_order.account_id) "
            "AS account_number"
        ),
    ).where(SO.c.account_id == account_id)
    return await paginate(session, stmt, SO.c.id, first, after)
