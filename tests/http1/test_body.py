"""The upload body framing (sans-IO): chunked and Content-Length, split anywhere."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from piping_server.core import ProtocolError
from piping_server.http1._body import ChunkedReader, LengthReader, reader_for


def chunked(pieces: list[bytes], trailer: bytes = b"") -> bytes:
    out = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces if p)
    return out + b"0\r\n" + trailer + b"\r\n"


def run(reader: ChunkedReader | LengthReader, wire: bytes, cuts: list[int]) -> tuple[bytes, bytes]:
    """Feed ``wire`` split at ``cuts``; return (body, leftover after the body)."""
    body = bytearray()
    leftover = b""
    points = sorted({c % (len(wire) + 1) for c in cuts} | {0, len(wire)})
    for start, end in zip(points, points[1:], strict=False):
        piece = wire[start:end]
        if reader.done:
            leftover += piece
            continue
        used = reader.feed(piece, body.extend)
        leftover += piece[used:]
    return bytes(body), leftover


@settings(max_examples=300, deadline=None)
@given(
    pieces=st.lists(st.binary(min_size=0, max_size=300), max_size=8),
    cuts=st.lists(st.integers(min_value=0, max_value=5000), max_size=12),
    with_trailer=st.booleans(),
)
def test_chunked_any_split(pieces: list[bytes], cuts: list[int], with_trailer: bool) -> None:
    wire = chunked(pieces, b"X-Sum: 1\r\n" if with_trailer else b"") + b"GET /next HTTP/1.1\r\n"
    reader = ChunkedReader()
    body, leftover = run(reader, wire, cuts)
    assert reader.done
    assert body == b"".join(pieces)
    assert leftover == b"GET /next HTTP/1.1\r\n"


@settings(max_examples=100, deadline=None)
@given(data=st.binary(max_size=2000), cuts=st.lists(st.integers(0, 3000), max_size=10))
def test_length_any_split(data: bytes, cuts: list[int]) -> None:
    reader = LengthReader(len(data))
    body, leftover = run(reader, data + b"NEXT", cuts)
    assert reader.done and body == data and leftover == b"NEXT"


def test_chunk_extensions_are_ignored() -> None:
    reader = ChunkedReader()
    body = bytearray()
    reader.feed(b'3;name=value\r\nabc\r\n3 ; a ; b = "q \\" x"\r\ndef\r\n0;last\r\n\r\n', body.extend)
    assert body == b"abcdef" and reader.done


def test_splice_accounting() -> None:
    reader = ChunkedReader()
    body = bytearray()
    used = reader.feed(b"a\r\n0123", body.extend)
    assert used == 7 and reader.remaining_in_frame == 6
    reader.consumed_raw(6)  # the rest went through the kernel
    assert reader.remaining_in_frame == 0
    reader.feed(b"\r\n0\r\n\r\n", body.extend)
    assert reader.done and body == b"0123"


@pytest.mark.parametrize(
    "wire",
    [
        b"zz\r\n",
        b"3\r\nabcd\r\n",
        b"3\nabc\n",
        b"-1\r\n",
        b"1" * 5000,
        b"3\r\nabc\r\n0\r\n" + b"X: y\r\n" * 20000,
        b"3;\x01\r\nabc\r\n",
        b"3;a b\r\nabc\r\n",
        b'3;a="x\r\nabc\r\n',
        b"3 x\r\nabc\r\n",
    ],
    ids=[
        "not-hex",
        "too-long-data",
        "bare-lf",
        "negative",
        "endless-size-line",
        "huge-trailers",
        "control-in-extension",
        "space-in-extension-name",
        "unclosed-quoted-extension",
        "junk-after-size",
    ],
)
def test_bad_chunked_is_refused(wire: bytes) -> None:
    with pytest.raises(ProtocolError):
        ChunkedReader().feed(wire, lambda piece: None)


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ([(b"content-length", b"3"), (b"transfer-encoding", b"chunked")], 400),
        ([(b"content-length", b"3"), (b"content-length", b"4")], 400),
        ([(b"content-length", b"-1")], 400),
        ([(b"content-length", b"1e3")], 400),
        ([(b"transfer-encoding", b"gzip, chunked")], 501),
    ],
)
def test_bad_framing_headers(headers: list[tuple[bytes, bytes]], status: int) -> None:
    with pytest.raises(ProtocolError) as info:
        reader_for(headers)
    assert info.value.status_hint == status


def test_framing_headers() -> None:
    assert reader_for([]) is None
    assert isinstance(reader_for([(b"content-length", b"5"), (b"content-length", b"5")]), LengthReader)
    assert isinstance(reader_for([(b"transfer-encoding", b"Chunked")]), ChunkedReader)


def test_peek_framing_measures_without_consuming() -> None:
    reader = ChunkedReader()
    assert reader.peek_framing(b"10") is None  # the size line is not all there
    assert reader.peek_framing(b"10\r\nabc") == (4, 16)
    assert reader.peek_framing(b"10;ext=1\r\n") is None  # extensions: feed() reads them
    assert reader.peek_framing(b"0\r\n\r\n") is None  # the last chunk: feed() reads it
    reader.enter_chunk(3)
    assert reader.remaining_in_frame == 3
    reader.consumed_raw(3)
    assert reader.at_chunk_end
    assert reader.peek_framing(b"\r\n5\r\nhello") == (5, 5)
    assert reader.peek_framing(b"xx5\r\n") is None  # not the CRLF a chunk must end with
    body = bytearray()
    reader.feed(b"\r\n0\r\n\r\n", body.extend)
    assert reader.done and body == b""


@settings(max_examples=200, deadline=None)
@given(pieces=st.lists(st.binary(min_size=1, max_size=200), min_size=1, max_size=6), peek=st.integers(1, 40))
def test_peek_then_raw_equals_feed(pieces: list[bytes], peek: int) -> None:
    """Walking a body by peek_framing + consumed_raw (the splice path) yields what feed() yields."""
    wire = chunked(pieces)
    reader = ChunkedReader()
    pos = 0
    body = bytearray()
    while not reader.done:
        if reader.remaining_in_frame:
            take = reader.remaining_in_frame
            body += wire[pos : pos + take]
            reader.consumed_raw(take)
            pos += take
            continue
        measured = reader.peek_framing(wire[pos : pos + peek])
        if measured is not None:
            length, size = measured
            pos += length
            reader.enter_chunk(size)
        else:
            pos += reader.feed(wire[pos : pos + peek], body.extend)
    assert bytes(body) == b"".join(pieces)
    assert pos == len(wire)
