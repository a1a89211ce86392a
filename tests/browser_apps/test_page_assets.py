"""How "/" carries the bundled libraries: not in the page itself, only in "/?lib=NAME", and the
page, in a browser, asks the server for nothing but "/" (no CDN, no other path)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import pytest

from piping_server.pages import render_page
from piping_server.pages._static import JS_MODULES, VENDOR_JS, VENDOR_NAMES

BASE = "http://127.0.0.1:8080"


def test_the_install_bundled_every_library() -> None:
    # setup.py runs the frontend build when the package is installed: both bundles must be there.
    assert sorted(VENDOR_JS) == sorted(VENDOR_NAMES), "run `pip install -e .` (it builds frontend/ with npm)"


def test_the_top_page_carries_no_library_but_says_which_it_can_have() -> None:
    body = render_page("/", base_url=BASE).body.decode()
    assert "x-piping-vendor" not in body
    assert f'data-libs="{" ".join(sorted(VENDOR_JS))}"' in body
    for name in JS_MODULES:
        assert f"// ---- {name} ----" in body


@pytest.mark.parametrize("name", VENDOR_NAMES)
def test_lib_query_inlines_that_library_inert(name: str) -> None:
    if name not in VENDOR_JS:
        pytest.fail(f"vendor/{name}.js was not built")
    body = render_page("/", base_url=BASE, query=f"lib={name}").body.decode()
    assert body.count('type="text/x-piping-vendor"') == 1
    assert f'<script type="text/x-piping-vendor" data-vendor="{name}">' in body
    assert VENDOR_JS[name] in body


def test_lib_query_ignores_unknown_names() -> None:
    body = render_page("/", base_url=BASE, query="lib=nope,../../etc/passwd").body.decode()
    assert "x-piping-vendor" not in body
    both = render_page("/", base_url=BASE, query="lib=openpgp,novnc").body.decode()
    assert both.count('type="text/x-piping-vendor"') == 2


def test_the_page_fetches_only_itself(https_base: str, new_page: Callable[..., Any]) -> None:
    requested: list[str] = []
    page = new_page("about:blank")
    page.on("request", lambda request: requested.append(request.url))
    page.goto(f"{https_base}/#vnc")
    names = page.evaluate(
        "Promise.all(['novnc', 'openpgp'].map((n) => Piping.loadLibrary(n)))"
        ".then((mods) => mods.map((m) => Object.keys(m).sort().join(',')))"
    )
    assert names[0] == "RFB"
    assert "encrypt" in names[1] and "decrypt" in names[1]
    for mode in ("send", "receive", "chat", "share"):
        page.goto(f"{https_base}/#{mode}")
    paths = {
        (urlsplit(url).scheme, urlsplit(url).netloc, urlsplit(url).path)
        for url in requested
        if not url.startswith("blob:")
    }
    assert paths == {("https", urlsplit(https_base).netloc, "/")}, requested
