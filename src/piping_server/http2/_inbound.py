"""Inbound frames: the DATA of open streams taken from the received bytes as they are, the rest to h2.

h2 copies every frame out of its buffer twice (its FrameBuffer joins each read onto what it holds,
then ``DataFrame.parse_body`` copies the body out): for an upload over h2c that was about half of the
server's CPU. Here the complete frames of each read are found in place. A DATA frame h2 would accept
without a word (its stream open for receiving, within both receive windows and any announced
content-length, no padding, no END_STREAM, not inside a header block) is accounted exactly as h2's
``_receive_data_frame`` accounts it and handed over as a memoryview slice of the read: no copy. Every
other frame, and any DATA frame that fails a check (so that h2 raises the error it always raised),
goes to h2 in arrival order; h2 only ever sees whole frames, so its own framing stays in step.

The walker also watches what h2 would hold without a bound: the bytes of a header block still open
(HEADERS without END_HEADERS, then CONTINUATION frames: CVE-2024-27316's class) are counted as they
come, and past ``block_limit`` nothing more of the block reaches h2 (``oversized_block`` is set; the
connection ends it). Frames for h2 go in runs of at most ``RUN_FRAMES``, so that the connection can
stop between runs (``to_h2`` returning False) and ``feed`` hands back the bytes not yet handled: one
read full of tiny frames never holds the event loop for long (runs of ``run_frames``, set by the connection).

The accounting uses h2 attributes that are not public API (the window managers, the content-length
counters, checked against h2 4.x; ``tests/http2/test_h2_internals.py`` fails when an h2 upgrade changes
them, and pyproject.toml pins the tested minor versions). Should they ever be missing at run time, the
walker says so in the log and hands everything to h2 from then on: slower, never wrong.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import h2
import h2.connection
from h2.connection import ConnectionState
from h2.stream import StreamState

__all__ = ["RUN_FRAMES", "SMALL_RUN_FRAMES", "InboundFrames"]

log = logging.getLogger("piping_server.http2")

#: h2 is given at most this many frames at once (not counting fast DATA), so a read can be split between turns;
#: a connection whose reads take more than a turn gets the small runs (finer turns), the others the large ones
#: (each call into h2 costs: runs of 8 for everyone took ~10 % more CPU per small transfer, bench line 10).
RUN_FRAMES = 64
SMALL_RUN_FRAMES = 8

#: Stream states in which DATA may be received (RFC 9113 section 5.1).
_CAN_RECEIVE = frozenset({StreamState.OPEN, StreamState.HALF_CLOSED_LOCAL})
#: Connection states in which DATA may be received (h2's connection state machine).
_CONNECTION_OPEN = frozenset({ConnectionState.CLIENT_OPEN, ConnectionState.SERVER_OPEN})
_DATA, _HEADERS, _PUSH_PROMISE, _CONTINUATION = 0x0, 0x1, 0x5, 0x9
_END_STREAM, _END_HEADERS, _PADDED = 0x1, 0x4, 0x8


class InboundFrames:
    """Splits one connection's received bytes into h2's share and the fast DATA frames."""

    __slots__ = (
        "_h2",
        "_max_frame",
        "_partial",
        "_filled",
        "_rest",
        "_rest_stream",
        "_preface_left",
        "_in_header_block",
        "block_bytes",
        "block_limit",
        "oversized_block",
        "run_frames",
        "walking",
    )

    def __init__(self, conn: h2.connection.H2Connection, preface_len: int, max_frame: int) -> None:
        self._h2 = conn
        self._max_frame = max_frame  # h2 checks frame sizes against the same limit
        #: a frame whose end has not arrived yet: its whole size once its header is known (filled up to _filled)
        self._partial: bytearray | None = None
        self._filled = 0
        #: body bytes still to come of a fast DATA frame cut by the end of a read (already accounted), its stream
        self._rest = 0
        self._rest_stream = 0
        self._preface_left = preface_len  # the client's connection preface is h2's to check
        self._in_header_block = False  # between a HEADERS without END_HEADERS and its last CONTINUATION
        #: bytes of the header block under way (its frames' payloads, padding included); 0 outside one
        self.block_bytes = 0
        #: a header block above this many bytes never reaches h2 whole: ``oversized_block`` is set instead
        self.block_limit = 1 << 62
        self.oversized_block = False
        self.run_frames = RUN_FRAMES  # the connection sets it (RUN_FRAMES or SMALL_RUN_FRAMES)
        self.walking = True

    def feed(
        self,
        data: bytes,
        to_h2: Callable[[bytes | memoryview], bool],
        on_data: Callable[[int, memoryview, int], None],
    ) -> memoryview | bytes | None:
        """Handle one read. ``to_h2`` gets whole frames (False: stop, the connection is closing or has done
        enough for this turn); ``on_data(stream_id, data, flow_controlled_length)`` gets the fast DATA frames,
        already accounted. Returns the bytes not handled when ``to_h2`` said stop (feed them again later, or
        drop them when closing); None when all were handled."""
        if not self.walking:
            partial, self._partial = self._partial, None
            to_h2(bytes(partial[: self._filled]) + data if partial else data)
            return None
        view = memoryview(data)
        if self._preface_left:
            head = view[: self._preface_left]
            self._preface_left -= len(head)
            view = view[len(head) :]
            if not to_h2(head):
                return view or None
            if not view:
                return None
        rest = self._rest
        if rest:
            # the rest of a DATA frame an earlier read began: handed over as it comes, no copy
            piece = view[:rest]
            self._rest = rest - len(piece)
            view = view[len(piece) :]
            on_data(self._rest_stream, piece, len(piece))
            if not view:
                return None
        partial = self._partial
        if partial is not None:
            # complete the frame an earlier read began: only that frame is copied
            if self._filled < 9:  # its header was cut: complete that first, then make room for the frame
                piece = view[: 9 - self._filled]
                partial[self._filled : self._filled + len(piece)] = piece
                self._filled += len(piece)
                view = view[len(piece) :]
                if self._filled < 9:
                    return None
                partial = self._start_partial(partial)
                if partial is None:
                    self._give_up(view, to_h2)
                    return None
            filled = self._filled
            piece = view[: len(partial) - filled]
            partial[filled : filled + len(piece)] = piece
            self._filled = filled = filled + len(piece)
            view = view[len(piece) :]
            if filled < len(partial):
                return None
            self._partial = None
            stop = self._walk(memoryview(partial), to_h2, on_data)
            if stop >= 0:
                return bytes(partial[stop:]) + bytes(view)
        if view:
            stop = self._walk(view, to_h2, on_data)
            if stop >= 0:
                return view[stop:]
        return None

    @property
    def header_block_open(self) -> bool:
        """A header block has begun (HEADERS without END_HEADERS) and not yet ended."""
        return self._in_header_block

    def _start_partial(self, head: bytes | bytearray | memoryview) -> bytearray | None:
        """Keep the start of a frame (its whole header at least) in a buffer of the frame's size; None if too big."""
        length = int.from_bytes(head[:3], "big")
        if length > self._max_frame:
            self._partial = bytearray(head)
            self._filled = len(head)
            return None
        partial = self._partial = bytearray(9 + length)
        partial[: len(head)] = head
        self._filled = len(head)
        return partial

    def _give_up(self, rest: memoryview, to_h2: Callable[[bytes | memoryview], bool]) -> None:
        # A frame above the limit: h2 answers it (FRAME_SIZE_ERROR) as it always did; no more walking.
        self.walking = False
        partial, self._partial = self._partial, None
        if partial:
            to_h2(bytes(partial[: self._filled]) + rest)
        else:
            to_h2(rest)

    def _walk(
        self,
        buf: memoryview,
        to_h2: Callable[[bytes | memoryview], bool],
        on_data: Callable[[int, memoryview, int], None],
    ) -> int:
        """Walk the whole frames of ``buf``; where it stopped when ``to_h2`` said stop, else -1.

        Every frame before the returned position is handled (and counted); none after it is looked at."""
        end = len(buf)
        pos = 0
        run = 0  # the frames from here to pos are h2's, not handed over yet
        frames = 0  # how many
        run_frames = self.run_frames
        max_frame = self._max_frame
        while end - pos >= 9:
            length = (buf[pos] << 16) | (buf[pos + 1] << 8) | buf[pos + 2]
            if length > max_frame:
                if run < pos and not to_h2(buf[run:pos]):
                    return pos
                self._give_up(buf[pos:], to_h2)
                return -1
            nxt = pos + 9 + length
            kind = buf[pos + 3]
            flags = buf[pos + 4]
            fast = kind == _DATA and not flags & (_END_STREAM | _PADDED) and not self._in_header_block
            if nxt > end:
                stream_id = int.from_bytes(buf[pos + 5 : pos + 9], "big") & 0x7FFFFFFF
                if fast and length and stream_id in self._h2.streams:
                    # a DATA frame the read cut: what has come goes now, the rest as it arrives (no copy)
                    if run < pos and not to_h2(buf[run:pos]):
                        return pos
                    run = pos
                    if self._account(stream_id, length):
                        if end > pos + 9:
                            on_data(stream_id, buf[pos + 9 : end], end - pos - 9)
                        self._rest = nxt - end
                        self._rest_stream = stream_id
                        return -1
                break
            if fast:
                stream_id = int.from_bytes(buf[pos + 5 : pos + 9], "big") & 0x7FFFFFFF
                # A stream h2 has not seen yet is opened by the frames in the run: this frame stays with them,
                # so that h2 judges the request and its first DATA together, as it always did (a body that
                # breaks its content-length then fails before the request is dispatched, never after a 200).
                if stream_id in self._h2.streams:
                    # what h2 was given before this frame may have changed its stream (a reset): h2 first
                    if run < pos:
                        if not to_h2(buf[run:pos]):
                            return pos
                        run = pos
                        frames = 0
                    if self._account(stream_id, length):
                        on_data(stream_id, buf[pos + 9 : nxt], length)
                        run = nxt
                        pos = nxt
                        continue
                # else: left in the run, for h2 to handle (and raise about) as it always did
            elif kind in (_HEADERS, _PUSH_PROMISE, _CONTINUATION):
                block = length + (self.block_bytes if kind == _CONTINUATION else 0)
                if block > self.block_limit:
                    # h2 would hold the block until its end, whatever its size: it never sees this frame
                    self.oversized_block = True
                    if run < pos:
                        to_h2(buf[run:pos])
                    return pos
                ended = bool(flags & _END_HEADERS)
                self._in_header_block = not ended
                self.block_bytes = 0 if ended else block
            frames += 1
            pos = nxt
            if frames >= run_frames:
                if not to_h2(buf[run:pos]):
                    return pos
                run = pos
                frames = 0
        if run < pos and not to_h2(buf[run:pos]):
            return pos
        if pos < end:
            tail = buf[pos:]
            if len(tail) < 9:
                self._partial = bytearray(9)  # the header's size; the frame's once the header is whole
                self._partial[: len(tail)] = tail
                self._filled = len(tail)
            else:
                self._start_partial(tail)  # (a frame too big was given up on above)
        return -1

    def _account(self, stream_id: int, length: int) -> bool:
        """Count a DATA frame as h2's ``_receive_data_frame`` would; False (nothing counted) if h2 should see it."""
        conn = self._h2
        try:
            stream = conn.streams.get(stream_id)
            if (
                stream is None
                or conn.state_machine.state not in _CONNECTION_OPEN
                or stream.state_machine.state not in _CAN_RECEIVE
                or not stream.state_machine.headers_received
            ):
                return False
            conn_window = conn._inbound_flow_control_window_manager
            stream_window = stream._inbound_window_manager
            expected = stream._expected_content_length
            received = stream._actual_content_length
        except AttributeError as exc:
            # another h2 than the one this was written against (the pin in pyproject.toml was bypassed)
            log.warning("h2 %s lacks what the DATA fast path reads (%s): all goes through h2", h2.__version__, exc)
            self.walking = False
            return False
        if conn_window.current_window_size < length or stream_window.current_window_size < length:
            return False  # a flow-control error: h2 raises it
        if expected is not None and received + length > expected:
            return False  # more than the content-length said: h2 raises it
        # what h2 does for such a frame (the state machines' RECV_DATA changes no state in these states)
        conn_window.current_window_size -= length
        stream_window.current_window_size -= length
        stream._actual_content_length = received + length
        return True
