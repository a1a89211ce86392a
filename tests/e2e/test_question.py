"""A question about a path (docs/protocol.md section 12, beyond the reference), over every transport.

``HEAD /p`` with ``Piping-Ask: state`` is answered ``204`` with ``Piping-State: free|waiting|running|live``
and joins nothing: no party waits because of it, nothing of it is held, and it tells no more than
the reference's own 400s already do (not ``n``, not who or how many wait). Without the opt-in a
``HEAD`` is what it was (405). The share mode of the page asks it while it waits for its viewers
(docs/browser-apps.md, Share). curl for the transfers; raw sockets and the raw h2 client for the
hostile questions (a body, a flood on one connection).
"""

from __future__ import annotations

import os
import select
import socket
import subprocess
import time
from pathlib import Path

import pytest

from ..helpers import WAIT_S, Response, Target, connect, fetch, recv_until, unique_path, wait_until
from ..http2._client import H2Client

pytestmark = pytest.mark.beyond

ASK = ("-H", "Piping-Ask: state")
#: Every header a question's answer may carry: nothing about n, the parties or their headers.
ANSWER_HEADERS = {
    "access-control-allow-origin",
    "access-control-expose-headers",
    "cache-control",
    "piping-state",
    "date",
    "server",
}


def _is_h2(target: Target) -> bool:
    return target.name in ("h2c", "h2", "workers-h2")


def ask(target: Target, path: str, tmp: Path, *extra: str) -> Response:
    """One question (curl -I sends HEAD; it prints the head as its output), its answer whole."""
    return fetch(target, path, "-I", *ASK, *extra, tmp=tmp)


def state(target: Target, path: str, tmp: Path) -> str | None:
    answer = ask(target, path, tmp)
    assert answer.status == 204, (answer.status, answer.headers)
    return answer.header("piping-state")


class _Sender:
    """curl uploading its stdin; it reads its answer only between pieces of its body, so reading a line
    feeds it a byte at a time until the line is there (bounded)."""

    def __init__(self, target: Target, path: str, first: bytes) -> None:
        self.proc = target.popen_curl("-T", "-", target.url(path), stdin=subprocess.PIPE)
        self.sent = b""
        self._read = b""
        self.write(first)

    def write(self, data: bytes) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(data)
        self.proc.stdin.flush()
        self.sent += data

    def line(self) -> bytes:
        out = self.proc.stdout
        assert out is not None
        deadline = time.monotonic() + WAIT_S
        while b"\n" not in self._read and time.monotonic() < deadline:
            if select.select([out], [], [], 0.1)[0]:
                chunk = os.read(out.fileno(), 4096)  # not out.readline(): its buffer would hide lines from select
                if not chunk:
                    break
                self._read += chunk
            else:
                self.write(b".")
        line, found, self._read = self._read.partition(b"\n")
        assert found, f"no line from the sender: {line!r}"
        return line + found

    def end(self) -> bytes:
        rest, _ = self.proc.communicate(timeout=WAIT_S)  # closes its stdin: the body ends
        return self._read + rest


def test_the_answer_follows_the_path_through_a_transfer(target: Target, tmp_path: Path) -> None:
    path = unique_path("ask")
    answer = ask(target, path, tmp_path)
    assert answer.status == 204 and answer.header("piping-state") == "free"
    assert answer.header("access-control-allow-origin") == "*"
    assert answer.header("cache-control") == "no-store"
    assert {name for name, _ in answer.headers} <= ANSWER_HEADERS, answer.headers

    sender = _Sender(target, f"{path}?n=2", b"first ")
    assert sender.line().startswith(b"[INFO] Waiting for 2 receiver(s)")
    assert state(target, path, tmp_path) == "waiting"
    first = target.popen_curl(target.url(f"{path}?n=2"))
    assert sender.line() == b"[INFO] A receiver was connected.\n"
    assert state(target, path, tmp_path) == "waiting"  # one of two: the answer says nothing of n
    second = target.popen_curl(target.url(f"{path}?n=2"))
    assert sender.line() == b"[INFO] A receiver was connected.\n"
    assert sender.line() == b"[INFO] Start sending to 2 receiver(s)!\n"
    assert state(target, path, tmp_path) == "running"
    sender.write(b"and last")
    rest = sender.end()
    for receiver in (first, second):
        got, err = receiver.communicate(timeout=WAIT_S)
        assert got == sender.sent, err
    assert b"All receiver(s) was/were received successfully" in rest
    assert wait_until(lambda: state(target, path, tmp_path) == "free")


def test_a_live_path_and_receivers_first(target: Target, tmp_path: Path) -> None:
    path = unique_path("ask-live")
    receiver = target.popen_curl(target.url(path))
    assert wait_until(lambda: state(target, path, tmp_path) == "waiting")
    receiver.kill()
    receiver.communicate()
    assert wait_until(lambda: state(target, path, tmp_path) == "free")
    sender = _Sender(target, f"{path}?live", b"x")
    assert sender.line().startswith(b"[INFO] Live:")
    assert state(target, path, tmp_path) == "live"
    # (nobody took its byte: its upload would end only once someone has) it leaves: the path is free
    sender.proc.kill()
    sender.proc.communicate(timeout=WAIT_S)
    assert wait_until(lambda: state(target, path, tmp_path) == "free")


def test_without_the_opt_in_a_head_is_refused_as_before(target: Target, tmp_path: Path) -> None:
    path = unique_path("ask")
    for extra in ((), ("-H", "Piping-Ask: other")):
        answer = fetch(target, path, "-I", *extra, tmp=tmp_path)
        assert answer.status == 405, extra
        assert answer.header("allow") == "GET, HEAD, POST, PUT, OPTIONS"
        assert answer.header("piping-state") is None
    # a question on a reserved path is the page's HEAD, as without it
    page = ask(target, "/version", tmp_path)
    assert page.status == 200 and page.header("piping-state") is None
    # any other method with the header is what it is without it: a GET is a receiver
    receiver = target.popen_curl(*ASK, target.url(path))
    assert wait_until(lambda: state(target, path, tmp_path) == "waiting")
    sent = target.run_curl("-T", "-", target.url(path), input=b"to the GET")
    assert b"Start sending" in sent
    got, _ = receiver.communicate(timeout=WAIT_S)
    assert got == b"to the GET"


def test_questions_join_nothing_and_hold_nothing(target: Target, tmp_path: Path) -> None:
    """Hostile questions: with any n or live, with a body, a hundred on one connection; then the
    path is free and an ordinary transfer on it goes as if none had been asked."""
    path = unique_path("ask")
    for query in ("", "?n=1", "?n=3", "?live", "?n=abc"):
        assert state(target, path + query, tmp_path) == "free"
    body = b"b" * 200_000
    if _is_h2(target):
        client = H2Client(target)
        try:
            asked = [
                client.request("HEAD", path, headers=[(b"piping-ask", b"state")], end=False),
                *(client.request("HEAD", f"{path}?n={i}", headers=[(b"piping-ask", b"state")]) for i in range(1, 60)),
            ]
            client.send(asked[0], body[:60_000], end=True)  # within the stream's first window
            assert client.pump_until(lambda: all(client.streams[s].status for s in asked))
            for stream in asked:
                answer = client.streams[stream]
                assert answer.status == 204 and (b"piping-state", b"free") in answer.headers
                assert answer.data == b""
        finally:
            client.close()
    else:
        sock = connect(target, "http/1.1")
        try:
            head = f"HEAD {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nPiping-Ask: state\r\n"
            with_body = (head + f"Content-Length: {len(body)}\r\n\r\n").encode() + body
            flood = "".join(head + "\r\n" for _ in range(100)).encode()
            sock.sendall(with_body + flood)
            got = _read_heads(sock, 101)
            assert got.count(b"HTTP/1.1 204 No Content\r\n") == 101, got[:400]
            assert got.count(b"Piping-State: free\r\n") == 101
            *heads, after = got.split(b"\r\n\r\n")
            assert after == b"" and all(h.startswith(b"HTTP/1.1 204 ") for h in heads)  # heads, nothing else
        finally:
            sock.close()
    # a sender with n=1 is not told "Another sender" nor of another n: nothing waits
    assert state(target, path, tmp_path) == "free"
    receiver = target.popen_curl(target.url(path))
    sent = target.run_curl("-T", "-", target.url(path), input=b"after the questions")
    assert sent.startswith(b"[INFO] Waiting for 1 receiver(s)") or b"Start sending to 1 receiver(s)" in sent, sent
    got, _ = receiver.communicate(timeout=WAIT_S)
    assert got == b"after the questions"


def test_a_refused_head_has_no_body_on_http1(target: Target) -> None:
    """A HEAD answered with a refusal (405 without the opt-in; a 401 of the operator) is a head alone
    (RFC 9110 9.3.2), so the next request on the kept-alive connection is read right."""
    if _is_h2(target):
        pytest.skip("HTTP/2 ends a HEAD's stream with its head")
    path = unique_path("ask")
    sock = connect(target, "http/1.1")
    try:
        head = f"HEAD {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        sock.sendall((head + "\r\n" + head + "Piping-Ask: state\r\n\r\n").encode())
        got = _read_heads(sock, 2)
    finally:
        sock.close()
    refused, answered, after = got.split(b"\r\n\r\n")
    assert refused.startswith(b"HTTP/1.1 405 ") and answered.startswith(b"HTTP/1.1 204 "), got
    assert b"Piping-State: free" in answered and after == b""


def _read_heads(sock: socket.socket, count: int) -> bytes:
    """What an HTTP/1 connection answers until ``count`` heads came (or WAIT_S passed)."""
    got = b""
    deadline = time.monotonic() + WAIT_S
    while got.count(b"\r\n\r\n") < count and time.monotonic() < deadline:
        more = recv_until(sock, b"\r\n\r\n", timeout=max(0.01, deadline - time.monotonic()))
        if not more:
            break
        got += more
    return got
