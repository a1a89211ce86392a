"""docs/protocol.md section 8 with raw connections: a waiting sender whose connection ends has left.

A sender that writes its whole body and then closes (FIN) or aborts (RST) its connection while it
waits frees the path at once: the next sender is not told "Another sender", and the next receiver
gets the new sender's bytes, never the dead one's. Once its transfer runs, a sender that closes
after its whole body still has it delivered. HTTP/1 runs on raw sockets (spliced, copied and over
TLS), HTTP/2 on the raw h2 client (a stream reset, or the whole connection closed).
"""

from __future__ import annotations

import select
import socket
import struct
import subprocess
import time

import pytest

from ..helpers import WAIT_S, Target, connect, recv_until, unique_path, wait_until
from ..http2._client import H2Client

WAITING = b"[INFO] Waiting for 1 receiver(s)..."


def _post_head(path: str, length: int) -> bytes:
    return f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {length}\r\n\r\n".encode()


def _is_h2(target: Target) -> bool:
    return target.name in ("h2c", "h2")


def _leave_waiting(target: Target, path: str, body: bytes, how: str) -> None:
    """A sender that writes its whole body, is told it waits, and then goes away (``how``)."""
    if _is_h2(target):
        client = H2Client(target)
        stream = client.request("POST", path, headers=[(b"content-length", b"%d" % len(body))], end=False)
        client.send(stream, body, end=True)
        assert client.pump_until(lambda: WAITING in client.streams[stream].data)
        if how == "reset":
            client.reset(stream)
            client.pump(0.2)  # the connection stays; only the stream is gone
        client.close()
        return
    sock = connect(target, "http/1.1")
    sock.sendall(_post_head(path, len(body)) + body)
    assert WAITING in recv_until(sock, WAITING)
    if how == "rst":
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def _clean_transfer(target: Target, path: str, data: bytes) -> tuple[bytes, bytes]:
    """A new sender and a new receiver on ``path``: (what the sender was told, what the receiver got)."""
    deadline = time.monotonic() + WAIT_S
    # The server learns of the departure asynchronously: a new sender may be told "Another sender" for
    # a moment; it must not be once the close has been seen (bounded retries, no timing assert).
    while True:
        sender = subprocess.Popen(
            target.curl("-T", "-", target.url(path)),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        assert sender.stdout is not None and sender.stdin is not None
        sender.stdin.write(data)  # (curl sends an HTTP/2 request only once it has some of its body)
        sender.stdin.close()
        readable, _, _ = select.select([sender.stdout], [], [], WAIT_S)
        first = sender.stdout.readline() if readable else b""
        if b"Another sender" not in first or time.monotonic() > deadline:
            break
        sender.wait(timeout=WAIT_S)
        time.sleep(0.1)
    receiver = subprocess.Popen(target.curl(target.url(path)), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    sender.wait(timeout=WAIT_S)  # its few lines fit in the pipe
    rest = sender.stdout.read()
    got, _ = receiver.communicate(timeout=WAIT_S)
    return first + rest, got


@pytest.mark.parametrize("how", ["close", "rst"])
def test_waiting_sender_that_closes_after_its_whole_body_frees_the_path(target: Target, how: str) -> None:
    path = unique_path("left")
    if _is_h2(target):
        how = "reset" if how == "rst" else "close"
    _leave_waiting(target, path, b"dead sender's bytes", how)
    told, got = _clean_transfer(target, path, b"the new sender's bytes")
    assert b"Another sender" not in told, told
    assert b"[INFO] Sent successfully!" in told
    assert got == b"the new sender's bytes"


@pytest.mark.parametrize("how", ["close", "half-close"])
def test_running_sender_that_closes_after_its_whole_body_still_delivers(target: Target, how: str) -> None:
    if how == "half-close" and (_is_h2(target) or target.name == "h1-tls"):
        pytest.skip("a half-close of the connection is plain TCP's (HTTP/2 ends streams, TLS has close_notify)")
    path = unique_path("run")
    data = bytes(range(256)) * 1024  # 256 KiB: more than the server reads ahead for a waiting sender
    receiver = subprocess.Popen(target.curl(target.url(path)), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    time.sleep(0.5)  # the receiver waits first, so the transfer runs as soon as the sender comes
    started = b"[INFO] Start sending to 1 receiver(s)!"
    if _is_h2(target):
        client = H2Client(target)
        stream = client.request("POST", path, headers=[(b"content-length", b"%d" % len(data))], end=False)
        client.send(stream, data, end=True)
        assert client.pump_until(lambda: started in client.streams[stream].data)
        client.close()
    else:
        sock = connect(target, "http/1.1")
        sock.sendall(_post_head(path, len(data)) + data)
        lines = recv_until(sock, started)
        assert started in lines
        # (over TLS this close sends no close_notify: what the server had not yet decrypted still counts)
        if how == "half-close":
            sock.shutdown(socket.SHUT_WR)
            # the sender still gets its lines to the end
            if b"received successfully" not in lines:
                lines += recv_until(sock, b"received successfully")
            assert b"received successfully" in lines
        sock.close()  # nothing unread (or the upload is read already): a plain FIN
    got, _ = receiver.communicate(timeout=WAIT_S)
    assert got == data
    assert receiver.returncode == 0
    # and the path is free again
    assert wait_until(lambda: _clean_transfer(target, path, b"again")[1] == b"again", timeout=WAIT_S)
