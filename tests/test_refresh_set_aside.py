"""One bad partner account never stops the others (issue 11, item 3): the refresh splits a
failing batch down to the account that fails, folds the rest, sets that one aside (reported
in the API and in /metrics), retries it later with a backoff and folds it once it is fixed;
the cron tick refreshes every due tenant whatever another one raises; and a write that would
outgrow an account's stored totals is refused up front."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from billing import invoices as inv
from billing import metrics as met
from billing.tenants import create_tenant, update_settings
from jobs import tasks
from server.observability import READINGS_TTL_S
from server.settings import Settings
from tests.server.test_app import bearer, serve
from tests.test_partner_metrics import make_account, oracle, posted_invoice, stored

HUGE = Decimal("9000000000000000")  # two of these outgrow NUMERIC(20,4): 16 integer digits

ACCOUNT = """query($n: String!) { account(accountNumber: $n) {
  metricsRefreshError metrics { totalInvoiceBalance } } }"""


@pytest.fixture
async def app_client(database_url: str, redis_url: str) -> AsyncIterator[httpx.AsyncClient]:
    settings = Settings(
        database_url=database_url, redis_url=redis_url, run_worker=False, allow_anonymous=False
    )
    async with serve(settings, schema=None) as c:
        yield c


async def _partner_accounts(sm: Any, tenant_id: int, prefix: str, n: int) -> list[int]:
    """n partner accounts, each with a posted invoice of 10 waiting in the ledger."""
    ids = []
    for i in range(n):
        a = await make_account(sm, tenant_id, f"{prefix}{i}", partner=True)
        async with sm.begin() as s:
            await inv.create_standalone_invoice(s, tenant_id, posted_invoice(f"{prefix}{i}", "10"))
        ids.append(int(a["id"]))
    return ids


async def _overflow(sm: Any, tenant_id: int, account_id: int) -> None:
    """Ledger rows whose sum no metrics column can hold, written past the API."""
    async with sm.begin() as s:
        for _ in range(2):
            await s.execute(
                text(
                    "INSERT INTO metrics_change (tenant_id, account_id, d_invoice_balance) "
                    "VALUES (:t, :a, :d)"
                ),
                {"t": tenant_id, "a": account_id, "d": HUGE},
            )


async def _fix(sm: Any, account_id: int) -> None:
    async with sm.begin() as s:
        await s.execute(
            text("DELETE FROM metrics_change WHERE account_id = :a AND d_invoice_balance = :d"),
            {"a": account_id, "d": HUGE},
        )


async def _failure(sm: Any, account_id: int) -> Any:
    async with sm() as s:
        return (
            (
                await s.execute(
                    text(
                        "SELECT error, failures, retry_at - now() AS wait "
                        "FROM metrics_refresh_failure WHERE account_id = :a"
                    ),
                    {"a": account_id},
                )
            )
            .mappings()
            .one_or_none()
        )


async def _due_now(sm: Any, account_id: int) -> None:
    async with sm.begin() as s:
        await s.execute(
            text(
                "UPDATE metrics_refresh_failure SET retry_at = now() - interval '1 second' "
                "WHERE account_id = :a"
            ),
            {"a": account_id},
        )


async def _make_due(sm: Any, tenant_id: int) -> None:
    async with sm.begin() as s:
        await update_settings(s, tenant_id, metrics_refresh_interval=10)
        await s.execute(
            text(
                "UPDATE tenant SET metrics_refreshed_at = now() - interval '11 seconds' "
                "WHERE id = :t"
            ),
            {"t": tenant_id},
        )


async def _account(client: httpx.AsyncClient, key: str, number: str) -> dict[str, Any]:
    r = await client.post(
        "/graphql", json={"query": ACCOUNT, "variables": {"n": number}}, headers=bearer(key)
    )
    body = r.json()
    assert "errors" not in body, body
    return body["data"]["account"]  # type: ignore[no-any-return]


async def test_an_overflowing_account_is_set_aside_reported_retried_and_folded_once_fixed(
    sessionmaker: Any, engine: Any, tenant: Any, app_client: httpx.AsyncClient
) -> None:
    ids = await _partner_accounts(sessionmaker, tenant.id, "OV", 7)
    bad = ids[2]
    await _overflow(sessionmaker, tenant.id, bad)

    report = await met.refresh_tenant(engine, tenant.id, batch=4, parallelism=1)

    # Every batch-mate of the bad account is folded; only the bad one is set aside.
    assert report.set_aside_ids == [bad]
    assert sorted(report.refreshed_ids) == sorted(a for a in ids if a != bad)
    for a in ids:
        m = await stored(sessionmaker, a)
        assert m.total_invoice_balance == (0 if a == bad else Decimal("10")), a
    failure = await _failure(sessionmaker, bad)
    assert failure["failures"] == 1
    assert "out of range" in failure["error"] or "overflow" in failure["error"]

    # Reported in the API (the others report nothing) and in /metrics.
    seen = await _account(app_client, tenant.api_key, "OV2")
    assert seen["metricsRefreshError"] == failure["error"]
    assert seen["metrics"]["totalInvoiceBalance"].startswith("0")
    assert (await _account(app_client, tenant.api_key, "OV1"))["metricsRefreshError"] is None
    scraped = (await app_client.get("/metrics")).text
    assert (
        f'partnerbill_metrics_refresh_failed_accounts_by_tenant{{tenant="{tenant.id}"}} 1'
        in scraped
    )
    assert "# TYPE partnerbill_metrics_refresh_failed_accounts gauge" in scraped

    # Not tried again before its time; tried again after it, and set aside once more with a
    # longer wait while it still fails.
    again = await met.refresh_tenant(engine, tenant.id, batch=4)
    assert again.set_aside_ids == [] and again.waiting == 1
    await _due_now(sessionmaker, bad)
    again = await met.refresh_tenant(engine, tenant.id, batch=4)
    assert again.set_aside_ids == [bad]
    failure = await _failure(sessionmaker, bad)
    assert failure["failures"] == 2
    assert failure["wait"].total_seconds() > 1.5

    # Fixed: the next try folds it and clears the report.
    await _fix(sessionmaker, bad)
    await _due_now(sessionmaker, bad)
    fixed = await met.refresh_tenant(engine, tenant.id, batch=4)
    assert fixed.refreshed_ids == [bad] and fixed.set_aside_ids == []
    assert await _failure(sessionmaker, bad) is None
    assert (await stored(sessionmaker, bad)).values() == (await oracle(sessionmaker, bad)).values()
    assert (await _account(app_client, tenant.api_key, "OV2"))["metricsRefreshError"] is None
    await asyncio.sleep(READINGS_TTL_S)  # /metrics reads the database again after this
    scraped = (await app_client.get("/metrics")).text
    assert f'tenant="{tenant.id}"' not in scraped


async def test_a_set_aside_account_whose_changes_are_gone_is_cleared(
    sessionmaker: Any, engine: Any, tenant: Any
) -> None:
    ids = await _partner_accounts(sessionmaker, tenant.id, "GO", 1)
    await _overflow(sessionmaker, tenant.id, ids[0])
    assert (await met.refresh_tenant(engine, tenant.id)).set_aside_ids == ids
    async with sessionmaker.begin() as s:
        await s.execute(text("DELETE FROM metrics_change WHERE account_id = :a"), {"a": ids[0]})
    await met.refresh_tenant(engine, tenant.id)
    assert await _failure(sessionmaker, ids[0]) is None


async def test_an_overflowing_account_never_stops_another_tenant_in_the_same_tick(
    sessionmaker: Any, engine: Any, tenant: Any
) -> None:
    async with sessionmaker.begin() as s:
        other, _ = await create_tenant(s, "test-set-aside-other")
    good: list[int] = []
    bad: list[int] = []
    for tid, prefix in ((tenant.id, "TA"), (other, "TB")):
        ids = await _partner_accounts(sessionmaker, tid, prefix, 3)
        await _overflow(sessionmaker, tid, ids[0])  # each tenant has one bad account
        bad.append(ids[0])
        good += ids[1:]
        await _make_due(sessionmaker, tid)

    done = await tasks.refresh_due_tenants({"engine": engine})

    assert done["failed_tenants"] == {}
    for tid in (tenant.id, other):
        assert done["by_tenant"][tid]["accounts"] == 2
        assert done["by_tenant"][tid]["set_aside"] == 1
    for a in good:
        assert (await stored(sessionmaker, a)).total_invoice_balance == Decimal("10"), a
    for a in bad:
        assert await _failure(sessionmaker, a) is not None


async def test_the_tick_refreshes_every_tenant_whatever_one_raises(
    sessionmaker: Any, engine: Any, tenant: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with sessionmaker.begin() as s:
        other, _ = await create_tenant(s, "test-set-aside-raises")
    [ok] = await _partner_accounts(sessionmaker, other, "RB", 1)
    await _partner_accounts(sessionmaker, tenant.id, "RA", 1)
    for tid in (tenant.id, other):
        await _make_due(sessionmaker, tid)
    refresh = met.refresh_tenant

    async def failing(engine: Any, tenant_id: int, **kw: Any) -> met.RefreshReport:
        if tenant_id == tenant.id:
            raise RuntimeError("this tenant's refresh broke")
        return await refresh(engine, tenant_id, **kw)

    monkeypatch.setattr(met, "refresh_tenant", failing)
    done = await tasks.refresh_due_tenants({"engine": engine})

    assert "this tenant's refresh broke" in done["failed_tenants"][tenant.id]
    assert done["by_tenant"][other]["accounts"] == 1
    assert (await stored(sessionmaker, ok)).total_invoice_balance == Decimal("10")


PAYMENT = """mutation($input: CreatePaymentInput!) {
  createPayment(input: $input) { payment { paymentNumber } errors { code message } } }"""

NEAR_MAX = Decimal("9999999999999990")


async def _ledger_rows(sm: Any, account_id: int) -> int:
    async with sm() as s:
        return int(
            (
                await s.execute(
                    text("SELECT count(*) FROM metrics_change WHERE account_id = :a"),
                    {"a": account_id},
                )
            ).scalar_one()
        )


async def test_a_partner_write_that_would_overflow_the_totals_is_refused_up_front(
    sessionmaker: Any, tenant: Any
) -> None:
    from tests.helpers import Gql

    a = await make_account(sessionmaker, tenant.id, "NEAR", partner=True)
    async with sessionmaker.begin() as s:
        await s.execute(
            text("UPDATE account_metrics SET unapplied_payment_amount = :v WHERE account_id = :a"),
            {"v": NEAR_MAX, "a": a["id"]},
        )
    gql = Gql(sessionmaker, tenant.id)
    pay = {"accountNumber": "NEAR", "effectiveDate": "2026-11-02"}

    refused = await gql(PAYMENT, input={**pay, "amount": "100"})
    assert refused["createPayment"]["payment"] is None
    assert refused["createPayment"]["errors"][0]["code"] == "VALIDATION"
    assert await _ledger_rows(sessionmaker, a["id"]) == 0  # nothing the fold could choke on

    fits = await gql(PAYMENT, input={**pay, "amount": "9.99"})
    assert fits["createPayment"]["errors"] == []
    assert await _ledger_rows(sessionmaker, a["id"]) == 1


async def test_the_metrics_writer_refuses_a_partner_change_that_would_overflow(
    sessionmaker: Any, tenant: Any
) -> None:
    from sqlalchemy.exc import DBAPIError

    from resolvers.errors import too_large

    a = await make_account(sessionmaker, tenant.id, "NEARW", partner=True)
    async with sessionmaker.begin() as s:
        await s.execute(
            text("UPDATE account_metrics SET total_invoice_balance = :v WHERE account_id = :a"),
            {"v": NEAR_MAX, "a": a["id"]},
        )
    with pytest.raises(DBAPIError) as caught:
        async with sessionmaker.begin() as s:
            w = met.MetricsWriter(s, tenant.id)
            await w.lock(a["id"])
            w.add(a["id"], invoice_balance=Decimal("100"))
            await w.flush()
    assert too_large(caught.value)
    assert await _ledger_rows(sessionmaker, a["id"]) == 0
