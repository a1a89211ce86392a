"""How the workers of ``--workers N`` meet on one path: every path has an owner worker.

A transfer needs its sender and receivers in one process, so each path has an owner: a stable
hash of the path as the hub compares it (PROTOCOL.md section 1: normalised, without the query)
picks one of the N workers. Whichever worker accepts a connection then brings each request to the
owner of its path:

* HTTP/1.x over plain TCP moves: the worker that read the request head sends the socket itself
  (``SCM_RIGHTS`` on a Unix socket) with the bytes already read to the owner, which serves the
  connection exactly as a single process would, splicing included. On a kept-alive connection the
  next request may belong to another worker: it moves again.
* HTTP/2 streams and TLS connections cannot move: their requests are relayed to the owner over an
  internal HTTP/1.1 connection (``_forward.Forward``); the owner serves them on ``InternalProtocol``.

Pages, preflights and refused methods are the same in every worker: served where they arrive.

Each worker listens on two Unix sockets in the supervisor's private directory: ``hand-<i>`` for
moved connections and ``fwd-<i>`` for relayed requests (and ``metrics-<i>`` for the supervisor).
A record on ``hand-<i>`` is a 4-byte big-endian length, then that many bytes already read; the
socket's descriptor rides with the length's first byte.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import struct
import zlib
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from .._exchange import Exchange
from .._forward import INTERNAL_CLIENT, Forward
from ..core import is_reserved, split_target
from ..flow import Relay
from ..http1.protocol import Http1Protocol

log = logging.getLogger("piping_server.workers")

_LENGTH = struct.Struct("!I")
#: Bytes read from a hand-over socket at once; a record is at most a request head plus one read's worth.
_RECV_BYTES = 256 * 1024
#: Descriptors accepted per read of a hand-over socket.
_MAX_FDS = 64
#: A worker being restarted is waited for this many times, this long apart, before a moved connection is dropped.
CONNECT_TRIES = 50
CONNECT_RETRY_S = 0.1
_TRANSFER_METHODS = (b"GET", b"POST", b"PUT")


def owner_of(path: str, workers: int) -> int:
    """The index of the worker that owns ``path`` (normalised, no query: as ``split_target`` gives it).

    CRC-32 of the path's bytes: stable across processes and restarts (Python's ``hash`` is salted).
    """
    return zlib.crc32(path.encode("latin-1", "replace")) % workers


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkerPlace:
    """Where one worker stands among its siblings."""

    index: int
    count: int
    directory: str  # the supervisor's private directory of Unix sockets

    def socket_path(self, kind: str, index: int | None = None) -> str:
        return os.path.join(self.directory, f"{kind}-{self.index if index is None else index}")


@dataclass(frozen=True, slots=True, kw_only=True)
class Worker:
    """What a worker process is given by its supervisor: its place and the listening sockets it inherits."""

    place: WorkerPlace
    http_socket: socket.socket
    https_socket: socket.socket | None = None


class Handover:
    """This worker's side of the meeting: moving connections out, taking them in, relaying streams."""

    def __init__(self, place: WorkerPlace, relay: Relay) -> None:
        self.place = place
        self.relay = relay
        self._outgoing: dict[int, deque[tuple[int, bytes]]] = {}
        self._senders: dict[int, asyncio.Task[None]] = {}
        self._wakes: dict[int, asyncio.Event] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._listeners: list[socket.socket] = []
        self._servers: list[asyncio.Server] = []

    # --- routing ----------------------------------------------------------------------------------------

    def owner(self, target: str) -> int | None:
        """The other worker that owns this request target's path, or None when it is ours."""
        path, _ = split_target(target)
        if is_reserved(path):
            return None
        owner = owner_of(path, self.place.count)
        return None if owner == self.place.index else owner

    def hand_over(self, conn: Http1Protocol, head: bytes, data: bytes) -> bool:
        """``Http1Protocol``'s hook: send the connection to the owner of the head's path, if not ours."""
        line = head[: head.find(b"\n")].split()
        if len(line) != 3 or line[0] not in _TRANSFER_METHODS:
            return False  # malformed or not a transfer: answered here, as anywhere
        owner = self.owner(line[1].decode("latin-1"))
        sock = conn.socket()
        if owner is None or sock is None:
            return False
        fd = os.dup(sock.fileno())
        conn.close()  # our descriptor only: the connection lives on in ``fd``
        self._outgoing.setdefault(owner, deque()).append((fd, data))
        self._wakes.setdefault(owner, asyncio.Event()).set()
        sender = self._senders.get(owner)
        if sender is None or sender.done():
            self._senders[owner] = asyncio.get_running_loop().create_task(self._send(owner))
        return True

    def forward(self, exchange: Exchange, path: str) -> bool:
        """``Hooks.forward``: relay a request of an HTTP/2 stream or a TLS connection to the owner of ``path``."""
        if is_reserved(path):
            return False
        owner = owner_of(path, self.place.count)
        if owner == self.place.index:
            return False
        sender = exchange.method in ("POST", "PUT")
        exchange._role = "sender" if sender else "receiver"
        exchange._reported = True  # the owner writes its access record, with the client's address
        if sender:
            exchange.on_sender()  # its body is held until the owner is reached
        else:
            exchange.on_receiver()
        exchange.pipe = Forward(self.relay, exchange, self.place.socket_path("fwd", owner))
        return True

    # --- moving connections out ------------------------------------------------------------------------

    async def _send(self, owner: int) -> None:
        """Send the connections queued for ``owner`` down one kept-open channel, in order."""
        queue, wake = self._outgoing[owner], self._wakes[owner]
        loop = asyncio.get_running_loop()
        sock: socket.socket | None = None
        try:
            while True:
                if not queue:
                    wake.clear()
                    await wake.wait()
                    continue
                fd, data = queue.popleft()
                try:
                    for attempt in range(2):  # a channel to a worker since restarted fails once: open a new one
                        if sock is None:
                            sock = await self._connect(self.place.socket_path("hand", owner))
                        try:
                            if sock is None:
                                raise ConnectionError("the owner cannot be reached")
                            await _send_fd(loop, sock, _LENGTH.pack(len(data)), fd)
                            await loop.sock_sendall(sock, data)
                            break
                        except OSError as exc:
                            if sock is not None:
                                sock.close()
                            sock = None
                            if attempt:
                                # the owner is gone: this client sees its connection closed
                                log.warning("worker %d: could not hand a connection to worker %d: %s",
                                            self.place.index, owner, exc)
                finally:
                    os.close(fd)
        finally:
            if sock is not None:
                sock.close()

    @staticmethod
    async def _connect(path: str) -> socket.socket | None:
        loop = asyncio.get_running_loop()
        for _ in range(CONNECT_TRIES):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.setblocking(False)
            try:
                await loop.sock_connect(sock, path)
                return sock
            except OSError:
                sock.close()
                await asyncio.sleep(CONNECT_RETRY_S)  # the owner is being restarted
        return None

    # --- taking connections in ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Listen for moved connections and relayed requests."""
        loop = asyncio.get_running_loop()
        hand_path = self.place.socket_path("hand")
        fwd_path = self.place.socket_path("fwd")
        for path in (hand_path, fwd_path):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)  # left by this worker's previous life
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(hand_path)
        listener.listen(128)
        listener.setblocking(False)
        self._listeners.append(listener)
        self._spawn(self._accept(listener))
        relay = self.relay
        self._servers.append(await loop.create_unix_server(lambda: InternalProtocol(relay, hand_over=None), fwd_path))

    def close(self) -> None:
        for server in self._servers:
            server.close()
        for listener in self._listeners:
            listener.close()
        for task in (*self._tasks, *self._senders.values()):
            task.cancel()

    def _spawn(self, coro: object) -> None:
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(coro)  # type: ignore[arg-type]
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _accept(self, listener: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        while True:
            conn, _ = await loop.sock_accept(listener)
            conn.setblocking(False)
            self._spawn(self._receive(conn))

    async def _receive(self, conn: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        buffer = bytearray()
        fds: deque[int] = deque()
        try:
            while True:
                await _ready(loop, conn)
                try:
                    data, received, _flags, _addr = socket.recv_fds(conn, _RECV_BYTES, _MAX_FDS)
                except BlockingIOError:
                    continue
                fds.extend(received)
                if not data:
                    return
                buffer += data
                while len(buffer) >= _LENGTH.size:
                    (length,) = _LENGTH.unpack_from(buffer)
                    if len(buffer) < _LENGTH.size + length or not fds:
                        break
                    carried = bytes(buffer[_LENGTH.size : _LENGTH.size + length])
                    del buffer[: _LENGTH.size + length]
                    await self._adopt(fds.popleft(), carried)
        except OSError as exc:
            log.warning("worker %d: hand-over channel failed: %s", self.place.index, exc)
        finally:
            conn.close()
            while fds:
                os.close(fds.popleft())

    async def _adopt(self, fd: int, carried: bytes) -> None:
        """Serve a moved connection as if this worker had accepted it, starting with the bytes already read."""
        sock = socket.socket(fileno=fd)
        sock.setblocking(False)
        relay, hand_over = self.relay, self.hand_over
        try:
            await asyncio.get_running_loop().connect_accepted_socket(
                lambda: _Adopted(relay, carried, hand_over=hand_over), sock
            )
        except OSError:
            sock.close()


class _Adopted(Http1Protocol):
    """A connection moved here: what the other worker read comes first, before anything from the socket.

    The carried bytes are handled on the next turn of the loop, not in ``connection_made``: uvloop
    starts reading after ``connection_made`` even when it paused reading there (as the splice relay
    does), so bytes that arrive meanwhile are kept behind the carried ones, in order.
    """

    def __init__(self, relay: Relay, carried: bytes, *, hand_over: Callable[[Http1Protocol, bytes, bytes], bool]):
        super().__init__(relay, hand_over=hand_over)
        self._carried: bytes | None = carried

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        asyncio.get_running_loop().call_soon(self._settle)

    def data_received(self, data: bytes) -> None:
        if self._carried is not None:
            self._carried += data  # at most one read, until _settle runs
            return
        super().data_received(data)

    def _settle(self) -> None:
        carried, self._carried = self._carried, None
        if carried and not self._closed:
            super().data_received(carried)


class InternalProtocol(Http1Protocol):
    """The owner's side of a relayed request: an HTTP/1.1 connection from a sibling worker.

    The client's address comes in ``x-piping-internal-client`` (trusted here only: this socket is in
    the supervisor's private directory). The connection was counted where the client connected.
    """

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.refusal = None
        if self._counted and self.relay.hooks.on_disconnect is not None:
            self._counted = False
            self.relay.hooks.on_disconnect(self.client)

    def on_headers_complete(self) -> None:
        kept = []
        for name, value in self._headers:
            if name == INTERNAL_CLIENT:
                self.client = value.decode("latin-1")
            else:
                kept.append((name, value))
        self._headers = kept
        super().on_headers_complete()


async def _ready(loop: asyncio.AbstractEventLoop, sock: socket.socket, *, writable: bool = False) -> None:
    """Wait until ``sock`` can be read (or written)."""
    waiter = loop.create_future()
    fd = sock.fileno()

    def ready() -> None:
        if not waiter.done():
            waiter.set_result(None)

    (loop.add_writer if writable else loop.add_reader)(fd, ready)
    try:
        await waiter
    finally:
        (loop.remove_writer if writable else loop.remove_reader)(fd)


async def _send_fd(loop: asyncio.AbstractEventLoop, sock: socket.socket, header: bytes, fd: int) -> None:
    """Send ``header`` with ``fd`` attached to its first byte, waiting while the channel is full."""
    while True:
        try:
            sent = socket.send_fds(sock, [header], [fd])
            break
        except BlockingIOError:
            await _ready(loop, sock, writable=True)
    if sent < len(header):
        await loop.sock_sendall(sock, header[sent:])
