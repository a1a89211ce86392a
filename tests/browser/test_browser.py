"""The browser as a sender and a receiver: headless Chromium over TLS + HTTP/2, curl on the other side.

Chromium streams a ``fetch()`` upload (``body: ReadableStream, duplex: 'half'``) only over HTTP/2,
which is what the HTTPS listener with ALPN h2 is for. The browser is Debian's ``chromium`` package
(``apt-get install chromium``), driven by Python playwright through ``executable_path``: playwright
downloads no browser of its own. Without it, these tests are skipped, saying why.
"""

from __future__ import annotations

import hashlib
import os
import queue
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ..helpers import WAIT_S, ServerProcess, Target, unique_path, wait_until
from .chromium import STREAM_LINES_JS, launch_chromium, need_chromium

SENT = "[INFO] Sent successfully!\n"
ALL_OK = "[INFO] All receiver(s) was/were received successfully.\n"

pytestmark = pytest.mark.ours

need_chromium()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with launch_chromium() as chromium:
        yield chromium


@pytest.fixture
def https(server: ServerProcess | None) -> Target:
    if server is None:
        pytest.skip("needs our own server")
    return server.target("h2")


@pytest.fixture
def page(browser: Any, https: Target) -> Iterator[Any]:
    """A page of the server's own origin over TLS (the test certificate is accepted)."""
    context = browser.new_context(ignore_https_errors=True)
    try:
        tab = context.new_page()
        tab.goto(https.url("/version"))
        assert tab.evaluate("() => performance.getEntriesByType('navigation')[0].nextHopProtocol") == "h2"
        yield tab
    finally:
        context.close()


def _lines(proc: subprocess.Popen[bytes]) -> queue.Queue[tuple[float, bytes]]:
    """The process's stdout, line by line with the time each arrived, read on a thread."""
    lines: queue.Queue[tuple[float, bytes]] = queue.Queue()

    def read() -> None:
        assert proc.stdout is not None
        for line in iter(proc.stdout.readline, b""):
            lines.put((time.monotonic(), line))

    threading.Thread(target=read, daemon=True).start()
    return lines


def test_page_streams_lines_while_curl_receives(page: Any, https: Target, server: ServerProcess) -> None:
    """A line every 100 ms from a fetch() upload stream: curl sees the first lines while the page still sends."""
    count = 30
    path = unique_path("lines")
    h1 = server.target("h1")
    recv = h1.popen_curl(h1.url(path))
    lines = _lines(recv)
    time.sleep(0.3)
    page.evaluate(STREAM_LINES_JS, [https.url(path), count, 100])
    _, first = lines.get(timeout=WAIT_S)
    assert first == b"line 0\n"
    for i in range(1, 3):
        assert lines.get(timeout=WAIT_S)[1] == b"line %d\n" % i
    still_sending = page.evaluate("() => window.sent")
    assert still_sending < count, "the receiver must see lines before the upload ends"
    result = page.evaluate("() => window.upload")
    assert recv.wait(WAIT_S) == 0
    rest = [lines.get(timeout=WAIT_S)[1] for _ in range(3, count)]
    assert rest == [b"line %d\n" % i for i in range(3, count)]
    assert result["status"] == 200
    assert result["text"].endswith(SENT + ALL_OK)


UPLOAD_100MB_JS = """
async ([url, size]) => {
  const data = new Uint8Array(size);
  for (let at = 0; at < size; at += 65536) {
    crypto.getRandomValues(data.subarray(at, Math.min(at + 65536, size)));
  }
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", data));
  const hex = Array.from(digest, (b) => b.toString(16).padStart(2, "0")).join("");
  const piece = 1 << 20;
  let at = 0;
  const body = new ReadableStream({
    pull(controller) {
      if (at >= size) { controller.close(); return; }
      controller.enqueue(data.slice(at, at + piece));
      at += piece;
    },
  });
  const response = await fetch(url, { method: "POST", body, duplex: "half" });
  return { hex, status: response.status, text: await response.text() };
}
"""


def test_page_uploads_100mb_stream(page: Any, https: Target, server: ServerProcess) -> None:
    """100 MB made in the page, streamed up; the curl receiver's SHA-256 is the page's."""
    size = 100 * 1024 * 1024
    path = unique_path("big")
    h1 = server.target("h1")
    recv = h1.popen_curl(h1.url(path))
    got = hashlib.sha256()
    received = [0]

    def read() -> None:
        assert recv.stdout is not None
        while chunk := recv.stdout.read(1 << 20):
            got.update(chunk)
            received[0] += len(chunk)

    reader = threading.Thread(target=read)
    reader.start()
    time.sleep(0.3)
    page.set_default_timeout(120_000)
    result = page.evaluate(UPLOAD_100MB_JS, [https.url(path), size])
    reader.join(120)
    assert recv.wait(WAIT_S) == 0
    assert received[0] == size
    assert got.hexdigest() == result["hex"]
    assert result["status"] == 200 and result["text"].endswith(ALL_OK)


RECEIVE_JS = """
(url) => {
  const out = document.createElement("pre");
  out.id = "out";
  document.body.replaceChildren(out);
  const decoder = new TextDecoder();
  window.received = fetch(url).then(async (response) => {
    const reader = response.body.getReader();
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      out.textContent += decoder.decode(value, { stream: true });
    }
    return response.status;
  });
}
"""


def test_page_shows_endless_stream_progressively(page: Any, https: Target, server: ServerProcess) -> None:
    """``curl -T -`` sends a line every 100 ms, forever; the page shows the lines as they come."""
    path = unique_path("endless")
    page.evaluate(RECEIVE_JS, https.url(path))
    time.sleep(0.3)
    h1 = server.target("h1")
    send = h1.popen_curl("-T", "-", h1.url(path), stdin=subprocess.PIPE)
    stop = threading.Event()

    def feed() -> None:
        assert send.stdin is not None
        i = 0
        while not stop.is_set():
            send.stdin.write(b"tick %d\n" % i)
            send.stdin.flush()
            i += 1
            time.sleep(0.1)
        send.stdin.close()

    feeder = threading.Thread(target=feed)
    feeder.start()
    try:
        shown = lambda: page.locator("#out").text_content() or ""  # noqa: E731
        assert wait_until(lambda: "tick 3\n" in shown())
        early = shown()
        assert "tick 10\n" not in early, "lines must show as they come, not at the end"
        assert wait_until(lambda: "tick 15\n" in shown())
        assert send.poll() is None  # the stream is still going: the page saw it while it flowed
    finally:
        stop.set()
        feeder.join(WAIT_S)
    assert page.evaluate("() => window.received") == 200
    assert send.wait(WAIT_S) == 0
    text = page.locator("#out").text_content() or ""
    ticks = text.splitlines()
    assert ticks == [f"tick {i}" for i in range(len(ticks))]


def test_index_page_sends_a_file_and_a_text(page: Any, https: Target, server: ServerProcess, tmp_path: Path) -> None:
    """The / page, used as a person would: a path, a file or a text, the Send button; curl receives."""
    h1 = server.target("h1")
    page.goto(https.url("/"))

    # a file
    data = os.urandom(300_000)
    src = tmp_path / "photo.bin"
    src.write_bytes(data)
    path = unique_path("file")
    recv = h1.popen_curl(h1.url(path))
    time.sleep(0.3)
    page.fill("#path", path.lstrip("/"))
    page.check("#mode-file")
    page.set_input_files("#file", str(src))
    page.click("#send")
    out, _ = recv.communicate(timeout=WAIT_S)
    assert out == data
    page.wait_for_function("() => document.querySelector('#status').textContent.includes('received successfully')")
    assert SENT.strip() in (page.text_content("#status") or "")

    # a text
    path = unique_path("text")
    recv = h1.popen_curl(h1.url(path))
    time.sleep(0.3)
    page.fill("#path", path.lstrip("/"))
    page.check("#mode-text")
    page.fill("#text", "hello from the page\nsecond line")
    page.click("#send")
    out, _ = recv.communicate(timeout=WAIT_S)
    assert out == b"hello from the page\nsecond line"
    page.wait_for_function("() => document.querySelector('#status').textContent.includes('received successfully')")


@pytest.mark.parametrize("mode", ["text", "file"])
def test_noscript_page_sends_with_scripts_off(browser: Any, server: ServerProcess, tmp_path: Path, mode: str) -> None:
    """/noscript with JavaScript disabled: apply a path and a mode, fill the form, send; curl receives."""
    h1 = server.target("h1")
    path = unique_path("noscript").lstrip("/")
    context = browser.new_context(java_script_enabled=False)
    try:
        tab = context.new_page()
        tab.goto(h1.url("/noscript"))
        tab.fill("#path", path)
        tab.check(f"input[name=mode][value={mode}]")
        tab.click("form[method=GET] button[type=submit]")
        tab.wait_for_url(f"**/noscript?path={path}&mode={mode}")
        recv = h1.popen_curl("-D", "-", h1.url("/" + path))
        time.sleep(0.3)
        if mode == "text":
            tab.fill("textarea[name=input_text]", "typed with scripts off")
            expected = b"typed with scripts off"
        else:
            upload = tmp_path / "scripts-off.bin"
            upload.write_bytes(os.urandom(300_000))
            tab.set_input_files("input[name=input_file]", str(upload))
            expected = upload.read_bytes()
        tab.click("form[method=POST] button[type=submit]")
        out, _ = recv.communicate(timeout=WAIT_S)
        head, _, body = out.partition(b"\r\n\r\n")
        assert body == expected
        if mode == "file":
            assert b'filename="scripts-off.bin"' in head
        tab.wait_for_load_state()
        assert ALL_OK in tab.content()
    finally:
        context.close()
