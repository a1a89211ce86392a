"""Log lines: the server's own messages and one access line per finished request, plain or JSON.

An access line has the method, the path (normalised, *without* the query string, which is where
a careless client might put a secret), the status, the bytes read and written, the duration, the
client's address, the role and the transport. Never a body, never a header: so never a password
or a token. ``--log-format json`` writes one JSON object per line, for log shippers.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

from ..relay._hooks import AccessRecord, RequestView

ACCESS_LOGGER = "piping_server.access"
PLAIN_FORMAT = "%(asctime)s %(levelname)s %(message)s"
#: The fields an access record adds to a JSON line, in this order.
ACCESS_FIELDS = ("method", "path", "status", "bytes_in", "bytes_out", "duration_s", "client", "role", "transport")

access_log = logging.getLogger(ACCESS_LOGGER)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, and the access fields when present."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        access = getattr(record, "access", None)
        if isinstance(access, dict):
            entry.update(access)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False, separators=(",", ":"))


def configure_logging(*, level: str = "info", fmt: str = "plain") -> None:
    """(Re)configure the root logger: one stderr handler, the chosen level and format."""
    root = logging.getLogger()
    handler: logging.Handler | None = next((h for h in root.handlers if getattr(h, "_piping", False)), None)
    if handler is None:
        for old in list(root.handlers):
            root.removeHandler(old)
        handler = logging.StreamHandler(sys.stderr)
        handler._piping = True  # type: ignore[attr-defined]  # ours, to be reconfigured on reload
        root.addHandler(handler)
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(PLAIN_FORMAT))
    root.setLevel(level.upper())


def _printable(text: str) -> str:
    # a path is whatever bytes the client sent (latin-1): keep one record on one line
    return text if text.isprintable() else text.encode("unicode_escape").decode("ascii")


def log_live_join(peer: object) -> None:
    """An access line as a receiver joins a live transfer (docs/protocol.md section 11); ``peer`` is its endpoint."""
    view = getattr(peer, "view", None)
    if view is None or not access_log.isEnabledFor(logging.INFO):
        return
    request: RequestView = view()
    fields = {
        "method": request.method,
        "path": _printable(request.path),
        "client": request.client,
        "role": "live-join",
        "transport": request.transport + ("+tls" if request.is_tls else ""),
    }
    access_log.info(
        '%s "%s %s" joined live %s',
        fields["client"] or "-",
        fields["method"],
        fields["path"],
        fields["transport"],
        extra={"access": fields},
    )


def log_access(record: AccessRecord) -> None:
    """The ``on_access`` hook of the access log."""
    if not access_log.isEnabledFor(logging.INFO):
        return
    request = record.request
    fields = {
        "method": request.method,
        "path": _printable(request.path),
        "status": record.status,
        "bytes_in": record.bytes_in,
        "bytes_out": record.bytes_out,
        "duration_s": round(record.duration_s, 6),
        "client": request.client,
        "role": record.role,
        "transport": request.transport + ("+tls" if request.is_tls else ""),
    }
    access_log.info(
        '%s "%s %s" %d in=%d out=%d %.3fs %s %s',
        fields["client"] or "-",
        fields["method"],
        fields["path"],
        record.status,
        record.bytes_in,
        record.bytes_out,
        record.duration_s,
        record.role,
        fields["transport"],
        extra={"access": fields},
    )
