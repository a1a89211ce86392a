"""Request body framing for HTTP/1.1 (RFC 9112 sections 6 and 7), sans-IO.

httptools parses the request head; the body of an upload is framed here instead, for two reasons:
the body bytes can then go to the receivers as zero-copy slices of what the socket gave (httptools
copies every piece into a new ``bytes``), and the connection always knows exactly where a body
ends and how much of the current chunk is left, which is what lets a transfer move to the
kernel's ``splice`` (see ``_splice.py``).

A reader is fed what the connection received and returns how many of those bytes belong to the
body (framing included); what is left over is the next request. Body bytes are handed to ``emit``
as ``memoryview`` slices of the input, never copied.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Final

from ..core import ProtocolError

#: A chunk-size line or a trailer line longer than this is refused (nobody needs more).
MAX_CHUNK_LINE_BYTES: Final = 4096
#: So are more trailer bytes than this, in all.
MAX_TRAILER_BYTES: Final = 64 * 1024

Emit = Callable[[memoryview], None]

_HEX: Final = frozenset(b"0123456789abcdefABCDEF")
# RFC 9112 7.1.1: *( BWS ";" BWS name [ BWS "=" BWS ( token / quoted-string ) ] )
_TOKEN = rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_QUOTED = rb'"(?:[\t !#-\[\]-~\x80-\xff]|\\[\t -~\x80-\xff])*"'
_CHUNK_EXTENSIONS: Final = re.compile(rb"(?:[ \t]*;[ \t]*%s(?:[ \t]*=[ \t]*(?:%s|%s))?)*" % (_TOKEN, _TOKEN, _QUOTED))

# chunked states
_SIZE: Final = 0  # reading a chunk-size line
_DATA: Final = 1  # inside chunk data, ``remaining`` bytes to go
_DATA_END: Final = 2  # expecting the CRLF after chunk data
_TRAILER: Final = 3  # reading trailer lines until an empty one
_DONE: Final = 4


class BodyReader:
    """The framing of one request body; ``done`` once it has been read to its end."""

    __slots__ = ()

    done: bool

    def feed(self, data: bytes, emit: Emit) -> int:  # pragma: no cover - interface
        raise NotImplementedError

    @property
    def remaining_in_frame(self) -> int:
        """Body bytes that may follow with no framing to parse in between (0: framing comes next)."""
        raise NotImplementedError  # pragma: no cover

    def consumed_raw(self, count: int) -> None:
        """``count`` body bytes of the current frame went past this reader (spliced in the kernel)."""
        raise NotImplementedError  # pragma: no cover


class LengthReader(BodyReader):
    """A body of a known ``Content-Length``."""

    __slots__ = ("remaining", "done")

    def __init__(self, length: int) -> None:
        self.remaining = length
        self.done = length == 0

    def feed(self, data: bytes, emit: Emit) -> int:
        take = min(self.remaining, len(data))
        if take:
            emit(memoryview(data)[:take])
            self.remaining -= take
        self.done = self.remaining == 0
        return take

    @property
    def remaining_in_frame(self) -> int:
        return self.remaining

    def consumed_raw(self, count: int) -> None:
        self.remaining -= count
        self.done = self.remaining == 0


class ChunkedReader(BodyReader):
    """A ``Transfer-Encoding: chunked`` body; chunk extensions and trailers are read and dropped."""

    __slots__ = ("_state", "_remaining", "_line", "_trailer_bytes", "done")

    def __init__(self) -> None:
        self._state = _SIZE
        self._remaining = 0
        self._line = b""
        self._trailer_bytes = 0
        self.done = False

    @property
    def remaining_in_frame(self) -> int:
        return self._remaining if self._state == _DATA else 0

    def consumed_raw(self, count: int) -> None:
        self._remaining -= count
        if self._remaining == 0:
            self._state = _DATA_END

    @property
    def at_chunk_end(self) -> bool:
        """Whether the CRLF that closes a chunk's data comes next."""
        return self._state == _DATA_END

    def peek_framing(self, data: bytes) -> tuple[int, int] | None:
        """Measure, in bytes seen but not consumed, the framing before the next chunk's data.

        Returns (length, size): ``length`` bytes of framing (the CRLF closing the previous chunk if
        it is due, then a size line of plain hex digits) announcing a chunk of ``size`` bytes; or
        None when ``feed`` must read what comes (too few bytes seen, chunk extensions, the last
        chunk, or anything malformed, which ``feed`` then refuses). Nothing changes until
        ``enter_chunk`` says the framing went by.
        """
        if self._state == _DATA_END:
            return measure_framing(data, closes_chunk=True)
        if self._state != _SIZE or self._line:
            return None
        return measure_framing(data, closes_chunk=False)

    def enter_chunk(self, size: int) -> None:
        """The framing measured by ``peek_framing`` went by: the next ``size`` bytes are chunk data."""
        self._state = _DATA
        self._remaining = size

    def feed(self, data: bytes, emit: Emit) -> int:
        pos = 0
        end = len(data)
        view = memoryview(data)
        while pos < end:
            state = self._state
            if state == _DATA:
                take = min(self._remaining, end - pos)
                emit(view[pos : pos + take])
                pos += take
                self._remaining -= take
                if self._remaining == 0:
                    self._state = _DATA_END
                continue
            if state == _DONE:
                break
            newline = data.find(b"\n", pos)
            if newline < 0:
                self._line += data[pos:]
                pos = end
                if len(self._line) > MAX_CHUNK_LINE_BYTES:
                    raise ProtocolError("chunk line too long")
                break
            line = self._line + data[pos : newline + 1] if self._line else data[pos : newline + 1]
            self._line = b""
            pos = newline + 1
            if len(line) > MAX_CHUNK_LINE_BYTES:
                raise ProtocolError("chunk line too long")
            if not line.endswith(b"\r\n"):
                raise ProtocolError("chunk line must end with CRLF")
            if state == _SIZE:
                self._chunk_size(line)
            elif state == _DATA_END:
                if line != b"\r\n":
                    raise ProtocolError("chunk data longer than its size")
                self._state = _SIZE
            else:  # trailers
                if line == b"\r\n":
                    self._state = _DONE
                    self.done = True
                    break
                self._trailer_bytes += len(line)
                if self._trailer_bytes > MAX_TRAILER_BYTES:
                    raise ProtocolError("trailers too large")
        return pos

    def _chunk_size(self, line: bytes) -> None:
        digits, semicolon, extensions = line[:-2].partition(b";")
        digits = digits.rstrip(b" \t")
        if not digits or len(digits) > 16 or not _HEX.issuperset(digits):
            raise ProtocolError("bad chunk size")
        if semicolon and not _CHUNK_EXTENSIONS.fullmatch(semicolon + extensions):
            raise ProtocolError("bad chunk extension")  # ignored, but only once known to be one (RFC 9112 7.1.1)
        size = int(digits, 16)
        if size == 0:
            self._state = _TRAILER
        else:
            self._remaining = size
            self._state = _DATA


def measure_framing(data: bytes, *, closes_chunk: bool) -> tuple[int, int] | None:
    """(length, size) of plain chunk framing at the start of ``data``, or None (see ``peek_framing``).

    ``closes_chunk``: the framing begins with the CRLF that ends the previous chunk's data.
    """
    pos = 0
    if closes_chunk:
        if data[:2] != b"\r\n":
            return None
        pos = 2
    end = data.find(b"\r\n", pos)
    if end < 0:
        return None
    digits = data[pos:end]
    if not digits or len(digits) > 16 or not _HEX.issuperset(digits):
        return None
    size = int(digits, 16)
    return (end + 2, size) if size else None


def reader_for(headers: list[tuple[bytes, bytes]]) -> BodyReader | None:
    """The body framing that a request head declares; None when it has no body.

    Raises:
        ProtocolError: a framing the server cannot read (other transfer codings, a bad length).
    """
    length: bytes | None = None
    coding: bytes | None = None
    for name, value in headers:
        if name == b"content-length":
            if length is not None and length != value.strip():
                raise ProtocolError("conflicting Content-Length headers")
            length = value.strip()
        elif name == b"transfer-encoding":
            coding = value.strip().lower() if coding is None else coding + b"," + value.strip().lower()
    if coding is not None:
        if length is not None:
            raise ProtocolError("both Content-Length and Transfer-Encoding")
        codings = [c.strip() for c in coding.split(b",")]
        if codings[-1] != b"chunked" or codings.count(b"chunked") > 1:
            # RFC 9112 6.3: the body's length cannot be told: 400, and the connection closes
            raise ProtocolError("Transfer-Encoding must end with chunked, once")
        if len(codings) > 1:
            raise ProtocolError("unsupported Transfer-Encoding", status_hint=501)  # RFC 9112 6.1
        return ChunkedReader()
    if length is not None:
        if not length.isdigit() or len(length) > 18:
            raise ProtocolError("bad Content-Length")
        return LengthReader(int(length))
    return None
