"""``-e`` asks for the passphrase on the terminal; with none it says to use --pass/PIPING_PASS.

Python's getpass, given no terminal, warns (GetPassWarning) and reads the passphrase from stdin,
which for ``piping send`` is the data being sent. The client must stop with one clear line instead.
"""

from __future__ import annotations

import os
import pty
import select
import subprocess
import time
from pathlib import Path

import pytest

from conftest import env, piping_cmd, running_server, start_piping

NO_SERVER = "http://127.0.0.1:9"  # nothing is sent: the error comes before any connection


@pytest.mark.parametrize("command", ["send", "get"])
def test_no_terminal_says_to_use_pass(command: str) -> None:
    # start_new_session: no controlling terminal, as under cron, CI or `ssh host cmd`
    result = subprocess.run(
        piping_cmd(command, "-e", NO_SERVER + "/p"),
        input=b"the data being sent\n",
        env=env(),
        capture_output=True,
        timeout=60,
        start_new_session=True,
    )
    stderr = result.stderr.decode()
    assert result.returncode == 2, stderr
    assert stderr.count("\n") == 1, stderr  # one line
    assert "--pass" in stderr and "PIPING_PASS" in stderr, stderr
    assert "GetPassWarning" not in stderr and "Traceback" not in stderr and "echoed" not in stderr, stderr


def _read_until(fd: int, marker: bytes, timeout: float = 30.0) -> bytes:
    seen = b""
    deadline = time.monotonic() + timeout
    while marker not in seen:
        left = deadline - time.monotonic()
        assert left > 0, f"no {marker!r} on the terminal; got {seen!r}"
        if select.select([fd], [], [], left)[0]:
            try:
                chunk = os.read(fd, 4096)
            except OSError:  # the terminal closed: the process ended
                break
            if not chunk:
                break
            seen += chunk
    return seen


def test_terminal_prompt_still_encrypts(tmp_path: Path) -> None:
    """With a terminal (a pty as the controlling terminal), -e asks twice and the receiver decrypts."""
    with running_server("ours") as base:
        url = base + "/prompt"
        secret = tmp_path / "secret.txt"
        secret.write_bytes(b"typed on a terminal\n")
        receiver = start_piping("get", "-q", "--pass", "s3cret", url)
        pid, fd = pty.fork()
        if pid == 0:  # the child: the pty is its controlling terminal; stdin is the pty too
            os.execvpe(piping_cmd()[0], [*piping_cmd("send", "-q", "-e", url, str(secret))], env())
        try:
            _read_until(fd, b"Passphrase: ")
            os.write(fd, b"s3cret\n")
            _read_until(fd, b"(again): ")
            os.write(fd, b"s3cret\n")
            _read_until(fd, b"\x00never", timeout=30)  # until the sender ends (the pty closes)
            _, status = os.waitpid(pid, 0)
            assert os.waitstatus_to_exitcode(status) == 0
        finally:
            os.close(fd)
        out, err = receiver.communicate(timeout=30)
        assert receiver.returncode == 0, err
        assert out == secret.read_bytes()  # decrypted with the passphrase typed on the terminal
