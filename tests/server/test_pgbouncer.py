"""The service behind PgBouncer in transaction mode: concurrent real writes through the ASGI app.

PgBouncer sits in front of the suite's PostgreSQL with a small server pool, so many client
connections share few server connections: a named prepared statement left on one server
connection and used from another breaks. From 1.21, PgBouncer keeps prepared statements itself
(``max_prepared_statements``) and the statement cache stays on; older versions (Debian 12 ships
1.18) need ``PARTNERBILL_STATEMENT_CACHE=0``, under which asyncpg and SQLAlchemy's asyncpg
dialect use unnamed statements only.
"""

from __future__ import annotations

import asyncio
import os
import pwd
import re
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any, cast

import httpx
import pytest
from sqlalchemy.engine import make_url

from server.app import create_app
from server.settings import Settings
from tests.conftest import TenantHandle
from tests.helpers import Gql
from tests.order_helpers import (
    CREATE_ACCOUNT,
    CREATE_ORDER,
    account_input,
    create_action,
    make_catalog,
    order,
)

SERVER_POOL = 3  # server connections PgBouncer opens: fewer than the app's clients
CLIENTS = 16  # requests in flight at once (under the per-tenant limit)


@dataclass
class Bouncer:
    url: str
    version: tuple[int, int]
    statement_cache: int


def _binary() -> str | None:
    return shutil.which("pgbouncer") or next(
        (p for p in ("/usr/sbin/pgbouncer", "/usr/bin/pgbouncer") if os.path.exists(p)), None
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def bouncer(database_url: str) -> Iterator[Bouncer]:
    binary = _binary()
    if binary is None:
        pytest.skip("pgbouncer is not installed (Debian: apt-get install -y pgbouncer)")
    out = subprocess.run([binary, "--version"], capture_output=True, text=True, check=True)
    found = re.search(r"PgBouncer (\d+)\.(\d+)", out.stdout)
    assert found, out.stdout
    version = (int(found.group(1)), int(found.group(2)))
    keeps_statements = version >= (1, 21)

    u = make_url(database_url)
    host = u.query.get("host") or u.host or "127.0.0.1"
    assert isinstance(host, str)
    server = f"host={host} port={u.port or 5432} dbname={u.database} user={u.username}"
    if u.password:
        server += f" password={u.password}"
    port = _free_port()
    workdir = Path(tempfile.mkdtemp(prefix="partnerbill-pgbouncer-", dir="/tmp"))
    workdir.chmod(0o755)
    (workdir / "users.txt").write_text(f'"{u.username}" ""\n')
    (workdir / "pgbouncer.ini").write_text(
        f"""[databases]
{u.database} = {server}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {port}
unix_socket_dir =
auth_type = trust
auth_file = {workdir / "users.txt"}
pool_mode = transaction
default_pool_size = {SERVER_POOL}
max_client_conn = 500
ignore_startup_parameters = extra_float_digits,jit
{"max_prepared_statements = 200" if keeps_statements else ""}
"""
    )
    for f in workdir.iterdir():
        f.chmod(0o644)
    command = [binary, str(workdir / "pgbouncer.ini")]
    if os.geteuid() == 0:  # PgBouncer will not run as root: run it as the server's user
        owner = os.stat(host).st_uid if host.startswith("/") else None
        command[1:1] = ["-u", pwd.getpwuid(owner).pw_name if owner else "nobody"]
    log = open(workdir / "log", "w")
    proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError((workdir / "log").read_text()) from None
                time.sleep(0.05)
        yield Bouncer(
            url=f"postgresql://{u.username}@127.0.0.1:{port}/{u.database}",
            version=version,
            statement_cache=256 if keeps_statements else 0,
        )
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture
async def client(bouncer: Bouncer, redis_url: str) -> AsyncIterator[httpx.AsyncClient]:
    settings = Settings(
        database_url=bouncer.url,
        redis_url=redis_url,
        run_worker=False,
        allow_anonymous=False,
        statement_cache=bouncer.statement_cache,
        db_pool_size=8,
        pg_pool_size=8,
    )
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
            yield c


CREATE_INVOICE = """mutation($input: CreateStandaloneInvoiceInput!) {
  createStandaloneInvoice(input: $input) { invoice { invoiceNumber status } errors { code } }
}"""
CREATE_PAYMENT = """mutation($input: CreatePaymentInput!) {
  createPayment(input: $input) { payment { paymentNumber unappliedAmount } errors { code } }
}"""
METRICS = """query($n: String!) {
  account(accountNumber: $n) { metrics { totalInvoiceBalance unappliedPaymentAmount } }
}"""


async def test_concurrent_writes_through_pgbouncer_transaction_mode(
    client: httpx.AsyncClient, tenant: TenantHandle
) -> None:
    headers = {"Authorization": f"Bearer {tenant.api_key}"}
    in_flight = asyncio.Semaphore(CLIENTS)

    async def gql(query: str, **variables: Any) -> dict[str, Any]:
        async with in_flight:
            r = await client.post(
                "/graphql", json={"query": query, "variables": variables}, headers=headers
            )
        body = r.json()
        assert r.status_code == 200 and "errors" not in body, body
        data: dict[str, Any] = body["data"]
        for payload in data.values():
            assert not (payload or {}).get("errors"), data
        return data

    await make_catalog(cast(Gql, gql))
    await gql(CREATE_ACCOUNT, input=account_input("PARTNER", partner=True))
    await gql(CREATE_ACCOUNT, input=account_input("ORDINARY"))

    rounds = 6
    writes = []
    for i in range(rounds):
        writes.append(gql(CREATE_ACCOUNT, input=account_input(f"NEW-{i}")))
        for account in ("PARTNER", "ORDINARY"):
            writes += [
                gql(
                    CREATE_INVOICE,
                    input={
                        "accountNumber": account,
                        "invoiceDate": "2026-10-31",
                        "status": "POSTED",
                        "items": [{"chargeName": "Migrated", "amount": "100.00"}],
                    },
                ),
                gql(
                    CREATE_PAYMENT,
                    input={
                        "accountNumber": account,
                        "amount": "10.00",
                        "effectiveDate": "2026-11-02",
                    },
                ),
                gql(CREATE_ORDER, input=order(account, [{"orderActions": [create_action()]}])),
                gql(METRICS, n=account),
            ]
    results = await asyncio.gather(*writes)
    assert len(results) == rounds * 9

    # The ordinary account's metrics are kept synchronously: every write counted once.
    metrics = (await gql(METRICS, n="ORDINARY"))["account"]["metrics"]
    assert Decimal(metrics["totalInvoiceBalance"]) == 100 * rounds
    assert Decimal(metrics["unappliedPaymentAmount"]) == 10 * rounds
