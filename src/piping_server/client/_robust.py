"""Piping UI Robust: one stream sent as numbered chunks (``PATH/1``, ``PATH/2``...) and a finish mark.

Piping UI sends a key-exchanged transfer this way (src/piping-ui-robust.ts): a first chunk of just
over 1 KB (so that the receiver starts at once), then chunks of just over 1 MB, each its own
POST, then an empty POST with ``Content-Type: application/x-piping-finish`` on the next number. A
chunk whose POST or GET fails before its body moved is tried again, after 10 ms, 40 ms, ... up to
30 s between tries (Piping UI tries forever; here :data:`MAX_TRIES` bounds it).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from ._errors import PipingError, ServerRejectedError, ServerUnreachableError, TransferInterruptedError
from ._http import HttpConnection, Response
from ._send import send_async

__all__ = ["FINISH_CONTENT_TYPE", "receive_chunks", "send_chunks"]

FINISH_CONTENT_TYPE = "application/x-piping-finish"
INITIAL_CHUNK_BYTES = 1024
CHUNK_BYTES = 1 << 20
MAX_TRIES = 8
#: a chunk is about 1 MB; a "chunk" far larger is not Piping UI's and is not gathered in memory
MAX_CHUNK_BYTES = 64 << 20


def _backoff(tries: int) -> float:
    return min(0.01 * 4.0**tries, 30.0)


def chunk_url(base: str, path: str, num: int) -> str:
    return f"{base.rstrip('/')}/{path}/{num}"


async def _rechunk(body: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """Chunks as Piping UI cuts them: a chunk ends with the read that takes it over the threshold."""
    threshold = INITIAL_CHUNK_BYTES
    pending: list[bytes] = []
    size = 0
    async for data in body:
        # Our reads can be much larger than a browser's: cut them so that a chunk stays near 1 MB.
        for i in range(0, len(data), CHUNK_BYTES):
            piece = data[i : i + CHUNK_BYTES]
            pending.append(piece)
            size += len(piece)
            if size > threshold:
                yield b"".join(pending)
                pending, size, threshold = [], 0, CHUNK_BYTES
    if pending:
        yield b"".join(pending)


async def _post(url: str, data: bytes, content_type: str, verify_tls: bool) -> None:
    for tries in range(MAX_TRIES):
        try:
            await send_async(url, data, content_type=content_type, verify_tls=verify_tls)
            return
        except (ServerUnreachableError, ServerRejectedError, TransferInterruptedError):
            if tries == MAX_TRIES - 1:
                raise
        await asyncio.sleep(_backoff(tries))


async def send_chunks(base: str, path: str, body: AsyncIterator[bytes], *, verify_tls: bool = True) -> None:
    """Send ``body`` to ``base/path/1``, ``/2``... and the finish mark after it."""
    num = 1
    async for chunk in _rechunk(body):
        await _post(chunk_url(base, path, num), chunk, "application/octet-stream", verify_tls)
        num += 1
    await _post(chunk_url(base, path, num), b"", FINISH_CONTENT_TYPE, verify_tls)


async def _open_chunk(url: str, verify_tls: bool) -> tuple[HttpConnection, Response]:
    for tries in range(MAX_TRIES):
        conn = HttpConnection(url, verify=verify_tls)
        try:
            await conn.connect()
            await conn.send_head("GET", [])
            head = await conn.read_head()
            if head.status == 200:
                return conn, head
            message = (await conn.read_text()).strip() or f"HTTP {head.status}"
            error: PipingError = ServerRejectedError(message, head.status)
        except (ServerUnreachableError, TransferInterruptedError) as e:
            error = e
        conn.abort()
        if tries == MAX_TRIES - 1:
            raise error
        await asyncio.sleep(_backoff(tries))
    raise AssertionError("unreachable")


async def receive_chunks(base: str, path: str, *, verify_tls: bool = True) -> AsyncIterator[bytes]:
    """The bytes of ``base/path/1``, ``/2``... up to the finish mark."""
    num = 1
    while True:
        conn, head = await _open_chunk(chunk_url(base, path, num), verify_tls)
        try:
            if (head.header("Content-Type") or "").strip().lower() == FINISH_CONTENT_TYPE:
                return
            got = 0
            async for data in conn.iter_body():
                got += len(data)
                if got > MAX_CHUNK_BYTES:
                    raise TransferInterruptedError(
                        f"chunk {num} is larger than {MAX_CHUNK_BYTES >> 20} MiB: not a Piping UI sender"
                    )
                yield data
        finally:
            conn.abort()
        num += 1
