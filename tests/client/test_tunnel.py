"""Tunnels over real servers: an echo service, the curl + socat one-liners, --multiplex, real ssh/sshd."""

from __future__ import annotations

import os
import select
import shutil
import socket
import socketserver
import subprocess
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from conftest import env, free_port, needs, start_piping, wait_port


class _Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        while data := self.request.recv(65536):
            self.request.sendall(data)
        self.request.shutdown(socket.SHUT_WR)


@pytest.fixture
def echo_port() -> Iterator[int]:
    socketserver.ThreadingTCPServer.allow_reuse_address = True
    srv = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Echo)
    srv.daemon_threads = True
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield srv.server_address[1]
    srv.shutdown()
    srv.server_close()


class _SpeaksFirst(socketserver.BaseRequestHandler):
    """A service that greets before it reads (as SSH and VNC servers do), then echoes."""

    def handle(self) -> None:
        self.request.sendall(BANNER)
        while data := self.request.recv(65536):
            self.request.sendall(data)
        self.request.shutdown(socket.SHUT_WR)


BANNER = b"RFB 003.008\n"


@pytest.fixture
def speaks_first_port() -> Iterator[int]:
    socketserver.ThreadingTCPServer.allow_reuse_address = True
    srv = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _SpeaksFirst)
    srv.daemon_threads = True
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield srv.server_address[1]
    srv.shutdown()
    srv.server_close()


def _recv_exactly(s: socket.socket, n: int) -> bytes:
    """Up to n bytes (fewer when the connection ends first)."""
    got = b""
    for _ in range(1000):
        if len(got) >= n:
            break
        chunk = s.recv(n - len(got))
        if not chunk:
            break
        got += chunk
    return got


def echo_roundtrip(port: int, data: bytes, timeout: float = 30) -> bytes:
    """Send data, half-close, read everything back."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        got = bytearray()

        def reader() -> None:
            while chunk := s.recv(65536):
                got.extend(chunk)

        t = threading.Thread(target=reader, daemon=True)
        t.start()
        s.sendall(data)
        s.shutdown(socket.SHUT_WR)
        t.join(timeout)
        return bytes(got)


def wait_listening(proc: subprocess.Popen[bytes], timeout: float = 20) -> None:
    """Wait for the client's "Listening" line: probing the port would use up plain mode's one connection."""
    assert proc.stderr is not None
    deadline = time.monotonic() + timeout
    seen = b""
    for _ in range(50):
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([proc.stderr], [], [], left)[0]:
            break
        line = proc.stderr.readline()
        seen += line
        if b"Listening on" in line:
            return
        if not line:
            break
    raise AssertionError(f"tunnel client did not start listening: {seen!r}")


def wait_bound(port: int, timeout: float = 20) -> None:
    """Wait until something listens on port, without connecting to it: binding it fails then."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                return
        time.sleep(0.05)
    raise TimeoutError(f"nothing bound {port}")


def connect_when_listening(proc: subprocess.Popen[bytes], port: int, data: bytes) -> bytes:
    wait_listening(proc)
    return echo_roundtrip(port, data)


def stop(*procs: subprocess.Popen[bytes]) -> None:
    for p in procs:
        if p.poll() is None:
            p.kill()
        p.wait(10)


def test_plain_tunnel_carries_echo(server: str, path: str, echo_port: int) -> None:
    lport = free_port()
    srv = start_piping("tunnel", "server", "-q", "--server", server, "--port", str(echo_port), path + "/1", path + "/2")
    cli = start_piping("tunnel", "client", "--server", server, "--port", str(lport), path + "/1", path + "/2")
    try:
        data = os.urandom(2_000_000)
        assert connect_when_listening(cli, lport, data) == data
        assert cli.wait(20) == 0
        assert srv.wait(20) == 0
    finally:
        stop(srv, cli)


def test_client_with_curl_socat_server_oneliner(server: str, path: str, echo_port: int) -> None:
    needs("curl")
    needs("socat")
    lport = free_port()
    # The seed's server side, with socat in place of nc (socat passes the half-close on).
    oneliner = subprocess.Popen(
        [
            "bash",
            "-c",
            f"curl -sSN {server}{path}/aaa | socat - TCP:127.0.0.1:{echo_port} | curl -sSNT - {server}{path}/bbb",
        ],
        stdout=subprocess.DEVNULL,
    )
    cli = start_piping("tunnel", "client", "--server", server, "--port", str(lport), f"{path}/aaa", f"{path}/bbb")
    try:
        data = b"hello over the one-liner\n" * 1000
        assert connect_when_listening(cli, lport, data) == data
        assert cli.wait(20) == 0
        assert oneliner.wait(20) == 0
    finally:
        stop(oneliner, cli)


def test_server_with_socat_client_oneliner(server: str, path: str, echo_port: int) -> None:
    needs("curl")
    needs("socat")
    lport = free_port()
    srv = start_piping(
        "tunnel", "server", "-q", "--server", server, "--port", str(echo_port), f"{path}/aaa", f"{path}/bbb"
    )
    u = server.replace(":", "\\:")
    oneliner = subprocess.Popen(
        [
            "socat",
            # -t: after our half-close socat waits only 0.5 s by default for the echo to come back,
            # less than a loaded machine may take through the whole tunnel.
            "-t",
            "30",
            f"TCP-LISTEN:{lport},bind=127.0.0.1,reuseaddr",
            f"EXEC:curl -NsS {u}{path}/bbb!!EXEC:curl -NsST - {u}{path}/aaa",
        ]
    )
    try:
        data = os.urandom(500_000)
        wait_bound(lport)  # not a probe connection: socat serves exactly one
        assert echo_roundtrip(lport, data) == data
        assert srv.wait(20) == 0
    finally:
        stop(oneliner, srv)


def test_plain_tunnel_to_a_service_that_speaks_first(server: str, path: str, speaks_first_port: int) -> None:
    """Issue 21 item 13: the client says nothing before the service's greeting. With the reference
    the server host's GET gets no response head before the client host's first byte: the server host
    must connect to the service anyway (the client host's GET on PATH2 tells it that it is there)."""
    lport = free_port()
    srv = start_piping("tunnel", "server", "-q", "-s", server, "-p", str(speaks_first_port), path)
    cli = start_piping("tunnel", "client", "-s", server, "-p", str(lport), path)
    try:
        wait_listening(cli)
        with socket.create_connection(("127.0.0.1", lport), timeout=20) as s:
            assert _recv_exactly(s, len(BANNER)) == BANNER, "no greeting from the service through the tunnel"
            s.sendall(b"then the client")
            assert _recv_exactly(s, 15) == b"then the client"
            s.shutdown(socket.SHUT_WR)
            assert _recv_exactly(s, 1) == b""
        assert cli.wait(20) == 0
        assert srv.wait(20) == 0
    finally:
        stop(srv, cli)


def test_single_path_form(server: str, path: str, echo_port: int) -> None:
    lport = free_port()
    srv = start_piping("tunnel", "server", "-q", "-s", server, "-p", str(echo_port), path)
    cli = start_piping("tunnel", "client", "-s", server, "-p", str(lport), path)
    try:
        assert connect_when_listening(cli, lport, b"one path") == b"one path"
        assert cli.wait(20) == 0 and srv.wait(20) == 0
    finally:
        stop(srv, cli)


def test_multiplex_ten_connections_at_once(server: str, path: str, echo_port: int) -> None:
    lport = free_port()
    args = ["--multiplex", "--server", server]
    srv = start_piping("tunnel", "server", "-q", *args, "--port", str(echo_port), path + "/1", path + "/2")
    cli = start_piping("tunnel", "client", *args, "--port", str(lport), path + "/1", path + "/2")
    try:
        wait_listening(cli)
        payloads = [os.urandom(1_000_000 + i) for i in range(10)]
        with ThreadPoolExecutor(10) as pool:
            results = list(pool.map(lambda d: echo_roundtrip(lport, d), payloads))
        assert results == payloads
        # The session survives its connections: a second round works too.
        assert echo_roundtrip(lport, b"again") == b"again"
    finally:
        stop(srv, cli)


def test_multiplex_peer_killed_is_an_error(server: str, path: str, echo_port: int) -> None:
    lport = free_port()
    args = ["-m", "-s", server]
    srv = start_piping("tunnel", "server", "-q", *args, "-p", str(echo_port), path + "/1", path + "/2")
    cli = start_piping("tunnel", "client", *args, "-p", str(lport), path + "/1", path + "/2")
    try:
        wait_listening(cli)
        assert echo_roundtrip(lport, b"x") == b"x"
        # The server host keeps serving later client hosts (test_tunnel_stop.py); the client host ends.
        srv.kill()
        code = cli.wait(20)
        assert code == 5
        assert cli.stderr is not None
        assert cli.stderr.read().decode().endswith("piping: error: the tunnel server host went away\n")
    finally:
        stop(srv, cli)


# ------------------------------------------------------------------------------------------- real ssh


@pytest.fixture
def sshd(tmp_path: Path) -> Iterator[tuple[int, list[str]]]:
    """A throwaway sshd on a loopback port with a temp host key; yields (port, ssh command prefix)."""
    sshd_bin = shutil.which("sshd") or ("/usr/sbin/sshd" if os.path.exists("/usr/sbin/sshd") else None)
    if sshd_bin is None or shutil.which("ssh") is None or shutil.which("ssh-keygen") is None:
        pytest.skip("openssh server/client not installed")
    try:
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # privilege separation directory
    except OSError:
        pytest.skip("cannot create /run/sshd")
    d = tmp_path / "ssh"
    d.mkdir()
    for name in ("host", "user"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / name)], check=True)
    (d / "authorized_keys").write_text((d / "user.pub").read_text())
    port = free_port()
    config = d / "sshd_config"
    config.write_text(
        f"""Port {port}
ListenAddress 127.0.0.1
HostKey {d / "host"}
AuthorizedKeysFile {d / "authorized_keys"}
PidFile none
UsePAM no
StrictModes no
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
"""
    )
    proc = subprocess.Popen([sshd_bin, "-D", "-e", "-f", str(config)], stderr=subprocess.DEVNULL)
    try:
        wait_port(port, proc)
    except (RuntimeError, TimeoutError):
        proc.kill()
        proc.wait(5)
        pytest.skip("sshd could not start here")
    ssh = [
        "ssh",
        "-i",
        str(d / "user"),
        "-o",
        "StrictHostKeyChecking=no",
        "-o",
        "UserKnownHostsFile=/dev/null",
        "-o",
        "BatchMode=yes",
        "-o",
        "LogLevel=ERROR",
        "-o",
        "ConnectTimeout=20",
    ]
    yield port, ssh
    proc.kill()
    proc.wait(5)


def _ssh(ssh: list[str], port: int, command: str, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    user = os.environ.get("USER") or "root"
    return subprocess.run(
        [*ssh, "-p", str(port), f"{user}@127.0.0.1", command], input=stdin, capture_output=True, timeout=60, env=env()
    )


def test_ssh_over_plain_tunnel(server: str, path: str, sshd: tuple[int, list[str]]) -> None:
    sport, ssh = sshd
    lport = free_port()
    srv = start_piping("tunnel", "server", "-q", "-s", server, "-p", str(sport), path + "/1", path + "/2")
    cli = start_piping("tunnel", "client", "-s", server, "-p", str(lport), path + "/1", path + "/2")
    try:
        wait_listening(cli)
        data = os.urandom(300_000)
        r = _ssh(ssh, lport, "cat", data)
        assert r.returncode == 0, r.stderr
        assert r.stdout == data
        assert cli.wait(20) == 0
        assert srv.wait(20) == 0
    finally:
        stop(srv, cli)


def test_ssh_sessions_over_multiplex(server: str, path: str, sshd: tuple[int, list[str]]) -> None:
    sport, ssh = sshd
    lport = free_port()
    srv = start_piping("tunnel", "server", "-q", "-m", "-s", server, "-p", str(sport), path + "/1", path + "/2")
    cli = start_piping("tunnel", "client", "-m", "-s", server, "-p", str(lport), path + "/1", path + "/2")
    try:
        wait_listening(cli)
        with ThreadPoolExecutor(3) as pool:
            results = list(pool.map(lambda i: _ssh(ssh, lport, f"echo session {i}"), range(3)))
        for i, r in enumerate(results):
            assert r.returncode == 0, r.stderr
            assert r.stdout == f"session {i}\n".encode()
    finally:
        stop(srv, cli)
