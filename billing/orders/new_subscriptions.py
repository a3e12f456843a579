"""Orders that only create subscriptions, written in one statement.

Most orders, and all of a migration's, create new subscriptions and touch nothing that
exists. Such an order needs no row of its own to lock but its accounts', so it is written in
one statement that locks the accounts FOR SHARE, checks that the accounts and rate plans it
was built from are current and that no number it was given is taken, inserts the order,
subscriptions, rate plans, charges and actions on ids and numbers drawn inside it, and moves
contractedMrr the accounts' way (billing.metrics.metrics_ctes). Before it, one read of the
accounts and rate plans, unless the process already holds them (billing.orders.facts): one
round trip or two. Every other order goes through
billing.orders.create.create_order; both take the same decoded OrderInput and check it with the
same functions.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from billing import numbering
from billing.accounts import WRITE_ATTEMPTS
from billing.dbutil import db_errors
from billing.errors import CurrencyMismatch, Duplicate, LockCompetition, NotFound
from billing.metrics import Written, metrics_ctes, written
from billing.money import MRR_PLACES
from billing.orders.checks import add_months, plan_rows, rate_plan_number, subscription_terms
from billing.orders.data import (
    Action,
    CreateSubscription,
    OrderInput,
    OrderSubscription,
    Terms,
    payload,
)
from billing.orders.facts import CatalogPlan, Facts, OrderAccount, OrderFacts, order_facts, versions
from db.locks import lock_timeout_sql, lock_waits_end_cte, write_locks_sql
from db.pg import Db, connection_of
from db.statuses import ChargeType, TermType

CREATE = CreateSubscription.action_type
# The tenant's lock wait, read by the statement that waits (db.locks.write_locks_sql).
TENANT_LOCK_TIMEOUT = f"(SELECT {lock_timeout_sql('t.lock_wait_ms')} FROM tenant t WHERE t.id = $1)"


def takes(order: OrderInput) -> bool:
    """Whether an order only creates subscriptions on an existing account, one action each,
    without billing: the orders this module writes."""
    if order.new_account is not None or not order.existing_account_number:
        return False
    if order.processing_options.run_billing:
        return False
    return all(g.creates and len(g.actions) == 1 for g in order.subscriptions)


# The number checks run only when the order gives numbers (the CASEs in ``checked``). Each
# API connection keeps this statement's generic plan, made while the tables were small, and
# where statistics lag (autovacuum off, no ANALYZE after a load) that plan scans the whole
# subscription table: unguarded, every server-numbered order of the seed scenario scanned
# all the subscriptions before it, and its orders stage took 30-39 s of PostgreSQL CPU
# instead of 16-17 (tests/test_order_facts.py shows such a plan skip the lookups).
WRITE_ORDER = f"""
WITH acc_locked AS (
  SELECT a.id, a.tenant_id, a.partner_account, d.d_mrr
  FROM unnest($2::bigint[], $3::text[], $4::numeric[], $5::text[])
       AS d(account_id, currency, d_mrr, account_number)
  JOIN account a
    ON a.id = d.account_id AND a.currency = d.currency AND a.account_number = d.account_number
  WHERE a.tenant_id = $1
    AND {write_locks_sql(TENANT_LOCK_TIMEOUT, "a.id", "d.d_mrr <> 0 AND NOT a.partner_account")}
  ORDER BY a.id
  FOR SHARE OF a
),
{lock_waits_end_cte("acc_locked", "acc")},
catalog AS (
  SELECT (SELECT count(*) FROM product_rate_plan p
          JOIN unnest($38::bigint[], $39::bigint[]) AS f(id, version)
            ON p.id = f.id AND p.xmin::text::bigint = f.version
          WHERE p.tenant_id = $1) = cardinality($38::bigint[])
     AND (SELECT count(f.id) = count(*) AND count(*) = cardinality($40::bigint[])
          FROM product_rate_plan_charge c
          LEFT JOIN unnest($40::bigint[], $41::bigint[]) AS f(id, version)
            ON c.id = f.id AND c.xmin::text::bigint = f.version
          WHERE c.rate_plan_id = ANY($38::bigint[])) AS current
),
checked AS (
  SELECT (SELECT count(*) FROM acc) = cardinality($2::bigint[]) AS accounts_current,
         (SELECT current FROM catalog) AS catalog_current,
         CASE WHEN cardinality(array_remove($11::text[], NULL)) = 0 THEN '{{}}'
              ELSE (SELECT coalesce(array_agg(subscription_number), '{{}}') FROM subscription
                    WHERE tenant_id = $1 AND subscription_number = ANY($11::text[]))
         END AS taken_subscriptions,
         CASE WHEN $6::text IS NULL THEN FALSE
              ELSE EXISTS (SELECT 1 FROM sales_order WHERE tenant_id = $1 AND order_number = $6)
         END AS order_number_taken
),
ok AS (
  SELECT accounts_current AND catalog_current AND cardinality(taken_subscriptions) = 0
         AND NOT order_number_taken AS ok
  FROM checked
),
so AS (
  INSERT INTO sales_order (tenant_id, order_number, account_id, order_date, status)
  SELECT $1, coalesce($6::text, {numbering.number_sql("order", "$7")}), $8::bigint, $9::date,
         'COMPLETED'
  FROM ok WHERE ok
  RETURNING id, order_number, created_at
),
drawn_subs AS MATERIALIZED (
  SELECT s.*, nextval('subscription_id_seq') AS id,
         CASE WHEN s.given_number IS NULL THEN nextval($10::text::regclass) END AS drawn
  FROM unnest($11::text[], $12::bigint[], $13::bigint[], $14::text[], $15::text[], $16::int[],
              $17::int[], $18::bool[], $19::date[], $20::date[], $21::bool[], $22::numeric[])
       WITH ORDINALITY AS s(given_number, owner_id, invoice_owner_id, currency, term_type,
                            initial_term, renewal_term, auto_renew, eff, term_end,
                            invoice_separately, mrr, n)
  WHERE EXISTS (SELECT 1 FROM so)
),
subs AS MATERIALIZED (
  SELECT d.*,
         coalesce(d.given_number, {numbering.format_sql("subscription", "d.drawn")})
           AS subscription_number
  FROM drawn_subs d
),
ins_subs AS (
  INSERT INTO subscription (id, tenant_id, subscription_number, owner_account_id,
                            invoice_owner_account_id, currency, status, term_type, initial_term,
                            renewal_term, auto_renew, contract_effective_date, term_start_date,
                            term_end_date, invoice_separately, mrr, version)
  SELECT id, $1, subscription_number, owner_id, invoice_owner_id, currency, 'ACTIVE', term_type,
         initial_term, renewal_term, auto_renew, eff, eff, term_end, invoice_separately, mrr, 1
  FROM subs
),
plans AS MATERIALIZED (
  SELECT p.n, nextval('subscription_rate_plan_id_seq') AS id, subs.id AS subscription_id,
         p.product_rate_plan_id, p.name, subs.eff
  FROM unnest($23::int[], $24::bigint[], $25::text[])
       WITH ORDINALITY AS p(subscription_n, product_rate_plan_id, name, n)
  JOIN subs ON subs.n = p.subscription_n
),
ins_plans AS (
  INSERT INTO subscription_rate_plan (id, tenant_id, subscription_id, product_rate_plan_id,
                                      name, effective_start_date)
  SELECT id, $1, subscription_id, product_rate_plan_id, name, eff FROM plans
),
charge_numbers AS MATERIALIZED (
  SELECT g AS n, nextval($26::text::regclass) AS drawn
  FROM generate_series(1, cardinality($27::int[])) AS g
  WHERE EXISTS (SELECT 1 FROM so)
),
ins_charges AS (
  INSERT INTO subscription_charge (tenant_id, subscription_id, subscription_rate_plan_id,
                                   product_rate_plan_charge_id, charge_number, segment,
                                   is_last_segment, name, charge_type, charge_model, price,
                                   quantity, billing_period, billing_timing,
                                   effective_start_date, mrr)
  SELECT $1, plans.subscription_id, plans.id, c.product_rate_plan_charge_id,
         {numbering.format_sql("charge", "cn.drawn")},
         1, TRUE, c.name, c.charge_type, c.charge_model, c.price, c.quantity, c.billing_period,
         c.billing_timing, plans.eff, c.mrr
  FROM unnest($27::int[], $28::bigint[], $29::text[], $30::text[], $31::text[], $32::numeric[],
              $33::numeric[], $34::text[], $35::text[], $36::numeric[])
       WITH ORDINALITY AS c(plan_n, product_rate_plan_charge_id, name, charge_type,
                            charge_model, price, quantity, billing_period, billing_timing, mrr,
                            n)
  JOIN plans ON plans.n = c.plan_n
  JOIN charge_numbers cn ON cn.n = c.n
  ORDER BY c.n
),
ins_actions AS (
  INSERT INTO order_action (tenant_id, order_id, subscription_id, sequence, action_type,
                            effective_date, payload)
  SELECT $1, so.id, subs.id, subs.n - 1, '{CREATE}', subs.eff, a.payload::json
  FROM so, subs JOIN unnest($37::text[]) WITH ORDINALITY AS a(payload, n) ON a.n = subs.n
),
{metrics_ctes(document="so", contracted_mrr="m_a.d_mrr")}
SELECT so.id, so.order_number, so.created_at,
       (SELECT array_agg(subscription_number ORDER BY n) FROM subs) AS subscription_numbers,
       (SELECT coalesce(array_agg(account_id), '{{}}') FROM metrics_sync) AS synced,
       checked.*
FROM checked LEFT JOIN so ON TRUE
"""


@dataclass(frozen=True)
class NewSubscription:
    """One subscription the order creates, checked and priced."""

    action: Action[CreateSubscription]
    given_number: str | None
    owner: OrderAccount
    invoice_owner: OrderAccount
    terms: dict[str, Any]
    term_end: date | None
    plans: list[tuple[CatalogPlan, list[dict[str, Any]]]]
    mrr: Decimal


@dataclass(frozen=True)
class CreatedOrder:
    """What the resolver answers with, known without reading the order back."""

    id: int
    order_number: str
    order_date: date
    account_number: str
    created_at: Any
    subscription_numbers: list[str]
    effective_dates: list[date]


async def create_subscription_order(
    db: Db | AsyncSession, tenant_id: int, order: OrderInput, kept: OrderFacts | None = None
) -> Written:
    """Write an order that only creates subscriptions (``takes(order)``): all or nothing,
    contractedMrr of each subscription owner moved the owner's way. The Written row is a
    CreatedOrder. With ``kept``, an order whose accounts and rate plans it holds is written
    in one round trip (billing.orders.facts)."""
    order_date, groups = order.order_date, order.subscriptions
    order_number = numbering.caller_number(order.order_number, ["orderNumber"])
    order_account_number = str(order.existing_account_number)
    account_numbers, plan_numbers = _names(order_account_number, groups)
    conn = await connection_of(db)
    for _ in range(WRITE_ATTEMPTS):
        facts = await order_facts(conn, kept, tenant_id, account_numbers, plan_numbers)
        order_account = facts.account(order_account_number, ["existingAccountNumber"])
        subs = [_new_subscription(tenant_id, g, order_account, facts) for g in groups]
        deltas: dict[int, Decimal] = {order_account.id: Decimal(0)}
        accounts = {order_account.id: order_account}
        for sub in subs:
            for acct in (sub.owner, sub.invoice_owner):
                accounts[acct.id] = acct
                deltas.setdefault(acct.id, Decimal(0))
            deltas[sub.owner.id] += sub.mrr
        ids = sorted(deltas)
        plans = [(n, plan, rows) for n, sub in enumerate(subs, 1) for plan, rows in sub.plans]
        charges = [(pn, r) for pn, (_, _, rows) in enumerate(plans, 1) for r in rows]
        plan_ids, plan_versions, charge_ids, charge_versions = versions(p for _, p, _ in plans)
        async with db_errors():
            row = await conn.fetchrow(
                WRITE_ORDER,
                tenant_id, ids, [accounts[i].currency for i in ids], [deltas[i] for i in ids],
                [accounts[i].account_number for i in ids],
                order_number, numbering.sequence_name(tenant_id, "order"),
                order_account.id, order_date,
                numbering.sequence_name(tenant_id, "subscription"),
                [s.given_number for s in subs], [s.owner.id for s in subs],
                [s.invoice_owner.id for s in subs], [s.invoice_owner.currency for s in subs],
                [s.terms["term_type"] for s in subs], [s.terms["initial_term"] for s in subs],
                [s.terms["renewal_term"] for s in subs], [s.terms["auto_renew"] for s in subs],
                [s.action.effective_date for s in subs], [s.term_end for s in subs],
                [s.action.body.invoice_separately for s in subs],
                [s.mrr for s in subs],
                [n for n, _, _ in plans], [p.id for _, p, _ in plans],
                [p.name for _, p, _ in plans],
                numbering.sequence_name(tenant_id, "charge"),
                [pn for pn, _ in charges], [r["product_rate_plan_charge_id"] for _, r in charges],
                [r["name"] for _, r in charges], [r["charge_type"] for _, r in charges],
                [r["charge_model"] for _, r in charges], [r["price"] for _, r in charges],
                [r["quantity"] for _, r in charges], [r["billing_period"] for _, r in charges],
                [r["billing_timing"] for _, r in charges], [r["mrr"] for _, r in charges],
                [json.dumps(payload(s.action.body)) for s in subs],
                plan_ids, plan_versions, charge_ids, charge_versions,
            )  # fmt: skip
        assert row is not None
        if row["order_number_taken"]:
            raise Duplicate(f"Order number {order_number} is already used", ["orderNumber"])
        _refuse_taken(subs, set(row["taken_subscriptions"]))
        if row["id"] is None:
            # An account or rate plan is not what the order was built from: kept facts gone
            # stale, or a change between the read and the write. Read again.
            if kept is not None:
                kept.forget(tenant_id, facts)
            continue
        created = CreatedOrder(
            id=row["id"],
            order_number=row["order_number"],
            order_date=order_date,
            account_number=order_account.account_number,
            created_at=row["created_at"],
            subscription_numbers=list(row["subscription_numbers"]),
            effective_dates=[s.action.effective_date for s in subs],
        )
        return written(db, tenant_id, created, list(row["synced"]))
    raise LockCompetition("An account changed while the order was written, please retry")


def _names(order_account: str, groups: tuple[OrderSubscription, ...]) -> tuple[set[str], set[str]]:
    """The account and catalog rate plan numbers an order names."""
    accounts = {order_account}
    plans: set[str] = set()
    for g in groups:
        body: CreateSubscription = g.actions[0].body
        for number in (body.subscription_owner_account_number, body.invoice_owner_account_number):
            if number:
                accounts.add(str(number))
        for i, rp in enumerate(body.rate_plans):
            plans.add(rate_plan_number(rp, [*g.actions[0].path, "ratePlans", str(i)]))
    return accounts, plans


def _refuse_taken(subs: list[NewSubscription], taken: set[str]) -> None:
    """Duplicate, at the first subscription whose given number another one has."""
    for s in subs:
        if s.given_number is not None and s.given_number in taken:
            raise Duplicate(
                f"Subscription number {s.given_number} is already used",
                [*s.action.path, "subscriptionNumber"],
            )


def _new_subscription(
    tenant_id: int, g: OrderSubscription, order_account: OrderAccount, facts: Facts
) -> NewSubscription:
    """One CreateSubscription checked against the accounts and the catalog, priced."""
    a: Action[CreateSubscription] = g.actions[0]
    b, path, eff = a.body, a.path, a.effective_date
    owner_no = b.subscription_owner_account_number
    inv_no = b.invoice_owner_account_number
    owner = (
        facts.account(owner_no, [*path, "subscriptionOwnerAccountNumber"])
        if owner_no
        else order_account
    )
    inv = facts.account(inv_no, [*path, "invoiceOwnerAccountNumber"]) if inv_no else order_account
    if owner.currency != inv.currency:
        raise CurrencyMismatch(
            f"Subscription owner uses {owner.currency}, invoice owner {inv.currency}",
            [*path, "invoiceOwnerAccountNumber"],
        )
    terms = subscription_terms(b.terms or Terms(), [*path, "terms"])
    number = numbering.caller_number(g.subscription_number, [*path, "subscriptionNumber"])
    plans = []
    for i, rp in enumerate(b.rate_plans):
        rp_path = [*path, "ratePlans", str(i)]
        rp_number = rate_plan_number(rp, rp_path)
        plan = facts.plans.get(rp_number)
        if plan is None:
            raise NotFound(
                f"Product rate plan {rp_number} not found", [*rp_path, "productRatePlanNumber"]
            )
        plans.append((plan, plan_rows(tenant_id, rp_number, plan.charges, rp, eff, rp_path)))
    mrr = sum(
        (r["mrr"] for _, rows in plans for r in rows if r["charge_type"] == ChargeType.RECURRING),
        Decimal(0),
    ).quantize(MRR_PLACES)
    term_end = (
        add_months(eff, int(terms["initial_term"]))
        if terms["term_type"] == TermType.TERMED
        else None
    )
    return NewSubscription(a, number, owner, inv, terms, term_end, plans, mrr)
