"""The transfer path compiled by mypyc at install (setup.py, piping_server/_compiled.py).

The suite runs whatever the install built: compiled where a C compiler was found (scripts/test installs
one), so these tests pin that it was, that ``PIPING_PURE=1`` and a stale build run the sources, all
together, and that the sources still relay.
"""

from __future__ import annotations

import importlib.machinery
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import pytest

import piping_server
from piping_server._compiled import COMPILED_MODULES, SHARED_LIBRARY

from .helpers import start_server, stop_process

SUFFIX = importlib.machinery.EXTENSION_SUFFIXES[0]
PACKAGE = Path(piping_server.__file__).parent
COMPILED_AT_INSTALL = os.environ.get("PIPING_COMPILE") != "0"

_WHERE = "import importlib, sys\nfor name in sys.argv[1:]:\n    print(importlib.import_module(name).__file__)\n"


def _files(env: dict[str, str], *, cwd: Path | None = None) -> tuple[list[str], str]:
    """Where each compiled module is imported from, in a fresh interpreter; and its stderr."""
    done = subprocess.run(
        [sys.executable, "-c", _WHERE, *COMPILED_MODULES],
        env={**os.environ, **env},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return done.stdout.split(), done.stderr


@pytest.mark.skipif(not COMPILED_AT_INSTALL, reason="installed with PIPING_COMPILE=0")
def test_the_install_runs_every_compiled_module_compiled() -> None:
    files, stderr = _files({})
    assert len(files) == len(COMPILED_MODULES)
    assert all(path.endswith(SUFFIX) for path in files), files
    assert stderr == ""


def test_pure_runs_every_one_from_source() -> None:
    files, stderr = _files({"PIPING_PURE": "1"})
    assert all(path.endswith(".py") for path in files), files
    assert stderr == ""


@pytest.mark.skipif(not COMPILED_AT_INSTALL, reason="installed with PIPING_COMPILE=0")
def _copy_with_one_source_newer(src: Path) -> None:
    """A copy of the installed package and its shared library into ``src``, one source newer than its build."""
    shutil.copytree(PACKAGE, src / "piping_server", ignore=shutil.ignore_patterns("__pycache__"))
    (library,) = PACKAGE.parent.glob(SHARED_LIBRARY + "*")
    shutil.copy2(library, src / library.name)
    edited = src / "piping_server" / "core" / "_paths.py"
    built = edited.with_name("_paths" + SUFFIX)
    os.utime(edited, (built.stat().st_mtime + 10, built.stat().st_mtime + 10))


def test_a_stale_build_runs_every_one_from_source_and_says_why(tmp_path: Path) -> None:
    # an editable install's checkout: setup.py beside src/
    (tmp_path / "setup.py").write_text("")
    _copy_with_one_source_newer(tmp_path / "src")
    files, stderr = _files({"PYTHONPATH": str(tmp_path / "src")}, cwd=tmp_path)
    assert all(path.startswith(str(tmp_path)) and path.endswith(".py") for path in files), files
    assert stderr.strip() == (
        "piping_server: running the sources, not the compiled modules: "
        "_paths.py is newer than its compiled module (pip install -e . rebuilds)"
    )


def test_an_installed_build_runs_compiled_whatever_its_files_dates(tmp_path: Path) -> None:
    """pip writes a wheel's files in its order, a source often after its compiled module: not stale."""
    _copy_with_one_source_newer(tmp_path / "site-packages")
    files, stderr = _files({"PYTHONPATH": str(tmp_path / "site-packages")}, cwd=tmp_path)
    assert all(path.startswith(str(tmp_path)) and path.endswith(SUFFIX) for path in files), files
    assert stderr.strip() == ""


def test_the_sources_relay_a_transfer() -> None:
    server = start_server(env={"PIPING_PURE": "1"})
    try:
        base = server.target().base_url
        body = os.urandom(300_000)
        received: list[httpx.Response] = []
        receiver = threading.Thread(target=lambda: received.append(httpx.get(base + "/pure", timeout=30)))
        receiver.start()
        sent = httpx.post(base + "/pure", content=body, timeout=30)
        receiver.join(30)
        assert sent.status_code == 200
        assert received[0].status_code == 200 and received[0].content == body
    finally:
        stop_process(server.proc)
