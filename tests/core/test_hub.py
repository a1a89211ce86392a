"""The rendezvous core alone: plain values in, actions out, no sockets and no event loop."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from piping_server.core import (
    AcceptSender,
    CutReceivers,
    DetachReceiver,
    EndSender,
    Hub,
    PeerLost,
    ReceiverArrived,
    ReceiverFinished,
    Reject,
    SenderArrived,
    StartTransfer,
    UploadEnded,
    UploadFailed,
    WriteLine,
)


def lines(actions: list[object], peer: object) -> list[str]:
    return [a.line for a in actions if isinstance(a, WriteLine) and a.peer == peer]


def send(hub: Hub, peer: str, path: str = "/p", n: str | None = None, method: str = "POST") -> list[object]:
    return list(hub.handle(SenderArrived(peer=peer, path=path, method=method, n=n)))


def recv(hub: Hub, peer: str, path: str = "/p", n: str | None = None) -> list[object]:
    return list(hub.handle(ReceiverArrived(peer=peer, path=path, n=n)))


def test_sender_first_then_receiver_starts_transfer() -> None:
    hub = Hub()
    first = send(hub, "s")
    assert first[0] == AcceptSender(peer="s")
    assert lines(first, "s") == ["[INFO] Waiting for 1 receiver(s)...\n"]
    second = recv(hub, "r")
    assert lines(second, "s") == ["[INFO] A receiver was connected.\n", "[INFO] Start sending to 1 receiver(s)!\n"]
    assert second[-1] == StartTransfer(sender="s", receivers=("r",))
    assert hub.running_transfers == 1 and hub.waiting_senders == 0


def test_receivers_first_then_sender() -> None:
    hub = Hub()
    assert recv(hub, "r1", n="2") == []
    assert recv(hub, "r2", n="2") == []
    actions = send(hub, "s", n="2")
    assert lines(actions, "s") == [
        "[INFO] Waiting for 2 receiver(s)...\n",
        "[INFO] 2 receiver(s) has/have been connected.\n",
        "[INFO] Start sending to 2 receiver(s)!\n",
    ]
    assert actions[-1] == StartTransfer(sender="s", receivers=("r1", "r2"))


def test_full_success_lifecycle_frees_path() -> None:
    hub = Hub()
    send(hub, "s", n="2")
    recv(hub, "a", n="2")
    recv(hub, "b", n="2")
    assert lines(hub.handle(UploadEnded(peer="s")), "s") == ["[INFO] Sent successfully!\n"]
    assert hub.handle(ReceiverFinished(peer="a")) == []
    end = hub.handle(ReceiverFinished(peer="b"))
    assert lines(end, "s") == ["[INFO] All receiver(s) was/were received successfully.\n"]
    assert EndSender(peer="s", drop_upload=False) in end
    assert not hub.is_busy("/p")
    assert not hub.knows("s") and not hub.knows("a")


def test_path_state_follows_the_path_and_is_only_read() -> None:
    """docs/protocol.md section 12: what a question is told; asking changes nothing."""
    hub = Hub()
    assert hub.path_state("/p") == "free"
    assert not hub.is_busy("/p")  # a question is no party: the path stays free
    send(hub, "s", n="2")
    assert hub.path_state("/p") == "waiting"
    recv(hub, "a", n="2")
    assert hub.path_state("/p") == "waiting"  # one receiver of two: still waiting, n not told
    assert hub.path_state("/other") == "free"
    recv(hub, "b", n="2")
    assert hub.path_state("/p") == "running"
    hub.handle(PeerLost(peer="s"))
    assert hub.path_state("/p") == "free"
    recv(hub, "r")  # receivers first
    assert hub.path_state("/p") == "waiting"
    hub.handle(PeerLost(peer="r"))
    assert hub.path_state("/p") == "free"
    hub.handle(ReceiverArrived(peer="lr", path="/p", n=None, live=""))  # a live receiver waits for its sender
    assert hub.path_state("/p") == "waiting"
    hub.handle(SenderArrived(peer="ls", path="/p", method="POST", n=None, live=""))
    assert hub.path_state("/p") == "live"
    hub.handle(PeerLost(peer="ls"))
    hub.handle(PeerLost(peer="lr"))
    assert hub.path_state("/p") == "free"


@pytest.mark.parametrize(
    ("n", "message"),
    [
        ("abc", '[ERROR] Invalid "n" query parameter\n'),
        ("", '[ERROR] Invalid "n" query parameter\n'),
        ("0", "[ERROR] n should > 0, but n = 0.\n"),
        ("-3", "[ERROR] n should > 0, but n = -3.\n"),
    ],
)
def test_sender_bad_n(n: str, message: str) -> None:
    assert send(Hub(), "s", n=n) == [Reject(peer="s", status=400, message=message)]


def test_receiver_bad_n_has_its_own_wording() -> None:
    assert recv(Hub(), "r", n="x") == [Reject(peer="r", status=400, message='[ERROR] Invalid query parameter "n"\n')]


def test_n_is_read_like_parseint() -> None:
    hub = Hub()
    send(hub, "s", n="3abc")
    assert lines(recv(hub, "r", n="3.9"), "s") == ["[INFO] A receiver was connected.\n"]


def test_sender_errors_in_order() -> None:
    hub = Hub()
    assert send(hub, "s", path="/help")[0] == Reject(
        peer="s", status=400, message="[ERROR] Cannot send to the reserved path '/help'. (e.g. '/mypath123')\n"
    )
    ranged = hub.handle(SenderArrived(peer="s", path="/help", method="PUT", n="x", has_content_range=True))
    assert "reserved path" in ranged[0].message  # type: ignore[union-attr]
    ranged = hub.handle(SenderArrived(peer="s", path="/q", method="PUT", n="x", has_content_range=True))
    assert ranged == [Reject(peer="s", status=400, message="[ERROR] Content-Range is not supported for now in PUT\n")]
    send(hub, "s1")
    assert send(hub, "s2") == [
        Reject(peer="s2", status=400, message="[ERROR] Another sender has been connected on '/p'.\n")
    ]
    recv(hub, "r")
    assert send(hub, "s3") == [
        Reject(peer="s3", status=400, message="[ERROR] Connection on '/p' has been established already.\n")
    ]
    assert recv(hub, "r2") == [
        Reject(peer="r2", status=400, message="[ERROR] Connection on '/p' has been established already.\n")
    ]


def test_n_mismatch_and_limit() -> None:
    hub = Hub()
    recv(hub, "r1", n="2")
    assert send(hub, "s", n="3") == [
        Reject(peer="s", status=400, message="[ERROR] The number of receivers should be 2 but 3.\n")
    ]
    assert recv(hub, "r9", n="1")[0].message == "[ERROR] The number of receivers should be 2 but 1.\n"  # type: ignore[union-attr]
    recv(hub, "r2", n="2")
    assert recv(hub, "r3", n="2") == [
        Reject(peer="r3", status=400, message="[ERROR] The number of receivers has reached limits.\n")
    ]


def test_service_worker_rejected() -> None:
    actions = Hub().handle(ReceiverArrived(peer="r", path="/p", n=None, is_service_worker=True))
    assert actions == [Reject(peer="r", status=400, message="[ERROR] Service Worker registration is rejected.\n")]


def test_waiting_peer_lost_frees_path_and_only_that_peer() -> None:
    hub = Hub()
    send(hub, "old")
    assert hub.handle(PeerLost(peer="old")) == []
    assert not hub.is_busy("/p")
    send(hub, "new")
    # a late, repeated loss of the old sender must not evict the new one
    assert hub.handle(PeerLost(peer="old")) == []
    assert hub.waiting_senders == 1
    assert recv(hub, "r")[-1] == StartTransfer(sender="new", receivers=("r",))


def test_receiver_abort_mid_transfer() -> None:
    hub = Hub()
    send(hub, "s", n="2")
    recv(hub, "a", n="2")
    recv(hub, "b", n="2")
    first = hub.handle(PeerLost(peer="a"))
    assert DetachReceiver(peer="a") in first
    assert lines(first, "s") == ["[INFO] A receiver aborted.\n"]
    assert hub.is_busy("/p")
    last = hub.handle(PeerLost(peer="b"))
    assert lines(last, "s") == ["[INFO] A receiver aborted.\n", "[INFO] All receiver(s) was/were aborted halfway.\n"]
    assert EndSender(peer="s", drop_upload=True) in last
    assert not hub.is_busy("/p")


def test_one_of_two_receivers_leaves_the_other_finishes() -> None:
    hub = Hub()
    send(hub, "s", n="2")
    recv(hub, "a", n="2")
    recv(hub, "b", n="2")
    hub.handle(PeerLost(peer="a"))
    hub.handle(UploadEnded(peer="s"))
    end = hub.handle(ReceiverFinished(peer="b"))
    assert lines(end, "s") == ["[INFO] All receiver(s) was/were received successfully.\n"]
    assert not hub.is_busy("/p")


def test_sender_lost_mid_transfer_cuts_receivers() -> None:
    hub = Hub()
    send(hub, "s", n="2")
    recv(hub, "a", n="2")
    recv(hub, "b", n="2")
    assert hub.handle(PeerLost(peer="s")) == [CutReceivers(receivers=("a", "b"))]
    assert not hub.is_busy("/p")
    assert hub.handle(PeerLost(peer="a")) == []


def test_upload_failed_reports_and_cuts() -> None:
    hub = Hub()
    send(hub, "s")
    recv(hub, "r")
    actions = hub.handle(UploadFailed(peer="s"))
    assert actions == [
        WriteLine(peer="s", line="[ERROR] Failed to send.\n"),
        EndSender(peer="s", drop_upload=True),
        CutReceivers(receivers=("r",)),
    ]
    assert not hub.is_busy("/p")


def test_sender_gone_after_whole_upload_does_not_cut() -> None:
    hub = Hub()
    send(hub, "s")
    recv(hub, "r")
    hub.handle(UploadEnded(peer="s"))
    assert hub.handle(PeerLost(peer="s")) == []
    assert hub.handle(ReceiverFinished(peer="r")) == []
    assert not hub.is_busy("/p")


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["send", "recv", "lose", "end", "fin"]), st.integers(0, 5)), max_size=40))
def test_random_sequences_never_leak_state(script: list[tuple[str, int]]) -> None:
    """Whatever happens, when every peer is gone the hub holds nothing."""
    hub = Hub()
    peers: set[str] = set()
    for op, i in script:
        # a peer is one request: a sender or a receiver, never both
        peer = f"s{i}" if op in ("send", "end") or (op == "lose" and i % 2) else f"r{i}"
        if op == "send":
            hub.handle(SenderArrived(peer=peer, path=f"/{i % 2}", method="PUT", n=None))
        elif op == "recv":
            hub.handle(ReceiverArrived(peer=peer, path=f"/{i % 2}", n=None))
        elif op == "lose":
            hub.handle(PeerLost(peer=peer))
        elif op == "end":
            hub.handle(UploadEnded(peer=peer))
        else:
            hub.handle(ReceiverFinished(peer=peer))
        peers.add(peer)
    for peer in sorted(peers):
        hub.handle(PeerLost(peer=peer))
    assert hub.waiting_senders == hub.waiting_receivers == hub.running_transfers == 0
    assert not any(hub.knows(p) for p in peers)
    assert hub.path_state("/0") == hub.path_state("/1") == "free"
