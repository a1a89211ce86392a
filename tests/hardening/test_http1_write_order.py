"""A small transfer to a receiver that already waits: the sender's head and lines leave first.

The reference's own suite ("should pass sender's multiple X-Piping to receivers' ones") reads the
sender's response once the receiver has its body; if the sender's ``200`` is still held by the
server at that moment, that test fails. Observed here with raw sockets.
"""

from __future__ import annotations

import select
import time

import pytest

from ..helpers import WAIT_S, ServerProcess, Target, connect, recv_until, unique_path

RUNS = 40
BODY = b"a small body\n"


def _one_run(target: Target) -> tuple[bool, bool]:
    """(the receiver waited before the sender came, the sender's head was there when the receiver had its body)."""
    path = unique_path("order")
    with connect(target, "http/1.1") as receiver, connect(target, "http/1.1") as sender:
        receiver.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        time.sleep(0.05)  # the receiver waits (checked below, from the sender's lines)
        sender.sendall(f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(BODY)}\r\n\r\n".encode() + BODY)
        got = recv_until(receiver, b"\r\n\r\n")
        while not got.endswith(BODY) and len(got) < 65536:
            more = recv_until(receiver, BODY, timeout=WAIT_S)
            if not more:
                break
            got += more
        assert got.startswith(b"HTTP/1.1 200") and got.endswith(BODY), got
        readable, _, _ = select.select([sender], [], [], 0)  # (over TLS: a record has come, which is what counts)
        lines = recv_until(sender, b"0\r\n\r\n")
        assert lines.startswith(b"HTTP/1.1 200"), lines
        return b"1 receiver(s) has/have been connected" in lines, bool(readable)


@pytest.mark.parametrize("transport", ["h1", "h1-tls"])
def test_sender_head_reaches_the_wire_before_the_receivers_body(server: ServerProcess, transport: str) -> None:
    target = server.target(transport)
    late = 0
    waited = 0
    for _ in range(RUNS):
        receiver_waited, head_first = _one_run(target)
        waited += receiver_waited
        late += not head_first
    assert waited >= RUNS // 2, f"the receiver waited in only {waited} of {RUNS} runs: the scenario was not tested"
    assert late == 0, f"the receiver had its whole body before the sender's 200 was sent, {late} of {RUNS} runs"
