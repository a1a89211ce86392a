"""Prometheus metrics and a health check, served on their own port (``--metrics-port``).

No path of the protocol is reserved for them (docs/protocol.md section 2 lists the only reserved ones):
``/metrics`` and ``/healthz`` live on a separate listener, usually bound to localhost. The registry
is our own ``CollectorRegistry``, so nothing of the process's default registry leaks in. Gauges and
hub counters are read at scrape time; nothing here runs per chunk of a transfer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

from ..core import Hub
from ..relay._headers import http_date
from ..relay._hooks import AccessRecord
from ._limits import TransferEnd, WatchedHub

log = logging.getLogger("piping_server.metrics")

#: Transfer durations span a blink (a line of text) to days (a tunnel): seconds, log-spaced buckets.
DURATION_BUCKETS_S = (0.01, 0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 1800.0, 3600.0, 6 * 3600.0, 86400.0)
#: A scrape request's head may not exceed this (bytes); and it must arrive within this (seconds).
MAX_REQUEST_HEAD_BYTES = 8 * 1024
REQUEST_TIMEOUT_S = 10.0
CONTENT_TYPE_LATEST = "text/plain; version=0.0.4; charset=utf-8"


class _HubCollector(Collector):
    """Counters owned by the hub and live byte counts, read at scrape time."""

    def __init__(self, hub: Hub, ended_bytes: Callable[[], int]) -> None:
        self.hub = hub
        self.ended_bytes = ended_bytes

    def collect(self) -> Iterable[Metric]:
        hub = self.hub
        finished = CounterMetricFamily("piping_transfers_finished", "Transfers that reached every remaining receiver.")
        finished.add_metric([], hub.transfers_finished)
        yield finished
        aborted = CounterMetricFamily("piping_transfers_aborted", "Transfers cut or abandoned by all receivers.")
        aborted.add_metric([], hub.transfers_aborted)
        yield aborted
        live = hub.live_sender_bytes() if isinstance(hub, WatchedHub) else 0
        relayed = CounterMetricFamily(
            "piping_relayed_bytes", "Body bytes read from senders of started transfers (running ones included)."
        )
        relayed.add_metric([], self.ended_bytes() + live)
        yield relayed
        lagged = CounterMetricFamily(
            "piping_live_receivers_cut", "Receivers of live transfers cut for falling too far behind."
        )
        lagged.add_metric([], hub.live_receivers_cut)
        yield lagged


class Metrics:
    """Every metric of one server process."""

    def __init__(self, hub: Hub, *, connections: Callable[[], int] | None = None) -> None:
        # the *_created series double every line and say nothing a scraper needs (process-wide switch)
        disable_created_metrics()  # type: ignore[no-untyped-call]
        self.registry = CollectorRegistry(auto_describe=True)
        self.hub = hub
        self.healthy = True
        self._ended_bytes = 0
        reg = self.registry
        Gauge("piping_waiting_senders", "Senders waiting for their receivers.", registry=reg).set_function(
            lambda: hub.waiting_senders
        )
        Gauge("piping_waiting_receivers", "Receivers waiting for their sender.", registry=reg).set_function(
            lambda: hub.waiting_receivers
        )
        Gauge("piping_active_transfers", "Transfers running now.", registry=reg).set_function(
            lambda: hub.running_transfers
        )
        Gauge("piping_live_paths", "Paths a live sender streams on now.", registry=reg).set_function(
            lambda: hub.live_paths
        )
        Gauge("piping_live_receivers", "Receivers joined to live senders now.", registry=reg).set_function(
            lambda: hub.live_receivers
        )
        if connections is not None:
            Gauge("piping_open_connections", "Client connections open now.", registry=reg).set_function(connections)
        self.rejections = Counter("piping_rejections", "Requests refused, by reason.", ["reason"], registry=reg)
        self.reclaimed = Counter(
            "piping_connections_reclaimed",
            "Connections with no request in progress closed to make room for new ones (--max-connections).",
            registry=reg,
        )
        self.login_failures = Counter(
            "piping_login_failures",
            "Refused logins (basic auth and bearer tokens): bad_credentials, rate_limited (429, too many failures "
            "from the client's address), busy (503, too many password checks waiting).",
            ["reason"],
            registry=reg,
        )
        self.requests = Counter("piping_requests", "Finished requests, by role.", ["role"], registry=reg)
        self.durations = Histogram(
            "piping_transfer_duration_seconds",
            "Time from the start of a transfer to its end, whatever the outcome.",
            buckets=DURATION_BUCKETS_S,
            registry=reg,
        )
        reg.register(_HubCollector(hub, lambda: self._ended_bytes))

    # --- fed by the operator's layer -------------------------------------------------------------------------

    def rejected(self, reason: str) -> None:
        self.rejections.labels(reason=reason).inc()

    def login_failed(self, reason: str) -> None:
        self.login_failures.labels(reason=reason).inc()

    def transfer_ended(self, end: TransferEnd) -> None:
        self._ended_bytes += end.sender_bytes
        self.durations.observe(end.duration_s)

    def on_access(self, record: AccessRecord) -> None:
        self.requests.labels(role=record.role).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)

    # --- the listener -----------------------------------------------------------------------------------------

    async def start(self, host: str, port: int) -> asyncio.Server:
        return await asyncio.start_server(self._serve_one, host, port, reuse_address=True)

    async def _serve_one(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), REQUEST_TIMEOUT_S)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, ConnectionError):
            writer.close()
            return
        if len(head) > MAX_REQUEST_HEAD_BYTES:
            writer.close()
            return
        await answer_scrape(writer, head, self._render, self._health)

    async def _render(self) -> bytes:
        return self.render()

    def _health(self) -> tuple[int, bytes]:
        return (200, b"ok\n") if self.healthy else (503, b"shutting down\n")


async def answer_scrape(
    writer: asyncio.StreamWriter,
    head: bytes,
    metrics: Callable[[], Awaitable[bytes]],
    health: Callable[[], tuple[int, bytes]],
) -> None:
    """Answer one request of a metrics listener (a server's own, or the --workers supervisor's summing one):
    GET or HEAD of /metrics (``metrics()``) or /healthz (``health()``: status and body); then close."""
    parts = head.split(b"\r\n", 1)[0].split(b" ")
    method = parts[0] if parts else b""
    target = parts[1].split(b"?", 1)[0] if len(parts) > 1 else b""
    status, content_type, body = 404, "text/plain; charset=utf-8", b"not found: try /metrics or /healthz\n"
    if method not in (b"GET", b"HEAD"):
        status, body = 405, b"method not allowed\n"
    elif target == b"/metrics":
        status, content_type, body = 200, CONTENT_TYPE_LATEST, await metrics()
    elif target == b"/healthz":
        status, body = health()
    reason = {200: "OK", 404: "Not Found", 405: "Method Not Allowed", 503: "Service Unavailable"}[status]
    # Written as the main port writes HTTP/1 heads: conventional capitalization, and a Date.
    response = (
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
        f"Cache-Control: no-store\r\nConnection: close\r\nDate: {http_date().decode()}\r\n\r\n"
    ).encode()
    writer.write(response if method == b"HEAD" else response + body)
    with contextlib.suppress(ConnectionError):
        await writer.drain()
    writer.close()


def summed_exposition(texts: list[str], up: int) -> bytes:
    """The workers' figures (``--workers``), each in the text format, summed into one exposition."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Summed(texts, up))
    return generate_latest(registry)


class _Summed(Collector):
    """The workers' samples, added up by name and labels."""

    def __init__(self, texts: list[str], up: int) -> None:
        self.texts = texts
        self.up = up

    def collect(self) -> Iterable[Metric]:
        families: dict[str, Metric] = {}
        where: dict[tuple[str, str, tuple[tuple[str, str], ...]], int] = {}
        for text in self.texts:
            for family in text_string_to_metric_families(text):
                known = families.setdefault(family.name, family)
                for sample in family.samples:
                    key = (family.name, sample.name, tuple(sorted(sample.labels.items())))
                    at = where.get(key)
                    if known is family:
                        where[key] = family.samples.index(sample)
                    elif at is None:
                        where[key] = len(known.samples)
                        known.samples.append(sample)
                    else:
                        known.samples[at] = known.samples[at]._replace(value=known.samples[at].value + sample.value)
        workers = GaugeMetricFamily("piping_workers_up", "Worker processes running now (--workers).")
        workers.add_metric([], self.up)
        yield workers
        yield from families.values()
