"""Path and query rules of the protocol (docs/protocol.md section 1 and 4), free of any HTTP library."""

from __future__ import annotations

import re
from typing import Final

_LEADING_INT: Final = re.compile(r"[ \t\n\r\f\v]*([+-]?[0-9]+)")


def split_target(target: str) -> tuple[str, str]:
    """Split a request target into its normalised path and its raw query string.

    Paths are compared exactly as they arrive, after removing dot segments (RFC 3986 5.2.4);
    percent escapes are not decoded. An absolute-form target (``http://host/p``) keeps its path.
    """
    path, _, query = target.partition("?")
    path, _, _fragment = path.partition("#")
    if "://" in path and not path.startswith("/"):
        # absolute-form: drop the scheme and authority (proxies send it)
        rest = path.split("://", 1)[1]
        slash = rest.find("/")
        path = rest[slash:] if slash >= 0 else "/"
    return remove_dot_segments(path), query


def remove_dot_segments(path: str) -> str:
    """RFC 3986 section 5.2.4, so that ``/a/../b`` and ``/b`` are the same path."""
    if not path:
        return "/"
    if "." not in path:
        return path
    output: list[str] = []
    segments = path.split("/")
    for i, segment in enumerate(segments):
        last = i == len(segments) - 1
        if segment == ".":
            if last:
                output.append("")
        elif segment == "..":
            if len(output) > 1:
                output.pop()
            if last:
                output.append("")
        else:
            output.append(segment)
    result = "/".join(output)
    if not result.startswith("/"):
        result = "/" + result
    return result


def query_param(query: str, name: str) -> str | None:
    """The first value of ``name`` in a raw query string, as URLSearchParams.get() gives it."""
    if not query:
        return None
    from urllib.parse import unquote_plus

    for pair in query.split("&"):
        key, _, value = pair.partition("=")
        if unquote_plus(key) == name:
            return unquote_plus(value)
    return None


def parse_n(raw: str | None) -> int | None:
    """Read ``n`` like JavaScript's ``parseInt(s, 10)``: leading digits count; ``None`` when none.

    A missing parameter means one receiver.
    """
    if raw is None:
        return 1
    match = _LEADING_INT.match(raw)
    if match is None:
        return None
    return int(match.group(1))
