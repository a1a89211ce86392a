"""--max-connections cannot lock the server out: connections with no request in progress make room.

Idle connections (silent ones, kept-alive ones after their request, HTTP/2 ones with no open stream)
hold a slot and nothing else; when the limit is reached the oldest of them is closed for the newcomer.
Only a server full of busy connections (waiting senders, running transfers) refuses, with 503 as
before. Loopback only; every loop is bounded in count and time.
"""

from __future__ import annotations

import select
import socket
import time
from pathlib import Path

import pytest

from ..helpers import WAIT_S, connect, recv_until, start_server, unique_path, wait_until
from ..http2._client import H2Client
from ..ops.util import Sender, metrics, parse_response, request, server_with
from ._attack import probe, rss_mib

pytestmark = pytest.mark.ours

FULL_MESSAGE = b"[ERROR] Too many connections to this server; try again later.\n"


def _connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=WAIT_S)


def _kept_alive(port: int) -> socket.socket:
    """A connection that made one request (answered) and stays open, idle."""
    sock = _connect(port)
    sock.sendall(b"GET /version HTTP/1.1\r\nHost: x\r\n\r\n")
    assert recv_until(sock, b"\r\n\r\n", timeout=10).startswith(b"HTTP/1.1 200")
    return sock


def _closed_by_server(socks: list[socket.socket], timeout: float = 5.0) -> list[socket.socket]:
    """The sockets the server closed (what they still had to read is read and dropped), within ``timeout``."""
    closed: list[socket.socket] = []
    deadline = time.monotonic() + timeout
    open_ = list(socks)
    while open_ and time.monotonic() < deadline:
        readable, _, _ = select.select(open_, [], [], max(0.0, min(0.5, deadline - time.monotonic())))
        if not readable:
            break
        for sock in readable:
            try:
                data = sock.recv(65536)
            except OSError:
                data = b""
            if not data:
                closed.append(sock)
                open_.remove(sock)
    return closed


def _open_connections(mport: int) -> float:
    return metrics(mport)["piping_open_connections"]


def test_silent_connections_make_room_for_a_real_transfer(tmp_path: Path) -> None:
    with server_with("--max-connections", "50", tmp=tmp_path, metrics_port=True) as (server, mport):
        port = server.http_port
        silent = [_connect(port) for _ in range(50)]
        try:
            assert wait_until(lambda: _open_connections(mport) == 50, timeout=10)
            started = time.monotonic()
            assert probe(port, timeout=10), "a sender and a receiver could not meet beside 50 silent connections"
            assert time.monotonic() - started < 10
            samples = metrics(mport)
            assert samples["piping_connections_reclaimed_total"] >= 2
            assert samples["piping_open_connections"] <= 50
            # the oldest silent connections were the ones closed
            closed = _closed_by_server(silent)
            assert len(closed) >= 2 and closed[0] in silent[:4]
        finally:
            for sock in silent:
                sock.close()


def test_kept_alive_connections_after_a_request_each_do_not_lock_the_server(tmp_path: Path) -> None:
    with server_with("--max-connections", "5", tmp=tmp_path) as (server, _):
        port = server.http_port
        kept = [_kept_alive(port) for _ in range(5)]
        try:
            for _ in range(3):
                status, _, body = request(port, "GET", "/version", timeout=10)
                assert status == 200, body
            assert probe(port, timeout=10)
            assert len(_closed_by_server(kept)) >= 2  # one for the first request, one for the probe's second
        finally:
            for sock in kept:
                sock.close()


def test_a_server_full_of_busy_connections_still_refuses(tmp_path: Path) -> None:
    with server_with("--max-connections", "3", tmp=tmp_path, metrics_port=True) as (server, mport):
        port = server.http_port
        idle = _kept_alive(port)
        senders = [Sender(port, unique_path()) for _ in range(3)]  # the third closes the idle connection
        try:
            for sender in senders:
                sender.send(b"waiting")
                assert b"[INFO] Waiting for 1 receiver(s)..." in sender.read_until(b"receiver(s)...", timeout=10)
            assert _closed_by_server([idle]) == [idle]
            status, headers, body = request(port, "GET", "/version", timeout=10)
            assert (status, body) == (503, FULL_MESSAGE)
            assert headers["retry-after"] == ["5"]
            assert metrics(mport)['piping_rejections_total{reason="connections"}'] >= 1
            for sender in senders:
                assert not _closed_by_server([sender.sock], timeout=0.2)  # busy: never closed to make room
        finally:
            idle.close()
            for sender in senders:
                sender.close()
        assert wait_until(lambda: request(port, "GET", "/version", timeout=10)[0] == 200, timeout=10)


def test_a_client_partway_through_its_head_is_told_why(tmp_path: Path) -> None:
    with server_with("--max-connections", "1", tmp=tmp_path, metrics_port=True) as (server, mport):
        port = server.http_port
        with _connect(port) as slow:
            slow.sendall(b"GET /version HTTP/1.1\r\nHost: x\r\nX-Slow")
            assert wait_until(lambda: _open_connections(mport) == 1, timeout=10)
            time.sleep(0.2)  # the partial head has been read
            assert request(port, "GET", "/version", timeout=10)[0] == 200
            status, headers, body = parse_response(recv_until(slow, None, timeout=10))
            assert (status, body) == (503, FULL_MESSAGE)


def test_idle_h2c_connections_get_goaway_and_make_room(tmp_path: Path) -> None:
    with server_with("--max-connections", "3", tmp=tmp_path) as (server, _):
        target = server.target("h2c")
        busy = H2Client(target)
        stream = busy.request("GET", unique_path())  # a waiting receiver: an open stream
        idle = [H2Client(target) for _ in range(2)]
        newcomers: list[socket.socket] = []
        try:
            for client in (busy, *idle):
                client.pump(0.2)  # the server's SETTINGS
            newcomers = [_kept_alive(server.http_port) for _ in range(2)]  # served: the idle ones made room
            for client in idle:
                assert client.pump_until(lambda c=client: c.terminated is not None or c.closed, timeout=10)
                assert client.terminated is not None and client.terminated.error_code == 0  # GOAWAY, NO_ERROR
            # the connection with an open stream was never chosen
            busy.pump(0.2)
            assert busy.terminated is None and not busy.closed and not busy.streams[stream].ended
        finally:
            for client in (busy, *idle):
                client.close()
            for sock in newcomers:
                sock.close()


def test_per_client_limit_closes_that_clients_idle_connections(tmp_path: Path) -> None:
    # (loopback is a trusted proxy by default, exempt from the per-client count: not here)
    with server_with("--max-connections-per-client", "2", "--forwarded-allow-ips", "", tmp=tmp_path) as (server, _):
        port = server.http_port
        kept = [_kept_alive(port) for _ in range(2)]
        try:
            assert probe(port, timeout=10)  # two more connections from the same address
            assert len(_closed_by_server(kept)) == 2
        finally:
            for sock in kept:
                sock.close()


def test_memory_a_burst_made_the_server_allocate_goes_back(tmp_path: Path) -> None:
    """2,000 waiting senders holding 64 KiB each, then gone: the RSS comes back within 64 MiB of before."""
    with server_with(tmp=tmp_path) as (server, _):
        port = server.http_port
        time.sleep(0.5)
        before = rss_mib(server)
        body = b"\xcd" * (64 * 1024)
        burst: list[socket.socket] = []
        try:
            for _ in range(2000):
                sock = _connect(port)
                burst.append(sock)
                sock.sendall(
                    f"POST {unique_path('burst')} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n\r\n".encode()
                    + body
                )
            assert wait_until(lambda: rss_mib(server) > before + 64, timeout=20)  # the burst did cost memory
        finally:
            for sock in burst:
                sock.close()
        # (the heap is looked at every 2 s; a full collection may wait up to 20 s after one that found nothing)
        assert wait_until(lambda: rss_mib(server) < before + 64, timeout=60, interval=0.5), (
            f"RSS {rss_mib(server):.0f} MiB, {before:.0f} MiB before the burst"
        )
        assert probe(port, timeout=10)


def test_idle_tls_connections_make_room_too(tls_files: tuple[str, str, str]) -> None:
    server = start_server("--max-connections", "2", https=tls_files)
    try:
        h2_idle = H2Client(server.target("h2"))
        h2_idle.pump(0.2)
        h1_idle = connect(server.target("h1-tls"), "http/1.1")
        h1_idle.sendall(b"GET /version HTTP/1.1\r\nHost: x\r\n\r\n")
        assert recv_until(h1_idle, b"\r\n\r\n", timeout=10).startswith(b"HTTP/1.1 200")
        try:
            newcomers = [_kept_alive(server.http_port) for _ in range(2)]  # each closes one of the idle TLS ones
            assert h2_idle.pump_until(lambda: h2_idle.terminated is not None or h2_idle.closed, timeout=10)
            assert h2_idle.terminated is not None and h2_idle.terminated.error_code == 0
            recv_until(h1_idle, None, timeout=10)  # the rest of the first response, then the end
            h1_idle.settimeout(10)
            assert h1_idle.recv(1) == b""  # closed (a TLS close_notify, or the TCP end)
            for sock in newcomers:
                sock.close()
        finally:
            h2_idle.close()
            h1_idle.close()
    finally:
        server.stop()
