"""Bulk writes (createStandaloneInvoices): a migration's invoices through the API.

Scenario: ``--invoices`` posted standalone invoices (one item each, default 200,000) into ONE
partner account, sent through the HTTP API in calls of ``--batch`` rows (default 1,000),
``--parallel`` calls in flight at once (default 4), served by ``partnerbill serve --workers
2`` (two API processes, production settings: bench.common.server_env). Then the same rows
into ONE ordinary account. Per load: wall time, invoices/s, API CPU per invoice (the serve
process and its children, psutil), PostgreSQL CPU per invoice (the backends serving the
bench's database, found by the database name in their process title: the server's shared
processes, WAL writer and checkpointer, are not counted), and the LOCK_COMPETITION answers.
COPY of the same rows (invoice and invoice_item, asyncpg's binary COPY, into an account of
its own) is measured in the same run, and the ratio reported. Last, the partner account is
refreshed (billing.metrics.refresh_tenant, the periodic refresh) and timed, and its stored
metrics compared with the recompute from its documents; the ordinary account's metrics are
compared with the recompute right after its load.

The client is a bare asyncio HTTP/1.1 sender over keep-alive connections with the request
bodies encoded before the clock starts (bench/lightclient.py's approach).

    DATABASE_URL=postgresql://postgres@127.0.0.1:5432/postgres \\
    REDIS_URL=redis://127.0.0.1:6379/11 python -m bench.bulk
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import time
from collections import Counter
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import psutil
from sqlalchemy import text
from sqlalchemy.engine import make_url

from bench.common import (
    ROOT,
    add_accounts,
    free_port,
    fresh_database,
    new_tenant,
    redis_url,
    server_env,
)
from bench.lightclient import post_bytes

# What a migration client needs back: the count and each row's errors (as partnerbill import asks).
MUTATION = """mutation($rows: [CreateStandaloneInvoiceInput!]!) {
  createStandaloneInvoices(input: {invoices: $rows}) {
    count results { errors { code field } } } }"""


def bodies(account: str, invoices: int, batch: int) -> list[bytes]:
    """The request bodies: ``invoices`` posted invoices of one item, ``batch`` per call."""
    out = []
    for start in range(0, invoices, batch):
        rows = [
            {
                "accountNumber": account,
                "invoiceDate": "2026-10-31",
                "status": "POSTED",
                "items": [{"chargeName": "Migrated balance", "amount": f"{(n % 997) + 1}.25"}],
            }
            for n in range(start, min(start + batch, invoices))
        ]
        out.append(json.dumps({"query": MUTATION, "variables": {"rows": rows}}).encode())
    return out


async def send_all(port: int, key: str, payloads: list[bytes], parallel: int) -> dict[str, Any]:
    """Every payload once, ``parallel`` keep-alive connections each sending one at a time."""
    queue = list(reversed(payloads))
    written = 0
    codes: Counter[str] = Counter()
    headers = {"Authorization": f"Bearer {key}"}

    async def conn() -> None:
        nonlocal written
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while queue:
                body = queue.pop()
                writer.write(post_bytes("127.0.0.1", port, "/graphql", body, headers))
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                status = int(head[9:12])
                data = json.loads(await reader.readexactly(length))
                if status != 200 or data.get("errors"):
                    codes[f"HTTP{status}:{str(data.get('errors'))[:80]}"] += 1
                    continue
                payload = data["data"]["createStandaloneInvoices"]
                found = Counter(e["code"] for r in payload["results"] for e in r["errors"])
                if payload["count"] == 0 and found.get("LOCK_COMPETITION"):
                    # The call as a whole was refused, retryable: send it again, as the
                    # importer does, and count the refused call once.
                    codes["LOCK_COMPETITION"] += 1
                    queue.insert(0, body)
                    continue
                written += payload["count"]
                codes.update(found)
        finally:
            writer.close()

    t0 = time.perf_counter()
    await asyncio.gather(*(conn() for _ in range(parallel)))
    return {"seconds": time.perf_counter() - t0, "written": written, "errors": dict(codes)}


def tree_cpu(pid: int) -> float:
    """CPU seconds of a process and its children."""
    p = psutil.Process(pid)
    total = 0.0
    for q in [p, *p.children(recursive=True)]:
        try:
            t = q.cpu_times()
            total += t.user + t.system
        except psutil.Error:
            pass
    return total


def backends_cpu(dbname: str) -> float:
    """CPU seconds of the PostgreSQL backends connected to ``dbname`` (process titles
    read "postgres: user dbname host(port) ...")."""
    total = 0.0
    for p in psutil.process_iter(["name", "cmdline"]):
        try:
            cmd = " ".join(p.info["cmdline"] or [])
            if cmd.startswith("postgres:") and f" {dbname} " in cmd:
                t = p.cpu_times()
                total += t.user + t.system
        except psutil.Error:
            pass
    return total


async def wait_healthy(port: int, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.time() + 60
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("partnerbill serve exited early")
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            head = await reader.readuntil(b"\r\n\r\n")
            writer.close()
            if int(head[9:12]) == 200:
                await asyncio.sleep(2.0)  # the other workers finish importing
                return
        except OSError:
            pass
        await asyncio.sleep(0.3)
    raise RuntimeError("partnerbill serve did not become healthy")


async def load(
    label: str, port: int, key: str, pid: int, dbname: str, payloads: list[bytes], parallel: int
) -> dict[str, Any]:
    api0, pg0 = tree_cpu(pid), backends_cpu(dbname)
    r = await send_all(port, key, payloads, parallel)
    api, pg = tree_cpu(pid) - api0, backends_cpu(dbname) - pg0
    n = max(r["written"], 1)
    out = {
        "load": label,
        "invoices": r["written"],
        "seconds": round(r["seconds"], 2),
        "invoices_per_s": round(r["written"] / r["seconds"]),
        "api_cpu_ms_per_invoice": round(1000 * api / n, 4),
        "pg_cpu_ms_per_invoice": round(1000 * pg / n, 4),
        "lock_competition": r["errors"].get("LOCK_COMPETITION", 0),
        "errors": r["errors"],
    }
    print(json.dumps(out), flush=True)
    return out


async def copy_rows(
    url: str, dbname: str, tenant_id: int, account_id: int, n: int
) -> dict[str, Any]:
    """The same rows by COPY (invoice, then invoice_item), ids drawn first."""
    dsn = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    conn = await asyncpg.connect(dsn)
    try:
        pg0, t0 = backends_cpu(dbname), time.perf_counter()
        async with conn.transaction():
            ids = [
                r[0]
                for r in await conn.fetch(
                    "SELECT nextval(pg_get_serial_sequence('invoice', 'id')) "
                    "FROM generate_series(1, $1)",
                    n,
                )
            ]
            d, now = date(2026, 10, 31), datetime.now(UTC)
            amounts = [Decimal(f"{(k % 997) + 1}.25") for k in range(n)]
            await conn.copy_records_to_table(
                "invoice",
                columns=["id", "tenant_id", "invoice_number", "account_id", "currency",
                         "invoice_date", "due_date", "status", "amount", "balance", "source",
                         "posted_at"],
                records=[
                    (i, tenant_id, f"COPY{k:08d}", account_id, "USD", d, d, "POSTED",
                     amounts[k], amounts[k], "STANDALONE", now)
                    for k, i in enumerate(ids)
                ],
            )  # fmt: skip
            await conn.copy_records_to_table(
                "invoice_item",
                columns=["tenant_id", "invoice_id", "charge_name", "quantity", "unit_price",
                         "amount"],
                records=[
                    (tenant_id, i, "Migrated balance", Decimal(1), amounts[k], amounts[k])
                    for k, i in enumerate(ids)
                ],
            )  # fmt: skip
        seconds, pg = time.perf_counter() - t0, backends_cpu(dbname) - pg0
    finally:
        await conn.close()
    out = {
        "load": "COPY",
        "invoices": n,
        "seconds": round(seconds, 2),
        "invoices_per_s": round(n / seconds),
        "pg_cpu_ms_per_invoice": round(1000 * pg / n, 4),
    }
    print(json.dumps(out), flush=True)
    return out


async def check_account(sm: Any, tenant_id: int, number: str) -> dict[str, Any]:
    from billing import metrics as met
    from billing.accounts import get_account

    async with sm() as s:
        acc = await get_account(s, tenant_id, number)
        stored, truth = await met.stored_metrics(s, acc["id"]), await met.recompute(s, acc["id"])
        pending = (
            await s.execute(
                text("SELECT count(*) FROM metrics_change WHERE account_id = :a"),
                {"a": acc["id"]},
            )
        ).scalar_one()
    return {
        "account": number,
        "total_invoice_balance": str(stored.total_invoice_balance),
        "recomputed": str(truth.total_invoice_balance),
        "matches_recompute": stored.values() == truth.values(),
        "ledger_rows_pending": int(pending),
    }


async def run(invoices: int, batch: int, parallel: int, workers: int) -> dict[str, Any]:
    from db.engine import create_engine, create_sessionmaker

    async with fresh_database() as url:
        dbname = make_url(url).database
        assert dbname is not None
        engine = create_engine(url)
        sm = create_sessionmaker(engine)
        tenant_id, key = await new_tenant(sm, "bulk")
        (partner,) = await add_accounts(sm, tenant_id, "PARTNER", 1, partner=True)
        (ordinary,) = await add_accounts(sm, tenant_id, "ORDINARY", 1, partner=False)
        (copied,) = await add_accounts(sm, tenant_id, "COPY", 1, partner=True)
        port = free_port()
        env = server_env(url, redis_url())
        log = Path(ROOT / "bench" / "results" / "bulk-serve.log")
        with open(log, "wb") as serve_log:  # noqa: ASYNC230 - before the load starts
            proc = subprocess.Popen(  # noqa: ASYNC220
                [sys.executable, "-m", "server.cli", "serve", "--workers", str(workers),
                 "--port", str(port)],
                cwd=ROOT, env=env, stdout=serve_log, stderr=serve_log,
            )  # fmt: skip
        try:
            await wait_healthy(port, proc)
            # Warm-up (prepared statements, caches), into an account of its own.
            (warm,) = await add_accounts(sm, tenant_id, "WARM", 1, partner=True)
            await send_all(port, key, bodies(warm, 4 * batch, batch), parallel)
            results = [
                await load("partner", port, key, proc.pid, dbname,
                           bodies(partner, invoices, batch), parallel),
            ]  # fmt: skip
            results.append(
                await load("ordinary", port, key, proc.pid, dbname,
                           bodies(ordinary, invoices, batch), parallel)
            )  # fmt: skip
        finally:
            proc.terminate()
            proc.wait(20)
        async with sm() as s:
            account_id = (
                await s.execute(
                    text("SELECT id FROM account WHERE tenant_id = :t AND account_number = :n"),
                    {"t": tenant_id, "n": copied},
                )
            ).scalar_one()
        copy = await copy_rows(url, dbname, tenant_id, account_id, invoices)
        ordinary_check = await check_account(sm, tenant_id, ordinary)
        from billing.metrics import refresh_tenant

        t0 = time.perf_counter()
        report = await refresh_tenant(engine, tenant_id)
        refresh_s = time.perf_counter() - t0
        partner_check = await check_account(sm, tenant_id, partner)
        await engine.dispose()
    out = {
        "invoices": invoices,
        "batch": batch,
        "parallel": parallel,
        "api_processes": workers,
        "loads": results,
        "copy": copy,
        "api_over_copy_time": round(results[0]["seconds"] / copy["seconds"], 1),
        "refresh": {
            "seconds": round(refresh_s, 3),
            "accounts_refreshed": report.accounts_refreshed,
            "ledger_rows_folded": report.changes_folded,
        },
        "partner_check": partner_check,
        "ordinary_check": ordinary_check,
    }
    print(json.dumps(out, indent=2), flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--invoices", type=int, default=200_000)
    ap.add_argument("--batch", type=int, default=1000)
    ap.add_argument("--parallel", type=int, default=4)
    ap.add_argument("--workers", type=int, default=2)
    a = ap.parse_args()
    asyncio.run(run(a.invoices, a.batch, a.parallel, a.workers))


if __name__ == "__main__":
    main()
