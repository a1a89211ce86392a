"""Inputs to the hub (past-tense facts) and its outputs (imperative actions).

All are frozen, slotted, keyword-only dataclasses: values, compared by content, never subclassed.
A *peer* is any hashable object that the transport adapter uses to name one request (an HTTP/1
request, an HTTP/2 stream); the core never looks inside it.

Each class writes its own ``__init__`` (``init=False``, the fields set as a frozen dataclass sets
them): mypyc compiles it to C, where the one that ``dataclass`` generates stays interpreted, some
0.3 µs per object, and a small transfer makes a dozen of them.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass

Peer = Hashable

# --- inputs -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True, init=False)
class SenderArrived:
    """A POST or PUT came to a non-reserved path; its headers are read, its body is not."""

    peer: Peer
    path: str
    method: str
    n: str | None
    has_content_range: bool = False
    #: the raw ``live`` query parameter ("" for a bare ``?live``), None when absent (docs/protocol.md section 11)
    live: str | None = None

    def __init__(
        self,
        *,
        peer: Peer,
        path: str,
        method: str,
        n: str | None,
        has_content_range: bool = False,
        live: str | None = None,
    ) -> None:
        object.__setattr__(self, "peer", peer)
        object.__setattr__(self, "path", path)
        object.__setattr__(self, "method", method)
        object.__setattr__(self, "n", n)
        object.__setattr__(self, "has_content_range", has_content_range)
        object.__setattr__(self, "live", live)


@dataclass(frozen=True, slots=True, kw_only=True, init=False)
class ReceiverArrived:
    """A GET came to a non-reserved path."""

    peer: Peer
    path: str
    n: str | None
    is_service_worker: bool = False
    #: the raw ``live`` query parameter ("" for a bare ``?live``), None when absent (docs/protocol.md section 11)
    live: str | None = None

    def __init__(
        self, *, peer: Peer, path: str, n: str | None, is_service_worker: bool = False, live: str | None = None
    ) -> None:
        object.__setattr__(self, "peer", peer)
        object.__setattr__(self, "path", path)
        object.__setattr__(self, "n", n)
        object.__setattr__(self, "is_service_worker", is_service_worker)
        object.__setattr__(self, "live", live)


@dataclass(frozen=True, slots=True, kw_only=True, init=False)
class UploadEnded:
    """The sender's body has been read to its end (and handed to the receivers)."""

    peer: Peer
    #: bytes of the body; only a live transfer's summary line needs it
    size: int = 0

    def __init__(self, *, peer: Peer, size: int = 0) -> None:
        object.__setattr__(self, "peer", peer)
        object.__setattr__(self, "size", size)


@dataclass(frozen=True, slots=True, kw_only=True, init=False)
class UploadFailed:
    """The sender's body broke (a bad chunk, a reset stream) while its response can still be written."""

    peer: Peer
    #: bytes of the body read before it broke; only a live transfer's summary line needs it
    size: int = 0

    def __init__(self, *, peer: Peer, size: int = 0) -> None:
        object.__setattr__(self, "peer", peer)
        object.__setattr__(self, "size", size)


@dataclass(frozen=True, slots=True, kw_only=True, init=False)
class ReceiverFinished:
    """A receiver's response has been written to its end."""

    peer: Peer

    def __init__(self, *, peer: Peer) -> None:
        object.__setattr__(self, "peer", peer)


@dataclass(frozen=True, slots=True, kw_only=True, init=False)
class PeerLost:
    """A sender's or receiver's connection (or stream) is gone."""

    peer: Peer

    def __init__(self, *, peer: Peer) -> None:
        object.__setattr__(self, "peer", peer)


@dataclass(frozen=True, slots=True, kw_only=True, init=False)
class WaitExpired:
    """The operator's layer gives up on a peer that waits unmatched (a waiting timeout, a shutdown).

    A waiting sender gets ``message`` as its last progress line; a waiting receiver is answered
    ``status`` with ``message``. A peer that no longer waits is left alone (the timer lost a race).
    ``message`` is one line ending with a newline.
    """

    peer: Peer
    message: str
    status: int = 504

    def __init__(self, *, peer: Peer, message: str, status: int = 504) -> None:
        object.__setattr__(self, "peer", peer)
        object.__setattr__(self, "message", message)
        object.__setattr__(self, "status", status)


@dataclass(frozen=True, slots=True, kw_only=True, init=False)
class TransferExpired:
    """The operator's layer ends the running transfer that ``peer`` belongs to (idle too long, a shutdown).

    Like a broken upload: the receivers see a cut stream; the sender, when still there, gets
    ``message`` (one line ending with a newline) and its upload is dropped.
    """

    peer: Peer
    message: str

    def __init__(self, *, peer: Peer, message: str) -> None:
        object.__setattr__(self, "peer", peer)
        object.__setattr__(self, "message", message)


@dataclass(frozen=True, slots=True, kw_only=True, init=False)
class ReceiverLagged:
    """A receiver of a live transfer fell further behind the stream than the backlog allows."""

    peer: Peer

    def __init__(self, *, peer: Peer) -> None:
        object.__setattr__(self, "peer", peer)


Event = (
    SenderArrived
    | ReceiverArrived
    | UploadEnded
    | UploadFailed
    | ReceiverFinished
    | PeerLost
    | WaitExpired
    | TransferExpired
    | ReceiverLagged
)

# --- outputs ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True, init=False)
class Reject:
    """Answer ``peer`` with ``status`` and the one-line ``message`` (ends with a newline), and forget it."""

    peer: Peer
    status: int
    message: str

    def __init__(self, *, peer: Peer, status: int, message: str) -> None:
        object.__setattr__(self, "peer", peer)
        object.__setattr__(self, "status", status)
        object.__setattr__(self, "message", message)


@dataclass(frozen=True, slots=True, kw_only=True, init=False)
class AcceptSender:
    """Start the sender's 200 text/plain response now; progress lines follow as ``WriteLine``."""

    peer: Peer

    def __init__(self, *, peer: Peer) -> None:
        object.__setattr__(self, "peer", peer)


@dataclass(frozen=True, slots=True, kw_only=True, init=False)
class WriteLine:
    """Write one progress line (ending with a newline) to the sender's response."""

    peer: Peer
    line: str

    def __init__(self, *, peer: Peer, line: str) -> None:
        object.__setattr__(self, "peer", peer)
        object.__setattr__(self, "line", line)


@dataclass(frozen=True, slots=True, kw_only=True, init=False)
class StartTransfer:
    """Pipe the sender's body to these receivers, in this order; their responses start now."""

    sender: Peer
    receivers: tuple[Peer, ...]

    def __init__(self, *, sender: Peer, receivers: tuple[Peer, ...]) -> None:
        object.__setattr__(self, "sender", sender)
        object.__setattr__(self, "receivers", receivers)


@dataclass(frozen=True, slots=True, kw_only=True, init=False)
class DetachReceiver:
    """Stop feeding this receiver: it left mid-transfer."""

    peer: Peer

    def __init__(self, *, peer: Peer) -> None:
        object.__setattr__(self, "peer", peer)


@dataclass(frozen=True, slots=True, kw_only=True, init=False)
class EndSender:
    """End the sender's response normally; ``drop_upload`` means stop reading its body (close it)."""

    peer: Peer
    drop_upload: bool = False

    def __init__(self, *, peer: Peer, drop_upload: bool = False) -> None:
        object.__setattr__(self, "peer", peer)
        object.__setattr__(self, "drop_upload", drop_upload)


@dataclass(frozen=True, slots=True, kw_only=True, init=False)
class CutReceivers:
    """The upload broke: end these receivers' responses so that they look cut, never complete."""

    receivers: tuple[Peer, ...]

    def __init__(self, *, receivers: tuple[Peer, ...]) -> None:
        object.__setattr__(self, "receivers", receivers)


@dataclass(frozen=True, slots=True, kw_only=True, init=False)
class StartLive:
    """Open a live transfer: read the sender's body and fan it out to whoever is there (maybe nobody).

    ``receivers`` waited with ``?live`` and start at byte 0; their responses start now.
    """

    sender: Peer
    receivers: tuple[Peer, ...]

    def __init__(self, *, sender: Peer, receivers: tuple[Peer, ...]) -> None:
        object.__setattr__(self, "sender", sender)
        object.__setattr__(self, "receivers", receivers)


@dataclass(frozen=True, slots=True, kw_only=True, init=False)
class JoinLive:
    """Add ``receiver`` to ``sender``'s live transfer: its response starts now, at the stream's next byte."""

    sender: Peer
    receiver: Peer

    def __init__(self, *, sender: Peer, receiver: Peer) -> None:
        object.__setattr__(self, "sender", sender)
        object.__setattr__(self, "receiver", receiver)


@dataclass(frozen=True, slots=True, kw_only=True, init=False)
class DropReceiver:
    """Cut this receiver now, dropping what it has not taken yet (it fell too far behind a live stream)."""

    peer: Peer

    def __init__(self, *, peer: Peer) -> None:
        object.__setattr__(self, "peer", peer)


Action = (
    Reject
    | AcceptSender
    | WriteLine
    | StartTransfer
    | DetachReceiver
    | EndSender
    | CutReceivers
    | StartLive
    | JoinLive
    | DropReceiver
)
