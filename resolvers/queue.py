"""Asking the worker to start what a mutation committed, when the job queue may be away."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from billing.errors import Unavailable
from jobs.enqueue import REDIS_DOWN
from resolvers.errors import to_user_error
from schema.errors import UserError

log = logging.getLogger("partnerbill.graphql")

ENQUEUE_TIMEOUT_S = 2.0  # an enqueue slower than this counts as the queue being away


def start_delayed(noun: str, name: str) -> str:
    """The message of a committed job or bill run whose enqueue failed."""
    return (
        f"{noun.capitalize()} {name} is recorded, but the job queue cannot be reached: it "
        "starts by itself once the queue is back. Sent again with the same idempotencyKey, "
        f"the request answers this same {noun}; without one it records another."
    )


async def enqueue_committed(
    noun: str, name: str, enqueue: Callable[[], Awaitable[object]]
) -> list[UserError]:
    """Queue what the mutation committed. When Redis is away or too slow, nothing is lost:
    the worker's sweep (jobs.tasks.sweep_stranded_jobs) queues it under the same
    deterministic id once it can; the answer keeps the committed object and says its
    start is delayed (UNAVAILABLE, retryable) instead of failing the write."""
    try:
        async with asyncio.timeout(ENQUEUE_TIMEOUT_S):
            await enqueue()
    except REDIS_DOWN as exc:
        log.warning("%s %s committed, queueing it failed (%r); the worker's sweep will",
                    noun, name, exc)  # fmt: skip
        return [to_user_error(Unavailable(start_delayed(noun, name)))]
    return []
