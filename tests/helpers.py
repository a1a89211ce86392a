"""Shared test helpers: starting the real server, curl processes, raw sockets. No mocks anywhere."""

from __future__ import annotations

import os
import socket
import ssl
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

#: Every wait in the tests is bounded by this (seconds) unless a test says otherwise.
WAIT_S = 20.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def stop_process(proc: subprocess.Popen[Any], timeout: float = 10.0) -> None:
    """SIGTERM, then SIGKILL if it has not exited within ``timeout`` seconds (every wait bounded)."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def wait_for_port(port: int, proc: subprocess.Popen[bytes] | None = None, timeout: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited early with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port}")


def unique_path(prefix: str = "t") -> str:
    return f"/{prefix}-{uuid.uuid4().hex[:12]}"


@dataclass
class Target:
    """One server endpoint and the way curl must talk to it (HTTP/1.1, h2c, TLS...)."""

    name: str
    base_url: str
    curl_args: list[str] = field(default_factory=list)
    ca_path: str | None = None

    def url(self, path: str) -> str:
        return self.base_url + path

    @property
    def host(self) -> str:
        return urlsplit(self.base_url).hostname or "127.0.0.1"

    @property
    def port(self) -> int:
        return urlsplit(self.base_url).port or 80

    def curl(self, *args: str) -> list[str]:
        """A curl command line for this target: silent, errors shown, no buffering of the output."""
        return ["curl", "-sS", "-N", *self.curl_args, *args]

    def run_curl(self, *args: str, input: bytes | None = None, timeout: float = WAIT_S) -> bytes:
        return subprocess.run(self.curl(*args), input=input, capture_output=True, timeout=timeout, check=True).stdout

    def popen_curl(self, *args: str, stdin: int | None = None) -> subprocess.Popen[bytes]:
        return subprocess.Popen(self.curl(*args), stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


@dataclass
class ServerProcess:
    """Our server, running as its own process."""

    proc: subprocess.Popen[bytes]
    http_port: int
    log_path: Path
    https_port: int | None = None
    ca_path: str | None = None

    def target(self, transport: str = "h1") -> Target:
        if transport == "h1":
            return Target(name="h1", base_url=f"http://127.0.0.1:{self.http_port}")
        if transport == "h2c":
            return Target(
                name="h2c", base_url=f"http://127.0.0.1:{self.http_port}", curl_args=["--http2-prior-knowledge"]
            )
        assert self.https_port is not None and self.ca_path is not None, "server started without TLS"
        base = f"https://127.0.0.1:{self.https_port}"
        if transport == "h1-tls":
            return Target(
                name=transport, base_url=base, curl_args=["--http1.1", "--cacert", self.ca_path], ca_path=self.ca_path
            )
        if transport == "h2":
            return Target(
                name=transport, base_url=base, curl_args=["--http2", "--cacert", self.ca_path], ca_path=self.ca_path
            )
        raise ValueError(transport)

    def rss_kib(self) -> int:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise RuntimeError("no VmRSS")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        """Stop the server, then fail if it logged a traceback: whatever a client sent, it answers or logs a
        line (a traceback a test did not look for was a connection cut short without a word)."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=2)
            except subprocess.TimeoutExpired:
                # transfers left running wait out the shutdown grace (30 s by default): a second signal cuts them
                stop_process(self.proc)
        log = self.log()
        at = log.find("Traceback (most recent call last)")
        if at >= 0:
            count = log.count("Traceback (most recent call last)")
            raise AssertionError(
                f"the server logged {count} traceback(s); the first:\n{log[max(0, at - 300) : at + 3000]}"
            )


def start_server(
    *extra_args: str,
    https: tuple[str, str, str] | None = None,
    env: dict[str, str] | None = None,
    log_dir: Path | None = None,
) -> ServerProcess:
    """Start ``python -m piping_server`` on free ports; ``https`` is (cert, key, ca) paths."""
    port = free_port()
    args = [sys.executable, "-m", "piping_server", "--host", "127.0.0.1", "--http-port", str(port)]
    https_port = None
    if https is not None:
        https_port = free_port()
        args += ["--enable-https", "--https-port", str(https_port), "--crt-path", https[0], "--key-path", https[1]]
    args += list(extra_args)
    log_dir = log_dir or Path(os.environ.get("TMPDIR", "/tmp"))
    log_path = log_dir / f"piping-server-{port}.log"
    log_file = log_path.open("wb")
    proc = subprocess.Popen(args, stdout=log_file, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
    log_file.close()
    try:
        wait_for_port(port, proc)
        if https_port is not None:
            wait_for_port(https_port, proc)
    except Exception:
        proc.kill()
        raise RuntimeError(f"server did not start: {log_path.read_text(errors='replace')}") from None
    return ServerProcess(
        proc=proc, http_port=port, log_path=log_path, https_port=https_port, ca_path=https[2] if https else None
    )


def raw_connect(target: Target, timeout: float = WAIT_S) -> socket.socket:
    sock = socket.create_connection((target.host, target.port), timeout=timeout)
    return sock


def connect(target: Target, alpn: str) -> socket.socket:
    """A connection to ``target``: over TLS offering ALPN ``alpn`` when it is an https target, else plain TCP."""
    sock = socket.create_connection((target.host, target.port), timeout=WAIT_S)
    if not target.base_url.startswith("https"):
        return sock
    ctx = ssl.create_default_context(cafile=target.ca_path)
    ctx.set_alpn_protocols([alpn])
    return ctx.wrap_socket(sock, server_hostname=target.host)


def recv_until(sock: socket.socket, marker: bytes | None, timeout: float = WAIT_S, limit: int = 1 << 24) -> bytes:
    """Read until ``marker`` has been seen, or the peer closes (``marker=None``: only that); bounded."""
    deadline = time.monotonic() + timeout
    data = b""
    while (marker is None or marker not in data) and len(data) < limit and time.monotonic() < deadline:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            break
        if not chunk:
            break
        data += chunk
    return data


def recv_all(sock: socket.socket, timeout: float = WAIT_S) -> bytes:
    """Read until the peer closes, bounded in time."""
    return recv_until(sock, None, timeout=timeout)


def wait_until(predicate: object, timeout: float = WAIT_S, interval: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(interval)
    return False


@dataclass
class Response:
    status: int
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key == name.lower():
                return value
        return None

    def all(self, name: str) -> list[str]:
        return [value for key, value in self.headers if key == name.lower()]


def parse_head(raw: bytes) -> tuple[int, list[tuple[str, str]]]:
    """The last response head in a curl ``-D`` dump (skips 100 Continue)."""
    blocks = [b for b in raw.replace(b"\r\n", b"\n").split(b"\n\n") if b.strip()]
    block = blocks[-1].decode("latin-1").split("\n")
    status = int(block[0].split()[1])
    headers = []
    for line in block[1:]:
        name, _, value = line.partition(":")
        headers.append((name.strip().lower(), value.strip()))
    return status, headers


class CurlExchange:
    """A curl process whose response head goes to a file and whose body goes to a pipe."""

    def __init__(self, target: Target, *args: str, stdin: int | None = None, tmp: Path) -> None:
        self.head_path = tmp / f"head-{uuid.uuid4().hex}"
        self.proc = target.popen_curl("-D", str(self.head_path), *args, stdin=stdin)

    def finish(self, input: bytes | None = None, timeout: float = WAIT_S) -> Response:
        out, err = self.proc.communicate(input=input, timeout=timeout)
        status, headers = parse_head(self.head_path.read_bytes()) if self.head_path.exists() else (0, [])
        self.stderr = err
        return Response(status=status, headers=headers, body=out)


def fetch(target: Target, path: str, *args: str, tmp: Path, input: bytes | None = None) -> Response:
    """One whole request with curl (method and body set by ``args``)."""
    exchange = CurlExchange(
        target, *args, target.url(path), stdin=subprocess.PIPE if input is not None else None, tmp=tmp
    )
    response = exchange.finish(input=input)
    return response


def make_tls_files(directory: Path, *, ca: object | None = None, rsa: bool = False) -> tuple[str, str, str]:
    """Write a certificate for 127.0.0.1 and localhost, its key and its CA (trustme) as PEM files.

    Returns (cert, key, ca) paths. Give ``ca`` (a ``trustme.CA``) to issue from an existing CA; the
    key is ECDSA unless ``rsa``.
    """
    import trustme

    key_type = trustme.KeyType.RSA if rsa else trustme.KeyType.ECDSA
    authority = ca if isinstance(ca, trustme.CA) else trustme.CA(key_type=key_type)
    issued = authority.issue_cert("127.0.0.1", "localhost", key_type=key_type)
    directory.mkdir(parents=True, exist_ok=True)
    cert, key, ca_path = directory / "server.crt", directory / "server.key", directory / "ca.crt"
    cert.write_bytes(b"".join(blob.bytes() for blob in issued.cert_chain_pems))
    key.write_bytes(issued.private_key_pem.bytes())
    ca_path.write_bytes(authority.cert_pem.bytes())
    return str(cert), str(key), str(ca_path)
