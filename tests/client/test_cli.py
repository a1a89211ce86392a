"""The command line itself: help, completion, argument errors (no server needed)."""

from __future__ import annotations

from conftest import run_piping


def test_help_reads_well() -> None:
    for args in ([], ["send"], ["get"], ["tunnel"], ["tunnel", "server"], ["tunnel", "client"], ["completion"]):
        r = run_piping(*args, "--help")
        assert r.returncode == 0, r.stderr
        assert b"Usage: piping" in r.stdout
    assert b"--multiplex" in run_piping("tunnel", "client", "--help").stdout
    assert b"PIPING_PASS" in run_piping("send", "--help").stdout


def test_completion_scripts() -> None:
    for shell in ("bash", "zsh", "fish"):
        r = run_piping("completion", shell)
        assert r.returncode == 0
        assert b"_PIPING_COMPLETE" in r.stdout


def test_version() -> None:
    r = run_piping("--version")
    assert r.returncode == 0
    assert r.stdout.startswith(b"piping ")


def test_usage_errors_are_one_line() -> None:
    r = run_piping("send", "http://127.0.0.1:9/x", "/nonexistent/file")
    assert r.returncode == 2
    r = run_piping("tunnel", "client", "--port", "1", "a", "b", "c")
    assert r.returncode == 2
    assert b"one path" in r.stderr
    r = run_piping("get", "ftp://example.com/x")
    assert r.returncode == 2
    assert r.stderr == b"piping: error: unsupported URL scheme 'ftp' (use http or https)\n"
