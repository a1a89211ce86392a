"""A request whose path another worker owns (``--workers``), relayed to it over an internal HTTP/1.1 connection.

HTTP/2 streams and TLS connections cannot move between processes (a connection carries streams
to many paths; a TLS session lives in one process), so a stream for a path that another worker
owns stays where it is and ``Forward`` relays it: the request goes to the owner as HTTP/1.1 on a
Unix socket, the owner serves it exactly as it serves any client, and its response comes back to
the client's exchange through the same calls the relay makes (``start_receiving``,
``write_body``, ``finish_body``, ``cut``).

``Forward`` is the exchange's pipe, so the transports' backpressure reaches it unchanged: the
client's slow reading pauses reading the owner's response (``receiver_paused``); the owner's slow
reading (the internal connection's write buffer) pauses the client's upload (``pause_upload``).
A client that leaves aborts the internal connection (the owner sees its peer lost); an owner that
leaves, or dies, cuts the client's response (docs/protocol.md section 8).
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, cast

import httptools

from ..relay._flow import Chunk, Endpoint, Pipe, Relay
from ..relay._headers import Headers

if TYPE_CHECKING:
    from ..relay._exchange import Exchange

log = logging.getLogger("piping_server.workers")

#: The header that carries the client's address to the owner; honoured only on the internal socket.
INTERNAL_CLIENT = b"x-piping-internal-client"
#: How the client reached the edge ("h2", "h1+tls", ...): the owner's access log and hooks say that, not "h1".
INTERNAL_TRANSPORT = b"x-piping-internal-transport"
#: Hop-by-hop headers (RFC 9110 7.6.1) and ours: never passed on in either direction.
_HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"transfer-encoding",
        b"te",
        b"upgrade",
        b"proxy-connection",
        b"http2-settings",
        b"expect",  # the owner would answer 100 Continue on a connection the client never sees
        b"host",
        b"date",  # the edge writes its own: one Date per response
        INTERNAL_CLIENT,
        INTERNAL_TRANSPORT,
    }
)
#: An owner that is starting (or being restarted) is waited for this many times, this long apart.
CONNECT_TRIES = 50
CONNECT_RETRY_S = 0.1
#: The client's upload pauses above this many bytes not yet taken by the owner, resumes below the low mark.
WRITE_HIGH_WATER = 1024 * 1024
WRITE_LOW_WATER = 256 * 1024


class Forward(Pipe):
    """One client request served by the owner worker; the exchange's pipe while it lasts."""

    __slots__ = ("edge", "exchange", "transport", "_chunked", "_status", "_head", "_body", "_parser", "_done", "_gone")

    def __init__(self, relay: Relay, exchange: Exchange, socket_path: str) -> None:
        edge = cast(Endpoint, exchange)  # every transport's exchange is an endpoint of the relay
        super().__init__(relay, edge, ())
        self.edge = edge
        self.exchange = exchange
        self.transport: asyncio.Transport | None = None
        self._chunked = False
        self._status = 0
        self._head: Headers = []
        self._body: list[bytes] = []
        self._parser = httptools.HttpResponseParser(self)
        self._done = False  # the owner's whole response has been passed on
        self._gone = False  # the client left
        asyncio.get_running_loop().create_task(self._connect(socket_path))

    async def _connect(self, socket_path: str) -> None:
        loop = asyncio.get_running_loop()
        for attempt in range(CONNECT_TRIES):
            try:
                await loop.create_unix_connection(lambda: _Upstream(self), socket_path)
                return
            except OSError as exc:
                if self._gone or attempt == CONNECT_TRIES - 1:
                    log.warning("cannot reach the owner worker at %s: %s", socket_path, exc)
                    break
                await asyncio.sleep(CONNECT_RETRY_S)  # the owner is starting, or being restarted
        self._owner_lost()

    def connected(self, transport: asyncio.Transport) -> None:
        if self._gone:
            transport.abort()
            return
        self.transport = transport
        transport.set_write_buffer_limits(high=WRITE_HIGH_WATER, low=WRITE_LOW_WATER)
        transport.write(self._request_head())
        if self.exchange.method in ("POST", "PUT"):
            self.edge.start_upload(self)  # what was held flows now, the rest as it comes

    def _request_head(self) -> bytes:
        ex = self.exchange
        lines = [b"%s %s HTTP/1.1" % (ex.method.encode("ascii"), ex.target.encode("latin-1"))]
        lines.append(b"host: " + (ex.authority() or b"localhost"))
        lines += [name + b": " + value for name, value in ex.headers if name not in _HOP_BY_HOP]
        # No "connection: close": the owner then reads (and drops) the rest of a refused upload instead of
        # closing on it, which could lose its answer; this side closes once the answer is through.
        lines.append(INTERNAL_CLIENT + b": " + ex.client.encode("latin-1"))
        lines.append(INTERNAL_TRANSPORT + b": " + ex.transport_name.encode("ascii") + (b"+tls" if ex.is_tls else b""))
        if ex.method in ("POST", "PUT"):
            length = ex.header(b"content-length")
            if length is None or not length.isdigit():
                # the sender's own length (if any) travels as its header: receivers see it
                self._chunked = True
                lines.append(b"transfer-encoding: chunked")
        return b"\r\n".join(lines) + b"\r\n\r\n"

    # --- the client's upload, towards the owner -------------------------------------------------------

    def begin(self) -> None:
        """The owner starts the receivers' responses: nothing to do here."""

    def feed(self, data: Chunk) -> None:
        """The client's upload goes up to the owner."""
        transport = self.transport
        if transport is None or transport.is_closing() or not data:
            return
        if self._chunked:
            transport.writelines([b"%x\r\n" % len(data), data, b"\r\n"])
        else:
            transport.write(data)

    def upload_complete(self) -> None:
        transport = self.transport
        if self._chunked and transport is not None and not transport.is_closing():
            transport.write(b"0\r\n\r\n")

    def fail(self) -> None:
        # the upload's framing broke: the owner must see its sender lost, and cut the receivers
        if self.transport is not None:
            self.transport.abort()

    def peer_lost(self) -> None:
        """The client's connection or stream is gone: so is the owner's request."""
        self._gone = True
        if self.transport is not None:
            self.transport.abort()

    # --- the owner's response, towards the client ------------------------------------------------------

    def receiver_paused(self, receiver: Endpoint) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.pause_reading()

    def receiver_resumed(self, receiver: Endpoint) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()

    def detach(self, receiver: Endpoint) -> None:
        self.receiver_resumed(receiver)

    def response_data(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError:
            log.warning("malformed response from the owner worker")
            if self.transport is not None:
                self.transport.abort()

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        status = self._parser.get_status_code()
        if status < 200:
            self._head = []  # an interim response: the final one follows
            return
        self._status = status
        self._head = [(name, value) for name, value in self._head if name not in _HOP_BY_HOP]
        if status == 200 and not self._gone:
            # a sender's progress lines or a receiver's body: streamed as the owner writes them
            self.edge.start_receiving(self._head)

    def on_body(self, body: bytes) -> None:
        if self._status == 200:
            if not self._gone:
                self.edge.write_body(body)
        elif self._status:
            self._body.append(body)

    def on_message_complete(self) -> None:
        if self._status < 200 or self._done:
            return
        self._done = True
        if self.transport is not None:
            self.transport.close()
        if self._gone:
            return
        if self._status == 200:
            self.edge.finish_body()
        else:
            # a refusal: whole, with the owner's headers (a 401's WWW-Authenticate...)
            head = [(name, value) for name, value in self._head if name != b"content-length"]
            self.exchange._respond(self._status, head, b"".join(self._body))

    def _owner_lost(self) -> None:
        self.transport = None
        if not self._done and not self._gone:
            self._done = True
            self.edge.cut()  # cut as a transfer is cut: the client never sees a complete response


class _Upstream(asyncio.Protocol):
    """The internal connection to the owner, on the forwarding worker's side."""

    def __init__(self, forward: Forward) -> None:
        self.forward = forward

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.forward.connected(cast(asyncio.Transport, transport))

    def data_received(self, data: bytes) -> None:
        self.forward.response_data(data)

    def eof_received(self) -> bool | None:
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.forward._owner_lost()

    def pause_writing(self) -> None:
        self.forward.edge.pause_upload()

    def resume_writing(self) -> None:
        self.forward.edge.resume_upload()
