"""Push events over Redis pub/sub: what the GraphQL subscriptions listen to.

Metric refreshes and bill runs happen in the worker process, synchronous metric updates
in the API process, so the news crosses processes through Redis: one channel per tenant
for metrics and one per bill run. A message is small (account ids, a bill run id) and is
published only after the transaction that made the change committed; a subscriber reads
the committed state from the database when it hands an event to its client.

Publishing never fails the write it announces: a failed or slow publish is logged and
dropped. Pub/sub delivers at most once, to whoever is subscribed at that moment; an event
that shows nothing new (a rolled-back savepoint, a repeat) is possible and harmless.

Redis pub/sub ignores the database number, so channel names carry it: two deployments
(or test runs) sharing a Redis server on different databases never hear each other.

:class:`EventHub` is the API process's side: one pub/sub connection shared by every
subscription of the process, closed with the app.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from billing.errors import Unavailable
from billing.metrics import take_metrics_updates
from jobs.enqueue import REDIS_DOWN

log = logging.getLogger("partnerbill.events")

PUBLISH_TIMEOUT = 2.0  # seconds a publish may take before it is given up (and logged)
SUBSCRIBE_TIMEOUT = 5.0  # seconds to wait for Redis to confirm a subscription
IDS_PER_MESSAGE = 500
FEED_SIZE = 1000  # messages a slow subscriber may have queued before it is told it lost some
READ_TIMEOUT = 1.0  # how long the hub's reader blocks on Redis per poll
RECONNECT_DELAY = (0.2, 5.0)  # first and longest pause before the reader reconnects
COALESCE_S = 0.02  # the API process gathers its metrics announcements this long, then sends
SUBSCRIBE_UNAVAILABLE = (
    "Subscriptions need Redis, which cannot be reached for a moment; subscribe again shortly"
)


def channel_prefix(redis: Any) -> str:
    """``partnerbill:db<N>``: the Redis database number of the client's pool."""
    pool = getattr(redis, "connection_pool", None)
    db = getattr(pool, "connection_kwargs", {}).get("db", 0) if pool is not None else 0
    return f"partnerbill:db{db or 0}"


def metrics_channel(redis: Any, tenant_id: int) -> str:
    """The channel of a tenant's account-metrics updates."""
    return f"{channel_prefix(redis)}:tenant{tenant_id}:metrics"


def bill_run_channel(redis: Any, tenant_id: int, run_id: int) -> str:
    """The channel of one bill run's progress."""
    return f"{channel_prefix(redis)}:tenant{tenant_id}:billrun:{run_id}"


async def publish(redis: Any, channel: str, data: dict[str, Any]) -> bool:
    """Publish one message; a failure is logged and reported as False, never raised."""
    if redis is None:
        return False
    try:
        async with asyncio.timeout(PUBLISH_TIMEOUT):
            await redis.publish(channel, json.dumps(data, separators=(",", ":")))
        return True
    except Exception:
        log.warning("could not publish to %s", channel, exc_info=True)
        return False


async def publish_metrics(redis: Any, tenant_id: int, account_ids: list[int], reason: str) -> None:
    """Announce that these accounts' stored metrics changed (call after the commit)."""
    channel = metrics_channel(redis, tenant_id)
    for i in range(0, len(account_ids), IDS_PER_MESSAGE):
        chunk = account_ids[i : i + IDS_PER_MESSAGE]
        await publish(redis, channel, {"accounts": chunk, "reason": reason})


async def publish_committed(redis: Any, session: AsyncSession) -> None:
    """Announce the metric updates noted on a session whose transaction committed."""
    for (tenant_id, reason), ids in take_metrics_updates(session).items():
        await publish_metrics(redis, tenant_id, ids, reason)


async def publish_bill_run(redis: Any, tenant_id: int, run_id: int) -> None:
    """Announce that a bill run's status or progress moved (call after the commit)."""
    await publish(redis, bill_run_channel(redis, tenant_id, run_id), {"billRun": run_id})


class Feed:
    """The messages of one channel for one subscriber, in arrival order.

    The queue is bounded: a subscriber more than ``maxsize`` messages behind loses what
    was queued, and ``lost`` says so."""

    _CLOSED = object()
    _LOST = object()

    def __init__(self, maxsize: int = FEED_SIZE) -> None:
        self._queue: asyncio.Queue[Any] = asyncio.Queue()
        self._maxsize = maxsize
        self.closed = False
        self.lost = False

    def put(self, data: dict[str, Any]) -> None:
        if self.closed:
            return
        if self._queue.qsize() >= self._maxsize:
            while not self._queue.empty():
                self._queue.get_nowait()
            self._queue.put_nowait(self._LOST)
            return
        self._queue.put_nowait(data)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._queue.put_nowait(self._CLOSED)

    async def get(self, within: float | None = None) -> list[dict[str, Any]] | None:
        """Every queued message, waiting for at least one: [] after ``within`` seconds
        without any, None once the feed is closed (what came before is delivered first)."""
        try:
            async with asyncio.timeout(within):
                first = await self._queue.get()
        except TimeoutError:
            return []
        items = [first]
        while not self._queue.empty():
            items.append(self._queue.get_nowait())
        out: list[dict[str, Any]] = []
        for item in items:
            if item is self._LOST:
                self.lost = True
                out.clear()
            elif item is self._CLOSED:
                if not out and not self.lost:
                    return None
                self._queue.put_nowait(self._CLOSED)  # ends the next call
                break
            else:
                out.append(item)
        return out


class EventHub:
    """Every subscription of one process shares one Redis pub/sub connection.

    ``listen`` subscribes a channel (only the first listener of a channel subscribes in
    Redis), waits until Redis confirms it, and yields a :class:`Feed`; leaving the block
    unsubscribes. A reader task hands each message to the channel's feeds; it reconnects
    (and redis-py resubscribes) when the connection drops. ``close`` ends every feed."""

    def __init__(self, redis: Any) -> None:
        self.redis = redis
        self._pubsub: Any = None
        self._reader: asyncio.Task[None] | None = None
        self._feeds: dict[str, set[Feed]] = {}
        self._confirmed: dict[str, asyncio.Event] = {}
        self._lock = asyncio.Lock()
        self._closed = False
        self._pending: dict[tuple[int, str], set[int]] = {}
        self._flusher: asyncio.Task[None] | None = None

    # -- publishing (the API process's writes) ------------------------------------------

    async def publish_committed(self, session: AsyncSession) -> None:
        """Announce the metric updates noted on a committed session."""
        for (tenant_id, reason), ids in take_metrics_updates(session).items():
            self.announce_metrics(tenant_id, ids, reason)

    async def publish_metrics(self, tenant_id: int, account_ids: list[int], reason: str) -> None:
        """Announce that these accounts' stored metrics changed (after the commit)."""
        self.announce_metrics(tenant_id, account_ids, reason)

    def announce_metrics(self, tenant_id: int, account_ids: list[int], reason: str) -> None:
        """Queue the announcement; the hub publishes what gathered within COALESCE_S in one
        message per tenant and reason. A write on an ordinary account then costs no Redis
        round trip of its own, and a burst of writes on one account is one event, not
        hundreds (subscribers read the current values anyway)."""
        if self._closed:
            return
        self._pending.setdefault((tenant_id, reason), set()).update(account_ids)
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.get_running_loop().create_task(self._flush_soon())

    async def _flush_soon(self) -> None:
        await asyncio.sleep(COALESCE_S)
        await self.flush()

    async def flush(self) -> None:
        """Publish every queued metrics announcement now."""
        while self._pending:
            pending, self._pending = self._pending, {}
            for (tenant_id, reason), ids in pending.items():
                await publish_metrics(self.redis, tenant_id, sorted(ids), reason)

    async def publish_bill_run(self, tenant_id: int, run_id: int) -> None:
        """Announce that a bill run moved."""
        await publish_bill_run(self.redis, tenant_id, run_id)

    # -- listening ----------------------------------------------------------------------

    def metrics_feed(self, tenant_id: int) -> contextlib.AbstractAsyncContextManager[Feed]:
        """The feed of a tenant's metric updates."""
        return self.listen(metrics_channel(self.redis, tenant_id))

    def bill_run_feed(
        self, tenant_id: int, run_id: int
    ) -> contextlib.AbstractAsyncContextManager[Feed]:
        """The feed of one bill run's progress."""
        return self.listen(bill_run_channel(self.redis, tenant_id, run_id))

    @contextlib.asynccontextmanager
    async def listen(self, channel: str) -> AsyncIterator[Feed]:
        feed = Feed()
        async with self._lock:
            if self._closed:
                raise RuntimeError("The event hub is closed")
            feeds = self._feeds.setdefault(channel, set())
            feeds.add(feed)
            try:
                if len(feeds) == 1:
                    confirmed = self._confirmed[channel] = asyncio.Event()
                    if self._pubsub is None:
                        self._pubsub = self.redis.pubsub()
                    await self._pubsub.subscribe(channel)
                    if self._reader is None or self._reader.done():
                        self._reader = asyncio.create_task(self._read(), name="event-hub")
                else:
                    confirmed = self._confirmed[channel]
            except REDIS_DOWN as exc:
                await self._drop(channel, feed)
                raise Unavailable(SUBSCRIBE_UNAVAILABLE) from exc
            except BaseException:
                await self._drop(channel, feed)
                raise
        try:
            # The client may act as soon as its first event arrives: make sure Redis will
            # deliver what is published from now on.
            try:
                async with asyncio.timeout(SUBSCRIBE_TIMEOUT):
                    await confirmed.wait()
            except TimeoutError as exc:
                raise Unavailable(SUBSCRIBE_UNAVAILABLE) from exc
            yield feed
        finally:
            feed.close()
            async with self._lock:
                await self._drop(channel, feed)

    async def _drop(self, channel: str, feed: Feed) -> None:
        feeds = self._feeds.get(channel)
        if feeds is None:
            return
        feeds.discard(feed)
        if feeds:
            return
        del self._feeds[channel]
        self._confirmed.pop(channel, None)
        if self._pubsub is not None and not self._closed:
            try:
                async with asyncio.timeout(PUBLISH_TIMEOUT):
                    await self._pubsub.unsubscribe(channel)
            except Exception:
                log.warning("could not unsubscribe %s", channel, exc_info=True)

    async def _read(self) -> None:
        delay = RECONNECT_DELAY[0]
        while not self._closed:
            try:
                message = await self._pubsub.get_message(timeout=READ_TIMEOUT)
                delay = RECONNECT_DELAY[0]
            except asyncio.CancelledError:
                raise
            except Exception:
                log.warning("event hub: Redis read failed; reconnecting", exc_info=True)
                await asyncio.sleep(delay)
                delay = min(delay * 2, RECONNECT_DELAY[1])
                continue
            if message is not None:
                self._dispatch(message)

    def _dispatch(self, message: dict[str, Any]) -> None:
        channel = message.get("channel")
        if isinstance(channel, bytes):
            channel = channel.decode()
        kind = message.get("type")
        if kind == "subscribe":
            event = self._confirmed.get(channel)  # type: ignore[arg-type]
            if event is not None:
                event.set()
            return
        if kind != "message":
            return
        try:
            data = json.loads(message["data"])
        except (TypeError, ValueError):
            log.warning("event hub: ignoring a malformed message on %s", channel)
            return
        for feed in list(self._feeds.get(channel, ())):  # type: ignore[arg-type]
            feed.put(data)

    async def close(self) -> None:
        """Publish what is queued, end every feed, stop the reader and give the connection
        back."""
        with contextlib.suppress(Exception):
            await self.flush()
        async with self._lock:
            self._closed = True
            for feeds in self._feeds.values():
                for feed in feeds:
                    feed.close()
            self._feeds.clear()
            self._confirmed.clear()
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reader
            self._reader = None
        if self._pubsub is not None:
            with contextlib.suppress(Exception):
                await self._pubsub.aclose()
            self._pubsub = None
