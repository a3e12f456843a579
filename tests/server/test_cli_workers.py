"""`partnerbill serve --workers 2`: two API processes and one job worker over one set of
embedded servers, all of them gone after a signal to the parent."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import psutil
from prometheus_client.parser import text_string_to_metric_families

from server.cli import WORKER_CONNECTIONS, per_process, size_pools
from server.settings import Settings
from tests.server.test_cli import REPO, free_port, processes_using, redis_pid_of

CREATE_ACCOUNT = """mutation($n: String!) {
  createAccount(input: {accountNumber: $n, name: $n, currency: "USD",
      billToContact: {firstName: "A", lastName: "B"}}) {
    account { accountNumber }
    errors { code }
  }
}"""


def test_serve_with_two_workers_runs_two_api_processes_and_one_job_worker() -> None:
    data_dir = Path(tempfile.mkdtemp(prefix="partnerbill-cli-", dir="/tmp"))
    port = free_port()
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("DATABASE_URL", "REDIS_URL") and not k.startswith("PARTNERBILL_")
    }
    env.update(PARTNERBILL_DATA_DIR=str(data_dir), PARTNERBILL_PORT=str(port))
    proc = subprocess.Popen(
        [sys.executable, "-m", "server.cli", "serve", "--workers", "2"],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    children: list[psutil.Process] = []
    redis_pid = None
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        health = None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                health = httpx.get(f"{url}/healthz", timeout=2)
                if health.status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        assert health is not None and health.status_code == 200, proc.poll()
        redis_pid = redis_pid_of(data_dir)

        children = psutil.Process(proc.pid).children()
        commands = [" ".join(c.cmdline()) for c in children]
        assert sum("spawn_main" in c for c in commands) == 2, commands
        assert sum("main(['worker'])" in c for c in commands) == 1, commands
        api = [c for c, cmd in zip(children, commands, strict=True) if "spawn_main" in cmd]
        listen_apart(port, api)

        # Anonymous development access, as in one process; every write lands once.
        with httpx.Client(base_url=url, timeout=30) as client:
            for i in range(6):
                r = client.post(
                    "/graphql", json={"query": CREATE_ACCOUNT, "variables": {"n": f"W-{i}"}}
                )
                assert r.json()["data"]["createAccount"]["errors"] == [], r.text
            key = (data_dir / "dev-api-key").read_text().strip()
            r = client.post(
                "/graphql",
                json={"query": '{ account(accountNumber: "W-5") { accountNumber } }'},
                headers={"Authorization": f"Bearer {key}"},
            )
            assert r.json() == {"data": {"account": {"accountNumber": "W-5"}}}
        scrapes_share_every_process(url, key)

        proc.send_signal(signal.SIGINT)  # the parent only: it stops its children
        output, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            # Stopped as a user would, so that it stops its embedded servers (which run
            # apart from its process tree); killed only if that does not end it.
            proc.terminate()
            try:
                print(proc.communicate(timeout=60)[0])
            except subprocess.TimeoutExpired:
                for p in psutil.Process(proc.pid).children(recursive=True):
                    p.kill()
                proc.kill()
                for p in processes_using(data_dir, redis_pid):
                    p.kill()
                print(proc.communicate(timeout=30)[0])
        for child in children:
            if child.is_running():
                child.kill()
    try:
        assert proc.returncode == 130, output
        assert "Stopped (SIGINT)" in output
        assert "2 API processes" in output
        deadline = time.monotonic() + 10  # postgres' children may take a moment to exit
        while (processes_using(data_dir, redis_pid) or alive(children)) and (
            time.monotonic() < deadline
        ):
            time.sleep(0.2)
        assert alive(children) == []
        assert processes_using(data_dir, redis_pid) == []
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)


def listen_apart(port: int, api: list[psutil.Process]) -> None:
    """Each API process accepts on a listening socket of its own (server.processes), so the
    kernel spreads the connections a client opens at once over them, instead of one socket
    they all wait on, where whichever wakes first accepts every waiting connection."""
    sockets: dict[int, str] = {}
    deadline = time.monotonic() + 60  # a process takes its socket as it starts
    while len(sockets) < len(api) and time.monotonic() < deadline:
        for p in api:
            for k in p.net_connections(kind="tcp"):
                if k.laddr and k.laddr.port == port and k.status == psutil.CONN_LISTEN:
                    sockets[p.pid] = os.readlink(f"/proc/{p.pid}/fd/{k.fd}")  # socket:[inode]
        time.sleep(0.1)
    assert len(sockets) == len(api), sockets
    assert len(set(sockets.values())) == len(api), sockets


PARTNER_WRITE = """mutation {
  updateTenantSettings(input: {metricsRefreshInterval: 1}) { errors { code } }
  createAccount(input: {accountNumber: "P-1", name: "P", currency: "USD", partnerAccount: true,
      billToContact: {firstName: "A", lastName: "B"}}) { errors { code } }
  createStandaloneInvoice(input: {accountNumber: "P-1", invoiceDate: "2026-11-01",
      status: POSTED, items: [{chargeName: "Seat", amount: "1.00"}]}) { errors { code } }
}"""


def scrapes_share_every_process(url: str, key: str) -> None:
    """/metrics from either API process sums every process (multiprocess mode): the
    operations both answered, and the refresh passes the job worker ran."""

    def scrape() -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
        # A connection of its own each time: either API process may take it.
        r = httpx.get(f"{url}/metrics", timeout=10)
        assert r.status_code == 200
        return {
            (s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(r.text)
            for s in family.samples
        }

    before = scrape()
    for _ in range(10):
        r = httpx.post(
            f"{url}/graphql",
            json={"query": "{ tenantSettings { lockWait } }"},
            headers={"Authorization": f"Bearer {key}"},
            timeout=10,
        )
        assert r.status_code == 200
    count = ("partnerbill_graphql_operation_seconds_count",
             frozenset({("type", "query"), ("operation", "tenantSettings")}))  # fmt: skip
    for _ in range(4):
        assert scrape()[count] - before.get(count, 0) == 10

    r = httpx.post(
        f"{url}/graphql",
        json={"query": PARTNER_WRITE},
        headers={"Authorization": f"Bearer {key}"},
        timeout=10,
    )
    assert "errors" not in r.json() and r.json()["data"]["createStandaloneInvoice"] == {
        "errors": []
    }, r.text
    folded = ("partnerbill_metrics_refresh_accounts_folded_total", frozenset())
    deadline = time.monotonic() + 20
    while scrape().get(folded, 0) < 1:
        assert time.monotonic() < deadline, "the worker's refresh never showed on /metrics"
        time.sleep(0.5)


def alive(processes: list[psutil.Process]) -> list[str]:
    running = []
    for p in processes:
        try:
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                running.append(" ".join(p.cmdline()))
        except psutil.NoSuchProcess:
            pass
    return running


def test_pools_are_kept_when_they_fit_and_shrunk_when_they_do_not() -> None:
    settings = Settings(db_pool_size=10, pg_pool_size=10)
    assert size_pools(settings, 2, 200, 3) == settings
    shrunk = size_pools(settings, 8, 200, 3)
    assert 8 * per_process(shrunk) + WORKER_CONNECTIONS <= 200 - 3
    assert (shrunk.db_pool_size, shrunk.pg_pool_size) == (7, 7)
    assert 4 * per_process(size_pools(settings, 4, 100, 3)) + WORKER_CONNECTIONS <= 100 - 3
