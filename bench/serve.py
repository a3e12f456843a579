"""uvicorn over an app factory the way `partnerbill serve --workers N` runs the API: N
processes, each accepting on a socket of its own (server.processes); one process is plain
uvicorn. The benches start both the API and the bare ceiling this way.

    python -m bench.serve server.app:app_from_env --port 8000 --workers 2
"""

from __future__ import annotations

import argparse
import sys

import uvicorn

from server.cli import KEEP_ALIVE_S
from server.processes import SpreadMultiprocess, listening_sockets


def command(app: str, port: int, workers: int) -> list[str]:
    """The command line that serves ``app`` (an import string of a factory)."""
    return [
        sys.executable, "-m", "bench.serve", app, "--port", str(port), "--workers", str(workers),
    ]  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("app")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args(argv)
    config = uvicorn.Config(
        args.app,
        factory=True,
        host="127.0.0.1",
        port=args.port,
        workers=args.workers,
        log_level="warning",
        access_log=False,
        timeout_keep_alive=KEEP_ALIVE_S,  # as partnerbill serve sets it
    )
    if args.workers == 1:
        uvicorn.Server(config).run()
        return
    supervisor = SpreadMultiprocess(config, listening_sockets(config, args.workers))
    try:
        supervisor.run()
    finally:
        supervisor.close_sockets()


if __name__ == "__main__":
    main()
