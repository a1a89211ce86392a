"""The page's "key exchange" choice (Send and Receive): page to page, page to and from
`piping send/get --exchange`, and page to and from Piping UI 0.17, with the same code on both sides."""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .conftest import screenshot
from .test_key_exchange_piping_ui import TEXT, code_of, open_piping_ui, piping, piping_ui, shown_code

__all__ = ["piping_ui"]  # the fixture, used here too


def sender_page(
    new_page: Callable[..., Any], https_base: str, path: str, *, text: str | None = None, file: Path | None = None
) -> Any:
    """The send page with key exchange chosen, Send clicked: it waits for the receiver's key."""
    page = new_page(f"{https_base}/#send")
    page.fill("#path", path)
    if text is not None:
        page.check("#mode-text")
        page.fill("#text", text)
    else:
        page.set_input_files("#file", str(file))
    page.evaluate("document.querySelector('details.encrypt').open = true")
    page.check("#send-exchange")
    assert page.is_disabled("#send-pass")
    page.click("#send")
    return page


def confirm_code(page: Any) -> str:
    """The code the send page shows, after which the user clicks "Same code: send"."""
    page.wait_for_function("document.body.dataset.sendExchange === 'code'", timeout=60_000)
    code = str(page.text_content("#send-code-value"))
    page.click("#send-code-ok")
    return code


def receiver_page(new_page: Callable[..., Any], https_base: str, path: str) -> Any:
    page = new_page(f"{https_base}/#receive")
    page.fill("#recv-path", path)
    page.check("#recv-exchange")
    page.check("#recv-sink-memory")
    page.click("#recv-start")
    return page


def received(page: Any) -> None:
    page.wait_for_function("['done', 'failed'].includes(document.body.dataset.receiveState)", timeout=120_000)
    assert page.evaluate("document.body.dataset.receiveState") == "done", page.text_content("#recv-status")


def sent(page: Any) -> None:
    page.wait_for_function("['ok', 'error'].includes(document.getElementById('status').className)", timeout=120_000)
    assert page.get_attribute("#status", "class") == "ok", page.text_content("#status")


def test_page_to_page(new_page: Callable[..., Any], https_base: str) -> None:
    path = f"kx-{uuid.uuid4().hex[:10]}"
    receiver = receiver_page(new_page, https_base, path)
    sender = sender_page(new_page, https_base, path, text=TEXT)
    code = confirm_code(sender)
    received(receiver)
    sent(sender)
    assert receiver.text_content("#recv-code-value") == code
    assert receiver.text_content("#recv-text") == TEXT
    assert receiver.text_content("#recv-name") == f"{path}.txt"
    screenshot(receiver, "receive-key-exchange")


def test_page_file_to_piping_get_and_piping_send_to_page(
    new_page: Callable[..., Any], https_base: str, http_base: str, tmp_path: Path
) -> None:
    source = tmp_path / "data.bin"
    source.write_bytes(os.urandom(2_300_000))
    out = tmp_path / "out"
    out.mkdir()
    path = f"kx-{uuid.uuid4().hex[:10]}"
    getter = piping("get", "-x", "-y", "-q", f"{http_base}/{path}", "-o", f"{out}/")
    sender = sender_page(new_page, https_base, path, file=source)
    code = confirm_code(sender)
    _, err = getter.communicate(timeout=120)
    assert getter.returncode == 0, err.decode(errors="replace")
    sent(sender)
    assert (out / "data.bin").read_bytes() == source.read_bytes()
    assert code_of(err) == code

    path = f"kx-{uuid.uuid4().hex[:10]}"
    receiver = receiver_page(new_page, https_base, path)
    sender_proc = piping("send", "-x", "-y", "-q", f"{http_base}/{path}", str(source))
    received(receiver)
    _, err = sender_proc.communicate(timeout=60)
    assert sender_proc.returncode == 0, err.decode(errors="replace")
    assert receiver.text_content("#recv-sha256") == hashlib.sha256(source.read_bytes()).hexdigest()
    assert receiver.text_content("#recv-name") == "data.bin"
    assert receiver.text_content("#recv-code-value") == code_of(err)


def test_different_codes_send_nothing(
    new_page: Callable[..., Any], https_base: str, http_base: str, tmp_path: Path
) -> None:
    """The user says the codes differ: the receiver (the client) is told, and nothing is written."""
    path = f"kx-{uuid.uuid4().hex[:10]}"
    getter = piping("get", "-x", "-y", "-q", f"{http_base}/{path}", "-o", f"{tmp_path}/")
    sender = sender_page(new_page, https_base, path, text=TEXT)
    sender.wait_for_function("document.body.dataset.sendExchange === 'code'", timeout=60_000)
    sender.click("#send-code-no")
    _, err = getter.communicate(timeout=60)
    assert getter.returncode != 0 and b"did not confirm" in err, err
    sender.wait_for_function("document.getElementById('status').className === 'error'")
    assert "Not sent" in str(sender.text_content("#status"))
    assert list(tmp_path.iterdir()) == []


def test_page_and_piping_ui_both_ways(
    new_page: Callable[..., Any], https_base: str, piping_ui: str, tmp_path: Path
) -> None:
    path = f"kx-{uuid.uuid4().hex[:10]}"
    viewer = open_piping_ui(new_page, piping_ui, https_base, "get", path)
    viewer.click("[data-testid=view_button]")
    sender = sender_page(new_page, https_base, path, text=TEXT)
    code = confirm_code(sender)
    viewer.get_by_text(TEXT.strip().splitlines()[0]).first.wait_for(timeout=60_000)
    sent(sender)
    assert shown_code(viewer) == code

    path = f"kx-{uuid.uuid4().hex[:10]}"
    receiver = receiver_page(new_page, https_base, path)
    ui = open_piping_ui(new_page, piping_ui, https_base, "send", path)
    ui.locator("textarea").first.fill(TEXT)
    ui.click("[data-testid=send_button]")
    received(receiver)
    assert receiver.text_content("#recv-text") == TEXT
    assert receiver.text_content("#recv-code-value") == shown_code(ui)
