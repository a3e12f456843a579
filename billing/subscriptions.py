"""Subscriptions: charge MRR, the subscription's MRR, its contractedMrr contribution, reads."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from sqlalchemy import select, text, update
from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncSession

from billing.catalog import BILLING_PERIODS
from billing.money import MRR_PLACES, ROUNDING, ZERO
from billing.pages import Page, paginate
from db.models import Subscription, SubscriptionCharge, SubscriptionRatePlan, table_of
from db.statuses import ChargeModel, ChargeType, SubscriptionStatus

subscription_t = table_of(Subscription)
subscription_rate_plan_t = table_of(SubscriptionRatePlan)
subscription_charge_t = table_of(SubscriptionCharge)
# billing/orders' names for these tables, until it moves to the names above.
S, SRP, SC = subscription_t, subscription_rate_plan_t, subscription_charge_t

COUNTED_STATUSES = (SubscriptionStatus.ACTIVE, SubscriptionStatus.SUSPENDED)


def charge_mrr(
    charge_type: str, charge_model: str, price: Decimal, quantity: Decimal, billing_period: str
) -> Decimal:
    """MRR of one charge segment: price x quantity (PER_UNIT) or price (FLAT_FEE) over the
    months of its billing period, 6 places; one-time and usage charges count 0."""
    if charge_type != ChargeType.RECURRING:
        return ZERO.quantize(MRR_PLACES)
    amount = price * quantity if charge_model == ChargeModel.PER_UNIT else price
    return (amount / BILLING_PERIODS[billing_period]).quantize(MRR_PLACES, rounding=ROUNDING)


async def refresh_subscription_mrr(session: AsyncSession, subscription_id: int) -> Decimal:
    """Set subscription.mrr to the sum of the mrr of its latest recurring segments that are
    not ended, and return it."""
    res = await session.execute(
        text(
            "SELECT coalesce(sum(mrr), 0) FROM subscription_charge WHERE subscription_id = :s "
            "AND is_last_segment AND effective_end_date IS NULL AND charge_type = 'RECURRING'"
        ),
        {"s": subscription_id},
    )
    mrr = Decimal(res.scalar_one()).quantize(MRR_PLACES)
    await session.execute(
        update(subscription_t).where(subscription_t.c.id == subscription_id).values(mrr=mrr)
    )
    return mrr


def contribution(sub: dict[str, Any] | RowMapping | None) -> tuple[int | None, Decimal]:
    """(subscription owner, what the subscription adds to its contractedMrr) (domain.md, 6)."""
    if sub is None:
        return None, ZERO
    counted = sub["status"] in COUNTED_STATUSES and sub["cancelled_date"] is None
    return sub["owner_account_id"], (Decimal(sub["mrr"]) if counted else ZERO)


def subscription_select() -> Any:
    """Subscriptions with their owners' account numbers."""
    owner = text(
        "(SELECT account_number FROM account WHERE id = subscription.owner_account_id) "
        "AS owner_account_number"
    )
    inv = text(
        "(SELECT account_number FROM account "
        "WHERE id = subscription.invoice_owner_account_id) AS invoice_owner_account_number"
    )
    return select(subscription_t, owner, inv)


@dataclass
class SubscriptionTree:
    subscription: RowMapping
    rate_plans: list[tuple[RowMapping, list[RowMapping]]]


async def subscription_trees(
    session: AsyncSession, rows: list[RowMapping]
) -> list[SubscriptionTree]:
    """Subscriptions with their rate plans and charge segments, in two queries."""
    ids = [r["id"] for r in rows]
    plans: dict[int, list[RowMapping]] = {i: [] for i in ids}
    charges: dict[int, list[RowMapping]] = {}
    if ids:
        res = await session.execute(
            text(
                "SELECT srp.*, prp.rate_plan_number AS product_rate_plan_number "
                "FROM subscription_rate_plan srp "
                "JOIN product_rate_plan prp ON prp.id = srp.product_rate_plan_id "
                "WHERE srp.subscription_id = ANY(:i) ORDER BY srp.id"
            ),
            {"i": ids},
        )
        for r in res.mappings():
            plans[r["subscription_id"]].append(r)
            charges[r["id"]] = []
        if charges:
            res = await session.execute(
                text(
                    "SELECT sc.*, prpc.charge_number AS product_rate_plan_charge_number "
                    "FROM subscription_charge sc JOIN product_rate_plan_charge prpc "
                    "ON prpc.id = sc.product_rate_plan_charge_id "
                    "WHERE sc.subscription_rate_plan_id = ANY(:i) "
                    "ORDER BY sc.charge_number, sc.segment"
                ),
                {"i": list(charges)},
            )
            for r in res.mappings():
                charges[r["subscription_rate_plan_id"]].append(r)
    return [SubscriptionTree(r, [(p, charges[p["id"]]) for p in plans[r["id"]]]) for r in rows]


async def find_subscription(
    session: AsyncSession, tenant_id: int, number: str
) -> RowMapping | None:
    """The subscription with that number, or None."""
    res = await session.execute(
        subscription_select().where(
            subscription_t.c.tenant_id == tenant_id, subscription_t.c.subscription_number == number
        )
    )
    return res.mappings().one_or_none()


async def subscriptions_by_ids(
    session: AsyncSession, tenant_id: int, ids: list[int]
) -> list[RowMapping]:
    """Subscriptions by id, in id order."""
    if not ids:
        return []
    res = await session.execute(
        subscription_select()
        .where(subscription_t.c.tenant_id == tenant_id, subscription_t.c.id.in_(ids))
        .order_by(subscription_t.c.id)
    )
    return list(res.mappings())


async def subscriptions_by_numbers(
    session: AsyncSession, tenant_id: int, numbers: list[str]
) -> list[RowMapping]:
    """Subscriptions by number, in the order of ``numbers``."""
    if not numbers:
        return []
    res = await session.execute(
        subscription_select().where(
            subscription_t.c.tenant_id == tenant_id,
            subscription_t.c.subscription_number.in_(numbers),
        )
    )
    found = {r["subscription_number"]: r for r in res.mappings()}
    return [found[n] for n in numbers if n in found]


async def subscriptions_of_account(
    session: AsyncSession, account_id: int, role: str, first: int | None, after: str | None
) -> Page:
    """Subscriptions the account owns (OWNER) or is invoice owner of (INVOICE_OWNER)."""
    col = (
        subscription_t.c.owner_account_id
        if role == "OWNER"
        else subscription_t.c.invoice_owner_account_id
    )
    return await paginate(
        session, subscription_select().where(col == account_id), subscription_t.c.id, first, after
    )


async def subscription_numbers(session: AsyncSession, ids: list[int]) -> dict[int, str]:
    """Business numbers of subscriptions by id; ids of no subscription are left out."""
    res = await session.execute(
        text("SELECT id, subscription_number FROM subscription WHERE id = ANY(:i)"), {"i": ids}
    )
    return {r[0]: r[1] for r in res}


async def charge_numbers(session: AsyncSession, ids: list[int]) -> dict[int, str]:
    """Business numbers of subscription charge segments by id; unknown ids are left out."""
    res = await session.execute(
        text("SELECT id, charge_number FROM subscription_charge WHERE id = ANY(:i)"), {"i": ids}
    )
    return {r[0]: r[1] for r in res}
