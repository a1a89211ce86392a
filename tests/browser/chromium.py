"""Headless Chromium for the tests that drive a browser (tests/browser, tests/deploy): Debian's ``chromium``
package, driven by Python playwright through ``executable_path`` (playwright downloads no browser of its
own). Without either, the tests are skipped, saying why."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

#: ``([url, count, intervalMs])``: a fetch() upload from a ReadableStream of ``line i\n`` lines, one every
#: ``intervalMs``; ``window.sent`` counts the lines given to it and ``window.upload`` is the response's
#: status and text. Chromium sends such a body only over HTTP/2, as it is produced.
STREAM_LINES_JS = """
([url, count, intervalMs]) => {
  const encoder = new TextEncoder();
  window.sent = 0;
  let i = 0;
  const body = new ReadableStream({
    async pull(controller) {
      if (i === count) { controller.close(); return; }
      await new Promise((resolve) => setTimeout(resolve, intervalMs));
      controller.enqueue(encoder.encode(`line ${i}\\n`));
      i += 1;
      window.sent = i;
    },
  });
  window.upload = fetch(url, { method: "POST", body, duplex: "half" })
    .then(async (response) => ({ status: response.status, text: await response.text() }));
}
"""


def need_chromium() -> Any:
    """playwright's sync API; skips the test (or, called at import, the module) when Chromium or playwright is
    missing."""
    if not os.path.exists(CHROMIUM):
        pytest.skip(
            f"{CHROMIUM} is missing: install Debian's chromium package (apt-get install chromium)",
            allow_module_level=True,
        )
    return pytest.importorskip("playwright.sync_api", reason="Python playwright is not installed")


@contextlib.contextmanager
def launch_chromium() -> Iterator[Any]:
    """A headless Chromium browser, closed with the block."""
    sync_api = need_chromium()
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield browser
        finally:
            browser.close()
