"""The facts a subscription-only order keeps between orders (billing.orders.facts): an order
whose accounts and rate plans the process holds is one statement; whatever a kept fact says,
the order is written from what the database holds (a catalog edit, a new charge, a wrong
account), and numbers already taken are refused with nothing written."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import asyncpg
import pytest
from sqlalchemy import text

from billing import metrics as met
from billing.errors import Duplicate
from billing.orders import create_subscription_order, decode_order
from billing.orders.facts import Facts, OrderAccount, OrderFacts
from billing.orders.new_subscriptions import WRITE_ORDER
from db.pg import asyncpg_dsn
from tests.helpers import Gql
from tests.order_helpers import make_account, make_catalog


class Counting:
    """An asyncpg connection that counts the statements sent through it."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn
        self.statements = 0

    async def fetch(self, query: str, *args: Any) -> list[asyncpg.Record]:
        self.statements += 1
        return await self.conn.fetch(query, *args)

    async def fetchrow(self, query: str, *args: Any) -> asyncpg.Record | None:
        self.statements += 1
        return await self.conn.fetchrow(query, *args)

    async def fetchval(self, query: str, *args: Any) -> Any:
        self.statements += 1
        return await self.conn.fetchval(query, *args)


@pytest.fixture
async def conn(database_url: str) -> AsyncIterator[Counting]:
    raw = await asyncpg.connect(asyncpg_dsn(database_url))
    try:
        yield Counting(raw)
    finally:
        await raw.close()


@pytest.fixture
async def gql(sessionmaker: Any, tenant: Any) -> Gql:
    g = Gql(sessionmaker, tenant.id)
    await make_catalog(g)
    await make_account(g, "K")
    await make_account(g, "L")
    return g


def _order(account: str, *, number: str | None = None, order_number: str | None = None) -> Any:
    sub: dict[str, Any] = {
        "order_actions": [
            {"create_subscription": {"rate_plans": [{"product_rate_plan_number": "PRP-BASIC"}]}}
        ]
    }
    if number:
        sub["subscription_number"] = number
    data: dict[str, Any] = {
        "existing_account_number": account,
        "order_date": "2026-03-01",
        "subscriptions": [sub],
    }
    if order_number:
        data["order_number"] = order_number
    return decode_order(data)


async def _charges(
    sessionmaker: Any, tenant_id: int, subscription_number: str
) -> list[tuple[str, Decimal]]:
    async with sessionmaker() as s:
        rows = await s.execute(
            text(
                "SELECT sc.name, sc.price FROM subscription_charge sc "
                "JOIN subscription s ON s.id = sc.subscription_id "
                "WHERE s.tenant_id = :t AND s.subscription_number = :n "
                "ORDER BY sc.product_rate_plan_charge_id"
            ),
            {"t": tenant_id, "n": subscription_number},
        )
        return [(r[0], r[1]) for r in rows]


async def _exact(sessionmaker: Any, tenant_id: int, number: str) -> Decimal:
    """The account's contractedMrr, checked equal to a recompute from its documents."""
    async with sessionmaker() as s:
        account_id = (
            await s.execute(
                text("SELECT id FROM account WHERE tenant_id = :t AND account_number = :n"),
                {"t": tenant_id, "n": number},
            )
        ).scalar_one()
        stored = await met.stored_metrics(s, account_id)
        assert stored.values() == (await met.recompute(s, account_id)).values()
        return stored.contracted_mrr


async def test_kept_facts_make_one_statement_and_a_catalog_edit_is_written_as_it_is_now(
    gql: Gql, conn: Counting, sessionmaker: Any, tenant: Any
) -> None:
    kept = OrderFacts()
    first = await create_subscription_order(conn, tenant.id, _order("K"), kept)
    assert conn.statements == 2  # the facts, then the write
    second = await create_subscription_order(conn, tenant.id, _order("K"), kept)
    assert conn.statements == 3  # the write alone
    assert first.row.subscription_numbers != second.row.subscription_numbers
    assert await _exact(sessionmaker, tenant.id, "K") == Decimal("80")

    # The catalog changes behind the process's back: the kept plan is stale.
    async with sessionmaker.begin() as s:
        await s.execute(
            text(
                "UPDATE product_rate_plan_charge SET list_price = 45 "
                "WHERE tenant_id = :t AND charge_number = 'PRPC-PLATFORM'"
            ),
            {"t": tenant.id},
        )
    third = await create_subscription_order(conn, tenant.id, _order("K"), kept)
    assert conn.statements == 6  # refused write, the facts again, the write
    (number,) = third.row.subscription_numbers
    assert await _charges(sessionmaker, tenant.id, number) == [
        ("Platform", Decimal("45")),
        ("Seats", Decimal("10")),
        ("Setup", Decimal("100")),
    ]
    assert await _exact(sessionmaker, tenant.id, "K") == Decimal("80") + Decimal("55")

    # A charge added to the plan is part of the next order.
    async with sessionmaker.begin() as s:
        await s.execute(
            text(
                "INSERT INTO product_rate_plan_charge (tenant_id, rate_plan_id, charge_number, "
                "name, charge_type, charge_model, list_price, billing_period, billing_timing, "
                "default_quantity) "
                "SELECT tenant_id, rate_plan_id, 'PRPC-SUPPORT', 'Support', charge_type, "
                "charge_model, 5, billing_period, billing_timing, default_quantity "
                "FROM product_rate_plan_charge "
                "WHERE tenant_id = :t AND charge_number = 'PRPC-PLATFORM'"
            ),
            {"t": tenant.id},
        )
    fourth = await create_subscription_order(conn, tenant.id, _order("K"), kept)
    (number,) = fourth.row.subscription_numbers
    assert [name for name, _ in await _charges(sessionmaker, tenant.id, number)] == [
        "Platform",
        "Seats",
        "Setup",
        "Support",
    ]
    assert await _exact(sessionmaker, tenant.id, "K") == Decimal("80") + Decimal("55") + 60


async def test_a_wrong_kept_account_never_receives_the_order(
    gql: Gql, conn: Counting, sessionmaker: Any, tenant: Any
) -> None:
    kept = OrderFacts()
    await create_subscription_order(conn, tenant.id, _order("L"), kept)
    other = (await _facts_of(kept, tenant.id, "L")).accounts["L"]
    # A fact that lies: K's number with L's id and currency.
    kept.keep(tenant.id, Facts({"K": OrderAccount(other.id, "K", other.currency)}, {}))
    done = await create_subscription_order(conn, tenant.id, _order("K"), kept)
    assert done.row.account_number == "K"
    assert await _exact(sessionmaker, tenant.id, "K") == Decimal("40")
    assert await _exact(sessionmaker, tenant.id, "L") == Decimal("40")
    async with sessionmaker() as s:
        owners = await s.execute(
            text(
                "SELECT a.account_number, count(*) FROM subscription s "
                "JOIN account a ON a.id = s.owner_account_id WHERE s.tenant_id = :t "
                "GROUP BY 1 ORDER BY 1"
            ),
            {"t": tenant.id},
        )
        assert [tuple(r) for r in owners] == [("K", 1), ("L", 1)]


async def _facts_of(kept: OrderFacts, tenant_id: int, number: str) -> Facts:
    facts = kept.known(tenant_id, {number}, {"PRP-BASIC"})
    assert facts is not None
    return facts


async def test_numbers_already_taken_are_refused_by_the_one_statement_write(
    gql: Gql, conn: Counting, sessionmaker: Any, tenant: Any
) -> None:
    kept = OrderFacts()
    await create_subscription_order(
        conn, tenant.id, _order("K", number="SUB-1", order_number="ORD-1"), kept
    )
    before = conn.statements
    with pytest.raises(Duplicate) as sub_taken:
        await create_subscription_order(conn, tenant.id, _order("K", number="SUB-1"), kept)
    assert sub_taken.value.field == [
        "subscriptions",
        "0",
        "orderActions",
        "0",
        "subscriptionNumber",
    ]
    with pytest.raises(Duplicate) as order_taken:
        await create_subscription_order(conn, tenant.id, _order("K", order_number="ORD-1"), kept)
    assert order_taken.value.field == ["orderNumber"]
    assert conn.statements == before + 2  # each refused by the write itself, kept facts
    async with sessionmaker() as s:
        counts = await s.execute(
            text(
                "SELECT (SELECT count(*) FROM sales_order WHERE tenant_id = :t), "
                "(SELECT count(*) FROM subscription WHERE tenant_id = :t)"
            ),
            {"t": tenant.id},
        )
        assert tuple(counts.one()) == (1, 1)
    assert await _exact(sessionmaker, tenant.id, "K") == Decimal("40")


class Explaining(Counting):
    """Counting, and the order statement run once more before it, rolled back, as a generic
    plan without index scans, its plan sent back by auto_explain: the plan a connection keeps
    when the statistics lag behind a growing table (billing.orders.new_subscriptions, on
    WRITE_ORDER's number checks). A plan made for the order's own parameters (an EXPLAIN)
    would fold the checks away and show nothing."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        super().__init__(conn)
        self.plans: list[dict[str, Any]] = []

    async def fetchrow(self, query: str, *args: Any) -> asyncpg.Record | None:
        if query == WRITE_ORDER:
            notices: list[str] = []

            def listen(_: Any, message: Any) -> None:
                notices.append(message.message)

            self.conn.add_log_listener(listen)
            try:
                async with self.conn.transaction():
                    await self.conn.execute(
                        "LOAD 'auto_explain';"
                        "SET LOCAL auto_explain.log_min_duration = 0;"
                        "SET LOCAL auto_explain.log_analyze = on;"
                        "SET LOCAL auto_explain.log_format = json;"
                        "SET LOCAL auto_explain.log_level = notice;"
                        "SET LOCAL plan_cache_mode = force_generic_plan;"
                        "SET LOCAL enable_indexscan = off;"
                        "SET LOCAL enable_bitmapscan = off"
                    )
                    await self.conn.fetchrow(query, *args)
                    raise Rollback
            except Rollback:
                pass
            except asyncpg.InsufficientPrivilegeError:
                # The embedded server of the default run is the suite's superuser.
                pytest.skip("LOAD 'auto_explain' needs a superuser on this server")
            finally:
                self.conn.remove_log_listener(listen)
            (plan,) = [n for n in notices if "acc_locked" in n]
            self.plans.append(json.loads(plan[plan.index("{") :])["Plan"])
        return await super().fetchrow(query, *args)


class Rollback(Exception):
    """Leaves a transaction block rolled back."""


def scans_run(plan: dict[str, Any], table: str) -> list[int]:
    """The loops of each scan of ``table`` in a plan (0: never executed)."""
    found = []
    if plan.get("Relation Name") == table and plan["Node Type"] != "ModifyTable":
        found.append(plan["Actual Loops"])
    for child in plan.get("Plans", []):
        found += scans_run(child, table)
    return found


async def test_numbers_are_looked_up_only_when_the_order_gives_them(
    gql: Gql, sessionmaker: Any, tenant: Any, database_url: str
) -> None:
    raw = await asyncpg.connect(asyncpg_dsn(database_url))
    try:
        conn = Explaining(raw)
        kept = OrderFacts()
        await create_subscription_order(conn, tenant.id, _order("K"), kept)
        await create_subscription_order(
            conn, tenant.id, _order("K", number="SUB-9", order_number="ORD-9"), kept
        )
    finally:
        await raw.close()
    numbered_by_the_server, given = conn.plans
    # Scanning subscription or sales_order costs their whole size under such a plan.
    assert scans_run(numbered_by_the_server, "subscription") == [0]
    assert scans_run(numbered_by_the_server, "sales_order") == [0]
    assert scans_run(given, "subscription") == [1]
    assert scans_run(given, "sales_order") == [1]


def test_kept_facts_are_bounded_oldest_first() -> None:
    kept = OrderFacts(max_accounts=2, max_plans=1)
    for number in ("A", "B", "C"):
        kept.keep(1, Facts({number: OrderAccount(ord(number), number, "USD")}, {}))
    assert kept.known(1, {"A"}, set()) is None
    assert kept.known(1, {"B", "C"}, set()) is not None
    assert kept.known(2, {"B"}, set()) is None  # tenants apart
    assert len(kept) == 2
