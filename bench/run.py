"""Benchmark our Piping Server against the reference (piping-server@1.12.9 from npm).

One command (``python bench/run.py``) starts both servers, runs every scenario against each,
interleaved run by run (the order flips every run), and prints the medians with the ratio
ours/reference. See bench/README.md for what each line measures.

Scenarios (``--only`` takes their numbers):
  1  one stream, light clients, chunked and Content-Length: MB/s, server CPU-s per GiB, peak RSS
  2  the same with ?n=3 (three light receivers)
  3  one stream curl -T - -> curl -o /dev/null (client-bound: what users see)
  4  many 1 KiB transfers, pairs at a time: transfers/s, server CPU per transfer, p50/p99 latency
  5  senders waiting with no receiver: server RSS per waiting connection
  6  the ceiling: (1) through a bare byte relay with no HTTP (splice relay, socat); shown beside (1) too
  7  (1) over HTTP/2 with light h2 clients: h2 with TLS against the reference's, h2c against our HTTP/1
     plain line; and curl --http2 over TLS (client-bound)
  8  (1) over HTTP/1.1 with TLS, light clients
  9  many one-to-one streams at once (100 x 64 MiB), two client processes: aggregate MB/s, CPU, p99 TTFB
 10  many 1 KiB transfers over HTTP/2 with TLS, many streams on a few connections: transfers/s, p99
 11  the piping client: piping send -> piping get against curl -> curl, with --pass, against gpg
 12  scp of 50 MB to a throwaway sshd through `piping tunnel` against the curl + socat one-liners
 13  16 one-to-one streams at once (16 x 128 MiB), two client processes: (9) with fewer, longer streams

Columns beside the reference: ``--base-src DIR`` runs our server from another source tree as ``base``
(every server line but 7's h2c row; 11 and 12 measure the client), and the Go and Rust Piping Servers
(``--peers``, default: those found in ``--peers-dir``) run the lines they can: (1), (4), (7) h2 and
h2c, (9), (13). They have no ``?n=`` above 1, so (2) stays against the reference alone.

Every loop is bounded in count and time; everything talks to 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import datetime
import ipaddress
import json
import os
import platform
import resource
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
CLIENTS = HERE / "clients.py"
REF_VERSION = "1.12.9"
#: The other Piping Servers (their README in --peers-dir says how they were built): column name -> file.
PEERS = {"go": "go-piping-server", "rust": "piping-server-rust-0.15.0"}
PEERS_DIR = REPO.parent / "shared" / "anchors"
HOST = "127.0.0.1"
MiB = 1024 * 1024
GiB = 1024 * MiB
MB = 1_000_000
CLK_TCK = os.sysconf("SC_CLK_TCK")
SENDFILE_SOURCE_MAX = 64 * MiB

_children: list[subprocess.Popen[Any]] = []
T = TypeVar("T")


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --- processes -----------------------------------------------------------------------------------------


def spawn(cmd: list[str], **kwargs: Any) -> subprocess.Popen[Any]:
    proc: subprocess.Popen[Any] = subprocess.Popen(cmd, **kwargs)
    _children.append(proc)
    return proc


def stop(proc: subprocess.Popen[Any], grace: float = 5.0) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(grace)
    with contextlib.suppress(ValueError):
        _children.remove(proc)


@atexit.register
def _cleanup() -> None:
    for proc in list(_children):
        with contextlib.suppress(Exception):
            stop(proc, 2.0)


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def proc_cpu(pid: int) -> float:
    """utime + stime + cutime + cstime of ``pid``, in seconds (all its threads, and waited-for children)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # fields[0] is field 3 (state); utime is field 14
    return sum(int(x) for x in fields[11:15]) / CLK_TCK


def proc_status_kib(pid: int, key: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def wait_listening(port: int, proc: subprocess.Popen[Any] | None, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before listening on {port}")
        try:
            with socket.create_connection((HOST, port), timeout=1.0):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {HOST}:{port} after {timeout}s")


def reap_with_rusage(proc: subprocess.Popen[Any], timeout: float) -> tuple[float, int]:
    """Wait (bounded) for ``proc`` to exit; its total CPU seconds and peak RSS in KiB, from wait4()."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pid, status, ru = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            proc.returncode = os.waitstatus_to_exitcode(status)
            with contextlib.suppress(ValueError):
                _children.remove(proc)
            return ru.ru_utime + ru.ru_stime, ru.ru_maxrss
        time.sleep(0.01)
    cpu, hwm = proc_cpu(proc.pid), proc_status_kib(proc.pid, "VmHWM")
    stop(proc)
    return cpu, hwm


def http_get(port: int, path: str, timeout: float = 5.0) -> bytes:
    with socket.create_connection((HOST, port), timeout=timeout) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
        return data


# --- servers -------------------------------------------------------------------------------------------


@dataclass
class Server:
    name: str
    proc: subprocess.Popen[Any]
    port: int
    https_port: int | None = None

    @property
    def pid(self) -> int:
        return self.proc.pid

    def cpu(self) -> float:
        return proc_cpu(self.pid)

    def rss_kib(self) -> int:
        return proc_status_kib(self.pid, "VmRSS")

    def hwm_kib(self) -> int:
        return proc_status_kib(self.pid, "VmHWM")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        stop(self.proc)


@dataclass
class Context:
    args: argparse.Namespace
    workdir: Path
    ref_bin: Path | None
    sendfile_source: Path
    cert: tuple[Path, Path] | None = None
    h2_reason: str | None = None  # why (7) is n/a, or None when ours serves h2
    notes: list[str] = field(default_factory=list)
    base_src: Path | None = None  # --base-src: our server from this tree runs as "base"
    peer_bins: dict[str, Path] = field(default_factory=dict)  # "go", "rust": their executables


def server_command(ctx: Context, name: str, port: int, https_port: int | None) -> list[str]:
    if name in ("ours", "base", "pure"):  # (base: the same command, its tree first on PYTHONPATH)
        cmd = [sys.executable, "-m", "piping_server", "--host", HOST, "--http-port", str(port)]
    elif name == "floor":  # the least relay on our stack (bench/floor.py)
        cmd = [sys.executable, str(Path(__file__).with_name("floor.py")), "--host", HOST, "--http-port", str(port)]
    elif name in ctx.peer_bins:  # the peers take the reference's flags
        cmd = [str(ctx.peer_bins[name]), "--host", HOST, "--http-port", str(port)]
    else:
        assert ctx.ref_bin is not None
        cmd = [str(ctx.ref_bin), "--host", HOST, "--http-port", str(port)]
    if https_port is not None:
        assert ctx.cert is not None
        crt, key = ctx.cert
        cmd += ["--enable-https", "--https-port", str(https_port), "--crt-path", str(crt), "--key-path", str(key)]
    return cmd


def done_args(ctx: Context, target: str) -> list[str]:
    """The light clients' check of a sender's last line: the peers end theirs earlier (bench/clients.py DONE_LINE)."""
    return ["--done-line", "[INFO] Sent successfully!"] if target in ctx.peer_bins else []


def start_server(ctx: Context, name: str, *, https: bool = False) -> Server:
    port = free_port()
    https_port = free_port() if https else None
    log_path = ctx.workdir / f"{name}-{port}.log"
    logf = open(log_path, "wb")  # noqa: SIM115 - closed with the process
    # "ours-copy": our server with the kernel paths (splice, tee) off, everything through user space
    env = {**os.environ, "PIPING_SPLICE": "0"} if name == "ours-copy" else None
    if name == "base":
        assert ctx.base_src is not None
        env = base_env(ctx.base_src)
    if name == "pure":  # our server from its sources, not the modules the install compiled (docs/design.md)
        env = {**os.environ, "PIPING_PURE": "1"}
    cmd = server_command(ctx, "ours" if name == "ours-copy" else name, port, https_port)
    proc = spawn(cmd, stdout=logf, stderr=subprocess.STDOUT, cwd=ctx.workdir, env=env)
    logf.close()
    server = Server(name, proc, port, https_port)
    try:
        wait_listening(port, proc)
        if https_port is not None:
            wait_listening(https_port, proc, timeout=5.0)
        version = http_get(port, "/version")
        if b" 200 " not in version.split(b"\r\n", 1)[0]:
            raise RuntimeError(f"/version answered {version[:80]!r}")
        # the port is ours only if our process is the one that holds it
        if not server.alive():
            raise RuntimeError("server exited")
    except Exception as exc:
        server.stop()
        tail = log_path.read_bytes()[-300:].decode(errors="replace").strip().replace("\n", " | ")
        raise RuntimeError(f"{name} server: {exc}; its log ends: {tail}") from exc
    return server


def base_env(base_src: Path) -> dict[str, str]:
    """The environment that runs our server (or client) from ``base_src`` (a tree's src/), as the side scripts do."""
    return {**os.environ, "PYTHONPATH": str(base_src.resolve())}


def check_base_src(base_src: Path) -> str:
    """Where ``piping_server`` is imported from with ``base_src`` first; an error unless that is in the tree."""
    where = subprocess.run(
        [sys.executable, "-c", "import piping_server; print(piping_server.__file__)"],
        env=base_env(base_src),
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout.strip()
    if not where or not Path(where).resolve().is_relative_to(base_src.resolve()):
        raise SystemExit(f"--base-src {base_src}: piping_server is not imported from there ({where or 'not found'})")
    return where


def find_peers(spec: str, peers_dir: Path) -> dict[str, Path]:
    """``--peers``: "all" (those found), "none", or names (each must be there); column name -> executable."""
    if spec == "none":
        return {}
    names = list(PEERS) if spec == "all" else [n.strip() for n in spec.split(",") if n.strip()]
    found: dict[str, Path] = {}
    for name in names:
        if name not in PEERS:
            raise SystemExit(f"--peers: unknown peer {name!r} (known: {', '.join(PEERS)})")
        path = peers_dir / PEERS[name]
        if os.access(path, os.X_OK):
            found[name] = path
        elif spec != "all":
            raise SystemExit(f"--peers: {path} is missing or not executable")
    return found


def ensure_reference(ctx_args: argparse.Namespace) -> Path | None:
    """The reference's executable: --ref-bin, else bench/.ref (npm-installed there when missing)."""
    if ctx_args.ref_bin:
        return Path(ctx_args.ref_bin).resolve()
    ref_dir = Path(ctx_args.ref_dir)
    bin_path = ref_dir / "node_modules" / ".bin" / "piping-server"
    pkg = ref_dir / "node_modules" / "piping-server" / "package.json"
    if pkg.exists() and json.loads(pkg.read_text()).get("version") == REF_VERSION and bin_path.exists():
        return bin_path
    if not shutil.which("npm") or not shutil.which("node"):
        log("node/npm not found: the reference cannot run; its columns stay empty")
        return None
    log(f"installing piping-server@{REF_VERSION} into {ref_dir} (npm) ...")
    ref_dir.mkdir(parents=True, exist_ok=True)
    if not (ref_dir / "package.json").exists():
        (ref_dir / "package.json").write_text('{"name": "piping-bench-ref", "private": true}\n')
    subprocess.run(
        ["npm", "install", "--no-audit", "--no-fund", "--loglevel=error", f"piping-server@{REF_VERSION}"],
        cwd=ref_dir,
        check=True,
        timeout=600,
    )
    return bin_path


def make_cert(workdir: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1, for the HTTPS/h2 scenario."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=7))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(HOST))]), critical=False)
        .sign(key, hashes.SHA256())
    )
    crt_path, key_path = workdir / "bench.crt", workdir / "bench.key"
    crt_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
        )
    )
    return crt_path, key_path


def probe_h2(ctx: Context) -> str | None:
    """None when our server negotiates h2 over TLS, else why scenario 7 is n/a.

    TODO(issue 5, item 7): this is the hook for HTTP/2. Once ``--enable-https`` serves ALPN h2, the
    scenario runs by itself (curl --http2 over TLS against the reference's h2, and h2c prior knowledge).
    """
    if not shutil.which("curl"):
        return "no curl"
    try:
        ctx.cert = ctx.cert or make_cert(ctx.workdir)
        server = start_server(ctx, "ours", https=True)
    except Exception as exc:
        log(f"ours with --enable-https: {exc}")
        return "no HTTP/2 yet: --enable-https does not listen"
    try:
        assert server.https_port is not None
        tls = ssl.create_default_context()
        tls.check_hostname = False
        tls.verify_mode = ssl.CERT_NONE
        tls.set_alpn_protocols(["h2", "http/1.1"])
        with (
            socket.create_connection((HOST, server.https_port), timeout=5) as raw,
            tls.wrap_socket(raw, server_hostname=HOST) as s,
        ):
            alpn = s.selected_alpn_protocol()
        if alpn != "h2":
            return f"no HTTP/2 yet (TLS ALPN chose {alpn!r})"
        return None
    except OSError as exc:
        return f"no HTTP/2 yet (TLS handshake failed: {exc})"
    finally:
        server.stop()


# --- clients -------------------------------------------------------------------------------------------


def client(args: list[str], **kwargs: Any) -> subprocess.Popen[str]:
    return spawn([sys.executable, str(CLIENTS), *args], stdout=subprocess.PIPE, text=True, **kwargs)


def collect(proc: subprocess.Popen[str], deadline: float) -> dict[str, Any]:
    try:
        out, _ = proc.communicate(timeout=max(1.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        stop(proc)
        return {"ok": False, "error": "client process timed out (killed)"}
    with contextlib.suppress(ValueError):
        _children.remove(proc)
    lines = [line for line in out.splitlines() if line.startswith("{")]
    if not lines:
        return {"ok": False, "error": f"client printed no result (exit {proc.returncode})"}
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def wait_line(proc: subprocess.Popen[str], expect: str, timeout: float) -> None:
    """Wait for ``expect`` on a client's stdout (bounded by a timer that kills the client)."""
    assert proc.stdout is not None
    timer = _Timer(timeout, proc)
    try:
        line = proc.stdout.readline().strip()
    finally:
        timer.cancel()
    if line != expect:
        raise RuntimeError(f"client said {line!r}, expected {expect!r}")


class _Timer:
    def __init__(self, seconds: float, proc: subprocess.Popen[Any]) -> None:
        import threading

        self._t = threading.Timer(seconds, proc.kill)
        self._t.daemon = True
        self._t.start()

    def cancel(self) -> None:
        self._t.cancel()


# --- scenarios 1, 2, 6: one stream with light clients ---------------------------------------------------


def stream_deadline(size: int) -> float:
    return 60.0 + size / (20 * MB)


def run_stream(
    ctx: Context, target: str, size: int, mode: str, receivers: int, transport: str = "h1"
) -> dict[str, Any]:
    """One stream of ``size`` bytes: a light sender (``mode`` chunked|length) to ``receivers`` light receivers.

    ``target`` is a server (ours, ours-copy, base, ref, go, rust), splice or socat (a bare relay, no HTTP,
    one receiver), or splice-check (chunked only: a bare relay that checks the chunk framing it passes on,
    as a server must).
    ``transport``: h1 (plain HTTP/1.1), h1tls (HTTP/1.1 over TLS), h2 (HTTP/2 over TLS), h2c (HTTP/2
    with prior knowledge, plain TCP). The h2 clients ignore ``mode`` (an HTTP/2 body has no framing of its own).
    """
    deadline_s = stream_deadline(size)
    deadline = time.monotonic() + deadline_s
    common = ["--size", str(size), "--timeout", "30", "--deadline", str(deadline_s), *done_args(ctx, target)]
    server: Server | None = None
    relay: subprocess.Popen[Any] | None = None
    recvs: list[subprocess.Popen[str]] = []
    try:
        if target not in ("splice", "socat", "splice-check"):
            tls = transport in ("h1tls", "h2")
            if tls:
                ctx.cert = ctx.cert or make_cert(ctx.workdir)
            server = start_server(ctx, target, https=tls)
            pid = server.pid
            path = f"/bench-{uuid.uuid4().hex[:8]}" + (f"?n={receivers}" if receivers > 1 else "")
            send_port = server.https_port if tls and server.https_port else server.port
            extra = ["--tls"] if tls else []
            h2 = transport in ("h2", "h2c")
            recv_args = ["h2recv" if h2 else "recv", "--port", str(send_port), "--path", path, "--announce"]
            recv_args += [*common, *extra]
            common = [*common, *extra]
            send_mode = "h2" if h2 else mode
        elif target == "splice-check":
            port_a, port_b = free_port(), free_port()
            relay = client(["chunkrelay", "--port-a", str(port_a), "--port-b", str(port_b), *common])
            wait_line(relay, "ready", 15)
            pid = relay.pid
            path = "/"
            recv_args = ["recv", "--port", str(port_b), "--path", path, "--announce", *common]
            send_port = port_a
            send_mode = "chunked"
        else:
            port_a, port_b = free_port(), free_port()
            if target == "splice":
                relay = client(
                    ["relay", "--port-a", str(port_a), "--port-b", str(port_b), "--deadline", str(deadline_s)]
                )
                wait_line(relay, "ready", 15)
            else:
                # -U: data flows right (sender, port A) to left (receiver, port B); B is opened first
                relay = spawn(
                    [
                        "socat",
                        "-U",
                        "-b",
                        str(1 * MiB),
                        f"TCP-LISTEN:{port_b},bind={HOST},reuseaddr",
                        f"TCP-LISTEN:{port_a},bind={HOST},reuseaddr",
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            pid = relay.pid
            path = "/"
            recv_args = ["recv", "--port", str(port_b), "--mode", "raw", "--announce", *common]
            send_port = port_a
            send_mode = "raw" if mode == "chunked" else "rawfile"
        for _ in range(receivers):
            proc = client(recv_args)
            recvs.append(proc)
        for proc in recvs:
            wait_line(proc, "connected", 15)
        time.sleep(0.05)  # let the server register the receivers' requests
        cpu0 = proc_cpu(pid)
        rss0 = proc_status_kib(pid, "VmRSS")
        if send_mode == "h2":
            send_args = ["h2send", "--port", str(send_port), "--path", path, *common]
            if getattr(ctx.args, "h2_delayed_acks", False):  # (h2_ceiling.py's context has no such flag)
                send_args.append("--delayed-acks")
        else:
            send_args = ["send", "--port", str(send_port), "--path", path, "--mode", send_mode, *common]
        if send_mode in ("length", "rawfile"):
            send_args += ["--file", str(ctx.sendfile_source)]
        sender = client(send_args)
        results = [collect(p, deadline) for p in recvs]
        sent = collect(sender, deadline)
        if relay is not None:
            # a relay exits after its one session: its CPU and peak RSS come from wait4()
            cpu1, hwm = reap_with_rusage(relay, 10.0)
        else:
            assert server is not None
            cpu1, hwm = server.cpu(), server.hwm_kib()
    finally:
        for proc in recvs:
            stop(proc)
        if server is not None:
            server.stop()
        if relay is not None:
            stop(relay)
    errors = [
        f"{r.get('role', '?')}: {r.get('error') or 'response ' + repr(r.get('response_tail', ''))}"
        for r in [*results, sent]
        if not r.get("ok")
    ]
    if errors:
        return {"ok": False, "error": "; ".join(str(e) for e in errors)}
    t0 = sent["t_start"]
    t1 = max(r["t_end"] for r in results)
    secs = t1 - t0
    client_cpu = sent["client_cpu_s"] + sum(r["client_cpu_s"] for r in results)
    return {
        "ok": True,
        "seconds": secs,
        "mb_s": size / secs / MB,
        "cpu_per_gib": (cpu1 - cpu0) / (size / GiB),
        "peak_rss_mib": hwm / 1024,
        "rss_before_mib": rss0 / 1024,
        "rss_growth_mib": (hwm - rss0) / 1024,
        "client_cpu_per_gib": client_cpu / (size / GiB),
        "bytes": [r["bytes"] for r in results],
    }


# --- scenario 3 and 7: curl ---------------------------------------------------------------------------


def run_curl(ctx: Context, target: str, size: int, transport: str = "http1") -> dict[str, Any]:
    """``head -c SIZE /dev/zero | curl -T - URL`` to ``curl -o /dev/null URL``; MB/s as the receiver saw it."""
    deadline_s = stream_deadline(size)
    https = transport == "h2"
    server = start_server(ctx, target, https=https)
    procs: list[subprocess.Popen[Any]] = []
    try:
        if https:
            base = f"https://{HOST}:{server.https_port}"
            flags = ["-k", "--http2"]
        elif transport == "h2c":
            base = f"http://{HOST}:{server.port}"
            flags = ["--http2-prior-knowledge"]
        else:
            base = f"http://{HOST}:{server.port}"
            flags = []
        url = f"{base}/bench-{uuid.uuid4().hex[:8]}"
        bound = ["--max-time", str(int(deadline_s))]
        fmt = "%{http_code} %{size_download} %{time_starttransfer} %{time_total}"
        receiver = spawn(
            ["curl", "-sS", *flags, *bound, "-o", "/dev/null", "-w", fmt, url], stdout=subprocess.PIPE, text=True
        )
        procs.append(receiver)
        time.sleep(0.3)  # curl is up and waiting (a waiting receiver gets nothing to show it)
        cpu0 = server.cpu()
        feeder = spawn(["head", "-c", str(size), "/dev/zero"], stdout=subprocess.PIPE)
        procs.append(feeder)
        sender = spawn(
            ["curl", "-sS", *flags, *bound, "-T", "-", "-o", "/dev/null", url],
            stdin=feeder.stdout,
            stdout=subprocess.DEVNULL,
        )
        procs.append(sender)
        assert feeder.stdout is not None
        feeder.stdout.close()
        out, _ = receiver.communicate(timeout=deadline_s + 5)
        sender.wait(30)
        cpu1 = server.cpu()
        hwm = server.hwm_kib()
    finally:
        for proc in procs:
            stop(proc)
        server.stop()
    try:
        code, got, t_start, t_total = out.split()
    except ValueError:
        return {"ok": False, "error": f"curl printed {out!r}"}
    if code != "200" or int(float(got)) != size:
        return {"ok": False, "error": f"curl receiver: status {code}, {got} bytes of {size}"}
    secs = float(t_total) - float(t_start)
    return {
        "ok": True,
        "seconds": secs,
        "mb_s": size / secs / MB,
        "cpu_per_gib": (cpu1 - cpu0) / (size / GiB),
        "peak_rss_mib": hwm / 1024,
    }


# --- scenario 4: many small transfers ------------------------------------------------------------------


def p99(xs: list[float]) -> float:
    """The 99th percentile of sorted ``xs`` (the last one when there are fewer than 100)."""
    return xs[min(len(xs) - 1, int(len(xs) * 0.99))]


def small_summary(results: list[dict[str, Any]], cpu_s: float, hwm_kib: int | None = None) -> dict[str, Any]:
    """Sum up the many-small-transfers clients' reports (scenarios 4 and 10); ``cpu_s``: the server's CPU
    over the run, ``hwm_kib``: its peak RSS where measured."""
    bad = [r for r in results if "latencies" not in r]
    if bad:
        return {"ok": False, "error": "; ".join(str(r.get("error")) for r in bad)}
    lat = sorted(x for r in results for x in r["latencies"])
    failed = sum(r["failed"] for r in results)
    hung = sum(r.get("hung", 0) for r in results)
    if not lat:
        return {"ok": False, "error": f"no transfer succeeded: {results[0]['failures'][:3]}"}
    secs = max(r["t_end"] for r in results) - min(r["t_start"] for r in results)
    out: dict[str, Any] = {
        "ok": failed == 0,
        "transfers": len(lat),
        "failed": failed,
        "hung": hung,
        "tps": len(lat) / secs,
        "cpu_ms_per_transfer": cpu_s / len(lat) * 1000,
        "p50_ms": lat[len(lat) // 2] * 1000,
        "p99_ms": p99(lat) * 1000,
    }
    if hwm_kib is not None:
        out["peak_rss_mib"] = hwm_kib / 1024
    out["client_cpu_s"] = sum(r["client_cpu_s"] for r in results)
    if hwm_kib is not None:  # scenario 4's record has always carried its wall time too
        out["seconds"] = secs
    if failed:
        out["error"] = f"{failed} transfers failed, e.g. {results[0]['failures'][:2]}"
    return out


#: (4), (10): a pair not done after this many seconds gives its place to the next one, and one still
#: open this long after every other ended is counted as hung (``clients.py --stall``): the Rust server
#: loses a rendezvous now and then, and a lost pair must not hold a place, nor the run's end, for 30 s.
SMALL_STALL_S = 2.0


def run_small(ctx: Context, target: str, count: int, pairs: int, procs: int) -> dict[str, Any]:
    deadline_s = 120.0 + count / 50
    deadline = time.monotonic() + deadline_s
    server = start_server(ctx, target)
    clients: list[subprocess.Popen[str]] = []
    try:
        cpu0 = server.cpu()
        tag = uuid.uuid4().hex[:8]
        for i in range(procs):
            share = count // procs + (1 if i < count % procs else 0)
            conc = pairs // procs + (1 if i < pairs % procs else 0)
            clients.append(
                client(
                    [
                        "small",
                        "--port",
                        str(server.port),
                        "--size",
                        "1024",
                        "--count",
                        str(share),
                        "--concurrency",
                        str(conc),
                        "--prefix",
                        f"s{tag}-{i}",
                        "--timeout",
                        "30",
                        "--stall",
                        str(SMALL_STALL_S),
                        "--deadline",
                        str(deadline_s),
                        *done_args(ctx, target),
                    ]
                )
            )
        results = [collect(c, deadline) for c in clients]
        cpu1 = server.cpu()
        hwm = server.hwm_kib()
    finally:
        for c in clients:
            stop(c)
        server.stop()
    return small_summary(results, cpu1 - cpu0, hwm)


# --- scenario 9: many streams at once ------------------------------------------------------------------


def run_many(ctx: Context, target: str, streams: int, size: int, procs: int = 2) -> dict[str, Any]:
    """``streams`` one-to-one Content-Length streams of ``size`` bytes at once, from ``procs`` client processes."""
    total = streams * size
    deadline_s = 60.0 + total / (20 * MB)
    deadline = time.monotonic() + deadline_s
    server = start_server(ctx, target)
    clients: list[subprocess.Popen[str]] = []
    try:
        tag = uuid.uuid4().hex[:8]
        for i in range(procs):
            share = streams // procs + (1 if i < streams % procs else 0)
            args = ["multi", "--port", str(server.port), "--path", f"/many-{tag}-{i}", "--streams", str(share)]
            args += ["--size", str(size), "--timeout", "30", "--deadline", str(deadline_s), "--announce"]
            args += done_args(ctx, target)
            clients.append(client(args, stdin=subprocess.PIPE))
        for c in clients:
            wait_line(c, "connected", 30)
        time.sleep(0.05)
        cpu0 = server.cpu()
        for c in clients:  # every receiver waits: go
            assert c.stdin is not None
            c.stdin.write("go\n")
            c.stdin.flush()
        results = [collect(c, deadline) for c in clients]
        cpu1 = server.cpu()
        hwm = server.hwm_kib()
    finally:
        for c in clients:
            stop(c)
        server.stop()
    bad = [r for r in results if not r.get("ok")]
    if bad:
        return {"ok": False, "error": "; ".join(str(r.get("error")) for r in bad)}
    secs = max(r["t_end"] for r in results) - min(r["t_start"] for r in results)
    ttfb = sorted(x for r in results for x in r["ttfb"])
    return {
        "ok": True,
        "seconds": secs,
        "mb_s": total / secs / MB,
        "cpu_per_gib": (cpu1 - cpu0) / (total / GiB),
        "ttfb_p50_ms": ttfb[len(ttfb) // 2] * 1000,
        "ttfb_p99_ms": p99(ttfb) * 1000,
        "peak_rss_mib": hwm / 1024,
        "client_cpu_s": sum(r["client_cpu_s"] for r in results),
    }


# --- scenario 10: many small transfers over HTTP/2 -----------------------------------------------------


def run_h2small(ctx: Context, target: str, count: int, pairs: int, procs: int) -> dict[str, Any]:
    deadline_s = 120.0 + count / 50
    deadline = time.monotonic() + deadline_s
    ctx.cert = ctx.cert or make_cert(ctx.workdir)
    server = start_server(ctx, target, https=True)
    assert server.https_port is not None
    clients: list[subprocess.Popen[str]] = []
    try:
        cpu0 = server.cpu()
        tag = uuid.uuid4().hex[:8]
        for i in range(procs):
            share = count // procs + (1 if i < count % procs else 0)
            conc = pairs // procs + (1 if i < pairs % procs else 0)
            args = ["h2small", "--tls", "--port", str(server.https_port), "--size", "1024", "--count", str(share)]
            args += ["--concurrency", str(conc), "--conns", "2", "--prefix", f"h{tag}-{i}"]
            args += ["--timeout", "30", "--stall", str(SMALL_STALL_S), "--deadline", str(deadline_s)]
            args += done_args(ctx, target)
            clients.append(client(args))
        results = [collect(c, deadline) for c in clients]
        cpu1 = server.cpu()
    finally:
        for c in clients:
            stop(c)
        server.stop()
    return small_summary(results, cpu1 - cpu0)


# --- scenario 11: the piping client --------------------------------------------------------------------

PASSPHRASE = "bench-passphrase"


def random_file(ctx: Context, size: int) -> Path:
    """Incompressible bytes for the client line (compression must not flatter --pass)."""
    path = ctx.sendfile_source.with_name(f"piping-bench-random-{os.getpid()}-{size}.bin")
    if not path.exists():
        with open(path, "wb") as f:
            left = size
            while left:
                n = min(left, 16 * MiB)
                f.write(os.urandom(n))
                left -= n
        atexit.register(lambda: path.unlink(missing_ok=True))
    return path


def run_client_line(ctx: Context, kind: str, size: int) -> dict[str, Any]:
    """One file of ``size`` random bytes from a sending client to a receiving client through our server.

    ``kind``: curl (curl -T FILE -> curl), piping (piping send -> piping get), curl-stdin and
    piping-stdin (the same from ``cat FILE |``), piping-pass (both with --pass), gpg (gpg -c |
    curl -T - -> curl | gpg -d). The receiving side pipes into ``clients.py
    count``, which times first to last byte; the same for every kind, so the ratios are fair.
    """
    deadline_s = stream_deadline(size)
    data = random_file(ctx, size)
    piping = str(Path(sys.executable).with_name("piping"))
    server = start_server(ctx, "ours")
    url = f"http://{HOST}:{server.port}/client-{uuid.uuid4().hex[:8]}"
    gpg_opts = ["--batch", "--yes", "--quiet", "--pinentry-mode", "loopback", "--passphrase", PASSPHRASE]
    gpg_home = ["--homedir", str(ctx.workdir / "gnupg")]
    (ctx.workdir / "gnupg").mkdir(mode=0o700, exist_ok=True)
    gpg = " ".join(["gpg", *gpg_home, *gpg_opts])
    commands = {  # kind: (the sending side, the receiving side)
        "curl": (f"curl -sS -T {data} {url} -o /dev/null", f"curl -sS {url}"),
        "piping": (f"{piping} send -q {url} {data}", f"{piping} get -q {url}"),
        "curl-stdin": (f"cat {data} | curl -sS -T - {url} -o /dev/null", f"curl -sS {url}"),
        "piping-stdin": (f"cat {data} | {piping} send -q {url}", f"{piping} get -q {url}"),
        "piping-pass": (
            f"{piping} send -q --pass {PASSPHRASE} {url} {data}",
            f"{piping} get -q --pass {PASSPHRASE} {url}",
        ),
        "gpg": (f"{gpg} -c < {data} | curl -sS -T - {url} -o /dev/null", f"curl -sS {url} | {gpg} -d"),
    }
    send_cmd, recv_cmd = commands[kind]
    counter = f"{sys.executable} {CLIENTS} count --size {size} --deadline {deadline_s}"
    procs: list[subprocess.Popen[Any]] = []
    try:
        cpu0 = server.cpu()
        receiver = spawn(["bash", "-o", "pipefail", "-c", f"{recv_cmd} | {counter}"], stdout=subprocess.PIPE, text=True)
        procs.append(receiver)
        time.sleep(0.3)
        sender = spawn(["bash", "-o", "pipefail", "-c", send_cmd], stdout=subprocess.DEVNULL)
        procs.append(sender)
        out, _ = receiver.communicate(timeout=deadline_s + 5)
        sender.wait(30)
        cpu1 = server.cpu()
    finally:
        for proc in procs:
            stop(proc)
        server.stop()
    lines = [line for line in (out or "").splitlines() if line.startswith("{")]
    if not lines:
        return {"ok": False, "error": f"{kind}: the counter printed nothing (exit {receiver.returncode})"}
    res: dict[str, Any] = json.loads(lines[-1])
    if not res.get("ok") or sender.returncode != 0:
        return {"ok": False, "error": f"{kind}: {res.get('error')}, sender exit {sender.returncode}"}
    secs = res["t_end"] - res["t_first"]
    return {"ok": True, "seconds": secs, "mb_s": size / secs / MB, "cpu_per_gib": (cpu1 - cpu0) / (size / GiB)}


# --- scenario 12: scp through a tunnel ----------------------------------------------------------------


@dataclass
class Sshd:
    proc: subprocess.Popen[Any]
    port: int
    ssh_opts: list[str]


def start_sshd(ctx: Context) -> Sshd | None:
    """A throwaway sshd on 127.0.0.1 with temporary keys (None when openssh is missing or cannot run)."""
    sshd_bin = shutil.which("sshd") or ("/usr/sbin/sshd" if os.path.exists("/usr/sbin/sshd") else None)
    if not sshd_bin or not shutil.which("scp") or not shutil.which("ssh-keygen"):
        return None
    with contextlib.suppress(OSError):
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # sshd's privilege separation directory
    d = ctx.workdir / "ssh"
    d.mkdir(exist_ok=True)
    for name in ("host", "user"):
        if not (d / name).exists():
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / name)], check=True, timeout=30)
    (d / "authorized_keys").write_text((d / "user.pub").read_text())
    port = free_port()
    (d / "sshd_config").write_text(
        f"Port {port}\nListenAddress {HOST}\nHostKey {d / 'host'}\nAuthorizedKeysFile {d / 'authorized_keys'}\n"
        "PidFile none\nUsePAM no\nStrictModes no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
        "PermitRootLogin prohibit-password\n"
    )
    proc = spawn([sshd_bin, "-D", "-e", "-f", str(d / "sshd_config")], stderr=subprocess.DEVNULL)
    try:
        wait_listening(port, proc, timeout=10)
    except RuntimeError:
        stop(proc)
        return None
    opts = ["-i", str(d / "user"), "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null"]
    opts += ["-o", "BatchMode=yes", "-o", "LogLevel=ERROR", "-o", "ConnectTimeout=20"]
    return Sshd(proc, port, opts)


def run_scp(ctx: Context, sshd: Sshd, kind: str, size: int) -> dict[str, Any]:
    """``scp`` of ``size`` random bytes to sshd through a tunnel over our server: ``piping`` (piping tunnel
    server + client) or ``socat`` (the curl + socat one-liners of piping-server's README). MB/s = size /
    scp's wall time (the ssh handshake included, the same for both)."""
    data = random_file(ctx, size)
    piping = str(Path(sys.executable).with_name("piping"))
    server = start_server(ctx, "ours")
    base = f"http://{HOST}:{server.port}"
    tag = uuid.uuid4().hex[:8]
    p1, p2 = f"scp-{tag}-c2s", f"scp-{tag}-s2c"
    lport = free_port()
    procs: list[subprocess.Popen[Any]] = []
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    try:
        if kind == "piping":
            for side, port in (("server", sshd.port), ("client", lport)):
                cmd = [piping, "tunnel", side, "-q", "--server", base, "--port", str(port), p1, p2]
                procs.append(spawn(cmd, **quiet))
        else:
            far = f"curl -sSN {base}/{p1} | socat - TCP:{HOST}:{sshd.port} | curl -sSNT - {base}/{p2}"
            procs.append(spawn(["bash", "-c", far], **quiet))
            u = base.replace(":", "\\:")
            near = f"EXEC:curl -NsS {u}/{p2}!!EXEC:curl -NsST - {u}/{p1}"
            procs.append(spawn(["socat", "-t", "30", f"TCP-LISTEN:{lport},bind={HOST},reuseaddr", near], **quiet))
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:  # bound, without a probe connection (socat serves exactly one)
            if f":{lport:04X} 00000000:0000 0A" in Path("/proc/net/tcp").read_text():
                break
            time.sleep(0.05)
        user = os.environ.get("USER") or "root"
        cpu0 = server.cpu()
        t0 = time.monotonic()
        res = subprocess.run(  # -O: the scp protocol (the throwaway sshd has no sftp subsystem)
            ["scp", "-O", "-q", "-P", str(lport), *sshd.ssh_opts, str(data), f"{user}@{HOST}:/dev/null"],
            capture_output=True,
            timeout=stream_deadline(size),
        )
        secs = time.monotonic() - t0
        cpu1 = server.cpu()
    finally:
        for proc in procs:
            stop(proc)
        server.stop()
    if res.returncode != 0:
        return {"ok": False, "error": f"scp ({kind}) exit {res.returncode}: {res.stderr[-200:]!r}"}
    return {"ok": True, "seconds": secs, "mb_s": size / secs / MB, "cpu_per_gib": (cpu1 - cpu0) / (size / GiB)}


# --- scenario 5: waiting senders -----------------------------------------------------------------------


def run_waiting(ctx: Context, target: str, count: int) -> dict[str, Any]:
    deadline = time.monotonic() + 60.0 + count / 100
    server = start_server(ctx, target)
    socks: list[socket.socket] = []
    try:
        time.sleep(0.5)
        rss0 = server.rss_kib()
        tag = uuid.uuid4().hex[:8]
        body = b"x" * 1024
        for i in range(count):
            if time.monotonic() > deadline:
                raise TimeoutError("waiting senders: deadline passed while connecting")
            s = socket.create_connection((HOST, server.port), timeout=10)
            socks.append(s)
            s.sendall(
                (
                    f"POST /w{tag}-{i} HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: {len(body)}\r\n"
                    "Content-Type: application/octet-stream\r\n\r\n"
                ).encode()
                + body
            )
        for s in socks:
            got = b""
            while b"Waiting" not in got:
                if time.monotonic() > deadline:
                    raise TimeoutError("waiting senders: deadline passed while reading")
                part = s.recv(4096)
                if not part:
                    raise ConnectionError(f"server closed a waiting sender: {got[:120]!r}")
                got += part
        time.sleep(1.0)  # let allocations settle (and the GC run) before reading RSS
        rss1 = server.rss_kib()
        alive = server.alive()
    except (OSError, TimeoutError) as exc:
        return {"ok": False, "error": f"{type(exc).__name__}: {exc} after {len(socks)} connections"}
    finally:
        for s in socks:
            s.close()
        server.stop()
    if not alive:
        return {"ok": False, "error": "server died"}
    return {"ok": True, "kib_per_conn": (rss1 - rss0) / count, "rss_before_mib": rss0 / 1024, "rss_mib": rss1 / 1024}


# --- profiling ----------------------------------------------------------------------------------------


def run_profile(ctx: Context, size: int, mode: str = "chunked") -> None:
    """py-spy record of our server during one stream; writes results/profile[-MODE].*.

    ``mode``: chunked or length (HTTP/1 light clients), h2c or h2 (the light h2 clients; h2 over TLS).
    """
    pyspy = shutil.which("py-spy") or os.environ.get("PY_SPY")
    if not pyspy:
        log("py-spy not found (pip install py-spy): no profile")
        return
    results = Path(ctx.args.results)
    results.mkdir(parents=True, exist_ok=True)
    stem = "profile" if mode == "chunked" else f"profile-{mode}"
    outputs: list[tuple[str, Path]] = [("flamegraph", results / f"{stem}.svg"), ("raw", results / f"{stem}.txt")]
    for fmt, out in outputs:
        h2 = mode in ("h2", "h2c")
        if mode == "h2":
            ctx.cert = ctx.cert or make_cert(ctx.workdir)
        server = start_server(ctx, "ours", https=mode == "h2")
        spy = spawn(
            [pyspy, "record", "--pid", str(server.pid), "--native", "--rate", "500", "--format", fmt, "-o", str(out)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            time.sleep(1.0)  # py-spy attaches
            port = server.https_port if mode == "h2" and server.https_port else server.port
            deadline = time.monotonic() + stream_deadline(size)
            path = f"/profile-{uuid.uuid4().hex[:8]}"
            common = ["--size", str(size), "--timeout", "30", "--deadline", str(stream_deadline(size))]
            if mode == "h2":
                common.append("--tls")
            recv = client(["h2recv" if h2 else "recv", "--port", str(port), "--path", path, "--announce", *common])
            wait_line(recv, "connected", 15)
            send_args = ["h2send", "--port", str(port), "--path", path, *common]
            if not h2:
                send_args = ["send", "--port", str(port), "--path", path, "--mode", mode, *common]
            if mode == "length":
                send_args += ["--file", str(ctx.sendfile_source)]
            send = client(send_args)
            r, s = collect(recv, deadline), collect(send, deadline)
            log(f"profile run ({fmt}): receiver {r.get('ok')} {r.get('error', '')}, sender {s.get('ok')}")
        finally:
            spy.send_signal(signal.SIGINT)
            try:
                spy.wait(30)
            except subprocess.TimeoutExpired:
                stop(spy)
            server.stop()
    raw = results / f"{stem}.txt"
    if raw.exists():
        print_profile_top(raw)


_SYSCALLS = {"writev", "write", "read", "readv", "recv", "recvfrom", "send", "sendmsg", "epoll_pwait", "epoll_wait"}


def _frame_kind(frame: str) -> str:
    name = frame.split(" (", 1)[0]
    if "(libc" in frame:
        return f"syscall {name}" if name in _SYSCALLS else "libc, other (memcpy, malloc...)"
    if "piping_server/" in frame:
        return "Python: piping_server"
    if any(x in frame for x in ("loop.c", "uvloop", "(core.c", "(stream.c", "(linux.c", "(uv-common.c")):
        return "uvloop / libuv (C)"
    if any(x in frame for x in ("parser.c", "llhttp", "(api.c", "(http.c")):
        return "httptools / llhttp (C)"
    if ".py:" in frame:
        return "Python: other"
    return "CPython runtime, other native"


def print_profile_top(raw: Path, top: int = 15) -> None:
    """Where the samples are, from py-spy's collapsed stacks: by kind, by function (self), and inclusive."""
    self_counts: dict[str, int] = {}
    total_counts: dict[str, int] = {}
    kinds: dict[str, int] = {}
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, n_s = line.rpartition(" ")
        if not stack or not n_s.isdigit():
            continue
        n = int(n_s)
        total += n
        frames = stack.split(";")
        self_counts[frames[-1]] = self_counts.get(frames[-1], 0) + n
        kind = _frame_kind(frames[-1])
        kinds[kind] = kinds.get(kind, 0) + n
        for fr in set(frames):
            total_counts[fr] = total_counts.get(fr, 0) + n
    if not total:
        print("profile: no samples")
        return
    print(f"\nprofile of our server ({total} samples, py-spy --native): self time by kind")
    for kind, n in sorted(kinds.items(), key=lambda kv: -kv[1]):
        print(f"  {100 * n / total:5.1f}%  {kind}")
    print("top self time by function")
    for fr, n in sorted(self_counts.items(), key=lambda kv: -kv[1])[:top]:
        print(f"  {100 * n / total:5.1f}%  {fr}")
    print("top inclusive time, piping_server functions")
    ours = [(fr, n) for fr, n in total_counts.items() if "piping_server/" in fr and n < 0.99 * total]
    for fr, n in sorted(ours, key=lambda kv: -kv[1])[:top]:
        print(f"  {100 * n / total:5.1f}%  {fr}")


# --- the table ----------------------------------------------------------------------------------------


@dataclass
class Row:
    label: str
    unit: str
    ours: list[float] = field(default_factory=list)
    ref: list[float] = field(default_factory=list)
    target: str = ""  # e.g. ">= 2.0" on ours/ref
    fmt: str = "{:.0f}"
    single: bool = False  # one value only (a relay, a share of the ceiling): no reference column
    #: the columns beside the reference: "base" (--base-src) and the peers ("go", "rust")
    others: dict[str, list[float]] = field(default_factory=dict)


def med(xs: list[float]) -> float | None:
    return statistics.median(xs) if xs else None


def check(target: str, ratio: float | None) -> str:
    if not target or ratio is None:
        return ""
    op, _, val = target.partition(" ")
    limit = float(val.rstrip("%")) / (100 if val.endswith("%") else 1)
    ok = ratio >= limit if op == ">=" else ratio <= limit
    return "ok" if ok else "MISS"


def print_table(rows: list[Row], runs_note: str, columns: list[str] | None = None) -> str:
    """The table: ours, the reference and ours/ref, then each of ``columns`` (base, peers) and ours/it."""
    columns = columns or []
    lines = []
    header = f"{'scenario / metric':<58} {'ours':>12} {'reference':>12} {'ours/ref':>9}  {'target':>8}  {'':4}"
    header += "".join(f" {name:>9} {'ours/' + name:>10}" for name in columns)
    lines.append(header)
    lines.append("-" * len(header))
    for row in rows:
        if row.unit == "section":
            lines.append(row.label)
            continue
        o, r = med(row.ours), med(row.ref)
        o_s = row.fmt.format(o) if o is not None else "n/a"
        r_s = row.fmt.format(r) if r is not None else ("" if row.single else "n/a")
        if row.single:  # a relay's number, or a share of the ceiling (checked against its target directly)
            ratio = o
            ratio_s = ""
        else:
            ratio = o / r if o is not None and r else None
            ratio_s = f"{ratio:.2f}x" if ratio is not None else ""
        label = f"  {row.label} [{row.unit}]"
        line = f"{label:<58} {o_s:>12} {r_s:>12} {ratio_s:>9}  {row.target:>8}  {check(row.target, ratio):4}"
        for name in columns:
            v = None if row.single else med(row.others.get(name, []))
            v_s = row.fmt.format(v) if v is not None else ("" if row.single or name not in row.others else "n/a")
            v_ratio = f"{o / v:.2f}x" if o is not None and v else ""
            line += f" {v_s:>9} {v_ratio:>10}"
        lines.append(line.rstrip())
    lines.append(runs_note)
    text = "\n".join(lines)
    print("\n" + text)
    return text


# --- main ---------------------------------------------------------------------------------------------


def guarded(fn: Callable[..., dict[str, Any]], *args: Any) -> dict[str, Any]:
    """One measurement; a failure (a server that does not start, a client that breaks) is a failed run, not the end."""
    try:
        return fn(*args)
    except Exception as exc:  # noqa: BLE001 - reported in the table's footnote and the JSON
        return {"ok": False, "error": f"{type(exc).__name__}: {exc}"}


def interleaved(targets: list[T], run: int) -> list[T]:
    return targets if run % 2 == 0 else targets[::-1]


def side_targets(ceiling: str, args: argparse.Namespace) -> tuple[list[str], Path | None]:
    """A side script's targets: ours, ``base`` (``--base-src``), its ``ceiling``, and ``ref`` unless ``--no-ref``;
    and the reference's executable (bench/.ref, installed on first use; None when skipped or missing)."""
    targets = ["ours", *(["base"] if args.base_src else []), ceiling]
    ref_bin = None if args.no_ref else ensure_reference(argparse.Namespace(ref_bin=None, ref_dir=str(HERE / ".ref")))
    return targets + (["ref"] if ref_bin is not None else []), ref_bin


def run_interleaved(
    targets: list[str], runs: int, one: Callable[[str], dict[str, Any]], describe: Callable[[dict[str, Any]], str]
) -> dict[str, list[dict[str, Any]]]:
    """``one(target)`` for every target, ``runs`` times, interleaved (the order flips every run); each run logged."""
    results: dict[str, list[dict[str, Any]]] = {t: [] for t in targets}
    for run in range(runs):
        for target in interleaved(targets, run):
            res = one(target)
            results[target].append(res)
            log(f"run {run + 1} {target}: " + (describe(res) if res.get("ok") else str(res.get("error"))))
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-gib", type=float, default=4.0, help="bytes per stream in GiB (default 4)")
    parser.add_argument("--runs", type=int, default=3, help="runs per target, interleaved (default 3)")
    parser.add_argument("--only", default="1,2,3,4,5,6,7,8,9,10,11,12,13", help="scenarios to run, e.g. 1,4")
    parser.add_argument("--small-count", type=int, default=5000, help="transfers in (4) (default 5000)")
    parser.add_argument("--small-pairs", type=int, default=50, help="pairs at a time in (4) (default 50)")
    parser.add_argument("--small-procs", type=int, default=2, help="client processes in (4) (default 2)")
    parser.add_argument("--waiting", type=int, default=5000, help="waiting senders in (5) (default 5000)")
    parser.add_argument("--many-streams", type=int, default=100, help="streams at once in (9) (default 100)")
    parser.add_argument("--many-size-mib", type=int, default=64, help="MiB per stream in (9) (default 64)")
    parser.add_argument("--parallel-streams", type=int, default=16, help="streams at once in (13) (default 16)")
    parser.add_argument("--parallel-size-mib", type=int, default=128, help="MiB per stream in (13) (default 128)")
    parser.add_argument("--h2-small-count", type=int, default=5000, help="transfers in (10) (default 5000)")
    parser.add_argument("--client-size-mib", type=int, default=256, help="MiB sent in (11) (default 256)")
    parser.add_argument("--scp-mb", type=int, default=50, help="MB sent by scp in (12) (default 50)")
    parser.add_argument(
        "--with-copy", action="store_true", help="(1), (2): also our server with splice/tee off (PIPING_SPLICE=0)"
    )
    parser.add_argument(
        "--h2-delayed-acks",
        action="store_true",
        help="(7): the light h2 sender keeps delayed ACKs while it waits for a window, as curl and h2load do"
        " (by default it ACKs at once: hyper's Nagle would otherwise stall the Rust server 40 ms a window)",
    )
    parser.add_argument("--no-ref", action="store_true", help="ours only: no reference (its columns stay empty)")
    parser.add_argument(
        "--base-src",
        type=Path,
        help="also run our server from this source tree (its src/, first on PYTHONPATH) as 'base', interleaved",
    )
    parser.add_argument(
        "--peers",
        help="the other Piping Servers beside the reference: all (those found; the default, but none with"
        " --no-ref), none, or a list (go,rust)",
    )
    parser.add_argument(
        "--floor",
        action="store_true",
        help="line (4) adds pure (our server from its sources: PIPING_PURE=1) and floor (bench/floor.py, the least"
        " relay on uvloop and httptools)",
    )
    parser.add_argument("--peers-dir", type=Path, default=PEERS_DIR, help=f"where they are (default {PEERS_DIR})")
    parser.add_argument(
        "--quick", action="store_true", help="smoke run: 32 MiB, 1 run, 200 transfers, 200 waiting, 10 x 4 MiB at once"
    )
    parser.add_argument("--profile", action="store_true", help="also py-spy our server during a chunked stream")
    parser.add_argument("--profile-only", action="store_true", help="only the py-spy profile")
    parser.add_argument(
        "--profile-mode", choices=["chunked", "length", "h2c", "h2"], default="chunked", help="upload to profile"
    )
    parser.add_argument("--profile-report", metavar="RAW", help="only summarise a py-spy raw (collapsed) file")
    parser.add_argument("--ref-dir", default=str(HERE / ".ref"), help="where npm installs the reference")
    parser.add_argument("--ref-bin", help="use this reference executable instead of installing one")
    parser.add_argument("--results", default=str(HERE / "results"), help="where JSON results and profiles go")
    parser.add_argument("--verbose", action="store_true", help="print every run's numbers")
    args = parser.parse_args(argv)
    if args.quick:
        args.size_gib, args.runs = 32 / 1024, 1
        args.small_count, args.waiting = 200, 200
        args.many_streams, args.many_size_mib, args.h2_small_count, args.client_size_mib = 10, 4, 200, 32
        args.scp_mb, args.parallel_streams, args.parallel_size_mib = 5, 4, 4
    if args.profile_report:
        print_profile_top(Path(args.profile_report))
        return 0
    only = {int(x) for x in args.only.split(",") if x.strip()}
    size = int(args.size_gib * GiB)
    runs = max(1, args.runs)

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, max(soft, 2 * args.waiting + 1000))
    if want > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))

    workdir = Path(tempfile.mkdtemp(prefix="piping-bench-"))
    shm = Path("/dev/shm") if Path("/dev/shm").is_dir() else workdir
    source = shm / f"piping-bench-{os.getpid()}.bin"
    with open(source, "wb") as f:
        pattern = (bytes(range(256)) * 4096)[:MiB]
        for _ in range(max(1, min(size, SENDFILE_SOURCE_MAX) // MiB)):
            f.write(pattern)
    atexit.register(lambda: source.unlink(missing_ok=True))
    atexit.register(lambda: shutil.rmtree(workdir, ignore_errors=True))

    ref_bin = ensure_reference(args) if not (args.profile_only or args.no_ref) else None
    ctx = Context(args=args, workdir=workdir, ref_bin=ref_bin, sendfile_source=source)
    if args.base_src is not None:
        log(f"base: our server from {check_base_src(args.base_src)}")
        ctx.base_src = args.base_src
    peers_spec = args.peers or ("none" if args.no_ref else "all")  # (--no-ref: ours alone, unless --peers says)
    ctx.peer_bins = {} if args.profile_only else find_peers(peers_spec, args.peers_dir)
    if ctx.peer_bins:
        log("peers: " + ", ".join(f"{name} ({path})" for name, path in ctx.peer_bins.items()))
    # every server line: ours, base, the reference; the peers' lines add them (no ?n= above 1 there)
    targets = ["ours", *(["base"] if ctx.base_src else []), *(["ref"] if ref_bin else [])]
    peers = list(ctx.peer_bins)
    columns = (["base"] if ctx.base_src else []) + peers
    floor = ["pure", "floor"] if args.floor else []  # line (4) only
    columns += floor

    if args.profile_only:
        run_profile(ctx, size, args.profile_mode)
        return 0

    if only & {7, 10}:
        ctx.h2_reason = probe_h2(ctx)
        if ctx.h2_reason:
            log(f"(7) n/a: {ctx.h2_reason}")

    rows: dict[str, Row] = {}
    raw: list[dict[str, Any]] = []

    def row(
        key: str,
        label: str,
        unit: str,
        target: str = "",
        fmt: str = "{:.0f}",
        single: bool = False,
        cols: list[str] | None = None,
    ) -> Row:
        """Declare a row; ``cols``: the columns beside the reference that measure it (default: base alone)."""
        if key not in rows:
            cols = (["base"] if ctx.base_src else []) if cols is None else cols
            rows[key] = Row(label, unit, target=target, fmt=fmt, single=single, others={c: [] for c in cols})
        return rows[key]

    def record(scenario: str, target: str, run: int, result: dict[str, Any]) -> bool:
        raw.append({"scenario": scenario, "target": target, "run": run, **result})
        if args.verbose or not result.get("ok") or result.get("hung"):
            shown = {k: (round(v, 3) if isinstance(v, float) else v) for k, v in result.items()}
            log(f"  {scenario:<22} {target:<7} run {run + 1}: {shown}")
        return bool(result.get("ok"))

    def add(key: str, target: str, value: float) -> None:
        r = rows[key]
        if target in ("ours", "ref"):
            (r.ours if target == "ours" else r.ref).append(value)
        else:
            r.others.setdefault(target, []).append(value)

    gib = size / GiB
    size_label = f"{gib:g} GiB" if gib >= 1 else f"{size // MiB} MiB"
    # declare the rows in table order
    for n, recv_n in ((1, 1), (2, 3)):
        if n not in only:
            continue
        for mode in ("chunked", "length"):
            name = "Content-Length" if mode == "length" else "chunked"
            k = f"{n}-{mode}"
            row(k, f"({n}) {size_label} {name}" + (", n=3" if recv_n > 1 else ""), "section")
            cols = columns if n == 1 else None  # (the peers have no ?n= above 1)
            row(k + "-mbs", "throughput", "MB/s", "" if n == 1 else ">= 1.5", cols=cols)
            if n == 1 and 6 in only:  # the ceiling beside the line: the best bare relay of the same run
                row(f"1-{mode}-ceil", "ceiling: best bare relay, same run", "MB/s", single=True)
                row(f"1-{mode}-frac", "throughput / ceiling", "%", ">= 95%", "{:.0%}", True)
            if n == 1:
                row(k + "-cpu", "server CPU per GiB", "s", "<= 0.5", "{:.2f}", cols=cols)
                if 6 in only:
                    row(f"1-{mode}-cpurel", "server CPU per GiB / the splice relay's", "x", "<= 1.25", "{:.2f}", True)
                    if mode == "chunked":
                        row("1-chunked-cpucheck", "server CPU per GiB / the checking relay's", "x", "", "{:.2f}", True)
                row(k + "-rss", "server peak RSS", "MiB", "", "{:.1f}", cols=cols)
                row(k + "-grow", "server RSS growth during the stream", "MiB", "", "{:.1f}", cols=cols)
                row(k + "-ccpu", "light clients' CPU per GiB (all)", "s", "", "{:.2f}", cols=cols)
            else:
                row(k + "-cpu", "server CPU per GiB", "s", "<= 0.5", "{:.2f}")
                row(k + "-rss", "server peak RSS", "MiB", "", "{:.1f}")
            if args.with_copy:
                row(k + "-copy-mbs", "copying path (PIPING_SPLICE=0): throughput", "MB/s", single=True)
                row(k + "-copy-cpu", "copying path (PIPING_SPLICE=0): server CPU per GiB", "s", "", "{:.2f}", True)
    if 3 in only:
        row("3", f"(3) {size_label} curl -T - -> curl -o /dev/null", "section")
        row("3-mbs", "throughput", "MB/s", ">= 1.0")
        row("3-cpu", "server CPU per GiB", "s", "", "{:.2f}")
    if 4 in only:
        row("4", f"(4) {args.small_count} x 1 KiB, {args.small_pairs} pairs at a time", "section")
        row("4-tps", "transfers per second", "1/s", ">= 2.0", cols=columns)
        row("4-cpu", "server CPU per transfer", "ms", "<= 0.5", "{:.3f}", cols=columns)
        row("4-p50", "latency p50", "ms", "", "{:.1f}", cols=columns)
        row("4-p99", "latency p99", "ms", "<= 1.0", "{:.1f}", cols=columns)
        row("4-ccpu", "light clients' CPU per transfer (all)", "ms", "", "{:.3f}", cols=columns)
        row("4-hung", f"transfers unanswered after {SMALL_STALL_S:g} s (not in the rate)", "n", cols=columns)
    if 5 in only:
        row("5", f"(5) {args.waiting} senders waiting, no receiver", "section")
        row("5-kib", "server RSS per waiting connection", "KiB", "<= 1.0", "{:.1f}")
    if 6 in only:
        row("6", "(6) ceiling: same light clients through a bare relay, no HTTP", "section")
        for relay in ("splice", "socat"):
            for mode in ("chunked", "length"):
                sender = "sendall 64 KiB" if mode == "chunked" else "sendfile"
                row(f"6-{relay}-{mode}", f"{relay} relay, {sender}", "MB/s", single=True)
                row(f"6-{relay}-{mode}-cpu", f"{relay} relay, {sender}: relay CPU/GiB", "s", "", "{:.2f}", True)
        label = "splice relay checking chunk heads, chunked 64 KiB"
        row("6-splice-check-chunked", label, "MB/s", single=True)
        row("6-splice-check-chunked-cpu", label + ": relay CPU/GiB", "s", "", "{:.2f}", True)
    if 7 in only:
        row(
            "7",
            "(7) HTTP/2: " + (f"n/a ({ctx.h2_reason})" if ctx.h2_reason else f"{size_label}, light h2 clients"),
            "section",
        )
        if not ctx.h2_reason:
            row("7-h2-mbs", "h2 over TLS: throughput", "MB/s", ">= 2.0", cols=columns)
            row("7-h2-cpu", "h2 over TLS: server CPU per GiB", "s", "<= 0.5", "{:.2f}", cols=columns)
            # (the peers' columns: their own h2c)
            row("7-h2c-mbs", "h2c (ref column: our HTTP/1 plain): throughput", "MB/s", cols=peers)
            row("7-h2c-cpu", "h2c (ref column: our HTTP/1 plain): CPU per GiB", "s", "", "{:.2f}", cols=peers)
            row("7-curl", "h2 over TLS, curl --http2 clients (client-bound)", "MB/s", ">= 1.0", cols=peers)
    if 8 in only:
        row("8", f"(8) {size_label} HTTP/1.1 over TLS, light clients, chunked", "section")
        row("8-mbs", "throughput", "MB/s", ">= 1.5")
        row("8-cpu", "server CPU per GiB", "s", "<= 0.5", "{:.2f}")
    if 9 in only:
        row("9", f"(9) {args.many_streams} streams of {args.many_size_mib} MiB at once, 2 client processes", "section")
        row("9-mbs", "aggregate throughput", "MB/s", ">= 2.0", cols=columns)
        row("9-cpu", "server CPU per GiB", "s", "<= 0.5", "{:.2f}", cols=columns)
        row("9-p50", "time to first byte p50", "ms", "", "{:.1f}", cols=columns)
        row("9-p99", "time to first byte p99", "ms", "<= 1.0", "{:.1f}", cols=columns)
    if 10 in only:
        conns, pairs = 2 * args.small_procs, args.small_pairs
        row("10", f"(10) {args.h2_small_count} x 1 KiB over h2 (TLS), {conns} connections, {pairs} pairs", "section")
        if ctx.h2_reason:
            row("10-na", f"  n/a ({ctx.h2_reason})", "section")
        row("10-tps", "transfers per second", "1/s", ">= 2.0", cols=columns)
        row("10-cpu", "server CPU per transfer", "ms", "", "{:.3f}", cols=columns)
        row("10-p99", "latency p99", "ms", "<= 1.0", "{:.1f}", cols=columns)
        row("10-hung", f"transfers unanswered after {SMALL_STALL_S:g} s (not in the rate)", "n", cols=columns)
    if 11 in only:
        row("11", f"(11) the client, {args.client_size_mib} MiB of random bytes, our server", "section")
        # (the client's lines: client_ab.py compares two trees of the client)
        row("11-piping", "piping send -> get (ref column: curl -> curl)", "MB/s", ">= 1.0", cols=[])
        row("11-stdin", "cat | piping send -> get (ref: cat | curl -T -)", "MB/s", ">= 1.0", cols=[])
        row("11-pass", "piping --pass (ref column: piping)", "MB/s", ">= 0.6", cols=[])
        if shutil.which("gpg"):
            row("11-gpg", "piping --pass (ref column: gpg -c|curl, curl|gpg -d)", "MB/s", cols=[])

    sshd = start_sshd(ctx) if 12 in only else None
    if 12 in only:
        na = "" if sshd else ": n/a (no sshd)"
        row("12", f"(12) scp of {args.scp_mb} MB through a tunnel over our server{na}", "section")
        if sshd:
            row("12-scp", "piping tunnel (ref column: curl + socat one-liners)", "MB/s", ">= 1.0", cols=[])

    if 13 in only:
        streams_n, stream_mib = args.parallel_streams, args.parallel_size_mib
        row("13", f"(13) {streams_n} streams of {stream_mib} MiB at once, 2 client processes", "section")
        row("13-mbs", "aggregate throughput", "MB/s", "", cols=columns)
        row("13-cpu", "server CPU per GiB", "s", "", "{:.2f}", cols=columns)
        row("13-p99", "time to first byte p99", "ms", "", "{:.1f}", cols=columns)

    started = time.monotonic()
    for run in range(runs):
        log(f"run {run + 1}/{runs}")
        for n, recv_n in ((1, 1), (2, 3)):
            if n not in only:
                continue
            for mode in ("chunked", "length"):
                stream_targets = targets + (peers if n == 1 else [])
                stream_targets += ["splice", "socat"] if n == 1 and 6 in only else []
                stream_targets += ["splice-check"] if n == 1 and 6 in only and mode == "chunked" else []
                stream_targets += ["ours-copy"] if args.with_copy else []
                for target in interleaved(stream_targets, run):
                    res = guarded(run_stream, ctx, target, size, mode, recv_n)
                    if not record(f"{n}-{mode}", target, run, res):
                        continue
                    k = f"{n}-{mode}"
                    if target == "ours-copy":
                        rows[k + "-copy-mbs"].ours.append(res["mb_s"])
                        rows[k + "-copy-cpu"].ours.append(res["cpu_per_gib"])
                        continue
                    if target in ("splice", "socat", "splice-check"):
                        rows[f"6-{target}-{mode}"].ours.append(res["mb_s"])
                        rows[f"6-{target}-{mode}-cpu"].ours.append(res["cpu_per_gib"])
                        continue
                    add(k + "-mbs", target, res["mb_s"])
                    add(k + "-cpu", target, res["cpu_per_gib"])
                    add(k + "-rss", target, res["peak_rss_mib"])
                    if n == 1:
                        add(k + "-grow", target, res["rss_growth_mib"])
                        add(k + "-ccpu", target, res["client_cpu_per_gib"])
        if 6 in only and 1 not in only:
            for mode in ("chunked", "length"):
                relays = ["splice", "socat"] + (["splice-check"] if mode == "chunked" else [])
                for target in interleaved(relays, run):
                    res = guarded(run_stream, ctx, target, size, mode, 1)
                    if record(f"6-{mode}", target, run, res):
                        rows[f"6-{target}-{mode}"].ours.append(res["mb_s"])
                        rows[f"6-{target}-{mode}-cpu"].ours.append(res["cpu_per_gib"])
        if 3 in only:
            for target in interleaved(targets, run):
                res = guarded(run_curl, ctx, target, size)
                if record("3-curl", target, run, res):
                    add("3-mbs", target, res["mb_s"])
                    add("3-cpu", target, res["cpu_per_gib"])
        if 4 in only:
            for target in interleaved(targets + peers + floor, run):
                res = guarded(run_small, ctx, target, args.small_count, args.small_pairs, args.small_procs)
                record("4-small", target, run, res)
                if "tps" in res:
                    add("4-tps", target, res["tps"])
                    add("4-cpu", target, res["cpu_ms_per_transfer"])
                    add("4-p50", target, res["p50_ms"])
                    add("4-p99", target, res["p99_ms"])
                    add("4-ccpu", target, res["client_cpu_s"] / res["transfers"] * 1000)
                    add("4-hung", target, res["hung"])
        if 5 in only:
            for target in interleaved(targets, run):
                res = guarded(run_waiting, ctx, target, args.waiting)
                if record("5-waiting", target, run, res):
                    add("5-kib", target, res["kib_per_conn"])
        if 7 in only and not ctx.h2_reason:
            for target in interleaved(targets + peers, run):
                res = guarded(run_stream, ctx, target, size, "chunked", 1, "h2")
                if record("7-h2", target, run, res):
                    add("7-h2-mbs", target, res["mb_s"])
                    add("7-h2-cpu", target, res["cpu_per_gib"])
            # the h2c row: ours, our HTTP/1 plain in the reference's column, each peer's h2c in its own
            h2c_runs = [("ours", "h2c"), ("ours", "h1"), *((peer, "h2c") for peer in peers)]
            for target, transport in interleaved(h2c_runs, run):
                res = guarded(run_stream, ctx, target, size, "chunked", 1, transport)
                if record(f"7-{transport}", target, run, res):
                    side = "ref" if transport == "h1" else target
                    add("7-h2c-mbs", side, res["mb_s"])
                    add("7-h2c-cpu", side, res["cpu_per_gib"])
            for target in interleaved(targets + peers, run):
                res = guarded(run_curl, ctx, target, size, "h2")
                if record("7-curl", target, run, res):
                    add("7-curl", target, res["mb_s"])
        if 8 in only:
            for target in interleaved(targets, run):
                res = guarded(run_stream, ctx, target, size, "chunked", 1, "h1tls")
                if record("8-h1tls", target, run, res):
                    add("8-mbs", target, res["mb_s"])
                    add("8-cpu", target, res["cpu_per_gib"])
        if 9 in only:
            for target in interleaved(targets + peers, run):
                res = guarded(run_many, ctx, target, args.many_streams, args.many_size_mib * MiB)
                if record("9-many", target, run, res):
                    add("9-mbs", target, res["mb_s"])
                    add("9-cpu", target, res["cpu_per_gib"])
                    add("9-p50", target, res["ttfb_p50_ms"])
                    add("9-p99", target, res["ttfb_p99_ms"])
        if 13 in only:
            for target in interleaved(targets + peers, run):
                res = guarded(run_many, ctx, target, args.parallel_streams, args.parallel_size_mib * MiB)
                if record("13-parallel", target, run, res):
                    add("13-mbs", target, res["mb_s"])
                    add("13-cpu", target, res["cpu_per_gib"])
                    add("13-p99", target, res["ttfb_p99_ms"])
        if 10 in only and not ctx.h2_reason:
            for target in interleaved(targets + peers, run):
                res = guarded(run_h2small, ctx, target, args.h2_small_count, args.small_pairs, args.small_procs)
                record("10-h2small", target, run, res)
                if "tps" in res:
                    add("10-tps", target, res["tps"])
                    add("10-cpu", target, res["cpu_ms_per_transfer"])
                    add("10-p99", target, res["p99_ms"])
                    add("10-hung", target, res["hung"])
        if sshd is not None:
            for kind in interleaved(["piping", "socat"], run):
                res = guarded(run_scp, ctx, sshd, kind, args.scp_mb * MB)
                if record(f"12-scp-{kind}", "ours", run, res):
                    add("12-scp", "ours" if kind == "piping" else "ref", res["mb_s"])
        if 11 in only:
            kinds = ["piping", "curl", "piping-stdin", "curl-stdin", "piping-pass"]
            kinds += ["gpg"] if shutil.which("gpg") else []
            client_mbs: dict[str, float] = {}
            for kind in interleaved(kinds, run):
                res = guarded(run_client_line, ctx, kind, args.client_size_mib * MiB)
                if record(f"11-{kind}", "ours", run, res):
                    client_mbs[kind] = res["mb_s"]
            for key, ours_kind, ref_kind in (
                ("11-piping", "piping", "curl"),
                ("11-stdin", "piping-stdin", "curl-stdin"),
                ("11-pass", "piping-pass", "piping"),
                ("11-gpg", "piping-pass", "gpg"),
            ):
                if key in rows and ours_kind in client_mbs and ref_kind in client_mbs:
                    rows[key].ours.append(client_mbs[ours_kind])
                    rows[key].ref.append(client_mbs[ref_kind])

    if sshd:
        stop(sshd.proc)

    # (1) beside the ceiling: medians against the best relay's median, CPU against the splice relay's
    for mode in ("chunked", "length"):
        key = f"1-{mode}-frac"
        if key in rows:
            best = max(
                (m for relay in ("splice", "socat") if (m := med(rows[f"6-{relay}-{mode}"].ours)) is not None),
                default=None,
            )
            ours = med(rows[f"1-{mode}-mbs"].ours)
            if best:
                rows[f"1-{mode}-ceil"].ours = [best]
            if best and ours is not None:
                rows[key].ours = [ours / best]
            relay_cpu, ours_cpu = med(rows[f"6-splice-{mode}-cpu"].ours), med(rows[f"1-{mode}-cpu"].ours)
            if relay_cpu and ours_cpu is not None:
                rows[f"1-{mode}-cpurel"].ours = [ours_cpu / relay_cpu]
            check_cpu = med(rows["6-splice-check-chunked-cpu"].ours) if mode == "chunked" else None
            if check_cpu and ours_cpu is not None:
                rows["1-chunked-cpucheck"].ours = [ours_cpu / check_cpu]

    elapsed = time.monotonic() - started
    load = os.getloadavg()
    note = (
        f"medians of {runs} run(s) per target, interleaved; MB = 10^6 bytes; {elapsed:.0f} s; "
        f"load avg at end {load[0]:.2f} {load[1]:.2f}"
    )
    stamp = datetime.datetime.now().astimezone()
    print(
        f"\npiping-server bench, {stamp:%Y-%m-%d %H:%M %Z}, {platform.node()}, {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}, stream {size_label}, reference piping-server@{REF_VERSION}"
    )
    table = print_table(list(rows.values()), note, columns)
    if any(not r.get("ok") for r in raw):
        print("\nsome runs failed (see the log above and the JSON results); their numbers are left out")

    results = Path(args.results)
    results.mkdir(parents=True, exist_ok=True)
    out = results / f"bench-{stamp:%Y%m%d-%H%M%S}.json"
    out.write_text(json.dumps({"date": stamp.isoformat(), "argv": sys.argv[1:], "table": table, "runs": raw}, indent=1))
    log(f"raw results: {out}")

    if args.profile:
        run_profile(ctx, min(size, GiB), args.profile_mode)
    return 0


def _sigterm(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, _sigterm)
    sys.exit(main())
