"""The operator's layer of one server process: hooks, timers, metrics, config reloads and shutdown.

``Operator`` turns a ``Config`` into the transports' ``Hooks`` and keeps them current across
reloads. When nothing is configured (no file, no operator flag), it installs nothing at all and uses
the plain ``Hub``: the server is then exactly the protocol of docs/protocol.md. ``drain`` (graceful
shutdown) works in both cases.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from .._runtime.malloc import release_when_quiet
from ..core import Action, Hub, JoinLive, Reject, StartLive, TransferExpired, WaitExpired
from ..relay._flow import LIVE_MAX_LAG_BYTES, Relay
from ..relay._hooks import AccessRecord, Refusal, RequestView
from ..relay._proxies import TrustedProxies
from ._auth import Gate, JwksKeys
from ._config import Config, MetricsConfig, load_config
from ._limits import ConnectionCounter, RequestLimits, WatchedHub, describe
from ._logging import configure_logging, log_access, log_live_join
from ._logins import LoginGuard, then
from ._reload import ConfigReloader, keep_restart_only
from ._shares import below_workers, share_config

if TYPE_CHECKING:
    from ._metrics import Metrics  # (imported when metrics are on: prometheus_client is some 10 MB of memory)

log = logging.getLogger("piping_server")

SHUTDOWN_MESSAGE = "[ERROR] The server is shutting down.\n"
#: How often the drain checks whether the running transfers are over (seconds).
DRAIN_POLL_S = 0.05
#: Time given to the last lines and cut connections to leave before the loop stops (seconds).
FLUSH_S = 0.2
#: Extra headers of Access-Control-Allow-Headers when credentials are asked for (docs/protocol.md section 7 + auth).
PREFLIGHT_WITH_AUTH = b"Content-Type, Content-Disposition, X-Piping, Authorization"


class Operator:
    """Builds and owns everything the operator configured."""

    def __init__(
        self,
        config: Config,
        *,
        config_path: str | None = None,
        overrides: Mapping[str, Any] | None = None,
        environ: Mapping[str, str] | None = None,
        share: tuple[int, int] | None = None,
    ) -> None:
        #: (this worker's index, the number of workers) under ``--workers``: the counting limits are split
        self.share = share
        self.configured = config  # before the split, for the start-up warning
        config = self._shared(config)
        self.config = config
        self.config_path = config_path
        self.overrides = dict(overrides or {})
        self.environ = environ
        #: with nothing to enforce or observe, no hook is set at all (the plain protocol)
        self.active = config.needs_hooks or config_path is not None
        self.hub: Hub = WatchedHub(config.limits) if self.active else Hub()
        self.counter = ConnectionCounter(config.limits)
        self.metrics: Metrics | None = None
        self.jwks: JwksKeys | None = None
        self._tasks: list[asyncio.Task[None]] = []
        #: password hashes off the loop and failed logins per client: one for the process, across reloads
        self.guard = LoginGuard()
        self.gate = self._gate(config)
        self.limits = RequestLimits(config.limits, self.hub)
        self.relay: Relay | None = None
        self.reloader: ConfigReloader | None = None
        self._metrics_server: asyncio.Server | None = None
        self.draining = False

    # --- wiring ----------------------------------------------------------------------------------------------

    def install(self, relay: Relay) -> None:
        """Set the relay's hooks (when anything is configured) and observe its actions."""
        self.relay = relay
        self._set_timeouts(self.config)
        if not self.active:
            return
        hub = self.hub
        assert isinstance(hub, WatchedHub)
        hub.submit = relay.submit
        if self.config.metrics.port is not None:
            from ._metrics import Metrics

            self.metrics = Metrics(hub, connections=lambda: self.counter.total)
            hub.on_transfer_end = self.metrics.transfer_ended
            hub.on_expired = self.metrics.rejected
            self.guard.on_failure = self.metrics.login_failed
            self.counter.on_refused = self.metrics.rejected
            self.counter.on_reclaimed = self.metrics.reclaimed.inc
            relay.observers.append(self._observe)
        relay.observers.append(self._observe_joins)
        hooks = relay.hooks
        hooks.admit = self._admit
        hooks.on_access = self._on_access
        hooks.on_connect = self.counter.connect
        hooks.on_disconnect = self.counter.disconnect
        self._set_static_hooks(self.config)

    def _set_timeouts(self, config: Config) -> None:
        """The connection timeouts hold with or without any operator feature (0 in the config: none)."""
        assert self.relay is not None
        hooks = self.relay.hooks
        hooks.header_timeout_s = config.limits.header_timeout or None
        hooks.keepalive_timeout_s = config.limits.keepalive_timeout or None

    def _set_static_hooks(self, config: Config) -> None:
        assert self.relay is not None
        self._set_timeouts(config)
        hooks = self.relay.hooks
        hooks.max_head_bytes = config.limits.max_header_bytes
        self.relay.live_max_lag = config.limits.live_max_lag or LIVE_MAX_LAG_BYTES
        self.hub.max_live_receivers = config.limits.max_live_receivers
        hooks.preflight_allow_headers = PREFLIGHT_WITH_AUTH if config.auth.enabled else None
        # behind a trusted proxy, requests name their client; its connections are the proxy's, not counted per client
        hooks.trusted_proxies = self.counter.trusted = TrustedProxies(config.server.forwarded_allow_ips) or None

    async def start(self) -> None:
        """Start the metrics listener, the JWKS refresher and the config watcher."""
        if self.jwks is not None:
            await asyncio.to_thread(self.jwks.fetch)
        self._tasks.append(asyncio.create_task(self._refresh_jwks()))
        self._tasks.append(asyncio.create_task(release_when_quiet()))  # what an attack's burst left: back to the kernel
        if self.metrics is not None and self.config.metrics.port is not None:
            host, port = self.config.metrics.host, self.config.metrics.port
            self._metrics_server = await self.metrics.start(host, port)
            for sock in self._metrics_server.sockets:
                log.info("metrics on http://%s:%d/metrics (and /healthz)", *sock.getsockname()[:2])
        if self.config_path is not None:
            self.reloader = ConfigReloader(self.config_path, self._load, self.apply)
            self._tasks.append(asyncio.create_task(self.reloader.watch()))
        for warning in ignored_settings(self.config):
            log.warning("%s", warning)
        if self.share is not None and self.share[0] == 0:
            low = below_workers(self.configured, self.share[1])
            if low:
                log.warning(
                    "%s below the number of workers (%d): each worker allows at least 1, so the server allows up to %d",
                    ", ".join(low),
                    self.share[1],
                    self.share[1],
                )
        if self.active:
            auth = self.config.auth
            schemes = [name for name, on in (("basic", auth.basic_enabled), ("jwt", auth.jwt_enabled)) if on]
            log.info(
                "operator settings: auth=%s allow_paths=%s access_log=%s limits%s=%s",
                ",".join(schemes) or "off",
                "on" if self.config.access.allow_paths is not None else "off",
                "on" if self.config.log.access else "off",
                " (this worker's share)" if self.share is not None else "",
                describe(self.config.limits) or "none",
            )

    async def close(self) -> None:
        self.guard.close()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        if self._metrics_server is not None:
            self._metrics_server.close()
            self._metrics_server = None

    # --- reload ------------------------------------------------------------------------------------------------

    def _load(self) -> Config:
        return load_config(self.config_path, overrides=self.overrides, environ=self.environ)

    def reload(self, why: str) -> bool:
        if self.reloader is None:
            log.warning("config reload (%s) ignored: the server was started without --config", why)
            return False
        return self.reloader.reload(why)

    def _shared(self, config: Config) -> Config:
        return share_config(config, *self.share) if self.share is not None else config

    def apply(self, new: Config) -> None:
        """Put ``new`` in force for new requests; running transfers are untouched. May raise ValueError."""
        config = keep_restart_only(self.config, self._shared(new))
        gate = self._gate(config)  # raises before anything changes
        self.config = config
        self.gate = gate
        self.limits = RequestLimits(config.limits, self.hub)
        self.counter.limits = config.limits
        if isinstance(self.hub, WatchedHub):
            self.hub.limits = config.limits
        configure_logging(level=config.log.level, fmt=config.log.format)
        if self.relay is not None:
            self._set_timeouts(config)
        if self.relay is not None and self.active:
            self._set_static_hooks(config)

    def _gate(self, config: Config) -> Gate:
        gate = Gate(config, jwks=self._jwks_for(config), guard=self.guard)
        gate.on_refused = self._refused_later
        basic = config.auth.basic
        self.guard.burst, self.guard.refill_per_s = basic.max_failures, 1 / basic.failure_refill
        return gate

    def _refused_later(self, reason: str) -> None:
        if self.metrics is not None:
            self.metrics.rejected(reason)

    def _jwks_for(self, config: Config) -> JwksKeys | None:
        url = config.auth.jwt.jwks_url
        if url is None:
            self.jwks = None
        elif self.jwks is None or self.jwks.url != url:
            self.jwks = JwksKeys(url, config.auth.jwt.jwks_refresh)
            if self._tasks:  # already running: fetch now, in the background
                asyncio.get_running_loop().create_task(asyncio.to_thread(self.jwks.fetch))
        else:
            self.jwks.refresh_s = config.auth.jwt.jwks_refresh
        return self.jwks

    async def _refresh_jwks(self) -> None:
        elapsed = 0.0
        while True:
            await asyncio.sleep(1.0)
            jwks = self.jwks
            if jwks is None:
                continue
            elapsed += 1.0
            if elapsed >= jwks.refresh_s or jwks.wanted.is_set():
                elapsed = 0.0
                await asyncio.to_thread(jwks.fetch)

    # --- hooks ---------------------------------------------------------------------------------------------------

    def _admit(self, view: RequestView) -> Refusal | asyncio.Future[Refusal | None] | None:
        if self.draining:
            return Refusal(status=503, message=SHUTDOWN_MESSAGE)
        gate = self.gate
        refusal = gate.check(view)
        if isinstance(refusal, asyncio.Future):  # a password checked off the loop: the limits come after it
            return then(refusal, lambda decided: decided if decided is not None else self._limit(view))
        if refusal is None:
            return self._limit(view)
        if self.metrics is not None:
            self.metrics.rejected(gate.last_reason)
        return refusal

    def _limit(self, view: RequestView) -> Refusal | None:
        limits = self.limits
        refusal = limits.check(view)
        if refusal is not None and self.metrics is not None:
            self.metrics.rejected(limits.last_reason)
        return refusal

    def _on_access(self, record: AccessRecord) -> None:
        if self.config.log.access:
            log_access(record)
        if self.metrics is not None:
            self.metrics.on_access(record)
            if record.role == "malformed":  # refused by the HTTP parser (400, 431) before any routing
                self.metrics.rejected("malformed")

    def _observe_joins(self, action: Action) -> None:
        # a live receiver's own access line comes when it leaves, maybe hours later: its join gets one now
        if not self.config.log.access:
            return
        if isinstance(action, JoinLive):
            log_live_join(action.receiver)
        elif isinstance(action, StartLive):
            for receiver in action.receivers:
                log_live_join(receiver)

    def _observe(self, action: Action) -> None:
        if isinstance(action, Reject) and action.status == 400 and self.metrics is not None:
            self.metrics.rejected("protocol")

    # --- graceful shutdown -----------------------------------------------------------------------------------------

    async def drain(self, grace_s: float, force: asyncio.Event) -> None:
        """Refuse new requests, let running transfers finish for ``grace_s``, then cut what is left.

        Ends with one log line: how many of the transfers running at the signal finished, and how many were cut.
        """
        relay = self.relay
        if relay is None:
            return
        self.draining = True
        if self.metrics is not None:
            self.metrics.healthy = False
        hub = relay.hub
        if relay.hooks.admit is None:
            relay.hooks.admit = self._admit  # only now: requests on kept-alive connections get a clear 503
        for peer in hub.waiting_peers():
            relay.submit(WaitExpired(peer=peer, message=SHUTDOWN_MESSAGE, status=503))
        running = hub.running_transfers
        finished_before = hub.transfers_finished
        if running and grace_s > 0:
            log.info(
                "shutting down: waiting up to %gs for %d running transfer(s); signal again to cut them now",
                grace_s,
                running,
            )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace_s
        while hub.running_transfers and not force.is_set() and loop.time() < deadline:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(force.wait(), min(DRAIN_POLL_S, max(0.0, deadline - loop.time())))
        cut = 0
        for sender, receivers in hub.transfers():
            member = next((p for p in (sender, *receivers) if hub.is_transferring(p)), None)
            if member is not None:
                relay.submit(TransferExpired(peer=member, message=SHUTDOWN_MESSAGE))
                cut += 1
        await asyncio.sleep(FLUSH_S)
        finished = hub.transfers_finished - finished_before
        others = max(0, running - finished - cut)  # ended by their own peers meanwhile (a sender gone...)
        log.info(
            "stopped: %d running transfer(s) finished, %d cut%s",
            finished,
            cut,
            f", {others} ended by their peers" if others else "",
        )


def ignored_settings(config: Config) -> list[str]:
    """The settings given that do nothing without another one: each is said once at start-up, never silent."""
    server, metrics = config.server, config.metrics
    ignored: list[str] = []
    if not server.enable_https:
        given = [
            name
            for name, value in (
                ("--https-port", server.https_port),
                ("--crt-path", server.crt_path),
                ("--key-path", server.key_path),
            )
            if value is not None
        ]
        if given:
            ignored.append(f"{', '.join(given)} ignored: HTTPS is off (add --enable-https)")
    if metrics.port is None and metrics.host != MetricsConfig().host:
        ignored.append("--metrics-host ignored: no metrics listener (add --metrics-port)")
    return ignored


def on_signal(stop: asyncio.Event, force: asyncio.Event) -> Callable[[], None]:
    """The first SIGTERM/SIGINT starts a graceful shutdown; a second one cuts at once."""

    def handler() -> None:
        if stop.is_set():
            force.set()
        stop.set()

    return handler
