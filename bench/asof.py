# ruff: noqa: E501
"""Freshness you can prove (issue 13), three figures:

1. staleness: the hot-account load (createOrder, createStandaloneInvoice, createPayment in
   turn on one partner account, bench/hot.py's mix, light client) through two API processes
   and the arq worker, the tenant's metricsRefreshInterval 1 s. A poller reads the account's
   metricsCurrentAsOf through GraphQL every 50 ms. For every write: (the first
   metricsCurrentAsOf value at or after its answer) minus (the answer), and, as the bound a
   client sees, (when that value was first read) minus (the answer).
2. liveMetrics on a partner account with 100,000 and with 100 pending changes: through
   GraphQL (one connection, one request at a time) and the SQL alone (pb_live_metrics).
3. a refresh pass (billing.metrics.refresh_tenant) over 100,000 partner accounts with
   nothing pending, then every account's metricsCurrentAsOf checked to be at or after the
   pass's start.

    DATABASE_URL=postgresql://postgres@127.0.0.1:5432/postgres REDIS_URL=redis://127.0.0.1:6379/12 \\
        python bench/asof.py [--clients 32] [--seconds 30] [--json out.json]

A fresh database is created on the server of DATABASE_URL (dropped unless --keep), and
ANALYZEd after each bulk load.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import asyncpg
import httpx
from sqlalchemy import text
from sqlalchemy.engine import make_url

from bench.common import (
    account_ids,
    add_accounts,
    fresh_database,
    machine_cpu,
    new_tenant,
    postgres_cpu,
    processes,
)
from bench.freshness import set_interval
from bench.hot import MIX, encode, make_catalog
from bench.lightclient import graphql_check, post_bytes, run_mix

AS_OF = """query($n: String!) { account(accountNumber: $n) { metricsCurrentAsOf } }"""
LIVE = """query($n: String!) { account(accountNumber: $n) {
  pendingMetricChanges metrics { balance }
  liveMetrics { balance totalInvoiceBalance unappliedPaymentAmount contractedMrr } } }"""


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(p * len(s)))] if s else float("nan")


def epoch(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


async def poll_as_of(
    base: str, key: str, account: str, seen: dict[float, float], stop: asyncio.Event
) -> None:
    """Every distinct metricsCurrentAsOf of ``account`` and when it was first read."""
    async with httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {key}"}) as c:
        while not stop.is_set():
            r = await c.post("/graphql", json={"query": AS_OF, "variables": {"n": account}})
            value = r.json()["data"]["account"]["metricsCurrentAsOf"]
            if value is not None:
                seen.setdefault(epoch(value), time.time())
            try:
                await asyncio.wait_for(stop.wait(), 0.05)
            except TimeoutError:
                pass


async def staleness(url: str, redis: str, clients: int, seconds: float) -> dict[str, Any]:
    from db.engine import create_engine, create_sessionmaker

    engine = create_engine(url)
    sm = create_sessionmaker(engine)
    tenant_id, key = await new_tenant(sm, "asof")
    [account] = await add_accounts(sm, tenant_id, "HOT", 1, partner=True)
    await engine.dispose()
    seen: dict[float, float] = {}
    answered: list[float] = []
    with processes(url, workers=2, redis=redis) as procs:
        await make_catalog(procs.base, key)
        await set_interval(procs.base, key, 1)
        stop = asyncio.Event()
        poller = asyncio.create_task(poll_as_of(procs.base, key, account, seen, stop))
        await asyncio.sleep(2.5)  # the worker's first passes at the new interval
        mix = encode(procs.port, key, [account], MIX)
        procs.mark()
        pg0, m0 = postgres_cpu(), machine_cpu()
        r = await run_mix("127.0.0.1", procs.port, mix, clients, seconds, answered=answered)
        cpu = procs.cpu_since_mark()
        pg, machine = postgres_cpu() - pg0, machine_cpu() - m0
        last = max(answered)
        deadline = time.time() + 10
        while time.time() < deadline and not any(v >= last for v in seen):  # noqa: ASYNC110
            await asyncio.sleep(0.1)
        stop.set()
        await poller
    values = sorted(seen)
    by_value: list[float] = []
    by_read: list[float] = []
    uncovered = 0
    import bisect

    for t in answered:
        i = bisect.bisect_left(values, t)
        if i == len(values):
            uncovered += 1
            continue
        by_value.append(values[i] - t)
        by_read.append(seen[values[i]] - t)
    n = max(r["requests"], 1)
    return {
        "clients": clients,
        "seconds": r["seconds"],
        "writes_ok": r["ok"],
        "throughput": r["throughput"],
        "p50_ms": r["p50_ms"],
        "p99_ms": r["p99_ms"],
        "lock_competition": r["errors"].get("LOCK_COMPETITION", 0),
        "other_errors": {k: v for k, v in r["errors"].items() if k != "LOCK_COMPETITION"},
        "as_of_values_seen": len(values),
        "writes_not_covered": uncovered,
        "staleness_s": {
            "p50": round(pct(by_value, 0.5), 3),
            "p99": round(pct(by_value, 0.99), 3),
            "max": round(max(by_value), 3),
        },
        "staleness_as_read_s": {
            "p50": round(pct(by_read, 0.5), 3),
            "p99": round(pct(by_read, 0.99), 3),
            "max": round(max(by_read), 3),
        },
        "cpu_ms_per_request": {
            "api": round(1000 * cpu["api"] / n, 3),
            "worker": round(1000 * cpu["worker"] / n, 3),
            "postgres": round(1000 * pg / n, 3),
            "loadgen": r["loadgen_cpu_ms_per_req"],
            "machine": round(1000 * machine / n, 3),
        },
    }


async def pending_changes(url: str, tenant_id: int, account_id: int, n: int) -> None:
    """``n`` ledger rows on one partner account (a posted invoice of 1.00 each), as writes
    leave them, in one statement; then ANALYZE."""
    conn = await asyncpg.connect(make_url(url).set(drivername="postgresql").render_as_string(False))
    try:
        await conn.execute(
            "INSERT INTO metrics_change (tenant_id, account_id, d_invoice_balance, "
            "d_debit_memo_balance, d_unapplied_payment, d_unapplied_credit_memo, d_contracted_mrr) "
            "SELECT $1, $2, 1, 0, 0, 0, 0 FROM generate_series(1, $3)",
            tenant_id,
            account_id,
            n,
        )
        await conn.execute("ANALYZE metrics_change")
    finally:
        await conn.close()


async def sql_alone(url: str, tenant_id: int, account_id: int, rounds: int) -> dict[str, Any]:
    conn = await asyncpg.connect(make_url(url).set(drivername="postgresql").render_as_string(False))
    try:
        stmt = await conn.prepare("SELECT * FROM pb_live_metrics($1, $2)")
        times = []
        for _ in range(rounds):
            t0 = time.perf_counter()
            row = await stmt.fetchrow(tenant_id, account_id)
            times.append(time.perf_counter() - t0)
        plan = await conn.fetch(
            "EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) SELECT * FROM pb_live_metrics($1, $2)",
            tenant_id,
            account_id,
        )
    finally:
        await conn.close()
    return {
        "pending": row["pending"],
        "p50_ms": round(1000 * statistics.median(times), 3),
        "p99_ms": round(1000 * pct(times, 0.99), 3),
        "plan": [r[0] for r in plan],
    }


async def live_metrics(
    url: str, redis: str, seconds: float, sizes: tuple[int, int] = (100_000, 100)
) -> dict[str, Any]:
    from db.engine import create_engine, create_sessionmaker

    engine = create_engine(url)
    sm = create_sessionmaker(engine)
    tenant_id, key = await new_tenant(sm, "live")
    numbers = await add_accounts(sm, tenant_id, "LIVE", 2, partner=True)
    ids = await account_ids(sm, tenant_id, numbers)
    await engine.dispose()
    sizes = dict(zip(numbers, sizes, strict=True))
    for number, account_id in zip(numbers, ids, strict=True):
        await pending_changes(url, tenant_id, account_id, sizes[number])
    out: dict[str, Any] = {}
    with processes(url, workers=1, redis=redis) as procs:
        auth = {"Authorization": f"Bearer {key}"}
        for number, account_id in zip(numbers, ids, strict=True):
            body = json.dumps({"query": LIVE, "variables": {"n": number}}).encode()
            req = post_bytes("127.0.0.1", procs.port, "/graphql", body, auth)
            async with httpx.AsyncClient(base_url=procs.base, headers=auth) as c:
                got = await c.post("/graphql", json={"query": LIVE, "variables": {"n": number}})
                answer = got.json()["data"]["account"]
            assert answer["pendingMetricChanges"] == sizes[number], answer
            await run_mix(
                "127.0.0.1",
                procs.port,
                [(req, graphql_check("account", read=True), "live")],
                1,
                1.0,
            )
            procs.mark()
            pg0 = postgres_cpu()
            r = await run_mix(
                "127.0.0.1",
                procs.port,
                [(req, graphql_check("account", read=True), "live")],
                1,
                seconds,
            )
            cpu = procs.cpu_since_mark()
            pg = postgres_cpu() - pg0
            n = max(r["requests"], 1)
            out[str(sizes[number])] = {
                "graphql": {
                    "requests": r["requests"],
                    "errors": r["errors"],
                    "throughput": r["throughput"],
                    "p50_ms": r["p50_ms"],
                    "p99_ms": r["p99_ms"],
                    "cpu_ms_per_request": {
                        "api": round(1000 * cpu["api"] / n, 3),
                        "postgres": round(1000 * pg / n, 3),
                        "loadgen": r["loadgen_cpu_ms_per_req"],
                    },
                    "live_balance": answer["liveMetrics"]["balance"],
                },
                "sql": await sql_alone(
                    url, tenant_id, account_id, 200 if sizes[number] > 1000 else 2000
                ),
            }
    return out


async def quiet_pass(url: str, accounts: int, repeat: int) -> dict[str, Any]:
    from billing.metrics import refresh_tenant, state_sql
    from db.engine import create_engine, create_sessionmaker

    engine = create_engine(url)
    sm = create_sessionmaker(engine)
    tenant_id, _ = await new_tenant(sm, "quiet")
    t0 = time.perf_counter()
    await add_accounts(sm, tenant_id, "Q", accounts, partner=True)
    async with engine.begin() as conn:
        for table in ("account", "account_metrics", "metrics_change"):
            await conn.execute(text(f"ANALYZE {table}"))
    load_s = time.perf_counter() - t0
    passes = []
    for _ in range(repeat):
        c0, pg0 = time.process_time(), postgres_cpu()
        t0 = time.perf_counter()
        report = await refresh_tenant(engine, tenant_id)
        elapsed = time.perf_counter() - t0
        cpu, pg = time.process_time() - c0, postgres_cpu() - pg0
        assert report.current_as_of is not None, "the pass was not complete"
        t1 = time.perf_counter()
        async with sm() as s:
            behind, total = (
                await s.execute(
                    text(
                        "SELECT count(*) FILTER (WHERE current_as_of < :started), count(*) FROM ("
                        + state_sql(with_pending=False)
                        + "WHERE a.tenant_id = :t AND a.partner_account) s"
                    ),
                    {"t": tenant_id, "started": report.current_as_of},
                )
            ).one()
        check_s = time.perf_counter() - t1
        passes.append(
            {
                "pass_ms": round(1000 * elapsed, 2),
                "bench_cpu_ms": round(1000 * cpu, 2),
                "postgres_cpu_ms": round(1000 * pg, 2),
                "accounts": int(total),
                "accounts_behind": int(behind),
                "check_all_as_of_ms": round(1000 * check_s, 1),
                "accounts_refreshed": report.accounts_refreshed,
            }
        )
        await asyncio.sleep(0.2)
    await engine.dispose()
    return {"accounts": accounts, "load_s": round(load_s, 1), "passes": passes}


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--live-seconds", type=float, default=5.0)
    ap.add_argument("--quiet-accounts", type=int, default=100_000)
    ap.add_argument("--only", choices=["staleness", "live", "quiet"], nargs="+")
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--json")
    args = ap.parse_args()
    from bench.common import redis_url

    only = set(args.only or ["staleness", "live", "quiet"])
    out: dict[str, Any] = {}
    async with fresh_database(keep=args.keep) as url:
        if "staleness" in only:
            out["staleness"] = await staleness(url, redis_url(), args.clients, args.seconds)
            print(json.dumps({"staleness": out["staleness"]}, indent=1), flush=True)
        if "live" in only:
            out["live_metrics"] = await live_metrics(url, redis_url(), args.live_seconds)
            print(json.dumps({"live_metrics": out["live_metrics"]}, indent=1), flush=True)
        if "quiet" in only:
            out["quiet_pass"] = await quiet_pass(url, args.quiet_accounts, 3)
            print(json.dumps({"quiet_pass": out["quiet_pass"]}, indent=1), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1) + "\n")  # noqa: ASYNC240


if __name__ == "__main__":
    asyncio.run(main())
