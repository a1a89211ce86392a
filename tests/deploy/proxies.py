"""Real nginx and HAProxy on 127.0.0.1, configured from the files in deploy/ as shipped.

Each file is read as it is and only its example values are swapped by plain string substitution
(ports, certificate paths, the list of instances, where logs and pid files go). Every example
value must be found exactly once, so a change to a deploy file that the tests would no longer
cover fails loudly instead of being skipped silently.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from ..helpers import WAIT_S, free_port, stop_process, wait_for_port

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
#: Debian puts both in /usr/sbin, which is not always on a user's PATH.
SEARCH_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/usr/local/sbin"])
NGINX = shutil.which("nginx", path=SEARCH_PATH)
HAPROXY = shutil.which("haproxy", path=SEARCH_PATH)
#: The instances the shipped files list, as they list them.
EXAMPLE_PORTS = (8081, 8082, 8083)


def substitute(text: str, swaps: list[tuple[str, str]]) -> str:
    for old, new in swaps:
        count = text.count(old)
        assert count == 1, f"the deploy file should hold {old!r} exactly once, found {count}"
        text = text.replace(old, new)
    return text


@dataclass
class Proxy:
    """A running proxy: its TLS port and process."""

    name: str
    port: int
    proc: subprocess.Popen[bytes]
    log_path: Path

    def url(self, path: str) -> str:
        return f"https://127.0.0.1:{self.port}{path}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        stop_process(self.proc)


def nginx_config(tmp: Path, port: int, upstreams: list[int], cert: str, key: str) -> str:
    text = (DEPLOY / "nginx.conf").read_text()
    servers = "".join(f"        server 127.0.0.1:{p} max_fails=0;\n" for p in EXAMPLE_PORTS)
    return substitute(text, [
        ("worker_processes auto;", "worker_processes 1;"),  # a 2-core test machine
        ("/var/log/nginx/piping-error.log", str(tmp / "error.log")),
        ("/run/nginx-piping.pid", str(tmp / "nginx.pid")),
        ("/var/log/nginx/piping-access.log", str(tmp / "access.log")),
        ("/var/lib/nginx/body", str(tmp / "body")),
        (servers, "".join(f"        server 127.0.0.1:{p} max_fails=0;\n" for p in upstreams)),
        ("listen 443 ssl http2;", f"listen 127.0.0.1:{port} ssl http2;"),
        ("/etc/ssl/piping/fullchain.pem", cert),
        ("/etc/ssl/piping/privkey.pem", key),
    ])


def haproxy_config(tmp: Path, port: int, upstreams: list[int], cert: str, key: str) -> str:
    text = (DEPLOY / "haproxy.cfg").read_text()
    pem = tmp / "haproxy.pem"  # HAProxy wants the chain and the key in one file
    pem.write_text(Path(cert).read_text() + Path(key).read_text())
    servers = "".join(f"    server piping{i} 127.0.0.1:{p}\n" for i, p in enumerate(EXAMPLE_PORTS, 1))
    return substitute(text, [
        (servers, "".join(f"    server piping{i} 127.0.0.1:{p}\n" for i, p in enumerate(upstreams, 1))),
        ("bind :443 ssl crt /etc/haproxy/certs/piping.pem", f"bind 127.0.0.1:{port} ssl crt {pem}"),
    ])


def start_proxy(name: str, tmp: Path, upstreams: list[int], tls: tuple[str, str, str]) -> Proxy:
    """Start nginx or HAProxy in the foreground on a free port, in front of ``upstreams``."""
    tmp.mkdir(parents=True, exist_ok=True)
    port = free_port()
    log_path = tmp / f"{name}.out"
    if name == "nginx":
        assert NGINX is not None
        config = tmp / "nginx.conf"
        config.write_text(nginx_config(tmp, port, upstreams, tls[0], tls[1]))
        args = [NGINX, "-p", str(tmp), "-c", str(config), "-g", "daemon off;"]
    else:
        assert HAPROXY is not None
        config = tmp / "haproxy.cfg"
        config.write_text(haproxy_config(tmp, port, upstreams, tls[0], tls[1]))
        args = [HAPROXY, "-db", "-f", str(config)]
    with log_path.open("wb") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, cwd=tmp)
    try:
        wait_for_port(port, proc, timeout=WAIT_S)
    except Exception:
        proc.kill()
        proc.wait(timeout=10)
        error = (tmp / "error.log").read_text() if (tmp / "error.log").exists() else ""
        raise RuntimeError(f"{name} did not start: {log_path.read_text(errors='replace')}{error}") from None
    return Proxy(name=name, port=port, proc=proc, log_path=log_path)
