"""Live transfers in the hub and the live pipe (docs/protocol.md section 11), with no sockets and no event loop.

The hub is driven with plain values; the property tests add the data path (``Relay`` and its
``LivePipe``) with ``Recorder`` endpoints, which keep what a transport would have put on the wire.
"""

from __future__ import annotations

from hypothesis import example, given, settings
from hypothesis import strategies as st

from piping_server.core import (
    LIVE_ACCEPTED,
    AcceptSender,
    CutReceivers,
    DetachReceiver,
    DropReceiver,
    EndSender,
    Hub,
    JoinLive,
    PeerLost,
    ReceiverArrived,
    ReceiverFinished,
    ReceiverLagged,
    Reject,
    SenderArrived,
    StartLive,
    StartTransfer,
    TransferExpired,
    UploadEnded,
    UploadFailed,
    WaitExpired,
    WriteLine,
    live_joined,
    live_lagged,
    live_left,
    live_summary,
)
from piping_server.relay._flow import LivePipe, Pipe, Relay, UploadInfo
from piping_server.relay._headers import Headers


def lines(actions: list[object], peer: object) -> list[str]:
    return [a.line for a in actions if isinstance(a, WriteLine) and a.peer == peer]


def send(hub: Hub, peer: str, live: str | None = "", n: str | None = None, path: str = "/p") -> list[object]:
    return list(hub.handle(SenderArrived(peer=peer, path=path, method="PUT", n=n, live=live)))


def recv(hub: Hub, peer: str, live: str | None = None, n: str | None = None, path: str = "/p") -> list[object]:
    return list(hub.handle(ReceiverArrived(peer=peer, path=path, n=n, live=live)))


def reject(peer: str, message: str) -> list[object]:
    return [Reject(peer=peer, status=400, message=message + "\n")]


# --- the texts ------------------------------------------------------------------------------------------


def test_texts_are_pinned() -> None:
    """The exact lines of docs/protocol.md section 11, "Texts"."""
    assert LIVE_ACCEPTED == "[INFO] Live: receivers may join and leave at any time."
    assert live_joined(3) == "[INFO] A receiver joined (3 now)."
    assert live_left(0) == "[INFO] A receiver left (0 now)."
    assert live_lagged(1) == "[INFO] A receiver fell too far behind and was cut (1 now)."
    assert live_summary(2, 10) == "[INFO] Live ended: 2 receiver(s) served, 10 byte(s) sent."


# --- rules, one by one ------------------------------------------------------------------------------------


def test_live_sender_is_accepted_at_once_and_receivers_join_and_leave() -> None:
    hub = Hub()
    first = send(hub, "s")
    assert first == [
        AcceptSender(peer="s"),
        WriteLine(peer="s", line=LIVE_ACCEPTED + "\n"),
        StartLive(sender="s", receivers=()),
    ]
    assert hub.live_paths == 1 and hub.running_transfers == 1
    joined = recv(hub, "a")  # with or without ?live, any number
    assert joined == [JoinLive(sender="s", receiver="a"), WriteLine(peer="s", line=live_joined(1) + "\n")]
    assert lines(recv(hub, "b", live="1"), "s") == [live_joined(2) + "\n"]
    assert lines(recv(hub, "c", n="5"), "s") == [live_joined(3) + "\n"]
    assert hub.live_receivers == 3
    left = hub.handle(PeerLost(peer="b"))
    assert left == [DetachReceiver(peer="b"), WriteLine(peer="s", line=live_left(2) + "\n")]
    end = hub.handle(UploadEnded(peer="s", size=42))
    assert end == [WriteLine(peer="s", line=live_summary(3, 42) + "\n"), EndSender(peer="s", drop_upload=False)]
    assert not hub.is_busy("/p") and not hub.knows("a") and hub.live_paths == 0
    assert hub.handle(ReceiverFinished(peer="a")) == []  # the pipe ends them; the path is already free
    assert hub.transfers_finished == 1


def test_live_receivers_first_all_start_at_once() -> None:
    hub = Hub()
    assert recv(hub, "a", live="") == [] and recv(hub, "b", live="1") == []
    assert hub.waiting_receivers == 2 and hub.is_waiting("a")
    actions = send(hub, "s")
    assert lines(actions, "s") == [LIVE_ACCEPTED + "\n", live_joined(1) + "\n", live_joined(2) + "\n"]
    assert actions[-1] == StartLive(sender="s", receivers=("a", "b"))
    assert hub.is_transferring("a") and not hub.is_waiting("a")


def test_waiting_live_receiver_leaves_silently() -> None:
    hub = Hub()
    recv(hub, "a", live="")
    assert hub.handle(PeerLost(peer="a")) == []
    assert not hub.is_busy("/p") and not hub.knows("a")


def test_mismatches_each_way_name_both_modes() -> None:
    hub = Hub()
    recv(hub, "plain")
    assert send(hub, "s") == reject("s", "[ERROR] A live sender cannot join the ordinary transfer waiting on '/p'.")
    assert recv(hub, "r", live="") == reject(
        "r", "[ERROR] A live receiver cannot join the ordinary transfer waiting on '/p'."
    )
    hub = Hub()
    recv(hub, "lr", live="")
    assert send(hub, "s", live=None) == reject(
        "s", "[ERROR] An ordinary sender cannot join the live transfer waiting on '/p'."
    )
    assert recv(hub, "r") == reject("r", "[ERROR] An ordinary receiver cannot join the live transfer waiting on '/p'.")
    hub = Hub()
    send(hub, "os", live=None)
    assert recv(hub, "r", live="1") == reject(
        "r", "[ERROR] A live receiver cannot join the ordinary transfer waiting on '/p'."
    )
    assert send(hub, "s") == reject("s", "[ERROR] Another sender has been connected on '/p'.")


def test_busy_paths_and_second_live_sender() -> None:
    hub = Hub()
    send(hub, "s")
    established = "[ERROR] Connection on '/p' has been established already."
    assert send(hub, "s2") == reject("s2", established)
    assert send(hub, "s3", live=None) == reject("s3", established)
    hub = Hub()
    send(hub, "os", live=None)
    recv(hub, "or")
    assert send(hub, "s") == reject("s", established)
    assert recv(hub, "r", live="") == reject("r", established)


def test_bad_live_value_n_with_live_and_reserved_paths() -> None:
    hub = Hub()
    assert send(hub, "s", live="yes") == reject("s", '[ERROR] Invalid "live" query parameter')
    assert recv(hub, "r", live="0") == reject("r", '[ERROR] Invalid "live" query parameter')
    assert send(hub, "s", n="2") == reject("s", '[ERROR] "n" and "live" cannot be used together')
    assert recv(hub, "r", live="", n="1") == reject("r", '[ERROR] "n" and "live" cannot be used together')
    assert send(hub, "s", path="/help") == reject(
        "s", "[ERROR] Cannot send to the reserved path '/help'. (e.g. '/mypath123')"
    )
    assert not hub.is_busy("/p")


def test_receiver_limit() -> None:
    hub = Hub()
    hub.max_live_receivers = 1
    send(hub, "s")
    recv(hub, "a")
    assert recv(hub, "b") == reject("b", "[ERROR] The number of receivers has reached limits.")
    hub.handle(PeerLost(peer="a"))
    assert isinstance(recv(hub, "c")[0], JoinLive)


def test_lagging_receiver_is_dropped_and_counted() -> None:
    hub = Hub()
    send(hub, "s")
    recv(hub, "a")
    recv(hub, "b")
    actions = hub.handle(ReceiverLagged(peer="a"))
    assert actions == [
        DetachReceiver(peer="a"),
        DropReceiver(peer="a"),
        WriteLine(peer="s", line=live_lagged(1) + "\n"),
    ]
    assert hub.live_receivers_cut == 1 and not hub.knows("a")
    assert hub.handle(PeerLost(peer="a")) == []


def test_sender_breaks_cuts_everyone_and_frees() -> None:
    hub = Hub()
    send(hub, "s")
    recv(hub, "a")
    recv(hub, "b")
    actions = hub.handle(UploadFailed(peer="s", size=7))
    assert actions == [
        WriteLine(peer="s", line=live_summary(2, 7) + "\n"),
        WriteLine(peer="s", line="[ERROR] Failed to send.\n"),
        EndSender(peer="s", drop_upload=True),
        CutReceivers(receivers=("a", "b")),
    ]
    assert not hub.is_busy("/p")
    send(hub, "s2")
    recv(hub, "c")
    assert hub.handle(PeerLost(peer="s2")) == [CutReceivers(receivers=("c",))]
    assert not hub.is_busy("/p") and hub.transfers_aborted == 2


def test_operator_timers_reach_live_peers() -> None:
    hub = Hub()
    recv(hub, "a", live="")
    assert hub.waiting_peers() == ["a"]
    assert hub.handle(WaitExpired(peer="a", message="late\n")) == [Reject(peer="a", status=504, message="late\n")]
    assert not hub.is_busy("/p")
    send(hub, "s")
    recv(hub, "b")
    assert hub.transfers() == [("s", ("b",))]
    assert hub.handle(TransferExpired(peer="b", message="idle\n")) == [
        WriteLine(peer="s", line="idle\n"),
        EndSender(peer="s", drop_upload=True),
        CutReceivers(receivers=("b",)),
    ]
    assert not hub.is_busy("/p")


def test_ordinary_transfer_is_untouched_by_live() -> None:
    hub = Hub()
    send(hub, "s", live=None)
    assert recv(hub, "r")[-1] == StartTransfer(sender="s", receivers=("r",))


# --- the data path, with recording endpoints -----------------------------------------------------------------


def pattern(start: int, size: int) -> bytes:
    """The stream's bytes are a function of their offset, so any slice can be checked on its own."""
    return bytes((start + i) % 251 for i in range(size))


class Recorder:
    """An endpoint that keeps what a transport would have written; identity-hashed like the real ones."""

    def __init__(self, relay: Relay) -> None:
        self.relay = relay
        self.pipe: Pipe | None = None
        self.lines: list[str] = []
        self.status = 0
        self.offset: int | None = None
        self.body = bytearray()
        self.ending = ""  # "finished", "cut", "dropped", "rejected", "ended"
        self.upload_paused = False
        self.full = False
        self.pending = 0  # the backlog a transport would report
        self.stream_end = -1  # where the stream stood when this receiver was ended normally

    # sender side
    def reject(self, status: int, message: str) -> None:
        self.status, self.ending = status, "rejected"

    def accept_sender(self) -> None:
        self.status = 200

    def write_line(self, line: str) -> None:
        self.lines.append(line)

    def end_sender(self, *, drop_upload: bool) -> None:
        self.ending = "ended"

    def upload_info(self) -> UploadInfo:
        return UploadInfo(content_type=b"video/mp2t", content_length=None, content_disposition=None, x_piping=[])

    def start_upload(self, pipe: Pipe) -> None:
        pipe.begin()

    def pause_upload(self) -> None:
        self.upload_paused = True

    def resume_upload(self) -> None:
        self.upload_paused = False

    # receiver side
    def start_receiving(self, headers: Headers) -> None:
        found = dict(headers)
        assert b"content-length" not in found
        assert b"Piping-Live-Offset" in found[b"access-control-expose-headers"]
        self.status = 200
        self.offset = int(found[b"piping-live-offset"])

    def write_body(self, data: bytes | memoryview) -> None:
        assert not self.ending
        self.body += data
        if self.full:
            self.pending += len(data)

    def finish_body(self) -> None:
        self.ending = "finished"
        assert isinstance(self.pipe, LivePipe)
        self.stream_end = self.pipe.position
        self.relay.submit(ReceiverFinished(peer=self))

    def cut(self) -> None:
        self.ending = self.ending or "cut"

    def drop(self) -> None:
        self.ending = "dropped"

    def backlog(self) -> int:
        return self.pending


OPS = st.lists(
    st.tuples(
        st.sampled_from(
            ["join", "join_live", "send", "chunk", "leave", "fill", "drain", "tick", "end", "break", "lose"]
        ),
        st.integers(0, 7),
    ),
    max_size=60,
)


@settings(max_examples=300, deadline=None)
@given(OPS)
@example([("send", 0), ("join", 0), ("join", 0), ("fill", 4), ("chunk", 1), ("tick", 0), ("chunk", 7), ("end", 0)])
def test_random_live_sequences(script: list[tuple[int | str, int]]) -> None:
    """Whatever the order of arrivals, joins, leaves, stalls and ends: every receiver's bytes are the slice
    of the stream that starts at its offset, a finished receiver's slice ends where the stream ended,
    nothing read is lost while nobody listens, the sender is paused exactly when no receiver can take more,
    and once every peer is gone the hub holds nothing."""
    relay = Relay()
    relay.live_max_lag = 100
    timers: dict[int, object] = {}  # the harness's clock: "tick" fires every timer set so far

    def schedule(delay_s: float, callback: object) -> object:
        key = len(timers) + 1 + max(timers, default=0)
        timers[key] = callback
        return lambda: timers.pop(key, None)

    relay.scheduler = schedule  # type: ignore[assignment]
    hub = relay.hub
    sender: Recorder | None = None
    complete = False  # the sender's upload was read to its end
    receivers: list[Recorder] = []
    position = 0  # bytes of the current stream the sender has handed to its pipe
    gap_start = 0  # where the stream stood when the last present receiver left

    def present() -> list[Recorder]:
        return [r for r in receivers if r.offset is not None and not r.ending]

    for op, i in script:
        before = present()
        pipe = sender.pipe if sender is not None else None
        if op in ("join", "join_live"):
            r = Recorder(relay)
            receivers.append(r)
            relay.submit(ReceiverArrived(peer=r, path="/p", n=None, live="" if op == "join_live" else None))
            if r.offset is not None and not before:
                assert r.offset == gap_start, "bytes read while nobody listened go to the next receiver"
        elif op == "send" and sender is None:
            sender = Recorder(relay)
            relay.submit(SenderArrived(peer=sender, path="/p", method="PUT", n=None, live=""))
            if sender.status != 200:
                sender = None
            else:
                position = gap_start = 0
                complete = False
        elif op == "chunk" and sender is not None and isinstance(pipe, LivePipe) and not complete:
            size = i * 7 + 1
            pipe.feed(pattern(position, size))
            position += size
            assert not [r for r in present() if pipe.is_lagging(r) and r.backlog() > 100], "cut past the backlog"
        elif op in ("leave", "fill", "drain") and before:
            r = before[i % len(before)]
            if op == "leave":
                relay.submit(PeerLost(peer=r))
                r.ending = r.ending or "left"
            elif op == "fill" and isinstance(r.pipe, LivePipe) and not r.full:
                r.full = True
                r.pending = 20 * i  # past the lag of 100 for i > 5, or once more bytes come
                r.pipe.receiver_paused(r)
            elif op == "drain" and isinstance(r.pipe, LivePipe):
                r.full, r.pending = False, 0
                r.pipe.receiver_resumed(r)
        elif op == "tick":
            for key in list(timers):
                callback = timers.pop(key, None)
                if callback is not None:
                    callback()  # type: ignore[operator]
            if isinstance(pipe, LivePipe) and sender is not None and not sender.ending:
                now = present()
                if any(not r.full for r in now):
                    assert not [r for r in now if r.full and not pipe.is_lagging(r)], "nobody held back past grace"
        elif op in ("end", "break", "lose") and sender is not None and isinstance(pipe, LivePipe):
            if op == "end" and not complete:
                complete = True
                pipe.upload_complete()
            elif op == "break" and not complete:
                pipe.fail()
            elif op == "lose":
                relay.submit(PeerLost(peer=sender))
                sender.ending = sender.ending or "lost"
        if sender is not None and sender.ending:
            sender = None
        if before and not present():
            gap_start = position
        # pacing (section 11): paused when nobody listens, or while a full receiver still sets the pace
        live_pipe = sender.pipe if sender is not None else None
        if sender is not None and isinstance(live_pipe, LivePipe):
            now = present()
            assert sender.upload_paused == (not now or any(r.full and not live_pipe.is_lagging(r) for r in now))
    assert hub.live_paths <= 1
    ended_normally = hub.transfers_finished >= 1
    for r in receivers:
        if r.offset is None:
            continue
        assert bytes(r.body) == pattern(r.offset, len(r.body)), "a contiguous slice from its offset"
        if r.ending == "finished":
            assert ended_normally, "only the stream's end ends a receiver normally"
            assert r.offset + len(r.body) == r.stream_end, "a finished receiver ends where the stream ended"
        if r.ending == "dropped":
            assert hub.live_receivers_cut > 0
    for peer in [*receivers, *([sender] if sender is not None else [])]:
        relay.submit(PeerLost(peer=peer))
    assert not hub.is_busy("/p")
    assert hub.waiting_receivers == hub.running_transfers == hub.live_receivers == 0
    assert not any(hub.knows(p) for p in receivers)
