"""The reserved-path pages (docs/protocol.md section 2), checked as pure values: no server involved."""

from __future__ import annotations

import base64
import dataclasses
import os
import re
import subprocess
import sys
from html.parser import HTMLParser
from urllib.parse import quote

import pytest

import piping_server
import piping_server.pages as pages
from piping_server.pages import RESERVED_PATHS, Page, is_reserved, render_page
from piping_server.pages._template import Raw, Template

BASE = "http://127.0.0.1:8080"
HOSTILE = '"><script>alert(1)</script>'


class Element:
    """One start tag as the HTML parser saw it (attribute values already unescaped)."""

    def __init__(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tag = tag
        self.attrs = dict(attrs)
        self.text = ""

    def has(self, name: str) -> bool:
        return name in self.attrs


class Collect(HTMLParser):
    """Every element in document order, and the text inside the few tags the tests read."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.elements: list[Element] = []
        self._open: list[Element] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        element = Element(tag, attrs)
        self.elements.append(element)
        if tag in ("style", "script", "code", "span", "textarea"):
            self._open.append(element)

    def handle_endtag(self, tag: str) -> None:
        if self._open and self._open[-1].tag == tag:
            self._open.pop()

    def handle_data(self, data: str) -> None:
        for element in self._open:
            element.text += data


def parse(body: bytes) -> list[Element]:
    parser = Collect()
    parser.feed(body.decode("utf-8"))
    parser.close()
    return parser.elements


def by_id(elements: list[Element]) -> dict[str, Element]:
    found: dict[str, Element] = {}
    for element in elements:
        element_id = element.attrs.get("id")
        if element_id:
            assert element_id not in found, f"duplicate id {element_id!r}"
            found[element_id] = element
    return found


def noscript(query: str = "") -> Page:
    return render_page("/noscript", base_url=BASE, query=query)


def post_form(elements: list[Element]) -> Element:
    forms = [e for e in elements if e.tag == "form" and (e.attrs.get("method") or "").upper() == "POST"]
    assert len(forms) == 1
    return forms[0]


# ---- the API ----------------------------------------------------------------------------------


def test_exports_are_pinned() -> None:
    assert sorted(pages.__all__) == ["Page", "RESERVED_PATHS", "is_reserved", "render_page"]


def test_reserved_paths_are_exactly_the_protocols() -> None:
    assert frozenset({"/", "/noscript", "/version", "/help", "/favicon.ico", "/robots.txt"}) == RESERVED_PATHS


@pytest.mark.parametrize("path", sorted(RESERVED_PATHS) + [""])
def test_reserved(path: str) -> None:
    assert is_reserved(path)


@pytest.mark.parametrize(
    "path", ["/hello", "/help/", "/HELP", "/Version", "/noscript/x", "/a/help", "/index.html", "//", "/favicon.ico2"]
)
def test_not_reserved(path: str) -> None:
    # Paths compare exactly and case matters (docs/protocol.md section 1).
    assert not is_reserved(path)
    with pytest.raises(ValueError, match="not a reserved path"):
        render_page(path, base_url=BASE)


def test_empty_path_is_the_top_page() -> None:
    assert render_page("", base_url=BASE).body == render_page("/", base_url=BASE).body


def test_page_is_a_frozen_keyword_only_value() -> None:
    page = Page(status=200, headers=[], body=b"")
    with pytest.raises(dataclasses.FrozenInstanceError):
        page.status = 500  # type: ignore[misc]
    with pytest.raises(TypeError):
        Page(200, [], b"")  # type: ignore[call-arg]


@pytest.mark.parametrize("path", sorted(RESERVED_PATHS))
def test_headers_are_lowercase_bytes_and_fresh(path: str) -> None:
    first = render_page(path, base_url=BASE)
    for name, value in first.headers:
        assert isinstance(name, bytes) and isinstance(value, bytes)
        assert name == name.lower()
        assert name != b"content-length"  # the HTTP layer's job
    # The caller may append to the list; that must not leak into the next response.
    first.headers.append((b"x-test", b"1"))
    assert (b"x-test", b"1") not in render_page(path, base_url=BASE).headers


@pytest.mark.parametrize("path", ["/", "/noscript", "/version", "/help"])
def test_text_bodies_end_with_a_newline(path: str) -> None:
    assert render_page(path, base_url=BASE).body.endswith(b"\n")


@pytest.mark.parametrize("path", ["/", "/noscript", "/favicon.ico", "/robots.txt"])
def test_no_cors_header_where_the_protocol_has_none(path: str) -> None:
    names = [name for name, _ in render_page(path, base_url=BASE).headers]
    assert b"access-control-allow-origin" not in names


def test_package_is_pure() -> None:
    # No event loop, sockets or servers: importing pages must not pull them in.
    code = (
        "import sys, piping_server.pages as p; p.render_page('/', base_url='http://x');"
        "print(sorted(m for m in ('asyncio', 'socket', 'httptools', 'h2') if m in sys.modules))"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}  # same imports as this process
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env).stdout
    assert out.strip() == "[]"


# ---- /favicon.ico, /robots.txt, /version --------------------------------------------------------


def test_favicon() -> None:
    assert render_page("/favicon.ico", base_url=BASE) == Page(status=204, headers=[], body=b"")


def test_robots() -> None:
    assert render_page("/robots.txt", base_url=BASE) == Page(status=404, headers=[], body=b"")


def test_version() -> None:
    page = render_page("/version", base_url=BASE)
    assert page.status == 200
    assert page.headers == [(b"content-type", b"text/plain"), (b"access-control-allow-origin", b"*")]
    assert page.body == f"{piping_server.__version__}\n".encode()
    assert re.fullmatch(rb"\d+\.\d+\.\d+\S*\n", page.body)


# ---- /help --------------------------------------------------------------------------------------


@pytest.mark.parametrize("base", ["http://127.0.0.1:8080", "https://piping.example.com", "https://h.example/"])
def test_help_uses_the_servers_own_url(base: str) -> None:
    page = render_page("/help", base_url=base)
    assert page.status == 200
    assert page.headers == [(b"content-type", b"text/plain"), (b"access-control-allow-origin", b"*")]
    text = page.body.decode()
    url = base.rstrip("/")
    for line in [
        f"curl {url}/mypath",
        f"curl -T myfile {url}/mypath",
        f"echo 'hello!' | curl -T - {url}/mypath",
        f"zip -q -r - ./mydir | curl -T - {url}/mypath",
        f"tar zcf - ./mydir | curl -T - {url}/mypath",
        f"cat myfile | openssl aes-256-cbc -pbkdf2 | curl -T - {url}/mypath",
        f"curl {url}/mypath | openssl aes-256-cbc -pbkdf2 -d > myfile",
        f"curl -T myfile '{url}/mypath?n=3'",
        f"curl '{url}/mypath?n=3'",
        f"piping send --server {url} mypath myfile",
        f"piping get --server {url} mypath > myfile",
    ]:
        assert line in text.splitlines()
    assert piping_server.__version__ in text
    assert "{" not in text and "}" not in text  # no placeholder left behind
    assert f"{url}//" not in text
    assert text.endswith("\n") and not text.endswith("\n\n\n")


def test_help_mentions_no_other_host() -> None:
    text = render_page("/help", base_url="https://only.example").body.decode()
    urls = re.findall(r"https?://[^\s/']+", text)
    assert urls and set(urls) == {"https://only.example"}


# ---- / ------------------------------------------------------------------------------------------


def test_index_status_and_headers() -> None:
    page = render_page("/", base_url=BASE)
    assert page.status == 200
    assert page.headers == [(b"content-type", b"text/html")]
    assert page.body.startswith(b"<!DOCTYPE html>")


def test_index_has_the_elements_a_browser_test_drives() -> None:
    ids = by_id(parse(render_page("/", base_url=BASE).body))
    assert ids["path"].tag == "input"
    assert ids["mode-file"].tag == "input" and ids["mode-file"].attrs["type"] == "radio"
    assert ids["mode-text"].tag == "input" and ids["mode-text"].attrs["type"] == "radio"
    assert ids["mode-file"].attrs["name"] == ids["mode-text"].attrs["name"]
    assert ids["mode-file"].has("checked") and not ids["mode-text"].has("checked")
    assert ids["file"].tag == "input" and ids["file"].attrs["type"] == "file"
    assert not ids["file"].has("multiple")
    assert ids["text"].tag == "textarea"
    assert ids["send"].tag == "button"
    assert ids["progress"].tag == "progress"
    assert "status" in ids and "curl" in ids


def test_index_is_self_contained() -> None:
    body = render_page("/", base_url=BASE).body.decode()
    elements = parse(render_page("/", base_url=BASE).body)
    scripts = [e for e in elements if e.tag == "script"]
    assert len(scripts) == 1 and not scripts[0].has("src")
    assert not [e for e in elements if e.tag == "link"]
    # Every absolute URL in the page is this server's: no CDN, works offline.
    assert set(re.findall(r"https?://[^\s\"'<>/]+", body)) == {BASE}
    assert not re.search(r"\{\{\s*[a-z_]+\s*\}\}", body), "a placeholder was left unfilled"


def test_index_script_sends_with_progress() -> None:
    (script,) = [e for e in parse(render_page("/", base_url=BASE).body) if e.tag == "script"]
    js = script.text
    assert "new XMLHttpRequest()" in js
    assert '"POST"' in js
    assert 'upload.addEventListener("progress"' in js
    assert '"application/octet-stream"' in js and 'file.type === ""' in js
    # Each module of the page is there, in order.
    assert js.index("core.js") < js.index("send.js") < js.index("main.js")


def test_index_shows_version_noscript_link_and_receive_command() -> None:
    page = render_page("/", base_url="https://piping.example")
    elements = parse(page.body)
    ids = by_id(elements)
    assert ids["app"].attrs["data-base-url"] == "https://piping.example"
    assert ids["app"].attrs["data-version"] == piping_server.__version__
    assert ids["version"].text == piping_server.__version__
    assert ids["curl"].text == "curl https://piping.example/mypath"
    assert any(e.tag == "a" and e.attrs.get("href") in ("./noscript", "/noscript") for e in elements)


def test_index_escapes_the_base_url() -> None:
    # base_url comes from the Host header: whatever it holds must stay text.
    hostile = "http://h" + HOSTILE
    page = render_page("/", base_url=hostile)
    assert b"<script>alert" not in page.body
    ids = by_id(parse(page.body))
    assert ids["app"].attrs["data-base-url"] == hostile
    assert len([e for e in parse(page.body) if e.tag == "script"]) == 1


def test_index_carries_the_https_port_when_there_is_one() -> None:
    # A page reached over plain HTTP links to the server's HTTPS listener (chat, share, VNC need h2).
    assert by_id(parse(render_page("/", base_url=BASE, https_port=8443).body))["app"].attrs["data-https-port"] == "8443"
    assert by_id(parse(render_page("/", base_url=BASE).body))["app"].attrs["data-https-port"] == ""


# ---- /noscript ----------------------------------------------------------------------------------

CSP = re.compile(r"default-src 'none'; style-src 'nonce-([A-Za-z0-9+/=]+)'")


def csp_nonce(page: Page) -> str:
    values = [value for name, value in page.headers if name == b"content-security-policy"]
    assert len(values) == 1
    match = CSP.fullmatch(values[0].decode("ascii"))
    assert match, values[0]
    return match.group(1)


def test_noscript_headers_and_nonce() -> None:
    page = noscript()
    assert page.status == 200
    assert page.headers[0] == (b"content-type", b"text/html")
    assert [name for name, _ in page.headers] == [b"content-type", b"content-security-policy"]
    nonce = csp_nonce(page)
    assert len(base64.b64decode(nonce, validate=True)) == 16
    styles = [e for e in parse(page.body) if e.tag == "style"]
    assert styles and all(e.attrs.get("nonce") == nonce for e in styles)


def test_noscript_nonce_is_fresh_every_time() -> None:
    nonces = {csp_nonce(noscript()) for _ in range(20)}
    assert len(nonces) == 20


def test_noscript_has_no_script_and_no_inline_style() -> None:
    elements = parse(noscript("path=abc").body)
    assert not [e for e in elements if e.tag == "script"]
    # The CSP allows only the nonce'd <style>: a style attribute would be blocked, so none is used.
    assert not [e for e in elements if e.has("style")]


def test_noscript_without_a_path_cannot_send() -> None:
    elements = parse(noscript().body)
    form = post_form(elements)
    assert not form.attrs.get("action")
    submit = [e for e in elements if e.tag == "button" and e.attrs.get("type") == "submit"]
    assert submit[-1].has("disabled")
    (file_input,) = [e for e in elements if e.attrs.get("name") == "input_file"]
    assert file_input.has("disabled")


def test_noscript_file_mode() -> None:
    elements = parse(noscript("path=abc&mode=file").body)
    form = post_form(elements)
    assert form.attrs["action"] == "./abc"
    assert form.attrs["enctype"] == "multipart/form-data"
    (field,) = [e for e in elements if e.attrs.get("name") in ("input_file", "input_text")]
    assert field.tag == "input" and field.attrs["type"] == "file" and field.attrs["name"] == "input_file"
    assert not field.has("disabled")
    radios = {e.attrs["value"]: e for e in elements if e.attrs.get("name") == "mode"}
    assert radios["file"].has("checked") and not radios["text"].has("checked")


def test_noscript_text_mode() -> None:
    elements = parse(noscript("mode=text&path=my%2Fnote").body)
    assert post_form(elements).attrs["action"] == "./my/note"
    (field,) = [e for e in elements if e.attrs.get("name") in ("input_file", "input_text")]
    assert field.tag == "textarea" and field.attrs["name"] == "input_text"
    radios = {e.attrs["value"]: e for e in elements if e.attrs.get("name") == "mode"}
    assert radios["text"].has("checked") and not radios["file"].has("checked")


@pytest.mark.parametrize("query", ["path=abc", "path=abc&mode=bogus", "path=abc&mode=TEXT", "path=abc&mode="])
def test_noscript_defaults_to_file_mode(query: str) -> None:
    names = [e.attrs.get("name") for e in parse(noscript(query).body)]
    assert "input_file" in names and "input_text" not in names


def test_noscript_get_form_applies_path_and_mode() -> None:
    elements = parse(noscript("path=a+b%3Fn%3D2").body)
    get_forms = [e for e in elements if e.tag == "form" and (e.attrs.get("method") or "GET").upper() == "GET"]
    assert len(get_forms) == 1 and not get_forms[0].attrs.get("action")  # submits to /noscript itself
    (path_input,) = [e for e in elements if e.attrs.get("name") == "path"]
    assert path_input.attrs["value"] == "a b?n=2"  # query decoding, "+" is a space
    assert sorted(e.attrs["value"] or "" for e in elements if e.attrs.get("name") == "mode") == ["file", "text"]
    # A typed ?n=2 reaches the POST target: the several-receivers case works without JavaScript.
    assert post_form(elements).attrs["action"] == "./a b?n=2"


def test_noscript_escapes_a_hostile_path() -> None:
    page = noscript("mode=text&path=" + quote(HOSTILE, safe=""))
    body = page.body.decode()
    assert "<script" not in body.lower()
    assert HOSTILE not in body
    assert "&quot;&gt;&lt;script&gt;" in body
    elements = parse(page.body)
    (path_input,) = [e for e in elements if e.attrs.get("name") == "path"]
    assert path_input.attrs["value"] == HOSTILE  # escaped, not mangled
    assert post_form(elements).attrs["action"] == "./" + HOSTILE
    (code,) = [e for e in elements if e.tag == "code"]
    assert code.text == "curl '" + BASE + "/" + HOSTILE + "'"


@pytest.mark.parametrize(
    ("path", "action"),
    [("//evil.example/x", "./evil.example/x"), ("/abc", "./abc"), ("\\\\evil.example", "./evil.example")],
)
def test_noscript_form_never_posts_to_another_host(path: str, action: str) -> None:
    assert post_form(parse(noscript("path=" + quote(path, safe="")).body)).attrs["action"] == action


def test_noscript_shows_the_receive_command() -> None:
    (code,) = [e for e in parse(noscript("path=abc").body) if e.tag == "code"]
    assert code.text == f"curl {BASE}/abc"
    (code,) = [e for e in parse(noscript("path=abc%3Fn%3D2").body) if e.tag == "code"]
    assert code.text == f"curl '{BASE}/abc?n=2'"  # quoted: "?" is a glob to a shell


def test_noscript_shows_the_version() -> None:
    assert f"(Python) {piping_server.__version__}".encode() in noscript().body


# ---- the template -------------------------------------------------------------------------------


def test_template_escapes_unless_raw() -> None:
    template = Template('<a title="{{t}}">{{ body }}</a>')
    assert template.render(t='"<&>', body=Raw("<b>x</b>")) == '<a title="&quot;&lt;&amp;&gt;"><b>x</b></a>'


def test_template_requires_exactly_its_names() -> None:
    template = Template("{{a}} {{b}}")
    with pytest.raises(ValueError, match="missing \\['b'\\]"):
        template.render(a="1")
    with pytest.raises(ValueError, match="unexpected \\['c'\\]"):
        template.render(a="1", b="2", c="3")
    with pytest.raises(ValueError):
        template.partial(c="3")


def test_template_never_reparses_values() -> None:
    template = Template("{{a}}|{{b}}")
    partial = template.partial(a=Raw("{{b}}"))
    assert partial.names == frozenset({"b"})
    assert partial.render(b="{{a}}") == "{{b}}|{{a}}"
