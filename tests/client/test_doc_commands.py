"""Every command line that README.md, docs/client.md and ``/help`` print runs as printed.

The lines below are copied from those documents; ``test_documents_print_these_lines`` checks that each
document's command lines (the ``sh`` blocks of the Markdown files, the command lines of ``/help``) are
exactly these, or are listed in ``NOT_RUN`` with the reason. Each scenario runs its lines with bash, as
a user would type them, concurrently (a sender and its receivers), against a test server of ours.
Only what points at the user's machine is replaced: the server URL (``http://localhost:8080``,
``$PIPING_SERVER`` is set to the test server's URL) and the ports 22/5900 (an echo service) and
2222/5901 (a free port on 127.0.0.1). ``-e`` reads the passphrase from ``PIPING_PASS``, gpg from its
configuration, openssl from a terminal (``script``).
"""

from __future__ import annotations

import os
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import zipfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import pytest
from test_tunnel import echo_port, wait_bound

from conftest import env, free_port, needs, running_server

__all__ = ["echo_port"]  # a fixture, imported to be used here

ROOT = Path(__file__).resolve().parents[2]
DOC_URL = "http://localhost:8080"
PASS = "correct horse"

# ------------------------------------------------------------------------------------------- the lines

README_USING = [
    "curl http://localhost:8080/mypath > out.bin",
    "curl -T myfile http://localhost:8080/mypath",
    "echo 'hello!' | curl -T - http://localhost:8080/mypath",
    "tar c ./mydir | curl -T - http://localhost:8080/mypath",
    "curl http://localhost:8080/mypath | tar x",
    "curl -T bigfile 'http://localhost:8080/mypath?n=3'",
    "curl 'http://localhost:8080/mypath?n=3'          # three times",
    "seq inf | curl -T - http://localhost:8080/ticks",
    "curl -N http://localhost:8080/ticks",
    "ffmpeg -re -i movie.mp4 -c copy -f mpegts - | curl -T - 'http://localhost:8080/tv?live'",
    "curl -sN http://localhost:8080/tv | ffplay -",
]
README_CLIENT = [
    "piping send mypath photo.jpg            # one file travels as itself, with its name",
    "piping get mypath -o ~/Downloads/       # lands as ~/Downloads/photo.jpg; curl -OJ works too",
    "piping send mypath ./project notes.txt  # several files or a folder: one streamed tar, unpacked safely",
    "piping send -e mypath secret.pdf        # asks a passphrase; OpenPGP symmetric: `curl URL | gpg -d` decrypts it",
    "piping get -e mypath -o secret.pdf      # ... decrypts it, and what `gpg -c | curl -T -` sent",
    "piping tunnel server --port 22 ssh-in ssh-out        # on the machine with sshd",
    "piping tunnel client --port 2222 ssh-in ssh-out      # then: ssh -p 2222 localhost",
    "piping tunnel server --multiplex --port 5900 vnc-in vnc-out   # many connections over one pair of",
    "piping tunnel client --multiplex --port 5901 vnc-in vnc-out   # paths: a VNC viewer to localhost:5901",
]
CLIENT_SEND = [
    "piping send photo photo.jpg                      # one file: travels as itself",
    "piping get photo -o ~/Downloads/                 # lands as ~/Downloads/photo.jpg",
    "curl -OJ $PIPING_SERVER/photo                    # a curl or browser receiver gets photo.jpg too",
    "piping send mypath ./project notes.txt           # several files or a folder: one streamed tar",
    "piping get mypath -o ./here                      # unpacked into ./here (project/, notes.txt)",
    "curl $PIPING_SERVER/mypath | tar x               # ... or with tar",
    "tar c dir | piping send mypath                   # stdin",
    "piping get mypath | tar x                        # stdout",
    "piping send --n 3 mypath big.iso                 # three receivers, each with --n 3:",
    "piping get --n 3 mypath -o big.iso",
]
CLIENT_CRYPTO = [
    "piping send --pass 'correct horse' mypath secret.pdf    # or -e to be asked, or PIPING_PASS=...",
    "piping get --pass 'correct horse' mypath -o secret.pdf",
    "curl $PIPING_SERVER/mypath | gpg -d > secret.pdf        # gpg reads what piping sent",
    "gpg -c < secret.pdf | curl -T - $PIPING_SERVER/mypath   # piping get --pass reads what gpg sent",
]
CLIENT_TUNNEL = [
    "piping tunnel server --port 22 aaa bbb",
    "piping tunnel client --port 2222 aaa bbb",
    "curl -sSN $PIPING_SERVER/aaa | nc localhost 22 | curl -sSNT - $PIPING_SERVER/bbb",
    "curl -sSN $PIPING_SERVER/bbb | nc -l 2222 | curl -sSNT - $PIPING_SERVER/aaa",
    "socat TCP-LISTEN:2222 'EXEC:curl -NsS http\\://localhost\\:8080/bbb!!EXEC:curl -NsST - "
    "http\\://localhost\\:8080/aaa'",
]
CLIENT_COMPLETION = ['eval "$(piping completion bash)"     # in ~/.bashrc']
HELP = [  # "{url}" is the test server's own URL, as /help prints it
    "curl {url}/mypath",
    "curl -T myfile {url}/mypath",
    "echo 'hello!' | curl -T - {url}/mypath",
    "zip -q -r - ./mydir | curl -T - {url}/mypath",
    "tar zcf - ./mydir | curl -T - {url}/mypath",
    "cat myfile | openssl aes-256-cbc -pbkdf2 | curl -T - {url}/mypath",
    "curl {url}/mypath | openssl aes-256-cbc -pbkdf2 -d > myfile",
    "curl -T myfile '{url}/mypath?n=3'",
    "curl '{url}/mypath?n=3'",
    "piping send --server {url} mypath myfile",
    "echo 'hello!' | piping send --server {url} mypath",
    "piping get --server {url} mypath > myfile",
    "piping send --server {url} -e mypath ./mydir          # -e asks for the passphrase",
    "piping get --server {url} -e mypath -o .          # unpacked here",
    "piping tunnel server --server {url} --port 22 mypath/in mypath/out",
    "piping tunnel client --server {url} --port 2222 mypath/in mypath/out    # ssh -p 2222 localhost",
]
# Printed in a comment of /help ("get it with: ..."), run with its sender all the same.
HELP_IN_COMMENTS = ["curl {url}/mypath > mydir.zip", "curl {url}/mypath | tar zxf -"]

NOT_RUN = {
    "./scripts/serve          # starts the server on http://localhost:8080 (creates .venv and installs it first)": (
        "starts a server of its own on port 8080; the suite itself is how scripts/test is run"
    ),
    "./scripts/test           # installs the test dependencies (Debian packages too) and runs the whole suite": (
        "runs this suite"
    ),
    "export PIPING_SERVER=http://localhost:8080": "the tests set PIPING_SERVER to the test server",
    "export PIPING_SERVER=https://ppng.io             # or --server URL on each command": "the same",
    "piping-server --http-port 8080 --enable-https --https-port 8443 --crt-path cert.pem --key-path key.pem": (
        "the server's command line, with the operator's certificate: tests/server runs it"
    ),
    "piping-server --config /etc/piping-server.toml --metrics-port 9090 --access-log --log-format json": (
        "the server's command line, with the operator's config file: tests/ops runs it"
    ),
    "ssh -p 2222 localhost": "needs an sshd on port 22; test_tunnel.py runs real ssh over both tunnel modes",
    # README's "Run it": tests/deploy runs each (no Docker daemon there: buildah builds the Containerfile)
    "docker build -t piping-server .            # or: podman build --format docker -t piping-server .": (
        "tests/deploy/test_container.py builds the Containerfile with buildah"
    ),
    "docker run --rm -p 8080:8080 --stop-timeout 35 piping-server --workers auto": (
        "tests/deploy/test_container.py runs the image with flags after it, as PID 1"
    ),
    "./scripts/build-exe                        # writes dist/exe/piping-server and dist/exe/piping": (
        "tests/deploy/test_exe.py runs it"
    ),
    "./dist/exe/piping-server --http-port 8080": "tests/deploy/test_exe.py runs the executable on a free port",
    "pipx install .": "tests/deploy/test_packaging.py runs it into a pipx home of its own",
}


def sh_lines(markdown: str) -> list[str]:
    """The command lines of a Markdown text's ``sh`` blocks (comment lines and blank lines left out)."""
    lines: list[str] = []
    inside = False
    for line in markdown.splitlines():
        if line.startswith("```"):
            inside = not inside and line.strip() == "```sh"
            continue
        if inside and line.strip() and not line.lstrip().startswith("#"):
            lines.append(line)
    return lines


def help_lines(text: str) -> list[str]:
    starts = ("curl ", "echo ", "zip ", "tar ", "cat ", "piping ", "gpg ", "socat ", "nc ")
    return [line for line in text.splitlines() if line.startswith(starts)]


# ------------------------------------------------------------------------------------------- running them


@pytest.fixture(scope="module")
def our_server() -> Iterator[str]:
    with running_server("ours") as url:
        yield url


@pytest.fixture(scope="module")
def help_text(our_server: str) -> str:
    with urllib.request.urlopen(our_server + "/help", timeout=20) as r:
        return str(r.read().decode())


@dataclass
class Shell:
    """Runs printed lines with bash in folders under ``root``, as a user with a home of their own."""

    root: Path
    server: str
    echo: int
    port: int = field(default_factory=free_port)
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def localize(self, line: str) -> str:
        esc = self.server.replace(":", "\\:")
        line = line.replace(DOC_URL, self.server).replace(DOC_URL.replace(":", "\\:"), esc)
        for listen in ("--port 2222", "--port 5901"):
            line = line.replace(listen, f"--port {self.port}")
        for service in ("--port 22 ", "--port 5900 "):
            line = line.replace(service, f"--port {self.echo} ")
        line = line.replace("nc localhost 22 ", f"nc localhost {self.echo} ")
        line = line.replace("nc -l 2222", f"nc -l 127.0.0.1 {self.port}")
        return line.replace("TCP-LISTEN:2222", f"TCP-LISTEN:{self.port},bind=127.0.0.1")

    def start(
        self,
        line: str,
        cwd: str,
        *,
        passphrase: bool = False,
        tty_input: str | None = None,
        extra_env: dict[str, str] | None = None,
    ) -> int:
        folder = self.root / cwd
        folder.mkdir(exist_ok=True)
        e = env()
        e.update(PIPING_SERVER=self.server, HOME=str(self.root / "home"), GNUPGHOME=str(self.root / "gnupg"))
        e["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{e['PATH']}"  # `piping`, as installed
        if passphrase:
            e["PIPING_PASS"] = PASS  # what -e would ask for on the terminal
        e.update(extra_env or {})
        cmd = ["bash", "-c", self.localize(line)]
        if tty_input is not None:
            cmd = ["script", "-qec", self.localize(line), "/dev/null"]  # a terminal, for openssl's prompt
        proc = subprocess.Popen(
            cmd,
            cwd=folder,
            env=e,
            stdin=subprocess.PIPE if tty_input is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,  # its own process group: the whole pipeline can be stopped
        )
        if tty_input is not None:
            assert proc.stdin is not None
            proc.stdin.write(tty_input.encode())
            proc.stdin.flush()
        self.procs.append(proc)
        return len(self.procs) - 1

    def finish(self, *indexes: int, timeout: float = 60) -> list[bytes]:
        """Wait for these lines to end; each must exit 0. Returns their stdout."""
        outs = []
        for i in indexes:
            out, err = self.procs[i].communicate(timeout=timeout)
            assert self.procs[i].returncode == 0, (self.procs[i].args, err.decode())
            outs.append(out)
        return outs

    def stop_all(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
            p.wait(10)


@pytest.fixture
def shell(tmp_path: Path, our_server: str, echo_port: int) -> Iterator[Shell]:
    sender = tmp_path / "a"
    (sender / "mydir" / "sub").mkdir(parents=True)
    (sender / "mydir" / "sub" / "x.txt").write_text("x")
    (sender / "project" / "src").mkdir(parents=True)
    (sender / "project" / "src" / "main.py").write_text("print('hi')\n")
    (sender / "dir").mkdir()
    (sender / "dir" / "d.txt").write_text("d")
    for name, size in (("myfile", 100_000), ("bigfile", 1_000_000), ("photo.jpg", 50_000), ("big.iso", 500_000)):
        (sender / name).write_bytes(os.urandom(size))
    (sender / "notes.txt").write_text("notes")
    (sender / "secret.pdf").write_bytes(b"%PDF-1.4 secret\n" + os.urandom(1000))
    home = tmp_path / "home"
    (home / "Downloads").mkdir(parents=True)
    gnupg = tmp_path / "gnupg"
    gnupg.mkdir(mode=0o700)
    (gnupg / "pass").write_text(PASS)
    # gpg as printed (`gpg -c`, `gpg -d`) takes its passphrase from here instead of a pinentry dialog.
    (gnupg / "gpg.conf").write_text(f"batch\npinentry-mode loopback\npassphrase-file {gnupg / 'pass'}\n")
    s = Shell(tmp_path, our_server, echo_port)
    try:
        yield s
    finally:
        s.stop_all()


def sent(shell: Shell, name: str) -> bytes:
    return (shell.root / "a" / name).read_bytes()


def roundtrip(port: int, data: bytes) -> bytes:
    """One echo through a tunnel: send, read as many bytes back (one-liners may never pass a close on)."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(data)
        got = b""
        for _ in range(10_000):
            if len(got) >= len(data):
                break
            chunk = s.recv(65536)
            if not chunk:
                break
            got += chunk
        return got


# ------------------------------------------------------------------------------------------- the scenarios


def pair(shell: Shell, send: str, receive: str, out: str = "b", **kw: bool) -> bytes:
    """A sender line in a/, a receiver line in ``out``/; both must succeed. Returns the receiver's stdout."""
    r = shell.start(receive, out, **kw)
    s = shell.start(send, "a", **kw)
    shell.finish(s)
    return shell.finish(r)[0]


def test_readme_curl_lines(shell: Shell) -> None:
    get, send_file, send_text, send_dir, get_dir, send_n, get_n, ticks, watch = README_USING[:9]
    pair(shell, send_file, get)
    assert (shell.root / "b" / "out.bin").read_bytes() == sent(shell, "myfile")
    pair(shell, send_text, get, "c")
    assert (shell.root / "c" / "out.bin").read_bytes() == b"hello!\n"
    pair(shell, send_dir, get_dir)
    assert (shell.root / "b" / "mydir" / "sub" / "x.txt").read_text() == "x"
    receivers = [shell.start(get_n, f"n{i}") for i in range(3)]
    shell.finish(shell.start(send_n, "a"))
    assert shell.finish(*receivers) == [sent(shell, "bigfile")] * 3
    # An endless stream: three lines reach the watcher, then both are stopped.
    watcher = shell.start(watch, "b")
    shell.start(ticks, "a")
    stdout = shell.procs[watcher].stdout
    assert stdout is not None
    assert [stdout.readline() for _ in range(3)] == [b"1\n", b"2\n", b"3\n"]


def _read_until(stream: IO[bytes] | None, word: bytes, timeout: float = 30) -> bytes:
    """What ``stream`` gave until ``word`` appeared in it (bounded in time and reads)."""
    assert stream is not None
    seen = b""
    deadline = time.monotonic() + timeout
    for _ in range(10_000):
        left = deadline - time.monotonic()
        if word in seen or left <= 0 or not select.select([stream], [], [], left)[0]:
            break
        chunk = os.read(stream.fileno(), 65536)
        if not chunk:
            break
        seen += chunk
    return seen


def test_readme_live_lines(shell: Shell) -> None:
    needs("ffmpeg")
    needs("ffplay")
    broadcast, watch = README_USING[9:]
    movie = ["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "testsrc=size=160x120:rate=25", "-t", "3"]
    subprocess.run([*movie, "-c:v", "mpeg4", str(shell.root / "a" / "movie.mp4")], check=True, timeout=60)
    # A plain viewer must come after the live sender (docs/protocol.md 11), and curl shows the sender's
    # lines only at its end: a `?live` receiver, which may come before or after the sender, gets its
    # response head once the sender is there.
    with ThreadPoolExecutor(1) as pool:
        probe = pool.submit(urllib.request.urlopen, shell.server + "/tv?live", timeout=30)
        sender = shell.start(broadcast, "a")
        probe.result(timeout=30).close()
    # ffplay with SDL's dummy drivers: no display here. It plays until stopped; it must have opened the stream.
    viewer = shell.start(watch, "b", extra_env={"SDL_VIDEODRIVER": "dummy", "SDL_AUDIODRIVER": "dummy"})
    assert b"Input #0, mpegts" in _read_until(shell.procs[viewer].stderr, b"Input #0, mpegts")
    shell.finish(sender)


def test_readme_client_lines(shell: Shell) -> None:
    send_photo, get_photo, send_project, send_secret, get_secret = README_CLIENT[:5]
    pair(shell, send_photo, get_photo)
    assert (shell.root / "home" / "Downloads" / "photo.jpg").read_bytes() == sent(shell, "photo.jpg")
    pair(shell, send_project, CLIENT_SEND[4])  # docs/client.md's receiver of the same command
    assert (shell.root / "b" / "here" / "notes.txt").read_text() == "notes"
    pair(shell, send_secret, get_secret, "c", passphrase=True)
    assert (shell.root / "c" / "secret.pdf").read_bytes() == sent(shell, "secret.pdf")


def test_readme_tunnel_lines(shell: Shell) -> None:
    server, client, mux_server, mux_client = README_CLIENT[5:]
    shell.start(server, "a")
    shell.start(client, "b")
    wait_bound(shell.port)
    assert roundtrip(shell.port, b"through the plain tunnel") == b"through the plain tunnel"
    shell.stop_all()
    shell.port = free_port()
    shell.start(mux_server, "a")
    shell.start(mux_client, "b")
    wait_bound(shell.port)
    assert [roundtrip(shell.port, b"one"), roundtrip(shell.port, b"two")] == [b"one", b"two"]


def test_client_doc_send_and_get_lines(shell: Shell) -> None:
    send_photo, get_photo, curl_photo, send_project, get_here, curl_tar, tar_send, get_tar, send_n, get_n = CLIENT_SEND
    pair(shell, send_photo, get_photo)
    assert (shell.root / "home" / "Downloads" / "photo.jpg").read_bytes() == sent(shell, "photo.jpg")
    pair(shell, send_photo, curl_photo)
    assert (shell.root / "b" / "photo.jpg").read_bytes() == sent(shell, "photo.jpg")
    pair(shell, send_project, get_here, "c")
    assert sorted(p.name for p in (shell.root / "c" / "here").iterdir()) == ["notes.txt", "project"]
    pair(shell, send_project, curl_tar, "d")
    assert (shell.root / "d" / "project" / "src" / "main.py").read_text() == "print('hi')\n"
    pair(shell, tar_send, get_tar, "e")
    assert (shell.root / "e" / "dir" / "d.txt").read_text() == "d"
    receivers = [shell.start(get_n, f"n{i}") for i in range(3)]
    shell.finish(shell.start(send_n, "a"))
    shell.finish(*receivers)
    for i in range(3):
        assert (shell.root / f"n{i}" / "big.iso").read_bytes() == sent(shell, "big.iso")


def test_client_doc_encryption_lines(shell: Shell) -> None:
    needs("gpg")
    send, get, gpg_get, gpg_send = CLIENT_CRYPTO
    pair(shell, send, get)
    assert (shell.root / "b" / "secret.pdf").read_bytes() == sent(shell, "secret.pdf")
    pair(shell, send, gpg_get, "c")
    assert (shell.root / "c" / "secret.pdf").read_bytes() == sent(shell, "secret.pdf")
    pair(shell, gpg_send, get, "d")
    assert (shell.root / "d" / "secret.pdf").read_bytes() == sent(shell, "secret.pdf")


@pytest.mark.parametrize("server_side, client_side", [(0, 1), (2, 1), (0, 3), (0, 4)])
def test_client_doc_tunnel_lines(shell: Shell, server_side: int, client_side: int) -> None:
    for tool in ("curl", "nc", "socat"):
        needs(tool)
    shell.start(CLIENT_TUNNEL[server_side], "a")
    shell.start(CLIENT_TUNNEL[client_side], "b")
    wait_bound(shell.port)
    data = os.urandom(50_000)
    assert roundtrip(shell.port, data) == data


def test_client_doc_completion_line(shell: Shell) -> None:
    shell.finish(shell.start(CLIENT_COMPLETION[0], "a"))


def test_help_lines(shell: Shell) -> None:
    url = shell.server
    (get, send_file, send_text, send_zip, send_tgz, ssl_send, ssl_get, send_n, get_n) = (
        line.format(url=url) for line in HELP[:9]
    )
    get_zip, get_tgz = (line.format(url=url) for line in HELP_IN_COMMENTS)
    assert pair(shell, send_file, get) == sent(shell, "myfile")
    assert pair(shell, send_text, get, "c") == b"hello!\n"
    if shutil.which("zip"):  # not every machine has zip; the rest still runs
        pair(shell, send_zip, get_zip)
        with zipfile.ZipFile(shell.root / "b" / "mydir.zip") as z:
            assert z.read("mydir/sub/x.txt") == b"x"
    pair(shell, send_tgz, get_tgz, "d")
    assert (shell.root / "d" / "mydir" / "sub" / "x.txt").read_text() == "x"
    needs("openssl")
    needs("script")
    r = shell.start(ssl_get, "e", tty_input="pw\n")
    shell.finish(shell.start(ssl_send, "a", tty_input="pw\npw\n"))
    shell.finish(r)
    assert (shell.root / "e" / "myfile").read_bytes() == sent(shell, "myfile")
    receivers = [shell.start(get_n, f"n{i}") for i in range(3)]
    shell.finish(shell.start(send_n, "a"))
    assert shell.finish(*receivers) == [sent(shell, "myfile")] * 3


def test_help_piping_lines(shell: Shell) -> None:
    url = shell.server
    send_file, send_text, get, send_enc, get_enc, tunnel_server, tunnel_client = (
        line.format(url=url) for line in HELP[9:]
    )
    pair(shell, send_file, get)
    assert (shell.root / "b" / "myfile").read_bytes() == sent(shell, "myfile")
    pair(shell, send_text, get, "c")
    assert (shell.root / "c" / "myfile").read_bytes() == b"hello!\n"
    pair(shell, send_enc, get_enc, "d", passphrase=True)
    assert (shell.root / "d" / "mydir" / "sub" / "x.txt").read_text() == "x"
    shell.start(tunnel_server, "a")
    shell.start(tunnel_client, "b")
    wait_bound(shell.port)
    assert roundtrip(shell.port, b"over /help's tunnel") == b"over /help's tunnel"


# ------------------------------------------------------------------------------------------- in sync


# A command line added to (or changed in) a document fails here: copy it into the lists above and run
# it in a scenario, or, if it cannot run in a test, put it in NOT_RUN with the reason.
def test_documents_print_these_lines(help_text: str, our_server: str) -> None:
    """Each document's command lines are the ones run above (or in NOT_RUN, with the reason)."""
    readme = sh_lines((ROOT / "README.md").read_text(encoding="utf-8"))
    assert [line for line in readme if line not in NOT_RUN] == README_USING + README_CLIENT, "README.md"
    client = sh_lines((ROOT / "docs" / "client.md").read_text(encoding="utf-8"))
    assert [line for line in client if line not in NOT_RUN] == (
        CLIENT_SEND + CLIENT_CRYPTO + CLIENT_TUNNEL + CLIENT_COMPLETION
    ), "docs/client.md"
    assert help_lines(help_text) == [line.format(url=our_server) for line in HELP], "/help"
    for line in HELP_IN_COMMENTS:
        assert re.search(f"get it with: {re.escape(line.format(url=our_server))}$", help_text, re.MULTILINE)
