"""Start the listeners of one server process and run until told to stop."""

from __future__ import annotations

import asyncio
import logging
import signal
from dataclasses import dataclass

from ..flow import Relay
from ..http1.protocol import Http1Protocol
from ._tls import CertificateError, CertificateStore, start_https

log = logging.getLogger("piping_server")


@dataclass(frozen=True, slots=True, kw_only=True)
class ServerOptions:
    """What the command line (or a config file) decides about the listeners."""

    host: str | None = None
    http_port: int = 8080
    enable_https: bool = False
    https_port: int | None = None
    crt_path: str | None = None
    key_path: str | None = None


class StartupError(Exception):
    """The server cannot start as configured (port taken, bad certificate...): a one-line reason."""


async def serve(options: ServerOptions, *, ready: asyncio.Event | None = None) -> None:
    """Listen as ``options`` says and serve until cancelled or signalled."""
    loop = asyncio.get_running_loop()
    relay = Relay()
    servers: list[asyncio.Server] = []
    try:
        servers.append(
            await loop.create_server(
                lambda: Http1Protocol(relay), options.host, options.http_port, reuse_address=True, backlog=1024
            )
        )
    except OSError as exc:
        raise StartupError(f"cannot listen on {options.host or '*'}:{options.http_port}: {exc.strerror}") from exc
    for server in servers:
        for sock in server.sockets:
            log.info("listening on http://%s:%d", *sock.getsockname()[:2])
    tls = await _start_https(options, relay, servers) if options.enable_https else None
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):
            pass
    if ready is not None:
        ready.set()
    try:
        await stop.wait()
    finally:
        for server in servers:
            server.close()
        if tls is not None:
            await tls.stop_watching()


async def _start_https(options: ServerOptions, relay: Relay, servers: list[asyncio.Server]) -> CertificateStore:
    """The HTTPS listener beside the HTTP one (h2 and HTTP/1.1 by ALPN), its certificate watched for changes."""
    if options.https_port is None or not options.crt_path or not options.key_path:
        raise StartupError("--enable-https needs --https-port, --crt-path and --key-path")
    try:
        store = CertificateStore(options.crt_path, options.key_path)
    except CertificateError as exc:
        raise StartupError(str(exc)) from exc
    try:
        server = await start_https(relay, options.host, options.https_port, store)
    except OSError as exc:
        raise StartupError(f"cannot listen on {options.host or '*'}:{options.https_port}: {exc.strerror}") from exc
    servers.append(server)
    for sock in server.sockets:
        log.info("listening on https://%s:%d", *sock.getsockname()[:2])
    return store


def run(options: ServerOptions) -> None:
    """Run ``serve`` on uvloop when it is installed, plain asyncio otherwise."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(serve(options))
    else:
        uvloop.run(serve(options))
