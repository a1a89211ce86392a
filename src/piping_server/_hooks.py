"""What the operator's layer (auth, limits, logs, metrics) may plug into every transport.

The transports call these hooks at fixed points of each request; with none set (the default),
the server is exactly the plain protocol of PROTOCOL.md. Hooks run on the event loop, must not
block, and see requests as ``RequestView`` values, never the transport objects.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from ._headers import Headers


@dataclass(frozen=True, slots=True, kw_only=True)
class RequestView:
    """One request as the hooks see it."""

    method: str
    path: str  # normalised, without the query string
    query: str  # raw, without '?'
    headers: Headers  # lowercase names
    client: str  # the peer's address, "" when unknown
    transport: str  # "h1", "h2"
    is_tls: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class Refusal:
    """An operator's refusal: the status, a one-line message (ending with a newline), extra headers."""

    status: int
    message: str
    headers: Headers = field(default_factory=list)


@dataclass(frozen=True, slots=True, kw_only=True)
class AccessRecord:
    """One finished request, for the access log and the metrics."""

    request: RequestView
    status: int  # 0 when no response head was written
    bytes_in: int  # request body bytes read
    bytes_out: int  # response body bytes written
    duration_s: float
    role: str  # "sender", "receiver", "page", "preflight", "refused"...


@dataclass(slots=True)
class Hooks:
    """The operator's hooks; each may be None."""

    #: called before routing; a Refusal answers the request instead of the protocol
    admit: Callable[[RequestView], Refusal | None] | None = None
    #: called once per request when it is over, whatever the outcome
    on_access: Callable[[AccessRecord], None] | None = None
