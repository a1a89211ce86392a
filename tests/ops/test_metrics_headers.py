"""The metrics listener (a server's own, and the --workers supervisor's) writes its head as the main port does:
conventional header capitalization and a Date, read off a raw socket."""

from __future__ import annotations

import socket
from email.utils import parsedate_to_datetime
from pathlib import Path

import pytest

from ..helpers import WAIT_S, free_port, recv_all, start_server, wait_for_port, wait_until
from .util import server_with

pytestmark = pytest.mark.ours

EXPECTED_NAMES = ["Content-Type", "Content-Length", "Cache-Control", "Connection", "Date"]


def _raw(port: int, method: str, path: str) -> tuple[str, list[str], bytes]:
    """(status line, header names as written, body) of one request on its own connection."""
    with socket.create_connection(("127.0.0.1", port), timeout=WAIT_S) as sock:
        sock.sendall(f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
        raw = recv_all(sock)
    head, _, body = raw.partition(b"\r\n\r\n")
    status, *lines = head.decode("latin-1").split("\r\n")
    names = [line.partition(":")[0] for line in lines]
    date = next(line.partition(":")[2].strip() for line in lines if line.startswith("Date:"))
    assert parsedate_to_datetime(date).tzinfo is not None, date  # an HTTP date, in GMT
    return status, names, body


def _check(port: int) -> None:
    for method, path, status in [
        ("GET", "/metrics", "200"),
        ("GET", "/healthz", "200"),
        ("HEAD", "/healthz", "200"),
        ("GET", "/nope", "404"),
        ("POST", "/metrics", "405"),
    ]:
        line, names, body = _raw(port, method, path)
        assert line.split(" ")[1] == status, (method, path, line)
        assert sorted(names) == sorted(EXPECTED_NAMES), (method, path, names)
        if method == "HEAD":
            assert body == b""


def test_server_metrics_listener_writes_conventional_names_and_a_date(tmp_path: Path) -> None:
    with server_with(tmp=tmp_path, metrics_port=True) as (_, mport):
        _check(mport)


def test_workers_metrics_listener_writes_conventional_names_and_a_date(tmp_path: Path) -> None:
    metrics_port = free_port()
    server = start_server("--workers", "2", "--metrics-port", str(metrics_port), log_dir=tmp_path)
    try:
        wait_for_port(metrics_port, server.proc)
        # /healthz is 503 until both workers are up
        assert wait_until(lambda: _raw(metrics_port, "GET", "/healthz")[0].split(" ")[1] == "200", timeout=WAIT_S)
        _check(metrics_port)
    finally:
        server.stop()
