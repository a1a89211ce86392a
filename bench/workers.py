"""``--workers``: what more processes give, and what the hand-over costs (issue 11).

    python bench/workers.py                  # 8 streams of 256 MiB, 3,000 small transfers, 3 runs
    python bench/workers.py --quick          # 8 x 32 MiB, 1,000 small transfers, 1 run

Two measurements, each on a fresh server per run, targets interleaved run by run, medians shown:

* **8 parallel streams**: 8 light senders (chunked) to 8 light receivers on 8 paths at once
  (``clients.py`` of bench/run.py): aggregate MB/s (all bytes / first sender's first byte to the
  last receiver's last byte) and server CPU-s per GiB (the supervisor and every worker), for
  ``--workers 2``, ``--workers 1`` and the reference.
* **1 KiB transfers**: bench/run.py's scenario 4 (a new connection per request, sender and
  receiver on separate connections): transfers/s and p99 latency, ``--workers 2`` against 1. With
  two workers, a request lands on the wrong worker half of the time and is handed over.

On a 2-core machine the light clients share the cores with the server: more workers can only
show what the cores left over allow.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import contextlib

import run as bench  # noqa: E402  (bench/run.py: the light clients, process handling, the reference)

HOST = bench.HOST


def start(target: str, ref_bin: Path | None) -> bench.Server:
    """A fresh server: ``w1``/``w2`` (ours with --workers 1/2) or ``ref``."""
    port = bench.free_port()
    if target == "ref":
        assert ref_bin is not None
        cmd = [str(ref_bin), "--host", HOST, "--http-port", str(port)]
    else:
        cmd = [sys.executable, "-m", "piping_server", "--host", HOST, "--http-port", str(port), "--workers", target[1:]]
    proc = bench.spawn(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    bench.wait_listening(port, proc)
    time.sleep(0.5)  # every worker up, not only the first
    return bench.Server(target, proc, port)


def family_cpu(pid: int) -> float:
    """CPU-s of ``pid`` and its live children (the workers)."""
    total = bench.proc_cpu(pid)
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        children = []
    for child in children:
        with contextlib.suppress(OSError):
            total += bench.proc_cpu(int(child))
    return total


def parallel_streams(target: str, ref_bin: Path | None, streams: int, size: int) -> dict[str, Any]:
    server = start(target, ref_bin)
    deadline_s = bench.stream_deadline(size * streams)
    deadline = time.monotonic() + deadline_s
    common = ["--size", str(size), "--timeout", "30", "--deadline", str(deadline_s)]
    receivers: list[subprocess.Popen[str]] = []
    senders: list[subprocess.Popen[str]] = []
    try:
        paths = [f"/par-{uuid.uuid4().hex[:8]}" for _ in range(streams)]
        for path in paths:
            receivers.append(bench.client(["recv", "--port", str(server.port), "--path", path, "--announce", *common]))
        for proc in receivers:
            bench.wait_line(proc, "connected", 15)
        time.sleep(0.1)
        cpu0 = family_cpu(server.pid)
        for path in paths:
            senders.append(
                bench.client(["send", "--port", str(server.port), "--path", path, "--mode", "chunked", *common])
            )
        got = [bench.collect(p, deadline) for p in receivers]
        sent = [bench.collect(p, deadline) for p in senders]
        cpu1 = family_cpu(server.pid)
    finally:
        for proc in receivers + senders:
            bench.stop(proc)
        server.stop()
    bad = [r for r in got + sent if not r.get("ok")]
    if bad:
        return {"ok": False, "error": str(bad[0].get("error") or bad[0])}
    seconds = max(r["t_end"] for r in got) - min(r["t_start"] for r in sent)
    total = size * streams
    return {"ok": True, "mb_s": total / seconds / bench.MB, "cpu_per_gib": (cpu1 - cpu0) / (total / bench.GiB)}


def small_transfers(target: str, count: int) -> dict[str, Any]:
    server = start(target, None)
    deadline_s = 120.0 + count / 50
    deadline = time.monotonic() + deadline_s
    clients: list[subprocess.Popen[str]] = []
    try:
        cpu0 = family_cpu(server.pid)
        tag = uuid.uuid4().hex[:8]
        for i in range(2):
            clients.append(
                bench.client(
                    [
                        "small",
                        "--port",
                        str(server.port),
                        "--size",
                        "1024",
                        "--count",
                        str(count // 2),
                        "--concurrency",
                        "25",
                        "--prefix",
                        f"s{tag}-{i}",
                        "--timeout",
                        "30",
                        "--deadline",
                        str(deadline_s),
                    ]
                )
            )
        results = [bench.collect(c, deadline) for c in clients]
        cpu1 = family_cpu(server.pid)
    finally:
        for c in clients:
            bench.stop(c)
        server.stop()
    if any("latencies" not in r for r in results):
        return {"ok": False, "error": str(results)}
    latencies = sorted(x for r in results for x in r["latencies"])
    failed = sum(r["failed"] for r in results)
    seconds = max(r["t_end"] for r in results) - min(r["t_start"] for r in results)
    return {
        "ok": failed == 0,
        "tps": len(latencies) / seconds,
        "cpu_ms": (cpu1 - cpu0) / len(latencies) * 1000,
        "p99_ms": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000,
        "failed": failed,
    }


def guarded(run: Any, *args: Any) -> dict[str, Any]:
    """One measurement; a server that fails to start (say) costs that run only."""
    try:
        result: dict[str, Any] = run(*args)
    except RuntimeError as exc:
        bench.log(f"run failed: {exc}")
        return {"ok": False, "error": str(exc)}
    return result


def median(runs: list[dict[str, Any]], key: str, digits: int = 1) -> str:
    values = [r[key] for r in runs if r.get("ok")]
    return f"{statistics.median(values):.{digits}f}" if values else "n/a"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="8 x 32 MiB, 1,000 small transfers, 1 run")
    parser.add_argument("--runs", type=int, default=None)
    parser.add_argument("--stream-mib", type=int, default=None, help="MiB per stream (default 256)")
    parser.add_argument("--small-count", type=int, default=None, help="1 KiB transfers per run (default 3000)")
    parser.add_argument("--ref-dir", default=str(bench.REPO / ".ref"), help="where the reference is installed")
    parser.add_argument("--ref-bin", default=None)
    args = parser.parse_args()
    runs = args.runs or (1 if args.quick else 3)
    size = (args.stream_mib or (32 if args.quick else 256)) * bench.MiB
    count = args.small_count or (1000 if args.quick else 3000)
    ref_bin = bench.ensure_reference(args)
    streams: dict[str, list[dict[str, Any]]] = {"w2": [], "w1": [], "ref": []}
    small: dict[str, list[dict[str, Any]]] = {"w2": [], "w1": []}
    for i in range(runs):
        order = [t for t in streams if t != "ref" or ref_bin is not None]
        for target in order if i % 2 == 0 else order[::-1]:
            bench.log(f"run {i + 1}: 8 streams, {target}")
            streams[target].append(guarded(parallel_streams, target, ref_bin, 8, size))
        for target in ("w2", "w1") if i % 2 == 0 else ("w1", "w2"):
            bench.log(f"run {i + 1}: {count} small transfers, {target}")
            small[target].append(guarded(small_transfers, target, count))
    names = {"w2": "ours --workers 2", "w1": "ours --workers 1", "ref": "reference"}
    print(f"8 parallel streams of {size // bench.MiB} MiB (light clients), median of {runs}:")
    for target, results in streams.items():
        errors = [r["error"] for r in results if not r.get("ok")]
        print(
            f"  {names[target]:<18} {median(results, 'mb_s'):>8} MB/s  {median(results, 'cpu_per_gib'):>6} "
            f"server CPU-s/GiB" + (f"  ({len(errors)} failed: {errors[0][:80]})" if errors else "")
        )
    print(f"1 KiB transfers ({count}, 50 pairs at a time, new connection each), median of {runs}:")
    for target, results in small.items():
        print(
            f"  {names[target]:<18} {median(results, 'tps'):>8} transfers/s  p99 {median(results, 'p99_ms')} ms  "
            f"server CPU {median(results, 'cpu_ms', 3)} ms per transfer"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
