"""A request leaves no reference cycles behind.

An object in a reference cycle is freed by the garbage collector, never by its reference
count; every request that left one kept the collector busy (server.app.GC_THRESHOLDS says
how much). These tests send real requests straight to the ASGI app (no client library, whose
own objects would count) and look at what the collector finds afterwards."""

from __future__ import annotations

import gc
import json
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.types import Message

from server.app import create_app
from server.settings import Settings
from tests.helpers import Gql
from tests.order_helpers import create_action, make_account, make_catalog, order

ORDER = """mutation($input: CreateOrderInput!) { createOrder(input: $input) {
  order { orderNumber subscriptionNumbers } errors { __typename code } } }"""
INVOICE = """mutation($input: CreateStandaloneInvoiceInput!) { createStandaloneInvoice(
  input: $input) { invoice { invoiceNumber items { amount } } errors { __typename code } } }"""
PAYMENT = """mutation($input: CreatePaymentInput!) { createPayment(input: $input) {
  payment { paymentNumber applications { amount } } errors { __typename code } } }"""
READ = """query($n: String!) { account(accountNumber: $n) { metrics { balance } } }"""
REQUESTS = 20


async def post(app: Starlette, api_key: str, query: str, variables: dict[str, Any]) -> Any:
    """One POST /graphql through the app's ASGI interface; the decoded JSON answer."""
    body = json.dumps({"query": query, "variables": variables}).encode()
    incoming: list[Message] = [{"type": "http.request", "body": body, "more_body": False}]
    sent: list[Message] = []

    async def receive() -> Message:
        return incoming.pop() if incoming else {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/graphql",
        "raw_path": b"/graphql",
        "root_path": "",
        "query_string": b"",
        "headers": [
            (b"host", b"test"),
            (b"content-type", b"application/json"),
            (b"authorization", f"Bearer {api_key}".encode()),
        ],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
        "state": {},
    }
    await app(scope, receive, send)
    assert sent[0]["status"] == 200, sent
    return json.loads(b"".join(m.get("body", b"") for m in sent[1:]))


@contextmanager
def cycles_left() -> Iterator[list[Any]]:
    """The objects that only the collector could free, of what ran inside the block."""
    found: list[Any] = []
    gc.collect()
    flags, was_enabled = gc.get_debug(), gc.isenabled()
    gc.disable()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        yield found
        gc.collect()
        found.extend(gc.garbage)
    finally:
        gc.garbage.clear()
        gc.set_debug(flags)
        if was_enabled:
            gc.enable()


def summary(objects: list[Any]) -> str:
    kinds = Counter(type(o).__qualname__ for o in objects)
    return ", ".join(f"{n} {kind}" for kind, n in kinds.most_common(15))


@pytest.fixture
async def app(database_url: str, redis_url: str) -> AsyncIterator[Starlette]:
    settings = Settings(
        database_url=database_url, redis_url=redis_url, run_worker=False, allow_anonymous=False
    )
    built = create_app(settings)
    async with built.router.lifespan_context(built):
        yield built


async def test_writes_and_reads_leave_no_reference_cycles(
    app: Starlette, sessionmaker: Any, tenant: Any
) -> None:
    gql = Gql(sessionmaker, tenant.id)
    await make_catalog(gql)
    await make_account(gql, "CYC", partner=True)
    new_order = order("CYC", [{"orderActions": [create_action()]}])

    async def one_order() -> None:
        answer = await post(app, tenant.api_key, ORDER, {"input": new_order})
        assert answer["data"]["createOrder"]["errors"] == [], answer

    async def one_invoice() -> None:
        invoice = {
            "accountNumber": "CYC",
            "invoiceDate": "2026-11-01",
            "status": "POSTED",
            "items": [{"chargeName": "Seat", "amount": "10.00"}],
        }
        answer = await post(app, tenant.api_key, INVOICE, {"input": invoice})
        assert answer["data"]["createStandaloneInvoice"]["errors"] == [], answer

    async def one_payment() -> None:
        payment = {"accountNumber": "CYC", "amount": "5.00", "effectiveDate": "2026-11-01"}
        answer = await post(app, tenant.api_key, PAYMENT, {"input": payment})
        assert answer["data"]["createPayment"]["errors"] == [], answer

    async def one_read() -> None:
        answer = await post(app, tenant.api_key, READ, {"n": "CYC"})
        assert answer["data"]["account"]["metrics"]["balance"] is not None, answer

    requests = (one_order, one_invoice, one_payment, one_read)
    for _ in range(3):  # caches, prepared statements, the pools' connections
        for request in requests:
            await request()
    with cycles_left() as found:
        for _ in range(REQUESTS):
            for request in requests:
                await request()
    # A cycle a request would leave 4 * REQUESTS cycles of tens of objects; allow stray
    # bookkeeping of the event loop and the pools, far fewer than one object a request.
    assert len(found) < REQUESTS, summary(found)
