"""HTTP/1.0 and HTTP/1.1 on an asyncio transport, parsed by httptools (llhttp).

One ``Http1Protocol`` per connection; one ``Http1Exchange`` per request on it. Requests are
answered strictly in order: a pipelined request waits (and reading pauses) until the one before it
has its whole response written. Parser callbacks never await; the relay is called synchronously.

httptools parses request heads; an upload's body is framed by ``_body.py`` (zero-copy slices),
and a one-to-one plain upload may move kernel to kernel (``_splice.py``).

Reading is paused for five independent reasons, kept as bits so that one never resumes what
another paused: a waiting sender's buffered body passed ``WAITING_BODY_LIMIT``; a receiver of the
upload is slow (backpressure); a pipelined request is queued behind the current one; the splice
relay reads the socket itself; the connection's own output is backed up (its client does not read).
In the last two cases, bytes already read stop at the next request head and wait (``_stash``): a
client that pipelines requests without reading the answers makes the server hold one read's worth.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections import deque
from collections.abc import Callable, Sequence
from http import HTTPStatus
from typing import TYPE_CHECKING, Final

import httptools

from ..core import PeerLost, ProtocolError, ReceiverFinished
from ..http2 import H2_PREFACE
from ..relay._exchange import Exchange
from ..relay._flow import Chunk, Pipe, Relay, UploadInfo
from ..relay._headers import MESSAGE_HEADERS, Headers, canonical_name, http_date
from ..relay._hooks import AccessRecord, Refusal, RequestView
from ..server._owner_relay import Forward
from ._body import BodyReader, LengthReader, reader_for
from ._fanout import begin_fan_out, fan_out_partners
from ._hangup import Watch, unwatch, watch
from ._idle import IdleSweep
from ._rules import check_head
from ._splice import SPLICE_AVAILABLE, SpliceRelay

if TYPE_CHECKING:
    from ..http2.protocol import Http2Protocol  # (imported with the first h2c connection: see http2/__init__.py)

#: Bytes of a waiting sender's body that may be read before a receiver comes. Reading on a little
#: lets the server see a sender leave while it waits; past this, the body stays in the kernel.
WAITING_BODY_LIMIT: Final = 64 * 1024
#: A receiver's transport pauses its sender above this many buffered bytes, resumes below the low mark.
#: Large enough to keep the socket full between pauses, small enough to keep memory flat.
WRITE_HIGH_WATER: Final = 1024 * 1024
WRITE_LOW_WATER: Final = 256 * 1024
#: The request line and headers together may not exceed this (answered 431).
MAX_HEAD_BYTES: Final = 64 * 1024
#: The body of a refused request is read and dropped up to this much, to keep the connection; past it, close.
DISCARD_LIMIT: Final = 1024 * 1024
#: How often a receiver's buffer is checked, before an upload can start splicing after it.
DRAIN_POLL_S: Final = 0.005
#: Writes of a loop turn smaller than this (heads, progress lines) wait for the turn's end and go out
#: together: a small transfer's sender otherwise costs a system call (and a wake-up of the client)
#: per line. Body data is never held: it may be a view of a buffer that the next read reuses.
CORK_MAX_BYTES: Final = 16 * 1024

#: Closing with request bytes unread (a bad chunk mid-upload, a refused body past DISCARD_LIMIT): the
#: server shuts down writing, then reads and drops what still comes for at most this long and this much
#: before it closes (RFC 9112 9.6), so that the client reads its answer instead of a reset.
LINGER_S: Final = 2.0
LINGER_MAX_BYTES: Final = 4 * 1024 * 1024

SPLICE_BY_DEFAULT: Final = os.environ.get("PIPING_SPLICE", "1") != "0"

_PAUSE_WAITING: Final = 1
_PAUSE_BACKPRESSURE: Final = 2
_PAUSE_QUEUED: Final = 4
_PAUSE_SPLICE: Final = 8  # the splice relay reads the socket itself
_PAUSE_OUTPUT: Final = 16  # the write buffer is above its high-water mark: no new request until it drains
#: No further request head is parsed while one of these holds (what was read waits in ``_stash``).
_HOLD_HEADS: Final = _PAUSE_QUEUED | _PAUSE_OUTPUT

_REASONS: Final = {status.value: status.phrase.encode() for status in HTTPStatus}

# Where an exchange's request body goes (``Http1Exchange._sink``): a mode, not a bound method, so that an
# exchange does not reference itself (a cycle only the garbage collector would free)
_SINK_HOLD: Final = 0  # a sender's body before its transfer starts: held, bounded
_SINK_DISCARD: Final = 1  # of no use: read and dropped
_SINK_PIPE: Final = 2  # a running sender's: to its pipe


class _Inert:
    """What a connection's parser calls back once the connection is gone: nothing."""


#: The parser of a connection that needs none now: gone, or after a head whose body ``_body.py`` frames
#: (a fresh one is made if another head comes). A parser calls back its protocol, which holds it: the
#: connection drops its own so that both are freed at once, without the garbage collector.
_NO_PARSER: Final = httptools.HttpRequestParser(_Inert())


class _HeadTooLarge(Exception):
    pass


#: ``--workers``: given the connection, a request head and every byte read from it, hand the socket and
#: those bytes to the worker that owns the head's path; False when this worker owns it (or nobody must).
HandOver = Callable[["Http1Protocol", bytes, bytes], bool]


class Http1Exchange(Exchange):
    """One HTTP/1 request and its response: an endpoint of the relay."""

    __slots__ = (
        "conn",
        "version",
        "keep_alive",
        "lost",
        "_sink",
        "_buffer",
        "_buffered",
        "_chunked",
        "_close_after",
        "_sender_lines",
        "_discarded",
        "_splice",
        "_finishing",
        "delivered",
    )

    def __init__(
        self, conn: Http1Protocol, method: str, version: str, keep_alive: bool, target: bytes, headers: Headers
    ) -> None:
        super().__init__(method, target.decode("latin-1"), headers)
        self.conn = conn
        self.version = version
        self.keep_alive = keep_alive and version != "1.0"
        self.lost = False
        # held until dispatch decides: a sender keeps holding it, anything else drops it
        self._sink = _SINK_HOLD
        self._buffer: list[Chunk] | None = []  # a sender's body held until its transfer starts
        self._buffered = 0
        self._chunked = False
        self._close_after = not self.keep_alive
        self._sender_lines: list[bytes] | None = None  # HTTP/1.0 sender: lines kept for the end
        self._discarded = 0
        self._splice: SpliceRelay | None = None  # the kernel relay moving this upload, if any
        self._finishing = False  # a receiver whose last bytes wait in the transport's buffer
        #: set by a fan-out relay (_fanout.py) that writes this receiver's body itself: whether all of it is out
        self.delivered: Callable[[], bool] | None = None

    def __repr__(self) -> str:
        return f"<Http1Exchange {self.method} {self.target!r} {self._role or 'new'}>"

    # --- what Exchange asks of a transport ----------------------------------------------------------------

    absolute_form = True

    @property
    def transport_name(self) -> str:
        return self.conn.edge_transport

    @property
    def is_tls(self) -> bool:
        return self.conn.is_tls or self.conn.edge_tls

    @property
    def relay(self) -> Relay:
        return self.conn.relay

    @property
    def client(self) -> str:
        return self.conn.client or self.conn.peer_address()

    def connection_refusal(self) -> Refusal | None:
        return self.conn.refusal

    def refused_connection(self) -> None:
        self._close_after = True

    def on_receiver(self) -> None:
        self._drop_body()

    # --- request side --------------------------------------------------------------------------------

    def on_body(self, data: Chunk) -> None:
        self._bytes_in += len(data)
        sink = self._sink
        if sink == _SINK_PIPE:
            pipe = self.pipe
            if pipe is not None:
                pipe.feed(data)
        elif sink == _SINK_HOLD:
            self._hold(data)
        else:
            self._discard(data)

    def on_body_complete(self) -> None:
        self.request_complete = True
        if self._role == "sender" and self.pipe is not None and self.pipe.sender is self and self._buffer is None:
            self.pipe.upload_complete()
        self._maybe_done()

    def _drop_body(self) -> None:
        """This request's body (if any) is of no use: read it and let it go."""
        self._sink = _SINK_DISCARD
        if self._buffer:
            self._buffer = []
            self._buffered = 0
            self.conn.resume_reading(_PAUSE_WAITING)

    def _hold(self, data: Chunk) -> None:
        # a sender's body before its transfer starts: kept, bounded, until the pipe opens
        assert self._buffer is not None
        self._buffer.append(data)
        self._buffered += len(data)
        if self._buffered > WAITING_BODY_LIMIT:
            self.conn.pause_reading(_PAUSE_WAITING)
            self.conn.watch_hangup(_PAUSE_WAITING)

    def _discard(self, data: Chunk) -> None:
        self._discarded += len(data)
        if self._discarded > DISCARD_LIMIT:
            self._close_after = True
            self.conn.close()

    def progress(self) -> tuple[int, int]:
        """(request body bytes read, response bytes handed to the kernel): for idle timeouts and metrics."""
        return self._bytes_in, max(0, self._bytes_out - self.conn.pending_size())

    # --- endpoint: sender ------------------------------------------------------------------------------

    def reject(self, status: int, message: str) -> None:
        self._respond(status, MESSAGE_HEADERS, message.encode())

    def accept_sender(self) -> None:
        if self.version == "1.0":
            self._sender_lines = []
            return
        out = []
        if (self.header(b"expect") or b"").lower() == b"100-continue":
            out.append(b"HTTP/1.1 100 Continue\r\n\r\n")
        out.append(self._head(200, MESSAGE_HEADERS, chunked=True))
        self.conn.write_many(out)
        self._chunked = True

    def write_line(self, line: str) -> None:
        data = line.encode()
        if self._sender_lines is not None:
            self._sender_lines.append(data)
        elif not self.response_ended:
            self._bytes_out += len(data)
            self.conn.write(b"%x\r\n%s\r\n" % (len(data), data))

    def end_sender(self, *, drop_upload: bool) -> None:
        if self.response_ended:
            return
        if self._sender_lines is not None:
            body = b"".join(self._sender_lines)
            self._bytes_out += len(body)
            self.conn.write(self._head(200, MESSAGE_HEADERS, length=len(body)) + body)
        else:
            self.conn.write(b"0\r\n\r\n")
        self.response_ended = True
        if drop_upload and not self.request_complete:
            self._close_after = True
            self.conn.resume_reading(_PAUSE_BACKPRESSURE | _PAUSE_WAITING)
            self.conn.close()
            return
        self._sink = _SINK_DISCARD
        self.conn.resume_reading(_PAUSE_BACKPRESSURE | _PAUSE_WAITING)
        self._maybe_done()

    def upload_info(self) -> UploadInfo:
        length = self.header(b"content-length")
        return UploadInfo.from_headers(self.headers, int(length) if length is not None and length.isdigit() else None)

    def start_upload(self, pipe: Pipe) -> None:
        self.conn.unwatch_hangup()  # no longer waiting: a running sender may half-close (docs/design.md)
        # The head and lines held for this turn announce the data: they leave before any receiver gets it
        self.conn.push_out()
        pipe.begin()
        buffered = self._buffer or []
        self._buffer = None  # from now on the body streams
        self._sink = _SINK_PIPE
        for chunk in buffered:
            pipe.feed(chunk)
        if self.request_complete:
            self.conn.resume_reading(_PAUSE_WAITING)
            pipe.upload_complete()
            return
        if self.conn.body_in_hand():
            pass  # the rest of the body is in the read being parsed: nothing left to move in the kernel
        elif (receiver := self._splice_partner(pipe)) is not None:
            # The body goes kernel to kernel once what was read so far has been handed on (this may run
            # inside the sender's own data_received, whose remaining bytes go the ordinary way first).
            self.conn.pause_reading(_PAUSE_SPLICE)
            self.conn.loop.call_soon(self._begin_splice, pipe, receiver)
        elif partners := fan_out_partners(self, pipe):  # ?n=2 and more: tee(2) to every receiver
            self.conn.pause_reading(_PAUSE_SPLICE)
            self.conn.loop.call_soon(begin_fan_out, self, pipe, partners, _PAUSE_SPLICE)
        self.conn.resume_reading(_PAUSE_WAITING)

    def _splice_partner(self, pipe: Pipe) -> Http1Exchange | None:
        """The one receiver this upload can be spliced to, if the transfer allows it."""
        conn = self.conn
        if not (SPLICE_AVAILABLE and conn.splice_enabled) or len(pipe.receivers) != 1 or pipe.decodes_form:
            return None
        if pipe.is_live:  # its receivers come and go: the kernel path is for one fixed receiver
            return None
        receiver = pipe.receivers[0]
        if not isinstance(receiver, Http1Exchange) or receiver.conn.is_tls or conn.is_tls:
            return None
        if conn.body_reader is None or receiver.version not in ("1.0", "1.1"):
            return None
        return receiver

    def _begin_splice(self, pipe: Pipe, receiver: Http1Exchange) -> None:
        conn, out = self.conn, receiver.conn
        reader = conn.body_reader
        usable = not self.lost and not receiver.lost and receiver in pipe.receivers
        # (the sockets are asked for only then: the body may have ended meanwhile)
        in_sock = conn.socket() if usable and reader is not None and not reader.done else None
        out_sock = out.socket() if in_sock is not None else None
        if in_sock is None or out_sock is None or reader is None:
            conn.resume_reading(_PAUSE_SPLICE)  # the ordinary path carries on
            return
        if out.write_buffer_size():
            # what the ordinary path wrote must reach the socket before the kernel appends to it
            def retry() -> None:
                conn.loop.call_soon(self._begin_splice, pipe, receiver)

            out.when_drained(retry)
            return

        def count(read: int, written: int) -> None:
            self._bytes_in += read
            receiver._bytes_out += written

        def done(leftover: bytes) -> None:
            self._splice = receiver._splice = None
            conn.end_spliced_body(leftover)

        def sender_broken() -> None:
            self._splice = receiver._splice = None
            conn.abort()

        def receiver_broken() -> None:
            self._splice = receiver._splice = None
            out.abort()

        def bad_framing(reason: str) -> None:
            self._splice = receiver._splice = None
            conn.fail_request(400, f"[ERROR] Bad request: {reason}.\n")  # as the ordinary path does

        relay = SpliceRelay(
            in_fd=in_sock.fileno(),
            out_fd=out_sock.fileno(),
            reader=reader,
            chunked_out=receiver._chunked,
            on_done=done,
            on_sender_broken=sender_broken,
            on_receiver_broken=receiver_broken,
            on_bad_framing=bad_framing,
            count=count,
            cancelled=lambda: self.lost or receiver.lost or receiver not in pipe.receivers,
        )
        self._splice = receiver._splice = relay
        relay.start()

    def stop_splice(self) -> None:
        if self._splice is not None:
            self._splice.stop()
            self._splice = None

    def pause_upload(self) -> None:
        self.conn.pause_reading(_PAUSE_BACKPRESSURE)
        pipe = self.pipe
        if pipe is not None and pipe.is_live and not pipe.receivers:
            self.conn.watch_hangup(_PAUSE_BACKPRESSURE)  # a live sender nobody hears: nothing may resume it

    def resume_upload(self) -> None:
        self.conn.resume_reading(_PAUSE_BACKPRESSURE)

    # --- endpoint: receiver ------------------------------------------------------------------------------

    def start_receiving(self, headers: Headers) -> None:
        has_length = any(name == b"content-length" for name, _ in headers)
        if not has_length:
            if self.version == "1.0":
                self._close_after = True  # the end of the body is the end of the connection
            else:
                self._chunked = True
        self.conn.write(self._head(200, headers, chunked=self._chunked))

    def write_body(self, data: Chunk) -> None:
        self._bytes_out += len(data)
        if self._chunked:
            self.conn.write_many([b"%x\r\n" % len(data), data, b"\r\n"])
        else:
            self.conn.write(data)

    def finish_body(self) -> None:
        if self._chunked:
            self.conn.write(b"0\r\n\r\n")
        if self.conn.write_buffer_size() == 0:
            self._receiver_flushed()
            return
        # Finished means in the kernel's hands: ask the transport to say when its buffer is empty
        # (a client may close the very moment it has the last byte, so no polling here).
        self._finishing = True
        self.conn.notify_when_empty()

    def _receiver_flushed(self) -> None:
        self._finishing = False
        if self.lost or self.response_ended:
            return
        self.response_ended = True
        self.conn.relay.submit(ReceiverFinished(peer=self))
        self._maybe_done()

    def cut(self) -> None:
        # No final chunk and a closed connection: the receiver sees a cut stream, never a complete one.
        self._close_after = True
        self.conn.close()

    def drop(self) -> None:
        # A live receiver too far behind: what it has not taken is dropped with the connection.
        self._close_after = True
        self.conn.abort()

    def backlog(self) -> int:
        """Bytes written for this receiver that have not left for the kernel yet."""
        return self.conn.write_buffer_size()

    # --- responses ---------------------------------------------------------------------------------

    def _head(self, status: int, headers: Headers, *, length: int | None = None, chunked: bool = False) -> bytes:
        self._status = status
        version = b"HTTP/1.0" if self.version == "1.0" else b"HTTP/1.1"
        lines = [b"%s %d %s" % (version, status, _REASONS.get(status, b""))]
        # the conventional capitalization, as the reference writes it (scripts grep for Content-Length)
        lines += [canonical_name(name) + b": " + value for name, value in headers]
        lines.append(b"Date: " + http_date())
        if length is not None:
            lines.append(b"Content-Length: %d" % length)
        if chunked:
            lines.append(b"Transfer-Encoding: chunked")
        if self._close_after:
            lines.append(b"Connection: close")
        elif self.version == "1.0":
            lines.append(b"Connection: keep-alive")
        return b"\r\n".join(lines) + b"\r\n\r\n"

    def _respond(self, status: int, headers: Headers, body: bytes, *, head_only: bool = False) -> None:
        """A whole response at once: pages, preflights and refusals."""
        if not self.request_complete:
            # the body of a refused upload is dropped; an Expect: 100-continue client never sends it
            self._drop_body()
            if (self.header(b"expect") or b"").lower() == b"100-continue":
                self._close_after = True
        has_length = any(name == b"content-length" for name, _ in headers)
        head = self._head(status, headers, length=None if has_length or status == 204 else len(body))
        head_only = head_only or self.method == "HEAD"  # RFC 9110 9.3.2: no content for HEAD, ever (a 405, a 401)
        self.conn.write(head if head_only else head + body)
        if not head_only:
            self._bytes_out += len(body)
        self.response_ended = True
        self._maybe_done()

    def _maybe_done(self) -> None:
        if self.response_ended and (self.request_complete or self._close_after):
            self.conn.exchange_done(self, close=self._close_after)


def protocol_factory(relay: Relay, loop: asyncio.AbstractEventLoop) -> Callable[[], Http1Protocol]:
    """A listener's factory of connections (compiled: each is built by a C call, not a Python one)."""

    def factory() -> Http1Protocol:
        return Http1Protocol(relay, loop=loop)

    return factory


class Http1Protocol(asyncio.Protocol):
    """One HTTP/1.x connection."""

    #: whether the connection hooks see this connection (not a sibling worker's internal one: ``--workers``)
    counted: bool = True

    def __init__(
        self,
        relay: Relay,
        *,
        is_tls: bool = False,
        splice_enabled: bool | None = None,
        hand_over: HandOver | None = None,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        self.relay = relay
        #: the event loop serving the connection (a listener passes its own: asking asyncio costs a system call)
        self.loop = loop if loop is not None else asyncio.get_running_loop()
        #: set in a worker of ``--workers`` (plain TCP only): moves the connection to the worker owning a path
        self.hand_over = hand_over
        self.is_tls = is_tls
        #: how the client reached the server, for the hooks and the access log: this connection's own
        #: transport, or, for a request relayed by a sibling worker (``--workers``), the client's at that edge
        self.edge_transport = "h1"
        self.edge_tls = False
        #: whether uploads may move kernel to kernel (see _splice.py); PIPING_SPLICE=0 turns it off,
        #: so that the ordinary path can be tested and measured on its own
        self.splice_enabled = SPLICE_BY_DEFAULT if splice_enabled is None else splice_enabled
        self.transport: asyncio.Transport | None = None
        self._parser = httptools.HttpRequestParser(self)  # (_NO_PARSER when none is needed, see there)
        #: while a head is parsed: how many bytes of the read being parsed follow it (-1: no head is parsed)
        self._after_head = -1
        self._active: Http1Exchange | None = None  # the one whose response is being written
        self._incoming: Http1Exchange | None = None  # the one whose request is being read
        self._queue: deque[Http1Exchange] = deque()
        self._paused = 0
        self._transport_paused = False  # reading stays paused until ``_stash`` is parsed, not just _paused == 0
        self._stash = b""  # bytes read but not parsed: they begin a request that must wait (see _HOLD_HEADS)
        self._closed = False
        self._writing_paused = False
        self._corked: list[bytes] = []  # small writes held until the end of this loop turn (see CORK_MAX_BYTES)
        self._transport_gathers = False  # the transport holds a turn's writes itself (HTTPS): no corking here
        # the request being parsed
        self._url = b""
        self._headers: Headers = []
        self._head_bytes = 0
        self._head_buffer = b""  # an incomplete request head
        self._body: BodyReader | None = None  # the framing of the body being read, if any
        self._max_head_bytes = relay.hooks.max_head_bytes or MAX_HEAD_BYTES
        #: the operator's refusal of this whole connection (a connection limit), from ``Hooks.on_connect``
        self.refusal: Refusal | None = None
        self.client = ""
        self._counted = False
        self._preface: bytes | None = b""  # the first bytes, until they tell HTTP/1 from h2c (None: told)
        self._successor: Http2Protocol | None = None  # h2c took the connection over
        self._hangup: Watch | None = None  # a paused waiting sender's socket, watched for a FIN or RST
        self._hangup_reason = 0  # the pause the watch is for
        # --header-timeout / --keepalive-timeout: when the connection last had no request being served
        # (None: one is); a sweep of the loop's connections checks it (see _idle.py), no timer per request
        self._idle_since: float | None = None
        self._sweep: IdleSweep | None = None
        # a lingering close (see LINGER_S): writing is over, what comes is read and dropped
        self._lingering = False
        self._lingered = 0
        self._linger_timer: asyncio.TimerHandle | None = None

    # --- asyncio.Protocol ----------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's transports are not asyncio subclasses
        # (asked over TLS only: a plain transport has no such attribute, and a missing one costs an exception)
        self._transport_gathers = self.is_tls and bool(getattr(transport, "gathers_writes", False))
        transport.set_write_buffer_limits(high=WRITE_HIGH_WATER, low=WRITE_LOW_WATER)  # type: ignore[attr-defined]
        hooks = self.relay.hooks
        if self.counted and (hooks.on_connect is not None or hooks.on_disconnect is not None):
            peer = transport.get_extra_info("peername")
            self.client = str(peer[0]) if peer else ""
            if hooks.on_connect is not None:
                self.refusal = hooks.on_connect(self.client, self)
            self._counted = self.refusal is None
        if hooks.header_timeout_s is not None or hooks.keepalive_timeout_s is not None:
            self._sweep = IdleSweep.join(self, self.loop)
            self._idle_since = time.monotonic()

    def data_received(self, data: bytes) -> None:
        if self._lingering:
            self._lingered += len(data)
            if self._lingered > LINGER_MAX_BYTES:
                self._end_linger()
            return
        if self._preface is not None:
            # h2c with prior knowledge shares this port: the connection's first bytes tell (RFC 9113 3.4)
            data = self._preface + data
            if H2_PREFACE.startswith(data[: len(H2_PREFACE)]):
                if len(data) < len(H2_PREFACE):
                    self._preface = data  # the preface may come split across reads
                    return
                self._preface = None
                self._closed = True  # the transport is the HTTP/2 protocol's from now on
                if self._sweep is not None:
                    self._sweep.leave(self)  # (HTTP/2 keeps its own timeouts)
                    self._sweep = None
                from ..http2.protocol import take_over as h2c_take_over

                self._successor = h2c_take_over(
                    self.transport,  # type: ignore[arg-type]
                    self.relay,
                    data,
                    is_tls=self.is_tls,
                    handoff=(self.client, self.refusal, self._counted),
                )
                self._successor.counted_as = self  # the hooks saw this object connect: they see it leave
                self.transport = None
                return
            self._preface = None
        if self._stash:
            data = self._stash + data
            self._stash = b""
        self._parse(data)

    def _parse(self, data: bytes) -> None:
        try:
            while data and not self._closed:
                if self._body is None and self._paused & _HOLD_HEADS:
                    # the next request waits for the one before it, or for the client to read its answers
                    self._stash = data
                    return
                data = self._read_body(data) if self._body is not None else self._read_head(data)
        except _HeadTooLarge:
            self.fail_request(431, "[ERROR] Request header fields too large.\n")
        except ProtocolError as exc:
            self.fail_request(exc.status_hint, f"[ERROR] Bad request: {exc}.\n")
        except httptools.HttpParserError as exc:
            # httptools wraps what a callback raised: look through to our own reason
            reason = exc.__context__
            if isinstance(reason, _HeadTooLarge):
                self.fail_request(431, "[ERROR] Request header fields too large.\n")
            elif isinstance(reason, ProtocolError):
                self.fail_request(reason.status_hint, f"[ERROR] Bad request: {reason}.\n")
            else:
                text = _parser_reason(exc)
                status = 505 if "HTTP version" in text else 400  # llhttp knows HTTP/1.x only
                self.fail_request(status, f"[ERROR] Bad request: {text}.\n")

    def _read_head(self, data: bytes) -> bytes:
        """Feed httptools one request head at most; return what follows it."""
        seen = len(self._head_buffer)
        buffered = self._head_buffer + data if seen else data
        end = _head_end(buffered)
        if self._parser is _NO_PARSER:
            self._parser = httptools.HttpRequestParser(self)  # another head after a body (keep-alive)
        try:
            if end < 0:
                # httptools checks the head as it comes, so garbage is refused without waiting for more
                self._parser.feed_data(data)
                if len(buffered) > self._max_head_bytes:
                    raise _HeadTooLarge
                self._head_buffer = buffered
                return b""
            self._head_buffer = b""
            # --workers: another worker may own this request's path; it takes the idle socket and these bytes
            if self.hand_over is not None and self._idle() and self.hand_over(self, buffered[:end], buffered):
                return b""
            self._after_head = len(buffered) - end
            try:
                self._parser.feed_data(buffered[seen:end])
            finally:
                self._after_head = -1
        except httptools.HttpParserUpgrade:
            # We never switch protocols on Upgrade (h2c upgrades are declined, as RFC 9113 allows)
            self._parser = _NO_PARSER  # a fresh one reads the next head
        if self._body is not None:
            # httptools has done its part: the body is framed by _body, and a fresh parser reads the next head
            self._parser = _NO_PARSER
            if self._body.done:
                self._end_body()
        return buffered[end:]

    def body_in_hand(self) -> bool:
        """While a head is parsed: whether the rest of its body (of a known length) is in the same read."""
        body = self._body
        return self._after_head >= 0 and isinstance(body, LengthReader) and body.remaining <= self._after_head

    def _idle(self) -> bool:
        """Nothing is being read or answered on this connection, and every byte written has left."""
        return self._active is None and not self._queue and self._incoming is None and self.write_buffer_size() == 0

    def _read_body(self, data: bytes) -> bytes:
        """Give an upload's body bytes to its exchange; return what follows the body."""
        body = self._body
        assert body is not None
        used = body.feed(data, self._emit_body)
        if body.done:
            self._end_body()
        return data[used:] if used < len(data) else b""

    def _emit_body(self, piece: memoryview) -> None:
        incoming = self._incoming
        if incoming is not None:
            incoming.on_body(piece)

    def _end_body(self) -> None:
        self._body = None
        incoming = self._incoming
        if incoming is not None:
            self._incoming = None
            incoming.on_body_complete()

    def eof_received(self) -> bool | None:
        if self._lingering:
            return None  # the client has sent everything: the lingering close is over
        self.uncork()  # the transport may close now: what this turn wrote goes out first
        active = self._active
        if (
            active is not None
            and active._role == "sender"
            and active.pipe is not None
            and active.request_complete
            and not active.response_ended
            and not self._queue
        ):
            return True  # a running sender that sent its whole body may half-close: it still gets its lines
        # Anything else has left, a waiting sender too, even with its whole body sent: a server cannot
        # tell a half-close from a close without writing, and the path must be free (docs/protocol.md 8).
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        self._parser = _NO_PARSER  # (it refers back to this protocol: see _NO_PARSER)
        self._corked = []
        self.unwatch_hangup()
        if self._sweep is not None:
            self._sweep.leave(self)
            self._sweep = None
        if self._linger_timer is not None:
            self._linger_timer.cancel()
            self._linger_timer = None
        on_disconnect = self.relay.hooks.on_disconnect
        if self._counted and on_disconnect is not None:
            self._counted = False
            on_disconnect(self.client, self)
        exchanges: list[Http1Exchange] = []
        if self._active is not None:
            exchanges.append(self._active)
        if self._queue:
            exchanges.extend(self._queue)
            self._queue.clear()
        if self._incoming is not None and self._incoming not in exchanges:
            exchanges.append(self._incoming)
        self._active = self._incoming = None
        for exchange in exchanges:
            exchange.lost = True
            exchange.stop_splice()
            if isinstance(exchange.pipe, Forward):
                exchange.pipe.peer_lost()  # served by another worker (--workers): its request is gone too
            exchange.report()
            if exchange.pipe is not None and exchange._role == "receiver":
                exchange.pipe.receiver_resumed(exchange)
                if exchange.delivered is not None and exchange.delivered() and not exchange.response_ended:
                    # it took its whole body from the fan-out relay, which still serves slower receivers
                    exchange.response_ended = True
                    self.relay.submit(ReceiverFinished(peer=exchange))
                    continue
            if self.relay.hub.knows(exchange):
                self.relay.submit(PeerLost(peer=exchange))

    def pause_writing(self) -> None:
        self._writing_paused = True
        self.pause_reading(_PAUSE_OUTPUT)
        active = self._active
        if active is not None and active.pipe is not None and active._role == "receiver" and not active._finishing:
            active.pipe.receiver_paused(active)

    def resume_writing(self) -> None:
        self._writing_paused = False
        self._resume_output()
        active = self._active
        if active is None or active._role != "receiver":
            return
        if active._finishing:
            if self.transport is not None:
                self.transport.set_write_buffer_limits(high=WRITE_HIGH_WATER, low=WRITE_LOW_WATER)
            if active.pipe is not None:
                active.pipe.receiver_resumed(active)
            active._receiver_flushed()
        elif active.pipe is not None:
            active.pipe.receiver_resumed(active)

    def _resume_output(self) -> None:
        """The client took its answers: a request that waited for that goes on."""
        if self._active is None and self._queue:
            self._serve_next()
        self.resume_reading(_PAUSE_OUTPUT)

    def notify_when_empty(self) -> None:
        """Have resume_writing called once the write buffer is empty (limits 0/0 pause at once, resume at 0)."""
        self.uncork()
        if self.transport is not None and not self._closed:
            self.transport.set_write_buffer_limits(high=0, low=0)

    # --- httptools callbacks -------------------------------------------------------------------------

    def on_message_begin(self) -> None:
        self._url = b""
        self._headers = []
        self._head_bytes = 0

    def on_url(self, url: bytes) -> None:
        self._url += url
        self._head_bytes += len(url)
        if self._head_bytes > self._max_head_bytes:
            raise ProtocolError("request target too long", status_hint=414)  # RFC 9112 3: a MUST

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head_bytes += len(name) + len(value) + 4
        if self._head_bytes > self._max_head_bytes:
            raise _HeadTooLarge
        self._headers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        parser = self._parser
        check_head(parser.get_http_version(), self._headers)  # what llhttp lets through (RFC 9112)
        exchange = Http1Exchange(
            self,
            parser.get_method().decode("ascii", "replace"),
            parser.get_http_version(),
            parser.should_keep_alive(),
            self._url,
            self._headers,
        )
        self._incoming = exchange
        # Bodies are framed here, not by httptools (see _body.py); None: httptools ends the message.
        self._body = reader_for(self._headers)
        if self._active is None and not self._writing_paused:
            self._active = exchange
            self._idle_since = None
            exchange.dispatch()
        else:
            self._queue.append(exchange)
            self.pause_reading(_PAUSE_QUEUED)
            active = self._active
            if active is not None and active._role == "sender" and active.pipe is None and not active.response_ended:
                self.watch_hangup(_PAUSE_QUEUED)  # a waiting sender's FIN now waits behind the queued request

    def on_message_complete(self) -> None:
        if self._body is not None:
            return  # the body reader, not httptools, says when a message with a body ends
        incoming = self._incoming
        if incoming is not None:
            self._incoming = None
            incoming.on_body_complete()

    # --- used by the exchanges -------------------------------------------------------------------------

    def write(self, data: Chunk) -> None:
        if self._closed or self._lingering or self.transport is None:
            return
        if type(data) is bytes and len(data) < CORK_MAX_BYTES and not self._transport_gathers:
            self._cork(data)
        elif self._corked:
            self._corked.append(data)  # type: ignore[arg-type]  # out at once, behind what was held
            self.uncork()
        else:
            self.transport.write(data)

    def write_many(self, parts: Sequence[Chunk]) -> None:
        if self._closed or self._lingering or self.transport is None:
            return
        if (
            not self._transport_gathers
            and all(type(part) is bytes for part in parts)
            and sum(map(len, parts)) < CORK_MAX_BYTES
        ):
            for part in parts:
                self._cork(part)  # type: ignore[arg-type]
        elif self._corked:
            self._corked += parts  # type: ignore[arg-type]
            self.uncork()
        else:
            self.transport.writelines(parts)

    def _cork(self, data: bytes) -> None:
        if not self._corked:
            self.loop.call_soon(self.uncork)
        self._corked.append(data)

    def uncork(self) -> None:
        """Hand what this loop turn wrote to the transport now, in one call (one system call)."""
        parts = self._corked
        if parts:
            self._corked = []
            if not self._closed and not self._lingering and self.transport is not None:
                self.transport.writelines(parts)

    def push_out(self) -> None:
        """Hand what is held for this turn to the kernel now: here, and in a transport that gathers (TLS)."""
        self.uncork()
        flush = getattr(self.transport, "flush", None) if self._transport_gathers and not self._closed else None
        if flush is not None:
            flush()

    def when_drained(self, callback: Callable[[], None]) -> None:
        """Call back once everything written so far has left for the kernel (or the connection is gone)."""
        self.uncork()
        transport = self.transport
        if self._closed or transport is None or transport.get_write_buffer_size() == 0:
            callback()
            return
        self.loop.call_later(DRAIN_POLL_S, self.when_drained, callback)

    def pause_reading(self, reason: int) -> None:
        if self._lingering:
            return  # what still comes is drained
        if not self._transport_paused and self.transport is not None and not self._closed:
            self.transport.pause_reading()
            self._transport_paused = True
        self._paused |= reason

    def resume_reading(self, reason: int) -> None:
        was = self._paused
        self._paused &= ~reason
        if self._hangup is not None and not self._paused & self._hangup_reason:
            self.unwatch_hangup()  # read again: a FIN or RST reaches the transport itself
        if not was or self._paused or self.transport is None or self._closed:
            return
        if self._stash:
            # what was read first, on a turn of its own (this may run inside the previous request's callbacks)
            self.loop.call_soon(self._parse_stash)
        elif self._transport_paused:
            self._transport_paused = False
            self.transport.resume_reading()

    def _parse_stash(self) -> None:
        if self._paused or self._closed:
            return  # paused again meanwhile: the next resume comes back here
        if self._stash:
            data, self._stash = self._stash, b""
            self._parse(data)
        transport = self.transport
        if not self._paused and not self._stash and self._transport_paused and not self._closed and transport:
            self._transport_paused = False
            transport.resume_reading()

    def watch_hangup(self, reason: int) -> None:
        """Reading is paused for ``reason`` and nothing may ever resume it (a waiting sender, a live sender
        nobody hears): a FIN or RST behind the unread bytes must still end the connection and free the path."""
        if self._hangup is None and self.transport is not None and not self._closed:
            self._hangup = watch(self.transport, self._hung_up)
            self._hangup_reason = reason

    def unwatch_hangup(self) -> None:
        if self._hangup is not None:
            unwatch(self._hangup)
            self._hangup = None

    def _hung_up(self) -> None:
        # a waiting sender whose connection ends has left, even after its whole body (docs/design.md); a live
        # sender that nobody hears leaves the same way
        self._hangup = None
        self.abort()

    def close(self) -> None:
        self.uncork()
        if self.transport is None or self._closed or self._lingering:
            return
        if self._input_unread():
            self._linger()
        else:
            self.transport.close()

    def _input_unread(self) -> bool:
        """Whether the client may still be sending this connection's request (closing now would reset it)."""
        incoming = self._incoming
        return bool(
            self._body is not None
            or self._head_buffer
            or self._stash
            or (incoming is not None and not incoming.request_complete)
        )

    def _linger(self) -> None:
        """Close the way RFC 9112 9.6 says: shut down writing, drain the input a bounded while, then close."""
        transport = self.transport
        assert transport is not None
        self._lingering = True
        self._body = None
        self._head_buffer = self._stash = b""
        if self._incoming is not None:
            self._incoming.stop_splice()  # (a kernel relay would otherwise still read the socket)
        if transport.can_write_eof():  # TCP: the FIN tells the client its answer is whole (TLS cannot half-close)
            transport.write_eof()
        if self._transport_paused:
            self._transport_paused = False
            transport.resume_reading()
        self._linger_timer = self.loop.call_later(LINGER_S, self._end_linger)

    def _end_linger(self) -> None:
        if self._linger_timer is not None:
            self._linger_timer.cancel()
            self._linger_timer = None
        if self.transport is None or self._closed:
            return
        if self.pending_size():
            self.transport.abort()  # the answer is not even taken: nothing left to wait for
        else:
            self.transport.close()

    def abort(self) -> None:
        """Drop the connection at once (a broken socket: nothing more can be written)."""
        self._corked = []
        if self.transport is not None and not self._closed:
            self.transport.abort()

    def peer_address(self) -> str:
        """The client's address (asked of the transport only when someone wants it)."""
        peer = self.transport.get_extra_info("peername") if self.transport is not None else None
        return str(peer[0]) if peer else ""

    # --- a connection limit's view (Hooks.on_connect) -----------------------------------------------------

    def reclaimable(self) -> bool:
        """No request is being read or answered (part of a head may have come): closing it loses nothing."""
        if self._successor is not None:
            return self._successor.reclaimable()
        return not self._closed and self._active is None and self._incoming is None and not self._queue

    def reclaim(self) -> None:
        """Close to make room for a new connection; a client partway through a request head is told why."""
        if self._successor is not None:
            self._successor.reclaim()
            return
        if self._head_buffer:
            message = "[ERROR] Too many connections to this server; try again later.\n"
            self.write(_closing_answer(503, message, b"Retry-After: 5\r\n"))
        self.close()

    # --- used by the splice relay ----------------------------------------------------------------------

    @property
    def body_reader(self) -> BodyReader | None:
        return self._body

    def socket(self) -> socket.socket | None:
        self.uncork()  # whoever takes the socket writes after what was held
        return self.transport.get_extra_info("socket") if self.transport is not None and not self._closed else None

    def write_buffer_size(self) -> int:
        """Bytes written but not yet handed to the kernel (what is held for this turn is handed over first)."""
        self.uncork()
        return self.transport.get_write_buffer_size() if self.transport is not None and not self._closed else 0

    def pending_size(self) -> int:
        """Bytes written but not yet handed to the kernel, without handing over what is held."""
        if self.transport is None or self._closed:
            return 0
        return self.transport.get_write_buffer_size() + sum(map(len, self._corked))

    def end_spliced_body(self, leftover: bytes) -> None:
        """The splice relay moved the whole body: end it as the ordinary path would, then read on."""
        self._end_body()
        self.resume_reading(_PAUSE_SPLICE)
        if leftover:
            self.data_received(leftover)

    def exchange_done(self, exchange: Http1Exchange, *, close: bool) -> None:
        """The exchange's request is read and its response written: serve the next, or close."""
        if exchange is not self._active:
            return
        exchange.report()
        # Its pipe is of no more use to it, and the pipe refers back to it: both go as soon as unused
        exchange.pipe = None
        self._active = None
        if close:
            self.close()
            return
        if self._sweep is not None:
            self._idle_since = time.monotonic()  # no request is served: the timeouts run
        if self._writing_paused:
            return  # the client is not reading its answers: the next request waits (see _resume_output)
        if self._queue:
            self._serve_next()
        else:
            self.resume_reading(_PAUSE_QUEUED)

    def _serve_next(self) -> None:
        self._active = self._queue.popleft()
        self._idle_since = None
        if not self._queue:
            self.resume_reading(_PAUSE_QUEUED)
        self._active.dispatch()

    # --- header and keep-alive timeouts ------------------------------------------------------------------

    def _request_begun(self) -> bool:
        """Bytes of the next request have come (a partial head, or heads waiting for their turn)."""
        return bool(self._head_buffer or self._stash or self._preface)

    def _idle_deadline(self) -> float | None:
        since = self._idle_since
        if since is None:
            return None
        hooks = self.relay.hooks
        # the header timeout runs to a complete head; the keep-alive one only while nothing of a request came
        limits = [hooks.header_timeout_s]
        if not self._request_begun():
            limits.append(hooks.keepalive_timeout_s)
        set_limits = [limit for limit in limits if limit is not None]
        return since + min(set_limits) if set_limits else None

    def check_idle(self, now: float) -> None:
        """The sweep's question (see _idle.py): close the connection if a timeout has passed."""
        if self._closed or self._lingering or self.transport is None:
            return
        deadline = self._idle_deadline()
        if deadline is None or now < deadline:
            return  # a request is being served (None), or there is time left
        if self.pending_size():
            self.abort()  # its client does not read what it was sent: a close would wait for it forever
        elif self._request_begun():
            # the request came too slowly: answered, then closed without lingering (a client this slow
            # gets no more time, and over TLS the answer could not be followed by a half-close)
            self._head_buffer = self._stash = b""
            self.fail_request(408, "[ERROR] Request header timeout.\n")
        else:
            self.close()  # an idle kept-alive (or never used) connection

    def _report_malformed(self, status: int) -> None:
        """A request too broken to become an exchange still reaches the access log and the metrics."""
        on_access = self.relay.hooks.on_access
        if on_access is None:
            return
        request = RequestView(
            method="-",
            path="-",
            query="",
            headers=[],
            client=self.client or self.peer_address(),
            transport="h1",
            is_tls=self.is_tls,
        )
        on_access(
            AccessRecord(request=request, status=status, bytes_in=0, bytes_out=0, duration_s=0.0, role="malformed")
        )

    def fail_request(self, status: int, message: str) -> None:
        """The bytes on this connection cannot be parsed: answer if nothing is being answered, then close."""
        incoming = self._incoming
        if incoming is not None and incoming is not self._active:
            incoming = None
        if self._active is None or (incoming is self._active and not incoming.response_ended and not incoming._role):
            self.write(_closing_answer(status, message))
            self._report_malformed(status)
        elif self._incoming is not None and self._incoming.pipe is not None and self._incoming._role == "sender":
            # the upload's framing broke mid-transfer: its receivers must see a cut stream
            self._incoming.pipe.fail()
        self.close()


def _closing_answer(status: int, message: str, extra_headers: bytes = b"") -> bytes:
    """A whole plain-text answer after which the connection closes (no exchange to write it)."""
    body = message.encode()
    return (
        b"HTTP/1.1 %d %s\r\nContent-Type: text/plain\r\nAccess-Control-Allow-Origin: *\r\nDate: %s\r\n"
        b"%sContent-Length: %d\r\nConnection: close\r\n\r\n%s"
        % (status, _REASONS[status], http_date(), extra_headers, len(body), body)
    )


def _head_end(buffered: bytes) -> int:
    """Where the request head in ``buffered`` ends (after its empty line), or -1 if not there yet."""
    crlf = buffered.find(b"\r\n\r\n")
    # not valid HTTP: httptools gets it and refuses it with a clear 400 (looked for before the CRLFs
    # only: a body that follows may be long)
    bare = buffered.find(b"\n\n", 0, crlf + 1) if crlf >= 0 else buffered.find(b"\n\n")
    if bare >= 0 and (crlf < 0 or bare < crlf):
        return bare + 2
    return crlf + 4 if crlf >= 0 else -1


def _parser_reason(exc: Exception) -> str:
    text = str(exc).strip().rstrip(".")
    return text if text else "malformed HTTP/1.x request"
