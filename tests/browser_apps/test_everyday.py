"""What every mode does alike: it asks before a running thing is cut by leaving the page, Enter
submits, inputs are usable on a phone, and no empty player stands on the page."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

LEAVE_WAIT_MS = 10_000
PHONE = {"width": 390, "height": 844}
# At 390 px a card's content box is about 316 px wide; an input on a line of its own gets all of it.
MIN_PHONE_INPUT_PX = 250


def _close_asks(page: Any) -> bool:
    """Close the page as a user would (its beforeunload runs): whether the browser asked first.

    When it asks, the question is answered "stay", so the page is still open afterwards."""
    asked: list[str] = []

    def answer(dialog: Any) -> None:
        asked.append(dialog.type)
        dialog.dismiss()

    page.on("dialog", answer)
    try:
        with page.expect_event("close", timeout=LEAVE_WAIT_MS):
            page.close(run_before_unload=True)
    except Exception:  # noqa: BLE001 - playwright's TimeoutError: the page stayed, asked or not
        pass
    page.remove_listener("dialog", answer)
    return asked == ["beforeunload"]


def test_leaving_asks_first_while_a_share_runs_and_not_otherwise(https_base: str, new_page: Callable[..., Any]) -> None:
    sharer = new_page(f"{https_base}/#share?path=ask-{uuid.uuid4().hex[:10]}")
    sharer.click("#share-screen")
    sharer.wait_for_function("document.body.dataset.shareState === 'sharing'")
    assert _close_asks(sharer), "no 'leave this page?' question while sharing"
    assert not sharer.is_closed()
    sharer.click("#share-stop")
    assert not _close_asks(sharer)
    assert sharer.is_closed()


def test_leaving_asks_first_during_a_chat(https_base: str, new_page: Callable[..., Any]) -> None:
    page = new_page(f"{https_base}/#chat?room=ask-{uuid.uuid4().hex[:10]}")
    page.click("#chat-join")
    page.wait_for_function("document.body.dataset.chatState === 'joining'")
    assert _close_asks(page), "no 'leave this page?' question while in a chat room"
    page.click("#chat-leave")
    assert not _close_asks(page)


def test_enter_submits_in_every_field_with_a_button(https_base: str, new_page: Callable[..., Any]) -> None:
    page = new_page(f"{https_base}/#call?room=enter-{uuid.uuid4().hex[:10]}")
    page.press("#call-room", "Enter")
    page.wait_for_function("document.body.dataset.callState === 'waiting'")
    page.click("#call-hangup")
    page.goto(f"{https_base}/#share?path=enter-{uuid.uuid4().hex[:10]}")
    page.press("#share-path", "Enter")
    page.wait_for_function("document.body.dataset.shareState === 'waiting'")
    page.click("#share-stop")
    page.goto(f"{https_base}/#ssh")
    page.fill("#ssh-user", "nobody")
    page.fill("#ssh-password", "secret")
    page.press("#ssh-password", "Enter")
    page.wait_for_function("['connecting', 'unsupported'].includes(document.body.dataset.sshState)")
    page.click("#ssh-disconnect")


def test_every_input_is_full_width_on_a_phone(https_base: str, new_page: Callable[..., Any]) -> None:
    page = new_page(f"{https_base}/#share", viewport=PHONE)
    for mode in ("share", "call", "chat", "ssh", "vnc"):
        page.goto(f"{https_base}/#{mode}")
        page.wait_for_function("(m) => document.body.dataset.currentMode === m", arg=mode)
        page.evaluate("document.querySelectorAll('details').forEach((d) => { d.open = true; })")
        widths = page.evaluate(
            """(m) => [...document.querySelectorAll(`#${m}-mode input`)]
            .filter((i) => i.offsetParent !== null && !['checkbox', 'radio', 'number', 'file'].includes(i.type))
            .map((i) => [i.id, Math.round(i.getBoundingClientRect().width)])""",
            mode,
        )
        assert widths, mode
        narrow = [(name, width) for name, width in widths if width < MIN_PHONE_INPUT_PX]
        assert not narrow, f"{mode}: inputs narrower than {MIN_PHONE_INPUT_PX} px at 390 px: {narrow}"


def test_no_empty_call_player_before_or_after_a_call(https_base: str, new_page: Callable[..., Any]) -> None:
    page = new_page(f"{https_base}/#call?room=view-{uuid.uuid4().hex[:10]}")
    assert page.is_hidden("#call-remote") and page.is_hidden("#call-local")
    page.click("#call-start")
    page.wait_for_function("document.body.dataset.callState === 'waiting'")
    assert page.is_visible("#call-local"), "the self-view is there once the call starts"
    page.click("#call-hangup")
    page.wait_for_function("document.body.dataset.callState === 'ended'")
    assert page.is_hidden("#call-remote") and page.is_hidden("#call-local")
