"""API keys can be listed, rotated and revoked; a revoked key is refused by every API
process within a second. Two apps share one database and one Redis, as two API processes."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from arq import create_pool
from websockets.exceptions import ConnectionClosed

from billing.tenants import api_key_id, revoke_api_key, rotate_api_key
from jobs.redis import redis_settings_from_url
from server.app import app_from_env, create_app
from server.cli import loopback
from server.keys import announce_key_change
from server.settings import DEV_KEY_FILE, Settings
from tests.server import fake_schema

REPO = Path(__file__).resolve().parents[2]
WITHIN_S = 1.0
QUERY = {"query": "{ tenantId }"}


@asynccontextmanager
async def serve(settings: Settings, **kwargs: Any) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings, schema=fake_schema.schema, **kwargs)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield client


@pytest.fixture
def settings(database_url: str, redis_url: str) -> Settings:
    return Settings(
        database_url=database_url, redis_url=redis_url, run_worker=False, allow_anonymous=False
    )


@asynccontextmanager
async def two_processes(settings: Settings) -> AsyncIterator[list[httpx.AsyncClient]]:
    async with AsyncExitStack() as stack:
        yield [await stack.enter_async_context(serve(settings)) for _ in range(2)]


async def statuses(clients: list[httpx.AsyncClient], key: str) -> list[int]:
    headers = {"Authorization": f"Bearer {key}"}
    return [(await c.post("/graphql", json=QUERY, headers=headers)).status_code for c in clients]


async def refused_within(clients: list[httpx.AsyncClient], key: str) -> float:
    """Seconds until every client answers 401 for the key (gives up after 3 s)."""
    start = time.monotonic()
    while time.monotonic() - start < 3 * WITHIN_S:
        if await statuses(clients, key) == [401] * len(clients):
            return time.monotonic() - start
        await asyncio.sleep(0.02)
    return float("inf")


async def announce(redis_url: str) -> None:
    redis = await create_pool(redis_settings_from_url(redis_url))
    try:
        assert await announce_key_change(redis)
    finally:
        await redis.aclose(close_connection_pool=True)


async def revoke(sessionmaker: Any, key: str) -> None:
    async with sessionmaker.begin() as s:
        key_id = await api_key_id(s, key)
        assert key_id is not None
        await revoke_api_key(s, key_id)


async def test_a_revoked_key_is_refused_by_every_process_within_a_second(
    settings: Settings, sessionmaker: Any, tenant: Any, redis_url: str
) -> None:
    async with two_processes(settings) as clients:
        # Both processes have the key in their cache, trusted long: the watch runs.
        assert await statuses(clients, tenant.api_key) == [200, 200]
        assert await statuses(clients, tenant.api_key) == [200, 200]
        await revoke(sessionmaker, tenant.api_key)
        await announce(redis_url)
        assert await refused_within(clients, tenant.api_key) <= WITHIN_S
        await asyncio.sleep(WITHIN_S)
        assert await statuses(clients, tenant.api_key) == [401, 401]


async def test_a_subscription_socket_opened_with_a_revoked_key_is_closed_within_a_second(
    settings: Settings, sessionmaker: Any, tenant: Any, redis_url: str
) -> None:
    """The key opens a graphql-transport-ws connection once; its revocation closes the
    connection (4403) as it refuses the key's HTTP requests."""
    from tests.server.test_subscriptions import METRICS, ws
    from tests.server.test_subscriptions import serve as serve_http

    async with serve_http(settings) as base:
        async with ws(base, {"apiKey": tenant.api_key}) as client:
            await client.subscribe(METRICS)
            await asyncio.sleep(0.3)  # subscribed; nothing to tell yet
            await revoke(sessionmaker, tenant.api_key)
            await announce(redis_url)
            start = time.monotonic()
            with pytest.raises(ConnectionClosed):
                async with asyncio.timeout(3 * WITHIN_S):
                    await client.receive()
            assert time.monotonic() - start <= WITHIN_S
            assert client.conn.close_code == 4403


class RedisAway:
    async def get(self, name: str) -> Any:
        raise ConnectionError("Redis is away")


async def test_without_redis_a_revoked_key_is_still_refused_within_a_second(
    settings: Settings, sessionmaker: Any, tenant: Any
) -> None:
    """The revocation notice cannot reach a process cut off from Redis: it trusts keys
    briefly and reads them again, so the key still stops within a second."""
    app = create_app(settings, schema=fake_schema.schema)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            watch = app.state.key_watch
            cache = app.state.view.key_cache
            assert cache.watched
            watch.redis = RedisAway()
            await watch.check()
            assert not cache.watched
            assert await statuses([client], tenant.api_key) == [200]
            await revoke(sessionmaker, tenant.api_key)  # and nobody is told
            assert await refused_within([client], tenant.api_key) <= WITHIN_S


async def test_a_key_looked_up_before_a_revocation_is_not_trusted_after_it(
    settings: Settings, tenant: Any
) -> None:
    """A lookup that was sent before the cache was cleared (the revocation heard) and
    answers after it is not stored: it may have read the revoked key."""
    from server.graphql_view import TenantCache

    cache = TenantCache()
    generation = cache.generation
    cache.watched_from_now()
    cache.put(tenant.api_key, tenant.id, generation=generation)
    assert cache.get(tenant.api_key) == (False, None)


async def test_a_rotated_key_works_at_once_and_the_old_one_stops(
    settings: Settings, sessionmaker: Any, tenant: Any, redis_url: str
) -> None:
    async with two_processes(settings) as clients:
        assert await statuses(clients, tenant.api_key) == [200, 200]
        async with sessionmaker.begin() as s:
            new_key, revoked = await rotate_api_key(s, tenant.id)
        await announce(redis_url)
        assert [k.tenant_id for k in revoked] == [tenant.id]
        assert await statuses(clients, new_key) == [200, 200]
        assert await refused_within(clients, tenant.api_key) <= WITHIN_S
        assert await statuses(clients, new_key) == [200, 200]


async def test_rotating_with_keep_old_leaves_both_keys_working(
    settings: Settings, sessionmaker: Any, tenant: Any
) -> None:
    async with sessionmaker.begin() as s:
        new_key, revoked = await rotate_api_key(s, tenant.id, keep_old=True)
    assert revoked == []
    async with serve(settings) as client:
        assert await statuses([client], tenant.api_key) == [200]
        assert await statuses([client], new_key) == [200]


async def test_concurrent_requests_share_one_key_lookup(
    settings: Settings, tenant: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import server.graphql_view as view

    calls = 0
    real = view.tenant_for_api_key

    async def counting(session: Any, key: str) -> int | None:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.05)
        return await real(session, key)

    monkeypatch.setattr(view, "tenant_for_api_key", counting)
    async with serve(settings) as client:
        headers = {"Authorization": f"Bearer {tenant.api_key}"}
        answers = await asyncio.gather(
            *(client.post("/graphql", json=QUERY, headers=headers) for _ in range(10))
        )
    assert [r.status_code for r in answers] == [200] * 10
    assert calls == 1


# -- the development key in GraphiQL ---------------------------------------------------------


async def graphiql(client: httpx.AsyncClient) -> str:
    page = await client.get("/graphql", headers={"Accept": "text/html"})
    assert page.status_code == 200
    return page.text


@pytest.mark.parametrize("anonymous", [False, True])
async def test_graphiql_offers_the_dev_key_only_with_anonymous_access(
    settings: Settings, anonymous: bool
) -> None:
    chosen = Settings(**{**settings.__dict__, "allow_anonymous": anonymous})
    async with serve(chosen, dev_api_key="pb_dev_example") as client:
        page = await graphiql(client)
    assert ("Bearer pb_dev_example" in page) is anonymous


@pytest.mark.parametrize("anonymous", [False, True])
def test_app_from_env_reads_the_stored_dev_key_only_with_anonymous_access(
    database_url: str,
    redis_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    anonymous: bool,
) -> None:
    (tmp_path / DEV_KEY_FILE).write_text("pb_stored_dev_key\n")
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.setenv("PARTNERBILL_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("PARTNERBILL_ALLOW_ANONYMOUS", "1" if anonymous else "0")
    app = app_from_env()
    assert app.state.runtime.dev_api_key == ("pb_stored_dev_key" if anonymous else None)


# -- the CLI ---------------------------------------------------------------------------------


def partnerbill(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "server.cli", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture
def cli_env(database_url: str, redis_url: str, tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PARTNERBILL_")}
    env.update(DATABASE_URL=database_url, REDIS_URL=redis_url, PARTNERBILL_DATA_DIR=str(tmp_path))
    return env


async def test_tenant_list_rotate_key_and_revoke_key(
    cli_env: dict[str, str], settings: Settings, sessionmaker: Any, tenant: Any
) -> None:
    async with sessionmaker() as s:
        first_id = await api_key_id(s, tenant.api_key)
    listed = await asyncio.to_thread(partnerbill, cli_env, "tenant", "list")
    assert listed.returncode == 0, listed.stderr
    assert f"tenant {tenant.id}  " in listed.stdout
    assert f"  key {first_id}  {tenant.api_key[:7]}..." in listed.stdout
    assert tenant.api_key not in listed.stdout  # never the key itself

    rotated = await asyncio.to_thread(partnerbill, cli_env, "tenant", "rotate-key", str(tenant.id))
    assert rotated.returncode == 0, rotated.stderr
    new_key = rotated.stdout.strip().splitlines()[-1]
    assert new_key.startswith("pb_") and new_key != tenant.api_key
    assert f"  key {first_id}  " in rotated.stdout  # reported as revoked

    async with serve(settings) as client:
        assert await statuses([client], tenant.api_key) == [401]
        assert await statuses([client], new_key) == [200]
        revoked = await asyncio.to_thread(partnerbill, cli_env, "tenant", "revoke-key", new_key)
        assert revoked.returncode == 0, revoked.stderr
        assert f"of tenant {tenant.id}" in revoked.stdout
        assert await refused_within([client], new_key) <= WITHIN_S

    listed = await asyncio.to_thread(partnerbill, cli_env, "tenant", "list")
    assert f"tenant {tenant.id}  " in listed.stdout
    assert f"(created {time.gmtime().tm_year}" in listed.stdout
    line = next(ln for ln in listed.stdout.splitlines() if ln.startswith(f"tenant {tenant.id} "))
    assert line.endswith("0 API keys)")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("tenant", "rotate-key", "999999999"), "Tenant 999999999 not found"),
        (("tenant", "revoke-key", "999999999"), "API key 999999999 not found"),
        (("tenant", "revoke-key", "pb_no_such_key"), "No such API key"),
    ],
)
def test_tenant_commands_name_what_they_did_not_find(
    cli_env: dict[str, str], args: tuple[str, ...], message: str
) -> None:
    done = partnerbill(cli_env, *args)
    assert done.returncode == 2
    assert done.stderr.strip() == f"partnerbill: {message}"


# -- serve on a public address -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "local"),
    [
        ("127.0.0.1", True),
        ("127.0.0.2", True),
        ("::1", True),
        ("[::1]", True),
        ("localhost", True),
        ("0.0.0.0", False),
        ("::", False),
        ("192.168.1.10", False),
        ("example.org", False),
    ],
)
def test_loopback(host: str, local: bool) -> None:
    assert loopback(host) is local


def test_serve_refuses_a_public_address_with_anonymous_access(
    cli_env: dict[str, str], tmp_path: Path
) -> None:
    env = {**cli_env, "PARTNERBILL_ALLOW_ANONYMOUS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "server.cli", "serve", "--host", "0.0.0.0", "--port", "0"],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        out, err = proc.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        proc.terminate()
        out, err = proc.communicate(timeout=60)
        pytest.fail(f"serve started on 0.0.0.0 with anonymous access: {out}")
    assert proc.returncode == 2
    assert "refusing to listen on 0.0.0.0" in err
    assert "PARTNERBILL_ALLOW_ANONYMOUS=0" in err
    assert "GraphiQL" not in out  # refused before anything started
