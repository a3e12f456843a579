# ruff: noqa: E501
"""Shared helpers of the benchmark suite: a fresh database, set-based data, server processes."""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import psutil
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.serve import command as serve_command  # noqa: E402
from db.engine import async_url  # noqa: E402
from db.migrate import upgrade_async  # noqa: E402

DEFAULT_DB = "postgresql://postgres@127.0.0.1:5432/postgres"
DEFAULT_REDIS = "redis://127.0.0.1:6379/11"
CONTACT = '{"firstName": "A", "lastName": "B"}'


def server_url() -> str:
    return os.environ.get("DATABASE_URL", DEFAULT_DB)


def redis_url() -> str:
    return os.environ.get("REDIS_URL", DEFAULT_REDIS)


@asynccontextmanager
async def fresh_database(keep: bool = False) -> Any:
    """CREATE DATABASE pb_bench_<random> on the server of DATABASE_URL, migrated; dropped after."""
    server = make_url(async_url(server_url()))
    name = f"pb_bench_{secrets.token_hex(4)}"
    admin = create_async_engine(server, isolation_level="AUTOCOMMIT")
    async with admin.connect() as conn:
        await conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = server.set(database=name).render_as_string(hide_password=False)
    try:
        await upgrade_async(url)
        yield url
    finally:
        if not keep:
            async with admin.connect() as conn:
                await conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        await admin.dispose()


async def analyze(engine: Any) -> None:
    """ANALYZE the bench database, so the planner sees its tables as they now are. Run it after
    a warm-up has written rows: a statement planned while a table was nearly empty keeps its
    sequential scan on that connection until the statistics change (bench/writes.py, window())."""
    async with engine.connect() as conn:
        await conn.execute(text("ANALYZE"))
        await conn.commit()


async def new_tenant(sm: Any, name: str = "bench") -> tuple[int, str]:
    from billing.tenants import create_tenant

    async with sm.begin() as s:
        return await create_tenant(s, f"{name}-{secrets.token_hex(3)}")


async def add_accounts(
    sm: Any, tenant_id: int, prefix: str, count: int, *, partner: bool
) -> list[str]:
    """``count`` ACTIVE USD accounts <prefix>00000001.. with their metrics rows, in two statements."""
    async with sm.begin() as s:
        await s.execute(
            text(
                "INSERT INTO account (tenant_id, account_number, name, currency, status, bill_cycle_day, "
                "payment_term, batch, partner_account, bill_to, sold_to) "
                "SELECT :t, :p || lpad(g::text, 8, '0'), 'Account ' || g, 'USD', 'ACTIVE', 1, 'NET_30', "
                "'Batch1', :partner, CAST(:c AS json), CAST(:c AS json) FROM generate_series(1, :n) g"
            ),
            {"t": tenant_id, "p": prefix, "n": count, "partner": partner, "c": CONTACT},
        )
        await s.execute(
            text(
                "INSERT INTO account_metrics (account_id, tenant_id) SELECT a.id, a.tenant_id FROM account a "
                "WHERE a.tenant_id = :t AND NOT EXISTS (SELECT 1 FROM account_metrics m WHERE m.account_id = a.id)"
            ),
            {"t": tenant_id},
        )
    return [f"{prefix}{g:08d}" for g in range(1, count + 1)]


async def account_ids(sm: Any, tenant_id: int, numbers: list[str]) -> list[int]:
    async with sm() as s:
        res = await s.execute(
            text(
                "SELECT id FROM account WHERE tenant_id = :t AND account_number = ANY(:n) ORDER BY account_number"
            ),
            {"t": tenant_id, "n": numbers},
        )
        return [int(x) for x in res.scalars()]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def server_env(db_url: str, redis: str) -> dict[str, str]:
    """The environment of an API (or worker) process started by the bench: production
    settings, no anonymous access, no in-process worker."""
    env = dict(os.environ)
    env.update(
        DATABASE_URL=db_url,
        REDIS_URL=redis,
        # The load is one tenant at up to 128 clients: above the default cap on a tenant's
        # requests in flight (32, answered 429), which protects other tenants, not the bench.
        PARTNERBILL_MAX_INFLIGHT_PER_TENANT="1024",
        PARTNERBILL_ALLOW_ANONYMOUS="0",
        PARTNERBILL_RUN_WORKER="0",
        PARTNERBILL_LOG_LEVEL="warning",
        PYTHONPATH=str(ROOT),
    )
    return env


class Procs:
    """The production processes: the API (bench.serve, as `partnerbill serve` runs it) and
    the arq worker, as separate processes."""

    def __init__(
        self,
        db_url: str,
        workers: int = 1,
        log: Path | None = None,
        redis: str | None = None,
    ) -> None:
        self.db_url = db_url
        self.redis = redis or redis_url()
        self.port = free_port()
        self.workers = workers
        self.log = log
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.cpu0: dict[str, float] = {}

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        return server_env(self.db_url, self.redis)

    def start(self) -> None:
        out = open(self.log, "ab") if self.log else subprocess.DEVNULL
        self.procs["api"] = subprocess.Popen(
            serve_command("server.app:app_from_env", self.port, self.workers),
            cwd=ROOT,
            env=self.env(),
            stdout=out,
            stderr=out,
        )
        self.procs["worker"] = subprocess.Popen(
            [sys.executable, "-m", "arq", "jobs.worker.WorkerSettings"],
            cwd=ROOT,
            env=self.env(),
            stdout=out,
            stderr=out,
        )
        import httpx

        deadline = time.time() + 30
        while time.time() < deadline:
            try:
                if httpx.get(self.base + "/healthz", timeout=1).status_code < 500:
                    break
            except httpx.HTTPError:
                pass
            if self.procs["api"].poll() is not None:
                raise RuntimeError("uvicorn exited early")
            time.sleep(0.2)
        else:
            raise RuntimeError("uvicorn did not become healthy")
        self.mark()

    def _cpu(self, name: str) -> float:
        try:
            p = psutil.Process(self.procs[name].pid)
            total = 0.0
            for q in [p, *p.children(recursive=True)]:
                t = q.cpu_times()
                total += t.user + t.system
            return total
        except psutil.Error:
            return 0.0

    def mark(self) -> None:
        self.cpu0 = {n: self._cpu(n) for n in self.procs}

    def cpu_since_mark(self) -> dict[str, float]:
        return {n: round(self._cpu(n) - self.cpu0.get(n, 0.0), 2) for n in self.procs}

    def peak_rss_mb(self) -> dict[str, float | None]:
        """Peak resident memory (VmHWM, Linux) of each process and its children, in MiB."""
        out: dict[str, float | None] = {}
        for name, proc in self.procs.items():
            try:
                p = psutil.Process(proc.pid)
                total = 0
                for q in [p, *p.children(recursive=True)]:
                    for line in Path(f"/proc/{q.pid}/status").read_text().splitlines():
                        if line.startswith("VmHWM:"):
                            total += int(line.split()[1])
                out[name] = round(total / 1024, 1) if total else None
            except (psutil.Error, OSError, ValueError):
                out[name] = None
        return out

    def stop(self) -> None:
        for p in self.procs.values():
            p.terminate()
        for p in self.procs.values():
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()


@contextmanager
def processes(
    db_url: str, workers: int = 1, *, redis: str | None = None, log: Path | None = None
) -> Iterator[Procs]:
    """The API and the worker on ``db_url``; Redis is ``redis`` (default: REDIS_URL)."""
    p = Procs(db_url, workers, log=log, redis=redis)
    p.start()
    try:
        yield p
    finally:
        p.stop()


def postgres_cpu() -> float:
    """CPU seconds of the live local postgres processes. Backends that exit in between take
    their CPU with them, so differences of this are approximate; see machine_cpu()."""
    total = 0.0
    for p in psutil.process_iter(["name"]):
        try:
            if (p.info["name"] or "").startswith("postgres"):
                t = p.cpu_times()
                total += t.user + t.system
        except psutil.Error:
            pass
    return total


def machine_cpu() -> float:
    """Busy CPU seconds of the whole machine (all cores, everything but idle and iowait)."""
    t = psutil.cpu_times()
    return sum(t) - t.idle - getattr(t, "iowait", 0.0)


def median_spread(values: list[float]) -> tuple[float, float, float]:
    s = sorted(values)
    n = len(s)
    med = s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2
    return med, s[0], s[-1]
