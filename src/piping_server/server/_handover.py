"""How the workers of ``--workers N`` meet on one path: every path has an owner worker.

A transfer needs its sender and receivers in one process, so each path has an owner: a stable
hash of the path as the hub compares it (docs/protocol.md section 1: normalised, without the query)
picks one of the N workers. Whichever worker accepts a connection then brings each request to the
owner of its path:

* HTTP/1.x over plain TCP moves: the socket itself goes to the owner (``SCM_RIGHTS`` on a Unix
  socket), which serves the connection exactly as a single process would, splicing included.
  A new connection moves before anything is read from it: the listener has ``TCP_DEFER_ACCEPT``,
  so its request line is usually there when it is accepted, and ``_Door`` peeks at it
  (``MSG_PEEK``) before any protocol or parser exists. The kernel cannot do this choice itself:
  ``SO_REUSEPORT`` (and a BPF program choosing among the sockets) picks a listener when the SYN
  comes, before any byte of the request exists. A connection whose line was not there yet, and
  a kept-alive one whose next request belongs to another worker, move when a request head has
  been read: with the bytes already read.
* HTTP/2 streams and TLS connections cannot move: their requests are relayed to the owner over an
  internal HTTP/1.1 connection (``_forward.Forward``); the owner serves them on ``InternalProtocol``.

Pages, preflights and refused methods are the same in every worker: served where they arrive.

Each worker listens on two Unix sockets in the supervisor's private directory: ``hand-<i>`` for
moved connections and ``fwd-<i>`` for relayed requests (and ``metrics-<i>`` for the supervisor).
A record on ``hand-<i>`` is a 4-byte big-endian length, then that many bytes already read (none
for a connection moved by the door); the socket's descriptor rides with the length's first byte.
"""

from __future__ import annotations

import _socket
import asyncio
import contextlib
import logging
import os
import socket
import struct
import zlib
from collections import deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, cast

from ..core import is_reserved, split_target
from ..http1.protocol import Http1Exchange, Http1Protocol
from ..relay._exchange import Exchange
from ..relay._flow import Relay
from ._listeners import AcceptedSocket
from ._owner_relay import CONNECT_RETRY_S, CONNECT_TRIES, INTERNAL_CLIENT, INTERNAL_TRANSPORT, Forward

log = logging.getLogger("piping_server.workers")

_LENGTH = struct.Struct("!I")
#: Bytes read from a hand-over socket at once; a record is at most a request head plus one read's worth.
_RECV_BYTES = 256 * 1024
#: Descriptors accepted per read of a hand-over socket.
_MAX_FDS = 64
#: One descriptor as ``SCM_RIGHTS`` carries it (``socket.send_fds``/``recv_fds`` do the same through an array,
#: in Python: this is their work without the array, per moved connection)
_FD = struct.Struct("i")
_FDS_SPACE = socket.CMSG_LEN(_MAX_FDS * _FD.size)
#: HEAD too: a question about a path (``Piping-Ask: state``) is answered by its owner, which alone knows it.
_TRANSFER_METHODS = (b"GET", b"POST", b"PUT", b"HEAD")
#: Bytes of a new connection looked at (``MSG_PEEK``) for its request line; a longer line takes the slow path.
_PEEK_BYTES = 2048
_PEEK_FLAGS = socket.MSG_PEEK | socket.MSG_DONTWAIT
#: A record with no bytes carried: a connection moved before anything was read from it.
_EMPTY_RECORD = struct.pack("!I", 0)


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

    def __init__(self, place: WorkerPlace, relay: Relay, family: int = socket.AF_INET) -> None:
        self.place = place
        self.relay = relay
        self.family = family  # the HTTP listener's: every moved connection came from it
        self.loop = asyncio.get_running_loop()  # (kept: asking asyncio for it costs a system call each time)
        self._channels: dict[int, _Channel] = {}
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

    def door(self) -> asyncio.Protocol:
        """The HTTP listener's protocol factory: each new connection goes first to its first request's owner."""
        return _Door(self)

    def owner_of_line(self, line: bytes) -> int | None:
        """The other worker that owns the path of this request line, or None."""
        parts = line.split()
        if len(parts) != 3 or parts[0] not in _TRANSFER_METHODS:
            return None  # malformed or not a transfer: answered here, as anywhere
        return self.owner(parts[1].decode("latin-1"))

    def move_new(self, owner: int, fd: int) -> None:
        """Send a new connection, nothing read from it, to ``owner``; ``fd`` stays the caller's to close."""
        channel = self._channels.get(owner)
        if channel is None:
            channel = self._channels[owner] = _Channel(self.place, owner)
        channel.send(fd, _EMPTY_RECORD, borrowed=True)

    def after_first(self, conn: Http1Protocol, head: bytes, data: bytes) -> bool:
        """The hook of a connection whose first request the door saw is this worker's: the next ones may move."""
        conn.hand_over = self.hand_over
        return False

    def hand_over(self, conn: Http1Protocol, head: bytes, data: bytes) -> bool:
        """``Http1Protocol``'s hook: send the connection to the owner of the head's path, if not ours."""
        owner = self.owner_of_line(head[: head.find(b"\n")])
        if owner is None:
            return False
        sock = conn.socket()
        if sock is None:
            return False
        fd = os.dup(sock.fileno())
        conn.close()  # our descriptor only: the connection lives on in ``fd``
        channel = self._channels.get(owner)
        if channel is None:
            channel = self._channels[owner] = _Channel(self.place, owner)
        channel.send(fd, _LENGTH.pack(len(data)) + data)
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
            if isinstance(exchange, Http1Exchange) and (exchange.header(b"expect") or b"").lower() == b"100-continue":
                # the owner's own 100 Continue would stay on the internal connection
                exchange.conn.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        else:
            exchange.on_receiver()  # a question (HEAD) too: at this edge, the owner's answer comes back as a receiver's
        exchange.pipe = Forward(self.relay, exchange, self.place.socket_path("fwd", owner))
        return True

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
        tasks = [*self._tasks, *(c.task for c in self._channels.values() if c.task is not None)]
        for task in tasks:
            task.cancel()
        for listener in self._listeners:
            listener.close()

    def _spawn(self, coro: object) -> None:
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(coro)  # type: ignore[arg-type]
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _accept(self, listener: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        while True:
            conn, _ = await loop.sock_accept(listener)
            conn.setblocking(False)
            loop.add_reader(conn.fileno(), self._readable, _Inbound(conn))

    def _readable(self, inbound: _Inbound) -> None:
        """Read what a sibling sent (no task per record: this runs as the socket's reader)."""
        conn = inbound.conn
        while True:
            try:
                data, ancillary, _flags, _addr = conn.recvmsg(_RECV_BYTES, _FDS_SPACE)
            except BlockingIOError:
                return
            except OSError as exc:
                log.warning("worker %d: hand-over channel failed: %s", self.place.index, exc)
                data, ancillary = b"", []
            for level, kind, payload in ancillary:
                if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                    inbound.fds.extend(fd for (fd,) in _FD.iter_unpack(payload[: len(payload) // _FD.size * _FD.size]))
            if not data:
                self.loop.remove_reader(conn.fileno())
                inbound.close()
                return
            buffer = inbound.buffer
            buffer += data
            while len(buffer) >= _LENGTH.size and inbound.fds:
                (length,) = _LENGTH.unpack_from(buffer)
                if len(buffer) < _LENGTH.size + length:
                    break
                carried = bytes(buffer[_LENGTH.size : _LENGTH.size + length])
                del buffer[: _LENGTH.size + length]
                self._adopt(inbound.fds.popleft(), carried)
            if len(data) < _RECV_BYTES:
                return  # all there was (the reader is called again when more comes): no read to hear EAGAIN

    def _adopt(self, fd: int, carried: bytes) -> None:
        """Serve a moved connection as if this worker had accepted it, starting with the bytes already read."""
        if not carried:
            self._adopt_new(fd)
            return
        sock = socket.socket(fileno=fd)
        sock.setblocking(False)
        relay, hand_over, loop = self.relay, self.hand_over, self.loop

        async def adopt() -> None:
            try:
                await loop.connect_accepted_socket(
                    lambda: _Adopted(relay, carried, hand_over=hand_over, loop=loop), sock
                )
            except OSError:
                sock.close()

        self._spawn(adopt())

    def _adopt_new(self, fd: int) -> None:
        """Serve a connection moved before anything was read from it: a plain connection of this worker.

        ``connect_accepted_socket`` is driven here rather than in a task: the transport and the
        protocol are made by its first step, the rest only waits for ``connection_made``.
        """
        sock = AcceptedSocket(self.family, socket.SOCK_STREAM, 0, fd)  # (given, not looked up)
        relay, hook, loop = self.relay, self.after_first, self.loop  # its first request is ours: the sender checked
        steps = loop.connect_accepted_socket(lambda: Http1Protocol(relay, hand_over=hook, loop=loop), sock)
        try:
            waiter = steps.send(None)
        except StopIteration:
            return
        except (OSError, ValueError) as exc:
            log.debug("worker %d: a moved connection could not be served: %s", self.place.index, exc)
            sock.close()
            return
        waiter.add_done_callback(lambda _: _finish(steps))


def _finish(steps: Coroutine[Any, Any, object]) -> None:
    """The last step of ``connect_accepted_socket``: it returns at once, its waiter being done."""
    try:
        steps.send(None)
    except StopIteration:
        pass
    except (Exception, asyncio.CancelledError) as exc:  # the connection failed: its transport is closed
        log.debug("a moved connection could not be served: %r", exc)


class _Door(asyncio.Protocol):
    """A new connection of a worker's HTTP listener, before any byte is read from it.

    The listener has ``TCP_DEFER_ACCEPT``, so the request's first bytes are usually in the socket
    when it is accepted: they are peeked at (``MSG_PEEK``: left in the socket), and a connection
    whose first request belongs to another worker is sent there at once, with no protocol, parser
    or read of its own; the owner reads it as a connection of its own. Any other connection (its
    request line not there yet, not a transfer, a path of this worker) becomes an ``Http1Protocol``
    here, and its requests still move as they come (``Handover.hand_over``).
    """

    __slots__ = ("handover",)

    def __init__(self, handover: Handover) -> None:
        self.handover = handover

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)  # (uvloop's transports are not asyncio subclasses)
        handover = self.handover
        hook = handover.hand_over
        sock = transport.get_extra_info("socket")
        if sock is not None:
            fd = sock.fileno()
            probe = _socket.socket(handover.family, socket.SOCK_STREAM, 0, fd)
            try:
                head = probe.recv(_PEEK_BYTES, _PEEK_FLAGS)
            except OSError:
                head = b""
            finally:
                probe.detach()  # the descriptor stays the transport's
            end = head.find(b"\n")
            if end >= 0:  # the whole request line is there
                owner = handover.owner_of_line(head[:end])
                if owner is not None:
                    handover.move_new(owner, fd)
                    transport.abort()  # closes our descriptor only: the owner has its own
                    return
                hook = handover.after_first  # the first request stays here: only the next ones may move
        conn = Http1Protocol(handover.relay, hand_over=hook, loop=handover.loop)
        transport.set_protocol(conn)
        conn.connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        """A moved connection's transport is closed: nothing to do."""


class _Inbound:
    """One sibling's hand-over channel, as this worker reads it."""

    __slots__ = ("conn", "buffer", "fds")

    def __init__(self, conn: socket.socket) -> None:
        self.conn = conn
        self.buffer = bytearray()
        self.fds: deque[int] = deque()  # received, their records not yet whole

    def close(self) -> None:
        self.conn.close()
        while self.fds:
            os.close(self.fds.popleft())


class _Channel:
    """The kept-open hand-over channel to one sibling: records leave in order, at once when the socket takes them.

    A record is sent with one ``sendmsg`` (the descriptor on its first byte) straight from
    ``hand_over`` when nothing waits before it; otherwise, and for what the socket did not take,
    a task sends on as the socket drains, reconnecting (once per record) to a restarted sibling.
    """

    def __init__(self, place: WorkerPlace, owner: int) -> None:
        self.place = place
        self.owner = owner
        self.sock: socket.socket | None = None
        #: (descriptor, bytes) to send in order; descriptor -1: the rest of a record whose descriptor went
        self.queue: deque[tuple[int, bytes]] = deque()
        self.wake = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    def send(self, fd: int, record: bytes, *, borrowed: bool = False) -> None:
        """Send ``record`` with ``fd``, which is closed here (``borrowed``: left open, a copy waits if need be)."""
        if self.sock is not None and not self.queue:
            try:
                sent = _send_with_fd(self.sock, record, fd)
            except BlockingIOError:
                pass
            except OSError:
                self.sock.close()
                self.sock = None  # the task reconnects
            else:
                if not borrowed:
                    os.close(fd)
                if sent < len(record):
                    self._queue(-1, record[sent:])
                return
        self._queue(os.dup(fd) if borrowed else fd, record)

    def _queue(self, fd: int, record: bytes) -> None:
        self.queue.append((fd, record))
        self.wake.set()
        if self.task is None or self.task.done():
            self.task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        queue = self.queue
        retried = False
        while True:
            if not queue:
                self.wake.clear()
                await self.wake.wait()
                continue
            fd, record = queue[0]  # left in the queue while sent, so that send() queues behind it
            if self.sock is None:
                if fd < 0:
                    queue.popleft()  # the rest of a record on a channel that broke: its start is lost too
                    continue
                self.sock = await _connect(self.place.socket_path("hand", self.owner))
                if self.sock is None:
                    log.warning(
                        "worker %d: worker %d cannot be reached: a moved connection is dropped",
                        self.place.index,
                        self.owner,
                    )
                    queue.popleft()
                    os.close(fd)
                    continue
            try:
                if fd >= 0:
                    sent = await _send_fd(loop, self.sock, record, fd)
                    record = record[sent:]
                if record:
                    await loop.sock_sendall(self.sock, record)
            except OSError as exc:
                self.sock.close()
                self.sock = None
                if fd >= 0 and not retried:
                    retried = True  # a channel to a sibling since restarted fails once: open a new one
                    continue
                log.warning(
                    "worker %d: could not hand a connection to worker %d: %s", self.place.index, self.owner, exc
                )
            queue.popleft()
            retried = False
            if fd >= 0:
                os.close(fd)


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
            await asyncio.sleep(CONNECT_RETRY_S)  # the sibling is being restarted
    return None


def _send_with_fd(sock: socket.socket, record: bytes, fd: int) -> int:
    """Send ``record`` with ``fd`` on its first byte; return the bytes sent."""
    return sock.sendmsg([record], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, _FD.pack(fd))])


class _Adopted(Http1Protocol):
    """A connection moved here: what the other worker read comes first, before anything from the socket.

    The carried bytes are handled on the next turn of the loop, not in ``connection_made``: uvloop
    starts reading after ``connection_made`` even when it paused reading there (as the splice relay
    does), so bytes that arrive meanwhile are kept behind the carried ones, in order.
    """

    def __init__(
        self,
        relay: Relay,
        carried: bytes,
        *,
        hand_over: Callable[[Http1Protocol, bytes, bytes], bool],
        loop: asyncio.AbstractEventLoop,
    ):
        super().__init__(relay, hand_over=hand_over, loop=loop)
        self._carried: bytes | None = carried

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.loop.call_soon(self._settle)

    def data_received(self, data: bytes) -> None:
        if self._carried is not None:
            self._carried += data  # at most one read, until _settle runs
            return
        super().data_received(data)

    def reclaimable(self) -> bool:
        return self._carried is None and super().reclaimable()  # the carried bytes are a request

    def _settle(self) -> None:
        carried, self._carried = self._carried, None
        if carried and not self._closed:
            super().data_received(carried)


class InternalProtocol(Http1Protocol):
    """The owner's side of a relayed request: an HTTP/1.1 connection from a sibling worker.

    The client's address comes in ``x-piping-internal-client``, how it reached the edge ("h2",
    "h1+tls"...) in ``x-piping-internal-transport`` (trusted here only: this socket is in the
    supervisor's private directory). The connection was counted where the client connected: not here
    (counting it could refuse it, or close an idle client connection to make room for it).
    """

    counted = False

    def on_headers_complete(self) -> None:
        kept = []
        for name, value in self._headers:
            if name == INTERNAL_CLIENT:
                self.client = value.decode("latin-1")
            elif name == INTERNAL_TRANSPORT:
                transport, _, tls = value.decode("latin-1").partition("+")
                self.edge_transport, self.edge_tls = transport or "h1", tls == "tls"
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


async def _send_fd(loop: asyncio.AbstractEventLoop, sock: socket.socket, record: bytes, fd: int) -> int:
    """Send ``record`` with ``fd`` on its first byte, waiting while the channel is full; return the bytes sent."""
    while True:
        try:
            return _send_with_fd(sock, record, fd)
        except BlockingIOError:
            await _ready(loop, sock, writable=True)
