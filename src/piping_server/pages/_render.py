"""Which paths are reserved, and the one entry point that renders them (docs/protocol.md section 2)."""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache

from ..core import RESERVED_PATHS
from ..core import is_reserved as _core_is_reserved
from ._html import render_index, render_noscript, requested_libs
from ._page import Page
from ._text import render_help, render_version

__all__ = ["RESERVED_PATHS", "is_reserved", "render_page"]


def _canonical(path: str) -> str:
    # "An empty path is `/`" (docs/protocol.md section 2), e.g. from an absolute-form request target.
    return path or "/"


def is_reserved(path: str) -> bool:
    """Whether ``path`` (normalised, without its query) is a page rather than a place to send to."""
    return _core_is_reserved(_canonical(path))


def _favicon() -> Page:
    # 204 with nothing at all: browsers stop asking, and no icon is shipped.
    return Page(status=204, headers=[], body=b"")


def _robots() -> Page:
    return Page(status=404, headers=[], body=b"")


#: Distinct ``/`` pages kept rendered: one per Host header (and ``lib`` choice) seen lately. A client
#: inventing Host values only cycles this bound; everyone else gets the same bytes without a render.
INDEX_CACHE_SIZE = 8


@lru_cache(maxsize=INDEX_CACHE_SIZE)
def _cached_index(base_url: str, libs: tuple[str, ...], https_port: int | None) -> Page:
    return render_index(base_url=base_url, query="lib=" + ",".join(libs) if libs else "", https_port=https_port)


def _index(base_url: str, query: str, https_port: int | None) -> Page:
    # ~150 KB per render otherwise (pipelined "GET /" floods): built once, shared, headers copied (see Page)
    page = _cached_index(base_url, tuple(requested_libs(query)), https_port)
    return Page(status=page.status, headers=list(page.headers), body=page.body)


_Renderer = Callable[[str, str, int | None], Page]  # (base_url, query, https_port) -> Page

_RENDERERS: dict[str, _Renderer] = {
    "/": _index,
    "/noscript": lambda base_url, query, https_port: render_noscript(base_url=base_url, query=query),
    "/version": lambda base_url, query, https_port: render_version(),
    "/help": lambda base_url, query, https_port: render_help(base_url=base_url),
    "/favicon.ico": lambda base_url, query, https_port: _favicon(),
    "/robots.txt": lambda base_url, query, https_port: _robots(),
}
assert frozenset(_RENDERERS) == RESERVED_PATHS, "every reserved path needs exactly one renderer"


def render_page(path: str, *, base_url: str, query: str = "", https_port: int | None = None) -> Page:
    """The response to ``GET`` of a reserved path.

    Args:
        path: the normalised path (dot segments removed, no query); ``""`` counts as ``/``.
        base_url: scheme and host as the client reached us, e.g. ``"https://example.com"``; the
            HTTP layer works it out (TLS or ``X-Forwarded-Proto``, and ``Host``).
        query: the raw query string without ``?`` (``/noscript`` reads it, and ``/`` its ``lib``).
        https_port: the server's HTTPS port, if it has one (``/`` links there when reached over HTTP).

    Returns:
        A fresh :class:`Page`; for ``HEAD`` the caller sends its status and headers only.

    Raises:
        ValueError: ``path`` is not reserved (check :func:`is_reserved` first).
    """
    renderer = _RENDERERS.get(_canonical(path))
    if renderer is None:
        raise ValueError(f"not a reserved path: {path!r}")
    return renderer(base_url, query, https_port)
