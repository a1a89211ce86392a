"""HTTP/2 behaviour that curl cannot show: streams of one connection, windows, resets, bad frames.

Every test runs over h2c (prior knowledge on the HTTP port) and h2 (TLS, ALPN), with the raw client
of ``_client.py`` on one side and curl on the other.
"""

from __future__ import annotations

import hashlib
import os
import socket
import ssl
import subprocess
import threading
import time
from pathlib import Path

import h2.errors
import pytest

from ..helpers import WAIT_S, ServerProcess, Target, connect, unique_path, wait_until
from ._client import H2Client
from ._raw import DATA, END_STREAM, GOAWAY, drain_until_closed, frames_of, open_h2, request_block, rst
from ._raw import headers as raw_headers

H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


def _h1(server: ServerProcess | None) -> Target:
    assert server is not None
    return server.target("h1")


def test_slow_stream_never_stalls_its_neighbour(h2target: Target, server: ServerProcess, tmp_path: Path) -> None:
    """Two receiver streams on one connection: one is never read, the other still flows to its end."""
    slow_path, fast_path = unique_path("slow"), unique_path("fast")
    client = H2Client(h2target, auto_ack=False)
    try:
        slow = client.request("GET", slow_path)
        fast = client.request("GET", fast_path)
        time.sleep(0.3)
        payload = os.urandom(16 * 1024 * 1024)
        big = tmp_path / "big"
        big.write_bytes(payload)
        slow_file = tmp_path / "slow"
        slow_file.write_bytes(b"s" * (64 * 1024 * 1024))
        h1 = _h1(server)
        rss_before = server.rss_kib()
        send_slow = h1.popen_curl("-T", str(slow_file), h1.url(slow_path))
        send_fast = h1.popen_curl("-T", str(big), h1.url(fast_path))

        def fast_done() -> bool:
            client.ack(fast)  # only the fast stream's window is ever given back
            return client.streams[fast].ended

        assert client.pump_until(fast_done, timeout=60)
        assert hashlib.sha256(client.streams[fast].data).digest() == hashlib.sha256(payload).digest()
        assert send_fast.wait(WAIT_S) == 0
        # the slow stream got no more than its window, and its sender is held back, not buffered
        assert len(client.streams[slow].data) <= 65_535
        time.sleep(0.5)
        assert send_slow.poll() is None
        assert server.rss_kib() - rss_before < 48 * 1024
    finally:
        client.close()
    assert send_slow.wait(WAIT_S) is not None


@pytest.mark.parametrize("receiver_transport", ["h1", "h2c", "h2"])
def test_reset_sender_cuts_its_receivers(
    h2target: Target, server: ServerProcess, receiver_transport: str, tmp_path: Path
) -> None:
    """A sender stream reset mid-transfer: the receiver sees a cut stream, never a complete one."""
    path = unique_path("cut")
    receiver = server.target(receiver_transport)
    recv = receiver.popen_curl("-o", str(tmp_path / "got"), receiver.url(path))
    time.sleep(0.3)
    client = H2Client(h2target)
    try:
        sid = client.request("POST", path, end=False)
        client.send(sid, b"x" * 100_000)
        got = tmp_path / "got"
        assert wait_until(lambda: got.exists() and got.stat().st_size >= 60_000)  # curl -o buffers a little
        client.reset(sid)
        code = recv.wait(WAIT_S)
    finally:
        client.close()
    assert code != 0, "a cut stream must not look complete"


def test_reset_receiver_loses_that_stream_only(h2target: Target, server: ServerProcess) -> None:
    """Two receivers of one transfer on one connection; one stream is reset, the other gets everything."""
    path = unique_path("two") + "?n=2"
    client = H2Client(h2target)
    h1 = _h1(server)
    try:
        first = client.request("GET", path)
        second = client.request("GET", path)
        time.sleep(0.3)
        send = h1.popen_curl("-T", "-", h1.url(path), stdin=subprocess.PIPE)
        assert send.stdin is not None
        send.stdin.write(b"a" * 10_000)
        send.stdin.flush()
        assert client.pump_until(lambda: len(client.streams[first].data) >= 10_000)
        client.reset(first)
        time.sleep(0.3)
        send.stdin.write(b"b" * 10_000)
        send.stdin.close()
        assert client.pump_until(lambda: client.streams[second].ended)
        assert client.streams[second].data == b"a" * 10_000 + b"b" * 10_000
        assert send.stdout is not None
        out = send.stdout.read()
        assert send.wait(WAIT_S) == 0
    finally:
        client.close()
    text = out.decode()
    assert "[INFO] A receiver aborted.\n" in text
    assert text.endswith("[INFO] All receiver(s) was/were received successfully.\n")


def test_byte_by_byte_between_streams_of_one_connection(h2target: Target) -> None:
    """Sender and receiver on the same connection; each byte arrives before the next is sent."""
    path = unique_path("bytes")
    client = H2Client(h2target)
    try:
        recv = client.request("GET", path)
        send = client.request("POST", path, end=False)
        for i in range(20):
            byte = bytes([65 + i])
            client.send(send, byte)
            assert client.pump_until(lambda n=i: len(client.streams[recv].data) == n + 1, timeout=5)
        client.send(send, b"", end=True)
        assert client.pump_until(lambda: client.streams[recv].ended and client.streams[send].ended)
        assert bytes(client.streams[recv].data) == bytes(range(65, 85))
        assert client.streams[send].data.decode().endswith("[INFO] All receiver(s) was/were received successfully.\n")
    finally:
        client.close()


def test_large_windows(h2target: Target) -> None:
    """The server's settings and connection window leave room for a fast upload (frames of 64 KiB: larger
    ones measured slower, see MAX_INBOUND_FRAME)."""
    client = H2Client(h2target)
    try:
        client.pump_until(lambda: client.conn.remote_settings.max_frame_size > 16_384, timeout=5)
        assert client.conn.remote_settings.max_frame_size >= 64 * 1024
        assert client.conn.outbound_flow_control_window >= 1 << 30
    finally:
        client.close()


def _read_goaway(sock: socket.socket) -> int | None:
    """The error code of the GOAWAY the server sends (None if it closes without one)."""
    data = b""
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(65536)
        except (TimeoutError, OSError):
            break
        if not chunk:
            break
        data += chunk
    pos = 0
    while pos + 9 <= len(data):
        length = int.from_bytes(data[pos : pos + 3], "big")
        kind = data[pos + 3]
        if kind == 0x7:  # GOAWAY: last stream id (4), error code (4)
            return int.from_bytes(data[pos + 13 : pos + 17], "big")
        pos += 9 + length
    return None


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        # DATA on stream 0 (RFC 9113 6.1: connection error PROTOCOL_ERROR)
        (b"\x00\x00\x04\x00\x00\x00\x00\x00\x00abcd", h2.errors.ErrorCodes.PROTOCOL_ERROR),
        # HEADERS whose HPACK block is garbage (h2 answers PROTOCOL_ERROR)
        (b"\x00\x00\x04\x01\x05\x00\x00\x00\x01\xff\xff\xff\xff", h2.errors.ErrorCodes.PROTOCOL_ERROR),
        # a SETTINGS frame of the wrong size (FRAME_SIZE_ERROR)
        (b"\x00\x00\x05\x04\x00\x00\x00\x00\x00\x00\x01\x00\x00\x00", h2.errors.ErrorCodes.FRAME_SIZE_ERROR),
    ],
)
def test_bad_frame_gets_goaway_not_a_traceback(
    h2target: Target, server: ServerProcess, frame: bytes, code: int
) -> None:
    sock = connect(h2target, "h2")
    try:
        sock.sendall(H2_PREFACE + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00" + frame)
        assert _read_goaway(sock) == code
    finally:
        sock.close()
    # and the server goes on serving
    client = H2Client(h2target)
    try:
        sid = client.request("GET", "/version")
        assert client.pump_until(lambda: client.streams[sid].ended)
        assert client.streams[sid].status == 200
    finally:
        client.close()
    assert "Traceback" not in server.log()


def test_h2c_preface_split_across_reads(server: ServerProcess) -> None:
    """The connection preface may arrive a byte at a time: still HTTP/2, not a bad HTTP/1 request."""
    target = server.target("h2c")
    sock = socket.create_connection((target.host, target.port), timeout=WAIT_S)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        for i in range(len(H2_PREFACE)):
            sock.sendall(H2_PREFACE[i : i + 1])
            time.sleep(0.01)
        sock.sendall(b"\x00\x00\x00\x04\x00\x00\x00\x00\x00")  # an empty SETTINGS
        sock.settimeout(WAIT_S)
        data = sock.recv(65536)
    finally:
        sock.close()
    assert data[3] == 0x4, "the server's first frame is its SETTINGS"


def test_http1_still_served_beside_h2c(server: ServerProcess) -> None:
    target = server.target("h1")
    assert target.run_curl("--http1.1", target.url("/version")).strip()
    with socket.create_connection((target.host, target.port), timeout=WAIT_S) as sock:
        sock.sendall(b"PROPFIND /x HTTP/1.1\r\nHost: a\r\n\r\n")  # starts like the preface, is not one
        sock.settimeout(WAIT_S)
        assert sock.recv(100).startswith(b"HTTP/1.1 405")


def test_stuck_tls_handshakes_never_block_others(server: ServerProcess) -> None:
    """Connections that never finish (or never start) their handshake: others are served at once."""
    https = server.target("h2")
    stuck = []
    try:
        for i in range(30):
            sock = socket.create_connection((https.host, https.port), timeout=WAIT_S)
            if i % 2:
                sock.sendall(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")  # a ClientHello cut short
            stuck.append(sock)
        started = time.monotonic()
        assert https.run_curl(https.url("/version"), timeout=5).strip()
        assert time.monotonic() - started < 3
    finally:
        for sock in stuck:
            sock.close()


@pytest.mark.parametrize(("offer", "expected"), [(["h2", "http/1.1"], "h2"), (["http/1.1"], "http/1.1"), ([], None)])
def test_alpn(server: ServerProcess, offer: list[str], expected: str | None) -> None:
    https = server.target("h2")
    ctx = ssl.create_default_context(cafile=https.ca_path)
    if offer:
        ctx.set_alpn_protocols(offer)
    with (
        socket.create_connection((https.host, https.port), timeout=WAIT_S) as raw,
        ctx.wrap_socket(raw, server_hostname=https.host) as sock,
    ):
        assert sock.selected_alpn_protocol() == expected
        if expected != "h2":
            sock.sendall(b"GET /version HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            assert sock.recv(100).startswith(b"HTTP/1.1 200")


def test_many_streams_at_once_on_one_connection(h2target: Target, server: ServerProcess) -> None:
    """50 transfers whose receivers share one connection, senders on their own connections."""
    client = H2Client(h2target)
    h1 = _h1(server)
    paths = [unique_path(f"m{i}") for i in range(50)]
    try:
        sids = [client.request("GET", path) for path in paths]
        time.sleep(0.3)
        payloads = [os.urandom(50_000 + i) for i in range(50)]

        def send(i: int) -> None:
            h1.run_curl("-T", "-", h1.url(paths[i]), input=payloads[i], timeout=60)

        threads = [threading.Thread(target=send, args=(i,)) for i in range(50)]
        for thread in threads:
            thread.start()
        assert client.pump_until(lambda: all(client.streams[s].ended for s in sids), timeout=60)
        for thread in threads:
            thread.join(WAIT_S)
        for sid, payload in zip(sids, payloads, strict=True):
            assert client.streams[sid].data == payload
    finally:
        client.close()


def test_response_head_larger_than_a_frame(h2target: Target) -> None:
    """A receiver's head above the 16 KiB frame size goes out as HEADERS and CONTINUATION frames."""
    path = unique_path("big-head")
    value = b"v" * 20_000  # X-Piping is passed on to the receiver as it came
    sender = H2Client(h2target)
    receiver = H2Client(h2target)
    try:
        rid = receiver.request("GET", path)
        sid = sender.request("POST", path, headers=[(b"x-piping", value)], end=False)
        sender.send(sid, b"body", end=True)
        assert receiver.pump_until(lambda: receiver.streams[rid].ended)
        got = receiver.streams[rid]
        assert got.status == 200 and got.data == b"body"
        assert (b"x-piping", value) in got.headers
    finally:
        sender.close()
        receiver.close()


def test_response_heads_decode_right_as_the_header_table_changes(h2target: Target) -> None:
    """Heads repeat on one receiver connection (their HPACK bytes are reused while the table holds
    still), between heads that add to the table and a client that shrinks its table twice: to 40
    bytes (no field fits: the table stays empty) and then, empty, to nothing, which the server must
    still announce at the start of the next block."""
    import h2.settings

    sender = H2Client(h2target)
    receiver = H2Client(h2target)
    kinds = [b"a/x", b"b/y", b"a/x", b"c/new-0", b"b/y", b"a/x", b"c/new-1", b"a/x", b"b/y", b"a/x"]
    table_sizes = {4: 40, 7: 0}  # the receiver's table size from these transfers on
    try:
        for i, kind in enumerate(kinds):
            if i in table_sizes:
                receiver.conn.update_settings({h2.settings.SettingCodes.HEADER_TABLE_SIZE: table_sizes[i]})
                receiver.flush()
                size = table_sizes[i]  # (the client's decoder holds the server to it once the server has ACKed)
                assert receiver.pump_until(lambda: receiver.conn.decoder.max_allowed_table_size == size)  # noqa: B023
            path = unique_path(f"hpack-{i}")
            rid = receiver.request("GET", path)
            sid = sender.request("POST", path, headers=[(b"content-type", kind)], end=False)
            sender.send(sid, b"%d" % i, end=True)
            assert receiver.pump_until(lambda: receiver.streams[rid].ended)  # noqa: B023
            got = receiver.streams[rid]
            assert got.status == 200 and got.data == b"%d" % i
            assert (b"content-type", kind) in got.headers, (i, got.headers)
            assert (b"x-accel-buffering", b"no") in got.headers
        assert receiver.terminated is None
    finally:
        sender.close()
        receiver.close()


def test_a_huge_header_table_setting_does_not_grow_the_servers_table(h2target: Target) -> None:
    """A client may allow a dynamic table of 2^31 bytes; the server's encoder keeps to 4 KiB all the
    same (the client's decoder mirrors the encoder's table, so its size is what the server holds)."""
    import h2.settings

    sender = H2Client(h2target)
    receiver = H2Client(h2target)
    huge = 2**31 - 1
    try:
        receiver.conn.update_settings({h2.settings.SettingCodes.HEADER_TABLE_SIZE: huge})
        receiver.flush()
        assert receiver.pump_until(lambda: receiver.conn.decoder.max_allowed_table_size == huge)
        for i in range(8):  # 8 heads with 2 KiB of fields each that no head repeats: 16 KiB if all were kept
            path = unique_path(f"table-{i}")
            rid = receiver.request("GET", path)
            x_piping = [(b"x-piping", b"%d-%s" % (i, b"v" * 1000)), (b"x-piping", b"%d-%s" % (i, b"w" * 1000))]
            sid = sender.request("POST", path, headers=x_piping, end=False)
            sender.send(sid, b"body", end=True)
            assert receiver.pump_until(lambda: receiver.streams[rid].ended)  # noqa: B023
            got = receiver.streams[rid]
            assert got.status == 200 and got.data == b"body"
            assert all(field in got.headers for field in x_piping)
            table = receiver.conn.decoder.header_table
            held = sum(32 + len(name) + len(value) for name, value in table.dynamic_entries)  # RFC 7541 4.1
            assert table.maxsize <= 4096 and held <= 4096, (i, table.maxsize, held)
        assert receiver.terminated is None
    finally:
        sender.close()
        receiver.close()


def test_a_request_refused_and_reset_in_the_same_read_leaves_the_connection_working(h2target: Target) -> None:
    """A refusal for a stream the client has reset in the same read as its request (h2 has forgotten the
    stream by the time the refusal is made) is dropped, and the connection goes on. It used to end the
    connection without a GOAWAY (and a traceback in the log), which a rapid-reset attacker met in CI."""
    sock = open_h2(h2target)
    tls = h2target.base_url.startswith("https")
    try:
        # n=0 is refused at once (400); stream 3 opening in the same read makes h2 prune the reset stream 1
        refused = request_block("GET", f"{unique_path()}?n=0", f"{h2target.host}:{h2target.port}", tls=tls)
        version = request_block("GET", "/version", f"{h2target.host}:{h2target.port}", tls=tls)
        sock.sendall(raw_headers(1, refused) + rst(1) + raw_headers(3, version))
        received = b""
        deadline = time.monotonic() + WAIT_S
        while time.monotonic() < deadline and not any(
            kind == DATA and stream == 3 and flags & END_STREAM for kind, flags, stream, _ in frames_of(received)
        ):
            data, closed = drain_until_closed(sock, 0.2)
            received += data
            if closed:
                break
        frames = frames_of(received)
        assert not [f for f in frames if f[0] == GOAWAY], frames
        assert any(kind == DATA and stream == 3 and flags & END_STREAM for kind, flags, stream, _ in frames), frames
    finally:
        sock.close()
