"""What the HTTP/2 code reads of h2 beyond its public API, checked on the h2 installed (issue 23).

http2/_inbound.py accounts DATA frames itself with h2's window managers and content-length counters, and
http2/protocol.py builds HEADERS and DATA frames with h2's state machines and encoder. At run time a missing
attribute only makes the walker fall back to h2 (slower, logged); here it fails loudly, so that an h2 upgrade
past the pin in pyproject.toml is a conscious step: run this, then move the pin.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import h2
import h2.config
import h2.connection
import hyperframe.frame
from h2.connection import ConnectionInputs
from h2.stream import StreamInputs

from piping_server.http2._inbound import InboundFrames
from piping_server.http2.protocol import H2_PREFACE, MAX_INBOUND_FRAME

PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", text)[:3])


def test_installed_h2_is_within_the_pinned_range() -> None:
    dependencies = tomllib.loads(PYPROJECT.read_text())["project"]["dependencies"]
    (pin,) = [dep for dep in dependencies if re.match(r"h2\b", dep)]
    low = re.search(r">=\s*([\d.]+)", pin)
    high = re.search(r"<\s*([\d.]+)", pin)
    assert low and high, f"h2 is not pinned to a tested range: {pin!r}"
    installed = _version(h2.__version__)
    assert _version(low.group(1)) <= installed < _version(high.group(1)), (h2.__version__, pin)


def _server_with_request(body_length: int | None) -> tuple[h2.connection.H2Connection, bytes]:
    """A server-side H2Connection that has taken a request's headers (from a real h2 client), and the client's
    bytes for one DATA frame on that stream."""
    server = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
    server.initiate_connection()
    client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    client.initiate_connection()
    extra = [("content-length", str(body_length))] if body_length is not None else []
    client.send_headers(1, [(":method", "POST"), (":path", "/x"), (":scheme", "http"), (":authority", "a"), *extra])
    server.receive_data(client.data_to_send())
    client.receive_data(server.data_to_send())
    client.send_data(1, b"z" * 1000)
    return server, client.data_to_send()


def test_the_walker_accounts_data_frames_with_h2s_internals() -> None:
    server, data_frame = _server_with_request(body_length=5000)
    stream = server.streams[1]
    # the attributes _inbound.py reads and writes, by name
    conn_window = server._inbound_flow_control_window_manager
    stream_window = stream._inbound_window_manager
    assert isinstance(conn_window.current_window_size, int)
    assert isinstance(stream_window.current_window_size, int)
    assert stream._expected_content_length == 5000
    assert stream._actual_content_length == 0
    assert stream.state_machine.headers_received is True
    before = (conn_window.current_window_size, stream_window.current_window_size)

    walker = InboundFrames(server, 0, MAX_INBOUND_FRAME)  # (the preface was taken above)
    fast: list[tuple[int, bytes, int]] = []
    given: list[bytes] = []
    rest = walker.feed(
        data_frame,
        lambda data: given.append(bytes(data)) is None,
        lambda sid, data, length: fast.append((sid, bytes(data), length)),
    )
    assert rest is None
    assert walker.walking, "the walker fell back to h2: the internals it reads have changed"
    assert fast == [(1, b"z" * 1000, 1000)]  # (the client's SETTINGS ACK went to h2: in given)
    assert (conn_window.current_window_size, stream_window.current_window_size) == (before[0] - 1000, before[1] - 1000)
    assert stream._actual_content_length == 1000


def test_what_protocol_py_builds_frames_with_is_there() -> None:
    server, _ = _server_with_request(body_length=None)
    stream = server.streams[1]
    # HEADERS built by hand: h2's encoder and state machines, driven as send_headers drives them
    assert hasattr(server, "encoder") and callable(server.encoder.encode)
    assert ConnectionInputs.SEND_HEADERS in ConnectionInputs
    for name in ("SEND_HEADERS", "SEND_INFORMATIONAL_HEADERS", "SEND_END_STREAM"):
        assert name in StreamInputs.__members__
    server.state_machine.process_input(ConnectionInputs.SEND_HEADERS)
    stream.state_machine.process_input(StreamInputs.SEND_HEADERS)
    # DATA built by hand: the outbound windows, kept as send_data keeps them
    window = server.outbound_flow_control_window
    server.outbound_flow_control_window = window - 10
    stream.outbound_flow_control_window -= 10
    assert server.outbound_flow_control_window == window - 10
    assert isinstance(server.max_outbound_frame_size, int)
    # the frame repr replaced in protocol.py: the base class's, which no frame class overrides
    assert all("__repr__" not in vars(cls) for cls in hyperframe.frame.FRAMES.values())
    assert repr(hyperframe.frame.DataFrame(1, b"x" * 100_000)) == "DataFrame(stream_id=1)"
    assert len(H2_PREFACE) == 24


def test_kept_header_blocks_are_bounded_in_number_and_size() -> None:
    """Http2Protocol._encode keeps at most KEPT_BLOCKS blocks, none with more than KEPT_BLOCK_BYTES of fields,
    and what it gives back decodes to the block asked for."""
    import hpack

    from piping_server.http2 import protocol
    from piping_server.relay._flow import Relay

    conn = protocol.Http2Protocol(Relay())
    encoder, decoder = hpack.Encoder(), hpack.Decoder()
    for i in range(3 * protocol.KEPT_BLOCKS):
        head = [(b":status", b"200"), (b"x-piping", b"%d" % (i % 40))]
        for _ in range(2):  # the second time from the kept bytes once the table holds still
            assert decoder.decode(conn._encode(encoder, head), raw=True) == head
        assert len(conn._blocks) <= protocol.KEPT_BLOCKS
    big = [(b":status", b"200"), (b"x-piping", b"v" * protocol.KEPT_BLOCK_BYTES)]
    for _ in range(3):
        assert decoder.decode(conn._encode(encoder, big), raw=True) == big
    assert tuple(big) not in conn._blocks
    head = [(b":status", b"200"), (b"x-piping", b"again")]
    conn._encode(encoder, head)  # adds the field to the table: not kept
    kept = conn._encode(encoder, head)  # only refers to the table: kept
    assert conn._encode(encoder, head) is kept
