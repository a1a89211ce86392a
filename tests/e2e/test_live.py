"""Live transfers end to end with curl, over every transport of ``target`` (docs/protocol.md section 11).

The stream's bytes are a function of their offset (``pattern``), so each receiver checks on its own
that it got exactly the stream from its ``Piping-Live-Offset`` on. Waits follow the sender's progress
lines, never the clock; sizes are small except where a backlog must be overrun.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pytest

from ..helpers import WAIT_S, Response, ServerProcess, Target, fetch, parse_head, unique_path

pytestmark = pytest.mark.beyond

LIVE = "[INFO] Live: receivers may join and leave at any time.\n"

_CYCLE = bytes(range(251))
_BLOCK = _CYCLE * (1024 * 1024 // 251 + 2)  # a MiB and a bit of the pattern, sliced from below


def pattern(start: int, size: int) -> bytes:
    """The stream's bytes from ``start`` on: byte i of the stream is i % 251."""
    out = bytearray()
    while size > 0:
        piece = min(size, 1024 * 1024)
        skip = start % 251
        out += _BLOCK[skip : skip + piece]
        start += piece
        size -= piece
    return bytes(out)


class Reader:
    """A curl process whose stdout is read by a thread (so that it never blocks), head dumped to a file."""

    def __init__(self, target: Target, *args: str, tmp: Path, stdin: int | None = None, read: bool = True) -> None:
        self.head_path = tmp / f"head-{time.monotonic_ns()}"
        self.proc = target.popen_curl("-D", str(self.head_path), *args, stdin=stdin)
        self.data = bytearray()
        self._cond = threading.Condition()
        self._done = False
        self._thread: threading.Thread | None = None
        if read:
            self.start_reading()

    def start_reading(self) -> None:
        self._thread = threading.Thread(target=self._pump, daemon=True)
        self._thread.start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        while True:
            chunk = self.proc.stdout.read1(1 << 20)  # type: ignore[attr-defined]
            with self._cond:
                if not chunk:
                    self._done = True
                    self._cond.notify_all()
                    return
                self.data += chunk
                self._cond.notify_all()

    def wait_for(self, predicate: object, timeout: float = WAIT_S) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: predicate(self) or self._done, timeout)  # type: ignore[operator]

    def wait_text(self, text: str, timeout: float = WAIT_S) -> bool:
        return self.wait_for(lambda r: text.encode() in r.data, timeout) and text.encode() in self.data

    def finish(self, timeout: float = WAIT_S) -> Response:
        self.proc.wait(timeout=timeout)
        if self._thread is not None:
            self._thread.join(timeout)
        status, headers = parse_head(self.head_path.read_bytes()) if self.head_path.exists() else (0, [])
        return Response(status=status, headers=headers, body=bytes(self.data))

    @property
    def offset(self) -> int:
        _, headers = parse_head(self.head_path.read_bytes())
        return int(dict(headers)["piping-live-offset"])

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=WAIT_S)


class Sender(Reader):
    """A live sender fed by the test through curl's stdin; its progress lines are read as they come."""

    def __init__(self, target: Target, path: str, tmp: Path) -> None:
        super().__init__(target, "-T", "-", target.url(path), tmp=tmp, stdin=subprocess.PIPE)
        self.position = 0

    def wait_text(self, text: str, timeout: float = WAIT_S) -> bool:
        """Wait for a progress line. curl reads its response only between reads of its stdin, so while
        waiting the stream goes on a byte at a time: offsets are read from the receivers' headers."""
        deadline = time.monotonic() + timeout
        while text.encode() not in self.data and time.monotonic() < deadline and self.proc.poll() is None:
            self.write(1)
            self.wait_for(lambda r: text.encode() in r.data, 0.1)
        return text.encode() in self.data

    def write(self, size: int) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(pattern(self.position, size))
        self.proc.stdin.flush()
        self.position += size

    def close(self) -> Response:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        return self.finish()


def receiver(target: Target, path: str, tmp: Path, *, read: bool = True) -> Reader:
    return Reader(target, target.url(path), tmp=tmp, read=read)


def check_slice(got: Reader, end: int) -> None:
    """``got`` holds exactly the stream from its offset to ``end``."""
    response = got.finish()
    offset = got.offset
    assert response.status == 200
    assert response.header("content-length") is None
    assert "Piping-Live-Offset" in (response.header("access-control-expose-headers") or "")
    assert len(response.body) == end - offset
    assert response.body == pattern(offset, end - offset)
    assert got.proc.returncode == 0, "a stream that ended normally ends every receiver normally"


def test_receivers_before_the_sender_start_at_zero(target: Target, tmp_path: Path) -> None:
    path = unique_path("live")
    first = [receiver(target, path + "?live", tmp_path) for _ in range(2)]
    time.sleep(0.5)  # only the arrival order matters: both wait before the sender comes
    send = Sender(target, path + "?live", tmp_path)
    assert send.wait_text("[INFO] A receiver joined (2 now).\n")
    send.write(50_000)
    done = send.close()
    for got in first:
        check_slice(got, send.position)
        assert got.offset == 0
    assert done.status == 200
    assert done.body.decode() == (
        LIVE
        + "[INFO] A receiver joined (1 now).\n[INFO] A receiver joined (2 now).\n"
        + f"[INFO] Live ended: 2 receiver(s) served, {send.position} byte(s) sent.\n"
    )


def test_join_at_once_and_mid_stream_then_leave(target: Target, tmp_path: Path) -> None:
    path = unique_path("live")
    send = Sender(target, path + "?live", tmp_path)
    assert send.wait_text(LIVE)
    early = receiver(target, path, tmp_path)  # no ?live needed once the sender is there
    assert send.wait_text("(1 now)")
    send.write(30_000)
    assert early.wait_for(lambda r: len(r.data) >= send.position)
    before_join = send.position
    late = receiver(target, path, tmp_path)
    leaver = receiver(target, path + "?live", tmp_path)
    assert send.wait_text("(3 now)")
    after_join = send.position
    send.write(20_000)
    assert leaver.wait_for(lambda r: len(r.data) >= 20_000)
    leaver.kill()
    assert send.wait_text("[INFO] A receiver left (2 now).\n")
    send.write(10_000)
    done = send.close()
    check_slice(early, send.position)
    assert early.offset == 0
    check_slice(late, send.position)
    assert before_join <= late.offset <= after_join, "a joiner starts at the next piece read after it joined"
    summary = f"[INFO] Live ended: 3 receiver(s) served, {send.position} byte(s) sent.\n"
    assert done.body.decode().endswith(summary)


def test_nobody_listening_pauses_the_sender_and_loses_nothing(target: Target, tmp_path: Path) -> None:
    path = unique_path("live")
    send = Sender(target, path + "?live", tmp_path)
    assert send.wait_text(LIVE)
    send.write(5_000)  # read, or not, while nobody listens: either way it goes to the next receiver
    time.sleep(0.3)
    got = receiver(target, path, tmp_path)
    assert send.wait_text("(1 now)")
    send.write(5_000)
    send.close()
    check_slice(got, send.position)
    assert got.offset == 0


def test_stalled_receiver_is_cut_while_another_keeps_going(target: Target, tmp_path: Path) -> None:
    path = unique_path("live")
    send = Sender(target, path + "?live", tmp_path)
    assert send.wait_text(LIVE)
    fast = receiver(target, path, tmp_path)
    assert send.wait_text("(1 now)")
    stalled = receiver(target, path, tmp_path, read=False)  # curl blocks on its full stdout pipe
    assert send.wait_text("(2 now)")
    cut = "[INFO] A receiver fell too far behind and was cut (1 now).\n"
    # Past the kernel's socket buffers and the 8 MiB backlog: bounded by 96 MiB of stream.
    while cut.encode() not in send.data and send.position < 96 * 1024 * 1024:
        send.write(1024 * 1024)  # blocks while the stalled receiver still sets the pace (its grace)
    assert send.wait_text(cut)
    send.write(100_000)
    done = send.close()
    check_slice(fast, send.position)
    assert fast.offset == 0
    stalled.start_reading()
    stalled.finish()
    assert stalled.proc.returncode != 0, "the stalled receiver sees a cut stream"
    assert done.body.decode().endswith(f"[INFO] Live ended: 2 receiver(s) served, {send.position} byte(s) sent.\n")


def test_sender_breaking_cuts_every_receiver(target: Target, tmp_path: Path) -> None:
    path = unique_path("live")
    send = Sender(target, path + "?live", tmp_path)
    assert send.wait_text(LIVE)
    got = [receiver(target, path, tmp_path) for _ in range(2)]
    assert send.wait_text("(2 now)")
    send.write(10_000)
    for r in got:
        assert r.wait_for(lambda r: len(r.data) >= 10_000)
    send.kill()
    for r in got:
        r.finish()
        assert r.proc.returncode != 0, "a broken upload cuts its receivers"
        assert bytes(r.data) == pattern(r.offset, len(r.data))
    # and the path is free again at once
    again = Sender(target, path + "?live", tmp_path)
    assert again.wait_text(LIVE)
    again.kill()


def test_form_upload_streams_its_first_part(target: Target, tmp_path: Path) -> None:
    """A browser form sent live: receivers get its first part, with that part's headers (section 6)."""
    path = unique_path("live")
    early = receiver(target, path + "?live", tmp_path)
    time.sleep(0.5)  # the receiver waits before the sender comes
    data = pattern(0, 70_000)
    (tmp_path / "part.bin").write_bytes(data)
    sent = fetch(
        target, path + "?live", "-F", f"file=@{tmp_path / 'part.bin'};type=text/csv", "-F", "other=x", tmp=tmp_path
    )
    got = early.finish()
    assert sent.status == 200 and b"[INFO] Live ended: 1 receiver(s) served, 70000 byte(s) sent." in sent.body
    assert got.body == data and early.offset == 0
    assert got.header("content-type") == "text/csv"
    assert 'filename="part.bin"' in (got.header("content-disposition") or "")


def test_mismatches_each_way(target: Target, tmp_path: Path) -> None:
    path = unique_path("live")
    waiting = receiver(target, path, tmp_path)  # an ordinary receiver waits
    time.sleep(0.5)
    refused = fetch(target, path + "?live", "-T", "-", tmp=tmp_path, input=b"x")
    assert refused.status == 400
    assert refused.body == f"[ERROR] A live sender cannot join the ordinary transfer waiting on '{path}'.\n".encode()
    refused = fetch(target, path + "?live", tmp=tmp_path)
    assert refused.body == f"[ERROR] A live receiver cannot join the ordinary transfer waiting on '{path}'.\n".encode()
    waiting.kill()
    other = unique_path("live")
    live_waiting = receiver(target, other + "?live", tmp_path)
    time.sleep(0.5)
    refused = fetch(target, other, "-T", "-", tmp=tmp_path, input=b"x")
    assert refused.status == 400
    assert refused.body == f"[ERROR] An ordinary sender cannot join the live transfer waiting on '{other}'.\n".encode()
    refused = fetch(target, other, tmp=tmp_path)
    ordinary = f"[ERROR] An ordinary receiver cannot join the live transfer waiting on '{other}'.\n"
    assert refused.body == ordinary.encode()
    live_waiting.kill()


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("?live&n=2", '[ERROR] "n" and "live" cannot be used together\n'),
        ("?live=yes", '[ERROR] Invalid "live" query parameter\n'),
    ],
)
def test_bad_queries(target: Target, tmp_path: Path, query: str, message: str) -> None:
    path = unique_path("live")
    sent = fetch(target, path + query, "-T", "-", tmp=tmp_path, input=b"x")
    got = fetch(target, path + query, tmp=tmp_path)
    assert (sent.status, sent.body, got.status, got.body) == (400, message.encode(), 400, message.encode())


def test_reserved_paths(target: Target, tmp_path: Path) -> None:
    sent = fetch(target, "/help?live", "-T", "-", tmp=tmp_path, input=b"x")
    assert sent.status == 400
    assert sent.body == b"[ERROR] Cannot send to the reserved path '/help'. (e.g. '/mypath123')\n"
    assert fetch(target, "/version?live", tmp=tmp_path).status == 200


# --- the operator's view (ours only) ---------------------------------------------------------------------------


@pytest.mark.ours
def test_operator_limits_metrics_and_join_lines(tmp_path: Path) -> None:
    """``--live-max-lag`` (a smaller backlog), ``--max-live-receivers``, the live metrics, access lines for joins."""
    from ..ops.util import metrics, server_with, wait_log

    lag = 2 * 1024 * 1024
    args = ("--live-max-lag", str(lag), "--max-live-receivers", "2", "--access-log")
    with server_with(*args, tmp=tmp_path, metrics_port=True) as (server, mport):
        target = server.target("h1")
        path = unique_path("live")
        send = Sender(target, path + "?live", tmp_path)
        assert send.wait_text(LIVE)
        fast = receiver(target, path, tmp_path)
        stalled = receiver(target, path, tmp_path, read=False)
        assert send.wait_text("(2 now)")
        refused = fetch(target, path, tmp=tmp_path)
        assert (refused.status, refused.body) == (400, b"[ERROR] The number of receivers has reached limits.\n")
        assert wait_log(server, f'"GET {path}" joined live h1')
        samples = metrics(mport)
        assert samples["piping_live_paths"] == 1 and samples["piping_live_receivers"] == 2
        cut = "[INFO] A receiver fell too far behind and was cut (1 now).\n"
        while cut.encode() not in send.data and send.position < 64 * 1024 * 1024:
            send.write(512 * 1024)
        assert send.wait_text(cut)
        assert metrics(mport)["piping_live_receivers_cut_total"] == 1
        send.close()
        check_slice(fast, send.position)
        stalled.start_reading()
        stalled.finish()
        assert metrics(mport)["piping_live_paths"] == 0


@pytest.mark.ours
def test_config_keys(tmp_path: Path) -> None:
    from ..ops.util import run_cli

    good = tmp_path / "good.toml"
    good.write_text("[limits]\nlive_max_lag = 1048576\nmax_live_receivers = 100\n")
    assert run_cli("--check-config", str(good)).returncode == 0
    bad = tmp_path / "bad.toml"
    bad.write_text("[limits]\nlive_max_lag = 0\n")
    checked = run_cli("--check-config", str(bad))
    assert checked.returncode == 2 and "live_max_lag" in checked.stderr


# --- many receivers at random moments (ours only: RSS) ---------------------------------------------------------


@pytest.mark.ours
@pytest.mark.parametrize("transport", ["h1", "h2"])
def test_ten_receivers_join_at_random_moments(server: ServerProcess | None, tmp_path: Path, transport: str) -> None:
    """Each of 10 receivers, joining anywhere in a 96 MiB stream, gets exactly the stream from its offset on;
    the server's memory does not follow the stream's size."""
    assert server is not None
    target = server.target(transport)
    size, piece = 96 * 1024 * 1024, 256 * 1024
    rng = random.Random(12)
    # the stream runs only while someone listens (section 11), so the first comes at once
    moments = [0, *sorted(rng.randrange(0, size * 3 // 4, piece) for _ in range(9))]
    path = unique_path("live")
    send = Sender(target, path + "?live", tmp_path)
    assert send.wait_text(LIVE)
    files: list[tuple[Reader, Path]] = []
    # in memory (tmpfs) when there is one: a disk's writeback may stall a receiver long enough to lag
    shm = Path("/dev/shm")
    out_dir = Path(tempfile.mkdtemp(dir=shm)) if shm.is_dir() else tmp_path
    rss_start = rss_peak = server.rss_kib()
    written = 0
    while send.position < size:
        while moments and moments[0] <= send.position:
            moments.pop(0)
            out = out_dir / f"r{len(files)}"
            files.append((Reader(target, "-o", str(out), target.url(path), tmp=tmp_path, read=False), out))
            assert send.wait_text(f"[INFO] A receiver joined ({len(files)} now).\n")  # before the stream ends
        send.write(min(piece, size - send.position))
        written += 1
        if written % 32 == 0:
            rss_peak = max(rss_peak, server.rss_kib())
    done = send.close()
    assert done.body.decode().endswith(f"[INFO] Live ended: 10 receiver(s) served, {send.position} byte(s) sent.\n")
    try:
        for got, out in files:
            got.finish(timeout=3 * WAIT_S)
            assert got.proc.returncode == 0, (done.body.decode(), got.proc.stderr.read() if got.proc.stderr else b"")
            offset = got.offset
            body = out.read_bytes()
            assert len(body) == send.position - offset
            assert body == pattern(offset, len(body)), f"receiver at {offset}: not the stream from its offset on"
    finally:
        if out_dir != tmp_path:
            shutil.rmtree(out_dir, ignore_errors=True)
    assert rss_peak - rss_start < 64 * 1024, "memory must not follow the stream (KiB)"


# --- a real live video (the README's lines), when ffmpeg is installed ---------------------------------------------


@pytest.mark.ours
def test_mpegts_joined_midway_decodes(server: ServerProcess | None, tmp_path: Path) -> None:
    """``ffmpeg ... -f mpegts - | curl -T - 'URL?live'`` and a viewer joining midway: what it got plays."""
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        pytest.skip("ffmpeg is not installed")
    assert server is not None
    target = server.target("h1")
    url = target.url(unique_path("tv"))
    encoder = subprocess.Popen(
        [
            ffmpeg,
            "-v",
            "error",
            "-re",
            "-f",
            "lavfi",
            "-i",
            "testsrc=size=320x240:rate=25",
            "-t",
            "5",
            "-c:v",
            "mpeg2video",
            "-g",
            "25",
            "-f",
            "mpegts",
            "-",
        ],
        stdout=subprocess.PIPE,
    )
    uploader = subprocess.Popen(
        target.curl("-T", "-", url + "?live"), stdin=encoder.stdout, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert encoder.stdout is not None
    encoder.stdout.close()  # the uploader owns the pipe now
    try:
        assert uploader.stdout is not None
        assert uploader.stdout.readline() == LIVE.encode()  # the broadcast is there before its viewers
        first = Reader(target, "-o", os.devnull, url, tmp=tmp_path, read=False)  # watches from the start
        assert uploader.stdout.readline() == b"[INFO] A receiver joined (1 now).\n"
        time.sleep(2)  # the broadcast runs in real time (-re): the next viewer comes midway
        clip = tmp_path / "midway.ts"
        viewer = Reader(target, "--max-time", "2", "-o", str(clip), url, tmp=tmp_path, read=False)
        viewer.finish(timeout=WAIT_S)
        assert viewer.offset > 0, "joined midway"
        decoded = subprocess.run(
            [ffmpeg, "-v", "error", "-i", str(clip), "-f", "framemd5", "-"], capture_output=True, timeout=WAIT_S
        )
        frames = [line for line in decoded.stdout.splitlines() if line and not line.startswith(b"#")]
        assert decoded.returncode == 0 and len(frames) >= 10, decoded.stderr
        sent, _ = uploader.communicate(timeout=WAIT_S)
        assert b"[INFO] Live ended: 2 receiver(s) served" in sent, sent
        first.finish()
        assert first.proc.returncode == 0
    finally:
        for proc in (encoder, uploader):
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=WAIT_S)


@pytest.mark.ours
def test_live_under_workers(workers_server: ServerProcess | None, tmp_path: Path) -> None:
    """With ``--workers 3`` a live path has one owner like any other: its sender and receivers meet there,
    whichever worker their connections reached, over HTTP/1.1 and relayed HTTP/2 alike."""
    assert workers_server is not None
    h1, h2 = workers_server.target("h1"), workers_server.target("h2")
    for index in range(3):  # three paths: likely more than one owner
        path = unique_path(f"live{index}")
        send = Sender(h1, path + "?live", tmp_path)
        assert send.wait_text(LIVE)
        plain = receiver(h1, path, tmp_path)
        assert send.wait_text("(1 now)")
        send.write(40_000)
        relayed = receiver(h2, path, tmp_path)
        assert send.wait_text("(2 now)")
        send.write(40_000)
        send.close()
        check_slice(plain, send.position)
        check_slice(relayed, send.position)
