"""A page that works logs no errors in its console.

Only the share is held to it here, from the moment its viewer watches: while the sharer waits it
still asks the path once a second, and each answer (a 400) is logged; the chat's second side logs
the 400 that tells it it is second. Both are refusals the roles are built on (issue 21 item 5, left open)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

PLAY_WAIT_MS = 45_000
# How long a working share is watched for console errors (the sharer used to log one a second).
WATCH_S = 6


def _console_errors(page: Any) -> list[str]:
    errors: list[str] = []
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    return errors


def test_a_watched_share_logs_no_errors(https_base: str, new_page: Callable[..., Any]) -> None:
    path = f"share-{uuid.uuid4().hex[:10]}"
    sharer = new_page(f"{https_base}/#share?path={path}")
    sharer_errors = _console_errors(sharer)
    sharer.click("#share-screen")
    sharer.wait_for_function("document.body.dataset.shareState === 'sharing'")
    viewer = new_page(f"{https_base}/#share?path={path}")
    viewer_errors = _console_errors(viewer)
    viewer.click("#share-watch")
    viewer.wait_for_function("document.body.dataset.shareState === 'playing'", timeout=PLAY_WAIT_MS)
    sharer.wait_for_function("document.body.dataset.shareState === 'live'", timeout=PLAY_WAIT_MS)
    sharer_errors.clear()  # the questions while it waited (see above)
    time.sleep(WATCH_S)
    viewer.click("#share-stop")
    sharer.wait_for_function("document.body.dataset.shareState === 'viewer-left'", timeout=PLAY_WAIT_MS)
    assert sharer_errors == [] and viewer_errors == [], (sharer_errors, viewer_errors)
