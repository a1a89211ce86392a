"""scripts/build-exe: the single-file ``piping-server`` and ``piping`` run on a machine with no Python.

The machine is a Debian minbase tree (mmdebstrap, no python3 in it) entered with ``chroot``: the
server serves the page with its bundled libraries and a transfer, and the client inside the same
tree sends and gets through it, in clear and encrypted.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

from ..helpers import WAIT_S, free_port, stop_process, wait_for_port
from .debian_trees import debian_tarball, require_tools
from .page_bundles import assert_serves_page_bundles

pytestmark = [pytest.mark.ours, pytest.mark.build]

ROOT = Path(__file__).resolve().parents[2]
#: PyInstaller twice on a loaded 2-core machine (about 40 s when idle)
BUILD_TIMEOUT_S = 900
NAMES = ("piping-server", "piping")


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Python-less Debian tree with the two executables in /usr/local/bin."""
    require_tools("mmdebstrap", "chroot", "npm")
    out = tmp_path_factory.mktemp("exe")
    # the virtualenv running the tests has PyInstaller ([test] includes [exe]) and the page bundles
    build_env = {**os.environ, "VENV": str(Path(sys.executable).parents[1])}
    result = subprocess.run(
        [str(ROOT / "scripts" / "build-exe"), str(out)],
        capture_output=True,
        text=True,
        env=build_env,
        timeout=BUILD_TIMEOUT_S,
    )
    assert result.returncode == 0, result.stderr[-4000:]

    root = tmp_path_factory.mktemp("minbase")
    with tarfile.open(debian_tarball(())) as archive:
        archive.extractall(root, filter="fully_trusted")  # a root filesystem: device nodes, setuid files
    assert not list((root / "usr" / "bin").glob("python*")), "the tree is meant to have no Python"
    for name in NAMES:
        shutil.copy2(out / name, root / "usr" / "local" / "bin" / name)
    return root


def descendants(pid: int) -> list[int]:
    """``pid``'s children, their children and so on (from /proc)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue  # ended meanwhile
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found, frontier = [], [pid]
    while frontier:
        children = [child for child, parent in parents.items() if parent in frontier]
        found += children
        frontier = children
    return found


def read_maps(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return ""


def chroot(tree: Path, *argv: str) -> list[str]:
    return ["chroot", str(tree), *argv]


def test_runs_without_python(tree: Path) -> None:
    for name in NAMES:
        started = time.monotonic()
        result = subprocess.run(
            chroot(tree, f"/usr/local/bin/{name}", "--version"), capture_output=True, text=True, timeout=60
        )
        assert result.returncode == 0, result.stderr
        assert "0." in result.stdout
        size_mb = (tree / "usr" / "local" / "bin" / name).stat().st_size / 1e6
        print(f"{name}: {size_mb:.1f} MB, --version in {time.monotonic() - started:.2f} s")


def test_serves_the_page_and_piping_send_get(tree: Path) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    # two workers: forked by the frozen program (each path's requests meet in the worker owning it)
    server = subprocess.Popen(
        chroot(tree, "/usr/local/bin/piping-server", "--host", "127.0.0.1", "--http-port", str(port), "--workers", "2"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        wait_for_port(port, server, timeout=WAIT_S * 2)
        assert_serves_page_bundles(base)
        # the transfer path runs compiled: its shared library is loaded in the frozen program's processes
        # (the bootloader, the supervisor and its workers), as in the wheel and the image
        family = descendants(server.pid)
        compiled = [pid for pid in family if "piping_server__mypyc" in read_maps(pid)]
        assert len(compiled) >= 3, (family, compiled)

        payload = os.urandom(3_000_000)
        (tree / "tmp" / "in.bin").write_bytes(payload)
        for extra in ([], ["--pass", "pä ss"]):  # in clear, then OpenPGP (cryptography's binary parts)
            path = f"{base}/exe-{len(extra)}"
            (tree / "tmp" / "out.bin").unlink(missing_ok=True)
            getter = subprocess.Popen(
                chroot(tree, "/usr/local/bin/piping", "get", "-q", *extra, path, "-o", "/tmp/out.bin"),
                stderr=subprocess.PIPE,
            )
            sent = subprocess.run(
                chroot(tree, "/usr/local/bin/piping", "send", "-q", *extra, path, "/tmp/in.bin"),
                capture_output=True,
                text=True,
                timeout=WAIT_S * 3,
            )
            assert sent.returncode == 0, sent.stderr
            _, err = getter.communicate(timeout=WAIT_S * 3)
            assert getter.returncode == 0, err
            assert (tree / "tmp" / "out.bin").read_bytes() == payload

        # and curl from the host, as any client
        receiver = subprocess.Popen(["curl", "-sS", f"{base}/exe-curl"], stdout=subprocess.PIPE)
        subprocess.run(
            ["curl", "-sS", "-T", "-", f"{base}/exe-curl"],
            input=payload,
            capture_output=True,
            check=True,
            timeout=WAIT_S * 3,
        )
        out, _ = receiver.communicate(timeout=WAIT_S * 3)
        assert out == payload
    finally:
        stop_process(server)
    assert server.returncode == 0, server.stderr.read() if server.stderr else b""
