"""Uploads parked in the server: senders on one HTTP/2 connection whose receivers (on another) never read.

Before: each stream's window was 8 MiB and the connection's 2^31-1, so 256 such pairs on 2 connections grew
the server by 1.04 GB. Now what a connection's uploads may be granted beyond the 64 KiB waiting window comes
from a per-connection budget, and a connection's stuck receivers pause their senders early once it queues a
lot. One stalled stream never blocks the others of its connection.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time

from ..helpers import ServerProcess, recv_all, unique_path
from ..http2._client import H2Client
from ..http2._raw import PeakRss
from ._attack import MIB, log_tail, probe, settled_rss_mib

PAIRS = 255  # (with the one live pair below: 256 streams, the most one connection may have open)
#: the senders' own bounds
MAX_SECONDS = 20.0
MAX_BYTES = 1536 * MIB
LIVE_BYTES = 8 * MIB  # (recv_all reads 16 MiB at most)


def push_while_windows_open(client: H2Client, streams: list[int], *, quiet_s: float = 2.0) -> int:
    """Send on every stream as far as its windows let, until none has opened for ``quiet_s`` (or the bounds)."""
    chunk = b"\x5a" * 65536
    sent = 0
    started = last_progress = time.monotonic()
    while time.monotonic() - last_progress < quiet_s and time.monotonic() - started < MAX_SECONDS:
        progressed = False
        for stream_id in streams:
            window = min(client.conn.local_flow_control_window(stream_id), client.conn.max_outbound_frame_size)
            if window > 0 and sent < MAX_BYTES:
                client.conn.send_data(stream_id, chunk[:window])
                sent += window
                progressed = True
        client.sock.settimeout(10.0)  # (pump leaves its own short timeout on the socket)
        client.flush()
        client.pump(0.01)
        if progressed:
            last_progress = time.monotonic()
    return sent


def live_transfer(server: ServerProcess, sender: H2Client, path: str, body: bytes, result: list[bool]) -> None:
    """A receiver that reads (plain HTTP/1.1) for a sender stream on the connection full of parked streams."""
    import socket

    with socket.create_connection(("127.0.0.1", server.http_port), timeout=60) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        raw = recv_all(sock, timeout=60)
    result.append(raw.endswith(body) and raw.startswith(b"HTTP/1.1 200"))


def test_parked_uploads_are_bounded_and_do_not_block_their_connection(h2server: ServerProcess) -> None:
    before = settled_rss_mib(h2server, seconds=1.0)
    target = h2server.target("h2c")
    receivers = H2Client(target)  # asks, then never reads the socket again
    senders = H2Client(target)
    paths = [unique_path("parked") for _ in range(PAIRS)]
    try:
        with PeakRss(h2server) as rss:
            for path in paths:
                receivers.request("GET", path)
            streams = [senders.request("POST", path, end=False) for path in paths]
            parked = push_while_windows_open(senders, streams)
            # the connection's last stream: a transfer to a receiver that reads must get through
            body = os.urandom(LIVE_BYTES)
            live_path = unique_path("live")
            live_stream = senders.request(
                "POST", live_path, headers=[(b"content-length", str(len(body)).encode())], end=False
            )
            result: list[bool] = []
            reader = threading.Thread(target=live_transfer, args=(h2server, senders, live_path, body, result))
            reader.start()
            senders.sock.settimeout(10.0)
            senders.send(live_stream, body, end=True)
            reader.join(60)
        assert result == [True], f"no live transfer beside {PAIRS} parked streams\n{log_tail(h2server)}"
        assert rss.peak_mib - before <= 128, (rss.peak_mib, before, parked)
        assert probe(h2server.http_port)
        print(
            f"{PAIRS} parked pairs: {parked / MIB:.0f} MiB taken, RSS {before:.1f} -> peak {rss.peak_mib:.1f} MiB; "
            f"{LIVE_BYTES // MIB} MiB beside them: ok, sha {hashlib.sha256(body).hexdigest()[:8]}"
        )
    finally:
        senders.close()
        receivers.close()
