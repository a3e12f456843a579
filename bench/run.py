"""The partnerbill benchmark suite, one command:

    DATABASE_URL=postgresql://postgres@127.0.0.1:5432/postgres REDIS_URL=redis://127.0.0.1:6379/11 \
        python bench/run.py --scenario all [--quick] [--repeat 3] [--json out.json]
    python bench/run.py --scenario hot [--workers 2] [--json hot.json --plot bench/results/hot.png]
    python bench/run.py --scenario hot --orders-only --workers 2   # createOrder vs the ceiling
    python bench/run.py --scenario seed [--customers 1000] [--subscriptions 100000] \
        [--per-order 50] [--order-clients 16]

Each run creates a fresh database on the server of DATABASE_URL (dropped afterwards); the
writes and hot scenarios start a PostgreSQL of their own unless given --database-url.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import fresh_database
from bench.writes import OPS as WRITE_OPS

SCENARIOS = ("raw", "refresh", "framework", "hot", "freshness", "seed")
EXTRA = ("writes",)  # run by name only, not by "all": it starts a PostgreSQL of its own


async def one(scenario: str, args: argparse.Namespace) -> dict[str, Any]:
    if scenario == "writes":
        from bench import writes

        return await writes.run(
            database_url=args.database_url,
            connections=2 if args.quick else args.connections,
            seconds=1.0 if args.quick else args.seconds,
            warmup=0.3 if args.quick else 1.0,
            workers=args.workers,
            ceiling=args.ceiling,
            count=not args.no_round_trips,
            ops=tuple(args.ops or writes.OPS),
            background_accounts=20 if args.quick else 1000,
            keep=args.keep,
        )
    if scenario == "hot":
        from bench import hot

        return await hot.scenario(
            database_url=args.database_url,
            keep=args.keep,
            clients_list=[4] if args.quick else args.clients,
            seconds=1.0 if args.quick else args.seconds,
            warmup=0.3 if args.quick else 1.0,
            spread=20 if args.quick else 1000,
            workers=args.workers,
            orders_only=args.orders_only,
        )
    async with fresh_database(keep=args.keep) as url:
        if scenario == "raw":
            from bench import raw

            return await raw.run(url, 2.0 if args.quick else args.seconds)
        if scenario == "refresh":
            from bench import refresh

            return await refresh.run(url, quick=args.quick)
        if scenario == "framework":
            from bench import framework

            clients = 8 if args.quick else 32
            return await framework.run(url, clients, 3.0 if args.quick else args.seconds)
        if scenario == "freshness":
            from bench import freshness

            if args.quick:
                return await freshness.run(url, seconds=8, interval=2, accounts=20, clients=4)
            return await freshness.run(
                url,
                seconds=args.freshness_seconds,
                interval=args.interval,
                accounts=args.freshness_accounts,
                clients=args.freshness_clients,
            )
        if scenario == "seed":
            from bench import seed

            return await seed.run(
                url,
                quick=args.quick,
                customers=args.customers,
                subscriptions=args.subscriptions,
                per_order=args.per_order,
                clients=args.order_clients,
                api_workers=args.workers,
            )
        raise SystemExit(f"unknown scenario {scenario}")


async def main() -> tuple[dict[str, list[dict[str, Any]]], str | None]:
    ap = argparse.ArgumentParser(description="partnerbill benchmarks")
    ap.add_argument("--scenario", default="all", choices=[*SCENARIOS, *EXTRA, "all"])
    ap.add_argument("--quick", action="store_true", help="a ~1-minute smoke at tiny sizes")
    ap.add_argument("--clients", type=int, nargs="+", default=[8, 32, 128])
    ap.add_argument("--seconds", type=float, default=15.0, help="length of each load window")
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--freshness-seconds", type=float, default=120.0, help="freshness: load length")
    ap.add_argument(
        "--interval", type=int, default=10, help="freshness: metricsRefreshInterval (s)"
    )
    ap.add_argument(
        "--freshness-accounts", type=int, default=100, help="freshness: partner accounts"
    )
    ap.add_argument(
        "--freshness-clients", type=int, default=16, help="freshness: concurrent clients"
    )
    seed = ap.add_argument_group(
        "seed scenario", "default 1,000 customers and 100,000 subscriptions; --quick 20 and 1,000"
    )
    seed.add_argument("--customers", type=int, help="end-customer accounts")
    seed.add_argument("--subscriptions", type=int, help="subscriptions created by the orders")
    seed.add_argument("--per-order", type=int, default=50, help="subscriptions per createOrder")
    seed.add_argument(
        "--order-clients", type=int, default=16, help="concurrent createOrder clients"
    )
    wr = ap.add_argument_group(
        "writes scenario", "the cost of one write; its own PostgreSQL with pg_stat_statements"
    )
    wr.add_argument("--connections", type=int, default=16, help="keep-alive connections")
    wr.add_argument(
        "--workers", type=int, default=1, help="uvicorn worker processes (writes, hot, seed)"
    )
    wr.add_argument("--ceiling", action="store_true", help="also the raw asyncpg order endpoint")
    wr.add_argument(
        "--ops",
        nargs="+",
        choices=WRITE_OPS,
        help="writes: only these operations (default: all)",
    )
    wr.add_argument(
        "--no-round-trips", action="store_true", help="writes: skip the counting-proxy pass"
    )
    wr.add_argument(
        "--database-url",
        help="writes and hot: use this PostgreSQL server instead of starting one (statement "
        "counts need pg_stat_statements preloaded there)",
    )
    hot = ap.add_argument_group(
        "hot scenario",
        "light keep-alive client, N = --clients, --workers API processes, its own PostgreSQL",
    )
    hot.add_argument(
        "--orders-only",
        action="store_true",
        help="only createOrder on one partner account, beside the bare asyncpg ceiling",
    )
    ap.add_argument("--plot", help="hot: write the throughput-against-N plot (PNG) here")
    ap.add_argument("--json", help="write all results here")
    ap.add_argument("--keep", action="store_true", help="keep the bench databases")
    args = ap.parse_args()
    names = SCENARIOS if args.scenario == "all" else (args.scenario,)
    out: dict[str, list[dict[str, Any]]] = {}
    for name in names:
        for i in range(args.repeat):
            print(f"== {name} (run {i + 1}/{args.repeat})", flush=True)
            res = await one(name, args)
            out.setdefault(name, []).append(res)
            if args.json:  # after every run, so a later failure keeps what was measured
                dump = json.dumps(out, indent=1, default=str)
                await asyncio.to_thread(Path(args.json).write_text, dump)
            if name != "hot":
                print(json.dumps(res, indent=1, default=str), flush=True)
    if args.plot and "hot" in out:
        from bench.summarize import hot_plot

        print("plot:", hot_plot(out["hot"], Path(args.plot)), flush=True)
    return out, args.json


if __name__ == "__main__":
    results, path = asyncio.run(main())
    if path:
        Path(path).write_text(json.dumps(results, indent=1, default=str))
