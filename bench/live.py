"""One live sender to 10 light receivers, against ``?n=10`` on the same server (docs/protocol.md section 11).

A live transfer must cost no more per byte than the ordinary fan-out: ``python bench/live.py`` starts
our server, and for each mode (interleaved, ``--runs`` times) lets 10 light receivers (``clients.py
recv``) wait on a path (``?live`` or ``?n=10``), then streams ``--size`` bytes to them with a light
chunked sender. It prints the medians: MB/s per receiver and server CPU seconds per GiB delivered
(the sum over receivers). The light clients are those of bench/run.py, so that the server is what limits.

``?n=10`` may move kernel to kernel (the splice path); a live stream never does (its receivers come
and go), so ``?n=10`` is also measured on a second server with splicing off (``PIPING_SPLICE=0``):
the like-for-like line.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from run import MB, GiB, MiB, client, collect, free_port, proc_cpu, spawn, stop, wait_line, wait_listening  # noqa: E402

RECEIVERS = 10


def one_run(port: int, pid: int, mode: str, size: int) -> dict[str, Any]:
    query = "?live" if mode == "live" else f"?n={RECEIVERS}"
    path = f"/bench-{uuid.uuid4().hex[:8]}{query}"
    deadline_s = 60 + size / (20 * MB)
    common = [
        "--port",
        str(port),
        "--path",
        path,
        "--size",
        str(size),
        "--timeout",
        "30",
        "--deadline",
        str(deadline_s),
    ]
    deadline = time.monotonic() + deadline_s
    recvs = [client(["recv", "--announce", *common]) for _ in range(RECEIVERS)]
    try:
        for proc in recvs:
            wait_line(proc, "connected", 15)
        time.sleep(0.1)  # let the server register the receivers' requests
        cpu0 = proc_cpu(pid)
        sender = client(["send", "--mode", "chunked", *common])
        results = [collect(p, deadline) for p in recvs]
        sent = collect(sender, deadline)
        cpu1 = proc_cpu(pid)
    finally:
        for proc in recvs:
            stop(proc)
    if mode == "live" and "[INFO] Live ended:" in sent.get("response_tail", ""):
        sent["ok"] = True  # the light sender looks for the ordinary end line; a live one ends with its summary
    bad = [r.get("error") or r.get("response_tail") or "incomplete" for r in [*results, sent] if not r.get("ok")]
    if bad:
        return {"ok": False, "error": "; ".join(str(b) for b in bad)}
    secs = max(r["t_end"] for r in results) - sent["t_start"]
    return {"ok": True, "mb_s_per_receiver": size / secs / MB, "cpu_per_gib": (cpu1 - cpu0) / (size * RECEIVERS / GiB)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256 * MiB, help="bytes of the stream (default 256 MiB)")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args(argv)
    port, copy_port = free_port(), free_port()
    server = spawn([sys.executable, "-m", "piping_server", "--host", "127.0.0.1", "--http-port", str(port)])
    copying = spawn(
        [sys.executable, "-m", "piping_server", "--host", "127.0.0.1", "--http-port", str(copy_port)],
        env={**os.environ, "PIPING_SPLICE": "0"},
    )
    modes = {"live": (port, server), "n10": (port, server), "n10-copy": (copy_port, copying)}
    try:
        wait_listening(port, server)
        wait_listening(copy_port, copying)
        found: dict[str, list[dict[str, Any]]] = {mode: [] for mode in modes}
        for run in range(args.runs):
            order = list(modes) if run % 2 == 0 else list(reversed(modes))
            for mode in order:
                mode_port, proc = modes[mode]
                result = one_run(mode_port, proc.pid, mode.removesuffix("-copy"), args.size)
                print(f"run {run + 1} {mode}: {result}", file=sys.stderr, flush=True)
                if result["ok"]:
                    found[mode].append(result)
    finally:
        stop(server)
        stop(copying)
    print(f"{'mode':<16} {'MB/s per receiver':>18} {'server CPU-s per GiB delivered':>32}")
    labels = (("live", "?live"), ("n10", f"?n={RECEIVERS}"), ("n10-copy", f"?n={RECEIVERS}, no splice"))
    for mode, label in labels:
        rows = found[mode]
        if not rows:
            print(f"{label:<16} {'failed':>18}")
            continue
        speed = statistics.median(r["mb_s_per_receiver"] for r in rows)
        cpu = statistics.median(r["cpu_per_gib"] for r in rows)
        print(f"{label:<16} {speed:>18.0f} {cpu:>32.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
