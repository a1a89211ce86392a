"""deploy/piping-server.socket, .service and @.service: systemd accepts them, and their ExecStart runs and
stops as the unit says.

There is no systemd to start units on the test machines, so the units are checked with
``systemd-analyze verify`` (when present), then each ExecStart is run as systemd would run it (this
checkout's ``piping-server``; the socket-activated one on a socket passed to it as descriptor 3, made
like the .socket unit says; the template with a free port as its instance name) and stopped with its
KillSignal.
"""

from __future__ import annotations

import shlex
import shutil
import signal
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from ..helpers import WAIT_S, free_port, wait_for_port
from .proxies import DEPLOY, substitute

pytestmark = pytest.mark.ours

UNIT = DEPLOY / "piping-server.service"
SOCKET = DEPLOY / "piping-server.socket"
TEMPLATE = DEPLOY / "piping-server@.service"
SHIPPED_BINARY = "/opt/piping-server/bin/piping-server"
#: this checkout's script, installed beside the interpreter running the tests
BINARY = str(Path(sys.executable).with_name("piping-server"))


def service_settings(text: str, wanted: str = "[Service]") -> dict[str, str]:
    """A section's settings (one value each: these units repeat none)."""
    settings: dict[str, str] = {}
    section = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line
        elif section == wanted:
            key, _, value = line.partition("=")
            settings[key.strip()] = value.strip()
    return settings


def flag(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


def settings_of(path: Path, section: str = "[Service]") -> dict[str, str]:
    return service_settings(path.read_text(), section)


@pytest.mark.parametrize("unit", [UNIT, TEMPLATE], ids=["socket-activated", "template"])
def test_unit_settings(unit: Path) -> None:
    """SIGTERM stops it gracefully, systemd waits longer than the grace, a crash restarts it."""
    settings = settings_of(unit)
    argv = shlex.split(settings["ExecStart"])
    assert argv[0] == SHIPPED_BINARY
    assert settings["KillSignal"] == "SIGTERM"
    assert float(settings["TimeoutStopSec"]) > float(flag(argv, "--shutdown-grace"))
    assert settings["Restart"] in ("on-failure", "always")
    assert flag(argv, "--forwarded-allow-ips") == "127.0.0.1"  # behind the proxy of deploy/ on this machine


def test_socket_and_service_fit_together() -> None:
    """The service serves systemd's first passed descriptor (3), and the socket's queue is the server's."""
    argv = shlex.split(settings_of(UNIT)["ExecStart"])
    assert flag(argv, "--fd") == "3"
    unit = settings_of(UNIT, "[Unit]")
    assert "piping-server.socket" in unit["Requires"] and "piping-server.socket" in unit["After"]
    listen = settings_of(SOCKET, "[Socket]")
    assert listen["ListenStream"] == "127.0.0.1:8081" and listen["Backlog"] == "1024"


def test_systemd_analyze_verify(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed (Debian: the systemd package)")
    units = {
        "piping-server.service": UNIT,
        "piping-server.socket": SOCKET,
        "piping-server@8081.service": TEMPLATE,  # a template is verified as one of its instances
    }
    for name, source in units.items():
        text = source.read_text()
        (tmp_path / name).write_text(substitute(text, [(SHIPPED_BINARY, BINARY)]) if SHIPPED_BINARY in text else text)
    for name in units:
        result = subprocess.run(
            [analyze, "verify", str(tmp_path / name)], capture_output=True, text=True, timeout=60, cwd=tmp_path
        )
        assert result.returncode == 0, (name, result.stderr)
        assert "piping-server" not in result.stderr, result.stderr  # no warning about our units


def run_and_stop(command: str, port: int, settings: dict[str, str], pass_fds: tuple[int, ...] = ()) -> None:
    proc = subprocess.Popen(shlex.split(command), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, pass_fds=pass_fds)
    try:
        wait_for_port(port, proc)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/version", timeout=WAIT_S) as response:
            assert response.status == 200
        proc.send_signal(getattr(signal, settings["KillSignal"]))
        assert proc.wait(timeout=float(settings["TimeoutStopSec"])) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)


def test_socket_activated_exec_start_serves_and_stops_on_kill_signal() -> None:
    """The unit's very command line serves the socket systemd would pass (descriptor 3, as the .socket says)."""
    settings = settings_of(UNIT)
    host, _, _ = settings_of(SOCKET, "[Socket]")["ListenStream"].rpartition(":")
    listener = socket.create_server((host, 0), backlog=1024)
    try:
        port = listener.getsockname()[1]
        # systemd passes the socket as descriptor 3: move ours there (3 may be taken by this process)
        command = substitute(settings["ExecStart"], [(SHIPPED_BINARY, BINARY), ("--fd 3", f"--fd {listener.fileno()}")])
        run_and_stop(command, port, settings, pass_fds=(listener.fileno(),))
    finally:
        listener.close()


def test_systemd_socket_activate_runs_the_service() -> None:
    """Debian's systemd-socket-activate opens the socket and execs ExecStart as systemd does (descriptor 3)."""
    activate = shutil.which("systemd-socket-activate")
    if activate is None:
        pytest.skip("systemd-socket-activate is not installed (Debian: the systemd package)")
    settings = settings_of(UNIT)
    port = free_port()
    command = substitute(settings["ExecStart"], [(SHIPPED_BINARY, BINARY)])
    run_and_stop(f"{activate} -l 127.0.0.1:{port} {command}", port, settings)


def test_template_exec_start_serves_and_stops_on_kill_signal() -> None:
    settings = settings_of(TEMPLATE)
    port = free_port()
    command = substitute(settings["ExecStart"], [(SHIPPED_BINARY, BINARY), ("%i", str(port))])
    run_and_stop(command, port, settings)
