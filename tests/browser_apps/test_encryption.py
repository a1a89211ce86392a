"""End-to-end encryption in the page: OpenPGP with a passphrase, readable by gpg and the piping
client, and the page reads what they write."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from ..helpers import ServerProcess
from .conftest import screenshot

PASSPHRASE = "correct horse battery staple"
TEXT = "Top secret: the meeting moved to 15:00. Ünïcödé too. 🔐\n"


def _gpg(tmp: Path, *args: str, input: bytes | None = None) -> bytes:
    if shutil.which("gpg") is None:
        pytest.skip("gpg is not installed (apt-get install gnupg)")
    home = tmp / "gnupg"
    home.mkdir(mode=0o700, exist_ok=True)
    result = subprocess.run(
        [
            "gpg",
            "--homedir",
            str(home),
            "--batch",
            "--yes",
            "--pinentry-mode",
            "loopback",
            "--passphrase",
            PASSPHRASE,
            *args,
        ],
        input=input,
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    return result.stdout


def _curl_get(server: ServerProcess, https_base: str, path: str) -> subprocess.Popen[bytes]:
    assert server.ca_path is not None
    return subprocess.Popen(
        ["curl", "-sS", "--http2", "--cacert", server.ca_path, https_base + "/" + path],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def _piping(*args: str, input: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "piping_server.cli", *args],
        input=input,
        capture_output=True,
        timeout=60,
        check=False,
        env={**os.environ, "PIPING_PASS": ""},
    )


def _send_from_page(page: Any, path: str) -> None:
    page.fill("#path", path)
    page.evaluate("document.querySelector('details.encrypt').open = true")
    page.fill("#send-pass", PASSPHRASE)
    page.click("#send")
    page.wait_for_function("document.getElementById('status').className === 'ok'")


def _waiting_receiver(new_page: Callable[..., Any], https_base: str, path: str, passphrase: str = "") -> Any:
    """The receive page, keeping the data in memory, waiting on ``path`` (with ``passphrase``, if any)."""
    page = new_page(f"{https_base}/#receive")
    page.fill("#recv-path", path)
    if passphrase:
        page.fill("#recv-pass", passphrase)
    page.check("#recv-sink-memory")
    page.click("#recv-start")
    page.wait_for_function("document.body.dataset.receiveState === 'waiting'")
    return page


def test_text_encrypted_by_the_page_decrypts_with_gpg(
    tls_server: ServerProcess, https_base: str, new_page: Callable[..., Any], tmp_path: Path
) -> None:
    path = f"enc-{uuid.uuid4().hex[:10]}"
    page = new_page(f"{https_base}/#send")
    page.check("#mode-text")
    page.fill("#text", TEXT)
    receiver = _curl_get(tls_server, https_base, path)
    _send_from_page(page, path)
    ciphertext, err = receiver.communicate(timeout=60)
    assert TEXT.encode() not in ciphertext
    assert _gpg(tmp_path, "--decrypt", input=ciphertext) == TEXT.encode()
    screenshot(page, "send-encrypted")


def test_file_encrypted_by_the_page_streams_to_piping_get(
    http_base: str, https_base: str, new_page: Callable[..., Any], tmp_path: Path
) -> None:
    """Over h2 the page encrypts a file while uploading it; `piping get --pass` restores it and its name."""
    source = tmp_path / "report.bin"
    source.write_bytes(os.urandom(3 * 1024 * 1024 + 17))
    path = f"enc-{uuid.uuid4().hex[:10]}"
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    getter = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "piping_server.cli",
            "get",
            "-q",
            "--pass",
            PASSPHRASE,
            "-o",
            str(out_dir) + "/",
            f"{http_base}/{path}",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    page = new_page(f"{https_base}/#send")
    page.set_input_files("#file", str(source))
    _send_from_page(page, path)
    out, err = getter.communicate(timeout=60)
    assert getter.returncode == 0, err.decode(errors="replace")
    assert (out_dir / "report.bin").read_bytes() == source.read_bytes()


def test_page_decrypts_what_piping_send_and_gpg_encrypted(
    http_base: str, https_base: str, new_page: Callable[..., Any], tmp_path: Path
) -> None:
    source = tmp_path / "notes.txt"
    source.write_text(TEXT)
    want = hashlib.sha256(TEXT.encode()).hexdigest()

    # `piping send --pass`: the name travels inside the encrypted data.
    path = f"enc-{uuid.uuid4().hex[:10]}"
    page = _waiting_receiver(new_page, https_base, path, PASSPHRASE)
    sent = _piping("send", "-q", "--pass", PASSPHRASE, f"{http_base}/{path}", str(source))
    assert sent.returncode == 0, sent.stderr.decode(errors="replace")
    page.wait_for_function("['done', 'failed'].includes(document.body.dataset.receiveState)")
    assert page.text_content("#recv-sha256") == want, page.text_content("#recv-status")
    assert page.text_content("#recv-name") == "notes.txt"
    assert page.text_content("#recv-text") == TEXT
    screenshot(page, "receive-decrypted")

    # `gpg -c` (compressed by default) piped to curl.
    path = f"enc-{uuid.uuid4().hex[:10]}"
    page.fill("#recv-path", path)
    page.click("#recv-start")
    page.wait_for_function("document.body.dataset.receiveState === 'waiting'")
    ciphertext = _gpg(tmp_path, "--symmetric", "--output", "-", str(source))
    subprocess.run(
        ["curl", "-sS", "-T", "-", f"{http_base}/{path}"], input=ciphertext, capture_output=True, timeout=60, check=True
    )
    page.wait_for_function("['done', 'failed'].includes(document.body.dataset.receiveState)")
    assert page.text_content("#recv-sha256") == want, page.text_content("#recv-status")
    assert page.text_content("#recv-text") == TEXT


def test_wrong_passphrase_is_reported(
    http_base: str, https_base: str, new_page: Callable[..., Any], tmp_path: Path
) -> None:
    path = f"enc-{uuid.uuid4().hex[:10]}"
    page = _waiting_receiver(new_page, https_base, path, "not the passphrase")
    ciphertext = _gpg(tmp_path, "--symmetric", "--output", "-", input=TEXT.encode())
    subprocess.run(
        ["curl", "-sS", "-T", "-", f"{http_base}/{path}"], input=ciphertext, capture_output=True, timeout=60, check=True
    )
    page.wait_for_function("document.body.dataset.receiveState === 'failed'")
    assert page.text_content("#recv-status") == "The passphrase is wrong."
    assert page.text_content("#recv-sha256") == ""


def test_encrypted_data_received_without_a_passphrase_is_called_so(
    http_base: str, https_base: str, new_page: Callable[..., Any], tmp_path: Path
) -> None:
    path = f"enc-{uuid.uuid4().hex[:10]}"
    page = _waiting_receiver(new_page, https_base, path)
    ciphertext = _gpg(tmp_path, "--symmetric", "--output", "-", input=TEXT.encode())
    subprocess.run(
        ["curl", "-sS", "-T", "-", f"{http_base}/{path}"], input=ciphertext, capture_output=True, timeout=60, check=True
    )
    page.wait_for_function("document.body.dataset.receiveState === 'done'")
    status = page.text_content("#recv-status") or ""
    assert "encrypted (OpenPGP)" in status and page.get_attribute("#recv-status", "class") == "status error", status
    assert page.text_content("#recv-type") == "OpenPGP, encrypted"
    assert page.is_hidden("#recv-text")  # no gibberish shown as text
    # Plain data with a passphrase set is called plain, not "wrong passphrase".
    path = f"enc-{uuid.uuid4().hex[:10]}"
    page.fill("#recv-path", path)
    page.fill("#recv-pass", PASSPHRASE)
    page.click("#recv-start")
    page.wait_for_function("document.body.dataset.receiveState === 'waiting'")
    subprocess.run(
        ["curl", "-sS", "--data-binary", "plain", f"{http_base}/{path}"], capture_output=True, timeout=60, check=True
    )
    page.wait_for_function("document.body.dataset.receiveState === 'failed'")
    assert "not encrypted" in (page.text_content("#recv-status") or "")
