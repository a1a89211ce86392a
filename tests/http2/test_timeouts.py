"""The header timeout and the keep-alive timeout on HTTP/2 (--header-timeout, --keepalive-timeout).

The preface and the first request, and any header block begun later, must be complete within the header
timeout; a connection with no open stream for the keep-alive timeout gets GOAWAY(NO_ERROR). A running or
waiting transfer is never cut by either. Short values here; every wait bounded.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from ..helpers import ServerProcess, connect, start_server, unique_path
from ._client import H2Client
from ._raw import CONTINUATION, NO_ERROR, drain_until_closed, frame, goaway_codes, headers, open_h2, request_block

TIMEOUT_S = 2.0
#: how long past a timeout the connection may take to be ended (a loaded 2-core machine)
MARGIN_S = 8.0


@pytest.fixture(scope="module")
def header_timeout_server(tls_files: tuple[str, str, str]) -> Iterator[ServerProcess]:
    proc = start_server("--header-timeout", str(TIMEOUT_S), "--keepalive-timeout", "0", https=tls_files)
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture(scope="module")
def keepalive_server(tls_files: tuple[str, str, str]) -> Iterator[ServerProcess]:
    proc = start_server("--header-timeout", "0", "--keepalive-timeout", str(TIMEOUT_S), https=tls_files)
    try:
        yield proc
    finally:
        proc.stop()


def test_tls_h2_connection_that_sends_nothing_is_closed(header_timeout_server: ServerProcess) -> None:
    sock = connect(header_timeout_server.target("h2"), "h2")
    _, closed = drain_until_closed(sock, TIMEOUT_S + MARGIN_S)
    sock.close()
    assert closed


@pytest.mark.parametrize("transport", ["h2c", "h2"])
def test_preface_without_a_request_is_ended(header_timeout_server: ServerProcess, transport: str) -> None:
    sock = open_h2(header_timeout_server.target(transport))
    received, closed = drain_until_closed(sock, TIMEOUT_S + MARGIN_S)
    sock.close()
    assert closed
    assert goaway_codes(received) == [NO_ERROR]


def test_header_block_begun_later_must_end_in_time(header_timeout_server: ServerProcess) -> None:
    """After a first request answered, a header block left open ends the connection (keep-alive: no limit)."""
    target = header_timeout_server.target("h2c")
    sock = open_h2(target)
    sock.sendall(headers(1, request_block("GET", "/version", f"{target.host}:{target.port}")))
    time.sleep(TIMEOUT_S + 1)  # longer than the header timeout: a complete request was in time
    block = request_block("GET", "/version", f"{target.host}:{target.port}")
    sock.sendall(headers(3, block[:2], end_headers=False))
    started = time.monotonic()
    sock.sendall(frame(CONTINUATION, 0, 3, block[2:4]))
    received, closed = drain_until_closed(sock, TIMEOUT_S + MARGIN_S)
    sock.close()
    assert closed
    assert time.monotonic() - started >= TIMEOUT_S * 0.5
    assert NO_ERROR in goaway_codes(received)


def test_idle_connection_gets_goaway_no_error(keepalive_server: ServerProcess) -> None:
    client = H2Client(keepalive_server.target("h2"))
    try:
        stream = client.request("GET", "/version")
        assert client.pump_until(lambda: client.streams[stream].ended)
        assert client.pump_until(lambda: client.terminated is not None or client.closed, TIMEOUT_S + MARGIN_S)
        assert client.terminated is not None and client.terminated.error_code == NO_ERROR
    finally:
        client.close()


@pytest.mark.parametrize("fixture", ["header_timeout_server", "keepalive_server"])
def test_waiting_and_running_transfers_are_never_cut(request: pytest.FixtureRequest, fixture: str) -> None:
    """A sender waiting 3x the timeout for its receiver, then a slow transfer as long: neither is cut."""
    server: ServerProcess = request.getfixturevalue(fixture)
    path = unique_path("patient")
    sender = H2Client(server.target("h2c"))
    receiver: H2Client | None = None
    try:
        up = sender.request("POST", path, end=False)
        sender.send(up, b"first line\n")
        assert sender.pump_until(lambda: False, TIMEOUT_S * 3) is False  # (just waits, pumping)
        assert sender.terminated is None and not sender.closed
        receiver = H2Client(server.target("h2"))  # (opened now: an idle connection would be ended, rightly)
        down = receiver.request("GET", path)
        for i in range(3):
            time.sleep(TIMEOUT_S)
            sender.send(up, b"line %d\n" % i)
            receiver.pump(0.2)
        sender.send(up, b"last\n", end=True)
        assert receiver.pump_until(lambda: receiver.streams[down].ended)
        assert bytes(receiver.streams[down].data) == b"first line\nline 0\nline 1\nline 2\nlast\n"
        assert sender.terminated is None and receiver.terminated is None
    finally:
        sender.close()
        if receiver is not None:
            receiver.close()
