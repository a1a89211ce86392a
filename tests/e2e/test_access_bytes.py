"""The access log counts body bytes, never framing, on every path (spliced or copied, chunked or not)."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator

import pytest

from ..helpers import ServerProcess, raw_connect, recv_until, start_server, unique_path, wait_until

pytestmark = pytest.mark.ours  # our own process and its log

PIECES = [b"a" * 1, b"b" * 1000, b"c" * 70_000, b"d" * 300_000, b"e" * 17]
TOTAL = sum(len(p) for p in PIECES)


@pytest.fixture(scope="module", params=["spliced", "copied"])
def logging_server(request: pytest.FixtureRequest) -> Iterator[ServerProcess]:
    env = {"PIPING_SPLICE": "0"} if request.param == "copied" else {}
    proc = start_server("--access-log", env=env)
    try:
        yield proc
    finally:
        proc.stop()


def _counts(server: ServerProcess, method: str, path: str) -> tuple[int, int] | None:
    found = re.search(rf'"{method} {re.escape(path)}" 200 in=(\d+) out=(\d+)', server.log())
    return (int(found.group(1)), int(found.group(2))) if found else None


@pytest.mark.parametrize("framing", ["chunked", "content-length"])
def test_byte_counts_are_body_bytes(logging_server: ServerProcess, framing: str) -> None:
    target = logging_server.target("h1")
    path = unique_path("count")
    receiver = raw_connect(target)
    receiver.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
    time.sleep(0.3)
    sender = raw_connect(target)
    if framing == "chunked":
        head = f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n".encode()
        wire = [b"%x\r\n%s\r\n" % (len(p), p) for p in PIECES] + [b"0\r\n\r\n"]
    else:
        head = f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {TOTAL}\r\n\r\n".encode()
        wire = list(PIECES)
    sender.sendall(head + wire[0])
    assert PIECES[0] in recv_until(receiver, PIECES[0])  # the transfer runs: the rest may be spliced
    for piece in wire[1:]:
        sender.sendall(piece)
    assert b"received successfully" in recv_until(sender, b"received successfully")
    receiver.close()
    sender.close()
    assert wait_until(lambda: _counts(logging_server, "GET", path) and _counts(logging_server, "POST", path))
    assert _counts(logging_server, "GET", path) == (0, TOTAL)
    sender_in, _ = _counts(logging_server, "POST", path) or (0, 0)
    assert sender_in == TOTAL
