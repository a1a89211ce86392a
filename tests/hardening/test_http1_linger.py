"""Closing with request bytes unread: a lingering close (RFC 9112 9.6), bounded in time and bytes.

A bad chunk mid-upload ends the upload while its sender is still sending. Closed at once, the
connection resets, and a client still writing gets the reset instead of its answer. The server shuts
down writing and drains a bounded while first; a client that never stops is dropped all the same.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time

import pytest

from ..helpers import WAIT_S, ServerProcess, recv_until, unique_path

#: What the sender still sends after its bad chunk: more than the socket buffers take in a blink.
REST_BYTES = 2 * 1024 * 1024
#: The server lingers 2 s (LINGER_S) at most: dropped within this, a loaded machine included.
DROPPED_WITHIN_S = 8.0


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def _upload_with_a_bad_chunk(port: int) -> tuple[socket.socket, socket.socket]:
    """A running chunked transfer whose next chunk head is bad: (sender, receiver) sockets."""
    path = unique_path("linger")
    receiver = socket.create_connection(("127.0.0.1", port), timeout=WAIT_S)
    receiver.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    time.sleep(0.2)
    sender = socket.create_connection(("127.0.0.1", port), timeout=WAIT_S)
    sender.sendall(f"POST {path} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n".encode() + _chunk(b"first"))
    assert b"first" in recv_until(receiver, b"first")
    sender.sendall(b"zz\r\n")  # not a chunk size
    return sender, receiver


@pytest.mark.parametrize("copying", [False, True], ids=["spliced", "copied"])
def test_a_sender_still_sending_gets_its_answer_not_a_reset(request: pytest.FixtureRequest, copying: bool) -> None:
    proc: ServerProcess = request.getfixturevalue("copying_server" if copying else "server")
    sender, receiver = _upload_with_a_bad_chunk(proc.http_port)
    with sender, receiver:
        failure: list[OSError] = []

        def send_the_rest() -> None:
            try:
                sender.sendall(b"y" * REST_BYTES)
            except OSError as exc:
                failure.append(exc)

        thread = threading.Thread(target=send_the_rest, daemon=True)
        thread.start()
        thread.join(WAIT_S)
        answer = b""
        with contextlib.suppress(OSError):
            answer = recv_until(sender, None, timeout=WAIT_S)
    assert not failure, f"the sender's writes failed: {failure}"
    assert b"HTTP/1.1 200" in answer and b"[ERROR] Failed to send." in answer, answer[-300:]
    assert "Traceback" not in proc.log()


@pytest.mark.parametrize("pace", ["fast", "slow"])
def test_a_sender_that_never_stops_is_dropped(server: ServerProcess, pace: str) -> None:
    """Fast: the byte bound ends the draining; slow (about 100 KB/s): the time bound."""
    sender, receiver = _upload_with_a_bad_chunk(server.http_port)
    block = b"y" * (65536 if pace == "fast" else 10240)
    started = time.monotonic()
    dropped_after = float("inf")
    with sender, receiver:
        sender.settimeout(1.0)
        while time.monotonic() - started < DROPPED_WITHIN_S + 5:
            try:
                sender.sendall(block)
            except TimeoutError:
                continue  # not read for a second: the server stopped reading, the close comes next
            except OSError:
                dropped_after = time.monotonic() - started
                break
            if pace == "slow":
                time.sleep(0.1)
    assert dropped_after <= DROPPED_WITHIN_S, f"still connected after {dropped_after} s"
