"""Limits and timeouts: connection counts, waiting peers, ``n``, and the clocks the core does not keep.

The core has no clock (STYLE.md): ``WatchedHub`` is the hub plus the operator's timers. It sees
every event and every action, so it knows when a peer starts or stops waiting and when a transfer
starts and ends, for any transport. A peer waiting longer than ``limits.wait_timeout`` is given up
with ``WaitExpired``; a transfer whose bytes have not moved for ``limits.idle_timeout`` is ended
with ``TransferExpired`` (its receivers see a cut stream). Every other transfer goes on untouched.

Timers read the settings in force when they are armed, so a reload applies to new arrivals.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..core import (
    Action,
    EndSender,
    Event,
    Hub,
    Peer,
    Reject,
    StartLive,
    StartTransfer,
    TransferExpired,
    WaitExpired,
    is_reserved,
    parse_n,
    query_param,
)
from ..relay._hooks import Connection, Refusal, RequestView
from ..relay._proxies import TrustedProxies
from ._config import LimitsConfig

#: The status a waiting receiver gets when its waiting timeout fires: the "upstream" (the sender,
#: or the other receivers) did not come in time. Not 408, which browsers retry on their own.
WAIT_TIMEOUT_STATUS = 504
#: Idle checks run this often relative to the idle timeout, within these bounds (seconds).
IDLE_CHECKS_PER_TIMEOUT = 4
IDLE_CHECK_MIN_S = 0.05
IDLE_CHECK_MAX_S = 1.0


def seconds(value: float) -> str:
    return f"{value:g}"


def wait_timeout_message(timeout_s: float) -> str:
    return f"[ERROR] Timed out: the transfer did not start within {seconds(timeout_s)} second(s).\n"


def idle_timeout_message(timeout_s: float) -> str:
    return f"[ERROR] Timed out: no data moved for {seconds(timeout_s)} second(s).\n"


def client_of(peer: Peer) -> str:
    """The client address of a transport's endpoint ("" when it does not say)."""
    view = getattr(peer, "view", None)
    if view is None:
        return ""
    return str(view().client)


def progress_of(peer: Peer) -> int:
    """Bytes moved so far by one endpoint (body read plus response flushed); -1 when it cannot say."""
    progress = getattr(peer, "progress", None)
    if progress is None:
        return -1
    read, written = progress()
    return int(read) + int(written)


@dataclass(slots=True)
class _Transfer:
    sender: Peer
    members: tuple[Peer, ...]
    started_s: float
    moved: int = 0
    moved_s: float = 0.0
    idle_timeout_s: float | None = None
    timer: asyncio.TimerHandle | None = None
    final_bytes: int = -1


@dataclass(slots=True)
class TransferEnd:
    """What the metrics learn when a transfer is over."""

    duration_s: float
    sender_bytes: int


class WatchedHub(Hub):
    """The hub, plus waiting timers, idle timers and the bookkeeping limits and metrics need."""

    def __init__(self, limits: LimitsConfig | None = None) -> None:
        super().__init__()
        self.limits = limits or LimitsConfig()
        #: how expiries are fed back in (set to ``relay.submit`` once the relay exists)
        self.submit: Callable[[Event], None] | None = None
        self._watched_waiting: dict[Peer, tuple[str, asyncio.TimerHandle | None]] = {}
        self.waiting_by_client: Counter[str] = Counter()
        self._watched: dict[Peer, _Transfer] = {}  # every member -> its transfer
        #: called when a transfer ends, and on each expiry with its kind ("wait_timeout", "idle_timeout")
        self.on_transfer_end: Callable[[TransferEnd], None] | None = None
        self.on_expired: Callable[[str], None] | None = None

    # --- what the admit hook and the metrics read -------------------------------------------------------

    @property
    def waiting_count(self) -> int:
        return len(self._watched_waiting)

    def live_sender_bytes(self) -> int:
        """Body bytes read so far from the senders of running transfers."""
        total = 0
        for transfer in {id(t): t for t in self._watched.values()}.values():
            progress = getattr(transfer.sender, "progress", None)
            if progress is not None:
                total += int(progress()[0])
        return total

    # --- the hub's one entry point, watched --------------------------------------------------------------

    def handle(self, event: Event) -> list[Action]:
        actions = super().handle(event)
        peer = event.peer
        if peer not in self._watched_waiting and self.is_waiting(peer):
            self._watch_waiting(peer)
        touched: list[Peer] = [peer]
        for action in actions:
            if isinstance(action, StartTransfer):
                touched += [action.sender, *action.receivers]
                self._watch_transfer(action.sender, (action.sender, *action.receivers))
            elif isinstance(action, StartLive):
                touched += action.receivers  # ``?live`` receivers that waited stop waiting
                # receivers come and go: the sender's bytes tell whether a live transfer moves
                self._watch_transfer(action.sender, (action.sender,))
            elif isinstance(action, Reject | EndSender):
                touched.append(action.peer)
        for p in touched:
            if p in self._watched_waiting and not self.is_waiting(p):
                self._unwatch_waiting(p)
        transfer = self._watched.get(peer)
        if transfer is not None and not any(self.is_transferring(m) for m in transfer.members):
            self._unwatch_transfer(transfer)
        return actions

    # --- waiting ---------------------------------------------------------------------------------------------

    def _watch_waiting(self, peer: Peer) -> None:
        client = client_of(peer)
        timeout_s = self.limits.wait_timeout
        timer = None
        if timeout_s is not None:
            timer = asyncio.get_running_loop().call_later(timeout_s, self._on_wait_timer, peer, timeout_s)
        self._watched_waiting[peer] = (client, timer)
        self.waiting_by_client[client] += 1

    def _unwatch_waiting(self, peer: Peer) -> None:
        client, timer = self._watched_waiting.pop(peer)
        if timer is not None:
            timer.cancel()
        self.waiting_by_client[client] -= 1
        if self.waiting_by_client[client] <= 0:
            del self.waiting_by_client[client]

    def _on_wait_timer(self, peer: Peer, timeout_s: float) -> None:
        if self.submit is None or not self.is_waiting(peer):
            return
        if self.on_expired is not None:
            self.on_expired("wait_timeout")
        self.submit(WaitExpired(peer=peer, message=wait_timeout_message(timeout_s), status=WAIT_TIMEOUT_STATUS))

    # --- transfers ------------------------------------------------------------------------------------------

    def _watch_transfer(self, sender: Peer, members: tuple[Peer, ...]) -> None:
        now = time.monotonic()
        transfer = _Transfer(sender, members, now, moved_s=now)
        for member in transfer.members:
            self._watched[member] = transfer
        idle_s = self.limits.idle_timeout
        if idle_s is not None:
            transfer.idle_timeout_s = idle_s
            self._arm_idle_check(transfer)

    def _arm_idle_check(self, transfer: _Transfer) -> None:
        assert transfer.idle_timeout_s is not None
        interval = min(IDLE_CHECK_MAX_S, max(IDLE_CHECK_MIN_S, transfer.idle_timeout_s / IDLE_CHECKS_PER_TIMEOUT))
        transfer.timer = asyncio.get_running_loop().call_later(interval, self._on_idle_check, transfer)

    def _on_idle_check(self, transfer: _Transfer) -> None:
        transfer.timer = None
        if self._watched.get(transfer.sender) is not transfer:
            return
        moved = sum(progress_of(m) for m in transfer.members)
        now = time.monotonic()
        if moved != transfer.moved or self.live_audience(transfer.sender) == 0:
            # (a live sender with nobody listening is paused by design: waiting, not idle)
            transfer.moved, transfer.moved_s = moved, now
        elif transfer.idle_timeout_s is not None and now - transfer.moved_s >= transfer.idle_timeout_s:
            member = next((m for m in transfer.members if self.is_transferring(m)), None)
            if member is not None and self.submit is not None:
                if self.on_expired is not None:
                    self.on_expired("idle_timeout")
                self.submit(TransferExpired(peer=member, message=idle_timeout_message(transfer.idle_timeout_s)))
                return
        self._arm_idle_check(transfer)

    def _unwatch_transfer(self, transfer: _Transfer) -> None:
        if transfer.timer is not None:
            transfer.timer.cancel()
            transfer.timer = None
        for member in transfer.members:
            if self._watched.get(member) is transfer:
                del self._watched[member]
        progress = getattr(transfer.sender, "progress", None)
        sender_bytes = int(progress()[0]) if progress is not None else 0
        if self.on_transfer_end is not None:
            duration_s = time.monotonic() - transfer.started_s
            self.on_transfer_end(TransferEnd(duration_s=duration_s, sender_bytes=sender_bytes))


# --- connection counting (Hooks.on_connect / on_disconnect) --------------------------------------------------


#: Connections looked at for one to close, per connection let in past a limit: the busy ones seen go to the
#: back of the line, so a server full of running transfers costs each new connection this much at most.
RECLAIM_SCAN = 64


@dataclass(slots=True)
class ConnectionCounter:
    """Open connections, overall and per client address; past a limit, makes room or refuses.

    A connection with no request in progress (HTTP/2: no open stream) holds a slot and nothing else: when a
    limit is reached, the oldest such connection is closed to make room (nginx reuses idle keep-alive
    connections the same way), so idle connections cannot lock real clients out. Only when every connection
    is busy is the new one refused. Per client, only that client's own connections are closed for it.
    """

    limits: LimitsConfig = field(default_factory=LimitsConfig)
    #: called with the reason of each refusal (for the metrics)
    on_refused: Callable[[str], None] | None = None
    #: called for each connection closed to make room (for the metrics)
    on_reclaimed: Callable[[], None] | None = None
    #: proxies (--forwarded-allow-ips) whose connections carry many clients: exempt from the per-client count
    trusted: TrustedProxies | None = None
    #: every counted connection and its client, oldest first (as far as the scans have seen them busy)
    _open: dict[Connection, str] = field(default_factory=dict)
    _by_client: dict[str, dict[Connection, None]] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return len(self._open)

    def count_of(self, client: str) -> int:
        return len(self._by_client.get(client, ()))

    def connect(self, client: str, conn: Connection) -> Refusal | None:
        limits = self.limits
        per_client = limits.max_connections_per_client
        exempt = self.trusted is not None and self.trusted.trusts(client)
        if per_client is not None and not exempt:
            mine = self._by_client.get(client, {})
            if len(mine) >= per_client and not self._make_room(mine, len(mine) - per_client + 1):
                return self._refuse("connections_per_client", 429, "[ERROR] Too many connections from your address.\n")
        most = limits.max_connections
        if most is not None and len(self._open) >= most and not self._make_room(self._open, len(self._open) - most + 1):
            return self._refuse("connections", 503, "[ERROR] Too many connections to this server; try again later.\n")
        self._open[conn] = client
        self._by_client.setdefault(client, {})[conn] = None
        return None

    def disconnect(self, client: str, conn: Connection) -> None:
        """Forget ``conn`` (its client as kept at connect); one closed to make room was forgotten then."""
        if conn in self._open:
            self._forget(conn)

    def _make_room(self, pool: dict[Connection, Any], needed: int) -> bool:
        """Close ``needed`` connections of ``pool`` that have no request in progress, oldest first; False if too few."""
        chosen: list[Connection] = []
        busy: list[Connection] = []
        for conn in pool:
            if len(chosen) >= needed or len(chosen) + len(busy) >= RECLAIM_SCAN:
                break
            (chosen if conn.reclaimable() else busy).append(conn)
        for conn in busy:  # to the back of the line: the next scan looks at others first
            pool[conn] = pool.pop(conn)
        if len(chosen) < needed:
            return False
        for conn in chosen:
            self._forget(conn)
            conn.reclaim()
            if self.on_reclaimed is not None:
                self.on_reclaimed()
        return True

    def _forget(self, conn: Connection) -> None:
        client = self._open.pop(conn)
        mine = self._by_client[client]
        del mine[conn]
        if not mine:
            del self._by_client[client]

    def _refuse(self, reason: str, status: int, message: str) -> Refusal:
        if self.on_refused is not None:
            self.on_refused(reason)
        return Refusal(status=status, message=message, headers=_retry_after(status))


def _retry_after(status: int) -> list[tuple[bytes, bytes]]:
    # a hint for well-behaved clients (RFC 9110 section 10.2.3); limits are transient
    return [(b"retry-after", b"5")] if status in (429, 503) else []


# --- per-request limits (part of the admit hook) ----------------------------------------------------------------


class RequestLimits:
    """``max_n`` and the waiting limits, checked before routing."""

    def __init__(self, limits: LimitsConfig, hub: Hub) -> None:
        self.limits = limits
        self.hub = hub
        self.last_reason = ""

    def check(self, view: RequestView) -> Refusal | None:
        limits = self.limits
        if view.method not in ("GET", "POST", "PUT") or is_reserved(view.path):
            return None
        if limits.max_n is not None:
            n = parse_n(query_param(view.query, "n"))
            if n is not None and n > limits.max_n:
                self.last_reason = "max_n"
                return Refusal(status=400, message=f"[ERROR] n should be at most {limits.max_n}, but n = {n}.\n")
        hub = self.hub
        if isinstance(hub, WatchedHub) and not hub.is_busy(view.path):
            # only a request that would open a new rendezvous counts: joining one lets others go
            if limits.max_waiting is not None and hub.waiting_count >= limits.max_waiting:
                self.last_reason = "waiting"
                return Refusal(
                    status=503,
                    message="[ERROR] Too many senders and receivers are waiting; try again later.\n",
                    headers=_retry_after(503),
                )
            per_client = limits.max_waiting_per_client
            if per_client is not None and hub.waiting_by_client[view.client] >= per_client:
                self.last_reason = "waiting_per_client"
                return Refusal(
                    status=429,
                    message="[ERROR] Too many senders and receivers are waiting from your address.\n",
                    headers=_retry_after(429),
                )
        return None


def describe(limits: LimitsConfig) -> dict[str, Any]:
    """The limits in force, for the startup log line."""
    return {k: getattr(limits, k) for k in limits.__dataclass_fields__ if getattr(limits, k) is not None}
