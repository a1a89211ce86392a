"""The listening sockets (TCP, a Unix socket, an inherited descriptor) and the start-up lines that name them.

Every listener is a socket made here and handed to ``loop.create_server(sock=...)`` with the same
``--backlog``: asyncio (and uvloop) call ``listen()`` again on a socket they are given, with their
own default of 100 unless told, so the backlog is passed at both places.
"""

from __future__ import annotations

import _socket
import contextlib
import logging
import os
import socket
import stat

log = logging.getLogger("piping_server")

#: The accept queue's length by default (the kernel caps it at net.core.somaxconn).
DEFAULT_BACKLOG = 1024


class AcceptedSocket(socket.socket):
    """An accepted connection's socket handed to ``connect_accepted_socket``, which reads its family and type.

    ``socket.socket`` converts both to enums in Python on every read; here they are the plain ints of
    ``_socket.socket``'s own descriptors (a few microseconds per moved connection, ``--workers``).
    """

    __slots__ = ()
    family = _socket.socket.family  # type: ignore[assignment]
    type = _socket.socket.type  # type: ignore[assignment]


class ListenError(Exception):
    """A listener cannot be made: a one-line reason."""


def tcp_listener(host: str | None, port: int, backlog: int) -> socket.socket:
    """One listening TCP socket (no host: every interface, IPv6 and IPv4 on one socket where possible)."""
    try:
        if not host:
            if socket.has_dualstack_ipv6():
                sock = socket.create_server(("::", port), family=socket.AF_INET6, backlog=backlog, dualstack_ipv6=True)
            else:
                sock = socket.create_server(("0.0.0.0", port), backlog=backlog)
        else:
            family, _, _, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
            sock = socket.create_server(address, family=family, backlog=backlog)
    except OSError as exc:
        # (create_server appends the address to strerror: the errno's own text is the one line we print)
        reason = os.strerror(exc.errno) if exc.errno else str(exc)
        raise ListenError(f"cannot listen on {host or '*'}:{port}: {reason}") from exc
    sock.setblocking(False)
    return sock


def unix_listener(path: str, backlog: int) -> socket.socket:
    """A listening Unix socket at ``path``; a stale socket file there (nobody listening) is replaced.

    Anything else at ``path`` (a regular file, a socket a live server listens on) is left alone and refused.
    """
    with contextlib.suppress(FileNotFoundError):
        if not stat.S_ISSOCK(os.lstat(path).st_mode):
            raise ListenError(f"cannot listen on unix:{path}: the path exists and is not a socket")
        if _someone_listens(path):
            raise ListenError(f"cannot listen on unix:{path}: another process listens there")
        os.unlink(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(path)
        sock.listen(backlog)
    except OSError as exc:
        sock.close()
        raise ListenError(f"cannot listen on unix:{path}: {exc.strerror or exc}") from exc
    sock.setblocking(False)
    return sock


def _someone_listens(path: str) -> bool:
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.settimeout(1.0)
        probe.connect(path)
    except OSError:
        return False
    finally:
        probe.close()
    return True


def inherited_listener(fd: int, backlog: int) -> socket.socket:
    """The listening stream socket at descriptor ``fd`` (systemd socket activation, a supervisor's socket)."""
    try:
        sock = socket.socket(fileno=fd)
    except OSError as exc:
        raise ListenError(f"--fd {fd}: not an open socket ({exc.strerror or exc})") from exc
    if sock.type != socket.SOCK_STREAM or sock.family not in (socket.AF_INET, socket.AF_INET6, socket.AF_UNIX):
        sock.detach()
        raise ListenError(f"--fd {fd}: not a TCP or Unix stream socket")
    if not sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
        sock.detach()
        raise ListenError(f"--fd {fd}: the socket is not listening (systemd: a .socket unit with ListenStream=)")
    sock.listen(backlog)  # the same queue length as every other listener
    sock.setblocking(False)
    return sock


def http_listener(host: str | None, port: int, backlog: int, *, uds: str | None, fd: int | None) -> socket.socket:
    """The cleartext listener (HTTP/1.x and h2c): ``--fd``, else ``--uds``, else TCP on ``--host``/``--http-port``."""
    if fd is not None:
        return inherited_listener(fd, backlog)
    if uds is not None:
        return unix_listener(uds, backlog)
    return tcp_listener(host, port, backlog)


def remove_unix_socket(path: str | None) -> None:
    """Remove the socket file ``--uds`` made (an inherited socket's file belongs to whoever made it)."""
    if path:
        with contextlib.suppress(OSError):
            os.unlink(path)


def address(sock: socket.socket, scheme: str) -> str:
    """Where ``sock`` listens, as a URL (``http://[::]:8080``) or ``unix:/run/piping.sock``."""
    name = sock.getsockname()
    if sock.family == socket.AF_UNIX:
        return f"unix:{name if isinstance(name, str) else name.decode(errors='replace')}"
    host, port = name[:2]
    return f"{scheme}://{f'[{host}]' if ':' in host else host}:{port}"


def url_to_open(sock: socket.socket, scheme: str) -> str:
    """The URL a person on this machine opens: ``http://localhost:8080/`` for every interface."""
    host, port = sock.getsockname()[:2]
    if host in ("0.0.0.0", "::"):
        host = "localhost"
    return f"{scheme}://{f'[{host}]' if ':' in host else host}:{port}/"


def announce(http: socket.socket, https: socket.socket | None, processes: str) -> None:
    """The start-up lines: where it listens, what to open, how many processes, how to stop."""
    log.info("listening on %s", address(http, "http"))
    if https is not None:
        log.info("listening on %s", address(https, "https"))
    if http.family == socket.AF_UNIX:
        where = address(http, "http")[len("unix:") :]
        opens = [f"curl --unix-socket {where} http://localhost/help"]
    else:
        opens = [f"{url_to_open(http, 'http')} in a browser ({url_to_open(http, 'http')}help: the curl commands)"]
    if https is not None:
        opens.append(url_to_open(https, "https"))
    log.info("open %s", " or ".join(opens))
    log.info("%s. Press Ctrl-C to stop", processes)
