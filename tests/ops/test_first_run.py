"""What a newcomer meets first: the scripts parse, the package builds quietly, the reference run says why it skips."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from ..helpers import start_server

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("script", ["_env.sh", "serve", "test"])
def test_scripts_parse(script: str) -> None:
    result = subprocess.run(["bash", "-n", str(ROOT / "scripts" / script)], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr


def test_reference_run_counts_its_skip_reasons(tmp_path: Path) -> None:
    """The conformance run against another server ends with the count of each skip reason."""
    server = start_server(log_dir=tmp_path)
    try:
        env = {**os.environ, "PIPING_TEST_BASE_URL": server.target().base_url}
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "pytest",
                "-q",
                "-p",
                "no:cacheprovider",
                "tests/e2e/test_pages_and_errors.py",
                "-k",
                "test_version",
            ],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        server.stop()
    assert result.returncode == 0, result.stdout[-2000:]
    summary = result.stdout.partition("skipped on the external server, by reason")[2]
    # four of the five transports are skipped there, for one reason said once with its count
    assert "     4  external servers are tested over HTTP/1.1 only" in summary.splitlines(), result.stdout[-2000:]


@pytest.mark.skipif(shutil.which("npm") is None or not (ROOT / ".git").exists(), reason="needs npm and a git checkout")
def test_the_package_builds_without_warnings(tmp_path: Path) -> None:
    """A fresh clone (no bundles yet) builds a wheel with the page's bundles and without setuptools' warnings."""
    # the working tree as a clone would have it (tracked and new files; nothing git ignores, so no bundles)
    git_ls = ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"]
    listed = subprocess.run(git_ls, cwd=ROOT, capture_output=True, timeout=30, check=True).stdout
    tree = tmp_path / "clone"
    for name in filter(None, listed.decode().split("\0")):
        source = ROOT / name
        if source.is_file():
            (tree / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, tree / name)
    assert not (tree / "src/piping_server/pages/static/vendor").exists()
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-v", "-w", str(tmp_path / "dist"), str(tree)],
        capture_output=True,
        text=True,
        timeout=600,
        # (not compiled: mypyc's ~40 s would buy nothing here; tests/deploy's build tests build the compiled wheel)
        env={**os.environ, "PIP_NO_CACHE_DIR": "1", "PIPING_COMPILE": "0"},
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    assert "BuildBackendWarning" not in output and "absent from the `packages`" not in output, output[-3000:]
    wheel = next((tmp_path / "dist").glob("*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert "piping_server/pages/static/vendor/novnc.js" in names
