"""Transfers end to end with curl, over every transport of ``target`` (docs/protocol.md sections 4-8)."""

from __future__ import annotations

import contextlib
import hashlib
import os
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from ..helpers import WAIT_S, CurlExchange, Target, fetch, unique_path

WAITING = "[INFO] Waiting for {n} receiver(s)...\n"
START = "[INFO] Start sending to {n} receiver(s)!\n"
SENT = "[INFO] Sent successfully!\n"
ALL_OK = "[INFO] All receiver(s) was/were received successfully.\n"
CONNECTED = "[INFO] A receiver was connected.\n"

# Time for a curl process to be registered by the server before the next one starts. Only the
# *order* of arrivals depends on it, and the sender's progress lines assert that order exactly.
SETTLE_S = 0.5


def receiver(target: Target, path: str, tmp: Path, *args: str) -> CurlExchange:
    return CurlExchange(target, *args, target.url(path), tmp=tmp)


def sender(target: Target, path: str, tmp: Path, *args: str) -> CurlExchange:
    return CurlExchange(target, "-T", "-", *args, target.url(path), stdin=subprocess.PIPE, tmp=tmp)


def test_sender_first(target: Target, tmp_path: Path) -> None:
    path = unique_path()
    send = sender(target, path, tmp_path)
    time.sleep(SETTLE_S)
    recv = receiver(target, path, tmp_path)
    sent = send.finish(input=b"hello piping\n")
    got = recv.finish()
    assert got.status == 200 and got.body == b"hello piping\n"
    assert sent.status == 200
    assert sent.header("content-type") == "text/plain"
    assert sent.body.decode() == WAITING.format(n=1) + CONNECTED + START.format(n=1) + SENT + ALL_OK


def test_receiver_first(target: Target, tmp_path: Path) -> None:
    path = unique_path()
    recv = receiver(target, path, tmp_path)
    time.sleep(SETTLE_S)
    sent = sender(target, path, tmp_path).finish(input=b"abc")
    assert recv.finish().body == b"abc"
    assert sent.body.decode() == (
        WAITING.format(n=1) + "[INFO] 1 receiver(s) has/have been connected.\n" + START.format(n=1) + SENT + ALL_OK
    )


def test_three_receivers_sender_first(target: Target, tmp_path: Path) -> None:
    path = unique_path()
    send = sender(target, path + "?n=3", tmp_path)
    time.sleep(SETTLE_S)
    receivers = [receiver(target, path + "?n=3", tmp_path) for _ in range(3)]
    data = os.urandom(300_000)
    sent = send.finish(input=data)
    for recv in receivers:
        assert recv.finish().body == data
    assert sent.body.decode() == WAITING.format(n=3) + CONNECTED * 3 + START.format(n=3) + SENT + ALL_OK


def test_three_receivers_first(target: Target, tmp_path: Path) -> None:
    path = unique_path()
    receivers = [receiver(target, path + "?n=3", tmp_path) for _ in range(3)]
    time.sleep(SETTLE_S)
    sent = sender(target, path + "?n=3", tmp_path).finish(input=b"x" * 1000)
    for recv in receivers:
        assert recv.finish().body == b"x" * 1000
    assert "[INFO] 3 receiver(s) has/have been connected.\n" in sent.body.decode()
    assert sent.body.decode().endswith(START.format(n=3) + SENT + ALL_OK)


@pytest.mark.parametrize("framing", ["chunked", "length"])
def test_two_receivers_get_a_large_body_whole(target: Target, tmp_path: Path, framing: str) -> None:
    """Several receivers of a body large enough to fill the kernel's pipes many times (on plain HTTP/1,
    the tee(2) relay; on "h1-copy" and the other transports, the copying path): each gets every byte."""
    path = unique_path() + "?n=2"
    data = os.urandom(3 * 1024 * 1024 + 7)
    src = tmp_path / "body.bin"
    src.write_bytes(data)
    receivers = [receiver(target, path, tmp_path) for _ in range(2)]
    time.sleep(SETTLE_S)
    if framing == "length":
        sent = CurlExchange(target, "-T", str(src), target.url(path), tmp=tmp_path).finish()
    else:
        sent = sender(target, path, tmp_path).finish(input=data)
    for recv in receivers:
        got = recv.finish()
        assert got.status == 200 and hashlib.sha256(got.body).digest() == hashlib.sha256(data).digest()
    assert sent.body.decode().endswith(ALL_OK)


@pytest.mark.ours  # the reference stalls the remaining receiver (docs/protocol.md 8 requires it to go on)
def test_first_receiver_leaving_mid_body_leaves_the_other_whole(target: Target, tmp_path: Path) -> None:
    """The first of two receivers goes away after 1 MiB of a 16 MiB body; the other still gets every byte
    (on plain HTTP/1 the tee(2) relay then hands its pipe to the other receiver)."""
    import threading

    path = unique_path() + "?n=2"
    data = os.urandom(16 * 1024 * 1024)
    leaver = target.popen_curl(target.url(path))
    time.sleep(SETTLE_S)
    stayer = receiver(target, path, tmp_path)
    time.sleep(SETTLE_S)
    send = sender(target, path, tmp_path)
    stdin = send.proc.stdin
    assert stdin is not None and leaver.stdout is not None

    def feed() -> None:
        with contextlib.suppress(BrokenPipeError):
            stdin.write(data)
        stdin.close()

    feeder = threading.Thread(target=feed)
    feeder.start()
    got = 0
    while got < 1024 * 1024:
        piece = leaver.stdout.read(64 * 1024)
        assert piece, "the leaving receiver got too little"
        got += len(piece)
    leaver.kill()
    leaver.communicate(timeout=WAIT_S)
    body = stayer.finish().body
    feeder.join(timeout=WAIT_S)
    send.proc.stdin = None  # the feeder closed it: communicate() must not flush it
    sent = send.finish()
    assert len(body) == len(data) and body == data
    # (whether the sender hears "A receiver aborted." depends on how much the kernel had buffered for
    # the leaver when it went: not asserted)
    assert sent.status == 200 and "Sent successfully" in sent.body.decode()


def test_put_file_with_length_and_headers(target: Target, tmp_path: Path) -> None:
    path = unique_path()
    src = tmp_path / "payload.bin"
    src.write_bytes(os.urandom(123_457))
    recv = receiver(target, path, tmp_path)
    time.sleep(SETTLE_S)
    CurlExchange(
        target,
        "-T",
        str(src),
        "-H",
        "Content-Type: application/x-custom; a=b",
        "-H",
        'Content-Disposition: attachment; filename="payload.bin"',
        "-H",
        "X-Piping: first",
        "-H",
        "X-Piping: second",
        target.url(path),
        tmp=tmp_path,
    ).finish()
    got = recv.finish()
    assert got.body == src.read_bytes()
    assert got.header("content-length") == "123457"
    assert got.header("content-type") == "application/x-custom; a=b"
    assert got.header("content-disposition") == 'attachment; filename="payload.bin"'
    assert got.all("x-piping") == ["first", "second"]
    assert got.header("access-control-expose-headers") == "X-Piping"
    assert got.header("access-control-allow-origin") == "*"
    assert got.header("x-robots-tag") == "none"


@pytest.mark.beyond
def test_receiver_gets_no_proxy_buffering_headers(target: Target, tmp_path: Path) -> None:
    path = unique_path()
    recv = receiver(target, path, tmp_path)
    time.sleep(SETTLE_S)
    sender(target, path, tmp_path).finish(input=b"z")
    got = recv.finish()
    assert got.header("x-accel-buffering") == "no"
    assert got.header("cache-control") == "private, no-cache, no-transform"
    assert got.header("access-control-expose-headers") is None  # no X-Piping was sent


@pytest.mark.parametrize(
    ("sent_type", "received_type", "beyond"),
    [
        ("text/html", "text/plain", False),
        ("text/html; charset=utf-8", "text/plain; charset=utf-8", False),
        ("TEXT/HTML", "text/plain", True),
        ("application/xhtml+xml", "text/plain", True),
        ("image/svg+xml; charset=utf-8", "text/plain; charset=utf-8", True),
        ("text/xml", "text/plain", True),
        ("application/xml", "text/plain", True),
        ("image/png", "image/png", False),
    ],
)
def test_document_types_are_defused(
    target: Target, tmp_path: Path, sent_type: str, received_type: str, beyond: bool
) -> None:
    if beyond and target.name == "external":
        pytest.skip("beyond the reference")
    path = unique_path()
    recv = receiver(target, path, tmp_path)
    time.sleep(SETTLE_S)
    sender(target, path, tmp_path, "-H", f"Content-Type: {sent_type}").finish(input=b"<b>hi</b>")
    assert recv.finish().header("content-type") == received_type


def test_multipart_form_sends_first_part(target: Target, tmp_path: Path) -> None:
    path = unique_path()
    src = tmp_path / "hello.txt"
    data = os.urandom(200_000)
    src.write_bytes(data)
    recv = receiver(target, path, tmp_path)
    time.sleep(SETTLE_S)
    form = CurlExchange(
        target,
        "-F",
        f"input_file=@{src};type=application/x-thing",
        "-F",
        "other=ignored",
        target.url(path),
        tmp=tmp_path,
    ).finish()
    got = recv.finish()
    assert form.status == 200
    assert got.body == data
    assert got.header("content-type") == "application/x-thing"
    assert got.header("content-disposition") == 'form-data; name="input_file"; filename="hello.txt"'


@pytest.mark.beyond
def test_multipart_receiver_gets_no_content_length(target: Target, tmp_path: Path) -> None:
    path = unique_path()
    recv = receiver(target, path, tmp_path)
    time.sleep(SETTLE_S)
    CurlExchange(target, "-F", "input_text=hello there", target.url(path), tmp=tmp_path).finish()
    got = recv.finish()
    assert got.body == b"hello there"
    assert got.header("content-length") is None


def test_path_reusable_after_transfer(target: Target, tmp_path: Path) -> None:
    path = unique_path()
    for i in range(3):
        recv = receiver(target, path, tmp_path)
        time.sleep(SETTLE_S)
        sender(target, path, tmp_path).finish(input=b"round %d" % i)
        assert recv.finish().body == b"round %d" % i


def test_dot_segments_are_the_same_path(target: Target, tmp_path: Path) -> None:
    path = unique_path()
    recv = receiver(target, path, tmp_path)
    time.sleep(SETTLE_S)
    sender(target, "/zz/.." + path, tmp_path, "--path-as-is").finish(input=b"dots")
    assert recv.finish().body == b"dots"


def test_busy_path_is_refused_while_running(target: Target, tmp_path: Path) -> None:
    path = unique_path()
    send = sender(target, path, tmp_path)
    time.sleep(SETTLE_S)
    recv = receiver(target, path, tmp_path)
    time.sleep(SETTLE_S)
    other = fetch(target, path, tmp=tmp_path)
    assert other.status == 400
    assert other.body == f"[ERROR] Connection on '{path}' has been established already.\n".encode()
    second = fetch(target, path, "-T", "-", tmp=tmp_path, input=b"x")
    assert second.body == f"[ERROR] Connection on '{path}' has been established already.\n".encode()
    send.finish(input=b"done")
    assert recv.finish().body == b"done"


def test_hundred_transfers_at_once(target: Target, tmp_path: Path) -> None:
    """100 independent transfers on different paths, each checked byte for byte."""
    count = 100

    def one(i: int) -> bool:
        path = unique_path(f"many{i}")
        payload = (b"%d:" % i) * 5000
        recv = subprocess.Popen(target.curl(target.url(path)), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        send = subprocess.run(target.curl("-T", "-", target.url(path)), input=payload, capture_output=True, timeout=60)
        out, _ = recv.communicate(timeout=60)
        return send.returncode == 0 and out == payload

    with ThreadPoolExecutor(max_workers=count) as pool:
        results = list(pool.map(one, range(count)))
    assert all(results), f"{results.count(False)} of {count} transfers failed"


def test_large_transfer_sha256(target: Target, tmp_path: Path) -> None:
    """A 1 GiB stream through curl on both ends arrives whole (SHA-256)."""
    size = 1 << 30
    path = unique_path("big")
    block = hashlib.sha256(b"seed").digest() * 2048  # 64 KiB of fixed pseudo-random bytes
    expected = hashlib.sha256()
    for _ in range(size // len(block)):
        expected.update(block)
    recv = subprocess.Popen(target.curl(target.url(path)), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    send = subprocess.Popen(
        target.curl("-T", "-", target.url(path)), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert send.stdin is not None and recv.stdout is not None

    import threading

    def feed() -> None:
        assert send.stdin is not None
        for _ in range(size // len(block)):
            send.stdin.write(block)
        send.stdin.close()

    feeder = threading.Thread(target=feed)
    feeder.start()
    got = hashlib.sha256()
    received = 0
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        chunk = recv.stdout.read(1 << 20)
        if not chunk:
            break
        got.update(chunk)
        received += len(chunk)
    feeder.join(timeout=WAIT_S)
    assert recv.wait(timeout=WAIT_S) == 0
    assert send.stdout is not None
    sent_out = send.stdout.read()
    assert send.wait(timeout=WAIT_S) == 0
    assert received == size
    assert got.hexdigest() == expected.hexdigest()
    assert sent_out.decode().endswith(ALL_OK)


@pytest.mark.ours
@pytest.mark.parametrize("transport", ["h1", "h1-copy", "h2c"])
def test_memory_stays_flat_during_a_large_stream(request: pytest.FixtureRequest, transport: str) -> None:
    """1 GiB through the server (spliced, copied, HTTP/2) grows its RSS by a bounded window only."""
    import threading

    proc = request.getfixturevalue("copying_server" if transport == "h1-copy" else "server")
    target = proc.target("h2c" if transport == "h2c" else "h1")
    size = 1 << 30
    path = unique_path("flat")
    baseline = proc.rss_kib()
    peak = [baseline]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.05):
            peak[0] = max(peak[0], proc.rss_kib())

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        recv = subprocess.Popen(
            target.curl("-o", "/dev/null", "-w", "%{size_download}", target.url(path)),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        source = subprocess.Popen(["head", "-c", str(size), "/dev/zero"], stdout=subprocess.PIPE)
        sent = subprocess.run(
            target.curl("-T", "-", target.url(path)), stdin=source.stdout, capture_output=True, timeout=300
        )
        out, _ = recv.communicate(timeout=300)
    finally:
        done.set()
        sampler.join(timeout=WAIT_S)
    assert sent.stdout.decode().endswith(ALL_OK)
    assert int(out) == size
    growth_mib = (peak[0] - baseline) / 1024
    assert growth_mib < 48, f"RSS grew by {growth_mib:.1f} MiB during a 1 GiB stream"
