"""The client behind a proxy: whom to believe (``--forwarded-allow-ips``) and what they say.

A proxy in front (deploy/nginx.conf, deploy/haproxy.cfg) connects from its own address, so the
connection's peer is the proxy, not the client. The proxy names the client in ``X-Forwarded-For``
(and the scheme the client used in ``X-Forwarded-Proto``), or in RFC 7239's ``Forwarded``. Anyone
can write those headers, so they are read only on a connection whose peer is a trusted proxy, as
uvicorn and gunicorn do, with the same flag name and the same default (``127.0.0.1``).

Each proxy appends the address it got the request from, so the list reads client first, nearest
proxy last; only the entries our trusted proxies appended are sure. The client is therefore the
rightmost entry that is not itself a trusted proxy (RFC 7239 section 8.1): whatever a client wrote
to the left of it is ignored. ``X-Forwarded-For`` wins over ``Forwarded`` when both are present;
a proxy should set one and drop the other (the files in deploy/ do).
"""

from __future__ import annotations

import ipaddress
import re

from ._headers import Headers

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

#: uvicorn's and gunicorn's default: a proxy on the same machine.
DEFAULT_FORWARDED_ALLOW_IPS = "127.0.0.1"
#: What a hop that is not an IP address (RFC 7239 "unknown", an obfuscated "_node") may look like to be
#: kept as the client's name in logs and per-client limits; anything else becomes "unknown".
_TOKEN = re.compile(r"[A-Za-z0-9._:-]{1,64}")
#: One ``name=value`` pair of a Forwarded header and the separator after it (RFC 7239 section 4).
_PAIR = re.compile(r'\s*([!#$%&\'*+.^_`|~0-9A-Za-z-]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^;,\s]*)\s*([;,]|$)')


class TrustedProxies:
    """The peers whose forwarding headers are believed: IP addresses and networks, or ``*`` for all."""

    __slots__ = ("spec", "_any", "_networks")

    def __init__(self, spec: str) -> None:
        """Parse a comma-separated list such as ``"127.0.0.1, 10.0.0.0/8, ::1"``; ``""`` trusts no one.

        Raises:
            ValueError: an entry is neither ``*``, an IP address nor a network (the message names it).
        """
        self.spec = spec
        self._any = False
        networks: list[Network] = []
        for raw in spec.split(","):
            entry = raw.strip()
            if not entry:
                continue
            if entry == "*":
                self._any = True
                continue
            try:
                networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                raise ValueError(f"not an IP address or network: {entry!r}") from None
        self._networks = tuple(networks)

    def __bool__(self) -> bool:
        return self._any or bool(self._networks)

    def __repr__(self) -> str:
        return f"TrustedProxies({self.spec!r})"

    def trusts(self, address: str | Address | None) -> bool:
        """Whether ``address`` (a peer's, or a hop of a forwarding header) is a trusted proxy."""
        if self._any:
            return True
        ip = _ip(address) if isinstance(address, str) or address is None else address
        return ip is not None and any(ip in network for network in self._networks)


def forwarded_origin(peer: str, is_tls: bool, headers: Headers, trusted: TrustedProxies) -> tuple[str, bool]:
    """The client's address and whether it used TLS, as the connection and a trusted proxy tell.

    Args:
        peer: the connection's peer address.
        is_tls: whether the connection itself is TLS.
        headers: the request's headers (lowercase names).
        trusted: the proxies whose headers are believed.

    Returns:
        ``(peer, is_tls)`` unless the peer is trusted and names the client; then the client's address
        (an IP address in its canonical form, or the proxy's token for an unknown one) and scheme.
    """
    if not trusted.trusts(peer):
        return peer, is_tls
    hops: list[str] = []
    protos: list[str] = []
    for name, value in headers:
        if name == b"x-forwarded-for":
            hops += _list(value)
        elif name == b"x-forwarded-proto":
            protos += _list(value)
    if hops:
        index = _client_index(hops, trusted)
        # the proto list lines up with the hops when every proxy appended to both; else the nearest proxy's
        proto = protos[index] if len(protos) == len(hops) else (protos[-1] if protos else None)
    else:
        elements = [pairs for name, value in headers if name == b"forwarded" for pairs in _forwarded(value)]
        elements = [pairs for pairs in elements if "for" in pairs]
        if not elements:
            return peer, _scheme_is_tls(protos[-1]) if protos else is_tls
        hops = [pairs["for"] for pairs in elements]
        index = _client_index(hops, trusted)
        proto = elements[index].get("proto")
    return _client_name(hops[index]), is_tls if proto is None else _scheme_is_tls(proto)


def _client_index(hops: list[str], trusted: TrustedProxies) -> int:
    """The rightmost hop that is not a trusted proxy; the leftmost when all are."""
    for index in range(len(hops) - 1, -1, -1):
        ip = _ip(hops[index])
        if ip is None or not trusted.trusts(ip):
            return index
    return 0


def _client_name(hop: str) -> str:
    ip = _ip(hop)
    if ip is not None:
        return str(ip)
    return hop if _TOKEN.fullmatch(hop) else "unknown"


def _scheme_is_tls(proto: str) -> bool:
    return proto.strip().lower() in ("https", "wss")


def _list(value: bytes) -> list[str]:
    return [item.strip() for item in value.decode("latin-1").split(",") if item.strip()]


def _ip(text: str | None) -> Address | None:
    """An address from a peer name or a hop: ``1.2.3.4``, ``1.2.3.4:80``, ``::1``, ``[::1]:80``."""
    if not text:
        return None
    if text.startswith("["):
        text = text[1:].partition("]")[0]
    elif text.count(":") == 1:
        text = text.partition(":")[0]  # IPv4 with a port
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return None
    # a dual-stack listener reports IPv4 peers as ::ffff:a.b.c.d
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def _forwarded(value: bytes) -> list[dict[str, str]]:
    """The elements of one ``Forwarded`` header value, each as lowercase parameter names to values."""
    text = value.decode("latin-1")
    elements: list[dict[str, str]] = []
    current: dict[str, str] = {}
    at = 0
    while at < len(text):
        match = _PAIR.match(text, at)
        if match is None:
            break  # malformed from here on: keep what came before
        name, raw, separator = match.groups()
        if raw.startswith('"'):
            raw = re.sub(r"\\(.)", r"\1", raw[1:-1])
        current.setdefault(name.lower(), raw)
        at = match.end()
        if separator != ";":
            elements.append(current)
            current = {}
        if not separator:
            break
    if current:
        elements.append(current)
    return elements
