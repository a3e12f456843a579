"""/metrics scraped through the app and read with prometheus_client's parser: operation
latency histograms, LOCK_COMPETITION answers, per-tenant refresh lag and pending changes,
refresh passes, the job queue's depth and running bill runs."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import date
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import text

from billing import billruns
from billing import invoices as inv
from billing import metrics as met
from billing.tenants import update_settings
from jobs import tasks
from server.observability import READINGS_TTL_S
from server.settings import Settings
from tests import rating_fixtures as rf
from tests.billrun_worker import arq_pool
from tests.server.test_app import bearer, serve
from tests.test_partner_metrics import make_account, posted_invoice

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@pytest.fixture
async def app_client(database_url: str, redis_url: str) -> AsyncIterator[httpx.AsyncClient]:
    settings = Settings(
        database_url=database_url, redis_url=redis_url, run_worker=False, allow_anonymous=False
    )
    async with serve(settings, schema=None) as c:
        yield c


async def scrape(client: httpx.AsyncClient, *, fresh: bool = False) -> Samples:
    """Every sample of one scrape, by name and labels. ``fresh`` waits out the readings
    the app keeps for a second, so the database and Redis gauges are read again."""
    if fresh:
        await asyncio.sleep(READINGS_TTL_S + 0.05)
    r = await client.get("/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(r.text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


async def gql(client: httpx.AsyncClient, key: str, query: str, **variables: Any) -> Any:
    r = await client.post(
        "/graphql", json={"query": query, "variables": variables}, headers=bearer(key)
    )
    assert r.status_code == 200, r.text
    return r.json()


OP = "partnerbill_graphql_operation_seconds_count"


async def test_each_operation_is_timed_under_its_root_field(
    app_client: httpx.AsyncClient, tenant: Any
) -> None:
    before = await scrape(app_client)
    await gql(app_client, tenant.api_key, "query Mine { tenantSettings { lockWait } }")
    await gql(app_client, tenant.api_key, "{ tenantSettings { lockWait } }")
    # Not in the schema, several root fields, and a name the client made up: bounded labels.
    await gql(app_client, tenant.api_key, "query Made_Up_By_Client { noSuchField }")
    await gql(app_client, tenant.api_key, "{ tenantId tenantSettings { lockWait } }")
    after = await scrape(app_client)

    def moved(**labels: str) -> float:
        return (value(after, OP, **labels) or 0) - (value(before, OP, **labels) or 0)

    assert moved(type="query", operation="tenantSettings") == 2
    assert moved(type="query", operation="unknown") == 1
    assert moved(type="query", operation="multiple") == 1
    assert not any("Made_Up_By_Client" in str(labels) for _, labels in after)
    bucket = value(
        after,
        "partnerbill_graphql_operation_seconds_bucket",
        type="query",
        operation="tenantSettings",
        le="+Inf",
    )
    assert bucket == value(after, OP, type="query", operation="tenantSettings")
    # The request counters keep their names.
    assert (
        value(
            after, "partnerbill_http_requests_total", route="/graphql", method="POST", status="200"
        )
        or 0
    ) >= 4


INVOICE = """mutation($input: CreateStandaloneInvoiceInput!) {
  createStandaloneInvoice(input: $input) { invoice { invoiceNumber } errors { code } } }"""
SETTINGS = """mutation($ms: Int!) {
  updateTenantSettings(input: {lockWait: $ms}) { errors { code } } }"""


async def test_a_lock_competition_answer_is_counted(
    app_client: httpx.AsyncClient, sessionmaker: Any, tenant: Any
) -> None:
    account = await make_account(sessionmaker, tenant.id, "LC1", partner=False)
    await gql(app_client, tenant.api_key, SETTINGS, ms=0)
    before = await scrape(app_client)
    holder = sessionmaker()
    await holder.begin()
    try:
        await met.MetricsWriter(holder, tenant.id).lock(int(account["id"]))
        answer = await gql(
            app_client,
            tenant.api_key,
            INVOICE,
            input={
                "accountNumber": "LC1",
                "invoiceDate": "2026-11-01",
                "status": "POSTED",
                "items": [{"chargeName": "Seat", "amount": "1.00"}],
            },
        )
    finally:
        await holder.rollback()
        await holder.close()
    assert answer["data"]["createStandaloneInvoice"]["errors"] == [{"code": "LOCK_COMPETITION"}]
    after = await scrape(app_client)
    name = "partnerbill_lock_competition_total"
    assert (value(after, name) or 0) - (value(before, name) or 0) == 1


async def test_refresh_lag_and_pending_changes_of_a_tenant_until_the_refresh(
    app_client: httpx.AsyncClient, sessionmaker: Any, engine: Any, tenant: Any
) -> None:
    async with sessionmaker.begin() as s:
        await update_settings(s, tenant.id, metrics_refresh_interval=60)
    await make_account(sessionmaker, tenant.id, "LAG1", partner=True)
    async with sessionmaker.begin() as s:
        await inv.create_standalone_invoice(s, tenant.id, posted_invoice("LAG1", "10"))
        await inv.create_standalone_invoice(s, tenant.id, posted_invoice("LAG1", "5"))
    await asyncio.sleep(0.05)  # the lag is measured from the change's transaction
    t = str(tenant.id)

    waiting = await scrape(app_client, fresh=True)
    assert (value(waiting, "partnerbill_metrics_refresh_lag_seconds", tenant=t) or 0) > 0.04
    assert value(waiting, "partnerbill_metrics_pending_changes", tenant=t) == 2
    assert value(waiting, "partnerbill_metrics_refresh_interval_seconds", tenant=t) == 60

    before = waiting
    done = await tasks.refresh_tenant_metrics({"engine": engine}, tenant.id)
    assert done["accounts"] == 1

    folded = await scrape(app_client, fresh=True)
    assert value(folded, "partnerbill_metrics_refresh_lag_seconds", tenant=t) is None
    assert value(folded, "partnerbill_metrics_pending_changes", tenant=t) is None

    def moved(name: str) -> float:
        return (value(folded, name) or 0) - (value(before, name) or 0)

    # The worker's side, in this process since the job ran here.
    assert moved("partnerbill_metrics_refresh_seconds_count") == 1
    assert moved("partnerbill_metrics_refresh_accounts_folded_total") == 1
    assert moved("partnerbill_metrics_refresh_changes_folded_total") == 2


async def test_job_queue_depth(app_client: httpx.AsyncClient, redis_url: str) -> None:
    pool = await arq_pool(redis_url)
    try:
        empty = await scrape(app_client, fresh=True)
        assert value(empty, "partnerbill_job_queue_depth", queue=pool.default_queue_name) == 0
        for n in range(3):  # no worker runs here: they stay queued
            await pool.enqueue_job("refresh_tenant_metrics", n, _defer_by=600)
        queued = await scrape(app_client, fresh=True)
        assert value(queued, "partnerbill_job_queue_depth", queue=pool.default_queue_name) == 3
    finally:
        await pool.flushdb()
        await pool.aclose()


async def test_progress_of_a_running_bill_run(
    app_client: httpx.AsyncClient, sessionmaker: Any, tenant: Any
) -> None:
    async with sessionmaker.begin() as s:
        owners = [await rf.account(s, tenant.id, bcd=1) for _ in range(3)]
        for o in owners:
            await rf.subscription(
                s,
                tenant.id,
                o["id"],
                start=date(2026, 2, 1),
                charges=[{"name": "Seat", "price": "10"}],
            )
        run = await billruns.create_bill_run(
            s, tenant.id, billruns.BillRunData(target_date=date(2026, 3, 1))
        )
    labels = {"tenant": str(tenant.id), "bill_run": run["bill_run_number"]}

    pending = await scrape(app_client, fresh=True)
    assert value(pending, "partnerbill_bill_run_accounts", status="PENDING", **labels) == 3
    assert (
        value(pending, "partnerbill_bill_run_accounts_processed", status="PENDING", **labels) == 0
    )

    async with sessionmaker.begin() as s:
        await billruns.start_bill_run(s, run["id"])
        await billruns.bill_account(s, run["id"], int(owners[0]["id"]))
    running = await scrape(app_client, fresh=True)
    assert value(running, "partnerbill_bill_run_accounts", status="PROCESSING", **labels) == 3
    assert (
        value(running, "partnerbill_bill_run_accounts_processed", status="PROCESSING", **labels)
        == 1
    )

    async with sessionmaker.begin() as s:
        for o in owners[1:]:
            await billruns.bill_account(s, run["id"], int(o["id"]))
        assert await billruns.finish_if_done(s, run["id"]) is not None
    finished = await scrape(app_client, fresh=True)
    assert not any(
        labels.items() <= dict(key).items() for name, key in finished if "bill_run" in name
    )


async def test_metrics_answer_without_the_database_lines_when_it_cannot_be_read(
    settings_without_database: Settings,
) -> None:
    async with serve(settings_without_database, schema=None) as c:
        samples = await scrape(c)
    assert not any(name.startswith("partnerbill_metrics_refresh_lag") for name, _ in samples)
    assert any(name == "partnerbill_job_queue_depth" for name, _ in samples)


@pytest.fixture
def settings_without_database(redis_url: str) -> Settings:
    return Settings(
        database_url="postgresql://postgres@127.0.0.1:1/x",
        redis_url=redis_url,
        run_worker=False,
        allow_anonymous=False,
    )


async def test_a_tenant_without_pending_changes_has_no_lag_series(
    app_client: httpx.AsyncClient, sessionmaker: Any, tenant: Any
) -> None:
    await make_account(sessionmaker, tenant.id, "Q1", partner=True)
    async with sessionmaker() as s:
        assert (
            await s.execute(
                text("SELECT count(*) FROM metrics_change WHERE tenant_id = :t"), {"t": tenant.id}
            )
        ).scalar_one() == 0
    samples = await scrape(app_client, fresh=True)
    assert value(samples, "partnerbill_metrics_pending_changes", tenant=str(tenant.id)) is None
