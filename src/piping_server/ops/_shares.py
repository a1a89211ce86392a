"""``--workers N``: each worker enforces its share of the server-wide counting limits.

A worker counts only what it holds (its connections, the peers waiting on the paths it owns, the
failed logins it checked); sharing live counts between processes would put a lock or a round trip
on every connection. So a limit of N for the server is split: worker ``i`` of ``count`` enforces
``N // count``, plus one for the first ``N % count`` workers, so that the shares add up to N. A share
is never below 1 (a worker that could take nothing would refuse every client that reaches it), so
for N below the number of workers the server-wide bound is the number of workers (said at start-up).
Per-client limits and the failed-login budget are split the same way; a client whose connections or
requests crowd on one worker may so be refused somewhat before it holds N server-wide.
"""

from __future__ import annotations

import dataclasses

from ._config import Config

#: The counting limits of ``[limits]``: each a number of things held at once, server-wide.
SPLIT_LIMITS = ("max_connections", "max_connections_per_client", "max_waiting", "max_waiting_per_client")


def share_of(total: int, index: int, count: int) -> int:
    """Worker ``index``'s part of ``total`` when ``count`` workers share it (at least 1)."""
    return max(1, total // count + (1 if index < total % count else 0))


def share_config(config: Config, index: int, count: int) -> Config:
    """``config`` as worker ``index`` of ``count`` enforces it."""
    if count <= 1:
        return config
    limits = config.limits
    split = {
        name: share_of(value, index, count) for name in SPLIT_LIMITS if (value := getattr(limits, name)) is not None
    }
    basic = config.auth.basic
    # the budget of failures, and the pace it is regained at, divided alike: the workers together allow the same
    shared_basic = dataclasses.replace(
        basic, max_failures=share_of(basic.max_failures, index, count), failure_refill=basic.failure_refill * count
    )
    return dataclasses.replace(
        config,
        limits=dataclasses.replace(limits, **split),
        auth=dataclasses.replace(config.auth, basic=shared_basic),
    )


def below_workers(config: Config, count: int) -> list[str]:
    """The limits set below the number of workers: the server-wide bound is then ``count``, not the value."""
    limits = config.limits
    low = [name for name in SPLIT_LIMITS if (value := getattr(limits, name)) is not None and value < count]
    if (config.auth.basic_enabled or config.auth.jwt_enabled) and config.auth.basic.max_failures < count:
        low.append("auth.basic.max_failures")
    return low
