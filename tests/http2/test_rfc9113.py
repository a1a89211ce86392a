"""RFC 9113 section 8 with raw frames: a malformed request never gets a 200 nor a transfer; and Date.

The raw client here sends what a client library refuses to (its header validation off): uppercase
names, connection-specific fields, pseudo-header mistakes, a body longer or shorter than its
``content-length``. Each must end in a 400, a stream reset or a GOAWAY, never a 200 (section 8.1.1:
a malformed request is a stream error of type PROTOCOL_ERROR; treating it as a connection error is
allowed).
"""

from __future__ import annotations

import re
import socket
import ssl
import subprocess
import time
from pathlib import Path

import h2.config
import h2.connection
import h2.events
import pytest

from ..helpers import WAIT_S, CurlExchange, Target, start_server, unique_path
from ._client import H2Client

_DATE = re.compile(rb"^(Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d{2} [A-Z][a-z]{2} \d{4} \d{2}:\d{2}:\d{2} GMT$")


def _raw_request(target: Target, headers: list[tuple[bytes, bytes]], body: bytes | None) -> list[object]:
    """Send one request with no client-side checks; return what the server answered, in order."""
    sock = socket.create_connection((target.host, target.port), timeout=WAIT_S)
    if target.base_url.startswith("https"):
        ctx = ssl.create_default_context(cafile=target.ca_path)
        ctx.set_alpn_protocols(["h2"])
        sock = ctx.wrap_socket(sock, server_hostname=target.host)
    conn = h2.connection.H2Connection(
        h2.config.H2Configuration(
            client_side=True,
            header_encoding=None,
            validate_outbound_headers=False,
            normalize_outbound_headers=False,
            split_outbound_cookies=False,
        )
    )
    conn.initiate_connection()
    sid = conn.get_next_available_stream_id()
    conn.send_headers(sid, headers, end_stream=body is None)
    if body is not None:
        conn.send_data(sid, body, end_stream=True)
    sock.sendall(conn.data_to_send())
    seen: list[object] = []
    deadline = time.monotonic() + WAIT_S
    try:
        while time.monotonic() < deadline:
            data = sock.recv(65536)
            if not data:
                break
            for event in conn.receive_data(data):
                if isinstance(event, h2.events.ResponseReceived):
                    seen.append(int(dict(event.headers or [])[b":status"]))
                elif isinstance(event, h2.events.StreamReset | h2.events.ConnectionTerminated):
                    seen.append(type(event).__name__)
                if isinstance(event, h2.events.StreamEnded | h2.events.StreamReset | h2.events.ConnectionTerminated):
                    return seen
            sock.sendall(conn.data_to_send())
    except OSError:
        seen.append("closed")
    finally:
        sock.close()
    return seen


GET = [(b":method", b"GET"), (b":path", b"/version"), (b":scheme", b"http"), (b":authority", b"127.0.0.1")]


def _post(path: str, *extra: tuple[bytes, bytes]) -> list[tuple[bytes, bytes]]:
    return [
        (b":method", b"POST"),
        (b":path", path.encode()),
        (b":scheme", b"http"),
        (b":authority", b"127.0.0.1"),
        *extra,
    ]


CASES = {
    "uppercase-name": (GET + [(b"X-Up", b"v")], None),
    "connection-header": (GET + [(b"connection", b"keep-alive")], None),
    "keep-alive-header": (GET + [(b"keep-alive", b"5")], None),
    "transfer-encoding": (_post("/rfc9113-te", (b"transfer-encoding", b"chunked")), b"abc"),
    "te-not-trailers": (GET + [(b"te", b"gzip")], None),
    "no-method": (GET[1:], None),
    "no-path": (GET[:1] + GET[2:], None),
    "empty-path": (GET[:1] + [(b":path", b"")] + GET[2:], None),
    "no-scheme": (GET[:2] + GET[3:], None),
    "duplicate-pseudo": (GET + [(b":method", b"GET")], None),
    "pseudo-after-field": (GET[:1] + [(b"x-a", b"b")] + GET[1:], None),
    "response-pseudo": (GET + [(b":status", b"200")], None),
    "unknown-pseudo": (GET + [(b":x", b"y")], None),
    "host-differs": (GET + [(b"host", b"other")], None),
    "asterisk-not-options": (GET[:1] + [(b":path", b"*")] + GET[2:], None),
    "path-not-absolute": (GET[:1] + [(b":path", b"version")] + GET[2:], None),
    "value-with-crlf": (GET + [(b"x-a", b"b\r\nc")], None),
    "body-shorter-than-length": (_post("/rfc9113-short", (b"content-length", b"10")), b"abc"),
    "body-longer-than-length": (_post("/rfc9113-long", (b"content-length", b"2")), b"abc"),
    "bad-content-length": (_post("/rfc9113-bad", (b"content-length", b"x")), b"abc"),
    "length-but-no-body": (_post("/rfc9113-none", (b"content-length", b"5")), None),
    "userinfo-in-authority": (GET[:3] + [(b":authority", b"user@127.0.0.1")], None),
    "space-in-authority": (GET[:3] + [(b":authority", b"a b")], None),
}


@pytest.mark.parametrize("case", list(CASES))
def test_malformed_request_never_gets_a_200(h2target: Target, case: str) -> None:
    headers, body = CASES[case]
    seen = _raw_request(h2target, headers, body)
    assert 200 not in seen, seen
    assert seen and (seen[0] == 400 or seen[0] in ("StreamReset", "ConnectionTerminated", "closed")), seen


def test_body_not_matching_its_length_is_no_transfer(h2target: Target) -> None:
    """The head comes first and starts the transfer; the short body then cuts it: the receiver sees a cut."""
    path = unique_path("h2len")
    receiver = subprocess.Popen(h2target.curl(h2target.url(path)), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    time.sleep(0.5)
    client = H2Client(h2target)
    stream = client.request("POST", path, headers=[(b"content-length", b"10")], end=False)
    assert client.pump_until(lambda: client.streams[stream].status == 200)  # the sender is answered at once
    client.send(stream, b"abc", end=True)  # 3 bytes of 10
    client.pump_until(lambda: client.closed or client.terminated is not None or client.streams[stream].reset)
    client.close()
    got, _ = receiver.communicate(timeout=WAIT_S)
    assert receiver.returncode != 0  # a cut, never a complete transfer
    assert got in (b"", b"abc")


def test_every_response_has_a_date(h2target: Target) -> None:
    client = H2Client(h2target)
    try:
        streams = [client.request("GET", "/version"), client.request("OPTIONS", "/x"), client.request("DELETE", "/x")]
        assert client.pump_until(lambda: all(client.streams[s].ended for s in streams))
        for sid in streams:
            dates = [v for k, v in client.streams[sid].headers if k == b"date"]
            assert len(dates) == 1 and _DATE.match(dates[0]), client.streams[sid].headers
            assert all(k == k.lower() for k, _ in client.streams[sid].headers)
    finally:
        client.close()


@pytest.mark.ours
def test_one_date_when_a_worker_relays_the_stream(tmp_path: Path) -> None:
    """With --workers, a stream relayed to the path's owner gets the edge's Date only, not the owner's too."""
    proc = start_server("--workers", "3")
    try:
        target = proc.target("h2c")
        paths = [unique_path("w") for _ in range(6)]  # some are owned by another worker than the edge's
        receivers = [CurlExchange(target, target.url(p), tmp=tmp_path) for p in paths]
        time.sleep(0.5)
        for path in paths:
            subprocess.run(
                target.curl("-T", "-", target.url(path)), input=b"x", capture_output=True, timeout=WAIT_S, check=True
            )
        for receiver in receivers:
            got = receiver.finish()
            assert got.body == b"x"
            assert len(got.all("date")) == 1, got.headers
    finally:
        proc.stop()
