"""A counting TCP proxy in front of PostgreSQL: it reads the frontend (client -> server)
protocol stream and counts messages by type, so a request's round trips can be counted
exactly (each Sync 'S' or simple Query 'Q' is one wait for ReadyForQuery) and so can the
statements the driver hands over (Execute 'E' + Query 'Q'), which pg_stat_statements
cannot tell apart (an asyncpg executemany is many calls in one round trip).

An SSLRequest / GSSENCRequest is answered 'N' by the proxy itself, so the stream stays
plain and parseable. Only for counting passes: it adds latency and CPU in this process.
"""

from __future__ import annotations

import asyncio
import struct
from collections import Counter

from bench.common import free_port

_NEGOTIATE = (80877103, 80877104)  # SSLRequest, GSSENCRequest


class CountingProxy:
    def __init__(self, host: str, port: int, socket_dir: str | None = None) -> None:
        """Upstream is host:port over TCP, or PostgreSQL's unix socket in ``socket_dir``."""
        self.host = host
        self.port = port
        self.socket_dir = socket_dir
        self.listen_port = free_port()
        self.counts: Counter[str] = Counter()
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._client, "127.0.0.1", self.listen_port)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None

    def reset(self) -> None:
        self.counts.clear()

    @property
    def round_trips(self) -> int:
        return self.counts["S"] + self.counts["Q"]

    @property
    def statements_sent(self) -> int:
        return self.counts["E"] + self.counts["Q"]

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            # startup phase: untyped messages; negotiation requests are refused here
            while True:
                head = await reader.readexactly(8)
                length, code = struct.unpack("!ii", head)
                rest = await reader.readexactly(length - 8)
                if code in _NEGOTIATE:
                    writer.write(b"N")
                    await writer.drain()
                    continue
                break
            if self.socket_dir:
                path = f"{self.socket_dir}/.s.PGSQL.{self.port}"
                up_r, up_w = await asyncio.open_unix_connection(path)
            else:
                up_r, up_w = await asyncio.open_connection(self.host, self.port)
            up_w.write(head + rest)
            down = asyncio.create_task(self._pipe(up_r, writer))
            try:
                while True:
                    head = await reader.readexactly(5)
                    kind = chr(head[0])
                    (length,) = struct.unpack("!i", head[1:])
                    body = await reader.readexactly(length - 4)
                    self.counts[kind] += 1
                    up_w.write(head + body)
                    await up_w.drain()
                    if kind == "X":
                        break
            finally:
                up_w.close()
                await asyncio.gather(down, return_exceptions=True)
        except (asyncio.IncompleteReadError, ConnectionError, OSError):
            pass
        finally:
            writer.close()

    @staticmethod
    async def _pipe(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        try:
            while data := await r.read(65536):
                w.write(data)
                await w.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            w.close()
