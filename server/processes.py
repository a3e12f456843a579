"""Several uvicorn processes on one port, each accepting on a listening socket of its own.

uvicorn's Multiprocess hands every process the same listening socket. Each wakes for a new
connection and the first to run accepts all that are waiting, so the keep-alive connections
a client opens at once (a migration script's pool of 8) all land on one process while the
other idles (seen with `ss` on the bench: 8 connections on one process, 0 on the other).
Here each process gets its own socket, all bound to the address with SO_REUSEPORT, and the
kernel spreads new connections over them by a hash of each connection's ports. The parent
keeps every socket open, so the connections the kernel queues for a process that is being
restarted wait in its backlog for the new one. Where SO_REUSEPORT does not exist, every
process shares one socket, as uvicorn does.
"""

from __future__ import annotations

import socket

from uvicorn.config import STARTUP_FAILURE, Config
from uvicorn.supervisors.multiprocess import Multiprocess, Process, logger


def listening_sockets(config: Config, processes: int) -> list[list[socket.socket]]:
    """The sockets of each process: its own where the platform can share a port, else the
    one socket uvicorn would bind."""
    if not hasattr(socket, "SO_REUSEPORT") or config.uds or config.fd is not None:
        shared = config.bind_socket()
        return [[shared]] * processes
    family = socket.AF_INET6 if ":" in config.host else socket.AF_INET
    out: list[list[socket.socket]] = []
    for _ in range(processes):
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        try:
            sock.bind((config.host, config.port))
        except OSError:
            sock.close()
            for made in out:
                made[0].close()
            raise
        sock.set_inheritable(True)
        out.append([sock])
    return out


class SpreadMultiprocess(Multiprocess):
    """uvicorn's Multiprocess, with process ``i`` (and whichever replaces it) serving
    ``sockets[i]``. The three methods that start processes are uvicorn's own (0.55), with
    that one change."""

    def __init__(self, config: Config, sockets: list[list[socket.socket]]) -> None:
        super().__init__(config, sockets=sockets[0])
        self.sockets_of = sockets

    def start_process(self, idx: int) -> Process:
        process = Process(self.config, self.sockets_of[idx])
        process.start()
        return process

    def init_processes(self) -> None:
        for idx in range(self.processes_num):
            self.processes.append(self.start_process(idx))

    def restart_all(self) -> None:
        for idx, old_process in enumerate(self.processes):
            if self.should_exit.is_set():
                return
            new_process = self.start_process(idx)
            if not new_process.wait_until_ready(
                self.config.timeout_worker_healthcheck, self.should_exit
            ):
                new_process.kill()
                new_process.join()
                if not self.should_exit.is_set():
                    logger.error(
                        f"New child process [{new_process.pid}] was not ready in time; "
                        f"keeping worker [{old_process.pid}] and aborting the restart."
                    )
                return
            old_process.terminate()
            old_process.join()
            self.processes[idx] = new_process

    def keep_subprocess_alive(self) -> None:
        if self.should_exit.is_set():
            return
        for idx, process in enumerate(self.processes):
            if process.is_alive(timeout=self.config.timeout_worker_healthcheck):
                continue
            process.kill()
            process.join()
            if process.exitcode == STARTUP_FAILURE:
                logger.error(
                    f"Child process [{process.pid}] failed to start, stopping the parent process."
                )
                self.should_exit.set()
                return
            if self.should_exit.is_set():
                return
            logger.info(f"Child process [{process.pid}] died")
            self.processes[idx] = self.start_process(idx)

    def close_sockets(self) -> None:
        for sock in {id(s): s for group in self.sockets_of for s in group}.values():
            sock.close()
