"""The Piping client: send and get files, folders and streams through a Piping Server.

>>> from piping_server.client import send, get
>>> send("https://ppng.io/mypath", "photo.jpg")          # doctest: +SKIP
>>> get("https://ppng.io/mypath", "downloads/")          # doctest: +SKIP

A folder or several files travel as one streamed tar, unpacked on arrival; a single file travels as
itself. ``passphrase=`` encrypts end to end with OpenPGP (``gpg -c`` / Piping UI compatible). The
async variants :func:`send_async` and :func:`get_async` take the same arguments. Errors are
:class:`PipingError` subclasses with one-line messages. See ``docs/client.md``.
"""

from __future__ import annotations

from ._errors import (
    ArchiveError,
    BadPassphraseError,
    DecryptionError,
    IntegrityError,
    PipingError,
    ServerRejectedError,
    ServerUnreachableError,
    TransferInterruptedError,
    UsageError,
)
from ._get import GetResult, get, get_async
from ._progress import Reporter
from ._send import SendResult, send, send_async
from ._url import resolve_url

__all__ = [
    "ArchiveError",
    "BadPassphraseError",
    "DecryptionError",
    "GetResult",
    "IntegrityError",
    "PipingError",
    "Reporter",
    "SendResult",
    "ServerRejectedError",
    "ServerUnreachableError",
    "TransferInterruptedError",
    "UsageError",
    "get",
    "get_async",
    "resolve_url",
    "send",
    "send_async",
]
