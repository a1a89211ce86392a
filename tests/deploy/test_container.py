"""The Containerfile: it builds, and the image serves, heals, runs unprivileged and stops gracefully.

There is no Docker daemon here: Debian's buildah builds the image (``--isolation chroot``) from bases
made with mmdebstrap (see debian_trees.py), and the test starts the image as a runtime would: the
entrypoint with the flags after it, as PID 1 of its own PID namespace, under the image's user and
environment, on the host's network (as ``docker run --network host``). ``docker stop`` is SIGTERM
to that PID 1.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ..helpers import WAIT_S, free_port, wait_for_port
from .debian_trees import BUILDAH_TIMEOUT_S, debian_image, require_tools

pytestmark = [pytest.mark.ours, pytest.mark.build]

ROOT = Path(__file__).resolve().parents[2]
#: one tag per checkout: two worktrees testing at once must not run each other's image
IMAGE = f"localhost/piping-server-test-image:{hashlib.sha256(str(ROOT).encode()).hexdigest()[:12]}"
#: The whole build (npm ci, pip install from PyPI) is bounded by this (seconds).
BUILD_TIMEOUT_S = 900


@pytest.fixture(scope="module")
def image() -> Iterator[str]:
    require_tools("buildah", "mmdebstrap", "unshare", "nsenter", "chroot", "curl")
    python_base = debian_image(("python3", "python3-venv"), "python")
    node_base = debian_image(("nodejs", "npm"), "node")
    command = [
        # no --layers: a cache of intermediate images would grow with every change of the sources
        "buildah",
        "build",
        "--isolation",
        "chroot",
        "--format",
        "docker",
        "--quiet",
        "--build-arg",
        f"PYTHON_IMAGE={python_base}",
        "--build-arg",
        f"NODE_IMAGE={node_base}",
        "--tag",
        IMAGE,
        "--file",
        str(ROOT / "Containerfile"),
        str(ROOT),
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=BUILD_TIMEOUT_S)
    assert result.returncode == 0, f"buildah build failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    try:
        yield IMAGE
    finally:
        subprocess.run(["buildah", "rmi", IMAGE], capture_output=True, timeout=60)  # the bases stay cached


def image_config(name: str) -> dict[str, Any]:
    result = subprocess.run(
        ["buildah", "inspect", "--type", "image", name], capture_output=True, check=True, timeout=60
    )
    config: dict[str, Any] = json.loads(result.stdout)["Docker"]["config"]
    return config


@pytest.fixture(scope="module")
def rootfs(image: str) -> Iterator[Path]:
    """The image's file tree, as a container of it sees it."""
    name = f"piping-server-test-{uuid.uuid4().hex[:8]}"
    subprocess.run(
        ["buildah", "from", "--quiet", "--name", name, image],
        check=True,
        capture_output=True,
        timeout=BUILDAH_TIMEOUT_S,
    )
    try:
        mounted = subprocess.run(["buildah", "mount", name], check=True, capture_output=True, text=True, timeout=60)
        yield Path(mounted.stdout.strip())
    finally:
        subprocess.run(["buildah", "umount", name], capture_output=True, timeout=60)
        subprocess.run(["buildah", "rm", name], capture_output=True, timeout=60)


def in_container(rootfs: Path, config: dict[str, Any], argv: list[str]) -> list[str]:
    """A command line running ``argv`` inside the image: its root, user and environment only."""
    return ["chroot", f"--userspec={config['User']}", str(rootfs), "/usr/bin/env", "-i", *config["Env"], *argv]


def start_container(rootfs: Path, config: dict[str, Any], flags: list[str], log: Path) -> subprocess.Popen[bytes]:
    """``docker run IMAGE FLAGS...``: the entrypoint + flags as PID 1 of a new PID namespace."""
    # --kill-child: if the test dies, so does the server (unshare forwards no signal: SIGTERM goes to PID 1)
    command = [
        "unshare",
        "--pid",
        "--fork",
        "--mount",
        f"--mount-proc={rootfs}/proc",
        "--kill-child",
        "--",
        *in_container(rootfs, config, [*config["Entrypoint"], *(config.get("Cmd") or []), *flags]),
    ]
    with log.open("wb") as out:
        return subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)


def container_pid1(unshare: subprocess.Popen[bytes]) -> int:
    """The host's PID of the container's PID 1 (unshare's only child)."""
    children = Path(f"/proc/{unshare.pid}/task/{unshare.pid}/children").read_text().split()
    assert len(children) == 1, children
    return int(children[0])


def status_field(pid: int, name: str) -> list[str]:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(name + ":"):
            return line.split()[1:]
    raise AssertionError(f"no {name} in /proc/{pid}/status")


def wait_until(condition: Any, what: str, timeout: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_dockerfile_is_the_containerfile() -> None:
    """Copies, not symlinks: BuildKit has failed on a symlinked Dockerfile (moby/buildkit#2119)."""
    for copy, original in (("Dockerfile", "Containerfile"), (".dockerignore", ".containerignore")):
        assert not (ROOT / copy).is_symlink()
        assert (ROOT / copy).read_bytes() == (ROOT / original).read_bytes(), f"{copy} differs from {original}"


def test_image_settings(image: str) -> None:
    """Flags after the image name, a non-root user, port 8080, a health check, SIGTERM to stop."""
    config = image_config(image)
    assert config["Entrypoint"] == ["/opt/piping-server/bin/piping-server"]  # exec form: no shell in between
    assert not config.get("Cmd")  # so every argument after the image name is a flag
    assert config["User"] and config["User"].split(":")[0] not in ("root", "0")
    assert "8080/tcp" in config["ExposedPorts"]
    assert config["Healthcheck"]["Test"][0] == "CMD"
    assert config["StopSignal"] == "SIGTERM"


def test_image_runs_the_compiled_transfer_path_without_a_compiler(image: str, rootfs: Path) -> None:
    """The package stage compiled the transfer path (mypyc); the image has its modules, not the compiler."""
    config = image_config(image)
    probe = "from piping_server._compiled import why_sources; print(why_sources())"
    result = subprocess.run(
        in_container(rootfs, config, ["/opt/piping-server/bin/python", "-c", probe]),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "None", result.stdout  # None: no reason to run the sources
    assert not any((rootfs / "usr/bin" / name).exists() for name in ("gcc", "cc")), "a compiler in the image"


def test_serves_heals_and_stops_gracefully_as_pid1(image: str, rootfs: Path, tmp_path: Path) -> None:
    config = image_config(image)
    port = free_port()
    log = tmp_path / "server.log"
    unshare = start_container(rootfs, config, ["--http-port", str(port), "--shutdown-grace", "20"], log)
    try:
        wait_for_port(port, unshare, timeout=WAIT_S * 2)
        server = container_pid1(unshare)
        # PID 1 is the server itself (no shell in between to swallow SIGTERM)
        assert status_field(server, "NSpid")[-1] == "1"
        assert Path(f"/proc/{server}/comm").read_text().strip() == "piping-server", "PID 1 is not the server"
        assert status_field(server, "Uid")[0] != "0", "the server runs as root"

        # HEALTHCHECK, run as docker runs it: inside the container's namespaces, as its user
        health = subprocess.run(
            [
                "nsenter",
                f"--target={server}",
                "--pid",
                "--mount",
                "--",
                *in_container(rootfs, config, config["Healthcheck"]["Test"][1:]),
            ],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert health.returncode == 0, health.stderr

        # a transfer from the host; SIGTERM arrives in its middle and it still completes
        url = f"http://127.0.0.1:{port}/container-{uuid.uuid4().hex[:8]}"
        received = tmp_path / "received"
        with received.open("wb") as out:
            receiver = subprocess.Popen(["curl", "-sS", "-N", url], stdout=out, stderr=subprocess.PIPE)
        sender = subprocess.Popen(
            ["curl", "-sS", "-T", "-", url], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        assert sender.stdin is not None
        chunks = [os.urandom(1 << 20) for _ in range(4)]
        sender.stdin.write(chunks[0])
        sender.stdin.flush()
        wait_until(lambda: received.stat().st_size > 0, "the first bytes at the receiver")

        os.kill(server, signal.SIGTERM)  # docker stop
        wait_until(lambda: b"shutting down" in log.read_bytes(), "the server to start its graceful shutdown")
        for chunk in chunks[1:]:
            sender.stdin.write(chunk)
        sender.stdin.close()
        assert sender.wait(timeout=WAIT_S) == 0, sender.stderr.read() if sender.stderr else b""
        assert receiver.wait(timeout=WAIT_S) == 0, receiver.stderr.read() if receiver.stderr else b""
        expected = hashlib.sha256(b"".join(chunks)).hexdigest()
        assert hashlib.sha256(received.read_bytes()).hexdigest() == expected
        assert unshare.wait(timeout=WAIT_S) == 0, log.read_text()  # well within the 20 s grace
    finally:
        if unshare.poll() is None:
            unshare.kill()  # --kill-child takes the server with it
            unshare.wait(timeout=10)


def operating_doc_example() -> tuple[list[str], list[tuple[str, str]], str]:
    """docs/operating.md's compose example: the command, the volumes (host, container) and the TOML file."""
    text = (ROOT / "docs" / "operating.md").read_text(encoding="utf-8").split("## In a container", 1)[1]
    compose = text.split("```yaml\n", 1)[1].split("```", 1)[0]
    toml = text.split("```toml\n", 1)[1].split("```", 1)[0]
    command: list[str] = []
    volumes: list[tuple[str, str]] = []
    for line in compose.splitlines():
        key, _, value = line.strip().partition(":")
        if key == "command":
            command = json.loads(value.split("#")[0])
        elif line.strip().startswith("- ./"):
            host, target, _mode = line.strip()[2:].split(":")
            volumes.append((host, target))
    return command, volumes, toml


def test_operating_doc_compose_example(image: str, rootfs: Path, tmp_path: Path) -> None:
    """The example's command and config, mounted as it says, serve HTTPS; an unreadable key is one clear line."""
    trustme = pytest.importorskip("trustme")
    config = image_config(image)
    command, volumes, toml = operating_doc_example()
    assert command and len(volumes) == 2, (command, volumes)
    # the host side of the two volumes: the TOML file and a folder with the certificate and its key
    ca = trustme.CA()
    issued = ca.issue_cert("127.0.0.1", "localhost")
    ca_path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_path))
    for host, target in volumes:
        mounted = rootfs / target.lstrip("/")
        mounted.parent.mkdir(parents=True, exist_ok=True)
        if host.endswith(".toml"):
            mounted.write_text(toml)
        else:
            mounted.mkdir(exist_ok=True)
            issued.private_key_pem.write_to_path(str(mounted / "key.pem"))
            for blob in issued.cert_chain_pems:
                blob.write_to_path(str(mounted / "cert.pem"), append=True)
    key = next(p for p in rootfs.glob("etc/piping-server/**/key.pem"))

    # as the doc says: the key readable by the image's group
    os.chown(key, 0, 10001)
    key.chmod(0o640)
    http_port, https_port = free_port(), free_port()
    ports = ["--http-port", str(http_port), "--https-port", str(https_port)]  # flags beat the file's ports
    log = tmp_path / "server.log"
    unshare = start_container(rootfs, config, [*command, *ports], log)
    try:
        wait_for_port(https_port, unshare, timeout=WAIT_S * 2)
        version = subprocess.run(
            ["curl", "-sS", "--cacert", str(ca_path), f"https://127.0.0.1:{https_port}/version"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert version.returncode == 0 and version.stdout.strip(), version.stderr
        os.kill(container_pid1(unshare), signal.SIGTERM)
        assert unshare.wait(timeout=WAIT_S) == 0, log.read_text()
    finally:
        if unshare.poll() is None:
            unshare.kill()
            unshare.wait(timeout=10)

    # the key left readable by its owner only (root): the server stops at once, naming the file
    key.chmod(0o600)
    refused = start_container(rootfs, config, [*command, *ports], log)
    try:
        assert refused.wait(timeout=WAIT_S * 2) != 0
    finally:
        if refused.poll() is None:
            refused.kill()
            refused.wait(timeout=10)
    output = log.read_text()
    assert "key.pem" in output and "Traceback" not in output, output
    assert len(output.strip().splitlines()) == 1, output
