# ruff: noqa: E501
"""Scenario 3, refresh scale: many changed partner accounts refreshed by
billing.metrics.refresh_tenant; one partner account with many posted invoices refreshed
by billing.metrics.refresh_account; the cost grows with the changed accounts only.

Data is written set-based (INSERT ... SELECT generate_series): invoices plus their
metrics_change ledger rows, exactly what the write path would leave behind."""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import text

from bench.common import account_ids, add_accounts, new_tenant


async def add_posted_invoices(
    sm: Any, tenant_id: int, account_ids_: list[int], per_account: int, tag: str
) -> None:
    """``per_account`` POSTED invoices of 25.00 on each account, with one ledger row each."""
    async with sm.begin() as s:
        await s.execute(
            text(
                "INSERT INTO invoice (tenant_id, invoice_number, account_id, currency, invoice_date, due_date, "
                "status, amount, balance, source, posted_at) "
                "SELECT :t, :tag || a.n || '-' || g, a.id, 'USD', DATE '2026-03-01' + (g % 28), "
                "DATE '2026-04-01' + (g % 28), 'POSTED', 25, 25, 'STANDALONE', now() "
                "FROM unnest(CAST(:ids AS bigint[])) WITH ORDINALITY a(id, n), generate_series(1, :k) g"
            ),
            {"t": tenant_id, "ids": account_ids_, "k": per_account, "tag": tag},
        )
        await s.execute(
            text(
                "INSERT INTO metrics_change (tenant_id, account_id, d_invoice_balance, d_debit_memo_balance, "
                "d_unapplied_payment, d_unapplied_credit_memo, d_contracted_mrr) "
                "SELECT :t, a.id, 25, 0, 0, 0, 0 FROM unnest(CAST(:ids AS bigint[])) a(id), generate_series(1, :k) g"
            ),
            {"t": tenant_id, "ids": account_ids_, "k": per_account},
        )
    async with sm() as s:
        await s.execute(text("ANALYZE invoice"))
        await s.execute(text("ANALYZE metrics_change"))


async def exact(sm: Any, ids: list[int]) -> bool:
    from billing.metrics import recompute, stored_metrics

    async with sm() as s:
        for a in ids:
            if (await stored_metrics(s, a)).values() != (await recompute(s, a)).values():
                return False
    return True


async def timed_refresh(engine: Any, tenant_id: int) -> tuple[float, Any]:
    from billing.metrics import refresh_tenant

    t0 = time.perf_counter()
    report = await refresh_tenant(engine, tenant_id)
    return time.perf_counter() - t0, report


async def run(url: str, quick: bool = False) -> dict[str, Any]:
    from billing.metrics import refresh_account
    from db.engine import create_engine, create_sessionmaker

    many = 200 if quick else 10_000
    docs = 2_000 if quick else 200_000
    small = 10 if quick else 100
    engine = create_engine(url)
    sm = create_sessionmaker(engine)
    out: dict[str, Any] = {
        "changed_accounts": many,
        "invoices_on_one_account": docs,
        "subset": small,
    }

    # 1. many changed partner accounts, one tenant refresh
    t, _ = await new_tenant(sm, "refresh-many")
    nums = await add_accounts(sm, t, "R", many, partner=True)
    ids = await account_ids(sm, t, nums)
    await add_posted_invoices(sm, t, ids, 2, "I")
    secs, rep = await timed_refresh(engine, t)
    out["tenant_refresh"] = {
        "seconds": round(secs, 3),
        "accounts_refreshed": rep.accounts_refreshed,
        "changes_folded": rep.changes_folded,
        "skipped": rep.accounts_skipped,
        "exact_sample": await exact(sm, ids[:: max(1, many // 50)]),
    }
    # 2. the subset among many vs the subset alone: cost follows the changed accounts
    await add_posted_invoices(sm, t, ids[:small], 1, "J")
    secs_among, rep_among = await timed_refresh(engine, t)
    # The same after VACUUM: the ledger's index no longer holds the dead entries of the
    # 20,000 rows the first refresh deleted, which the loose index scan steps over.
    async with engine.connect() as conn:
        conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
        await conn.execute(text("VACUUM metrics_change"))
    await add_posted_invoices(sm, t, ids[:small], 1, "K")
    secs_vacuumed, _ = await timed_refresh(engine, t)
    t2, _ = await new_tenant(sm, "refresh-few")
    nums2 = await add_accounts(sm, t2, "F", small, partner=True)
    ids2 = await account_ids(sm, t2, nums2)
    await add_posted_invoices(sm, t2, ids2, 2, "I")
    await timed_refresh(engine, t2)
    await add_posted_invoices(sm, t2, ids2, 1, "J")
    secs_alone, rep_alone = await timed_refresh(engine, t2)
    out["subset_refresh"] = {
        f"{small}_changed_among_{many}_s": round(secs_among, 4),
        f"{small}_changed_among_{small}_s": round(secs_alone, 4),
        f"{small}_changed_among_{many}_after_vacuum_s": round(secs_vacuumed, 4),
        "refreshed": [rep_among.accounts_refreshed, rep_alone.accounts_refreshed],
        "exact": await exact(sm, ids[: small : max(1, small // 10)])
        and await exact(sm, ids2[:: max(1, small // 10)]),
    }

    # 3. one partner account with many posted invoices
    t3, _ = await new_tenant(sm, "refresh-big")
    (big,) = await account_ids(sm, t3, await add_accounts(sm, t3, "B", 1, partner=True))
    t0 = time.perf_counter()
    await add_posted_invoices(sm, t3, [big], docs, "I")
    build = time.perf_counter() - t0
    t0 = time.perf_counter()
    async with sm.begin() as s:
        folded_all = await refresh_account(s, t3, big)
    first = time.perf_counter() - t0
    await add_posted_invoices(sm, t3, [big], 10, "J")
    t0 = time.perf_counter()
    async with sm.begin() as s:
        folded_new = await refresh_account(s, t3, big)
    later = time.perf_counter() - t0
    t0 = time.perf_counter()
    ok = await exact(sm, [big])
    oracle = time.perf_counter() - t0
    out["big_account"] = {
        "build_s": round(build, 2),
        "refresh_folding_all_s": round(first, 3),
        "folded_all": folded_all,
        "refresh_after_10_new_s": round(later, 4),
        "folded_new": folded_new,
        "recompute_oracle_s": round(oracle, 3),
        "exact": ok,
    }
    await engine.dispose()
    return out
