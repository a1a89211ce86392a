"""One plain HTTP/1 upload spliced to several plain HTTP/1 receivers (``?n=2`` and more), with ``tee(2)``.

The ordinary path writes every piece once per receiver from user space; here the sender's bytes go
socket -> pipe in the kernel, ``tee`` duplicates the pipe's pages into one pipe per other receiver,
and each pipe is spliced into its receiver's socket (``_splice.FanOutRelay``). The copying path stays
for everything else: TLS, HTTP/2, live transfers, forms, receivers that differ in framing.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from ._splice import SPLICE_AVAILABLE, TEE_AVAILABLE, FanOutRelay

if TYPE_CHECKING:
    from ..relay._flow import Pipe
    from .protocol import Http1Exchange


def fan_out_partners(sender: Http1Exchange, pipe: Pipe) -> list[Http1Exchange]:
    """The receivers this upload can be tee'd to, or [] when the copying path must carry it."""
    from .protocol import Http1Exchange

    conn = sender.conn
    receivers = pipe.receivers
    if not (SPLICE_AVAILABLE and TEE_AVAILABLE and conn.splice_enabled) or len(receivers) < 2:
        return []
    if pipe.decodes_form or pipe.is_live or conn.is_tls or conn.body_reader is None:
        return []
    chosen: list[Http1Exchange] = []
    for receiver in receivers:
        if not isinstance(receiver, Http1Exchange) or receiver.conn.is_tls or receiver.version not in ("1.0", "1.1"):
            return []
        chosen.append(receiver)
    if len({r._chunked for r in chosen}) != 1:  # one framing for all: the pipe's bytes are the same for each
        return []
    return chosen


def begin_fan_out(sender: Http1Exchange, pipe: Pipe, receivers: list[Http1Exchange], resume: int) -> None:
    """Start the relay (the sender's reading is paused with the ``resume`` reason until it ends or fails)."""
    conn = sender.conn
    reader = conn.body_reader
    in_sock = conn.socket()
    out_socks = [r.conn.socket() for r in receivers]
    usable = (
        not sender.lost
        and reader is not None
        and not reader.done
        and in_sock is not None
        and all(not r.lost and r in pipe.receivers for r in receivers)
        and len(pipe.receivers) == len(receivers)
    )
    out_fds = [s.fileno() for s in out_socks if s is not None]
    if not usable or in_sock is None or reader is None or len(out_fds) != len(receivers):
        conn.resume_reading(resume)  # the ordinary path carries on
        return
    for receiver in receivers:
        if receiver.conn.write_buffer_size():
            # what the ordinary path wrote must reach each socket before the kernel appends to it
            def retry() -> None:
                asyncio.get_running_loop().call_soon(begin_fan_out, sender, pipe, receivers, resume)

            receiver.conn.when_drained(retry)
            return

    def count(read: int, written: int) -> None:
        sender._bytes_in += read
        if written:
            for receiver in receivers:
                if not receiver.lost:
                    receiver._bytes_out += written

    def done(leftover: bytes) -> None:
        sender._splice = None
        conn.end_spliced_body(leftover)

    def sender_broken() -> None:
        sender._splice = None
        conn.abort()

    def receiver_broken(index: int) -> None:
        receivers[index].conn.abort()

    def bad_framing(reason: str) -> None:
        sender._splice = None
        conn.fail_request(400, f"[ERROR] Bad request: {reason}.\n")  # as the ordinary path does

    def gone_check(receiver: Http1Exchange) -> bool:
        return receiver.lost or receiver not in pipe.receivers

    relay = FanOutRelay(
        in_fd=in_sock.fileno(),
        out_fds=out_fds,
        gone=[lambda r=r: gone_check(r) for r in receivers],  # type: ignore[misc]
        reader=reader,
        chunked_out=receivers[0]._chunked,
        on_done=done,
        on_sender_broken=sender_broken,
        on_receiver_broken_at=receiver_broken,
        on_bad_framing=bad_framing,
        count=count,
        cancelled=lambda: sender.lost,
    )
    sender._splice = relay  # a lost sender stops it (receivers that leave are dropped by the relay itself)
    for index, receiver in enumerate(receivers):
        receiver.delivered = lambda index=index: relay.delivered(index)
    relay.start()
