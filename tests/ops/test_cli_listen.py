"""The command line as a deployment sees it: settings from the environment, start-up lines, --help and
--explain, the listeners' backlog, --uds and --fd (systemd socket activation). The real process, 127.0.0.1.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import stat
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from ..helpers import WAIT_S, free_port, stop_process, unique_path, wait_for_port, wait_until
from .util import request

pytestmark = pytest.mark.ours

SERVER = [sys.executable, "-m", "piping_server"]


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without any of the server's variables, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIPING_SERVER_") and k != "PORT"}
    return {**env, **extra}


@dataclass
class Running:
    proc: subprocess.Popen[bytes]
    log_path: Path


@contextmanager
def running(
    args: list[str],
    tmp: Path,
    *,
    env: dict[str, str] | None = None,
    port: int | None = None,
    pass_fds: tuple[int, ...] = (),
    ready: str = "Press Ctrl-C to stop",
) -> Iterator[Running]:
    """The server started with ``args``; waits for ``ready`` in its output (and for ``port``)."""
    log_path = tmp / f"server-{uuid.uuid4().hex[:8]}.log"
    with log_path.open("wb") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=env or clean_env(), pass_fds=pass_fds)
    try:
        if port is not None:
            wait_for_port(port, proc)
        assert wait_until(lambda: ready in log_path.read_text() or proc.poll() is not None), log_path.read_text()
        assert proc.poll() is None, log_path.read_text()
        yield Running(proc, log_path)
    finally:
        stop_process(proc)


def log_of(server: Running) -> str:
    return server.log_path.read_text(errors="replace")


def one_line_error(args: list[str], env: dict[str, str]) -> str:
    """Run a command that must fail at once: exit code 2 and one line on stderr, never a traceback."""
    done = subprocess.run([*SERVER, *args], env=env, capture_output=True, text=True, timeout=WAIT_S)
    assert done.returncode == 2, (done.returncode, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("piping-server: error: "), done.stderr
    return lines[0]


# --- settings from the environment ---------------------------------------------------------------------


def test_every_setting_from_its_variable(tmp_path: Path) -> None:
    """PIPING_SERVER_HTTP_PORT, _HOST, _MAX_N, _ACCESS_LOG and _ALLOW_PATH (a repeatable flag) all take effect."""
    port = free_port()
    env = clean_env(
        PIPING_SERVER_HOST="127.0.0.1",
        PIPING_SERVER_HTTP_PORT=str(port),
        PIPING_SERVER_MAX_N="2",
        PIPING_SERVER_ACCESS_LOG="true",
        PIPING_SERVER_ALLOW_PATH="/a/* /b",
    )
    with running(SERVER, tmp_path, env=env, port=port) as proc:
        assert f"listening on http://127.0.0.1:{port}" in log_of(proc)
        assert request(port, "GET", "/a/x?n=3")[0] == 400  # --max-n 2
        assert request(port, "GET", "/elsewhere")[0] == 403  # --allow-path
        assert request(port, "POST", "/b?n=0", body=b"x")[0] == 400  # allowed, then the protocol's own 400
        assert wait_until(lambda: '"GET /elsewhere" 403' in log_of(proc))  # --access-log


def test_port_variable_when_no_port_is_given(tmp_path: Path) -> None:
    """PORT (the platforms' convention) is the HTTP port when neither --http-port nor its variable is given."""
    port = free_port()
    with running([*SERVER, "--host", "127.0.0.1"], tmp_path, env=clean_env(PORT=str(port)), port=port):
        assert request(port, "GET", "/version")[0] == 200


def test_flag_beats_variable_beats_port_beats_file(tmp_path: Path) -> None:
    flag, variable, platform, in_file = (free_port() for _ in range(4))
    config = tmp_path / "piping.toml"
    config.write_text(f'[server]\nhost = "127.0.0.1"\nhttp_port = {in_file}\n')
    base = [*SERVER, "--config", str(config)]
    every = clean_env(PIPING_SERVER_HTTP_PORT=str(variable), PORT=str(platform))
    with running([*base, "--http-port", str(flag)], tmp_path, env=every, port=flag) as proc:
        assert f":{flag}" in log_of(proc)
    with running(base, tmp_path, env=every, port=variable) as proc:
        assert f":{variable}" in log_of(proc)
    with running(base, tmp_path, env=clean_env(PORT=str(platform)), port=platform) as proc:
        assert f":{platform}" in log_of(proc)
    with running(base, tmp_path, env=clean_env(), port=in_file) as proc:
        assert f":{in_file}" in log_of(proc)


@pytest.mark.parametrize(
    ("variable", "value", "named"),
    [
        ("PIPING_SERVER_HTTP_PORT", "eighty", "--http-port"),
        ("PORT", "99999", "--http-port"),
        ("PIPING_SERVER_ENABLE_HTTPS", "maybe", "--enable-https"),
        ("PIPING_SERVER_MAX_N", "0", "--max-n"),
        ("PIPING_SERVER_LOG_LEVEL", "loud", "--log-level"),
        ("PIPING_SERVER_WORKERS", "many", "--workers"),
        ("PIPING_SERVER_BACKLOG", "-1", "--backlog"),
    ],
)
def test_bad_variable_is_one_line(variable: str, value: str, named: str) -> None:
    line = one_line_error([], clean_env(**{variable: value}))
    assert named in line, line


def test_help_names_each_flags_variable_and_no_docs_path() -> None:
    done = subprocess.run(
        [*SERVER, "--help"], env=clean_env(COLUMNS="200"), capture_output=True, text=True, timeout=WAIT_S, check=True
    )
    text = " ".join(done.stdout.split())
    for flag, variable in [
        ("--http-port", "PIPING_SERVER_HTTP_PORT, PORT"),
        ("--workers", "PIPING_SERVER_WORKERS"),
        ("--max-connections-per-client", "PIPING_SERVER_MAX_CONNECTIONS_PER_CLIENT"),
        ("--forwarded-allow-ips", "PIPING_SERVER_FORWARDED_ALLOW_IPS, FORWARDED_ALLOW_IPS"),
        ("--backlog", "PIPING_SERVER_BACKLOG"),
        ("--uds", "PIPING_SERVER_UDS"),
    ]:
        assert re.search(rf"{re.escape(flag)} .*?\[env var: {re.escape(variable)}[;\]]", text), flag
    assert "docs/" not in done.stdout  # pip installs no docs/ folder: nothing may point there
    assert "--explain" in done.stdout


@pytest.mark.parametrize("topic", ["env", "workers", "proxy", "systemd"])
def test_explain_prints_a_topic(topic: str) -> None:
    done = subprocess.run(
        [*SERVER, "--explain", topic], env=clean_env(), capture_output=True, text=True, timeout=WAIT_S, check=True
    )
    assert len(done.stdout.splitlines()) >= 8 and "docs/" not in done.stdout


# --- start-up lines -----------------------------------------------------------------------------------


def test_start_up_lines_single_process(tmp_path: Path, tls_files: tuple[str, str, str]) -> None:
    port, https_port = free_port(), free_port()
    args = [
        *SERVER,
        "--http-port",
        str(port),
        "--enable-https",
        "--https-port",
        str(https_port),
        "--crt-path",
        tls_files[0],
        "--key-path",
        tls_files[1],
    ]
    with running(args, tmp_path, port=port) as proc:
        log = log_of(proc)
    assert f"open http://localhost:{port}/ in a browser" in log
    assert f"or https://localhost:{https_port}/" in log
    assert "1 process (--workers 1). Press Ctrl-C to stop" in log


def test_start_up_lines_workers_are_one_line(tmp_path: Path) -> None:
    port = free_port()
    with running(
        [*SERVER, "--host", "127.0.0.1", "--http-port", str(port), "--workers", "3"], tmp_path, port=port
    ) as proc:
        log = log_of(proc)
    assert re.search(r"3 worker processes \(pids \d+, \d+, \d+\)\. Press Ctrl-C to stop", log), log
    assert "worker 0 started" not in log  # a line per worker only when one is restarted
    assert log.count(f"listening on http://127.0.0.1:{port}") == 1


# --- backlog ------------------------------------------------------------------------------------------


def listen_backlog(port: int) -> int:
    """A listening TCP socket's backlog: ss shows it as Send-Q."""
    out = subprocess.run(
        ["ss", "-Hltn", f"sport = :{port}"], capture_output=True, text=True, timeout=WAIT_S, check=True
    ).stdout
    queues = {int(line.split()[2]) for line in out.splitlines() if line.startswith("LISTEN")}
    assert len(queues) == 1, out
    return queues.pop()


need_ss = pytest.mark.skipif(shutil.which("ss") is None, reason="ss is missing (Debian: apt-get install iproute2)")


@need_ss
@pytest.mark.parametrize("workers", ["1", "2"])
def test_same_backlog_on_every_listener(workers: str, tmp_path: Path, tls_files: tuple[str, str, str]) -> None:
    """1024 by default with or without --workers, on HTTP and HTTPS (asyncio re-listens with 100 unless told)."""
    port, https_port = free_port(), free_port()
    args = [
        *SERVER,
        "--host",
        "127.0.0.1",
        "--http-port",
        str(port),
        "--workers",
        workers,
        "--enable-https",
        "--https-port",
        str(https_port),
        "--crt-path",
        tls_files[0],
        "--key-path",
        tls_files[1],
    ]
    with running(args, tmp_path, port=port):
        assert wait_until(lambda: listen_backlog(port) == 1024), listen_backlog(port)
        assert listen_backlog(https_port) == 1024
    with running([*args, "--backlog", "77"], tmp_path, port=port):
        assert wait_until(lambda: listen_backlog(port) == 77), listen_backlog(port)
        assert listen_backlog(https_port) == 77


# --- Unix socket and inherited descriptor ------------------------------------------------------------------


def curl_transfer(curl_to: list[str], base: str, tmp: Path) -> None:
    """A 3 MiB transfer with curl on both sides, byte-exact."""
    data = os.urandom(3 << 20)
    path = unique_path()
    out = tmp / "received"
    receiver = subprocess.Popen(["curl", "-sS", *curl_to, "-o", str(out), base + path], stderr=subprocess.PIPE)
    try:
        sender = subprocess.run(
            ["curl", "-sS", *curl_to, "-T", "-", base + path], input=data, capture_output=True, timeout=WAIT_S
        )
        _, err = receiver.communicate(timeout=WAIT_S)
    finally:
        stop_process(receiver)
    assert sender.returncode == 0 and b"successfully" in sender.stdout, sender
    assert receiver.returncode == 0, err
    assert out.read_bytes() == data


@pytest.mark.parametrize("workers", ["1", "2"])
def test_unix_socket_transfer(workers: str, tmp_path: Path) -> None:
    """--uds: a transfer with curl --unix-socket (with --workers too); the socket file goes at exit."""
    sock_path = tmp_path / "piping.sock"
    env = clean_env(PIPING_SERVER_HTTP_PORT="9")  # names the TCP port --uds replaces: said so, not used
    with running([*SERVER, "--uds", str(sock_path), "--workers", workers], tmp_path, env=env) as proc:
        assert "--http-port ignored: --uds serves HTTP instead" in log_of(proc)
        assert stat.S_ISSOCK(os.stat(sock_path).st_mode)
        assert f"curl --unix-socket {sock_path} http://localhost/help" in log_of(proc)
        for _ in range(3):  # with workers, each transfer's path has its owner: several, to cross workers
            curl_transfer(["--unix-socket", str(sock_path)], "http://localhost", tmp_path)
    assert not sock_path.exists()


def test_unix_socket_stale_replaced_live_and_file_refused(tmp_path: Path) -> None:
    sock_path = tmp_path / "piping.sock"
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(sock_path))  # a socket file nobody listens on (a killed server's): replaced
    stale.close()
    with running([*SERVER, "--uds", str(sock_path)], tmp_path):
        # a second server on the same path must not steal it
        done = subprocess.run(
            [*SERVER, "--uds", str(sock_path)], env=clean_env(), capture_output=True, text=True, timeout=WAIT_S
        )
        assert done.returncode == 1 and "another process listens there" in done.stderr, done.stderr
        assert len(done.stderr.strip().splitlines()) == 1
    regular = tmp_path / "a-file"
    regular.write_text("keep me")
    done = subprocess.run(
        [*SERVER, "--uds", str(regular)], env=clean_env(), capture_output=True, text=True, timeout=WAIT_S
    )
    assert done.returncode == 1 and "not a socket" in done.stderr and regular.read_text() == "keep me"


@pytest.mark.parametrize("workers", ["1", "2"])
def test_inherited_socket(workers: str, tmp_path: Path) -> None:
    """--fd N: a listening socket made by the test and passed to the process, as systemd does."""
    listener = socket.create_server(("127.0.0.1", 0), backlog=5)
    port = listener.getsockname()[1]
    try:
        args = [*SERVER, "--fd", str(listener.fileno()), "--workers", workers]
        with running(args, tmp_path, pass_fds=(listener.fileno(),)) as proc:
            assert f"listening on http://127.0.0.1:{port}" in log_of(proc)
            curl_transfer([], f"http://127.0.0.1:{port}", tmp_path)
            if shutil.which("ss"):
                assert listen_backlog(port) == 1024
    finally:
        listener.close()


def test_fd_that_is_not_a_listener_is_one_line(tmp_path: Path) -> None:
    with (tmp_path / "f").open("w") as f:
        done = subprocess.run(
            [*SERVER, "--fd", str(f.fileno())],
            env=clean_env(),
            capture_output=True,
            text=True,
            timeout=WAIT_S,
            pass_fds=(f.fileno(),),
        )
    assert done.returncode == 1 and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "not an open socket" in done.stderr or "not a TCP or Unix" in done.stderr
    one_line_error(["--uds", str(tmp_path / "s"), "--fd", "3"], clean_env())


@pytest.mark.skipif(
    shutil.which("systemd-socket-activate") is None,
    reason="systemd-socket-activate is missing (Debian: the systemd package)",
)
def test_systemd_socket_activation(tmp_path: Path) -> None:
    port = free_port()
    args = ["systemd-socket-activate", "-l", f"127.0.0.1:{port}", *SERVER, "--fd", "3"]
    with running(args, tmp_path, ready="Listening on") as proc:
        # systemd-socket-activate starts the server at the first connection, like systemd's Accept=no
        assert request(port, "GET", "/version")[0] == 200
        assert "Press Ctrl-C to stop" in log_of(proc)
        curl_transfer([], f"http://127.0.0.1:{port}", tmp_path)
