"""Whether a running server serves the page with its bundled browser libraries (pages/static/vendor/)."""

from __future__ import annotations

import urllib.request

from piping_server.pages._static import VENDOR_NAMES


def assert_serves_page_bundles(base_url: str) -> None:
    """``/`` offers every library and ``/?lib=...`` inlines each: the install carried the npm bundles."""
    with urllib.request.urlopen(base_url + "/", timeout=20) as response:
        top = response.read().decode()
    assert f'data-libs="{" ".join(sorted(VENDOR_NAMES))}"' in top, "the page offers no bundled library"
    with urllib.request.urlopen(base_url + "/?lib=" + ",".join(VENDOR_NAMES), timeout=20) as response:
        libs = response.read().decode()
    for name in VENDOR_NAMES:
        assert f'<script type="text/x-piping-vendor" data-vendor="{name}">' in libs, f"vendor/{name}.js missing"
