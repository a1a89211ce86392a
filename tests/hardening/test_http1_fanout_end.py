"""``?n=3`` over the tee(2) path: a receiver that took everything is never reported as aborted.

The fan-out relay ends once the slowest receiver has the last round; a receiver of a response with
a length may take its last byte and close before that. That close is a finish, not an abort: the
sender must end with every receiver successful and no "[INFO] A receiver aborted." (which made
``piping send --n 3`` exit 5 now and then). One receiver reads slowly (a raw socket with a small
buffer), so that the relay still waits on it when the two curl receivers have their last byte.
"""

from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import threading
import time
from pathlib import Path

from ..helpers import WAIT_S, ServerProcess, unique_path

RUNS = 40
SIZE = 4 * 1024 * 1024
RECEIVERS = 3
#: The slow receiver: its socket buffer, and its pause between reads of that much (about 10 MB/s).
SLOW_BUFFER = 64 * 1024
SLOW_PAUSE_S = 0.006


def _slow_receiver(port: int, target: str, got: list[bytes]) -> None:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SLOW_BUFFER)
    sock.settimeout(WAIT_S)
    received = bytearray()
    with sock:
        sock.connect(("127.0.0.1", port))
        sock.sendall(f"GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        deadline = time.monotonic() + WAIT_S * 2
        while time.monotonic() < deadline:
            data = sock.recv(SLOW_BUFFER)
            if not data:
                break
            received += data
            time.sleep(SLOW_PAUSE_S)
    got.append(bytes(received))


def test_receivers_that_finish_first_are_not_reported_aborted(server: ServerProcess, tmp_path: Path) -> None:
    port = server.http_port
    source = tmp_path / "source"
    source.write_bytes(os.urandom(SIZE))
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    bad: list[str] = []
    for run in range(RUNS):
        url = f"http://127.0.0.1:{port}{unique_path('fan')}?n={RECEIVERS}"
        outputs = [tmp_path / f"out-{run}-{i}" for i in range(RECEIVERS - 1)]
        receivers = [subprocess.Popen(["curl", "-sS", "-o", str(out), url], stderr=subprocess.PIPE) for out in outputs]
        slow_got: list[bytes] = []
        slow = threading.Thread(target=_slow_receiver, args=(port, url[url.index("/", 8) :], slow_got), daemon=True)
        slow.start()
        time.sleep(0.15)  # the receivers wait: the upload starts on the tee path at once
        # curl -T with a file: a Content-Length upload, so the receivers' responses have a length too
        sender = subprocess.run(["curl", "-sS", "-T", str(source), url], capture_output=True, timeout=WAIT_S * 2)
        for proc, out in zip(receivers, outputs, strict=True):
            try:
                proc.wait(WAIT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(WAIT_S)
            if proc.returncode != 0 or hashlib.sha256(out.read_bytes()).hexdigest() != digest:
                bad.append(f"run {run}: receiver curl exit {proc.returncode}, {out.stat().st_size} bytes")
            out.unlink()
        slow.join(WAIT_S * 2)
        if not slow_got or hashlib.sha256(slow_got[0].partition(b"\r\n\r\n")[2]).hexdigest() != digest:
            bad.append(f"run {run}: the slow receiver got {len(slow_got[0]) if slow_got else 0} bytes (head included)")
        lines = sender.stdout.decode(errors="replace")
        if "A receiver aborted" in lines or "received successfully" not in lines:
            bad.append(f"run {run}: the sender got {lines!r}")
    assert not bad, "\n".join(bad)
