"""Turn what the user typed (a full URL or a bare path plus a server) into the URL to use."""

from __future__ import annotations

import os
from urllib.parse import SplitResult, quote, urlsplit, urlunsplit

from ._errors import UsageError

SERVER_ENV = "PIPING_SERVER"


def resolve_url(target: str, server: str | None = None, n: int | None = None, *, live: bool = False) -> str:
    """Return an absolute http(s) URL for ``target``.

    ``target`` is either a full URL or a path (``mypath``, ``/a/b``) that is joined to ``server``
    (default: the ``PIPING_SERVER`` environment variable). ``n`` adds the ``n=`` query parameter;
    ``live`` the ``live`` one (a live transfer, docs/protocol.md section 11).
    """
    if "://" in target:
        parts = urlsplit(target)
    else:
        base = server or os.environ.get(SERVER_ENV)
        if not base:
            raise UsageError(
                f"'{target}' is not a URL: give a full URL, or name the server with --server or ${SERVER_ENV}"
            )
        if "://" not in base:
            base = "http://" + base
        b = urlsplit(base)
        path, _, query = target.partition("?")
        # Keep characters that are legal in a path; escape spaces and the like.
        joined = b.path.rstrip("/") + "/" + quote(path.lstrip("/"), safe="/%:@!$&'()*+,;=-._~")
        parts = SplitResult(b.scheme, b.netloc, joined, query, "")
    if parts.scheme not in ("http", "https"):
        raise UsageError(f"unsupported URL scheme '{parts.scheme}' (use http or https)")
    if not parts.hostname:
        raise UsageError(f"no host in URL '{target}'")
    query = parts.query
    if n is not None:
        kept = [q for q in query.split("&") if q and not q.startswith("n=")]
        query = "&".join([*kept, f"n={n}"])
    if live and not any(q == "live" or q.startswith("live=") for q in query.split("&")):
        query = "&".join([q for q in query.split("&") if q] + ["live"])
    return urlunsplit((parts.scheme, parts.netloc, parts.path or "/", query, ""))
