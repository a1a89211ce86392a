"""The page assets under ``pages/static/``, read once: at import, the vendor libraries when first asked for.

They are files (not Python strings) so that they can be edited, linted and diffed as HTML, CSS and
JavaScript; they are inlined into the responses because a reserved path must be one self-contained
response: the server has no static-file route, and the page must work offline.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
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


class _Vendor(Mapping[str, str]):
    """name -> the ES module text of that library, for the libraries this installation has.

    Each is read when first asked for (``/?lib=...``): together they are some 1.5 MB, and a server
    whose page never opens a mode that needs one never holds them.
    """

    def __init__(self) -> None:
        vendor = _STATIC.joinpath("vendor")
        # A checkout that never ran the frontend build still serves every mode that needs no library.
        self._names = tuple(name for name in VENDOR_NAMES if vendor.joinpath(f"{name}.js").is_file())
        self._texts: dict[str, str] = {}

    def __getitem__(self, name: str) -> str:
        if name not in self._names:
            raise KeyError(name)
        text = self._texts.get(name)
        if text is None:
            text = _inlinable(_read(f"vendor/{name}.js"), tag="script", name=f"vendor/{name}.js")
            self._texts[name] = text
        return text

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)


INDEX_HTML: str = _read("index.html")
NOSCRIPT_HTML: str = _read("noscript.html")
INDEX_CSS: str = _inlinable(_read("index.css"), tag="style", name="index.css")
NOSCRIPT_CSS: str = _inlinable(_read("noscript.css"), tag="style", name="noscript.css")
# One classic script, files separated by a marker comment: a module loader would need extra
# requests (or import maps), and each file already keeps its names to itself.
INDEX_JS: str = "\n".join(
    f"// ---- {name} ----\n" + _inlinable(_read(f"js/{name}"), tag="script", name=f"js/{name}") for name in JS_MODULES
)
#: name -> the ES module text of that library, for the libraries this installation has (read on first use).
VENDOR_JS: Mapping[str, str] = _Vendor()
