"""The client's kernel paths and their copying twins, byte-exact: a file uploaded with sendfile(2), a body
spliced into stdout's pipe (Content-Length and chunked), a body written to a file given as stdout.
``PIPING_SPLICE=0`` turns the kernel paths off, so each test runs over both."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from conftest import env, needs, piping_cmd
from piping_server.client import Reporter, get_async, send_async

Popen = subprocess.Popen[bytes]


@pytest.fixture(params=["kernel", "copied"])
def client_env(request: pytest.FixtureRequest) -> dict[str, str]:
    e = env()
    if request.param == "copied":
        e["PIPING_SPLICE"] = "0"
    return e


def _start(client_env: dict[str, str], *args: str, stdout: Any = subprocess.PIPE, stdin: Any = None) -> Popen:
    return subprocess.Popen(piping_cmd(*args), env=client_env, stdin=stdin, stdout=stdout, stderr=subprocess.PIPE)


def _run(client_env: dict[str, str], *args: str, data: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(piping_cmd(*args), env=client_env, input=data, capture_output=True, timeout=60)


def _receiver(url: str, client_env: dict[str, str], stdout: Any = subprocess.PIPE) -> Popen:
    proc = _start(client_env, "get", "-q", url, stdout=stdout)
    time.sleep(0.3)
    return proc


def test_file_into_a_pipe(server: str, path: str, tmp_path: Path, client_env: dict[str, str]) -> None:
    # A regular file goes with Content-Length (sendfile), and arrives into the pipe (splice). The odd size
    # leaves a partial last slice; 5 MB is more than one 4 MiB kernel slice.
    data = os.urandom(5_000_003)
    src = tmp_path / "f.bin"
    src.write_bytes(data)
    receiver = _receiver(server + path, client_env)
    r = _run(client_env, "send", "-q", server + path, str(src))
    out, err = receiver.communicate(timeout=60)
    assert r.returncode == 0, r.stderr
    assert receiver.returncode == 0, err
    assert out == data


def test_chunked_stream_into_a_pipe(server: str, path: str, client_env: dict[str, str]) -> None:
    # curl -T - sends chunked: the receiver splices each chunk's bytes and reads the chunk heads between them.
    curl = needs("curl")
    data = os.urandom(3_000_001)
    receiver = _receiver(server + path, client_env)
    sender = subprocess.run([curl, "-sS", "-T", "-", server + path], input=data, capture_output=True, timeout=60)
    out, err = receiver.communicate(timeout=60)
    assert sender.returncode == 0, sender.stderr
    assert receiver.returncode == 0, err
    assert out == data


def test_stdout_is_a_file(server: str, path: str, tmp_path: Path, client_env: dict[str, str]) -> None:
    # `piping get URL > file`: no pipe to splice into; what arrives is written to the file as it is.
    data = os.urandom(2_000_000)
    target = tmp_path / "out.bin"
    with open(target, "wb") as f:
        f.write(b"kept:")  # the shell's file may hold bytes already: ours come after them
        f.flush()
        receiver = _receiver(server + path, client_env, stdout=f)
        r = _run(client_env, "send", "-q", server + path, data=data)
        _, err = receiver.communicate(timeout=60)
    assert r.returncode == 0, r.stderr
    assert receiver.returncode == 0, err
    assert target.read_bytes() == b"kept:" + data


def test_reader_of_the_pipe_goes_away(server: str, path: str, client_env: dict[str, str]) -> None:
    # `piping get URL | head -c 1000`: the pipe breaks under the receiver; it stops without a traceback.
    head = needs("head")
    data = os.urandom(8_000_000)
    pipe_r, pipe_w = os.pipe()
    receiver = _start(client_env, "get", "-q", server + path, stdout=pipe_w)
    os.close(pipe_w)
    reader = subprocess.Popen([head, "-c", "1000"], stdin=pipe_r, stdout=subprocess.PIPE)
    os.close(pipe_r)
    time.sleep(0.3)
    sender = _start(client_env, "send", "-q", server + path, stdin=subprocess.PIPE)
    with contextlib.suppress(BrokenPipeError):  # the sender may see its stdin closed early: not the point here
        sender.communicate(data, timeout=60)
    out, _ = reader.communicate(timeout=60)
    _, err = receiver.communicate(timeout=60)
    assert out == data[:1000]
    assert receiver.returncode != 0
    assert b"Traceback" not in err


class _Steps(Reporter):
    def __init__(self) -> None:
        self.total: int | None = None
        self.steps: list[int] = []

    def begin(self, total: int | None, description: str) -> None:
        self.total = total

    def advance(self, n: int) -> None:
        self.steps.append(n)


def test_progress_moves_with_the_kernel_paths(server: str, path: str, tmp_path: Path) -> None:
    # The bar advances per sendfile slice (at most 4 MiB each) and per piece written: no jump from 0 to done.
    data = os.urandom(9_000_000)
    src = tmp_path / "f.bin"
    src.write_bytes(data)
    sent, got = _Steps(), _Steps()

    async def main() -> None:
        with open(tmp_path / "out.bin", "wb") as out:
            getter = asyncio.create_task(get_async(server + path, out, reporter=got))
            await asyncio.sleep(0.3)
            await send_async(server + path, src, reporter=sent)
            await asyncio.wait_for(getter, 60)

    asyncio.run(asyncio.wait_for(main(), 90))
    assert (tmp_path / "out.bin").read_bytes() == data
    assert sent.total == got.total == len(data)
    assert sum(sent.steps) == sum(got.steps) == len(data)
    assert len(sent.steps) >= 3 and len(got.steps) >= 3


def test_non_blocking_stdout_pipe(server: str, path: str, client_env: dict[str, str]) -> None:
    # A pipe left non-blocking by another program: not spliced (splice would spin on EAGAIN), written with waits.
    data = os.urandom(4_000_000)
    pipe_r, pipe_w = os.pipe()
    os.set_blocking(pipe_w, False)
    receiver = _start(client_env, "get", "-q", server + path, stdout=pipe_w)
    os.close(pipe_w)
    time.sleep(0.3)
    sender = _start(client_env, "send", "-q", server + path, stdin=subprocess.PIPE)
    feeder = threading.Thread(target=sender.communicate, args=(data, 60), daemon=True)
    feeder.start()  # (in a thread: the pipe below is read meanwhile)
    got = bytearray()
    deadline = time.monotonic() + 60
    with os.fdopen(pipe_r, "rb") as r:
        while time.monotonic() < deadline and (piece := r.read(65536)):
            got += piece
    feeder.join(60)
    assert receiver.wait(60) == 0
    assert sender.wait(60) == 0
    assert bytes(got) == data


def test_receiver_gone_during_sendfile(server: str, path: str, tmp_path: Path, client_env: dict[str, str]) -> None:
    # The server drops the sender while sendfile waits for room in the socket: one line, blaming the receiver.
    curl = needs("curl")
    src = tmp_path / "big.bin"
    src.write_bytes(os.urandom(40_000_000))
    receiver = subprocess.Popen([curl, "-sS", "--limit-rate", "2M", server + path], stdout=subprocess.DEVNULL)
    time.sleep(0.3)
    sender = _start(client_env, "send", "-q", server + path, str(src))
    time.sleep(1.0)
    receiver.kill()
    receiver.wait(10)
    _, err_bytes = sender.communicate(timeout=60)
    err = err_bytes.decode()
    assert sender.returncode == 5, err
    assert err.startswith("piping: error:") and err.count("\n") == 1, err
    assert "receiver" in err and "sender" not in err, err


def test_file_that_shrinks_while_sent(server: str, path: str, tmp_path: Path, client_env: dict[str, str]) -> None:
    # Cut short under the sender, the file cannot fill its announced length: the sender says so and ends
    # (the server would otherwise wait for the missing bytes).
    curl = needs("curl")
    src = tmp_path / "shrinks.bin"
    src.write_bytes(os.urandom(40_000_000))
    got = tmp_path / "got.bin"
    receiver = subprocess.Popen([curl, "-sS", "--limit-rate", "2M", "-o", str(got), server + path])
    time.sleep(0.3)
    sender = _start(client_env, "send", "-q", server + path, str(src))
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not (got.exists() and got.stat().st_size):
        time.sleep(0.05)  # the sender has announced 40 MB and is sending them
    os.truncate(src, 1_000_000)
    _, err_bytes = sender.communicate(timeout=60)
    receiver.kill()
    receiver.wait(10)
    err = err_bytes.decode()
    assert sender.returncode == 2, err
    assert err == "piping: error: the input changed while being sent (1000000 bytes instead of 40000000)\n", err
