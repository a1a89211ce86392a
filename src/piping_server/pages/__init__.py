"""The reserved-path pages: ``/``, ``/noscript``, ``/version``, ``/help``, ``/favicon.ico``, ``/robots.txt``.

Pure functions, no I/O: the HTTP layer asks :func:`is_reserved`, then sends what
:func:`render_page` returns (adding ``Content-Length``, and dropping the body for ``HEAD``).

Everything in ``__all__`` is the public API of this package.
"""

from __future__ import annotations

from ._page import Page
from ._render import RESERVED_PATHS, is_reserved, render_page

__all__ = ["RESERVED_PATHS", "Page", "is_reserved", "render_page"]

# Show the public location in reprs and docs, as httpx does.
for _public in (Page, is_reserved, render_page):
    _public.__module__ = __name__
del _public
