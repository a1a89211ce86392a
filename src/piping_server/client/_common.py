"""Shared pieces of the sender and the receiver: headers, file names, the folder marker."""

from __future__ import annotations

import os
import re
from urllib.parse import quote, unquote, urlsplit

from ..core import is_reserved, remove_dot_segments
from ._errors import UsageError

__all__ = [
    "TAR_MARKER",
    "check_transfer_path",
    "content_disposition",
    "is_marked",
    "is_tar",
    "parse_filename",
    "safe_filename",
]

# Sent as ``X-Piping: tar`` (the server forwards X-Piping headers to receivers): the body is a folder
# or several files as one tar, to be unpacked. The Content-Type alone is not enough: a plain
# ``backup.tar`` sent as one file must arrive as that file.
TAR_MARKER = "tar"


def is_marked(x_piping_values: list[str], marker: str) -> bool:
    """Whether one of the ``X-Piping`` header values holds ``marker`` (values are comma-separated tokens)."""
    return any(marker in (t.strip() for t in v.split(",")) for v in x_piping_values)


def is_tar(x_piping_values: list[str]) -> bool:
    return is_marked(x_piping_values, TAR_MARKER)


def content_disposition(filename: str) -> str:
    """``attachment`` with an ASCII ``filename`` (curl ``-J``) and the exact UTF-8 name in ``filename*``.

    Raw UTF-8 in ``filename`` does not survive every server (Node re-encodes header values as latin-1).
    """
    ascii_name = "".join(c if 32 <= ord(c) < 127 and c not in '"\\' else "_" for c in filename)
    return f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(filename, safe='')}"


def parse_filename(header: str | None) -> str | None:
    """The file name of a Content-Disposition header (``filename*`` first), not yet sanitized."""
    if not header:
        return None
    m = re.search(r"filename\*\s*=\s*([^';]*)'[^']*'([^;]+)", header, re.IGNORECASE)
    if m:
        try:
            return unquote(m.group(2).strip(), encoding=m.group(1) or "utf-8", errors="strict")
        except (UnicodeDecodeError, LookupError):
            pass
    m = re.search(r'filename\s*=\s*"((?:[^"\\]|\\.)*)"', header, re.IGNORECASE) or re.search(
        r"filename\s*=\s*([^;]+)", header, re.IGNORECASE
    )
    if not m:
        return None
    name = re.sub(r"\\(.)", r"\1", m.group(1).strip())
    try:  # the header was read as latin-1; senders often put raw UTF-8 there
        return name.encode("latin-1").decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        return name


def safe_filename(name: str | None, default: str = "piping-download") -> str:
    """Reduce a name chosen by the sender to a plain file name in the destination folder."""
    if not name:
        return default
    base = os.path.basename(name.replace("\\", "/")).strip().replace("\0", "")
    if base in ("", ".", ".."):
        return default
    return base[:255]


def check_transfer_path(url: str, typed: str) -> None:
    """Refuse a URL whose path is one of the server's pages (``/``, ``/help`` ...): no transfer happens there.

    A receiver would get the page's HTML and succeed (docs/protocol.md section 2); a tunnel would carry it.
    """
    if is_reserved(remove_dot_segments(urlsplit(url).path or "/")):
        raise UsageError(f"'{typed}' is a page of the server, not a transfer path")
