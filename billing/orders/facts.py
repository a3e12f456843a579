"""What a subscription-only order reads before it writes: its accounts and catalog rate plans.

Both change rarely (an account's number and currency never do; the API only ever adds to
the catalog), so each API process keeps what its orders read in an ``OrderFacts``, and an
order whose accounts and rate plans are all known there is written in one round trip
instead of two. Nothing kept is trusted: the write statement
(billing.orders.new_subscriptions.WRITE_ORDER) checks every fact the order was built from
against the rows it writes beside (an account's id, number and currency; the row versions
of a rate plan and of each of its charges, and that the plan has no other charges) and
writes nothing when one no longer holds. The order then forgets those facts, reads them
again and is built again.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from billing.errors import NotFound
from db.pg import Db

# Rows one process keeps of each kind. A miss costs one round trip, so the bound only has
# to keep memory small: a dropped fact is read again by the next order that needs it.
MAX_ACCOUNTS = 20_000
MAX_PLANS = 5_000


@dataclass(frozen=True, slots=True)
class OrderAccount:
    """An account as an order writes for it: what never changes after its creation."""

    id: int
    account_number: str
    currency: str


@dataclass(frozen=True, slots=True)
class CatalogPlan:
    """A catalog rate plan with its charges (rows of product_rate_plan_charge as JSON
    objects, ordered by id), and the row versions (PostgreSQL's xmin, which every UPDATE of a
    row changes) the write statement compares to tell whether they are still current."""

    id: int
    rate_plan_number: str
    name: str
    version: int
    charges: tuple[dict[str, Any], ...]
    charge_versions: tuple[tuple[int, int], ...]  # (charge id, row version)


@dataclass(frozen=True)
class Facts:
    """The accounts and rate plans one order names, by number."""

    accounts: dict[str, OrderAccount]
    plans: dict[str, CatalogPlan]

    def account(self, number: str, path: list[str]) -> OrderAccount:
        found = self.accounts.get(number)
        if found is None:
            raise NotFound(f"Account {number} not found", path)
        return found


ORDER_FACTS = """
SELECT
  (SELECT coalesce(json_agg(json_build_object(
            'id', a.id, 'account_number', a.account_number, 'currency', a.currency)), '[]')
   FROM account a WHERE a.tenant_id = $1 AND a.account_number = ANY($2::text[]))::text
    AS accounts,
  (SELECT coalesce(json_agg(json_build_object(
            'id', p.id, 'rate_plan_number', p.rate_plan_number, 'name', p.name,
            'version', p.xmin::text::bigint,
            'charges', (SELECT coalesce(json_agg(json_build_object(
                                  'row', row_to_json(c), 'version', c.xmin::text::bigint)
                                ORDER BY c.id), '[]')
                        FROM product_rate_plan_charge c WHERE c.rate_plan_id = p.id))), '[]')
   FROM product_rate_plan p
   WHERE p.tenant_id = $1 AND p.rate_plan_number = ANY($3::text[]))::text AS plans
"""


async def read_facts(db: Db, tenant_id: int, accounts: set[str], plans: set[str]) -> Facts:
    """The order's accounts and rate plans as the database holds them, in one round trip;
    a number not found is simply absent."""
    row = await db.fetchrow(ORDER_FACTS, tenant_id, sorted(accounts), sorted(plans))
    assert row is not None
    found_plans = {}
    for p in json.loads(row["plans"], parse_float=Decimal):
        charges = tuple(c["row"] for c in p["charges"])
        found_plans[p["rate_plan_number"]] = CatalogPlan(
            id=p["id"],
            rate_plan_number=p["rate_plan_number"],
            name=p["name"],
            version=p["version"],
            charges=charges,
            charge_versions=tuple((c["row"]["id"], c["version"]) for c in p["charges"]),
        )
    return Facts(
        accounts={
            a["account_number"]: OrderAccount(a["id"], a["account_number"], a["currency"])
            for a in json.loads(row["accounts"])
        },
        plans=found_plans,
    )


class OrderFacts:
    """The accounts and rate plans this process's orders have read, by tenant and number,
    each kind bounded (the oldest kept is dropped first). One per API process
    (resolvers.context.Services); see the module's docstring for why a stale fact is safe."""

    def __init__(self, max_accounts: int = MAX_ACCOUNTS, max_plans: int = MAX_PLANS) -> None:
        self._accounts: dict[tuple[int, str], OrderAccount] = {}
        self._plans: dict[tuple[int, str], CatalogPlan] = {}
        self._max_accounts = max_accounts
        self._max_plans = max_plans

    def known(self, tenant_id: int, accounts: set[str], plans: set[str]) -> Facts | None:
        """The facts of an order naming these accounts and plans, if every one is kept."""
        found_accounts = {}
        for number in accounts:
            account = self._accounts.get((tenant_id, number))
            if account is None:
                return None
            found_accounts[number] = account
        found_plans = {}
        for number in plans:
            plan = self._plans.get((tenant_id, number))
            if plan is None:
                return None
            found_plans[number] = plan
        return Facts(found_accounts, found_plans)

    def keep(self, tenant_id: int, facts: Facts) -> None:
        for number, account in facts.accounts.items():
            _put(self._accounts, (tenant_id, number), account, self._max_accounts)
        for number, plan in facts.plans.items():
            _put(self._plans, (tenant_id, number), plan, self._max_plans)

    def forget(self, tenant_id: int, facts: Facts) -> None:
        """Drop what one order found stale (the statement does not say which fact it was)."""
        for number in facts.accounts:
            self._accounts.pop((tenant_id, number), None)
        for number in facts.plans:
            self._plans.pop((tenant_id, number), None)

    def __len__(self) -> int:
        return len(self._accounts) + len(self._plans)


def _put(kept: dict[Any, Any], key: Any, value: Any, limit: int) -> None:
    if key not in kept and len(kept) >= limit:
        del kept[next(iter(kept))]  # dicts keep insertion order: the oldest goes
    kept[key] = value


async def order_facts(
    db: Db,
    kept: OrderFacts | None,
    tenant_id: int,
    accounts: set[str],
    plans: set[str],
) -> Facts:
    """The order's facts, from ``kept`` when it holds them all, else read (and kept)."""
    if kept is not None:
        facts = kept.known(tenant_id, accounts, plans)
        if facts is not None:
            return facts
    facts = await read_facts(db, tenant_id, accounts, plans)
    if kept is not None:
        kept.keep(tenant_id, facts)
    return facts


def versions(plans: Iterable[CatalogPlan]) -> tuple[list[int], list[int], list[int], list[int]]:
    """The row versions an order's statement checks: plan ids and versions, and the ids and
    versions of every charge of those plans (each plan once)."""
    seen: dict[int, CatalogPlan] = {p.id: p for p in plans}
    charges = [cv for p in seen.values() for cv in p.charge_versions]
    return (
        list(seen),
        [p.version for p in seen.values()],
        [c for c, _ in charges],
        [v for _, v in charges],
    )
