"""The cost of the event feed and the speed of webhook delivery (issue 14).

1. Hot-account writes with events on and off in the same run: two API processes on the same
   database, one started with PARTNERBILL_EVENTS=0, driven in alternating windows with the
   hot mix of bench/hot.py (createOrder, createStandaloneInvoice, createPayment in turn) on
   one partner account and on one ordinary account. Per window: throughput, API CPU ms per
   write, PostgreSQL CPU ms per write (the whole server's processes: approximate).
2. Webhook delivery under the hot load with one endpoint (a receiver in this process): p50 and
   p99 from the event's commit (its occurred_at, the clock in the writing statement) to its
   arrival, and how long the backlog took to drain after the load stopped.
3. A 60 s receiver outage under the same load: the backlog it left and how long it took to
   drain once the receiver answered again (the endpoint retries with the production backoff).

Run: DATABASE_URL=postgresql://postgres@127.0.0.1:5432/postgres REDIS_URL=redis://127.0.0.1:6379/11
     .venv/bin/python -m bench.events [--seconds 10] [--clients 16] [--outage 60]
It creates a database of its own (dropped afterwards).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from datetime import datetime
from typing import Any

import httpx
from sqlalchemy import text

from bench.common import (
    Procs,
    add_accounts,
    fresh_database,
    new_tenant,
    postgres_cpu,
    redis_url,
)
from bench.hot import MIX, encode, make_catalog
from bench.lightclient import run_mix
from db.engine import create_engine, create_sessionmaker


class EnvProcs(Procs):
    """Procs with extra environment for both its processes."""

    def __init__(self, db_url: str, extra: dict[str, str], worker: bool = True) -> None:
        super().__init__(db_url, 1, redis=redis_url())
        self.extra = extra
        self.with_worker = worker

    def env(self) -> dict[str, str]:
        return {**super().env(), **self.extra}

    def start(self) -> None:
        super().start()
        if not self.with_worker:
            w = self.procs.pop("worker")
            w.terminate()
            w.wait(10)


class Receiver:
    """A webhook receiver on an asyncio server: records each event's arrival time, or answers
    503 while ``down``."""

    def __init__(self) -> None:
        self.arrived: dict[str, float] = {}  # event id -> wall clock of its first 2xx
        self.occurred: dict[str, float] = {}
        self.down = False
        self.requests = 0
        self.skipped = 0  # events of the tenant before the endpoint existed

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                body = await reader.readexactly(length)
                self.requests += 1
                if self.down:
                    writer.write(b"HTTP/1.1 503 Unavailable\r\nContent-Length: 0\r\n\r\n")
                else:
                    event = json.loads(body)
                    if event["id"] not in self.arrived:
                        self.arrived[event["id"]] = time.time()
                        self.occurred[event["id"]] = datetime.fromisoformat(
                            event["occurredAt"]
                        ).timestamp()
                    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return round(s[min(len(s) - 1, int(p * len(s)))], 3) if s else 0.0


async def window(procs: Procs, mix: Any, clients: int, seconds: float) -> dict[str, Any]:
    procs.mark()
    pg0 = postgres_cpu()
    r = await run_mix("127.0.0.1", procs.port, mix, clients, seconds)
    cpu = procs.cpu_since_mark()
    n = max(r["ok"], 1)
    return {
        "throughput": r["throughput"],
        "ok": r["ok"],
        "errors": r["errors"],
        "p99_ms": r["p99_ms"],
        "api_cpu_ms_per_write": round(1000 * cpu["api"] / n, 3),
        "pg_cpu_ms_per_write": round(1000 * (postgres_cpu() - pg0) / n, 3),
    }


async def events_in_db(sm: Any, tenant_id: int) -> int:
    async with sm() as s:
        q = await s.execute(
            text("SELECT count(*) FROM event WHERE tenant_id = :t"), {"t": tenant_id}
        )
        return int(q.scalar_one())


async def drain(sm: Any, tenant_id: int, receiver: Receiver, limit: float) -> float:
    """Seconds until every event of the tenant arrived (or ``limit``)."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < limit:
        if len(receiver.arrived) >= await events_in_db(sm, tenant_id) - receiver.skipped:
            return round(time.monotonic() - t0, 2)
        await asyncio.sleep(0.2)
    return float("nan")


async def main(seconds: float, clients: int, outage: float, rounds: int) -> dict[str, Any]:
    out: dict[str, Any] = {"seconds": seconds, "clients": clients}
    async with fresh_database() as db_url:
        engine = create_engine(db_url, pool_size=4, max_overflow=0)
        sm = create_sessionmaker(engine)
        tenant_id, key = await new_tenant(sm)
        partner = await add_accounts(sm, tenant_id, "P", 1, partner=True)
        ordinary = await add_accounts(sm, tenant_id, "O", 1, partner=False)
        on = EnvProcs(db_url, {"PARTNERBILL_EVENTS": "1"})
        off = EnvProcs(db_url, {"PARTNERBILL_EVENTS": "0"}, worker=False)
        on.start()
        off.start()
        try:
            await make_catalog(on.base, key)
            # 1. events on vs off, alternating windows
            for target, accounts in (("partner", partner), ("ordinary", ordinary)):
                res: dict[str, list[dict[str, Any]]] = {"on": [], "off": []}
                for _ in range(rounds):
                    for label, procs in (("on", on), ("off", off)):
                        mix = encode(procs.port, key, accounts, MIX)
                        res[label].append(await window(procs, mix, clients, seconds))
                out[f"writes_{target}"] = res
                print(target, json.dumps(res), flush=True)

            # 2. webhook delivery under the hot load, one endpoint
            receiver = Receiver()
            receiver.skipped = await events_in_db(sm, tenant_id)
            server = await asyncio.start_server(receiver.handle, "127.0.0.1", 0)
            port = server.sockets[0].getsockname()[1]
            async with httpx.AsyncClient(headers={"Authorization": f"Bearer {key}"}) as http:
                r = await http.post(
                    on.base + "/graphql",
                    json={
                        "query": "mutation($u: String!) { createWebhookEndpoint(input: {url: $u})"
                        " { webhookEndpoint { id } errors { code } } }",
                        "variables": {"u": f"http://127.0.0.1:{port}/hook"},
                    },
                )
                assert r.json()["data"]["createWebhookEndpoint"]["errors"] == [], r.text
            await asyncio.sleep(1.0)
            mix = encode(on.port, key, partner, MIX)
            load = await window(on, mix, clients, seconds * 2)
            left = await events_in_db(sm, tenant_id) - receiver.skipped - len(receiver.arrived)
            drained = await drain(sm, tenant_id, receiver, 600)
            lat = [receiver.arrived[i] - receiver.occurred[i] for i in receiver.arrived]
            out["delivery"] = {
                "load": load,
                "events": len(receiver.arrived),
                "backlog_at_load_end": left,
                "drained_after_load_s": drained,
                "commit_to_delivery_p50_s": pct(lat, 0.50),
                "commit_to_delivery_p99_s": pct(lat, 0.99),
            }
            print("delivery", json.dumps(out["delivery"]), flush=True)

            # 3. a receiver outage under load
            receiver.down = True
            before = len(receiver.arrived)
            load_task = asyncio.create_task(window(on, mix, clients, min(outage, seconds * 2)))
            await asyncio.sleep(outage)
            await load_task
            backlog = await events_in_db(sm, tenant_id) - receiver.skipped - len(receiver.arrived)
            receiver.down = False
            drained = await drain(sm, tenant_id, receiver, 900)
            out["outage"] = {
                "outage_s": outage,
                "backlog_events": backlog,
                "delivered_after": len(receiver.arrived) - before,
                "drained_after_receiver_back_s": drained,
            }
            print("outage", json.dumps(out["outage"]), flush=True)
            server.close()
        finally:
            on.stop()
            off.stop()
            await engine.dispose()
    return out


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--outage", type=float, default=60.0)
    ap.add_argument("--rounds", type=int, default=2)
    a = ap.parse_args()
    print(json.dumps(asyncio.run(main(a.seconds, a.clients, a.outage, a.rounds)), indent=1))
