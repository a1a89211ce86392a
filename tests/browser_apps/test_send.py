"""Send mode: what the sender sees while it waits, a large text, and the command shown to receivers."""

from __future__ import annotations

import hashlib
import subprocess
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..helpers import ServerProcess

TEXT_BYTES = 30_000_000


def _curl_get(server: ServerProcess, url: str, *args: str) -> subprocess.Popen[bytes]:
    assert server.ca_path is not None
    return subprocess.Popen(
        ["curl", "-sS", "--cacert", server.ca_path, *args, url], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )


def test_sender_waits_for_its_receiver_and_sees_the_servers_lines_as_they_come(
    tls_server: ServerProcess, https_base: str, new_page: Callable[..., Any]
) -> None:
    path = f"wait-{uuid.uuid4().hex[:10]}"
    page = new_page(f"{https_base}/#send")
    page.fill("#path", path)
    page.check("#mode-text")
    page.fill("#text", "hello receiver")
    page.click("#send")
    # No receiver yet: the page says so, with the server's own line, before anyone comes.
    page.wait_for_function("document.getElementById('status').textContent.includes('[INFO] Waiting for 1 receiver(s)')")
    status = page.text_content("#status") or ""
    assert status.startswith("Waiting for the receiver"), status
    assert "Connecting" not in status
    assert page.evaluate("(p => p.hidden || p.value < p.max)(document.getElementById('progress'))"), (
        "the bar says 100 % while nothing has gone"
    )
    receiver = _curl_get(tls_server, f"{https_base}/{path}")
    page.wait_for_function("document.getElementById('status').className === 'ok'")
    assert receiver.communicate(timeout=30)[0] == b"hello receiver"
    assert "All receiver(s) was/were received successfully" in (page.text_content("#status") or "")


def test_a_30_mb_text_goes_as_one_blob(
    tls_server: ServerProcess, https_base: str, new_page: Callable[..., Any], tmp_path: Path
) -> None:
    """A text is sent as a Blob by fetch(): encoded once, natively (an XHR string body was many times
    slower than a file of the same size). The time is printed for the record, not asserted."""
    path = f"big-text-{uuid.uuid4().hex[:10]}"
    page = new_page(f"{https_base}/#send")
    page.fill("#path", path)
    page.check("#mode-text")
    # One character repeated, set directly: typing 30 MB would measure the typing.
    page.evaluate("(n) => { document.getElementById('text').value = 'é'.repeat(n / 2); }", TEXT_BYTES)
    out_path = tmp_path / "received.txt"  # to a file: a pipe read only at the end would stall the transfer
    receiver = _curl_get(tls_server, f"{https_base}/{path}", "-o", str(out_path))
    started = time.monotonic()
    page.click("#send")
    page.wait_for_function(
        "['ok', 'error'].includes(document.getElementById('status').className)", timeout=120_000, polling=200
    )  # not per frame: 30 MB in a textarea makes frames slow
    print(f"30 MB of text sent in {time.monotonic() - started:.2f} s")
    receiver.communicate(timeout=60)
    assert page.get_attribute("#status", "class") == "ok", page.text_content("#status")
    want = hashlib.sha256(("é" * (TEXT_BYTES // 2)).encode()).hexdigest()
    assert hashlib.sha256(out_path.read_bytes()).hexdigest() == want
    kinds = page.evaluate(
        "(p) => performance.getEntriesByType('resource').filter(e => e.name.includes(p)).map(e => e.initiatorType)",
        path,
    )
    assert kinds == ["fetch"], kinds


def test_the_receive_command_decrypts_when_a_passphrase_is_set(https_base: str, new_page: Callable[..., Any]) -> None:
    page = new_page(f"{https_base}/#send")
    page.fill("#path", "some-path")
    assert page.text_content("#curl") == f"curl {https_base}/some-path"
    page.evaluate("document.querySelector('#send-mode details.encrypt').open = true")
    page.fill("#send-pass", "secret")
    assert page.text_content("#curl") == f"curl {https_base}/some-path | gpg -d"
    page.fill("#send-pass", "")
    assert page.text_content("#curl") == f"curl {https_base}/some-path"
