"""Real nginx and HAProxy on 127.0.0.1, configured from the files in deploy/ as shipped.

Each file runs as printed for the trial it documents (its certificate beside it, everything else
relative to the folder it runs in); only the ports and the list of instances are swapped, by plain
string substitution, so that tests run side by side on free ports. Every swapped value must be
found exactly once, so a change to a deploy file that the tests would no longer cover fails loudly
instead of being skipped silently.
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


def substitute(text: str, swaps: list[tuple[str, str]], *, times: dict[str, int] | None = None) -> str:
    for old, new in swaps:
        count = text.count(old)
        expected = (times or {}).get(old, 1)
        assert count == expected, f"the deploy file should hold {old!r} {expected} time(s), found {count}"
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


def nginx_config(port: int, upstreams: list[int], changes: list[tuple[str, str]] | None = None) -> str:
    """The shipped nginx.conf on ``port`` in front of ``upstreams``; ``changes``: a test's own edits of it."""
    text = (DEPLOY / "nginx.conf").read_text()
    servers = "".join(f"        server 127.0.0.1:{p} max_fails=0;\n" for p in EXAMPLE_PORTS)
    return substitute(
        text,
        [
            ("worker_processes auto;", "worker_processes 1;"),  # a 2-core test machine
            (servers, "".join(f"        server 127.0.0.1:{p} max_fails=0;\n" for p in upstreams)),
            ("listen 127.0.0.1:8443 ssl http2;", f"listen 127.0.0.1:{port} ssl http2;"),
            *(changes or []),
        ],
        times={servers: 2},
    )  # upstream piping and upstream piping_head


def haproxy_config(port: int, upstreams: list[int]) -> str:
    text = (DEPLOY / "haproxy.cfg").read_text()
    servers = "".join(f"    server piping{i} 127.0.0.1:{p}\n" for i, p in enumerate(EXAMPLE_PORTS, 1))
    return substitute(
        text,
        [
            (servers, "".join(f"    server piping{i} 127.0.0.1:{p}\n" for i, p in enumerate(upstreams, 1))),
            ("bind 127.0.0.1:8443 ssl", f"bind 127.0.0.1:{port} ssl"),
        ],
    )


def place_certificate(folder: Path, cert: str, key: str) -> None:
    """The certificate where the trial puts it: fullchain.pem and privkey.pem, and both in piping.pem (HAProxy)."""
    (folder / "fullchain.pem").write_text(Path(cert).read_text())
    (folder / "privkey.pem").write_text(Path(key).read_text())
    (folder / "piping.pem").write_text(Path(cert).read_text() + Path(key).read_text())


def start_proxy(
    name: str, tmp: Path, upstreams: list[int], tls: tuple[str, str, str], changes: list[tuple[str, str]] | None = None
) -> Proxy:
    """Start nginx or HAProxy in the foreground on a free port, in front of ``upstreams`` (``changes``: nginx only)."""
    tmp.mkdir(parents=True, exist_ok=True)
    port = free_port()
    log_path = tmp / f"{name}.out"
    place_certificate(tmp, tls[0], tls[1])
    if name == "nginx":  # the trial's command lines (see the file's head), on a folder of the test's
        assert NGINX is not None
        config = tmp / "nginx.conf"
        config.write_text(nginx_config(port, upstreams, changes))
        args = [NGINX, "-p", str(tmp), "-e", "stderr", "-c", str(config), "-g", "daemon off;"]
    else:
        assert HAPROXY is not None
        config = tmp / "haproxy.cfg"
        config.write_text(haproxy_config(port, upstreams))
        args = [HAPROXY, "-db", "-f", config.name]
    with log_path.open("wb") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, cwd=tmp)
    try:
        wait_for_port(port, proc, timeout=WAIT_S)
    except Exception:
        proc.kill()
        proc.wait(timeout=10)
        raise RuntimeError(f"{name} did not start: {log_path.read_text(errors='replace')}") from None
    return Proxy(name=name, port=port, proc=proc, log_path=log_path)
