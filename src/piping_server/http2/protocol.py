"""HTTP/2 (h2 over TLS, and cleartext h2c with prior knowledge) on an asyncio transport.

The ``h2`` library is the sans-IO engine: bytes in, events out, frames pulled with
``data_to_send()``. One ``Http2Protocol`` per connection; one ``Http2Stream`` per request stream,
an endpoint of the relay exactly like ``http1.protocol.Http1Exchange``.

Flow control is the backpressure (docs/protocol.md section 1):

* *Inbound* (a sender's upload): received DATA is acknowledged (``acknowledge_received_data``,
  which gives the window back to the client) only while the stream's pipe is not paused. A paused
  sender therefore stops after at most one stream window, whatever else the connection carries.
  A waiting sender keeps the small default window (its body is held until a receiver comes, as
  HTTP/1 holds ``WAITING_BODY_LIMIT``); the window grows to ``STREAM_WINDOW`` when its transfer
  starts, as far as the connection's ``UPLOAD_GRANT_BUDGET`` allows (granted windows go back to it
  when an upload ends). The connection window is so large that only stream windows ever throttle,
  so one paused stream never stalls the others, and what a connection's uploads can park in the
  server is bounded by the sum of their stream windows.
* *Outbound* (a receiver's body): each stream keeps its own queue and sends as the peer's windows
  and the transport allow. A queue above ``STREAM_HIGH_WATER`` pauses its pipe's sender; below
  ``STREAM_LOW_WATER`` it resumes. A stuck stream only fills its own queue. Once the connection's
  queues hold more than ``CONNECTION_QUEUE_HIGH``, each stream pauses its sender at
  ``SHARE_HIGH_WATER`` instead (and resumes at ``SHARE_LOW_WATER``): many stuck streams of one
  connection hold little more than that together.

What a hostile client can make a connection cost is bounded too (docs/security.md, "HTTP/2"): resets
and control frames draw from refilling budgets (``_guard.py``; overdrawn: GOAWAY ENHANCE_YOUR_CALM),
h2 works on one read for at most ``TURN_S`` per loop turn, reading stops while the
client does not take what is written to it, header blocks are bounded in size and time, and a
connection with no open stream is ended after the keep-alive timeout.

Frames are produced in batches: events of one read are handled, then every stream with pending
output is flushed (streams take turns of ``FLUSH_TURN_BYTES``) and the connection writes once.
Window acknowledgements are batched the same way. DATA frames of a receiver's body are framed here
rather than by ``h2.send_data`` (which costs more per 16 KiB frame than the whole rest of the
relay), keeping h2's window accounting exactly as ``send_data`` keeps it; everything else (headers,
END_STREAM, resets, settings, GOAWAY) goes through h2.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import struct
import time
from collections import deque
from collections.abc import Callable, Sequence

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings
import hpack
import hyperframe.frame
from h2.connection import ConnectionInputs, ConnectionState
from h2.errors import ErrorCodes
from h2.stream import StreamInputs, StreamState

from ..core import PeerLost, ReceiverFinished
from ..relay._exchange import Exchange
from ..relay._flow import Chunk, Pipe, Relay, UploadInfo
from ..relay._headers import MESSAGE_HEADERS, Headers, http_date, valid_host
from ..relay._hooks import Connection, Refusal
from ..server._owner_relay import Forward
from . import H2_PREFACE
from ._guard import CONTROL_BURST, CONTROL_RATE, RESET_BURST, RESET_RATE, Budget
from ._inbound import RUN_FRAMES, SMALL_RUN_FRAMES, InboundFrames

__all__ = ["H2_PREFACE", "Http2Protocol", "Http2Stream", "take_over"]

log = logging.getLogger("piping_server.http2")


#: A stream's receive window once its transfer runs: several MiB, so that the window never throttles
#: a fast upload on a high-latency path (a window per round trip is the ceiling of a stream's speed).
STREAM_WINDOW = 8 * 1024 * 1024
#: The window every new stream starts with (the protocol's default): what a waiting sender may send
#: before a receiver comes, like HTTP/1's WAITING_BODY_LIMIT.
INITIAL_WINDOW = 65_535
#: The connection's receive window: as large as the protocol allows, so that only stream windows
#: (never the shared one) hold an upload back.
CONNECTION_WINDOW = 2**31 - 1
#: The largest DATA frame we accept. 64 KiB measured best (bench/README.md, second round): bigger
#: frames mean fewer events, but each frame's body becomes one bytes object (h2 copies it out of its
#: buffer), and past glibc's 128 KiB mmap threshold every one costs page faults: 1 MiB frames took
#: ~1.8x the CPU per GiB of 64 KiB ones over h2c and TLS alike. Smaller frames cost more in events.
MAX_INBOUND_FRAME = 64 * 1024
#: The request headers of one stream may not exceed this (decoded), unless the operator says otherwise.
MAX_HEADER_LIST_BYTES = 64 * 1024
#: Streams one connection may have open at once.
MAX_CONCURRENT_STREAMS = 256
#: A receiver stream above this many queued bytes pauses its sender; it resumes at the low mark.
STREAM_HIGH_WATER = 1024 * 1024
STREAM_LOW_WATER = 256 * 1024
#: The transport pauses the flushing of stream queues above this many buffered bytes.
WRITE_HIGH_WATER = 1024 * 1024
WRITE_LOW_WATER = 256 * 1024
#: Bytes one stream may send per turn of a flush, so that streams of one connection take turns.
FLUSH_TURN_BYTES = 256 * 1024
#: The body of a refused upload is read and dropped up to this much; past it, the stream is reset.
DISCARD_LIMIT = 1024 * 1024
#: How often a finished receiver's connection is checked until its bytes have left for the kernel.
DRAIN_POLL_S = 0.005
#: Window beyond INITIAL_WINDOW that one connection's running uploads may be granted in all: what a client
#: can park in the server by sending on streams whose receivers do not read (each grant is at most
#: STREAM_WINDOW - INITIAL_WINDOW, so one fast upload keeps its whole window).
UPLOAD_GRANT_BUDGET = 16 * 1024 * 1024
#: Above this many bytes queued on a connection's streams in all, each receiver stream pauses its sender at
#: SHARE_HIGH_WATER and resumes at SHARE_LOW_WATER (instead of STREAM_HIGH_WATER / STREAM_LOW_WATER).
CONNECTION_QUEUE_HIGH = 16 * 1024 * 1024
SHARE_HIGH_WATER = 64 * 1024
SHARE_LOW_WATER = 16 * 1024
#: Bytes of whole responses (pages, refusals) a connection may have queued and not sent; past it, new streams
#: are refused (REFUSED_STREAM, which a client may retry) until the client takes what it asked for.
WHOLE_QUEUE_LIMIT = 4 * 1024 * 1024
#: CPU seconds of h2 work one connection's read may take per loop turn; the rest of the read waits for the next
#: turn (checked between runs of frames, _inbound.RUN_FRAMES / SMALL_RUN_FRAMES: one read full of tiny frames
#: cannot hold the loop).
#: CPU time, not wall-clock: on a loaded machine the process is descheduled mid-read, which is no work of ours.
TURN_S = 0.0005
#: Events one read may cause before the turn's clock starts: an ordinary read never reads the clock.
TURN_FREE_EVENTS = 32
#: Encoded response header blocks a connection keeps for reuse (Http2Protocol._encode), each of at most
#: KEPT_BLOCK_BYTES of fields (a sender's X-Piping values reach its receivers' heads).
KEPT_BLOCKS = 16
KEPT_BLOCK_BYTES = 4096
#: Our HPACK encoder's dynamic table at most (the default). A client's SETTINGS_HEADER_TABLE_SIZE says what
#: its decoder allows, up to 2^32 - 1, and h2 makes it the encoder's size: every field of every head sent
#: would stay in memory (a date a second, the senders' X-Piping values). An encoder may use less than the
#: decoder allows, and says so with a size update (RFC 7541 section 4.2).
ENCODER_TABLE_BYTES = 4096
#: A connection ended for abuse or a timeout is cut this long after its GOAWAY if its client does not read.
ABORT_GRACE_S = 2.0
#: Header list bytes (decoded) are at least the block's HPACK bytes; this covers a frame's padding and priority.
BLOCK_SLACK = 512
#: Bytes buffered for a client (past WRITE_HIGH_WATER, where stream data already stops) beyond which its
#: connection is read no more until they leave.
BACKED_UP_BYTES = 4 * WRITE_HIGH_WATER
#: Why reading a connection is paused (bits): the rest of a read waits for the next turn; output backed up.
_YIELDED, _BACKED_UP = 1, 2


def _short_frame_repr(self: hyperframe.frame.Frame) -> str:
    return f"{type(self).__name__}(stream_id={self.stream_id})"


# h2 logs every received frame as ``repr(frame)``, built even when nothing is logged: a DATA frame's
# repr copied and hex-encodes its whole payload (a third of the cost of receiving an upload), a HEADERS
# frame's its header block, and the flags are sorted and joined (3 % of a small transfer's CPU, bench
# line 10). Every frame's repr is a short summary here: no copy, no hex.
# (partialmethod: this module may be compiled, and a compiled function does not bind as a method)
hyperframe.frame.Frame.__repr__ = functools.partialmethod(_short_frame_repr)  # type: ignore[method-assign,assignment]

#: Frame header (RFC 9113 section 4.1): 24-bit length, type, flags, stream id.
_FRAME_HEAD = struct.Struct(">HBBBL")
_HEADERS, _CONTINUATION = 0x1, 0x9
_END_HEADERS = 0x4
#: The END_STREAM flag of a DATA frame.
_END_STREAM = 0x1
#: Stream states in which DATA may be sent (RFC 9113 section 5.1).
_CAN_SEND = frozenset({StreamState.OPEN, StreamState.HALF_CLOSED_REMOTE})

#: Fields HTTP/2 forbids in a response (RFC 9113 8.2.2): dropped from what we forward.
_HOP_BY_HOP = frozenset({b"connection", b"transfer-encoding", b"keep-alive", b"upgrade", b"proxy-connection", b"te"})
#: Queued pieces shorter than this are joined into one DATA frame (a sender's progress lines, a small
#: body and its end): fewer frames for both ends to parse.
COALESCE_BYTES = 4096


def _join_small(out: deque[Chunk]) -> bytes:
    """Replace the small pieces at the head of ``out`` by one (at most ``COALESCE_BYTES`` joined) and return it."""
    parts = [out.popleft()]
    total = len(parts[0])
    while out and total + len(out[0]) <= COALESCE_BYTES:
        piece = out.popleft()
        parts.append(piece)
        total += len(piece)
    joined = b"".join(parts)
    out.appendleft(joined)
    return joined


class Http2Stream(Exchange):
    """One HTTP/2 request stream and its response: an endpoint of the relay."""

    __slots__ = (
        "conn",
        "stream_id",
        "_authority",
        "response_started",
        "closed",
        "_sink",
        "_buffer",
        "_held",
        "_upload_paused",
        "_unacked",
        "_discarded",
        "_out",
        "_out_bytes",
        "_end_pending",
        "_pipe_paused",
        "_window_owed",
        "_grant",
        "_whole",
    )

    def __init__(
        self, conn: Http2Protocol, stream_id: int, method: str, target: str, authority: bytes | None, headers: Headers
    ) -> None:
        super().__init__(method, target, headers)
        self.conn = conn
        self.stream_id = stream_id
        self._authority = authority
        self.response_started = False
        self.closed = False  # reset (by either side) or the connection gone: nothing more is written
        self._sink: Callable[[Chunk, int], None] = self._discard
        self._buffer: list[bytes] | None = []  # a sender's body held until its transfer starts
        self._held = 0  # flow-controlled bytes held and not yet acknowledged
        self._upload_paused = False
        self._unacked = 0  # flow-controlled bytes received while paused
        self._discarded = 0
        self._out: deque[Chunk] = deque()
        self._out_bytes = 0
        self._end_pending = False
        self._pipe_paused = False  # this receiver told its pipe to pause
        self._window_owed = False  # a live sender nobody listens to yet keeps the waiting window
        self._grant = 0  # window beyond INITIAL_WINDOW taken from the connection's UPLOAD_GRANT_BUDGET
        self._whole = False  # _out holds a whole response (counted in the connection's _whole_queued)

    def __repr__(self) -> str:
        return f"<Http2Stream {self.stream_id} {self.method} {self.target!r} {self._role or 'new'}>"

    # --- what Exchange asks of a transport ----------------------------------------------------------------

    @property
    def transport_name(self) -> str:
        return "h2"

    @property
    def relay(self) -> Relay:
        return self.conn.relay

    @property
    def client(self) -> str:
        return self.conn.client

    @property
    def is_tls(self) -> bool:
        return self.conn.is_tls

    def authority(self) -> bytes | None:
        return self._authority or self.header(b"host")

    def connection_refusal(self) -> Refusal | None:
        return self.conn.refusal

    def refused_connection(self) -> None:
        self.conn.close_when_idle()

    def on_sender(self) -> None:
        self._sink = self._hold

    # --- request side ------------------------------------------------------------------------------

    def on_data(self, data: Chunk, flow_length: int) -> None:
        self._bytes_in += len(data)
        self._sink(data, flow_length)

    def on_end(self) -> None:
        self.request_complete = True
        if self._grant:
            self.conn.release_grant(self)
        if self._role == "sender" and self.pipe is not None and self.pipe.sender is self and self._buffer is None:
            self.pipe.upload_complete()
        self._maybe_done()

    def _hold(self, data: Chunk, flow_length: int) -> None:
        # A waiting sender's body: kept without acknowledging it, so the initial window bounds it (a copy:
        # a slice of a read would keep the whole read alive while it waits).
        assert self._buffer is not None
        self._buffer.append(bytes(data))
        self._held += flow_length

    def _stream(self, data: Chunk, flow_length: int) -> None:
        pipe = self.pipe
        assert pipe is not None
        pipe.feed(data)
        if self._upload_paused:
            self._unacked += flow_length  # given back on resume_upload: this is the backpressure
        elif flow_length:
            self.conn.acknowledge(flow_length, self.stream_id)

    def _discard(self, data: Chunk, flow_length: int) -> None:
        if flow_length:
            self.conn.acknowledge(flow_length, self.stream_id)
        self._discarded += len(data)
        if self._discarded > DISCARD_LIMIT and self.response_ended:
            # RFC 9113 section 8.1: the response is complete; stop the rest of the upload
            self.conn.reset(self, ErrorCodes.NO_ERROR)

    def progress(self) -> tuple[int, int]:
        """(request body bytes read, response body bytes handed to h2): for idle timeouts and metrics."""
        return self._bytes_in, max(0, self._bytes_out - self._out_bytes)

    # --- endpoint: sender ------------------------------------------------------------------------------

    def reject(self, status: int, message: str) -> None:
        if self.response_started:
            # a sender already answered 200 (then a wait timeout, a shutdown): the reason is its last line
            self.write_line(message)
            self.end_sender(drop_upload=True)
            return
        self._respond(status, MESSAGE_HEADERS, message.encode())

    def accept_sender(self) -> None:
        if (self.header(b"expect") or b"").lower() == b"100-continue":
            self._send_head(100, [], final=False)
        self._send_head(200, MESSAGE_HEADERS)

    def write_line(self, line: str) -> None:
        if not self._end_pending:
            data = line.encode()
            self._bytes_out += len(data)  # progress lines are the sender's response body, as on HTTP/1
            self._queue(data)

    def end_sender(self, *, drop_upload: bool) -> None:
        if self._end_pending or self.closed:
            return
        # The rest of the upload (if any) is read and dropped, and the stream reset past DISCARD_LIMIT:
        # curl takes an early RST_STREAM(NO_ERROR) after a complete response for a broken stream.
        self._sink = self._discard
        self._end()
        self._give_back()

    def upload_info(self) -> UploadInfo:
        length = self.header(b"content-length")
        return UploadInfo.from_headers(self.headers, int(length) if length is not None and length.isdigit() else None)

    def start_upload(self, pipe: Pipe) -> None:
        pipe.begin()
        buffered = self._buffer or []
        self._buffer = None  # from now on the body streams
        self._sink = self._stream
        if not self.request_complete and not self.closed:
            if pipe.is_live and self._upload_paused:
                # nobody listens: what is read now is held for the next receiver, so keep that small
                self._window_owed = True
            else:
                # the waiting window becomes the streaming window
                self.conn.grant_window(self)
        for chunk in buffered:
            pipe.feed(chunk)
        held, self._held = self._held, 0
        if self._upload_paused:
            self._unacked += held
        elif held:
            self.conn.acknowledge(held, self.stream_id)
        if self.request_complete:
            pipe.upload_complete()

    def pause_upload(self) -> None:
        self._upload_paused = True

    def resume_upload(self) -> None:
        self._upload_paused = False
        if self._window_owed or (self._grant < STREAM_WINDOW - INITIAL_WINDOW and self._buffer is None):
            # (also a window the connection's budget could not grant whole before: topped up as it frees)
            self._window_owed = False
            if not self.request_complete and not self.closed:
                self.conn.grant_window(self)
        self._give_back()

    def _give_back(self) -> None:
        unacked = self._unacked + self._held
        self._unacked = self._held = 0
        if unacked:
            self.conn.acknowledge(unacked, self.stream_id)

    # --- endpoint: receiver ------------------------------------------------------------------------------

    def start_receiving(self, headers: Headers) -> None:
        self._send_head(200, headers)

    def write_body(self, data: Chunk) -> None:
        self._bytes_out += len(data)
        self._queue(data)

    def finish_body(self) -> None:
        self._end()

    def cut(self) -> None:
        # A reset stream, never END_STREAM: the receiver sees a cut stream, never a complete one.
        self._drop_output()
        self.conn.reset(self, ErrorCodes.INTERNAL_ERROR)

    def _drop_output(self) -> None:
        conn = self.conn
        conn._queued -= self._out_bytes
        if self._whole:
            conn._whole_queued -= self._out_bytes
        self._out.clear()
        self._out_bytes = 0

    def drop(self) -> None:
        # A live receiver too far behind: a reset drops what it has not taken, as a cut does.
        self.cut()

    def backlog(self) -> int:
        """Bytes queued for this receiver that its windows have not let out yet."""
        return self._out_bytes

    # --- output ----------------------------------------------------------------------------------------

    def _send_head(self, status: int, headers: Headers, *, end: bool = False, final: bool = True) -> None:
        if self.closed:
            return
        if final:
            self._status = status
            self.response_started = True
        # h2's outbound normalisation and validation are off (they cost a quarter of send_headers), so it
        # is done here: lowercase names, no surrounding whitespace in values (RFC 9113 8.2.1), and what
        # HTTP/2 forbids in a response dropped (8.2.2).
        block = [(b":status", b"%d" % status)]
        block += [(low, value.strip()) for name, value in headers if (low := name.lower()) not in _HOP_BY_HOP]
        if final:
            block.append((b"date", http_date()))  # RFC 9110 6.6.1
        self.conn.send_headers(self.stream_id, block, end, informational=not final)
        if end:
            self._ended()

    def _respond(self, status: int, headers: Headers, body: bytes, *, head_only: bool = False) -> None:
        """A whole response at once: pages, preflights and refusals."""
        if not self.request_complete and self.method in ("POST", "PUT"):
            self._sink = self._discard  # the body of a refused upload is dropped
            self._give_back()
        has_length = any(name == b"content-length" for name, _ in headers)
        if not has_length and status != 204:
            headers = [*headers, (b"content-length", b"%d" % len(body))]
        if head_only or not body or self.method == "HEAD":  # RFC 9110 9.3.2: no content for HEAD, ever
            self._send_head(status, headers, end=True)
            return
        self._send_head(status, headers)
        self._bytes_out += len(body)
        if not self.closed:
            self._whole = True
            self.conn._whole_queued += len(body)
        self._queue(body)
        self._end()

    def _queue(self, data: Chunk) -> None:
        if self.closed or not data:
            return
        self._out.append(data)
        conn = self.conn
        self._out_bytes = out_bytes = self._out_bytes + len(data)
        conn._queued += len(data)
        if (
            out_bytes > SHARE_HIGH_WATER
            and (out_bytes > STREAM_HIGH_WATER or conn._queued > CONNECTION_QUEUE_HIGH)
            and not self._pipe_paused
            and self._role == "receiver"
            and self.pipe
        ):
            self._pipe_paused = True
            self.pipe.receiver_paused(self)
        conn.want_flush(self)

    def _end(self) -> None:
        if self.closed or self._end_pending:
            return
        self._end_pending = True
        self.conn.want_flush(self)

    def send_pending(self, h2conn: h2.connection.H2Connection, budget: int) -> bool:
        """Send queued bytes as the windows allow, up to ``budget``; True when more could go now."""
        out = self._out
        sid = self.stream_id
        sent = 0
        last_head = -1  # where the header of the last DATA frame built here is, in the output list
        h2stream = h2conn.streams.get(sid)
        if (
            out
            and h2stream is not None
            and h2stream.state_machine.state in _CAN_SEND
            and h2conn.state_machine.state is not ConnectionState.CLOSED
        ):
            # DATA frames are built here, with h2's window accounting kept exactly as its send_data
            # keeps it: h2's send_data costs more per 16 KiB frame than the rest of the relay. What
            # h2 has queued goes out first, so the order on the wire is kept. (A stream h2 no longer
            # lets us send on is closing: its bytes are not sent.)
            frames = self.conn.take_h2_output()
            window = min(h2conn.outbound_flow_control_window, h2stream.outbound_flow_control_window)
            max_frame = h2conn.max_outbound_frame_size
            pack = _FRAME_HEAD.pack
            while out and sent < budget and window > 0:
                chunk = out[0]
                length = len(chunk)
                if length < COALESCE_BYTES and len(out) > 1 and len(out[1]) < COALESCE_BYTES:
                    chunk = _join_small(out)
                    length = len(chunk)
                size = min(window, max_frame, length)
                if size == length:
                    out.popleft()
                    piece = chunk
                else:
                    view = chunk if isinstance(chunk, memoryview) else memoryview(chunk)
                    piece = view[:size]
                    out[0] = view[size:]
                last_head = len(frames)
                frames.append(pack(size >> 8, size & 0xFF, 0, 0, sid))
                frames.append(piece)
                sent += size
                window -= size
            h2conn.outbound_flow_control_window -= sent
            h2stream.outbound_flow_control_window -= sent
        self._out_bytes -= sent
        conn = self.conn
        conn._queued -= sent
        if self._whole:
            conn._whole_queued -= sent
        if (
            self._pipe_paused
            and self._out_bytes <= STREAM_LOW_WATER
            and (self._out_bytes <= SHARE_LOW_WATER or conn._queued <= CONNECTION_QUEUE_HIGH)
        ):
            self._pipe_paused = False
            if self.pipe is not None:
                self.pipe.receiver_resumed(self)
        if not out and self._end_pending and not self.response_ended:
            if last_head >= 0 and h2stream is not None:
                # END_STREAM on the last DATA frame built here rather than on an empty frame of its own,
                # with h2's state moved as its end_stream moves it (the stream could send just now)
                size = len(frames[last_head + 1])
                frames[last_head] = _FRAME_HEAD.pack(size >> 8, size & 0xFF, 0, _END_STREAM, sid)
                h2stream.state_machine.process_input(StreamInputs.SEND_END_STREAM)
            else:
                with contextlib.suppress(h2.exceptions.ProtocolError):  # (reset meanwhile, or GOAWAY)
                    h2conn.end_stream(sid)
            self._ended()
            return False
        return bool(out) and sent >= budget

    @property
    def has_output(self) -> bool:
        return bool(self._out) or (self._end_pending and not self.response_ended)

    def _ended(self) -> None:
        self.response_ended = True
        if self._role == "receiver" and self.pipe is not None:
            self.conn.when_drained(self, self._receiver_flushed)
        self._maybe_done()

    def _receiver_flushed(self) -> None:
        conn = self.conn
        if self in conn._draining:
            conn._draining.remove(self)
        relay = conn.relay
        if conn.lost or not relay.hub.knows(self):
            return  # connection_lost has settled it
        relay.submit(ReceiverFinished(peer=self))

    def _maybe_done(self) -> None:
        if self.response_ended and (self.request_complete or self.closed):
            self.conn.stream_done(self)

    # --- lost --------------------------------------------------------------------------------------------

    def lose(self) -> None:
        """The stream was reset by the client, or the connection is gone."""
        self.closed = True
        self._drop_output()
        if self._grant:
            self.conn.release_grant(self)
        self.report()
        if self.pipe is not None and self._role == "receiver":
            self.pipe.receiver_resumed(self)
        if isinstance(self.pipe, Forward):
            self.pipe.peer_lost()  # served by another worker (--workers): its request is gone too
        relay = self.conn.relay
        if relay.hub.knows(self):
            relay.submit(PeerLost(peer=self))


class Http2Protocol(asyncio.Protocol):
    """One HTTP/2 connection (h2 over TLS, or h2c)."""

    def __init__(self, relay: Relay, *, is_tls: bool = False) -> None:
        self.relay = relay
        self.is_tls = is_tls
        self.transport: asyncio.Transport | None = None
        self.client = ""
        self.lost = False
        #: the operator's refusal of this whole connection (a connection limit), from ``Hooks.on_connect``
        self.refusal: Refusal | None = None
        self._counted = False  # on_disconnect is owed
        self._connected = False  # on_connect already asked (by the HTTP/1 protocol, for h2c)
        #: the object the connection hooks know this connection by (h2c: the HTTP/1 protocol it began as)
        self.counted_as: Connection = self
        self._h2 = h2.connection.H2Connection(
            h2.config.H2Configuration(
                client_side=False,
                header_encoding=None,
                validate_inbound_headers=True,
                validate_outbound_headers=False,  # _send_head builds every block we send
                normalize_outbound_headers=False,
            )
        )
        self._h2.local_settings = h2.settings.Settings(
            client=False,
            initial_values={
                h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: MAX_CONCURRENT_STREAMS,
                h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE: relay.hooks.max_head_bytes or MAX_HEADER_LIST_BYTES,
                h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: INITIAL_WINDOW,
                h2.settings.SettingCodes.MAX_FRAME_SIZE: MAX_INBOUND_FRAME,
                h2.settings.SettingCodes.ENABLE_PUSH: 0,
            },
        )
        # A client may send frames as large as we advertise as soon as it has read our SETTINGS (RFC 9113
        # 6.5.3), before its ACK reaches us; and h2 checks frame sizes against the limit as it stood
        # when a read began. So the advertised limit holds from the start.
        self._h2.max_inbound_frame_size = MAX_INBOUND_FRAME
        self._inbound = InboundFrames(self._h2, len(H2_PREFACE), MAX_INBOUND_FRAME)
        self._streams: dict[int, Http2Stream] = {}
        self._ready: dict[Http2Stream, None] = {}  # streams with output to send, in arrival order
        self._flush_scheduled = False
        self._receiving = False
        self._writing_paused = False
        self._closing = False
        self._close_idle = False  # close (GOAWAY) once no stream is left
        self._draining: list[Http2Stream] = []  # receivers ended, their last bytes maybe still buffered
        self._acks: dict[int, int] = {}  # stream id -> bytes to give back at the next write
        self._windows: dict[Http2Stream, int] = {}  # stream -> window increment owed at the next write
        self._drain_callbacks: list[Callable[[], None]] = []  # run once the next write has left
        self._output: list[bytes | memoryview] = []  # frames to write, in order
        # header blocks -> (their HPACK bytes, the dynamic table's newest entry and size they hold for)
        self._blocks: dict[tuple[tuple[bytes, bytes], ...], tuple[bytes, object, int]] = {}
        # --- what a hostile client can make this connection cost (docs/security.md, "HTTP/2") ---
        now = time.monotonic()
        self._resets = Budget(RESET_BURST, RESET_RATE, now)  # streams reset or refused
        self._control = Budget(CONTROL_BURST, CONTROL_RATE, now)  # PING, SETTINGS
        self._inbound.block_limit = (relay.hooks.max_head_bytes or MAX_HEADER_LIST_BYTES) + BLOCK_SLACK
        self._turn_started = 0.0  # the thread's CPU time when this loop turn's work on a read began
        self._turn_events = 0  # h2 events of this loop turn's read
        self._backlog: bytes | None = None  # the rest of a read, left for the next turn
        self._read_holds = 0  # why reading is paused (_YIELDED, _BACKED_UP bits)
        self._queued = 0  # bytes queued on the streams (their _out), not yet framed
        self._whole_queued = 0  # of which whole responses (pages, refusals)
        self._grant_free = UPLOAD_GRANT_BUDGET  # window the running uploads may still be granted
        self._requested = False  # a request has come (the header timeout's first deadline is met)
        self._idle_since = now  # when the connection last had no open stream (or last had a request)
        self._first_timer: asyncio.TimerHandle | None = None
        self._idle_timer: asyncio.TimerHandle | None = None
        self._block_timer: asyncio.TimerHandle | None = None

    # --- asyncio.Protocol ----------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio subclasses, hence the ignore
        self.transport = tr = transport  # type: ignore[assignment]
        tr.set_write_buffer_limits(high=WRITE_HIGH_WATER, low=WRITE_LOW_WATER)  # type: ignore[attr-defined]
        if not self._connected:
            self._connected = True
            peer = transport.get_extra_info("peername")
            self.client = str(peer[0]) if peer else ""
            on_connect = self.relay.hooks.on_connect
            if on_connect is not None:
                self.refusal = on_connect(self.client, self)
            self._counted = self.refusal is None
        self._h2.initiate_connection()
        self._h2.increment_flow_control_window(CONNECTION_WINDOW - INITIAL_WINDOW)
        self._write_out()
        self._start_timers()

    def data_received(self, data: bytes) -> None:
        if self.lost or self._closing:
            return
        if self._backlog is not None:  # (reading is paused; a read already under way still lands here)
            self._backlog += data
            return
        self._feed(data if isinstance(data, bytes) else bytes(data))

    def _feed(self, data: bytes) -> None:
        self._receiving = True
        self._turn_started = 0.0  # (the clock is read once the turn's events pass TURN_FREE_EVENTS)
        self._turn_events = 0
        try:
            # the DATA frames of open streams come straight from the read (_inbound.py), the rest via h2
            rest = self._inbound.feed(data, self._to_h2, self._on_data)
        finally:
            self._receiving = False
        inbound = self._inbound
        if inbound.oversized_block:
            self._calm("a header block larger than the advertised SETTINGS_MAX_HEADER_LIST_SIZE")
        elif rest and not self._closing and not self.lost:
            # this turn has done enough for one connection: the rest waits for the next, reading paused,
            # and is handed to h2 in small runs (finer turns) until a read fits in one turn again
            self._backlog = bytes(rest)
            inbound.run_frames = SMALL_RUN_FRAMES
            self._hold_reading(_YIELDED)
            asyncio.get_running_loop().call_soon(self._feed_backlog)
        elif inbound.run_frames != RUN_FRAMES:
            inbound.run_frames = RUN_FRAMES
        if inbound.header_block_open:
            if self._block_timer is None and self.relay.hooks.header_timeout_s is not None:
                self._block_timer = asyncio.get_running_loop().call_later(
                    self.relay.hooks.header_timeout_s, self._block_late
                )
        elif self._block_timer is not None:
            self._block_timer.cancel()
            self._block_timer = None
        # Flushed once this loop turn's reads are all handled: what they cause on this connection (also
        # from other connections' reads: a sender's body for a receiver here) leaves in one write.
        self._schedule()

    def _feed_backlog(self) -> None:
        backlog, self._backlog = self._backlog, None
        if backlog is None or self.lost or self._closing:
            return
        self._feed(backlog)
        # (asked through a method: mypy narrows self._backlog to None above, _feed or not, and mypyc would
        # turn that narrowing into a TypeError each time _feed leaves a new backlog)
        if not self._has_backlog():
            self._release_reading(_YIELDED)

    def _has_backlog(self) -> bool:
        return self._backlog is not None

    def _to_h2(self, data: bytes | memoryview) -> bool:
        """Hand whole frames to h2 and handle its events; False once the connection is closing, or once this
        loop turn has spent ``TURN_S`` on it (the rest of the read then waits for the next)."""
        if self._closing:
            return False
        try:
            events = self._h2.receive_data(data)
        except h2.exceptions.ProtocolError as exc:
            # h2 has queued a GOAWAY with the error's code; send it and close (no traceback: a client's fault)
            log.info("HTTP/2 protocol error from %s: %s", self.client or "?", exc)
            self._write_out()
            self._close()
            return False
        for event in events:
            self._handle(event)
        if self._closing:
            return False
        self._turn_events += len(events)
        if self._turn_events < TURN_FREE_EVENTS:
            return True  # (thread_time is a system call, ~0.5 us: an ordinary read never makes one)
        now = time.thread_time()
        if not self._turn_started:
            self._turn_started = now
        return now - self._turn_started < TURN_S

    def _on_data(self, stream_id: int, data: memoryview, flow_length: int) -> None:
        """A DATA frame h2 has been told of (flow control, content-length) but not given: no copy."""
        stream = self._streams.get(stream_id)
        if stream is not None:
            stream.on_data(data, flow_length)
        elif flow_length:
            self.acknowledge(flow_length, stream_id)

    def eof_received(self) -> bool | None:
        return None  # an HTTP/2 client that stops sending has left: close

    def connection_lost(self, exc: Exception | None) -> None:
        # Receivers whose END_STREAM is written but not yet seen drained: a client that closed cleanly
        # with nothing left in our buffer has read them whole (curl exits once the stream ends).
        transport = self.transport
        delivered = exc is None and transport is not None and transport.get_write_buffer_size() == 0
        draining, self._draining = self._draining, []
        self.lost = True
        self._backlog = None
        for timer in (self._first_timer, self._idle_timer, self._block_timer):
            if timer is not None:
                timer.cancel()
        on_disconnect = self.relay.hooks.on_disconnect
        if self._counted and on_disconnect is not None:
            self._counted = False
            on_disconnect(self.client, self.counted_as)
        relay = self.relay
        for stream in draining:
            if relay.hub.knows(stream):
                relay.submit(ReceiverFinished(peer=stream) if delivered else PeerLost(peer=stream))
        streams = list(self._streams.values())
        self._streams.clear()
        self._ready.clear()
        for stream in streams:
            stream.lose()

    def pause_writing(self) -> None:
        # (stream data stops here; should replies keep piling up beyond, _write_out stops reading: see there)
        self._writing_paused = True

    def resume_writing(self) -> None:
        self._writing_paused = False
        self._release_reading(_BACKED_UP)
        self._flush()

    def _hold_reading(self, reason: int) -> None:
        transport = self.transport
        if not self._read_holds and transport is not None and not transport.is_closing():
            transport.pause_reading()
        self._read_holds |= reason

    def _release_reading(self, reason: int) -> None:
        if not self._read_holds & reason:
            return
        self._read_holds &= ~reason
        transport = self.transport
        if not self._read_holds and transport is not None and not transport.is_closing() and not self.lost:
            transport.resume_reading()

    # --- abuse and timeouts --------------------------------------------------------------------------

    def _calm(self, reason: str) -> None:
        """End an abusive connection: GOAWAY ENHANCE_YOUR_CALM (RFC 9113 section 5.4.1), then close."""
        if self._closing or self.lost:
            return
        log.info("HTTP/2 connection from %s ended (ENHANCE_YOUR_CALM): %s", self.client or "?", reason)
        # (cut after the grace in any case: a TLS close waits for the client's close_notify, and reads on meanwhile)
        self._end_connection(ErrorCodes.ENHANCE_YOUR_CALM, cut=True)

    def _end_connection(self, code: ErrorCodes, *, cut: bool = False) -> None:
        with contextlib.suppress(h2.exceptions.ProtocolError):
            self._h2.close_connection(error_code=code)
        self._write_out()
        self._close()
        transport = self.transport
        if transport is not None and (cut or transport.get_write_buffer_size()):
            # close() waits until the buffer has left, which a client that does not read never lets happen
            asyncio.get_running_loop().call_later(ABORT_GRACE_S, self._abort)

    def _abort(self) -> None:
        if not self.lost and self.transport is not None:
            self.transport.abort()

    def _spend_reset(self) -> None:
        if not self._resets.spend(time.monotonic()):
            self._calm("too many streams reset, refused or abandoned (rapid reset)")

    def _start_timers(self) -> None:
        # One timer each, re-armed at most once per period: nothing per frame or per request.
        hooks = self.relay.hooks
        loop = asyncio.get_running_loop()
        if hooks.header_timeout_s is not None:
            self._first_timer = loop.call_later(hooks.header_timeout_s, self._first_request_late)
        if hooks.keepalive_timeout_s is not None:
            self._idle_timer = loop.call_later(hooks.keepalive_timeout_s, self._check_idle)

    def _first_request_late(self) -> None:
        self._first_timer = None
        if not self._requested:
            self._timed_out("no complete request within the header timeout")

    def _check_idle(self) -> None:
        self._idle_timer = None
        keepalive = self.relay.hooks.keepalive_timeout_s
        if self.lost or self._closing or keepalive is None:
            return
        delay = keepalive
        if not self._streams and not self._draining and not self._inbound.header_block_open:
            # (_draining: a receiver's last bytes still buffered, its transfer not yet over)
            idle_for = time.monotonic() - self._idle_since
            if idle_for >= keepalive - 0.05:  # (timers may fire a hair early)
                log.info("HTTP/2 connection from %s idle for %.0f s: GOAWAY", self.client or "?", idle_for)
                self._end_connection(ErrorCodes.NO_ERROR)
                return
            delay = keepalive - idle_for
        self._idle_timer = asyncio.get_running_loop().call_later(delay, self._check_idle)

    def _block_late(self) -> None:
        self._block_timer = None
        self._timed_out("a header block did not end within the header timeout")

    def _timed_out(self, reason: str) -> None:
        if self.lost or self._closing:
            return
        log.info("HTTP/2 connection from %s ended: %s", self.client or "?", reason)
        self._end_connection(ErrorCodes.NO_ERROR)

    # --- h2 events ---------------------------------------------------------------------------------------

    def _handle(self, event: h2.events.Event) -> None:
        if isinstance(event, h2.events.DataReceived):
            stream = self._streams.get(event.stream_id or 0)
            length = event.flow_controlled_length or 0
            if stream is not None:
                stream.on_data(event.data or b"", length)
            elif length:
                self.acknowledge(length, event.stream_id or 0)
        elif isinstance(event, h2.events.RequestReceived):
            self._request(event)
        elif isinstance(event, h2.events.StreamEnded):
            stream = self._streams.get(event.stream_id or 0)
            if stream is not None:
                stream.on_end()
        elif isinstance(event, h2.events.WindowUpdated):
            if event.stream_id:
                stream = self._streams.get(event.stream_id)
                if stream is not None and stream.has_output:
                    self._ready[stream] = None
            else:
                self._wake_all()
        elif isinstance(event, h2.events.StreamReset):
            stream = self._streams.pop(event.stream_id or 0, None)
            if stream is not None:
                self._ready.pop(stream, None)
                if not self._streams:
                    self._idle_since = time.monotonic()
                stream.lose()
            self._spend_reset()
        elif isinstance(event, h2.events.RemoteSettingsChanged):
            self._wake_all()  # a new initial window may open every stream
            self._spend_control()
            encoder = self._h2.encoder
            if encoder.header_table_size > ENCODER_TABLE_BYTES:
                encoder.header_table_size = ENCODER_TABLE_BYTES
        elif isinstance(event, h2.events.PingReceived):
            # (not PRIORITY: h2 reports one for every HEADERS that carries a priority, as browsers' do)
            self._spend_control()
        elif isinstance(event, h2.events.ConnectionTerminated):
            self._write_out()
            self._close()

    def _spend_control(self) -> None:
        if not self._control.spend(time.monotonic()):
            self._calm("too many PING or SETTINGS frames")

    def _request(self, event: h2.events.RequestReceived) -> None:
        stream_id = event.stream_id
        assert stream_id is not None
        self._requested = True
        self._idle_since = time.monotonic()
        if self._whole_queued > WHOLE_QUEUE_LIMIT:
            # the client does not take the responses it asked for: no more are made until it does
            with contextlib.suppress(h2.exceptions.ProtocolError):
                self._h2.reset_stream(stream_id, ErrorCodes.REFUSED_STREAM)
            self._spend_reset()
            return
        method = b""
        path = b""
        authority: bytes | None = None
        headers: Headers = []
        for name, value in event.headers or ():
            name_b = bytes(name)
            value_b = bytes(value)
            if name_b[:1] == b":":
                if name_b == b":method":
                    method = value_b
                elif name_b == b":path":
                    path = value_b
                elif name_b == b":authority":
                    authority = value_b
            else:
                headers.append((name_b, value_b))
        stream = Http2Stream(
            self, stream_id, method.decode("ascii", "replace"), path.decode("latin-1"), authority, headers
        )
        self._streams[stream_id] = stream
        problem = _malformed(authority, headers, ended=event.stream_ended is not None)
        if problem:
            stream.refuse(Refusal(status=400, message=f"[ERROR] Bad request: {problem}.\n"))  # RFC 9113 8.1.1
            self._spend_reset()
            return
        stream.dispatch()

    # --- used by the streams ---------------------------------------------------------------------------

    def send_headers(self, stream_id: int, headers: Headers, end: bool, *, informational: bool = False) -> None:
        if self.lost:
            return
        h2conn = self._h2
        h2stream = h2conn.streams.get(stream_id)
        if (
            h2stream is None
            or h2stream.state_machine.state not in _CAN_SEND
            or h2conn.state_machine.state is ConnectionState.CLOSED
        ):
            # the client reset the stream, perhaps in the very read that brought its request (h2 has forgotten
            # it then), or the connection is closing (GOAWAY sent or received): nothing to send
            with contextlib.suppress(h2.exceptions.ProtocolError):
                h2conn.send_headers(stream_id, headers, end_stream=end)
            self._schedule()
            return
        # The HEADERS frame is built here, as send_pending builds DATA frames: h2's send_headers re-checks
        # what _send_head guarantees and builds frame objects, half the cost of a small transfer's
        # response heads. h2's encoder (its HPACK state) and state machines are used as send_headers uses them.
        h2conn.state_machine.process_input(ConnectionInputs.SEND_HEADERS)
        h2stream.state_machine.process_input(
            StreamInputs.SEND_INFORMATIONAL_HEADERS if informational else StreamInputs.SEND_HEADERS
        )
        if end:
            h2stream.state_machine.process_input(StreamInputs.SEND_END_STREAM)
        block = self._encode(h2conn.encoder, headers)
        frames = self.take_h2_output()  # what h2 has queued goes first: the order on the wire is kept
        max_frame = h2conn.max_outbound_frame_size
        kind = _HEADERS
        flags = _END_STREAM if end else 0
        for start in range(0, len(block), max_frame):
            piece = block[start : start + max_frame]
            if start + max_frame >= len(block):
                flags |= _END_HEADERS
            frames.append(_FRAME_HEAD.pack(len(piece) >> 8, len(piece) & 0xFF, kind, flags, stream_id))
            frames.append(piece)
            kind, flags = _CONTINUATION, 0
        self._schedule()

    def _encode(self, encoder: hpack.Encoder, headers: Headers) -> bytes:
        """HPACK-encode a header block with h2's encoder, or reuse the bytes it gave for the same block.

        A block whose encoding left the dynamic table as it was only referred to the tables (or was
        never indexed): encoding it again gives the same bytes as long as the table has not changed
        since (entries are only ever added at its front, or evicted with a resize). So the bytes are
        kept and reused while the table's newest entry and size are the same: the encoder's search of
        the table for every field was 6 % of a small transfer's CPU (bench line 10)."""
        table = encoder.header_table
        # (entries as objects: compiled, an entry typed as a tuple would be unboxed and lose its identity)
        entries: Sequence[object] = table.dynamic_entries
        newest = entries[0] if entries else None
        key = tuple(headers)
        kept = self._blocks.get(key)
        if kept is not None and kept[1] is newest and kept[2] == len(entries) and not table.resized:
            return kept[0]
        size, resized = len(entries), table.resized  # (a resized table's first block begins with the new size)
        block: bytes = encoder.encode(headers)
        if (
            not resized
            and (entries[0] if entries else None) is newest
            and len(entries) == size
            and sum(len(name) + len(value) for name, value in headers) <= KEPT_BLOCK_BYTES
        ):
            if len(self._blocks) >= KEPT_BLOCKS:
                self._blocks.clear()  # (the blocks a connection repeats are few: its responses' heads)
            self._blocks[key] = (block, newest, size)
        return block

    def acknowledge(self, size: int, stream_id: int) -> None:
        """Give ``size`` flow-controlled bytes back to the client (batched until the next write)."""
        if self.lost:
            return
        acks = self._acks
        acks[stream_id] = acks.get(stream_id, 0) + size
        self._schedule()

    def take_h2_output(self) -> list[bytes | memoryview]:
        """Move what h2 has queued to the output list, and return that list to append frames to."""
        windows = self._windows
        if windows:
            for stream, increment in windows.items():
                if not stream.request_complete and not stream.closed:
                    # (a stream reset meanwhile, or a connection closing: no WINDOW_UPDATE is owed)
                    with contextlib.suppress(h2.exceptions.ProtocolError, KeyError):
                        self._h2.increment_flow_control_window(increment, stream.stream_id)
            windows.clear()
        acks = self._acks
        if acks:
            h2conn = self._h2
            with contextlib.suppress(h2.exceptions.ProtocolError):  # (closing, GOAWAY: no WINDOW_UPDATE owed)
                for stream_id, size in acks.items():
                    h2conn.acknowledge_received_data(size, stream_id)
            acks.clear()
        data = self._h2.data_to_send()
        if data:
            self._output.append(data)
        return self._output

    def open_window(self, stream: Http2Stream, increment: int) -> None:
        """Grow the stream's receive window at the next write, unless its request has ended by then.

        A small upload often ends in the very read that started its transfer: no WINDOW_UPDATE for it.
        """
        if self.lost:
            return
        self._windows[stream] = self._windows.get(stream, 0) + increment
        self._schedule()

    def grant_window(self, stream: Http2Stream) -> None:
        """Grow a running upload's window towards STREAM_WINDOW, as far as the connection's budget allows."""
        give = min(STREAM_WINDOW - INITIAL_WINDOW - stream._grant, self._grant_free)
        if give > 0:
            self._grant_free -= give
            stream._grant += give
            self.open_window(stream, give)

    def release_grant(self, stream: Http2Stream) -> None:
        """The upload can send nothing more: its window goes back to the connection's budget."""
        self._grant_free += stream._grant
        stream._grant = 0

    def reset(self, stream: Http2Stream, code: ErrorCodes) -> None:
        """Reset the stream (RST_STREAM) and forget it; a no-op on a stream already closed."""
        if stream.closed:
            return
        stream.closed = True
        self._ready.pop(stream, None)
        if not self.lost:
            with contextlib.suppress(h2.exceptions.ProtocolError):  # (reset by the client too, or GOAWAY)
                self._h2.reset_stream(stream.stream_id, code)
            self._schedule()
        stream.response_ended = True
        self.stream_done(stream)

    def want_flush(self, stream: Http2Stream) -> None:
        self._ready[stream] = None
        self._schedule()

    def stream_done(self, stream: Http2Stream) -> None:
        """The stream's request is read and its response written (or it was reset)."""
        if self._streams.get(stream.stream_id) is stream:
            del self._streams[stream.stream_id]
            if not self._streams:
                self._idle_since = time.monotonic()
        if stream._grant:
            self.release_grant(stream)
        stream.report()
        if self._close_idle and not self._streams:
            asyncio.get_running_loop().call_soon(self._goaway)

    def close_when_idle(self) -> None:
        """Accept no new stream; close once the open ones are done."""
        self._close_idle = True

    def _goaway(self) -> None:
        if self.lost or self._closing or self._streams:
            return
        self._flush()
        self._end_connection(ErrorCodes.NO_ERROR)

    # --- a connection limit's view (Hooks.on_connect) --------------------------------------------------------

    def reclaimable(self) -> bool:
        """No stream is open: closing the connection loses nothing."""
        return not self._streams and not self.lost and not self._closing

    def reclaim(self) -> None:
        """Close to make room for a new connection: GOAWAY (no stream was processed past it), then close."""
        self._close_idle = True
        self._goaway()

    def when_drained(self, stream: Http2Stream, callback: Callable[[], None]) -> None:
        """Call back once everything written so far has left for the kernel (or the connection is gone)."""
        self._draining.append(stream)
        # checked by the flush under way (or the next one) once it has handed its frames to the transport
        self._drain_callbacks.append(callback)
        self._schedule()

    def _check_drained(self, callback: Callable[[], None]) -> None:
        transport = self.transport
        if self.lost or transport is None or transport.get_write_buffer_size() == 0:
            callback()
            return
        asyncio.get_running_loop().call_later(DRAIN_POLL_S, self._check_drained, callback)

    # --- output ----------------------------------------------------------------------------------------

    def _schedule(self) -> None:
        # One flush per loop turn (within data_received, scheduled at its end).
        if self._receiving or self._flush_scheduled or self.lost:
            return
        self._flush_scheduled = True
        asyncio.get_running_loop().call_soon(self._flush)

    def _wake_all(self) -> None:
        for stream in self._streams.values():
            if stream.has_output:
                self._ready[stream] = None

    def _flush(self) -> None:
        """Send what the windows and the transport allow, streams taking turns, then write once."""
        self._flush_scheduled = False
        if self.lost:
            return
        h2conn = self._h2
        ready = self._ready
        while ready and not self._writing_paused:
            more = False  # some stream used its whole turn and has more it could send now
            for stream in list(ready):
                if not stream.closed and stream.send_pending(h2conn, FLUSH_TURN_BYTES):
                    more = True
                if stream.closed or not stream.has_output:
                    ready.pop(stream, None)
                # a stream blocked by its window stays listed; a WINDOW_UPDATE flushes it again
            self._write_out()
            if not more:
                break
        self._write_out()
        if self._drain_callbacks:
            callbacks, self._drain_callbacks = self._drain_callbacks, []
            for callback in callbacks:
                self._check_drained(callback)

    def _write_out(self) -> None:
        output = self.take_h2_output()
        if not output:
            return
        if self.transport is not None and not self.lost and not self._closing:
            if self.is_tls:
                # one TLS record per piece otherwise: a 9-byte frame header would be a record of its own
                self.transport.write(b"".join(output))
            else:
                self.transport.writelines(output)
            if self._writing_paused and self.transport.get_write_buffer_size() > BACKED_UP_BYTES:
                # The client does not take what is written to it, yet what it sends still makes replies (ACKs,
                # heads): read nothing more from it until it takes them. (Not at the mere high-water mark: a
                # fast download crosses it all the time, and pausing a TLS transport's reading costs.)
                self._hold_reading(_BACKED_UP)
        output.clear()

    def _close(self) -> None:
        if self.transport is not None and not self._closing:
            self._closing = True
            self.transport.close()


def _malformed(authority: bytes | None, headers: Headers, *, ended: bool) -> str:
    """What makes a request malformed (RFC 9113 8.1.1, 8.3.1) that h2 leaves to the server; "" if nothing."""
    if authority is not None and not valid_host(authority):
        return "invalid :authority"
    if ended:
        # h2 checks a content-length against DATA frames, not against a request that ends with its headers
        for name, value in headers:
            if name == b"content-length" and value.strip() != b"0":
                return "content-length does not match the body"
    return ""


def take_over(
    transport: asyncio.BaseTransport,
    relay: Relay,
    first_bytes: bytes,
    *,
    is_tls: bool,
    handoff: tuple[str, Refusal | None, bool] | None = None,
) -> Http2Protocol:
    """Serve HTTP/2 on a connection that began as HTTP/1 (h2c prior knowledge): its first bytes are the preface.

    ``handoff`` is what the HTTP/1 protocol already decided about the connection (client address, the
    operator's refusal, whether ``on_disconnect`` is owed), so that the hooks see one connection.
    """
    protocol = Http2Protocol(relay, is_tls=is_tls)
    if handoff is not None:
        protocol.client, protocol.refusal, protocol._counted = handoff
        protocol._connected = True
        if not protocol.client:
            peer = transport.get_extra_info("peername")
            protocol.client = str(peer[0]) if peer else ""
    transport.set_protocol(protocol)
    protocol.connection_made(transport)
    protocol.data_received(first_bytes)
    return protocol
