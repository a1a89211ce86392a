"""``valid_host`` remembers its answers (a regular expression per request was measurable): the
answer stays the same however often a value comes, and the memo is bounded against clients that
send a new Host each time."""

from __future__ import annotations

from piping_server.relay import _headers
from piping_server.relay._headers import valid_host


def test_answers_do_not_change_once_remembered() -> None:
    for value in (b"example.com:8080", b"[::1]:80", b"", b"bad host", b"a@b", b"x" * 300):
        first = valid_host(value)
        assert [valid_host(value) for _ in range(3)] == [first] * 3
    assert valid_host(b"example.com:8080") and not valid_host(b"bad host")


def test_the_memo_is_bounded() -> None:
    for number in range(3000):
        valid_host(b"host-%d.example" % number)
    valid_host(b"y" * 10_000)
    checked = _headers._host_checked
    assert len(checked) <= 1024
    assert all(len(value) <= 255 for value in checked)
