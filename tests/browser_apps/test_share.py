"""Share mode: a fake screen (Chromium's fake capture) streams live to viewers, one or several."""

from __future__ import annotations

import shutil
import subprocess
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from ..deploy.proxies import NGINX, start_proxy
from ..helpers import ServerProcess, start_server
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
    else:
        # One of two leaves, the other watches on: the sharer does not claim two viewers (issue 21 item 4).
        watchers[0].click("#share-stop")
        _assert_plays(watchers[1])
        status = sharer.text_content("#share-status") or ""
        assert status.startswith("Live:") and "2 viewer(s)" not in status, status
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


PASSPHRASE = "share passphrase"


def _sharer(new_page: Callable[..., Any], https_base: str, path: str, *, n: int = 1, passphrase: str = "") -> Any:
    sharer = new_page(f"{https_base}/#share")
    sharer.fill("#share-path", path)
    sharer.fill("#share-n", str(n))
    if passphrase:
        sharer.evaluate("document.querySelector('#share-mode details.encrypt').open = true")
        sharer.fill("#share-pass", passphrase)
    sharer.click("#share-screen")
    sharer.wait_for_function("document.body.dataset.shareState === 'sharing'")
    return sharer


def _viewer(new_page: Callable[..., Any], url: str, passphrase: str = "") -> Any:
    viewer = new_page(url)
    if passphrase:
        viewer.evaluate("document.querySelector('#share-mode details.encrypt').open = true")
        viewer.fill("#share-pass", passphrase)
    viewer.click("#share-watch")
    return viewer


def test_sharer_sees_its_viewers_come_and_go(https_base: str, new_page: Callable[..., Any]) -> None:
    path = f"share-{uuid.uuid4().hex[:10]}"
    sharer = _sharer(new_page, https_base, path)
    # Before anyone watches: waiting, nothing recorded, and a link to hand out (with a copy button).
    status = sharer.text_content("#share-status") or ""
    assert status.startswith("Waiting for a viewer"), status
    link = sharer.text_content("#share-link") or ""
    assert link == f"{https_base}/#share?path={path}"
    assert sharer.is_visible("#share-copy")
    time.sleep(1.5)  # a probe or two: still waiting, still nothing sent
    assert sharer.evaluate("document.body.dataset.shareState") == "sharing"
    assert "sent" not in (sharer.text_content("#share-status") or "")
    viewer = new_page(link)  # the link fills the path in
    viewer.click("#share-watch")
    _assert_plays(viewer)
    sharer.wait_for_function("document.body.dataset.shareState === 'live'")
    assert (sharer.text_content("#share-status") or "").startswith("Live:")
    # The viewer leaves: the sharer notices, and no empty player stays.
    viewer.click("#share-stop")
    sharer.wait_for_function("document.body.dataset.shareState === 'viewer-left'", timeout=PLAY_WAIT_S * 1000)
    assert "viewer left" in (sharer.text_content("#share-status") or "")
    assert sharer.is_hidden("#share-video")


def test_stop_is_immediate_and_a_closed_sharer_tab_is_explained(https_base: str, new_page: Callable[..., Any]) -> None:
    path = f"share-{uuid.uuid4().hex[:10]}"
    sharer = _sharer(new_page, https_base, path, n=2)
    first = _viewer(new_page, f"{https_base}/#share?path={path}&n=2")
    first.wait_for_function("document.body.dataset.shareState === 'waiting'")
    # One of two viewers: it does not claim that the sharer is missing.
    status = first.text_content("#share-status") or ""
    assert "all 2 viewers" in status and "Waiting for the sharer" not in status, status
    second = _viewer(new_page, f"{https_base}/#share?path={path}&n=2")
    _assert_plays(second)
    sharer.click("#share-stop")
    assert sharer.text_content("#share-status") == "Stopped."
    assert sharer.is_hidden("#share-video")
    time.sleep(0.5)  # no late "Sharing..." from the recorder's last piece
    assert sharer.text_content("#share-status") == "Stopped."
    first.wait_for_function("document.body.dataset.shareState === 'stopped'", timeout=PLAY_WAIT_S * 1000)

    # A sharer whose tab closes mid-stream: the viewer is told so, not "network error".
    path = f"share-{uuid.uuid4().hex[:10]}"
    sharer = _sharer(new_page, https_base, path)
    viewer = _viewer(new_page, f"{https_base}/#share?path={path}")
    _assert_plays(viewer)
    sharer.context.close()
    viewer.wait_for_function("document.body.dataset.shareState === 'stopped'", timeout=PLAY_WAIT_S * 1000)
    status = viewer.text_content("#share-status") or ""
    assert status == "The sharer went away (the stream was cut).", status


def test_encrypted_share_plays_and_is_openpgp_on_the_wire(
    tls_server: ServerProcess, https_base: str, new_page: Callable[..., Any], tmp_path: Path
) -> None:
    if shutil.which("gpg") is None:
        pytest.skip("gpg is not installed (apt-get install gnupg)")
    path = f"share-{uuid.uuid4().hex[:10]}"
    sharer = _sharer(new_page, https_base, path, passphrase=PASSPHRASE)
    viewer = _viewer(new_page, f"{https_base}/#share?path={path}", PASSPHRASE)
    _assert_plays(viewer)
    screenshot(viewer, "share-encrypted")
    sharer.click("#share-stop")

    # The command line: curl URL | gpg -d gives the WebM stream.
    path = f"share-{uuid.uuid4().hex[:10]}"
    sharer = _sharer(new_page, https_base, path, passphrase=PASSPHRASE)
    assert tls_server.ca_path is not None
    curl = subprocess.Popen(
        ["curl", "-sS", "-N", "--cacert", tls_server.ca_path, f"{https_base}/{path}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    sharer.wait_for_function("document.body.dataset.shareState === 'live'")
    sharer.wait_for_function("/[kM]B sent/.test(document.getElementById('share-status').textContent)")
    sharer.click("#share-stop")
    ciphertext, err = curl.communicate(timeout=60)
    assert ciphertext[:1] in (b"\xc3", b"\x8c"), ciphertext[:16]  # a passphrase-encrypted session key packet
    home = tmp_path / "gnupg"
    home.mkdir(mode=0o700)
    result = subprocess.run(
        ["gpg", "--homedir", str(home), "--batch", "--pinentry-mode", "loopback", "--passphrase", PASSPHRASE, "-d"],
        input=ciphertext,
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout[:4] == b"\x1a\x45\xdf\xa3"  # EBML: a WebM stream


def test_viewer_without_the_right_passphrase_says_so(https_base: str, new_page: Callable[..., Any]) -> None:
    for given, expected in (("not it", "The passphrase is wrong."), ("", "encrypted: enter its passphrase")):
        path = f"share-{uuid.uuid4().hex[:10]}"
        sharer = _sharer(new_page, https_base, path, passphrase=PASSPHRASE)
        viewer = _viewer(new_page, f"{https_base}/#share?path={path}", given)
        viewer.wait_for_function("document.body.dataset.shareState === 'wrong-passphrase'", timeout=PLAY_WAIT_S * 1000)
        assert expected in (viewer.text_content("#share-status") or "")
        assert viewer.is_hidden("#share-video")
        sharer.click("#share-stop")


def test_live_share_plays_for_a_viewer_who_joins_mid_way(https_base: str, new_page: Callable[..., Any]) -> None:
    """A live share (`POST PATH?live`): a second viewer joins while the first watches, and plays too."""
    path = f"live-{uuid.uuid4().hex[:10]}"
    # A small backlog: while nobody watches, the sharer soon drops pieces (whole Clusters).
    sharer = new_page(f"{https_base}/#share?backlog=16384")
    sharer.fill("#share-path", path)
    sharer.check("#share-live")
    sharer.click("#share-screen")
    sharer.wait_for_function("document.body.dataset.shareState === 'live'")
    link = sharer.text_content("#share-link") or ""
    assert "live=1" in link
    sharer.wait_for_function("Number(document.body.dataset.liveDropped) > 0", timeout=PLAY_WAIT_S * 1000)
    # The first viewer gets what the sharer held, then the stream after the cut: it plays on.
    first = new_page(link)
    first.click("#share-watch")
    _assert_plays(first)
    _assert_plays(first)  # past the cut too
    # Joined mid-way: its first bytes are somewhere inside the stream.
    second = new_page(link)
    second.click("#share-watch")
    _assert_plays(second)
    assert int(second.evaluate("document.getElementById('share-video').dataset.liveOffset")) > 0
    first.click("#share-stop")
    # The first viewer's leaving does not disturb the second.
    _assert_plays(second)
    # A viewer who typed the path without ticking "live" is told by the answer (Piping-Live-Offset).
    third = new_page(f"{https_base}/#share?path={path}")
    third.click("#share-watch")
    _assert_plays(third)
    assert third.is_checked("#share-live")
    sharer.click("#share-stop")
    second.wait_for_function("document.body.dataset.shareState === 'stopped'", timeout=PLAY_WAIT_S * 1000)


def test_the_sharer_asks_without_joining_and_records_once_all_viewers_are_there(
    tls_server: ServerProcess, https_base: str, new_page: Callable[..., Any]
) -> None:
    """Issue 21 item 5: while it waits, the sharer asks the server about its path (`HEAD` with
    `Piping-Ask: state`, docs/protocol.md section 12), which joins nothing and is never an error; it
    posts nothing but its upload. With n = 2 it records only once both viewers are there, one of them
    `curl` (a plain GET, as `curl URL | ffplay -`); once they watch, it asks no more."""
    from urllib.parse import urlsplit

    path = f"share-{uuid.uuid4().hex[:10]}"
    sharer = new_page(f"{https_base}/#share?path={path}&n=2")
    requests: list[tuple[str, str | None]] = []  # (method, Piping-Ask) of each request the sharer makes to the path
    answers: list[tuple[int, str | None]] = []  # (status, Piping-State) of each answered question

    def seen(request: Any) -> None:
        if urlsplit(request.url).path == f"/{path}":
            requests.append((request.method, request.headers.get("piping-ask")))

    def answered(response: Any) -> None:
        if response.request.method == "HEAD" and urlsplit(response.url).path == f"/{path}":
            answers.append((response.status, response.headers.get("piping-state")))

    sharer.on("request", seen)
    sharer.on("response", answered)
    sharer.click("#share-screen")
    sharer.wait_for_function("document.body.dataset.shareState === 'sharing'")
    time.sleep(1.5)  # questions while nobody watches
    viewer = _viewer(new_page, f"{https_base}/#share?path={path}&n=2")
    viewer.wait_for_function("document.body.dataset.shareState === 'waiting'")
    time.sleep(1.5)  # one viewer of two: the upload still waits, nothing is recorded
    assert sharer.evaluate("document.body.dataset.shareState") == "sharing"
    assert "sent" not in (sharer.text_content("#share-status") or "")
    assert tls_server.ca_path is not None
    curl = subprocess.Popen(
        ["curl", "-sS", "-N", "--max-time", "60", "--cacert", tls_server.ca_path, f"{https_base}/{path}?n=2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        _assert_plays(viewer)
        sharer.wait_for_function("document.body.dataset.shareState === 'live'")
        asked_before_live = len(requests)
        time.sleep(2)  # it would have asked four more times
        assert len(requests) == asked_before_live, "the sharer still asks while its viewers watch"
        upload, *questions = requests
        assert upload == ("POST", None), requests
        assert len(questions) >= 4 and all(q == ("HEAD", "state") for q in questions), requests
        assert answers and all(status == 204 for status, _ in answers), answers
        assert {state for _, state in answers} <= {"free", "waiting", "running"}, answers
        assert answers[-1] == (204, "running") and (204, "waiting") in answers, answers
        sharer.click("#share-stop")
        webm, err = curl.communicate(timeout=60)
    finally:
        if curl.poll() is None:
            curl.kill()
            curl.communicate()
    assert webm[:4] == b"\x1a\x45\xdf\xa3", (webm[:16], err)  # EBML: the WebM stream, from its start
    viewer.wait_for_function("document.body.dataset.shareState === 'stopped'", timeout=PLAY_WAIT_S * 1000)


#: The shipped nginx.conf's HEAD route, and a proxy in front of an older server instead: HEAD refused.
NGINX_HEAD_ROUTE = """            if ($request_method = HEAD) {
                proxy_pass http://piping_head;
            }
"""
NGINX_HEAD_REFUSED = """            if ($request_method = HEAD) {
                return 405;
            }
"""


def test_a_sharer_whose_question_is_refused_records_at_once(
    new_page: Callable[..., Any], tls_files: tuple[str, str, str], tmp_path: Path
) -> None:
    """Where the question goes unanswered (an older server, a proxy's refusal: here the shipped nginx
    edited to answer every HEAD 405), the sharer cannot know when its viewers are there: it records at
    once, as it did before the question existed, asks no more, and its viewer plays."""
    if NGINX is None:
        pytest.skip("nginx is not installed (Debian: apt-get install -y nginx; scripts/test does it)")
    from urllib.parse import urlsplit

    server = start_server(log_dir=tmp_path)
    proxy = start_proxy(
        "nginx", tmp_path / "nginx", [server.http_port], tls_files, [(NGINX_HEAD_ROUTE, NGINX_HEAD_REFUSED)]
    )
    try:
        base = f"https://127.0.0.1:{proxy.port}"
        path = f"share-{uuid.uuid4().hex[:10]}"
        answers: list[int] = []  # the status of each question the sharer asked

        def answered(response: Any) -> None:
            if response.request.method == "HEAD" and urlsplit(response.url).path == f"/{path}":
                answers.append(response.status)

        sharer = new_page(f"{base}/#share?path={path}&n=1")
        sharer.on("response", answered)
        sharer.click("#share-screen")
        # no viewer yet: with the question answered it would wait in "sharing" (the test above)
        sharer.wait_for_function("document.body.dataset.shareState === 'live'")
        asked = len(answers)
        time.sleep(1.5)  # it would have asked three more times
        assert answers == [405] * asked and asked >= 1, answers
        assert len(answers) == asked, "the sharer still asks where nobody answers"
        viewer = _viewer(new_page, f"{base}/#share?path={path}&n=1")
        _assert_plays(viewer)
        sharer.click("#share-stop")
        viewer.wait_for_function("document.body.dataset.shareState === 'stopped'", timeout=PLAY_WAIT_S * 1000)
    finally:
        proxy.stop()
        server.stop()
