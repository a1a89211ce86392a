"""The HTTP/2 tests' targets: each runs over h2c (prior knowledge on the HTTP port) and h2 (TLS, ALPN)."""

from __future__ import annotations

import pytest

from ..helpers import ServerProcess, Target


@pytest.fixture(params=["h2c", "h2"])
def h2target(request: pytest.FixtureRequest, server: ServerProcess | None) -> Target:
    if server is None:
        pytest.skip("needs our own server")
    return server.target(request.param)
