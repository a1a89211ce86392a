"""The client's live transfers (docs/protocol.md section 11): ``send --live``, ``get --from-start``, plain ``get``."""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from conftest import run_piping, running_server, start_piping
from piping_server.client import Reporter, send_async


@pytest.fixture(scope="module")
def ours() -> Iterator[str]:
    with running_server("ours") as url:
        yield url


def test_get_from_start_then_live_send(ours: str, path: str, tmp_path: Path) -> None:
    data = os.urandom(300_000)
    src = tmp_path / "clip.ts"
    src.write_bytes(data)
    out = tmp_path / "got.ts"
    getter = start_piping("get", "--from-start", ours + path, "-o", str(out))
    time.sleep(0.5)  # only the order matters: the receiver waits for its live sender
    sent = run_piping("send", "--live", ours + path, str(src))
    assert sent.returncode == 0, sent.stderr
    _, err = getter.communicate(timeout=30)
    assert getter.returncode == 0, err
    assert out.read_bytes() == data
    lines = sent.stderr.decode()
    assert "[INFO] A receiver joined (1 now)." in lines
    assert "[INFO] Live ended: 1 receiver(s) served, 300000 byte(s) sent." in lines


def test_plain_get_joins_a_live_stream(ours: str, path: str) -> None:
    sender = start_piping("send", "--live", ours + path, stdin=subprocess.PIPE)
    assert sender.stdin is not None
    first = b"first part, before anyone listens\n"
    sender.stdin.write(first)
    sender.stdin.flush()
    # a plain GET before the live sender would wait for an ordinary one: let the sender be there first
    assert sender.stderr is not None
    assert sender.stderr.readline().startswith(b"[INFO] Live:")
    getter = start_piping("get", ours + path)
    got = b""
    assert getter.stdout is not None
    later = b"x" * 100_000
    deadline = time.monotonic() + 20
    # the stream goes on until the receiver has some of it (it joined), then ends
    while time.monotonic() < deadline and getter.poll() is None and not got:
        sender.stdin.write(later)
        sender.stdin.flush()
        got = os.read(getter.stdout.fileno(), 65536)
    sender.stdin.close()
    rest, _ = getter.communicate(timeout=30)
    assert getter.returncode == 0
    whole = got + rest
    assert whole and (first + later * 1000).find(whole[:1000]) >= 0
    assert sender.stderr is not None
    sender.wait(timeout=30)
    err = sender.stderr.read()
    assert sender.returncode == 0, err
    assert b"[INFO] Live ended: 1 receiver(s) served" in err


class Audience(Reporter):
    def __init__(self) -> None:
        self.seen: list[tuple[int, int]] = []

    def receivers(self, now: int, served: int) -> None:
        self.seen.append((now, served))


def test_progress_counts_receivers_now_and_served(ours: str, path: str) -> None:
    audience = Audience()

    async def main() -> None:
        stop = asyncio.Event()

        async def body() -> AsyncIterator[bytes]:
            for _ in range(6000):  # bounded: a minute at most
                if stop.is_set():
                    return
                yield b"tick\n" * 100
                await asyncio.sleep(0.01)

        sending = asyncio.create_task(send_async(ours + path, body(), live=True, reporter=audience))
        await asyncio.sleep(0.3)
        for _ in range(2):  # two receivers come and go
            proc = await asyncio.create_subprocess_exec(
                "curl", "-sS", "-o", os.devnull, "--max-time", "2", ours + path, stderr=subprocess.DEVNULL
            )
            await proc.wait()
        last = await asyncio.create_subprocess_exec("curl", "-sS", "-o", os.devnull, ours + path)
        for _ in range(500):
            if audience.seen[-1:] == [(1, 3)]:
                break
            await asyncio.sleep(0.02)
        stop.set()
        await sending
        await last.wait()

    asyncio.run(asyncio.wait_for(main(), 90))
    assert audience.seen == [(1, 1), (0, 1), (1, 2), (0, 2), (1, 3)]


def test_usage_errors() -> None:
    both = run_piping("send", "--live", "-n", "2", "http://127.0.0.1:9/p", input=b"x")
    assert both.returncode == 2 and b"live" in both.stderr
    both = run_piping("get", "--from-start", "-n", "2", "http://127.0.0.1:9/p")
    assert both.returncode == 2 and b"--from-start" in both.stderr
