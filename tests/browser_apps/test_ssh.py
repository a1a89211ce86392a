"""SSH mode: the page's SSH client logs into a real throwaway sshd on 127.0.0.1 through
`piping tunnel server`, over two Piping streams; with a password and with an Ed25519 key."""

from __future__ import annotations

import contextlib
import os
import pwd
import secrets
import shutil
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from ..helpers import free_port, stop_process, wait_for_port
from .conftest import screenshot

# A local account for password logins (sshd checks passwords against the system's accounts).
TEST_USER = "piping-ssh-test"
STARTUP_S = 20
# The user keys to log in with (as ssh-keygen writes them), and their passphrases.
KEYS = {"ed25519": "", "ecdsa": "key secret", "rsa": "key secret"}


@dataclass
class Sshd:
    port: int
    password: str
    keys: dict[str, str]  # type -> a private key in OpenSSH's format, authorized for TEST_USER
    host_fingerprint: str


def _ensure_user() -> str:
    """TEST_USER with a fresh random password (created once; a system account with a home)."""
    try:
        pwd.getpwnam(TEST_USER)
    except KeyError:
        subprocess.run(["useradd", "--create-home", "--shell", "/bin/bash", TEST_USER], check=True, capture_output=True)
    password = secrets.token_urlsafe(12)
    subprocess.run(["chpasswd"], input=f"{TEST_USER}:{password}".encode(), check=True, capture_output=True)
    return password


@pytest.fixture(scope="module")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sshd]:
    sshd_bin = shutil.which("sshd") or "/usr/sbin/sshd"
    if not Path(sshd_bin).exists() or shutil.which("ssh-keygen") is None:
        pytest.skip("openssh-server is not installed (apt-get install openssh-server)")
    if os.geteuid() != 0:
        pytest.skip("a password login needs a local account: run as root")
    os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # sshd's privilege separation directory
    d = tmp_path_factory.mktemp("sshd")
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / "host")], check=True)
    for kind, passphrase in KEYS.items():
        subprocess.run(["ssh-keygen", "-q", "-t", kind, "-N", passphrase, "-f", str(d / kind)], check=True)
    password = _ensure_user()
    # sshd reads authorized keys as the user, so they live in the user's home, not in pytest's tmp.
    account = pwd.getpwnam(TEST_USER)
    dot_ssh = Path(account.pw_dir) / ".ssh"
    dot_ssh.mkdir(mode=0o700, exist_ok=True)
    (dot_ssh / "authorized_keys").write_text("".join((d / f"{kind}.pub").read_text() for kind in KEYS))
    for path in (dot_ssh, dot_ssh / "authorized_keys"):
        os.chown(path, account.pw_uid, account.pw_gid)
    port = free_port()
    config = d / "sshd_config"
    config.write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {d / 'host'}\n"
        "PidFile none\nUsePAM no\nStrictModes no\nPasswordAuthentication yes\nKbdInteractiveAuthentication no\n"
        # As Debian's default sshd_config: the client's locale is taken, nothing else of its environment.
        f"AcceptEnv LANG LC_*\nAllowUsers {TEST_USER}\n"
    )
    log = (d / "sshd.log").open("wb")
    proc = subprocess.Popen([sshd_bin, "-D", "-e", "-f", str(config)], stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for_port(port, proc, timeout=STARTUP_S)
        listed = subprocess.run(["ssh-keygen", "-lf", str(d / "host.pub")], check=True, capture_output=True, text=True)
        fingerprint = listed.stdout.split()[1]
        keys = {kind: (d / kind).read_text() for kind in KEYS}
        yield Sshd(port=port, password=password, keys=keys, host_fingerprint=fingerprint)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        log.close()


@contextlib.contextmanager
def _tunnel(http_base: str, port: int, path1: str, path2: str, log: Path) -> Iterator[None]:
    """The remote side's `piping tunnel server --port PORT PATH1 PATH2` (plain: one connection)."""
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "piping_server.cli",
                "tunnel",
                "server",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "-s",
                http_base,
                path1,
                path2,
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        try:
            yield
        finally:
            stop_process(proc)


def _open(
    new_page: Callable[..., Any], https_base: str, fragment: str = "ssh", locale: str | None = None, **fields: str
) -> tuple[Any, str, str]:
    base = f"ssh-{uuid.uuid4().hex[:10]}"
    path1, path2 = f"{base}/c-to-s", f"{base}/s-to-c"
    page = new_page(f"{https_base}/#{fragment}", **({"locale": locale} if locale else {}))
    page.fill("#ssh-path1", path1)
    page.fill("#ssh-path2", path2)
    page.fill("#ssh-user", TEST_USER)
    if "key" in fields:
        page.click("details.ssh-key summary")
    for selector, value in fields.items():
        page.fill(f"#ssh-{selector}", value)
    return page, path1, path2


def _size(page: Any) -> tuple[int, int]:
    """The terminal's (columns, rows), as the page sized it."""
    cols, rows = str(page.get_attribute("#ssh-terminal", "data-size")).split("x")
    return int(cols), int(rows)


def _wait_screen(page: Any, text: str, timeout_ms: int = 20_000) -> None:
    page.wait_for_function(
        "t => { const r = document.querySelector('#ssh-terminal .xterm-rows'); return r && r.innerText.includes(t); }",
        arg=text,
        timeout=timeout_ms,
    )


def _type(page: Any, text: str) -> None:
    page.locator("#ssh-terminal .xterm-helper-textarea").focus()
    page.keyboard.type(text)


def test_password_login_runs_commands_follows_resizes_and_disconnects(
    http_base: str, https_base: str, new_page: Callable[..., Any], sshd: Sshd, tmp_path: Path
) -> None:
    page, path1, path2 = _open(new_page, https_base, password=sshd.password)
    assert f"--port 22 -s {https_base} {path1} {path2}" in (page.text_content("#ssh-command") or "")
    with _tunnel(http_base, sshd.port, path1, path2, tmp_path / "tunnel.log"):
        page.click("#ssh-connect")
        # First contact: the page shows the host key's fingerprint, as ssh-keygen -l prints it.
        page.wait_for_function("document.body.dataset.sshState === 'host-key'")
        assert sshd.host_fingerprint in (page.text_content("#ssh-fingerprint") or "")
        page.click("#ssh-accept")
        page.wait_for_function("document.body.dataset.sshState === 'connected'")

        # A command's output, with UTF-8 and colours passing through.
        _type(page, "printf 'r\\303\\251sum\\303\\251 %s\\n' \"$((6*7))\"; tput colors\n")
        _wait_screen(page, "résumé 42")
        _wait_screen(page, "256")

        # The PTY has the terminal's size, and follows it when the page is resized.
        first = _size(page)
        _type(page, "clear; stty size\n")
        _wait_screen(page, f"{first[1]} {first[0]}")
        page.set_viewport_size({"width": 760, "height": 900})
        page.wait_for_function(
            "s => document.getElementById('ssh-terminal').dataset.size !== s", arg=f"{first[0]}x{first[1]}"
        )
        second = _size(page)
        assert second[0] < first[0]
        _type(page, "clear; stty size\n")
        _wait_screen(page, f"{second[1]} {second[0]}")

        # A full-screen program, then Ctrl-C back to the prompt.
        _type(page, "top -d 0.5\n")
        _wait_screen(page, "load average")
        screenshot(page, "ssh")
        page.keyboard.press("Control+C")
        _type(page, "clear; echo back-$((1+1))\n")
        _wait_screen(page, "back-2")

        page.click("#ssh-disconnect")
        page.wait_for_function("document.body.dataset.sshState === 'disconnected'")
        assert "Disconnected" in (page.text_content("#ssh-status") or "")


# A browser language, the LANG it gives, and text typed in a shell that has LANG and no other locale setting.
BROWSER_LOCALE, SESSION_LANG = "de-DE", "de_DE.UTF-8"
NON_ASCII = "Grüße, καλημέρα, 5 €"


def test_the_session_gets_the_browsers_language_as_lang(
    http_base: str, https_base: str, new_page: Callable[..., Any], sshd: Sshd, tmp_path: Path
) -> None:
    """Issue 21 item 11: no LANG was sent, so in a server without a default locale the shell ran in
    "C", and readline turned typed UTF-8 into escape sequences. sshd (UsePAM no) sets no LANG itself."""
    if subprocess.run(["locale", "-a"], capture_output=True, text=True).stdout.find("de_DE.utf8") < 0:
        # The user's locale exists on the server (else the shell falls back to "C" whatever is sent).
        if shutil.which("localedef") is None:
            pytest.skip(f"{SESSION_LANG} is not installed and there is no localedef (apt-get install locales)")
        subprocess.run(["localedef", "-i", "de_DE", "-f", "UTF-8", SESSION_LANG], check=True, capture_output=True)
    page, path1, path2 = _open(new_page, https_base, locale=BROWSER_LOCALE, password=sshd.password)
    with _tunnel(http_base, sshd.port, path1, path2, tmp_path / "tunnel.log"):
        page.click("#ssh-connect")
        page.wait_for_function("document.body.dataset.sshState === 'host-key'")
        page.click("#ssh-accept")
        page.wait_for_function("document.body.dataset.sshState === 'connected'")
        _type(page, 'echo "lang=[$LANG]"\n')
        _wait_screen(page, f"lang=[{SESSION_LANG}]")
        # Typed into readline, then printed by the shell: the output line differs from the typed one.
        _type(page, f'x=\'{NON_ASCII}\'; echo "<$x>" $(printf %s "$x" | wc -c)\n')
        _wait_screen(page, f"<{NON_ASCII}> {len(NON_ASCII.encode())}")
        page.click("#ssh-disconnect")
        page.wait_for_function("document.body.dataset.sshState === 'disconnected'")


@pytest.mark.parametrize("kind", list(KEYS))
def test_key_login(
    http_base: str, https_base: str, new_page: Callable[..., Any], sshd: Sshd, tmp_path: Path, kind: str
) -> None:
    fields = {"key": sshd.keys[kind]}
    if KEYS[kind]:
        fields["key-pass"] = KEYS[kind]
    # Keep-alives every second here (15 s by default): sshd answers them through the tunnel.
    page, path1, path2 = _open(new_page, https_base, "ssh?keepalive=1", **fields)
    with _tunnel(http_base, sshd.port, path1, path2, tmp_path / "tunnel.log"):
        page.click("#ssh-connect")
        page.wait_for_function("document.body.dataset.sshState === 'host-key'")
        page.click("#ssh-accept")
        page.wait_for_function("document.body.dataset.sshState === 'connected'")
        page.wait_for_function("Number(document.getElementById('ssh-terminal').dataset.keepAlives) >= 2")
        _type(page, 'echo "I am $(whoami)"; exit\n')
        _wait_screen(page, f"I am {TEST_USER}")
        page.wait_for_function("document.body.dataset.sshState === 'disconnected'")
        assert "ended" in (page.text_content("#ssh-status") or "")


def test_wrong_password_and_unreachable_tunnel_say_so(
    http_base: str, https_base: str, new_page: Callable[..., Any], sshd: Sshd, tmp_path: Path
) -> None:
    page, path1, path2 = _open(new_page, https_base, password="not-the-password")
    with _tunnel(http_base, sshd.port, path1, path2, tmp_path / "tunnel.log"):
        page.click("#ssh-connect")
        page.wait_for_function("document.body.dataset.sshState === 'host-key'")
        page.click("#ssh-accept")
        page.wait_for_function("document.body.dataset.sshState === 'failed'")
    assert (page.text_content("#ssh-status") or "") == (
        f"The server refused the login of {TEST_USER}: wrong password or user name."
    )

    # The user rejects the host key: no login is tried.
    page, path1, path2 = _open(new_page, https_base, password=sshd.password)
    with _tunnel(http_base, sshd.port, path1, path2, tmp_path / "tunnel.log"):
        page.click("#ssh-connect")
        page.wait_for_function("document.body.dataset.sshState === 'host-key'")
        page.click("#ssh-reject")
        page.wait_for_function("document.body.dataset.sshState === 'failed'")
    assert page.text_content("#ssh-status") == "You rejected the server's host key: neither password nor key was sent."

    # A key with a wrong passphrase: said before anything is sent.
    page, _, _ = _open(new_page, https_base, key=sshd.keys["ecdsa"], **{"key-pass": "not it"})
    page.click("#ssh-connect")
    page.wait_for_function("document.body.dataset.sshState === 'failed'")
    assert page.text_content("#ssh-status") == "The key's passphrase is wrong."

    # Nobody runs the tunnel on these paths: one message, after the page's wait (short here).
    base = f"ssh-{uuid.uuid4().hex[:10]}"
    page = new_page(f"{https_base}/#ssh?path1={base}/c-to-s&path2={base}/s-to-c&user={TEST_USER}&wait=2")
    page.fill("#ssh-password", "whatever")
    page.click("#ssh-connect")
    page.wait_for_function("document.body.dataset.sshState === 'failed'")
    status = page.text_content("#ssh-status") or ""
    assert status.startswith("No answer from the remote machine within 2 s"), status


# The last row's bottom and the terminal box's, in CSS pixels.
LAST_ROW_AND_BOX = """() => { const rows = document.querySelectorAll('#ssh-terminal .xterm-rows > div');
    const box = document.getElementById('ssh-terminal').getBoundingClientRect();
    return [rows[rows.length - 1].getBoundingClientRect().bottom, box.bottom]; }"""


def test_terminal_fills_a_tall_window_and_follows_it(
    http_base: str, https_base: str, new_page: Callable[..., Any], sshd: Sshd, tmp_path: Path
) -> None:
    """Issue 21 item 8: 23 rows in a 1400 px tall window, the last one half cut, before."""
    base = f"ssh-{uuid.uuid4().hex[:10]}"
    path1, path2 = f"{base}/c-to-s", f"{base}/s-to-c"
    page = new_page(f"{https_base}/#ssh", viewport={"width": 1100, "height": 1400})
    for selector, value in (("path1", path1), ("path2", path2), ("user", TEST_USER), ("password", sshd.password)):
        page.fill(f"#ssh-{selector}", value)
    with _tunnel(http_base, sshd.port, path1, path2, tmp_path / "tunnel.log"):
        page.click("#ssh-connect")
        page.wait_for_function("document.body.dataset.sshState === 'host-key'")
        page.click("#ssh-accept")
        page.wait_for_function("document.body.dataset.sshState === 'connected'")
        tall = _size(page)
        assert tall[1] >= 50, f"{tall[1]} rows in a 1400 px tall window"
        last_row, box = page.evaluate(LAST_ROW_AND_BOX)
        assert last_row <= box + 0.5, f"the last row is cut: it ends at {last_row}, the box at {box}"
        page.set_viewport_size({"width": 1100, "height": 800})
        page.wait_for_function(
            "s => document.getElementById('ssh-terminal').dataset.size !== s", arg=f"{tall[0]}x{tall[1]}"
        )
        assert _size(page)[1] < tall[1]
        _type(page, "clear; stty size\n")
        _wait_screen(page, f"{_size(page)[1]} {_size(page)[0]}")
        page.click("#ssh-disconnect")
