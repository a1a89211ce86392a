"""Limits and timeouts against the real server process: each hit gets a clear error, the rest flows on."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import pytest

from ..helpers import recv_all, unique_path
from .util import Receiver, Sender, metrics, request, server_with

pytestmark = pytest.mark.ours

WAIT_TIMEOUT_LINE = b"[ERROR] Timed out: the transfer did not start within 0.5 second(s).\n"


def test_waiting_receiver_times_out(tmp_path: Path) -> None:
    with server_with("--wait-timeout", "0.5", tmp=tmp_path) as (server, _):
        started = time.monotonic()
        status, headers, body = request(server.http_port, "GET", unique_path(), timeout=10)
        assert 0.4 < time.monotonic() - started < 5
        assert status == 504 and body == WAIT_TIMEOUT_LINE
        assert headers["content-type"] == ["text/plain"]


def test_waiting_sender_times_out_and_path_is_free_again(tmp_path: Path) -> None:
    with server_with("--wait-timeout", "0.5", tmp=tmp_path) as (server, _):
        path = unique_path()
        sender = Sender(server.http_port, path)
        sender.send(b"never delivered")
        got = sender.read_until(WAIT_TIMEOUT_LINE, timeout=10)
        assert got.startswith(b"HTTP/1.1 200 OK") and WAIT_TIMEOUT_LINE in got
        sender.close()
        # the path is free: a new sender and a receiver meet there
        sender = Sender(server.http_port, path)
        receiver = Receiver(server.http_port, path)
        sender.send(b"second")
        sender.end()
        receiver.read_to_close(timeout=10)
        assert receiver.body() == (b"second", True)
        sender.close()


def test_matched_peers_never_time_out(tmp_path: Path) -> None:
    with server_with("--wait-timeout", "0.3", tmp=tmp_path) as (server, _):
        path = unique_path()
        sender = Sender(server.http_port, path)
        receiver = Receiver(server.http_port, path)
        sender.send(b"a")
        time.sleep(1.0)  # longer than the waiting timeout: a running transfer is not waiting
        sender.send(b"b")
        sender.end()
        receiver.read_to_close(timeout=10)
        assert receiver.body() == (b"ab", True)


def test_idle_transfer_is_cut(tmp_path: Path) -> None:
    with server_with("--idle-timeout", "0.6", tmp=tmp_path) as (server, _):
        path = unique_path()
        sender = Sender(server.http_port, path)
        receiver = Receiver(server.http_port, path)
        sender.send(b"first bytes")
        receiver.read_until(b"first bytes")
        started = time.monotonic()
        receiver.read_to_close(timeout=10)
        assert 0.5 < time.monotonic() - started < 5
        body, complete = receiver.body()
        assert body == b"first bytes" and not complete  # a cut stream, not a clean end
        assert b"[ERROR] Timed out: no data moved for 0.6 second(s).\n" in sender.read_until(b"second(s).\n")
        sender.close()


def test_slow_but_moving_transfer_is_not_idle(tmp_path: Path) -> None:
    with server_with("--idle-timeout", "0.8", tmp=tmp_path) as (server, _):
        path = unique_path()
        sender = Sender(server.http_port, path)
        receiver = Receiver(server.http_port, path)
        for i in range(6):  # 1.8 s in all, never 0.8 s without a byte
            sender.send(b"%d" % i)
            time.sleep(0.3)
        sender.end()
        receiver.read_to_close(timeout=10)
        assert receiver.body() == (b"012345", True)


def test_connection_limit_while_other_transfers_flow(tmp_path: Path) -> None:
    with server_with("--max-connections", "3", tmp=tmp_path) as (server, _):
        port = server.http_port
        path = unique_path()
        sender = Sender(port, path)
        receiver = Receiver(port, path)
        sender.send(b"x" * 1000)
        receiver.read_until(b"x" * 1000)
        third = Sender(port, unique_path())  # the third connection: still allowed
        third.read_until(b"receiver(s)...\n")
        # the fourth is refused with a clear error...
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(b"GET /other HTTP/1.1\r\nHost: x\r\n\r\n")
            refused = recv_all(sock, timeout=10)
        assert refused.startswith(b"HTTP/1.1 503 ")
        assert refused.endswith(b"[ERROR] Too many connections to this server; try again later.\n")
        assert b"Connection: close" in refused and b"Retry-After: 5" in refused
        # ...while the running transfer goes on untouched
        data = os.urandom(200_000)
        sender.send(data)
        sender.end()
        receiver.read_to_close(timeout=10)
        assert receiver.body() == (b"x" * 1000 + data, True)
        third.close()
        # connections closed free their slots
        deadline = time.monotonic() + 10
        while request(port, "GET", "/version")[0] != 200 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert request(port, "GET", "/version")[0] == 200


def test_waiting_limits(tmp_path: Path) -> None:
    with server_with("--max-waiting-per-client", "2", "--max-waiting", "3", tmp=tmp_path) as (server, _):
        port = server.http_port
        path_a, path_b = unique_path(), unique_path()
        first, second = Sender(port, path_a), Receiver(port, path_b)
        first.read_until(b"receiver(s)...\n")
        time.sleep(0.2)
        status, headers, body = request(port, "GET", unique_path())
        assert status == 429 and body == b"[ERROR] Too many senders and receivers are waiting from your address.\n"
        assert headers["retry-after"] == ["5"]
        # a peer that joins a waiting rendezvous is still let in, and its transfer runs
        joined = Receiver(port, path_a)
        first.send(b"joined")
        first.end()
        joined.read_to_close(timeout=10)
        assert joined.body() == (b"joined", True)
        first.close()
        second.close()


def test_max_n(tmp_path: Path) -> None:
    with server_with("--max-n", "2", tmp=tmp_path) as (server, _):
        status, _, body = request(server.http_port, "POST", unique_path() + "?n=3", body=b"x")
        assert status == 400 and body == b"[ERROR] n should be at most 2, but n = 3.\n"
        sender = Sender(server.http_port, unique_path() + "?n=2")
        assert b"Waiting for 2 receiver(s)" in sender.read_until(b"receiver(s)...\n")
        sender.close()


def test_max_header_bytes(tmp_path: Path) -> None:
    with server_with("--max-header-bytes", "1024", tmp=tmp_path) as (server, _):
        status, _, body = request(server.http_port, "GET", "/version", headers={"X-Big": "a" * 2000})
        assert status == 431 and body == b"[ERROR] Request header fields too large.\n"
        assert request(server.http_port, "GET", "/version", headers={"X-Small": "a" * 500})[0] == 200


def test_idle_live_transfer_is_cut_but_not_while_nobody_listens(tmp_path: Path) -> None:
    """docs/protocol.md section 11: the operator's limits cover live transfers too."""
    with server_with("--idle-timeout", "0.6", tmp=tmp_path, metrics_port=True) as (server, mport):
        path = unique_path()
        sender = Sender(server.http_port, path + "?live")
        sender.read_until(b"[INFO] Live: receivers may join and leave at any time.\n")
        time.sleep(1.5)  # nobody listens: the upload is paused by design, not idle
        receiver = Receiver(server.http_port, path)
        sender.read_until(b"[INFO] A receiver joined (1 now).\n")
        sender.send(b"on air")
        receiver.read_until(b"on air")
        started = time.monotonic()
        receiver.read_to_close(timeout=10)  # then the sender stalls: cut after the idle timeout
        assert 0.5 < time.monotonic() - started < 5
        body, complete = receiver.body()
        assert body == b"on air" and not complete
        assert b"[ERROR] Timed out: no data moved for 0.6 second(s).\n" in sender.read_until(b"second(s).\n")
        sender.close()
        assert metrics(mport)["piping_relayed_bytes_total"] == len(b"on air")  # live bytes are counted
        again = Sender(server.http_port, path + "?live")  # the path is free again
        again.read_until(b"[INFO] Live: receivers may join and leave at any time.\n")
        again.close()
