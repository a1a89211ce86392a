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
import ctypes
import fcntl
import os
import socket
import sys
import termios
from collections import deque
from collections.abc import Callable

from ..core import ProtocolError
from ._body import BodyReader, ChunkedReader, measure_framing

#: Whether this platform can splice sockets at all.
SPLICE_AVAILABLE = sys.platform.startswith("linux") and hasattr(os, "splice")
#: The kernel pipe between the sockets (F_SETPIPE_SZ); the default 64 KiB works too, with more calls.
PIPE_BYTES = 1024 * 1024
#: How much is read at once where chunk framing comes next (a size line, and what data follows it).
FRAMING_READ_BYTES = 8192
#: How much is looked at (MSG_PEEK) to find a chunk's size line without taking it from the socket.
FRAMING_PEEK_BYTES = 64

_SPLICE_FLAGS = getattr(os, "SPLICE_F_MOVE", 1) | getattr(os, "SPLICE_F_NONBLOCK", 2)
#: Linux's SO_PEEK_OFF (TCP since 6.10): MSG_PEEK reads from this offset in the receive queue.
_SO_PEEK_OFF = getattr(socket, "SO_PEEK_OFF", 42)


def _peek_offsets_work(sock: socket.socket) -> bool:
    """Whether this kernel lets a TCP peek start at an offset (SO_PEEK_OFF; -1 is the default: off)."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, _SO_PEEK_OFF, -1)
    except OSError:
        return False
    return True


class SpliceRelay:
    """Moves one request body from ``in_fd`` to ``out_fd`` until its reader says it is done.

    Callbacks: ``on_done(leftover)`` once the whole body is out (``leftover``: bytes read past
    it, the start of the next request); ``on_sender_broken()`` / ``on_receiver_broken()`` when a
    socket fails; ``on_bad_framing(reason)`` when the chunked framing is malformed;
    ``count(read, written)`` as payload bytes move; ``cancelled()`` is asked before every step,
    so that a transfer ended elsewhere stops the relay.
    """

    __slots__ = (
        "_loop",
        "_in",
        "_in_sock",
        "_out",
        "_pipe_r",
        "_pipe_w",
        "_reader",
        "_chunked_out",
        "_in_pipe",
        "_segments",
        "_pipe_size",
        "_pending",
        "_open",
        "_framing_in_socket",
        "_ahead",
        "_ahead_bytes",
        "_can_look_ahead",
        "_close_run",
        "_waiting_on",
        "_stopped",
        "_on_done",
        "_on_sender_broken",
        "_on_receiver_broken",
        "_on_bad_framing",
        "_count",
        "_cancelled",
        "_stepper",
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
        on_bad_framing: Callable[[str], None],
        count: Callable[[int, int], None],
        cancelled: Callable[[], bool],
    ) -> None:
        self._loop = asyncio.get_running_loop()
        # Our own descriptors: the transports keep theirs registered with the loop.
        self._in = os.dup(in_fd)
        self._in_sock = socket.socket(fileno=self._in)  # for recv(MSG_PEEK); owns self._in
        self._out = os.dup(out_fd)
        self._pipe_r, self._pipe_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        with contextlib.suppress(OSError):  # a smaller pipe only means more system calls
            fcntl.fcntl(self._pipe_w, fcntl.F_SETPIPE_SZ, PIPE_BYTES)
        self._pipe_size = fcntl.fcntl(self._pipe_w, fcntl.F_GETPIPE_SZ)
        self._reader = reader
        self._chunked_out = chunked_out
        # chunked to chunked passes the sender's checked framing through; anything else moves raw data
        passes_chunks = chunked_out and isinstance(reader, ChunkedReader)
        self._stepper = self._step_chunked if passes_chunks else self._step
        self._in_pipe = 0  # bytes in the kernel pipe, not yet in the receiver's socket
        # what the pipe holds, in order: body bytes (> 0) and the sender's framing passed through (< 0),
        # so that only body bytes are counted as they leave, as on the ordinary path
        self._segments: deque[int] = deque()
        self._pending = b""  # framing (and small data) to write to the receiver before the pipe's bytes
        # chunked to chunked: the sender's own chunk heads go through the pipe once checked (see _step_chunked)
        self._open = False  # the receiver's current chunk is one of the sender's, its data still coming
        self._framing_in_socket = 0  # checked framing bytes at the head of the socket, to splice through
        # chunks checked further on in the socket, past the open chunk's data: (framing, size) each
        self._ahead: deque[tuple[int, int]] = deque()
        self._ahead_bytes = 0
        self._can_look_ahead = passes_chunks and _peek_offsets_work(self._in_sock)
        self._close_run = False  # a chunk we framed ourselves ends when the pipe is empty
        self._waiting_on = ""  # "read", "write" or ""
        self._stopped = False
        self._on_done = on_done
        self._on_sender_broken = on_sender_broken
        self._on_receiver_broken = on_receiver_broken
        self._on_bad_framing = on_bad_framing
        self._count = count
        self._cancelled = cancelled

    def start(self) -> None:
        self._stepper()

    def stop(self) -> None:
        """Unregister and close everything; idempotent. The transports' own descriptors stay open."""
        if self._stopped:
            return
        self._stopped = True
        self._wait(None)
        with contextlib.suppress(OSError):
            self._in_sock.close()  # closes self._in
        for fd in (self._out, self._pipe_r, self._pipe_w):
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
            moved = os.splice(self._in, self._pipe_w, min(limit, self._pipe_size), flags=_SPLICE_FLAGS)
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
        self._segments.append(moved)
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
        self._count(0, self._body_bytes_out(moved))
        if self._in_pipe == 0 and self._chunked_out and not isinstance(self._reader, ChunkedReader):
            self._pending += b"\r\n"  # the end of this run's chunk (the chunked stepper ends its own runs)
        return True

    def _body_bytes_out(self, moved: int) -> int:
        """How many of the ``moved`` bytes that left the pipe were body bytes (not framing)."""
        segments = self._segments
        body = 0
        while moved and segments:
            segment = segments[0]
            take = min(moved, abs(segment))
            moved -= take
            if segment > 0:
                body += take
            rest = abs(segment) - take
            if rest:
                segments[0] = rest if segment > 0 else -rest
            else:
                segments.popleft()
        return body

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
        try:
            used = self._reader.feed(data, self._emit)
        except ProtocolError as exc:
            # a bad chunk: the upload is broken; the sender is told, its receiver sees a cut
            self.stop()
            self._on_bad_framing(str(exc))
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
        self._count(len(piece), len(piece))  # body bytes only: the framing read around them is not counted
        if self._chunked_out:
            self._pending += b"%x\r\n%s\r\n" % (len(piece), piece)
        else:
            self._pending += piece

    def _on_done_later(self, leftover: bytes) -> None:
        done = self._on_done

        def finish(_leftover: bytes) -> None:
            done(leftover)

        self._on_done = finish

    # --- chunked to chunked --------------------------------------------------------------------------

    def _step_chunked(self) -> None:
        """Chunked upload to a chunked response: chunks go through as the sender framed them.

        Each chunk head is looked at in the socket (MSG_PEEK) and checked before it is spliced on
        with its data, so a receiver never gets bytes the server has not validated as framing (no
        response splitting), yet the framing costs no copy and no write of its own. Several chunks
        gather in the pipe before it is emptied. What does not fit this path (chunk extensions,
        the last chunk and its trailers, a chunk already half read when splicing began) is read
        by ``feed`` and framed anew, each piece as a whole chunk.
        """
        if self._stopped:
            return
        if self._cancelled():
            self.stop()
            return
        reader = self._reader
        assert isinstance(reader, ChunkedReader)
        while True:
            if self._pending:  # only ever pending while the pipe is empty: order is kept
                if not self._write_pending():
                    return
                continue
            room = self._pipe_size - self._in_pipe
            # a chunk framed anew must be closed (its CRLF written once the pipe is empty) before more goes in
            if not reader.done and room > 0 and not self._close_run:
                through = self._framing_in_socket + (reader.remaining_in_frame if self._open else 0)
                if self._open:
                    through += self._ahead_bytes
                    if self._can_look_ahead and not self._ahead and through < room:
                        through += self._look_ahead(through, room - through)
                if through:
                    moved = self._splice_chunk_in(min(through, room))
                    if moved < 0:
                        return
                    if moved:
                        continue
                elif reader.remaining_in_frame:  # a chunk begun before this relay: framed anew, alone
                    if not self._in_pipe:
                        if not self._splice_in(reader.remaining_in_frame):
                            return
                        self._close_run = True
                        continue
                else:
                    verdict = self._next_chunk_head()
                    if verdict < 0:
                        return
                    if verdict:
                        continue
                    if not self._in_pipe:
                        if self._open and reader.at_chunk_end:
                            self._pending += b"\r\n"  # close the sender's chunk: feed() takes its CRLF
                        self._open = False
                        if not self._read_framing():
                            return
                        continue
            if self._in_pipe:
                if not self._splice_out():
                    return
                if not self._in_pipe and self._close_run:
                    self._close_run = False
                    self._pending += b"\r\n"
                continue
            if reader.done:
                self.stop()
                self._on_done(b"")
                return
            self._wait("read")  # nothing to move: wait for the sender
            return

    def _splice_chunk_in(self, limit: int) -> int:
        """Splice checked framing and open-chunk data on; -1: wait (or broken), else bytes moved."""
        try:
            moved = os.splice(self._in, self._pipe_w, limit, flags=_SPLICE_FLAGS)
        except BlockingIOError:
            if self._in_pipe:
                return 0  # maybe the pipe is full: empty it first
            self._wait("read")
            return -1
        except OSError:
            self._sender_broken()
            return -1
        if moved == 0:
            self._sender_broken()
            return -1
        self._in_pipe += moved
        reader = self._reader
        assert isinstance(reader, ChunkedReader)
        segments = self._segments
        rest = moved
        body = 0
        while rest:
            if not self._framing_in_socket and not reader.remaining_in_frame:
                # the open chunk's data is through: a chunk checked ahead begins (its CRLF and size line)
                length, size = self._ahead.popleft()
                self._ahead_bytes -= length + size
                reader.enter_chunk(size)
                self._framing_in_socket = length
            framing = min(rest, self._framing_in_socket)
            if framing:
                self._framing_in_socket -= framing
                segments.append(-framing)
                rest -= framing
            data = min(rest, reader.remaining_in_frame)
            if data:
                reader.consumed_raw(data)
                segments.append(data)
                rest -= data
                body += data
        self._count(body, 0)
        return moved

    def _look_ahead(self, offset: int, room: int) -> int:
        """Check the chunk heads already in the socket past ``offset`` (the open chunk's end); bytes added.

        With SO_PEEK_OFF, a peek reads at an offset in the receive queue, so the heads of the chunks
        that follow can be checked before any of them is taken: they then go into the pipe in one
        splice instead of one per chunk (on loopback, every read of the socket costs TCP work too).
        A head that is not plain (or not there yet) ends the look; the ordinary steps handle it.
        """
        try:
            available = int.from_bytes(fcntl.ioctl(self._in, termios.FIONREAD, b"\0\0\0\0"), sys.byteorder, signed=True)
        except OSError:
            return 0  # the ordinary steps meet whatever failed
        if available <= offset:
            return 0  # the open chunk's data is still coming: nothing to look at yet
        sock = self._in_sock
        added = 0
        try:
            while offset + added < available and added < room:
                sock.setsockopt(socket.SOL_SOCKET, _SO_PEEK_OFF, offset + added)
                measured = measure_framing(sock.recv(FRAMING_PEEK_BYTES, socket.MSG_PEEK), closes_chunk=True)
                if measured is None:
                    break
                length, size = measured
                self._ahead.append(measured)
                added += length + size
        except OSError:
            pass  # the ordinary steps meet whatever failed
        finally:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, _SO_PEEK_OFF, -1)  # plain peeks again (at the head)
        self._ahead_bytes += added
        return added

    def _next_chunk_head(self) -> int:
        """Look for a plain chunk head at the socket; 1: found (framing_in_socket set), 0: not one, -1: wait."""
        reader = self._reader
        assert isinstance(reader, ChunkedReader)
        try:
            seen = self._in_sock.recv(FRAMING_PEEK_BYTES, socket.MSG_PEEK)
        except BlockingIOError:
            if self._in_pipe:
                return 0
            self._wait("read")
            return -1
        except OSError:
            self._sender_broken()
            return -1
        if not seen:
            if self._in_pipe:
                return 0
            self._sender_broken()
            return -1
        measured = reader.peek_framing(seen)
        if measured is None:
            return 0
        length, size = measured
        if reader.at_chunk_end and not self._open:
            # the receiver's chunk was closed already (framed anew): take the sender's CRLF out
            try:
                os.read(self._in, 2)
            except OSError:
                self._sender_broken()
                return -1
            length -= 2
        reader.enter_chunk(size)
        self._framing_in_socket = length
        self._open = True
        return 1

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
            self._loop.add_reader(self._in, self._stepper)
        elif what == "write":
            self._loop.add_writer(self._out, self._stepper)

    def _sender_broken(self) -> None:
        self.stop()
        self._on_sender_broken()

    def _receiver_broken(self) -> None:
        self.stop()
        self._on_receiver_broken()


# --- one upload to several receivers: tee(2) ------------------------------------------------------------


def _load_tee() -> Callable[[int, int, int, int], int] | None:
    """libc's ``tee(2)`` (the os module has ``splice`` but no ``tee``), or None where it is missing."""
    if not SPLICE_AVAILABLE:
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        tee = libc.tee
    except (OSError, AttributeError):
        return None
    tee.argtypes = (ctypes.c_int, ctypes.c_int, ctypes.c_size_t, ctypes.c_uint)
    tee.restype = ctypes.c_ssize_t

    def call(fd_in: int, fd_out: int, length: int, flags: int) -> int:
        moved = int(tee(fd_in, fd_out, length, flags))
        if moved < 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err))
        return moved

    return call


_tee = _load_tee()
#: Whether an upload can be spliced to several receivers at once (tee duplicates the pipe's pages).
TEE_AVAILABLE = _tee is not None


class _Branch:
    """One more receiver of a fan-out: its socket, its own pipe (filled by tee), what it still owes."""

    __slots__ = ("out", "pipe_r", "pipe_w", "in_pipe", "pending", "gone")

    def __init__(self, out: int, pipe_r: int, pipe_w: int, gone: Callable[[], bool]) -> None:
        self.out, self.pipe_r, self.pipe_w = out, pipe_r, pipe_w
        self.in_pipe = 0  # bytes tee'd into this branch's pipe, not yet in its socket
        self.pending = b""  # framing to write before the pipe's bytes
        self.gone = gone

    @classmethod
    def opened(cls, out_fd: int, pipe_size: int, gone: Callable[[], bool]) -> _Branch:
        """A branch with its own duplicate of ``out_fd`` and a pipe of its own."""
        pipe_r, pipe_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        with contextlib.suppress(OSError):
            fcntl.fcntl(pipe_w, fcntl.F_SETPIPE_SZ, pipe_size)
        return cls(os.dup(out_fd), pipe_r, pipe_w, gone)

    def close(self) -> None:
        for fd in (self.out, self.pipe_r, self.pipe_w):
            with contextlib.suppress(OSError):
                os.close(fd)


class FanOutRelay(SpliceRelay):
    """``SpliceRelay`` to several receivers: one (the *primary*) drains the relay's pipe, the others their
    own pipes, which ``tee(2)`` fills with the same pages (no copy, no byte in user space).

    A *round* is what the pipe holds when it is emptied: it is tee'd once to every other receiver's
    (empty, equally sized) pipe, then each receiver's copy goes out as its socket takes it; nothing new
    enters the pipe until every receiver has its whole round (the slowest receiver sets the pace, as on
    the ordinary path). Framing written by the relay (``_pending``) goes to every receiver. A receiver
    that breaks or leaves is dropped and the others go on; ``on_receiver_broken_at(index)`` says which
    broke. ``count(read, written)`` counts the primary's bytes written.
    """

    __slots__ = ("_branches", "_primary", "_round", "_blocked", "_writers", "_on_branch_broken", "_inner")

    def __init__(
        self,
        *,
        in_fd: int,
        out_fds: list[int],
        gone: list[Callable[[], bool]],
        reader: BodyReader,
        chunked_out: bool,
        on_done: Callable[[bytes], None],
        on_sender_broken: Callable[[], None],
        on_receiver_broken_at: Callable[[int], None],
        on_bad_framing: Callable[[str], None],
        count: Callable[[int, int], None],
        cancelled: Callable[[], bool],
    ) -> None:
        super().__init__(
            in_fd=in_fd,
            out_fd=out_fds[0],
            reader=reader,
            chunked_out=chunked_out,
            on_done=on_done,
            on_sender_broken=on_sender_broken,
            on_receiver_broken=lambda: None,  # each branch reports its own (on_receiver_broken_at)
            on_bad_framing=on_bad_framing,
            count=count,
            cancelled=cancelled,
        )
        # the primary: the relay's own pipe and descriptor
        first = _Branch(self._out, self._pipe_r, self._pipe_w, gone[0])
        self._branches: list[_Branch | None] = [first]
        try:
            for fd, is_gone in zip(out_fds[1:], gone[1:], strict=True):
                self._branches.append(_Branch.opened(fd, self._pipe_size, is_gone))
        except OSError:
            self.stop()
            raise
        self._primary = 0
        self._round = False  # the pipe's bytes were tee'd: nothing more goes in until every branch has them
        self._blocked: set[int] = set()  # descriptors that could not take more
        self._writers: set[int] = set()  # descriptors registered with the loop for writing
        self._on_branch_broken = on_receiver_broken_at
        self._inner = self._stepper
        self._stepper = self._fan_step

    def start(self) -> None:
        self._fan_step()

    def delivered(self, index: int) -> bool:
        """Whether receiver ``index`` has had its whole body handed to its socket.

        Each receiver gets a round at its own pace, and the relay ends once the slowest has it: a
        receiver whose response has a length may take its last byte and close before then. (A chunked
        response ends with a last chunk the transport writes after the relay: never delivered here.)
        """
        branch = self._branches[index]
        if branch is None or self._stopped or self._chunked_out or not self._reader.done:
            return False
        if self._pending or branch.pending or branch.in_pipe:
            return False
        return self._round or not self._in_pipe  # (outside a round, bytes in the pipe are not tee'd yet)

    def stop(self) -> None:
        if self._stopped:
            return
        for fd in self._writers:
            self._loop.remove_writer(fd)
        self._writers.clear()
        super().stop()  # closes the primary's descriptors (the relay's own)
        for index, branch in enumerate(self._branches):
            if branch is not None and index != self._primary:
                branch.close()

    def _fan_step(self) -> None:
        if self._stopped:
            return
        for index, branch in enumerate(self._branches):
            if branch is not None and branch.gone():
                self._drop(index, broken=False)
                if self._stopped:
                    return
        self._inner()

    # --- output to every branch ------------------------------------------------------------------------

    def _write_pending(self) -> bool:
        if self._pending:
            for branch in self._branches:
                if branch is not None:
                    branch.pending += self._pending
            self._pending = b""
        return self._flush(pipes=False)

    def _splice_out(self) -> bool:
        if not self._round:
            moved = self._in_pipe
            for index, branch in enumerate(self._branches):
                if branch is None or index == self._primary:
                    continue
                if not self._tee_to(branch, moved):  # cannot happen with an empty pipe as large as ours
                    self._drop(index, broken=True)
                    if self._stopped:
                        return False
            primary = self._branches[self._primary]
            assert primary is not None
            primary.in_pipe = moved
            self._round = True
            self._in_pipe = self._pipe_size  # no room: nothing goes in before the round is out
        if not self._flush(pipes=True):
            return False
        self._round = False
        self._in_pipe = 0
        if self._chunked_out and not isinstance(self._reader, ChunkedReader):
            self._pending += b"\r\n"  # the end of this run's chunk
        return True

    def _tee_to(self, branch: _Branch, length: int) -> bool:
        assert _tee is not None
        try:
            copied = _tee(self._pipe_r, branch.pipe_w, length, _SPLICE_FLAGS)
        except OSError:
            return False
        branch.in_pipe = copied
        return copied == length

    def _flush(self, *, pipes: bool) -> bool:
        """Write every branch's framing (and, with ``pipes``, its pipe's bytes); True once all are out."""
        self._blocked.clear()
        counted = 0
        for index, branch in enumerate(self._branches):
            if branch is None:
                continue
            try:
                while branch.pending:
                    written = os.write(branch.out, branch.pending)
                    branch.pending = branch.pending[written:]
                while pipes and branch.in_pipe:
                    moved = os.splice(branch.pipe_r, branch.out, branch.in_pipe, flags=_SPLICE_FLAGS)
                    branch.in_pipe -= moved
                    if index == self._primary:
                        counted += self._body_bytes_out(moved)
            except BlockingIOError:
                self._blocked.add(branch.out)
            except OSError:
                self._drop(index, broken=True)
                if self._stopped:
                    return False
        if counted:
            self._count(0, counted)
        if self._blocked:
            self._wait("write")
            return False
        return True

    def _drop(self, index: int, *, broken: bool) -> None:
        branch = self._branches[index]
        if branch is None:
            return
        self._branches[index] = None
        self._blocked.discard(branch.out)
        if branch.out in self._writers:
            self._writers.discard(branch.out)
            self._loop.remove_writer(branch.out)
        if broken:
            self._on_branch_broken(index)
        heirs = [i for i, b in enumerate(self._branches) if b is not None]
        if not heirs:
            self._branches[index] = branch  # stop() closes the relay's own descriptors
            self.stop()
            return
        if index != self._primary:
            branch.close()
            return
        # The primary leaves: the next branch's pipe becomes the relay's pipe.
        heir = self._branches[heirs[0]]
        assert heir is not None
        if not self._round and self._in_pipe and not self._tee_to(heir, self._in_pipe):
            # bytes not yet tee'd must reach the heir's (empty) pipe; failing that, the upload is cut
            self._branches[index] = branch
            self._sender_broken()
            return
        branch.close()  # in a round, what the primary had not taken is thrown away with its pipe
        self._primary = heirs[0]
        self._pipe_r, self._pipe_w, self._out = heir.pipe_r, heir.pipe_w, heir.out

    # --- registration ------------------------------------------------------------------------------------

    def _wait(self, what: str | None) -> None:
        if what == "write":
            for fd in self._writers - self._blocked:
                self._loop.remove_writer(fd)
            for fd in self._blocked - self._writers:
                self._loop.add_writer(fd, self._stepper)
            self._writers = set(self._blocked)
            if self._waiting_on == "read":
                self._loop.remove_reader(self._in)
            self._waiting_on = "write"
            return
        for fd in self._writers:
            self._loop.remove_writer(fd)
        self._writers.clear()
        if self._waiting_on == "write":
            self._waiting_on = ""
        super()._wait(what)
