"""``--workers``: the counting limits and the failed-login budget hold for the whole server, not per worker.

Each worker enforces its share of N (src/piping_server/ops/_shares.py): with two workers, a limit of 2
allows one in each, so three things held at once are refused wherever they land.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from piping_server.ops._auth import hash_password
from piping_server.ops._config import AuthConfig, BasicAuthConfig, Config, LimitsConfig
from piping_server.ops._shares import share_config, share_of

from ..helpers import wait_until
from ..ops.util import Sender, basic, request, server_with, wait_log
from .test_workers import owned_by

pytestmark = pytest.mark.ours

FULL = b"[ERROR] Too many connections to this server; try again later.\n"
WAITING_FULL = b"[ERROR] Too many senders and receivers are waiting; try again later.\n"


def _waiting_sender(port: int, path: str) -> Sender:
    sender = Sender(port, path)
    sender.send(b"waiting")
    assert b"[INFO] Waiting for 1 receiver(s)..." in sender.read_until(b"receiver(s)...", timeout=10)
    return sender


def test_shares_add_up_to_the_limit() -> None:
    assert [share_of(5, i, 2) for i in range(2)] == [3, 2]
    assert [share_of(7, i, 3) for i in range(3)] == [3, 2, 2]
    assert [share_of(1, i, 2) for i in range(2)] == [1, 1]  # never 0: a worker would refuse everything
    config = Config(
        limits=LimitsConfig(max_connections=10, max_waiting_per_client=3, max_n=4),
        auth=AuthConfig(basic=BasicAuthConfig(max_failures=10, failure_refill=2.0)),
    )
    second = share_config(config, 1, 3)
    assert (second.limits.max_connections, second.limits.max_waiting_per_client) == (3, 1)
    assert second.limits.max_n == 4  # a per-request bound is not shared
    assert (second.auth.basic.max_failures, second.auth.basic.failure_refill) == (3, 6.0)
    assert share_config(config, 0, 1) is config


def test_max_connections_is_server_wide(tmp_path: Path) -> None:
    with server_with("--workers", "2", "--max-connections", "2", tmp=tmp_path) as (server, _):
        port = server.http_port
        # one busy connection in each worker (a waiting sender on a path it owns)
        senders = [_waiting_sender(port, owned_by(index, 2)) for index in range(2)]
        try:
            for _ in range(4):  # whichever worker accepts it, the third connection finds its share taken
                status, _, body = request(port, "GET", "/version", timeout=10)
                assert (status, body) == (503, FULL)
        finally:
            for sender in senders:
                sender.close()
        assert wait_until(lambda: request(port, "GET", "/version", timeout=10)[0] == 200, timeout=10)


def test_max_waiting_is_server_wide(tmp_path: Path) -> None:
    with server_with("--workers", "2", "--max-waiting", "2", tmp=tmp_path) as (server, _):
        port = server.http_port
        senders = [_waiting_sender(port, owned_by(index, 2)) for index in range(2)]
        try:
            status, _, body = request(port, "POST", owned_by(0, 2), body=b"third", timeout=10)
            assert (status, body) == (503, WAITING_FULL)
        finally:
            for sender in senders:
                sender.close()


def test_failed_login_budget_is_server_wide(tmp_path: Path) -> None:
    config = (
        f"[auth.basic]\nmax_failures = 2\nfailure_refill = 60\n\n"
        f"[[auth.basic.users]]\nname = 'alice'\npassword_hash = '{hash_password('s3cret')}'\n"
    )
    with server_with("--workers", "2", config=config, tmp=tmp_path) as (server, _):
        port = server.http_port
        bad = {"Authorization": basic("alice", "guess")}
        # the guesses all reach worker 0 (the owner of their paths): it has 1 of the 2 failures
        statuses = [request(port, "GET", owned_by(0, 2), headers=bad, timeout=10)[0] for _ in range(3)]
        assert statuses == [401, 429, 429]
        # worker 1's share is its own: one more failure there, then 429 too (2 server-wide, as configured)
        statuses = [request(port, "GET", owned_by(1, 2), headers=bad, timeout=10)[0] for _ in range(2)]
        assert statuses == [401, 429]


def test_a_limit_below_the_workers_is_said_at_start(tmp_path: Path) -> None:
    with server_with("--workers", "2", "--max-connections", "1", tmp=tmp_path) as (server, _):
        assert wait_log(server, "max_connections below the number of workers (2): each worker allows at least 1")
