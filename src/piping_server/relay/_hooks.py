"""What the operator's layer (auth, limits, logs, metrics) may plug into every transport.

The transports call these hooks at fixed points of each request; with none set (the default),
the server is exactly the plain protocol of docs/protocol.md. Hooks run on the event loop, must not
block, and see requests as ``RequestView`` values, never the transport objects.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from ._headers import Headers
from ._proxies import TrustedProxies


@dataclass(frozen=True, slots=True, kw_only=True)
class RequestView:
    """One request as the hooks see it."""

    method: str
    path: str  # normalised, without the query string
    query: str  # raw, without '?'
    headers: Headers  # lowercase names
    client: str  # the client's address ("" when unknown): the peer's, or as a trusted proxy names it
    transport: str  # "h1", "h2"
    is_tls: bool  # the client used TLS: to us, or to a trusted proxy that says so (X-Forwarded-Proto)


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

    #: called before routing; a Refusal answers the request instead of the protocol; a future (of a Refusal or
    #: None) when deciding takes work off the event loop (a password hash): routing waits for it, the body held
    admit: Callable[[RequestView], Refusal | asyncio.Future[Refusal | None] | None] | None = None
    #: called once per request when it is over, whatever the outcome
    on_access: Callable[[AccessRecord], None] | None = None
    #: called when a connection opens, with the client's address ("" when unknown) and the connection (which
    #: a connection limit may close to make room); a Refusal answers every request on that connection (then
    #: it closes), and ``on_disconnect`` is not called for it
    on_connect: Callable[[str, Connection], Refusal | None] | None = None
    #: called when a connection that ``on_connect`` let in (or any, without ``on_connect``) closes
    on_disconnect: Callable[[str, Connection], None] | None = None
    #: the most bytes a request line plus headers may take (answered 431); None: the transport's default
    max_head_bytes: int | None = None
    #: when set, the whole value of the preflight's ``Access-Control-Allow-Headers`` (auth adds Authorization)
    preflight_allow_headers: bytes | None = None
    #: the proxies whose X-Forwarded-For / X-Forwarded-Proto / Forwarded name the client (--forwarded-allow-ips)
    trusted_proxies: TrustedProxies | None = None
    #: set in a worker of ``--workers``: another worker owns the request's path, so this serves it there
    #: (the request and its path; True when taken). Called before ``admit``: the owner admits it.
    #: (The request is an ``Exchange``, typed loosely: the routing module imports these hooks, not the reverse.)
    forward: Callable[[Any, str], bool] | None = None
    #: seconds from a connection's accept (or the end of its previous response) to a complete request head
    #: (HTTP/2: a complete header block); past it the connection is closed. None: no limit (--header-timeout)
    header_timeout_s: float | None = 60.0
    #: seconds a connection with no request in progress (HTTP/2: no open stream) may stay open; None: no
    #: limit (--keepalive-timeout). A running or waiting transfer is never cut by either timeout.
    keepalive_timeout_s: float | None = 75.0


class Connection(Protocol):
    """What a transport's connection offers a connection limit: whether it may be closed to make room, and how."""

    def reclaimable(self) -> bool:
        """No request is in progress on it (HTTP/2: no open stream): closing it loses nothing."""
        ...

    def reclaim(self) -> None:
        """Close it gracefully (HTTP/1: close; HTTP/2: GOAWAY, then close). ``on_disconnect`` still follows."""
        ...


class Progress(Protocol):
    """What a transport's endpoint offers the operator's layer (idle timeouts, live byte counts)."""

    def view(self) -> RequestView:
        """This request as the hooks see it."""
        ...

    def progress(self) -> tuple[int, int]:
        """(request body bytes read so far, response bytes handed to the kernel so far)."""
        ...
