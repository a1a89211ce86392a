"""send/get over HTTPS (a trustme certificate), against both servers started with --enable-https."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import REF_BIN, _ours_available, env, free_port, piping_cmd, wait_port

trustme = pytest.importorskip("trustme")


@pytest.fixture(params=["ours", "reference"])
def tls_server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, Path]]:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    cert.private_key_pem.write_to_path(str(tmp_path / "key.pem"))
    cert.cert_chain_pems[0].write_to_path(str(tmp_path / "crt.pem"))
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    port, tls_port = free_port(), free_port()
    flags = ["--http-port", str(port), "--enable-https", "--https-port", str(tls_port)]
    flags += ["--crt-path", str(tmp_path / "crt.pem"), "--key-path", str(tmp_path / "key.pem")]
    if request.param == "reference":
        if not REF_BIN.exists():
            pytest.skip("reference piping-server not installed")
        cmd = [str(REF_BIN), "--host", "127.0.0.1", *flags]
    else:
        if not _ours_available():
            pytest.skip("`python -m piping_server` is not runnable yet")
        cmd = [sys.executable, "-m", "piping_server", "--host", "127.0.0.1", *flags]
    proc = subprocess.Popen(cmd, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_port(tls_port, proc)
    except (RuntimeError, TimeoutError):
        proc.kill()
        proc.wait(5)
        pytest.skip(f"{request.param} server did not start with HTTPS")
    yield f"https://localhost:{tls_port}", tmp_path / "ca.pem"
    proc.kill()
    proc.wait(10)


def test_https_roundtrip_with_trusted_ca(tls_server: tuple[str, Path], path: str) -> None:
    url, ca = tls_server
    e = env()
    e["SSL_CERT_FILE"] = str(ca)
    receiver = subprocess.Popen(piping_cmd("get", "-q", url + path), env=e, stdout=subprocess.PIPE)
    time.sleep(0.3)
    r = subprocess.run(piping_cmd("send", "-q", url + path), env=e, input=b"over tls" * 1000, capture_output=True)
    assert r.returncode == 0, r.stderr
    out, _ = receiver.communicate(timeout=30)
    assert out == b"over tls" * 1000


def test_untrusted_certificate_is_a_clear_error(tls_server: tuple[str, Path], path: str) -> None:
    url, _ = tls_server
    r = subprocess.run(piping_cmd("send", url + path), env=env(), input=b"x", capture_output=True, timeout=30)
    assert r.returncode == 3
    assert b"TLS certificate not trusted" in r.stderr
    receiver = subprocess.Popen(piping_cmd("get", "-q", "-k", url + path), env=env(), stdout=subprocess.PIPE)
    time.sleep(0.3)
    r = subprocess.run(piping_cmd("send", "-q", "--insecure", url + path), env=env(), input=b"k", capture_output=True)
    assert r.returncode == 0, r.stderr
    assert receiver.communicate(timeout=30)[0] == b"k"
