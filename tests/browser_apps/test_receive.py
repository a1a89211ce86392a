"""Receive mode: a file sent by curl arrives in the page with its name, its size and its SHA-256."""

from __future__ import annotations

import hashlib
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..helpers import ServerProcess, unique_path
from .conftest import screenshot

BIG_BYTES = 200 * 1024 * 1024
# Writing 200 MB, moving it through curl, the server and the page, and hashing it in JavaScript.
BIG_TIMEOUT_S = 240


def _random_file(path: Path, size: int) -> str:
    """Write ``size`` pseudo-random bytes (incompressible, quick to make) and return their SHA-256."""
    digest = hashlib.sha256()
    block = hashlib.sha512(b"piping").digest() * 1024  # 64 KiB seed, varied per block below
    with path.open("wb") as out:
        written = 0
        counter = 0
        while written < size:
            chunk = hashlib.sha512(counter.to_bytes(8, "big")).digest() + block
            chunk = chunk[: min(len(chunk), size - written)]
            out.write(chunk)
            digest.update(chunk)
            written += len(chunk)
            counter += 1
    return digest.hexdigest()


def _receive(page: Any, path: str) -> None:
    page.fill("#recv-path", path.lstrip("/"))
    page.check("#recv-sink-memory")
    page.click("#recv-start")
    page.wait_for_function("document.body.dataset.receiveState === 'waiting'")


def test_receive_a_200_mb_file_from_curl_over_h2(
    tls_server: ServerProcess, https_base: str, new_page: Callable[..., Any], tmp_path: Path
) -> None:
    source = tmp_path / "big.bin"
    want = _random_file(source, BIG_BYTES)
    path = unique_path("recv")
    page = new_page(f"{https_base}/#receive")
    _receive(page, path)
    assert tls_server.ca_path is not None
    sender = subprocess.Popen(
        ["curl", "-sS", "--http2", "--cacert", tls_server.ca_path, "-T", str(source),
         "-H", "Content-Disposition: attachment; filename=\"big data.bin\"", https_base + path],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    try:
        page.wait_for_function("['done', 'failed'].includes(document.body.dataset.receiveState)",
                               timeout=BIG_TIMEOUT_S * 1000)
        out, err = sender.communicate(timeout=60)
    finally:
        if sender.poll() is None:
            sender.kill()
            sender.wait(timeout=10)
    assert page.text_content("#recv-status") and page.get_attribute("#recv-status", "class") == "status ok", \
        page.text_content("#recv-status")
    assert page.text_content("#recv-name") == "big data.bin"
    assert page.text_content("#recv-sha256") == want
    assert f"({BIG_BYTES} bytes)" in (page.text_content("#recv-size") or "")
    assert page.get_attribute("#recv-save", "download") == "big data.bin"
    assert b"[INFO] All receiver(s) was/were received successfully." in out, (out, err)
    screenshot(page, "receive")


def test_receive_a_text_over_plain_http(http_base: str, new_page: Callable[..., Any]) -> None:
    """Receiving needs no streaming upload: it works over HTTP/1.1 too, and shows a text."""
    path = unique_path("recv")
    page = new_page(f"{http_base}/#receive")
    _receive(page, path)
    body = "hello from curl\n"
    subprocess.run(["curl", "-sS", "--data-binary", body, "-H", "Content-Type: text/plain", http_base + path],
                   check=True, capture_output=True, timeout=30)
    page.wait_for_function("document.body.dataset.receiveState === 'done'")
    assert page.text_content("#recv-sha256") == hashlib.sha256(body.encode()).hexdigest()
    assert page.text_content("#recv-text") == body
    assert page.text_content("#recv-name") == path.lstrip("/")
