"""The rendezvous core: no I/O, no HTTP, no asyncio. Events in, actions out."""

from __future__ import annotations

from ._errors import CoreMisuse, PipingError, ProtocolError
from ._events import (
    AcceptSender,
    Action,
    CutReceivers,
    DetachReceiver,
    EndSender,
    Event,
    Peer,
    PeerLost,
    ReceiverArrived,
    ReceiverFinished,
    Reject,
    SenderArrived,
    StartTransfer,
    TransferExpired,
    UploadEnded,
    UploadFailed,
    WaitExpired,
    WriteLine,
)
from ._hub import RESERVED_PATHS, Hub, is_reserved
from ._paths import parse_n, query_param, remove_dot_segments, split_target

__all__ = [
    "RESERVED_PATHS",
    "AcceptSender",
    "Action",
    "CoreMisuse",
    "CutReceivers",
    "DetachReceiver",
    "EndSender",
    "Event",
    "Hub",
    "Peer",
    "PeerLost",
    "PipingError",
    "ProtocolError",
    "ReceiverArrived",
    "ReceiverFinished",
    "Reject",
    "SenderArrived",
    "StartTransfer",
    "TransferExpired",
    "UploadEnded",
    "UploadFailed",
    "WaitExpired",
    "WriteLine",
    "is_reserved",
    "parse_n",
    "query_param",
    "remove_dot_segments",
    "split_target",
]
