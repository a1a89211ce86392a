"""Exceptions raised by the Piping client; each carries a one-line, user-facing message.

piping_server.core.PipingError     the package's one root
└── client.PipingError             what the client raises; ``exit_code`` for the CLI
    ├── UsageError (2), ServerUnreachableError (3), ServerRejectedError (4),
    └── TransferInterruptedError, DecryptionError, IntegrityError, ArchiveError ...
"""

from __future__ import annotations

from ..core import PipingError as _PackageError

__all__ = [
    "ArchiveError",
    "BadPassphraseError",
    "DecryptionError",
    "IntegrityError",
    "PipingError",
    "ServerRejectedError",
    "ServerUnreachableError",
    "TransferInterruptedError",
    "UsageError",
]


class PipingError(_PackageError):
    """Base class: the CLI prints ``str(exc)`` as one line and exits with :attr:`exit_code`."""

    exit_code = 1


class UsageError(PipingError):
    """A bad argument: no server for a bare path, a missing file, an existing destination."""

    exit_code = 2


class ServerUnreachableError(PipingError):
    """The server could not be connected to (DNS, refused, TLS handshake)."""

    exit_code = 3


class ServerRejectedError(PipingError):
    """The server answered with an error status, e.g. a busy path; the message is its ``[ERROR]`` text."""

    exit_code = 4

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class TransferInterruptedError(PipingError):
    """The peer or the connection went away before the transfer finished: a cut stream is never a success."""

    exit_code = 5


class DecryptionError(PipingError):
    """The encrypted stream could not be decrypted (malformed, unsupported)."""

    exit_code = 6


class BadPassphraseError(DecryptionError):
    """The passphrase does not open the encrypted stream."""


class IntegrityError(DecryptionError):
    """The encrypted stream was tampered with or truncated (MDC mismatch or missing)."""


class ArchiveError(PipingError):
    """A received folder archive is malformed or unsafe (absolute path, ``..``, link out of the destination)."""

    exit_code = 7
