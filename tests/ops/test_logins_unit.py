"""The login guard without a server: the failure budget per client, and the Gate's answers with a guard."""

from __future__ import annotations

import asyncio
from pathlib import Path

from piping_server.ops._auth import Gate, hash_password
from piping_server.ops._config import load_config
from piping_server.ops._logins import LoginGuard
from piping_server.relay._hooks import Refusal, RequestView

from .util import basic


def view(auth: str, client: str = "192.0.2.1") -> RequestView:
    return RequestView(
        method="GET",
        path="/x",
        query="",
        headers=[(b"authorization", auth.encode())],
        client=client,
        transport="h1",
        is_tls=False,
    )


def test_the_failure_budget_is_per_client() -> None:
    guard = LoginGuard(burst=2, refill_per_s=1e-6)  # nothing regained within the test
    seen: list[str] = []
    guard.on_failure = seen.append
    assert guard.retry_after("a") is None
    guard.failed("a")
    guard.failed("a")
    wait = guard.retry_after("a")
    assert wait is not None and wait >= 1
    assert guard.retry_after("b") is None  # another address has its own budget
    guard.failed("a", "rate_limited")  # refusals past the budget spend nothing more
    assert seen == ["bad_credentials", "bad_credentials", "rate_limited"]


def test_a_gate_with_a_guard_checks_hashes_off_the_loop(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text(f"[[auth.basic.users]]\nname = 'ann'\npassword_hash = '{hash_password('pw')}'\n")
    guard = LoginGuard(burst=1, refill_per_s=1e-6)
    gate = Gate(load_config(path, environ={}), guard=guard)

    async def scenario() -> list[object]:
        answers: list[object] = []
        for auth in (basic("ann", "pw"), basic("ann", "pw"), basic("ann", "wrong"), basic("ann", "again")):
            answer = gate.check(view(auth))
            answers.append(await answer if isinstance(answer, asyncio.Future) else answer)
            answers.append(isinstance(answer, asyncio.Future))
        guard.close()
        return answers

    good, deferred, cached, cached_deferred, wrong, wrong_deferred, limited, limited_deferred = asyncio.run(scenario())
    assert good is None and deferred  # the first check of a hash is a future
    assert cached is None and not cached_deferred  # then remembered: answered at once
    assert isinstance(wrong, Refusal) and wrong.status == 401 and wrong_deferred
    assert isinstance(limited, Refusal) and limited.status == 429 and not limited_deferred  # no hashing at all
    assert int(dict(limited.headers)[b"retry-after"]) >= 1
