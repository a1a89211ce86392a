"""glibc's malloc set for a relay's pattern: many short-lived buffers of 64-256 KiB.

Every read of the event loop is a new ``bytes`` of up to 256 KiB, freed once its bytes have been
written on. With glibc's defaults such a buffer is either mmap'ed, or taken from a heap whose top is
trimmed and grown again as buffers come and go; either way the kernel hands out fresh zeroed pages
every time. On an HTTP/2 upload that was about one page fault per 4 KiB relayed, some 40 % of the
server's CPU (bench/README.md, line 7). Serving such buffers from the heap, and keeping up to
``TRIM_THRESHOLD`` of freed heap for the next ones, removes the faults. Peak memory is unchanged:
only memory already used is kept.

What a burst leaves behind is given back, though: 2,000 connections each holding a 64 KiB waiting
body raise the heap by some 130 MiB, and once they are gone all of it stayed allocated (garbage in
reference cycles that no collection came to free on a quiet server) and then free in glibc's heap,
below live chunks, out of the trim threshold's reach. ``release_when_quiet`` looks at the heap every
few seconds: grown by ``RELEASE_ABOVE``, it has Python collect (rate-limited); past ``RELEASE_ABOVE``
free, it has glibc return the free pages to the kernel (``malloc_trim``). Never on a request's path.
"""

from __future__ import annotations

import asyncio
import ctypes
import functools
import gc
import logging
import sys
import time
from typing import Any

__all__ = [
    "MMAP_THRESHOLD",
    "RELEASE_ABOVE",
    "TRIM_THRESHOLD",
    "free_heap_bytes",
    "heap_in_use_bytes",
    "release_free_heap",
    "release_when_quiet",
    "tune_malloc",
]

#: Allocations from this size on get their own mapping (glibc's default starts at 128 KiB).
MMAP_THRESHOLD = 1024 * 1024
#: Freed memory at the heap's top kept for reuse, up to this much (glibc's default: 128 KiB at first).
TRIM_THRESHOLD = 16 * 1024 * 1024

#: Free heap above this is given back to the kernel (at the next check).
RELEASE_ABOVE = 32 * 1024 * 1024
#: How often the heap is looked at (seconds).
RELEASE_CHECK_S = 2.0
#: Full collections while the heap stays high: at most this often, backing off to the second while they find little.
COLLECT_EVERY_S = 10.0
COLLECT_EVERY_MAX_S = 60.0

log = logging.getLogger("piping_server")

# mallopt parameters (glibc's malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3


def tune_malloc(mmap_threshold: int = MMAP_THRESHOLD, trim_threshold: int = TRIM_THRESHOLD) -> bool:
    """Set the thresholds when the C library is glibc; False (nothing changed) anywhere else.

    The ``piping`` client passes its own: its buffers are of 1 MiB, which the server's 1 MiB
    ``mmap_threshold`` would map afresh each time.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None)  # the C library this process already uses
        libc.gnu_get_libc_version  # noqa: B018 - glibc only: musl's mallopt does nothing
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, mmap_threshold)) and bool(mallopt(_M_TRIM_THRESHOLD, trim_threshold))


class _Mallinfo2(ctypes.Structure):
    # glibc's struct mallinfo2 (2.33 on): every field a size_t
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",
            "keepcost",
        )
    ]


@functools.cache
def _glibc() -> Any | None:
    """The C library with ``mallinfo2`` and ``malloc_trim`` typed, when it is glibc (2.33 on); else None."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version  # noqa: B018 - glibc only
        libc.mallinfo2.restype = _Mallinfo2
        libc.malloc_trim.argtypes = [ctypes.c_size_t]
    except (OSError, AttributeError):
        return None
    return libc


def free_heap_bytes() -> int | None:
    """Bytes the heap holds free (glibc's ``fordblks``); None where that cannot be asked."""
    libc = _glibc()
    return None if libc is None else int(libc.mallinfo2().fordblks)


def release_free_heap() -> bool:
    """Give the heap's free pages back to the kernel (``malloc_trim(0)``); False where nothing was done."""
    libc = _glibc()
    return libc is not None and bool(libc.malloc_trim(0))


def heap_in_use_bytes() -> int | None:
    """Bytes of the heap allocated now (glibc's ``uordblks``); None where that cannot be asked."""
    libc = _glibc()
    return None if libc is None else int(libc.mallinfo2().uordblks)


async def release_when_quiet(check_s: float = RELEASE_CHECK_S, above: int = RELEASE_ABOVE) -> None:
    """Every ``check_s``: collect the garbage a burst left, and give back the free heap past ``above``.

    A connection's objects form reference cycles that only Python's full collection frees, and that runs
    on allocations: on a server gone quiet after a burst it may never come, and each waiting sender's
    64 KiB stays allocated. Cyclic garbage is invisible until collected, so while the heap in use stays
    ``above`` over its lowest, a full collection runs every ``COLLECT_EVERY_S``, less often (up to
    ``COLLECT_EVERY_MAX_S``) while collections find little (a server busy with real transfers); then
    ``malloc_trim`` returns what is free.
    """
    if _glibc() is None:
        return
    lowest = heap_in_use_bytes() or 0
    every_s = COLLECT_EVERY_S
    last_s = time.monotonic()
    while True:
        await asyncio.sleep(check_s)
        in_use = heap_in_use_bytes() or 0
        lowest = min(lowest, in_use)
        now = time.monotonic()
        if in_use - lowest > above and now - last_s >= every_s:
            gc.collect()
            after = heap_in_use_bytes() or 0
            last_s = time.monotonic()
            freed = in_use - after
            every_s = COLLECT_EVERY_S if freed >= above // 2 else min(COLLECT_EVERY_MAX_S, every_s * 2)
            log.debug(
                "heap: %d MiB in use, %d MiB after a full collection (%.1f ms)",
                in_use >> 20,
                after >> 20,
                (last_s - now) * 1000,
            )
        free = free_heap_bytes()
        if free is not None and free > above:
            release_free_heap()  # (glibc counts the pages it gave back as free still: cheap when repeated)
