"""Chat mode: two people in one room see each other's words while they are typed."""

from __future__ import annotations

import base64
import shutil
import subprocess
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from ..helpers import ServerProcess
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


PASSPHRASE = "chat passphrase"


def _connect(alice: Any, bob: Any, room: str) -> None:
    _join(alice, room)
    alice.wait_for_function("document.body.dataset.chatState === 'joining'")
    _join(bob, room)
    for page in (alice, bob):
        page.wait_for_function("['connected', 'ended'].includes(document.body.dataset.chatState)")


def _with_passphrase(page: Any, passphrase: str) -> Any:
    page.evaluate("document.querySelector('#chat-mode details.encrypt').open = true")
    page.fill("#chat-pass", passphrase)
    return page


def test_encrypted_chat_is_live_both_ways(https_base: str, new_page: Callable[..., Any]) -> None:
    room = f"room-{uuid.uuid4().hex[:10]}"
    alice = _with_passphrase(new_page(f"{https_base}/#chat"), PASSPHRASE)
    bob = _with_passphrase(new_page(f"{https_base}/#chat"), PASSPHRASE)
    _connect(alice, bob, room)
    assert "encrypted" in (alice.text_content("#chat-status") or "")
    alice.locator("#chat-input").press_sequentially("secret plan", delay=20)
    bob.wait_for_function("document.getElementById('chat-peer-live').textContent === 'secret plan'")
    alice.locator("#chat-input").press("Backspace")
    bob.wait_for_function("document.getElementById('chat-peer-live').textContent === 'secret pla'")
    alice.locator("#chat-input").press("Enter")
    bob.wait_for_function("[...document.querySelectorAll('#chat-log .peer')].some(p => p.textContent === 'secret pla')")
    bob.locator("#chat-input").press_sequentially("ok ü", delay=20)
    alice.wait_for_function("document.getElementById('chat-peer-live').textContent === 'ok ü'")
    screenshot(alice, "chat-encrypted")


def test_encrypted_chat_is_openpgp_on_the_wire(
    tls_server: ServerProcess, https_base: str, new_page: Callable[..., Any], tmp_path: Path
) -> None:
    """A terminal in the room (side b, as the page's header describes) gets one base64 OpenPGP
    message per line, and gpg decrypts each."""
    if shutil.which("gpg") is None:
        pytest.skip("gpg is not installed (apt-get install gnupg)")
    assert tls_server.ca_path is not None
    curl = ["curl", "-sS", "-N", "--cacert", tls_server.ca_path]
    room = f"room-{uuid.uuid4().hex[:10]}"
    alice = _with_passphrase(new_page(f"{https_base}/#chat"), PASSPHRASE)
    _join(alice, room)
    alice.wait_for_function("document.body.dataset.chatState === 'joining'")
    alice.wait_for_function("document.getElementById('chat-status').textContent.startsWith('Waiting for someone')")
    # Side b types nothing, but must be there for alice to be connected.
    typing = subprocess.Popen(
        [*curl, "-T", "-", f"{https_base}/{room}/b"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    reading = subprocess.Popen([*curl, f"{https_base}/{room}/a"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        alice.wait_for_function("document.body.dataset.chatState === 'connected'")
        alice.locator("#chat-input").press_sequentially("hi", delay=50)
        alice.locator("#chat-input").press("Enter")
        alice.click("#chat-leave")
        out, _ = reading.communicate(timeout=30)
    finally:
        for proc in (typing, reading):
            proc.kill()
            proc.wait(timeout=10)
    lines = out.decode().split()
    assert lines and all(b"hi" not in base64.b64decode(line) for line in lines)
    home = tmp_path / "gnupg"
    home.mkdir(mode=0o700)
    plain = b""
    for line in lines:
        result = subprocess.run(
            ["gpg", "--homedir", str(home), "--batch", "--pinentry-mode", "loopback", "--passphrase", PASSPHRASE, "-d"],
            input=base64.b64decode(line),
            capture_output=True,
            timeout=30,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        plain += result.stdout
    assert plain == b"hi\n"


def test_wrong_or_missing_passphrase_is_said_on_both_sides_before_anyone_types(
    https_base: str, new_page: Callable[..., Any]
) -> None:
    room = f"room-{uuid.uuid4().hex[:10]}"
    alice = _with_passphrase(new_page(f"{https_base}/#chat"), PASSPHRASE)
    bob = _with_passphrase(new_page(f"{https_base}/#chat"), "another one")
    _connect(alice, bob, room)
    for page in (alice, bob):
        page.wait_for_function("document.body.dataset.chatState === 'ended'")
        assert page.text_content("#chat-status") == "The passphrase is wrong: the other side uses another one."
    # No passphrase against an encrypting side: both told, nothing shown as text.
    room = f"room-{uuid.uuid4().hex[:10]}"
    carol = _with_passphrase(new_page(f"{https_base}/#chat"), PASSPHRASE)
    dave = new_page(f"{https_base}/#chat")
    _connect(carol, dave, room)
    dave.wait_for_function("document.body.dataset.chatState === 'ended'")
    assert "encrypts this chat" in (dave.text_content("#chat-status") or "")
    assert dave.text_content("#chat-peer-live") == ""
    carol.wait_for_function("document.body.dataset.chatState === 'ended'")
    assert "does not encrypt this chat" in (carol.text_content("#chat-status") or "")
    assert carol.text_content("#chat-peer-live") == ""


# Main-thread tasks longer than 50 ms ("long tasks"), counted by the page itself.
COUNT_LONG_TASKS = """() => { window.longTasks = 0;
    new PerformanceObserver((list) => { window.longTasks += list.getEntries().length; })
        .observe({ type: 'longtask' }); }"""
TYPED = "the quick brown fox jumps over it"
# Before the key was derived once per chat, every keystroke blocked each side 53-176 ms (one long
# task or more per character); without a passphrase, about none. Generous for a loaded machine.
MAX_LONG_TASKS = len(TYPED) // 3


def test_typing_with_a_passphrase_does_not_block_either_page(https_base: str, new_page: Callable[..., Any]) -> None:
    room = f"room-{uuid.uuid4().hex[:10]}"
    alice = _with_passphrase(new_page(f"{https_base}/#chat"), PASSPHRASE)
    bob = _with_passphrase(new_page(f"{https_base}/#chat"), PASSPHRASE)
    _connect(alice, bob, room)
    for page in (alice, bob):
        assert page.evaluate("document.body.dataset.chatState") == "connected"
        page.evaluate(COUNT_LONG_TASKS)
    alice.locator("#chat-input").press_sequentially(TYPED, delay=30)
    bob.wait_for_function(f"document.getElementById('chat-peer-live').textContent === {TYPED!r}")
    counts = [int(page.evaluate("window.longTasks")) for page in (alice, bob)]
    assert max(counts) <= MAX_LONG_TASKS, f"long tasks while typing {len(TYPED)} characters (alice, bob): {counts}"


def test_a_peer_that_goes_away_and_a_busy_room_are_explained(
    tls_server: ServerProcess, https_base: str, new_page: Callable[..., Any]
) -> None:
    room = f"room-{uuid.uuid4().hex[:10]}"
    alice = new_page(f"{https_base}/#chat")
    bob = new_page(f"{https_base}/#chat")
    _connect(alice, bob, room)
    # A third person: the room is busy, and said so.
    carol = new_page(f"{https_base}/#chat")
    _join(carol, room)
    carol.wait_for_function("document.body.dataset.chatState === 'ended'")
    status = carol.text_content("#chat-status") or ""
    assert "is busy" in status and "[ERROR]" not in status, status
    # Bob's tab closes (the page ends its stream as it goes): Alice reads that he left.
    bob.context.close()
    alice.wait_for_function("document.body.dataset.chatState === 'ended'")
    assert alice.text_content("#chat-status") == "The other side left the chat."

    # A peer whose connection is cut (a terminal killed): "went away", not "network error".
    assert tls_server.ca_path is not None
    curl = ["curl", "-sS", "-N", "--cacert", tls_server.ca_path]
    room = f"room-{uuid.uuid4().hex[:10]}"
    dave = new_page(f"{https_base}/#chat")
    _join(dave, room)
    dave.wait_for_function("document.getElementById('chat-status').textContent.startsWith('Waiting for someone')")
    typing = subprocess.Popen(
        [*curl, "-T", "-", f"{https_base}/{room}/b"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    reading = subprocess.Popen([*curl, "-o", "/dev/null", f"{https_base}/{room}/a"])
    try:
        dave.wait_for_function("document.body.dataset.chatState === 'connected'")
        assert typing.stdin is not None
        typing.stdin.write(b"hello from a terminal")
        typing.stdin.flush()
        dave.wait_for_function("document.getElementById('chat-peer-live').textContent === 'hello from a terminal'")
        typing.kill()
        dave.wait_for_function("document.body.dataset.chatState === 'ended'")
        status = dave.text_content("#chat-status") or ""
        assert "went away" in status and "network error" not in status, status
    finally:
        for proc in (typing, reading):
            proc.kill()
            proc.wait(timeout=10)
