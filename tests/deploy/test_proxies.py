"""Real nginx and HAProxy, from deploy/, in front of three real server instances on 127.0.0.1.

Path affinity (every request for a path reaches one instance), bytes exact through the proxy
both ways, HTTP/2 with TLS towards the clients (curl, and Chromium streaming a fetch() upload),
the client's address and scheme passed on (--forwarded-allow-ips), and an instance killed
mid-run failing only its own transfers. Skipped, saying why, when nginx or HAProxy is missing
(scripts/test installs both).
"""

from __future__ import annotations

import asyncio
import os
import random
import re
import signal
import ssl
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from ..browser.chromium import STREAM_LINES_JS, launch_chromium, need_chromium
from ..helpers import WAIT_S, ServerProcess, start_server, wait_until
from .proxies import DEPLOY, HAPROXY, NGINX, Proxy, start_proxy

pytestmark = pytest.mark.ours

BINARIES = {"nginx": NGINX, "haproxy": HAPROXY}
ALL_OK = "[INFO] All receiver(s) was/were received successfully.\n"
#: Every test's whole run is bounded by this (seconds).
RUN_S = 120.0


def start_instances(tmp: Path) -> list[ServerProcess]:
    # --forwarded-allow-ips is left at its default, 127.0.0.1: the proxy runs on this machine
    return [start_server("--access-log", log_dir=tmp) for _ in range(3)]


def stop_all(instances: list[ServerProcess]) -> None:
    for instance in instances:
        instance.stop()


def need(name: str) -> None:
    if BINARIES[name] is None:
        pytest.skip(f"{name} is not installed (Debian: apt-get install -y {name}; scripts/test does it)")


@pytest.fixture(scope="module")
def instances(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[ServerProcess]]:
    started = start_instances(tmp_path_factory.mktemp("instances"))
    try:
        yield started
    finally:
        stop_all(started)


@pytest.fixture(scope="module", params=["nginx", "haproxy"])
def proxy(
    request: pytest.FixtureRequest,
    instances: list[ServerProcess],
    tls_files: tuple[str, str, str],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Proxy]:
    need(request.param)
    running = start_proxy(
        request.param, tmp_path_factory.mktemp(request.param), [i.http_port for i in instances], tls_files
    )
    try:
        yield running
    finally:
        running.stop()


def tls_context(ca: str) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=ca)


def instance_of(instances: list[ServerProcess], line: re.Pattern[str]) -> list[int]:
    """The indexes of the instances whose log has a line matching ``line``."""
    return [i for i, instance in enumerate(instances) if line.search(instance.log())]


# --- many transfers ----------------------------------------------------------------------------------------


async def run_transfers(proxy: Proxy, ca: str, count: int, concurrency: int) -> list[tuple[str, bytes]]:
    """``count`` transfers on random paths; senders and receivers on different connections, h2 and HTTP/1.1."""
    rng = random.Random(1234)
    context = tls_context(ca)
    limit = asyncio.Semaphore(concurrency)
    timeout = httpx.Timeout(WAIT_S)
    done: list[tuple[str, bytes]] = []
    async with (
        httpx.AsyncClient(http2=True, verify=context, timeout=timeout) as h2,
        httpx.AsyncClient(http1=True, http2=False, verify=context, timeout=timeout) as h1,
    ):

        async def transfer(i: int) -> None:
            path = f"/deploy-{uuid.uuid4().hex}"
            n = 2 if i % 10 == 0 else 1
            url = proxy.url(f"{path}?n={n}")
            body = rng.randbytes(rng.randint(1, 48 * 1024))
            # half the senders over h2 with HTTP/1.1 receivers, half the other way round
            sending, receiving = (h2, h1) if i % 2 == 0 else (h1, h2)

            async def chunks() -> AsyncIterator[bytes]:
                yield body

            async def send() -> httpx.Response:
                # over h2 without a length: httpcore sends END_STREAM in a frame of its own, and when the
                # response has ended first (a known length lets it), a proxy may reset the stream
                # (RFC 9113 8.1) before that frame, which httpcore reports as an error of its own
                return await sending.post(url, content=chunks() if sending is h2 else body)

            async def receive() -> httpx.Response:
                return await receiving.get(url)

            async with limit:
                parts = [send(), *(receive() for _ in range(n))]
                if i % 3 == 0:
                    parts.reverse()  # receivers first
                responses = await asyncio.gather(*parts)
            sender = next(r for r in responses if r.request.method == "POST")
            receivers = [r for r in responses if r.request.method == "GET"]
            assert sender.status_code == 200 and sender.text.endswith(ALL_OK), (path, sender.text)
            for received in receivers:
                assert received.status_code == 200, (path, received.status_code)
                assert received.content == body, path
            done.append((path, body))

        await asyncio.gather(*(transfer(i) for i in range(count)))
    return done


def test_many_transfers_meet_on_one_instance_byte_exact(
    proxy: Proxy, instances: list[ServerProcess], tls_files: tuple[str, str, str]
) -> None:
    """200 transfers on random paths, 20 at a time: all byte-exact, each path's requests on one instance."""
    done = asyncio.run(asyncio.wait_for(run_transfers(proxy, tls_files[2], 200, 20), RUN_S))
    assert len(done) == 200
    logs = [instance.log() for instance in instances]
    per_instance = [0, 0, 0]
    for path, _ in done[:60]:
        holders = [i for i, log in enumerate(logs) if f'"POST {path}"' in log]
        assert len(holders) == 1, (path, holders)
        assert f'"GET {path}"' in logs[holders[0]]
    for path, _ in done:
        for i, log in enumerate(logs):
            per_instance[i] += f'"POST {path}"' in log
    assert all(count > 0 for count in per_instance), per_instance  # the hash spreads the paths
    # the proxy told each instance the client's scheme (X-Forwarded-Proto): logged as TLS
    assert re.search(r'127\.0\.0\.1 "POST /deploy-[0-9a-f]+" 200 .* sender h[12]\+tls', logs[holders[0]])


def test_curl_over_h2_through_the_proxy(
    proxy: Proxy, instances: list[ServerProcess], tls_files: tuple[str, str, str]
) -> None:
    """curl on both sides over HTTP/2 with TLS; the instance sees the client's own address (127.0.0.2)."""
    path = f"/curl-{uuid.uuid4().hex}"
    data = os.urandom(300_000)
    curl = ["curl", "-sS", "--http2", "--cacert", tls_files[2], "-w", "\n%{http_version}"]
    receiver = subprocess.Popen(
        [*curl, "--interface", "127.0.0.2", "-o", "-", proxy.url(path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        sender = subprocess.run([*curl, "-T", "-", proxy.url(path)], input=data, capture_output=True, timeout=WAIT_S)
        out, err = receiver.communicate(timeout=WAIT_S)
    finally:
        receiver.kill()
    assert sender.returncode == 0, sender.stderr
    assert sender.stdout.endswith(ALL_OK.encode() + b"\n2"), sender.stdout
    assert receiver.returncode == 0, err
    assert out == data + b"\n2"  # the body, then curl's "HTTP version: 2"
    line = re.compile(rf'(\S+) "GET {path}" 200 .* receiver h[12]\+tls$', re.MULTILINE)
    assert wait_until(lambda: len(instance_of(instances, line)) == 1)
    match = line.search(instances[instance_of(instances, line)[0]].log())
    assert match is not None and match.group(1) == "127.0.0.2"


def test_big_transfer_outpacing_its_receiver(proxy: Proxy, tls_files: tuple[str, str, str], tmp_path: Path) -> None:
    """32 MiB from curl -T over HTTP/1.1 to a rate-limited receiver: the proxy must keep carrying the
    upload after the sender's response head has gone back (nginx's HTTP/1.1 proxy does not)."""
    path = f"/big-{uuid.uuid4().hex}"
    data = os.urandom(32 << 20)
    received = tmp_path / "received"
    curl = ["curl", "-sS", "--http1.1", "--cacert", tls_files[2]]
    receiver = subprocess.Popen(
        [*curl, "--limit-rate", "64M", "-o", str(received), proxy.url(path)], stderr=subprocess.PIPE
    )
    try:
        sender = subprocess.run([*curl, "-T", "-", proxy.url(path)], input=data, capture_output=True, timeout=WAIT_S)
        _, err = receiver.communicate(timeout=WAIT_S)
    finally:
        receiver.kill()
    assert sender.returncode == 0 and sender.stdout.endswith(ALL_OK.encode()), sender
    assert receiver.returncode == 0, err
    assert received.read_bytes() == data


# --- an instance killed mid-run ------------------------------------------------------------------------


async def streaming_transfers(
    proxy: Proxy, ca: str, paths: list[str], go: asyncio.Event, halfway: asyncio.Event
) -> list[tuple[bytes | None, BaseException | None]]:
    """One transfer per path: the sender sends half, waits for ``go``, sends the rest.

    Returns, per path, ``b"exact"`` when the receiver got the whole body and the sender its final
    report, else what the receiver got, and the error that ended it if any; ``halfway`` is set once
    every receiver has read the first half.
    """
    context = tls_context(ca)
    half = 64 * 1024
    bodies = {path: os.urandom(2 * half) for path in paths}
    seen_half = 0
    timeout = httpx.Timeout(WAIT_S)

    async with httpx.AsyncClient(http2=False, verify=context, timeout=timeout) as receivers:

        async def body(path: str) -> AsyncIterator[bytes]:
            yield bodies[path][:half]
            await go.wait()
            yield bodies[path][half:]

        async def send(path: str) -> str:
            # each sender on its own h2 connection: a cut one is cancelled without touching the others
            async with httpx.AsyncClient(http2=True, verify=context, timeout=timeout) as sender:
                return (await sender.post(proxy.url(path), content=body(path))).text

        async def receive(path: str) -> bytes:
            nonlocal seen_half
            got = b""
            counted = False
            async with receivers.stream("GET", proxy.url(path)) as response:
                assert response.status_code == 200
                async for chunk in response.aiter_raw():
                    got += chunk
                    if len(got) >= half and not counted:
                        counted = True
                        seen_half += 1
                        if seen_half == len(paths):
                            halfway.set()
            return got

        async def one(path: str) -> tuple[bytes | None, BaseException | None]:
            sending = asyncio.ensure_future(send(path))
            try:
                got = await receive(path)
            except (httpx.HTTPError, AssertionError) as exc:
                sending.cancel()
                await asyncio.gather(sending, return_exceptions=True)
                return None, exc
            try:
                report = await sending
            except httpx.HTTPError as exc:
                return got, exc
            return got if report.endswith(ALL_OK) else b"the sender was not told all went well", None

        results = await asyncio.gather(*(one(path) for path in paths))
    return [(b"exact" if got == bodies[path] else got, exc) for (got, exc), path in zip(results, paths, strict=True)]


async def kill_halfway(victim: ServerProcess, proxy: Proxy, ca: str, paths: list[str]) -> list[Any]:
    go, halfway = asyncio.Event(), asyncio.Event()
    run = asyncio.ensure_future(streaming_transfers(proxy, ca, paths, go, halfway))
    await asyncio.wait_for(halfway.wait(), WAIT_S)
    victim.proc.send_signal(signal.SIGKILL)
    await asyncio.to_thread(victim.proc.wait, WAIT_S)
    go.set()
    return await asyncio.wait_for(run, RUN_S)


@pytest.mark.parametrize("name", ["nginx", "haproxy"])
def test_killed_instance_fails_only_its_own_transfers(
    name: str, tls_files: tuple[str, str, str], tmp_path: Path
) -> None:
    """SIGKILL one of three instances mid-transfer: its transfers end cut, all the others finish byte-exact."""
    need(name)
    instances = start_instances(tmp_path)
    running = start_proxy(name, tmp_path / name, [i.http_port for i in instances], tls_files)
    try:
        # where each path lands, asked of the proxy itself with a preflight (logged by the instance)
        owner: dict[str, int] = {}
        with httpx.Client(verify=tls_context(tls_files[2]), timeout=WAIT_S) as client:
            for _ in range(60):
                path = f"/kill-{uuid.uuid4().hex}"
                assert client.options(running.url(path)).status_code == 200
                line = re.compile(rf'"OPTIONS {path}" 200')
                assert wait_until(lambda: len(instance_of(instances, line)) == 1)  # noqa: B023
                owner[path] = instance_of(instances, line)[0]
                if len(owner) >= 9 and all(list(owner.values()).count(i) >= 2 for i in range(3)):
                    break
        victim = 1
        paths = list(owner)
        results = asyncio.run(kill_halfway(instances[victim], running, tls_files[2], paths))
        for path, (got, error) in zip(paths, results, strict=True):
            if owner[path] == victim:
                assert got != b"exact", f"{path} was on the killed instance yet arrived whole"
            else:
                assert got == b"exact" and error is None, (path, error)
    finally:
        running.stop()
        stop_all(instances)


# --- the browser ----------------------------------------------------------------------------------------


def test_chromium_streams_a_fetch_upload_through_nginx(
    instances: list[ServerProcess], tls_files: tuple[str, str, str], tmp_path: Path
) -> None:
    """Chromium's streaming fetch() upload over h2 through nginx: curl receives lines while the page still sends."""
    need("nginx")
    need_chromium()
    running = start_proxy("nginx", tmp_path / "nginx", [i.http_port for i in instances], tls_files)
    path = f"/browser-{uuid.uuid4().hex}"
    count = 20
    receiver = subprocess.Popen(
        ["curl", "-sS", "-N", "--cacert", tls_files[2], running.url(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        with launch_chromium() as browser:
            page = browser.new_context(ignore_https_errors=True).new_page()
            page.goto(running.url("/version"))
            protocol = page.evaluate("() => performance.getEntriesByType('navigation')[0].nextHopProtocol")
            assert protocol == "h2"
            page.evaluate(STREAM_LINES_JS, [running.url(path), count, 100])
            assert receiver.stdout is not None
            assert receiver.stdout.readline() == b"line 0\n"  # the receiver has the first line...
            assert page.evaluate("() => window.sent") < count  # ...while the page is still sending
            result = page.evaluate("() => window.upload")
        receiver.wait(timeout=WAIT_S)
        # read() and not communicate(): communicate reads the pipe's file descriptor, past what
        # readline() above left in the file object's buffer
        out, err = receiver.stdout.read(), receiver.stderr.read() if receiver.stderr else b""
    finally:
        receiver.kill()
        running.stop()
    assert result["status"] == 200 and result["text"].endswith(ALL_OK), result
    assert out == b"".join(b"line %d\n" % i for i in range(1, count)), (out, err, receiver.returncode)


# --- the files as shipped -----------------------------------------------------------------------------------


@pytest.mark.parametrize("version", ["--http1.1", "--http2"])
def test_head_of_a_page_keeps_its_length(proxy: Proxy, tls_files: tuple[str, str, str], version: str) -> None:
    """HEAD / says the length GET / sends (nginx's gRPC proxy said Content-Length: 0: issue 23)."""
    curl = ["curl", "-sS", version, "--cacert", tls_files[2]]
    body = subprocess.run([*curl, proxy.url("/")], capture_output=True, timeout=WAIT_S, check=True).stdout
    head = subprocess.run(
        [*curl, "-I", proxy.url("/")], capture_output=True, text=True, timeout=WAIT_S, check=True
    ).stdout
    lengths = re.findall(r"(?im)^content-length: *(\d+)", head)
    assert lengths == [str(len(body))], (head, len(body))


def trial_lines(name: str) -> list[str]:
    """The trial's command lines printed at the head of deploy/NAME (the comment lines, joined at a backslash)."""
    lines: list[str] = []
    for line in (DEPLOY / name).read_text().splitlines():
        if not line.startswith("#     "):
            continue
        text = line[len("#     ") :].strip()
        if lines and lines[-1].endswith("\\"):
            lines[-1] = lines[-1][:-1] + text
        else:
            lines.append(text)
    return lines


def test_files_as_printed_with_the_documented_certificate(tmp_path: Path) -> None:
    """The openssl line the files print makes the certificate; nginx -t and haproxy -c accept the files as
    printed, byte for byte, from the folders the trial names (no root, nothing under /etc or /var)."""
    openssl = next(line for line in trial_lines("nginx.conf") if line.startswith("openssl req"))
    (tmp_path / "deploy").mkdir()
    subprocess.run(["bash", "-c", openssl], cwd=tmp_path, check=True, capture_output=True, timeout=WAIT_S)
    for name in ("nginx.conf", "haproxy.cfg"):
        (tmp_path / "deploy" / name).write_text((DEPLOY / name).read_text())
    cat = next(line for line in trial_lines("haproxy.cfg") if line.startswith("cat "))
    subprocess.run(["bash", "-c", cat], cwd=tmp_path, check=True, timeout=WAIT_S)
    if NGINX is not None:
        prefix = tmp_path / "piping-nginx"
        prefix.mkdir()
        checked = subprocess.run(
            [NGINX, "-t", "-p", str(prefix), "-e", "stderr", "-c", str(tmp_path / "deploy" / "nginx.conf")],
            capture_output=True,
            text=True,
            timeout=WAIT_S,
        )
        assert checked.returncode == 0, checked.stderr
    if HAPROXY is not None:
        checked = subprocess.run(
            [HAPROXY, "-c", "-f", "haproxy.cfg"],
            cwd=tmp_path / "deploy",
            capture_output=True,
            text=True,
            timeout=WAIT_S,
        )
        assert checked.returncode == 0, checked.stdout + checked.stderr
    if NGINX is None and HAPROXY is None:
        pytest.skip("neither nginx nor haproxy is installed")


def test_shipped_files_hold_what_the_deployment_needs() -> None:
    """The directives the deployment rests on are in the files (the runs above prove they work together)."""
    nginx = (DEPLOY / "nginx.conf").read_text()
    settings = [line for line in nginx.splitlines() if not line.lstrip().startswith("#")]
    # nginx's HTTP/1.1 proxy stops sending an upload once the response head is out: a Piping transfer stalls;
    # it carries only HEAD, which has no body (the gRPC proxy would say Content-Length: 0)
    proxy_passes = [i for i, line in enumerate(settings) if "proxy_pass" in line]
    assert len(proxy_passes) == 1 and "if ($request_method = HEAD)" in settings[proxy_passes[0] - 1]
    for directive in (
        "hash $uri consistent;",
        "grpc_pass grpc://piping;",
        "chunked_transfer_encoding on;",
        "client_max_body_size 0;",
        "grpc_read_timeout 7d;",
        "grpc_send_timeout 7d;",
        "ssl http2;",
    ):
        assert directive in nginx, directive
    haproxy = (DEPLOY / "haproxy.cfg").read_text()
    for directive in (
        "balance uri path-only",
        "hash-type consistent",
        "alpn h2,http/1.1",
        "timeout server 7d",
        "timeout client 7d",
        "option forwardfor",
    ):
        assert directive in haproxy, directive
    settings = [line for line in haproxy.splitlines() if not line.lstrip().startswith("#")]
    assert not any("http-buffer-request" in line for line in settings)  # it would hold the upload back
