"""TCP port forwarding over two Piping paths, plain (one connection) or multiplexed.

Paths: ``PATH1`` carries client-to-server bytes, ``PATH2`` server-to-client bytes (one ``PATH`` means
``PATH/c-to-s`` and ``PATH/s-to-c``), as piping-tunnel and the seed's one-liners do:

* server host: ``GET PATH1`` -> the local service -> ``POST PATH2``
  (``curl -sSN URL/PATH1 | nc localhost 22 | curl -sSNT - URL/PATH2``)
* client host: local listener -> ``POST PATH1``; ``GET PATH2`` -> the listener's connection
  (``curl -sSN URL/PATH2 | nc -l 2222 | curl -sSNT - URL/PATH1``)

Plain mode forwards one TCP connection and stops; it interoperates with the one-liners and with
piping-tunnel's default mode. ``--multiplex`` carries any number of connections over one pair of
paths with the framing described in ``docs/client.md`` (both ends must be this program); a
multiplexed server host serves one client host after another until it is stopped.

What each end can know when a stream is cut is that the other host went away: the errors say
"the tunnel client host went away" (or server host), never who sent what.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import struct
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

from ._common import check_transfer_path, is_marked
from ._errors import PipingError, TransferInterruptedError, UsageError
from ._http import HttpConnection
from ._url import resolve_url

__all__ = ["TunnelPaths", "run_tunnel_client", "run_tunnel_server", "tunnel_paths"]

_READ = 64 * 1024
Log = Callable[[str], None]
CLIENT_HOST, SERVER_HOST = "client host", "server host"

# ``X-Piping: tunnel-error`` on PATH2 marks a body that is a server host's reason for failing, not the
# connection's bytes (this program's server host sent it before it waited on PATH2 from the start;
# it now cuts PATH2 instead): the client host fails at once with that reason.
TUNNEL_ERROR_MARKER = "tunnel-error"
# A multiplexed server host starts a new session when its client host leaves; sessions that end
# sooner than this are spaced out by it, so that a failing peer never makes it spin.
_MIN_SESSION_S = 1.0


@dataclass
class TunnelPaths:
    client_to_server: str  # URL of PATH1
    server_to_client: str  # URL of PATH2


def tunnel_paths(paths: tuple[str, ...], server: str | None) -> TunnelPaths:
    if len(paths) == 1:
        base = paths[0].rstrip("/")
        paths = (f"{base}/c-to-s", f"{base}/s-to-c")
    if len(paths) != 2:
        raise UsageError("give one path (PATH/c-to-s and PATH/s-to-c are used) or two paths PATH1 PATH2")
    urls = [resolve_url(p, server) for p in paths]
    for url, typed in zip(urls, paths, strict=True):
        check_transfer_path(url, typed)
    return TunnelPaths(urls[0], urls[1])


def _silent(_: str) -> None:
    pass


def _connect_reason(e: OSError) -> str:
    """``connection refused`` rather than asyncio's ``Connect call failed ('127.0.0.1', 22)``."""
    if e.errno:
        return os.strerror(e.errno).lower()
    # Several addresses (localhost: ::1 and 127.0.0.1) fail as one OSError without errno: take the first.
    m = re.search(r"\[Errno (\d+)\]", str(e))
    return os.strerror(int(m.group(1))).lower() if m else str(e) or type(e).__name__


def _peer_gone(peer: str) -> TransferInterruptedError:
    """What a tunnel end can know when one of its two streams is cut: the other host went away."""
    return TransferInterruptedError(f"the tunnel {peer} went away")


# ----------------------------------------------------------------------------------------------- HTTP halves


# The sender's progress lines (ours and the reference's) that say a receiver is there.
_RECEIVER_THERE = re.compile(r"receiver\(s\) has/have been connected|A receiver was connected|Start sending")


class _Upload:
    """A long POST whose body comes from an async iterator; its status lines are watched for errors.

    ``receiver_there`` is set once the server says that a receiver (the other host) takes the upload."""

    def __init__(self, url: str, verify: bool, peer: str) -> None:
        self.conn = HttpConnection(url, verify=verify)
        self.peer = peer
        self.receiver_there = asyncio.Event()

    async def start(self, body: AsyncIterator[bytes]) -> None:
        await self.conn.connect()
        await self.conn.send_head("POST", [("Content-Type", "application/octet-stream")])
        self.sending = asyncio.create_task(self.conn.send_body(body))
        self.watching = asyncio.create_task(self._watch())

    async def _watch(self) -> None:
        await self.conn.read_ok_head()
        text = b""
        async for data in self.conn.iter_body():
            text += data
            for line in text.decode("utf-8", "replace").splitlines():
                if line.startswith("[ERROR]") or "aborted" in line:
                    raise _peer_gone(self.peer)
                if _RECEIVER_THERE.search(line):
                    self.receiver_there.set()
            text = text[text.rfind(b"\n") + 1 :]

    def close(self) -> None:
        for t in (getattr(self, "sending", None), getattr(self, "watching", None)):
            if t is not None:
                t.cancel()
        self.conn.abort()


async def _open_download(url: str, verify: bool, peer: str) -> HttpConnection:
    conn = HttpConnection(url, verify=verify)
    try:
        await conn.connect()
        await conn.send_head("GET", [])
        await _read_download_head(conn, peer)
    except BaseException:
        conn.abort()
        raise
    return conn


async def _read_download_head(conn: HttpConnection, peer: str) -> HttpConnection:
    """The download's response head: a 200, not marked as the other host's error."""
    head = await conn.read_ok_head()
    if is_marked(head.header_all("X-Piping"), TUNNEL_ERROR_MARKER):
        reason = (await conn.read_text(1024)).strip() or "cannot reach its service"
        raise PipingError(f"the tunnel {peer} {reason}")
    return conn


async def _chunks_once_connected(
    connected: asyncio.Future[asyncio.StreamReader],
) -> AsyncIterator[bytes]:
    """The local connection's bytes, once there is one (the upload is under way before)."""
    async for chunk in _socket_chunks(await connected):
        yield chunk


async def _wait_all(tasks: list[asyncio.Task[None]]) -> None:
    """Wait for every task; on the first failure cancel the rest and raise it."""
    try:
        done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        for t in done:
            if t.exception() is not None:
                raise t.exception()  # type: ignore[misc]
    finally:
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(BaseException):
                await t


# ----------------------------------------------------------------------------------------------- plain mode


async def _socket_chunks(reader: asyncio.StreamReader) -> AsyncIterator[bytes]:
    while True:
        try:
            data = await reader.read(_READ)
        except OSError:
            return
        if not data:
            return
        yield data


async def _splice(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    download: Awaitable[HttpConnection],
    upload_url: str,
    verify: bool,
    peer: str,
    started: _Upload | None = None,
) -> None:
    """Carry one TCP connection: its bytes go up ``upload_url`` (or the ``started`` upload, whose body
    already reads this connection), the download's bytes come down to it."""
    upload = started or _Upload(upload_url, verify, peer)
    download_task = asyncio.ensure_future(download)

    async def down() -> None:
        conn = await download_task
        async for data in conn.iter_body():
            try:
                writer.write(data)
                await writer.drain()
            except (ConnectionError, OSError, RuntimeError) as e:
                raise _LocalConnectionError(e) from None
        # The peer finished sending: pass the half-close on, keep the other direction open.
        if writer.can_write_eof():
            with contextlib.suppress(OSError):
                writer.write_eof()

    async def sent() -> None:
        await upload.sending

    async def watched() -> None:
        await upload.watching

    try:
        if started is None:
            await upload.start(_socket_chunks(reader))
        await _wait_all([asyncio.create_task(down()), asyncio.create_task(sent()), asyncio.create_task(watched())])
    except _LocalConnectionError as e:
        raise PipingError(f"the local connection failed: {e}") from None
    except TransferInterruptedError:
        # A stream of the tunnel was cut, or the server told of an abort: the other host is gone.
        raise _peer_gone(peer) from None
    finally:
        upload.close()
        download_task.cancel()
        with contextlib.suppress(BaseException):
            (await download_task).abort()
        writer.close()


class _LocalConnectionError(Exception):
    """Writing to the tunnel's local TCP connection failed (told apart from a cut HTTP stream)."""

    def __init__(self, e: BaseException) -> None:
        super().__init__(e.strerror if isinstance(e, OSError) and e.strerror else str(e) or type(e).__name__)


async def run_tunnel_server(
    paths: TunnelPaths,
    host: str,
    port: int,
    *,
    multiplex: bool = False,
    verify_tls: bool = True,
    log: Log = _silent,
) -> None:
    """Server host: bridge the service at ``host:port`` to the client host over the two paths."""
    if multiplex:
        await _serve_mux_sessions(paths, host, port, verify_tls, log)
        return
    log(f"[INFO] Waiting for the client host on {paths.client_to_server}")
    # The client host is there when the server answers our GET on PATH1 (ours does once the client
    # host's POST arrives) or when it tells our upload on PATH2 that a receiver came. Both are asked
    # at once: the reference answers an HTTP/1.1 GET only with the first byte of the client host's
    # data, and services that speak first (SSH and VNC servers) would wait for each other forever.
    download = HttpConnection(paths.client_to_server, verify=verify_tls)
    upload = _Upload(paths.server_to_client, verify_tls, CLIENT_HOST)
    connected: asyncio.Future[asyncio.StreamReader] = asyncio.get_running_loop().create_future()
    head: asyncio.Task[HttpConnection] | None = None
    try:
        await download.connect()
        await download.send_head("GET", [])
        head = asyncio.create_task(_read_download_head(download, CLIENT_HOST))
        await upload.start(_chunks_once_connected(connected))
        there = asyncio.create_task(upload.receiver_there.wait())
        try:
            await asyncio.wait([head, there, upload.watching], return_when=asyncio.FIRST_COMPLETED)
        finally:
            there.cancel()
        for task in (head, upload.watching):
            if task.done() and task.exception() is not None:
                raise task.exception()  # type: ignore[misc]
        # Connect to the service only now that a client is there: it sees no idle connection meanwhile.
        log(f"[INFO] Client host connected; connecting to {host}:{port}")
        try:
            reader, writer = await asyncio.open_connection(host, port)
        except OSError as e:
            reason = f"cannot connect to {host}:{port}: {_connect_reason(e)}"
            # Our upload is already the client host's PATH2 (it waited there first): cutting it ends the
            # client host's connection at once, which says "the tunnel server host went away".
            raise PipingError(reason) from None
    except BaseException:
        if head is not None:
            head.cancel()
        upload.close()
        download.abort()
        raise
    connected.set_result(reader)
    await _splice(reader, writer, head, paths.server_to_client, verify_tls, CLIENT_HOST, started=upload)
    log("[INFO] Connection finished")


async def _serve_mux_sessions(paths: TunnelPaths, host: str, port: int, verify: bool, log: Log) -> None:
    """A multiplexed server host serves one client host after another, until it is stopped."""
    while True:
        started = time.monotonic()
        side = _MuxServerSide(host, port, log)
        try:
            await _run_mux(paths.client_to_server, paths.server_to_client, side, verify, log, CLIENT_HOST)
        except TransferInterruptedError as e:
            log(f"[INFO] {str(e)[:1].upper()}{str(e)[1:]}")
        if time.monotonic() - started < _MIN_SESSION_S:
            await asyncio.sleep(_MIN_SESSION_S)


async def run_tunnel_client(
    paths: TunnelPaths,
    host: str,
    port: int,
    *,
    multiplex: bool = False,
    verify_tls: bool = True,
    log: Log = _silent,
    ready: Callable[[int], None] | None = None,
) -> None:
    """Client host: listen on ``host:port`` and forward to the server host over the two paths.

    ``ready`` is called with the bound port once listening (useful with ``port=0``).
    """
    if multiplex:
        side = _MuxClientSide(host, port, log, ready)
        await _run_mux(paths.server_to_client, paths.client_to_server, side, verify_tls, log, SERVER_HOST)
        return
    accepted: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = asyncio.Queue()

    async def on_conn(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await accepted.put((r, w))

    listener = await _listen(on_conn, host, port)
    bound = listener.sockets[0].getsockname()[1]
    log(f"[INFO] Listening on {host}:{bound}; one connection will be forwarded")
    if ready is not None:
        ready(bound)
    try:
        reader, writer = await accepted.get()
    finally:
        # Plain mode forwards exactly one connection. (Not Server.wait_closed(): since Python 3.12 it
        # waits for the accepted connection too, which is the one being forwarded.)
        listener.close()
    log("[INFO] Connection accepted; forwarding it")
    download = _open_download(paths.server_to_client, verify_tls, SERVER_HOST)
    await _splice(reader, writer, download, paths.client_to_server, verify_tls, SERVER_HOST)
    log("[INFO] Connection finished")


async def _listen(
    handler: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]], host: str, port: int
) -> asyncio.Server:
    try:
        return await asyncio.start_server(handler, host, port)
    except OSError as e:
        raise UsageError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None


# ----------------------------------------------------------------------------------------------- multiplex mode
#
# Each direction (the body of one long POST, read by the peer's GET) is MAGIC then frames:
#   type: u8 | stream id: u32 big-endian | payload length: u32 big-endian | payload
# OPEN (client -> server, empty) starts stream <id>; DATA carries bytes; FIN: no more bytes from this
# side (TCP half-close); RST: abort the stream (payload: optional UTF-8 reason); WINDOW (payload: u32)
# lets the peer send that many more DATA bytes on the stream; PING (stream 0) keeps idle proxies open.
# Each side may have at most WINDOW0 unacknowledged bytes in flight per stream, so one slow connection
# never stalls the others nor grows memory.

MAGIC = b"PIPING-MUX/1\r\n"
OPEN, DATA, FIN, RST, WINDOW, PING = 1, 2, 3, 4, 5, 6
WINDOW0 = 256 * 1024
MAX_DATA = 32 * 1024
MAX_PAYLOAD = 1 << 20
PING_INTERVAL = 20.0
_FRAME = struct.Struct(">BII")


class _MuxStream:
    def __init__(self, session: _MuxSession, sid: int) -> None:
        self.session = session
        self.sid = sid
        self.send_window = WINDOW0
        self.window_open = asyncio.Event()
        self.incoming: asyncio.Queue[bytes | None] = asyncio.Queue()
        self.writer: asyncio.StreamWriter | None = None
        self.task: asyncio.Task[None] | None = None

    async def run(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writer = writer
        try:
            out = asyncio.create_task(self._local_to_remote(reader))
            into = asyncio.create_task(self._remote_to_local(writer))
            await _wait_all([out, into])
        except (OSError, PipingError) as e:
            self.session.send(RST, self.sid, str(e).encode()[:200])
        finally:
            writer.close()
            self.session.streams.pop(self.sid, None)

    async def _local_to_remote(self, reader: asyncio.StreamReader) -> None:
        while True:
            while self.send_window <= 0:
                self.window_open.clear()
                await self.window_open.wait()
            data = await reader.read(min(MAX_DATA, self.send_window))
            if not data:
                self.session.send(FIN, self.sid)
                return
            self.send_window -= len(data)
            self.session.send(DATA, self.sid, data)

    async def _remote_to_local(self, writer: asyncio.StreamWriter) -> None:
        while (data := await self.incoming.get()) is not None:
            writer.write(data)
            await writer.drain()
            self.session.send(WINDOW, self.sid, struct.pack(">I", len(data)))
        if writer.can_write_eof():
            writer.write_eof()

    def reset(self) -> None:
        if self.writer is not None:
            self.writer.transport.abort()
        if self.task is not None:
            self.task.cancel()
        self.session.streams.pop(self.sid, None)


class _MuxSide:
    async def start(self, session: _MuxSession) -> None:
        """Called once the upload is started (the client host starts listening here)."""

    def on_open(self, session: _MuxSession, stream: _MuxStream) -> None:
        """The peer opened ``stream`` (server host: connect it to the service)."""
        session.send(RST, stream.sid, b"unexpected OPEN")

    async def stop(self) -> None:
        """The session is over."""


class _MuxSession:
    def __init__(self, side: _MuxSide, log: Log, peer: str) -> None:
        self.side = side
        self.log = log
        self.peer = peer
        self.streams: dict[int, _MuxStream] = {}
        self._out: asyncio.Queue[bytes] = asyncio.Queue()

    def send(self, ftype: int, sid: int, payload: bytes = b"") -> None:
        self._out.put_nowait(_FRAME.pack(ftype, sid, len(payload)) + payload)

    def new_stream(self, sid: int) -> _MuxStream:
        stream = _MuxStream(self, sid)
        self.streams[sid] = stream
        return stream

    async def outgoing(self) -> AsyncIterator[bytes]:
        yield MAGIC
        while True:
            batch = [await self._out.get()]
            size = len(batch[0])
            # Coalesce what is already queued into one chunk: fewer HTTP chunks, same latency.
            while not self._out.empty() and size < 256 * 1024:
                frame = self._out.get_nowait()
                batch.append(frame)
                size += len(frame)
            yield b"".join(batch)

    async def pinger(self) -> None:
        while True:
            await asyncio.sleep(PING_INTERVAL)
            self.send(PING, 0)

    async def demux(self, download: HttpConnection) -> None:
        buf = b""
        magic_ok = False
        async for data in download.iter_body():
            buf += data
            if not magic_ok:
                if len(buf) < len(MAGIC):
                    if not MAGIC.startswith(buf):
                        raise UsageError("the tunnel peer is not in --multiplex mode")
                    continue
                if not buf.startswith(MAGIC):
                    raise UsageError("the tunnel peer is not in --multiplex mode")
                buf = buf[len(MAGIC) :]
                magic_ok = True
            pos = 0
            while len(buf) - pos >= _FRAME.size:
                ftype, sid, length = _FRAME.unpack_from(buf, pos)
                if length > MAX_PAYLOAD:
                    raise TransferInterruptedError("invalid multiplex frame from the tunnel peer")
                if len(buf) - pos - _FRAME.size < length:
                    break
                payload = buf[pos + _FRAME.size : pos + _FRAME.size + length]
                pos += _FRAME.size + length
                self._dispatch(ftype, sid, payload)
            buf = buf[pos:]

    def _dispatch(self, ftype: int, sid: int, payload: bytes) -> None:
        stream = self.streams.get(sid)
        if ftype == OPEN:
            if stream is None:
                self.side.on_open(self, self.new_stream(sid))
        elif stream is None:
            return  # frames for a stream already reset: drop
        elif ftype == DATA:
            stream.incoming.put_nowait(payload)
        elif ftype == FIN:
            stream.incoming.put_nowait(None)
        elif ftype == RST:
            if payload:
                reason = payload.decode("utf-8", "replace")
                self.log(f"[INFO] Stream {sid}: the {self.peer} closed it: {reason}")
            stream.reset()
        elif ftype == WINDOW and len(payload) == 4:
            stream.send_window += struct.unpack(">I", payload)[0]
            stream.window_open.set()

    def close_all(self) -> None:
        for stream in list(self.streams.values()):
            stream.reset()


class _MuxServerSide(_MuxSide):
    def __init__(self, host: str, port: int, log: Log) -> None:
        self.host, self.port, self.log = host, port, log

    def on_open(self, session: _MuxSession, stream: _MuxStream) -> None:
        stream.task = asyncio.create_task(self._serve(session, stream))

    async def _serve(self, session: _MuxSession, stream: _MuxStream) -> None:
        try:
            reader, writer = await asyncio.open_connection(self.host, self.port)
        except OSError as e:
            reason = f"cannot connect to {self.host}:{self.port}: {_connect_reason(e)}"
            self.log(f"[INFO] Stream {stream.sid}: {reason}")
            session.send(RST, stream.sid, reason.encode())
            session.streams.pop(stream.sid, None)
            return
        self.log(f"[INFO] Stream {stream.sid}: connected to {self.host}:{self.port}")
        await stream.run(reader, writer)


class _MuxClientSide(_MuxSide):
    def __init__(self, host: str, port: int, log: Log, ready: Callable[[int], None] | None) -> None:
        self.host, self.port, self.log, self.ready = host, port, log, ready
        self.next_id = 1
        self.listener: asyncio.Server | None = None

    async def start(self, session: _MuxSession) -> None:
        async def on_conn(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            sid = self.next_id
            self.next_id += 1
            stream = session.new_stream(sid)
            session.send(OPEN, sid)
            self.log(f"[INFO] Stream {sid}: new connection")
            stream.task = asyncio.current_task()
            await stream.run(reader, writer)

        self.listener = await _listen(on_conn, self.host, self.port)
        bound = self.listener.sockets[0].getsockname()[1]
        self.log(f"[INFO] Listening on {self.host}:{bound} (multiplexed)")
        if self.ready is not None:
            self.ready(bound)

    async def stop(self) -> None:
        if self.listener is not None:
            self.listener.close()


async def _run_mux(down_url: str, up_url: str, side: _MuxSide, verify: bool, log: Log, peer: str) -> None:
    session = _MuxSession(side, log, peer)
    upload = _Upload(up_url, verify, peer)
    download: HttpConnection | None = None
    tasks: list[asyncio.Task[None]] = []
    try:
        await upload.start(session.outgoing())
        await side.start(session)
        log("[INFO] Waiting for the other tunnel host")
        download = await _open_download(down_url, verify, peer)
        log("[INFO] Multiplexed session established")

        async def sent() -> None:
            await upload.sending

        async def watched() -> None:
            await upload.watching

        tasks = [asyncio.create_task(c) for c in (session.demux(download), sent(), watched(), session.pinger())]
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for t in done:
            if t.exception() is not None:
                raise t.exception()  # type: ignore[misc]
        log(f"[INFO] The {peer} closed the session")
    except TransferInterruptedError:
        raise _peer_gone(peer) from None
    finally:
        for t in tasks:
            t.cancel()
        session.close_all()
        await side.stop()
        upload.close()
        if download is not None:
            download.abort()
