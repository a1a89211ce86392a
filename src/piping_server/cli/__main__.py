"""``python -m piping_server.cli``: the ``piping`` command."""

from __future__ import annotations

from . import main

main()
