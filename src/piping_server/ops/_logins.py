"""Basic-auth logins: password hashes checked off the event loop, and a budget of failures per client.

A password hash costs tens of milliseconds of CPU (that is its point). Checked on the event loop,
a few wrong passwords a second would stall every transfer of the server. So hashes are checked in
a small thread pool (hashlib releases the GIL while it derives a key), with a bounded number
waiting (past it: 503, try again), and every client address has a token bucket of failures: once
it is empty, that client's attempts get 429 without any hashing until the bucket refills. The
Gate's cache of verified credentials is asked first, so a user who logged in before keeps working
even behind the same address as someone guessing.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from ._auth import _Hash

#: Threads that check password hashes (the machine's cores are shared with the transfers).
WORKERS = 2
#: Hash checks running or queued at once; past it a login is answered 503 with Retry-After.
MAX_PENDING = 32
#: Failed logins a client may make at once, and how many more it earns per second after that.
FAILURE_BURST = 10
FAILURE_REFILL_PER_S = 0.5
#: Client addresses whose failures are remembered (the least recent are forgotten first).
MAX_CLIENTS = 10_000

T = TypeVar("T")
U = TypeVar("U")


def then(source: asyncio.Future[T], step: Callable[[T], U]) -> asyncio.Future[U]:
    """A future of ``step(result)`` once ``source`` is done (its cancellation or error passed on)."""
    target: asyncio.Future[U] = source.get_loop().create_future()

    def done(future: asyncio.Future[T]) -> None:
        if target.done():
            return
        if future.cancelled():
            target.cancel()
            return
        error = future.exception()
        if error is not None:
            target.set_exception(error)
            return
        try:
            target.set_result(step(future.result()))
        except Exception as exc:  # noqa: BLE001 (handed to whoever awaits the target)
            target.set_exception(exc)

    source.add_done_callback(done)
    return target


class LoginGuard:
    """The hashing pool and the failure buckets of one server process (kept across config reloads)."""

    def __init__(
        self,
        *,
        burst: int = FAILURE_BURST,
        refill_per_s: float = FAILURE_REFILL_PER_S,
        workers: int = WORKERS,
        max_pending: int = MAX_PENDING,
    ) -> None:
        self.burst = burst
        self.refill_per_s = refill_per_s
        self.workers = workers
        self.max_pending = max_pending
        self.pending = 0
        self._executor: ThreadPoolExecutor | None = None
        #: client -> (failures it may still make, when that was counted)
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()
        #: told of every refused login: "bad_credentials", "rate_limited" or "busy" (the metrics)
        self.on_failure: Callable[[str], None] | None = None

    # --- the failure budget --------------------------------------------------------------------------

    def _tokens(self, client: str, now: float) -> float:
        entry = self._buckets.get(client)
        if entry is None:
            return float(self.burst)
        tokens, stamp = entry
        return min(float(self.burst), tokens + (now - stamp) * self.refill_per_s)

    def retry_after(self, client: str) -> int | None:
        """Whole seconds until ``client`` may try a password again; None when it may now."""
        tokens = self._tokens(client, time.monotonic())
        if tokens >= 1:
            return None
        return max(1, math.ceil((1 - tokens) / self.refill_per_s))

    def failed(self, client: str, reason: str = "bad_credentials") -> None:
        """Count a refused login (a failure spends one token of the client's bucket)."""
        if reason == "bad_credentials":
            now = time.monotonic()
            self._buckets[client] = (max(0.0, self._tokens(client, now) - 1), now)
            self._buckets.move_to_end(client)
            while len(self._buckets) > MAX_CLIENTS:
                self._buckets.popitem(last=False)
        if self.on_failure is not None:
            self.on_failure(reason)

    # --- hashing off the loop -----------------------------------------------------------------------

    def verify(self, password: str, stored: _Hash) -> asyncio.Future[bool] | None:
        """Check ``password`` in the pool; None when too many checks are waiting already."""
        if self.pending >= self.max_pending:
            return None
        from ._auth import verify_password

        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="piping-auth")
        future = asyncio.get_running_loop().run_in_executor(self._executor, verify_password, password, stored)
        self.pending += 1
        future.add_done_callback(self._one_done)
        return future

    def _one_done(self, _: asyncio.Future[bool]) -> None:
        self.pending -= 1

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None
