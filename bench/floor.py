"""The floor of a small transfer on our stack: the least relay that uvloop and httptools allow.

    python bench/floor.py --port 8081            # serve; then bench/run.py-style light clients

One process, plain HTTP/1.1, ``Content-Length`` uploads only, one receiver per path, no checks,
no progress lines beyond the two the light clients wait for, no limits: everything that a real
server adds is left out. What remains is what every Python server on this stack pays per small
transfer (accept, one read and one parse per request, the heads, the data, close), so its CPU per
transfer is the floor that ``piping-server``'s own is measured against (bench/README.md,
"CPU per small transfer against Rust"). Not a server to use: it answers nothing but this.

    python bench/floor.py --port 8081 --workers 2                 # the floor of --workers' hand-over
    python bench/floor.py --port 8081 --workers 2 --door accept   # ... without a transport at the door

``--workers N``: N forked processes accept from one listener (``TCP_DEFER_ACCEPT``, as ours), and a
connection whose path (CRC-32 of the request target, modulo N) belongs to another process is peeked
at and sent there (``SCM_RIGHTS``), which serves it through ``connect_accepted_socket``: the least
that ``piping-server --workers``' hand-over (src/piping_server/server/_handover.py) can cost on this
stack. ``--door transport`` is ours: uvloop's server makes a transport for every connection and the
door peeks through it; ``--door accept`` accepts on the raw listener instead and makes a transport
only for the connections that stay. ``--owner first``: a path belongs to the process that took its
first connection (a table shared by the processes), so only a second connection may move.
"""

from __future__ import annotations

import _socket
import argparse
import asyncio
import contextlib
import fcntl
import mmap
import os
import socket
import struct
import tempfile
import zlib
from typing import cast

import httptools
import uvloop

_RECEIVER_HEAD = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: %d\r\nConnection: close\r\n\r\n"
)
_SENDER_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\nContent-Length: %d\r\n\r\n"
_SENDER_DONE = b"[INFO] All receiver(s) was/were received successfully.\n"
#: Paths with a party waiting: the receiver's transport, or the sender's (transport, body).
_waiting: dict[bytes, object] = {}


class FloorProtocol(asyncio.Protocol):
    __slots__ = ("_transport", "_parser", "_url", "_body", "_length")

    def __init__(self) -> None:
        self._parser = httptools.HttpRequestParser(self)
        self._url = b""
        self._body = bytearray()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError:
            self._transport.close()

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_body(self, body: bytes) -> None:
        self._body += body

    def on_message_complete(self) -> None:
        path = self._url
        if path == b"/version":  # bench/run.py asks it once, to know the server is up
            self._transport.write(_SENDER_HEAD % 6 + b"floor\n")
            self._transport.close()
            return
        party = _waiting.pop(path, None)
        if party is not None and _claims is not None:
            _claims.release(path)  # the pair has met: the path is free again
        if self._parser.get_method() == b"GET":
            if party is None:
                _waiting[path] = self._transport
            else:
                sender, body = cast(tuple[asyncio.Transport, bytes], party)
                _deliver(sender, body, self._transport)
        elif party is None:
            _waiting[path] = (self._transport, bytes(self._body))
        else:
            _deliver(self._transport, bytes(self._body), cast(asyncio.Transport, party))

    def connection_lost(self, exc: Exception | None) -> None:
        pass


def _deliver(sender: asyncio.Transport, body: bytes, receiver: asyncio.Transport) -> None:
    receiver.write(_RECEIVER_HEAD % len(body) + body)
    receiver.close()
    sender.write(_SENDER_HEAD % len(_SENDER_DONE) + _SENDER_DONE)
    sender.close()


async def _serve(host: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(FloorProtocol, host, port, backlog=1024, reuse_address=True)
    for sock in server.sockets:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    await server.serve_forever()


_FD = struct.Struct("i")
_PEEK = socket.MSG_PEEK | socket.MSG_DONTWAIT


class _Claims:
    """``--owner first``: a path belongs to the process that took its first connection, in a table shared by all.

    A slot per path hash (a collision only puts two paths in one process): 0 is free, else the owner's
    index + 1. Claims take a lock (``lockf`` on a file each process opens itself); reading needs none.
    """

    SLOTS = 1 << 16

    def __init__(self, table: mmap.mmap, lock_path: str, index: int) -> None:
        self.owners = memoryview(table).cast("i")
        self.lock = os.open(lock_path, os.O_RDWR)
        self.me = index + 1

    def owner(self, path: bytes) -> int:
        slot = zlib.crc32(path) % self.SLOTS
        owner = self.owners[slot]
        if owner == 0:
            fcntl.lockf(self.lock, fcntl.LOCK_EX)
            owner = self.owners[slot]
            if owner == 0:
                owner = self.owners[slot] = self.me
            fcntl.lockf(self.lock, fcntl.LOCK_UN)
        return owner - 1

    def release(self, path: bytes) -> None:
        self.owners[zlib.crc32(path) % self.SLOTS] = 0


_claims: _Claims | None = None


class _Worker:
    """One of ``--workers N``: its index, and the datagram sockets that carry connections between them."""

    def __init__(self, index: int, inboxes: list[socket.socket], outboxes: list[socket.socket]) -> None:
        self.index = index
        self.count = len(inboxes)
        self.inbox = inboxes[index]
        self.outboxes = outboxes
        self.loop = asyncio.get_running_loop()

    def owner(self, fd: int) -> int:
        """The process that owns the path of the request line waiting in ``fd`` (this one if there is none)."""
        probe = _socket.socket(socket.AF_INET, socket.SOCK_STREAM, 0, fd)
        try:
            head = probe.recv(2048, _PEEK)
        except OSError:
            head = b""
        finally:
            probe.detach()
        line = head[: head.find(b"\n")].split()
        if len(line) != 3:
            return self.index
        return _claims.owner(line[1]) if _claims is not None else zlib.crc32(line[1]) % self.count

    def send(self, owner: int, fd: int) -> None:
        self.outboxes[owner].sendmsg([b"c"], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, _FD.pack(fd))])

    def serve(self, fd: int) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, 0, fd)
        steps = self.loop.connect_accepted_socket(FloorProtocol, sock)
        waiter = steps.send(None)  # the transport is made by the first step: no task is needed
        waiter.add_done_callback(lambda _: _finish(steps))

    def received(self) -> None:
        while True:
            try:
                _, ancillary, _, _ = self.inbox.recvmsg(1, socket.CMSG_LEN(_FD.size))
            except BlockingIOError:
                return
            for _level, _kind, payload in ancillary:
                (fd,) = _FD.unpack(payload[: _FD.size])
                self.serve(fd)

    def accepted(self, listener: socket.socket) -> None:
        """``--door accept``: take every waiting connection from the raw listener."""
        while True:
            try:
                fd, _ = listener._accept()  # type: ignore[attr-defined]  # (a descriptor: no socket object)
            except BlockingIOError:
                return
            owner = self.owner(fd)
            if owner == self.index:
                self.serve(fd)
            else:
                self.send(owner, fd)
                os.close(fd)


def _finish(steps: object) -> None:
    with contextlib.suppress(StopIteration):
        steps.send(None)  # type: ignore[attr-defined]


class _Door(asyncio.Protocol):
    """``--door transport``: a new connection of uvloop's server, sent to its owner before any read."""

    def __init__(self, worker: _Worker) -> None:
        self.worker = worker

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)  # (uvloop's is not a subclass)
        worker = self.worker
        fd = transport.get_extra_info("socket").fileno()
        owner = worker.owner(fd)
        if owner != worker.index:
            worker.send(owner, fd)
            transport.abort()
            return
        conn = FloorProtocol()
        transport.set_protocol(conn)
        conn.connection_made(transport)


async def _serve_worker(
    index: int, listener: socket.socket, inboxes: list[socket.socket], outboxes: list[socket.socket], door: str
) -> None:
    worker = _Worker(index, inboxes, outboxes)
    loop = worker.loop
    worker.inbox.setblocking(False)
    loop.add_reader(worker.inbox.fileno(), worker.received)
    if door == "accept":
        listener.setblocking(False)
        loop.add_reader(listener.fileno(), worker.accepted, listener)
        await asyncio.Event().wait()
    server = await loop.create_server(lambda: _Door(worker), sock=listener, backlog=1024)
    await server.serve_forever()


def _run_workers(host: str, port: int, count: int, door: str, owner: str) -> None:
    global _claims
    table = mmap.mmap(-1, _Claims.SLOTS * 4)  # shared with the forked processes
    lock_file = tempfile.NamedTemporaryFile(prefix="floor-claims-")  # noqa: SIM115  (open while the children run)
    listener = socket.create_server((host, port), backlog=1024, reuse_port=False)
    listener.setsockopt(socket.IPPROTO_TCP, socket.TCP_DEFER_ACCEPT, 1)
    listener.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    pairs = [socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM) for _ in range(count)]
    inboxes, outboxes = [p[0] for p in pairs], [p[1] for p in pairs]
    children = []
    for index in range(count):
        pid = os.fork()
        if pid == 0:
            try:
                if owner == "first":
                    _claims = _Claims(table, lock_file.name, index)
                uvloop.run(_serve_worker(index, listener, inboxes, outboxes, door))
            finally:
                os._exit(0)
        children.append(pid)
    try:
        for pid in children:
            os.waitpid(pid, 0)
    finally:
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, 15)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--http-port", "--port", dest="port", type=int, default=8081)
    parser.add_argument("--workers", type=int, default=1, help="processes; above 1, connections move to their owner")
    parser.add_argument("--door", choices=("transport", "accept"), default="transport")
    parser.add_argument(
        "--owner", choices=("hash", "first"), default="hash", help="a path's owner: its hash, or its first connection's"
    )
    args = parser.parse_args()
    if args.workers > 1:
        _run_workers(args.host, args.port, args.workers, args.door, args.owner)
    else:
        uvloop.run(_serve(args.host, args.port))


if __name__ == "__main__":
    main()
