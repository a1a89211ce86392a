"""Call mode: two pages (Chromium's fake camera and microphone) in one room each play the other's
moving video and its sound; mute, camera-off, and the state when one side leaves."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from .conftest import screenshot

PLAY_WAIT_S = 45
ADVANCE_S = 1.0

# A fingerprint of the remote video's current frame (sampled pixels), to see that it moves.
FRAME = """() => {
    const v = document.getElementById('call-remote');
    if (!v.videoWidth) return '';
    const c = document.createElement('canvas');
    c.width = 64; c.height = 48;
    const g = c.getContext('2d');
    g.drawImage(v, 0, 0, 64, 48);
    return Array.from(g.getImageData(0, 0, 64, 48).data.filter((_, i) => i % 16 === 0)).join(',');
}"""


def _media(page: Any) -> dict[str, float]:
    return dict(
        page.evaluate("""() => { const v = document.getElementById('call-remote');
        return { time: v.currentTime, width: v.videoWidth, audio: v.webkitAudioDecodedByteCount || 0 }; }""")
    )


def _assert_plays_the_other(page: Any) -> None:
    page.wait_for_function("document.body.dataset.callState === 'in-call'", timeout=PLAY_WAIT_S * 1000)
    page.wait_for_function("document.getElementById('call-remote').currentTime > 0.2", timeout=PLAY_WAIT_S * 1000)
    first, frame = _media(page), page.evaluate(FRAME)
    deadline = time.monotonic() + PLAY_WAIT_S
    while time.monotonic() < deadline and _media(page)["time"] < first["time"] + ADVANCE_S:
        time.sleep(0.2)
    later = _media(page)
    assert later["time"] >= first["time"] + ADVANCE_S, "the other side's video does not advance"
    assert later["width"] > 0
    assert later["audio"] > first["audio"] > 0, "no sound is decoded from the other side"
    frames = {frame}
    deadline = time.monotonic() + PLAY_WAIT_S
    while time.monotonic() < deadline and len(frames) < 2:
        frames.add(page.evaluate(FRAME))
        time.sleep(0.3)
    assert len(frames) >= 2, "the other side's picture does not move"


@pytest.mark.parametrize("passphrase", ["", "call secret"], ids=["plain", "encrypted"])
def test_two_sides_see_and_hear_each_other_until_one_leaves(
    https_base: str, new_page: Callable[..., Any], passphrase: str
) -> None:
    room = f"call-{uuid.uuid4().hex[:10]}"
    pages = []
    for button in ("#call-start", "#call-join"):
        page = new_page(f"{https_base}/#call?room={room}")
        assert page.input_value("#call-room") == room
        if passphrase:
            page.click("#call-mode details.encrypt summary")
            page.fill("#call-pass", passphrase)
        page.click(button)
        pages.append(page)
    first, second = pages
    for page in pages:
        _assert_plays_the_other(page)
    if not passphrase:
        screenshot(second, "call")
        # A third person pressing "I join" in this busy room is told so, and the call goes on.
        third = new_page(f"{https_base}/#call?room={room}")
        third.click("#call-join")
        third.wait_for_function("document.body.dataset.callState === 'busy'")
        assert "Someone else is already in this room" in (third.text_content("#call-status") or "")
        assert first.evaluate("document.body.dataset.callState") == "in-call"

    # Mute and camera-off act on what this side sends, and say so on their buttons.
    first.click("#call-mute")
    first.click("#call-camera")
    assert first.evaluate("""() => { const v = document.getElementById('call-local').srcObject;
        return [v.getAudioTracks()[0].enabled, v.getVideoTracks()[0].enabled]; }""") == [False, False]
    assert first.text_content("#call-mute") == "Unmute"
    assert first.get_attribute("#call-camera", "aria-pressed") == "true"

    second.click("#call-hangup")
    second.wait_for_function("document.body.dataset.callState === 'ended'")
    first.wait_for_function("document.body.dataset.callState === 'peer-left'", timeout=PLAY_WAIT_S * 1000)
    assert first.text_content("#call-status") == "The other side left the call."
    assert first.is_enabled("#call-start")


def test_encrypted_call_is_openpgp_on_the_wire_and_a_passphrase_mismatch_says_so(
    https_base: str, new_page: Callable[..., Any], tmp_path: Path
) -> None:
    if shutil.which("gpg") is None:
        pytest.skip("gpg is not installed")
    # What the first side sends, read with curl instead of a second page: a symmetric OpenPGP message.
    room = f"call-{uuid.uuid4().hex[:10]}"
    first = new_page(f"{https_base}/#call?room={room}")
    first.click("#call-mode details.encrypt summary")
    first.fill("#call-pass", "secret")
    first.click("#call-start")
    head = subprocess.run(
        ["curl", "-ksSN", "--max-time", "4", f"{https_base}/{room}/call-1"], capture_output=True, timeout=60
    ).stdout  # ends at --max-time (the stream does not)
    first.click("#call-hangup")
    (tmp_path / "head.gpg").write_bytes(head[:65536])
    listed = subprocess.run(
        ["gpg", "--batch", "--list-packets", str(tmp_path / "head.gpg")],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "GNUPGHOME": str(tmp_path)},
    )
    assert ":symkey enc packet:" in listed.stdout, listed.stdout + listed.stderr

    # One side with a passphrase, the other without: each says what is wrong.
    room = f"call-{uuid.uuid4().hex[:10]}"
    first = new_page(f"{https_base}/#call?room={room}")
    first.click("#call-mode details.encrypt summary")
    first.fill("#call-pass", "secret")
    first.click("#call-start")
    second = new_page(f"{https_base}/#call?room={room}")
    second.click("#call-join")
    second.wait_for_function("document.body.dataset.callState === 'failed'", timeout=PLAY_WAIT_S * 1000)
    assert "enter the same passphrase" in (second.text_content("#call-status") or "")
    first.wait_for_function(
        "document.body.dataset.callState === 'failed' || document.body.dataset.callState === 'peer-left'",
        timeout=PLAY_WAIT_S * 1000,
    )


# Frozen seconds: currentTime sampled once a second; a second in which it moved less than this is frozen.
SAMPLE_S = 30
FROZEN_ADVANCE_S = 0.25
# Before key frames came every second the remote picture stood still 18-25 s of 29 (it can only
# resume at a key frame); with them 1-6 s. Measured here: 4 and 15 s before, 0 and 0 after.
# Generous for a loaded 2-core machine.
MAX_FROZEN_S = 8


def frozen_seconds(pages: list[Any], element_id: str, seconds: int = SAMPLE_S) -> list[int]:
    """For each page, how many of `seconds` one-second samples saw `element_id`'s currentTime stand still."""
    script = f"document.getElementById('{element_id}').currentTime"
    last = [float(page.evaluate(script)) for page in pages]
    frozen = [0] * len(pages)
    started = time.monotonic()
    for tick in range(1, seconds + 1):
        time.sleep(max(0.0, started + tick - time.monotonic()))
        for i, page in enumerate(pages):
            now = float(page.evaluate(script))
            if now - last[i] < FROZEN_ADVANCE_S:
                frozen[i] += 1
            last[i] = now
    return frozen


def test_remote_video_does_not_freeze_for_long(https_base: str, new_page: Callable[..., Any]) -> None:
    room = f"call-{uuid.uuid4().hex[:10]}"
    pages = []
    for button in ("#call-start", "#call-join"):
        page = new_page(f"{https_base}/#call?room={room}")
        page.click(button)
        pages.append(page)
    for page in pages:
        _assert_plays_the_other(page)
    frozen = frozen_seconds(pages, "call-remote")
    print(f"frozen seconds of {SAMPLE_S} (first side, second side): {frozen}")
    assert max(frozen) <= MAX_FROZEN_S, f"frozen seconds of {SAMPLE_S} on each side: {frozen}"
    pages[1].click("#call-hangup")
