"""The byte channels under the HTTP client.

* :class:`SocketChannel`: a plain TCP socket driven directly by the event loop. Besides copying
  reads and gathered writes, it moves bytes kernel to kernel: a file to the socket with
  ``sendfile(2)``, the socket to a pipe with ``splice(2)`` (``PIPING_SPLICE=0`` turns both off, as it
  does for the server).
* :class:`StreamChannel`: asyncio's streams, for TLS (user-space encryption: every byte is copied),
  and for plain TCP where the event loop cannot watch a socket of ours (Windows).

Both read and write at the same time (a sender reads the server's status lines while it uploads).
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import os
import socket
import stat
from collections.abc import Sequence

__all__ = ["KERNEL_PATHS", "RAW_SOCKETS", "Channel", "SocketChannel", "StreamChannel", "widen_pipe"]

#: whether plain TCP runs on the socket itself: it needs the loop's add_reader and sendmsg (Windows' loop has neither)
RAW_SOCKETS = os.name == "posix"
#: whether sendfile(2) and splice(2) may be used (Linux); PIPING_SPLICE=0 forces the copying paths
KERNEL_PATHS = hasattr(os, "splice") and hasattr(os, "sendfile") and os.environ.get("PIPING_SPLICE", "1") != "0"

Buffer = bytes | bytearray | memoryview

#: what a pipe we read or write may hold (/proc/sys/fs/pipe-max-size is 1 MiB by default)
_PIPE_SIZE = 1 << 20


class Channel(abc.ABC):
    """What :class:`~._http.HttpConnection` needs from a connection."""

    #: sendfile and splice work on this channel (a plain socket)
    kernel_paths = False

    @abc.abstractmethod
    async def recv(self, n: int) -> bytes:
        """Up to ``n`` bytes as soon as some arrived; ``b""`` at the end of the stream."""

    @abc.abstractmethod
    async def send(self, parts: Sequence[Buffer]) -> None:
        """Send all of ``parts`` (with backpressure)."""

    @abc.abstractmethod
    def set_nodelay(self) -> None:
        """Do not let Nagle hold small writes back (tunnels carry interactive traffic)."""

    @abc.abstractmethod
    def shutdown_write(self) -> None:
        """Half-close: no more bytes from us."""

    @abc.abstractmethod
    async def aclose(self) -> None:
        """Close."""

    @abc.abstractmethod
    def abort(self) -> None:
        """Close now; operations waiting on the channel raise."""


class StreamChannel(Channel):
    """asyncio's streams: TLS, and plain TCP where the loop cannot watch our socket."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer

    async def recv(self, n: int) -> bytes:
        return await self._reader.read(n)

    async def send(self, parts: Sequence[Buffer]) -> None:
        self._writer.writelines(parts)
        await self._writer.drain()

    def set_nodelay(self) -> None:
        sock = self._writer.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def shutdown_write(self) -> None:
        if self._writer.can_write_eof():
            with contextlib.suppress(OSError, RuntimeError):
                self._writer.write_eof()

    async def aclose(self) -> None:
        self._writer.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._writer.wait_closed(), 2)

    def abort(self) -> None:
        self._writer.transport.abort()


class SocketChannel(Channel):
    """A non-blocking TCP socket; each operation tries the system call first and waits only on EAGAIN."""

    kernel_paths = KERNEL_PATHS

    def __init__(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        self._sock = sock
        self._fd = sock.fileno()
        self._loop = asyncio.get_running_loop()
        self._waiters: set[asyncio.Future[None]] = set()
        self._closed = False

    async def _ready(self, write: bool) -> None:
        """Wait until the socket is readable (or writable); raise if the channel is aborted meanwhile."""
        if self._closed:
            raise ConnectionAbortedError("the connection was closed")
        fut: asyncio.Future[None] = self._loop.create_future()
        loop = self._loop
        add, remove = (loop.add_writer, loop.remove_writer) if write else (loop.add_reader, loop.remove_reader)
        add(self._fd, _wake, fut)
        self._waiters.add(fut)
        try:
            await fut
        finally:
            self._waiters.discard(fut)
            if not self._closed:  # (once closed, the descriptor's number may belong to another socket)
                remove(self._fd)

    async def recv(self, n: int) -> bytes:
        while True:
            try:
                return self._sock.recv(n)
            except (BlockingIOError, InterruptedError):
                await self._ready(write=False)

    async def send(self, parts: Sequence[Buffer]) -> None:
        views = [memoryview(p).cast("B") for p in parts if len(p)]
        while views:
            try:
                sent = self._sock.sendmsg(views)
            except (BlockingIOError, InterruptedError):
                await self._ready(write=True)
                continue
            while sent:  # drop what went out; a partial send leaves the rest of a part
                if sent >= len(views[0]):
                    sent -= len(views.pop(0))
                else:
                    views[0] = views[0][sent:]
                    sent = 0

    async def sendfile(self, fd: int, offset: int, count: int) -> int:
        """One ``sendfile(2)`` of up to ``count`` bytes of ``fd`` from ``offset``; 0 at the file's end."""
        while True:
            try:
                return os.sendfile(self._fd, fd, offset, count)
            except (BlockingIOError, InterruptedError):
                await self._ready(write=True)

    async def splice_to(self, fd: int, count: int) -> int:
        """One ``splice(2)`` of up to ``count`` bytes from the socket into the pipe ``fd``; 0 at the end.

        Only the socket side is non-blocking: a full pipe blocks, as a plain write to it would.
        """
        while True:
            try:
                return os.splice(self._fd, fd, count, flags=os.SPLICE_F_MOVE)
            except (BlockingIOError, InterruptedError):
                await self._ready(write=False)

    def set_nodelay(self) -> None:
        with contextlib.suppress(OSError):
            self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def shutdown_write(self) -> None:
        if not self._closed:
            with contextlib.suppress(OSError):
                self._sock.shutdown(socket.SHUT_WR)

    async def aclose(self) -> None:
        self.abort()

    def abort(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._loop.remove_reader(self._fd)
        self._loop.remove_writer(self._fd)
        for fut in self._waiters:
            if not fut.done():
                fut.set_exception(ConnectionAbortedError("the connection was closed"))
        self._waiters.clear()
        self._sock.close()


def _wake(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


def widen_pipe(fd: int) -> None:
    """Let a pipe we read or write (stdin, stdout) hold 1 MiB instead of 64 KiB, where the system allows.

    Each time a full pipe wakes its reader up (or an empty one its writer) costs both sides a context
    switch: with the default size that is every 64 KiB, which a stream of 1 GB/s cannot afford.
    """
    with contextlib.suppress(OSError, ImportError, AttributeError):
        import fcntl  # (POSIX only)

        if stat.S_ISFIFO(os.fstat(fd).st_mode) and fcntl.fcntl(fd, fcntl.F_GETPIPE_SZ) < _PIPE_SIZE:
            fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, _PIPE_SIZE)
