"""Run one client coroutine for the command line: one line on stderr and an exit code, never a traceback.

Ctrl-C (SIGINT) and SIGTERM cancel the running command like any other failure would end it, so that
its ``finally`` blocks close sockets and remove partial files; the process then exits 130 (SIGINT) or
143 (SIGTERM), as shells report a process killed by those signals. asyncio's own SIGINT handling
raises ``KeyboardInterrupt`` inside whichever callback happens to run, which leaves tasks half
cancelled and prints their tracebacks (and once ``Event loop stopped before Future completed``):
handling the signals on the loop avoids that.

An exception nobody handled (a callback's, a task's never retrieved): while the command runs it is a
bug, never dropped. The command stops and fails with one line (exit code 70, EX_SOFTWARE); ``piping
--debug`` (or ``PIPING_DEBUG=1``) prints each such exception's traceback once as well. Once the command
is ending (its coroutine returned or failed, or a signal came), the tasks cut short may still raise
as they are cancelled: those are not news to the user and are dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import traceback
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
#: An unexpected exception (a bug): EX_SOFTWARE of sysexits.h, apart from the client's own codes (1-7).
EXIT_BUG = 70
DEBUG_ENV = "PIPING_DEBUG"


class _Unhandled:
    """The loop's exception handler: what no code handled, told apart by whether the command is ending."""

    def __init__(self, debug: bool) -> None:
        self.debug = debug
        #: set once the command's coroutine has returned or failed, or a signal came: from then on, quiet
        self.ending = False
        #: the first unexpected exception while the command ran (what the error line names)
        self.first: str | None = None
        self.main: asyncio.Task[Any] | None = None
        self._shown: set[int] = set()

    def __call__(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        if self.ending:
            return  # leftovers of tasks cut short at exit
        exc = context.get("exception")
        if self.debug and id(exc) not in self._shown:  # (one exception may be reported twice: once is enough)
            self._shown.add(id(exc))
            _show_traceback(str(context.get("message") or "unhandled exception"), exc)
        if self.first is None:
            self.first = _describe(exc) if isinstance(exc, BaseException) else str(context.get("message"))
            if self.main is not None:
                self.main.cancel()  # a part of the command is broken: waiting on could mean waiting forever
            self.ending = True


def _describe(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def _show_traceback(message: str, exc: object) -> None:
    click.echo(f"piping: debug: {message}", err=True)
    if isinstance(exc, BaseException):
        click.echo("".join(traceback.format_exception(exc)).rstrip("\n"), err=True)


def _fail_for_bug(what: str, debug: bool) -> None:
    hint = "" if debug else f" (run with --debug or {DEBUG_ENV}=1 for its traceback)"
    click.echo(f"piping: error: unexpected error, a bug: {what}{hint}", err=True)
    sys.exit(EXIT_BUG)


async def _main(coro: Coroutine[Any, Any, Any], received: list[signal.Signals], unhandled: _Unhandled) -> Any:
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(unhandled)
    task = asyncio.current_task()
    assert task is not None
    unhandled.main = task

    def on_signal(sig: signal.Signals) -> None:
        if received:  # a second signal: stop waiting for the clean-up
            os._exit(_EXIT_BY_SIGNAL[received[0]])
        received.append(sig)
        unhandled.ending = True
        task.cancel()

    for sig in _EXIT_BY_SIGNAL:
        # Windows' loops have no signal handlers: there Ctrl-C stays a KeyboardInterrupt, handled in run().
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, on_signal, sig)
    try:
        return await coro
    finally:
        unhandled.ending = True


def _debug_asked() -> bool:
    """``piping --debug`` (the group's option, so any command's), or PIPING_DEBUG=1."""
    ctx = click.get_current_context(silent=True)
    if ctx is not None and ctx.find_root().params.get("debug"):
        return True
    return os.environ.get(DEBUG_ENV, "") not in ("", "0")


def _exit_for_signal(sig: signal.Signals) -> None:
    click.echo(f"piping: {_SIGNAL_WORD[sig]}", err=True)
    sys.exit(_EXIT_BY_SIGNAL[sig])


def run(coro: Coroutine[Any, Any, Any], *, debug: bool | None = None) -> Any:
    """Run ``coro``; map every failure (and Ctrl-C) to one line on stderr and an exit code.

    ``debug``: print the traceback of an unexpected exception too (None: as ``--debug`` or PIPING_DEBUG say).
    """
    received: list[signal.Signals] = []
    unhandled = _Unhandled(_debug_asked() if debug is None else debug)
    # A transfer allocates and frees 1 MiB buffers many times a second (socket reads, ciphertext,
    # plaintext). With glibc's defaults the heap's top goes back to the kernel after each, and the next
    # buffer is faulted in again page by page: that doubled the CPU of `get --pass` (system time
    # 0.3 -> 0.08 s per 256 MiB). Buffers below 32 MiB come from the heap, and 64 MiB of it are kept.
    tune_malloc(mmap_threshold=_MMAP_THRESHOLD, trim_threshold=_TRIM_THRESHOLD)
    try:
        result = asyncio.run(_main(coro, received, unhandled))
    except asyncio.CancelledError:
        if received:
            _exit_for_signal(received[0])
        if unhandled.first is not None:
            _fail_for_bug(unhandled.first, unhandled.debug)
        raise
    except PipingError as e:
        if received:  # the failure is the signal's doing (a cut connection): report the signal
            _exit_for_signal(received[0])
        if unhandled.first is not None:  # (the failure is the bug's doing: the bug is the news)
            _fail_for_bug(unhandled.first, unhandled.debug)
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
        if unhandled.first is not None:
            _fail_for_bug(unhandled.first, unhandled.debug)
        click.echo(f"piping: error: {e.strerror or e}", err=True)
        sys.exit(1)
    except (click.ClickException, click.exceptions.Exit):
        raise  # (a usage error or an exit: click's own, run_click reports it)
    except Exception as e:  # the command's own bug: one line too, the traceback under --debug
        if received:
            _exit_for_signal(received[0])
        if unhandled.debug:
            _show_traceback("the command failed", e)
        _fail_for_bug(unhandled.first or _describe(e), unhandled.debug)
    if received:  # the command finished anyway (the signal came at its very end)
        _exit_for_signal(received[0])
    if unhandled.first is not None:  # it finished, but a part of it broke on the way
        _fail_for_bug(unhandled.first, unhandled.debug)
    return result
