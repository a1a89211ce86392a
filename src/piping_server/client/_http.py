"""A small full-duplex HTTP/1.1 client on asyncio streams.

Why not httpx: a Piping sender must read the server's response (``[INFO]`` progress lines, an early
``[ERROR]``, "a receiver aborted") *while* its request body is still being uploaded, and a tunnel
keeps both for hours. httpx/httpcore only read the response once the whole body is sent. This client
opens one connection per request (``Connection: close``), streams the body chunked or with a known
length, and lets the caller read the response concurrently. Proxies are not supported.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import ssl
from collections.abc import AsyncIterable, AsyncIterator
from urllib.parse import urlsplit

from ._errors import ServerRejectedError, ServerUnreachableError, TransferInterruptedError

__all__ = ["HttpConnection", "Response"]

_READ_SIZE = 256 * 1024
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
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._response: Response | None = None
        self._head_request = False

    async def connect(self) -> None:
        ctx: ssl.SSLContext | None = None
        if self._tls:
            ctx = ssl.create_default_context()
            if not self._verify:
                ctx.check_hostname = False
                ctx.verify_mode = ssl.CERT_NONE
        try:
            self._reader, self._writer = await asyncio.wait_for(
                asyncio.open_connection(self._host, self._port, ssl=ctx, limit=1 << 20), _CONNECT_TIMEOUT
            )
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
        sock = self._writer.get_extra_info("socket")  # type: ignore[union-attr]
        if sock is not None:
            # Tunnels carry interactive traffic: do not let Nagle hold small writes back.
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    async def send_head(
        self, method: str, headers: list[tuple[str, str]] | None = None, content_length: int | None = None
    ) -> None:
        """Send the request line and headers; a body without ``content_length`` goes chunked."""
        assert self._writer is not None
        self._head_request = method == "HEAD"
        self._chunked = method in ("POST", "PUT") and content_length is None
        lines = [f"{method} {self._target} HTTP/1.1", f"Host: {self._netloc}", "User-Agent: piping-python"]
        lines += [f"{k}: {v}" for k, v in headers or []]
        if content_length is not None:
            lines.append(f"Content-Length: {content_length}")
        elif self._chunked:
            lines.append("Transfer-Encoding: chunked")
        lines += ["Connection: close", "", ""]
        await self._write("\r\n".join(lines).encode("utf-8"))

    async def _write(self, data: bytes) -> None:
        assert self._writer is not None
        try:
            self._writer.write(data)
            await self._writer.drain()
        except (OSError, RuntimeError) as e:
            raise TransferInterruptedError(f"connection to {self._netloc} lost while sending: {e}") from None

    async def send_body(self, body: AsyncIterable[bytes]) -> int:
        """Upload ``body`` (with backpressure) and end it; return the number of bytes sent."""
        total = 0
        async for chunk in body:
            if not chunk:
                continue
            total += len(chunk)
            if self._chunked:
                await self._write(b"%x\r\n%b\r\n" % (len(chunk), chunk))
            else:
                await self._write(chunk)
        if self._chunked:
            await self._write(b"0\r\n\r\n")
        return total

    async def read_ok_head(self) -> Response:
        """:meth:`read_head`, an answer other than 200 raised as :class:`ServerRejectedError` with the server's
        message."""
        head = await self.read_head()
        if head.status != 200:
            raise ServerRejectedError(error_text(await self.read_text(), head), head.status)
        return head

    async def read_head(self) -> Response:
        """Read the status line and headers (1xx interim responses are skipped)."""
        assert self._reader is not None
        try:
            while True:
                status_line = await self._reader.readline()
                if not status_line:
                    raise TransferInterruptedError(f"{self._netloc} closed the connection without a response")
                parts = status_line.decode("latin-1").rstrip("\r\n").split(" ", 2)
                if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
                    raise TransferInterruptedError(f"{self._netloc} sent a malformed response: {status_line[:80]!r}")
                headers: list[tuple[str, str]] = []
                while True:
                    line = await self._reader.readline()
                    if not line:
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
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError) as e:
            raise TransferInterruptedError(f"connection to {self._netloc} lost: {e}") from None

    async def iter_body(self) -> AsyncIterator[bytes]:
        """Yield the response body; raise :class:`TransferInterruptedError` if it is cut short."""
        assert self._reader is not None and self._response is not None
        resp, reader = self._response, self._reader
        if self._head_request or resp.status in (204, 304):
            return
        try:
            te = (resp.header("Transfer-Encoding") or "").lower()
            length = resp.header("Content-Length")
            if "chunked" in te:
                while True:
                    size_line = await reader.readline()
                    if not size_line.endswith(b"\n"):
                        raise asyncio.IncompleteReadError(size_line, None)
                    size = int(size_line.split(b";")[0].strip(), 16)
                    if size == 0:
                        while (await reader.readline()) not in (b"\r\n", b"\n", b""):
                            pass  # trailers
                        return
                    while size:
                        data = await reader.read(min(size, _READ_SIZE))
                        if not data:
                            raise asyncio.IncompleteReadError(b"", size)
                        size -= len(data)
                        yield data
                    await reader.readexactly(2)
            elif length is not None:
                remaining = int(length)
                while remaining:
                    data = await reader.read(min(remaining, _READ_SIZE))
                    if not data:
                        raise asyncio.IncompleteReadError(b"", remaining)
                    remaining -= len(data)
                    yield data
            else:
                while data := await reader.read(_READ_SIZE):
                    yield data
        except (OSError, asyncio.IncompleteReadError, ValueError) as e:
            raise TransferInterruptedError(
                f"the stream from {self._netloc} was cut before its end (the sender or the connection went away)"
            ) from e

    async def read_text(self, limit: int = 64 * 1024) -> str:
        """Read a (short) body as text, e.g. an ``[ERROR]`` message."""
        out = b""
        with contextlib.suppress(TransferInterruptedError):
            async for data in self.iter_body():
                out += data
                if len(out) > limit:
                    break
        return out.decode("utf-8", "replace")

    def shutdown_write(self) -> None:
        """Half-close our side (no more request bytes)."""
        if self._writer is not None and self._writer.can_write_eof():
            with contextlib.suppress(OSError, RuntimeError):
                self._writer.write_eof()

    async def aclose(self) -> None:
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._writer.wait_closed(), 2)
            self._writer = None

    def abort(self) -> None:
        """Close abruptly (RST where possible), e.g. to make the peer see a cut stream."""
        if self._writer is not None:
            self._writer.transport.abort()
            self._writer = None


def error_text(body: str, response: Response) -> str:
    """The server's one-line error message for an error response."""
    location = response.header("Location")
    if 300 <= response.status < 400 and location:
        return f"the server redirects to {location}: use that URL"
    for line in body.splitlines():
        if line.strip():
            return line.strip()
    return f"HTTP {response.status} {response.reason}".strip()
