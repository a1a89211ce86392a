"""Control-frame floods from a client that never reads (RFC 9113 section 10.5), and the responses it asks for
and never takes.

Before: ~1 M PINGs grew the server by 29 MB and on (every ACK queued), and 256 x GET / on one connection that
never reads held 37.5 MB. Now reading stops while the client does not take what is written, a flood ends the
connection (GOAWAY ENHANCE_YOUR_CALM), and new streams are refused while unread responses pile up.
"""

from __future__ import annotations

import socket
import time

import pytest

from ..helpers import ServerProcess
from ..http2._client import H2Client, StreamState
from ..http2._raw import (
    ENHANCE_YOUR_CALM,
    SETTINGS,
    PeakRss,
    drain_until_closed,
    frame,
    goaway_codes,
    headers,
    open_h2,
    ping,
    request_block,
)
from ._attack import log_tail, probe, settled_rss_mib

#: the flood's own bounds
MAX_FRAMES = 1_000_000
MAX_SECONDS = 20.0
BATCH = 4096


def flood(sock: socket.socket, make: object) -> int:
    """Send frames built by ``make(i)`` without reading, until the server stops taking them or the bounds."""
    sent = 0
    started = time.monotonic()
    sock.settimeout(3.0)  # a send that waits this long: the server has stopped reading
    while sent < MAX_FRAMES and time.monotonic() - started < MAX_SECONDS:
        batch = b"".join(make(sent + i) for i in range(BATCH))  # type: ignore[operator]
        try:
            sock.sendall(batch)
        except OSError:
            break
        sent += BATCH
    return sent


@pytest.mark.parametrize("kind", ["PING", "SETTINGS"])
@pytest.mark.parametrize("transport", ["h2c", "h2"])
def test_control_frame_flood_ends_the_connection(h2server: ServerProcess, kind: str, transport: str) -> None:
    before = settled_rss_mib(h2server, seconds=1.0)
    sock = open_h2(h2server.target(transport))
    make = ping if kind == "PING" else (lambda _i: frame(SETTINGS, 0, 0))
    with PeakRss(h2server) as rss:
        sent = flood(sock, make)
        # now read: the ACKs the kernel holds, then (after the fix) a GOAWAY and the end of the connection
        received, closed = drain_until_closed(sock, 15.0)
    sock.close()
    assert closed, f"still open after {sent} {kind} frames\n{log_tail(h2server)}"
    assert ENHANCE_YOUR_CALM in goaway_codes(received)
    assert rss.peak_mib - before <= 32, (rss.peak_mib, before)
    assert probe(h2server.http_port)
    print(f"{kind} flood over {transport}: {sent} frames sent, RSS {before:.1f} -> peak {rss.peak_mib:.1f} MiB")


def test_pages_asked_for_and_never_read_are_bounded(h2server: ServerProcess) -> None:
    """256 x GET / (each a page of ~150 KB made for it) on one connection that never reads."""
    before = settled_rss_mib(h2server, seconds=1.0)
    target = h2server.target("h2c")
    sock = open_h2(target)
    block = request_block("GET", "/", f"{target.host}:{target.port}")
    with PeakRss(h2server) as rss:
        sock.sendall(b"".join(headers(sid, block) for sid in range(1, 512, 2)))
        time.sleep(3.0)
    assert rss.peak_mib - before <= 16, (rss.peak_mib, before)
    assert probe(h2server.http_port)
    sock.close()
    print(f"256 x GET / unread: RSS {before:.1f} -> peak {rss.peak_mib:.1f} MiB")


def test_a_client_prioritising_every_request_is_not_hit(h2server: ServerProcess) -> None:
    """Browsers send a priority with every HEADERS: 1,200 such requests in 3 s stay clear of the control budget."""
    client = H2Client(h2server.target("h2"))
    try:
        for _ in range(12):
            streams = []
            for _ in range(100):
                stream_id = client.conn.get_next_available_stream_id()
                client.conn.send_headers(
                    stream_id,
                    [
                        (b":method", b"GET"),
                        (b":path", b"/version"),
                        (b":scheme", client.scheme),
                        (b":authority", client.authority),
                    ],
                    end_stream=True,
                    priority_weight=220,
                    priority_depends_on=0,
                )
                client.streams[stream_id] = StreamState()
                streams.append(stream_id)
            client.flush()
            assert client.pump_until(lambda streams=streams: all(client.streams[s].ended for s in streams))
        assert client.terminated is None and not client.closed
    finally:
        client.close()
