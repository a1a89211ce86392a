"""The server process: its command line (``piping-server``), listeners, TLS, and assembly.

The protocol lives in ``core`` (rendezvous), ``flow`` (bytes) and ``http1``/``http2`` (wire);
the operator's features (auth, limits, metrics, logs, config) live in ``ops``. This package puts
them together into a running process.
"""

from __future__ import annotations

from ._cli import main

__all__ = ["main"]
