"""Scenario 2, framework cost: the same POSTED createStandaloneInvoice work behind a bare
Starlette JSON endpoint (bench/bare_app.py) and behind /graphql, each served by uvicorn in
its own process, spread over ordinary accounts. Ratio = GraphQL / bare throughput."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections import Counter
from typing import Any

import httpx

from bench.common import ROOT, Procs, add_accounts, new_tenant, processes
from bench.hot import INVOICE

BODY = {
    "invoiceDate": "2026-03-01",
    "status": "POSTED",
    "items": [{"chargeName": "Seat", "quantity": "2", "unitPrice": "12.50"}],
}


async def drive(
    base: str, key: str, path: str, accounts: list[str], clients: int, seconds: float
) -> dict[str, Any]:
    ok, errors, lat = 0, Counter[str](), []
    n = 0
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(
        base_url=base, headers={"Authorization": f"Bearer {key}"}, limits=limits, timeout=60
    ) as client:
        stop = time.perf_counter() + seconds

        async def one() -> None:
            nonlocal ok, n
            while time.perf_counter() < stop:
                n += 1
                acct = accounts[n % len(accounts)]
                if path == "/graphql":
                    payload = {
                        "query": INVOICE,
                        "variables": {"i": {"accountNumber": acct, **BODY}},
                    }
                else:
                    payload = {"accountNumber": acct, **BODY}
                t0 = time.perf_counter()
                try:
                    r = await client.post(path, json=payload)
                    body = r.json()
                except (httpx.HTTPError, ValueError) as e:
                    errors[type(e).__name__] += 1
                    continue
                lat.append(time.perf_counter() - t0)
                if path == "/graphql":
                    body = (body.get("data") or {}).get("createStandaloneInvoice") or {
                        "errors": [{"code": "GRAPHQL"}]
                    }
                if r.status_code == 200 and not body.get("errors"):
                    ok += 1
                else:
                    errors[str((body.get("errors") or [{}])[0].get("code", r.status_code))] += 1

        t0 = time.perf_counter()
        await asyncio.gather(*(one() for _ in range(clients)))
        elapsed = time.perf_counter() - t0
    lat.sort()
    return {
        "ok": ok,
        "throughput": round(ok / elapsed, 1),
        "p50_ms": round(lat[len(lat) // 2] * 1000, 1) if lat else 0,
        "p99_ms": round(lat[int(len(lat) * 0.99)] * 1000, 1) if lat else 0,
        "errors": dict(errors),
    }


class BareProcs(Procs):
    def start(self) -> None:
        self.procs["bare"] = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "bench.bare_app:bare_app_from_env",
                "--factory",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--log-level",
                "warning",
                "--no-access-log",
                "--timeout-keep-alive",
                "75",
            ],
            cwd=ROOT,
            env=self.env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.time() + 30
        while time.time() < deadline:
            try:
                httpx.post(self.base + "/invoice", json={}, timeout=1)
                break
            except httpx.HTTPError:
                time.sleep(0.2)
        self.mark()


async def run(
    url: str, clients: int, seconds: float, *, redis: str | None = None
) -> dict[str, Any]:
    from db.engine import create_engine, create_sessionmaker

    engine = create_engine(url)
    sm = create_sessionmaker(engine)
    tenant_id, key = await new_tenant(sm, "framework")
    accounts = await add_accounts(sm, tenant_id, "M", 1000, partner=False)
    out: dict[str, Any] = {"clients": clients, "seconds": seconds}
    bare = BareProcs(url)
    bare.start()
    try:
        await drive(bare.base, key, "/invoice", accounts, 4, 1.0)
        bare.mark()
        out["bare"] = await drive(bare.base, key, "/invoice", accounts, clients, seconds)
        out["bare"]["cpu_s"] = bare.cpu_since_mark()
    finally:
        bare.stop()
    with processes(url, redis=redis) as procs:
        await drive(procs.base, key, "/graphql", accounts, 4, 1.0)
        procs.mark()
        out["graphql"] = await drive(procs.base, key, "/graphql", accounts, clients, seconds)
        out["graphql"]["cpu_s"] = procs.cpu_since_mark()
    out["ratio_graphql_to_bare"] = round(
        out["graphql"]["throughput"] / max(out["bare"]["throughput"], 1e-9), 3
    )
    await engine.dispose()
    return out
