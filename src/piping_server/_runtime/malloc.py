"""glibc's malloc set for a relay's pattern: many short-lived buffers of 64-256 KiB.

Every read of the event loop is a new ``bytes`` of up to 256 KiB, freed once its bytes have been
written on. With glibc's defaults such a buffer is either mmap'ed, or taken from a heap whose top is
trimmed and grown again as buffers come and go; either way the kernel hands out fresh zeroed pages
every time. On an HTTP/2 upload that was about one page fault per 4 KiB relayed, some 40 % of the
server's CPU (bench/README.md, line 7). Serving such buffers from the heap, and keeping up to
``TRIM_THRESHOLD`` of freed heap for the next ones, removes the faults. Peak memory is unchanged:
only memory already used is kept.
"""

from __future__ import annotations

import ctypes
import sys

__all__ = ["MMAP_THRESHOLD", "TRIM_THRESHOLD", "tune_malloc"]

#: Allocations from this size on get their own mapping (glibc's default starts at 128 KiB).
MMAP_THRESHOLD = 1024 * 1024
#: Freed memory at the heap's top kept for reuse, up to this much (glibc's default: 128 KiB at first).
TRIM_THRESHOLD = 16 * 1024 * 1024

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
