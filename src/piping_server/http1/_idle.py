"""One coarse timer per event loop for the HTTP/1 connections' header and keep-alive timeouts.

A timer per connection (set at accept, moved at every request) costs a timer handle's creation and
cancellation per small transfer; here a connection only joins a set when it opens and leaves it when
it closes, and one sweep a second asks each whether its deadline has passed. A timeout then fires up
to ``SWEEP_S`` late, which is nothing next to the 60 s and 75 s defaults.
"""

from __future__ import annotations

import asyncio
import time
from typing import ClassVar, Final, Protocol

#: How often the connections are looked at: how late a timeout may close a connection.
SWEEP_S: Final = 1.0


class Sweepable(Protocol):
    def check_idle(self, now: float) -> None:
        """Close the connection if a timeout has passed at ``now`` (``time.monotonic()``)."""


class IdleSweep:
    """The connections of one event loop that have a timeout, looked at every ``SWEEP_S``."""

    __slots__ = ("_loop", "_members", "_handle")

    _by_loop: ClassVar[dict[asyncio.AbstractEventLoop, IdleSweep]] = {}

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._members: set[Sweepable] = set()
        self._handle: asyncio.TimerHandle | None = None

    @classmethod
    def join(cls, member: Sweepable, loop: asyncio.AbstractEventLoop) -> IdleSweep:
        """``member`` is swept on ``loop`` (the running loop: the caller has it at hand, asyncio would ask the OS)."""
        sweep = cls._by_loop.get(loop)
        if sweep is None:
            sweep = cls._by_loop[loop] = cls(loop)
        sweep._members.add(member)
        if sweep._handle is None:
            sweep._handle = loop.call_later(SWEEP_S, sweep._sweep)
        return sweep

    def leave(self, member: Sweepable) -> None:
        self._members.discard(member)

    def _sweep(self) -> None:
        self._handle = None
        if not self._members:
            self._by_loop.pop(self._loop, None)  # nothing left: the next connection starts anew
            return
        now = time.monotonic()
        for member in list(self._members):  # (a check may close a connection, which leaves the set)
            member.check_idle(now)
        self._handle = self._loop.call_later(SWEEP_S, self._sweep)
