"""Push subscriptions end to end: the real app served by uvicorn, graphql-transport-ws over a
real websocket, writes over HTTP, refreshes and bill runs through the job functions, events
through Redis pub/sub. Every wait has a deadline; "nothing arrived" is proven by ordering
(Redis delivers a channel's messages in publish order), never by sleeping."""

from __future__ import annotations

import asyncio
import json
import secrets
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import date
from typing import Any

import httpx
import pytest
import uvicorn
from sqlalchemy import text
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from billing.tenants import create_tenant
from jobs import enqueue, events
from jobs import tasks as job
from server.app import create_app
from server.settings import Settings
from tests import rating_fixtures as rf
from tests.billrun_worker import arq_pool, drain

WAIT = 10.0  # seconds any expected message may take before the test fails

METRICS = """
subscription($numbers: [String!]) { accountMetricsUpdated(accountNumbers: $numbers) {
  accountNumber reason
  metrics { totalInvoiceBalance balance currency lastMetricsUpdate }
  account { accountNumber partnerAccount lastMetricsUpdate metrics { balance } } } }"""

PROGRESS = """
subscription($n: String!) { billRunProgress(billRunNumber: $n) {
  billRunNumber status accountsTotal accountsProcessed invoicesGenerated } }"""


# --------------------------------------------------------------------------- the server


@asynccontextmanager
async def serve(settings: Settings) -> AsyncIterator[str]:
    """The app on a free loopback port, until the block ends."""
    app = create_app(settings)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(app, lifespan="on", log_level="warning", timeout_graceful_shutdown=2)
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        async with asyncio.timeout(WAIT):
            while not server.started:
                if task.done():
                    task.result()  # start-up failed: raise why
                await asyncio.sleep(0.01)
        yield f"127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        await task
        sock.close()


@pytest.fixture(scope="module")
async def base(database_url: str, redis_url: str) -> AsyncIterator[str]:
    settings = Settings(
        database_url=database_url, redis_url=redis_url, run_worker=False, allow_anonymous=False
    )
    async with serve(settings) as addr:
        yield addr


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Any]:
    pool = await arq_pool(redis_url)
    yield pool
    await pool.aclose()


async def gql(base: str, key: str, query: str, **variables: Any) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=f"http://{base}") as client:
        r = await client.post(
            "/graphql",
            json={"query": query, "variables": variables},
            headers={"Authorization": f"Bearer {key}"},
        )
    body = r.json()
    assert r.status_code == 200 and "errors" not in body, body
    for value in body["data"].values():
        if isinstance(value, dict):
            assert value.get("errors", []) == [], value
    return body["data"]  # type: ignore[no-any-return]


async def new_account(base: str, key: str, number: str, *, partner: bool = False) -> None:
    await gql(
        base, key,
        """mutation($n: String!, $p: Boolean!) { createAccount(input: {accountNumber: $n,
             name: $n, currency: "USD", partnerAccount: $p,
             billToContact: {firstName: "A", lastName: "B"}}) { errors { code message } } }""",
        n=number, p=partner,
    )  # fmt: skip


async def post_invoice(base: str, key: str, number: str, amount: str) -> None:
    await gql(
        base, key,
        """mutation($n: String!, $a: Decimal!) { createStandaloneInvoice(input: {
             accountNumber: $n, invoiceDate: "2026-11-01", status: POSTED,
             items: [{chargeName: "Service", amount: $a}]}) { errors { code message } } }""",
        n=number, a=amount,
    )  # fmt: skip


# --------------------------------------------------------------------------- the websocket


class Ws:
    """One graphql-transport-ws connection."""

    def __init__(self, conn: ClientConnection) -> None:
        self.conn = conn

    async def send(self, message: dict[str, Any]) -> None:
        await self.conn.send(json.dumps(message))

    async def receive(self) -> dict[str, Any]:
        async with asyncio.timeout(WAIT):
            while True:
                message = json.loads(await self.conn.recv())
                if message["type"] == "ping":
                    await self.send({"type": "pong"})
                    continue
                return message  # type: ignore[no-any-return]

    async def subscribe(self, query: str, op: str = "1", **variables: Any) -> None:
        await self.send(
            {"id": op, "type": "subscribe", "payload": {"query": query, "variables": variables}}
        )

    async def next(self, op: str = "1") -> dict[str, Any]:
        """The data of the operation's next event (fails on anything else)."""
        message = await self.receive()
        assert message["type"] == "next" and message["id"] == op, message
        assert "errors" not in message["payload"], message
        return message["payload"]["data"]  # type: ignore[no-any-return]


@asynccontextmanager
async def ws(base: str, params: dict[str, Any] | None) -> AsyncIterator[Ws]:
    """A connection past connection_init (acknowledged)."""
    async with connect(f"ws://{base}/graphql", subprotocols=["graphql-transport-ws"]) as conn:  # type: ignore[list-item]
        client = Ws(conn)
        await client.send({"type": "connection_init", "payload": params or {}})
        ack = await client.receive()
        assert ack["type"] == "connection_ack", ack
        yield client


async def subscribed(redis: Any, channel: str) -> None:
    """Wait until the server's subscription is registered in Redis: from then on every
    publish on the channel reaches it."""
    async with asyncio.timeout(WAIT):
        while True:
            counts = dict(await redis.pubsub_numsub(channel))
            if counts.get(channel.encode(), 0) >= 1:
                return
            await asyncio.sleep(0.01)


async def metrics_subscriber(
    base: str, redis: Any, tenant: Any, numbers: list[str] | None = None
) -> Any:
    conn = ws(base, {"apiKey": tenant.api_key})
    client = await conn.__aenter__()
    await client.subscribe(METRICS, numbers=numbers)
    await subscribed(redis, events.metrics_channel(redis, tenant.id))
    return conn, client


# --------------------------------------------------------------------------- accountMetricsUpdated


async def test_an_ordinary_account_announces_its_synchronous_update(
    base: str, redis: Any, tenant: Any
) -> None:
    key = tenant.api_key
    await new_account(base, key, "ORD")
    async with ws(base, {"Authorization": f"Bearer {key}"}) as client:
        await client.subscribe(METRICS)
        await subscribed(redis, events.metrics_channel(redis, tenant.id))
        await post_invoice(base, key, "ORD", "100.00")
        event = (await client.next())["accountMetricsUpdated"]
    now = await gql(base, key, '{ account(accountNumber: "ORD") { lastMetricsUpdate } }')
    stamp = now["account"]["lastMetricsUpdate"]
    assert stamp is not None
    assert event == {
        "accountNumber": "ORD",
        "reason": "SYNC",
        "metrics": {"totalInvoiceBalance": "100.00", "balance": "100.00",
                    "currency": "USD", "lastMetricsUpdate": stamp},
        "account": {"accountNumber": "ORD", "partnerAccount": False,
                    "lastMetricsUpdate": stamp, "metrics": {"balance": "100.00"}},
    }  # fmt: skip


async def test_a_partner_account_announces_after_the_refresh_and_not_before(
    base: str, redis: Any, tenant: Any, engine: Any, sessionmaker: Any
) -> None:
    key = tenant.api_key
    await new_account(base, key, "PART", partner=True)
    await new_account(base, key, "MARK")
    conn, client = await metrics_subscriber(base, redis, tenant)
    try:
        await post_invoice(base, key, "PART", "100.00")  # deferred: no event may follow
        await post_invoice(base, key, "MARK", "1.00")  # published after PART's would have been
        first = (await client.next())["accountMetricsUpdated"]
        assert (first["accountNumber"], first["reason"]) == ("MARK", "SYNC")

        async with sessionmaker.begin() as s:  # make the tenant due for the cron tick
            await s.execute(
                text("UPDATE tenant SET metrics_refreshed_at = now() - interval '2 hours' "
                     "WHERE id = :t"),
                {"t": tenant.id},
            )  # fmt: skip
        done = await job.refresh_due_tenants({"engine": engine, "redis": redis})
        assert done["accounts"] >= 1
        event = (await client.next())["accountMetricsUpdated"]
    finally:
        await conn.__aexit__(None, None, None)
    assert event["accountNumber"] == "PART"
    assert event["reason"] == "REFRESH"
    assert event["metrics"]["totalInvoiceBalance"] == "100.00"
    assert event["metrics"]["lastMetricsUpdate"] is not None
    assert event["account"]["partnerAccount"] is True


async def test_the_account_numbers_filter(base: str, redis: Any, tenant: Any) -> None:
    key = tenant.api_key
    for number in ("F1", "F2", "F3"):
        await new_account(base, key, number)
    conn, client = await metrics_subscriber(base, redis, tenant, ["F2", "F3"])
    try:
        await post_invoice(base, key, "F1", "5.00")  # not asked for
        await post_invoice(base, key, "F3", "7.00")
        await post_invoice(base, key, "F2", "9.00")
        got = [(await client.next())["accountMetricsUpdated"] for _ in range(2)]
    finally:
        await conn.__aexit__(None, None, None)
    assert [(e["accountNumber"], e["metrics"]["balance"]) for e in got] == [
        ("F3", "7.00"),
        ("F2", "9.00"),
    ]


async def test_another_tenants_events_are_not_seen(
    base: str, redis: Any, tenant: Any, sessionmaker: Any
) -> None:
    async with sessionmaker.begin() as s:
        other_id, other_key = await create_tenant(s, f"other-{secrets.token_hex(4)}")

    class Other:
        id, api_key = other_id, other_key

    # The same account number in both tenants: only the tenant decides.
    await new_account(base, tenant.api_key, "SAME")
    await new_account(base, other_key, "SAME")
    mine_conn, mine = await metrics_subscriber(base, redis, tenant, ["SAME"])
    other_conn, other = await metrics_subscriber(base, redis, Other, ["SAME"])
    try:
        await post_invoice(base, tenant.api_key, "SAME", "100.00")
        await post_invoice(base, other_key, "SAME", "3.00")
        seen_by_other = (await other.next())["accountMetricsUpdated"]
        seen_by_me = (await mine.next())["accountMetricsUpdated"]
    finally:
        await other_conn.__aexit__(None, None, None)
        await mine_conn.__aexit__(None, None, None)
    assert seen_by_other["metrics"]["balance"] == "3.00"  # its own write came first
    assert seen_by_me["metrics"]["balance"] == "100.00"


async def test_unknown_account_numbers_are_a_not_found_error(base: str, tenant: Any) -> None:
    await new_account(base, tenant.api_key, "KNOWN")
    async with ws(base, {"apiKey": tenant.api_key}) as client:
        await client.subscribe(METRICS, numbers=["KNOWN", "NOPE"])
        message = await client.receive()
        assert message["type"] == "next", message
        assert message["payload"]["data"] is None
        assert message["payload"]["errors"] == [
            {
                "message": "Account NOPE not found",
                "locations": [{"line": 2, "column": 37}],
                "path": ["accountMetricsUpdated"],
                "extensions": {
                    "code": "NOT_FOUND",
                    "field": ["accountNumbers", "1"],
                    "retryable": False,
                },
            }
        ]
        assert await client.receive() == {"id": "1", "type": "complete"}
        await client.subscribe(METRICS, op="2", numbers=[])
        message = await client.receive()
        assert message["payload"]["errors"][0]["extensions"]["code"] == "VALIDATION"


# --------------------------------------------------------------------------- billRunProgress


async def billing_world(sessionmaker: Any, tenant_id: int, n: int) -> list[dict[str, Any]]:
    """n ordinary invoice-owner accounts, each with one 10.00 monthly subscription."""
    async with sessionmaker.begin() as s:
        accounts = [await rf.account(s, tenant_id, bcd=1) for _ in range(n)]
        for a in accounts:
            await rf.subscription(
                s,
                tenant_id,
                a["id"],
                start=date(2026, 3, 1),
                charges=[{"name": "Seat", "price": "10"}],
            )
    return accounts


async def create_run(base: str, key: str, numbers: list[str], auto_post: bool) -> str:
    data = await gql(
        base, key,
        """mutation($n: [String!], $p: Boolean!) { createBillRun(input: {targetDate: "2026-03-01",
             accountNumbers: $n, autoPost: $p}) { billRun { billRunNumber } errors { code } } }""",
        n=numbers, p=auto_post,
    )  # fmt: skip
    return data["createBillRun"]["billRun"]["billRunNumber"]  # type: ignore[no-any-return]


def progress(data: dict[str, Any]) -> tuple[str, int, int]:
    run = data["billRunProgress"]
    return run["status"], run["accountsProcessed"], run["invoicesGenerated"]


async def test_bill_run_progress_step_by_step_until_posted(
    base: str, redis: Any, tenant: Any, sessionmaker: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    accounts = await billing_world(sessionmaker, tenant.id, 3)
    number = await create_run(base, tenant.api_key, [a["account_number"] for a in accounts], True)
    async with sessionmaker() as s:
        run_id = (await s.execute(
            text("SELECT id FROM bill_run WHERE tenant_id = :t AND bill_run_number = :n"),
            {"t": tenant.id, "n": number},
        )).scalar_one()  # fmt: skip
    ctx = {"sessionmaker": sessionmaker, "redis": redis}
    monkeypatch.setattr(enqueue, "BATCH_SIZE", 1)
    async with ws(base, {"apiKey": tenant.api_key}) as client:
        await client.subscribe(PROGRESS, n=number)
        first = await client.next()
        assert first == {"billRunProgress": {"billRunNumber": number, "status": "PENDING",
                         "accountsTotal": 3, "accountsProcessed": 0,
                         "invoicesGenerated": 0}}  # fmt: skip
        # The worker's steps, one at a time, as its jobs would run them.
        assert (await job.bill_run_drive(ctx, tenant.id, run_id))["batches"] == 3
        assert progress(await client.next()) == ("PROCESSING", 0, 0)
        ids = sorted(a["id"] for a in accounts)
        await job.bill_run_batch(ctx, tenant.id, run_id, [ids[0]])
        assert progress(await client.next()) == ("PROCESSING", 1, 1)
        await job.bill_run_batch(ctx, tenant.id, run_id, [ids[1]])
        assert progress(await client.next()) == ("PROCESSING", 2, 2)
        await job.bill_run_batch(ctx, tenant.id, run_id, [ids[2]])  # completes and posts
        seen = []
        while True:
            message = await client.receive()
            if message["type"] == "complete":
                break
            assert message["type"] == "next", message
            seen.append(progress(message["payload"]["data"]))
    assert seen[-1] == ("POSTED", 3, 3)
    order = ["PROCESSING", "COMPLETED", "POSTED"]
    assert [order.index(s) for s, _, _ in seen] == sorted(order.index(s) for s, _, _ in seen)
    async with sessionmaker() as s:
        drafts = (await s.execute(
            text("SELECT count(*) FROM invoice WHERE bill_run_id = :r AND status = 'DRAFT'"),
            {"r": run_id},
        )).scalar_one()  # fmt: skip
    assert drafts == 0  # completed only once every invoice was posted


async def test_bill_run_progress_through_the_worker_completes_without_auto_post(
    base: str, redis: Any, tenant: Any, sessionmaker: Any, database_url: str, redis_url: str
) -> None:
    accounts = await billing_world(sessionmaker, tenant.id, 2)
    number = await create_run(base, tenant.api_key, [a["account_number"] for a in accounts], False)
    async with ws(base, {"apiKey": tenant.api_key}) as client:
        await client.subscribe(PROGRESS, n=number)
        assert progress(await client.next()) == ("PENDING", 0, 0)
        await drain(database_url, redis_url)  # the real arq worker, burst mode
        seen = []
        while True:
            message = await client.receive()
            if message["type"] == "complete":
                break
            seen.append(progress(message["payload"]["data"]))
        assert seen[-1] == ("COMPLETED", 2, 2)
        processed = [p for _, p, _ in seen]
        assert processed == sorted(processed)
        # A settled run: one event, then complete.
        await client.subscribe(PROGRESS, op="2", n=number)
        assert progress(await client.next("2")) == ("COMPLETED", 2, 2)
        assert await client.receive() == {"id": "2", "type": "complete"}


async def test_bill_run_progress_follows_a_post_under_way_until_posted(
    base: str,
    redis: Any,
    tenant: Any,
    sessionmaker: Any,
    database_url: str,
    redis_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from billing import billruns

    accounts = await billing_world(sessionmaker, tenant.id, 3)
    number = await create_run(base, tenant.api_key, [a["account_number"] for a in accounts], False)
    await drain(database_url, redis_url)
    async with sessionmaker.begin() as s:  # a postBillRun that stopped before its first chunk
        run_id = (await billruns.begin_post(s, tenant.id, number))["id"]
    query = """subscription($n: String!) { billRunProgress(billRunNumber: $n) {
      status posting accountsProcessed } }"""
    monkeypatch.setattr(billruns, "POST_CHUNK", 2)
    async with ws(base, {"apiKey": tenant.api_key}) as client:
        await client.subscribe(query, n=number)
        # COMPLETED without autoPost, but a post is under way: not settled yet.
        assert await client.next() == {
            "billRunProgress": {"status": "COMPLETED", "posting": "POST", "accountsProcessed": 3}
        }
        await job.post_bill_run(sessionmaker, tenant.id, number, redis)
        seen = []
        while True:
            message = await client.receive()
            if message["type"] == "complete":
                break
            assert message["type"] == "next", message
            seen.append(message["payload"]["data"]["billRunProgress"])
    assert seen[-1] == {"status": "POSTED", "posting": None, "accountsProcessed": 3}
    assert all(e["status"] == "COMPLETED" for e in seen[:-1])
    async with sessionmaker() as s:
        drafts = (await s.execute(
            text("SELECT count(*) FROM invoice WHERE bill_run_id = :r AND status = 'DRAFT'"),
            {"r": run_id},
        )).scalar_one()  # fmt: skip
    assert drafts == 0


async def test_an_unknown_bill_run_is_a_not_found_error(base: str, tenant: Any) -> None:
    async with ws(base, {"apiKey": tenant.api_key}) as client:
        await client.subscribe(PROGRESS, n="BR99999999")
        message = await client.receive()
        errors = message["payload"]["errors"]
        assert [(e["message"], e["extensions"]["code"]) for e in errors] == [
            ("Bill run BR99999999 not found", "NOT_FOUND")
        ]


# --------------------------------------------------------------------------- authentication


@pytest.mark.parametrize(
    "params",
    [None, {"apiKey": "pb_not_a_key"}, {"Authorization": "Bearer pb_not_a_key"},
     {"Authorization": "Basic dXNlcjpwYXNz"}],
)  # fmt: skip
async def test_a_websocket_without_a_valid_key_is_refused(
    base: str, params: dict[str, Any] | None
) -> None:
    async with connect(f"ws://{base}/graphql", subprotocols=["graphql-transport-ws"]) as conn:  # type: ignore[list-item]
        await conn.send(json.dumps({"type": "connection_init", "payload": params or {}}))
        with pytest.raises(ConnectionClosed) as closed:
            async with asyncio.timeout(WAIT):
                await conn.recv()
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 4403


async def test_a_subscribe_before_connection_init_is_refused(base: str) -> None:
    async with connect(f"ws://{base}/graphql", subprotocols=["graphql-transport-ws"]) as conn:  # type: ignore[list-item]
        await conn.send(
            json.dumps({"id": "1", "type": "subscribe", "payload": {"query": PROGRESS}})
        )
        with pytest.raises(ConnectionClosed) as closed:
            async with asyncio.timeout(WAIT):
                await conn.recv()
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 4401


# --------------------------------------------------------------------------- publishing


async def test_a_failed_publish_is_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    import redis.asyncio as aioredis

    unreachable = aioredis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.5)
    try:
        assert await events.publish(unreachable, "partnerbill:test", {"x": 1}) is False
    finally:
        await unreachable.aclose()
    assert "could not publish to partnerbill:test" in caplog.text


async def test_the_hub_ends_its_feeds_when_closed(redis: Any) -> None:
    hub = events.EventHub(redis)
    channel = f"partnerbill:test:{secrets.token_hex(4)}"
    async with hub.listen(channel) as feed:
        await events.publish(redis, channel, {"n": 1})
        assert await feed.get(within=WAIT) == [{"n": 1}]
        await hub.close()
        assert await feed.get(within=WAIT) is None
    assert dict(await redis.pubsub_numsub(channel)).get(channel.encode(), 0) == 0


async def test_a_burst_of_announcements_is_one_message(redis: Any) -> None:
    """Metrics announcements gather for a moment: 200 writes on two accounts are one
    message naming both, not 200 publishes."""
    hub = events.EventHub(redis)
    tenant_id = 900_000 + secrets.randbelow(99_999)
    try:
        async with hub.metrics_feed(tenant_id) as feed:
            for n in range(200):
                hub.announce_metrics(tenant_id, [1 + n % 2], "SYNC")
            got = await feed.get(within=WAIT)
            assert got == [{"accounts": [1, 2], "reason": "SYNC"}]
            assert await feed.get(within=0.2) == []
            hub.announce_metrics(tenant_id, [3], "SYNC")  # a later one is sent on its own
            assert await feed.get(within=WAIT) == [{"accounts": [3], "reason": "SYNC"}]
    finally:
        await hub.close()


def test_channels_carry_the_redis_database() -> None:
    class Pool:
        connection_kwargs = {"db": 8}

    class Client:
        connection_pool = Pool()

    assert events.metrics_channel(Client(), 5) == "partnerbill:db8:tenant5:metrics"
    assert events.bill_run_channel(Client(), 5, 7) == "partnerbill:db8:tenant5:billrun:7"


@pytest.mark.parametrize(
    ("headers", "params"),
    [
        ({}, {"apiKey": "pb_not_a_key"}),
        ({"Authorization": "Bearer pb_not_a_key"}, {}),
        ({"Authorization": "Basic dXNlcjpwYXNz"}, {}),
    ],
)
async def test_a_bad_key_is_refused_even_where_anonymous_access_is_allowed(
    database_url: str, redis_url: str, headers: dict[str, str], params: dict[str, Any]
) -> None:
    settings = Settings(
        database_url=database_url, redis_url=redis_url, run_worker=False, allow_anonymous=True
    )
    async with serve(settings) as addr:
        url = f"ws://{addr}/graphql"
        async with connect(url, subprotocols=["graphql-transport-ws"]) as conn:  # type: ignore[list-item]
            # No key at all is the development tenant here.
            await conn.send(json.dumps({"type": "connection_init", "payload": {}}))
            assert json.loads(await conn.recv())["type"] == "connection_ack"
        async with connect(
            url,
            subprotocols=["graphql-transport-ws"],
            additional_headers=headers,  # type: ignore[list-item]
        ) as conn:
            await conn.send(json.dumps({"type": "connection_init", "payload": params}))
            with pytest.raises(ConnectionClosed) as closed:
                async with asyncio.timeout(WAIT):
                    await conn.recv()
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 4403


async def test_the_upgrade_requests_header_is_enough(base: str, tenant: Any) -> None:
    async with connect(
        f"ws://{base}/graphql",
        subprotocols=["graphql-transport-ws"],  # type: ignore[list-item]
        additional_headers={"Authorization": f"Bearer {tenant.api_key}"},
    ) as conn:
        await conn.send(json.dumps({"type": "connection_init", "payload": {}}))
        assert json.loads(await conn.recv())["type"] == "connection_ack"


async def test_the_hub_resubscribes_after_its_connection_drops(redis: Any) -> None:
    hub = events.EventHub(redis)
    channel = f"partnerbill:test:{secrets.token_hex(4)}"
    try:
        async with hub.listen(channel) as feed:
            await hub._pubsub.connection.disconnect()  # as if Redis had dropped it
            # Publish until one arrives: only a resubscribed hub hears any.
            got: list[dict[str, Any]] = []
            async with asyncio.timeout(WAIT):
                while not got:
                    await events.publish(redis, channel, {"n": 2})
                    got = await feed.get(within=0.1) or []
            assert got[0] == {"n": 2}
    finally:
        await hub.close()


async def unsubscribed(redis: Any, channel: str) -> None:
    """Wait until nobody is subscribed to the channel in Redis."""
    async with asyncio.timeout(WAIT):
        while True:
            if not dict(await redis.pubsub_numsub(channel)).get(channel.encode(), 0):
                return
            await asyncio.sleep(0.01)


async def test_leaving_frees_the_redis_subscription(base: str, redis: Any, tenant: Any) -> None:
    channel = events.metrics_channel(redis, tenant.id)
    async with ws(base, {"apiKey": tenant.api_key}) as client:
        await client.subscribe(METRICS)
        await subscribed(redis, channel)
        await client.send({"id": "1", "type": "complete"})  # the client stops it
        await unsubscribed(redis, channel)
        await client.subscribe(METRICS, op="2")
        await subscribed(redis, channel)
    await unsubscribed(redis, channel)  # the client went away without a word
