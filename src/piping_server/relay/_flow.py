"""The data path of one transfer, and the relay that turns the hub's actions into transport calls.

``Endpoint`` is what a transport adapter offers for one request (an HTTP/1 request, an HTTP/2
stream); the ``Relay`` calls it as the hub commands. Once a transfer starts, body bytes go from the
sender's adapter through ``Pipe.feed`` straight to the receivers' ``write_body``: no event, no task
switch and no copy per chunk through the core.

Backpressure is one explicit chain: a receiver whose transport buffer passes its high-water mark
calls ``Pipe.receiver_paused``; the first such call pauses the sender's upload, and the sender
resumes only when every paused receiver has drained.

A live transfer (docs/protocol.md section 11) has a ``LivePipe``: the same chunk objects go to a set
of receivers that changes at any time, with the pacing and backlog rules written on that class.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import Final, Protocol

from ..core import (
    AcceptSender,
    Action,
    CutReceivers,
    DetachReceiver,
    DropReceiver,
    EndSender,
    Event,
    Hub,
    JoinLive,
    ReceiverLagged,
    Reject,
    StartLive,
    StartTransfer,
    UploadEnded,
    UploadFailed,
    WriteLine,
)
from ._form import FirstPart, boundary_of
from ._headers import Headers, receiver_headers
from ._hooks import Hooks

#: A piece of a body: transports hand on slices of what their socket gave, without copying.
Chunk = bytes | memoryview

#: A live receiver whose backlog (bytes handed to it that its client has not taken) passes this is
#: cut (docs/protocol.md section 11): one stalled listener costs at most this much memory and never stalls
#: the others for long. Operator-settable (``--live-max-lag``). Checked once a receiver's transport
#: reports itself full, so the transport's own high-water mark (1 MiB) is the least it can be.
LIVE_MAX_LAG_BYTES: Final = 8 * 1024 * 1024
#: How long a full live receiver may hold back the others before it no longer sets the pace: long
#: enough that a receiver slow for a moment (a busy machine, a network hiccup) keeps its place and
#: the stream waits, short enough that one stalled listener never stalls the others for long.
LIVE_LAG_GRACE_S: Final = 1.0

#: ``schedule(delay_s, callback)`` returns a function that cancels the call.
Scheduler = Callable[[float, Callable[[], None]], Callable[[], None]]


class Endpoint(Protocol):
    """One request, as the relay drives it. Every method is called on the event loop and never blocks.

    Endpoints are the hub's peers: hashed by identity, one per request.
    """

    pipe: Pipe | None

    def __hash__(self) -> int: ...

    def reject(self, status: int, message: str) -> None: ...
    def accept_sender(self) -> None: ...
    def write_line(self, line: str) -> None: ...
    def end_sender(self, *, drop_upload: bool) -> None: ...
    def upload_info(self) -> UploadInfo: ...
    def start_upload(self, pipe: Pipe) -> None: ...
    def pause_upload(self) -> None: ...
    def resume_upload(self) -> None: ...
    def start_receiving(self, headers: Headers) -> None: ...
    def write_body(self, data: Chunk) -> None: ...
    def finish_body(self) -> None: ...
    def cut(self) -> None: ...
    def drop(self) -> None: ...
    def backlog(self) -> int: ...


class UploadInfo:
    """What the receivers' response heads are made of: the sender's own headers."""

    __slots__ = ("content_type", "content_length", "content_disposition", "x_piping")

    def __init__(
        self,
        *,
        content_type: bytes | None,
        content_length: int | None,
        content_disposition: bytes | None,
        x_piping: list[bytes],
    ) -> None:
        self.content_type = content_type
        self.content_length = content_length
        self.content_disposition = content_disposition
        self.x_piping = x_piping

    @classmethod
    def from_headers(cls, headers: list[tuple[bytes, bytes]], content_length: int | None) -> UploadInfo:
        content_type = content_disposition = None
        x_piping: list[bytes] = []
        for name, value in headers:
            if name == b"content-type":
                content_type = value
            elif name == b"content-disposition":
                content_disposition = value
            elif name == b"x-piping":
                x_piping.append(value)
        return UploadInfo(  # (not ``cls``: a call of the class itself is a C call once compiled)
            content_type=content_type,
            content_length=content_length,
            content_disposition=content_disposition,
            x_piping=x_piping,
        )


class Pipe:
    """Carries one sender's body to its receivers, with backpressure."""

    #: a live pipe's receivers change (never spliced: the kernel path is for one fixed receiver)
    is_live = False

    __slots__ = ("relay", "sender", "receivers", "_paused", "_form", "_ended")

    def __init__(self, relay: Relay, sender: Endpoint, receivers: tuple[Endpoint, ...]) -> None:
        self.relay = relay
        self.sender = sender
        self.receivers = list(receivers)
        self._paused: set[int] = set()
        self._form: FirstPart | None = None
        self._ended = False

    def feed(self, data: Chunk) -> None:
        """The sender's adapter calls this with each piece of its body, in order.

        (A method, not an attribute set to a bound method: a pipe referring to itself would be freed by the
        garbage collector only, not as soon as its transfer lets it go.)
        """
        if self._form is None:
            self._broadcast(data)
        else:
            self._feed_form(data)

    def begin(self) -> None:
        """Start the receivers' responses (for a form: once its first part's headers are read)."""
        info = self.sender.upload_info()
        boundary = boundary_of(info.content_type) if info.content_type is not None else None
        if boundary is None:
            self._start_heads(info)
            return
        self._form = FirstPart(boundary, on_headers=self._part_headers, on_data=self._broadcast, on_end=self._part_end)

    @property
    def decodes_form(self) -> bool:
        """Whether the body is a form whose first part is being cut out (so it cannot bypass this pipe)."""
        return self._form is not None

    def upload_complete(self) -> None:
        """The sender's adapter read its body to the end."""
        if self._form is not None and not self._form.done:
            self.fail()  # the form ended before its first part did: a cut upload
        elif not self._ended:
            self._end()

    def fail(self) -> None:
        """The upload broke: the receivers must see a cut stream."""
        self.relay.submit(UploadFailed(peer=self.sender))

    # --- backpressure ----------------------------------------------------------------------------

    def receiver_paused(self, receiver: Endpoint) -> None:
        if not self._paused:
            self.sender.pause_upload()
        self._paused.add(id(receiver))

    def receiver_resumed(self, receiver: Endpoint) -> None:
        if id(receiver) in self._paused:
            self._paused.discard(id(receiver))
            if not self._paused:
                self.sender.resume_upload()

    def detach(self, receiver: Endpoint) -> None:
        if receiver in self.receivers:
            self.receivers.remove(receiver)
        self.receiver_resumed(receiver)

    # --- internals ---------------------------------------------------------------------------------

    def _broadcast(self, data: Chunk) -> None:
        """A piece of the body (or of a form's first part) to every receiver."""
        for receiver in self.receivers:
            receiver.write_body(data)

    def _feed_form(self, data: Chunk) -> None:
        form = self._form
        assert form is not None
        if form.done:
            return  # the rest of the form is discarded
        try:
            form.feed(bytes(data))  # the form parser needs bytes; transports may hand memoryviews
        except ValueError:
            self.fail()

    def _start_heads(self, info: UploadInfo) -> None:
        headers = receiver_headers(
            content_type=info.content_type,
            content_length=info.content_length,
            content_disposition=info.content_disposition,
            x_piping=info.x_piping,
        )
        for receiver in self.receivers:
            receiver.start_receiving(headers)

    def _part_headers(self, part: dict[bytes, bytes]) -> None:
        info = self.sender.upload_info()
        # The part's size is not known in advance, so no Content-Length (beyond the reference).
        self._start_heads(
            UploadInfo(
                content_type=part.get(b"content-type"),
                content_length=None,
                content_disposition=part.get(b"content-disposition"),
                x_piping=info.x_piping,
            )
        )

    def _part_end(self) -> None:
        self._end()

    def _end(self) -> None:
        self._ended = True
        # "Sent successfully!" comes before any receiver's end, as in the reference
        self.relay.submit(UploadEnded(peer=self.sender))
        for receiver in list(self.receivers):
            receiver.finish_body()


class LivePipe(Pipe):
    """One live sender's body, fanned out to whoever listens now (docs/protocol.md section 11).

    * Fan-out: each chunk object goes to every present receiver as it is (no copy per receiver);
      a receiver joining gets the stream from the next chunk on, its offset in the
      ``Piping-Live-Offset`` header.
    * Nobody listening: the sender is paused. What was read before the pause took effect (a read
      already under way, or an HTTP/2 window) is held and goes to the next receiver, whose offset
      says where it starts: nothing read is lost.
    * Pacing: the sender is paused while a present receiver is full (its transport above its
      high-water mark): the slowest sets the pace, as in an ordinary transfer. But when a full
      receiver has held back others that could take more for ``LIVE_LAG_GRACE_S``, it is *lagging*:
      it no longer sets the pace, and the others keep their speed. A lagging receiver that drains
      sets the pace again; one whose backlog passes ``max_lag`` is cut. A receiver alone is never
      lagging (nobody is held back), and when all are full the stream simply waits.
    * End: the upload's end ends every present receiver normally; a break cuts them (via the hub).
    """

    __slots__ = (
        "max_lag",
        "position",
        "_held",
        "_held_bytes",
        "_full",
        "_lagging",
        "_grace",
        "_sender_paused",
        "_head",
        "_over",
        "_done",
    )

    is_live = True

    def __init__(self, relay: Relay, sender: Endpoint, receivers: tuple[Endpoint, ...], max_lag: int) -> None:
        super().__init__(relay, sender, receivers)
        self.max_lag = max_lag
        #: bytes of the stream read so far
        self.position = 0
        self._held: list[Chunk] = []  # read while nobody listened, for the next receiver
        self._held_bytes = 0
        self._full: set[int] = set()  # ids of receivers whose transport is above its high-water mark
        self._lagging: set[int] = set()  # ids of full receivers that no longer set the pace
        self._grace: Callable[[], None] | None = None  # cancels the grace timer under way
        self._sender_paused = False
        self._head: Headers | None = None  # the receivers' head; None until a form's first part says it
        self._over = False  # the upload ended or broke: the sender is no longer paced
        self._done = False  # the upload ended while bytes were held: it ends once a receiver takes them

    def begin(self) -> None:
        info = self.sender.upload_info()
        boundary = boundary_of(info.content_type) if info.content_type is not None else None
        if boundary is not None:
            # a browser form: the stream is its first part, whose own headers the receivers get (section 6)
            self._form = FirstPart(
                boundary, on_headers=self._part_headers, on_data=self._broadcast, on_end=self._finish_stream
            )
        else:
            # joins happen at any time, so there is no length to announce
            self._start_heads(info)
        self._pace()

    def join(self, receiver: Endpoint) -> None:
        """A receiver joins mid-stream: its response starts now, at the next byte it will be given."""
        receiver.pipe = self
        self.receivers.append(receiver)
        if self._head is None:
            self._pace()
            return  # a form's part headers are not read yet: its response starts with them, at byte 0
        held, self._held, offset = self._held, [], self.position - self._held_bytes
        self._held_bytes = 0
        receiver.start_receiving(self._live_head(offset))
        for chunk in held:
            receiver.write_body(chunk)
        if self._done:
            self._end()
        else:
            self._pace()

    def upload_complete(self) -> None:
        if self._form is not None and not self._form.done:
            self.fail()  # the form ended before its first part did: a cut upload
        else:
            self._finish_stream()

    def _finish_stream(self) -> None:
        if self._held_bytes and not self.receivers:
            self._done = True  # what was read still goes to someone: the end waits for a receiver
            return
        if not self._over:
            self._end()

    def _start_heads(self, info: UploadInfo) -> None:
        self._head = receiver_headers(
            content_type=info.content_type,
            content_length=None,
            content_disposition=info.content_disposition,
            x_piping=info.x_piping,
        )
        for receiver in self.receivers:
            receiver.start_receiving(self._live_head(0))

    def fail(self) -> None:
        self._stop()
        self.relay.submit(UploadFailed(peer=self.sender, size=self.position))

    def is_lagging(self, receiver: Endpoint) -> bool:
        """Whether ``receiver`` is full and no longer sets the pace."""
        return id(receiver) in self._lagging

    def receiver_paused(self, receiver: Endpoint) -> None:
        self._full.add(id(receiver))
        self._pace()

    def receiver_resumed(self, receiver: Endpoint) -> None:
        if id(receiver) in self._full:
            self._full.discard(id(receiver))
            self._lagging.discard(id(receiver))  # drained: it sets the pace again
            self._pace()

    def detach(self, receiver: Endpoint) -> None:
        if receiver in self.receivers:
            self.receivers.remove(receiver)
        self._full.discard(id(receiver))
        self._lagging.discard(id(receiver))
        self._pace()

    def _broadcast(self, data: Chunk) -> None:
        """Counted, to the receivers present; held while none is (a live stream's receivers change)."""
        self.position += len(data)
        receivers = self.receivers
        if not receivers:
            self._held.append(data)  # bounded: the sender is paused
            self._held_bytes += len(data)
            return
        for receiver in receivers:
            receiver.write_body(data)
        if self._lagging:
            # only a lagging receiver falls further behind: its transport says how far
            lagging, max_lag = self._lagging, self.max_lag
            for receiver in [r for r in receivers if id(r) in lagging and r.backlog() > max_lag]:
                self.relay.submit(ReceiverLagged(peer=receiver))

    def _pace(self) -> None:
        if self._over:
            return
        full, lagging, receivers = self._full, self._lagging, self.receivers
        holding = sum(1 for r in receivers if id(r) in full and id(r) not in lagging)
        stop = not receivers or holding > 0
        if stop != self._sender_paused:
            self._sender_paused = stop
            if stop:
                self.sender.pause_upload()
            else:
                self.sender.resume_upload()
        held_back = holding > 0 and any(id(r) not in full for r in receivers)
        if held_back and self._grace is None:
            self._grace = self.relay.schedule(LIVE_LAG_GRACE_S, self._grace_over)
        elif not held_back and self._grace is not None:
            self._grace()
            self._grace = None

    def _grace_over(self) -> None:
        """Full receivers held back the others for the whole grace: they no longer set the pace."""
        self._grace = None
        if self._over:
            return
        full = self._full
        if any(id(r) not in full for r in self.receivers):
            self._lagging.update(id(r) for r in self.receivers if id(r) in full)
        self._pace()

    def _stop(self) -> None:
        self._over = True
        if self._grace is not None:
            self._grace()
            self._grace = None

    def _live_head(self, offset: int) -> Headers:
        assert self._head is not None
        head: Headers = []
        exposed = False
        for name, value in self._head:
            if name == b"access-control-expose-headers":
                value, exposed = value + b", Piping-Live-Offset", True
            head.append((name, value))
        head.append((b"piping-live-offset", b"%d" % offset))
        if not exposed:
            head.append((b"access-control-expose-headers", b"Piping-Live-Offset"))
        return head

    def _end(self) -> None:
        self._stop()
        self._ended = True
        self.relay.submit(UploadEnded(peer=self.sender, size=self.position))
        for receiver in list(self.receivers):
            receiver.finish_body()


class Relay:
    """The hub of one server plus the dispatch of its actions to endpoints."""

    def __init__(self, hub: Hub | None = None, hooks: Hooks | None = None) -> None:
        self.hub = hub if hub is not None else Hub()
        self.hooks = hooks if hooks is not None else Hooks()
        #: the HTTPS listener's port, if any: "/" reached over plain HTTP links there
        self.https_port: int | None = None
        #: the backlog past which a live receiver is cut (``--live-max-lag``)
        self.live_max_lag = LIVE_MAX_LAG_BYTES
        #: how timers are set (the live pipe's grace); None: the running asyncio loop's ``call_later``
        self.scheduler: Scheduler | None = None
        self._pending: deque[Event] = deque()
        self._dispatching = False
        #: observers of every action (metrics, logs); called after the action is carried out
        self.observers: list[Callable[[Action], None]] = []

    def schedule(self, delay_s: float, callback: Callable[[], None]) -> Callable[[], None]:
        """Call ``callback`` in ``delay_s`` seconds; returns a function that cancels it."""
        if self.scheduler is not None:
            return self.scheduler(delay_s, callback)
        return asyncio.get_running_loop().call_later(delay_s, callback).cancel

    def submit(self, event: Event) -> None:
        """Feed one event to the hub and carry out its actions; re-entrant calls are queued."""
        self._pending.append(event)
        if self._dispatching:
            return
        self._dispatching = True
        try:
            while self._pending:
                for action in self.hub.handle(self._pending.popleft()):
                    self._apply(action)
                    for observe in self.observers:
                        observe(action)
        finally:
            self._dispatching = False

    def _apply(self, action: Action) -> None:
        if isinstance(action, WriteLine):
            _endpoint(action.peer).write_line(action.line)
        elif isinstance(action, StartTransfer):
            sender = _endpoint(action.sender)
            receivers = tuple(_endpoint(r) for r in action.receivers)
            pipe = Pipe(self, sender, receivers)
            for receiver in receivers:
                receiver.pipe = pipe
            sender.pipe = pipe
            sender.start_upload(pipe)
        elif isinstance(action, AcceptSender):
            _endpoint(action.peer).accept_sender()
        elif isinstance(action, Reject):
            _endpoint(action.peer).reject(action.status, action.message)
        elif isinstance(action, DetachReceiver):
            endpoint = _endpoint(action.peer)
            if endpoint.pipe is not None:
                endpoint.pipe.detach(endpoint)
        elif isinstance(action, EndSender):
            _endpoint(action.peer).end_sender(drop_upload=action.drop_upload)
        elif isinstance(action, CutReceivers):
            for peer in action.receivers:
                _endpoint(peer).cut()
        elif isinstance(action, StartLive):
            sender = _endpoint(action.sender)
            receivers = tuple(_endpoint(r) for r in action.receivers)
            live = LivePipe(self, sender, receivers, self.live_max_lag)
            for receiver in receivers:
                receiver.pipe = live
            sender.pipe = live
            sender.start_upload(live)
        elif isinstance(action, JoinLive):
            live_pipe = _endpoint(action.sender).pipe
            if isinstance(live_pipe, LivePipe):
                live_pipe.join(_endpoint(action.receiver))
        elif isinstance(action, DropReceiver):
            _endpoint(action.peer).drop()


def _endpoint(peer: object) -> Endpoint:
    # Peers handed to the hub by the adapters are always their endpoints.
    return peer  # type: ignore[return-value]
