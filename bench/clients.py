"""Light benchmark clients, each run as its own process by ``bench/run.py``.

They are written so that the server, not the client, is what limits a transfer:

* ``send``   one sender: pre-built 64 KiB chunked frames written with ``sock.sendall`` (as curl
             does), or a ``Content-Length`` body pushed with ``socket.sendfile`` from a file in
             /dev/shm, or the same bytes with no HTTP at all (``raw``/``rawfile``, for the ceiling);
* ``recv``   one receiver: ``recv_into`` a 1 MiB buffer, parse the response head, then either count
             bytes up to ``Content-Length`` or walk the chunk framing (one ``find`` per chunk header);
* ``relay``  a bare byte relay with no HTTP, ``splice(2)`` through a pipe (the ceiling);
* ``small``  many small transfers (1 KiB), ``concurrency`` sender/receiver pairs at a time,
             on raw non-blocking sockets driven by uvloop;
* ``h2send`` / ``h2recv``  the same as ``send``/``recv`` over HTTP/2 (TLS with ALPN h2, or h2c with
             prior knowledge): the ``h2`` library keeps the connection's state, but DATA frames are
             framed here as large as the peer allows (h2's ``send_data`` costs more per frame than
             the server it would measure), with h2's window accounting kept as ``send_data`` keeps it;
             the sender ACKs at once while it waits for a window (``--delayed-acks``: not);
* ``h2small`` many 1 KiB transfers over HTTP/2: many streams on a few connections;
* ``multi``  many one-to-one streams at once in one process (non-blocking sockets, a selector):
             aggregate bytes and each receiver's time to first byte.

``send`` and ``recv`` take ``--tls`` (HTTP/1.1 over TLS, ALPN http/1.1).

Every client talks to 127.0.0.1 only, has a socket timeout and a total deadline, and prints
one JSON line on stdout with what it measured (monotonic clock: comparable across processes).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fcntl
import json
import os
import resource
import selectors
import signal
import socket
import ssl
import struct
import sys
import termios
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, cast

HOST = "127.0.0.1"
CHUNK = 64 * 1024
RECV_BUF = 1024 * 1024
#: What a sender's answer must hold for its transfer to count. Ours and the reference end with "[INFO] All
#: receiver(s) was/were received successfully."; the Go and Rust servers with "[INFO] Sent successfully!"
#: (bench/run.py passes ``--done-line`` for them). The receivers check their byte counts either way.
DONE_LINE = b"received successfully"
F_SETPIPE_SZ = 1031


class ClientError(Exception):
    pass


def _cpu_self() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


_cpu_mark = 0.0


def _mark_cpu() -> None:
    """Client CPU is counted from here on (the interpreter's start-up is left out)."""
    global _cpu_mark
    _cpu_mark = _cpu_self()


def _emit(result: dict[str, Any]) -> None:
    result["client_cpu_s"] = round(_cpu_self() - _cpu_mark, 4)
    # written to the descriptor itself: after uvloop.run, sys.stdout lost what a full pipe did not take (64 KiB)
    sys.stdout.flush()
    line = (json.dumps(result) + "\n").encode()
    while line:
        line = line[os.write(sys.stdout.fileno(), line) :]


def _emit_send(t_start: float, t_sent: float, ok: bool, tail: str) -> None:
    """A sender's record (HTTP/1 and HTTP/2 alike); ``tail``: the end of the server's answer, kept when not ok."""
    _emit(
        {
            "role": "send",
            "t_start": t_start,
            "t_sent": t_sent,
            "t_end": time.monotonic(),
            "ok": ok,
            "response_tail": "" if ok else tail,
        }
    )


def _connect(port: int, timeout: float) -> socket.socket:
    """Connect, retrying for a while when refused (socat listens on its second port only once busy)."""
    give_up = time.monotonic() + 10.0
    while True:
        try:
            sock = socket.create_connection((HOST, port), timeout=timeout)
            break
        except ConnectionRefusedError:
            if time.monotonic() > give_up:
                raise
            time.sleep(0.01)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def _tls(sock: socket.socket, alpn: str) -> ssl.SSLSocket:
    """TLS over ``sock`` (the bench's self-signed certificate is not checked), with one ALPN protocol."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols([alpn])
    tls = ctx.wrap_socket(sock, server_hostname=HOST)
    if tls.selected_alpn_protocol() not in (alpn, None if alpn == "http/1.1" else alpn):
        raise ClientError(f"TLS ALPN chose {tls.selected_alpn_protocol()!r}, wanted {alpn}")
    return tls


def _pattern() -> bytes:
    # any bytes do; a fixed non-zero pattern keeps runs comparable
    return (bytes(range(256)) * (CHUNK // 256))[:CHUNK]


# --- sender ------------------------------------------------------------------------------------------


def _read_until_end(sock: socket.socket, deadline: float) -> bytes:
    """Read a (small) response to its end: EOF, or the last chunk of a chunked body."""
    data = bytearray()
    while time.monotonic() < deadline:
        try:
            part = sock.recv(65536)
        except TimeoutError:
            break
        if not part:
            break
        data += part
        if data.endswith(b"\r\n0\r\n\r\n"):
            break
    return bytes(data)


def run_send(args: argparse.Namespace) -> None:
    size: int = args.size
    deadline = time.monotonic() + args.deadline
    sock = _connect(args.port, args.timeout)
    if args.sockbuf:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, args.sockbuf)
    if args.tls:
        sock = _tls(sock, "http/1.1")
    http = args.mode in ("chunked", "length")
    if args.mode in ("chunked",):
        head = f"POST {args.path} HTTP/1.1\r\nHost: {HOST}:{args.port}\r\nTransfer-Encoding: chunked\r\n"
    elif args.mode == "length":
        head = f"POST {args.path} HTTP/1.1\r\nHost: {HOST}:{args.port}\r\nContent-Length: {size}\r\n"
    if http:
        head += "Content-Type: application/octet-stream\r\nConnection: close\r\n\r\n"
        sock.sendall(head.encode())
    _mark_cpu()
    t_start = time.monotonic()
    if args.mode in ("chunked", "raw"):
        chunk = _pattern()
        full = (b"%x\r\n" % CHUNK + chunk + b"\r\n") if args.mode == "chunked" else chunk
        count, rest = divmod(size, CHUNK)
        sendall = sock.sendall
        for i in range(count):
            sendall(full)
            if i & 1023 == 0 and time.monotonic() > deadline:
                raise ClientError("sender deadline passed")
        if rest:
            sendall((b"%x\r\n" % rest + chunk[:rest] + b"\r\n") if args.mode == "chunked" else chunk[:rest])
        if args.mode == "chunked":
            sendall(b"0\r\n\r\n")
    else:  # length / rawfile: sendfile from a file, as many times as needed
        with open(args.file, "rb") as f:
            file_size = os.fstat(f.fileno()).st_size
            remaining = size
            while remaining > 0:
                if time.monotonic() > deadline:
                    raise ClientError("sender deadline passed")
                count = min(file_size, remaining)
                sent = sock.sendfile(f, 0, count)
                if sent != count:
                    raise ClientError(f"sendfile sent {sent} of {count}")
                remaining -= count
    t_sent = time.monotonic()
    response = b""
    if http:
        response = _read_until_end(sock, deadline)
    else:
        sock.shutdown(socket.SHUT_WR)
        with contextlib.suppress(OSError):
            sock.recv(1)
    sock.close()
    ok = True
    if http:
        ok = response.startswith(b"HTTP/1.1 200") and DONE_LINE in response
    _emit_send(t_start, t_sent, ok, response[-200:].decode("latin-1"))


# --- receiver ----------------------------------------------------------------------------------------


def run_recv(args: argparse.Namespace) -> None:
    size: int = args.size
    deadline = time.monotonic() + args.deadline
    sock = _connect(args.port, args.timeout)
    if args.sockbuf:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, args.sockbuf)
    if args.tls:
        sock = _tls(sock, "http/1.1")
    buf = bytearray(RECV_BUF)
    mv = memoryview(buf)
    recv_into = sock.recv_into
    _mark_cpu()
    t_connected = time.monotonic()
    status = 0
    framing = "raw"
    payload = 0
    error = ""
    if args.mode == "raw":
        pos = filled = 0
        if args.announce:
            print("connected", flush=True)
    else:
        sock.sendall(f"GET {args.path} HTTP/1.1\r\nHost: {HOST}:{args.port}\r\nConnection: close\r\n\r\n".encode())
        if args.announce:
            print("connected", flush=True)
        filled = 0
        while True:
            n = recv_into(mv[filled:])
            if n == 0:
                raise ClientError("EOF before the response head")
            filled += n
            end = buf.find(b"\r\n\r\n", 0, filled)
            if end >= 0:
                break
            if filled >= len(buf):
                raise ClientError("response head too large")
        head = bytes(buf[:end]).decode("latin-1").split("\r\n")
        status = int(head[0].split(" ", 2)[1])
        headers = {}
        for line in head[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        pos = end + 4
        if "content-length" in headers:
            framing = "length"
            if int(headers["content-length"]) != size:
                error = f"Content-Length {headers['content-length']} != {size}"
        elif "chunked" in headers.get("transfer-encoding", "").lower():
            framing = "chunked"
        else:
            framing = "eof"
    t_first = 0.0
    if framing in ("raw", "length", "eof"):
        payload = filled - pos
        if payload:
            t_first = time.monotonic()
        while payload < size:
            try:
                n = recv_into(mv)
            except TimeoutError:
                error = error or "receiver timed out"
                break
            if n == 0:
                break
            if not t_first:
                t_first = time.monotonic()
            payload += n
            if payload & 0xFFFFFFF < n and time.monotonic() > deadline:  # about every 256 MiB
                error = "receiver deadline passed"
                break
    else:
        # chunk framing: ``skip`` bytes of data (+ CRLF) remain in the current chunk
        skip = 0
        done = False
        find = buf.find
        while not done:
            if pos < filled:
                if skip:
                    avail = filled - pos
                    if avail >= skip:
                        pos += skip
                        skip = 0
                    else:
                        skip -= avail
                        pos = filled
                    continue
                eol = find(b"\r\n", pos, filled)
                if eol >= 0:
                    if not t_first:
                        t_first = time.monotonic()
                    n = int(bytes(buf[pos:eol]).split(b";", 1)[0], 16)
                    pos = eol + 2
                    if n == 0:
                        done = True
                        break
                    payload += n
                    skip = n + 2
                    continue
                # a header split across reads: keep its start
                rest = filled - pos
                buf[0:rest] = buf[pos:filled]
                pos, filled = 0, rest
            else:
                pos = filled = 0
            try:
                n = recv_into(mv[filled:])
            except TimeoutError:
                error = "receiver timed out"
                break
            if n == 0:
                error = "EOF before the last chunk"
                payload -= max(0, skip - 2)
                break
            filled += n
            if time.monotonic() > deadline:
                error = "receiver deadline passed"
                break
    t_end = time.monotonic()
    sock.close()
    if not error and payload != size:
        error = f"received {payload} bytes, expected {size}"
    _emit(
        {
            "role": "recv",
            "status": status,
            "framing": framing,
            "bytes": payload,
            "t_connected": t_connected,
            "t_first": t_first,
            "t_end": t_end,
            "ok": not error and (status == 200 or args.mode == "raw"),
            "error": error,
        }
    )


# --- ceiling: a bare splice relay --------------------------------------------------------------------


def _relay_listeners(args: argparse.Namespace) -> list[socket.socket]:
    """A relay's two listening sockets (port A: the sender, port B: the receiver), bounded in time; says ready."""
    signal.alarm(int(args.deadline))  # bounded: SIGALRM ends the process
    listeners = []
    for port in (args.port_a, args.port_b):
        ls = socket.socket()
        ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        ls.bind((HOST, port))
        ls.listen(1)
        listeners.append(ls)
    print("ready", flush=True)
    return listeners


def run_relay(args: argparse.Namespace) -> None:
    listeners = _relay_listeners(args)
    a, _ = listeners[0].accept()
    b, _ = listeners[1].accept()
    r, w = os.pipe()
    with contextlib.suppress(OSError):
        fcntl.fcntl(w, F_SETPIPE_SZ, RECV_BUF)
    total = 0
    splice = os.splice
    fa, fb = a.fileno(), b.fileno()
    while True:
        n = splice(fa, w, RECV_BUF)
        if n == 0:
            break
        total += n
        while n:
            n -= splice(r, fb, n)
    b.shutdown(socket.SHUT_WR)
    a.close()
    b.close()
    _emit({"role": "relay", "bytes": total})


# --- the ceiling of a relay that checks chunk framing ---------------------------------------------------

SO_PEEK_OFF = getattr(socket, "SO_PEEK_OFF", 42)
_HEXDIGITS = frozenset(b"0123456789abcdefABCDEF")


def _read_head(sock: socket.socket) -> None:
    """Read (and drop) one HTTP head, byte by byte: nothing past it is taken from the socket."""
    head = b""
    while not head.endswith(b"\r\n\r\n"):
        byte = sock.recv(1)
        if not byte:
            raise ConnectionError("closed inside the request head")
        head += byte


def _chunk_framing(seen: bytes, after_data: bool) -> tuple[int, int] | None:
    """(framing length, chunk size) at the start of ``seen``; None: incomplete. Size 0: the last chunk."""
    pos = 2 if after_data else 0
    if after_data and seen[:2] != b"\r\n":
        if len(seen) < 2:
            return None
        raise ValueError("chunk data longer than its size")
    end = seen.find(b"\r\n", pos)
    if end < 0:
        return None
    digits = seen[pos:end]
    if not digits or len(digits) > 16 or not _HEXDIGITS.issuperset(digits):
        raise ValueError("bad chunk size")
    size = int(digits, 16)
    if size:
        return end + 2, size
    return (end + 4, 0) if seen[end + 2 : end + 4] == b"\r\n" else None  # no trailers here


def run_chunk_relay(args: argparse.Namespace) -> None:
    """A bare relay of one chunked upload that checks every chunk head before passing it on, as a server must.

    The receiver (port B) sends a GET and gets a chunked 200; the sender (port A) posts a chunked body and
    gets a 200 that says all was received. Between them: no parsing but the chunk framing, checked the way
    our server's splice path checks it (the heads queued in the socket peeked in place with SO_PEEK_OFF,
    the checked run spliced through a pipe in one call). What this costs is the least any server that
    validates the framing it passes on can cost here.
    """
    listeners = _relay_listeners(args)
    b, _ = listeners[1].accept()
    _read_head(b)
    a, _ = listeners[0].accept()
    _read_head(a)
    b.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
    a.setblocking(False)
    r, w = os.pipe()
    with contextlib.suppress(OSError):
        fcntl.fcntl(w, F_SETPIPE_SZ, RECV_BUF)
    fa, fb = a.fileno(), b.fileno()
    sel = selectors.DefaultSelector()
    sel.register(fa, selectors.EVENT_READ)
    checked = 0  # bytes at the head of the socket whose framing is checked (data may still be coming)
    after_data = False
    last = False
    in_pipe = total = 0
    queued = bytearray(4)
    while not (last and not checked and not in_pipe):
        fcntl.ioctl(fa, termios.FIONREAD, queued)
        available = int.from_bytes(queued, sys.byteorder, signed=True)
        while not last and checked < available and checked < RECV_BUF:
            a.setsockopt(socket.SOL_SOCKET, SO_PEEK_OFF, checked)
            framing = _chunk_framing(a.recv(64, socket.MSG_PEEK), after_data)
            if framing is None:
                break
            length, size = framing
            checked += length + size
            after_data, last = size > 0, size == 0
        moved = 0
        if checked and in_pipe < RECV_BUF:
            with contextlib.suppress(BlockingIOError):  # what was checked has not all arrived yet
                moved = os.splice(fa, w, min(checked, RECV_BUF - in_pipe))
            checked -= moved
            in_pipe += moved
            total += moved
        if in_pipe and (in_pipe >= RECV_BUF // 2 or not moved):
            in_pipe -= os.splice(r, fb, in_pipe)
        elif not moved and not sel.select(args.timeout):
            raise TimeoutError("the sender went quiet")
    a.setblocking(True)
    body = b"[INFO] All receiver(s) was/were received successfully.\n"
    a.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
    b.shutdown(socket.SHUT_WR)
    a.close()
    b.close()
    _emit({"role": "relay", "bytes": total})


# --- many small transfers ----------------------------------------------------------------------------


def _retrieved(both: asyncio.Future[Any]) -> None:
    """Mark a cancelled ``gather``'s error as seen: cancelled by ``wait_for`` (a timeout, or a hung pair
    cancelled by ``_pairs``), it ends with an error that nobody reads, which asyncio would print."""
    if both.done() and not both.cancelled():
        both.exception()


async def _pairs(
    args: argparse.Namespace,
    one: Callable[[int], Awaitable[bool]],
    role: str,
    latencies: list[float],
    failures: list[str],
) -> dict[str, Any]:
    """Run ``one(i)`` for ``i`` in ``range(args.count)``, ``args.concurrency`` at a time; sum up the result.

    ``one`` returns whether its transfer succeeded (a bad answer it notes in ``failures`` itself);
    an exception is a failure. With ``args.stall`` (seconds), a pair that has not ended by then gives
    its place to the next one and goes on alone until its own ``args.timeout``: a server that loses a
    rendezvous (the Rust server does, now and then: bench/README.md, "CPU per small transfer, fourth
    round") then does not keep a place idle for the rest of the run. A pair still open ``args.stall``
    seconds after every other ended is cancelled and counted as ``hung``, apart from ``failed``. The
    run's end is when the last transfer that succeeded ended, so that waiting for the hung ones is
    not counted in the rate.
    """
    loop = asyncio.get_running_loop()
    places = asyncio.Semaphore(args.concurrency)
    tasks: set[asyncio.Task[None]] = set()
    t_last = 0.0

    async def pair(i: int) -> None:
        nonlocal t_last
        held = True

        def give_place() -> None:
            nonlocal held
            if held:
                held = False
                places.release()

        timer = loop.call_later(args.stall, give_place) if args.stall > 0 else None
        try:
            if await one(i):
                t_last = time.monotonic()
        except (OSError, TimeoutError, ClientError) as exc:
            failures.append(f"{i}: {type(exc).__name__} {exc}")
        finally:
            if timer is not None:
                timer.cancel()
            give_place()

    deadline = time.monotonic() + args.deadline
    _mark_cpu()
    t_start = time.monotonic()
    for i in range(args.count):
        await places.acquire()
        if time.monotonic() > deadline:
            places.release()
            break
        task = loop.create_task(pair(i))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    for _ in range(args.concurrency):  # every pair has ended or given its place
        await places.acquire()
    hung = 0
    if tasks:
        _, pending = await asyncio.wait(set(tasks), timeout=args.stall)
        hung = len(pending)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
    result = _small_result(role, t_start, t_last or time.monotonic(), latencies, failures)
    result["hung"] = hung
    return result


async def _small(args: argparse.Namespace) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    body = b"x" * args.size
    addr = (HOST, args.port)
    latencies: list[float] = []
    failures: list[str] = []

    async def exchange(request: bytes, want_body: int) -> tuple[float, bytes]:
        """Send ``request``, read to EOF; return when ``want_body`` body bytes had arrived and the response."""
        sock = socket.socket()
        sock.setblocking(False)
        try:
            await loop.sock_connect(sock, addr)
            await loop.sock_sendall(sock, request)
            data = bytearray()
            t_body = 0.0
            head_end = -1
            while True:
                part = await loop.sock_recv(sock, 65536)
                if not part:
                    break
                data += part
                if head_end < 0:
                    head_end = data.find(b"\r\n\r\n")
                if not t_body and head_end >= 0 and len(data) - head_end - 4 >= want_body:
                    t_body = time.monotonic()
            return t_body, bytes(data)
        finally:
            sock.close()

    async def one(i: int) -> bool:
        path = f"/{args.prefix}-{i}"
        recv_req = f"GET {path} HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n".encode()
        send_req = (
            f"POST {path} HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: {args.size}\r\n"
            "Content-Type: application/octet-stream\r\nConnection: close\r\n\r\n"
        ).encode() + body
        t0 = time.monotonic()
        both = asyncio.gather(exchange(recv_req, args.size), exchange(send_req, 0))
        try:
            (t_body, received), (_, sent) = await asyncio.wait_for(both, args.timeout)
        finally:
            _retrieved(both)
        if not received.startswith(b"HTTP/1.1 200") or not received.endswith(body) or not t_body:
            failures.append(f"{path}: bad receiver response {received[:80]!r}")
            return False
        if DONE_LINE not in sent:
            failures.append(f"{path}: bad sender response {sent[-80:]!r}")
            return False
        latencies.append(t_body - t0)
        return True

    return await _pairs(args, one, "small", latencies, failures)


def _small_result(
    role: str, t_start: float, t_end: float, latencies: list[float], failures: list[str]
) -> dict[str, Any]:
    """What a many-small-transfers client reports (HTTP/1.1 and HTTP/2 alike; run.py sums them up)."""
    return {
        "role": role,
        "t_start": t_start,
        "t_end": t_end,
        "latencies": latencies,
        "failures": failures[:20],
        "failed": len(failures),
    }


def _run_async(
    main: Callable[[argparse.Namespace], Coroutine[Any, Any, dict[str, Any]]], args: argparse.Namespace
) -> None:
    """Run ``main(args)`` on uvloop when it is installed (asyncio's own loop otherwise) and print its result."""
    try:
        import uvloop
    except ImportError:
        result = asyncio.run(main(args))
    else:
        result = uvloop.run(main(args))
    _emit(result)


def run_small(args: argparse.Namespace) -> None:
    _run_async(_small, args)


# --- HTTP/2: one stream with light clients -----------------------------------------------------------

#: What our h2 clients advertise: windows and frames as large as the protocol allows, so that the
#: server's own limits (not the client's) decide the frame sizes and how often windows are updated.
H2_WINDOW = 2**31 - 1
H2_MAX_FRAME = 2**24 - 1
_H2_DATA_HEAD = struct.Struct(">HBBBL")  # 24-bit length, type 0 (DATA), flags, stream id


class _H2:
    """A blocking HTTP/2 client connection: h2 keeps the state, this class moves the bytes."""

    def __init__(self, port: int, tls: bool, timeout: float, quickack: bool = False) -> None:
        import h2.config
        import h2.connection
        import h2.settings

        sock: socket.socket = _connect(port, timeout)
        if tls:
            sock = _tls(sock, "h2")
        self.sock = sock
        self.quickack = quickack
        self.scheme = b"https" if tls else b"http"
        self.authority = f"{HOST}:{port}".encode()
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding=None))
        codes = h2.settings.SettingCodes
        conn.local_settings = h2.settings.Settings(
            client=True,
            initial_values={
                codes.INITIAL_WINDOW_SIZE: H2_WINDOW,
                codes.MAX_FRAME_SIZE: H2_MAX_FRAME,
                codes.ENABLE_PUSH: 0,
            },
        )
        conn.max_inbound_frame_size = H2_MAX_FRAME  # valid from our SETTINGS on, before the ACK
        conn.initiate_connection()
        conn.increment_flow_control_window(H2_WINDOW - 65_535)
        self.conn = conn
        self.flush()

    def flush(self) -> None:
        data = self.conn.data_to_send()
        if data:
            self.sock.sendall(data)

    def request(self, method: bytes, path: str, end: bool) -> int:
        sid: int = self.conn.get_next_available_stream_id()
        headers = [
            (b":method", method),
            (b":scheme", self.scheme),
            (b":authority", self.authority),
            (b":path", path.encode()),
        ]
        if method == b"POST":
            headers.append((b"content-type", b"application/octet-stream"))
        self.conn.send_headers(sid, headers, end_stream=end)
        self.flush()
        return sid

    def events(self, nbytes: int = RECV_BUF) -> list[Any]:
        if self.quickack:
            # re-armed before every wait: the kernel leaves quick-ack mode by itself (tcp(7))
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
        data = self.sock.recv(nbytes)
        if not data:
            raise ClientError("the server closed the HTTP/2 connection")
        return list(self.conn.receive_data(data))


def _h2_window_update(stream_id: int, increment: int) -> bytes:
    """A WINDOW_UPDATE frame (RFC 9113 6.9)."""
    return struct.pack(">HBBBLL", 0, 4, 0x8, 0, stream_id, increment)


def _h2_check_end(event: Any, sid: int) -> None:
    import h2.events

    if isinstance(event, h2.events.StreamReset) and event.stream_id == sid:
        raise ClientError(f"stream reset by the server (code {event.error_code})")
    if isinstance(event, h2.events.ConnectionTerminated):
        raise ClientError(f"GOAWAY from the server (code {event.error_code})")


def run_h2send(args: argparse.Namespace) -> None:
    import h2.events

    size: int = args.size
    deadline = time.monotonic() + args.deadline
    # A sender that waits for a window ACKs what it reads at once (TCP_QUICKACK): a server with Nagle on
    # (hyper sets TCP_NODELAY off) holds a second small WINDOW_UPDATE until the first is ACKed, and a
    # delayed ACK then stalls every window for 40 ms, whatever the client (curl and h2load too).
    # --delayed-acks keeps the kernel's default, as an ordinary client has it.
    c = _H2(args.port, args.tls, args.timeout, quickack=not args.delayed_acks)
    conn = c.conn
    sid = c.request(b"POST", args.path, end=False)
    pattern = _pattern() * 16  # 1 MiB: frames are slices of it
    view = memoryview(pattern)
    pack = _H2_DATA_HEAD.pack
    response = bytearray()
    status = 0
    ended = False

    def handle(events: list[Any]) -> None:
        nonlocal status, ended
        for ev in events:
            _h2_check_end(ev, sid)
            if isinstance(ev, h2.events.ResponseReceived) and ev.stream_id == sid:
                status = int(dict(ev.headers)[b":status"])
            elif isinstance(ev, h2.events.DataReceived):
                if ev.stream_id == sid:
                    response.extend(ev.data)
                conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
            elif isinstance(ev, h2.events.StreamEnded) and ev.stream_id == sid:
                ended = True

    _mark_cpu()
    t_start = time.monotonic()
    remaining = size
    sendall = c.sock.sendall
    stream = conn.streams[sid]
    while remaining:
        window = min(conn.outbound_flow_control_window, stream.outbound_flow_control_window)
        if window <= 0:
            if time.monotonic() > deadline:
                raise ClientError("sender deadline passed")
            handle(c.events())
            c.flush()
            continue
        max_frame = conn.max_outbound_frame_size
        pieces: list[bytes | memoryview] = []
        batch = min(window, remaining, RECV_BUF)
        left = batch
        while left:
            n = min(left, max_frame, len(view))
            pieces.append(pack(n >> 8, n & 0xFF, 0, 0, sid))
            pieces.append(view[:n])
            left -= n
        sendall(b"".join(pieces))
        conn.outbound_flow_control_window -= batch
        stream.outbound_flow_control_window -= batch
        remaining -= batch
    conn.end_stream(sid)
    c.flush()
    t_sent = time.monotonic()
    while not ended and time.monotonic() < deadline:
        try:
            handle(c.events())
        except TimeoutError:
            break
        c.flush()
    c.sock.close()
    ok = status == 200 and ended and DONE_LINE in response
    _emit_send(t_start, t_sent, ok, f"status {status}: " + bytes(response[-200:]).decode("latin-1"))


def run_h2recv(args: argparse.Namespace) -> None:
    """One HTTP/2 receiver. DATA frames are walked here, not by h2 (its per-frame parsing and events
    would cost more than the server it measures): their payload is counted and skipped in the buffer.
    Every other frame (HEADERS, SETTINGS, PING, RST_STREAM, GOAWAY) goes through h2, which keeps the
    HPACK state and answers SETTINGS and PING. The windows we advertised (2^31 - 1) are given back
    by hand once half of them is used."""
    import h2.events

    size: int = args.size
    deadline = time.monotonic() + args.deadline
    c = _H2(args.port, args.tls, args.timeout)
    conn = c.conn
    _mark_cpu()
    t_connected = time.monotonic()
    sid = c.request(b"GET", args.path, end=True)
    if args.announce:
        print("connected", flush=True)
    buf = bytearray(RECV_BUF)
    mv = memoryview(buf)
    recv_into = c.sock.recv_into
    pos = filled = skip = 0
    status = payload = unacked = 0
    t_first = 0.0
    error = ""
    end_after_skip = ended = False
    while not ended:
        if skip:
            take = min(skip, filled - pos)
            pos += take
            skip -= take
            if not skip and end_after_skip:
                break
            if pos < filled:
                continue
        elif filled - pos >= 9:
            length = int.from_bytes(buf[pos : pos + 3], "big")
            kind, flags = buf[pos + 3], buf[pos + 4]
            stream = int.from_bytes(buf[pos + 5 : pos + 9], "big") & 0x7FFFFFFF
            if kind == 0:  # DATA
                if flags & 0x8:
                    error = "padded DATA frames: not handled by this bench client"
                    break
                if not t_first:
                    t_first = time.monotonic()
                if stream == sid:
                    payload += length
                unacked += length
                pos += 9
                skip = length
                end_after_skip = bool(flags & 0x1) and stream == sid
                if not skip and end_after_skip:
                    break
                if unacked > H2_WINDOW // 2:  # give the windows back (streams past 1 GiB), by hand: h2
                    # never saw these DATA frames, so its own window accounting cannot do it
                    c.flush()
                    c.sock.sendall(_h2_window_update(0, unacked) + _h2_window_update(sid, unacked))
                    unacked = 0
                continue
            if filled - pos >= 9 + length:
                events = conn.receive_data(bytes(buf[pos : pos + 9 + length]))
                pos += 9 + length
                for ev in events:
                    if isinstance(ev, h2.events.ResponseReceived) and ev.stream_id == sid:
                        status = int(dict(ev.headers)[b":status"])
                    elif isinstance(ev, h2.events.StreamEnded) and ev.stream_id == sid:
                        ended = True
                    else:
                        try:
                            _h2_check_end(ev, sid)
                        except ClientError as exc:
                            error, ended = str(exc), True
                c.flush()
                continue
        # more bytes are needed: keep an incomplete frame head (or control frame) at the buffer's start
        rest = filled - pos
        if rest and pos:
            buf[0:rest] = buf[pos:filled]
        pos, filled = 0, rest
        if filled == len(buf):
            error = "a control frame larger than the buffer"
            break
        try:
            n = recv_into(mv[filled:])
        except TimeoutError:
            error = "receiver timed out"
            break
        if n == 0:
            error = "EOF before the end of the stream"
            break
        filled += n
        if payload & 0xFFFFFFF < n and time.monotonic() > deadline:  # now and then
            error = "receiver deadline passed"
            break
    t_end = time.monotonic()
    c.sock.close()
    if not error and payload != size:
        error = f"received {payload} bytes, expected {size}"
    _emit(
        {
            "role": "recv",
            "status": status,
            "framing": "h2",
            "bytes": payload,
            "t_connected": t_connected,
            "t_first": t_first,
            "t_end": t_end,
            "ok": not error and status == 200,
            "error": error,
        }
    )


# --- HTTP/2: many small transfers on a few connections -----------------------------------------------


class _H2Async(asyncio.Protocol):
    """An HTTP/2 client connection on asyncio: requests are futures of (status, body)."""

    def __init__(self, scheme: bytes, authority: bytes) -> None:
        import h2.config
        import h2.connection

        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding=None))
        self.scheme, self.authority = scheme, authority
        self.transport: asyncio.Transport | None = None
        self.pending: dict[int, tuple[asyncio.Future[tuple[int, bytes]], list[Any]]] = {}
        self.slots = asyncio.Semaphore(100)  # a bound below any server's MAX_CONCURRENT_STREAMS

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's transports are not asyncio.Transport
        self.conn.initiate_connection()
        self.conn.increment_flow_control_window(H2_WINDOW - 65_535)
        cast(asyncio.Transport, transport).write(self.conn.data_to_send())

    def data_received(self, data: bytes) -> None:
        import h2.events

        for ev in self.conn.receive_data(data):
            sid = getattr(ev, "stream_id", None)
            entry = self.pending.get(sid) if sid else None
            if isinstance(ev, h2.events.ResponseReceived) and entry:
                entry[1][0] = int(dict(ev.headers)[b":status"])
            elif isinstance(ev, h2.events.DataReceived):
                if entry:
                    entry[1][1] += ev.data
                self.conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
            elif isinstance(ev, h2.events.StreamEnded) and entry:
                del self.pending[ev.stream_id]
                if not entry[0].done():
                    entry[0].set_result((entry[1][0], bytes(entry[1][1])))
            elif isinstance(ev, h2.events.StreamReset) and entry:
                del self.pending[ev.stream_id]
                if not entry[0].done():
                    entry[0].set_exception(ClientError(f"stream reset ({ev.error_code})"))
            elif isinstance(ev, h2.events.ConnectionTerminated):
                self._fail(ClientError(f"GOAWAY ({ev.error_code})"))
        if self.transport is not None:
            self.transport.write(self.conn.data_to_send())

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(ClientError("connection lost"))

    def _fail(self, exc: Exception) -> None:
        for fut, _ in self.pending.values():
            if not fut.done():
                fut.set_exception(exc)
        self.pending.clear()

    async def request(self, method: bytes, path: str, body: bytes = b"") -> tuple[int, bytes]:
        async with self.slots:
            assert self.transport is not None
            conn = self.conn
            sid = conn.get_next_available_stream_id()
            headers = [
                (b":method", method),
                (b":scheme", self.scheme),
                (b":authority", self.authority),
                (b":path", path.encode()),
            ]
            if body:
                headers += [(b"content-type", b"application/octet-stream"), (b"content-length", b"%d" % len(body))]
            fut: asyncio.Future[tuple[int, bytes]] = asyncio.get_running_loop().create_future()
            self.pending[sid] = (fut, [0, bytearray()])
            conn.send_headers(sid, headers, end_stream=not body)
            if body:
                conn.send_data(sid, body, end_stream=True)  # 1 KiB: within the initial windows
            self.transport.write(conn.data_to_send())
            return await fut


async def _h2small(args: argparse.Namespace) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    ssl_ctx: ssl.SSLContext | None = None
    if args.tls:
        ssl_ctx = ssl.create_default_context()
        ssl_ctx.check_hostname = False
        ssl_ctx.verify_mode = ssl.CERT_NONE
        ssl_ctx.set_alpn_protocols(["h2"])
    scheme = b"https" if args.tls else b"http"
    authority = f"{HOST}:{args.port}".encode()
    conns: list[_H2Async] = []
    for _ in range(max(2, args.conns)):
        transport, proto = await loop.create_connection(
            lambda: _H2Async(scheme, authority), HOST, args.port, ssl=ssl_ctx, server_hostname=HOST if ssl_ctx else None
        )
        conns.append(proto)
    body = b"x" * args.size
    latencies: list[float] = []
    failures: list[str] = []

    async def one(i: int) -> bool:
        path = f"/{args.prefix}-{i}"
        receiver_conn = conns[i % len(conns)]
        sender_conn = conns[(i + 1) % len(conns)]  # another connection than its receiver's
        t0 = time.monotonic()
        both = asyncio.gather(receiver_conn.request(b"GET", path), sender_conn.request(b"POST", path, body))
        try:
            (r_status, received), (s_status, sent) = await asyncio.wait_for(both, args.timeout)
        finally:
            _retrieved(both)
        if r_status != 200 or received != body:
            failures.append(f"{path}: receiver got {r_status} {received[:80]!r}")
        elif s_status != 200 or DONE_LINE not in sent:
            failures.append(f"{path}: sender got {s_status} {sent[-80:]!r}")
        else:
            latencies.append(time.monotonic() - t0)
            return True
        return False

    result = await _pairs(args, one, "h2small", latencies, failures)
    for proto in conns:
        if proto.transport is not None:
            proto.transport.close()
    return result


def run_h2small(args: argparse.Namespace) -> None:
    _run_async(_h2small, args)


# --- many streams at once ----------------------------------------------------------------------------


def run_multi(args: argparse.Namespace) -> None:
    """``args.streams`` one-to-one HTTP/1 streams of ``size`` bytes at once (Content-Length uploads).

    All receivers connect first (their GET sent), then every sender starts; one selector drives
    them all. Time to first byte: from a sender's first body byte to its receiver's first body byte.
    """
    size: int = args.size
    deadline = time.monotonic() + args.deadline
    sel = selectors.DefaultSelector()
    buf = bytearray(RECV_BUF)
    mv = memoryview(buf)
    chunk = memoryview(_pattern() * 4)  # 256 KiB, sent again and again
    recvs: dict[int, dict[str, Any]] = {}
    for i in range(args.streams):
        sock = _connect(args.port, args.timeout)
        sock.sendall(f"GET {args.path}-{i} HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n".encode())
        sock.setblocking(False)
        state = {"i": i, "sock": sock, "head": b"", "body": 0, "t_first": 0.0, "t_end": 0.0}
        recvs[sock.fileno()] = state
        sel.register(sock, selectors.EVENT_READ, ("recv", state))
    if args.announce:
        print("connected", flush=True)
        sys.stdin.readline()  # "go": every process's receivers are waiting
    _mark_cpu()
    t_start = time.monotonic()
    send_start: dict[int, float] = {}
    sends: list[dict[str, Any]] = []
    for i in range(args.streams):
        sock = _connect(args.port, args.timeout)
        sock.sendall(
            (
                f"POST {args.path}-{i} HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: {size}\r\n"
                "Content-Type: application/octet-stream\r\nConnection: close\r\n\r\n"
            ).encode()
        )
        sock.setblocking(False)
        state = {"i": i, "sock": sock, "left": size, "response": b"", "done": False}
        sends.append(state)
        send_start[i] = time.monotonic()
        sel.register(sock, selectors.EVENT_READ | selectors.EVENT_WRITE, ("send", state))
    open_count = 2 * args.streams
    errors: list[str] = []
    while open_count and time.monotonic() < deadline:
        for key, mask in sel.select(1.0):
            role, state = key.data
            sock = state["sock"]
            try:
                if role == "recv":
                    n = sock.recv_into(mv)
                    if n == 0:
                        state["t_end"] = time.monotonic()
                        sel.unregister(sock)
                        sock.close()
                        open_count -= 1
                        continue
                    if state["head"] is not None:
                        head = state["head"] + bytes(mv[:n])
                        end = head.find(b"\r\n\r\n")
                        if end < 0:
                            state["head"] = head
                            continue
                        state["head"] = None
                        n = len(head) - end - 4
                        if not head.startswith(b"HTTP/1.1 200"):
                            errors.append(f"receiver {state['i']}: {head[:60]!r}")
                    if n:
                        if not state["t_first"]:
                            state["t_first"] = time.monotonic()
                        state["body"] += n
                        if state["body"] >= size:
                            state["t_end"] = time.monotonic()
                            sel.unregister(sock)
                            sock.close()
                            open_count -= 1
                else:
                    if mask & selectors.EVENT_WRITE and state["left"]:
                        n = sock.send(chunk[: min(len(chunk), state["left"])])
                        state["left"] -= n
                        if not state["left"]:
                            sel.modify(sock, selectors.EVENT_READ, key.data)
                    if mask & selectors.EVENT_READ:
                        part = sock.recv(65536)
                        state["response"] += part
                        if not part or state["response"].endswith(b"\r\n0\r\n\r\n"):
                            sel.unregister(sock)
                            sock.close()
                            open_count -= 1
                            state["done"] = True
            except BlockingIOError:
                continue
            except OSError as exc:
                errors.append(f"{role} {state['i']}: {exc}")
                sel.unregister(sock)
                sock.close()
                open_count -= 1
    if open_count:
        errors.append(f"{open_count} sockets still open at the deadline")
    ttfb = [r["t_first"] - send_start[r["i"]] for r in recvs.values() if r["t_first"]]
    unconfirmed = [s["i"] for s in sends if DONE_LINE not in s["response"]]
    if unconfirmed:
        errors.append(f"{len(unconfirmed)} senders were not told of success")
    short = [r["i"] for r in recvs.values() if r["body"] != size]
    if short:
        errors.append(f"{len(short)} receivers got the wrong size")
    _emit(
        {
            "role": "multi",
            "t_start": t_start,
            "t_end": max((r["t_end"] for r in recvs.values()), default=time.monotonic()),
            "bytes": sum(r["body"] for r in recvs.values()),
            "ttfb": ttfb,
            "ok": not errors,
            "error": "; ".join(errors[:5]),
        }
    )


# --- a counter at the end of a pipe ------------------------------------------------------------------


def run_count(args: argparse.Namespace) -> None:
    """Count stdin to its end: first and last byte's times (a receiving client's output piped here)."""
    deadline = time.monotonic() + args.deadline
    buf = bytearray(RECV_BUF)
    readinto = cast(Any, sys.stdin.buffer).raw.readinto  # (stdin's unbuffered file: BinaryIO has no raw)
    total = 0
    t_first = 0.0
    error = ""
    while True:
        n = readinto(buf)
        if not n:
            break
        if not t_first:
            t_first = time.monotonic()
        total += n
        if time.monotonic() > deadline:
            error = "counter deadline passed"
            break
    t_end = time.monotonic()
    if not error and total != args.size:
        error = f"counted {total} bytes, expected {args.size}"
    _emit({"role": "count", "bytes": total, "t_first": t_first, "t_end": t_end, "ok": not error, "error": error})


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--port", type=int, default=0)
    common.add_argument("--path", default="/bench")
    common.add_argument("--size", type=int, default=CHUNK)
    common.add_argument("--timeout", type=float, default=30.0, help="socket inactivity timeout, seconds")
    common.add_argument("--sockbuf", type=int, default=0, help="SO_SNDBUF/SO_RCVBUF (default: the kernel's autotuning)")
    common.add_argument("--deadline", type=float, default=600.0, help="total time bound, seconds")
    common.add_argument(
        "--stall",
        type=float,
        default=0.0,
        help="small, h2small: a pair not done after this many seconds gives its place to the next (0: never)",
    )
    common.add_argument("--tls", action="store_true", help="over TLS (send, recv: HTTP/1.1; h2*: h2, else h2c)")
    common.add_argument("--done-line", help="what a sender's answer must hold (default: received successfully)")
    p = sub.add_parser("send", parents=[common])
    p.add_argument("--mode", choices=["chunked", "length", "raw", "rawfile"], default="chunked")
    p.add_argument("--file", help="file to sendfile from (length, rawfile)")
    p = sub.add_parser("recv", parents=[common])
    p.add_argument("--mode", choices=["http", "raw"], default="http")
    p.add_argument("--announce", action="store_true", help="print 'connected' once connected (raw)")
    p = sub.add_parser("h2send", parents=[common])
    p.add_argument(
        "--delayed-acks", action="store_true", help="keep delayed ACKs while waiting for a window (no TCP_QUICKACK)"
    )
    p = sub.add_parser("h2recv", parents=[common])
    p.add_argument("--announce", action="store_true", help="print 'connected' once the request is sent")
    p = sub.add_parser("h2small", parents=[common])
    p.add_argument("--count", type=int, default=100)
    p.add_argument("--concurrency", type=int, default=10)
    p.add_argument("--conns", type=int, default=2, help="HTTP/2 connections (at least 2)")
    p.add_argument("--prefix", default="h2small")
    sub.add_parser("count", parents=[common])
    p = sub.add_parser("multi", parents=[common])
    p.add_argument("--streams", type=int, default=50)
    p.add_argument("--announce", action="store_true", help="print 'connected', then wait for a line on stdin")
    p = sub.add_parser("relay", parents=[common])
    p.add_argument("--port-a", type=int, required=True)
    p.add_argument("--port-b", type=int, required=True)
    p = sub.add_parser("chunkrelay", parents=[common])
    p.add_argument("--port-a", type=int, required=True)
    p.add_argument("--port-b", type=int, required=True)
    p = sub.add_parser("small", parents=[common])
    p.add_argument("--count", type=int, default=100)
    p.add_argument("--concurrency", type=int, default=10)
    p.add_argument("--prefix", default="small")
    args = parser.parse_args(argv)
    if args.done_line:
        global DONE_LINE
        DONE_LINE = args.done_line.encode()
    try:
        commands = {
            "send": run_send,
            "recv": run_recv,
            "relay": run_relay,
            "chunkrelay": run_chunk_relay,
            "small": run_small,
            "h2send": run_h2send,
            "h2recv": run_h2recv,
            "h2small": run_h2small,
            "multi": run_multi,
            "count": run_count,
        }
        commands[args.cmd](args)
    except (OSError, ClientError) as exc:
        _emit({"role": args.cmd, "ok": False, "error": f"{type(exc).__name__}: {exc}"})
        sys.exit(1)


if __name__ == "__main__":
    main()
