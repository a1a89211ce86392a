"""Raw HTTP/1.1 peers and small servers for the operator tests: bounded in time, 127.0.0.1 only."""

from __future__ import annotations

import base64
import http.server
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ..helpers import WAIT_S, ServerProcess, free_port, recv_all, recv_until, start_server, unique_path, wait_for_port


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def request(
    port: int,
    method: str,
    path: str,
    *,
    headers: dict[str, str] | None = None,
    body: bytes = b"",
    timeout: float = WAIT_S,
) -> tuple[int, dict[str, list[str]], bytes]:
    """One whole request on its own connection; returns (status, headers, body)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        head = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n"
        for name, value in (headers or {}).items():
            head += f"{name}: {value}\r\n"
        if method in ("POST", "PUT"):
            head += f"Content-Length: {len(body)}\r\n"
        sock.sendall(head.encode() + b"\r\n" + body)
        raw = recv_all(sock, timeout=timeout)
    return parse_response(raw)


def parse_response(raw: bytes) -> tuple[int, dict[str, list[str]], bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1]) if lines and lines[0].startswith("HTTP/") else 0
    headers: dict[str, list[str]] = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers.setdefault(name.strip().lower(), []).append(value.strip())
    if "chunked" in headers.get("transfer-encoding", [""])[0]:
        body = dechunk(body)[0]
    return status, headers, body


def dechunk(data: bytes) -> tuple[bytes, bool]:
    """(the body, whether the final zero-size chunk was there)."""
    out = b""
    while True:
        size_line, sep, rest = data.partition(b"\r\n")
        if not sep:
            return out, False
        try:
            size = int(size_line.split(b";")[0], 16)
        except ValueError:
            return out, False
        if size == 0:
            return out, True
        if len(rest) < size + 2:
            return out + rest[:size], False
        out += rest[:size]
        data = rest[size + 2 :]


class Sender:
    """A chunked upload we feed by hand, to keep a transfer running as long as a test needs."""

    def __init__(self, port: int, path: str, *, headers: dict[str, str] | None = None) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=WAIT_S)
        head = f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n"
        for name, value in (headers or {}).items():
            head += f"{name}: {value}\r\n"
        self.sock.sendall(head.encode() + b"\r\n")

    def send(self, data: bytes) -> None:
        self.sock.sendall(b"%x\r\n%s\r\n" % (len(data), data))

    def end(self) -> None:
        self.sock.sendall(b"0\r\n\r\n")

    def read_until(self, marker: bytes, timeout: float = WAIT_S) -> bytes:
        return recv_until(self.sock, marker, timeout=timeout)

    def close(self) -> None:
        self.sock.close()


class Receiver:
    """A GET whose response we read as it comes."""

    def __init__(self, port: int, path: str, *, headers: dict[str, str] | None = None) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=WAIT_S)
        head = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
        for name, value in (headers or {}).items():
            head += f"{name}: {value}\r\n"
        self.sock.sendall(head.encode() + b"\r\n")
        self.data = b""

    def read_until(self, marker: bytes, timeout: float = WAIT_S) -> bytes:
        self.data += recv_until(self.sock, marker, timeout=timeout)
        return self.data

    def read_to_close(self, timeout: float = WAIT_S) -> bytes:
        self.data += recv_all(self.sock, timeout=timeout)
        return self.data

    def status(self) -> int:
        return parse_response(self.data)[0]

    def body(self) -> tuple[bytes, bool]:
        """(body so far, whether it is complete: the final chunk, or Content-Length bytes)."""
        _, headers, _ = parse_response(self.data.partition(b"\r\n\r\n")[0] + b"\r\n\r\n")
        raw = self.data.partition(b"\r\n\r\n")[2]
        if "content-length" in headers:
            return raw, len(raw) == int(headers["content-length"][0])
        return dechunk(raw)

    def close(self) -> None:
        self.sock.close()


def running_transfer(port: int) -> tuple[Sender, Receiver]:
    """A transfer on a fresh path whose first part (``part one, ``) has reached its receiver."""
    path = unique_path()
    sender, receiver = Sender(port, path), Receiver(port, path)
    sender.send(b"part one, ")
    receiver.read_until(b"part one, ")
    return sender, receiver


def finish_transfer(sender: Sender, receiver: Receiver) -> None:
    """The second part of a :func:`running_transfer` and its end reach the receiver, whole."""
    sender.send(b"part two")
    sender.end()
    receiver.read_to_close()
    assert receiver.body() == (b"part one, part two", True)


def wait_log(server: ServerProcess, text: str, timeout: float = WAIT_S) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if text in server.log():
            return True
        time.sleep(0.05)
    return False


def metrics(port: int) -> dict[str, float]:
    """Every sample of /metrics, keyed by name plus labels as written."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=WAIT_S) as response:
        text = response.read().decode()
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            samples[key] = float(value)
    return samples


@contextmanager
def server_with(
    *args: str, config: str | None = None, tmp: Path, env: dict[str, str] | None = None, metrics_port: bool = False
) -> Iterator[tuple[ServerProcess, int]]:
    """Our server with these flags (and config text); yields it and its metrics port (0 when none)."""
    extra = list(args)
    if config is not None:
        path = tmp / f"piping-{free_port()}.toml"
        path.write_text(config)
        extra += ["--config", str(path)]
    mport = 0
    if metrics_port:
        mport = free_port()
        extra += ["--metrics-port", str(mport)]
    server = start_server(*extra, env=env, log_dir=tmp)
    try:
        if mport:
            wait_for_port(mport, server.proc)
        yield server, mport
    finally:
        server.stop()


class JwksServer:
    """A JWKS document on 127.0.0.1, served from a thread."""

    def __init__(self, jwks: dict[str, object]) -> None:
        body = json.dumps(jwks).encode()

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (the stdlib's name)
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/jwks.json"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def run_cli(
    *args: str, input: str | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``python -m piping_server`` with these arguments, to its end."""
    return subprocess.run(
        [sys.executable, "-m", "piping_server", *args],
        input=input,
        capture_output=True,
        text=True,
        timeout=WAIT_S,
        env={**os.environ, **(env or {})},
    )
