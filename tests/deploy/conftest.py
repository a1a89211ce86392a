"""Markers of the deploy tests."""

from __future__ import annotations

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "build: builds the container image, the executables or the distributions (a minute or more on a "
        "first run; deselect with -m 'not build')",
    )
