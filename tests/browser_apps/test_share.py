"""Share mode: a fake screen (Chromium's fake capture) streams live to viewers, one or several."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest

from .conftest import screenshot

# How much playback must advance to count as live, and within how long.
ADVANCE_S = 1.5
PLAY_WAIT_S = 45


def _current_time(page: Any) -> float:
    return float(page.evaluate("document.getElementById('share-video').currentTime"))


def _assert_plays(page: Any) -> None:
    page.wait_for_function("document.body.dataset.shareState === 'playing'", timeout=PLAY_WAIT_S * 1000)
    page.wait_for_function("document.getElementById('share-video').currentTime > 0.2", timeout=PLAY_WAIT_S * 1000)
    first = _current_time(page)
    deadline = time.monotonic() + PLAY_WAIT_S
    while time.monotonic() < deadline and _current_time(page) < first + ADVANCE_S:
        time.sleep(0.2)
    assert _current_time(page) >= first + ADVANCE_S, "the video does not advance"
    size = page.evaluate("(v => [v.videoWidth, v.videoHeight])(document.getElementById('share-video'))")
    assert size[0] > 0 and size[1] > 0


@pytest.mark.parametrize("viewers", [1, 2])
def test_screen_share_plays_live(https_base: str, new_page: Callable[..., Any], viewers: int) -> None:
    path = f"share-{uuid.uuid4().hex[:10]}"
    sharer = new_page(f"{https_base}/#share")
    sharer.fill("#share-path", path)
    sharer.fill("#share-n", str(viewers))
    sharer.click("#share-screen")
    sharer.wait_for_function("document.body.dataset.shareState === 'sharing'")
    watchers = []
    for _ in range(viewers):
        watcher = new_page(f"{https_base}/#share")
        watcher.fill("#share-path", path)
        watcher.fill("#share-n", str(viewers))
        watcher.click("#share-watch")
        watchers.append(watcher)
    for watcher in watchers:
        _assert_plays(watcher)
    if viewers == 1:
        screenshot(watchers[0], "share")
    sharer.click("#share-stop")
    for watcher in watchers:
        watcher.wait_for_function("document.body.dataset.shareState === 'stopped'", timeout=PLAY_WAIT_S * 1000)


def test_camera_share_plays_live(https_base: str, new_page: Callable[..., Any]) -> None:
    path = f"cam-{uuid.uuid4().hex[:10]}"
    sharer = new_page(f"{https_base}/#share")
    sharer.fill("#share-path", path)
    sharer.click("#share-camera")
    sharer.wait_for_function("document.body.dataset.shareState === 'sharing'")
    watcher = new_page(f"{https_base}/#share?path={path}")
    watcher.click("#share-watch")
    _assert_plays(watcher)
    sharer.click("#share-stop")
