"""A light HTTP/1.1 load generator: N keep-alive connections, each sending one pre-encoded
request at a time, as an asyncio Protocol (no coroutine, no future and no HTTP library per
request), so that it costs a few tens of microseconds of CPU per request instead of the
~1 ms of httpx.

Every response is checked by a caller-supplied function: (status, body) -> None when the
request did what it should, else an error label, which is counted and not reported as
throughput. Responses must carry Content-Length (uvicorn + Starlette do).

``run_mix`` sends a list of such requests in turn (request i of the whole load is
``mix[i % len(mix)]``, whichever connection sends it), each with its own check and label,
e.g. three mutations over 1,000 accounts; ``run_load`` is the one-request case; ``run_each``
sends every request of a list once (the seed scenario's orders).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

Check = Callable[[int, bytes], str | None]
Request = tuple[bytes, Check, str]  # the encoded request, its check, its label


def post_bytes(host: str, port: int, path: str, body: bytes, headers: dict[str, str]) -> bytes:
    """One complete HTTP/1.1 POST request, ready to write."""
    head = [f"POST {path} HTTP/1.1", f"Host: {host}:{port}", "Content-Type: application/json"]
    head += [f"{k}: {v}" for k, v in headers.items()]
    head.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


def graphql_check(field: str, *, read: bool = False) -> Check:
    """OK when HTTP 200, no top-level GraphQL errors and ``data[field]`` is there; for a
    mutation its payload's ``errors`` must also be empty."""

    def check(status: int, body: bytes) -> str | None:
        if status != 200:
            return f"HTTP{status}"
        try:
            obj = json.loads(body)
        except ValueError:
            return "bad-json"
        if obj.get("errors"):
            return "graphql:" + str(obj["errors"][0].get("message"))[:60]
        payload = (obj.get("data") or {}).get(field)
        if payload is None:
            return f"no-{field}"
        if read:
            return None if payload.get("metrics") else "no-metrics"
        errs = payload.get("errors")
        if errs:
            return str(errs[0].get("code") or errs[0].get("__typename"))
        return None

    return check


class _Load:
    def __init__(self, mix: Sequence[Request], stop: float, limit: int | None = None) -> None:
        self.mix = mix
        self.next = 0  # index of the next request of the whole load
        self.stop = stop
        self.limit = limit  # requests in all, or None: until ``stop``
        self.lat: list[float] = []
        self.ok = 0
        self.ok_by_label: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()
        self.answered: list[float] | None = None  # wall-clock time of each OK answer, if kept

    def more(self, now: float) -> bool:
        """Whether a connection that is free at ``now`` sends another request."""
        return now < self.stop and (self.limit is None or self.next < self.limit)


class _Conn(asyncio.Protocol):
    def __init__(self, load: _Load, done: asyncio.Future[None]) -> None:
        self.load = load
        self.done = done
        self.buf = bytearray()
        self.need = -1  # bytes of the current response (head + body) once its head is read
        self.body_at = 0
        self.status = 0
        self.t0 = 0.0
        self.current: Request = load.mix[0]
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def send(self) -> None:
        load = self.load
        self.current = load.mix[load.next % len(load.mix)]
        load.next += 1
        self.t0 = time.perf_counter()
        assert self.transport is not None
        self.transport.write(self.current[0])

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        while True:
            if self.need < 0:
                end = buf.find(b"\r\n\r\n")
                if end < 0:
                    return
                head = bytes(buf[:end]).lower()
                self.status = int(head[9:12])
                i = head.find(b"\r\ncontent-length:")
                if i < 0:
                    self._finish("no-content-length")
                    return
                j = head.find(b"\r\n", i + 2)
                length = int(head[i + 17 : j if j > 0 else len(head)])
                self.body_at = end + 4
                self.need = self.body_at + length
            if len(buf) < self.need:
                return
            body = bytes(buf[self.body_at : self.need])
            del buf[: self.need]
            self.need = -1
            now = time.perf_counter()
            load = self.load
            load.lat.append(now - self.t0)
            _, check, label = self.current
            err = check(self.status, body)
            if err is None:
                load.ok += 1
                load.ok_by_label[label] += 1
                if load.answered is not None:
                    load.answered.append(time.time())
            else:
                load.errors[err] += 1
            if load.more(now):
                self.send()
            else:
                self._finish(None)
                return

    def _finish(self, error: str | None) -> None:
        if error:
            self.load.errors[error] += 1
        if not self.done.done():
            self.done.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self._finish("connection-lost")


async def run_load(
    host: str, port: int, request: bytes, check: Check, connections: int, seconds: float
) -> dict[str, Any]:
    """``connections`` keep-alive connections, each one request at a time, for ``seconds``;
    requests in flight at the deadline are waited for (and counted). Returns counts,
    throughput, latency percentiles and this process's CPU per request."""
    r = await run_mix(host, port, [(request, check, "")], connections, seconds)
    del r["ok_by_label"]
    return r


async def run_mix(
    host: str,
    port: int,
    mix: Sequence[Request],
    connections: int,
    seconds: float,
    *,
    answered: list[float] | None = None,
) -> dict[str, Any]:
    """``run_load`` over the requests of ``mix`` in turn; also counts OK answers per label.
    ``answered``, when given, receives the wall-clock time of every OK answer."""
    return await _run(host, port, _Load(mix, 0.0), connections, seconds, answered)


async def run_each(
    host: str,
    port: int,
    requests: Sequence[Request],
    connections: int,
    *,
    answered: list[float] | None = None,
) -> dict[str, Any]:
    """Every request of ``requests`` once, over ``connections`` keep-alive connections, one
    request at a time each; the figures of ``run_mix``."""
    load = _Load(requests, 0.0, limit=len(requests))
    return await _run(host, port, load, min(connections, len(requests)), float("inf"), answered)


async def _run(
    host: str,
    port: int,
    load: _Load,
    connections: int,
    seconds: float,
    answered: list[float] | None,
) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    conns: list[tuple[_Conn, asyncio.Future[None]]] = []
    load.answered = answered
    for _ in range(connections):
        fut: asyncio.Future[None] = loop.create_future()
        _, proto = await loop.create_connection(lambda f=fut: _Conn(load, f), host, port)
        conns.append((proto, fut))
    c0 = time.process_time()
    t0 = time.perf_counter()
    load.stop = t0 + seconds
    for proto, _ in conns:
        proto.send()
    await asyncio.gather(*(f for _, f in conns))
    elapsed = time.perf_counter() - t0
    cpu = time.process_time() - c0
    for proto, _ in conns:
        if proto.transport is not None:
            proto.transport.close()
    lat = sorted(load.lat)
    total = len(lat)

    def pct(p: float) -> float:
        return round(lat[min(total - 1, int(p * total))] * 1000, 2) if lat else 0.0

    return {
        "connections": connections,
        "seconds": round(elapsed, 3),
        "requests": total,
        "ok": load.ok,
        "ok_by_label": dict(load.ok_by_label),
        "errors": dict(load.errors),
        "throughput": round(load.ok / elapsed, 1),
        "p50_ms": pct(0.50),
        "p99_ms": pct(0.99),
        "max_ms": round(lat[-1] * 1000, 1) if lat else 0.0,
        "loadgen_cpu_s": round(cpu, 4),
        "loadgen_cpu_ms_per_req": round(1000 * cpu / max(total, 1), 4),
    }
