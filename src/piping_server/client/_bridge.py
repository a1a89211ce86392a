"""Run blocking producers (stdin, a file, the tar packer) in a daemon thread, with backpressure.

A daemon thread rather than the loop's default executor: a thread stuck in ``stdin.read()`` must not
keep the process alive after the transfer failed or the user pressed Ctrl-C.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
from collections.abc import AsyncGenerator, Callable
from typing import BinaryIO

from ._channel import widen_pipe

__all__ = ["Cancelled", "Emit", "iterate_in_thread", "read_in_thread"]

_MAX_QUEUED = 8

Emit = Callable[[bytes], None]


class Cancelled(Exception):
    """Raised from ``emit`` in the worker thread once the consumer is gone."""


async def iterate_in_thread(work: Callable[[Emit], None], name: str = "piping-producer") -> AsyncGenerator[bytes, None]:
    """Run ``work(emit)`` in a thread and yield what it emits; its exceptions are re-raised here."""
    loop = asyncio.get_running_loop()
    q: asyncio.Queue[bytes | BaseException | None] = asyncio.Queue()
    slots = threading.Semaphore(_MAX_QUEUED)
    stop = threading.Event()

    def put(item: bytes | BaseException | None) -> None:
        while not slots.acquire(timeout=0.2):
            if stop.is_set():
                raise Cancelled
        if stop.is_set():
            raise Cancelled
        with contextlib.suppress(RuntimeError):  # the loop may be closed already
            loop.call_soon_threadsafe(q.put_nowait, item)

    def run() -> None:
        try:
            work(put)
            put(None)
        except Cancelled:
            return
        except BaseException as e:
            with contextlib.suppress(Cancelled):
                put(e)

    threading.Thread(target=run, name=name, daemon=True).start()
    try:
        while True:
            item = await q.get()
            slots.release()
            if item is None:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()


def read_in_thread(f: BinaryIO, chunk_size: int = 1 << 20) -> AsyncGenerator[bytes, None]:
    """Stream a blocking binary file object (``stdin``, a pipe, a file)."""

    try:
        fd: int | None = f.fileno()
    except (AttributeError, OSError, ValueError):
        fd = None

    if fd is not None:
        widen_pipe(fd)  # a fast writer into our stdin then fills 1 MiB between two reads, not 64 KiB

    def work(emit: Emit) -> None:
        if fd is not None:
            # os.read on the descriptor: returns what a pipe has now (interactive input), and holds no
            # buffered-reader lock, which a daemon thread blocked at interpreter exit would make fatal.
            while data := os.read(fd, chunk_size):
                emit(data)
            return
        read = getattr(f, "read1", f.read)
        while data := read(chunk_size):
            emit(data)

    return iterate_in_thread(work, "piping-reader")
