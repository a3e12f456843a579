"""Parallel orders on one reseller: partner accounts never fail, ordinary accounts either
succeed or answer LOCK_COMPETITION, and contractedMrr always equals the oracle."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from billing.metrics import recompute, refresh_tenant, stored_metrics
from tests.helpers import Gql
from tests.order_helpers import CREATE_ORDER, create_action, make_account, make_catalog, order

N = 200
EACH = Decimal("40")  # 30 flat + 1 seat x 10


@pytest.fixture
def gql(sessionmaker: Any, tenant: Any) -> Gql:
    return Gql(sessionmaker, tenant.id)


async def account_id(sessionmaker: Any, tenant_id: int, number: str) -> int:
    async with sessionmaker() as s:
        return int(
            (
                await s.execute(
                    text("SELECT id FROM account WHERE tenant_id = :t AND account_number = :n"),
                    {"t": tenant_id, "n": number},
                )
            ).scalar_one()
        )


async def count(sessionmaker: Any, tenant_id: int, table: str) -> int:
    async with sessionmaker() as s:
        return int(
            (
                await s.execute(
                    text(f"SELECT count(*) FROM {table} WHERE tenant_id = :t"), {"t": tenant_id}
                )
            ).scalar_one()
        )


async def stored_and_oracle(sessionmaker: Any, ident: int) -> tuple[Decimal, Decimal]:
    async with sessionmaker() as s:
        return (await stored_metrics(s, ident)).contracted_mrr, (
            await recompute(s, ident)
        ).contracted_mrr


async def parallel_orders(gql: Gql, n: int) -> list[dict[str, Any]]:
    calls = [
        gql(CREATE_ORDER, input=order("R", [{"orderActions": [create_action("E", "R")]}]))
        for _ in range(n)
    ]
    return [d["createOrder"] for d in await asyncio.gather(*calls)]


async def test_parallel_orders_on_partner_accounts_all_succeed(
    gql: Gql, sessionmaker: Any, engine: AsyncEngine, tenant: Any
) -> None:
    await make_catalog(gql)
    await make_account(gql, "R", partner=True)
    await make_account(gql, "E", partner=True)
    results = await parallel_orders(gql, N)
    assert [r["errors"] for r in results] == [[]] * N
    assert len({r["order"]["orderNumber"] for r in results}) == N
    assert len({r["subscriptions"][0]["subscriptionNumber"] for r in results}) == N
    e = await account_id(sessionmaker, tenant.id, "E")
    stored, oracle = await stored_and_oracle(sessionmaker, e)
    assert (stored, oracle) == (Decimal(0), EACH * N)  # deferred until the refresh
    await refresh_tenant(engine, tenant.id)
    stored, oracle = await stored_and_oracle(sessionmaker, e)
    assert stored == oracle == EACH * N


@pytest.mark.parametrize("reseller_partner", [False, True], ids=["ordinary", "distributor"])
async def test_parallel_orders_on_ordinary_owner_succeed_or_compete(
    gql: Gql, sessionmaker: Any, tenant: Any, reseller_partner: bool
) -> None:
    await make_catalog(gql)
    await make_account(gql, "R", partner=reseller_partner)
    await make_account(gql, "E")
    # A short lock wait keeps the test quick; competition is an allowed outcome anyway.
    await gql("mutation { updateTenantSettings(input: {lockWait: 500}) { errors { code } } }")
    results = await parallel_orders(gql, N)
    ok = [r for r in results if r["errors"] == []]
    failed = [r for r in results if r["errors"]]
    assert all(
        r["order"] is None
        and r["errors"]
        == [{"__typename": "LockCompetitionError", "code": "LOCK_COMPETITION", "field": None}]
        for r in failed
    )
    assert ok, "at least one order must get the lock"
    # Nothing half-written: exactly the successful orders exist, and the synchronous metric is
    # exact.
    assert await count(sessionmaker, tenant.id, "sales_order") == len(ok)
    assert await count(sessionmaker, tenant.id, "subscription") == len(ok)
    assert await count(sessionmaker, tenant.id, "subscription_charge") == 3 * len(ok)
    stored, oracle = await stored_and_oracle(
        sessionmaker, await account_id(sessionmaker, tenant.id, "E")
    )
    assert stored == oracle == EACH * len(ok)


async def test_concurrent_owner_transfers_between_partner_accounts(
    gql: Gql, sessionmaker: Any, engine: AsyncEngine, tenant: Any
) -> None:
    await make_catalog(gql)
    await make_account(gql, "P1", partner=True)
    await make_account(gql, "P2", partner=True)
    groups = [{"orderActions": [create_action("P1", "P1", number=f"A-{i}")]} for i in range(20)]
    groups += [
        {"orderActions": [create_action("P2", "P2", number=f"B-{i}", seats="3")]} for i in range(10)
    ]
    data = await gql(CREATE_ORDER, input=order("P1", groups))
    assert data["createOrder"]["errors"] == []

    def transfer(sub: str, dest: str) -> Any:
        return gql(
            CREATE_ORDER,
            input=order(
                dest,
                [
                    {
                        "subscriptionNumber": sub,
                        "orderActions": [
                            {
                                "ownerTransfer": {
                                    "destinationAccountNumber": dest,
                                    "destinationInvoiceAccountNumber": dest,
                                }
                            }
                        ],
                    }
                ],
            ),
        )

    # A-* go to P2 (each twice, concurrently), B-* (60/month each) come to P1.
    calls = [transfer(f"A-{i}", "P2") for i in range(20)] * 2 + [
        transfer(f"B-{i}", "P1") for i in range(10)
    ]
    results = await asyncio.gather(*calls)
    assert [r["createOrder"]["errors"] for r in results] == [[]] * 50
    await refresh_tenant(engine, tenant.id)
    p1 = await stored_and_oracle(sessionmaker, await account_id(sessionmaker, tenant.id, "P1"))
    p2 = await stored_and_oracle(sessionmaker, await account_id(sessionmaker, tenant.id, "P2"))
    assert p1 == (Decimal(600), Decimal(600))
    assert p2 == (Decimal(800), Decimal(800))
