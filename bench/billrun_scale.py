# ruff: noqa: E501
"""Bill run at scale: one partner reseller, 1,000 partner subscription owners and N
subscriptions (one monthly charge each) billed by one run into one consolidated invoice.

Times createBillRun -> COMPLETED (the real arq worker, in this process) -> postBillRun and
prints the figures and the process's peak RSS.

    DATABASE_URL=postgresql://... REDIS_URL=redis://.../N python bench/billrun_scale.py [-n 100000]

A fresh database is created on the server of DATABASE_URL (and dropped unless --keep).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import secrets
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import BigInteger, bindparam, text
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from db.engine import async_url, create_engine, create_sessionmaker
from db.migrate import upgrade_async

CREATE = """mutation($input: CreateBillRunInput!) { createBillRun(input: $input) {
  billRun { billRunNumber status accountsTotal } errors { code message } } }"""
RUN = """query($n: String!) { billRun(billRunNumber: $n) { status accountsProcessed invoicesGenerated
  errors { accountNumber code message } } }"""
POST = """mutation($n: String!) { postBillRun(input: { billRunNumber: $n }) {
  billRun { status } errors { code message } } }"""


async def build(sm: Any, n: int, owners: int) -> tuple[int, str]:
    """Tenant, reseller, owners and N subscriptions, set-based in a few statements."""
    from billing.tenants import create_tenant

    async with sm.begin() as s:
        t, _ = await create_tenant(s, f"bench-{secrets.token_hex(3)}")
        contact = '{"firstName": "A", "lastName": "B"}'
        await s.execute(
            text(
                "INSERT INTO account (tenant_id, account_number, name, currency, status, bill_cycle_day, "
                "payment_term, batch, partner_account, bill_to, sold_to) "
                "SELECT :t, 'A' || lpad(g::text, 8, '0'), 'Account ' || g, 'USD', 'ACTIVE', 1, 'NET_30', "
                "CASE WHEN g = 0 THEN 'Resellers' ELSE 'Customers' END, true, CAST(:c AS json), CAST(:c AS json) "
                "FROM generate_series(0, :o) g"
            ),
            {"t": t, "o": owners, "c": contact},
        )
        await s.execute(
            text(
                "INSERT INTO account_metrics (account_id, tenant_id) SELECT id, tenant_id FROM account "
                "WHERE tenant_id = :t"
            ),
            {"t": t},
        )
        ids = (
            (
                await s.execute(
                    text("SELECT id FROM account WHERE tenant_id = :t ORDER BY account_number"),
                    {"t": t},
                )
            )
            .scalars()
            .all()
        )
        reseller, owner_ids = ids[0], list(ids[1:])
        pid = (
            await s.execute(
                text(
                    "INSERT INTO product (tenant_id, product_number, name) VALUES (:t, 'PC1', 'Fleet') "
                    "RETURNING id"
                ),
                {"t": t},
            )
        ).scalar_one()
        rpid = (
            await s.execute(
                text(
                    "INSERT INTO product_rate_plan (tenant_id, product_id, rate_plan_number, name) "
                    "VALUES (:t, :p, 'PRP1', 'Basic') RETURNING id"
                ),
                {"t": t, "p": pid},
            )
        ).scalar_one()
        prpc = (
            await s.execute(
                text(
                    "INSERT INTO product_rate_plan_charge (tenant_id, rate_plan_id, charge_number, name, charge_type, "
                    "charge_model, list_price, billing_period, billing_timing, default_quantity) VALUES "
                    "(:t, :r, 'PRPC1', 'Seat', 'RECURRING', 'PER_UNIT', 12.5, 'MONTH', 'IN_ADVANCE', 1) RETURNING id"
                ),
                {"t": t, "r": rpid},
            )
        ).scalar_one()
        await s.execute(
            text(
                "INSERT INTO subscription (tenant_id, subscription_number, owner_account_id, invoice_owner_account_id, "
                "currency, status, term_type, initial_term, renewal_term, auto_renew, contract_effective_date, "
                "term_start_date, invoice_separately, mrr, version) "
                "SELECT :t, 'S' || lpad(g::text, 8, '0'), (:owners)[1 + g % cardinality(:owners)], :r, 'USD', "
                "'ACTIVE', 'TERMED', 12, 12, false, DATE '2026-03-01', DATE '2026-03-01', false, 25, 1 "
                "FROM generate_series(1, :n) g"
            ).bindparams(bindparam("owners", type_=ARRAY(BigInteger))),
            {"t": t, "owners": owner_ids, "r": reseller, "n": n},
        )
        await s.execute(
            text(
                "INSERT INTO subscription_rate_plan (tenant_id, subscription_id, product_rate_plan_id, name, "
                "effective_start_date) SELECT :t, id, :rp, 'Basic', DATE '2026-03-01' FROM subscription "
                "WHERE tenant_id = :t"
            ),
            {"t": t, "rp": rpid},
        )
        await s.execute(
            text(
                "INSERT INTO subscription_charge (tenant_id, subscription_id, subscription_rate_plan_id, "
                "product_rate_plan_charge_id, charge_number, segment, is_last_segment, name, charge_type, "
                "charge_model, price, quantity, billing_period, billing_timing, effective_start_date, mrr) "
                "SELECT :t, subscription_id, id, :c, 'C' || id, 1, true, 'Seat', 'RECURRING', 'PER_UNIT', 12.5, 2, "
                "'MONTH', 'IN_ADVANCE', DATE '2026-03-01', 25 FROM subscription_rate_plan WHERE tenant_id = :t"
            ),
            {"t": t, "c": prpc},
        )
    async with sm() as s:
        await s.execute(text("ANALYZE"))
    return t, "A00000000"


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", "--subscriptions", type=int, default=100_000)
    ap.add_argument("--owners", type=int, default=1_000)
    ap.add_argument("--keep", action="store_true", help="keep the database")
    args = ap.parse_args()
    server = make_url(
        async_url(os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"))
    )
    redis_url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    name = f"partnerbill_bench_{secrets.token_hex(4)}"
    admin = create_async_engine(server, isolation_level="AUTOCOMMIT")
    async with admin.connect() as conn:
        await conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = server.set(database=name).render_as_string(hide_password=False)
    try:
        await upgrade_async(url)
        await run(url, redis_url, args.subscriptions, args.owners)
    finally:
        if not args.keep:
            async with admin.connect() as conn:
                await conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        await admin.dispose()


async def run(url: str, redis_url: str, n: int, owners: int) -> None:
    from arq.connections import create_pool
    from arq.worker import Worker

    from jobs.redis import redis_settings_from_url
    from jobs.worker import worker_kwargs
    from resolvers.context import Context, Services
    from schema.root import schema

    engine = create_engine(url)
    sm = create_sessionmaker(engine)
    t0 = time.perf_counter()
    tenant_id, reseller = await build(sm, n, owners)
    t_build = time.perf_counter() - t0
    pool = await create_pool(redis_settings_from_url(redis_url))
    await pool.flushdb()
    services = Services(sessionmaker=sm, redis=pool)

    async def gql(q: str, **v: Any) -> dict[str, Any]:
        res = await schema.execute(
            q, variable_values=v, context_value=Context(tenant_id=tenant_id, services=services)
        )
        assert not res.errors, res.errors
        assert res.data is not None
        return res.data

    t1 = time.perf_counter()
    created = (await gql(CREATE, input={"targetDate": "2026-03-01", "accountNumbers": [reseller]}))[
        "createBillRun"
    ]
    assert not created["errors"], created
    number = created["billRun"]["billRunNumber"]
    kwargs = worker_kwargs(url)
    kwargs.pop("cron_jobs")
    worker = Worker(redis_pool=pool, burst=True, handle_signals=False, **kwargs)
    await worker.main()
    await worker.close()
    t2 = time.perf_counter()
    state = (await gql(RUN, n=number))["billRun"]
    posted = (await gql(POST, n=number))["postBillRun"]
    t3 = time.perf_counter()
    async with sm() as s:
        inv = (
            await s.execute(
                text(
                    "SELECT count(DISTINCT i.id), count(ii.id), sum(ii.amount) FROM invoice i JOIN invoice_item ii "
                    "ON ii.invoice_id = i.id WHERE i.tenant_id = :t"
                ),
                {"t": tenant_id},
            )
        ).one()
        ledger = (
            await s.execute(
                text("SELECT sum(d_invoice_balance) FROM metrics_change WHERE tenant_id = :t"),
                {"t": tenant_id},
            )
        ).scalar_one()
    await pool.aclose()
    await engine.dispose()
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"subscriptions           {n:>10,}   (owners {owners:,}, cpus {os.cpu_count()})")
    print(f"build data              {t_build:>10.2f} s")
    print(
        f"createBillRun->COMPLETED {t2 - t1:>9.2f} s   status {state['status']}, "
        f"invoices {state['invoicesGenerated']}, errors {len(state['errors'])}"
    )
    print(f"postBillRun             {t3 - t2:>10.2f} s   status {posted['billRun']['status']}")
    print(f"total create->posted    {t3 - t1:>10.2f} s")
    print(f"invoices / items / sum  {inv[0]} / {inv[1]:,} / {inv[2]}   ledger {ledger}")
    print(f"items per second        {inv[1] / max(t2 - t1, 1e-9):>10,.0f}")
    print(f"peak RSS                {rss_mb:>10.1f} MiB")


if __name__ == "__main__":
    asyncio.run(main())
