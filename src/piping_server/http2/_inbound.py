"""Inbound frames: the DATA of open streams taken from the received bytes as they are, the rest to h2.

h2 copies every frame out of its buffer twice (its FrameBuffer joins each read onto what it holds,
then ``DataFrame.parse_body`` copies the body out): for an upload over h2c that was about half of the
server's CPU. Here the complete frames of each read are found in place. A DATA frame h2 would accept
without a word (its stream open for receiving, within both receive windows and any announced
content-length, no padding, no END_STREAM, not inside a header block) is accounted exactly as h2's
``_receive_data_frame`` accounts it and handed over as a memoryview slice of the read: no copy. Every
other frame, and any DATA frame that fails a check (so that h2 raises the error it always raised),
goes to h2 in arrival order; h2 only ever sees whole frames, so its own framing stays in step.

The accounting uses h2 attributes that are not public API (the window managers, the content-length
counters, checked against h2 4.x). Should they ever be missing, the walker hands everything to h2
from then on: slower, never wrong.
"""

from __future__ import annotations

from collections.abc import Callable

import h2.connection
from h2.connection import ConnectionState
from h2.stream import StreamState

__all__ = ["InboundFrames"]

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
        self.walking = True

    def feed(
        self,
        data: bytes,
        to_h2: Callable[[bytes | memoryview], bool],
        on_data: Callable[[int, memoryview, int], None],
    ) -> None:
        """Handle one read. ``to_h2`` gets whole frames (False: the connection is closing, stop);
        ``on_data(stream_id, data, flow_controlled_length)`` gets the fast DATA frames, already accounted."""
        if not self.walking:
            partial, self._partial = self._partial, None
            to_h2(bytes(partial[: self._filled]) + data if partial else data)
            return
        view = memoryview(data)
        if self._preface_left:
            head = view[: self._preface_left]
            self._preface_left -= len(head)
            view = view[len(head) :]
            if not to_h2(head) or not view:
                return
        rest = self._rest
        if rest:
            # the rest of a DATA frame an earlier read began: handed over as it comes, no copy
            piece = view[:rest]
            self._rest = rest - len(piece)
            view = view[len(piece) :]
            on_data(self._rest_stream, piece, len(piece))
            if not view:
                return
        partial = self._partial
        if partial is not None:
            # complete the frame an earlier read began: only that frame is copied
            if self._filled < 9:  # its header was cut: complete that first, then make room for the frame
                piece = view[: 9 - self._filled]
                partial[self._filled : self._filled + len(piece)] = piece
                self._filled += len(piece)
                view = view[len(piece) :]
                if self._filled < 9:
                    return
                partial = self._start_partial(partial)
                if partial is None:
                    self._give_up(view, to_h2)
                    return
            filled = self._filled
            piece = view[: len(partial) - filled]
            partial[filled : filled + len(piece)] = piece
            self._filled = filled = filled + len(piece)
            view = view[len(piece) :]
            if filled < len(partial):
                return
            self._partial = None
            if not self._walk(memoryview(partial), to_h2, on_data):
                return
        if view:
            self._walk(view, to_h2, on_data)

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
    ) -> bool:
        end = len(buf)
        pos = 0
        run = 0  # the frames from here to pos are h2's, not handed over yet
        max_frame = self._max_frame
        while end - pos >= 9:
            length = (buf[pos] << 16) | (buf[pos + 1] << 8) | buf[pos + 2]
            if length > max_frame:
                if run < pos and not to_h2(buf[run:pos]):
                    return False
                self._give_up(buf[pos:], to_h2)
                return False
            nxt = pos + 9 + length
            kind = buf[pos + 3]
            flags = buf[pos + 4]
            fast = kind == _DATA and not flags & (_END_STREAM | _PADDED) and not self._in_header_block
            if nxt > end:
                stream_id = int.from_bytes(buf[pos + 5 : pos + 9], "big") & 0x7FFFFFFF
                if fast and length and stream_id in self._h2.streams:
                    # a DATA frame the read cut: what has come goes now, the rest as it arrives (no copy)
                    if run < pos and not to_h2(buf[run:pos]):
                        return False
                    run = pos
                    if self._account(stream_id, length):
                        if end > pos + 9:
                            on_data(stream_id, buf[pos + 9 : end], end - pos - 9)
                        self._rest = nxt - end
                        self._rest_stream = stream_id
                        return True
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
                            return False
                        run = pos
                    if self._account(stream_id, length):
                        on_data(stream_id, buf[pos + 9 : nxt], length)
                        run = nxt
                # else: left in the run, for h2 to handle (and raise about) as it always did
            elif kind in (_HEADERS, _PUSH_PROMISE):
                self._in_header_block = not flags & _END_HEADERS
            elif kind == _CONTINUATION and flags & _END_HEADERS:
                self._in_header_block = False
            pos = nxt
        if run < pos and not to_h2(buf[run:pos]):
            return False
        if pos < end:
            tail = buf[pos:]
            if len(tail) < 9:
                self._partial = bytearray(9)  # the header's size; the frame's once the header is whole
                self._partial[: len(tail)] = tail
                self._filled = len(tail)
            else:
                self._start_partial(tail)  # (a frame too big was given up on above)
        return True

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
        except AttributeError:
            self.walking = False  # another h2 than the one this was written against: h2 does it all
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
