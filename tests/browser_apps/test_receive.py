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
        [
            "curl",
            "-sS",
            "--http2",
            "--cacert",
            tls_server.ca_path,
            "-T",
            str(source),
            "-H",
            'Content-Disposition: attachment; filename="big data.bin"',
            https_base + path,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        page.wait_for_function(
            "['done', 'failed'].includes(document.body.dataset.receiveState)", timeout=BIG_TIMEOUT_S * 1000
        )
        out, err = sender.communicate(timeout=60)
    finally:
        if sender.poll() is None:
            sender.kill()
            sender.wait(timeout=10)
    assert page.text_content("#recv-status") and page.get_attribute("#recv-status", "class") == "status ok", (
        page.text_content("#recv-status")
    )
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
    subprocess.run(
        ["curl", "-sS", "--data-binary", body, "-H", "Content-Type: text/plain", http_base + path],
        check=True,
        capture_output=True,
        timeout=30,
    )
    page.wait_for_function("document.body.dataset.receiveState === 'done'")
    assert page.text_content("#recv-sha256") == hashlib.sha256(body.encode()).hexdigest()
    assert page.text_content("#recv-text") == body
    assert page.text_content("#recv-name") == path.lstrip("/")


def test_a_download_without_content_type_keeps_its_name(
    http_base: str, new_page: Callable[..., Any], tmp_path: Path
) -> None:
    """No Content-Type from the sender: the Save link gives the name as is, without ".txt" added."""
    path = unique_path("recv")
    page = new_page(f"{http_base}/#receive", accept_downloads=True)
    _receive(page, path)
    source = tmp_path / "report"
    source.write_text("plain words, and no type given\n")
    # curl -T sends no Content-Type at all.
    subprocess.run(["curl", "-sS", "-T", str(source), http_base + path], check=True, capture_output=True, timeout=30)
    page.wait_for_function("document.body.dataset.receiveState === 'done'")
    with page.expect_download() as download_info:
        page.click("#recv-save")
    download = download_info.value
    assert download.suggested_filename == path.lstrip("/")
    saved = tmp_path / "saved"
    download.save_as(saved)
    assert saved.read_bytes() == source.read_bytes()


# A save picker cannot be clicked in headless Chromium: this stands in for the user's choice, with a
# real FileSystemFileHandle of the origin's private file system, so the page's disk path runs as is.
PICKER_HOOK = """
window.showSaveFilePicker = async (options) => {
  const root = await navigator.storage.getDirectory();
  window.pickedName = options.suggestedName;
  return root.getFileHandle("picked-" + options.suggestedName, { create: true });
};
"""


def test_straight_to_a_file_on_disk(
    tls_server: ServerProcess, https_base: str, browser: Any, contexts: list[Any], tmp_path: Path
) -> None:
    source = tmp_path / "disk.bin"
    want = _random_file(source, 3 * 1024 * 1024 + 5)
    path = unique_path("disk")
    context = browser.new_context(ignore_https_errors=True)
    contexts.append(context)
    context.add_init_script(PICKER_HOOK)
    page = context.new_page()
    page.goto(f"{https_base}/#receive")
    assert page.is_enabled("#recv-sink-disk") and page.is_checked("#recv-sink-disk")
    page.fill("#recv-path", path.lstrip("/"))
    page.click("#recv-start")
    page.wait_for_function("document.body.dataset.receiveState === 'waiting'")
    assert tls_server.ca_path is not None
    sender = subprocess.Popen(
        [
            "curl",
            "-sS",
            "--cacert",
            tls_server.ca_path,
            "-T",
            str(source),
            "-H",
            'Content-Disposition: attachment; filename="on disk.bin"',
            https_base + path,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        page.locator("#recv-save-disk").click()  # the user's click that may open a picker
        page.wait_for_function("['done', 'failed'].includes(document.body.dataset.receiveState)")
        sender.communicate(timeout=60)
    finally:
        if sender.poll() is None:
            sender.kill()
            sender.wait(timeout=10)
    assert page.get_attribute("#recv-status", "class") == "status ok", page.text_content("#recv-status")
    assert page.evaluate("window.pickedName") == "on disk.bin"
    assert page.text_content("#recv-sha256") == want
    # What the page wrote, read back from the file it wrote to.
    written = page.evaluate("""async () => {
        const root = await navigator.storage.getDirectory();
        const file = await (await root.getFileHandle('picked-on disk.bin')).getFile();
        const digest = await crypto.subtle.digest('SHA-256', await file.arrayBuffer());
        return [file.size, [...new Uint8Array(digest)].map(b => b.toString(16).padStart(2, '0')).join('')];
    }""")
    assert written == [source.stat().st_size, want]
    assert not page.is_visible("#recv-save")  # nothing gathered in the page
