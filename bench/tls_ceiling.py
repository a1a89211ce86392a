"""What TLS alone costs on our stack, for line (8): one stream over TLS through a bare relay, no HTTP.

Two commands:

* ``relay``: a byte relay on the same stack as our HTTPS listener (uvloop, the ``ssl`` module's TLS on
  memory BIOs, records decrypted into one reused buffer, the same write watermarks and malloc
  thresholds) and nothing else:
  the first connection on ``--port-b`` waits, the next one on ``--port-a`` has its bytes written to
  it; no parsing, framing, logging or relay logic. What it costs per GiB is what our server cannot
  go below on this stack (the decryption and encryption, OpenSSL's record layer, the BIO copies and
  the system calls), short of kernel TLS.
* ``compare``: line (8)'s light clients (``clients.py send``/``recv --tls``; raw bytes for the relay,
  a chunked upload for the servers) against the relay, ours and the reference, interleaved run by
  run (the order flips every run); medians of MB/s and CPU-s per GiB of the relay or server.
  ``--base-src DIR`` adds our server run from another source tree (``PYTHONPATH=DIR``). ``--h2``: the
  servers get line (7)'s light h2 clients instead (one upload over h2 with TLS; the relay is the same),
  and ``--peers go,rust`` adds the Go and Rust Piping Servers: what HTTP/2 costs above TLS alone.

    python bench/tls_ceiling.py compare --runs 3 --size-mib 512
    python bench/tls_ceiling.py compare --runs 5 --size-mib 512 --h2 --peers go,rust
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
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
#: Our HTTP/1 protocol's write watermarks (http1/protocol.py), so that the relay queues as much as we do.
WRITE_HIGH_WATER = 1024 * 1024
WRITE_LOW_WATER = 256 * 1024
#: One read's plaintext at most, as our TLS listener hands it on (server/_tls.py READ_BYTES).
READ_BYTES = 256 * 1024

# --- the bare relay ------------------------------------------------------------------------------------


class _Receiver(asyncio.Protocol):
    """The waiting end: pauses its sender when its write buffer is full."""

    def __init__(self, session: _Session) -> None:
        self.session = session
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        transport.set_write_buffer_limits(high=WRITE_HIGH_WATER, low=WRITE_LOW_WATER)  # type: ignore[attr-defined]
        self.session.receiver_ready(self)

    def pause_writing(self) -> None:
        self.session.pause_sender()

    def resume_writing(self) -> None:
        self.session.resume_sender()

    def connection_lost(self, exc: Exception | None) -> None:
        self.session.receiver_lost(self)


class _Sender(asyncio.BufferedProtocol):
    """The sending end: its records are decrypted into one buffer, handed on as one ``bytes`` per read."""

    def __init__(self, session: _Session, buffer: memoryview) -> None:
        self.session = session
        self.buffer = buffer
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.session.sender_ready(self)

    def get_buffer(self, sizehint: int) -> memoryview:
        return self.buffer

    def buffer_updated(self, nbytes: int) -> None:
        self.session.forward(bytes(self.buffer[:nbytes]))

    def eof_received(self) -> bool | None:
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.session.sender_lost()


class _Session:
    """Pairs the next sender with the waiting receiver, one stream at a time."""

    def __init__(self) -> None:
        self.receiver: _Receiver | None = None
        self.sender: _Sender | None = None
        self.paused = False

    def receiver_ready(self, receiver: _Receiver) -> None:
        self.receiver = receiver

    def sender_ready(self, sender: _Sender) -> None:
        self.sender = sender
        self.paused = False
        if self.receiver is None and sender.transport is not None:
            sender.transport.pause_reading()  # the bench starts its receiver first; this is only a guard
            self.paused = True

    def forward(self, data: bytes) -> None:
        if self.receiver is not None and self.receiver.transport is not None:
            self.receiver.transport.write(data)

    def pause_sender(self) -> None:
        if self.sender is not None and self.sender.transport is not None and not self.paused:
            self.paused = True
            self.sender.transport.pause_reading()

    def resume_sender(self) -> None:
        if self.sender is not None and self.sender.transport is not None and self.paused:
            self.paused = False
            self.sender.transport.resume_reading()

    def sender_lost(self) -> None:
        self.sender = None
        receiver, self.receiver = self.receiver, None
        if receiver is not None and receiver.transport is not None:
            receiver.transport.close()  # after what is queued, with close_notify

    def receiver_lost(self, receiver: _Receiver) -> None:
        if self.receiver is receiver:
            self.receiver = None
        if self.sender is not None and self.sender.transport is not None:
            self.sender.transport.close()


def relay(args: argparse.Namespace) -> None:
    import uvloop

    from piping_server._runtime.malloc import tune_malloc

    signal.alarm(int(args.deadline))  # bounded: SIGALRM ends the process
    # our server's malloc settings: without them this relay's CPU per GiB jumped between runs
    # (0.9 to 1.8 s), as glibc mapped or trimmed its 256 KiB buffers afresh
    tune_malloc()
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.set_alpn_protocols(["http/1.1"])
    ctx.load_cert_chain(args.crt, args.key)
    session = _Session()
    buffer = memoryview(bytearray(READ_BYTES))

    async def main() -> None:
        loop = asyncio.get_running_loop()
        b = await loop.create_server(lambda: _Receiver(session), HOST, args.port_b, ssl=ctx)
        a = await loop.create_server(lambda: _Sender(session, buffer), HOST, args.port_a, ssl=ctx)
        print("ready", flush=True)
        async with a, b:
            await asyncio.sleep(args.deadline)

    uvloop.run(main())


# --- the comparison ------------------------------------------------------------------------------------


def _server(target: str, args: argparse.Namespace, ctx: bench.Context) -> tuple[bench.Server, int, int]:
    """The target running: (server, port for the sender, port for the receiver)."""
    if target == "relay":
        assert ctx.cert is not None
        port_a, port_b = bench.free_port(), bench.free_port()
        cmd = [sys.executable, __file__, "relay", "--port-a", str(port_a), "--port-b", str(port_b)]
        cmd += ["--crt", str(ctx.cert[0]), "--key", str(ctx.cert[1]), "--deadline", str(args.deadline)]
        proc = bench.spawn(cmd, stdout=subprocess.PIPE, text=True)
        bench.wait_line(proc, "ready", 15)
        return bench.Server(target, proc, port_a, port_b), port_a, port_b
    if target == "base":
        saved = os.environ.get("PYTHONPATH")
        os.environ["PYTHONPATH"] = str(Path(args.base_src).resolve())
        try:
            server = bench.start_server(ctx, "ours", https=True)
        finally:
            if saved is None:
                os.environ.pop("PYTHONPATH", None)
            else:
                os.environ["PYTHONPATH"] = saved
    else:
        server = bench.start_server(ctx, target, https=True)
    assert server.https_port is not None
    return server, server.https_port, server.https_port


def _one(target: str, args: argparse.Namespace, ctx: bench.Context) -> dict[str, Any]:
    size = int(args.size_mib * bench.MiB)
    if args.h2 and target != "relay":
        res = bench.run_stream(ctx, target, size, "chunked", 1, "h2")  # line (7)'s h2 over TLS
        return {**res, "clients_per_gib": res.get("client_cpu_per_gib", 0.0)}
    deadline_s = bench.stream_deadline(size)
    deadline = time.monotonic() + deadline_s
    server, send_port, recv_port = _server(target, args, ctx)
    recv: subprocess.Popen[str] | None = None
    sender: subprocess.Popen[str] | None = None
    try:
        path = f"/tls-{uuid.uuid4().hex[:8]}"
        # The relay passes the sender's chunked request through as bytes; its receiver counts raw bytes
        # (the 0.01 % of chunk framing included). A raw sender would end with a TCP close without
        # close_notify, on which the loop's TLS drops what it holds undecrypted (see tests/e2e/test_lifecycle.py).
        recv_mode = "raw" if target == "relay" else "http"
        common = ["--size", str(size), "--timeout", "30", "--deadline", str(deadline_s), "--tls", "--path", path]
        recv = bench.client(["recv", "--port", str(recv_port), "--mode", recv_mode, "--announce", *common])
        bench.wait_line(recv, "connected", 15)
        time.sleep(0.05)  # let the server register the receiver's request
        cpu0 = server.cpu()
        sender = bench.client(["send", "--port", str(send_port), "--mode", "chunked", *common])
        got = bench.collect(recv, deadline)
        sent = bench.collect(sender, deadline)
        cpu1 = server.cpu()
    finally:
        for proc in (recv, sender):
            if proc is not None:
                bench.stop(proc)
        server.stop()
    # (the relay's receiver counts the framing too, so it stops a few bytes past the body's size)
    whole = got.get("bytes") == size and got.get("ok") if target != "relay" else got.get("bytes", 0) >= size
    if not (whole and "t_start" in sent):
        return {"ok": False, "error": got.get("error") or sent.get("error") or "incomplete"}
    secs = got["t_end"] - sent["t_start"]
    return {
        "ok": True,
        "mb_s": size / secs / 1e6,
        "cpu_per_gib": (cpu1 - cpu0) * bench.GiB / size,
        "clients_per_gib": (got.get("client_cpu_s", 0.0) + sent.get("client_cpu_s", 0.0)) * bench.GiB / size,
    }


def compare(args: argparse.Namespace) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="piping-tlsceiling-"))
    ctx = bench.Context(args=argparse.Namespace(), workdir=workdir, ref_bin=None, sendfile_source=workdir / "unused")
    ctx.cert = bench.make_cert(workdir)
    targets, ctx.ref_bin = bench.side_targets("relay", args)
    ctx.base_src = Path(args.base_src) if args.base_src else None
    if args.h2:
        ctx.peer_bins = bench.find_peers(args.peers, args.peers_dir)
        targets += list(ctx.peer_bins)
    runs = bench.run_interleaved(
        targets,
        args.runs,
        lambda target: _one(target, args, ctx),
        lambda res: (
            f"{res['mb_s']:.0f} MB/s, {res['cpu_per_gib']:.2f} s/GiB, clients {res['clients_per_gib']:.2f} s/GiB"
        ),
    )
    servers = "h2 (light h2 clients)" if args.h2 else "HTTP/1.1 chunked"
    print(f"one {args.size_mib:g} MiB stream over TLS, servers {servers}, medians of {args.runs} interleaved runs")
    print(f"{'target':8} {'MB/s':>8} {'CPU-s/GiB':>10} {'clients CPU-s/GiB':>18}")
    summary: dict[str, dict[str, float]] = {}
    for target, rs in runs.items():
        ok = [r for r in rs if r["ok"]]
        if not ok:
            print(f"{target:8} failed: {rs[0].get('error') if rs else '-'}")
            continue
        med = {k: statistics.median(r[k] for r in ok) for k in ("mb_s", "cpu_per_gib", "clients_per_gib")}
        summary[target] = med
        print(f"{target:8} {med['mb_s']:8.0f} {med['cpu_per_gib']:10.2f} {med['clients_per_gib']:18.2f}")
    for target in targets:
        if target != "ours" and target in summary and "ours" in summary:
            o, t = summary["ours"], summary[target]
            mb, cpu = o["mb_s"] / t["mb_s"], o["cpu_per_gib"] / t["cpu_per_gib"]
            print(f"ours / {target}: MB/s {mb:.2f}x, CPU per GiB {cpu:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("relay", help="the bare TLS relay (started by compare)")
    p.add_argument("--port-a", type=int, required=True)
    p.add_argument("--port-b", type=int, required=True)
    p.add_argument("--crt", required=True)
    p.add_argument("--key", required=True)
    p.add_argument("--deadline", type=float, default=600)
    p = sub.add_parser("compare", help="line (8)'s stream through the relay, ours and the reference")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--size-mib", type=float, default=512)
    p.add_argument("--deadline", type=float, default=600, help="the relay process's lifetime at most, seconds")
    p.add_argument("--base-src", help="also run our server from this source tree (PYTHONPATH), e.g. a git archive")
    p.add_argument("--no-ref", action="store_true")
    p.add_argument("--h2", action="store_true", help="the servers over h2 (line 7's light h2 clients)")
    p.add_argument("--peers", default="none", help="with --h2: the Go and Rust servers too (all, none, go,rust)")
    p.add_argument("--peers-dir", type=Path, default=bench.PEERS_DIR, help="where they are")
    args = parser.parse_args()
    {"relay": relay, "compare": compare}[args.cmd](args)


if __name__ == "__main__":
    main()
