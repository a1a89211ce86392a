"""deploy/piping-server.service: systemd accepts it, and its ExecStart runs and stops as the unit says.

There is no systemd to start units on the test machines, so the unit is checked with
``systemd-analyze verify`` (when present), then its ExecStart is run as systemd would run it
(with this checkout's ``piping-server`` and a free port swapped in) and stopped with its KillSignal.
"""

from __future__ import annotations

import shlex
import shutil
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from ..helpers import WAIT_S, free_port, wait_for_port
from .proxies import DEPLOY, substitute

pytestmark = pytest.mark.ours

UNIT = DEPLOY / "piping-server.service"
SHIPPED_BINARY = "/opt/piping-server/bin/piping-server"
#: this checkout's script, installed beside the interpreter running the tests
BINARY = str(Path(sys.executable).with_name("piping-server"))


def service_settings(text: str) -> dict[str, str]:
    """The [Service] section's settings (one value each: this unit repeats none)."""
    settings: dict[str, str] = {}
    section = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line
        elif section == "[Service]":
            key, _, value = line.partition("=")
            settings[key.strip()] = value.strip()
    return settings


def flag(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


def test_unit_settings() -> None:
    """SIGTERM stops it gracefully, systemd waits longer than the grace, a crash restarts it."""
    settings = service_settings(UNIT.read_text())
    argv = shlex.split(settings["ExecStart"])
    assert argv[0] == SHIPPED_BINARY
    assert settings["KillSignal"] == "SIGTERM"
    assert float(settings["TimeoutStopSec"]) > float(flag(argv, "--shutdown-grace"))
    assert settings["Restart"] in ("on-failure", "always")
    assert flag(argv, "--forwarded-allow-ips") == "127.0.0.1"  # behind the proxy of deploy/ on this machine


def test_systemd_analyze_verify(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed (Debian: the systemd package)")
    unit = tmp_path / "piping-server.service"
    unit.write_text(substitute(UNIT.read_text(), [(SHIPPED_BINARY, BINARY)]))
    result = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "piping-server.service" not in result.stderr, result.stderr  # no warning about our unit


def test_exec_start_serves_and_stops_on_kill_signal() -> None:
    """The unit's very command line serves; its KillSignal ends it cleanly well within TimeoutStopSec."""
    settings = service_settings(UNIT.read_text())
    port = free_port()
    command = substitute(settings["ExecStart"], [(SHIPPED_BINARY, BINARY), ("--http-port 8081", f"--http-port {port}")])
    proc = subprocess.Popen(shlex.split(command), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
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
