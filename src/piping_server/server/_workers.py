"""``--workers N``: one supervisor and N worker processes serving the same ports.

The supervisor binds the listening sockets once and forks the workers, which inherit them (so a
worker that dies loses no queued connection: the others keep accepting from the same queue). Each
path has an owner worker, and the workers bring every request to its owner (``_handover.py``).

The supervisor:

* restarts a worker that dies: only that worker's transfers fail, cut (docs/protocol.md section 8);
* passes SIGHUP (reload the config) on to every worker, and SIGTERM/SIGINT (stop, letting running
  transfers finish within the shutdown grace; a second one cuts them), then exits when all are done;
* serves ``--metrics-port``: every worker's figures summed, and ``/healthz`` answering 200 only while
  every worker is up.

Workers are forked from the supervisor, which runs no thread: each one starts its own event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import dataclasses
import logging
import os
import shutil
import signal
import socket
import tempfile
import time
from collections.abc import Callable

from ..ops._config import Config
from ._handover import Worker, WorkerPlace
from ._listeners import ListenError, announce, http_listener, remove_unix_socket, tcp_listener
from ._serve import ServerOptions, StartupError, _load_certificate, run

log = logging.getLogger("piping_server.workers")

#: A worker that dies sooner than this after its start is restarted after a growing pause (up to the cap).
STABLE_AFTER_S = 5.0
RESTART_PAUSE_S = 0.1
RESTART_PAUSE_MAX_S = 5.0
#: A worker's figures must arrive within this for a scrape.
SCRAPE_TIMEOUT_S = 5.0
_PR_SET_PDEATHSIG = 1
#: TCP_DEFER_ACCEPT on the HTTP port: a connection is accepted when its first bytes come, or after about this
#: (one SYN-ACK resent): a client that says nothing is then served as before (and timed out by --header-timeout).
DEFER_ACCEPT_S = 1


def parse_workers(value: str) -> int:
    """``--workers``: a count of at least 1, or ``auto`` for the number of CPUs.

    Raises:
        ValueError: anything else.
    """
    if value.strip().lower() == "auto":
        return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    count = int(value)
    if count < 1:
        raise ValueError(value)
    return count


def run_workers(options: ServerOptions, count: int) -> None:
    """Bind the ports, fork ``count`` workers, keep them running until told to stop.

    Raises:
        StartupError: a port cannot be bound, or the certificate cannot be loaded.
    """
    if options.enable_https:
        _load_certificate(options)  # a bad certificate is one line, before anything starts
    config = options.config or Config()
    listeners: list[socket.socket] = []
    try:
        http = _listen(
            listeners,
            lambda: http_listener(options.host, options.http_port, options.backlog, uds=options.uds, fd=options.fd),
        )
        if http.family in (socket.AF_INET, socket.AF_INET6) and options.fd is None:
            # accepted once the request's first bytes are in: a worker can see at once whose it is (_handover._Door)
            http.setsockopt(socket.IPPROTO_TCP, socket.TCP_DEFER_ACCEPT, DEFER_ACCEPT_S)
        https = None
        if options.enable_https and options.https_port is not None:
            https_port = options.https_port
            https = _listen(listeners, lambda: tcp_listener(options.host, https_port, options.backlog))
        metrics = None
        if config.metrics.port is not None:
            metrics_port = config.metrics.port
            metrics = _listen(listeners, lambda: tcp_listener(config.metrics.host, metrics_port, options.backlog))
    except ListenError as exc:
        for sock in listeners:
            sock.close()
        remove_unix_socket(options.uds if listeners and options.fd is None else None)
        raise StartupError(str(exc)) from exc
    directory = tempfile.mkdtemp(prefix="piping-workers-")  # 0700: only this user reaches the workers' sockets
    try:
        supervisor = Supervisor(_worker_options(options), count, directory, http, https, metrics)
        asyncio.run(supervisor.run())
    finally:
        shutil.rmtree(directory, ignore_errors=True)
        remove_unix_socket(options.uds if options.fd is None else None)


def _listen(made: list[socket.socket], make: Callable[[], socket.socket]) -> socket.socket:
    sock = make()
    made.append(sock)
    return sock


def _worker_options(options: ServerOptions) -> ServerOptions:
    """The workers' options: their metrics go to the supervisor (a Unix socket), not to the metrics port."""
    config = options.config
    if config is None or config.metrics.port is None:
        return options
    metrics = dataclasses.replace(config.metrics, host="127.0.0.1", port=0)
    overrides = {**options.overrides, "metrics.host": "127.0.0.1", "metrics.port": 0}
    return dataclasses.replace(options, config=dataclasses.replace(config, metrics=metrics), overrides=overrides)


class Supervisor:
    """Starts, restarts and stops the workers; sums their figures."""

    def __init__(
        self,
        options: ServerOptions,
        count: int,
        directory: str,
        http: socket.socket,
        https: socket.socket | None,
        metrics: socket.socket | None,
    ) -> None:
        self.options = options
        self.count = count
        self.directory = directory
        self.http = http
        self.https = https
        self.metrics = metrics
        self.pids: dict[int, int] = {}  # pid -> worker index
        self._started_s: dict[int, float] = {}  # index -> when it last started
        self._pause_s: dict[int, float] = {}  # index -> the pause before its next restart
        self.stopping = False
        self._done: asyncio.Event | None = None

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        self._done = asyncio.Event()
        loop.add_signal_handler(signal.SIGCHLD, self._reap)
        loop.add_signal_handler(signal.SIGTERM, self._stop, signal.SIGTERM)
        loop.add_signal_handler(signal.SIGINT, self._stop, signal.SIGTERM)
        loop.add_signal_handler(signal.SIGHUP, self._pass_on, signal.SIGHUP)
        server = await asyncio.start_server(self._serve_metrics, sock=self.metrics) if self.metrics else None
        if server is not None:
            assert self.metrics is not None
            log.info(
                "metrics on http://%s:%d/metrics (and /healthz), summed over the workers",
                *self.metrics.getsockname()[:2],
            )
        for index in range(self.count):
            self._spawn(index)
        pids = ", ".join(str(pid) for pid in self.pids)
        announce(self.http, self.https, f"{self.count} worker processes (pids {pids})")
        await self._done.wait()
        if server is not None:
            server.close()
        log.info("all workers stopped")

    # --- the workers -------------------------------------------------------------------------------------

    def _spawn(self, index: int) -> None:
        if self.stopping:
            return
        pid = os.fork()
        if pid == 0:
            self._be_worker(index)  # never returns
        self.pids[pid] = index
        restart = index in self._started_s  # the first starts are summed up in one line (announce)
        self._started_s[index] = time.monotonic()
        if restart:
            log.info("worker %d started (pid %d)", index, pid)
        else:
            log.debug("worker %d started (pid %d)", index, pid)

    def _be_worker(self, index: int) -> None:
        code = 1
        try:
            # the supervisor's loop and handlers are not this process's: start clean
            signal.set_wakeup_fd(-1)
            for sig in (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, signal.SIG_DFL)
            signal.signal(signal.SIGHUP, signal.SIG_IGN)  # a reload before the worker can reload must not end it
            os.setpgid(0, 0)  # a terminal's Ctrl-C reaches the supervisor only, which passes one SIGTERM on
            _die_with_parent()
            if self.metrics is not None:
                self.metrics.close()
            place = WorkerPlace(index=index, count=self.count, directory=self.directory)
            run(self.options, worker=Worker(place=place, http_socket=self.http, https_socket=self.https))
            code = 0
        except KeyboardInterrupt:
            code = 0
        except StartupError as exc:
            log.error("worker %d: %s", index, exc)
        except BaseException:
            log.exception("worker %d failed", index)
        finally:
            logging.shutdown()
            os._exit(code)

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            index = self.pids.pop(pid, None)
            if index is None:
                continue
            if self.stopping:
                continue
            lived = time.monotonic() - self._started_s.get(index, 0.0)
            pause = (
                RESTART_PAUSE_S
                if lived >= STABLE_AFTER_S
                else min(RESTART_PAUSE_MAX_S, self._pause_s.get(index, RESTART_PAUSE_S / 2) * 2)
            )
            self._pause_s[index] = pause
            log.warning("worker %d (pid %d) %s; restarting it", index, pid, _describe(status))
            asyncio.get_running_loop().call_later(pause, self._spawn, index)
        if self.stopping and not self.pids and self._done is not None:
            self._done.set()

    def _stop(self, sig: signal.Signals) -> None:
        # the first signal: stop gracefully; a second one is passed on too, and the workers cut what runs
        self.stopping = True
        self._pass_on(sig)
        if not self.pids and self._done is not None:
            self._done.set()

    def _pass_on(self, sig: signal.Signals) -> None:
        for pid in list(self.pids):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)

    # --- metrics -----------------------------------------------------------------------------------------

    async def _serve_metrics(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        from ..ops._metrics import MAX_REQUEST_HEAD_BYTES, answer_scrape  # (prometheus_client: only with metrics)

        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), SCRAPE_TIMEOUT_S)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, ConnectionError):
            writer.close()
            return
        await answer_scrape(writer, head[:MAX_REQUEST_HEAD_BYTES], self._summed, self._health)

    def _health(self) -> tuple[int, bytes]:
        up = len(self.pids)
        if self.stopping:
            return 503, b"shutting down\n"
        if up < self.count:
            return 503, f"{up} of {self.count} workers up\n".encode()
        return 200, b"ok\n"

    async def _summed(self) -> bytes:
        from ..ops._metrics import summed_exposition

        texts = await asyncio.gather(*(self._scrape(index) for index in range(self.count)))
        return summed_exposition([text for text in texts if text is not None], len(self.pids))

    async def _scrape(self, index: int) -> str | None:
        path = os.path.join(self.directory, f"metrics-{index}")
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_unix_connection(path), SCRAPE_TIMEOUT_S)
            try:
                data = await asyncio.wait_for(reader.read(), SCRAPE_TIMEOUT_S)
            finally:
                writer.close()
        except (OSError, TimeoutError) as exc:
            # a worker being restarted: its figures are missing from this scrape
            log.warning("worker %d: no figures for this scrape (%s)", index, exc or type(exc).__name__)
            return None
        return data.decode()


def _die_with_parent() -> None:
    """Linux: this worker gets SIGTERM if the supervisor dies without stopping it (SIGKILL, a crash)."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() == 1:
        os.kill(os.getpid(), signal.SIGTERM)


def _describe(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"was killed by {signal.Signals(os.WTERMSIG(status)).name}"
    return f"exited with code {os.waitstatus_to_exitcode(status)}"
