"""Fixtures of the HTTP/1.x tests."""

from __future__ import annotations

import pytest

from ..conftest import EXTERNAL_BASE_URL
from ..helpers import ServerProcess, Target


@pytest.fixture
def h1(server: ServerProcess | None) -> Target:
    """Plain HTTP/1.1 to our server, or to the server PIPING_TEST_BASE_URL names."""
    if server is None:
        assert EXTERNAL_BASE_URL is not None
        return Target(name="external", base_url=EXTERNAL_BASE_URL.rstrip("/"))
    return server.target("h1")
