"""Graceful shutdown of the real process: the default grace, a flag on its own, a second signal, the last line."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from .util import finish_transfer, running_transfer, server_with, wait_log

pytestmark = pytest.mark.ours


@pytest.mark.parametrize("args", [(), ("--shutdown-grace", "8")], ids=["default", "flag-alone"])
def test_sigterm_waits_for_a_running_transfer(tmp_path: Path, args: tuple[str, ...]) -> None:
    # the flag alone (no hook-installing flag beside it) was once ignored: the transfer was cut at once
    with server_with(*args, tmp=tmp_path) as (server, _):
        sender, receiver = running_transfer(server.http_port)
        server.proc.send_signal(signal.SIGTERM)
        assert wait_log(server, "shutting down: waiting up to")
        assert server.proc.poll() is None
        finish_transfer(sender, receiver)
        assert server.proc.wait(timeout=10) == 0
        assert "stopped: 1 running transfer(s) finished, 0 cut" in server.log()
        sender.close()


@pytest.mark.parametrize("second", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_second_signal_cuts_at_once(tmp_path: Path, second: signal.Signals) -> None:
    with server_with(tmp=tmp_path) as (server, _):  # the default grace: 30 s, far longer than the waits below
        sender, receiver = running_transfer(server.http_port)
        server.proc.send_signal(signal.SIGTERM)
        assert wait_log(server, "shutting down: waiting up to 30s for 1 running transfer(s)")
        server.proc.send_signal(second)
        receiver.read_to_close(timeout=10)
        body, complete = receiver.body()
        assert body == b"part one, " and not complete  # cut, never a clean end
        assert server.proc.wait(timeout=10) == 0
        assert "stopped: 0 running transfer(s) finished, 1 cut" in server.log()
        sender.close()


def test_grace_zero_cuts_at_once(tmp_path: Path) -> None:
    with server_with("--shutdown-grace", "0", tmp=tmp_path) as (server, _):
        sender, receiver = running_transfer(server.http_port)
        server.proc.send_signal(signal.SIGTERM)
        receiver.read_to_close(timeout=10)
        assert receiver.body() == (b"part one, ", False)
        assert server.proc.wait(timeout=10) == 0
        assert "stopped: 0 running transfer(s) finished, 1 cut" in server.log()
        sender.close()
