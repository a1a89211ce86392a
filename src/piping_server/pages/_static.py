"""The page assets under ``pages/static/``, read once at import.

They are files (not Python strings) so that they can be edited, linted and diffed as HTML, CSS and
JavaScript; they are inlined into the responses because a reserved path must be one self-contained
response: the server has no static-file route, and the page must work offline.
"""

from __future__ import annotations

import re
from importlib import resources

__all__ = ["INDEX_HTML", "INDEX_CSS", "INDEX_JS", "NOSCRIPT_HTML", "NOSCRIPT_CSS", "JS_MODULES", "VENDOR_JS"]

# Order matters: each file may use what the ones before it defined. Each mode of the page (send,
# receive, chat, share, vnc, ssh, call) is one file registered here, between the shared ones and
# the boot file.
JS_MODULES: tuple[str, ...] = (
    "core.js",
    "sha256.js",
    "pgp.js",
    "keyexchange.js",
    "send.js",
    "receive.js",
    "chat.js",
    "share.js",
    "vnc.js",
    "ssh.js",
    "call.js",
    "main.js",
)

# Third-party browser libraries, bundled from npm by frontend/ when the package is built (setup.py)
# and never committed. The page asks for one only when a mode needs it (see docs/browser-apps.md).
VENDOR_NAMES: tuple[str, ...] = ("novnc", "openpgp", "ssh")

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


def _read_vendor() -> dict[str, str]:
    found: dict[str, str] = {}
    vendor = _STATIC.joinpath("vendor")
    for name in VENDOR_NAMES:
        entry = vendor.joinpath(f"{name}.js")
        # A checkout that never ran the frontend build still serves every mode that needs no library.
        if entry.is_file():
            found[name] = _inlinable(entry.read_text(encoding="utf-8"), tag="script", name=f"vendor/{name}.js")
    return found


INDEX_HTML: str = _read("index.html")
NOSCRIPT_HTML: str = _read("noscript.html")
INDEX_CSS: str = _inlinable(_read("index.css"), tag="style", name="index.css")
NOSCRIPT_CSS: str = _inlinable(_read("noscript.css"), tag="style", name="noscript.css")
# One classic script, files separated by a marker comment: a module loader would need extra
# requests (or import maps), and each file already keeps its names to itself.
INDEX_JS: str = "\n".join(
    f"// ---- {name} ----\n" + _inlinable(_read(f"js/{name}"), tag="script", name=f"js/{name}") for name in JS_MODULES
)
#: name -> the ES module text of that library, for the libraries this installation has.
VENDOR_JS: dict[str, str] = _read_vendor()
