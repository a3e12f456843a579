"""The product catalog: products, rate plans and their charges, numbered for orders."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncSession

from billing import numbering
from billing.errors import NotFound, ValidationFailed
from billing.money import check_price, check_quantity
from billing.pages import Page, paginate
from db.models import Product, ProductRatePlan, ProductRatePlanCharge, table_of
from db.statuses import BillingTiming, ChargeModel, ChargeType

product_t = table_of(Product)
rate_plan_t = table_of(ProductRatePlan)
rate_plan_charge_t = table_of(ProductRatePlanCharge)

CHARGE_TYPES = tuple(ChargeType)
CHARGE_MODELS = tuple(ChargeModel)
BILLING_PERIODS: dict[str, int] = {"MONTH": 1, "QUARTER": 3, "SEMI_ANNUAL": 6, "ANNUAL": 12}
BILLING_TIMINGS = tuple(BillingTiming)


@dataclass
class ChargeData:
    name: str
    charge_type: str
    charge_model: str
    list_price: Any
    billing_period: str = "MONTH"
    billing_timing: str = BillingTiming.IN_ADVANCE
    default_quantity: Any = Decimal(1)
    uom: str | None = None
    product_rate_plan_charge_number: str | None = None


@dataclass
class RatePlanData:
    name: str
    charges: list[ChargeData] = field(default_factory=list)
    product_rate_plan_number: str | None = None


@dataclass
class ProductData:
    name: str
    rate_plans: list[RatePlanData] = field(default_factory=list)
    product_number: str | None = None
    sku: str | None = None
    description: str | None = None


def _choice(value: str, allowed: Any, path: list[str]) -> str:
    if value not in allowed:
        raise ValidationFailed(f"{path[-1]} must be one of {', '.join(allowed)}", path)
    return value


async def _number(
    session: AsyncSession,
    tenant_id: int,
    kind: str,
    given: str | None,
    table: Any,
    column: Any,
    path: list[str],
) -> str:
    number = numbering.caller_number(given, path)
    if number is None:
        return await numbering.next_number(session, tenant_id, kind)
    found = await session.execute(
        select(table.c.id).where(table.c.tenant_id == tenant_id, column == number)
    )
    if found.first() is not None:
        from billing.errors import Duplicate

        raise Duplicate(f"{number} is already used", path)
    return number


async def create_product(session: AsyncSession, tenant_id: int, data: ProductData) -> int:
    """Create a product with its rate plans and charges; every plan and charge gets a number."""
    if not data.name.strip():
        raise ValidationFailed("name is required", ["name"])
    number = await _number(
        session,
        tenant_id,
        "product",
        data.product_number,
        product_t,
        product_t.c.product_number,
        ["productNumber"],
    )
    product_id = (
        await session.execute(
            insert(product_t)
            .values(
                tenant_id=tenant_id,
                product_number=number,
                name=data.name.strip(),
                sku=data.sku,
                description=data.description,
            )
            .returning(product_t.c.id)
        )
    ).scalar_one()
    seen: set[str] = set()
    for i, rp in enumerate(data.rate_plans):
        path = ["ratePlans", str(i)]
        if not rp.name.strip():
            raise ValidationFailed("name is required", [*path, "name"])
        rp_number = await _number(
            session,
            tenant_id,
            "rate_plan",
            rp.product_rate_plan_number,
            rate_plan_t,
            rate_plan_t.c.rate_plan_number,
            [*path, "productRatePlanNumber"],
        )
        if rp_number in seen:
            raise ValidationFailed(f"{rp_number} is given twice", [*path, "productRatePlanNumber"])
        seen.add(rp_number)
        rp_id = (
            await session.execute(
                insert(rate_plan_t)
                .values(
                    tenant_id=tenant_id,
                    product_id=product_id,
                    rate_plan_number=rp_number,
                    name=rp.name.strip(),
                )
                .returning(rate_plan_t.c.id)
            )
        ).scalar_one()
        for j, c in enumerate(rp.charges):
            cpath = [*path, "charges", str(j)]
            if not c.name.strip():
                raise ValidationFailed("name is required", [*cpath, "name"])
            values = {
                "tenant_id": tenant_id,
                "rate_plan_id": rp_id,
                "name": c.name.strip(),
                "charge_type": _choice(c.charge_type, CHARGE_TYPES, [*cpath, "chargeType"]),
                "charge_model": _choice(c.charge_model, CHARGE_MODELS, [*cpath, "chargeModel"]),
                "list_price": check_price(c.list_price, [*cpath, "listPrice"]),
                "billing_period": _choice(
                    c.billing_period, BILLING_PERIODS, [*cpath, "billingPeriod"]
                ),
                "billing_timing": _choice(
                    c.billing_timing, BILLING_TIMINGS, [*cpath, "billingTiming"]
                ),
                "default_quantity": check_quantity(c.default_quantity, [*cpath, "defaultQuantity"]),
                "uom": c.uom,
            }
            c_number = await _number(
                session,
                tenant_id,
                "rate_plan_charge",
                c.product_rate_plan_charge_number,
                rate_plan_charge_t,
                rate_plan_charge_t.c.charge_number,
                [*cpath, "productRatePlanChargeNumber"],
            )
            if c_number in seen:
                raise ValidationFailed(
                    f"{c_number} is given twice", [*cpath, "productRatePlanChargeNumber"]
                )
            seen.add(c_number)
            await session.execute(
                insert(rate_plan_charge_t).values(charge_number=c_number, **values)
            )
    return int(product_id)


@dataclass
class ProductTree:
    product: RowMapping
    rate_plans: list[tuple[RowMapping, list[RowMapping]]]


async def product_trees(session: AsyncSession, rows: list[RowMapping]) -> list[ProductTree]:
    """Products with their rate plans and charges, loaded in two queries."""
    ids = [r["id"] for r in rows]
    plans: dict[int, list[RowMapping]] = {i: [] for i in ids}
    charges: dict[int, list[RowMapping]] = {}
    if ids:
        res = await session.execute(
            select(rate_plan_t).where(rate_plan_t.c.product_id.in_(ids)).order_by(rate_plan_t.c.id)
        )
        for r in res.mappings():
            plans[r["product_id"]].append(r)
            charges[r["id"]] = []
        if charges:
            res = await session.execute(
                select(rate_plan_charge_t)
                .where(rate_plan_charge_t.c.rate_plan_id.in_(list(charges)))
                .order_by(rate_plan_charge_t.c.id)
            )
            for r in res.mappings():
                charges[r["rate_plan_id"]].append(r)
    return [ProductTree(r, [(p, charges[p["id"]]) for p in plans[r["id"]]]) for r in rows]


async def get_product(session: AsyncSession, tenant_id: int, product_id: int) -> ProductTree:
    """One product with its plans and charges."""
    res = await session.execute(
        select(product_t).where(product_t.c.tenant_id == tenant_id, product_t.c.id == product_id)
    )
    row = res.mappings().one_or_none()
    if row is None:
        raise NotFound(f"Product {product_id} not found")
    return (await product_trees(session, [row]))[0]


async def list_products(
    session: AsyncSession, tenant_id: int, first: int | None, after: str | None
) -> Page:
    """Products of the tenant in creation order."""
    return await paginate(
        session,
        select(product_t).where(product_t.c.tenant_id == tenant_id),
        product_t.c.id,
        first,
        after,
    )


async def get_rate_plan(
    session: AsyncSession, tenant_id: int, number: str, path: list[str]
) -> tuple[RowMapping, list[RowMapping]]:
    """A catalog rate plan by its number, with its charges, or NOT_FOUND."""
    res = await session.execute(
        select(rate_plan_t).where(
            rate_plan_t.c.tenant_id == tenant_id, rate_plan_t.c.rate_plan_number == number
        )
    )
    plan = res.mappings().one_or_none()
    if plan is None:
        raise NotFound(f"Product rate plan {number} not found", path)
    res = await session.execute(
        select(rate_plan_charge_t)
        .where(rate_plan_charge_t.c.rate_plan_id == plan["id"])
        .order_by(rate_plan_charge_t.c.id)
    )
    return plan, list(res.mappings())
