"""``python -m piping_server``: the server's command line."""

from __future__ import annotations

from .server import main

if __name__ == "__main__":
    main()
