"""Root fields of the product catalog."""

from __future__ import annotations

from typing import Any

import strawberry
from sqlalchemy.ext.asyncio import AsyncSession

from billing import catalog as cat
from resolvers import convert_orders as co
from resolvers.base import idempotent, read
from resolvers.convert import connection
from schema.catalog import CreateProductInput, Product, ProductPayload
from schema.common import Connection


def product_data(i: CreateProductInput) -> cat.ProductData:
    return cat.ProductData(
        name=i.name,
        product_number=i.product_number,
        sku=i.sku,
        description=i.description,
        rate_plans=[
            cat.RatePlanData(
                name=rp.name,
                product_rate_plan_number=rp.product_rate_plan_number,
                charges=[
                    cat.ChargeData(
                        name=c.name,
                        charge_type=c.charge_type.value,
                        charge_model=c.charge_model.value,
                        list_price=c.list_price,
                        billing_period=c.billing_period.value,
                        billing_timing=c.billing_timing.value,
                        default_quantity=c.default_quantity,
                        uom=c.uom,
                        product_rate_plan_charge_number=c.product_rate_plan_charge_number,
                    )
                    for c in rp.charges
                ],
            )
            for rp in i.rate_plans
        ],
    )


@strawberry.type
class CatalogQueries:
    @strawberry.field(description="Products of the catalog, in creation order.")
    async def products(
        self, info: strawberry.Info, first: int | None = None, after: str | None = None
    ) -> Connection[Product]:
        async def go(s: AsyncSession) -> Connection[Product]:
            page = await cat.list_products(s, info.context.tenant_id, first, after)
            trees = {t.product["id"]: t for t in await cat.product_trees(s, page.rows)}
            return connection(page, lambda r: co.product(trees[r["id"]]))

        return await read(info.context, go)


@strawberry.type
class CatalogMutations:
    @strawberry.mutation(description="Create a product with its rate plans and charges.")
    async def create_product(
        self, info: strawberry.Info, input: CreateProductInput
    ) -> ProductPayload:
        ctx = info.context
        payload = co.plain(input)
        payload.pop("idempotency_key", None)

        async def work(s: AsyncSession) -> Any:
            product_id = await cat.create_product(s, ctx.tenant_id, product_data(input))
            return await cat.get_product(s, ctx.tenant_id, product_id)

        async def replay(s: AsyncSession, stored: dict[str, Any]) -> Any:
            return await cat.get_product(s, ctx.tenant_id, stored["id"])

        def remember(t: Any) -> dict[str, Any]:
            return {"id": t.product["id"]}

        tree, errors = await idempotent(
            ctx,
            input.idempotency_key,
            "createProduct",
            payload,
            work,
            remember,
            replay,
        )
        return ProductPayload(product=co.product(tree) if tree else None, errors=errors)
