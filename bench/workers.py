"""``--workers``: what more processes give, and what the hand-over costs (issues 11 and 22).

    python bench/workers.py                  # 16 streams of 128 MiB, 4,000 small transfers, 3 runs
    python bench/workers.py --quick          # 16 x 8 MiB, 1,000 small transfers, 1 run
    python bench/workers.py --base-src /tmp/wbase/src --peers rust   # + another tree's --workers 2, + Rust

Two measurements, each on a fresh server per run, targets interleaved run by run, medians shown:

* **parallel streams** (bench/run.py's line 13): 16 one-to-one Content-Length streams at once
  from two ``multi`` client processes: aggregate MB/s (all bytes / first sender's first byte to
  the last receiver's last byte) and server CPU-s per GiB (the supervisor and every worker), for
  ``--workers 2``, ``--workers 1``, the reference and the peers (``--peers``: the Go and Rust
  Piping Servers of bench/run.py).
* **1 KiB transfers** (bench/run.py's line 4: a new connection per request, sender and receiver
  on separate connections, 50 pairs at a time from two client processes): transfers/s, p99
  latency and server CPU per transfer (user and system time apart), ``--workers 2`` against 1 and
  the peers. With two workers, a connection lands on the wrong worker half of the time and is
  handed over.

``--base-src DIR`` adds ``--workers 2`` run from another source tree (its
``src/``), as bench/run.py does: the before and after of a change, in the same interleaved run.

``--floor`` adds bench/floor.py to the small transfers: one process (``f1``), two with the same
hand-over as ours (``f2``: a connection is peeked at and sent to its path's owner) and two whose
door accepts on the raw listener (``f2a``): what moving a connection costs on this stack at the least;
``f2o``: two where a path belongs to the process that took its first connection (only a second
connection may move).

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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import contextlib

import run as bench  # noqa: E402  (bench/run.py: the light clients, process handling, the reference)

HOST = bench.HOST


@dataclass
class Targets:
    """Where each target's server comes from."""

    ref_bin: Path | None = None
    base_src: Path | None = None  # --base-src: "b1", "b2" run from this tree
    peers: dict[str, Path] = field(default_factory=dict)  # "go", "rust"


def start(target: str, where: Targets) -> bench.Server:
    """A fresh server: ``w1``/``w2`` (ours with --workers 1/2), ``b1``/``b2`` (the same from --base-src),
    ``ref`` or a peer."""
    port = bench.free_port()
    env = None
    if target.startswith("f"):  # bench/floor.py: f1, f2 (--workers 2), f2a (--workers 2 --door accept)
        cmd = [sys.executable, str(Path(__file__).with_name("floor.py")), "--host", HOST, "--http-port", str(port)]
        cmd += ["--workers", target[1], "--door", "accept" if target.endswith("a") else "transport"]
        cmd += ["--owner", "first" if target.endswith("o") else "hash"]
    elif target == "ref" or target in where.peers:
        executable = where.ref_bin if target == "ref" else where.peers[target]
        assert executable is not None
        cmd = [str(executable), "--host", HOST, "--http-port", str(port)]
    else:
        cmd = [sys.executable, "-m", "piping_server", "--host", HOST, "--http-port", str(port), "--workers", target[1:]]
        if target.startswith("b"):
            assert where.base_src is not None
            env = bench.base_env(where.base_src)
    proc = bench.spawn(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    bench.wait_listening(port, proc)
    time.sleep(0.5)  # every worker up, not only the first
    return bench.Server(target, proc, port)


def done_args(target: str, where: Targets) -> list[str]:
    """The peers end a sender's answer with another line (bench/clients.py DONE_LINE)."""
    return ["--done-line", "[INFO] Sent successfully!"] if target in where.peers else []


def family_cpu(pid: int) -> tuple[float, float]:
    """User and system CPU-s of ``pid`` and its live children (the workers)."""
    user = system = 0.0
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        children = []
    for one in (pid, *(int(child) for child in children)):
        with contextlib.suppress(OSError), open(f"/proc/{one}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
            # utime, stime, cutime, cstime: fields 14 to 17 (fields[0] is field 3)
            user += (int(fields[11]) + int(fields[13])) / bench.CLK_TCK
            system += (int(fields[12]) + int(fields[14])) / bench.CLK_TCK
    return user, system


def parallel_streams(target: str, where: Targets, streams: int, size: int) -> dict[str, Any]:
    """bench/run.py's line 13 (``run_many``), with the CPU of every process of the server."""
    total = streams * size
    deadline_s = 60.0 + total / (20 * bench.MB)
    deadline = time.monotonic() + deadline_s
    server = start(target, where)
    clients: list[subprocess.Popen[str]] = []
    try:
        tag = uuid.uuid4().hex[:8]
        for i in range(2):
            share = streams // 2 + (1 if i < streams % 2 else 0)
            args = ["multi", "--port", str(server.port), "--path", f"/par-{tag}-{i}", "--streams", str(share)]
            args += ["--size", str(size), "--timeout", "30", "--deadline", str(deadline_s), "--announce"]
            clients.append(bench.client(args + done_args(target, where), stdin=subprocess.PIPE))
        for c in clients:
            bench.wait_line(c, "connected", 30)
        time.sleep(0.05)
        cpu0 = family_cpu(server.pid)
        for c in clients:  # every receiver waits: go
            assert c.stdin is not None
            c.stdin.write("go\n")
            c.stdin.flush()
        results = [bench.collect(c, deadline) for c in clients]
        cpu1 = family_cpu(server.pid)
    finally:
        for c in clients:
            bench.stop(c)
        server.stop()
    bad = [r for r in results if not r.get("ok")]
    if bad:
        return {"ok": False, "error": "; ".join(str(r.get("error")) for r in bad)}
    seconds = max(r["t_end"] for r in results) - min(r["t_start"] for r in results)
    return {
        "ok": True,
        "mb_s": total / seconds / bench.MB,
        "cpu_per_gib": (sum(cpu1) - sum(cpu0)) / (total / bench.GiB),
        "client_cpu_per_gib": sum(r["client_cpu_s"] for r in results) / (total / bench.GiB),
    }


def small_transfers(target: str, where: Targets, count: int) -> dict[str, Any]:
    """bench/run.py's line 4, with the CPU of every process of the server, user and system apart."""
    server = start(target, where)
    deadline_s = 120.0 + count / 50
    deadline = time.monotonic() + deadline_s
    clients: list[subprocess.Popen[str]] = []
    try:
        cpu0 = family_cpu(server.pid)
        tag = uuid.uuid4().hex[:8]
        for i in range(2):
            args = ["small", "--port", str(server.port), "--size", "1024", "--count", str(count // 2)]
            args += ["--concurrency", "25", "--prefix", f"s{tag}-{i}", "--timeout", "30", "--deadline", str(deadline_s)]
            clients.append(bench.client(args + done_args(target, where)))
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
    if not latencies:
        return {"ok": False, "error": "no transfer succeeded"}
    seconds = max(r["t_end"] for r in results) - min(r["t_start"] for r in results)
    per_ms = 1000 / len(latencies)
    return {
        "ok": True,  # (failures are counted and shown beside the figures)
        "tps": len(latencies) / seconds,
        "cpu_ms": (sum(cpu1) - sum(cpu0)) * per_ms,
        "user_ms": (cpu1[0] - cpu0[0]) * per_ms,
        "sys_ms": (cpu1[1] - cpu0[1]) * per_ms,
        "client_ms": sum(r["client_cpu_s"] for r in results) * per_ms,
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


def ratio(runs: list[dict[str, Any]], against: list[dict[str, Any]], key: str) -> str:
    ours = [r[key] for r in runs if r.get("ok")]
    theirs = [r[key] for r in against if r.get("ok")]
    if not ours or not theirs:
        return "n/a"
    return f"{statistics.median(ours) / statistics.median(theirs):.2f}x"


def failures(results: list[dict[str, Any]]) -> str:
    errors = [str(r.get("error")) for r in results if not r.get("ok")]
    return f"  ({len(errors)} failed: {errors[0][:80]})" if errors else ""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="16 x 8 MiB, 1,000 small transfers, 1 run")
    parser.add_argument("--runs", type=int, default=None)
    parser.add_argument("--streams", type=int, default=16, help="parallel streams (default 16)")
    parser.add_argument("--stream-mib", type=int, default=None, help="MiB per stream (default 128)")
    parser.add_argument("--small-count", type=int, default=None, help="1 KiB transfers per run (default 4000)")
    parser.add_argument("--only", default="streams,small", help="what to run: streams, small or both")
    parser.add_argument("--base-src", type=Path, help="also --workers 2 from this tree's src/ (b2)")
    parser.add_argument("--peers", default="none", help="the other Piping Servers beside ours: none, all, go,rust")
    parser.add_argument("--peers-dir", type=Path, default=bench.PEERS_DIR)
    parser.add_argument("--no-ref", action="store_true", help="no reference column")
    parser.add_argument("--ref-dir", default=str(bench.REPO / "bench" / ".ref"), help="where the reference is")
    parser.add_argument("--ref-bin", default=None)
    parser.add_argument("--floor", action="store_true", help="bench/floor.py beside ours (f1, f2, f2a)")
    args = parser.parse_args()
    runs = args.runs or (1 if args.quick else 3)
    size = (args.stream_mib or (8 if args.quick else 128)) * bench.MiB
    count = args.small_count or (1000 if args.quick else 4000)
    only = {x.strip() for x in args.only.split(",")}
    where = Targets(
        ref_bin=None if args.no_ref else bench.ensure_reference(args),
        base_src=args.base_src,
        peers=bench.find_peers(args.peers, args.peers_dir),
    )
    if where.base_src is not None:
        bench.log(f"base: our server from {bench.check_base_src(where.base_src)}")
    ours = ["w2", "w1", *(["b2"] if where.base_src else [])]
    peers = list(where.peers)
    streams: dict[str, list[dict[str, Any]]] = {t: [] for t in ours + (["ref"] if where.ref_bin else []) + peers}
    floors = ["f2", "f1", "f2a", "f2o"] if args.floor else []
    small: dict[str, list[dict[str, Any]]] = {t: [] for t in ours + peers + floors}
    for i in range(runs):
        if "streams" in only:
            for target in bench.interleaved(list(streams), i):
                bench.log(f"run {i + 1}: {args.streams} streams, {target}")
                streams[target].append(guarded(parallel_streams, target, where, args.streams, size))
        if "small" in only:
            for target in bench.interleaved(list(small), i):
                bench.log(f"run {i + 1}: {count} small transfers, {target}")
                small[target].append(guarded(small_transfers, target, where, count))
    names = {
        "w2": "ours --workers 2",
        "w1": "ours --workers 1",
        "b2": "base --workers 2",
        "b1": "base --workers 1",
        "ref": "reference",
        "go": "Go",
        "rust": "Rust",
        "f2": "floor, 2 processes",
        "f1": "floor, 1 process",
        "f2a": "floor, 2, raw accept",
        "f2o": "floor, 2, first owns",
    }
    against = [t for t in ("rust", "go", "w1") if t in streams]
    if "streams" in only:
        print(f"{args.streams} parallel streams of {size // bench.MiB} MiB (two multi clients), median of {runs}:")
        for target, results in streams.items():
            ratios = "".join(f"  {ratio(results, streams[t], 'mb_s')} of {t}" for t in against if t != target)
            print(
                f"  {names[target]:<18} {median(results, 'mb_s'):>8} MB/s  {median(results, 'cpu_per_gib', 2):>6} "
                f"server CPU-s/GiB  (clients {median(results, 'client_cpu_per_gib', 2)}){ratios}" + failures(results)
            )
    if "small" in only:
        print(f"1 KiB transfers ({count}, 50 pairs at a time, new connection each), median of {runs}:")
        for target, results in small.items():
            print(
                f"  {names[target]:<18} {median(results, 'tps'):>8} transfers/s  p99 {median(results, 'p99_ms')} ms  "
                f"server CPU {median(results, 'cpu_ms', 3)} ms per transfer (user {median(results, 'user_ms', 3)}, "
                f"system {median(results, 'sys_ms', 3)}; clients {median(results, 'client_ms', 3)})"
                f"  {ratio(results, small['w1'], 'cpu_ms')} of w1's CPU"
                + (f", {ratio(results, small['f1'], 'cpu_ms')} of f1's" if target.startswith("f") else "")
                + failures(results)
                + (
                    f"  ({sum(r.get('failed', 0) for r in results)} transfers failed)"
                    if any(r.get("failed") for r in results)
                    else ""
                )
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
