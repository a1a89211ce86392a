"""A small full-duplex HTTP/1.1 client.

Why not httpx: a Piping sender must read the server's response (``[INFO]`` progress lines, an early
``[ERROR]``, "a receiver aborted") *while* its request body is still being uploaded, and a tunnel
keeps both for hours. httpx/httpcore only read the response once the whole body is sent. This client
opens one connection per request (``Connection: close``), streams the body chunked or with a known
length, and lets the caller read the response concurrently. Proxies are not supported.

On plain TCP the bytes can stay in the kernel (``_channel.SocketChannel``): :meth:`HttpConnection.send_file`
uploads a regular file with ``sendfile(2)`` and :meth:`HttpConnection.copy_body_to` splices the
response body into a pipe. Over TLS, and where the kernel refuses, both copy.
"""

from __future__ import annotations

import asyncio
import errno
import os
import select
import socket
import ssl
import stat
from collections.abc import AsyncIterable, AsyncIterator, Callable
from urllib.parse import urlsplit

from ._channel import RAW_SOCKETS, Channel, SocketChannel, StreamChannel
from ._errors import ServerRejectedError, ServerUnreachableError, TransferInterruptedError

__all__ = ["HttpConnection", "Response"]

#: bytes asked of the socket per read: large reads make few system calls (Python's cost is per call)
_READ_SIZE = 1 << 20
#: at most this many bytes per sendfile/splice call, so that progress moves while a big body flows
_KERNEL_SLICE = 4 << 20
#: bytes read at a time for a chunk's head (``\r\n1000\r\n``): about that much, so that the body is not buffered
_HEAD_READ = 64
#: a status line, header or chunk-size line longer than this is not HTTP we can read
_MAX_LINE = 64 * 1024
_CONNECT_TIMEOUT = 30.0


class Response:
    """Status line and headers of a response; the body is read with :meth:`HttpConnection.iter_body`."""

    def __init__(self, status: int, reason: str, headers: list[tuple[str, str]]) -> None:
        self.status = status
        self.reason = reason
        self.headers = headers

    def header(self, name: str) -> str | None:
        values = self.header_all(name)
        return values[0] if values else None

    def header_all(self, name: str) -> list[str]:
        lname = name.lower()
        return [v for k, v in self.headers if k.lower() == lname]


class HttpConnection:
    """One request/response exchange on its own TCP (or TLS) connection."""

    def __init__(self, url: str, *, verify: bool = True) -> None:
        self.url = url
        parts = urlsplit(url)
        self._tls = parts.scheme == "https"
        self._host = parts.hostname or ""
        self._port = parts.port or (443 if self._tls else 80)
        self._netloc = parts.netloc
        self._target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self._verify = verify
        self._ch: Channel | None = None
        self._buf = bytearray()  # bytes read but not consumed yet (the rest of a head, a chunk's start)
        self._response: Response | None = None
        self._head_request = False
        self._chunked = False

    @property
    def can_sendfile(self) -> bool:
        """Whether :meth:`send_file` moves the bytes kernel to kernel (plain TCP on Linux)."""
        return self._ch is not None and self._ch.kernel_paths

    async def connect(self) -> None:
        try:
            self._ch = await asyncio.wait_for(self._open(), _CONNECT_TIMEOUT)
        except (OSError, TimeoutError, ssl.SSLError) as e:
            if isinstance(e, ssl.SSLCertVerificationError):
                reason = f"TLS certificate not trusted ({e.verify_message}); --insecure skips the check"
            elif isinstance(e, ssl.SSLError):
                reason = f"TLS error: {e.reason or e}"
            elif isinstance(e, socket.gaierror):
                reason = (e.strerror or str(e)).lower()
            elif isinstance(e, OSError) and e.errno:
                reason = os.strerror(e.errno).lower()
            elif isinstance(e, TimeoutError):
                reason = "timed out"
            else:
                reason = str(e) or type(e).__name__
            raise ServerUnreachableError(f"cannot connect to {self._netloc}: {reason}") from None
        # Tunnels carry interactive traffic: do not let Nagle hold small writes back.
        self._ch.set_nodelay()

    async def _open(self) -> Channel:
        if self._tls or not RAW_SOCKETS:
            ctx: ssl.SSLContext | None = None
            if self._tls:
                ctx = ssl.create_default_context()
                if not self._verify:
                    ctx.check_hostname = False
                    ctx.verify_mode = ssl.CERT_NONE
            reader, writer = await asyncio.open_connection(self._host, self._port, ssl=ctx, limit=1 << 20)
            return StreamChannel(reader, writer)
        loop = asyncio.get_running_loop()
        infos = await loop.getaddrinfo(self._host, self._port, type=socket.SOCK_STREAM)
        error: OSError = OSError(errno.EHOSTUNREACH, os.strerror(errno.EHOSTUNREACH))
        for family, type_, proto, _, addr in infos:  # each address in turn, as open_connection does
            sock = socket.socket(family, type_, proto)
            try:
                sock.setblocking(False)
                await loop.sock_connect(sock, addr)
            except OSError as e:
                sock.close()
                error = e
                continue
            except BaseException:
                sock.close()
                raise
            return SocketChannel(sock)
        raise error

    async def send_head(
        self, method: str, headers: list[tuple[str, str]] | None = None, content_length: int | None = None
    ) -> None:
        """Send the request line and headers; a body without ``content_length`` goes chunked."""
        self._head_request = method == "HEAD"
        self._chunked = method in ("POST", "PUT") and content_length is None
        lines = [f"{method} {self._target} HTTP/1.1", f"Host: {self._netloc}", "User-Agent: piping-python"]
        lines += [f"{k}: {v}" for k, v in headers or []]
        if content_length is not None:
            lines.append(f"Content-Length: {content_length}")
        elif self._chunked:
            lines.append("Transfer-Encoding: chunked")
        lines += ["Connection: close", "", ""]
        await self._write(["\r\n".join(lines).encode("utf-8")])

    async def _write(self, parts: list[bytes | memoryview]) -> None:
        assert self._ch is not None
        try:
            await self._ch.send(parts)
        except (OSError, RuntimeError) as e:
            raise TransferInterruptedError(f"connection to {self._netloc} lost while sending: {e}") from None

    async def send_body(self, body: AsyncIterable[bytes]) -> int:
        """Upload ``body`` (with backpressure) and end it; return the number of bytes sent."""
        total = 0
        async for chunk in body:
            if not chunk:
                continue
            total += len(chunk)
            if self._chunked:  # the frame around the chunk, gathered in one write: the chunk is not copied
                await self._write([b"%x\r\n" % len(chunk), chunk, b"\r\n"])
            else:
                await self._write([chunk])
        if self._chunked:
            await self._write([b"0\r\n\r\n"])
        return total

    async def send_file(self, fd: int, count: int, progress: Callable[[int], None]) -> int:
        """Upload ``count`` bytes of the regular file ``fd`` (from its start) with ``sendfile(2)`` as the
        body announced by ``content_length``; return the bytes sent (fewer if the file shrank)."""
        assert isinstance(self._ch, SocketChannel) and not self._chunked
        offset = 0
        while offset < count:
            try:
                n = await self._ch.sendfile(fd, offset, min(count - offset, _KERNEL_SLICE))
            except OSError as e:
                if e.errno in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP) and offset == 0:
                    return await self._send_file_copying(fd, count, progress)
                raise TransferInterruptedError(f"connection to {self._netloc} lost while sending: {e}") from None
            if not n:
                break
            offset += n
            progress(n)
        return offset

    async def _send_file_copying(self, fd: int, count: int, progress: Callable[[int], None]) -> int:
        """The fallback where the kernel refuses sendfile (a file system without it)."""
        offset = 0
        while offset < count and (data := os.pread(fd, min(count - offset, _READ_SIZE), offset)):
            await self._write([data])
            offset += len(data)
            progress(len(data))
        return offset

    async def read_ok_head(self) -> Response:
        """:meth:`read_head`, an answer other than 200 raised as :class:`ServerRejectedError` with the server's
        message."""
        head = await self.read_head()
        if head.status != 200:
            raise ServerRejectedError(error_text(await self.read_text(), head), head.status)
        return head

    async def _fill(self, size: int = _READ_SIZE) -> bool:
        """Read more into the buffer; False at the end of the stream."""
        assert self._ch is not None
        data = await self._ch.recv(size)
        self._buf += data
        return bool(data)

    async def _readline(self, fill: int = _READ_SIZE) -> bytes:
        """One line with its ``\\n``; what is left (maybe ``b""``) if the stream ends first.

        ``fill``: how much to read at a time. Between chunks of a body it is small, so that the
        chunk's bytes are read by the body's own large reads (no buffer, no copy), not into the buffer.
        """
        start = 0
        while True:
            i = self._buf.find(b"\n", start)
            if i >= 0:
                line = bytes(self._buf[: i + 1])
                del self._buf[: i + 1]
                return line
            if len(self._buf) > _MAX_LINE:
                raise ValueError("line too long")
            start = len(self._buf)
            if not await self._fill(fill):
                line = bytes(self._buf)
                self._buf.clear()
                return line

    async def _read(self, n: int) -> bytes:
        """Up to ``n`` bytes (the buffered ones first); ``b""`` at the end of the stream."""
        if self._buf:
            data = bytes(self._buf[:n])
            del self._buf[:n]
            return data
        assert self._ch is not None
        return await self._ch.recv(n)

    async def _readexactly(self, n: int) -> bytes:
        while len(self._buf) < n:
            if not await self._fill(_HEAD_READ):
                raise asyncio.IncompleteReadError(bytes(self._buf), n)
        data = bytes(self._buf[:n])
        del self._buf[:n]
        return data

    async def read_head(self) -> Response:
        """Read the status line and headers (1xx interim responses are skipped)."""
        try:
            while True:
                status_line = await self._readline()
                if not status_line:
                    raise TransferInterruptedError(f"{self._netloc} closed the connection without a response")
                parts = status_line.decode("latin-1").rstrip("\r\n").split(" ", 2)
                if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
                    raise TransferInterruptedError(f"{self._netloc} sent a malformed response: {status_line[:80]!r}")
                headers: list[tuple[str, str]] = []
                while True:
                    line = await self._readline()
                    if not line.endswith(b"\n"):
                        raise TransferInterruptedError(f"{self._netloc} closed the connection in the headers")
                    if line in (b"\r\n", b"\n"):
                        break
                    k, _, v = line.decode("latin-1").partition(":")
                    headers.append((k.strip(), v.strip()))
                status = int(parts[1])
                if 100 <= status < 200:
                    continue
                self._response = Response(status, parts[2] if len(parts) > 2 else "", headers)
                return self._response
        except (OSError, asyncio.IncompleteReadError, ValueError) as e:
            raise TransferInterruptedError(f"connection to {self._netloc} lost: {e}") from None

    def _framing(self) -> tuple[bool, int | None] | None:
        """How the response body is delimited: (chunked, length); None for no body."""
        assert self._response is not None
        resp = self._response
        if self._head_request or resp.status in (204, 304):
            return None
        if "chunked" in (resp.header("Transfer-Encoding") or "").lower():
            return True, None
        length = resp.header("Content-Length")
        return False, None if length is None else int(length)

    async def _chunk_size(self) -> int:
        """Read a chunk-size line; at the last (0) chunk, read the trailers too."""
        size_line = await self._readline(_HEAD_READ)
        if not size_line.endswith(b"\n"):
            raise asyncio.IncompleteReadError(size_line, None)
        size = int(size_line.split(b";")[0].strip(), 16)
        if size == 0:
            while (await self._readline(_HEAD_READ)) not in (b"\r\n", b"\n", b""):
                pass  # trailers
        return size

    def _cut(self, e: BaseException) -> TransferInterruptedError:
        return TransferInterruptedError(
            f"the stream from {self._netloc} was cut before its end (the sender or the connection went away)"
        )

    async def iter_body(self) -> AsyncIterator[bytes]:
        """Yield the response body; raise :class:`TransferInterruptedError` if it is cut short."""
        try:
            framing = self._framing()
            if framing is None:
                return
            chunked, length = framing
            if chunked:
                while size := await self._chunk_size():
                    while size:
                        data = await self._read(min(size, _READ_SIZE))
                        if not data:
                            raise asyncio.IncompleteReadError(b"", size)
                        size -= len(data)
                        yield data
                    await self._readexactly(2)
            elif length is not None:
                remaining = length
                while remaining:
                    data = await self._read(min(remaining, _READ_SIZE))
                    if not data:
                        raise asyncio.IncompleteReadError(b"", remaining)
                    remaining -= len(data)
                    yield data
            else:
                while data := await self._read(_READ_SIZE):
                    yield data
        except (OSError, asyncio.IncompleteReadError, ValueError) as e:
            raise self._cut(e) from e

    async def copy_body_to(self, fd: int, progress: Callable[[int], None]) -> int:
        """Write the response body to the file descriptor ``fd``; return its size.

        Into a pipe over plain TCP the body is spliced (it never enters user space); otherwise, and
        where the kernel refuses (``EINVAL``), it is copied. Errors writing ``fd`` propagate as they are.
        """
        assert self._ch is not None
        # A pipe someone made non-blocking would make splice spin on EAGAIN: that one is written, with waits.
        splice = (
            isinstance(self._ch, SocketChannel)
            and self._ch.kernel_paths
            and stat.S_ISFIFO(os.fstat(fd).st_mode)
            and os.get_blocking(fd)
        )
        mover = _BodyMover(self, fd, progress, splice)
        try:
            framing = self._framing()
            if framing is None:
                return 0
            chunked, length = framing
            if chunked:
                while size := await self._chunk_size():
                    await mover.move(size)
                    await self._readexactly(2)
            else:
                await mover.move(length)
        except (asyncio.IncompleteReadError, ValueError) as e:
            raise self._cut(e) from e
        except OSError as e:
            if mover.writing:
                raise  # stdout's error (EPIPE, ENOSPC): the caller words it
            raise self._cut(e) from e
        return mover.total

    async def read_text(self, limit: int = 64 * 1024) -> str:
        """Read a (short) body as text, e.g. an ``[ERROR]`` message."""
        out = b""
        try:
            async for data in self.iter_body():
                out += data
                if len(out) > limit:
                    break
        except TransferInterruptedError:
            pass
        return out.decode("utf-8", "replace")

    def shutdown_write(self) -> None:
        """Half-close our side (no more request bytes)."""
        if self._ch is not None:
            self._ch.shutdown_write()

    async def aclose(self) -> None:
        if self._ch is not None:
            ch, self._ch = self._ch, None
            await ch.aclose()

    def abort(self) -> None:
        """Close abruptly, e.g. to make the peer see a cut stream."""
        if self._ch is not None:
            ch, self._ch = self._ch, None
            ch.abort()


class _BodyMover:
    """Moves body bytes from a connection to a file descriptor: spliced, or read and written."""

    def __init__(self, conn: HttpConnection, fd: int, progress: Callable[[int], None], splice: bool) -> None:
        self._conn = conn
        self._fd = fd
        self._progress = progress
        self._splice = splice
        self.total = 0
        self.writing = False  # whether the error at hand came from writing ``fd``

    def _write(self, data: bytes | memoryview) -> None:
        self.writing = True
        view = memoryview(data)
        while view:
            try:
                n = os.write(self._fd, view)
            except BlockingIOError:  # a non-blocking stdout (shared with another program): wait for room
                select.select([], [self._fd], [], 1.0)
                continue
            view = view[n:]
        self.writing = False
        self.total += len(data)
        self._progress(len(data))

    async def move(self, count: int | None) -> None:
        """Move ``count`` bytes (None: up to the end of the stream); a shorter stream is a cut one."""
        conn = self._conn
        left = count
        if conn._buf:  # bytes that came with the head or the chunk-size line
            take = len(conn._buf) if left is None else min(left, len(conn._buf))
            self._write(memoryview(conn._buf)[:take])
            del conn._buf[:take]
            if left is not None:
                left -= take
        ch = conn._ch
        assert ch is not None
        while left is None or left:
            want = _KERNEL_SLICE if left is None else min(left, _KERNEL_SLICE)
            if self._splice:
                assert isinstance(ch, SocketChannel)
                try:
                    n = await ch.splice_to(self._fd, want)
                except OSError as e:
                    if e.errno == errno.EINVAL:
                        self._splice = False  # this pipe or socket cannot splice: copy from here on
                        continue
                    self.writing = e.errno == errno.EPIPE  # the pipe's reader went away
                    raise
                if n:
                    self.total += n
                    self._progress(n)
            else:
                data = await ch.recv(min(want, _READ_SIZE))
                n = len(data)
                if n:
                    self._write(data)
            if not n:
                if left is None:
                    return
                raise asyncio.IncompleteReadError(b"", left)
            if left is not None:
                left -= n


def error_text(body: str, response: Response) -> str:
    """The server's one-line error message for an error response."""
    location = response.header("Location")
    if 300 <= response.status < 400 and location:
        return f"the server redirects to {location}: use that URL"
    for line in body.splitlines():
        if line.strip():
            return line.strip()
    return f"HTTP {response.status} {response.reason}".strip()
