"""The first part of a multipart/form-data upload, streamed (docs/protocol.md section 5).

A browser form sends its file as a part of a form. Only the first part goes to the receivers, with
its own Content-Type and Content-Disposition; the rest of the form is read and discarded.
"""

from __future__ import annotations

from collections.abc import Callable

from python_multipart.multipart import MultipartParser, parse_options_header


def boundary_of(content_type: bytes) -> bytes | None:
    """The boundary of a multipart/form-data Content-Type, or None if it is not one."""
    if b"multipart" not in content_type.lower():
        return None  # (the common case, told without the header parser)
    media_type, params = parse_options_header(content_type)
    if media_type.lower() != b"multipart/form-data":
        return None
    boundary = params.get(b"boundary")
    return boundary or None


class FirstPart:
    """Feeds a form's bytes in; calls out the first part's headers, data and end."""

    __slots__ = ("_parser", "_on_headers", "_on_data", "_on_end", "_headers", "_field", "_value", "_part", "_done")

    def __init__(
        self,
        boundary: bytes,
        *,
        on_headers: Callable[[dict[bytes, bytes]], None],
        on_data: Callable[[bytes], None],
        on_end: Callable[[], None],
    ) -> None:
        self._on_headers = on_headers
        self._on_data = on_data
        self._on_end = on_end
        self._headers: dict[bytes, bytes] = {}
        self._field = b""
        self._value = b""
        self._part = 0  # how many parts have begun
        self._done = False
        self._parser = MultipartParser(
            boundary,
            {
                "on_part_begin": self._part_begin,
                "on_header_field": self._header_field,
                "on_header_value": self._header_value,
                "on_header_end": self._header_end,
                "on_headers_finished": self._headers_finished,
                "on_part_data": self._part_data,
                "on_part_end": self._part_end,
            },
            max_header_count=64,
            max_header_size=16384,
        )

    @property
    def done(self) -> bool:
        """Whether the first part has ended (the rest of the form no longer matters)."""
        return self._done

    def feed(self, data: bytes) -> None:
        """Parse more of the form. Raises ValueError (from the parser) on a malformed form."""
        self._parser.write(data)

    def _part_begin(self) -> None:
        self._part += 1

    def _header_field(self, data: bytes, start: int, end: int) -> None:
        if self._part == 1:
            self._field += data[start:end]

    def _header_value(self, data: bytes, start: int, end: int) -> None:
        if self._part == 1:
            self._value += data[start:end]

    def _header_end(self) -> None:
        if self._part == 1:
            self._headers[self._field.strip().lower()] = self._value.strip()
            self._field = self._value = b""

    def _headers_finished(self) -> None:
        if self._part == 1:
            self._on_headers(self._headers)

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        if self._part == 1 and end > start:
            self._on_data(data[start:end])

    def _part_end(self) -> None:
        if self._part == 1:
            self._done = True
            self._on_end()
