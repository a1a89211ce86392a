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


def test_connection_counter() -> None:
    reasons: list[str] = []
    limits = LimitsConfig(max_connections=3, max_connections_per_client=2)
    counter = ConnectionCounter(limits, on_refused=reasons.append)
    assert counter.connect("a") is None and counter.connect("a") is None
    refused = counter.connect("a")
    assert refused is not None and refused.status == 429
    assert counter.connect("b") is None
    refused = counter.connect("c")
    assert refused is not None and refused.status == 503
    counter.disconnect("a")
    assert counter.connect("c") is None
    assert reasons == ["connections_per_client", "connections"] and counter.total == 3
