"""Header rules shared by every transport (docs/protocol.md sections 3, 6 and 7).

Header names are lowercase bytes here, as HTTP/2 requires; HTTP/1 writes them in their
conventional capitalization (``Content-Length``), as the reference does, since scripts and
raw-byte clients compare names as written (``canonical_name``).
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable
from email.utils import formatdate
from typing import Final

Headers = list[tuple[bytes, bytes]]

ALLOW_ORIGIN: Final[tuple[bytes, bytes]] = (b"access-control-allow-origin", b"*")
TEXT_PLAIN: Final[tuple[bytes, bytes]] = (b"content-type", b"text/plain")
#: What the 405 answer and the preflight advertise (docs/protocol.md sections 3 and 7).
ALLOWED_METHODS: Final = b"GET, HEAD, POST, PUT, OPTIONS"

#: What a sender's progress stream and every error message carry.
MESSAGE_HEADERS: Final[Headers] = [TEXT_PLAIN, ALLOW_ORIGIN]

#: The opt-in of a question about a path (docs/protocol.md section 12): ``HEAD /p`` with this header.
QUESTION_HEADER = b"piping-ask"
QUESTION_VALUE = b"state"


def state_headers(state: str) -> Headers:
    """The 204 answering a question: the path's state, never cached (section 12)."""
    return [
        ALLOW_ORIGIN,
        (b"piping-state", state.encode("ascii")),
        (b"access-control-expose-headers", b"Piping-State"),
        (b"cache-control", b"no-store"),
    ]


# Media types a browser would run as a document in our origin: rewritten to text/plain.
_DOCUMENT_TYPES: Final = frozenset(
    {b"text/html", b"application/xhtml+xml", b"image/svg+xml", b"text/xml", b"application/xml"}
)


def preflight_headers(request_headers: Iterable[tuple[bytes, bytes]]) -> Headers:
    """The answer to an OPTIONS request on any path (section 7)."""
    headers: Headers = [
        ALLOW_ORIGIN,
        (b"access-control-allow-methods", ALLOWED_METHODS),
        (b"access-control-allow-headers", b"Content-Type, Content-Disposition, X-Piping"),
    ]
    if any(k == b"access-control-request-private-network" and v == b"true" for k, v in request_headers):
        headers.append((b"access-control-allow-private-network", b"true"))
    headers += [
        (b"access-control-expose-headers", b"Access-Control-Allow-Headers"),
        (b"access-control-max-age", b"86400"),
    ]
    return headers


def safe_content_type(value: bytes) -> bytes:
    """Turn a document media type into text/plain, keeping its parameters (section 6)."""
    media_type, sep, params = value.partition(b";")
    if media_type.strip().lower() in _DOCUMENT_TYPES:
        return b"text/plain" + sep + params
    return value


def receiver_headers(
    *,
    content_type: bytes | None,
    content_length: int | None,
    content_disposition: bytes | None,
    x_piping: list[bytes],
) -> Headers:
    """The head of every receiver's response, from what the sender (or its form part) gave."""
    headers: Headers = []
    if content_length is not None:
        headers.append((b"content-length", b"%d" % content_length))
    if content_type is not None:
        headers.append((b"content-type", safe_content_type(content_type)))
    if content_disposition is not None:
        headers.append((b"content-disposition", content_disposition))
    for value in x_piping:
        headers.append((b"x-piping", value))
    headers.append(ALLOW_ORIGIN)
    if x_piping:
        headers.append((b"access-control-expose-headers", b"X-Piping"))
    headers += [
        (b"x-robots-tag", b"none"),
        # a reverse proxy must neither buffer nor cache the stream (beyond the reference): "private"
        # keeps shared caches from storing it, "no-cache" any cache from reusing it, "no-transform"
        # proxies from recompressing it. Not "no-store": Chromium reports a no-store response whose
        # body came in several pieces and was read with a stream reader as failed (net::ERR_ABORTED),
        # every byte received (issue 21 item 12, docs/browser-apps.md).
        (b"x-accel-buffering", b"no"),
        (b"cache-control", b"private, no-cache, no-transform"),
    ]
    return headers


# Names whose conventional spelling is not the capitalized words of the lowercase name.
_SPECIAL_NAMES: Final = {b"www-authenticate": b"WWW-Authenticate", b"etag": b"ETag", b"te": b"TE"}
_canonical: Final[dict[bytes, bytes]] = {}


def canonical_name(name: bytes) -> bytes:
    """How HTTP/1.x writes a lowercase header name: ``content-type`` -> ``Content-Type`` (memoized)."""
    known = _canonical.get(name)
    if known is None:
        known = _SPECIAL_NAMES.get(name) or b"-".join(word[:1].upper() + word[1:] for word in name.split(b"-"))
        if len(_canonical) < 1024:  # names come from clients too (X-Piping...): keep the memo bounded
            _canonical[name] = known
    return known


class _Date:
    """The last ``Date`` value and its second (an object's fields: compiled, they are read without a lookup)."""

    __slots__ = ("second", "value")

    def __init__(self) -> None:
        self.second = -1
        self.value = b""


_DATE: Final = _Date()


def http_date() -> bytes:
    """The ``Date`` of a response (RFC 9110 6.6.1), formatted at most once a second."""
    now = int(time.time())
    date = _DATE
    if now != date.second:
        date.second = now
        date.value = formatdate(now, usegmt=True).encode()
    return date.value


# RFC 9112 3.2 (Host) and RFC 9113 8.3.1 (:authority): uri-host [ ":" port ], from RFC 3986
# (IP-literal, IPv4address or reg-name; no userinfo)
_HOST: Final = re.compile(
    rb"(?:\[[0-9A-Za-z:._~!$&'()*+,;=-]+\]|(?:[0-9A-Za-z._~!$&'()*+,;=-]|%[0-9A-Fa-f]{2})*)(?::[0-9]*)?"
)


_host_checked: Final[dict[bytes, bool]] = {}


def valid_host(value: bytes) -> bool:
    """Whether a ``Host`` or ``:authority`` value is a host and optional port (an empty one is).

    Memoized (a server sees few hosts, and matching took a regular expression per request).
    """
    known = _host_checked.get(value)
    if known is None:
        known = _HOST.fullmatch(value.strip()) is not None
        if len(_host_checked) < 1024 and len(value) <= 255:  # values come from clients: the memo is bounded
            _host_checked[value] = known
    return known
