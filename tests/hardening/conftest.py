"""Fixtures of the attack tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from ..helpers import ServerProcess, start_server


@pytest.fixture(scope="module")
def h2server(tls_files: tuple[str, str, str]) -> Iterator[ServerProcess]:
    """A server of this module's own, with HTTPS (h2 by ALPN) beside its cleartext port (h2c)."""
    proc = start_server(https=tls_files)
    try:
        yield proc
    finally:
        proc.stop()
