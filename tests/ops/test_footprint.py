"""What a server's process loads: the optional parts cost nothing until they are used.

PyJWT with ``cryptography``, ``prometheus_client`` and h2 are together some 15 MB of every process's
memory (a third of a server's at start): a server without JWT auth or metrics never imports the first
two, and h2 comes with the first HTTP/2 connection. The real server process reports its imports itself
(``PYTHONPROFILEIMPORTTIME``, Python's ``-X importtime``).
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import jwt
import pytest

from ..helpers import ServerProcess, unique_path
from .util import Receiver, request, server_with

pytestmark = pytest.mark.ours

#: imported only for the features that need them
OPTIONAL = {"jwt", "cryptography", "prometheus_client", "h2"}
SECRET = "footprint-test-secret-of-32-bytes-or-more"
IMPORT_TIMES = {"PYTHONPROFILEIMPORTTIME": "1"}


def imported(server: ServerProcess) -> set[str]:
    """The top-level packages the server's processes imported, from their import-time report."""
    names = set()
    for line in server.log().splitlines():
        if line.startswith("import time:") and "|" in line:
            names.add(line.rsplit("|", 1)[1].strip().split(".")[0])
    return names


def transfer(port: int, headers: dict[str, str] | None = None) -> None:
    path = unique_path("footprint")
    receiver = Receiver(port, path, headers=headers)
    time.sleep(0.2)
    status, _, progress = request(port, "POST", path, headers=headers, body=b"hello\n")
    assert status == 200, progress
    receiver.read_to_close(timeout=5)
    receiver.close()
    assert receiver.body()[0] == b"hello\n"


@pytest.mark.parametrize("workers", ["1", "2"])
def test_an_http1_server_without_auth_or_metrics_loads_none_of_them(tmp_path: Path, workers: str) -> None:
    with server_with("--workers", workers, tmp=tmp_path, env=IMPORT_TIMES) as (server, _):
        transfer(server.http_port)
        assert request(server.http_port, "GET", "/")[0] == 200
        names = imported(server)
    assert {"piping_server", "uvloop", "httptools"} <= names, sorted(names)  # the report is there
    assert not names & OPTIONAL, sorted(names & OPTIONAL)


def test_jwt_auth_metrics_and_h2c_load_their_libraries_when_used(tmp_path: Path) -> None:
    config = "[auth.jwt]\naudience = 'piping'\n"
    env = {**IMPORT_TIMES, "PIPING_JWT_SECRET": SECRET}
    with server_with(config=config, tmp=tmp_path, env=env, metrics_port=True) as (server, metrics_port):
        token = jwt.encode({"aud": "piping", "exp": int(time.time()) + 60}, SECRET, algorithm="HS256")
        transfer(server.http_port, {"Authorization": f"Bearer {token}"})
        status, _, body = request(metrics_port, "GET", "/metrics")
        assert status == 200 and b"piping_transfers" in body
        h2c = ["curl", "-sS", "--http2-prior-knowledge", f"http://127.0.0.1:{server.http_port}/version"]
        assert subprocess.run(h2c, capture_output=True, timeout=10, check=True).stdout.strip()
        names = imported(server)
    assert names >= OPTIONAL, sorted(OPTIONAL - names)
