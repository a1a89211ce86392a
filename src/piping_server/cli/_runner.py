"""Run one client coroutine for the command line: one line on stderr and an exit code, never a traceback.

Ctrl-C (SIGINT) and SIGTERM cancel the running command like any other failure would end it, so that
its ``finally`` blocks close sockets and remove partial files; the process then exits 130 (SIGINT) or
143 (SIGTERM), as shells report a process killed by those signals. asyncio's own SIGINT handling
raises ``KeyboardInterrupt`` inside whichever callback happens to run, which leaves tasks half
cancelled and prints their tracebacks (and once ``Event loop stopped before Future completed``):
handling the signals on the loop avoids that. Exceptions of background tasks that end only because
the command is ending are not news to the user: they are dropped instead of printed.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import Coroutine
from typing import Any

import click

from .._runtime.malloc import tune_malloc
from ..client import PipingError

__all__ = ["run"]

_EXIT_BY_SIGNAL = {signal.SIGINT: 130, signal.SIGTERM: 143}
_MMAP_THRESHOLD = 32 << 20  # (glibc's maximum)
_TRIM_THRESHOLD = 64 << 20
_SIGNAL_WORD = {signal.SIGINT: "interrupted", signal.SIGTERM: "terminated"}


def _quiet(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """The loop's exception handler: leftovers of tasks cut short at exit, never a traceback."""


async def _main(coro: Coroutine[Any, Any, Any], received: list[signal.Signals]) -> Any:
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(_quiet)
    task = asyncio.current_task()
    assert task is not None

    def on_signal(sig: signal.Signals) -> None:
        if received:  # a second signal: stop waiting for the clean-up
            os._exit(_EXIT_BY_SIGNAL[received[0]])
        received.append(sig)
        task.cancel()

    for sig in _EXIT_BY_SIGNAL:
        # Windows' loops have no signal handlers: there Ctrl-C stays a KeyboardInterrupt, handled in run().
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, on_signal, sig)
    return await coro


def _exit_for_signal(sig: signal.Signals) -> None:
    click.echo(f"piping: {_SIGNAL_WORD[sig]}", err=True)
    sys.exit(_EXIT_BY_SIGNAL[sig])


def run(coro: Coroutine[Any, Any, Any]) -> Any:
    """Run ``coro``; map every failure (and Ctrl-C) to one line on stderr and an exit code."""
    received: list[signal.Signals] = []
    # A transfer allocates and frees 1 MiB buffers many times a second (socket reads, ciphertext,
    # plaintext). With glibc's defaults the heap's top goes back to the kernel after each, and the next
    # buffer is faulted in again page by page: that doubled the CPU of `get --pass` (system time
    # 0.3 -> 0.08 s per 256 MiB). Buffers below 32 MiB come from the heap, and 64 MiB of it are kept.
    tune_malloc(mmap_threshold=_MMAP_THRESHOLD, trim_threshold=_TRIM_THRESHOLD)
    try:
        result = asyncio.run(_main(coro, received))
    except asyncio.CancelledError:
        if received:
            _exit_for_signal(received[0])
        raise
    except PipingError as e:
        if received:  # the failure is the signal's doing (a cut connection): report the signal
            _exit_for_signal(received[0])
        click.echo(f"piping: error: {e}", err=True)
        sys.exit(e.exit_code)
    except KeyboardInterrupt:  # before the loop's handler was installed
        _exit_for_signal(signal.SIGINT)
    except BrokenPipeError:
        # stdout was closed (`piping get x | head`): quiet, as other Unix tools.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        sys.exit(141)
    except OSError as e:
        if received:
            _exit_for_signal(received[0])
        click.echo(f"piping: error: {e.strerror or e}", err=True)
        sys.exit(1)
    if received:  # the command finished anyway (the signal came at its very end)
        _exit_for_signal(received[0])
    return result
