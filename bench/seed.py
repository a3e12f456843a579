# ruff: noqa: E501
"""Seed scenario 1, whole: a reseller and its end customers, from accounts to a refreshed
month-end bill run, everything through GraphQL over HTTP against uvicorn, with the arq
worker as a separate process (bench.common.processes).

1. accounts: 1 reseller (invoice owner) and 1,000 end customers (subscription owners) with
   createAccount, then partnerAccount=true on all of them with updateAccount; sent as HTTP
   batches (a JSON array of operations) from a few concurrent clients;
2. catalog: createProduct with one monthly FLAT_FEE plan; metricsRefreshInterval 10 s;
3. orders: 100,000 subscriptions from parallel createOrder calls, each order for one end
   customer with the reseller as invoice owner and ``per_order`` createSubscription groups;
4. bill run: createBillRun(autoPost) for the reseller at month end, polled until POSTED
   and its invoices posted;
5. refresh: metricsRefreshInterval 1 s, wait until the ledger is empty and the reseller's
   lastMetricsUpdate is later than the post;
6. check: stored metrics == billing.metrics.recompute for every account, the reseller's
   totalInvoiceBalance == the run's invoice total, sum of contractedMrr == N x price.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import httpx
from sqlalchemy import text

from bench.common import machine_cpu, new_tenant, processes
from bench.lightclient import Request, graphql_check, post_bytes, run_each

PRICE = Decimal("25.00")
ORDER_DATE = "2026-03-01"
TARGET_DATE = "2026-03-31"  # month end: bills the first monthly period [03-01, 04-01) in advance
RESELLER = "RESELLER"
CONTACT = {"firstName": "Fleet", "lastName": "Owner"}
BATCH = 100  # operations per HTTP batch: server.settings.Settings.max_batch by default

CREATE_ACCOUNT = """mutation($i: CreateAccountInput!) { createAccount(input: $i) {
  account { accountNumber } errors { __typename code message } } }"""
UPDATE_ACCOUNT = """mutation($i: UpdateAccountInput!) { updateAccount(input: $i) {
  account { accountNumber partnerAccount } errors { __typename code message } } }"""
PRODUCT = """mutation($i: CreateProductInput!) { createProduct(input: $i) {
  product { productNumber } errors { __typename code message } } }"""
SETTINGS = """mutation($s: Int!) { updateTenantSettings(input: { metricsRefreshInterval: $s }) {
  tenantSettings { metricsRefreshInterval } errors { __typename code message } } }"""
ORDER = """mutation($i: CreateOrderInput!) { createOrder(input: $i) {
  order { orderNumber } errors { __typename code message } } }"""
BILL_RUN = """mutation($i: CreateBillRunInput!) { createBillRun(input: $i) {
  billRun { billRunNumber status accountsTotal } errors { __typename code message } } }"""
RUN_STATE = """query($n: String!) { billRun(billRunNumber: $n) { status accountsTotal
  accountsProcessed invoicesGenerated completedAt errors { accountNumber code message } } }"""
INVOICES = """query($a: String!) { account(accountNumber: $a) {
  invoices(first: 500) { totalCount edges { node { invoiceNumber status amount balance } } } } }"""
RESELLER_METRICS = """query($a: String!) { account(accountNumber: $a) { lastMetricsUpdate
  metrics { totalInvoiceBalance balance contractedMrr lastInvoiceDate lastMetricsUpdate } } }"""
CUSTOMERS_MRR = """query($after: String) { accounts(filter: { batch: "Customers" }, first: 500, after: $after) {
  edges { node { accountNumber partnerAccount metrics { contractedMrr } } }
  pageInfo { hasNextPage endCursor } } }"""


class GraphQLFailure(RuntimeError):
    pass


def sizes(quick: bool, customers: int | None, subscriptions: int | None) -> tuple[int, int]:
    return (
        customers if customers is not None else (20 if quick else 1_000),
        subscriptions if subscriptions is not None else (1_000 if quick else 100_000),
    )


def customer_numbers(n: int) -> list[str]:
    return [f"CUST-{i:05d}" for i in range(1, n + 1)]


def account_input(number: str, batch: str) -> dict[str, Any]:
    return {
        "accountNumber": number,
        "name": f"Account {number}",
        "currency": "USD",
        "billToContact": CONTACT,
        "billCycleDay": 1,
        "paymentTerm": "NET_30",
        "batch": batch,
    }


def order_input(customer: str, count: int) -> dict[str, Any]:
    """One order of the end customer: ``count`` new subscriptions it owns, invoiced to the reseller."""
    group = {
        "orderActions": [
            {
                "createSubscription": {
                    "subscriptionOwnerAccountNumber": customer,
                    "invoiceOwnerAccountNumber": RESELLER,
                    "ratePlans": [{"productRatePlanNumber": "PRP-SEED"}],
                }
            }
        ]
    }
    return {
        "existingAccountNumber": customer,
        "orderDate": ORDER_DATE,
        "subscriptions": [group] * count,
    }


def plan_orders(customers: list[str], subscriptions: int, per_order: int) -> list[tuple[str, int]]:
    """(customer, subscriptions) per order: round robin over the customers, the last order smaller."""
    out: list[tuple[str, int]] = []
    left = subscriptions
    for k in itertools.count():
        if left <= 0:
            return out
        n = min(per_order, left)
        out.append((customers[k % len(customers)], n))
        left -= n
    return out


class Api:
    """The tenant's /graphql over one httpx client."""

    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = client

    async def one(self, query: str, **variables: Any) -> dict[str, Any]:
        r = await self.client.post("/graphql", json={"query": query, "variables": variables})
        body = r.json()
        if r.status_code != 200 or body.get("errors"):
            raise GraphQLFailure(f"HTTP {r.status_code}: {str(body)[:300]}")
        data: dict[str, Any] = body["data"]
        return data

    async def mutate(self, query: str, field: str, **variables: Any) -> dict[str, Any]:
        data: dict[str, Any] = (await self.one(query, **variables))[field]
        if data["errors"]:
            raise GraphQLFailure(f"{field}: {data['errors']}")
        return data


async def send_batches(
    client: httpx.AsyncClient,
    ops: list[tuple[str, dict[str, Any], str]],
    clients: int,
    errors: Counter[str],
) -> int:
    """Send ``ops`` (query, variables, field) as HTTP batches of BATCH from ``clients`` tasks;
    returns the operations that succeeded, counting failures by code in ``errors``."""
    chunks = [ops[i : i + BATCH] for i in range(0, len(ops), BATCH)]
    queue: asyncio.Queue[list[tuple[str, dict[str, Any], str]]] = asyncio.Queue()
    for c in chunks:
        queue.put_nowait(c)
    ok = 0

    async def worker() -> None:
        nonlocal ok
        while True:
            try:
                chunk = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            body = [{"query": q, "variables": v} for q, v, _ in chunk]
            try:
                r = await client.post("/graphql", json=body)
                results = r.json()
            except (httpx.HTTPError, ValueError) as e:
                errors[type(e).__name__] += len(chunk)
                continue
            if r.status_code != 200 or not isinstance(results, list):
                errors[f"HTTP{r.status_code}"] += len(chunk)
                continue
            for (_, _, field), res in zip(chunk, results, strict=True):
                if res.get("errors"):
                    errors["GRAPHQL"] += 1
                elif res["data"][field]["errors"]:
                    for err in res["data"][field]["errors"]:
                        errors[err["code"]] += 1
                else:
                    ok += 1

    await asyncio.gather(*(worker() for _ in range(min(clients, len(chunks)))))
    return ok


async def create_orders(
    base: str, key: str, plan: list[tuple[str, int]], clients: int, progress: bool
) -> dict[str, Any]:
    """Every order of ``plan`` as one createOrder request, ``clients`` at a time, sent by the
    light client (bench/lightclient.py): httpx cost this box's shared cores about 3 ms of
    CPU per 50-subscription order, a quarter of what the API spent on it."""
    url = httpx.URL(base)
    host, port = url.host, url.port or 80
    check = graphql_check("createOrder")
    requests: list[Request] = [
        (
            post_bytes(
                host,
                port,
                "/graphql",
                json.dumps(
                    {"query": ORDER, "variables": {"i": order_input(customer, count)}}
                ).encode(),
                {"Authorization": f"Bearer {key}"},
            ),
            check,
            str(count),  # the label: OK answers are counted per order size
        )
        for customer, count in plan
    ]
    answered: list[float] = []

    async def report(t0: float) -> None:
        while True:
            await asyncio.sleep(15)
            print(
                f"  orders: {len(answered)}/{len(plan)} in {time.perf_counter() - t0:.0f} s",
                flush=True,
            )

    reporter = asyncio.create_task(report(time.perf_counter())) if progress else None
    try:
        r = await run_each(host, port, requests, clients, answered=answered)
    finally:
        if reporter is not None:
            reporter.cancel()
    ok_subs = sum(int(count) * n for count, n in r["ok_by_label"].items())
    elapsed = r["seconds"]
    return {
        "orders": len(plan),
        "ok_orders": r["ok"],
        "ok_subscriptions": ok_subs,
        "seconds": elapsed,
        "subscriptions_per_s": round(ok_subs / elapsed, 1),
        "orders_per_s": round(r["ok"] / elapsed, 2),
        "p50_ms": r["p50_ms"],
        "p99_ms": r["p99_ms"],
        "max_ms": r["max_ms"],
        "lock_competition": r["errors"].get("LOCK_COMPETITION", 0),
        "errors": r["errors"],
    }


async def run(
    url: str,
    quick: bool = False,
    *,
    customers: int | None = None,
    subscriptions: int | None = None,
    per_order: int = 50,
    clients: int = 16,
    account_clients: int = 4,
    api_workers: int = 1,
    redis: str | None = None,
    bill_run_timeout: float = 1800.0,
    refresh_timeout: float = 600.0,
    progress: bool = True,
) -> dict[str, Any]:
    """The whole scenario on the (empty, migrated) database ``url``; a JSON-able report.
    ``redis`` is the Redis URL of the API and worker processes (default: REDIS_URL)."""
    from billing.metrics import recompute, stored_metrics
    from db.engine import create_engine, create_sessionmaker

    n_customers, n_subs = sizes(quick, customers, subscriptions)
    engine = create_engine(url)
    sm = create_sessionmaker(engine)
    tenant_id, key = await new_tenant(sm, "seed")
    custs = customer_numbers(n_customers)
    plan = plan_orders(custs, n_subs, per_order)
    out: dict[str, Any] = {
        "sizes": {
            "resellers": 1,
            "customers": n_customers,
            "subscriptions": n_subs,
            "per_order": per_order,
            "orders": len(plan),
            "order_clients": clients,
            "api_workers": api_workers,
            "account_clients": account_clients,
            "price": str(PRICE),
        },
        "stages": {},
    }
    stages: dict[str, Any] = out["stages"]
    ok = True

    def say(msg: str) -> None:
        if progress:
            print(msg, flush=True)

    async def ledger_rows() -> int:
        async with sm() as s:
            return int(
                (
                    await s.execute(
                        text("SELECT count(*) FROM metrics_change WHERE tenant_id = :t"),
                        {"t": tenant_id},
                    )
                ).scalar_one()
            )

    t_all = time.perf_counter()
    with processes(url, api_workers, redis=redis) as procs:

        @asynccontextmanager
        async def stage(name: str) -> AsyncIterator[dict[str, Any]]:
            row: dict[str, Any] = {}
            procs.mark()
            m0, c0, t0 = machine_cpu(), time.process_time(), time.perf_counter()
            try:
                yield row
            finally:
                cpu = {**procs.cpu_since_mark(), "loadgen": round(time.process_time() - c0, 2)}
                cpu["postgres_and_rest"] = round(machine_cpu() - m0 - sum(cpu.values()), 2)
                row["seconds"] = round(time.perf_counter() - t0, 2)
                row["cpu_s"] = cpu
                stages[name] = row
                say(f"== seed {name}: {row['seconds']} s, cpu {cpu}")

        limits = httpx.Limits(max_connections=clients + 4, max_keepalive_connections=clients + 4)
        async with httpx.AsyncClient(
            base_url=procs.base,
            headers={"Authorization": f"Bearer {key}"},
            limits=limits,
            timeout=httpx.Timeout(300.0),
        ) as client:
            api = Api(client)

            # 1. accounts -------------------------------------------------------------
            async with stage("accounts") as row:
                errors: Counter[str] = Counter()
                creates = [
                    (CREATE_ACCOUNT, {"i": account_input(RESELLER, "Resellers")}, "createAccount")
                ]
                creates += [
                    (CREATE_ACCOUNT, {"i": account_input(c, "Customers")}, "createAccount")
                    for c in custs
                ]
                t0 = time.perf_counter()
                row["created"] = await send_batches(client, creates, account_clients, errors)
                row["create_seconds"] = round(time.perf_counter() - t0, 2)
                # the seed page's steps 1-2: the invoice owner, then the subscription owners
                updates = [
                    (
                        UPDATE_ACCOUNT,
                        {"i": {"accountNumber": n, "partnerAccount": True}},
                        "updateAccount",
                    )
                    for n in [RESELLER, *custs]
                ]
                t0 = time.perf_counter()
                row["updated"] = await send_batches(client, updates, account_clients, errors)
                row["update_seconds"] = round(time.perf_counter() - t0, 2)
                row["errors"] = dict(errors)
            ok = ok and not errors and row["created"] == row["updated"] == n_customers + 1

            # 2. catalog and the refresh interval of the load ---------------------------
            async with stage("catalog") as row:
                await api.mutate(
                    PRODUCT,
                    "createProduct",
                    i={
                        "name": "Fleet seat",
                        "productNumber": "PC-SEED",
                        "ratePlans": [
                            {
                                "name": "Monthly",
                                "productRatePlanNumber": "PRP-SEED",
                                "charges": [
                                    {
                                        "name": "Seat",
                                        "productRatePlanChargeNumber": "PRPC-SEED",
                                        "chargeType": "RECURRING",
                                        "chargeModel": "FLAT_FEE",
                                        "listPrice": str(PRICE),
                                        "billingPeriod": "MONTH",
                                        "billingTiming": "IN_ADVANCE",
                                    }
                                ],
                            }
                        ],
                    },
                )
                await api.mutate(SETTINGS, "updateTenantSettings", s=10)
                row["metrics_refresh_interval"] = 10

            # 3. orders ---------------------------------------------------------------
            orders_started = datetime.now(UTC)
            async with stage("orders") as row:
                row.update(await create_orders(procs.base, key, plan, clients, progress))
            row["ledger_rows_after"] = await ledger_rows()
            async with sm() as s:
                # customers the periodic refresh reached while the orders ran
                row["customers_refreshed_during_load"] = int(
                    (
                        await s.execute(
                            text(
                                "SELECT count(*) FROM account_metrics m JOIN account a ON a.id = m.account_id "
                                "WHERE a.tenant_id = :t AND a.batch = 'Customers' AND m.last_metrics_update > :since"
                            ),
                            {"t": tenant_id, "since": orders_started},
                        )
                    ).scalar_one()
                )
            ok = ok and row["ok_subscriptions"] == n_subs and not row["errors"]

            # 4. month-end bill run ------------------------------------------------------
            posted_at: datetime | None = None
            async with stage("bill_run") as row:
                created = await api.mutate(
                    BILL_RUN,
                    "createBillRun",
                    i={"targetDate": TARGET_DATE, "accountNumbers": [RESELLER], "autoPost": True},
                )
                number = created["billRun"]["billRunNumber"]
                row["bill_run"] = number
                t0 = time.perf_counter()
                seen: dict[str, float] = {}
                state: dict[str, Any] = {}
                invoices: list[dict[str, Any]] = []
                while True:
                    state = (await api.one(RUN_STATE, n=number))["billRun"]
                    seen.setdefault(state["status"], round(time.perf_counter() - t0, 2))
                    if state["status"] in ("ERROR", "CANCELED"):
                        break
                    if state["status"] == "POSTED":
                        # POSTED comes first, then the drafts are posted in chunks: wait for those too
                        inv = (await api.one(INVOICES, a=RESELLER))["account"]["invoices"]
                        invoices = [e["node"] for e in inv["edges"]]
                        if len(invoices) == state["invoicesGenerated"] and all(
                            i["status"] == "POSTED" for i in invoices
                        ):
                            posted_at = datetime.now(UTC)
                            seen["invoices_posted"] = round(time.perf_counter() - t0, 2)
                            break
                    if time.perf_counter() - t0 > bill_run_timeout:
                        state["status"] = f"TIMEOUT({state['status']})"
                        break
                    await asyncio.sleep(0.5)
                row["status"] = state["status"] if posted_at is None else "POSTED"
                row["status_seen_at_s"] = seen
                row["accounts_processed"] = state.get("accountsProcessed")
                row["run_errors"] = state.get("errors")
                row["invoices"] = len(invoices)
                row["invoice_total"] = str(
                    sum((Decimal(i["amount"]) for i in invoices), Decimal(0))
                )
            ok = ok and posted_at is not None and not row["run_errors"]

            # 5. refresh ------------------------------------------------------------------
            async with stage("refresh") as row:
                row["ledger_rows_at_start"] = await ledger_rows()
                await api.mutate(SETTINGS, "updateTenantSettings", s=1)
                t0 = time.perf_counter()
                last = None
                done = False
                while posted_at is not None and time.perf_counter() - t0 < refresh_timeout:
                    pending = await ledger_rows()
                    acct = (await api.one(RESELLER_METRICS, a=RESELLER))["account"]
                    last = acct["lastMetricsUpdate"]
                    if pending == 0 and last and datetime.fromisoformat(last) > posted_at:
                        done = True
                        break
                    await asyncio.sleep(0.2)
                row["waited_s"] = round(time.perf_counter() - t0, 2)
                row["fresh"] = done
                row["posted_at"] = posted_at.isoformat() if posted_at else None
                row["reseller_last_metrics_update"] = last
            ok = ok and done

            # 6. checks -------------------------------------------------------------------
            async with stage("check") as row:
                async with sm() as s:
                    ids = list(
                        (
                            await s.execute(
                                text(
                                    "SELECT id, account_number FROM account WHERE tenant_id = :t ORDER BY id"
                                ),
                                {"t": tenant_id},
                            )
                        ).all()
                    )
                    mismatches = []
                    for account_id, number in ids:
                        stored = await stored_metrics(s, account_id)
                        oracle = await recompute(s, account_id)
                        if stored.values() != oracle.values():
                            mismatches.append(
                                {
                                    "account": number,
                                    "stored": [str(v) for v in stored.values()],
                                    "oracle": [str(v) for v in oracle.values()],
                                }
                            )
                    subs_in_db = int(
                        (
                            await s.execute(
                                text(
                                    "SELECT count(*) FROM subscription s JOIN account a ON a.id = s.invoice_owner_account_id "
                                    "WHERE s.tenant_id = :t AND a.account_number = :r"
                                ),
                                {"t": tenant_id, "r": RESELLER},
                            )
                        ).scalar_one()
                    )
                row["accounts_checked"] = len(ids)
                row["mismatches"] = len(mismatches)
                row["mismatch_sample"] = mismatches[:5]
                row["exact"] = not mismatches and len(ids) == n_customers + 1
                row["subscriptions_in_db"] = subs_in_db
                reseller = (await api.one(RESELLER_METRICS, a=RESELLER))["account"]["metrics"]
                bill_total = Decimal(stages["bill_run"]["invoice_total"])
                row["reseller_total_invoice_balance"] = reseller["totalInvoiceBalance"]
                row["reseller_balance_equals_invoices"] = (
                    Decimal(reseller["totalInvoiceBalance"]) == bill_total
                )
                row["invoice_total_expected"] = str(PRICE * n_subs)
                row["invoice_total_equals_expected"] = bill_total == PRICE * n_subs
                mrr = Decimal(0)
                counted = 0
                not_partner = 0
                after = None
                while True:
                    page = (await api.one(CUSTOMERS_MRR, after=after))["accounts"]
                    for e in page["edges"]:
                        mrr += Decimal(e["node"]["metrics"]["contractedMrr"])
                        counted += 1
                        not_partner += not e["node"]["partnerAccount"]
                    if not page["pageInfo"]["hasNextPage"]:
                        break
                    after = page["pageInfo"]["endCursor"]
                row["customers_counted"] = counted
                row["customers_not_partner"] = not_partner
                row["contracted_mrr_sum"] = str(mrr)
                row["contracted_mrr_expected"] = str(PRICE * n_subs)
                row["contracted_mrr_equals_expected"] = mrr == PRICE * n_subs
            ok = (
                ok
                and row["exact"]
                and row["subscriptions_in_db"] == n_subs
                and row["reseller_balance_equals_invoices"]
                and row["invoice_total_equals_expected"]
                and row["contracted_mrr_equals_expected"]
                and counted == n_customers
                and not_partner == 0
            )
        out["peak_rss_mb"] = procs.peak_rss_mb()
    out["total_seconds"] = round(time.perf_counter() - t_all, 2)
    out["ok"] = ok
    await engine.dispose()
    return out
