"""The page assets under ``pages/static/``, read once at import.

They are files (not Python strings) so that they can be edited, linted and diffed as HTML, CSS and
JavaScript; they are inlined into the responses because a reserved path must be one self-contained
response: the server has no static-file route, and the page must work offline.
"""

from __future__ import annotations

import re
from importlib import resources

__all__ = ["INDEX_HTML", "INDEX_CSS", "INDEX_JS", "NOSCRIPT_HTML", "NOSCRIPT_CSS", "JS_MODULES"]

# Order matters: each file may use what the ones before it defined. A future mode (chat, receive,
# screen share) is one more file registered here, between the core and the boot file.
JS_MODULES: tuple[str, ...] = ("core.js", "send.js", "main.js")

# The package this module lives in (piping_server.pages), spelled without hard-coding it.
_STATIC = resources.files(__name__.rpartition(".")[0]).joinpath("static")


def _read(name: str) -> str:
    return _STATIC.joinpath(name).read_text(encoding="utf-8")


def _inlinable(text: str, *, tag: str, name: str) -> str:
    """Check that ``text`` can sit inside ``<tag>…</tag>`` without ending it early."""
    # The HTML parser ends a raw-text element at the first "</tag" whatever the language inside.
    if re.search(rf"</{tag}", text, re.IGNORECASE):
        raise RuntimeError(f"static/{name} contains '</{tag}' and cannot be inlined")
    return text


INDEX_HTML: str = _read("index.html")
NOSCRIPT_HTML: str = _read("noscript.html")
INDEX_CSS: str = _inlinable(_read("index.css"), tag="style", name="index.css")
NOSCRIPT_CSS: str = _inlinable(_read("noscript.css"), tag="style", name="noscript.css")
# One classic script, files separated by a marker comment: a module loader would need extra
# requests (or import maps), and each file already keeps its names to itself.
INDEX_JS: str = "\n".join(
    f"// ---- {name} ----\n" + _inlinable(_read(f"js/{name}"), tag="script", name=f"js/{name}") for name in JS_MODULES
)
