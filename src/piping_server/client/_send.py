"""``send``: upload a file, a folder (as a streamed tar), bytes or a stream to a Piping path."""

from __future__ import annotations

import asyncio
import contextlib
import mimetypes
import os
import re
import sys
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from ._bridge import iterate_in_thread, read_in_thread
from ._common import TAR_MARKER, content_disposition
from ._errors import PipingError, TransferInterruptedError, UsageError
from ._http import HttpConnection
from ._openpgp import Encryptor
from ._progress import Reporter
from ._tar import TarPacker, scan_sources
from ._url import resolve_url

__all__ = ["SendResult", "SendSource", "send", "send_async"]

PathLike = str | os.PathLike[str]
SendSource = PathLike | Sequence[PathLike] | bytes | BinaryIO | Iterable[bytes] | AsyncIterable[bytes] | None

_CHUNK = 1 << 20  # large reads and writes: the cost per chunk (a thread hop, a system call) is fixed


@dataclass
class SendResult:
    """What was sent: the URL, the payload size in bytes (before encryption), the server's status lines."""

    url: str
    size: int
    archive: bool
    status_lines: list[str]


@dataclass
class _Payload:
    body: AsyncIterator[bytes]
    size: int | None  # payload bytes, when known
    name: str | None
    content_type: str
    archive: bool
    file: Path | None = None  # a regular file sent as itself: sendfile(2) can upload it


def _is_path(x: object) -> bool:
    return isinstance(x, str | os.PathLike)


def _prepare(source: SendSource, reporter: Reporter, filename: str | None, content_type: str | None) -> _Payload:
    if source is None:
        source = sys.stdin.buffer
    if _is_path(source) or (isinstance(source, list | tuple) and source and all(_is_path(p) for p in source)):
        paths: list[PathLike] = [source] if _is_path(source) else list(source)  # type: ignore[list-item,arg-type]
        entries, total = scan_sources(paths)
        single = entries[0][0]
        if len(entries) == 1 and single.is_file():
            name = filename or entries[0][1]
            ctype = content_type or mimetypes.guess_type(name)[0] or "application/octet-stream"
            size = single.stat().st_size
            return _Payload(_read_file(single, size), size, name, ctype, False, single)
        loop = asyncio.get_running_loop()

        def on_file_bytes(k: int) -> None:  # from the packer thread: progress counts file bytes, not tar bytes
            loop.call_soon_threadsafe(reporter.advance, k)

        packer = TarPacker(entries, on_file_bytes=on_file_bytes, on_warning=reporter.warning)
        name = filename or (f"{entries[0][1]}.tar" if len(entries) == 1 else "files.tar")
        return _Payload(packer.chunks(), total, name, "application/x-tar", True)
    if isinstance(source, list | tuple) and not source:
        raise UsageError("nothing to send")
    if isinstance(source, bytes | bytearray | memoryview):
        data = bytes(source)

        async def one() -> AsyncIterator[bytes]:
            for i in range(0, len(data), _CHUNK):
                yield data[i : i + _CHUNK]

        return _Payload(one(), len(data), filename, content_type or "application/octet-stream", False)
    if hasattr(source, "read"):
        return _Payload(read_in_thread(source), None, filename, content_type or "application/octet-stream", False)  # type: ignore[arg-type]
    if isinstance(source, AsyncIterable):
        return _Payload(aiter(source), None, filename, content_type or "application/octet-stream", False)
    if isinstance(source, Iterable):
        it: Iterable[bytes] = source  # type: ignore[assignment]

        def work(emit: object) -> None:
            for chunk in it:
                emit(bytes(chunk))  # type: ignore[operator]

        return _Payload(iterate_in_thread(work), None, filename, content_type or "application/octet-stream", False)
    raise UsageError(f"cannot send a {type(source).__name__}")


async def _read_file(path: Path, size: int) -> AsyncIterator[bytes]:
    """The ``size`` bytes of a file announced with that Content-Length (the copying path of a file)."""
    try:
        f = open(path, "rb")  # noqa: SIM115 - closed by read_in_thread's end below
    except OSError as e:
        raise UsageError(f"cannot read {path}: {e.strerror}") from None
    left = size
    with f:
        async with contextlib.aclosing(read_in_thread(f)) as chunks:
            async for chunk in chunks:
                if len(chunk) > left:  # the file grew: never more than announced (the rest would be a request)
                    yield chunk[:left]
                    left = 0
                    break
                left -= len(chunk)
                yield chunk
        _check_unchanged(f.fileno(), size, size - left)


def _check_unchanged(fd: int, size: int, sent: int) -> None:
    """A file that shrank would leave the server waiting for the announced length, one that grew would
    arrive cut: both are the input changing under us."""
    now = os.fstat(fd).st_size
    if sent != size or now != size:
        raise UsageError(f"the input changed while being sent ({now} bytes instead of {size})")


async def _send_file(conn: HttpConnection, path: Path, size: int, reporter: Reporter, counter: list[int]) -> int:
    """Upload a regular file kernel to kernel; the same checks as the copying path (it must not change)."""
    try:
        f = open(path, "rb")  # noqa: SIM115 - closed below
    except OSError as e:
        raise UsageError(f"cannot read {path}: {e.strerror}") from None

    def progress(n: int) -> None:
        counter[0] += n
        reporter.advance(n)

    with f:
        sent = await conn.send_file(f.fileno(), size, progress)
        _check_unchanged(f.fileno(), size, sent)
    return sent


async def _counted(body: AsyncIterator[bytes], reporter: Reporter | None, counter: list[int]) -> AsyncIterator[bytes]:
    async for chunk in body:
        counter[0] += len(chunk)
        if reporter is not None:
            reporter.advance(len(chunk))
        yield chunk


async def _encrypted(body: AsyncIterator[bytes], passphrase: str, name: str | None) -> AsyncIterator[bytes]:
    enc = Encryptor(passphrase, name or "")
    # The S2K key derivation hashes 16 MB: keep it off the event loop.
    yield await asyncio.to_thread(enc.start)
    async for chunk in body:
        out = enc.update(chunk)
        if out:
            yield out
    yield enc.finish()


class _Outcome:
    def __init__(self) -> None:
        self.lines: list[str] = []
        self.error: str | None = None
        self.aborted = 0
        self.delivered = False
        self.sent = False
        self.listening = 0  # a live transfer's receivers now, and all that ever joined
        self.served = 0


async def _read_status(conn: HttpConnection, reporter: Reporter, outcome: _Outcome) -> None:
    await conn.read_ok_head()
    pending = b""
    async for data in conn.iter_body():
        pending += data
        *lines, rest = pending.split(b"\n")
        pending = rest
        for raw in lines:
            line = raw.decode("utf-8", "replace").strip()
            if not line:
                continue
            outcome.lines.append(line)
            reporter.status(line)
            low = line.lower()
            if line.startswith("[ERROR]"):
                outcome.error = line
            elif "aborted" in low:
                outcome.aborted += 1
            elif "sent successfully" in low:
                outcome.sent = True
            elif "received successfully" in low or line.startswith(_LIVE_ENDED):
                outcome.delivered = True
            _count_listeners(line, reporter, outcome)


#: The live lines of docs/protocol.md section 11 that name the receivers there now, and the summary.
_LIVE_NOW = re.compile(r"^\[INFO\] A receiver (joined|left|fell too far behind and was cut) \((\d+) now\)\.$")
_LIVE_ENDED = "[INFO] Live ended:"


def _count_listeners(line: str, reporter: Reporter, outcome: _Outcome) -> None:
    match = _LIVE_NOW.match(line)
    if match is None:
        return
    if match.group(1) == "joined":
        outcome.served += 1
    outcome.listening = int(match.group(2))
    reporter.receivers(outcome.listening, outcome.served)


async def send_async(
    url: str,
    source: SendSource = None,
    *,
    server: str | None = None,
    n: int | None = None,
    live: bool = False,
    passphrase: str | None = None,
    filename: str | None = None,
    content_type: str | None = None,
    reporter: Reporter | None = None,
    verify_tls: bool = True,
) -> SendResult:
    """Send ``source`` to ``url`` and wait until every receiver got all of it.

    ``source``: a path (a file travels as itself, with its name in ``Content-Disposition``; a folder as
    a tar), a list of paths (one tar), bytes, a binary file object, an (async) iterable of bytes, or
    ``None`` for stdin. ``url`` may be a bare path when ``server`` (or ``$PIPING_SERVER``) is given.
    ``passphrase`` encrypts end to end (OpenPGP, ``gpg -d`` compatible). ``live`` sends a live stream
    (docs/protocol.md section 11): receivers join and leave at any time, and it succeeds when the
    whole stream was read. Raises a :class:`PipingError`.
    """
    reporter = reporter or Reporter()
    if live and n is not None:
        raise UsageError("a live transfer has no number of receivers: give either live or n")
    full_url = resolve_url(url, server, n, live=live)
    payload = _prepare(source, reporter, filename, content_type)
    headers: list[tuple[str, str]] = []
    length: int | None = None
    if passphrase:
        headers.append(("Content-Type", "application/octet-stream"))
        if payload.archive:
            headers.append(("X-Piping", TAR_MARKER))
    else:
        headers.append(("Content-Type", payload.content_type))
        if payload.name:
            headers.append(("Content-Disposition", content_disposition(payload.name)))
        if payload.archive:
            headers.append(("X-Piping", TAR_MARKER))
        else:
            length = payload.size
    counter = [0]
    body: AsyncIterator[bytes] = _counted(payload.body, None if payload.archive else reporter, counter)
    if passphrase:
        body = _encrypted(body, passphrase, payload.name)

    conn = HttpConnection(full_url, verify=verify_tls)
    outcome = _Outcome()
    try:
        await conn.connect()
        await conn.send_head("POST", headers, length)
        reporter.begin(payload.size, payload.name or "sending")
        if payload.file is not None and length is not None and conn.can_sendfile:
            upload = asyncio.create_task(_send_file(conn, payload.file, length, reporter, counter))
        else:
            upload = asyncio.create_task(conn.send_body(body))
        status = asyncio.create_task(_read_status(conn, reporter, outcome))
        try:
            await _supervise(upload, status, outcome, None if payload.archive else payload.size, counter)
        finally:
            for t in (upload, status):
                t.cancel()
            for t in (upload, status):
                with contextlib.suppress(BaseException):
                    await t
            with contextlib.suppress(BaseException):
                await body.aclose()  # type: ignore[attr-defined]
    finally:
        reporter.end()
        conn.abort()
    return SendResult(full_url, counter[0], payload.archive, outcome.lines)


async def _supervise(
    upload: asyncio.Task[int], status: asyncio.Task[None], outcome: _Outcome, size: int | None, counter: list[int]
) -> None:
    done, _ = await asyncio.wait({upload, status}, return_when=asyncio.FIRST_EXCEPTION)
    for task in (status, upload):
        exc = task.exception() if task in done else None
        if exc is None:
            continue
        if not isinstance(exc, TransferInterruptedError):
            raise exc
        # The server closed on us: its status lines usually say why (a receiver left, an error).
        if task is upload:
            with contextlib.suppress(PipingError, TimeoutError):
                await asyncio.wait_for(status, 5)
        _judge(outcome)
        raise _cut()
    try:
        await status  # the upload is complete: wait for the server to confirm the delivery
    except TransferInterruptedError:
        _judge(outcome)
        raise _cut() from None
    if size is not None and counter[0] != size:
        raise UsageError(f"the input changed while being sent ({counter[0]} bytes instead of {size})")
    _judge(outcome)
    if not outcome.delivered:
        raise TransferInterruptedError("the server closed the transfer without confirming that it was received")


def _cut() -> TransferInterruptedError:
    # A sender only sees its own connection end: whether a receiver or the connection went away, the
    # server did not confirm the delivery. (The stream it reads is the server's status lines.)
    return TransferInterruptedError(
        "the transfer was cut before the server confirmed delivery (a receiver or the connection went away)"
    )


def _judge(outcome: _Outcome) -> None:
    if outcome.error:
        raise TransferInterruptedError(f"transfer failed: {outcome.error}")
    if outcome.aborted:
        raise TransferInterruptedError("a receiver went away before the end of the transfer")


def send(url: str, source: SendSource = None, **kwargs: object) -> SendResult:
    """Blocking :func:`send_async` (same arguments)."""
    return asyncio.run(send_async(url, source, **kwargs))  # type: ignore[arg-type]
