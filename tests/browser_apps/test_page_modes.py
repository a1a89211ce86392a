"""The page as a whole: switching modes, links into a page already open, typed paths, and plain HTTP."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Callable
from typing import Any

from ..helpers import ServerProcess

MODES = ["receive", "chat", "share", "vnc", "ssh", "call", "send"]


def _visible(page: Any, selector: str) -> bool:
    return bool(
        page.evaluate(
            "(s) => { const e = document.querySelector(s);"
            " return !!e && e.offsetParent !== null && !document.body.hidden; }",
            selector,
        )
    )


def test_switching_tabs_shows_each_mode_and_hash_links_fill_an_open_page(
    https_base: str, new_page: Callable[..., Any]
) -> None:
    page = new_page(f"{https_base}/#send")
    assert _visible(page, "#send-mode")
    for mode in MODES:
        page.click(f"[data-mode-link={mode}]")
        page.wait_for_function("(m) => document.body.dataset.currentMode === m", arg=mode)
        assert _visible(page, f"#{mode}-mode"), f"{mode}: the page went blank"
        assert not page.evaluate("document.body.hidden")
    # A link such as "#receive?path=abc" opened in this page (no reload) fills the form.
    page.evaluate("location.hash = '#receive?path=from-a-link'")
    page.wait_for_function("document.getElementById('recv-path').value === 'from-a-link'")
    assert _visible(page, "#receive-mode")
    page.evaluate("location.hash = '#chat?room=room-from-link'")
    page.wait_for_function("document.getElementById('chat-room').value === 'room-from-link'")
    page.evaluate("location.hash = '#share?path=shared-here&n=2'")
    page.wait_for_function("document.getElementById('share-path').value === 'shared-here'")
    assert page.input_value("#share-n") == "2"
    page.evaluate("location.hash = '#ssh?path1=up-here&path2=down-here&user=alice'")
    page.wait_for_function("document.getElementById('ssh-path1').value === 'up-here'")
    assert page.input_value("#ssh-path2") == "down-here"
    assert page.input_value("#ssh-user") == "alice"
    # The command to run on the remote machine follows the new paths.
    assert (page.text_content("#ssh-command") or "").endswith(" up-here down-here")
    page.evaluate("location.hash = '#call?room=call-from-link'")
    page.wait_for_function("document.getElementById('call-room').value === 'call-from-link'")


def test_hash_and_question_mark_in_a_typed_path_are_sent_encoded(
    tls_server: ServerProcess, https_base: str, new_page: Callable[..., Any]
) -> None:
    """ "a#b?c" is one path: the page encodes "#" and "?" (only "?n=N" stays a query)."""
    base = f"enc-{uuid.uuid4().hex[:8]}"
    typed = f"{base}#part?x=1"
    assert tls_server.ca_path is not None
    page = new_page(f"{https_base}/#send")
    page.fill("#path", typed)
    assert page.text_content("#curl") == f"curl {https_base}/{base}%23part%3Fx=1"
    receiver = subprocess.Popen(
        ["curl", "-sS", "--cacert", tls_server.ca_path, f"{https_base}/{base}%23part%3Fx=1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    page.check("#mode-text")
    page.fill("#text", "the whole path")
    page.click("#send")
    page.wait_for_function("document.getElementById('status').className === 'ok'")
    out, err = receiver.communicate(timeout=30)
    assert out == b"the whole path", (out, err)
    # "?n=2" stays what it is: two receivers.
    page.fill("#path", f"{base}?n=2")
    assert page.text_content("#curl") == f"curl '{https_base}/{base}?n=2'"


def test_plain_http_says_up_front_that_streaming_modes_need_https(
    http_base: str, https_base: str, new_page: Callable[..., Any]
) -> None:
    page = new_page(f"{http_base}/#chat")
    notice = page.locator("#chat-mode [data-needs-https]")
    notice.wait_for(state="visible")  # before any click
    assert "HTTPS" in (notice.text_content() or "")
    link = page.locator("#chat-mode [data-https-link]")
    assert (link.get_attribute("href") or "").startswith(f"{https_base}/")
    for mode in ("share", "vnc"):
        page.click(f"[data-mode-link={mode}]")
        page.locator(f"#{mode}-mode [data-needs-https]").wait_for(state="visible")
    link = page.locator("#vnc-mode [data-https-link]")
    link.click()
    page.wait_for_url(f"{https_base}/#vnc")
    page.wait_for_function("document.body.dataset.currentMode === 'vnc'")
    assert not page.locator("#vnc-mode [data-needs-https]").is_visible()
