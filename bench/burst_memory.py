"""The server's RSS before, at the peak of, and after a burst of waiting senders (issue 19).

    python bench/burst_memory.py                    # 2,000 senders x 64 KiB, held 2 s, then 20 s of samples
    python bench/burst_memory.py --count 4000 --hold-s 15 -- --log-level debug
    python bench/burst_memory.py --server .ref/node_modules/.bin/piping-server   # another server, same burst

Each sender is a connection whose POST carries a 64 KiB body and waits for a receiver that never
comes; then every connection closes at once. The samples show how much of the burst the server
keeps. Loopback only; everything is bounded in count and time.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def wait_for_port(port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on {port}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=2000, help="waiting senders in the burst")
    parser.add_argument("--body-kib", type=int, default=64, help="each sender's body")
    parser.add_argument("--hold-s", type=float, default=2.0, help="how long the burst is held")
    parser.add_argument("--after-s", type=int, default=20, help="seconds of samples after the burst")
    parser.add_argument(
        "--server",
        default=None,
        metavar="PATH",
        help="another server's executable (started with --host 127.0.0.1 --http-port PORT)",
    )
    parser.add_argument("server_args", nargs="*", help="more flags for the server (after --)")
    args = parser.parse_args()
    port = free_port()
    log = tempfile.NamedTemporaryFile(prefix="burst-memory-", suffix=".log", delete=False)  # noqa: SIM115
    program = [args.server] if args.server else [sys.executable, "-m", "piping_server"]
    command = [*program, "--host", "127.0.0.1", "--http-port", str(port), *args.server_args]
    server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    burst: list[socket.socket] = []
    try:
        wait_for_port(port)
        time.sleep(1.0)
        before = rss_mib(server.pid)
        body = os.urandom(args.body_kib * 1024)
        for i in range(args.count):
            sock = socket.create_connection(("127.0.0.1", port), timeout=10)
            burst.append(sock)
            head = f"POST /burst-{i} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n\r\n"
            sock.sendall(head.encode() + body)
        time.sleep(args.hold_s)
        peak = rss_mib(server.pid)
        for sock in burst:
            sock.close()
        burst.clear()
        samples = []
        for _ in range(args.after_s):
            time.sleep(1.0)
            samples.append(round(rss_mib(server.pid), 1))
        print(
            f"{args.count} senders x {args.body_kib} KiB: RSS before {before:.1f} MiB, peak {peak:.1f} MiB, "
            f"after (each second): {samples}"
        )
        print(f"server log: {log.name}")
    finally:
        for sock in burst:
            sock.close()
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()


if __name__ == "__main__":
    main()
