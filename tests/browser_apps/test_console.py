"""A page that works logs no errors in its console, and none of its requests fails (issue 21 item 5).

Chromium logs "Failed to load resource: the server responded with a status of 400" for every fetch
answered 4xx, and Playwright's requestfailed sees every fetch the page aborts (net::ERR_ABORTED):
the sharer used to ask its path once a second while it waited (each answer a 400, then the question
aborted; it now asks a question the server answers 204, docs/protocol.md section 12), and the chat's
second side learnt it was second from a 400 on ROOM/hello. Each mode is used here as a user would,
start to end, by both sides; whatever a user ends on purpose (Stop, Leave, Hang up) may abort that
user's own requests, nothing else may fail."""

from __future__ import annotations

import subprocess
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest

from ..helpers import ServerProcess

PLAY_WAIT_MS = 45_000
# How long the sharer waits for its viewer (it used to log one error a second), and how long a
# working share, chat or call is then watched.
WAIT_S = 4
WATCH_S = 3


class Trouble:
    """A page's console errors and failed requests, from the moment it is watched."""

    def __init__(self, page: Any, name: str) -> None:
        self.name = name
        self.seen: list[str] = []
        self.active = True  # False: seen no more
        page.on("console", lambda message: self._add(message.text) if message.type == "error" else None)
        page.on("requestfailed", lambda request: self._add(f"{request.url}: {request.failure}"))

    def _add(self, text: str) -> None:
        if self.active:
            self.seen.append(text)

    def __repr__(self) -> str:
        return f"{self.name}: {self.seen}"


def _none(*troubles: Trouble) -> None:
    assert all(trouble.seen == [] for trouble in troubles), troubles


def _share(https_base: str, new_page: Callable[..., Any], wait_s: float) -> tuple[Trouble, Trouble, Any, Any]:
    """A sharer that waits `wait_s` for its viewer, then plays to it: (the sharer's trouble until it
    is live, its trouble from then on), sharer, viewer; asserts neither side has any once live."""
    path = f"share-{uuid.uuid4().hex[:10]}"
    sharer = new_page(f"{https_base}/#share?path={path}")
    waiting = Trouble(sharer, "sharer waiting")
    sharer.click("#share-screen")
    sharer.wait_for_function("document.body.dataset.shareState === 'sharing'")
    time.sleep(wait_s)  # the sharer's questions about its path (each once an error), two a second
    assert sharer.evaluate("document.body.dataset.shareState") == "sharing"
    viewer = new_page(f"{https_base}/#share?path={path}")
    viewer_trouble = Trouble(viewer, "viewer")
    viewer.click("#share-watch")
    viewer.wait_for_function("document.body.dataset.shareState === 'playing'", timeout=PLAY_WAIT_MS)
    sharer.wait_for_function("document.body.dataset.shareState === 'live'", timeout=PLAY_WAIT_MS)
    # Until the sharer is live it asks (the last answer told it the viewers are there).
    waiting.active = False
    watched = Trouble(sharer, "sharer")
    time.sleep(WATCH_S)
    _none(watched, viewer_trouble)
    # The viewer stops (its own GET is aborted: its choice); the sharer is told, and logs nothing.
    viewer.click("#share-stop")
    sharer.wait_for_function("document.body.dataset.shareState === 'viewer-left'", timeout=PLAY_WAIT_MS)
    _none(watched)
    return waiting, watched, sharer, viewer


#: The waiting sharer's trouble from test_a_watched_share_logs_no_errors, for the test after it
#: (one share for both: each costs some 30 s of the suite's budget).
_WAITING: list[Trouble] = []


def test_a_watched_share_logs_no_errors(https_base: str, new_page: Callable[..., Any]) -> None:
    waiting, _, _, _ = _share(https_base, new_page, WAIT_S)
    _WAITING.append(waiting)


def test_a_share_waiting_for_its_viewer_logs_no_errors() -> None:
    if not _WAITING:
        pytest.skip("reads the share of test_a_watched_share_logs_no_errors, which did not run before it")
    _none(_WAITING[0])


def _two_sides(
    https_base: str, new_page: Callable[..., Any], mode: str, names: tuple[str, str]
) -> tuple[list[Any], list[Trouble]]:
    """Two pages in one new room of ``mode`` (chat, call), each with its troubles watched."""
    room = f"room-{uuid.uuid4().hex[:10]}"
    pages = [new_page(f"{https_base}/#{mode}?room={room}") for _ in names]
    return pages, [Trouble(page, name) for page, name in zip(pages, names, strict=True)]


def test_chat_logs_no_errors_on_either_side(https_base: str, new_page: Callable[..., Any]) -> None:
    (alice, bob), troubles = _two_sides(https_base, new_page, "chat", ("alice", "bob"))
    alice.click("#chat-join")
    alice.wait_for_function("document.body.dataset.chatState === 'joining'")
    time.sleep(1)  # alice waits first, on her hello
    bob.click("#chat-join")
    for page in (alice, bob):
        page.wait_for_function("document.body.dataset.chatState === 'connected'")
    alice.type("#chat-input", "hi bob")
    bob.wait_for_function("document.getElementById('chat-peer-live').textContent === 'hi bob'")
    bob.type("#chat-input", "hi alice")
    alice.wait_for_function("document.getElementById('chat-peer-live').textContent === 'hi alice'")
    _none(*troubles)
    alice.click("#chat-leave")
    bob.wait_for_function("document.body.dataset.chatState === 'ended'")
    _none(troubles[1])


def test_call_logs_no_errors_on_either_side(https_base: str, new_page: Callable[..., Any]) -> None:
    (first, second), troubles = _two_sides(https_base, new_page, "call", ("first", "second"))
    first.click("#call-start")
    first.wait_for_function("document.body.dataset.callState === 'waiting'")
    second.click("#call-join")
    for page in (first, second):
        page.wait_for_function("document.body.dataset.callState === 'in-call'", timeout=PLAY_WAIT_MS)
    time.sleep(WATCH_S)
    _none(*troubles)
    second.click("#call-hangup")
    first.wait_for_function("document.body.dataset.callState === 'peer-left'", timeout=PLAY_WAIT_MS)
    _none(troubles[0])


# How many pieces a streaming sender writes, and the pause between them.
PIECES, PIECE_PAUSE_S = 5, 0.1
# At most this long for the browser to report how the download's request ended.
SETTLE_S = 10


def test_a_streamed_download_is_reported_finished_not_canceled(
    tls_server: ServerProcess, https_base: str, new_page: Callable[..., Any]
) -> None:
    """Issue 21 item 12: with `Cache-Control: no-store`, Chromium reported every download whose body
    came in several pieces (no Content-Length, read with a stream reader as the receive mode does) as
    failed, net::ERR_ABORTED, every byte received: 8 of 8 here."""
    assert tls_server.ca_path is not None
    page = new_page(f"{https_base}/#receive")
    trouble = Trouble(page, "receiver")
    finished: list[str] = []
    page.on("requestfinished", lambda request: finished.append(request.url))
    path = f"stream-{uuid.uuid4().hex[:10]}"
    page.fill("#recv-path", path)
    page.check("#recv-sink-memory")
    page.click("#recv-start")
    page.wait_for_function("document.body.dataset.receiveState === 'waiting'")
    sender = subprocess.Popen(
        ["curl", "-sS", "--http2", "--cacert", tls_server.ca_path, "-T", "-", f"{https_base}/{path}"],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
    )
    assert sender.stdin is not None
    try:
        for _ in range(PIECES):
            sender.stdin.write(b"piece\n")
            sender.stdin.flush()
            time.sleep(PIECE_PAUSE_S)
        sender.stdin.close()
        assert sender.wait(timeout=30) == 0
    finally:
        sender.kill()
    page.wait_for_function("document.body.dataset.receiveState === 'done'")
    # The request's own end is reported a moment after the page has read the last byte.
    url = f"{https_base}/{path}"
    deadline = time.monotonic() + SETTLE_S
    while url not in finished and not trouble.seen and time.monotonic() < deadline:
        page.wait_for_timeout(100)
    _none(trouble)
    assert url in finished
