"""The container image's HEALTHCHECK: exit 0 when the server answers /version on its HTTP port.

The image has no curl. The port is the one the server was started with: `--http-port N` (or
`--http-port=N`) on PID 1's command line (the server, see the Containerfile), else the
PIPING_SERVER_HTTP_PORT or PORT variable, else 8080.
"""

import os
import sys
import urllib.request


def http_port() -> str:
    try:
        with open("/proc/1/cmdline", "rb") as f:
            argv = f.read().decode(errors="replace").split("\0")
    except OSError:
        argv = []
    for i, arg in enumerate(argv):
        if arg == "--http-port" and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--http-port="):
            return arg.partition("=")[2]
    return os.environ.get("PIPING_SERVER_HTTP_PORT") or os.environ.get("PORT") or "8080"


try:
    with urllib.request.urlopen(f"http://127.0.0.1:{http_port()}/version", timeout=4) as response:
        response.read()
except OSError as exc:
    sys.exit(f"unhealthy: {exc}")
