"""accountMetricsUpdated with ``after``: what changed while nobody listened is replayed from
the event feed, then the subscription goes live; resubscribing with the last cursor received
misses nothing. Over the real app and a real websocket."""

from __future__ import annotations

from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import pytest

from billing import events as ev
from server.settings import Settings
from tests.server.test_subscriptions import gql, new_account, post_invoice, serve, ws

REPLAY = """
subscription($numbers: [String!], $after: String) {
  accountMetricsUpdated(accountNumbers: $numbers, after: $after) {
    accountNumber reason cursor metrics { totalInvoiceBalance } } }"""


@pytest.fixture(scope="module")
async def base(database_url: str, redis_url: str) -> AsyncIterator[str]:
    settings = Settings(
        database_url=database_url, redis_url=redis_url, run_worker=False, allow_anonymous=False
    )
    async with serve(settings) as addr:
        yield addr


async def _until(client: Any, done: Any) -> list[dict[str, Any]]:
    """Events until ``done(latest totals by account)``."""
    got: list[dict[str, Any]] = []
    totals: dict[str, Decimal] = {}
    while not done(totals):
        event = (await client.next())["accountMetricsUpdated"]
        got.append(event)
        totals[event["accountNumber"]] = Decimal(event["metrics"]["totalInvoiceBalance"])
    return got


async def test_replay_then_live_then_resume(base: str, tenant: Any) -> None:
    key = tenant.api_key
    await new_account(base, key, "RP-1")
    await new_account(base, key, "RP-2")
    feed = await gql(base, key, "{ events(first: 1) { edges { cursor } } }")
    start = feed["events"]["edges"][0]["cursor"]
    # Nobody is subscribed while these commit.
    await post_invoice(base, key, "RP-1", "100.00")
    await post_invoice(base, key, "RP-2", "50.00")
    await post_invoice(base, key, "RP-1", "25.00")

    async with ws(base, {"apiKey": key}) as client:
        await client.subscribe(REPLAY, after=start)
        replayed = await _until(
            client, lambda t: t.get("RP-1") == Decimal(125) and t.get("RP-2") == Decimal(50)
        )
        assert {e["reason"] for e in replayed} == {"SYNC"}
        positions = [ev.decode_position(e["cursor"]) for e in replayed]
        assert positions == sorted(set(positions))  # feed order, no repeat
        await post_invoice(base, key, "RP-2", "10.00")  # live
        live = await _until(client, lambda t: t.get("RP-2") == Decimal(60))
        last = live[-1]["cursor"]
        assert ev.decode_position(last) > positions[-1]

    await post_invoice(base, key, "RP-1", "5.00")  # while disconnected
    async with ws(base, {"apiKey": key}) as client:
        await client.subscribe(REPLAY, after=last, numbers=["RP-1"])
        resumed = await _until(client, lambda t: t.get("RP-1") == Decimal(130))
        assert [e["accountNumber"] for e in resumed] == ["RP-1"]


async def test_a_forged_cursor_is_a_validation_error(base: str, tenant: Any) -> None:
    async with ws(base, {"apiKey": tenant.api_key}) as client:
        await client.subscribe(REPLAY, after="not-a-cursor")
        message = await client.receive()
        assert message["type"] == "next" and message["payload"]["data"] is None, message
        [error] = message["payload"]["errors"]
        assert error["extensions"] == {"code": "VALIDATION", "field": ["after"], "retryable": False}
        assert await client.receive() == {"id": "1", "type": "complete"}
        await client.subscribe(
            'subscription { billRunProgress(billRunNumber: "BR-X", after: "nope") { status } }',
            op="2",
        )
        message = await client.receive()
        assert message["payload"]["errors"][0]["extensions"]["code"] == "VALIDATION", message
