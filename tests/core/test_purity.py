"""The core must stay free of I/O and HTTP engines (STYLE: sans-IO)."""

from __future__ import annotations

import subprocess
import sys


def test_core_imports_no_io_or_http_engine() -> None:
    code = (
        "import sys, piping_server.core;"
        "bad = [m for m in ('asyncio', 'httptools', 'h2', 'socket', 'ssl', 'uvloop') if m in sys.modules];"
        "print(','.join(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == ""
