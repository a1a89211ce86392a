"""RFC 9112's MUSTs for a server, one raw request each (docs/protocol.md section 9).

Each request breaks a MUST of sections 2-3 (request line, Host) or 6-7 (framing): it gets the
status the RFC names (400, 414, 501 or 505), never a 200 and never a transfer; where the framing
cannot be trusted, the server closes the connection without being asked to.
"""

from __future__ import annotations

import contextlib
import re
import socket
import time

import pytest

from ..helpers import Target, raw_connect

H = b"Host: 127.0.0.1\r\n"


def _case(name: str, raw: bytes, status: int, *, closes: bool = False, reference: bool = True) -> object:
    """``closes``: the framing can't be trusted, so the connection must close; ``reference``: the
    reference server answers this one as the RFC says too (else the case is ours only)."""
    marks = () if reference else (pytest.mark.beyond,)
    return pytest.param(raw, status, closes, id=name, marks=marks)


CASES = [
    # section 2.3: the version
    _case("http-0.9", b"GET /x\r\n\r\n", 400, reference=False),
    _case("http-2.0-line", b"GET /x HTTP/2.0\r\n" + H + b"\r\n", 505, reference=False),
    _case("http-1.2", b"GET /x HTTP/1.2\r\n" + H + b"\r\n", 505, reference=False),
    _case("lowercase-version", b"GET /x http/1.1\r\n" + H + b"\r\n", 400),
    # section 3: the request line and target
    _case("target-not-origin-form", b"GET x HTTP/1.1\r\n" + H + b"\r\n", 400),
    _case("asterisk-not-options", b"GET * HTTP/1.1\r\n" + H + b"\r\n", 400, reference=False),
    _case("space-in-target", b"GET /a b HTTP/1.1\r\n" + H + b"\r\n", 400),
    _case("control-in-target", b"GET /a\x01 HTTP/1.1\r\n" + H + b"\r\n", 400),
    _case("target-too-long", b"GET /" + b"a" * 70_000 + b" HTTP/1.1\r\n" + H + b"\r\n", 414, reference=False),
    # section 3.2: Host
    _case("no-host", b"GET /version HTTP/1.1\r\n\r\n", 400),
    _case("two-hosts", b"GET /version HTTP/1.1\r\n" + H + H + b"\r\n", 400, reference=False),
    _case("host-with-space", b"GET /version HTTP/1.1\r\nHost: a b\r\n\r\n", 400, reference=False),
    _case("host-with-userinfo", b"GET /version HTTP/1.1\r\nHost: u@a\r\n\r\n", 400, reference=False),
    _case("host-with-path", b"GET /version HTTP/1.1\r\nHost: a/b\r\n\r\n", 400, reference=False),
    # section 5 (field syntax, which framing relies on)
    _case("space-before-colon", b"GET /version HTTP/1.1\r\n" + H + b"X-A : b\r\n\r\n", 400),
    _case("obs-fold", b"GET /version HTTP/1.1\r\n" + H + b"X-A: b\r\n c\r\n\r\n", 400),
    _case("space-before-first-field", b"GET /version HTTP/1.1\r\n " + H + b"\r\n", 400),
    _case("bare-cr", b"GET /version HTTP/1.1\r\n" + H + b"X-A: b\rc\r\n\r\n", 400),
    # sections 6.1 and 6.3: framing; the connection closes
    _case(
        "te-and-cl",
        b"POST /x HTTP/1.1\r\n" + H + b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        400,
        closes=True,
    ),
    _case(
        "te-not-ending-chunked",
        b"POST /x HTTP/1.1\r\n" + H + b"Transfer-Encoding: gzip\r\n\r\nabc",
        400,
        closes=True,
        reference=False,
    ),
    _case(
        "te-chunked-twice",
        b"POST /x HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n",
        400,
        closes=True,
    ),
    _case(
        "te-unknown-coding",
        b"POST /x HTTP/1.1\r\n" + H + b"Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
        501,
        closes=True,
        reference=False,
    ),
    _case(
        "te-in-http-1.0",
        b"POST /x HTTP/1.0\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        400,
        closes=True,
        reference=False,
    ),
    _case("cl-not-a-number", b"POST /x HTTP/1.1\r\n" + H + b"Content-Length: 0x3\r\n\r\nabc", 400, closes=True),
    _case("cl-negative", b"POST /x HTTP/1.1\r\n" + H + b"Content-Length: -1\r\n\r\n", 400, closes=True),
    _case("cl-differing-list", b"POST /x HTTP/1.1\r\n" + H + b"Content-Length: 3, 4\r\n\r\nabcd", 400, closes=True),
    _case(
        "cl-differing-lines",
        b"POST /x HTTP/1.1\r\n" + H + b"Content-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
        400,
        closes=True,
    ),
]


def _exchange(target: Target, raw: bytes, *, half_close: bool) -> tuple[bytes, bool]:
    """Send ``raw``; return what came back and whether the server closed (within a bounded wait)."""
    sock = raw_connect(target, timeout=5)
    with contextlib.suppress(OSError):  # the server may close before the whole request is written
        sock.sendall(raw)
        if half_close:
            sock.shutdown(socket.SHUT_WR)  # a keep-alive answer then ends with the connection
    data = b""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            break
        except OSError:
            return data, True
        if not chunk:
            return data, True
        data += chunk
    sock.close()
    return data, False


@pytest.mark.parametrize(("raw", "status", "closes"), CASES)
def test_a_broken_must_gets_its_status(h1: Target, raw: bytes, status: int, closes: bool) -> None:
    reply, closed = _exchange(h1, raw, half_close=not closes)
    assert reply.split(b" ", 2)[1:2] == [b"%d" % status], reply[:300]
    assert b"[INFO]" not in reply  # never a sender's progress: no transfer began
    assert len(re.findall(rb"(?m)^HTTP/1\.[01] \d{3} ", reply)) == 1
    if closes:
        assert closed, "the server kept a connection whose framing it cannot trust"


def test_empty_host_and_absolute_form_are_fine(h1: Target) -> None:
    """What the RFC allows is not refused: an empty Host (no authority), an absolute-form target."""
    for raw in (
        b"GET /version HTTP/1.1\r\nHost: \r\n\r\n",
        b"GET http://a/version HTTP/1.1\r\nHost: a\r\n\r\n",
        b"GET /version HTTP/1.0\r\n\r\n",
    ):
        reply, _ = _exchange(h1, raw, half_close=True)
        assert reply.split(b" ", 2)[1:2] == [b"200"], reply[:300]
