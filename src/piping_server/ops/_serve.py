"""Start the listeners of one server process and run until told to stop."""

from __future__ import annotations

import asyncio
import logging
import signal
from dataclasses import dataclass

from ..flow import Relay
from ..http1.protocol import Http1Protocol

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


def run(options: ServerOptions) -> None:
    """Run ``serve`` on uvloop when it is installed, plain asyncio otherwise."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(serve(options))
    else:
        uvloop.run(serve(options))
