"""What every attack test measures on the real server process: memory, descriptors, and whether a
legitimate transfer beside the attack keeps its speed and small probe transfers still succeed.

Loopback only; every loop is bounded in count and time.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..helpers import WAIT_S, ServerProcess, recv_all, unique_path

MIB = 1024 * 1024


def fd_count(server: ServerProcess) -> int:
    """Open descriptors of the server process."""
    return len(os.listdir(f"/proc/{server.proc.pid}/fd"))


def rss_mib(server: ServerProcess) -> float:
    return server.rss_kib() / 1024


def probe(port: int, *, size: int = 1024, timeout: float = WAIT_S) -> bool:
    """One small transfer (a sender with Content-Length, a receiver) on fresh connections; True if it went through."""
    path = unique_path("probe")
    body = os.urandom(size)
    got: list[bytes] = []

    def receive() -> None:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
                sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
                got.append(recv_all(sock, timeout=timeout))
        except OSError:
            pass

    thread = threading.Thread(target=receive, daemon=True)
    thread.start()
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            head = f"POST {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {size}\r\n\r\n"
            sock.sendall(head.encode() + body)
            recv_all(sock, timeout=timeout)
    except OSError:
        return False
    thread.join(timeout)
    return bool(got) and got[0].startswith(b"HTTP/1.1 200") and got[0].endswith(body)


@dataclass
class Transfer:
    """A legitimate transfer of ``size`` bytes run in the background: its MB/s once done."""

    port: int
    size: int = 64 * MIB
    mb_per_s: float | None = None
    error: str | None = None
    _thread: threading.Thread | None = field(default=None, repr=False)

    def start(self) -> Transfer:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def wait(self, timeout: float = 120.0) -> float:
        assert self._thread is not None
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise TimeoutError(f"the {self.size >> 20} MiB transfer did not finish within {timeout} s")
        if self.error is not None or self.mb_per_s is None:
            raise AssertionError(f"the {self.size >> 20} MiB transfer failed: {self.error}")
        return self.mb_per_s

    def _run(self) -> None:
        path = unique_path("legit")
        received = 0
        started = time.monotonic()

        def send() -> None:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=60) as sock:
                    head = (
                        f"POST {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {self.size}\r\n\r\n"
                    )
                    sock.sendall(head.encode())
                    block = b"\xab" * (256 * 1024)
                    for _ in range(self.size // len(block)):
                        sock.sendall(block)
                    recv_all(sock, timeout=60)
            except OSError as exc:
                self.error = f"sender: {exc}"

        sender = threading.Thread(target=send, daemon=True)
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=60) as sock:
                sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
                started = time.monotonic()
                sender.start()
                while True:
                    data = sock.recv(1 << 20)
                    if not data:
                        break
                    received += len(data)
        except OSError as exc:
            self.error = f"receiver: {exc}"
            return
        sender.join(60)
        elapsed = time.monotonic() - started
        if received < self.size:
            self.error = self.error or f"receiver got {received} of {self.size} bytes (and a head)"
            return
        self.mb_per_s = self.size / elapsed / 1e6


def baseline_speed(port: int, runs: int = 2) -> float:
    """The legitimate transfer's MB/s with no attack running (the best of ``runs``)."""
    return max(Transfer(port).start().wait() for _ in range(runs))


def settled_rss_mib(server: ServerProcess, *, seconds: float = 3.0) -> float:
    """RSS after the server had ``seconds`` to let go of what an attack made it allocate."""
    time.sleep(seconds)
    return rss_mib(server)


def log_tail(server: ServerProcess, lines: int = 20) -> str:
    return "\n".join(Path(server.log_path).read_text(errors="replace").splitlines()[-lines:])
