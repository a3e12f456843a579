"""`partnerbill serve` as a real process: embedded servers up, then all gone after a signal."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import psutil
import pytest

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def processes_using(data_dir: Path, redis_pid: int | None) -> list[psutil.Process]:
    found = []
    for p in psutil.process_iter(["pid", "cmdline"]):
        cmdline = " ".join(p.info["cmdline"] or [])
        if str(data_dir) in cmdline or p.info["pid"] == redis_pid:
            found.append(p)
    return found


def redis_pid_of(data_dir: Path) -> int | None:
    registry = data_dir / "redis.rdb.settings"
    pidfile = Path(json.loads(registry.read_text())["pidfile"])
    return int(pidfile.read_text().strip())


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_serve_starts_embedded_servers_and_stops_them_all(sig: signal.Signals) -> None:
    data_dir = Path(tempfile.mkdtemp(prefix="partnerbill-cli-", dir="/tmp"))
    port = free_port()
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("DATABASE_URL", "REDIS_URL") and not k.startswith("PARTNERBILL_")
    }
    env.update(PARTNERBILL_DATA_DIR=str(data_dir), PARTNERBILL_PORT=str(port))
    proc = subprocess.Popen(
        [sys.executable, "-m", "server.cli", "serve"],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    redis_pid = None
    try:
        deadline = time.monotonic() + 120
        health = None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                health = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2)
                if health.status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        assert health is not None and health.status_code == 200, proc.poll()
        assert health.json()["checks"] == {"database": "ok", "redis": "ok"}
        assert health.json()["worker"] == "running"
        key_file = data_dir / "dev-api-key"
        assert key_file.stat().st_mode & 0o777 == 0o600
        redis_pid = redis_pid_of(data_dir)
        assert psutil.pid_exists(redis_pid)
        assert processes_using(data_dir, redis_pid)
        if sig == signal.SIGTERM:
            _idle_connection_is_kept(port)

        proc.send_signal(sig)
        output, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    try:
        _check_stopped(proc, sig, output, key_file, data_dir, redis_pid)
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)


def _idle_connection_is_kept(port: int) -> None:
    """A keep-alive connection idle for 6 s (longer than httpx's 5 s pool expiry, and
    uvicorn's own default) still takes the next request."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        request = f"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode()
        conn.sendall(request)
        assert _response(conn).startswith(b"HTTP/1.1 200")
        time.sleep(6)
        conn.sendall(request)
        assert _response(conn).startswith(b"HTTP/1.1 200")


def _response(conn: socket.socket) -> bytes:
    """One whole HTTP/1.1 response (headers and a Content-Length body); b"" if closed."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            return data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    while len(body) < length:
        chunk = conn.recv(65536)
        if not chunk:
            break
        body += chunk
    return head + b"\r\n\r\n" + body


def _check_stopped(
    proc: subprocess.Popen[str],
    sig: signal.Signals,
    output: str,
    key_file: Path,
    data_dir: Path,
    redis_pid: int | None,
) -> None:
    assert proc.returncode == (0 if sig == signal.SIGTERM else 130), output
    assert key_file.read_text().strip() in output  # the key is printed at start-up
    assert f"Stopped ({sig.name})" in output
    deadline = time.monotonic() + 10  # postgres' children may take a moment to exit
    while processes_using(data_dir, redis_pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert processes_using(data_dir, redis_pid) == []
