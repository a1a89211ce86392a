"""The operator's hooks over cleartext HTTP/2 too (curl --http2-prior-knowledge)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from ..helpers import WAIT_S, unique_path
from .util import server_with

pytestmark = pytest.mark.ours


def curl(*args: str) -> str:
    result = subprocess.run(
        ["curl", "-sS", "-i", "--http2-prior-knowledge", *args], capture_output=True, timeout=WAIT_S, check=True
    )
    return result.stdout.decode()


def test_auth_and_wait_timeout_over_h2c(tmp_path: Path) -> None:
    env = {"PIPING_BASIC_AUTH_ANN": "pw"}
    with server_with("--wait-timeout", "0.5", tmp=tmp_path, env=env) as (server, _):
        base = f"http://127.0.0.1:{server.http_port}"
        refused = curl(base + unique_path())
        assert refused.startswith("HTTP/2 401") and "www-authenticate: Basic" in refused
        expired = curl("-u", "ann:pw", base + unique_path())
        assert expired.startswith("HTTP/2 504")
        assert expired.endswith("[ERROR] Timed out: the transfer did not start within 0.5 second(s).\n")
