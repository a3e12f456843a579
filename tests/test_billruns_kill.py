"""A real worker process killed in the middle of a bill run; a restarted one finishes it
and every account is billed exactly once."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from datetime import date
from pathlib import Path
from typing import Any

from sqlalchemy import text

from billing import billruns
from jobs import enqueue
from tests import rating_fixtures as rf
from tests.billrun_worker import arq_pool

ROOT = Path(__file__).resolve().parent.parent
ACCOUNTS = 12
SUBS = 20
STUCK = 5  # the worker blocks on the 6th account, after 5 are DONE


def start_worker(database_url: str, redis_url: str, log: Path) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "PYTHONPATH": str(ROOT),
    }
    out = log.open("ab")
    return subprocess.Popen(
        [sys.executable, "-m", "arq", "jobs.worker.WorkerSettings"],
        cwd=ROOT,
        env=env,
        stdout=out,
        stderr=out,
    )


async def wait_for(
    check: Any, what: str, proc: subprocess.Popen[bytes], log: Path, limit: float = 60
) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    while not await check():
        if proc.poll() is not None or loop.time() > deadline:
            tail = log.read_text()[-4000:]  # noqa: ASYNC240 - only on failure
            raise AssertionError(f"never got {what}; worker log:\n{tail}")
        await asyncio.sleep(0.05)


async def test_killed_worker_resumes_and_bills_each_account_once(
    sessionmaker: Any, engine: Any, tenant: Any, database_url: str, redis_url: str, tmp_path: Path
) -> None:
    t = tenant.id
    async with sessionmaker.begin() as s:
        accounts = [await rf.account(s, t, bcd=1, batch=f"kill{t}") for _ in range(ACCOUNTS)]
        plan = await rf.plan(s, t)
        for a in accounts:
            for _ in range(SUBS):
                await rf.subscription(
                    s,
                    t,
                    a["id"],
                    start=date(2026, 3, 1),
                    plan_ids=plan,
                    charges=[
                        {"name": "Seat", "price": "10", "charge_model": "PER_UNIT", "quantity": "2"}
                    ],
                )
        run = await billruns.create_bill_run(
            s, t, billruns.BillRunData(target_date=date(2026, 3, 1), batch=f"kill{t}")
        )
    assert run["accounts_total"] == ACCOUNTS
    pool = await arq_pool(redis_url)
    await pool.flushdb()
    await enqueue.enqueue_bill_run(pool, t, run["id"], enqueue.first_generation(run["created_at"]))

    # Hold the charges of the 6th account: the worker bills 5 accounts, then waits there.
    stuck = sorted(a["id"] for a in accounts)[STUCK]
    blocker = await engine.connect()
    tx = await blocker.begin()
    await blocker.execute(
        text(
            "SELECT c.id FROM subscription_charge c JOIN subscription s "
            "ON s.id = c.subscription_id "
            "WHERE s.invoice_owner_account_id = :a FOR UPDATE OF c"
        ),
        {"a": stuck},
    )

    async def count(status: str) -> int:
        async with sessionmaker() as s:
            return int(
                (
                    await s.execute(
                        text(
                            "SELECT count(*) FROM bill_run_account WHERE bill_run_id = "
                            ":r AND status = :st"
                        ),
                        {"r": run["id"], "st": status},
                    )
                ).scalar_one()
            )

    async def items() -> int:
        async with sessionmaker() as s:
            return int(
                (
                    await s.execute(
                        text(
                            "SELECT count(*) FROM invoice_item ii JOIN invoice i ON "
                            "i.id = ii.invoice_id WHERE i.bill_run_id = :r"
                        ),
                        {"r": run["id"]},
                    )
                ).scalar_one()
            )

    log = tmp_path / "worker.log"  # pytest's own temporary directory, which it prunes
    worker = start_worker(database_url, redis_url, log)
    try:

        async def five_done() -> bool:
            return await count("DONE") == STUCK

        await wait_for(five_done, f"{STUCK} accounts DONE", worker, log)
        # The stuck account's items are written but not committed; kill the worker there.
        await asyncio.sleep(0.3)
        worker.send_signal(signal.SIGKILL)
        worker.wait(10)
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait(10)
        await tx.rollback()
        await blocker.close()
    assert await count("DONE") == STUCK and await count("PENDING") == ACCOUNTS - STUCK
    async with sessionmaker() as s:
        assert (await billruns.get_bill_run_by_id(s, run["id"]))["status"] == "PROCESSING"

    worker = start_worker(database_url, redis_url, log)
    try:

        async def completed() -> bool:
            async with sessionmaker() as s:
                return (await billruns.get_bill_run_by_id(s, run["id"]))["status"] == "COMPLETED"

        await wait_for(completed, "the run COMPLETED", worker, log)
    finally:
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(15)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait(10)
        await pool.aclose()

    assert await count("DONE") == ACCOUNTS
    async with sessionmaker() as s:
        per_account = (
            await s.execute(
                text(
                    "SELECT i.account_id, count(DISTINCT i.id), count(ii.id), "
                    "sum(ii.amount) FROM invoice i "
                    "JOIN invoice_item ii ON ii.invoice_id = i.id WHERE "
                    "i.bill_run_id = :r GROUP BY i.account_id"
                ),
                {"r": run["id"]},
            )
        ).all()
        per_charge = (
            await s.execute(
                text(
                    "SELECT count(*) FROM invoice_item ii JOIN invoice i ON i.id = ii.invoice_id "
                    "WHERE i.bill_run_id = :r GROUP BY ii.subscription_charge_id "
                    "HAVING count(*) <> 1"
                ),
                {"r": run["id"]},
            )
        ).all()
        empty = (
            await s.execute(
                text(
                    "SELECT count(*) FROM invoice i WHERE i.tenant_id = :t AND NOT EXISTS "
                    "(SELECT 1 FROM invoice_item ii WHERE ii.invoice_id = i.id)"
                ),
                {"t": t},
            )
        ).scalar_one()
    assert sorted(r[0] for r in per_account) == sorted(a["id"] for a in accounts)
    assert {tuple(r[1:]) for r in per_account} == {(1, SUBS, 20 * SUBS)}
    assert per_charge == [] and empty == 0
    assert await items() == ACCOUNTS * SUBS
