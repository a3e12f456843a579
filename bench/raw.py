"""Scenario 4, the raw ceilings of the same PostgreSQL: single-row INSERT transactions per
second (concurrent autocommit connections) and multi-row INSERT rows per second."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import asyncpg
from sqlalchemy.engine import make_url

DDL = """CREATE TABLE IF NOT EXISTS bench_raw (
  id bigserial PRIMARY KEY, account_id bigint NOT NULL, amount numeric(18, 4) NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now())"""


def dsn(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


async def single_row(pool: asyncpg.Pool, clients: int, seconds: float) -> dict[str, Any]:
    done = 0
    stop = time.perf_counter() + seconds

    async def one(i: int) -> None:
        nonlocal done
        async with pool.acquire() as conn:
            while time.perf_counter() < stop:
                await conn.execute(
                    "INSERT INTO bench_raw (account_id, amount) VALUES ($1, $2)", i, 25
                )
                done += 1

    t0 = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(clients)))
    elapsed = time.perf_counter() - t0
    return {"clients": clients, "transactions": done, "tps": round(done / elapsed, 1)}


async def multi_row(pool: asyncpg.Pool, batch: int, seconds: float) -> dict[str, Any]:
    rows = 0
    ids = list(range(batch))
    amounts = [25] * batch
    stop = time.perf_counter() + seconds
    t0 = time.perf_counter()
    async with pool.acquire() as conn:
        while time.perf_counter() < stop:
            await conn.execute(
                "INSERT INTO bench_raw (account_id, amount) "
                "SELECT * FROM unnest($1::bigint[], $2::numeric[])",
                ids,
                amounts,
            )
            rows += batch
    elapsed = time.perf_counter() - t0
    return {"batch": batch, "rows": rows, "rows_per_s": round(rows / elapsed, 1)}


async def run(url: str, seconds: float = 10.0) -> dict[str, Any]:
    pool = await asyncpg.create_pool(dsn(url), min_size=1, max_size=32)
    try:
        async with pool.acquire() as conn:
            await conn.execute(DDL)
        out: dict[str, Any] = {"single_row": [], "multi_row": None}
        for clients in (1, 8, 32):
            out["single_row"].append(await single_row(pool, clients, seconds))
        out["multi_row"] = await multi_row(pool, 1000, seconds)
        async with pool.acquire() as conn:
            out["rows_in_table"] = await conn.fetchval("SELECT count(*) FROM bench_raw")
        expected = sum(r["transactions"] for r in out["single_row"]) + out["multi_row"]["rows"]
        out["all_rows_present"] = out["rows_in_table"] == expected
        return out
    finally:
        await pool.close()
