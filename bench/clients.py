"""Light benchmark clients, each run as its own process by ``bench/run.py``.

They are written so that the server, not the client, is what limits a transfer:

* ``send``   one sender: pre-built 64 KiB chunked frames written with ``sock.sendall`` (as curl
             does), or a ``Content-Length`` body pushed with ``socket.sendfile`` from a file in
             /dev/shm, or the same bytes with no HTTP at all (``raw``/``rawfile``, for the ceiling);
* ``recv``   one receiver: ``recv_into`` a 1 MiB buffer, parse the response head, then either count
             bytes up to ``Content-Length`` or walk the chunk framing (one ``find`` per chunk header);
* ``relay``  a bare byte relay with no HTTP, ``splice(2)`` through a pipe (the ceiling);
* ``small``  many small transfers (1 KiB), ``concurrency`` sender/receiver pairs at a time,
             on raw non-blocking sockets driven by uvloop.

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
import signal
import socket
import sys
import time
from typing import Any

HOST = "127.0.0.1"
CHUNK = 64 * 1024
RECV_BUF = 1024 * 1024
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
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()


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
        ok = response.startswith(b"HTTP/1.1 200") and b"received successfully" in response
    _emit(
        {
            "role": "send",
            "t_start": t_start,
            "t_sent": t_sent,
            "t_end": time.monotonic(),
            "ok": ok,
            "response_tail": response[-200:].decode("latin-1") if not ok else "",
        }
    )


# --- receiver ----------------------------------------------------------------------------------------


def run_recv(args: argparse.Namespace) -> None:
    size: int = args.size
    deadline = time.monotonic() + args.deadline
    sock = _connect(args.port, args.timeout)
    if args.sockbuf:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, args.sockbuf)
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


def run_relay(args: argparse.Namespace) -> None:
    signal.alarm(int(args.deadline))  # bounded: SIGALRM ends the process
    listeners = []
    for port in (args.port_a, args.port_b):
        ls = socket.socket()
        ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        ls.bind((HOST, port))
        ls.listen(1)
        listeners.append(ls)
    print("ready", flush=True)
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


# --- many small transfers ----------------------------------------------------------------------------


async def _small(args: argparse.Namespace) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    body = b"x" * args.size
    addr = (HOST, args.port)
    latencies: list[float] = []
    failures: list[str] = []
    next_index = 0

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

    async def one(i: int) -> None:
        path = f"/{args.prefix}-{i}"
        recv_req = f"GET {path} HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n".encode()
        send_req = (
            f"POST {path} HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: {args.size}\r\n"
            "Content-Type: application/octet-stream\r\nConnection: close\r\n\r\n"
        ).encode() + body
        t0 = time.monotonic()
        (t_body, received), (_, sent) = await asyncio.wait_for(
            asyncio.gather(exchange(recv_req, args.size), exchange(send_req, 0)), args.timeout
        )
        if not received.startswith(b"HTTP/1.1 200") or not received.endswith(body) or not t_body:
            failures.append(f"{path}: bad receiver response {received[:80]!r}")
            return
        if b"received successfully" not in sent:
            failures.append(f"{path}: bad sender response {sent[-80:]!r}")
            return
        latencies.append(t_body - t0)

    async def worker() -> None:
        nonlocal next_index
        while next_index < args.count:
            i = next_index
            next_index += 1
            try:
                await one(i)
            except (OSError, TimeoutError) as exc:
                failures.append(f"{i}: {type(exc).__name__} {exc}")
            if time.monotonic() > deadline:
                return

    deadline = time.monotonic() + args.deadline
    _mark_cpu()
    t_start = time.monotonic()
    await asyncio.gather(*(worker() for _ in range(args.concurrency)))
    return {
        "role": "small",
        "t_start": t_start,
        "t_end": time.monotonic(),
        "latencies": latencies,
        "failures": failures[:20],
        "failed": len(failures),
    }


def run_small(args: argparse.Namespace) -> None:
    try:
        import uvloop
    except ImportError:
        result = asyncio.run(_small(args))
    else:
        result = uvloop.run(_small(args))
    _emit(result)


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
    p = sub.add_parser("send", parents=[common])
    p.add_argument("--mode", choices=["chunked", "length", "raw", "rawfile"], default="chunked")
    p.add_argument("--file", help="file to sendfile from (length, rawfile)")
    p = sub.add_parser("recv", parents=[common])
    p.add_argument("--mode", choices=["http", "raw"], default="http")
    p.add_argument("--announce", action="store_true", help="print 'connected' once connected (raw)")
    p = sub.add_parser("relay", parents=[common])
    p.add_argument("--port-a", type=int, required=True)
    p.add_argument("--port-b", type=int, required=True)
    p = sub.add_parser("small", parents=[common])
    p.add_argument("--count", type=int, default=100)
    p.add_argument("--concurrency", type=int, default=10)
    p.add_argument("--prefix", default="small")
    args = parser.parse_args(argv)
    try:
        {"send": run_send, "recv": run_recv, "relay": run_relay, "small": run_small}[args.cmd](args)
    except (OSError, ClientError) as exc:
        _emit({"role": args.cmd, "ok": False, "error": f"{type(exc).__name__}: {exc}"})
        sys.exit(1)


if __name__ == "__main__":
    main()
