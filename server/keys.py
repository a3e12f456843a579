"""How every API process hears that an API key was revoked, within a second.

Revoking or rotating a key deletes its row, then increments one Redis counter (the key
generation). Every API process reads the counter every WATCH_INTERVAL_S in the background:
when it moved, the process forgets every key it cached, so the next request with the
revoked key reads the database and is refused. The counter is state, not a message: a
process that was briefly cut off still sees that it moved.

While a process cannot read the counter (Redis away), it trusts a key for KEY_TTL_S only and
reads the database again after that: a revocation still takes effect within a second, at the
cost of one indexed read per key per KEY_TTL_S. While it can, a key is trusted for
TRUSTED_TTL_S, so requests cost no lookup at all.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from jobs.events import channel_prefix

log = logging.getLogger("partnerbill.keys")

WATCH_INTERVAL_S = 0.2
WATCH_TIMEOUT_S = 0.5  # a read of the counter slower than this counts as Redis away
KEY_TTL_S = 0.5  # how long a key is trusted while the counter cannot be read
TRUSTED_TTL_S = 60.0  # how long a key is trusted while the counter is watched
ANNOUNCE_ATTEMPTS = 10
ANNOUNCE_PAUSE_S = 0.3


def generation_key(redis: Any) -> str:
    """The Redis key of the counter (per Redis database, as the event channels)."""
    return f"{channel_prefix(redis)}:api-keys:generation"


async def announce_key_change(redis: Any) -> bool:
    """Tell every API process that keys were revoked (call after the commit); retried for a
    few seconds. False when Redis could not be reached."""
    for attempt in range(ANNOUNCE_ATTEMPTS):
        try:
            async with asyncio.timeout(WATCH_TIMEOUT_S * 4):
                await redis.incr(generation_key(redis))
            return True
        except Exception:
            log.warning("could not announce a key change (attempt %s)", attempt + 1, exc_info=True)
            await asyncio.sleep(ANNOUNCE_PAUSE_S)
    return False


class KeyWatch:
    """The API process's side: reads the counter in the background and tells the cache
    (``server.graphql_view.TenantCache``) whether it may trust keys long."""

    def __init__(self, redis: Any, cache: Any) -> None:
        self.redis = redis
        self.cache = cache
        self.generation: object = None
        self.task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.task = asyncio.create_task(self._run(), name="key-watch")

    async def check(self) -> None:
        """Read the counter once: forget cached keys when it moved or cannot be read."""
        try:
            async with asyncio.timeout(WATCH_TIMEOUT_S):
                generation = await self.redis.get(generation_key(self.redis))
        except asyncio.CancelledError:
            raise
        except Exception:
            if self.cache.watched:
                log.warning("cannot read the API key generation from Redis; keys are "
                            "looked up again every %s s until it can", KEY_TTL_S)  # fmt: skip
                self.cache.unwatched()
            return
        if not self.cache.watched or generation != self.generation:
            self.generation = generation
            self.cache.watched_from_now()

    async def _run(self) -> None:
        while True:
            await self.check()
            await asyncio.sleep(WATCH_INTERVAL_S)

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
            self.task = None
