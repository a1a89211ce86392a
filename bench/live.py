"""One live sender to 10 light receivers, against ``?n=10`` on the same server (docs/protocol.md section 11).

A live transfer must cost no more per byte than the ordinary fan-out: ``python bench/live.py`` starts
our server, and for each mode (interleaved, ``--runs`` times) lets 10 light receivers (``clients.py
recv``) wait on a path (``?live`` or ``?n=10``), then streams ``--size`` bytes to them with a light
chunked sender. It prints the medians: MB/s per receiver and server CPU seconds per GiB delivered
(the sum over receivers). The light clients are those of bench/run.py, so that the server is what limits.
"""

from __future__ import annotations

import argparse
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
    common = ["--port", str(port), "--path", path, "--size", str(size), "--timeout", "30",
              "--deadline", str(deadline_s)]
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
    port = free_port()
    server = spawn([sys.executable, "-m", "piping_server", "--host", "127.0.0.1", "--http-port", str(port)])
    try:
        wait_listening(port, server)
        found: dict[str, list[dict[str, Any]]] = {"live": [], "n10": []}
        for run in range(args.runs):
            for mode in ("live", "n10") if run % 2 == 0 else ("n10", "live"):
                result = one_run(port, server.pid, mode, args.size)
                print(f"run {run + 1} {mode}: {result}", file=sys.stderr, flush=True)
                if result["ok"]:
                    found[mode].append(result)
    finally:
        stop(server)
    print(f"{'mode':<8} {'MB/s per receiver':>18} {'server CPU-s per GiB delivered':>32}")
    for mode, label in (("live", "?live"), ("n10", f"?n={RECEIVERS}")):
        rows = found[mode]
        if not rows:
            print(f"{label:<8} {'failed':>18}")
            continue
        speed = statistics.median(r["mb_s_per_receiver"] for r in rows)
        cpu = statistics.median(r["cpu_per_gib"] for r in rows)
        print(f"{label:<8} {speed:>18.0f} {cpu:>32.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
