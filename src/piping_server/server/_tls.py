"""TLS for the HTTPS listener: the context, its check at start-up, its reload, and ALPN dispatch.

The certificate and key are loaded once at start-up (a bad or missing file is a one-line error)
and then watched: when either file changes, a new context is built and handed to every later
handshake through the listener context's SNI callback (``ssl_object.context = new``), which
OpenSSL calls for every ClientHello, with or without a server name. Connections already open keep
the context they began with, so no transfer is dropped. A new file that does not load (a half
written pair, a key that does not match) keeps the old certificate and says why in the log.

ALPN offers ``h2`` and ``http/1.1``; the protocol of each connection is chosen once its handshake
is done (asyncio calls ``connection_made`` only then). A slow or stuck handshake runs on its own and
is cut after ``HANDSHAKE_TIMEOUT_S``: it never holds up the accepting of other connections.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import ssl
from collections.abc import Iterable
from typing import Any, cast

from ..http1.protocol import Http1Protocol
from ..relay._flow import Relay

__all__ = [
    "ALPN_PROTOCOLS",
    "HANDSHAKE_TIMEOUT_S",
    "RELOAD_POLL_S",
    "CertificateError",
    "CertificateStore",
    "build_context",
    "start_https",
]

log = logging.getLogger("piping_server")

#: What ALPN offers, most preferred first (RFC 7301); browsers stream uploads only over h2.
ALPN_PROTOCOLS = ["h2", "http/1.1"]
#: How often the certificate and key files are checked for a change.
RELOAD_POLL_S = 2.0
#: A TLS handshake not done by then is dropped (the default, 60 s, lets idle sockets pile up).
HANDSHAKE_TIMEOUT_S = 10.0
#: Plaintext handed to the protocol per read at most: 16 TLS records, what the event loop's TLS reads too.
READ_BYTES = 256 * 1024
_DECRYPTED = memoryview(bytearray(READ_BYTES))  # see _DecryptInto
#: Writes gathered up to this many bytes go at once (see _GatheredWrites): HTTP/1's write high-water
#: mark, above one read's worth (READ_BYTES and its chunk framing), so that a piece goes in one write.
GATHER_BYTES = 1024 * 1024

_Stamp = tuple[tuple[int, int, int], tuple[int, int, int]]


class CertificateError(Exception):
    """The certificate or key cannot be used: a one-line reason."""


def build_context(crt_path: str, key_path: str) -> ssl.SSLContext:
    """A server context with the certificate chain and key loaded and ALPN set.

    Raises:
        CertificateError: a file is missing or unreadable, not PEM, or the key does not match.
    """
    for path in (crt_path, key_path):
        # OpenSSL's own error does not say which file is missing
        if not os.path.exists(path):
            raise CertificateError(f"no such file: {path}")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    # RFC 9113 section 9.2: HTTP/2 needs TLS 1.2 or later
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_alpn_protocols(ALPN_PROTOCOLS)
    # RFC 9113 section 9.2.2: over TLS 1.2, h2 needs an ephemeral key exchange and an AEAD cipher
    ctx.set_ciphers("ECDHE+AESGCM:ECDHE+CHACHA20:DHE+AESGCM:DHE+CHACHA20")
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION
    try:
        ctx.load_cert_chain(crt_path, key_path)
    except FileNotFoundError as exc:  # removed just now
        raise CertificateError(f"no such file: {exc.filename or f'{crt_path} or {key_path}'}") from exc
    except PermissionError as exc:
        raise CertificateError(f"cannot read {exc.filename or f'{crt_path} or {key_path}'}: permission denied") from exc
    except ssl.SSLError as exc:
        raise CertificateError(f"cannot use certificate {crt_path} with key {key_path}: {_ssl_reason(exc)}") from exc
    except OSError as exc:
        raise CertificateError(f"cannot read {crt_path} or {key_path}: {exc.strerror or exc}") from exc
    return ctx


def _ssl_reason(exc: ssl.SSLError) -> str:
    reason = exc.reason or ""
    if reason == "KEY_VALUES_MISMATCH":
        return "the key does not match the certificate"
    if exc.library == "PEM" or reason in ("NO_START_LINE", "PEM lib") or "PEM" in str(exc):
        return "not a PEM certificate and key"
    return reason.replace("_", " ").lower() or str(exc).splitlines()[0]


class CertificateStore:
    """The certificate in use, reloaded when its files change."""

    def __init__(self, crt_path: str, key_path: str) -> None:
        """Load the pair now. Raises CertificateError when it cannot be used."""
        self.crt_path = crt_path
        self.key_path = key_path
        #: the context given to the listener; its SNI callback hands out ``current``
        self.context = build_context(crt_path, key_path)
        self.context.sni_callback = self._pick_context
        #: the context new handshakes get
        self.current = self.context
        self._seen = self._stamp()
        self._task: asyncio.Task[None] | None = None

    def _pick_context(self, ssl_object: ssl.SSLObject, server_name: str | None, ctx: ssl.SSLContext) -> None:
        current = self.current
        if current is not ctx:
            ssl_object.context = current

    def _stamp(self) -> _Stamp | None:
        try:
            crt = os.stat(self.crt_path)
            key = os.stat(self.key_path)
        except OSError:
            return None  # a file being replaced: look again next time
        return (crt.st_mtime_ns, crt.st_size, crt.st_ino), (key.st_mtime_ns, key.st_size, key.st_ino)

    def reload_if_changed(self) -> bool:
        """Build a new context if either file changed since last seen; True when a new one is in use."""
        stamp = self._stamp()
        if stamp is None or stamp == self._seen:
            return False
        self._seen = stamp
        try:
            fresh = build_context(self.crt_path, self.key_path)
        except CertificateError as exc:
            log.warning("certificate not reloaded, keeping the previous one: %s", exc)
            return False
        self.current = fresh
        log.info("certificate reloaded from %s", self.crt_path)
        return True

    def start_watching(self) -> None:
        """Check the files every RELOAD_POLL_S on the running loop, until ``stop_watching``."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._watch())

    async def stop_watching(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(RELOAD_POLL_S)
            self.reload_if_changed()


class _AlpnDispatch(asyncio.Protocol):
    """Stands in until the handshake is done, then hands the connection to HTTP/2 or HTTP/1.x."""

    def __init__(self, relay: Relay) -> None:
        self._relay = relay

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        ssl_object = transport.get_extra_info("ssl_object")
        alpn = ssl_object.selected_alpn_protocol() if ssl_object is not None else None
        if alpn == "h2":
            from ..http2.protocol import Http2Protocol  # (see http2/__init__.py)

            # HTTP/2 already writes once per connection per turn of the loop
            h2 = Http2Protocol(self._relay, is_tls=True)
            transport.set_protocol(_DecryptInto(h2))
            h2.connection_made(transport)
            return
        # "http/1.1", or a client without ALPN, gets HTTP/1.x
        h1 = Http1Protocol(self._relay, is_tls=True)
        reader = _DecryptInto(h1, ssl_object)
        transport.set_protocol(reader)
        h1.connection_made(_GatheredWrites(transport, reader))  # type: ignore[arg-type]  # (uvloop's transport)


class _DecryptInto(asyncio.BufferedProtocol):
    """Gives the TLS transport one reusable buffer to decrypt into, then hands the protocol one ``bytes``.

    Why: for a plain ``asyncio.Protocol`` the event loop's TLS reads each record with
    ``SSLObject.read(256 KiB)``, which allocates a 256 KiB ``bytes`` per 16 KiB record (and shrinks it),
    then joins the records into yet another new object. Whether that costs much depends on glibc's heap
    state: in some runs py-spy put a third of the server's time on an HTTP/1.1 upload over TLS in those
    allocations (page faults, ``brk``), in others a few per cent. Here OpenSSL decrypts every record of
    a read into memory that stays mapped and warm, and one copy makes the ``bytes`` the protocols expect.

    One buffer serves every connection: the loop decrypts one connection's read at a time, and
    ``buffer_updated`` copies it out before any protocol code runs (a buffer per connection would
    cost 256 KiB of memory for each, idle ones too).

    A TCP FIN without close_notify (many clients close that way): the event loop's TLS (uvloop's and
    asyncio's alike) takes it for a broken connection and closes at once, with no ``eof_received``,
    dropping the records it read but had not decrypted yet. Those are there when HTTP/1 had paused its
    reads (its receivers lag, or a waiting sender's body reached its bound): the loop reads on, up to
    256 KiB, past the pause. Over plain TCP that rest and the FIN behind it would wait in the kernel
    until the reads resume. So for HTTP/1 (``ssl_object`` given) this decrypts what is left, and hands
    it on, then ``eof_received``, then ``connection_lost``, each when the protocol reads again: the
    upload ends as its framing says (whole, or cut), as over plain TCP. What is held is bounded by the
    loop's read-ahead (below its 256 KiB high-water mark plus one read of 256 KiB at most, what the loop
    held undecrypted anyway while the connection was open); a close by the server itself drops it.
    """

    __slots__ = ("_protocol", "_ssl_object", "_paused", "_closed_here", "_eof_seen", "_lost", "_held")

    def __init__(self, protocol: asyncio.Protocol, ssl_object: ssl.SSLObject | None = None) -> None:
        self._protocol = protocol
        self._ssl_object = ssl_object  # (None: no replay after a FIN without close_notify)
        self._paused = False  # the protocol paused its reads (told by _GatheredWrites)
        self._closed_here = False  # the server closed or aborted the connection itself
        self._eof_seen = False  # close_notify came: the loop called eof_received
        self._lost = False  # the transport is gone, its ending not yet handed to the protocol
        self._held: list[bytes] = []  # decrypted after the transport was gone, not yet handed on

    def get_buffer(self, sizehint: int) -> memoryview:
        return _DECRYPTED

    def buffer_updated(self, nbytes: int) -> None:
        self._hand_on(bytes(_DECRYPTED[:nbytes]))

    def _hand_on(self, data: bytes) -> None:
        global _reading
        _reading = True
        try:
            self._protocol.data_received(data)
        finally:
            _reading = False
            if _gathering:
                _flush_gathered()  # what this read made HTTP/1 write, as one write per connection

    def eof_received(self) -> bool | None:
        self._eof_seen = True
        return self._protocol.eof_received()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._protocol.connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        if exc is not None or self._ssl_object is None or self._closed_here or self._eof_seen:
            self._protocol.connection_lost(exc)
            return
        # the peer's FIN without close_notify (see the class's comment)
        self._held = self._decrypt_leftover(self._ssl_object)
        self._lost = True
        if not self._paused:
            self._replay()

    def _decrypt_leftover(self, ssl_object: ssl.SSLObject) -> list[bytes]:
        """What the loop read but never decrypted; a record cut short by the FIN stays out, as TCP's rest would."""
        pieces: list[bytes] = []
        while True:
            try:
                nbytes = cast(int, ssl_object.read(READ_BYTES, _DECRYPTED))  # (an int when given a buffer)
            except ssl.SSLError:  # SSLWantReadError: nothing whole left; or close_notify, or a bad record
                return pieces
            if not nbytes:
                return pieces
            pieces.append(bytes(_DECRYPTED[:nbytes]))

    def reading_paused(self, paused: bool) -> None:
        """The protocol paused or resumed its reads; after the transport is gone, resuming carries on the replay."""
        self._paused = paused
        if not paused and self._lost:
            asyncio.get_running_loop().call_soon(self._replay)  # (not inside the protocol's own call)

    def closed_here(self) -> None:
        """The server closed or aborted the connection: what is held is dropped, the protocol told it is lost."""
        self._closed_here = True
        if self._lost:
            asyncio.get_running_loop().call_soon(self._replay)

    def _replay(self) -> None:
        """Hand on what is held, then the FIN, then the loss, as far as the protocol reads."""
        if not self._lost:
            return  # (done already)
        held = self._held
        while held and not self._paused and not self._closed_here:
            self._hand_on(held.pop(0))
        if self._paused and not self._closed_here:
            return  # the rest when the protocol reads again
        self._lost = False
        self._held = []
        if not self._closed_here:
            self._protocol.eof_received()  # (what it answers does not matter: the connection is gone)
        self._protocol.connection_lost(None)

    def pause_writing(self) -> None:
        self._protocol.pause_writing()

    def resume_writing(self) -> None:
        self._protocol.resume_writing()

    def retarget(self, protocol: asyncio.Protocol) -> None:
        """Hand what comes next to ``protocol`` (HTTP/1 giving the connection to HTTP/2)."""
        self._protocol = protocol


class _GatheredWrites(asyncio.Transport):
    """The transport HTTP/1 writes to: what it writes in one turn of the loop goes as one write.

    Why: HTTP/1 re-frames each piece of an upload for its receiver as three writes (the chunk size
    line, the data, the CRLF), and a chunked upload arrives in pieces of its sender's chunks (64 KiB
    from most clients). Straight to the TLS transport, each write is one ``SSL_write``, so one TLS
    record (two of them a few bytes long), and each ``writelines`` one ``send`` system call: twelve
    ``SSL_write`` calls and four sends per 256 KiB read. Gathered, it is one of each, at the price of
    one copy (the join). Writes made while a TLS read is handed on go when that read's callback
    returns (one write per read, whatever the loop reads in one turn); any other write at the end of
    the current turn of the loop. They go at once when they reach ``GATHER_BYTES`` (so that
    ``pause_writing`` still comes in time) or when the caller's buffer could change (anything but
    ``bytes`` or a view of ``bytes``).
    """

    __slots__ = ("_inner", "_reader", "_parts", "_pending")

    #: HTTP/1 leaves the gathering of its small writes to this transport (see Http1Protocol.write)
    gathers_writes = True

    def __init__(self, inner: asyncio.Transport, reader: _DecryptInto) -> None:
        super().__init__()
        self._inner = inner
        self._reader = reader
        self._parts: list[bytes | memoryview] = []
        self._pending = 0

    def write(self, data: Any) -> None:
        if not data:
            return
        if type(data) is not bytes and not (isinstance(data, memoryview) and isinstance(data.obj, bytes)):
            self.flush()
            if not self._inner.is_closing():  # (closed by the peer meanwhile: nothing can go)
                self._inner.write(data)
            return
        parts = self._parts
        parts.append(data)
        self._pending += len(data)
        if self._pending >= GATHER_BYTES:
            self.flush()
        elif len(parts) == 1:
            _gather(self)

    def writelines(self, list_of_data: Iterable[Any]) -> None:
        for data in list_of_data:
            self.write(data)

    def flush(self) -> None:
        parts = self._parts
        if not parts:
            return
        self._parts = []
        self._pending = 0
        if not self._inner.is_closing():  # (closed by the peer meanwhile: nothing can go)
            self._inner.write(parts[0] if len(parts) == 1 else b"".join(parts))

    def get_write_buffer_size(self) -> int:
        return self._inner.get_write_buffer_size() + self._pending

    def close(self) -> None:
        self.flush()
        self._reader.closed_here()
        self._inner.close()

    def abort(self) -> None:
        self._parts = []
        self._pending = 0
        self._reader.closed_here()
        self._inner.abort()

    def write_eof(self) -> None:
        self.flush()
        self._inner.write_eof()

    def can_write_eof(self) -> bool:
        return self._inner.can_write_eof()

    def is_closing(self) -> bool:
        return self._inner.is_closing()

    def pause_reading(self) -> None:
        self._reader.reading_paused(True)
        self._inner.pause_reading()

    def resume_reading(self) -> None:
        self._reader.reading_paused(False)
        self._inner.resume_reading()

    def is_reading(self) -> bool:
        return self._inner.is_reading()

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        # uvloop's TLS transport checks its buffer against new limits by calling its protocol's
        # pause_writing, even once the connection is gone and that protocol is None (a traceback in the
        # log). The gone connection's loss is on its way to HTTP/1 then: no limits matter any more.
        if not self._inner.is_closing():
            self._inner.set_write_buffer_limits(high, low)

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return self._inner.get_write_buffer_limits()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._inner.get_extra_info(name, default)

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._reader.retarget(protocol)  # type: ignore[arg-type]

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._reader._protocol


_gathering: list[_GatheredWrites] = []  # the transports holding gathered writes
_reading = False  # within a TLS read's callback, which flushes them when it returns
_flush_scheduled = False


def _gather(transport: _GatheredWrites) -> None:
    global _flush_scheduled
    _gathering.append(transport)
    if not _reading and not _flush_scheduled:
        # written outside a TLS read (a timer, a plain-HTTP sender's data): at the end of this turn
        _flush_scheduled = True
        asyncio.get_running_loop().call_soon(_flush_gathered)


def _flush_gathered() -> None:
    global _flush_scheduled
    _flush_scheduled = False
    transports = _gathering[:]
    _gathering.clear()
    for transport in transports:
        transport.flush()


async def start_https(
    relay: Relay,
    host: str | None,
    port: int,
    store: CertificateStore,
    *,
    sock: socket.socket | None = None,
    backlog: int = 1024,
) -> asyncio.Server:
    """Listen for HTTPS (HTTP/2 and HTTP/1.1 by ALPN) and start watching the certificate.

    ``sock``: a listening socket to serve on instead of binding ``host``:``port`` (``_listeners.py`` makes
    it; a worker of ``--workers`` inherits it).

    Raises:
        OSError: the port cannot be bound.
    """
    loop = asyncio.get_running_loop()
    where: dict[str, Any] = {"sock": sock} if sock is not None else {"host": host, "port": port}
    server = await loop.create_server(
        lambda: _AlpnDispatch(relay),
        **where,
        ssl=store.context,
        ssl_handshake_timeout=HANDSHAKE_TIMEOUT_S,
        reuse_address=True,
        backlog=backlog,  # also with ``sock``: asyncio listens again on it, with 100 unless told
    )
    store.start_watching()
    return server
