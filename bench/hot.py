"""Scenario 1, the hot account: N concurrent clients send createOrder (a new subscription,
the account its owner and invoice owner), createStandaloneInvoice and createPayment to
(a) one partner account, (b) one ordinary account, (c) 1,000 ordinary accounts, through
uvicorn + the arq worker as separate processes. After the load the partner account is
refreshed and its stored metrics are compared with billing.metrics.recompute."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import Counter
from typing import Any

import httpx

from bench.common import account_ids, add_accounts, machine_cpu, new_tenant, processes

INVOICE = """mutation($i: CreateStandaloneInvoiceInput!) { createStandaloneInvoice(input: $i) {
  invoice { invoiceNumber } errors { __typename code } } }"""
PAYMENT = """mutation($i: CreatePaymentInput!) { createPayment(input: $i) {
  payment { paymentNumber } errors { __typename code } } }"""
ORDER = """mutation($i: CreateOrderInput!) { createOrder(input: $i) {
  order { orderNumber } errors { __typename code } } }"""
PRODUCT = """mutation($i: CreateProductInput!) { createProduct(input: $i) {
  product { productNumber } errors { __typename code } } }"""
KINDS = 3  # createOrder, createStandaloneInvoice, createPayment, in turn


async def make_catalog(base: str, key: str) -> None:
    """The one rate plan the orders subscribe to: a FLAT_FEE of 20.00 a month."""
    product = {
        "name": "Bench seat",
        "productNumber": "PC-BENCH",
        "ratePlans": [
            {
                "name": "Monthly",
                "productRatePlanNumber": "PRP-BENCH",
                "charges": [
                    {
                        "name": "Seat",
                        "productRatePlanChargeNumber": "PRPC-BENCH",
                        "chargeType": "RECURRING",
                        "chargeModel": "FLAT_FEE",
                        "listPrice": "20",
                    }
                ],
            }
        ],
    }
    async with httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {key}"}) as c:
        r = await c.post("/graphql", json={"query": PRODUCT, "variables": {"i": product}})
        errs = r.json()["data"]["createProduct"]["errors"]
        if errs:
            raise RuntimeError(f"createProduct: {errs}")


def request(kind: int, account: str) -> tuple[str, dict[str, Any], str]:
    if kind == 2:
        # a new subscription, the account both subscription owner and invoice owner
        return (
            ORDER,
            {
                "i": {
                    "existingAccountNumber": account,
                    "orderDate": "2026-03-01",
                    "subscriptions": [
                        {
                            "orderActions": [
                                {
                                    "createSubscription": {
                                        "subscriptionOwnerAccountNumber": account,
                                        "invoiceOwnerAccountNumber": account,
                                        "ratePlans": [{"productRatePlanNumber": "PRP-BENCH"}],
                                    }
                                }
                            ]
                        }
                    ],
                }
            },
            "createOrder",
        )
    if kind == 0:
        return (
            INVOICE,
            {
                "i": {
                    "accountNumber": account,
                    "invoiceDate": "2026-03-01",
                    "status": "POSTED",
                    "items": [{"chargeName": "Seat", "quantity": "2", "unitPrice": "12.50"}],
                }
            },
            "createStandaloneInvoice",
        )
    return (
        PAYMENT,
        {"i": {"accountNumber": account, "amount": "10.00", "effectiveDate": "2026-03-02"}},
        "createPayment",
    )


async def load(
    base: str, key: str, accounts: list[str], clients: int, seconds: float
) -> dict[str, Any]:
    """``clients`` tasks, each sending one mutation at a time for ``seconds``."""
    lat: list[float] = []
    errors: Counter[str] = Counter()
    by_kind: Counter[str] = Counter()
    ok = 0
    counter = itertools.count()
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(
        base_url=base, headers={"Authorization": f"Bearer {key}"}, limits=limits, timeout=60
    ) as client:
        stop = time.perf_counter() + seconds

        async def one() -> None:
            nonlocal ok
            while time.perf_counter() < stop:
                n = next(counter)
                q, v, field = request(n % KINDS, accounts[(n // KINDS) % len(accounts)])
                t0 = time.perf_counter()
                try:
                    r = await client.post("/graphql", json={"query": q, "variables": v})
                    body = r.json()
                except (httpx.HTTPError, ValueError) as e:
                    errors[type(e).__name__] += 1
                    continue
                lat.append(time.perf_counter() - t0)
                if r.status_code != 200 or body.get("errors"):
                    errors[f"HTTP{r.status_code}:{str(body.get('errors'))[:80]}"] += 1
                    continue
                errs = body["data"][field]["errors"]
                if errs:
                    for e in errs:
                        errors[e["code"]] += 1
                else:
                    ok += 1
                    by_kind[field] += 1

        t0 = time.perf_counter()
        await asyncio.gather(*(one() for _ in range(clients)))
        elapsed = time.perf_counter() - t0
    lat.sort()

    def pct(p: float) -> float:
        return round(lat[min(len(lat) - 1, int(p * len(lat)))] * 1000, 1) if lat else 0.0

    return {
        "ok": ok,
        "seconds": round(elapsed, 2),
        "throughput": round(ok / elapsed, 1),
        "p50_ms": pct(0.50),
        "p99_ms": pct(0.99),
        "ok_by_mutation": dict(by_kind),
        "lock_competition": errors.pop("LOCK_COMPETITION", 0),
        "other_errors": dict(errors),
    }


async def check_partner(sm: Any, tenant_id: int, account_id: int) -> dict[str, Any]:
    """Refresh the partner account; its stored metrics must equal the from-scratch oracle."""
    from billing.metrics import recompute, refresh_account, stored_metrics

    async with sm.begin() as s:
        folded = await refresh_account(s, tenant_id, account_id)
    async with sm() as s:
        stored = await stored_metrics(s, account_id)
        oracle = await recompute(s, account_id)
    return {
        "folded": folded,
        "exact": stored.values()[:5] == oracle.values()[:5]
        and stored.values()[5] == oracle.values()[5],
        "stored": [str(x) for x in stored.values()],
        "oracle": [str(x) for x in oracle.values()],
    }


async def run(
    url: str,
    clients_list: list[int],
    seconds: float,
    spread: int = 1000,
    *,
    redis: str | None = None,
) -> dict[str, Any]:
    from db.engine import create_engine, create_sessionmaker

    engine = create_engine(url)
    sm = create_sessionmaker(engine)
    tenant_id, key = await new_tenant(sm, "hot")
    partner = await add_accounts(sm, tenant_id, "P", 1, partner=True)
    ordinary = await add_accounts(sm, tenant_id, "O", 1, partner=False)
    many = await add_accounts(sm, tenant_id, "M", spread, partner=False)
    (partner_id,) = await account_ids(sm, tenant_id, partner)
    results: dict[str, Any] = {"seconds_per_run": seconds, "spread_accounts": spread, "runs": []}
    with processes(url, redis=redis) as procs:
        await make_catalog(procs.base, key)
        # warm-up: imports, connection pools, plans
        await load(procs.base, key, many, 4, 1.0)
        for n in clients_list:
            row: dict[str, Any] = {"clients": n}
            for label, accts in (("partner", partner), ("ordinary", ordinary), ("spread", many)):
                procs.mark()
                m0 = machine_cpu()
                t0 = time.process_time()
                r = await load(procs.base, key, accts, n, seconds)
                r["cpu_s"] = {
                    **procs.cpu_since_mark(),
                    "loadgen": round(time.process_time() - t0, 2),
                }
                # everything else busy on the machine in that window: mostly PostgreSQL
                r["cpu_s"]["postgres_and_rest"] = round(
                    machine_cpu() - m0 - sum(r["cpu_s"].values()), 2
                )
                row[label] = r
            row["hot_ratio"] = round(
                row["partner"]["throughput"] / max(row["spread"]["throughput"], 1e-9), 3
            )
            row["partner_zero_errors"] = (
                row["partner"]["lock_competition"] == 0 and not row["partner"]["other_errors"]
            )
            results["runs"].append(row)
            print(_line(row), flush=True)
    results["partner_check"] = await check_partner(sm, tenant_id, partner_id)
    print(
        "partner metrics after refresh equal recompute:",
        results["partner_check"]["exact"],
        f"({results['partner_check']['folded']} ledger rows folded)",
        flush=True,
    )
    await engine.dispose()
    return results


def _line(row: dict[str, Any]) -> str:
    parts = [f"N={row['clients']:>3}"]
    for label in ("partner", "ordinary", "spread"):
        r = row[label]
        parts.append(
            f"{label}: {r['throughput']:>6}/s p50 {r['p50_ms']}ms p99 {r['p99_ms']}ms "
            f"lock {r['lock_competition']} err {sum(r['other_errors'].values())} cpu {r['cpu_s']}"
        )
    parts.append(f"ratio a/c {row['hot_ratio']}")
    return " | ".join(parts)
