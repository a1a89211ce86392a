"""The value every reserved-path renderer returns, and the headers the pages share."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Page", "CONTENT_TYPE_HTML", "CONTENT_TYPE_TEXT", "ALLOW_ANY_ORIGIN"]

# Exactly the reference's values (docs/protocol.md section 2): no charset parameter. The HTML pages
# declare <meta charset="utf-8"> and the text bodies are ASCII apart from what a Host header holds.
CONTENT_TYPE_HTML = (b"content-type", b"text/html")
CONTENT_TYPE_TEXT = (b"content-type", b"text/plain")
ALLOW_ANY_ORIGIN = (b"access-control-allow-origin", b"*")


@dataclass(frozen=True, slots=True, kw_only=True)
class Page:
    """A complete response to a reserved path.

    The HTTP layer adds ``Content-Length`` itself and drops ``body`` for ``HEAD``; ``headers`` is
    a fresh list on every render, so the caller may append to it.
    """

    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes
