"""Fixtures: the real server as a process on 127.0.0.1, and the targets the protocol tests run on.

``PIPING_TEST_BASE_URL=http://127.0.0.1:8181`` points every protocol scenario at another server
(the reference, say) instead of ours; tests of behaviour marked **(beyond)** in docs/protocol.md carry
``@pytest.mark.beyond`` and are skipped there, as are tests that need our own process.
"""

from __future__ import annotations

import os
import subprocess
from collections import Counter
from collections.abc import Iterator

import pytest

from .helpers import ServerProcess, Target, make_tls_files, start_server

EXTERNAL_BASE_URL = os.environ.get("PIPING_TEST_BASE_URL")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "beyond: behaviour docs/protocol.md marks (beyond): ours only")
    config.addinivalue_line("markers", "ours: needs our own server process (RSS, logs, flags)")


@pytest.fixture(scope="session", autouse=True)
def _no_gpg_agent_left(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """gpg starts an agent per GNUPGHOME the tests make; stop those of this session's temporary folders at its end."""
    yield
    base = str(tmp_path_factory.getbasetemp())  # (before this, every session left its agents running)
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if not argv[0].endswith(b"gpg-agent") or b"--homedir" not in argv[:-1]:
            continue
        home = argv[argv.index(b"--homedir") + 1].decode(errors="replace")
        if home.startswith(base):
            subprocess.run(["gpgconf", "--homedir", home, "--kill", "gpg-agent"], capture_output=True, timeout=10)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    _deselect_workers_variants(config, items)
    if not EXTERNAL_BASE_URL:
        return
    skip = pytest.mark.skip(reason="not applicable to an external server (PIPING_TEST_BASE_URL)")
    for item in items:
        if "beyond" in item.keywords or "ours" in item.keywords:
            item.add_marker(skip)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """On an external server, say why tests were skipped: the count of each reason, not one line per test."""
    if not EXTERNAL_BASE_URL:
        return
    reasons: Counter[str] = Counter()
    for report in terminalreporter.stats.get("skipped", []):
        longrepr = getattr(report, "longrepr", None)
        if isinstance(longrepr, tuple) and len(longrepr) == 3:
            reasons[str(longrepr[2]).removeprefix("Skipped: ")] += 1
    if reasons:
        terminalreporter.section("skipped on the external server, by reason")
        for reason, count in reasons.most_common():
            terminalreporter.write_line(f"{count:6d}  {reason}")


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str, str]:
    """A certificate for 127.0.0.1 and localhost, its key and its CA, made for this session (trustme)."""
    return make_tls_files(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="session")
def server(tls_files: tuple[str, str, str]) -> Iterator[ServerProcess | None]:
    """Our server, HTTP and HTTPS, started once for the session (None when an external base URL is given)."""
    if EXTERNAL_BASE_URL:
        yield None
        return
    proc = start_server(https=tls_files)
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture(scope="session")
def copying_server() -> Iterator[ServerProcess | None]:
    """Our server with the splice fast path off (PIPING_SPLICE=0): HTTP/1 bodies through user space."""
    if EXTERNAL_BASE_URL:
        yield None
        return
    proc = start_server(env={"PIPING_SPLICE": "0"})
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture(scope="session")
def workers_server(tls_files: tuple[str, str, str]) -> Iterator[ServerProcess | None]:
    """Our server as three worker processes (``--workers 3``), HTTP and HTTPS."""
    if EXTERNAL_BASE_URL:
        yield None
        return
    proc = start_server("--workers", "3", https=tls_files)
    try:
        yield proc
    finally:
        proc.stop()


#: The transports every protocol scenario runs over: HTTP/1.1 (where one-to-one uploads are spliced
#: kernel to kernel), HTTP/1.1 with splicing off ("h1-copy"), cleartext HTTP/2 (prior knowledge),
#: HTTP/1.1 over TLS and HTTP/2 over TLS (ALPN h2); then ``--workers 3`` over HTTP/1.1 (connections
#: handed to the path's owner) and over h2 (streams relayed to it), in the modules of WORKERS_MODULES.
TRANSPORTS = ["h1", "h1-copy", "h2c", "h1-tls", "h2", "workers", "workers-h2"]
#: The scenarios that also run against ``--workers 3`` (the rest would only add minutes), and the
#: ones among them too long to repeat there.
WORKERS_MODULES = ("tests/e2e/test_transfer.py", "tests/e2e/test_question.py")
WORKERS_SKIPPED = ("test_large_transfer_sha256",)


def _deselect_workers_variants(config: pytest.Config, items: list[pytest.Item]) -> None:
    kept: list[pytest.Item] = []
    dropped: list[pytest.Item] = []
    for item in items:
        callspec = getattr(item, "callspec", None)
        transport = callspec.params.get("target") if callspec is not None else None
        in_module = item.nodeid.split("::", 1)[0] in WORKERS_MODULES
        skipped = getattr(item, "originalname", item.name) in WORKERS_SKIPPED
        if transport in ("workers", "workers-h2") and (not in_module or skipped):
            dropped.append(item)
        else:
            kept.append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept


@pytest.fixture(params=TRANSPORTS)
def target(request: pytest.FixtureRequest, server: ServerProcess | None) -> Target:
    """Where a protocol scenario sends its requests, and how curl must speak to it."""
    if server is None:
        assert EXTERNAL_BASE_URL is not None
        if request.param != "h1":
            pytest.skip("external servers are tested over HTTP/1.1 only")
        return Target(name="external", base_url=EXTERNAL_BASE_URL.rstrip("/"), curl_args=[])
    if request.param == "h1-copy":
        copying = request.getfixturevalue("copying_server")
        return Target(name="h1-copy", base_url=copying.target("h1").base_url)
    if request.param in ("workers", "workers-h2"):
        workers: ServerProcess = request.getfixturevalue("workers_server")
        target = workers.target("h1" if request.param == "workers" else "h2")
        target.name = request.param
        return target
    return server.target(request.param)
