"""Fixtures of the browser-app tests: our server over TLS + HTTP/2, and headless Chromium driving "/".

Chromium is Debian's (/usr/bin/chromium), driven by Python playwright's sync API. Every wait is
bounded; the server listens on 127.0.0.1 only. A test skips (saying why) when Chromium, playwright
or the server's HTTPS is not there; nothing else is skipped.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from ..helpers import ServerProcess

if TYPE_CHECKING:
    from playwright.sync_api import Browser, BrowserContext, Page

CHROMIUM = os.environ.get("PIPING_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--use-fake-ui-for-media-stream",
    "--use-fake-device-for-media-stream",
    "--auto-select-desktop-capture-source=Entire screen",
]
#: Where screenshots of each mode go when asked for (PIPING_SCREENSHOTS=docs/screenshots).
SCREENSHOT_DIR = os.environ.get("PIPING_SCREENSHOTS")
#: Every browser-side wait, in milliseconds, unless a test says otherwise.
WAIT_MS = 30_000


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # These drive our own page and process: never against an external server.
    for item in items:
        if "browser_apps" in str(item.path):
            item.add_marker(pytest.mark.ours)


@pytest.fixture(scope="session")
def tls_server(server: ServerProcess | None) -> ServerProcess:
    """The session's server (HTTP/1.1, and HTTPS with ALPN h2): browsers stream uploads only over h2."""
    if server is None:
        pytest.skip("browser apps are tested on our own server only (PIPING_TEST_BASE_URL is set)")
    if server.https_port is None:
        pytest.skip("the server was started without HTTPS")
    return server


@pytest.fixture(scope="session")
def https_base(tls_server: ServerProcess) -> str:
    return f"https://127.0.0.1:{tls_server.https_port}"


@pytest.fixture(scope="session")
def http_base(tls_server: ServerProcess) -> str:
    return f"http://127.0.0.1:{tls_server.http_port}"


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    # Module scope: Playwright's sync API keeps an event loop running in this thread while it is
    # open, which would break later tests that call asyncio.run().
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("python playwright is not installed")
    if not (Path(CHROMIUM).exists() or shutil.which(CHROMIUM)):
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    with sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield instance
        finally:
            instance.close()


class PageErrors:
    """Uncaught page errors seen during a test: a test ends by asserting there were none."""

    def __init__(self) -> None:
        self.errors: list[str] = []

    def watch(self, page: Page) -> Page:
        page.on("pageerror", lambda error: self.errors.append(str(error)))
        page.set_default_timeout(WAIT_MS)
        return page


@pytest.fixture
def contexts(browser: Browser) -> Iterator[list[BrowserContext]]:
    """Fresh browser contexts (separate users), closed after the test; call ``new_context()`` on it."""
    made: list[BrowserContext] = []
    yield made
    for context in made:
        context.close()


@pytest.fixture
def new_page(browser: Browser, contexts: list[BrowserContext]) -> Iterator[Any]:
    """``new_page(url)``: a page in a context of its own (its own user), with page errors recorded."""
    errors = PageErrors()

    def make(url: str, **context_args: Any) -> Page:
        # A test may ask for another viewport (a phone's) or more: its arguments win.
        context = browser.new_context(
            **{"ignore_https_errors": True, "viewport": {"width": 1100, "height": 900}, **context_args}
        )
        contexts.append(context)
        page = errors.watch(context.new_page())
        page.goto(url)
        return page

    yield make
    assert errors.errors == [], f"uncaught errors in the page: {errors.errors}"


def screenshot(page: Page, name: str) -> None:
    """Save a screenshot of the page as docs/screenshots/NAME.png when PIPING_SCREENSHOTS is set."""
    if SCREENSHOT_DIR:
        Path(SCREENSHOT_DIR).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(SCREENSHOT_DIR) / f"{name}.png"), full_page=True)
