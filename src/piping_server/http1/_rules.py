"""What RFC 9112 requires of a request head beyond what httptools checks (sections 2.3, 3.2, 6.1).

httptools (llhttp) refuses malformed request lines and field lines (obs-fold, whitespace before
the colon, bare CR, bad tokens); it accepts, as a lenient parser, a few heads that a server MUST
refuse: HTTP/0.9 and 2.x request lines, an HTTP/1.1 request without exactly one valid ``Host``,
and an HTTP/1.0 request with ``Transfer-Encoding``. ``check_head`` refuses those; the body
framing rules (section 6.3) are ``_body.reader_for``'s.
"""

from __future__ import annotations

from ..core import ProtocolError
from ..relay._headers import valid_host


def check_head(version: str, headers: list[tuple[bytes, bytes]]) -> None:
    """Refuse a request head that breaks a MUST of RFC 9112 which the parser let through.

    Raises:
        ProtocolError: with the status to answer (400, or 505 for a major version other than 1).
    """
    if version == "0.9":
        raise ProtocolError("HTTP/0.9 requests are not supported")
    if not version.startswith("1."):
        raise ProtocolError(f"HTTP/{version} is not supported on this connection", status_hint=505)
    hosts = [value for name, value in headers if name == b"host"]
    if len(hosts) > 1:
        raise ProtocolError("more than one Host header")
    if hosts and not valid_host(hosts[0]):
        raise ProtocolError("invalid Host header")
    if not hosts and version == "1.1":
        raise ProtocolError("an HTTP/1.1 request needs a Host header")
    if version == "1.0" and any(name == b"transfer-encoding" for name, _ in headers):
        # RFC 9112 6.1: the framing of such a message is faulty, whatever else it says
        raise ProtocolError("Transfer-Encoding in an HTTP/1.0 request")
