"""Zero-copy relay of one HTTP/1 upload to one HTTP/1 receiver, with ``splice(2)`` (Linux).

The ordinary data path copies every byte twice through user space (the socket's read into a
``bytes``, then its write into the receiver's socket). For the commonest transfer, one plain-TCP
sender and one plain-TCP receiver, the body can instead move socket -> pipe -> socket inside the
kernel: the server's CPU per byte then drops to the cost of the system calls.

Only the body's *framing* comes up to user space: a ``Content-Length`` body is spliced whole; a
chunked one is spliced chunk by chunk, its size lines read by the same ``BodyReader`` the ordinary
path uses, and each spliced run is re-framed as one chunk for a chunked receiver. Backpressure is
the kernel's: nothing is read from the sender while the pipe cannot be emptied into the receiver.

The relay owns the two sockets' *directions* it uses (the sender's reading, the receiver's writing)
through duplicated descriptors, so the event loop's transports keep the others: the sender's
progress lines and the receiver's disconnect detection go on as usual.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import sys
from collections.abc import Callable

from ._body import BodyReader

#: Whether this platform can splice sockets at all.
SPLICE_AVAILABLE = sys.platform.startswith("linux") and hasattr(os, "splice")
#: The kernel pipe between the sockets (F_SETPIPE_SZ); the default 64 KiB works too, with more calls.
PIPE_BYTES = 1024 * 1024
#: How much is read at once where chunk framing comes next (a size line, and what data follows it).
FRAMING_READ_BYTES = 8192

_SPLICE_FLAGS = getattr(os, "SPLICE_F_MOVE", 1) | getattr(os, "SPLICE_F_NONBLOCK", 2)


class SpliceRelay:
    """Moves one request body from ``in_fd`` to ``out_fd`` until its reader says it is done.

    Callbacks: ``on_done(leftover)`` once the whole body is out (``leftover``: bytes read past it,
    the start of the next request); ``on_sender_broken()`` / ``on_receiver_broken()`` when a
    socket fails; ``count(read, written)`` as payload bytes move; ``cancelled()`` is asked before
    every step, so that a transfer ended elsewhere stops the relay.
    """

    __slots__ = (
        "_loop",
        "_in",
        "_out",
        "_pipe_r",
        "_pipe_w",
        "_reader",
        "_chunked_out",
        "_in_pipe",
        "_pending",
        "_waiting_on",
        "_stopped",
        "_on_done",
        "_on_sender_broken",
        "_on_receiver_broken",
        "_count",
        "_cancelled",
    )

    def __init__(
        self,
        *,
        in_fd: int,
        out_fd: int,
        reader: BodyReader,
        chunked_out: bool,
        on_done: Callable[[bytes], None],
        on_sender_broken: Callable[[], None],
        on_receiver_broken: Callable[[], None],
        count: Callable[[int, int], None],
        cancelled: Callable[[], bool],
    ) -> None:
        self._loop = asyncio.get_running_loop()
        # Our own descriptors: the transports keep theirs registered with the loop.
        self._in = os.dup(in_fd)
        self._out = os.dup(out_fd)
        self._pipe_r, self._pipe_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        with contextlib.suppress(OSError):  # a smaller pipe only means more system calls
            fcntl.fcntl(self._pipe_w, fcntl.F_SETPIPE_SZ, PIPE_BYTES)
        self._reader = reader
        self._chunked_out = chunked_out
        self._in_pipe = 0  # bytes in the kernel pipe, not yet in the receiver's socket
        self._pending = b""  # framing (and small data) to write to the receiver before the pipe's bytes
        self._waiting_on = ""  # "read", "write" or ""
        self._stopped = False
        self._on_done = on_done
        self._on_sender_broken = on_sender_broken
        self._on_receiver_broken = on_receiver_broken
        self._count = count
        self._cancelled = cancelled

    def start(self) -> None:
        self._step()

    def stop(self) -> None:
        """Unregister and close everything; idempotent. The transports' own descriptors stay open."""
        if self._stopped:
            return
        self._stopped = True
        self._wait(None)
        for fd in (self._in, self._out, self._pipe_r, self._pipe_w):
            with contextlib.suppress(OSError):
                os.close(fd)

    # --- the loop -----------------------------------------------------------------------------------

    def _step(self) -> None:
        if self._stopped:
            return
        if self._cancelled():
            self.stop()
            return
        while True:
            if self._pending:
                if not self._write_pending():
                    return
                continue
            if self._in_pipe:
                if not self._splice_out():
                    return
                continue
            reader = self._reader
            if reader.done:
                self.stop()
                self._on_done(b"")
                return
            if reader.remaining_in_frame:
                if not self._splice_in(reader.remaining_in_frame):
                    return
                continue
            if not self._read_framing():
                return

    def _splice_in(self, limit: int) -> bool:
        try:
            moved = os.splice(self._in, self._pipe_w, min(limit, PIPE_BYTES), flags=_SPLICE_FLAGS)
        except BlockingIOError:
            self._wait("read")
            return False
        except OSError:
            self._sender_broken()
            return False
        if moved == 0:
            self._sender_broken()  # the sender's connection ended inside the body
            return False
        self._reader.consumed_raw(moved)
        self._in_pipe = moved
        self._count(moved, 0)
        if self._chunked_out:
            self._pending += b"%x\r\n" % moved
        return True

    def _splice_out(self) -> bool:
        try:
            moved = os.splice(self._pipe_r, self._out, self._in_pipe, flags=_SPLICE_FLAGS)
        except BlockingIOError:
            self._wait("write")
            return False
        except OSError:
            self._receiver_broken()
            return False
        self._in_pipe -= moved
        self._count(0, moved)
        if self._in_pipe == 0 and self._chunked_out:
            self._pending += b"\r\n"  # the end of this run's chunk
        return True

    def _write_pending(self) -> bool:
        try:
            written = os.write(self._out, self._pending)
        except BlockingIOError:
            self._wait("write")
            return False
        except OSError:
            self._receiver_broken()
            return False
        self._pending = self._pending[written:]
        if self._pending:
            self._wait("write")
            return False
        return True

    def _read_framing(self) -> bool:
        try:
            data = os.read(self._in, FRAMING_READ_BYTES)
        except BlockingIOError:
            self._wait("read")
            return False
        except OSError:
            self._sender_broken()
            return False
        if not data:
            self._sender_broken()
            return False
        self._count(len(data), 0)
        try:
            used = self._reader.feed(data, self._emit)
        except Exception:
            self._sender_broken()  # a bad chunk: the upload is broken, its receiver must see a cut
            return False
        if self._reader.done:
            if self._pending and not self._write_pending():
                # the receiver is slow to take the last bytes: finish once they are out
                leftover = data[used:]
                self._on_done_later(leftover)
                return False
            self.stop()
            self._on_done(data[used:])
            return False
        return True

    def _emit(self, piece: memoryview) -> None:
        self._count(0, len(piece))
        if self._chunked_out:
            self._pending += b"%x\r\n%s\r\n" % (len(piece), piece)
        else:
            self._pending += piece

    def _on_done_later(self, leftover: bytes) -> None:
        done = self._on_done

        def finish(_leftover: bytes) -> None:
            done(leftover)

        self._on_done = finish

    # --- registration and failures ------------------------------------------------------------------

    def _wait(self, what: str | None) -> None:
        if what == self._waiting_on:
            return
        if self._waiting_on == "read":
            self._loop.remove_reader(self._in)
        elif self._waiting_on == "write":
            self._loop.remove_writer(self._out)
        self._waiting_on = what or ""
        if what == "read":
            self._loop.add_reader(self._in, self._step)
        elif what == "write":
            self._loop.add_writer(self._out, self._step)

    def _sender_broken(self) -> None:
        self.stop()
        self._on_sender_broken()

    def _receiver_broken(self) -> None:
        self.stop()
        self._on_receiver_broken()
