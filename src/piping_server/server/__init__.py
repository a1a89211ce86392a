"""The server process: its command line (``piping-server``), listeners, TLS, and assembly.

The protocol lives in ``core`` (rendezvous), ``relay`` (requests and bytes) and ``http1``/``http2`` (wire);
the operator's features (auth, limits, metrics, logs, config) live in ``ops``. This package puts
them together into a running process.
"""

from __future__ import annotations

__all__ = ["main"]


def main() -> None:
    """Entry point of the ``piping-server`` script.

    Imported on call: the transports use a module of this package (``_owner_relay``), and loading the
    command line with the package would import them back while they load.
    """
    from ._cli import main as run

    run()
