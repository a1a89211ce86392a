"""Reserved pages, methods, CORS and every refusal, over every transport (docs/protocol.md 2-7)."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from ..helpers import CurlExchange, Target, fetch, unique_path


def test_index_page(target: Target, tmp_path: Path) -> None:
    got = fetch(target, "/", tmp=tmp_path)
    assert got.status == 200
    assert got.header("content-type") == "text/html"
    assert got.header("content-length") == str(len(got.body))
    assert got.header("access-control-allow-origin") is None
    assert b"noscript" in got.body  # a link to the page that works without scripts


def test_noscript_page_has_fresh_nonce(target: Target, tmp_path: Path) -> None:
    first = fetch(target, "/noscript?path=abc&mode=text", tmp=tmp_path)
    second = fetch(target, "/noscript", tmp=tmp_path)
    csp = first.header("content-security-policy") or ""
    match = re.fullmatch(r"default-src 'none'; style-src 'nonce-([A-Za-z0-9+/=]+)'", csp)
    assert match, csp
    assert first.header("content-type") == "text/html"
    assert f'nonce="{match.group(1)}"'.encode() in first.body
    assert second.header("content-security-policy") != csp
    assert b'enctype="multipart/form-data"' in first.body
    assert b"input_text" in first.body


def test_version(target: Target, tmp_path: Path) -> None:
    got = fetch(target, "/version", tmp=tmp_path)
    assert got.status == 200
    assert got.header("content-type") == "text/plain"
    assert got.header("access-control-allow-origin") == "*"
    assert re.fullmatch(rb"\d+\.\d+\.\d+\n", got.body)


def test_help_uses_own_url(target: Target, tmp_path: Path) -> None:
    got = fetch(target, "/help", tmp=tmp_path)
    assert got.status == 200 and got.header("access-control-allow-origin") == "*"
    assert got.header("content-type") == "text/plain"
    assert target.base_url.encode() in got.body
    forwarded = fetch(target, "/help", "-H", "X-Forwarded-Proto: https", "-H", "Host: relay.example", tmp=tmp_path)
    assert b"https://relay.example/" in forwarded.body


def test_favicon_and_robots(target: Target, tmp_path: Path) -> None:
    favicon = fetch(target, "/favicon.ico", tmp=tmp_path)
    assert favicon.status == 204 and favicon.body == b""
    robots = fetch(target, "/robots.txt", tmp=tmp_path)
    assert robots.status == 404 and robots.body == b""


def test_head_on_page_has_no_body(target: Target, tmp_path: Path) -> None:
    got = fetch(target, "/version", "-I", tmp=tmp_path)
    assert got.status == 200
    assert got.header("content-length") == "6" or got.header("content-length") is not None
    assert got.header("content-type") == "text/plain"


def test_empty_path_is_index(target: Target, tmp_path: Path) -> None:
    got = fetch(target, "/?x=1", tmp=tmp_path)
    assert got.status == 200 and got.header("content-type") == "text/html"


@pytest.mark.parametrize("page", ["/", "/help", "/noscript", "/version", "/favicon.ico", "/robots.txt"])
def test_send_to_reserved_path_refused(target: Target, tmp_path: Path, page: str) -> None:
    got = fetch(target, page, "-T", "-", tmp=tmp_path, input=b"x")
    assert got.status == 400
    assert got.body == f"[ERROR] Cannot send to the reserved path '{page}'. (e.g. '/mypath123')\n".encode()
    assert got.header("access-control-allow-origin") == "*"


def test_unsupported_method(target: Target, tmp_path: Path) -> None:
    got = fetch(target, "/anything", "-X", "DELETE", tmp=tmp_path)
    assert got.status == 405
    assert got.body == b"[ERROR] Unsupported method: DELETE.\n"
    assert got.header("allow") == "GET, HEAD, POST, PUT, OPTIONS"
    assert got.header("access-control-allow-origin") == "*"


def test_head_on_transfer_path_is_405(target: Target, tmp_path: Path) -> None:
    got = fetch(target, unique_path(), "-I", tmp=tmp_path)
    assert got.status == 405


@pytest.mark.parametrize("pna", [False, True])
def test_preflight(target: Target, tmp_path: Path, pna: bool) -> None:
    extra = ["-H", "Access-Control-Request-Private-Network: true"] if pna else []
    got = fetch(target, unique_path(), "-X", "OPTIONS", *extra, tmp=tmp_path)
    assert got.status == 200
    assert got.header("access-control-allow-origin") == "*"
    assert got.header("access-control-allow-methods") == "GET, HEAD, POST, PUT, OPTIONS"
    assert got.header("access-control-allow-headers") == "Content-Type, Content-Disposition, X-Piping"
    assert got.header("access-control-expose-headers") == "Access-Control-Allow-Headers"
    assert got.header("access-control-max-age") == "86400"
    assert got.header("content-length") in ("0", None)
    assert got.header("access-control-allow-private-network") == ("true" if pna else None)


def test_content_range_refused(target: Target, tmp_path: Path) -> None:
    got = fetch(
        target, unique_path(), "-X", "POST", "-H", "Content-Range: bytes 0-1/2", "--data-binary", "ab", tmp=tmp_path
    )
    assert got.status == 400
    assert got.body == b"[ERROR] Content-Range is not supported for now in POST\n"


@pytest.mark.parametrize(
    ("query", "as_sender", "message"),
    [
        ("n=abc", True, '[ERROR] Invalid "n" query parameter\n'),
        ("n=abc", False, '[ERROR] Invalid query parameter "n"\n'),
        ("n=0", True, "[ERROR] n should > 0, but n = 0.\n"),
        ("n=-2", False, "[ERROR] n should > 0, but n = -2.\n"),
    ],
)
def test_bad_n(target: Target, tmp_path: Path, query: str, as_sender: bool, message: str) -> None:
    args = ["-T", "-"] if as_sender else []
    got = fetch(target, unique_path() + "?" + query, *args, tmp=tmp_path, input=b"x" if as_sender else None)
    assert got.status == 400
    assert got.body == message.encode()


def test_service_worker_refused(target: Target, tmp_path: Path) -> None:
    got = fetch(target, unique_path(), "-H", "Service-Worker: script", tmp=tmp_path)
    assert got.status == 400
    assert got.body == b"[ERROR] Service Worker registration is rejected.\n"


def test_second_sender_and_n_mismatch_and_limit(target: Target, tmp_path: Path) -> None:
    path = unique_path()
    first = CurlExchange(target, "-T", "-", target.url(path + "?n=2"), stdin=-1, tmp=tmp_path)
    time.sleep(0.5)
    second = fetch(target, path + "?n=2", "-T", "-", tmp=tmp_path, input=b"x")
    assert second.status == 400
    assert second.body == f"[ERROR] Another sender has been connected on '{path}'.\n".encode()
    wrong_n = fetch(target, path + "?n=3", tmp=tmp_path)
    assert wrong_n.body == b"[ERROR] The number of receivers should be 2 but 3.\n"
    receivers = [CurlExchange(target, target.url(path + "?n=2"), tmp=tmp_path) for _ in range(2)]
    time.sleep(0.5)
    first.finish(input=b"payload")
    for recv in receivers:
        assert recv.finish().body == b"payload"


def test_receivers_reach_limit(target: Target, tmp_path: Path) -> None:
    path = unique_path()
    waiting = CurlExchange(target, target.url(path), tmp=tmp_path)
    time.sleep(0.5)
    extra = fetch(target, path, tmp=tmp_path)
    assert extra.status == 400
    assert extra.body == b"[ERROR] The number of receivers has reached limits.\n"
    mismatch = fetch(target, path + "?n=2", "-T", "-", tmp=tmp_path, input=b"x")
    assert mismatch.body == b"[ERROR] The number of receivers should be 1 but 2.\n"
    fetch(target, path, "-T", "-", tmp=tmp_path, input=b"end")
    assert waiting.finish().body == b"end"
