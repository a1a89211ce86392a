"""Line (11)'s client, before/after: two source trees of the ``piping`` client, interleaved, with curl.

Each kind sends one file of random bytes through a fresh server and receives it into ``clients.py
count`` (first to last byte, as run.py's line 11 times it):

* ``base``, ``ours``: ``piping send -q URL FILE`` -> ``piping get -q URL``, from ``--base-src`` and
  from this tree (``--ours-src`` picks another); ``base-pass``, ``ours-pass``: the same with ``--pass``;
  ``base-stdin``, ``ours-stdin``: ``cat FILE | piping send -q URL`` (chunked upload);
* ``curl``: ``curl -T FILE URL`` -> ``curl URL``; ``curl-stdin``: ``cat FILE | curl -T - URL``.

The server runs from ``--server-src`` (default: this tree), the same for every kind. The order of
the kinds flips every run; medians of MB/s (10^6 bytes).

    git archive HEAD~3 src | tar -x -C /tmp/piping-base
    python bench/client_ab.py --base-src /tmp/piping-base/src --runs 3 --size-mib 256
    python bench/client_ab.py --base-src /tmp/piping-base/src --kinds base-pass,ours-pass --runs 5
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run as bench  # noqa: E402  (bench/run.py: its process helpers)

PASSPHRASE = "bench-passphrase"
KINDS = ["base", "ours", "curl", "base-pass", "ours-pass"]


def _commands(kind: str, args: argparse.Namespace, data: Path, url: str) -> tuple[str, str]:
    """The sending and the receiving shell commands of one kind."""
    if kind.startswith("curl"):
        upload = f"cat {data} | curl -sS -T - {url}" if kind.endswith("-stdin") else f"curl -sS -T {data} {url}"
        return f"{upload} -o /dev/null", f"curl -sS {url}"
    tree = args.base_src if kind.startswith("base") else args.ours_src
    piping = f"env PYTHONPATH={tree} {sys.executable} -m piping_server.cli"
    secret = f" --pass {PASSPHRASE}" if kind.endswith("-pass") else ""
    if kind.endswith("-stdin"):
        return f"cat {data} | {piping} send -q {url}", f"{piping} get -q {url}"
    return f"{piping} send -q{secret} {url} {data}", f"{piping} get -q{secret} {url}"


def one(kind: str, args: argparse.Namespace, data: Path, workdir: Path) -> float | None:
    """MB/s of one transfer of ``kind`` through a fresh server; None (and a line on stderr) if it failed."""
    size = data.stat().st_size
    port = bench.free_port()
    env = {**os.environ, "PYTHONPATH": str(args.server_src)}
    with open(workdir / f"server-{port}.log", "wb") as log:
        server = bench.spawn(
            [sys.executable, "-m", "piping_server", "--host", bench.HOST, "--http-port", str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )
    procs = [server]
    try:
        bench.wait_listening(port, server)
        url = f"http://{bench.HOST}:{port}/ab-{uuid.uuid4().hex[:8]}"
        send, recv = _commands(kind, args, data, url)
        counter = f"{sys.executable} {bench.CLIENTS} count --size {size} --deadline {args.deadline}"
        pipeline = ["bash", "-o", "pipefail", "-c", f"{recv} | {counter}"]
        receiver = bench.spawn(pipeline, stdout=subprocess.PIPE, text=True)
        procs.append(receiver)
        time.sleep(0.3)
        sender = bench.spawn(["bash", "-o", "pipefail", "-c", send], stdout=subprocess.DEVNULL)
        procs.append(sender)
        out, _ = receiver.communicate(timeout=args.deadline + 5)
        sender.wait(30)
    except (subprocess.TimeoutExpired, RuntimeError) as exc:
        print(f"{kind}: {exc}", file=sys.stderr)
        return None
    finally:
        for proc in reversed(procs):
            bench.stop(proc)
    lines = [line for line in out.splitlines() if line.startswith("{")]
    res: dict[str, Any] = json.loads(lines[-1]) if lines else {"ok": False, "error": "the counter printed nothing"}
    if not res.get("ok") or sender.returncode != 0:
        print(f"{kind}: {res.get('error')}, sender exit {sender.returncode}", file=sys.stderr)
        return None
    return float(size / (res["t_end"] - res["t_first"]) / bench.MB)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base-src", type=Path, help="the source tree (its src/) of the client to compare with")
    parser.add_argument("--ours-src", type=Path, default=bench.REPO / "src", help="our client's tree (default: this)")
    parser.add_argument("--server-src", type=Path, default=bench.REPO / "src", help="the server's tree (default: this)")
    parser.add_argument("--kinds", default=",".join(KINDS), help=f"comma-separated (default {','.join(KINDS)})")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--size-mib", type=int, default=256, help="MiB per transfer (at most 512)")
    parser.add_argument("--deadline", type=float, default=120.0, help="seconds per transfer at most")
    args = parser.parse_args()
    kinds = [k for k in args.kinds.split(",") if k]
    if any(k.startswith("base") for k in kinds) and args.base_src is None:
        parser.error("the base kinds need --base-src")
    size = min(args.size_mib, 512) * bench.MiB
    with tempfile.TemporaryDirectory(prefix="piping-client-ab-") as tmp:
        workdir = Path(tmp)
        data = workdir / "random.bin"
        with open(data, "wb") as f:
            for _ in range(size // bench.MiB):
                f.write(os.urandom(bench.MiB))
        results: dict[str, list[float]] = {k: [] for k in kinds}
        for run in range(args.runs):
            for kind in kinds if run % 2 == 0 else kinds[::-1]:
                mbs = one(kind, args, data, workdir)
                bench.log(f"run {run + 1}/{args.runs} {kind}: {'failed' if mbs is None else f'{mbs:.0f} MB/s'}")
                if mbs is not None:
                    results[kind].append(mbs)
    print(f"{size // bench.MiB} MiB, medians of {args.runs} interleaved runs, MB/s:")
    for kind, values in results.items():
        print(f"  {kind:12s} {statistics.median(values):8.0f}" if values else f"  {kind:12s}   failed")


if __name__ == "__main__":
    main()
