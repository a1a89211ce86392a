"""The rendezvous of senders and receivers: paths, waiting, ``n`` and the transfer lifecycle.

Theory of operation
-------------------
Each path is in one of three states:

* *free*: no entry at all;
* *waiting* (``_Waiting``): a sender and/or receivers have arrived, fewer than the transfer needs;
* *running* (``_Transfer``): the sender and its ``n`` receivers are joined; the path is taken;
* *live* (``_Live``, docs/protocol.md section 11): receivers that asked for ``?live`` wait for a live
  sender (no sender yet), or a live sender streams to whoever is there, receivers joining and
  leaving at any time; the sender is there from its arrival to its end.

The hub is driven by ``handle(event)`` and answers with the actions the transport must carry out,
in order. It performs no I/O, keeps no clock and imports nothing from HTTP: the same hub serves
HTTP/1.x and HTTP/2 peers at once, and the tests drive it with plain values.

Bytes never pass through the hub. Once ``StartTransfer`` is emitted, the transport's pipe moves the
body; the hub only hears about the ends (``UploadEnded``, ``UploadFailed``, ``ReceiverFinished``,
``PeerLost``) and turns them into progress lines and endings. Every ending frees the path at once.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

from ._events import (
    AcceptSender,
    Action,
    CutReceivers,
    DetachReceiver,
    DropReceiver,
    EndSender,
    Event,
    JoinLive,
    Peer,
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
)
from ._paths import parse_n

#: Paths that serve pages and can never carry a transfer (docs/protocol.md section 2).
RESERVED_PATHS: Final = frozenset({"/", "/noscript", "/version", "/help", "/favicon.ico", "/robots.txt"})


def is_reserved(path: str) -> bool:
    return path in RESERVED_PATHS


# --- the texts of live transfers (docs/protocol.md section 11, "Texts") ---------------------------------------

LIVE_ACCEPTED: Final = "[INFO] Live: receivers may join and leave at any time."


def live_joined(now: int) -> str:
    return f"[INFO] A receiver joined ({now} now)."


def live_left(now: int) -> str:
    return f"[INFO] A receiver left ({now} now)."


def live_lagged(now: int) -> str:
    return f"[INFO] A receiver fell too far behind and was cut ({now} now)."


def live_summary(served: int, size: int) -> str:
    return f"[INFO] Live ended: {served} receiver(s) served, {size} byte(s) sent."


def _is_live_value(raw: str) -> bool:
    # ``?live`` and ``?live=1``; anything else is a mistake worth telling (section 11)
    return raw in ("", "1")


class _Waiting:
    __slots__ = ("n", "sender", "receivers")

    def __init__(self, n: int) -> None:
        self.n = n
        self.sender: Peer | None = None
        self.receivers: list[Peer] = []


class _Transfer:
    __slots__ = ("path", "sender", "receivers", "active", "finished", "aborted", "upload_ended")

    def __init__(self, path: str, sender: Peer, receivers: tuple[Peer, ...]) -> None:
        self.path = path
        self.sender = sender
        self.receivers = receivers
        self.active: set[Peer] = set(receivers)
        self.finished = 0
        self.aborted = 0
        self.upload_ended = False


class _Live:
    __slots__ = ("path", "sender", "receivers", "served")

    def __init__(self, path: str) -> None:
        self.path = path
        self.sender: Peer | None = None  # None: ``?live`` receivers wait for their sender
        self.receivers: list[Peer] = []  # present now, in arrival order
        self.served = 0  # receivers that ever joined the stream


class Hub:
    """All paths of one server. Not thread-safe: call it from the event loop's thread only."""

    def __init__(self) -> None:
        self._waiting: dict[str, _Waiting] = {}
        self._running: dict[str, _Transfer] = {}
        self._live: dict[str, _Live] = {}
        # peer -> the path it is registered on, for PeerLost and the end events
        self._where: dict[Peer, str] = {}
        self._handlers: dict[type[Any], Callable[[Any], list[Action]]] = {
            SenderArrived: self._sender_arrived,
            ReceiverArrived: self._receiver_arrived,
            UploadEnded: self._upload_ended,
            UploadFailed: self._upload_failed,
            ReceiverFinished: self._receiver_finished,
            PeerLost: self._peer_lost,
            WaitExpired: self._wait_expired,
            TransferExpired: self._transfer_expired,
            ReceiverLagged: self._receiver_lagged,
        }
        #: transfers ended with at least one receiver served completely, and the others (cut, all aborted)
        self.transfers_finished = 0
        self.transfers_aborted = 0
        #: receivers of live transfers cut for falling too far behind
        self.live_receivers_cut = 0
        #: the most receivers one live path may have at once (the operator's limit); None: no limit
        self.max_live_receivers: int | None = None

    # --- introspection (metrics, tests) ---------------------------------------------------------

    @property
    def waiting_senders(self) -> int:
        return sum(1 for w in self._waiting.values() if w.sender is not None)

    @property
    def waiting_receivers(self) -> int:
        waiting_live = sum(len(v.receivers) for v in self._live.values() if v.sender is None)
        return sum(len(w.receivers) for w in self._waiting.values()) + waiting_live

    @property
    def running_transfers(self) -> int:
        """Transfers under way, live ones included."""
        return len(self._running) + self.live_paths

    @property
    def live_paths(self) -> int:
        """Paths a live sender streams on."""
        return sum(1 for v in self._live.values() if v.sender is not None)

    @property
    def live_receivers(self) -> int:
        """Receivers joined to a live sender now."""
        return sum(len(v.receivers) for v in self._live.values() if v.sender is not None)

    def live_audience(self, sender: Peer) -> int | None:
        """How many receivers ``sender``'s live transfer has now; None when it is not a live sender."""
        live = self._live_of(sender)
        if live is None or live.sender != sender:
            return None
        return len(live.receivers)

    def is_busy(self, path: str) -> bool:
        return path in self._waiting or path in self._running or path in self._live

    def path_state(self, path: str) -> str:
        """What a question about ``path`` is told (docs/protocol.md section 12): "free", "waiting" (a
        sender and/or receivers, fewer than the transfer needs; ``?live`` receivers waiting for their
        sender too), "running" (a transfer is under way) or "live" (a live sender streams). Never more:
        not who waits, nor ``n``, nor how many."""
        if path in self._running:
            return "running"
        live = self._live.get(path)
        if live is not None:
            return "waiting" if live.sender is None else "live"
        return "waiting" if path in self._waiting else "free"

    def knows(self, peer: Peer) -> bool:
        return peer in self._where

    def is_waiting(self, peer: Peer) -> bool:
        """Whether ``peer`` is a sender or receiver still waiting for its transfer to start."""
        path = self._where.get(peer)
        if path is None:
            return False
        live = self._live.get(path)
        return path in self._waiting or (live is not None and live.sender is None and peer in live.receivers)

    def is_transferring(self, peer: Peer) -> bool:
        """Whether ``peer`` belongs to a running transfer (as its sender or one of its receivers)."""
        live = self._live_of(peer)
        return self._transfer_of(peer) is not None or (live is not None and live.sender is not None)

    def waiting_peers(self) -> list[Peer]:
        """Every waiting sender and receiver, senders of a path before its receivers."""
        peers: list[Peer] = []
        for waiting in self._waiting.values():
            if waiting.sender is not None:
                peers.append(waiting.sender)
            peers.extend(waiting.receivers)
        for live in self._live.values():
            if live.sender is None:
                peers.extend(live.receivers)
        return peers

    def transfers(self) -> list[tuple[Peer, tuple[Peer, ...]]]:
        """The sender and receivers of every running transfer, live ones included."""
        running = [(t.sender, t.receivers) for t in self._running.values()]
        return running + [(v.sender, tuple(v.receivers)) for v in self._live.values() if v.sender is not None]

    # --- the one entry point ----------------------------------------------------------------------

    def handle(self, event: Event) -> list[Action]:
        """Apply one event and return the actions to carry out, in order."""
        return self._handlers[type(event)](event)

    # --- arrivals -----------------------------------------------------------------------------------

    def _sender_arrived(self, ev: SenderArrived) -> list[Action]:
        path = ev.path
        if is_reserved(path):
            return [_reject(ev.peer, f"[ERROR] Cannot send to the reserved path '{path}'. (e.g. '/mypath123')")]
        if ev.has_content_range:
            return [_reject(ev.peer, f"[ERROR] Content-Range is not supported for now in {ev.method}")]
        if ev.live is not None:
            refusal = _live_refusal(ev.peer, ev.live, ev.n)
            return [refusal] if refusal is not None else self._live_sender_arrived(ev)
        n = parse_n(ev.n)
        if n is None:
            return [_reject(ev.peer, '[ERROR] Invalid "n" query parameter')]
        if n <= 0:
            return [_reject(ev.peer, f"[ERROR] n should > 0, but n = {n}.")]
        live = self._live.get(path)
        if path in self._running or (live is not None and live.sender is not None):
            return [_reject(ev.peer, f"[ERROR] Connection on '{path}' has been established already.")]
        if live is not None:
            return [_mismatch(ev.peer, "An ordinary sender", "live", path)]
        waiting = self._waiting.get(path)
        if waiting is None:
            waiting = self._waiting[path] = _Waiting(n)
            waiting.sender = ev.peer
            self._where[ev.peer] = path
            return [AcceptSender(peer=ev.peer), _line(ev.peer, f"[INFO] Waiting for {n} receiver(s)...")]
        if waiting.sender is not None:
            return [_reject(ev.peer, f"[ERROR] Another sender has been connected on '{path}'.")]
        if n != waiting.n:
            return [_reject(ev.peer, f"[ERROR] The number of receivers should be {waiting.n} but {n}.")]
        waiting.sender = ev.peer
        self._where[ev.peer] = path
        actions: list[Action] = [
            AcceptSender(peer=ev.peer),
            _line(ev.peer, f"[INFO] Waiting for {n} receiver(s)..."),
            _line(ev.peer, f"[INFO] {len(waiting.receivers)} receiver(s) has/have been connected."),
        ]
        return actions + self._start_if_complete(path, waiting)

    def _receiver_arrived(self, ev: ReceiverArrived) -> list[Action]:
        path = ev.path
        if ev.is_service_worker:
            return [_reject(ev.peer, "[ERROR] Service Worker registration is rejected.")]
        if ev.live is not None:
            refusal = _live_refusal(ev.peer, ev.live, ev.n)
            if refusal is not None:
                return [refusal]
        n = parse_n(ev.n)
        if n is None:
            return [_reject(ev.peer, '[ERROR] Invalid query parameter "n"')]
        if n <= 0:
            return [_reject(ev.peer, f"[ERROR] n should > 0, but n = {n}.")]
        if path in self._live or ev.live is not None:
            return self._live_receiver_arrived(ev)
        if path in self._running:
            return [_reject(ev.peer, f"[ERROR] Connection on '{path}' has been established already.")]
        waiting = self._waiting.get(path)
        if waiting is None:
            waiting = self._waiting[path] = _Waiting(n)
            waiting.receivers.append(ev.peer)
            self._where[ev.peer] = path
            return self._start_if_complete(path, waiting)
        if n != waiting.n:
            return [_reject(ev.peer, f"[ERROR] The number of receivers should be {waiting.n} but {n}.")]
        if len(waiting.receivers) == waiting.n:
            return [_reject(ev.peer, "[ERROR] The number of receivers has reached limits.")]
        waiting.receivers.append(ev.peer)
        self._where[ev.peer] = path
        actions: list[Action] = []
        if waiting.sender is not None:
            actions.append(_line(waiting.sender, "[INFO] A receiver was connected."))
        return actions + self._start_if_complete(path, waiting)

    def _start_if_complete(self, path: str, waiting: _Waiting) -> list[Action]:
        if waiting.sender is None or len(waiting.receivers) != waiting.n:
            return []
        del self._waiting[path]
        receivers = tuple(waiting.receivers)
        self._running[path] = _Transfer(path, waiting.sender, receivers)
        return [
            _line(waiting.sender, f"[INFO] Start sending to {len(receivers)} receiver(s)!"),
            StartTransfer(sender=waiting.sender, receivers=receivers),
        ]

    # --- live transfers (docs/protocol.md section 11) ---------------------------------------------------

    def _live_sender_arrived(self, ev: SenderArrived) -> list[Action]:
        path, peer = ev.path, ev.peer
        live = self._live.get(path)
        if path in self._running or (live is not None and live.sender is not None):
            return [_reject(peer, f"[ERROR] Connection on '{path}' has been established already.")]
        waiting = self._waiting.get(path)
        if waiting is not None:
            if waiting.sender is not None:
                return [_reject(peer, f"[ERROR] Another sender has been connected on '{path}'.")]
            return [_mismatch(peer, "A live sender", "ordinary", path)]
        if live is None:
            live = self._live[path] = _Live(path)
        live.sender = peer
        self._where[peer] = path
        receivers = tuple(live.receivers)
        live.served = len(receivers)
        actions: list[Action] = [AcceptSender(peer=peer), _line(peer, LIVE_ACCEPTED)]
        actions += [_line(peer, live_joined(i)) for i in range(1, len(receivers) + 1)]
        actions.append(StartLive(sender=peer, receivers=receivers))
        return actions

    def _live_receiver_arrived(self, ev: ReceiverArrived) -> list[Action]:
        path, peer = ev.path, ev.peer
        live = self._live.get(path)
        if live is None:
            # a ``?live`` receiver on a path without a live sender: it waits for one
            if path in self._running:
                return [_reject(peer, f"[ERROR] Connection on '{path}' has been established already.")]
            if path in self._waiting:
                return [_mismatch(peer, "A live receiver", "ordinary", path)]
            live = self._live[path] = _Live(path)
        elif live.sender is None and ev.live is None:
            return [_mismatch(peer, "An ordinary receiver", "live", path)]
        limit = self.max_live_receivers
        if limit is not None and len(live.receivers) >= limit:
            if not live.receivers and live.sender is None:
                del self._live[path]  # a limit of 0 refuses the first one too
            return [_reject(peer, "[ERROR] The number of receivers has reached limits.")]
        live.receivers.append(peer)
        self._where[peer] = path
        if live.sender is None:
            return []
        live.served += 1
        return [JoinLive(sender=live.sender, receiver=peer), _line(live.sender, live_joined(len(live.receivers)))]

    def _live_of(self, peer: Peer) -> _Live | None:
        """The live path ``peer`` is the sender or a present receiver of, if any."""
        path = self._where.get(peer)
        if path is None:
            return None
        live = self._live.get(path)
        if live is None or (peer != live.sender and peer not in live.receivers):
            return None
        return live

    def _live_ended(self, live: _Live, ev: UploadEnded | UploadFailed) -> list[Action]:
        sender = ev.peer
        receivers = tuple(live.receivers)
        self._free_live(live, ok=isinstance(ev, UploadEnded))
        summary = _line(sender, live_summary(live.served, ev.size))
        if isinstance(ev, UploadEnded):
            # the pipe ends every receiver's response normally; the path is free at once
            return [summary, EndSender(peer=sender, drop_upload=False)]
        return [
            summary,
            _line(sender, "[ERROR] Failed to send."),
            EndSender(peer=sender, drop_upload=True),
            CutReceivers(receivers=receivers),
        ]

    def _live_peer_gone(self, live: _Live, peer: Peer) -> list[Action]:
        """A sender or receiver of a live path left (lost, or a receiver done)."""
        if peer == live.sender:
            receivers = tuple(live.receivers)
            self._free_live(live, ok=False)
            return [CutReceivers(receivers=receivers)] if receivers else []
        live.receivers.remove(peer)
        del self._where[peer]
        if live.sender is None:
            # a waiting ``?live`` receiver left: forgotten, nothing told (section 8)
            if not live.receivers:
                del self._live[live.path]
            return []
        return [DetachReceiver(peer=peer), _line(live.sender, live_left(len(live.receivers)))]

    def _receiver_lagged(self, ev: ReceiverLagged) -> list[Action]:
        live = self._live_of(ev.peer)
        if live is None or live.sender is None or ev.peer == live.sender:
            return []
        live.receivers.remove(ev.peer)
        del self._where[ev.peer]
        self.live_receivers_cut += 1
        return [
            DetachReceiver(peer=ev.peer),
            DropReceiver(peer=ev.peer),
            _line(live.sender, live_lagged(len(live.receivers))),
        ]

    def _free_live(self, live: _Live, *, ok: bool) -> None:
        if self._live.get(live.path) is live:
            del self._live[live.path]
            if live.sender is not None:
                if ok:
                    self.transfers_finished += 1
                else:
                    self.transfers_aborted += 1
        for peer in (live.sender, *live.receivers):
            if peer is not None and self._where.get(peer) == live.path:
                del self._where[peer]

    # --- endings ----------------------------------------------------------------------------------

    def _transfer_of(self, peer: Peer) -> _Transfer | None:
        path = self._where.get(peer)
        if path is None:
            return None
        transfer = self._running.get(path)
        if transfer is None or (peer != transfer.sender and peer not in transfer.receivers):
            return None
        return transfer

    def _upload_ended(self, ev: UploadEnded) -> list[Action]:
        live = self._live_of(ev.peer)
        if live is not None and live.sender == ev.peer:
            return self._live_ended(live, ev)
        transfer = self._transfer_of(ev.peer)
        if transfer is None or transfer.sender != ev.peer or transfer.upload_ended:
            return []
        transfer.upload_ended = True
        return [_line(ev.peer, "[INFO] Sent successfully!")]

    def _upload_failed(self, ev: UploadFailed) -> list[Action]:
        live = self._live_of(ev.peer)
        if live is not None and live.sender == ev.peer:
            return self._live_ended(live, ev)
        transfer = self._transfer_of(ev.peer)
        if transfer is None or transfer.sender != ev.peer:
            return []
        cut = tuple(r for r in transfer.receivers if r in transfer.active)
        self._free(transfer)
        return [
            _line(ev.peer, "[ERROR] Failed to send."),
            EndSender(peer=ev.peer, drop_upload=True),
            CutReceivers(receivers=cut),
        ]

    def _receiver_finished(self, ev: ReceiverFinished) -> list[Action]:
        live = self._live_of(ev.peer)
        if live is not None and live.sender != ev.peer:
            return self._live_peer_gone(live, ev.peer)  # only the end of the stream ends a receiver
        transfer = self._transfer_of(ev.peer)
        if transfer is None or ev.peer not in transfer.active:
            return []
        transfer.active.discard(ev.peer)
        transfer.finished += 1
        return self._end_if_settled(transfer)

    def _peer_lost(self, ev: PeerLost) -> list[Action]:
        peer = ev.peer
        path = self._where.get(peer)
        if path is None:
            return []
        live = self._live_of(peer)
        if live is not None:
            return self._live_peer_gone(live, peer)
        waiting = self._waiting.get(path)
        if waiting is not None:
            # Only this very peer is removed: a late loss of an old peer never evicts a new one.
            if waiting.sender == peer:
                waiting.sender = None
            elif peer in waiting.receivers:
                waiting.receivers.remove(peer)
            del self._where[peer]
            if waiting.sender is None and not waiting.receivers:
                del self._waiting[path]
            return []
        transfer = self._transfer_of(peer)
        if transfer is None:
            self._where.pop(peer, None)
            return []
        if peer == transfer.sender:
            del self._where[peer]
            if transfer.upload_ended:
                return []  # the receivers still get what is on its way; the end frees the path
            cut = tuple(r for r in transfer.receivers if r in transfer.active)
            self._free(transfer)
            return [CutReceivers(receivers=cut)] if cut else []
        if peer not in transfer.active:
            del self._where[peer]
            return []
        transfer.active.discard(peer)
        del self._where[peer]
        transfer.aborted += 1
        actions: list[Action] = [DetachReceiver(peer=peer)]
        if transfer.sender in self._where:
            actions.append(_line(transfer.sender, "[INFO] A receiver aborted."))
        return actions + self._end_if_settled(transfer)

    # --- the operator's timers (never fired by the protocol itself: docs/protocol.md section 8) ----------

    def _wait_expired(self, ev: WaitExpired) -> list[Action]:
        peer = ev.peer
        if not self.is_waiting(peer):
            return []  # matched, refused or gone meanwhile: the timer lost a race, nothing to do
        live = self._live_of(peer)
        if live is not None:
            self._live_peer_gone(live, peer)
            return [Reject(peer=peer, status=ev.status, message=ev.message)]
        path = self._where.pop(peer)
        waiting = self._waiting[path]
        if waiting.sender == peer:
            waiting.sender = None
            actions: list[Action] = [WriteLine(peer=peer, line=ev.message), EndSender(peer=peer, drop_upload=True)]
        else:
            waiting.receivers.remove(peer)
            # as when a waiting receiver leaves, nothing is told to the others (docs/protocol.md section 8)
            actions = [Reject(peer=peer, status=ev.status, message=ev.message)]
        if waiting.sender is None and not waiting.receivers:
            del self._waiting[path]
        return actions

    def _transfer_expired(self, ev: TransferExpired) -> list[Action]:
        live = self._live_of(ev.peer)
        if live is not None and live.sender is not None:
            sender, receivers = live.sender, tuple(live.receivers)
            self._free_live(live, ok=False)
            return [
                WriteLine(peer=sender, line=ev.message),
                EndSender(peer=sender, drop_upload=True),
                CutReceivers(receivers=receivers),
            ]
        transfer = self._transfer_of(ev.peer)
        if transfer is None:
            return []
        sender = transfer.sender
        sender_here = self._where.get(sender) == transfer.path
        cut = tuple(r for r in transfer.receivers if r in transfer.active)
        self._free(transfer)
        actions: list[Action] = []
        if sender_here:
            actions += [WriteLine(peer=sender, line=ev.message), EndSender(peer=sender, drop_upload=True)]
        if cut:
            actions.append(CutReceivers(receivers=cut))
        return actions

    def _end_if_settled(self, transfer: _Transfer) -> list[Action]:
        if transfer.active:
            return []
        sender = transfer.sender
        sender_here = sender in self._where
        self._free(transfer)
        if not sender_here:
            return []
        if transfer.finished == 0:
            return [
                _line(sender, "[INFO] All receiver(s) was/were aborted halfway."),
                EndSender(peer=sender, drop_upload=True),
            ]
        return [
            _line(sender, "[INFO] All receiver(s) was/were received successfully."),
            EndSender(peer=sender, drop_upload=not transfer.upload_ended),
        ]

    def _free(self, transfer: _Transfer) -> None:
        if self._running.get(transfer.path) is transfer:
            del self._running[transfer.path]
            # a cut transfer is freed while receivers are still active: aborted whatever the others did
            if transfer.finished and not transfer.active:
                self.transfers_finished += 1
            else:
                self.transfers_aborted += 1
        for peer in (transfer.sender, *transfer.receivers):
            if self._where.get(peer) == transfer.path:
                del self._where[peer]


def _live_refusal(peer: Peer, live: str, n: str | None) -> Reject | None:
    """The refusals of a ``live`` query (section 11): a bad value, or ``n`` beside it."""
    if not _is_live_value(live):
        return _reject(peer, '[ERROR] Invalid "live" query parameter')
    if n is not None:
        return _reject(peer, '[ERROR] "n" and "live" cannot be used together')
    return None


def _mismatch(peer: Peer, newcomer: str, waiting: str, path: str) -> Reject:
    """A newcomer of one mode where peers of the other wait (section 11): the 400 names both."""
    return _reject(peer, f"[ERROR] {newcomer} cannot join the {waiting} transfer waiting on '{path}'.")


def _reject(peer: Peer, message: str, status: int = 400) -> Reject:
    return Reject(peer=peer, status=status, message=message + "\n")


def _line(peer: Peer, text: str) -> WriteLine:
    return WriteLine(peer=peer, line=text + "\n")
