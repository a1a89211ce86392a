"""Progress reporting hooks: the library calls a :class:`Reporter`; the CLI plugs tqdm in."""

from __future__ import annotations

__all__ = ["Reporter"]


class Reporter:
    """Receives transfer events. The base class ignores them all; subclass what you need."""

    def begin(self, total: int | None, description: str) -> None:
        """Bytes start to move; ``total`` is the expected size, when known."""

    def advance(self, n: int) -> None:
        """``n`` more bytes moved."""

    def status(self, line: str) -> None:
        """A status line, e.g. the server's ``[INFO] Waiting for 1 receiver(s)...``."""

    def receivers(self, now: int, served: int) -> None:
        """A live transfer's audience changed: ``now`` receivers listen, ``served`` ever joined."""

    def warning(self, message: str) -> None:
        """Something the user should know that does not stop the transfer."""

    def end(self) -> None:
        """The transfer is over (successfully or not)."""
