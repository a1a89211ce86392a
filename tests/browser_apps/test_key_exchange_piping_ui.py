"""Piping UI 0.17 (the author's app, built, in Chromium) and `piping send/get --exchange` exchange keys
through our server, both ways: the same verification code on both sides, and the data arrives.

Piping UI is served from ../shared/third-party/piping-ui-0.17.0/dist (beside the repository) by a
static server of this test on 127.0.0.1; it talks to our server over HTTPS (HTTP/2).
"""

from __future__ import annotations

import functools
import http.server
import os
import re
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
PIPING_UI = ROOT.parent / "shared" / "third-party" / "piping-ui-0.17.0" / "dist"
CODE = re.compile(rb"verification code: ([0-9a-f]{32})")
TEXT = "Piping UI <-> piping --exchange: ünïcödé 🔐\n" * 3


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def piping_ui() -> Iterator[str]:
    """The URL of Piping UI's built app, served by a static server of this module."""
    if not (PIPING_UI / "index.html").is_file():
        pytest.skip(f"Piping UI 0.17.0 is not at {PIPING_UI} (the shared third-party folder beside the repository)")
    handler = functools.partial(_Quiet, directory=str(PIPING_UI))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/"
    finally:
        httpd.shutdown()
        httpd.server_close()


def open_piping_ui(new_page: Callable[..., Any], piping_ui: str, https_base: str, mode: str, path: str) -> Any:
    """Piping UI pointed at our server, in mode "send" or "get", with ``path`` as the secret path
    (its end-to-end encryption by key exchange is on by default)."""
    page = new_page("about:blank")
    page.context.add_init_script(f"localStorage.setItem('SELECTED_SERVER_URL', {https_base!r});")
    page.goto(piping_ui)
    page.click(f"[data-testid={mode}_menu_button]")
    box = page.locator("[data-testid=secret_path_input]")
    box.fill(path)
    box.press("Escape")  # close the suggestions of the combobox
    assert page.locator("[data-testid=passwordless_switch]").is_checked()
    return page


def piping(*args: str, input: bytes | None = None) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "piping_server.cli", *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdin is not None
    if input is not None:
        proc.stdin.write(input)
    proc.stdin.close()
    proc.stdin = None  # closed: communicate() must not flush it
    return proc


def code_of(stderr: bytes) -> str:
    match = CODE.search(stderr)
    assert match, stderr.decode(errors="replace")
    return match.group(1).decode()


def shown_code(page: Any) -> str:
    """The verification code Piping UI shows (in its table of the transfer)."""
    cell = page.locator("td", has_text=re.compile(r"^[0-9a-f]{32}$")).first
    cell.wait_for()
    return str(cell.text_content()).strip()


def test_piping_send_exchange_to_piping_ui(
    new_page: Callable[..., Any], piping_ui: str, https_base: str, http_base: str
) -> None:
    path = f"kx-{uuid.uuid4().hex[:10]}"
    page = open_piping_ui(new_page, piping_ui, https_base, "get", path)
    page.click("[data-testid=view_button]")
    sender = piping("send", "--exchange", "--yes", "-q", f"{http_base}/{path}", input=TEXT.encode())
    page.get_by_text(TEXT.strip().splitlines()[0]).first.wait_for(timeout=60_000)
    _, err = sender.communicate(timeout=60)
    assert sender.returncode == 0, err.decode(errors="replace")
    assert shown_code(page) == code_of(err)


def test_piping_ui_sends_to_piping_get_exchange(
    new_page: Callable[..., Any], piping_ui: str, https_base: str, http_base: str, tmp_path: Path
) -> None:
    path = f"kx-{uuid.uuid4().hex[:10]}"
    page = open_piping_ui(new_page, piping_ui, https_base, "send", path)
    page.locator("textarea").first.fill(TEXT)
    getter = piping("get", "--exchange", "--yes", "-q", f"{http_base}/{path}", "-o", str(tmp_path) + "/")
    page.click("[data-testid=send_button]")
    _, err = getter.communicate(timeout=60)
    assert getter.returncode == 0, err.decode(errors="replace")
    # A text travels without a name: as Piping UI does, the secret path names it, with the extension sent.
    assert (tmp_path / f"{path}.txt").read_text() == TEXT, list(tmp_path.iterdir())
    assert shown_code(page) == code_of(err)


def test_piping_ui_file_in_chunks_with_its_verified_button(
    new_page: Callable[..., Any], piping_ui: str, https_base: str, http_base: str, tmp_path: Path
) -> None:
    """A 2.5 MB file (three Robust chunks and the finish mark), sent once the user clicked "Verified"
    (Piping UI's "verify and send" switch): the name and bytes arrive; the code is the client's."""
    source = tmp_path / "photo.bin"
    source.write_bytes(os.urandom(2_500_000))
    out = tmp_path / "out"
    out.mkdir()
    path = f"kx-{uuid.uuid4().hex[:10]}"
    page = open_piping_ui(new_page, piping_ui, https_base, "send", path)
    page.set_input_files("input[type=file]", str(source))
    page.locator("[data-testid=passwordless_send_and_verify_switch]").check(force=True)
    getter = piping("get", "--exchange", "--yes", "-q", f"{http_base}/{path}", "-o", str(out) + "/")
    # FilePond hands the file to the app a moment after showing it: until then Send says "Input files or text".
    page.locator(".filepond--item[data-filepond-item-state=idle]").wait_for()
    for _ in range(10):
        page.click("[data-testid=send_button]")
        if page.locator("[data-testid=expand_panel_0]").count():
            break
        page.wait_for_timeout(500)
    page.click("[data-testid=passwordless_verified_button]")
    _, err = getter.communicate(timeout=120)
    assert getter.returncode == 0, err.decode(errors="replace")
    assert (out / "photo.bin").read_bytes() == source.read_bytes()
    assert shown_code(page) == code_of(err)


def test_piping_ui_cancel_reaches_piping_get(
    new_page: Callable[..., Any], piping_ui: str, https_base: str, http_base: str, tmp_path: Path
) -> None:
    """Piping UI's Cancel at the verification code: the client says so, and nothing is written."""
    path = f"kx-{uuid.uuid4().hex[:10]}"
    page = open_piping_ui(new_page, piping_ui, https_base, "send", path)
    page.locator("textarea").first.fill(TEXT)
    page.locator("[data-testid=passwordless_send_and_verify_switch]").check(force=True)
    getter = piping("get", "--exchange", "--yes", "-q", f"{http_base}/{path}", "-o", str(tmp_path) + "/")
    page.click("[data-testid=send_button]")
    page.locator("[data-testid=passwordless_verified_button]").wait_for()
    page.get_by_role("button", name="Cancel").first.click()
    _, err = getter.communicate(timeout=60)
    assert getter.returncode != 0
    assert b"did not confirm the verification code" in err, err
    assert list(tmp_path.iterdir()) == []
