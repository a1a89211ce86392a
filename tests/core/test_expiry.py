"""The operator's expiry events (WaitExpired, TransferExpired): pure, no clock, no sockets."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from piping_server.core import (
    CutReceivers,
    EndSender,
    Hub,
    PeerLost,
    ReceiverArrived,
    ReceiverFinished,
    Reject,
    SenderArrived,
    StartTransfer,
    TransferExpired,
    UploadEnded,
    WaitExpired,
    WriteLine,
)

TIMEOUT = "[ERROR] Timed out: the transfer did not start within 5 second(s).\n"
IDLE = "[ERROR] Timed out: no data moved for 5 second(s).\n"


def send(hub: Hub, peer: str, path: str = "/p", n: str | None = None) -> list[object]:
    return list(hub.handle(SenderArrived(peer=peer, path=path, method="POST", n=n)))


def recv(hub: Hub, peer: str, path: str = "/p", n: str | None = None) -> list[object]:
    return list(hub.handle(ReceiverArrived(peer=peer, path=path, n=n)))


def test_waiting_sender_expires_with_a_line_and_its_upload_dropped() -> None:
    hub = Hub()
    send(hub, "s")
    assert hub.is_waiting("s") and hub.waiting_peers() == ["s"]
    assert hub.handle(WaitExpired(peer="s", message=TIMEOUT)) == [
        WriteLine(peer="s", line=TIMEOUT),
        EndSender(peer="s", drop_upload=True),
    ]
    assert not hub.is_busy("/p") and not hub.knows("s")
    # the path is free again: a new sender is accepted
    assert isinstance(send(hub, "s2")[0], type(send(Hub(), "x")[0]))


def test_waiting_receiver_expires_with_its_status() -> None:
    hub = Hub()
    recv(hub, "r")
    assert hub.handle(WaitExpired(peer="r", message=TIMEOUT, status=504)) == [
        Reject(peer="r", status=504, message=TIMEOUT)
    ]
    assert not hub.is_busy("/p") and hub.waiting_receivers == 0


def test_one_expired_receiver_leaves_the_others_waiting_and_tells_nobody() -> None:
    hub = Hub()
    send(hub, "s", n="3")
    recv(hub, "r1", n="3")
    recv(hub, "r2", n="3")
    assert hub.handle(WaitExpired(peer="r1", message=TIMEOUT)) == [Reject(peer="r1", status=504, message=TIMEOUT)]
    assert hub.waiting_receivers == 1 and hub.is_waiting("s") and hub.is_waiting("r2")
    # two more receivers complete the transfer
    recv(hub, "r3", n="3")
    actions = recv(hub, "r4", n="3")
    assert actions[-1] == StartTransfer(sender="s", receivers=("r2", "r3", "r4"))


def test_expired_sender_keeps_waiting_receivers() -> None:
    hub = Hub()
    recv(hub, "r1", n="2")
    send(hub, "s", n="2")
    assert hub.handle(WaitExpired(peer="s", message=TIMEOUT))[-1] == EndSender(peer="s", drop_upload=True)
    assert hub.waiting_senders == 0 and hub.waiting_receivers == 1 and hub.is_waiting("r1")


@pytest.mark.parametrize("peer", ["s", "r", "nobody"])
def test_wait_expired_on_a_peer_no_longer_waiting_does_nothing(peer: str) -> None:
    hub = Hub()
    send(hub, "s")
    recv(hub, "r")  # the transfer started: the timer lost the race
    assert hub.handle(WaitExpired(peer=peer, message=TIMEOUT)) == []
    assert hub.running_transfers == 1


def test_wait_expired_after_the_peer_left_does_nothing() -> None:
    hub = Hub()
    send(hub, "s")
    hub.handle(PeerLost(peer="s"))
    assert hub.handle(WaitExpired(peer="s", message=TIMEOUT)) == []


def test_transfer_expired_cuts_receivers_like_a_broken_upload() -> None:
    hub = Hub()
    send(hub, "s", n="2")
    recv(hub, "r1", n="2")
    recv(hub, "r2", n="2")
    assert hub.is_transferring("r1") and hub.transfers() == [("s", ("r1", "r2"))]
    assert hub.handle(TransferExpired(peer="r2", message=IDLE)) == [
        WriteLine(peer="s", line=IDLE),
        EndSender(peer="s", drop_upload=True),
        CutReceivers(receivers=("r1", "r2")),
    ]
    assert not hub.is_busy("/p") and hub.transfers_aborted == 1 and hub.transfers_finished == 0


def test_transfer_expired_after_the_sender_left_cuts_only_unfinished_receivers() -> None:
    hub = Hub()
    send(hub, "s", n="2")
    recv(hub, "r1", n="2")
    recv(hub, "r2", n="2")
    hub.handle(UploadEnded(peer="s"))
    hub.handle(PeerLost(peer="s"))
    hub.handle(ReceiverFinished(peer="r1"))
    assert hub.handle(TransferExpired(peer="r2", message=IDLE)) == [CutReceivers(receivers=("r2",))]
    assert hub.transfers_aborted == 1


def test_transfer_expired_on_a_waiting_or_unknown_peer_does_nothing() -> None:
    hub = Hub()
    send(hub, "s")
    assert hub.handle(TransferExpired(peer="s", message=IDLE)) == []
    assert hub.handle(TransferExpired(peer="x", message=IDLE)) == []
    assert hub.is_waiting("s")


def test_outcome_counters() -> None:
    hub = Hub()
    send(hub, "s")
    recv(hub, "r")
    hub.handle(UploadEnded(peer="s"))
    hub.handle(ReceiverFinished(peer="r"))
    send(hub, "s2")
    recv(hub, "r2")
    hub.handle(PeerLost(peer="r2"))  # every receiver aborted
    send(hub, "s3")
    recv(hub, "r3")
    hub.handle(PeerLost(peer="s3"))  # the upload broke
    assert (hub.transfers_finished, hub.transfers_aborted) == (1, 2)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(["send", "recv", "lose", "end", "fin", "wait", "idle"]), st.integers(0, 5)),
        max_size=40,
    )
)
def test_expiry_never_leaks_state(script: list[tuple[str, int]]) -> None:
    """With expiries mixed in anywhere, when every peer is gone the hub holds nothing."""
    hub = Hub()
    peers: set[str] = set()
    for op, i in script:
        peer = f"s{i}" if op in ("send", "end") or (op in ("lose", "wait", "idle") and i % 2) else f"r{i}"
        if op in ("send", "recv") and peer in peers:
            continue  # a peer is one request: it arrives once
        if op == "send":
            hub.handle(SenderArrived(peer=peer, path=f"/{i % 2}", method="PUT", n="2"))
        elif op == "recv":
            hub.handle(ReceiverArrived(peer=peer, path=f"/{i % 2}", n="2"))
        elif op == "lose":
            hub.handle(PeerLost(peer=peer))
        elif op == "end":
            hub.handle(UploadEnded(peer=peer))
        elif op == "fin":
            hub.handle(ReceiverFinished(peer=peer))
        elif op == "wait":
            hub.handle(WaitExpired(peer=peer, message=TIMEOUT))
        else:
            hub.handle(TransferExpired(peer=peer, message=IDLE))
        peers.add(peer)
        assert hub.waiting_senders + hub.waiting_receivers == len(hub.waiting_peers())
    for peer in sorted(peers):
        hub.handle(PeerLost(peer=peer))
    assert hub.waiting_senders == hub.waiting_receivers == hub.running_transfers == 0
    assert not any(hub.knows(p) for p in peers)
