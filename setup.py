"""Packaging hook: bundle the browser libraries of the ``/`` page before the package is built.

Everything else is in pyproject.toml. ``/`` needs noVNC and OpenPGP.js from npm (see
docs/browser-apps.md); they are bundled by ``frontend/`` into
``src/piping_server/pages/static/vendor/``, which is not committed. Any build of the package, an
editable install (``pip install -e .``) included, runs ``npm ci && npm run build`` in ``frontend/``
when those files are missing or older than their sources, and fails with a clear message when npm
is not there. ``PIPING_SKIP_FRONTEND=1`` skips the step (the page then says its VNC and encryption
are unavailable).

It also compiles the transfer path with mypyc (the modules in ``src/piping_server/_compiled.py``)
where a C compiler and Python's headers are there: a small transfer costs about half the CPU.
Without them, or with ``PIPING_COMPILE=0``, the package is plain Python, and works the same.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
FRONTEND = ROOT / "frontend"
VENDOR = ROOT / "src" / "piping_server" / "pages" / "static" / "vendor"
BUNDLES = ("novnc.js", "openpgp.js", "ssh.js")


def _newest_source_mtime() -> float:
    sources = [FRONTEND / "package.json", FRONTEND / "package-lock.json", FRONTEND / "build.mjs"]
    sources += sorted((FRONTEND / "src").glob("*.js"))
    return max(p.stat().st_mtime for p in sources if p.exists())


def _vendor_is_fresh() -> bool:
    outputs = [VENDOR / name for name in BUNDLES]
    if not all(p.exists() for p in outputs):
        return False
    if not FRONTEND.is_dir():  # a wheel build from an sdist that shipped the bundles
        return True
    return min(p.stat().st_mtime for p in outputs) >= _newest_source_mtime()


def build_frontend() -> None:
    """Run ``npm ci && npm run build`` in frontend/ unless the bundles are there and up to date."""
    if os.environ.get("PIPING_SKIP_FRONTEND") == "1" or _vendor_is_fresh():
        return
    if not FRONTEND.is_dir():
        raise SystemExit(f"error: {VENDOR} is missing and there is no frontend/ folder to build it from")
    npm = shutil.which("npm")
    if npm is None:
        raise SystemExit(
            "error: building piping-server needs npm (Node.js 18 or later) to bundle the web page's "
            "libraries (noVNC, OpenPGP.js) from frontend/. Install Node.js and npm "
            "(e.g. apt-get install -y nodejs npm), or set PIPING_SKIP_FRONTEND=1 to build without them."
        )
    for args in (["ci", "--no-audit", "--no-fund"], ["run", "build"]):
        print(f"frontend: npm {' '.join(args)}", flush=True)
        result = subprocess.run([npm, *args], cwd=FRONTEND, check=False)
        if result.returncode != 0:
            raise SystemExit(f"error: 'npm {' '.join(args)}' failed in {FRONTEND} (exit {result.returncode})")
    missing = [name for name in BUNDLES if not (VENDOR / name).exists()]
    if missing:
        raise SystemExit(f"error: the frontend build did not write {', '.join(missing)} into {VENDOR}")


class BuildPyWithFrontend(build_py):
    """``build_py`` that bundles the frontend first (also run by editable installs)."""

    def run(self) -> None:
        build_frontend()
        super().run()


def _compiler() -> str | None:
    """Why the transfer path cannot be compiled here (None: it can)."""
    if os.environ.get("PIPING_COMPILE") == "0":
        return "PIPING_COMPILE=0"
    try:
        import mypyc.build  # noqa: F401  (in mypy, a build requirement in pyproject.toml)
    except ImportError:
        return "mypyc is not installed"
    compiler = (sysconfig.get_config_var("CC") or "cc").split()[0]
    if shutil.which(compiler) is None:
        return f"no C compiler ({compiler})"
    if not (Path(sysconfig.get_paths()["include"]) / "Python.h").exists():
        return "no Python.h (Debian: python3-dev)"
    return None


def compiled_extensions() -> list[Extension]:
    """The transfer path compiled by mypyc, or nothing (plain Python) where it cannot be."""
    reason = _compiler()
    if reason is not None:
        print(f"piping-server: not compiling the transfer path ({reason}): plain Python", flush=True)
        return []
    from mypyc.build import mypycify

    sys.path.insert(0, str(ROOT / "src"))
    from piping_server._compiled import COMPILED_MODULES

    files = [str(Path("src", *name.split(".")).with_suffix(".py")) for name in COMPILED_MODULES]
    # mypy's checks are the project's own business (scripts/test runs them strictly): here only the
    # types matter, and the runtime dependencies need not be in the build environment.
    options = ["--config-file=", "--ignore-missing-imports", "--python-version=3.11"]
    try:
        return mypycify([*options, *files], opt_level="3", group_name="piping_server")
    except SystemExit as exc:  # mypyc refused a module (it prints why): the package still works uncompiled
        print(f"piping-server: mypyc failed ({exc}): not compiling the transfer path: plain Python", flush=True)
        return []


# The bundles' folder must exist before setup() discovers the packages (pyproject.toml's find, with
# namespaces): created only later by build_py, it would be missed, and setuptools warns (~40 lines)
# that package data lies in a folder absent from `packages`.
VENDOR.mkdir(parents=True, exist_ok=True)
setup(cmdclass={"build_py": BuildPyWithFrontend}, ext_modules=compiled_extensions())
