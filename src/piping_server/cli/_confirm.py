"""``--exchange`` and ``--yes``: show the key exchange's verification code and ask the user to confirm it."""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import click

__all__ = ["code_confirmer", "exchange_options"]

F = TypeVar("F", bound=Callable[..., Any])
TTY = "/dev/tty"


def exchange_options(f: F) -> F:
    f = click.option(
        "--yes",
        "-y",
        is_flag=True,
        help="With --exchange: do not ask to confirm the verification code (scripts; it is still shown).",
    )(f)
    f = click.option(
        "--exchange",
        "-x",
        is_flag=True,
        help="End-to-end encrypt without a passphrase: exchange keys with the other side (Piping UI's E2E, "
        "a `piping ... --exchange` or this server's page) and compare the verification code.",
    )(f)
    return f


def _open_tty() -> int:
    # The terminal, not stdin: stdin may be the data being sent (as getpass does).
    return os.open(TTY, os.O_RDWR | os.O_NOCTTY)


def _ask(tty: int, code: str) -> bool:
    os.write(tty, f"Does the other side show the verification code {code}? [y/N] ".encode())
    answer = b""
    while not answer.endswith(b"\n") and len(answer) < 1024:
        data = os.read(tty, 1024)
        if not data:
            break
        answer += data
    return answer.decode("utf-8", "replace").strip().lower() in ("y", "yes")


def code_confirmer(yes: bool, doing: str) -> tuple[Callable[[str], None], Callable[[str], Awaitable[bool]] | None]:
    """(show the code, ask about it): ``ask`` is None with ``--yes``. Without a terminal and without
    ``--yes`` this is a usage error now, before anything is exchanged."""
    tty: int | None = None
    if not yes:
        try:
            tty = _open_tty()
        except OSError:
            raise click.UsageError(
                "no terminal to confirm the verification code on: compare it in the output and pass --yes"
            ) from None

    def show(code: str) -> None:
        click.echo(f"piping: verification code: {code}", err=True)
        if yes:
            click.echo(f"piping: {doing} without asking (--yes): compare it with the other side's", err=True)

    if tty is None:
        return show, None
    terminal = tty

    async def ask(code: str) -> bool:
        loop = asyncio.get_running_loop()
        answered: asyncio.Future[bool] = loop.create_future()

        def read() -> None:
            try:
                ok = _ask(terminal, code)
            except (OSError, ValueError):
                ok = False

            def settle() -> None:
                if not answered.done():
                    answered.set_result(ok)

            with contextlib.suppress(RuntimeError):  # the loop is gone (Ctrl-C): nobody waits
                loop.call_soon_threadsafe(settle)

        # A daemon thread, not the loop's executor: Ctrl-C at the prompt must not wait for a line.
        threading.Thread(target=read, name="piping-confirm", daemon=True).start()
        try:
            return await answered
        finally:
            if answered.done():
                os.close(terminal)

    return show, ask
