"""Real Caddy (Debian's 2.6), from deploy/Caddyfile, in front of two real server instances on 127.0.0.1.

As shipped (HTTP/2 and HTTP/1.1 to the clients): path affinity, curl both ways byte-exact, a big
HTTP/1.1 upload to a slower receiver, and Chromium streaming a fetch() upload over h2. With HTTP/3
switched on (the one line the file names): Chromium reaches Caddy over h3 (QUIC forced with
--origin-to-force-quic-on, the test certificate's SPKI trusted), a download and an upload of a known
length arrive whole, and a streaming upload is lost (Caddy 2.6 forwards it with an empty body): a
strict xfail, so that a Caddy which fixes it turns this test red and the file can switch h3 on.
Skipped, saying why, when Caddy or Chromium is missing (scripts/test installs both).
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from ..browser.chromium import CHROMIUM, STREAM_LINES_JS, need_chromium
from ..helpers import WAIT_S, ServerProcess, free_port, start_server, stop_process, wait_for_port
from .proxies import DEPLOY, place_certificate, substitute

pytestmark = pytest.mark.ours

CADDY = shutil.which("caddy")
ALL_OK = "[INFO] All receiver(s) was/were received successfully.\n"
SHIPPED_INSTANCES = "reverse_proxy 127.0.0.1:8081 127.0.0.1:8082 127.0.0.1:8083 {"


@dataclass
class Caddy:
    port: int
    proc: subprocess.Popen[bytes]
    log_path: Path
    ca: str

    def url(self, path: str) -> str:
        return f"https://localhost:{self.port}{path}"


def need_caddy() -> None:
    if CADDY is None:
        pytest.skip("caddy is not installed (Debian: apt-get install -y caddy; scripts/test does it)")


def caddyfile(port: int, upstreams: list[int], *, h3: bool) -> str:
    swaps = [
        ("localhost:8443 {", f"localhost:{port} {{"),
        (SHIPPED_INSTANCES, "reverse_proxy " + " ".join(f"127.0.0.1:{p}" for p in upstreams) + " {"),
    ]
    if h3:
        swaps.append(("protocols h1 h2\n", "protocols h1 h2 h3\n"))
    return substitute((DEPLOY / "Caddyfile").read_text(), swaps)


def start_caddy(tmp: Path, upstreams: list[int], tls: tuple[str, str, str], *, h3: bool) -> Caddy:
    """Caddy in the foreground on a free port (TCP, and UDP for h3), run as the trial says: from its folder."""
    need_caddy()
    assert CADDY is not None
    tmp.mkdir(parents=True, exist_ok=True)
    place_certificate(tmp, tls[0], tls[1])
    port = free_port()
    (tmp / "Caddyfile").write_text(caddyfile(port, upstreams, h3=h3))
    log_path = tmp / "caddy.out"
    # XDG_DATA_HOME and HOME: Caddy's storage in the test's folder, not the user's
    env = {**os.environ, "HOME": str(tmp), "XDG_DATA_HOME": str(tmp / "data"), "XDG_CONFIG_HOME": str(tmp / "config")}
    with log_path.open("wb") as out:
        proc = subprocess.Popen(
            [CADDY, "run", "--adapter", "caddyfile", "--config", "Caddyfile"],
            cwd=tmp,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for_port(port, proc)
    except Exception:
        stop_process(proc)
        raise RuntimeError(f"caddy did not start: {log_path.read_text(errors='replace')}") from None
    return Caddy(port=port, proc=proc, log_path=log_path, ca=tls[2])


@pytest.fixture(scope="module")
def instances(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[ServerProcess]]:
    started = [start_server("--access-log", log_dir=tmp_path_factory.mktemp("caddy-instances")) for _ in range(2)]
    try:
        yield started
    finally:
        for instance in started:
            instance.stop()


@pytest.fixture(scope="module")
def caddy(
    instances: list[ServerProcess], tls_files: tuple[str, str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Caddy]:
    running = start_caddy(tmp_path_factory.mktemp("caddy"), [i.http_port for i in instances], tls_files, h3=False)
    try:
        yield running
    finally:
        stop_process(running.proc)


def curl_transfer(
    caddy: Caddy, version: str, size: int, path: str, *, receiver_rate: str | None = None, tmp: Path
) -> None:
    """curl -T of ``size`` random bytes through Caddy to a curl receiver: byte-exact, the sender told all went well."""
    data = os.urandom(size)
    out = tmp / f"received-{uuid.uuid4().hex}"
    curl = ["curl", "-sS", version, "--cacert", caddy.ca]
    rate = ["--limit-rate", receiver_rate] if receiver_rate else []
    receiver = subprocess.Popen([*curl, *rate, "-o", str(out), caddy.url(path)], stderr=subprocess.PIPE)
    try:
        sender = subprocess.run(
            [*curl, "-T", "-", caddy.url(path + "?n=1")], input=data, capture_output=True, timeout=WAIT_S * 3
        )
        _, err = receiver.communicate(timeout=WAIT_S * 3)
    finally:
        stop_process(receiver)
    assert sender.returncode == 0 and sender.stdout.endswith(ALL_OK.encode()), sender
    assert receiver.returncode == 0, err
    assert out.read_bytes() == data


@pytest.mark.parametrize("version", ["--http1.1", "--http2"])
def test_curl_both_ways_and_path_affinity(
    caddy: Caddy, instances: list[ServerProcess], version: str, tmp_path: Path
) -> None:
    """The sender's ?n=1 is not hashed: it meets its receiver (no query) on one instance, for many paths."""
    paths = [f"/caddy-{uuid.uuid4().hex}" for _ in range(6)]
    for path in paths:
        curl_transfer(caddy, version, 200_000, path, tmp=tmp_path)
    holders = [[i for i, instance in enumerate(instances) if f'"PUT {path}' in instance.log()] for path in paths]
    assert all(len(h) == 1 for h in holders), holders


def test_big_http11_upload_to_a_slower_receiver(caddy: Caddy, tmp_path: Path) -> None:
    """32 MiB over HTTP/1.1 to a receiver at 8 MB/s: Caddy keeps carrying the upload after the response began."""
    curl_transfer(caddy, "--http1.1", 32 << 20, f"/caddy-big-{uuid.uuid4().hex}", receiver_rate="8M", tmp=tmp_path)


def test_head_keeps_the_length(caddy: Caddy) -> None:
    curl = ["curl", "-sS", "--cacert", caddy.ca]
    body = subprocess.run([*curl, caddy.url("/")], capture_output=True, timeout=WAIT_S, check=True).stdout
    head = subprocess.run(
        [*curl, "-I", caddy.url("/")], capture_output=True, text=True, timeout=WAIT_S, check=True
    ).stdout
    assert re.findall(r"(?im)^content-length: *(\d+)", head) == [str(len(body))], head


# --- Chromium ---------------------------------------------------------------------------------------------


def spki_hash(cert_path: str) -> str:
    """The base64 SHA-256 of the certificate's public key, as --ignore-certificate-errors-spki-list wants it."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    cert = x509.load_pem_x509_certificate(Path(cert_path).read_bytes())
    der = cert.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(hashlib.sha256(der).digest()).decode()


def browser(playwright: Any, caddy: Caddy, cert: str, *, quic: bool) -> Any:
    args = [
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--ignore-certificate-errors-spki-list={spki_hash(cert)}",
    ]
    args.append(f"--origin-to-force-quic-on=localhost:{caddy.port}" if quic else "--disable-quic")
    return playwright.chromium.launch(executable_path=CHROMIUM, args=args, headless=True)


def stream_upload(caddy: Caddy, cert: str, *, quic: bool) -> tuple[str, dict[str, Any], bytes, list[str]]:
    """Chromium streams 20 lines (one per 100 ms) with fetch() to a curl receiver through Caddy.

    Returns the page's protocol, the upload's result, what the receiver got, and the protocol of each request.
    """
    sync_api = need_chromium()
    path = f"/caddy-browser-{uuid.uuid4().hex}"
    receiver = subprocess.Popen(
        ["curl", "-sS", "-N", "--cacert", caddy.ca, caddy.url(path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        with sync_api.sync_playwright() as playwright:
            chromium = browser(playwright, caddy, cert, quic=quic)
            try:
                page = chromium.new_page()
                page.goto(caddy.url("/version"))
                protocol = page.evaluate("() => performance.getEntriesByType('navigation')[0].nextHopProtocol")
                page.evaluate(STREAM_LINES_JS, [caddy.url(path), 20, 100])
                result = page.evaluate("() => window.upload")
                protocols = page.evaluate("() => performance.getEntriesByType('resource').map(e => e.nextHopProtocol)")
            finally:
                chromium.close()
        out, _ = receiver.communicate(timeout=WAIT_S)
    finally:
        stop_process(receiver)
    return protocol, result, out, protocols


LINES = b"".join(b"line %d\n" % i for i in range(20))


def test_chromium_streams_a_fetch_upload_over_h2(caddy: Caddy, tls_files: tuple[str, str, str]) -> None:
    protocol, result, out, _ = stream_upload(caddy, tls_files[0], quic=False)
    assert protocol == "h2"
    assert result["status"] == 200 and result["text"].endswith(ALL_OK), result
    assert out == LINES


@pytest.fixture(scope="module")
def caddy_h3(
    instances: list[ServerProcess], tls_files: tuple[str, str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Caddy]:
    running = start_caddy(tmp_path_factory.mktemp("caddy-h3"), [i.http_port for i in instances], tls_files, h3=True)
    try:
        yield running
    finally:
        stop_process(running.proc)


def test_h3_download_and_sized_upload(caddy_h3: Caddy, tls_files: tuple[str, str, str]) -> None:
    """Over h3: the page loads, and a fetch() upload of a known length (100 kB) reaches a curl receiver whole."""
    sync_api = need_chromium()
    path = f"/caddy-h3-{uuid.uuid4().hex}"
    receiver = subprocess.Popen(
        ["curl", "-sS", "--cacert", caddy_h3.ca, caddy_h3.url(path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        with sync_api.sync_playwright() as playwright:
            chromium = browser(playwright, caddy_h3, tls_files[0], quic=True)
            try:
                page = chromium.new_page()
                page.goto(caddy_h3.url("/"))
                protocol = page.evaluate("() => performance.getEntriesByType('navigation')[0].nextHopProtocol")
                result = page.evaluate(
                    """async (url) => {
                    const response = await fetch(url, { method: "POST", body: "x".repeat(100000) });
                    return { status: response.status, text: await response.text() };
                }""",
                    caddy_h3.url(path),
                )
                protocols = page.evaluate("() => performance.getEntriesByType('resource').map(e => e.nextHopProtocol)")
            finally:
                chromium.close()
        out, _ = receiver.communicate(timeout=WAIT_S)
    finally:
        stop_process(receiver)
    assert protocol == "h3"
    assert protocols and set(protocols) == {"h3"}, protocols
    assert result["status"] == 200 and result["text"].endswith(ALL_OK), result
    assert out == b"x" * 100_000


@pytest.mark.xfail(
    strict=True,
    reason="Caddy 2.6 forwards a streaming HTTP/3 upload (no Content-Length) with an "
    "empty body: the receiver gets nothing and the sender is told all went well (docs/scaling.md)",
)
def test_h3_streaming_upload(caddy_h3: Caddy, tls_files: tuple[str, str, str]) -> None:
    protocol, result, out, protocols = stream_upload(caddy_h3, tls_files[0], quic=True)
    assert protocol == "h3" and "h3" in protocols  # this part holds: the failure is below
    assert result["status"] == 200
    assert out == LINES, (out, result)
