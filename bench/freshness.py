"""Scenario 3, freshness: sustained writes on partner accounts while the worker's periodic
refresh runs with the tenant's metricsRefreshInterval (10 s), for 2 minutes.

Staleness of a write: the time from sending it until the first lastMetricsUpdate stamp of
its account that is not earlier than the write's response (a refresh whose transaction
started after the write committed folds it). Measured from the send, this is an upper
bound. The load generator polls the stamps of all the tenant's partner accounts every
0.2 s (a stamp lasts a whole interval, so none is missed). The refresh's own cost comes
from the cron tick results arq keeps in Redis (per tenant)."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import Counter, defaultdict
from typing import Any

import httpx
from sqlalchemy import text

from bench.common import add_accounts, machine_cpu, new_tenant, processes
from bench.hot import KINDS, make_catalog, request

SETTINGS = """mutation($i: UpdateTenantSettingsInput!) { updateTenantSettings(input: $i) {
  tenantSettings { metricsRefreshInterval } errors { code } } }"""


async def set_interval(base: str, key: str, seconds: int) -> None:
    async with httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {key}"}) as c:
        r = await c.post(
            "/graphql",
            json={"query": SETTINGS, "variables": {"i": {"metricsRefreshInterval": seconds}}},
        )
        body = r.json()["data"]["updateTenantSettings"]
        if body["errors"]:
            raise RuntimeError(f"updateTenantSettings: {body['errors']}")


async def poll_stamps(
    sm: Any, tenant_id: int, stamps: dict[str, set[float]], stop: asyncio.Event
) -> None:
    while not stop.is_set():
        async with sm() as s:
            rows = await s.execute(
                text(
                    "SELECT a.account_number, extract(epoch FROM m.last_metrics_update) "
                    "FROM account_metrics m JOIN account a ON a.id = m.account_id "
                    "WHERE m.tenant_id = :t AND a.partner_account "
                    "AND m.last_metrics_update IS NOT NULL"
                ),
                {"t": tenant_id},
            )
            for number, epoch in rows:
                stamps[number].add(float(epoch))
        try:
            await asyncio.wait_for(stop.wait(), 0.2)
        except TimeoutError:
            pass


async def cron_results(since: float, url: str, tenant_id: int) -> list[dict[str, Any]]:
    """The tenant's refreshes (ticks that refreshed at least one of its accounts) since
    ``since``, from the cron tick results arq keeps."""
    from arq.jobs import deserialize_result
    from redis.asyncio import Redis

    out = []
    redis = Redis.from_url(url)
    try:
        async for k in redis.scan_iter(match="arq:result:cron:refresh_due_tenants:*", count=1000):
            raw = await redis.get(k)
            if raw is None:
                continue
            r = deserialize_result(raw)
            if r.start_time.timestamp() < since or not r.success:
                continue
            mine = r.result.get("by_tenant", {}).get(tenant_id)
            if mine and (mine["accounts"] or mine["skipped"]):
                out.append({"at": r.start_time.timestamp(), **mine})
    finally:
        await redis.aclose()
    return sorted(out, key=lambda x: x["at"])


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return round(s[min(len(s) - 1, int(p * len(s)))], 3) if s else 0.0


async def run(
    url: str,
    *,
    seconds: float = 120.0,
    interval: int = 10,
    accounts: int = 100,
    clients: int = 16,
    redis: str | None = None,
) -> dict[str, Any]:
    from billing.metrics import recompute, stored_metrics
    from db.engine import create_engine, create_sessionmaker

    engine = create_engine(url)
    sm = create_sessionmaker(engine)
    tenant_id, key = await new_tenant(sm, "fresh")
    numbers = await add_accounts(sm, tenant_id, "F", accounts, partner=True)
    writes: list[tuple[str, float, float]] = []  # account, sent, answered (epoch seconds)
    errors: Counter[str] = Counter()
    stamps: dict[str, set[float]] = defaultdict(set)
    out: dict[str, Any] = {
        "seconds": seconds,
        "interval_s": interval,
        "partner_accounts": accounts,
        "clients": clients,
    }
    with processes(url, redis=redis) as procs:
        await make_catalog(procs.base, key)
        await set_interval(procs.base, key, interval)
        stop_poll = asyncio.Event()
        poller = asyncio.create_task(poll_stamps(sm, tenant_id, stamps, stop_poll))
        counter = itertools.count()
        limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
        procs.mark()
        m0, c0, t_start = machine_cpu(), time.process_time(), time.time()
        async with httpx.AsyncClient(
            base_url=procs.base,
            headers={"Authorization": f"Bearer {key}"},
            limits=limits,
            timeout=60,
        ) as client:
            stop = time.perf_counter() + seconds

            async def one() -> None:
                while time.perf_counter() < stop:
                    n = next(counter)
                    account = numbers[(n // KINDS) % len(numbers)]
                    q, v, field = request(n % KINDS, account)
                    sent = time.time()
                    try:
                        r = await client.post("/graphql", json={"query": q, "variables": v})
                        body = r.json()
                    except (httpx.HTTPError, ValueError) as e:
                        errors[type(e).__name__] += 1
                        continue
                    answered = time.time()
                    if r.status_code != 200 or body.get("errors"):
                        errors[f"HTTP{r.status_code}"] += 1
                    elif body["data"][field]["errors"]:
                        for e in body["data"][field]["errors"]:
                            errors[e["code"]] += 1
                    else:
                        writes.append((account, sent, answered))

            await asyncio.gather(*(one() for _ in range(clients)))
        t_end = time.time()
        cpu = {**procs.cpu_since_mark(), "loadgen": round(time.process_time() - c0, 2)}
        cpu["postgres_and_rest"] = round(machine_cpu() - m0 - sum(cpu.values()), 2)
        # Let the next refresh pass fold the last writes.
        last = {a: t for a, _, t in writes}
        deadline = time.time() + interval + 5

        def covered() -> bool:
            return all(any(st >= t for st in stamps[a]) for a, t in last.items())

        # stamps fill from the poller task, which has no event to signal: poll up to the deadline
        while time.time() < deadline and not covered():  # noqa: ASYNC110
            await asyncio.sleep(0.2)
        await asyncio.sleep(0.3)
        stop_poll.set()
        await poller
        ticks = await cron_results(t_start, procs.redis, tenant_id)
    staleness: list[float] = []
    uncovered = 0
    for account, sent, answered in writes:
        later = [st for st in stamps[account] if st >= answered]
        if later:
            staleness.append(min(later) - sent)
        else:
            uncovered += 1
    async with sm() as s:
        ids = dict(
            (
                await s.execute(
                    text("SELECT account_number, id FROM account WHERE tenant_id = :t"),
                    {"t": tenant_id},
                )
            ).all()
        )
        mismatched = 0
        for number in numbers:
            if (await stored_metrics(s, ids[number])).values() != (
                await recompute(s, ids[number])
            ).values():
                mismatched += 1
        pending = (
            await s.execute(
                text("SELECT count(*) FROM metrics_change WHERE tenant_id = :t"), {"t": tenant_id}
            )
        ).scalar_one()
    await engine.dispose()
    accounts_refreshed = sum(t["accounts"] for t in ticks)
    refresh_seconds = sum(t["seconds"] for t in ticks)
    out.update(
        {
            "writes_ok": len(writes),
            "writes_per_s": round(len(writes) / (t_end - t_start), 1),
            "lock_competition": errors.pop("LOCK_COMPETITION", 0),
            "other_errors": dict(errors),
            "staleness_s": {
                "p50": pct(staleness, 0.50),
                "p99": pct(staleness, 0.99),
                "max": round(max(staleness), 3) if staleness else 0.0,
            },
            "writes_not_covered_by_a_refresh": uncovered,
            "refresh_ticks": len(ticks),
            "refresh": {
                "accounts_refreshed": accounts_refreshed,
                "changes_folded": sum(t["changes"] for t in ticks),
                "skipped": sum(t["skipped"] for t in ticks),
                "seconds_total": round(refresh_seconds, 3),
                "ms_per_changed_account": round(
                    1000 * refresh_seconds / max(accounts_refreshed, 1), 3
                ),
                "ms_per_tick_max": round(1000 * max((t["seconds"] for t in ticks), default=0), 1),
                "seconds_between_ticks": [
                    round(b["at"] - a["at"], 2) for a, b in itertools.pairwise(ticks)
                ],
            },
            "cpu_s": cpu,
            "metrics_exact_after_last_refresh": mismatched == 0 and pending == 0,
            "accounts_mismatched": mismatched,
            "ledger_rows_left": pending,
        }
    )
    return out
