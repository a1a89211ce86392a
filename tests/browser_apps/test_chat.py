"""Chat mode: two people in one room see each other's words while they are typed."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

from .conftest import screenshot


def _join(page: Any, room: str) -> None:
    page.fill("#chat-room", room)
    page.click("#chat-join")


def _live(page: Any) -> str:
    return page.text_content("#chat-peer-live") or ""


def test_two_people_chat_both_ways_while_typing(https_base: str, new_page: Callable[..., Any]) -> None:
    room = f"room-{uuid.uuid4().hex[:10]}"
    alice = new_page(f"{https_base}/#chat")
    bob = new_page(f"{https_base}/#chat")
    _join(alice, room)
    alice.wait_for_function("document.body.dataset.chatState === 'joining'")
    _join(bob, room)
    for page in (alice, bob):
        page.wait_for_function("document.body.dataset.chatState === 'connected'")

    # Alice types without ending the line: Bob sees each word as it is typed.
    alice.locator("#chat-input").press_sequentially("hello bob", delay=20)
    bob.wait_for_function("document.getElementById('chat-peer-live').textContent === 'hello bob'")
    # A correction streams as backspaces.
    alice.locator("#chat-input").press("Backspace")
    alice.locator("#chat-input").press("Backspace")
    alice.locator("#chat-input").press("Backspace")
    bob.wait_for_function("document.getElementById('chat-peer-live').textContent === 'hello '")
    alice.locator("#chat-input").press_sequentially("there", delay=20)
    bob.wait_for_function("document.getElementById('chat-peer-live').textContent === 'hello there'")
    alice.locator("#chat-input").press("Enter")
    bob.wait_for_function(
        "[...document.querySelectorAll('#chat-log .peer')].some(p => p.textContent === 'hello there')"
    )
    assert _live(bob) == ""

    # And the other way.
    bob.locator("#chat-input").press_sequentially("hi alice, typing", delay=20)
    alice.wait_for_function("document.getElementById('chat-peer-live').textContent === 'hi alice, typing'")
    bob.locator("#chat-input").press("Enter")
    alice.wait_for_function(
        "[...document.querySelectorAll('#chat-log .peer')].some(p => p.textContent === 'hi alice, typing')"
    )
    alice.locator("#chat-input").press_sequentially("see you", delay=20)
    bob.wait_for_function("document.getElementById('chat-peer-live').textContent === 'see you'")
    screenshot(bob, "chat")

    # Leaving ends the other side's stream cleanly.
    alice.click("#chat-leave")
    bob.wait_for_function("document.body.dataset.chatState === 'ended'")
    assert "left" in (bob.text_content("#chat-status") or "")


def test_chat_over_plain_http_says_uploads_cannot_stream(http_base: str, new_page: Callable[..., Any]) -> None:
    page = new_page(f"{http_base}/#chat")
    _join(page, "some-room")
    page.wait_for_function("document.body.dataset.chatState === 'unsupported'")
    text = page.text_content("#chat-status") or ""
    assert "cannot stream uploads" in text and "HTTP/2" in text, text
    assert page.get_attribute("#chat-status", "class") == "status error"
