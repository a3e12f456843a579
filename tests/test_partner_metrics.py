"""The partner-metrics pipeline: deferred metrics, refresh, concurrency, lock competition."""

from __future__ import annotations

import asyncio
from datetime import date
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import text

from billing import accounts as acc
from billing import invoices as inv
from billing import metrics as met
from billing import payments as pay
from billing.applications import TargetAmount
from billing.errors import LockCompetition
from billing.tenants import update_settings

D = Decimal


async def make_account(sm: Any, tenant_id: int, number: str, partner: bool) -> Any:
    async with sm.begin() as s:
        return await acc.create_account(
            s,
            tenant_id,
            acc.AccountData(
                name=number,
                currency="USD",
                bill_to={"firstName": "A", "lastName": "B"},
                account_number=number,
                partner_account=partner,
            ),
        )


def posted_invoice(number: str, amount: str, day: int = 1) -> inv.StandaloneInvoiceData:
    return inv.StandaloneInvoiceData(
        account_number=number,
        invoice_date=date(2026, 11, day),
        status="POSTED",
        items=[inv.ItemData(charge_name="Seat", amount=D(amount))],
    )


async def stored(sm: Any, account_id: int) -> met.Metrics:
    async with sm() as s:
        return await met.stored_metrics(s, account_id)


async def oracle(sm: Any, account_id: int) -> met.Metrics:
    async with sm() as s:
        return await met.recompute(s, account_id)


async def test_partner_writes_leave_metrics_until_refresh(sessionmaker: Any, tenant: Any) -> None:
    a = await make_account(sessionmaker, tenant.id, "P1", partner=True)
    before = await stored(sessionmaker, a["id"])
    async with sessionmaker.begin() as s:
        i1 = (
            await inv.create_standalone_invoice(s, tenant.id, posted_invoice("P1", "100.00", 3))
        ).row
    async with sessionmaker.begin() as s:
        await pay.create_payment(
            s, tenant.id,
            pay.PaymentData("P1", D("60"), date(2026, 11, 4),
                            invoices=[TargetAmount(i1["invoice_number"], D("40"))]),
        )  # fmt: skip
    unchanged = await stored(sessionmaker, a["id"])
    assert unchanged == before  # same values and the same old lastMetricsUpdate
    async with sessionmaker.begin() as s:
        folded = await met.refresh_account(s, tenant.id, a["id"])
    assert folded == 2
    after = await stored(sessionmaker, a["id"])
    assert after.values() == (await oracle(sessionmaker, a["id"])).values()
    assert after.total_invoice_balance == D("60")
    assert after.unapplied_payment_amount == D("20")
    assert after.balance == D("40")
    assert after.last_invoice_date == date(2026, 11, 3)
    assert (
        after.last_metrics_update is not None
        and after.last_metrics_update > before.last_metrics_update
    )


async def test_ordinary_account_metrics_equal_oracle_after_every_commit(
    sessionmaker: Any, tenant: Any
) -> None:
    a = await make_account(sessionmaker, tenant.id, "O1", partner=False)
    numbers = []
    for n in range(3):
        async with sessionmaker.begin() as s:
            numbers.append(
                (
                    await inv.create_standalone_invoice(
                        s, tenant.id, posted_invoice("O1", f"{10 + n}.25", n + 1)
                    )
                ).row["invoice_number"]
            )
        assert (await stored(sessionmaker, a["id"])).values() == (
            await oracle(sessionmaker, a["id"])
        ).values()
    async with sessionmaker.begin() as s:
        p = await pay.create_payment(
            s, tenant.id, pay.PaymentData("O1", D("15"), date(2026, 11, 5))
        )
    async with sessionmaker.begin() as s:
        await pay.apply_payment(
            s, tenant.id, p["payment_number"], [TargetAmount(numbers[2], D("12.25"))], []
        )
    async with sessionmaker.begin() as s:
        await pay.unapply_payment(
            s, tenant.id, p["payment_number"], [TargetAmount(numbers[2], D("2.25"))], []
        )
    async with sessionmaker.begin() as s:
        await pay.apply_payment(
            s, tenant.id, p["payment_number"], [TargetAmount(numbers[0], D("5"))], []
        )
    m = await stored(sessionmaker, a["id"])
    assert m.values() == (await oracle(sessionmaker, a["id"])).values()
    # 10.25 + 11.25 + 12.25 = 33.75 invoiced; 15 paid and all applied.
    assert (m.total_invoice_balance, m.unapplied_payment_amount, m.balance) == (
        D("18.75"),
        D("0"),
        D("18.75"),
    )
    # Unposting the untouched invoice lowers lastInvoiceDate back.
    async with sessionmaker.begin() as s:
        await inv.unpost_invoice(s, tenant.id, numbers[1])
    m = await stored(sessionmaker, a["id"])
    assert m.values() == (await oracle(sessionmaker, a["id"])).values()
    assert m.last_invoice_date == date(2026, 11, 3)


async def _invoice_then_pay(sm: Any, tenant_id: int, number: str, n: int) -> str:
    """One posted invoice and one payment applied to half of it (two transactions)."""
    try:
        async with sm.begin() as s:
            done = await inv.create_standalone_invoice(
                s, tenant_id, posted_invoice(number, f"{n + 1}.00")
            )
            row = done.row
        async with sm.begin() as s:
            await pay.create_payment(
                s, tenant_id,
                pay.PaymentData(number, D(n + 1), date(2026, 11, 2),
                                invoices=[TargetAmount(row["invoice_number"], D(n + 1) / 2)]),
            )  # fmt: skip
        return "ok"
    except LockCompetition:
        return "LOCK_COMPETITION"


async def test_50_concurrent_writes_on_a_partner_account(sessionmaker: Any, tenant: Any) -> None:
    a = await make_account(sessionmaker, tenant.id, "HOT", partner=True)
    async with sessionmaker.begin() as s:  # a tight lock wait would fail ordinary accounts
        await update_settings(s, tenant.id, lock_wait_ms=1)
    results = await asyncio.gather(
        *(_invoice_then_pay(sessionmaker, tenant.id, "HOT", n) for n in range(50))
    )
    assert results == ["ok"] * 50
    async with sessionmaker.begin() as s:
        await met.refresh_account(s, tenant.id, a["id"])
    m = await stored(sessionmaker, a["id"])
    assert m.values() == (await oracle(sessionmaker, a["id"])).values()
    total = sum(D(n + 1) for n in range(50))
    assert m.total_invoice_balance == total / 2
    assert m.unapplied_payment_amount == total / 2
    assert m.balance == 0


async def test_50_concurrent_writes_on_an_ordinary_account(sessionmaker: Any, tenant: Any) -> None:
    a = await make_account(sessionmaker, tenant.id, "SYNC", partner=False)
    async with sessionmaker.begin() as s:
        await update_settings(s, tenant.id, lock_wait_ms=5)

    async def one(n: int) -> str:
        # Hold the account lock a while so that some writers time out.
        try:
            async with sessionmaker.begin() as s:
                await inv.create_standalone_invoice(
                    s, tenant.id, posted_invoice("SYNC", f"{n + 1}.00")
                )
                await s.execute(text("SELECT pg_sleep(0.01)"))
            return "ok"
        except LockCompetition:
            return "LOCK_COMPETITION"

    results = await asyncio.gather(*(one(n) for n in range(50)))
    assert set(results) <= {"ok", "LOCK_COMPETITION"}
    assert "LOCK_COMPETITION" in results  # the feature's reason to exist
    ok = [n for n, r in enumerate(results) if r == "ok"]
    async with sessionmaker() as s:
        count = (
            await s.execute(
                text("SELECT count(*) FROM invoice WHERE account_id = :a"), {"a": a["id"]}
            )
        ).scalar_one()
    assert count == len(ok)  # a lock competition wrote nothing
    m = await stored(sessionmaker, a["id"])
    assert m.values() == (await oracle(sessionmaker, a["id"])).values()
    assert m.total_invoice_balance == sum((D(n + 1) for n in ok), D(0))


async def test_change_committed_during_refresh_is_seen_by_the_next(
    sessionmaker: Any, engine: Any, tenant: Any
) -> None:
    """Commit out of order: a ledger row older than the refresh commits after it."""
    a = await make_account(sessionmaker, tenant.id, "OOO", partner=True)
    slow = sessionmaker()
    await slow.begin()
    # The slow writer gets its ledger row (lower id) first but commits last.
    await inv.create_standalone_invoice(slow, tenant.id, posted_invoice("OOO", "7.00", 1))
    async with sessionmaker.begin() as s:
        await inv.create_standalone_invoice(s, tenant.id, posted_invoice("OOO", "5.00", 2))
    report = await met.refresh_tenant(engine, tenant.id)
    assert report.changes_folded == 1
    assert (await stored(sessionmaker, a["id"])).total_invoice_balance == D("5")
    await slow.commit()
    await slow.close()
    report = await met.refresh_tenant(engine, tenant.id)
    assert report.changes_folded == 1
    m = await stored(sessionmaker, a["id"])
    assert m.values() == (await oracle(sessionmaker, a["id"])).values()
    assert m.total_invoice_balance == D("12")


async def test_two_refreshers_never_write_one_account_at_once(
    sessionmaker: Any, tenant: Any
) -> None:
    a = await make_account(sessionmaker, tenant.id, "TWO", partner=True)
    async with sessionmaker.begin() as s:
        await inv.create_standalone_invoice(s, tenant.id, posted_invoice("TWO", "9.00"))
    first = sessionmaker()
    await first.begin()
    refresh = text(
        "SELECT r_account, r_folded FROM pb_refresh_accounts(:t, ARRAY[CAST(:a AS bigint)])"
    )
    folded = (await first.execute(refresh, {"t": tenant.id, "a": a["id"]})).all()
    assert folded == [(a["id"], 1)]
    async with sessionmaker() as s:  # the second refresher is turned away while the first holds it
        second = (await s.execute(refresh, {"t": tenant.id, "a": a["id"]})).all()
        await s.rollback()
    assert second == []
    await first.commit()
    await first.close()
    m = await stored(sessionmaker, a["id"])
    assert m.total_invoice_balance == D("9")
    assert m.values() == (await oracle(sessionmaker, a["id"])).values()


async def test_tenant_refresh_batches_skip_a_held_account_and_fold_it_next_time(
    sessionmaker: Any, engine: Any, tenant: Any
) -> None:
    """Batches of 2 over 5 changed accounts; one account's metrics row is held by another
    transaction: the refresh folds the other 4, leaves that one, and the next run folds it."""
    accounts = [
        await make_account(sessionmaker, tenant.id, f"B{i}", partner=True) for i in range(5)
    ]
    for i in range(len(accounts)):
        async with sessionmaker.begin() as s:
            await inv.create_standalone_invoice(
                s, tenant.id, posted_invoice(f"B{i}", f"{i + 1}.00")
            )
            await inv.create_standalone_invoice(s, tenant.id, posted_invoice(f"B{i}", "10.00", 2))
    held = accounts[2]["id"]
    holder = sessionmaker()
    await holder.begin()
    await holder.execute(
        text("SELECT 1 FROM account_metrics WHERE account_id = :a FOR UPDATE"), {"a": held}
    )
    report = await met.refresh_tenant(engine, tenant.id, batch=2)
    assert report.accounts_refreshed == 4
    assert report.accounts_skipped == 1
    assert report.changes_folded == 8
    assert held not in report.refreshed_ids
    assert (await stored(sessionmaker, held)).total_invoice_balance == 0
    await holder.rollback()
    await holder.close()
    report = await met.refresh_tenant(engine, tenant.id, batch=2)
    assert report.refreshed_ids == [held]
    assert report.changes_folded == 2
    for i, a in enumerate(accounts):
        m = await stored(sessionmaker, a["id"])
        assert m.total_invoice_balance == D(i + 11)
        assert m.last_invoice_date == date(2026, 11, 2)
        assert m.values() == (await oracle(sessionmaker, a["id"])).values()


async def test_turning_partner_off_brings_metrics_current(sessionmaker: Any, tenant: Any) -> None:
    a = await make_account(sessionmaker, tenant.id, "FLIP", partner=True)
    async with sessionmaker.begin() as s:
        await inv.create_standalone_invoice(s, tenant.id, posted_invoice("FLIP", "3.00"))
    assert (await stored(sessionmaker, a["id"])).total_invoice_balance == 0
    async with sessionmaker.begin() as s:
        row = await acc.update_account(
            s, tenant.id, "FLIP", acc.AccountChanges(partner_account=False)
        )
    assert row["partner_account"] is False
    assert (await stored(sessionmaker, a["id"])).total_invoice_balance == D("3")
    async with sessionmaker.begin() as s:  # now synchronous
        await inv.create_standalone_invoice(s, tenant.id, posted_invoice("FLIP", "4.00"))
    m = await stored(sessionmaker, a["id"])
    assert m.total_invoice_balance == D("7")
    assert m.values() == (await oracle(sessionmaker, a["id"])).values()


async def test_tenant_interval_decides_which_tenants_refresh(
    engine: Any, sessionmaker: Any, tenant: Any
) -> None:
    a = await make_account(sessionmaker, tenant.id, "DUE", partner=True)
    async with sessionmaker.begin() as s:
        await inv.create_standalone_invoice(s, tenant.id, posted_invoice("DUE", "2.00"))
        await s.execute(
            text("UPDATE tenant SET metrics_refreshed_at = now() WHERE id = :t"), {"t": tenant.id}
        )
    assert tenant.id not in await met.claim_due_tenants(engine)  # default 3600 s not passed
    async with sessionmaker.begin() as s:
        await update_settings(s, tenant.id, metrics_refresh_interval=1)
        await s.execute(
            text(
                "UPDATE tenant SET metrics_refreshed_at = now() - interval '2 seconds' "
                "WHERE id = :t"
            ),
            {"t": tenant.id},
        )
    claimed = await met.claim_due_tenants(engine)
    assert tenant.id in claimed
    assert tenant.id not in await met.claim_due_tenants(engine)  # claimed once per interval
    await met.refresh_tenant(engine, tenant.id)
    assert (await stored(sessionmaker, a["id"])).total_invoice_balance == D("2")


@pytest.mark.parametrize("partner", [True, False])
async def test_lock_wait_is_bounded_and_retryable(
    sessionmaker: Any, tenant: Any, partner: bool
) -> None:
    """A write on an ordinary account whose lock is held answers LOCK_COMPETITION; a
    partner account's write does not wait at all."""
    a = await make_account(sessionmaker, tenant.id, "LW", partner=partner)
    async with sessionmaker.begin() as s:
        await update_settings(s, tenant.id, lock_wait_ms=50)
    holder = sessionmaker()
    await holder.begin()
    # Another write on the account, in flight: it holds what a write holds.
    await met.MetricsWriter(holder, tenant.id).lock(a["id"])
    try:
        async with sessionmaker.begin() as s:
            await inv.create_standalone_invoice(s, tenant.id, posted_invoice("LW", "1.00"))
        outcome = "ok"
    except LockCompetition as exc:
        assert exc.retryable
        outcome = "LOCK_COMPETITION"
    await holder.rollback()
    await holder.close()
    assert outcome == ("ok" if partner else "LOCK_COMPETITION")
    async with sessionmaker() as s:
        count = (
            await s.execute(
                text("SELECT count(*) FROM invoice WHERE account_id = :a"), {"a": a["id"]}
            )
        ).scalar_one()
    assert count == (1 if partner else 0)
