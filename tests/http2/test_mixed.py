"""Senders and receivers on different transports: every pair of h1, h2c, h1-tls and h2 carries a transfer."""

from __future__ import annotations

import hashlib
import os
import subprocess
import time
from pathlib import Path

import pytest

from ..helpers import WAIT_S, ServerProcess, unique_path

TRANSPORTS = ["h1", "h2c", "h1-tls", "h2"]
ALL_OK = "[INFO] All receiver(s) was/were received successfully.\n"

pytestmark = pytest.mark.ours


@pytest.mark.parametrize("receiving", TRANSPORTS)
@pytest.mark.parametrize("sending", TRANSPORTS)
def test_mixed_transports(server: ServerProcess | None, sending: str, receiving: str, tmp_path: Path) -> None:
    if server is None:
        pytest.skip("needs our own server")
    path = unique_path(f"{sending}-{receiving}") + "?n=2"
    payload = os.urandom(3 * 1024 * 1024 + 7)
    src = tmp_path / "payload"
    src.write_bytes(payload)
    sender, receiver = server.target(sending), server.target(receiving)
    receivers = [receiver.popen_curl(receiver.url(path)), server.target("h2").popen_curl(server.target("h2").url(path))]
    time.sleep(0.3)
    sent = subprocess.run(sender.curl("-T", str(src), sender.url(path)), capture_output=True, timeout=60)
    assert sent.returncode == 0, sent.stderr
    for recv in receivers:
        out, err = recv.communicate(timeout=WAIT_S)
        assert recv.returncode == 0, err
        assert hashlib.sha256(out).digest() == hashlib.sha256(payload).digest()
    assert sent.stdout.decode().endswith(ALL_OK)
