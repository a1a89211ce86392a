"""Start the listeners of one server process and run until told to stop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
from dataclasses import dataclass, field
from typing import Any

from .._runtime.collector import tune_gc
from .._runtime.malloc import tune_malloc
from ..http1.protocol import protocol_factory
from ..ops._config import Config
from ..ops._operator import Operator, on_signal
from ..relay._flow import Relay
from ._handover import Handover, Worker
from ._listeners import DEFAULT_BACKLOG, ListenError, announce, http_listener, remove_unix_socket, tcp_listener
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
    #: the accept queue's length of every listener (``--backlog``)
    backlog: int = DEFAULT_BACKLOG
    #: serve HTTP on this Unix socket instead of ``host``:``http_port`` (``--uds``)
    uds: str | None = None
    #: serve HTTP on this inherited listening socket instead (``--fd``, systemd socket activation)
    fd: int | None = None
    #: the operator's settings (auth, limits, logs, metrics...); None: the plain protocol
    config: Config | None = None
    #: the file ``config`` came from, watched for changes and reloaded on SIGHUP
    config_path: str | None = None
    #: the command-line flags that override the file, as dotted config keys (kept across reloads)
    overrides: dict[str, Any] = field(default_factory=dict)


class StartupError(Exception):
    """The server cannot start as configured (port taken, bad certificate...): a one-line reason."""


async def serve(options: ServerOptions, *, ready: asyncio.Event | None = None, worker: Worker | None = None) -> None:
    """Listen as ``options`` says and serve until cancelled or signalled.

    ``worker``: this process is one of ``--workers N``: it serves on the sockets it inherited and
    meets its siblings on the paths they own (see ``_handover.py``).
    """
    loop = asyncio.get_running_loop()
    config = options.config or Config()
    share = (worker.place.index, worker.place.count) if worker is not None else None
    operator = Operator(config, config_path=options.config_path, overrides=options.overrides, share=share)
    relay = Relay(hub=operator.hub)
    operator.install(relay)
    # the certificate is checked before anything listens: a bad one is the only line printed
    certificates = _load_certificate(options) if options.enable_https else None
    if certificates is not None:
        relay.https_port = options.https_port
    # metrics, JWKS keys and the config watcher are ready before the first request can come
    try:
        await operator.start()
    except OSError as exc:
        await operator.close()
        where = f"{config.metrics.host}:{config.metrics.port}"
        raise StartupError(f"cannot listen on {where} (metrics): {exc.strerror}") from exc
    servers: list[asyncio.Server] = []
    handover = Handover(worker.place, relay, worker.http_socket.family) if worker is not None else None
    listener: socket.socket | None = None
    try:
        if worker is not None and handover is not None:
            relay.hooks.forward = handover.forward
            await handover.start()
            worker_metrics = await _serve_worker_metrics(worker, operator)
            if worker_metrics is not None:
                servers.append(worker_metrics)  # kept: uvloop closes a server nobody refers to
            servers.append(await loop.create_server(handover.door, sock=worker.http_socket, backlog=options.backlog))
        else:
            listener = http_listener(options.host, options.http_port, options.backlog, uds=options.uds, fd=options.fd)
            servers.append(
                await loop.create_server(protocol_factory(relay, loop), sock=listener, backlog=options.backlog)
            )
    except ListenError as exc:
        await operator.close()
        raise StartupError(str(exc)) from exc
    except OSError as exc:  # a worker's internal sockets (the hand-over's, its figures')
        await operator.close()
        raise StartupError(f"cannot listen on {options.host or '*'}:{options.http_port}: {exc.strerror}") from exc
    tls = None
    https_listener: socket.socket | None = None
    if certificates is not None:
        if worker is None:
            assert options.https_port is not None
            try:
                https_listener = tcp_listener(options.host, options.https_port, options.backlog)
            except ListenError as exc:
                await operator.close()
                raise StartupError(str(exc)) from exc
        tls = await _start_https(
            options, relay, servers, certificates, worker.https_socket if worker else https_listener
        )
    if listener is not None:  # the supervisor says where its workers listen
        announce(listener, https_listener, "1 process (--workers 1)")
    stop = asyncio.Event()
    force = asyncio.Event()
    signalled = on_signal(stop, force)
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, signalled)
    # no SIGHUP on Windows: the config file is still watched there
    with contextlib.suppress(NotImplementedError, RuntimeError, AttributeError):
        loop.add_signal_handler(signal.SIGHUP, operator.reload, "SIGHUP")
    if ready is not None:
        ready.set()
    try:
        await stop.wait()
    finally:
        # stop accepting first; then (on a signal, not on a cancellation) let running transfers finish
        for server in servers:
            server.close()
        if listener is not None:
            remove_unix_socket(options.uds if options.fd is None else None)
        if handover is not None:
            handover.close()
        if tls is not None:
            await tls.stop_watching()
        if stop.is_set():
            await operator.drain(operator.config.server.shutdown_grace, force)
        await operator.close()


def _load_certificate(options: ServerOptions) -> CertificateStore:
    if options.https_port is None or not options.crt_path or not options.key_path:
        raise StartupError("--enable-https needs --https-port, --crt-path and --key-path")
    try:
        return CertificateStore(options.crt_path, options.key_path)
    except CertificateError as exc:
        raise StartupError(str(exc)) from exc


async def _start_https(
    options: ServerOptions,
    relay: Relay,
    servers: list[asyncio.Server],
    store: CertificateStore,
    sock: socket.socket | None,
) -> CertificateStore:
    """The HTTPS listener beside the HTTP one (h2 and HTTP/1.1 by ALPN), its certificate watched for changes."""
    assert options.https_port is not None
    try:
        server = await start_https(relay, options.host, options.https_port, store, sock=sock, backlog=options.backlog)
    except OSError as exc:
        raise StartupError(f"cannot listen on {options.host or '*'}:{options.https_port}: {exc.strerror}") from exc
    servers.append(server)
    return store


async def _serve_worker_metrics(worker: Worker, operator: Operator) -> asyncio.Server | None:
    """A worker's figures, for its supervisor to sum (``--workers`` with ``--metrics-port``)."""
    metrics = operator.metrics
    if metrics is None:
        return None

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(metrics.render())
        with contextlib.suppress(ConnectionError):
            await writer.drain()
        writer.close()

    path = worker.place.socket_path("metrics")
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    return await asyncio.start_unix_server(answer, path)


def run(options: ServerOptions, *, worker: Worker | None = None) -> None:
    """Run ``serve`` on uvloop when it is installed, plain asyncio otherwise."""
    tune_malloc()  # read buffers from the heap, not fresh pages each time (_malloc.py)
    tune_gc()
    try:
        import uvloop
    except ImportError:
        asyncio.run(serve(options, worker=worker))
    else:
        uvloop.run(serve(options, worker=worker))
