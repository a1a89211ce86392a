"""Inbound frames cut anywhere, and the DATA frames h2 must still refuse (http2/_inbound.py).

The server finds DATA frames in each read itself and hands every other frame to h2; these tests pin
what that must keep: frames cut at any byte across reads (headers, bodies, padding) arrive whole and
in order, and a DATA frame beyond a window, beyond the announced content-length or inside a header
block is still the connection error h2 makes of it.
"""

from __future__ import annotations

import hashlib
import socket
import time

import h2.errors
import hpack
import hyperframe.frame

from ..helpers import WAIT_S, ServerProcess, Target, connect, unique_path
from ._client import H2Client
from .test_streams import H2_PREFACE, _read_goaway

#: Write sizes cycled through: cuts inside frame headers, at their edges and inside 64 KiB bodies.
PIECES = (1, 8, 9, 10, 3, 4096, 65545, 70000, 17)


def _write_in_pieces(sock: socket.socket, data: bytes) -> None:
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    pos = i = 0
    while pos < len(data):
        size = PIECES[i % len(PIECES)]
        sock.sendall(data[pos : pos + size])
        pos += size
        i += 1
        time.sleep(0.002)  # separate reads on the server, mostly; correctness never depends on it


def test_frames_cut_anywhere_arrive_whole(h2target: Target, server: ServerProcess) -> None:
    path = unique_path("inbound-cut")
    receiver = H2Client(h2target)
    sender = H2Client(h2target)
    try:
        rid = receiver.request("GET", path)
        # the server's SETTINGS (64 KiB frames), then the streaming window once the transfer starts
        assert sender.pump_until(lambda: sender.conn.max_outbound_frame_size > 16384)
        sid = sender.request("POST", path, end=False)
        assert sender.pump_until(lambda: sender.conn.local_flow_control_window(sid) > 1 << 20)
        conn = sender.conn
        body = bytearray()
        sizes = [1, 0, 9, 16384, 65536, 65535, 100, 65536, 65536, 7, 65536, 30000, 65536, 1]
        for n, size in enumerate(sizes):
            piece = bytes([n % 251]) * size
            # every fourth frame padded: h2's own path, between the fast ones
            conn.send_data(sid, piece, pad_length=200 if n % 4 == 3 and size < 65000 else None)
            body += piece
        conn.send_data(sid, b"end", end_stream=True)
        body += b"end"
        _write_in_pieces(sender.sock, conn.data_to_send())
        assert receiver.pump_until(lambda: receiver.streams[rid].ended)
        got = receiver.streams[rid]
        assert got.status == 200
        assert hashlib.sha256(got.data).hexdigest() == hashlib.sha256(body).hexdigest()
        assert sender.pump_until(lambda: sender.streams[sid].ended)
        assert sender.streams[sid].status == 200
    finally:
        receiver.close()
        sender.close()
    assert "Traceback" not in server.log()


def _request_fields(path: str, *extra: tuple[bytes, bytes]) -> list[tuple[bytes, bytes]]:
    return [
        (b":method", b"POST"),
        (b":path", path.encode()),
        (b":scheme", b"http"),
        (b":authority", b"127.0.0.1"),
        *extra,
    ]


def _request_head(path: str, *extra: tuple[bytes, bytes]) -> bytes:
    """A header block that opens a connection's first stream (a fresh HPACK context)."""
    return hpack.Encoder().encode(_request_fields(path, *extra))


def _frame(frame: hyperframe.frame.Frame) -> bytes:
    return bytes(frame.serialize())


def _answer_to(target: Target, frames: list[hyperframe.frame.Frame]) -> bytes:
    """Send the frames in one write; everything the server answers until it closes."""
    sock = connect(target, "h2")
    try:
        sock.sendall(H2_PREFACE + _frame(hyperframe.frame.SettingsFrame(0)) + b"".join(_frame(f) for f in frames))
        answer = b""
        deadline = time.monotonic() + WAIT_S
        while time.monotonic() < deadline:
            try:
                chunk = sock.recv(65536)
            except OSError:
                break
            if not chunk:
                break
            answer += chunk
        return answer
    finally:
        sock.close()


def _frame_kinds(answer: bytes) -> list[tuple[int, int]]:
    """(type, stream id) of each frame in ``answer``."""
    kinds = []
    pos = 0
    while pos + 9 <= len(answer):
        kinds.append((answer[pos + 3], int.from_bytes(answer[pos + 5 : pos + 9], "big") & 0x7FFFFFFF))
        pos += 9 + int.from_bytes(answer[pos : pos + 3], "big")
    return kinds


def _goaway_for(
    target: Target, frames: list[hyperframe.frame.Frame], *, after_answer: list[hyperframe.frame.Frame] = ()
) -> int | None:
    """Send ``frames``; once stream 1 has its answer's head, ``after_answer``; the GOAWAY's error code.

    Frames sent after the answer reach a stream the server already knows: the path of later reads."""
    sock = connect(target, "h2")
    try:
        sock.sendall(H2_PREFACE + _frame(hyperframe.frame.SettingsFrame(0)) + b"".join(_frame(f) for f in frames))
        if after_answer:
            seen = b""
            deadline = time.monotonic() + WAIT_S
            while (0x1, 1) not in _frame_kinds(seen) and time.monotonic() < deadline:
                chunk = sock.recv(65536)
                assert chunk, f"closed before answering: {_frame_kinds(seen)}"
                seen += chunk
            sock.sendall(b"".join(_frame(f) for f in after_answer))
        return _read_goaway(sock)
    finally:
        sock.close()


def _data(stream_id: int, data: bytes, *flags: str) -> hyperframe.frame.DataFrame:
    frame = hyperframe.frame.DataFrame(stream_id, data)
    for flag in flags:
        frame.flags.add(flag)
    return frame


def test_data_beyond_the_window_is_a_flow_control_error(h2target: Target, server: ServerProcess) -> None:
    # a waiting sender has the default window (65,535 bytes); four 16 KiB frames overrun it by one byte
    head = hyperframe.frame.HeadersFrame(1, _request_head(unique_path("inbound-window")))
    head.flags.add("END_HEADERS")
    overrun = [_data(1, b"w" * 16384) for _ in range(4)]
    assert _goaway_for(h2target, [head], after_answer=overrun) == h2.errors.ErrorCodes.FLOW_CONTROL_ERROR
    assert "Traceback" not in server.log()


def test_data_beyond_its_content_length_is_refused(h2target: Target, server: ServerProcess) -> None:
    # no END_STREAM follows: the overrun itself must be seen, not only a wrong total at the end
    head = hyperframe.frame.HeadersFrame(1, _request_head(unique_path("inbound-length"), (b"content-length", b"2")))
    head.flags.add("END_HEADERS")
    assert _goaway_for(h2target, [head], after_answer=[_data(1, b"abc")]) == h2.errors.ErrorCodes.PROTOCOL_ERROR
    assert "Traceback" not in server.log()


def test_request_and_its_bad_body_in_one_read_get_no_answer_but_the_goaway(h2target: Target) -> None:
    """A request whose first DATA breaks its content-length is judged whole, as h2 judges it: no 200 first."""
    head = hyperframe.frame.HeadersFrame(1, _request_head(unique_path("inbound-whole"), (b"content-length", b"2")))
    head.flags.add("END_HEADERS")
    kinds = _frame_kinds(_answer_to(h2target, [head, _data(1, b"abc")]))
    assert (0x7, 0) in kinds, kinds  # the GOAWAY
    assert not [kind for kind in kinds if kind[1] == 1], kinds  # nothing at all on the stream


def test_data_inside_a_header_block_is_a_protocol_error(h2target: Target, server: ServerProcess) -> None:
    # stream 1 is an upload under way; stream 3's header block is cut by a DATA frame of stream 1
    encoder = hpack.Encoder()
    open_upload = hyperframe.frame.HeadersFrame(1, encoder.encode(_request_fields(unique_path("inbound-open"))))
    open_upload.flags.add("END_HEADERS")
    block = encoder.encode(_request_fields(unique_path("inbound-block")))
    head = hyperframe.frame.HeadersFrame(3, block[:3])  # no END_HEADERS: a CONTINUATION must come next
    rest = hyperframe.frame.ContinuationFrame(3, block[3:])
    rest.flags.add("END_HEADERS")
    frames = [head, _data(1, b"x"), rest]
    assert _goaway_for(h2target, [open_upload], after_answer=frames) == h2.errors.ErrorCodes.PROTOCOL_ERROR
    assert "Traceback" not in server.log()


def test_waiting_sender_then_receiver_gets_every_byte(h2target: Target) -> None:
    """A sender's first window is held (copied out of its reads) until a receiver comes, then streams."""
    path = unique_path("inbound-held")
    sender = H2Client(h2target)
    receiver = H2Client(h2target)
    try:
        sid = sender.request("POST", path, end=False)
        body = bytes(range(256)) * 1024  # 256 KiB: the first 64 KiB wait, the rest needs the bigger window
        sender.send(sid, body[:60000])
        sender.pump(0.2)
        rid = receiver.request("GET", path)
        sender.send(sid, body[60000:], end=True)
        assert receiver.pump_until(lambda: receiver.streams[rid].ended)
        assert receiver.streams[rid].data == body
    finally:
        sender.close()
        receiver.close()


def test_frame_above_our_frame_size_is_a_frame_size_error(h2target: Target, server: ServerProcess) -> None:
    # one byte more than our SETTINGS_MAX_FRAME_SIZE (64 KiB), on a stream under way: h2 has the last word
    head = hyperframe.frame.HeadersFrame(1, _request_head(unique_path("inbound-big")))
    head.flags.add("END_HEADERS")
    big = _data(1, b"b" * (64 * 1024 + 1))
    assert _goaway_for(h2target, [head], after_answer=[big]) == h2.errors.ErrorCodes.FRAME_SIZE_ERROR
    assert "Traceback" not in server.log()
