"""Migration 0008 gives the metric fold one home (pb_fold_metrics): the one-account fold and
the batch refresh fold exactly as their own copies did before it, and a downgrade puts the
copies back."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, create_async_engine

from db.migrate import upgrade_async
from tests.test_migration_0004 import downgrade, scratch_url  # noqa: F401  (fixture)

ACCOUNTS = (1, 2, 3, 4)


async def _setup(c: AsyncConnection) -> None:
    """Four accounts of tenant 1: 1 and 2 with ledger rows, 3 with none, 4 with a posted and
    a draft invoice and ledger rows; plus tenant 2's ledger row for account 1, never folded."""
    await c.execute(text("INSERT INTO tenant (id, name) VALUES (1, 'mig'), (2, 'other')"))
    for a in ACCOUNTS:
        await c.execute(
            text(
                "INSERT INTO account (id, tenant_id, account_number, name, currency, "
                "bill_cycle_day, bill_to, sold_to, partner_account) "
                "VALUES (:a, 1, :n, :n, 'USD', 1, '{}', '{}', true)"
            ),
            {"a": a, "n": f"A{a}"},
        )
        await c.execute(
            text(
                "INSERT INTO account_metrics (account_id, tenant_id, total_invoice_balance) "
                "VALUES (:a, 1, 5)"
            ),
            {"a": a},
        )
    for n, (status, day) in enumerate([("POSTED", date(2026, 3, 4)), ("DRAFT", date(2026, 5, 1))]):
        await c.execute(
            text(
                "INSERT INTO invoice (tenant_id, invoice_number, account_id, currency, "
                "invoice_date, due_date, status, amount, balance) "
                "VALUES (1, :n, 4, 'USD', :d, :d, :s, 10, 10)"
            ),
            {"n": f"INV{n}", "d": day, "s": status},
        )
    ledger = [
        (1, 1, *(Decimal(x) for x in ("1.50", "0", "2", "0", "3.25"))),
        (1, 1, *(Decimal(x) for x in ("2.50", "1", "0", "4", "0"))),
        (1, 2, *(Decimal(x) for x in ("-7", "0", "0", "0", "1"))),
        (1, 4, *(Decimal(x) for x in ("10", "0", "0", "0", "0"))),
        (2, 1, *(Decimal(x) for x in ("1000", "0", "0", "0", "0"))),
    ]
    for t, a, ib, dm, up, cm, mrr in ledger:
        await c.execute(
            text(
                "INSERT INTO metrics_change (tenant_id, account_id, d_invoice_balance, "
                "d_debit_memo_balance, d_unapplied_payment, d_unapplied_credit_memo, "
                "d_contracted_mrr) VALUES (:t, :a, "
                ":ib, :dm, :up, :cm, :mrr)"
            ),
            {"t": t, "a": a, "ib": ib, "dm": dm, "up": up, "cm": cm, "mrr": mrr},
        )


async def _metrics(c: AsyncConnection) -> dict[int, tuple[Any, ...]]:
    rows = await c.execute(
        text(
            "SELECT account_id, total_invoice_balance, total_debit_memo_balance, "
            "unapplied_payment_amount, unapplied_credit_memo_amount, contracted_mrr, "
            "last_invoice_date, last_metrics_update IS NOT NULL FROM account_metrics "
            "ORDER BY account_id"
        )
    )
    return {r[0]: tuple(r[1:]) for r in rows}


async def _scenario(url: str) -> list[Any]:
    """What the fold functions do, observed: results, metrics and the ledger left."""
    engine = create_async_engine(url)
    seen: list[Any] = []
    try:
        async with engine.begin() as c:
            await _setup(c)
        async with engine.begin() as c:
            # Batch: account 3 has nothing to fold (claimed, left as it is), 99 is no account.
            rows = await c.execute(
                text("SELECT r_account, r_folded FROM pb_refresh_accounts(1, :ids)"),
                {"ids": [2, 3, 4, 99]},
            )
            seen.append(sorted(tuple(r) for r in rows))
            seen.append(await _metrics(c))
        async with engine.begin() as c:
            # One account with rows, one with none (stamped all the same), one of no tenant's.
            for t, a in [(1, 1), (1, 3), (1, 1), (1, 99), (3, 1)]:
                folded = await c.execute(
                    text("SELECT pb_fold_account_metrics(:t, :a)"), {"t": t, "a": a}
                )
                seen.append((t, a, folded.scalar_one()))
            seen.append(await _metrics(c))
            left = await c.execute(
                text("SELECT tenant_id, account_id FROM metrics_change ORDER BY id")
            )
            seen.append([tuple(r) for r in left])
    finally:
        await engine.dispose()
    return seen


async def _definition(url: str, name: str) -> str:
    engine = create_async_engine(url)
    try:
        async with engine.connect() as c:
            return str(
                (
                    await c.execute(
                        text("SELECT pg_get_functiondef(CAST(:f AS regproc))"), {"f": name}
                    )
                ).scalar_one()
            )
    finally:
        await engine.dispose()


async def _reset(url: str) -> None:
    engine = create_async_engine(url)
    try:
        async with engine.begin() as c:
            await c.execute(text("TRUNCATE tenant CASCADE"))
    finally:
        await engine.dispose()


async def test_one_fold_folds_as_the_two_copies_did(scratch_url: str) -> None:  # noqa: F811
    await upgrade_async(scratch_url, "0007")
    before = await _scenario(scratch_url)
    await _reset(scratch_url)
    await upgrade_async(scratch_url, "0008")
    after = await _scenario(scratch_url)
    assert after == before
    # The scenario exercises what it claims to: both paths folded, and one stamp on no change.
    assert before[0] == [(2, 1), (4, 1)]
    assert before[2:7] == [(1, 1, 2), (1, 3, 0), (1, 1, 0), (1, 99, 0), (3, 1, 0)]
    assert before[1][3][-1] is False and before[7][3][-1] is True
    assert before[7][4][5] is not None  # lastInvoiceDate re-derived from the posted invoice
    assert before[8] == [(2, 1)]

    # The arithmetic lives in pb_fold_metrics alone.
    for caller in ("pb_fold_account_metrics", "pb_refresh_accounts"):
        body = await _definition(scratch_url, caller)
        assert "pb_fold_metrics(" in body
        assert "metrics_change" not in body and "total_invoice_balance" not in body
    assert "DELETE FROM metrics_change" in await _definition(scratch_url, "pb_fold_metrics")


async def test_downgrade_puts_the_copies_back(scratch_url: str) -> None:  # noqa: F811
    await upgrade_async(scratch_url, "0008")
    await downgrade(scratch_url, "0007")
    assert "DELETE FROM metrics_change" in await _definition(scratch_url, "pb_fold_account_metrics")
    assert "DELETE FROM metrics_change" in await _definition(scratch_url, "pb_refresh_accounts")
    downgraded = await _scenario(scratch_url)
    assert downgraded[0] == [(2, 1), (4, 1)]
    await _reset(scratch_url)
    await upgrade_async(scratch_url, "0008")
    assert await _scenario(scratch_url) == downgraded
