"""What a Python user does with the package: ``python -m build``, ``twine check``, install the wheel
where there is no npm, ``pipx install .``; the page's bundles come along every time."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from ..helpers import WAIT_S, free_port, stop_process, wait_for_port
from .page_bundles import assert_serves_page_bundles

pytestmark = [pytest.mark.ours, pytest.mark.build]

ROOT = Path(__file__).resolve().parents[2]
#: building or installing from PyPI on a loaded 2-core machine (seconds)
STEP_TIMEOUT_S = 600
VENDOR = "piping_server/pages/static/vendor/"


def no_npm_env(**extra: str) -> dict[str, str]:
    """The environment with npm off PATH (only the system's folders) and the frontend build refused."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "PYTHON"))}
    env["PATH"] = "/usr/sbin:/usr/bin:/sbin:/bin"
    env["PIPING_SKIP_FRONTEND"] = "1"
    return {**env, **extra}


@pytest.fixture(scope="module")
def dists(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(sdist, wheel) as ``python -m build`` makes them: the wheel is built from the sdist."""
    out = tmp_path_factory.mktemp("dist")
    result = subprocess.run(
        [sys.executable, "-m", "build", "--outdir", str(out), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=STEP_TIMEOUT_S,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    (sdist,) = out.glob("*.tar.gz")
    (wheel,) = out.glob("*.whl")
    return sdist, wheel


def test_twine_check_passes(dists: tuple[Path, Path]) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "twine", "check", "--strict", *map(str, dists)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_distributions_carry_license_and_bundles(dists: tuple[Path, Path]) -> None:
    sdist, wheel = dists
    with tarfile.open(sdist) as archive:
        in_sdist = {name.split("/", 1)[1] for name in archive.getnames() if "/" in name}
    assert {"LICENSE", "CHANGELOG.md", "README.md", "frontend/package-lock.json"} <= in_sdist
    assert not any("node_modules" in name for name in in_sdist)
    assert {"src/" + VENDOR + "openpgp.js", "src/" + VENDOR + "ssh.js"} <= in_sdist  # a build from it needs no npm
    with zipfile.ZipFile(wheel) as archive:
        in_wheel = set(archive.namelist())
    assert {VENDOR + "novnc.js", VENDOR + "openpgp.js", VENDOR + "ssh.js"} <= in_wheel
    assert any(name.endswith(".dist-info/licenses/LICENSE") for name in in_wheel), sorted(in_wheel)[-10:]


def serve_from(bin_dir: Path) -> Iterator[str]:
    port = free_port()
    server = subprocess.Popen(
        [str(bin_dir / "piping-server"), "--host", "127.0.0.1", "--http-port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=no_npm_env(),
    )
    try:
        wait_for_port(port, server, timeout=WAIT_S * 2)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop_process(server)


def test_wheel_installs_without_npm_and_serves_the_bundles(dists: tuple[Path, Path], tmp_path: Path) -> None:
    _, wheel = dists
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=STEP_TIMEOUT_S)
    result = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", str(wheel)],
        capture_output=True,
        text=True,
        env=no_npm_env(),
        timeout=STEP_TIMEOUT_S,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    # a wheel built with a compiler runs its compiled transfer path once installed (not its sources)
    compiled = any(name.endswith(".so") for name in zipfile.ZipFile(wheel).namelist())
    probe = "from piping_server._compiled import why_sources; print(why_sources())"
    used = subprocess.run([str(venv / "bin" / "python"), "-c", probe], capture_output=True, text=True, timeout=60)
    assert used.stdout.strip() == ("None" if compiled else "not compiled at install"), used.stdout + used.stderr
    for base in serve_from(venv / "bin"):
        assert_serves_page_bundles(base)


def test_pipx_install(tmp_path: Path) -> None:
    """The README's ``pipx install .``, into a pipx home of its own."""
    pipx = shutil.which("pipx")
    if pipx is None:
        pytest.skip("pipx is not installed (Debian: apt-get install pipx; ./scripts/test installs it)")
    env = {
        **os.environ,
        "PIPX_HOME": str(tmp_path / "pipx"),
        "PIPX_BIN_DIR": str(tmp_path / "bin"),
        "PIPX_MAN_DIR": str(tmp_path / "man"),
    }
    env.pop("VIRTUAL_ENV", None)
    result = subprocess.run(
        [pipx, "install", "."], cwd=ROOT, capture_output=True, text=True, env=env, timeout=STEP_TIMEOUT_S
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    for name in ("piping-server", "piping"):
        version = subprocess.run(
            [str(tmp_path / "bin" / name), "--version"], capture_output=True, text=True, timeout=60
        )
        assert version.returncode == 0 and "0." in version.stdout, version.stderr
        assert "running the sources" not in version.stderr  # the compiled modules, if built, are used
    for base in serve_from(tmp_path / "bin"):
        assert_serves_page_bundles(base)
