"""The Starlette application: /graphql, /healthz, /metrics and the vendored GraphiQL assets."""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from arq import create_pool
from arq.worker import Worker
from prometheus_client import CONTENT_TYPE_PLAIN_0_0_4
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from billing.tenants import ensure_dev_tenant
from db import pg
from db.engine import create_engine, create_sessionmaker
from jobs.events import EventHub
from jobs.redis import redis_settings_from_url
from resolvers.context import Services
from server.console import console_routes
from server.graphql_view import STATIC_DIR, PartnerbillGraphQL, Runtime
from server.keys import KeyWatch
from server.logs import RequestId
from server.observability import (
    REQUEST_SECONDS,
    REQUESTS,
    START_TIME,
    ScrapeReadings,
    render,
    route_of,
)
from server.settings import Settings, read_dev_key

log = logging.getLogger("partnerbill.server")

HEALTH_TIMEOUT = 2.0
WORKER_GRACE = 10.0


class InProcessWorker:
    """The arq worker on the server's own event loop (the embedded default)."""

    def __init__(self, database_url: str, redis_url: str) -> None:
        self.database_url = database_url
        self.redis_url = redis_url
        self.worker: Worker | None = None
        self.task: asyncio.Task[None] | None = None

    def start(self) -> None:
        from jobs.worker import build_worker

        # Constructed inside the running loop: arq binds the loop in __init__. It waits
        # through a Redis outage (jobs.worker.ResilientWorker) rather than stopping.
        self.worker = build_worker(self.database_url, self.redis_url)
        self.task = asyncio.create_task(self.worker.async_run(), name="arq-worker")
        self.task.add_done_callback(self._report)

    @staticmethod
    def _report(task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("the in-process worker stopped", exc_info=task.exception())

    @property
    def running(self) -> bool:
        return self.task is not None and not self.task.done()

    async def stop(self) -> None:
        """Let running jobs finish for a moment, then cancel them and close the worker."""
        worker, task = self.worker, self.task
        if worker is None or task is None:
            return
        worker.allow_pick_jobs = False
        pending = [t for t in worker.tasks.values() if not t.done()]
        if pending:
            await asyncio.wait(pending, timeout=WORKER_GRACE)
        # Cancel what is left and the main task as arq's handle_sig does, without its log
        # line: close() below logs the shutdown (once).
        for t in worker.tasks.values():
            if not t.done():
                t.cancel()
        task.cancel()
        await asyncio.gather(task, *worker.tasks.values(), return_exceptions=True)
        worker.tasks.clear()
        try:
            await worker.close()  # logs the shutdown, closes its Redis pool, runs on_shutdown
        except Exception:
            log.exception("closing the in-process worker")
        self.worker = self.task = None


class RequestMetrics:
    """ASGI middleware counting requests and their time per route (server.observability)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500
        start = time.perf_counter()

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = route_of(scope.get("path", ""))
            REQUESTS.labels(route, scope.get("method", ""), str(status)).inc()
            REQUEST_SECONDS.labels(route).inc(time.perf_counter() - start)


def create_app(
    settings: Settings, *, dev_api_key: str | None = None, schema: Any = None
) -> Starlette:
    """The ASGI app for concrete database and Redis URLs (``settings.with_urls``)."""
    if not settings.database_url or not settings.redis_url:
        raise ValueError("create_app needs settings with database_url and redis_url")
    database_url, redis_url = settings.database_url, settings.redis_url
    if schema is None:
        from resolvers.pages import DEFAULT_PAGE
        from schema.limits import QueryLimits
        from schema.root import build_schema

        schema = build_schema(
            QueryLimits(
                max_tokens=settings.max_tokens,
                max_depth=settings.max_depth,
                max_aliases=settings.max_aliases,
                max_cost=settings.max_cost,
                default_page=DEFAULT_PAGE,
            )
        )

    # The development key goes into the GraphiQL page, which anyone who reaches the server
    # may load: only when anonymous development access is on anyway.
    runtime = Runtime(dev_api_key=dev_api_key if settings.allow_anonymous else None)
    view = PartnerbillGraphQL(
        schema,
        runtime,
        allow_anonymous=settings.allow_anonymous,
        max_batch=settings.max_batch,
        max_inflight_per_tenant=settings.max_inflight_per_tenant,
    )
    state: dict[str, Any] = {}

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        engine = create_engine(
            database_url,
            pool_size=settings.db_pool_size,
            max_overflow=settings.db_pool_size,
            statement_cache=settings.statement_cache,
        )
        pool = None
        redis = None
        events: EventHub | None = None
        worker: InProcessWorker | None = None
        key_watch: KeyWatch | None = None
        try:
            sessionmaker = create_sessionmaker(engine)
            pool = await pg.create_pool(
                database_url,
                max_size=settings.pg_pool_size,
                statement_cache_size=settings.statement_cache,
            )
            redis = await create_pool(redis_settings_from_url(redis_url))
            events = EventHub(redis)
            key_watch = KeyWatch(redis, view.key_cache)
            await key_watch.check()  # keys are trusted long only once the watch runs
            key_watch.start()
            app.state.key_watch = key_watch
            if settings.allow_anonymous:
                async with sessionmaker.begin() as session:
                    runtime.dev_tenant_id, _ = await ensure_dev_tenant(session)
            runtime.services = Services(
                sessionmaker=sessionmaker,
                pg=pool,
                redis=redis,
                events=events,
                max_bulk_rows=settings.max_bulk_rows,
            )
            state.update(engine=engine, redis=redis, events=events)
            if settings.run_worker:
                worker = InProcessWorker(database_url, redis_url)
                worker.start()
                state["worker"] = worker
            settle_heap()
            yield
        finally:
            runtime.services = None
            if key_watch is not None:
                await key_watch.stop()
            if worker is not None:
                await worker.stop()
            if events is not None:
                await events.close()  # ends open subscriptions, frees the pub/sub connection
            if redis is not None:
                # Close before the embedded Redis stops: it stays up while a client is connected.
                await redis.aclose(close_connection_pool=True)
            if pool is not None:
                await pool.close()
            await engine.dispose()
            state.clear()

    async def healthz(request: Request) -> Response:
        checks: dict[str, str] = {}
        engine: AsyncEngine | None = state.get("engine")
        try:
            if engine is None:
                raise RuntimeError("not started")
            async with asyncio.timeout(HEALTH_TIMEOUT):
                async with engine.connect() as conn:
                    await conn.execute(text("SELECT 1"))
            checks["database"] = "ok"
        except Exception as e:
            log.warning("healthz: database check failed: %r", e)
            checks["database"] = f"error: {type(e).__name__}"
        try:
            redis = state.get("redis")
            if redis is None:
                raise RuntimeError("not started")
            async with asyncio.timeout(HEALTH_TIMEOUT):
                await redis.ping()
            checks["redis"] = "ok"
        except Exception as e:
            log.warning("healthz: redis check failed: %r", e)
            checks["redis"] = f"error: {type(e).__name__}"
        ok = all(v == "ok" for v in checks.values())
        body: dict[str, Any] = {"status": "ok" if ok else "error", "checks": checks}
        worker = state.get("worker")
        if worker is not None:
            body["worker"] = "running" if worker.running else "stopped"
        return JSONResponse(body, status_code=200 if ok else 503)

    async def metrics(request: Request) -> Response:
        readings = await scrape_readings.get(state.get("engine"), state.get("redis"))
        return Response(render(readings), media_type=CONTENT_TYPE_PLAIN_0_0_4)

    routes = [
        Route("/graphql", view, methods=["GET", "POST"], max_body_size=settings.max_body_bytes),
        WebSocketRoute("/graphql", view),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
        Mount(
            "/static/graphiql",
            app=StaticFiles(directory=STATIC_DIR / "graphiql"),
            name="graphiql-static",
        ),
        *console_routes(),
    ]
    scrape_readings = ScrapeReadings()
    START_TIME.set_to_current_time()
    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        middleware=[Middleware(RequestId), Middleware(RequestMetrics)],
    )
    app.state.runtime = runtime
    app.state.view = view
    app.state.settings = settings
    return app


# The garbage collector's thresholds for a serving process (gc.set_threshold): the youngest
# generation collected once per 10,000 net allocations instead of Python's 700. Requests
# leave no reference cycles (tests/server/test_reference_cycles.py), but the objects of the
# requests in flight count as young until they are freed, and at 700 a young pass ran every
# few requests over all of them, with passes over the older generations after it. Before
# requests were cycle-free, these thresholds took the collector's share of the API's CPU
# under createOrder load from 9.0-9.3 % to 4.8-5.9 % (bench/results/gc-thresholds-3cebe6d.txt);
# since, perf finds no collector in the API process's profile at all.
GC_THRESHOLDS = (10_000, 10, 10)


def settle_heap() -> None:
    """Move everything start-up built (the schema, SQLAlchemy's and Strawberry's tables,
    the imported modules) out of the garbage collector's reach, and collect less often
    (GC_THRESHOLDS). Each request allocates enough to trigger collections, and before the
    freeze every older-generation pass walked that whole heap again: about 0.13 ms of a
    0.7 ms read (BENCHMARKS.md, "The write path")."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def app_from_env() -> Starlette:
    """For ``uvicorn --factory server.app:app_from_env``: DATABASE_URL and REDIS_URL required.

    Migrations are not applied here; run ``partnerbill migrate`` first.
    """
    settings = Settings.from_env()
    if settings.embedded:
        raise SystemExit(
            "uvicorn --factory server.app:app_from_env needs DATABASE_URL and REDIS_URL; "
            "for the embedded servers run `partnerbill serve`"
        )
    dev_key = read_dev_key(settings.data_dir) if settings.allow_anonymous else None
    return create_app(settings, dev_api_key=dev_key)
