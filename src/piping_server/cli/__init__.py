"""The ``piping`` command line: send, get, tunnel. See ``piping --help`` and ``docs/client.md``."""

from __future__ import annotations

from ._app import cli, main

__all__ = ["cli", "main"]
