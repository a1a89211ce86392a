"""Fixtures for the client tests: real server processes on 127.0.0.1 (ours and the Node reference)."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.helpers import stop_process

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "src"
if str(SRC) not in sys.path:
    sys.path.insert(0, str(SRC))

REF_DIR = Path(os.environ.get("PIPING_REF_DIR", "/tmp/ref"))
REF_BIN = REF_DIR / "node_modules" / ".bin" / "piping-server"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, proc: subprocess.Popen[bytes] | None = None, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before listening on {port}")
        with socket.socket() as s:
            s.settimeout(0.5)
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on {port} after {timeout}s")


def env() -> dict[str, str]:
    e = dict(os.environ)
    e["PYTHONPATH"] = str(SRC) + os.pathsep + e.get("PYTHONPATH", "")
    e.pop("PIPING_SERVER", None)
    e.pop("PIPING_PASS", None)
    return e


def _ours_available() -> bool:
    try:
        r = subprocess.run(
            [sys.executable, "-m", "piping_server", "--help"], env=env(), capture_output=True, timeout=20
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return r.returncode == 0


def start_server_process(kind: str) -> tuple[subprocess.Popen[bytes], str]:
    """A server process of one's own ("ours" or "reference"), for a test that stops it; and its base URL."""
    port = free_port()
    if kind == "reference":
        if not REF_BIN.exists():
            pytest.skip(f"reference piping-server not installed at {REF_BIN} (set PIPING_REF_DIR)")
        cmd = [str(REF_BIN), "--host", "127.0.0.1", "--http-port", str(port)]
    else:
        if not _ours_available():
            pytest.skip("`python -m piping_server` is not runnable yet")
        cmd = [sys.executable, "-m", "piping_server", "--host", "127.0.0.1", "--http-port", str(port)]
    proc = subprocess.Popen(cmd, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_port(port, proc)
    except BaseException:
        proc.kill()
        proc.wait(5)
        raise
    return proc, f"http://127.0.0.1:{port}"


@contextlib.contextmanager
def running_server(kind: str) -> Iterator[str]:
    """A server process of one's own for the ``with`` block (see start_server_process); its base URL."""
    proc, url = start_server_process(kind)
    try:
        yield url
    finally:
        stop_process(proc)


@pytest.fixture(scope="session", params=["ours", "reference"])
def server(request: pytest.FixtureRequest) -> Iterator[str]:
    """Base URL of a running Piping server (each test runs against ours and the reference)."""
    with running_server(request.param) as url:
        yield url


@pytest.fixture
def path() -> str:
    """A fresh path for one transfer."""
    return "/t-" + uuid.uuid4().hex[:12]


def piping_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "piping_server.cli", *args]


def run_piping(*args: str, timeout: float = 60, **kw: object) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(piping_cmd(*args), env=env(), capture_output=True, timeout=timeout, **kw)  # type: ignore[call-overload,no-any-return]


def start_piping(*args: str, **kw: object) -> subprocess.Popen[bytes]:
    return subprocess.Popen(  # type: ignore[call-overload,no-any-return]
        piping_cmd(*args), env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kw
    )


def needs(binary: str) -> str:
    found = shutil.which(binary)
    if found is None:
        pytest.skip(f"{binary} is not installed")
    return found
