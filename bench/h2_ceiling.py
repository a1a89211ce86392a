"""What the ``h2`` library alone allows for line (10): many 1 KiB transfers over HTTP/2 with TLS.

Three commands:

* ``serve``: a minimal server on the same stack as ours (``h2`` + uvloop + the ``ssl`` module's TLS)
  that answers the line's request pattern with the least work it can: a GET waits for the POST of
  its path and gets its body; the POST's answer is one short line. No relay, no hooks, no timers,
  no logging, no validation beyond what h2 does by itself. It only serves what the bench sends.
* ``compare``: line (10)'s clients (``clients.py h2small``, 2 processes, 2 connections each, 25
  pairs at a time each) against this server, ours and the reference, interleaved run by run
  (the order flips every run); medians of transfers/s and server CPU per transfer. ``--base-src
  DIR`` adds our server run from another source tree (``PYTHONPATH=DIR``), for before/after
  (``--ours-src DIR`` likewise for "ours": two snapshots, whatever the working tree holds); ``--peers
  go,rust`` adds the Go and Rust Piping Servers (bench/run.py's ``--peers``).

* ``streams``: line (7)'s one stream with the light h2 clients (h2c, and h2 over TLS) on two source
  trees of ours, interleaved: the before/after of a change to the HTTP/2 code.

    python bench/h2_ceiling.py compare --runs 3 --count 5000 [--peers go,rust]
    python bench/h2_ceiling.py compare --runs 3 --base-src /tmp/piping-base/src --no-ref
    git archive HEAD~1 src | tar -x -C /tmp/piping-base   # a source tree to compare with
    python bench/h2_ceiling.py streams --runs 5 --size-mib 512 --base-src /tmp/piping-base/src
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import run as bench  # noqa: E402  (bench/run.py: its server, client and summary helpers)

HOST = bench.HOST

# --- the minimal server --------------------------------------------------------------------------------


class _Conn(asyncio.Protocol):
    """One h2 connection of the minimal server."""

    def __init__(self, state: _State) -> None:
        import h2.config
        import h2.connection

        self.state = state
        self.h2 = h2.connection.H2Connection(
            h2.config.H2Configuration(
                client_side=False,
                header_encoding=None,
                validate_outbound_headers=False,
                normalize_outbound_headers=False,
            )
        )
        self.transport: asyncio.Transport | None = None
        self.paths: dict[int, bytes] = {}  # stream id -> path, for the POSTs under way
        self.bodies: dict[int, bytearray] = {}
        self.dirty = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.h2.initiate_connection()
        self.h2.increment_flow_control_window(2**31 - 1 - 65_535)
        self.flush()

    def data_received(self, data: bytes) -> None:
        import h2.events

        conn = self.h2
        try:
            events = conn.receive_data(data)
        except Exception:
            self.flush()
            if self.transport is not None:
                self.transport.close()
            return
        for ev in events:
            if isinstance(ev, h2.events.RequestReceived):
                method = path = b""
                for name, value in ev.headers or ():
                    if name == b":method":
                        method = value
                    elif name == b":path":
                        path = value
                sid = ev.stream_id or 0
                if method == b"POST":
                    self.paths[sid] = path
                    self.bodies[sid] = bytearray()
                else:
                    self.state.receiver(path, self, sid)
            elif isinstance(ev, h2.events.DataReceived):
                sid = ev.stream_id or 0
                body = self.bodies.get(sid)
                if body is not None:
                    body += ev.data or b""
                conn.acknowledge_received_data(ev.flow_controlled_length or 0, sid)
            elif isinstance(ev, h2.events.StreamEnded):
                sid = ev.stream_id or 0
                posted = self.paths.pop(sid, None)
                if posted is not None:
                    self.state.sender(posted, bytes(self.bodies.pop(sid)))
                    conn.send_headers(sid, [(b":status", b"200"), (b"content-type", b"text/plain")])
                    conn.send_data(sid, b"[INFO] All receiver(s) was/were received successfully.\n", end_stream=True)
        self.flush()

    def answer(self, sid: int, body: bytes) -> None:
        self.h2.send_headers(sid, [(b":status", b"200"), (b"content-length", b"%d" % len(body))])
        self.h2.send_data(sid, body, end_stream=True)
        if not self.dirty:
            self.dirty = True
            asyncio.get_running_loop().call_soon(self.flush)

    def flush(self) -> None:
        self.dirty = False
        data = self.h2.data_to_send()
        if data and self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)


class _State:
    """Paths waiting: a GET for its POST's body, or a POST's body for its GET."""

    def __init__(self) -> None:
        self.waiting_get: dict[bytes, tuple[_Conn, int]] = {}
        self.waiting_body: dict[bytes, bytes] = {}

    def receiver(self, path: bytes, conn: _Conn, sid: int) -> None:
        body = self.waiting_body.pop(path, None)
        if body is None:
            self.waiting_get[path] = (conn, sid)
        else:
            conn.answer(sid, body)

    def sender(self, path: bytes, body: bytes) -> None:
        waiting = self.waiting_get.pop(path, None)
        if waiting is None:
            self.waiting_body[path] = body
        else:
            waiting[0].answer(waiting[1], body)


def serve(args: argparse.Namespace) -> None:
    import uvloop

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.set_alpn_protocols(["h2"])
    ctx.load_cert_chain(args.crt, args.key)
    state = _State()

    async def main() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(lambda: _Conn(state), HOST, args.port, ssl=ctx)
        async with server:
            await server.serve_forever()

    uvloop.run(main())


# --- the comparison ------------------------------------------------------------------------------------


def _start(name: str, cmd: list[str], port: int, env: dict[str, str] | None, workdir: Path) -> bench.Server:
    logf = open(workdir / f"{name}-{port}.log", "wb")  # noqa: SIM115 - closed with the process
    proc = bench.spawn(cmd, stdout=logf, stderr=subprocess.STDOUT, cwd=workdir, env=env)
    logf.close()
    server = bench.Server(name, proc, port, port)
    try:
        bench.wait_listening(port, proc)
    except Exception:
        server.stop()
        raise
    return server


def _server(target: str, args: argparse.Namespace, crt: Path, key: Path, workdir: Path) -> bench.Server:
    port = bench.free_port()
    if target == "ceiling":
        cmd = [sys.executable, __file__, "serve", "--port", str(port), "--crt", str(crt), "--key", str(key)]
        return _start(target, cmd, port, None, workdir)
    tls = ["--enable-https", "--https-port", str(port), "--crt-path", str(crt), "--key-path", str(key)]
    http = ["--host", HOST, "--http-port", str(bench.free_port())]
    if target == "ref":
        return _start(target, [str(args.ref_bin), *http, *tls], port, None, workdir)
    if target in args.peer_bins:  # (the Go and Rust Piping Servers take the reference's flags)
        return _start(target, [str(args.peer_bins[target]), *http, *tls], port, None, workdir)
    src = args.base_src if target == "base" else args.ours_src
    env = {**os.environ, "PYTHONPATH": str(Path(src).resolve())} if src else None
    return _start(target, [sys.executable, "-m", "piping_server", *http, *tls], port, env, workdir)


def _one(target: str, args: argparse.Namespace, crt: Path, key: Path, workdir: Path) -> dict[str, Any]:
    deadline_s = 60.0 + args.count / 50
    deadline = time.monotonic() + deadline_s
    server = _server(target, args, crt, key, workdir)
    clients: list[subprocess.Popen[str]] = []
    try:
        cpu0 = server.cpu()
        tag = uuid.uuid4().hex[:8]
        procs, pairs = 2, 50
        for i in range(procs):
            share = args.count // procs
            cmd = ["h2small", "--tls", "--port", str(server.port), "--size", "1024", "--count", str(share)]
            cmd += ["--concurrency", str(pairs // procs), "--conns", "2", "--prefix", f"c{tag}-{i}"]
            cmd += ["--timeout", "30", "--deadline", str(deadline_s)]
            if target in args.peer_bins:  # (they end a sender's answer with an earlier line)
                cmd += ["--done-line", "[INFO] Sent successfully!"]
            clients.append(bench.client(cmd))
        results = [bench.collect(c, deadline) for c in clients]
        cpu1 = server.cpu()
    finally:
        for c in clients:
            bench.stop(c)
        server.stop()
    return bench.small_summary(results, cpu1 - cpu0)


def compare(args: argparse.Namespace) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="piping-h2ceiling-"))
    crt, key = bench.make_cert(workdir)
    targets, args.ref_bin = bench.side_targets("ceiling", args)
    args.peer_bins = bench.find_peers(args.peers, args.peers_dir)
    targets += list(args.peer_bins)
    runs = bench.run_interleaved(
        targets,
        args.runs,
        lambda target: _one(target, args, crt, key, workdir),
        lambda res: f"{res['tps']:.0f}/s, {res['cpu_ms_per_transfer']:.3f} ms CPU, clients {res['client_cpu_s']:.2f} s",
    )
    print(f"line (10) pattern, {args.count} x 1 KiB over h2 (TLS), medians of {args.runs} interleaved runs")
    print(f"{'target':10} {'transfers/s':>12} {'CPU ms/transfer':>16} {'p99 ms':>8} {'clients CPU s':>14}")
    summary: dict[str, dict[str, float]] = {}
    for target, rs in runs.items():
        ok = [r for r in rs if r.get("ok")]
        if not ok:
            print(f"{target:10} failed: {rs[0].get('error') if rs else '-'}")
            continue
        med = {k: statistics.median(r[k] for r in ok) for k in ("tps", "cpu_ms_per_transfer", "p99_ms", "client_cpu_s")}
        summary[target] = med
        print(
            f"{target:10} {med['tps']:12.0f} {med['cpu_ms_per_transfer']:16.3f} {med['p99_ms']:8.1f}"
            f" {med['client_cpu_s']:14.2f}"
        )
    for target in targets:
        if target != "ours" and target in summary and "ours" in summary:
            o, t = summary["ours"], summary[target]
            print(
                f"ours / {target}: transfers/s {o['tps'] / t['tps']:.2f}x,"
                f" CPU per transfer {o['cpu_ms_per_transfer'] / t['cpu_ms_per_transfer']:.2f}x"
            )
    if args.json:
        Path(args.json).write_text(json.dumps(runs, indent=1))


def streams(args: argparse.Namespace) -> None:
    """Line (7)'s one stream (light h2 clients) on two source trees of ours, interleaved: before/after."""
    workdir = Path(tempfile.mkdtemp(prefix="piping-h2stream-"))
    ctx = bench.Context(args=argparse.Namespace(), workdir=workdir, ref_bin=None, sendfile_source=workdir / "unused")
    trees = {"base": args.base_src, "ours": args.ours_src}
    size = int(args.size_mib * bench.MiB)
    transports = args.transports.split(",")
    runs: dict[str, list[dict[str, Any]]] = {f"{t} {tree}": [] for t in transports for tree in trees}
    saved = os.environ.get("PYTHONPATH")
    try:
        for r in range(args.runs):
            for transport in transports:
                order = list(trees) if r % 2 == 0 else list(trees)[::-1]
                for tree in order:
                    src = trees[tree]
                    if src:
                        os.environ["PYTHONPATH"] = str(Path(src).resolve())
                    else:
                        os.environ.pop("PYTHONPATH", None)
                    res = bench.run_stream(ctx, "ours", size, "chunked", 1, transport)
                    runs[f"{transport} {tree}"].append(res)
                    msg = f"{res['mb_s']:.0f} MB/s, {res['cpu_per_gib']:.2f} s/GiB" if res.get("ok") else res["error"]
                    bench.log(f"run {r + 1} {transport} {tree}: {msg}")
    finally:
        if saved is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = saved
    print(f"one stream of {args.size_mib:g} MiB, light h2 clients, medians of {args.runs} interleaved runs")
    for name, rs in runs.items():
        ok = [r for r in rs if r.get("ok")]
        if ok:
            mb = statistics.median(r["mb_s"] for r in ok)
            cpu = statistics.median(r["cpu_per_gib"] for r in ok)
            print(f"{name:12} {mb:8.0f} MB/s {cpu:8.2f} server CPU-s per GiB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("serve", help="the minimal h2 server (TLS, ALPN h2) on 127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--crt", required=True)
    p.add_argument("--key", required=True)
    p = sub.add_parser("compare", help="line (10)'s clients against the minimal server, ours and the reference")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--count", type=int, default=5000)
    p.add_argument("--base-src", help="also run our server from this source tree (PYTHONPATH), e.g. a git archive")
    p.add_argument("--ours-src", help="run 'ours' from this source tree instead of the installed one")
    p.add_argument("--no-ref", action="store_true")
    p.add_argument("--peers", default="none", help="the Go and Rust Piping Servers too: all, none or go,rust")
    p.add_argument("--peers-dir", type=Path, default=bench.PEERS_DIR, help="where they are")
    p.add_argument("--json", help="write every run's numbers here")
    p = sub.add_parser("streams", help="line (7)'s one stream on two source trees of ours (before/after)")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--size-mib", type=float, default=256)
    p.add_argument("--transports", default="h2c,h2", help="h2c, h2 (over TLS), comma-separated")
    p.add_argument("--base-src", required=True, help="the 'before' source tree (PYTHONPATH)")
    p.add_argument("--ours-src", help="the 'after' source tree (default: the installed one)")
    args = parser.parse_args()
    if args.cmd == "serve":
        serve(args)
    elif args.cmd == "streams":
        streams(args)
    else:
        compare(args)


if __name__ == "__main__":
    main()
