"""Header blocks that never end (the CVE-2024-27316 class): HEADERS without END_HEADERS, then CONTINUATION.

Before: h2 held each block whole until its end (4.9-5.4 MiB per connection; 40 connections: +196 MB), with
no time limit. Now a block's bytes are counted as they come: past the advertised SETTINGS_MAX_HEADER_LIST_SIZE
the connection is ended (GOAWAY), and a block that does not end within the header timeout ends it too.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import pytest

from ..helpers import ServerProcess, start_server
from ..http2._raw import (
    CONTINUATION,
    ENHANCE_YOUR_CALM,
    NO_ERROR,
    PeakRss,
    drain_until_closed,
    frame,
    goaway_codes,
    headers,
    open_h2,
    request_block,
)
from ._attack import log_tail, probe, settled_rss_mib

CONNECTIONS = 40
#: 63 frames of 64 KiB (the frame size the server advertises): ~4 MiB, one frame short of h2's own limit
FRAMES = 63
FRAME = 64 * 1024
HEADER_TIMEOUT_S = 4


@pytest.fixture(scope="module")
def h2server() -> Iterator[ServerProcess]:
    proc = start_server("--header-timeout", str(HEADER_TIMEOUT_S))
    try:
        yield proc
    finally:
        proc.stop()


def hold_block(server: ServerProcess, fragment_bytes: int) -> socket.socket:
    """A connection with a header block begun and ``fragment_bytes`` of CONTINUATION sent after it."""
    target = server.target("h2c")
    sock = open_h2(target)
    block = request_block("GET", "/continuation", f"{target.host}:{target.port}")
    try:
        sock.sendall(headers(1, block, end_stream=True, end_headers=False))
        payload = b"\x00" * FRAME
        for _ in range(fragment_bytes // FRAME):
            sock.sendall(frame(CONTINUATION, 0, 1, payload))
    except OSError:
        pass  # the server has ended it already
    return sock


def test_endless_header_blocks_are_refused_and_bounded(h2server: ServerProcess) -> None:
    before = settled_rss_mib(h2server, seconds=1.0)
    with PeakRss(h2server) as rss:
        socks = [hold_block(h2server, FRAMES * FRAME) for _ in range(CONNECTIONS)]
        time.sleep(0.5)
    try:
        for sock in socks:
            received, closed = drain_until_closed(sock, 15.0)
            assert closed, log_tail(h2server)
            assert ENHANCE_YOUR_CALM in goaway_codes(received)
    finally:
        for sock in socks:
            sock.close()
    assert rss.peak_mib - before <= 32, (rss.peak_mib, before)
    assert probe(h2server.http_port)
    print(f"{CONNECTIONS} x 4 MiB of CONTINUATION: RSS {before:.1f} -> peak {rss.peak_mib:.1f} MiB")


def test_a_header_block_that_does_not_end_in_time_ends_the_connection(h2server: ServerProcess) -> None:
    """A small block, within the size limit, never finished: the header timeout ends it."""
    sock = hold_block(h2server, 0)  # HEADERS only
    sock.sendall(frame(CONTINUATION, 0, 1, b"\x00" * 1000))
    received, closed = drain_until_closed(sock, HEADER_TIMEOUT_S + 10)
    sock.close()
    assert closed, log_tail(h2server)
    assert NO_ERROR in goaway_codes(received)
