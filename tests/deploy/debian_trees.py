"""Debian machine trees and base images made here, for the container and executable tests.

No registry of images is reachable from the test machines, so the bases the Containerfile names
(python:3.11-slim-bookworm, node:20-bookworm-slim) are stood in for by trees made with
``mmdebstrap`` from Debian's archive and imported with ``buildah``. Both are cached: the tarball
under ~/.cache/piping-server/debian/ (keyed by suite, mirror and package list) and the image in
buildah's storage (keyed by the tarball and the host's CA bundle), so only the first run pays.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import pytest

SUITE = "bookworm"
MIRROR = os.environ.get("PIPING_DEBIAN_MIRROR", "http://deb.debian.org/debian")
CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "piping-server" / "debian"
#: The machine may reach the registries through a TLS proxy with its own CA: the bases trust what the
#: host trusts, as a public base on an ordinary machine trusts the public CAs.
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
CA_ENV = ("SSL_CERT_FILE", "PIP_CERT", "NODE_EXTRA_CA_CERTS", "REQUESTS_CA_BUNDLE")
#: Bounds of the slow steps (seconds): generous for a loaded 2-core machine.
MMDEBSTRAP_TIMEOUT_S = 600
BUILDAH_TIMEOUT_S = 300


def require_tools(*names: str) -> None:
    """Skip (with the way to get them) unless the tools are there and we are root (chroot, mmdebstrap)."""
    missing = [name for name in names if shutil.which(name) is None]
    if missing:
        pytest.skip(
            f"{', '.join(missing)} not installed (Debian: apt-get install {' '.join(missing)}; "
            "./scripts/test installs them)"
        )
    if os.geteuid() != 0:
        pytest.skip("needs root (mmdebstrap --mode=root, chroot)")


def _key(*parts: str) -> str:
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def debian_tarball(packages: tuple[str, ...]) -> Path:
    """A minbase tree of SUITE with ``packages`` as a tarball, made once and cached."""
    key = _key(SUITE, MIRROR, *sorted(packages))
    tarball = CACHE / f"{SUITE}-minbase-{key}.tar"
    if tarball.exists():
        return tarball
    CACHE.mkdir(parents=True, exist_ok=True)
    partial = tarball.with_suffix(f".partial-{os.getpid()}.tar")  # two runs at once each write their own
    command = [
        "mmdebstrap",
        "--variant=minbase",
        "--mode=root",
        "--format=tar",
        "--quiet",
        # what no test reads: documentation, manual pages, translations
        "--dpkgopt=path-exclude=/usr/share/doc/*",
        "--dpkgopt=path-exclude=/usr/share/man/*",
        "--dpkgopt=path-exclude=/usr/share/locale/*",
        '--aptopt=Acquire::Languages "none"',
    ]
    if packages:
        command.append("--include=" + ",".join(packages))
    command += [SUITE, str(partial), MIRROR]
    subprocess.run(command, check=True, timeout=MMDEBSTRAP_TIMEOUT_S, capture_output=True)
    partial.rename(tarball)
    return tarball


def _buildah(*args: str, timeout: float = BUILDAH_TIMEOUT_S) -> str:
    result = subprocess.run(["buildah", *args], check=True, timeout=timeout, capture_output=True, text=True)
    return result.stdout.strip()


def image_exists(name: str) -> bool:
    result = subprocess.run(["buildah", "inspect", "--type", "image", name], capture_output=True, timeout=60)
    return result.returncode == 0


def debian_image(packages: tuple[str, ...], role: str) -> str:
    """A buildah image of a minbase tree with ``packages`` (and the host's CAs), made once and kept."""
    tarball = debian_tarball(packages)
    ca = HOST_CA_BUNDLE.read_bytes() if HOST_CA_BUNDLE.exists() else b""
    name = f"localhost/piping-server-test-{role}:{_key(tarball.name, hashlib.sha256(ca).hexdigest())}"
    if image_exists(name):
        return name
    container = _buildah("from", "scratch")
    try:
        _buildah("add", "--quiet", container, str(tarball), "/")
        config = ["config", "--cmd", "/bin/sh"]
        if ca:
            _buildah("add", "--quiet", container, str(HOST_CA_BUNDLE), str(HOST_CA_BUNDLE))
            for variable in CA_ENV:
                config += ["--env", f"{variable}={HOST_CA_BUNDLE}"]
        _buildah(*config, container)
        _buildah("commit", "--quiet", container, name)
    finally:
        subprocess.run(["buildah", "rm", container], capture_output=True, timeout=60)
    return name
