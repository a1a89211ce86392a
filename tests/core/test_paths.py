"""Path normalisation and ``n`` parsing (docs/protocol.md sections 1 and 4)."""

from __future__ import annotations

import pytest

from piping_server.core import parse_n, query_param, split_target


@pytest.mark.parametrize(
    ("target", "path", "query"),
    [
        ("/a/../b", "/b", ""),
        ("/a/./b/", "/a/b/", ""),
        ("/x?n=2", "/x", "n=2"),
        ("", "/", ""),
        ("/%2e%2e/A", "/%2e%2e/A", ""),
        ("/../../etc", "/etc", ""),
        ("http://host:1/p?q", "/p", "q"),
        ("/a/b/..", "/a/", ""),
    ],
)
def test_split_target(target: str, path: str, query: str) -> None:
    assert split_target(target) == (path, query)


@pytest.mark.parametrize(
    ("raw", "n"), [(None, 1), ("3", 3), ("3abc", 3), ("1.9", 1), (" 2", 2), ("abc", None), ("", None), ("-1", -1)]
)
def test_parse_n_is_parseint(raw: str | None, n: int | None) -> None:
    assert parse_n(raw) == n


def test_query_param_first_value() -> None:
    assert query_param("a=1&n=2&n=3", "n") == "2"
    assert query_param("a=1", "n") is None
    assert query_param("n=%33", "n") == "3"
