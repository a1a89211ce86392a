"""The benchmark's smoke mode runs end to end: every scenario's clients and servers work.

``bench/run.py --quick`` (ours only: the reference's columns are what the full bench is for) must
finish with every run successful, since a bench that breaks silently measures nothing.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_bench_quick_runs_every_scenario(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(REPO / "bench" / "run.py"), "--quick", "--no-ref", "--results", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=240,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "some runs failed" not in proc.stdout, proc.stderr[-3000:]
    table = proc.stdout
    measured = {}  # row label -> our column's value
    for line in table.splitlines():
        label, sep, rest = line.partition("] ")
        if sep and rest.split():
            measured[label.strip() + "]"] = rest.split()[0]
    for label in (
        "throughput / ceiling [%]",
        "h2 over TLS: throughput [MB/s]",
        "h2c (ref column: our HTTP/1 plain): throughput [MB/s]",
        "aggregate throughput [MB/s]",
        "time to first byte p99 [ms]",
        "transfers per second [1/s]",
        "piping send -> get (ref column: curl -> curl) [MB/s]",
        "piping --pass (ref column: piping) [MB/s]",
    ):
        assert measured.get(label, "n/a") != "n/a", f"{label} not measured:\n{table}"
    if "(no sshd)" not in table:  # scp through the tunnels needs an sshd it can start
        assert measured.get("piping tunnel (ref column: curl + socat one-liners) [MB/s]", "n/a") != "n/a", table
    for section in ("(2) 32 MiB Content-Length, n=3", "(8) 32 MiB HTTP/1.1 over TLS", "(9) 10 streams of 4 MiB"):
        assert section in table, table
    assert list(tmp_path.glob("bench-*.json")), "raw results are written"
