"""Webhooks against a real HTTP receiver on localhost that fails, times out and recovers:
every event arrives, in feed order, signed; every attempt is recorded; an endpoint failing
for the whole window is disabled, and enabling it resumes where it stopped."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from billing import events as ev
from billing import webhooks as wh
from jobs.webhooks import DeliveryPolicy, deliver_due
from tests.helpers import Gql
from tests.order_helpers import make_account

CREATE = """mutation($input: CreateWebhookEndpointInput!) { createWebhookEndpoint(input: $input) {
  webhookEndpoint { id url eventTypes enabled } secret errors { code field } } }"""
UPDATE = """mutation($input: UpdateWebhookEndpointInput!) { updateWebhookEndpoint(input: $input) {
  webhookEndpoint { id enabled disabledReason failingSince } secret errors { code } } }"""
ROTATE = """mutation($id: ID!) { rotateWebhookSecret(input: {id: $id}) {
  webhookEndpoint { id } secret errors { code } } }"""
DELETE = """mutation($id: ID!) { deleteWebhookEndpoint(input: {id: $id}) {
  webhookEndpoint { id } errors { code } } }"""
ENDPOINTS = """{ webhookEndpoints { edges { node { id url enabled } } } }"""
DELIVERIES = """query($id: ID!) { webhookDeliveries(endpointId: $id, first: 100) {
  edges { node { eventId eventType attempt succeeded statusCode durationMs error } } } }"""
RENAME = """mutation($n: String!, $name: String!) { updateAccount(input: {accountNumber: $n,
  name: $name}) { errors { code } } }"""

WAIT = 40.0


class Receiver:
    """An HTTP server in a thread; ``script`` says how the next requests are answered:
    an int status, or "sleep" (answer after longer than the client's timeout)."""

    def __init__(self) -> None:
        self.script: list[int | str] = []
        self.accepted: list[tuple[dict[str, str], bytes]] = []
        self.requests = 0
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with receiver.lock:
                    receiver.requests += 1
                    step = receiver.script.pop(0) if receiver.script else 200
                if step == "sleep":
                    time.sleep(1.5)
                    step = 200  # too late: the client gave up and will send it again
                else:
                    with receiver.lock:
                        if step == 200:
                            receiver.accepted.append((dict(self.headers), body))
                self.send_response(int(step))
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


@pytest.fixture
def gql(sessionmaker: Any, tenant: Any) -> Gql:
    return Gql(sessionmaker, tenant.id)


POLICY = DeliveryPolicy(timeout=0.5, retry=wh.RetryPolicy(first=0.05, most=0.2), batch=3)


async def _deliver_until(engine: Any, done: Any, policy: DeliveryPolicy = POLICY) -> None:
    deadline = time.monotonic() + WAIT
    async with httpx.AsyncClient() as client:
        while not done() and time.monotonic() < deadline:
            await deliver_due(engine, client, policy)
            await asyncio.sleep(0.05)
    assert done(), "deliveries did not finish in time"


async def test_delivery_in_order_signed_retried_and_recorded(
    gql: Gql, engine: Any, receiver: Receiver
) -> None:
    made = await gql(CREATE, input={"url": receiver.url, "description": "crm"})
    payload = made["createWebhookEndpoint"]
    assert payload["errors"] == [] and payload["secret"].startswith("whsec_")
    endpoint_id, secret = payload["webhookEndpoint"]["id"], payload["secret"]
    listed = (await gql(ENDPOINTS))["webhookEndpoints"]["edges"]
    assert [e["node"]["id"] for e in listed] == [endpoint_id]
    assert "secret" not in json.dumps(listed)

    receiver.script = [500, 503, "sleep"]  # fails twice, then times out once, then recovers
    for n in ("WH-A", "WH-B"):
        await make_account(gql, n)
    for i in range(3):
        for n in ("WH-A", "WH-B"):
            assert (await gql(RENAME, n=n, name=f"{n} {i}"))["updateAccount"]["errors"] == []
    expected = 8  # two ACCOUNT_CREATED, six ACCOUNT_UPDATED

    await _deliver_until(engine, lambda: len(receiver.accepted) >= expected)
    bodies = [json.loads(b) for _, b in receiver.accepted]
    ids = [b["id"] for b in bodies]
    assert len(ids) == expected == len(set(ids))  # each once (the timed-out one was re-sent)
    positions = [ev.decode_position(b["cursor"]) for b in bodies]
    assert positions == sorted(positions)  # feed order
    for n in ("WH-A", "WH-B"):
        names = [b["data"]["name"] for b in bodies if b["accountNumber"] == n]
        assert names == [f"Account {n}", f"{n} 0", f"{n} 1", f"{n} 2"]  # order per account
    for headers, body in receiver.accepted:
        assert ev.verify(secret, headers["Partnerbill-Signature"], body)
        assert not ev.verify("whsec_other", headers["Partnerbill-Signature"], body)

    attempts = [
        e["node"] for e in (await gql(DELIVERIES, id=endpoint_id))["webhookDeliveries"]["edges"]
    ]
    failed = [a for a in attempts if not a["succeeded"]]
    assert [a["statusCode"] for a in failed] == [500, 503, None]
    assert "timed out" in failed[2]["error"]
    assert [a["attempt"] for a in failed] == [1, 2, 3]
    first = [a for a in attempts if a["eventId"] == failed[0]["eventId"]]
    assert [(a["attempt"], a["succeeded"]) for a in first] == [
        (1, False), (2, False), (3, False), (4, True)
    ]  # fmt: skip
    assert sum(a["succeeded"] for a in attempts) == expected

    # A rotated secret signs from then on; the old one no longer does.
    rotated = (await gql(ROTATE, id=endpoint_id))["rotateWebhookSecret"]
    new_secret = rotated["secret"]
    assert new_secret != secret
    await gql(RENAME, n="WH-A", name="after rotation")
    await _deliver_until(engine, lambda: len(receiver.accepted) >= expected + 1)
    headers, body = receiver.accepted[-1]
    assert ev.verify(new_secret, headers["Partnerbill-Signature"], body)
    assert not ev.verify(secret, headers["Partnerbill-Signature"], body)
    gone = (await gql(DELETE, id=endpoint_id))["deleteWebhookEndpoint"]
    assert gone["errors"] == []
    assert (await gql(ENDPOINTS))["webhookEndpoints"]["edges"] == []


async def test_an_endpoint_failing_for_the_window_is_disabled_and_resumes(
    gql: Gql, engine: Any, receiver: Receiver
) -> None:
    with socket.socket() as s:  # a port nobody listens on: connection refused
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}/hook"
    made = await gql(CREATE, input={"url": dead, "eventTypes": ["ACCOUNT_CREATED"]})
    endpoint_id = made["createWebhookEndpoint"]["webhookEndpoint"]["id"]
    await make_account(gql, "WH-D")
    await gql(RENAME, n="WH-D", name="not delivered: another type")
    policy = DeliveryPolicy(
        timeout=0.5, retry=wh.RetryPolicy(first=0.05, most=0.1, disable_after=1.0)
    )

    async def disabled() -> bool:
        async with engine.connect() as conn:
            from sqlalchemy import text

            row = await conn.execute(
                text("SELECT enabled FROM webhook_endpoint WHERE id = :i"), {"i": int(endpoint_id)}
            )
            return not row.scalar_one()

    deadline = time.monotonic() + WAIT
    async with httpx.AsyncClient() as client:
        while not await disabled() and time.monotonic() < deadline:
            await deliver_due(engine, client, policy)
            await asyncio.sleep(0.05)
    assert await disabled()
    attempts = [
        e["node"] for e in (await gql(DELIVERIES, id=endpoint_id))["webhookDeliveries"]["edges"]
    ]
    assert len(attempts) >= 3 and not any(a["succeeded"] for a in attempts)
    assert {a["eventType"] for a in attempts} == {"ACCOUNT_CREATED"}

    # Enabled again at a live URL: it resumes with the event it stopped at.
    resumed = await gql(UPDATE, input={"id": endpoint_id, "url": receiver.url, "enabled": True})
    node = resumed["updateWebhookEndpoint"]["webhookEndpoint"]
    assert node["enabled"] is True and node["failingSince"] is None
    await _deliver_until(engine, lambda: len(receiver.accepted) >= 1, policy)
    body = json.loads(receiver.accepted[0][1])
    assert (body["type"], body["accountNumber"]) == ("ACCOUNT_CREATED", "WH-D")


async def test_bad_endpoint_input_is_a_typed_error_and_writes_nothing(gql: Gql) -> None:
    made = await gql(CREATE, input={"url": "ftp://example.com"})
    assert made["createWebhookEndpoint"]["errors"] == [{"code": "VALIDATION", "field": ["url"]}]
    assert made["createWebhookEndpoint"]["secret"] is None
    for absent in ("999999999", "9" * 40, "-1", "0"):  # 9 x 40: beyond the bigint column
        missing = await gql(ROTATE, id=absent)
        assert missing["rotateWebhookSecret"]["errors"] == [{"code": "NOT_FOUND"}], absent
    assert (await gql(ENDPOINTS))["webhookEndpoints"]["edges"] == []


def test_verify_checks_the_timestamp_window() -> None:
    body = b'{"id":"1"}'
    header = ev.sign("whsec_x", body, at=1_000_000)
    assert ev.verify("whsec_x", header, body, now=1_000_100)
    assert not ev.verify("whsec_x", header, body, now=1_000_000 + ev.SIGNATURE_TOLERANCE + 1)
    assert not ev.verify("whsec_x", header, body + b" ", now=1_000_100)
    assert not ev.verify("whsec_x", "garbage", body)


async def test_another_tenant_neither_sees_nor_changes_an_endpoint(
    sessionmaker: Any, tenant: Any
) -> None:
    from billing.tenants import create_tenant

    a = Gql(sessionmaker, tenant.id)
    await make_account(a, "ISO-A")
    made = await a(CREATE, input={"url": "http://127.0.0.1:9/hook"})
    endpoint_id = made["createWebhookEndpoint"]["webhookEndpoint"]["id"]
    async with sessionmaker.begin() as s:
        b_id, _ = await create_tenant(s, "tenant-b")
    b = Gql(sessionmaker, b_id)
    await make_account(b, "ISO-B")
    assert (await b(ENDPOINTS))["webhookEndpoints"]["edges"] == []
    res = await b.raw(DELIVERIES, id=endpoint_id)
    assert res.errors[0].extensions["code"] == "NOT_FOUND"
    for query, field, args in (
        (ROTATE, "rotateWebhookSecret", {"id": endpoint_id}),
        (DELETE, "deleteWebhookEndpoint", {"id": endpoint_id}),
        (UPDATE, "updateWebhookEndpoint", {"input": {"id": endpoint_id, "enabled": False}}),
    ):
        out = await b(query, **args)
        assert out[field]["errors"] == [{"code": "NOT_FOUND"}], field
    mine = (await a(ENDPOINTS))["webhookEndpoints"]["edges"]
    assert [(e["node"]["id"], e["node"]["enabled"]) for e in mine] == [(endpoint_id, True)]
    # The feed: B reads its own events only (A's account never appears).
    deadline = time.monotonic() + WAIT
    seen: set[str | None] = set()
    while "ISO-B" not in seen and time.monotonic() < deadline:
        page = await b("{ events(first: 500) { edges { node { accountNumber } } } }")
        seen = {e["node"]["accountNumber"] for e in page["events"]["edges"]}
        await asyncio.sleep(0.05)
    assert seen == {"ISO-B"}
    named = await b.raw('{ events(accountNumbers: ["ISO-A"]) { edges { cursor } } }')
    assert named.errors[0].extensions["code"] == "NOT_FOUND"
