"""The exceptions of piping_server.

    PipingError                 root of everything this package raises on purpose
    ├── ProtocolError           a peer broke HTTP; ``status_hint`` is the status to answer with
    └── CoreMisuse              the rendezvous core was driven in a way its contract forbids (a bug)

Client-caused refusals of the Piping protocol (busy path, bad ``n`` ...) are *not* exceptions:
the core returns them as ``Reject`` actions, with the exact texts of docs/protocol.md.
"""

from __future__ import annotations


class PipingError(Exception):
    """Root of the package's own exceptions."""


class ProtocolError(PipingError):
    """A peer sent something HTTP does not allow."""

    def __init__(self, message: str, *, status_hint: int = 400) -> None:
        super().__init__(message)
        self.status_hint = status_hint


class CoreMisuse(PipingError):
    """The hub received an event that its state cannot take (a bug in an adapter)."""
