"""HTTPS: certificates at start-up (one-line errors), RSA and EC keys, and reloading without a restart."""

from __future__ import annotations

import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ..helpers import WAIT_S, ServerProcess, free_port, make_tls_files, start_server, unique_path, wait_until

pytestmark = pytest.mark.ours

ALL_OK = "[INFO] All receiver(s) was/were received successfully.\n"
#: The server looks at its certificate files every 2 s; a change is seen within this.
RELOAD_WAIT_S = 15.0


def served_certificate(server: ServerProcess) -> bytes:
    """The DER certificate a new TLS connection to the server gets (and ALPN still picks h2)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols(["h2", "http/1.1"])
    assert server.https_port is not None
    with (
        socket.create_connection(("127.0.0.1", server.https_port), timeout=WAIT_S) as raw,
        ctx.wrap_socket(raw) as sock,
    ):
        der = sock.getpeercert(binary_form=True)
        assert sock.selected_alpn_protocol() == "h2"
    assert der is not None
    return der


def file_certificate(path: str) -> bytes:
    pem = Path(path).read_text()
    first = pem[: pem.index("-----END CERTIFICATE-----") + len("-----END CERTIFICATE-----")] + "\n"
    return ssl.PEM_cert_to_DER_cert(first)


@pytest.mark.parametrize("rsa", [True, False], ids=["rsa", "ec"])
def test_rsa_and_ec_keys(tmp_path: Path, rsa: bool) -> None:
    files = make_tls_files(tmp_path, rsa=rsa)
    server = start_server(https=files, log_dir=tmp_path)
    try:
        for transport in ("h2", "h1-tls"):
            target = server.target(transport)
            assert target.run_curl(target.url("/version")).strip()
    finally:
        server.stop()


def _start_failing(*args: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "piping_server", "--host", "127.0.0.1", "--http-port", str(free_port()), *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=WAIT_S)


def _https_args(crt: str, key: str) -> list[str]:
    return ["--enable-https", "--https-port", str(free_port()), "--crt-path", crt, "--key-path", key]


def test_missing_certificate_is_one_line(tmp_path: Path) -> None:
    crt, key, _ = make_tls_files(tmp_path)
    done = _start_failing(*_https_args(str(tmp_path / "nope.crt"), key))
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [f"piping-server: error: no such file: {tmp_path / 'nope.crt'}"]


def test_garbage_certificate_is_one_line(tmp_path: Path) -> None:
    crt, key, _ = make_tls_files(tmp_path)
    Path(crt).write_text("not a certificate\n")
    done = _start_failing(*_https_args(crt, key))
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("piping-server: error: cannot use certificate"), lines


def test_mismatched_key_is_one_line(tmp_path: Path) -> None:
    crt, _, _ = make_tls_files(tmp_path / "a")
    _, other_key, _ = make_tls_files(tmp_path / "b")
    done = _start_failing(*_https_args(crt, other_key))
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "the key does not match the certificate" in lines[0], lines


@pytest.mark.parametrize("missing", ["--https-port", "--crt-path", "--key-path"])
def test_enable_https_needs_its_flags(tmp_path: Path, missing: str) -> None:
    crt, key, _ = make_tls_files(tmp_path)
    args = _https_args(crt, key)
    index = args.index(missing)
    del args[index : index + 2]
    done = _start_failing(*args)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "piping-server: error: --enable-https needs --https-port, --crt-path and --key-path"
    ]


def test_certificate_reloaded_without_dropping_a_transfer(tmp_path: Path) -> None:
    """New files are served to new connections; a transfer running over the old certificate goes on."""
    tls_dir = tmp_path / "tls"
    crt, key, old_ca = make_tls_files(tls_dir)
    old_ca_copy = tmp_path / "old-ca.crt"
    old_ca_copy.write_bytes(Path(old_ca).read_bytes())
    server = start_server(https=(crt, key, str(old_ca_copy)), log_dir=tmp_path)
    try:
        old_der = served_certificate(server)
        assert old_der == file_certificate(crt)
        target = server.target("h2")
        path = unique_path("reload")
        recv = target.popen_curl(target.url(path))
        time.sleep(0.3)
        send = target.popen_curl("-T", "-", target.url(path), stdin=subprocess.PIPE)
        assert send.stdin is not None
        send.stdin.write(b"before\n" * 1000)
        send.stdin.flush()

        make_tls_files(tls_dir)  # a new CA, certificate and key over the old files
        new_der = file_certificate(crt)
        assert new_der != old_der
        assert wait_until(lambda: served_certificate(server) == new_der, timeout=RELOAD_WAIT_S)
        new_target = server.target("h2")
        new_target.curl_args = ["--http2", "--cacert", str(tls_dir / "ca.crt")]
        assert new_target.run_curl(new_target.url("/version")).strip()

        send.stdin.write(b"after\n" * 1000)
        send.stdin.close()
        assert send.stdout is not None and recv.stdout is not None
        sent = send.stdout.read().decode()
        got = recv.stdout.read()
        assert send.wait(WAIT_S) == 0 and recv.wait(WAIT_S) == 0
        assert got == b"before\n" * 1000 + b"after\n" * 1000
        assert sent.endswith(ALL_OK)
        assert "certificate reloaded" in server.log()
    finally:
        server.stop()


def test_broken_new_certificate_keeps_the_old_one(tmp_path: Path) -> None:
    crt, key, ca = make_tls_files(tmp_path / "tls")
    server = start_server(https=(crt, key, ca), log_dir=tmp_path)
    try:
        old_der = served_certificate(server)
        Path(crt).write_text("-----BEGIN CERTIFICATE-----\ngarbage\n-----END CERTIFICATE-----\n")
        assert wait_until(lambda: "keeping the previous one" in server.log(), timeout=RELOAD_WAIT_S)
        assert served_certificate(server) == old_der
        target = server.target("h2")
        assert target.run_curl(target.url("/version")).strip()
        assert "Traceback" not in server.log()
    finally:
        server.stop()
