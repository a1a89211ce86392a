"""The request limits and the watched hub without a server (no timers armed: no timeouts configured)."""

from __future__ import annotations

from piping_server.core import PeerLost, ReceiverArrived, SenderArrived
from piping_server.ops._config import LimitsConfig
from piping_server.ops._limits import ConnectionCounter, RequestLimits, WatchedHub
from piping_server.relay._hooks import RequestView


def view(path: str, method: str = "GET", query: str = "") -> RequestView:
    return RequestView(method=method, path=path, query=query, headers=[], client="", transport="h1", is_tls=False)


def test_overall_waiting_limit_counts_only_new_rendezvous() -> None:
    hub = WatchedHub(LimitsConfig(max_waiting=2))
    limits = RequestLimits(hub.limits, hub)
    hub.handle(SenderArrived(peer="s1", path="/a", method="POST", n="2"))
    hub.handle(ReceiverArrived(peer="r1", path="/b", n=None))
    assert hub.waiting_count == 2
    refused = limits.check(view("/c", "POST"))
    assert refused is not None and refused.status == 503 and limits.last_reason == "waiting"
    assert limits.check(view("/a", query="n=2")) is None  # joins the sender waiting on /a
    assert limits.check(view("/help")) is None and limits.check(view("/c", "OPTIONS")) is None
    hub.handle(PeerLost(peer="r1"))
    assert hub.waiting_count == 1 and limits.check(view("/c", "POST")) is None


def test_max_n_leaves_bad_n_to_the_protocol() -> None:
    hub = WatchedHub(LimitsConfig(max_n=3))
    limits = RequestLimits(hub.limits, hub)
    assert limits.check(view("/a", query="n=abc")) is None  # the hub answers it with its own wording
    assert limits.check(view("/a", query="n=3")) is None
    refused = limits.check(view("/a", "PUT", query="n=4"))
    assert refused is not None and refused.message == "[ERROR] n should be at most 3, but n = 4.\n"


class Conn:
    """A connection as the counter sees it: busy or not, and whether it was closed to make room."""

    def __init__(self, busy: bool = False) -> None:
        self.busy = busy
        self.reclaimed = False

    def reclaimable(self) -> bool:
        return not self.busy

    def reclaim(self) -> None:
        self.reclaimed = True


def test_connection_counter_refuses_when_every_connection_is_busy() -> None:
    reasons: list[str] = []
    limits = LimitsConfig(max_connections=3, max_connections_per_client=2)
    counter = ConnectionCounter(limits, on_refused=reasons.append)
    a1, a2, b1 = Conn(busy=True), Conn(busy=True), Conn(busy=True)
    assert counter.connect("a", a1) is None and counter.connect("a", a2) is None
    refused = counter.connect("a", Conn())
    assert refused is not None and refused.status == 429
    assert counter.connect("b", b1) is None
    refused = counter.connect("c", Conn())
    assert refused is not None and refused.status == 503
    counter.disconnect("a", a1)
    assert counter.connect("c", Conn()) is None
    assert reasons == ["connections_per_client", "connections"] and counter.total == 3
    assert not any(c.reclaimed for c in (a1, a2, b1))


def test_connection_counter_closes_the_oldest_idle_connection_to_make_room() -> None:
    reclaimed: list[None] = []
    counter = ConnectionCounter(LimitsConfig(max_connections=3), on_reclaimed=lambda: reclaimed.append(None))
    busy, idle_old, idle_new = Conn(busy=True), Conn(), Conn()
    for conn in (busy, idle_old, idle_new):
        assert counter.connect("x", conn) is None
    newcomer = Conn()
    assert counter.connect("y", newcomer) is None
    assert idle_old.reclaimed and not idle_new.reclaimed and not busy.reclaimed
    assert counter.total == 3 and len(reclaimed) == 1
    counter.disconnect("x", idle_old)  # its close comes later: counted once only
    assert counter.total == 3 and counter.count_of("x") == 2


def test_per_client_limit_closes_only_that_clients_idle_connections() -> None:
    counter = ConnectionCounter(LimitsConfig(max_connections_per_client=2))
    other_idle = Conn()
    assert counter.connect("other", other_idle) is None
    mine_busy, mine_idle = Conn(busy=True), Conn()
    assert counter.connect("me", mine_busy) is None and counter.connect("me", mine_idle) is None
    assert counter.connect("me", Conn()) is None
    assert mine_idle.reclaimed and not other_idle.reclaimed and not mine_busy.reclaimed
    mine_all_busy = ConnectionCounter(LimitsConfig(max_connections_per_client=1))
    assert mine_all_busy.connect("me", Conn(busy=True)) is None
    refused = mine_all_busy.connect("me", Conn())
    assert refused is not None and refused.status == 429


def test_scan_is_bounded_and_moves_busy_connections_back() -> None:
    counter = ConnectionCounter(LimitsConfig(max_connections=200))
    busy = [Conn(busy=True) for _ in range(199)]
    for conn in busy:
        counter.connect("x", conn)
    idle = Conn()
    counter.connect("x", idle)  # the newest: beyond the first scan's reach
    assert counter.connect("y", Conn()) is not None  # the first 64 looked at are busy
    results = [counter.connect("y", Conn()) for _ in range(3)]
    assert idle.reclaimed and results.count(None) == 1
