"""``--forwarded-allow-ips``: behind a trusted proxy, logs and per-client limits see the real client.

The real server process, raw HTTP/1.1 requests from 127.0.0.1 playing the proxy's part (the
nginx and HAProxy runs are in test_proxies.py).
"""

from __future__ import annotations

import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from ..helpers import WAIT_S, ServerProcess, recv_all, recv_until, start_server, unique_path, wait_until

pytestmark = pytest.mark.ours


@contextmanager
def server_with(*args: str, tmp: Path) -> Iterator[ServerProcess]:
    server = start_server("--access-log", *args, log_dir=tmp)
    try:
        yield server
    finally:
        server.stop()


def get(port: int, path: str, headers: dict[str, str]) -> bytes:
    """A whole GET on its own connection; the raw response."""
    with socket.create_connection(("127.0.0.1", port), timeout=WAIT_S) as sock:
        head = f"GET {path} HTTP/1.1\r\nHost: relay.example\r\nConnection: close\r\n"
        head += "".join(f"{name}: {value}\r\n" for name, value in headers.items())
        sock.sendall(head.encode() + b"\r\n")
        return recv_all(sock)


def access_line(server: ServerProcess, path: str) -> str:
    """The access log line of the request for ``path`` (waits for it, bounded)."""
    pattern = re.compile(rf'^.* INFO (\S+) "GET {re.escape(path)}" .*$', re.MULTILINE)
    assert wait_until(lambda: pattern.search(server.log()) is not None, timeout=WAIT_S), server.log()
    match = pattern.search(server.log())
    assert match is not None
    return match.group(0)


def client_of(server: ServerProcess, path: str) -> str:
    return access_line(server, path).split(" INFO ", 1)[1].split(" ", 1)[0]


def test_trusted_proxy_names_the_client(tmp_path: Path) -> None:
    """From 127.0.0.1 (the default trust), X-Forwarded-For's rightmost untrusted hop is the client."""
    with server_with(tmp=tmp_path) as server:
        cases = {
            "/version?a": ({"X-Forwarded-For": "203.0.113.7"}, "203.0.113.7"),
            # a client's own forged entry (left) is ignored; 127.0.0.1 (right) is a trusted hop
            "/version?b": ({"X-Forwarded-For": "6.6.6.6, 198.51.100.2, 127.0.0.1"}, "198.51.100.2"),
            "/version?c": ({"Forwarded": 'for="[2001:db8::1]:4711";proto=https'}, "2001:db8::1"),
            "/version?d": ({}, "127.0.0.1"),
        }
        for target, (headers, _) in cases.items():
            assert get(server.http_port, target, headers).startswith(b"HTTP/1.1 200")
        lines = {line.split(" INFO ", 1)[1].split(" ", 1)[0] for line in server.log().splitlines() if '"GET' in line}
        assert lines == {"203.0.113.7", "198.51.100.2", "2001:db8::1", "127.0.0.1"}


def test_scheme_from_the_proxy(tmp_path: Path) -> None:
    """X-Forwarded-Proto: https from a trusted proxy marks the request as TLS in the access log."""
    with server_with(tmp=tmp_path) as server:
        path = unique_path("proto")
        get(server.http_port, path + "-page/../../version", {})  # a normalised path: logged as /version
        with socket.create_connection(("127.0.0.1", server.http_port), timeout=WAIT_S) as sock:
            sock.sendall(
                f"OPTIONS {path} HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 192.0.2.9\r\n"
                "X-Forwarded-Proto: https\r\nConnection: close\r\n\r\n".encode()
            )
            assert recv_all(sock).startswith(b"HTTP/1.1 200")
        pattern = re.compile(rf'192\.0\.2\.9 "OPTIONS {re.escape(path)}" 200 .* h1\+tls$', re.MULTILINE)
        assert wait_until(lambda: pattern.search(server.log()) is not None), server.log()


def test_untrusted_peer_is_taken_as_is(tmp_path: Path) -> None:
    """When 127.0.0.1 is not a trusted proxy, its forwarding headers are ignored (but /help keeps its rule)."""
    with server_with("--forwarded-allow-ips", "10.0.0.0/8", tmp=tmp_path) as server:
        response = get(server.http_port, "/help", {"X-Forwarded-For": "203.0.113.7", "X-Forwarded-Proto": "https"})
        # docs/protocol.md section 2: /help believes X-Forwarded-Proto from anyone, as the reference does
        assert b"https://relay.example/" in response
        assert client_of(server, "/help") == "127.0.0.1"
        assert not access_line(server, "/help").endswith("+tls")


def test_per_client_waiting_limit_sees_the_real_client(tmp_path: Path) -> None:
    """--max-waiting-per-client 1 counts clients behind the proxy, not the proxy's one address."""
    with server_with("--max-waiting-per-client", "1", tmp=tmp_path) as server:
        socks: list[socket.socket] = []

        def request(method: str, path: str, client: str, body: bytes = b"") -> socket.socket:
            sock = socket.create_connection(("127.0.0.1", server.http_port), timeout=WAIT_S)
            socks.append(sock)
            sock.sendall(
                f"{method} {path} HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: {client}\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
                + body
            )
            return sock

        try:
            request("GET", unique_path(), "198.51.100.1")
            other = unique_path()
            waiting = request("GET", other, "198.51.100.2")
            # the first client's next waiting request is refused (bounded: one may pass if it overtook the first)
            answers = [
                recv_until(request("GET", unique_path(), "198.51.100.1"), b"address.\n", timeout=2) for _ in range(2)
            ]
            assert any(a.startswith(b"HTTP/1.1 429") for a in answers), answers
            refused = next(a for a in answers if a.startswith(b"HTTP/1.1 429"))
            assert refused.endswith(b"[ERROR] Too many senders and receivers are waiting from your address.\n")
            # the other client was admitted: its receiver gets a sender's body
            request("POST", other, "198.51.100.2", b"hello")
            assert recv_all(waiting).endswith(b"hello")
        finally:
            for sock in socks:
                sock.close()


def hold_connection(port: int) -> socket.socket:
    """A busy connection the server has admitted: a sender waiting for its receiver (an idle one would be
    closed to make room for the next, see docs/operating.md)."""
    for _ in range(50):
        sock = socket.create_connection(("127.0.0.1", port), timeout=WAIT_S)
        sock.sendall(f"POST {unique_path()} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n".encode())
        if b"Waiting for 1 receiver(s)" in recv_until(sock, b"receiver(s)..."):
            return sock
        sock.close()  # the start-up probe's connection was still counted: try again
    raise AssertionError("no connection admitted")


def test_per_client_connection_limit_spares_the_proxy(tmp_path: Path) -> None:
    """A trusted proxy's connections carry many clients: --max-connections-per-client does not count them."""
    with server_with("--max-connections-per-client", "1", tmp=tmp_path) as server:
        held = hold_connection(server.http_port)
        try:
            assert get(server.http_port, "/version", {}).startswith(b"HTTP/1.1 200")
        finally:
            held.close()
    with server_with("--max-connections-per-client", "1", "--forwarded-allow-ips", "", tmp=tmp_path) as server:
        held = hold_connection(server.http_port)
        try:
            assert get(server.http_port, "/version", {}).startswith(b"HTTP/1.1 429")
        finally:
            held.close()


def test_bad_value_is_a_clear_error(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "piping_server", "--http-port", "0", "--forwarded-allow-ips", "127.0.0.1,proxy.lan"],
        capture_output=True,
        timeout=WAIT_S,
    )
    assert result.returncode == 2
    assert result.stderr.decode() == (
        "piping-server: error: server.forwarded_allow_ips: not an IP address or network: 'proxy.lan'\n"
    )
    config = tmp_path / "piping.toml"
    config.write_text('[server]\nforwarded_allow_ips = "10.0.0.0/33"\n')
    result = subprocess.run(
        [sys.executable, "-m", "piping_server", "--check-config", str(config)], capture_output=True, timeout=WAIT_S
    )
    assert result.returncode == 2 and b"server.forwarded_allow_ips: not an IP address or network" in result.stderr
    assert b"Traceback" not in result.stderr


TRUSTED = "127.0.0.1, 10.0.0.0/8"
ORIGIN_CASES = [
    # (peer, headers, expected client, expected TLS)
    ("127.0.0.1", [("x-forwarded-for", "203.0.113.7")], "203.0.113.7", False),
    ("127.0.0.1", [("x-forwarded-for", "6.6.6.6, 203.0.113.7, 10.1.2.3")], "203.0.113.7", False),
    ("127.0.0.1", [("x-forwarded-for", "10.0.0.1, 10.0.0.2")], "10.0.0.1", False),  # all trusted: leftmost
    ("127.0.0.1", [("x-forwarded-for", "203.0.113.7:4711")], "203.0.113.7", False),
    ("127.0.0.1", [("x-forwarded-for", "1.1.1.1"), ("x-forwarded-for", "2.2.2.2")], "2.2.2.2", False),
    ("127.0.0.1", [("x-forwarded-for", "a, b"), ("x-forwarded-proto", "http, https")], "b", True),
    ("::ffff:127.0.0.1", [("x-forwarded-for", "2001:db8::1"), ("x-forwarded-proto", "https")], "2001:db8::1", True),
    ("192.0.2.1", [("x-forwarded-for", "203.0.113.7"), ("x-forwarded-proto", "https")], "192.0.2.1", False),
    ("127.0.0.1", [("forwarded", "for=192.0.2.60;proto=https;by=203.0.113.43")], "192.0.2.60", True),
    (
        "127.0.0.1",
        [("forwarded", 'for="[2001:db8:cafe::17]:4711", for=10.0.0.9;proto=http')],
        "2001:db8:cafe::17",
        False,
    ),
    ("127.0.0.1", [("forwarded", 'for="_hidden", for=10.0.0.9')], "_hidden", False),
    ("127.0.0.1", [("forwarded", 'for="<script>"')], "unknown", False),
    ("127.0.0.1", [("forwarded", "for=1.2.3.4"), ("x-forwarded-for", "5.6.7.8")], "5.6.7.8", False),
    ("127.0.0.1", [("forwarded", "by=10.0.0.1")], "127.0.0.1", False),  # names no client
    ("127.0.0.1", [], "127.0.0.1", False),
]


@pytest.mark.parametrize(("peer", "headers", "client", "tls"), ORIGIN_CASES)
def test_forwarded_origin(peer: str, headers: list[tuple[str, str]], client: str, tls: bool) -> None:
    """The rules of the module docstring, one case each (the functions the server calls, no process)."""
    from piping_server.relay._proxies import TrustedProxies, forwarded_origin

    raw = [(name.encode(), value.encode()) for name, value in headers]
    assert forwarded_origin(peer, False, raw, TrustedProxies(TRUSTED)) == (client, tls)
