"""Catalog and subscription rows for rating tests, inserted directly with SQLAlchemy Core
(the order API is another slice's)."""

from __future__ import annotations

import itertools
from datetime import date
from decimal import Decimal
from typing import Any

from sqlalchemy import insert, text
from sqlalchemy.ext.asyncio import AsyncSession

from db.models import (
    Account,
    AccountMetrics,
    Product,
    ProductRatePlan,
    ProductRatePlanCharge,
    Subscription,
    SubscriptionCharge,
    SubscriptionRatePlan,
    SubscriptionSuspension,
)

_seq = itertools.count(1)
PERIOD_MONTHS = {"MONTH": 1, "QUARTER": 3, "SEMI_ANNUAL": 6, "ANNUAL": 12}


async def account(
    s: AsyncSession,
    tenant_id: int,
    *,
    bcd: int = 1,
    partner: bool = False,
    currency: str = "USD",
    batch: str = "Batch1",
    number: str | None = None,
) -> dict[str, Any]:
    n = number or f"RA{next(_seq):07d}"
    aid = (
        await s.execute(
            insert(Account.__table__)
            .values(
                tenant_id=tenant_id,
                account_number=n,
                name=n,
                currency=currency,
                bill_cycle_day=bcd,
                payment_term="NET_30",
                batch=batch,
                partner_account=partner,
                bill_to={"firstName": "A", "lastName": "B"},
                sold_to={"firstName": "A", "lastName": "B"},
                status="ACTIVE",
            )
            .returning(Account.__table__.c.id)
        )
    ).scalar_one()
    await s.execute(insert(AccountMetrics.__table__).values(account_id=aid, tenant_id=tenant_id))
    return {"id": aid, "account_number": n}


async def plan(s: AsyncSession, tenant_id: int) -> tuple[int, int]:
    """A product and rate plan; returns (rate plan id, rate plan charge id)."""
    k = next(_seq)
    pid = (
        await s.execute(
            insert(Product.__table__)
            .values(tenant_id=tenant_id, product_number=f"PC{k}", name="Fleet")
            .returning(Product.__table__.c.id)
        )
    ).scalar_one()
    rpid = (
        await s.execute(
            insert(ProductRatePlan.__table__)
            .values(tenant_id=tenant_id, product_id=pid, rate_plan_number=f"PRP{k}", name="Basic")
            .returning(ProductRatePlan.__table__.c.id)
        )
    ).scalar_one()
    cid = (
        await s.execute(
            insert(ProductRatePlanCharge.__table__)
            .values(
                tenant_id=tenant_id,
                rate_plan_id=rpid,
                charge_number=f"PRPC{k}",
                name="Seat",
                charge_type="RECURRING",
                charge_model="PER_UNIT",
                list_price=Decimal(10),
            )
            .returning(ProductRatePlanCharge.__table__.c.id)
        )
    ).scalar_one()
    return rpid, cid


async def subscription(
    s: AsyncSession,
    tenant_id: int,
    owner_id: int,
    invoice_owner_id: int | None = None,
    *,
    start: date,
    charges: list[dict[str, Any]],
    plan_ids: tuple[int, int] | None = None,
    cancelled: date | None = None,
    separately: bool = False,
    currency: str = "USD",
) -> dict[str, Any]:
    """A subscription with its charges. Each charge dict: name, charge_type, charge_model,
    price, quantity, billing_period, billing_timing, start, end, segment, charge_number."""
    rpid, prpcid = plan_ids or await plan(s, tenant_id)
    k = next(_seq)
    sid = (
        await s.execute(
            insert(Subscription.__table__)
            .values(
                tenant_id=tenant_id,
                subscription_number=f"S{tenant_id}-{k}",
                owner_account_id=owner_id,
                invoice_owner_account_id=invoice_owner_id or owner_id,
                currency=currency,
                status="CANCELLED" if cancelled else "ACTIVE",
                contract_effective_date=start,
                term_start_date=start,
                cancelled_date=cancelled,
                invoice_separately=separately,
                auto_renew=False,
                term_type="TERMED",
                version=1,
                mrr=0,
            )
            .returning(Subscription.__table__.c.id)
        )
    ).scalar_one()
    srp = (
        await s.execute(
            insert(SubscriptionRatePlan.__table__)
            .values(
                tenant_id=tenant_id,
                subscription_id=sid,
                product_rate_plan_id=rpid,
                name="Basic",
                effective_start_date=start,
            )
            .returning(SubscriptionRatePlan.__table__.c.id)
        )
    ).scalar_one()
    ids = []
    for n, c in enumerate(charges):
        ids.append(
            (
                await s.execute(
                    insert(SubscriptionCharge.__table__)
                    .values(
                        **charge_row(tenant_id, sid, srp, prpcid, c, start, f"C{tenant_id}-{k}-{n}")
                    )
                    .returning(SubscriptionCharge.__table__.c.id)
                )
            ).scalar_one()
        )
    return {"id": sid, "charge_ids": ids}


def charge_row(
    tenant_id: int, sid: int, srp: int, prpcid: int, c: dict[str, Any], start: date, number: str
) -> dict[str, Any]:
    price = Decimal(c.get("price", "10"))
    qty = Decimal(c.get("quantity", "1"))
    model = c.get("charge_model", "FLAT_FEE")
    period = c.get("billing_period", "MONTH")
    ctype = c.get("charge_type", "RECURRING")
    mrr = (
        (price * qty if model == "PER_UNIT" else price) / PERIOD_MONTHS[period]
        if ctype == "RECURRING"
        else 0
    )
    return {
        "tenant_id": tenant_id,
        "subscription_id": sid,
        "subscription_rate_plan_id": srp,
        "product_rate_plan_charge_id": prpcid,
        "charge_number": c.get("charge_number", number),
        "segment": c.get("segment", 1),
        "is_last_segment": c.get("is_last_segment", True),
        "name": c.get("name", "Seat"),
        "charge_type": ctype,
        "charge_model": model,
        "price": price,
        "quantity": qty,
        "billing_period": period,
        "billing_timing": c.get("billing_timing", "IN_ADVANCE"),
        "effective_start_date": c.get("start", start),
        "effective_end_date": c.get("end"),
        "charged_through_date": c.get("charged_through"),
        "mrr": Decimal(mrr).quantize(Decimal("0.000001")),
    }


async def suspend(s: AsyncSession, tenant_id: int, sid: int, start: date, end: date | None) -> None:
    await s.execute(
        insert(SubscriptionSuspension.__table__).values(
            tenant_id=tenant_id, subscription_id=sid, start_date=start, end_date=end
        )
    )


async def items_of(s: AsyncSession, invoice_id: int) -> list[tuple[Any, ...]]:
    res = await s.execute(
        text(
            "SELECT charge_name, service_start_date, service_end_date, quantity, unit_price, "
            "amount FROM invoice_item WHERE invoice_id = :i "
            "ORDER BY subscription_charge_id, service_start_date"
        ),
        {"i": invoice_id},
    )
    return [tuple(r) for r in res]
