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


def test_no_arguments_prints_the_help_not_an_error() -> None:
    for args in ([], ["tunnel"]):
        r = run_piping(*args)
        assert r.returncode == 0, r.stderr
        assert r.stderr == b""
        assert r.stdout.startswith(b"Usage: piping")
        assert b"error" not in r.stdout.lower()


def test_get_help_says_decrypt() -> None:
    out = " ".join(run_piping("get", "--help").stdout.decode().split())
    assert "Encrypt end to end" not in out and "encrypt end to end" not in out, out
    assert "-e, --encrypt Ask for the passphrase on the terminal and decrypt." in out
    assert "--pass PASSPHRASE Decrypt with this passphrase" in out
    send = " ".join(run_piping("send", "--help").stdout.decode().split())
    assert "Encrypt end to end with this passphrase" in send


def test_get_of_a_page_is_not_a_transfer(server: str) -> None:
    for page in ("/", "/help", "/noscript", "/version", "/favicon.ico", "/robots.txt", "/a/../help"):
        r = run_piping("get", server + page, timeout=30)
        assert r.returncode == 2, (page, r)
        assert r.stdout == b""
        want = f"piping: error: '{server}{page}' is a page of the server, not a transfer path\n"
        assert r.stderr.decode() == want
    for page in ("help", "/"):
        r = run_piping("tunnel", "server", "-p", "22", "-s", server, page, "x")
        assert r.returncode == 2 and b"is a page of the server" in r.stderr, r
