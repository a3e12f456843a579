"""Webhook delivery: the worker posts each event of the feed to each matching endpoint.

Per endpoint, sequentially from its cursor: an event is posted with its signature
(billing.events.sign) and a timeout; a 2xx moves the cursor past it, anything else (an
error status, a timeout, a refused connection) is recorded and retried later with backoff
(billing.webhooks.RetryPolicy), holding the endpoint's later events back, so every event
arrives at least once and in order. Every attempt is recorded. Nothing here holds a
database transaction open while a request is in flight (an open transaction would hold
the feed's watermark back for everyone).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
from sqlalchemy.ext.asyncio import AsyncEngine

from billing import webhooks as wh
from billing.events import SIGNATURE_HEADER, Event, sign

log = logging.getLogger("partnerbill.webhooks")


def _seconds(name: str, default: float) -> float:
    raw = os.environ.get(name)
    return float(raw) if raw else default


@dataclass(frozen=True)
class DeliveryPolicy:
    """PARTNERBILL_WEBHOOK_TIMEOUT (seconds per attempt, 10), PARTNERBILL_WEBHOOK_RETRY_FIRST
    (5) and _RETRY_MOST (3600) seconds of backoff, PARTNERBILL_WEBHOOK_DISABLE_AFTER (86400:
    an endpoint failing continuously this long is disabled)."""

    timeout: float = 10.0
    retry: wh.RetryPolicy = field(default_factory=wh.RetryPolicy)
    batch: int = 100  # events read per endpoint per round
    run_for: float = 50.0  # seconds one delivery job keeps going while there is work

    @classmethod
    def from_env(cls) -> DeliveryPolicy:
        return cls(
            timeout=_seconds("PARTNERBILL_WEBHOOK_TIMEOUT", 10.0),
            retry=wh.RetryPolicy(
                first=_seconds("PARTNERBILL_WEBHOOK_RETRY_FIRST", 5.0),
                most=_seconds("PARTNERBILL_WEBHOOK_RETRY_MOST", 3600.0),
                disable_after=_seconds("PARTNERBILL_WEBHOOK_DISABLE_AFTER", 24 * 3600.0),
            ),
        )


def body_of(event: Event) -> bytes:
    """The request body: the event as the API shows it, compact JSON."""
    return json.dumps(event.payload(), separators=(",", ":"), default=str).encode()


async def post_event(
    client: httpx.AsyncClient, endpoint: wh.Claimed, event: Event, attempt: int, limit: float
) -> wh.Attempt:
    """One signed POST of one event; what happened, never raised."""
    body = body_of(event)
    headers = {
        "Content-Type": "application/json",
        SIGNATURE_HEADER: sign(endpoint.secret, body),
        "Partnerbill-Event-Id": str(event.id),
        "Partnerbill-Event-Type": str(event.type),
    }
    started = time.perf_counter()
    status: int | None = None
    error: str | None = None
    try:
        response = await client.post(endpoint.url, content=body, headers=headers, timeout=limit)
        status = response.status_code
        if not 200 <= status < 300:
            error = f"HTTP {status}"
    except httpx.TimeoutException:
        error = f"timed out after {limit:g} s"
    except httpx.HTTPError as exc:
        error = f"{type(exc).__name__}: {exc}"[:500]
    elapsed = (time.perf_counter() - started) * 1000
    return wh.Attempt(event, attempt, error is None, status, elapsed, error)


async def deliver_endpoint(
    engine: AsyncEngine, client: httpx.AsyncClient, endpoint: wh.Claimed, policy: DeliveryPolicy
) -> int:
    """Deliver the endpoint's pending events in order until it is caught up or one fails;
    returns how many were delivered."""
    delivered = 0
    try:
        while True:
            async with engine.connect() as conn:
                events = await wh.next_events(conn, endpoint, policy.batch)
            if not events:
                return delivered
            accepted: list[wh.Attempt] = []
            failed: wh.Attempt | None = None
            for event in events:
                attempt = await post_event(
                    client, endpoint, event, endpoint.failures + 1, policy.timeout
                )
                if not attempt.succeeded:
                    failed = attempt
                    break
                accepted.append(attempt)
                endpoint = dataclasses.replace(endpoint, failures=0)
            # One transaction per batch: the accepted run, then the failure that ended it.
            async with engine.begin() as conn:
                endpoint = await wh.record_successes(conn, endpoint, accepted)
                if failed is not None:
                    endpoint = await wh.record_attempt(conn, endpoint, failed, policy.retry)
            delivered += len(accepted)
            if failed is not None:
                log.info("webhook %s: %s failed: %s", endpoint.id, failed.event.id, failed.error)
                return delivered
    finally:
        async with engine.begin() as conn:
            await wh.release(conn, endpoint.id)


async def deliver_due(
    engine: AsyncEngine, client: httpx.AsyncClient, policy: DeliveryPolicy
) -> int:
    """One round: every due endpoint, concurrently, each delivered in order."""
    async with engine.begin() as conn:
        due = await wh.claim_due_endpoints(conn, lease_seconds=policy.timeout * policy.batch + 60)
    done = await asyncio.gather(*(deliver_endpoint(engine, client, e, policy) for e in due))
    return sum(done)


async def deliver_webhooks(ctx: dict[str, Any]) -> dict[str, int]:
    """Cron (every second): deliver until nothing is due or ``run_for`` seconds passed."""
    policy = DeliveryPolicy.from_env()
    delivered = rounds = 0
    deadline = time.monotonic() + policy.run_for
    async with httpx.AsyncClient() as client:
        while time.monotonic() < deadline:
            rounds += 1
            n = await deliver_due(ctx["engine"], client, policy)
            delivered += n
            if n == 0:
                await asyncio.sleep(0.2)
                if rounds > 5:
                    break
    return {"delivered": delivered, "rounds": rounds}
