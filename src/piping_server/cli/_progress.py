"""tqdm progress on stderr for the CLI: a bar while bytes move, status lines above it."""

from __future__ import annotations

import os
import sys
from typing import Any

import click
from tqdm import tqdm  # type: ignore[import-untyped]  # (no stubs installed)

from ..client import Reporter

__all__ = ["CliReporter"]


class CliReporter(Reporter):
    """Shows a bar only on a terminal; status and warning lines unless quiet."""

    def __init__(self, quiet: bool, bar: bool | None = None) -> None:
        self.quiet = quiet
        self.show_bar = (not quiet and sys.stderr.isatty()) if bar is None else bar
        self._bar: Any = None

    def begin(self, total: int | None, description: str) -> None:
        if self.show_bar:
            try:
                size = os.get_terminal_size(sys.stderr.fileno())
                sized = size.columns > 0 and size.lines > 0
            except (OSError, ValueError):
                sized = False
            # A pty with no size (script, some CI runners) reports 0x0: tqdm would then draw nothing.
            self._bar = tqdm(
                ncols=None if sized else 80,
                nrows=None if sized else 24,
                dynamic_ncols=sized,
                total=total,
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                desc=description[:30],
                file=sys.stderr,
                mininterval=0.2,
                leave=True,
            )

    def advance(self, n: int) -> None:
        if self._bar is not None:
            self._bar.update(n)

    def _line(self, text: str) -> None:
        if self._bar is not None:
            self._bar.write(text, file=sys.stderr)
        else:
            click.echo(text, err=True)

    def status(self, line: str) -> None:
        if not self.quiet:
            self._line(line)

    def receivers(self, now: int, served: int) -> None:
        if self._bar is not None:
            self._bar.set_postfix_str(f"{now} listening, {served} served", refresh=False)

    def warning(self, message: str) -> None:
        self._line(f"piping: warning: {message}")

    def end(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
