"""The HTML pages: ``/`` (the sending app) and ``/noscript`` (the same without JavaScript)."""

from __future__ import annotations

import base64
import secrets
import shlex
from urllib.parse import parse_qs

from ._page import CONTENT_TYPE_HTML, Page
from ._static import INDEX_CSS, INDEX_HTML, INDEX_JS, NOSCRIPT_CSS, NOSCRIPT_HTML, VENDOR_JS
from ._template import Raw, Template
from ._text import server_version

__all__ = ["render_index", "render_noscript", "new_nonce", "noscript_action", "receive_command", "requested_libs"]

# The static parts are filled in once; only what depends on the request is left for render time.
_INDEX = Template(INDEX_HTML).partial(style=Raw(INDEX_CSS), script=Raw(INDEX_JS), libs=" ".join(sorted(VENDOR_JS)))

# A library rides along only when asked for (``/?lib=novnc``): "/" itself stays small. The page asks
# with fetch() and imports the element's text from a blob: URL; the type keeps it from running here.
_VENDOR = Template('<script type="text/x-piping-vendor" data-vendor="{{name}}">{{code}}</script>\n')
_NOSCRIPT = Template(NOSCRIPT_HTML).partial(style=Raw(NOSCRIPT_CSS))

_FILE_FIELD = Template('<input type="file" name="input_file" id="input_file" required{{disabled}}>')
_TEXT_FIELD = Template(
    '<textarea name="input_text" id="input_text" rows="10" cols="40"{{disabled}}'
    ' placeholder="Type the text to send"></textarea>'
)

_RECEIVE = Template('<p class="receive">Receivers get it with <code>{{command}}</code></p>')

# 16 random bytes, as the reference uses: far beyond guessing for a value that lives one response.
NONCE_BYTES = 16


def _strip_slashes(path: str) -> str:
    # Browsers read a backslash as a slash in http(s) URLs, so both go.
    return path.lstrip("/\\")


def requested_libs(query: str) -> list[str]:
    """The vendor libraries a ``lib=a,b`` query asks for, known ones only, in a stable order."""
    asked = {name for value in parse_qs(query).get("lib", []) for name in value.split(",")}
    return [name for name in sorted(VENDOR_JS) if name in asked]


def render_index(*, base_url: str, query: str = "", https_port: int | None = None) -> Page:
    """``/``: the self-contained app (send, receive, chat, share, VNC); nothing else is fetched.

    Scripts and styles are inline. ``?lib=novnc,openpgp`` adds those bundled libraries to the page,
    inert, for the modes that import them (the page fetches its own URL with that query).

    ``https_port`` is the server's HTTPS port, if it has one: a page opened over plain HTTP links
    there, since its streaming modes need HTTPS.

    The page reads ``base_url`` from a data attribute (HTML-escaped like any value) rather than
    from a script literal, so a hostile ``Host`` header cannot break out into the script.
    """
    vendor = "".join(_VENDOR.render(name=name, code=Raw(VENDOR_JS[name])) for name in requested_libs(query))
    body = _INDEX.render(
        base_url=base_url.rstrip("/"),
        version=server_version(),
        vendor=Raw(vendor),
        https_port=str(https_port) if https_port else "",
    )
    # No Access-Control-Allow-Origin here: the page is not meant to be read by other origins.
    return Page(status=200, headers=[CONTENT_TYPE_HTML], body=body.encode())


def new_nonce() -> str:
    """A fresh CSP nonce: base64 of random bytes (only ``A-Za-z0-9+/=``, safe in any attribute)."""
    return base64.b64encode(secrets.token_bytes(NONCE_BYTES)).decode("ascii")


def noscript_action(path: str) -> str:
    """The POST form's target for a user-given path, always a relative path reference.

    A value such as ``//evil.example/x`` or ``\\\\evil.example`` would otherwise make the form post
    to another host; stripping leading slashes and prefixing ``./`` keeps it on this server, next
    to ``/noscript``, which also keeps working behind a reverse proxy that adds a path prefix.
    A ``?n=2`` the user typed stays in the URL (a POST form keeps its action's query).
    """
    return "./" + _strip_slashes(path)


def receive_command(base_url: str, path: str) -> str:
    """The curl line that gets ``path``, quoted for a POSIX shell when it needs to be.

    ``?`` and ``&`` (as in ``?n=2``) are glob and job-control characters to a shell.
    """
    return "curl " + shlex.quote(f"{base_url.rstrip('/')}/{_strip_slashes(path)}")


def render_noscript(*, base_url: str, query: str = "") -> Page:
    """``/noscript``: send a file or a text with two plain forms and no script at all.

    Args:
        base_url: scheme and host, shown in the receive command.
        query: raw query string; ``path`` (where to send) and ``mode`` (``file``, the default,
            or ``text``) are read from it.
    """
    params = parse_qs(query, keep_blank_values=True)
    path = params.get("path", [""])[0].strip()
    is_text = params.get("mode", ["file"])[0] == "text"
    # Without a path there is nowhere to post: the form is shown but cannot be submitted.
    disabled = Raw("" if path else " disabled")
    field = (_TEXT_FIELD if is_text else _FILE_FIELD).render(disabled=disabled)
    nonce = new_nonce()
    body = _NOSCRIPT.render(
        nonce=nonce,
        path=path,
        action=noscript_action(path) if path else "",
        file_checked=Raw("" if is_text else " checked"),
        text_checked=Raw(" checked" if is_text else ""),
        field=Raw(field),
        field_label="Type a text" if is_text else "Choose a file",
        disabled=disabled,
        receive=Raw(_RECEIVE.render(command=receive_command(base_url, path)) if path else ""),
        version=server_version(),
    )
    csp = f"default-src 'none'; style-src 'nonce-{nonce}'".encode("ascii")
    return Page(
        status=200,
        headers=[CONTENT_TYPE_HTML, (b"content-security-policy", csp)],
        body=body.encode(),
    )
