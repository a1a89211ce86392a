"""HTTPS reads: every connection's records are decrypted into one buffer that the server reuses.

What could go wrong with that: bytes handed on while the buffer is refilled under them. The
receivers here stall (curl's --limit-rate), so that the server queues what it writes them and pauses
the upload while it keeps reading; the bodies are random, so any stale or overwritten piece shows.
"""

from __future__ import annotations

import hashlib
import os
import socket
import ssl
import time
from pathlib import Path

import pytest

from ..helpers import WAIT_S, ServerProcess, unique_path

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
    ctx = ssl.create_default_context(cafile=target.ca_path)
    ctx.set_alpn_protocols(["http/1.1"])
    with (
        socket.create_connection((target.host, target.port), timeout=WAIT_S) as raw,
        ctx.wrap_socket(raw, server_hostname=target.host) as sock,
    ):
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
