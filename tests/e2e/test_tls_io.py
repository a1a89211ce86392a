"""HTTPS reads and writes: records decrypted into one buffer the server reuses; HTTP/1 writes gathered.

What could go wrong with the reads: bytes handed on while the buffer is refilled under them. The
receivers here stall (curl's --limit-rate), so that the server queues what it writes them and pauses
the upload while it keeps reading; the bodies are random, so any stale or overwritten piece shows.
The writes: a chunk's size line and its CRLF must not go as TLS records of their own.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import socket
import ssl
import struct
import subprocess
import threading
import time
from pathlib import Path
from typing import cast

import pytest

from ..helpers import WAIT_S, ServerProcess, Target, connect, recv_all, unique_path
from ..ops.util import dechunk

pytestmark = pytest.mark.ours

ALL_OK = b"[INFO] All receiver(s) was/were received successfully.\n"
#: Large enough for many full reads (256 KiB each) while the receiver lags behind.
BODY_BYTES = 6 * 1024 * 1024 + 12345
#: The receiver's pace: BODY_BYTES take ~2 s at it, so the server's write buffer fills and drains many times.
RECEIVER_RATE = "3M"
H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


@pytest.mark.parametrize(("sender", "receiver"), [("h1-tls", "h2"), ("h2", "h1-tls")])
def test_slow_receiver_gets_a_random_body_whole(
    server: ServerProcess, tmp_path: Path, sender: str, receiver: str
) -> None:
    data = os.urandom(BODY_BYTES)
    src = tmp_path / "body.bin"
    src.write_bytes(data)
    path = unique_path("tls")
    recv_target, send_target = server.target(receiver), server.target(sender)
    out = tmp_path / "got.bin"  # a file, not a pipe: the test reads nothing until the end
    recv = recv_target.popen_curl("--limit-rate", RECEIVER_RATE, "-o", str(out), recv_target.url(path))
    time.sleep(0.5)  # the receiver waits first: the upload streams as it is read
    # -T FILE: a Content-Length body (the chunked one is the next test's)
    sent = send_target.run_curl("-T", str(src), send_target.url(path), timeout=60)
    _, err = recv.communicate(timeout=60)
    assert recv.returncode == 0, err
    got = out.read_bytes()
    assert len(got) == len(data)
    assert hashlib.sha256(got).digest() == hashlib.sha256(data).digest()
    assert sent.endswith(ALL_OK)


def test_chunked_upload_in_odd_pieces_over_tls(server: ServerProcess, tmp_path: Path) -> None:
    """Chunk heads and TLS records that straddle the server's reads: the body arrives byte for byte."""
    target = server.target("h1-tls")
    assert target.ca_path is not None
    path = unique_path("odd")
    data = os.urandom(2 * 1024 * 1024 + 3)
    out = tmp_path / "got.bin"
    recv = target.popen_curl("--limit-rate", RECEIVER_RATE, "-o", str(out), target.url(path))
    time.sleep(0.5)
    with connect(target, "http/1.1") as sock:
        sock.sendall(f"POST {path} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n".encode())
        offset, sizes = 0, [1, 7, 16384, 16385, 100_000, 262_145, 3]
        while offset < len(data):
            piece = data[offset : offset + sizes[offset % len(sizes)]]
            offset += len(piece)
            sock.sendall(b"%x\r\n" % len(piece) + piece + b"\r\n")
        sock.sendall(b"0\r\n\r\n")
        answer = b""
        deadline = time.monotonic() + WAIT_S * 4
        while not answer.endswith(b"0\r\n\r\n") and time.monotonic() < deadline:
            part = sock.recv(65536)
            if not part:
                break
            answer += part
    _, err = recv.communicate(timeout=60)
    assert recv.returncode == 0, err
    assert hashlib.sha256(out.read_bytes()).digest() == hashlib.sha256(data).digest()
    assert ALL_OK in answer


def test_h2_preface_over_tls_without_alpn(server: ServerProcess) -> None:
    """A client that offers no ALPN but speaks HTTP/2 at once gets HTTP/2 (its first frame: SETTINGS)."""
    target = server.target("h2")
    ctx = ssl.create_default_context(cafile=target.ca_path)  # no ALPN offered
    with (
        socket.create_connection((target.host, target.port), timeout=WAIT_S) as raw,
        ctx.wrap_socket(raw, server_hostname=target.host) as sock,
    ):
        assert sock.selected_alpn_protocol() is None
        sock.sendall(H2_PREFACE + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00")  # the preface, an empty SETTINGS
        head = b""
        while len(head) < 9:
            part = sock.recv(9 - len(head))
            assert part, "closed before a frame"
            head += part
        assert head[3] == 0x4  # SETTINGS


def _tls_records(raw: bytes) -> list[tuple[int, int]]:
    """(content type, length) of each whole TLS record in a raw byte stream from its start."""
    records, pos = [], 0
    while pos + 5 <= len(raw):
        kind, _version, length = struct.unpack_from("!BHH", raw, pos)
        if pos + 5 + length > len(raw):
            break
        records.append((kind, length))
        pos += 5 + length
    return records


def test_chunked_relay_over_tls_sends_no_tiny_records(server: ServerProcess) -> None:
    """HTTP/1.1 over TLS, a chunked upload in 64 KiB chunks relayed to a receiver: the receiver's
    TLS records carry whole pieces with their framing, not a record per chunk size line and CRLF."""
    target = server.target("h1-tls")
    assert target.ca_path is not None
    path = unique_path("rec")
    ctx = ssl.create_default_context(cafile=target.ca_path)
    ctx.set_alpn_protocols(["http/1.1"])
    # the receiver: TLS on memory BIOs over a plain socket, so that its raw bytes can be looked at
    raw_sock = socket.create_connection((target.host, target.port), timeout=WAIT_S)
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ctx.wrap_bio(incoming, outgoing, server_hostname=target.host)
    raw = bytearray()
    plain = bytearray()

    def pump() -> bool:
        if outgoing.pending:
            raw_sock.sendall(outgoing.read())
        data = raw_sock.recv(1 << 20)
        raw.extend(data)
        if data:
            incoming.write(data)
        else:
            incoming.write_eof()
        return bool(data)

    with raw_sock:
        for _ in range(100):  # the handshake: a few round trips
            try:
                tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                assert pump(), "closed during the handshake"
        tls.write(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        raw_sock.sendall(outgoing.read())
        time.sleep(0.5)  # the receiver waits first: the upload streams to it
        chunk = os.urandom(64 * 1024)
        with connect(target, "http/1.1") as sender:
            sender.sendall(f"POST {path} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n".encode())
            for _ in range(32):
                sender.sendall(b"10000\r\n" + chunk + b"\r\n")
            sender.sendall(b"0\r\n\r\n")
            deadline = time.monotonic() + WAIT_S * 2
            while not plain.endswith(b"\r\n0\r\n\r\n") and time.monotonic() < deadline:
                try:
                    plain.extend(tls.read(1 << 20))
                    continue
                except ssl.SSLWantReadError:
                    pass
                except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                    break
                if not pump():
                    break
    assert plain.startswith(b"HTTP/1.1 200")
    assert plain.count(chunk[:64]) == 32  # every chunk arrived
    app_data = [length for kind, length in _tls_records(bytes(raw)) if kind == 23]
    # a record of a few bytes of plaintext (a lone size line or CRLF) is 17 bytes of overhead plus them;
    # written apart, each 64 KiB chunk makes two (64 here). Gathered, a write is one read's worth of
    # body and framing: a few bytes over its 16 full records may spill into one more (at most 8 here).
    tiny = [length for length in app_data if length <= 17 + 8]
    assert len(tiny) <= 12, f"{len(tiny)} tiny TLS records of {len(app_data)}"


# --- a sender whose connection ends with a TCP FIN and no close_notify ------------------------------------
# Many TLS clients close that way. Over TLS the event loop reads on past a paused upload into its own buffer
# of undecrypted records and takes the FIN for a broken connection: unless the server decrypts and hands on
# what it held, bytes the sender delivered before its FIN are lost. The outcome must be plain TCP's:
# * a running transfer's receiver gets every byte the sender sent before its FIN, then a clean end when the
#   framing says the body was whole, a cut stream when it was not;
# * a *waiting* sender that closes has left (docs/design.md, "Lifecycle decisions"): its path is free, and a
#   receiver that comes later never gets a part of its body.
# (The running case loses bytes only when the FIN is read while the upload is paused with records held: the
# tests here make that likely, not certain; they passed in 2 of 2 runs against the _tls.py before the fix.)

#: More than a waiting sender's body held (64 KiB), less than the event loop's TLS reads ahead (256 KiB).
HELD_BODY_BYTES = 64 * 1024 + 150_000
#: A running upload much larger than what the receiver's pace lets through at once: the server pauses
#: reading it many times, and the FIN comes while it is paused.
RUNNING_BODY_BYTES = 8 * 1024 * 1024


def _send_then_fin(target: Target, head: bytes, body_parts: list[bytes]) -> socket.socket:
    """Send ``head`` and ``body_parts``, then a TCP FIN (over TLS without close_notify); the socket, to drain."""
    sock = connect(target, "http/1.1")
    sock.sendall(head)
    for part in body_parts:
        sock.sendall(part)
    # (SSLSocket.shutdown drops the TLS layer without a close_notify and sends a plain FIN)
    sock.shutdown(socket.SHUT_WR)
    return sock


def _chunked(data: bytes, *, whole: bool, step: int = 16384) -> list[bytes]:
    parts = [b"%x\r\n" % len(data[i : i + step]) + data[i : i + step] + b"\r\n" for i in range(0, len(data), step)]
    return parts + [b"0\r\n\r\n"] if whole else parts


def _slow_receiver(server: ServerProcess, path: str) -> socket.socket:
    """A plain HTTP/1.1 receiver with a small receive buffer, its request sent, nothing read yet."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * 1024)
    sock.settimeout(WAIT_S)
    sock.connect(("127.0.0.1", server.http_port))
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
    return sock


def _read_slowly(sock: socket.socket, *, piece: int = 64 * 1024, pause_s: float = 0.005) -> bytes:
    """Everything until the server closes, read at a few MB/s (bounded by WAIT_S per read and 60 s in all)."""
    got = bytearray()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        data = sock.recv(piece)
        if not data:
            break
        got += data
        time.sleep(pause_s)
    return bytes(got)


def _relay_to_slow_receiver(server: ServerProcess, target: Target, path: str, head: bytes, parts: list[bytes]) -> bytes:
    """A slow receiver waits on ``path``; a sender over ``target`` sends ``head`` and ``parts``, then its FIN.
    What the receiver got, head included."""
    with _slow_receiver(server, path) as receiver:
        time.sleep(0.3)  # the receiver waits first: the upload streams to it at once
        sent: list[socket.socket] = []
        sending = threading.Thread(target=lambda: sent.append(_send_then_fin(target, head, parts)), daemon=True)
        sending.start()
        raw = _read_slowly(receiver)
        sending.join(WAIT_S)
    for sock in sent:
        sock.close()
    return raw


@pytest.mark.parametrize("transport", ["h1", "h1-tls"])
@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_running_sender_closing_without_close_notify_delivers_its_whole_body(
    server: ServerProcess, framing: str, transport: str
) -> None:
    target = server.target(transport)
    data = os.urandom(RUNNING_BODY_BYTES)
    path = unique_path("fin")
    if framing == "content-length":
        head = f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(data)}\r\n\r\n".encode()
        parts = [data[i : i + 65536] for i in range(0, len(data), 65536)]
    else:
        head = f"POST {path} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n".encode()
        parts = _chunked(data, whole=True)
    status, _, body = _relay_to_slow_receiver(server, target, path, head, parts).partition(b"\r\n\r\n")
    assert status.startswith(b"HTTP/1.1 200"), status[:200]
    if b"chunked" in status.lower():
        body, ended = dechunk(body)
        assert ended, f"no final chunk after {len(body)} of {len(data)} bytes"
    assert len(body) == len(data)
    assert hashlib.sha256(body).digest() == hashlib.sha256(data).digest()


@pytest.mark.parametrize("transport", ["h1", "h1-tls"])
def test_running_sender_cut_short_without_close_notify_is_a_cut_stream(server: ServerProcess, transport: str) -> None:
    target = server.target(transport)
    data = os.urandom(RUNNING_BODY_BYTES)
    path = unique_path("cut")
    head = f"POST {path} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n".encode()
    parts = _chunked(data, whole=False)  # no final chunk: the body is cut short
    status, _, body = _relay_to_slow_receiver(server, target, path, head, parts).partition(b"\r\n\r\n")
    assert status.startswith(b"HTTP/1.1 200"), status[:200]
    body, ended = dechunk(body)
    # never a clean end with bytes missing: the stream is cut, and what came is what was sent
    assert not ended
    assert body == data[: len(body)]


@pytest.mark.parametrize("transport", ["h1", "h1-tls"])
@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_waiting_sender_closing_without_close_notify_has_left(
    server: ServerProcess, tmp_path: Path, framing: str, transport: str
) -> None:
    target = server.target(transport)
    data = os.urandom(HELD_BODY_BYTES)
    path = unique_path("fin")
    if framing == "content-length":
        head = f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(data)}\r\n\r\n".encode()
        parts = [data]
    else:
        head = f"POST {path} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n".encode()
        parts = _chunked(data, whole=True)
    with _send_then_fin(target, head, parts) as sender:
        time.sleep(1.0)  # the server notices the FIN (over plain TCP behind the paused reads: http1/_hangup.py)
        with contextlib.suppress(OSError):  # (its unread bytes make the server's close a reset)
            recv_all(sender, timeout=1)
    # the path is free: a new sender is accepted, and its receiver gets its bytes, none of the first sender's
    out = tmp_path / "got.bin"
    receiving = subprocess.Popen(target.curl("--max-time", "20", "-o", str(out), target.url(path)))
    second = b"the second sender\n"
    done = subprocess.run(
        target.curl("--max-time", "20", "--data-binary", "@-", target.url(path)),
        input=second,
        capture_output=True,
        timeout=30,
    )
    assert done.returncode == 0 and b"Another sender" not in done.stdout, done.stdout
    assert receiving.wait(timeout=30) == 0
    assert out.read_bytes() == second


def test_write_limits_set_on_a_tls_connection_already_gone_log_nothing(tls_files: tuple[str, str, str]) -> None:
    """Between uvloop's TLS transport seeing the connection gone and HTTP/1 being told so (a turn of the
    loop later), HTTP/1 may still set its write limits (``notify_when_empty``): uvloop then calls the
    pause_writing of a protocol it has dropped, and the loop logs that AttributeError as a traceback.
    In process, on a real socket: a probe sets the limits in that very turn; nothing is logged."""
    import asyncio

    import uvloop

    from piping_server.server._tls import _DecryptInto, _GatheredWrites, build_context

    crt, key, ca = tls_files
    errors: list[dict[str, object]] = []
    seen: list[str] = []  # what the probe saw, in order: "closing" (limits set then), "lost"

    class Probe(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport = cast(asyncio.Transport, transport)

        def data_received(self, data: bytes) -> None:
            self.transport.write(b"!")  # the handshake is done on both sides: the client may go

        def connection_lost(self, exc: Exception | None) -> None:
            seen.append("lost")

    class Wrap(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            probe = Probe()
            reader = _DecryptInto(probe)
            transport.set_protocol(reader)
            gathered = _GatheredWrites(transport, reader)  # type: ignore[arg-type]
            probe.connection_made(gathered)
            loop = asyncio.get_running_loop()

            def poll() -> None:  # each turn of the loop until the transport says it is closing
                if gathered.is_closing():
                    if not seen:
                        seen.append("closing")
                        gathered.set_write_buffer_limits(high=0, low=0)
                elif not seen:
                    loop.call_soon(poll)

            loop.call_soon(poll)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(lambda _loop, context: errors.append(context))
        server = await loop.create_server(Wrap, "127.0.0.1", 0, ssl=build_context(crt, key))
        port = server.sockets[0].getsockname()[1]
        client = ssl.create_default_context(cafile=ca)
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=client, server_hostname="127.0.0.1")
        writer.write(b"?")
        assert await asyncio.wait_for(reader.readexactly(1), WAIT_S) == b"!"
        writer.transport.abort()  # gone at once, no close_notify
        deadline = loop.time() + WAIT_S
        while "lost" not in seen and loop.time() < deadline:
            await asyncio.sleep(0.01)
        server.close()

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main())
    assert seen == ["closing", "lost"]  # the limits were set in the window, before the loss was told
    assert errors == []
