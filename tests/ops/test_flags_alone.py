"""Each operator flag takes effect on its own, with no other flag beside it (the real process).

A flag that installs no hook was once dropped unless another one did (``--shutdown-grace``, see
test_shutdown.py). The limits' flags are each tested alone in test_server_limits.py.
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest

from ..helpers import WAIT_S, ServerProcess, unique_path
from .util import request, server_with, wait_log

pytestmark = pytest.mark.ours


def _access_log(server: ServerProcess, _: int) -> None:
    path = unique_path()
    assert request(server.http_port, "GET", path + "?n=0")[0] == 400
    assert wait_log(server, f'"GET {path}" 400')


def _json_logs(server: ServerProcess, _: int) -> None:
    # the port accepts a moment before the start-up lines are written: wait for them
    assert wait_log(server, "Press Ctrl-C to stop")
    lines = [line for line in server.log().splitlines() if line.strip()]
    assert lines and all(json.loads(line)["logger"].startswith("piping_server") for line in lines)


def _quiet_logs(server: ServerProcess, _: int) -> None:
    assert request(server.http_port, "GET", "/version")[0] == 200
    assert "listening on" not in server.log()  # an info line, below the level asked for


def _metrics(_: ServerProcess, mport: int) -> None:
    with urllib.request.urlopen(f"http://127.0.0.1:{mport}/metrics", timeout=WAIT_S) as response:
        assert b"piping_active_transfers" in response.read()


def _allow_path(server: ServerProcess, _: int) -> None:
    assert request(server.http_port, "GET", "/elsewhere")[0] == 403
    assert request(server.http_port, "POST", "/only/x?n=0", body=b"x")[0] == 400  # allowed, then the protocol's


def _said_ignored(flag: str) -> Callable[[ServerProcess, int], None]:
    """A flag that can do nothing without another one is said so at start-up, never silently dropped."""

    def check(server: ServerProcess, _: int) -> None:
        assert wait_log(server, f"{flag} ignored: ")
        assert request(server.http_port, "GET", "/version")[0] == 200

    return check


CASES: dict[str, tuple[tuple[str, ...], Callable[[ServerProcess, int], None]]] = {
    "access-log": (("--access-log",), _access_log),
    "log-format": (("--log-format", "json"), _json_logs),
    "log-level": (("--log-level", "warning"), _quiet_logs),
    "metrics-port": ((), _metrics),
    "allow-path": (("--allow-path", "/only/*"), _allow_path),
    "https-port": (("--https-port", "0"), _said_ignored("--https-port")),
    "metrics-host": (("--metrics-host", "::1"), _said_ignored("--metrics-host")),
}


@pytest.mark.parametrize("name", list(CASES))
def test_flag_alone(tmp_path: Path, name: str) -> None:
    args, check = CASES[name]
    with server_with(*args, tmp=tmp_path, metrics_port=name == "metrics-port") as (server, mport):
        check(server, mport)
