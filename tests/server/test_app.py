"""The ASGI app over HTTP: health, authentication, ordered batches, masking, GraphiQL."""

from __future__ import annotations

import gc
import json
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
import strawberry
from cross_web import HTTPException
from prometheus_client.parser import text_string_to_metric_families
from starlette.requests import Request
from strawberry.http.async_base_view import AsyncBaseHTTPView
from strawberry.schema.config import StrawberryConfig
from strawberry.subscriptions import GRAPHQL_SSE_PROTOCOL

from server.app import GC_THRESHOLDS, create_app
from server.graphql_view import json_request_data
from server.settings import Settings
from tests.server import fake_schema

Client = Callable[..., Any]


@asynccontextmanager
async def serve(settings: Settings, **kwargs: Any) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings, schema=kwargs.pop("schema", fake_schema.schema), **kwargs)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield client


@pytest.fixture
def settings(database_url: str, redis_url: str) -> Settings:
    return Settings(
        database_url=database_url,
        redis_url=redis_url,
        run_worker=False,
        allow_anonymous=False,
        max_batch=3,
    )


@pytest.fixture
async def client(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with serve(settings) as c:
        yield c


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def test_a_started_app_collects_garbage_less_often(settings: Settings) -> None:
    before = gc.get_threshold()
    gc.set_threshold(700, 10, 10)  # Python's default
    try:
        async with serve(settings):
            assert gc.get_threshold() == GC_THRESHOLDS
    finally:
        gc.set_threshold(*before)


async def test_healthz_reports_database_and_redis(client: httpx.AsyncClient) -> None:
    r = await client.get("/healthz")
    assert r.status_code == 200
    assert r.json() == {"status": "ok", "checks": {"database": "ok", "redis": "ok"}}


async def test_healthz_is_503_when_the_database_is_unreachable(settings: Settings) -> None:
    broken = Settings(
        **{**settings.__dict__, "database_url": "postgresql://postgres@127.0.0.1:1/x"}
    )
    async with serve(broken) as c:
        r = await c.get("/healthz")
    assert r.status_code == 503
    body = r.json()
    assert body["status"] == "error"
    assert body["checks"]["redis"] == "ok"
    assert body["checks"]["database"].startswith("error")


async def test_a_missing_key_is_401_when_anonymous_access_is_off(client: httpx.AsyncClient) -> None:
    r = await client.post("/graphql", json={"query": "{ tenantId }"})
    assert r.status_code == 401
    assert r.headers["www-authenticate"] == "Bearer"
    assert r.json() == {
        "errors": [{"message": "Missing API key: send 'Authorization: Bearer <api key>'"}]
    }


@pytest.mark.parametrize("header", ["Bearer pb_not_a_key", "Basic dXNlcjpwYXNz"])
async def test_a_bad_key_is_401(client: httpx.AsyncClient, header: str) -> None:
    r = await client.post(
        "/graphql", json={"query": "{ tenantId }"}, headers={"Authorization": header}
    )
    assert r.status_code == 401
    assert r.json()["errors"][0]["message"] in (
        "Invalid API key",
        "Authorization must be 'Bearer <api key>'",
    )


async def test_a_valid_key_reaches_its_tenant(client: httpx.AsyncClient, tenant: Any) -> None:
    for _ in range(2):  # the second answer comes from the key cache
        r = await client.post(
            "/graphql", json={"query": "{ tenantId }"}, headers=bearer(tenant.api_key)
        )
        assert r.status_code == 200
        assert r.json() == {"data": {"tenantId": tenant.id}}


async def test_get_queries_work(client: httpx.AsyncClient, tenant: Any) -> None:
    r = await client.get(
        "/graphql", params={"query": "{ tenantId }"}, headers=bearer(tenant.api_key)
    )
    assert r.json() == {"data": {"tenantId": tenant.id}}


async def test_without_a_key_the_development_tenant_answers_when_allowed(
    settings: Settings, sessionmaker: Any
) -> None:
    from billing.tenants import ensure_dev_tenant

    async with sessionmaker.begin() as session:
        dev_id, _ = await ensure_dev_tenant(session)
    anonymous = Settings(**{**settings.__dict__, "allow_anonymous": True})
    async with serve(anonymous) as c:
        r = await c.post("/graphql", json={"query": "{ tenantId }"})
    assert r.json() == {"data": {"tenantId": dev_id}}


async def test_a_batch_runs_in_order_each_with_its_own_context(
    client: httpx.AsyncClient, tenant: Any
) -> None:
    fake_schema.EVENTS.clear()
    # The first operation sleeps: run concurrently, the second would finish first.
    batch = [
        {"query": 'mutation { record(tag: "first", delay: 0.05) }'},
        {"query": 'mutation { record(tag: "second", delay: 0) }'},
        {"query": "{ tenantId }"},
    ]
    r = await client.post("/graphql", json=batch, headers=bearer(tenant.api_key))
    assert r.status_code == 200
    body = r.json()
    assert fake_schema.EVENTS == ["first:start", "first:end", "second:start", "second:end"]
    assert body[2] == {"data": {"tenantId": tenant.id}}
    assert body[0]["data"]["record"] != body[1]["data"]["record"]  # distinct contexts


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ([1, 2], "Batch item 0 is not a JSON object with a 'query'"),
        ([{"query": "{ tenantId }"}, "x"], "Batch item 1 is not a JSON object with a 'query'"),
        ([{"query": "{ tenantId }", "variables": [1]}], "Batch item 0: 'variables' must be"),
        ([], "A batch must contain at least one operation"),
        ([{"query": "{ tenantId }"}] * 4, "Too many operations: a batch holds at most 3"),
        (5, "The request body must be a JSON object or an array of JSON objects"),
        ({"query": 5}, "The GraphQL operation's `query` must be a string or null"),
        ({"query": "{ tenantId }", "variables": [1]}, "The GraphQL operation's `variables`"),
        ({"query": "{ tenantId }", "extensions": 3}, "The GraphQL operation's `extensions`"),
        ({"variables": {}}, "No GraphQL query found in the request"),
    ],
)
@pytest.mark.parametrize("content_type", ["application/json", "application/json; charset=utf-8"])
async def test_malformed_bodies_are_400_with_a_message(
    client: httpx.AsyncClient, tenant: Any, body: Any, message: str, content_type: str
) -> None:
    r = await client.post(
        "/graphql",
        content=json.dumps(body),
        headers={**bearer(tenant.api_key), "Content-Type": content_type},
    )
    assert r.status_code == 400
    assert r.json()["errors"][0]["message"].startswith(message)


BODIES = [
    {"query": "{ tenantId }"},
    {"query": "query Q($n: Int) { tenantId }", "variables": {"n": 1}, "operationName": "Q"},
    {"query": "{ tenantId }", "extensions": {"x": 1}},
    {"query": None},
    {"query": 5},
    {"query": "{ tenantId }", "variables": [1]},
    {"query": "{ tenantId }", "extensions": "x"},
    [{"query": "{ tenantId }"}, {"query": "{ contextId }", "variables": None}],
    [{"query": "{ tenantId }"}, 3],
    [],
]


@pytest.mark.parametrize("body", BODIES, ids=[json.dumps(b)[:40] for b in BODIES])
async def test_a_json_post_is_read_as_strawberry_reads_it(settings: Settings, body: Any) -> None:
    """JSON POSTs skip Strawberry's generic request parsing (server.graphql_view,
    run_json_post): what they are read as, or refused with, is what Strawberry's own
    parse_http_body makes of the same body."""
    app = create_app(settings, schema=fake_schema.schema)
    view = app.state.view
    raw = json.dumps(body).encode()

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": raw, "more_body": False}

    def request() -> Request:
        scope = {
            "type": "http",
            "method": "POST",
            "path": "/graphql",
            "query_string": b"",
            "headers": [(b"content-type", b"application/json")],
        }
        return Request(scope, receive)

    async def outcome(read: Callable[[Request], Awaitable[Any]]) -> Any:
        try:
            return await read(request())
        except HTTPException as e:
            return (e.status_code, e.reason)

    async def ours(r: Request) -> Any:
        assert view.is_json_post(r)
        return json_request_data(view.parse_json(await r.body()), view)

    async def strawberrys(r: Request) -> Any:
        return await AsyncBaseHTTPView.parse_http_body(view, view.request_adapter_class(r))

    assert await outcome(ours) == await outcome(strawberrys)


async def test_only_a_json_post_takes_the_short_path(settings: Settings) -> None:
    view = create_app(settings, schema=fake_schema.schema).state.view

    def post(headers: dict[str, str], method: str = "POST") -> Request:
        raw = [(k.lower().encode(), v.encode()) for k, v in headers.items()]
        return Request({"type": "http", "method": method, "headers": raw, "query_string": b""})

    assert view.is_json_post(post({"Content-Type": "Application/JSON ; charset=utf-8"}))
    assert not view.is_json_post(post({"Content-Type": "application/json"}, method="GET"))
    assert not view.is_json_post(post({"Content-Type": "multipart/form-data; boundary=x"}))
    incremental = strawberry.Schema(
        query=fake_schema.Query,
        config=StrawberryConfig(enable_experimental_incremental_execution=True),
    )
    streaming = create_app(settings, schema=incremental).state.view
    assert not streaming.is_json_post(post({"Content-Type": "application/json"}))
    # No streamed transport (SSE, multipart subscriptions) is enabled on this view: an
    # Accept header asking for one changes nothing, as in Strawberry's own path.
    assert view.is_json_post(
        post({"Content-Type": "application/json", "Accept": "text/event-stream"})
    )
    sse = create_app(settings, schema=fake_schema.schema).state.view
    sse.protocols = (*sse.protocols, GRAPHQL_SSE_PROTOCOL)
    assert not sse.is_json_post(post({"Content-Type": "application/json"}))


async def test_an_oversized_body_is_413(settings: Settings, tenant: Any) -> None:
    small = Settings(**{**settings.__dict__, "max_body_bytes": 1000})
    async with serve(small) as c:
        r = await c.post(
            "/graphql",
            content=b'{"query": "' + b" " * 2000 + b'{ tenantId }"}',
            headers={**bearer(tenant.api_key), "content-type": "application/json"},
        )
    assert r.status_code == 413


async def test_unexpected_errors_are_masked_and_logged(
    client: httpx.AsyncClient, tenant: Any, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR):
        r = await client.post(
            "/graphql", json={"query": "{ boom }"}, headers=bearer(tenant.api_key)
        )
    assert r.status_code == 200
    assert r.json()["errors"][0]["message"] == "Unexpected error."
    assert "secret" not in r.text
    assert "SELECT secret FROM internals" in caplog.text


async def test_graphiql_is_served_offline_with_the_dev_key_prefilled(settings: Settings) -> None:
    anonymous = Settings(**{**settings.__dict__, "allow_anonymous": True})
    async with serve(anonymous, dev_api_key="pb_dev_example") as c:
        page = await c.get("/graphql", headers={"Accept": "text/html"})
        assert page.status_code == 200
        assert "Bearer pb_dev_example" in page.text
        assets = re.findall(r'(?:src|href)="([^"]+)"', page.text)
        assert len(assets) == 6
        for asset in assets:
            assert asset.startswith("/static/graphiql/"), asset  # nothing from a CDN
            assert (await c.get(asset)).status_code == 200, asset


async def test_metrics_count_requests(client: httpx.AsyncClient) -> None:
    def healthz_count(scraped: str) -> float:
        for family in text_string_to_metric_families(scraped):
            for s in family.samples:
                if s.name == "partnerbill_http_requests_total" and s.labels == {
                    "route": "/healthz",
                    "method": "GET",
                    "status": "200",
                }:
                    return s.value
        return 0

    before = healthz_count((await client.get("/metrics")).text)
    await client.get("/healthz")
    r = await client.get("/metrics")
    assert r.status_code == 200
    assert healthz_count(r.text) == before + 1
