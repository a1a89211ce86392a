"""Config loading and validation (unit), and the --check-config / bad-flag command lines (process)."""

from __future__ import annotations

from pathlib import Path

import pytest

from piping_server.ops._config import Config, ConfigError, load_config

from .util import run_cli

FULL = """
[server]
host = "127.0.0.1"
http_port = 8080
shutdown_grace = 30

[log]
level = "warning"
format = "json"
access = true

[metrics]
port = 9090

[limits]
wait_timeout = 300
idle_timeout = 60.5
max_n = 10
max_connections = 1000
max_connections_per_client = 50
max_waiting = 500
max_waiting_per_client = 20
max_header_bytes = 16384

[access]
allow_paths = ["/pub/*", "/exact", "re:^/team/[a-z]+$"]
protect_pages = true

[auth.basic]
realm = "piping"
[[auth.basic.users]]
name = "alice"
password_hash = "pbkdf2_sha256$1000$c2FsdHNhbHQ=$aGFzaGhhc2g="
paths = ["/alice/*"]
[[auth.basic.users]]
name = "bob"
password = "plain"

[auth.jwt]
issuer = "https://issuer.example"
audience = "piping"
leeway = 5
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "piping.toml"
    path.write_text(text)
    return path


def test_defaults_are_the_plain_protocol() -> None:
    config = load_config(None, environ={})
    assert config == Config()
    assert not config.needs_hooks


def test_full_file_loads(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, FULL), environ={"PIPING_JWT_SECRET": "s3cret"})
    assert config.server.shutdown_grace == 30.0 and isinstance(config.server.shutdown_grace, float)
    assert config.limits.idle_timeout == 60.5 and config.limits.max_n == 10
    assert config.access.allow_paths == ("/pub/*", "/exact", "re:^/team/[a-z]+$")
    assert [u.name for u in config.auth.basic.users] == ["alice", "bob"]
    assert config.auth.jwt.secret == "s3cret" and config.auth.jwt_enabled
    assert config.needs_hooks
    assert "s3cret" not in repr(config) and "plain" not in repr(config)


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("[limits]\nmax_nn = 3\n", "limits.max_nn: unknown key"),
        ("[limits]\nmax_n = '3'\n", "limits.max_n: expected an integer, got a string"),
        ("[limits]\nmax_n = true\n", "limits.max_n: expected an integer, got a boolean"),
        ("[limits]\nmax_n = 0\n", "limits.max_n: must be at least 1, got 0"),
        ("[limits]\nwait_timeout = 0\n", "limits.wait_timeout: must be more than 0, got 0"),
        ("[limits]\nheader_timeout = -1\n", "limits.header_timeout: must be at least 0, got -1"),
        ("[limits]\nkeepalive_timeout = 'soon'\n", "limits.keepalive_timeout: expected a number"),
        ("[log]\nformat = 'xml'\n", "log.format: must be one of plain, json, got 'xml'"),
        ("[server]\nhttp_port = 70000\n", "server.http_port: must be at most 65535, got 70000"),
        ("limits = 3\n", "limits: expected a table"),
        ("[access]\nallow_paths = '/x'\n", "access.allow_paths: expected an array"),
        ("[access]\nallow_paths = ['x']\n", "access.allow_paths[0]: a path pattern starts with '/' or 're:'"),
        ("[access]\nallow_paths = ['/a', 're:(']\n", "access.allow_paths[1]: bad regular expression"),
        ("[access]\nallow_paths = ['/a*b']\n", "access.allow_paths[0]: '*' may only end a prefix pattern"),
        ("[[auth.basic.users]]\npassword = 'x'\n", "auth.basic.users[0].name: missing"),
        ("[[auth.basic.users]]\nname = 'a'\n", "auth.basic.users[0]: give exactly one of password, password_hash"),
        (
            "[[auth.basic.users]]\nname = 'a'\npassword_hash = 'md5$x'\n",
            "auth.basic.users[0].password_hash: unknown scheme 'md5'",
        ),
        (
            "[[auth.basic.users]]\nname='a'\npassword='x'\n[[auth.basic.users]]\nname='a'\npassword='y'\n",
            "auth.basic.users[1].name: duplicate user 'a'",
        ),
        ("[auth.jwt]\nalgorithms = ['HS256']\n", "auth.jwt.algorithms: needs a secret"),
        ("[auth.jwt]\nsecret = 'x'\nalgorithms = ['none']\n", "auth.jwt.algorithms: unsupported algorithm 'none'"),
        ("[auth.jwt]\nsecret = 'x'\nalgorithms = ['RS256']\n", "RS256 needs auth.jwt.public_key_file"),
        ("[auth.jwt]\npublic_key_file = 'nope.pem'\n", "auth.jwt.public_key_file: nope.pem: no such file"),
        ("[auth.jwt]\njwks_url = 'ftp://x'\n", "auth.jwt.jwks_url: must be an http:// or https:// URL"),
        ("[metrics]\nport = 8080\n", "metrics.port: must differ from server.http_port"),
        ("[limits\n", "not valid TOML"),
    ],
)
def test_errors_are_one_line_and_name_the_key(tmp_path: Path, text: str, error: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path, environ={})
    message = str(info.value)
    assert message.startswith(f"{path}: ") and error in message, message
    assert "\n" not in message


def test_env_secrets(tmp_path: Path) -> None:
    path = write(tmp_path, "[[auth.basic.users]]\nname = 'alice'\npassword = 'from-file'\n")
    hashed = "pbkdf2_sha256$1000$c2FsdHNhbHQ=$aGFzaGhhc2g="
    config = load_config(path, environ={"PIPING_BASIC_AUTH_ALICE": "from-env", "PIPING_BASIC_AUTH_BOB": hashed})
    users = {u.name: u for u in config.auth.basic.users}
    assert users["alice"].password == "from-env" and users["alice"].password_hash is None
    assert users["bob"].password_hash == hashed and users["bob"].password is None


def test_overrides_beat_file_and_env(tmp_path: Path) -> None:
    path = write(tmp_path, "[limits]\nmax_n = 5\nwait_timeout = 10\n[server]\nhttp_port = 1234\n")
    config = load_config(path, overrides={"limits.max_n": 2, "server.http_port": 4321}, environ={})
    assert (config.limits.max_n, config.limits.wait_timeout, config.server.http_port) == (2, 10.0, 4321)


def test_overrides_are_validated_too() -> None:
    with pytest.raises(ConfigError, match="access.allow_paths\\[0\\]"):
        load_config(None, overrides={"access.allow_paths": ["nope"]}, environ={})


def test_check_config_ok(tmp_path: Path) -> None:
    path = write(tmp_path, FULL + "secret = 'x'\n")
    result = run_cli("--check-config", str(path))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"{path}: OK"


def test_check_config_bad_is_one_line_and_exit_2(tmp_path: Path) -> None:
    path = write(tmp_path, "[limits]\nmax_n = -1\n")
    result = run_cli("--check-config", str(path))
    assert result.returncode == 2
    assert result.stderr.strip() == f"piping-server: error: {path}: limits.max_n: must be at least 1, got -1"
    assert "Traceback" not in result.stderr


def test_bad_config_at_start_is_exit_2(tmp_path: Path) -> None:
    path = write(tmp_path, "[log]\nlevel = 'loud'\n")
    result = run_cli("--http-port", "0", "--config", str(path))
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert "log.level: must be one of" in result.stderr


@pytest.mark.parametrize(
    "flag",
    [
        ["--max-n", "0"],
        ["--wait-timeout", "-1"],
        ["--log-format", "xml"],
        ["--allow-path", "nope"],
        ["--live-max-lag", "-5"],
        ["--live-max-lag", "abc"],
        ["--max-live-receivers", "0"],
        ["--header-timeout", "-1"],
        ["--keepalive-timeout", "never"],
        ["--forwarded-allow-ips", "1.2.3.4/99"],
    ],
)
def test_bad_flag_is_exit_2_without_traceback(flag: list[str]) -> None:
    result = run_cli("--http-port", "0", *flag)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr


def test_hash_password_helper() -> None:
    from piping_server.ops._auth import parse_hash, verify_password

    result = run_cli("--hash-password", input="correct horse\n")
    assert result.returncode == 0, result.stderr
    stored = result.stdout.strip()
    assert stored.startswith("pbkdf2_sha256$") and "correct horse" not in stored
    assert verify_password("correct horse", parse_hash(stored))


def test_the_documented_example_is_valid(tmp_path: Path) -> None:
    """docs/operating.md's complete example passes --check-config."""
    doc = (Path(__file__).parents[2] / "docs" / "operating.md").read_text()
    example = doc.split("```toml\n", 1)[1].split("```", 1)[0]
    path = write(tmp_path, example)
    result = run_cli("--check-config", str(path))
    assert result.returncode == 0, result.stderr
    config = load_config(path, environ={})
    assert config.needs_hooks and config.auth.jwt_enabled and len(config.auth.basic.users) == 2


def test_every_flag_has_a_config_key() -> None:
    from piping_server.ops._config import FLAG_KEYS
    from piping_server.server._cli import command

    # --workers shapes the processes (a supervisor forks the workers), and --backlog, --uds and --fd the
    # listeners made once at start: none is a setting a reload could change
    meta = {
        "config_path",
        "check_config",
        "hash_password",
        "version",
        "help",
        "explain",
        "workers_flag",
        "backlog",
        "uds",
        "fd",
    }
    flags = {p.name for p in command.params} - meta
    assert flags == set(FLAG_KEYS), flags ^ set(FLAG_KEYS)


def test_no_config_installs_no_hook() -> None:
    from piping_server.core import Hub
    from piping_server.ops._limits import WatchedHub
    from piping_server.ops._operator import Operator
    from piping_server.relay._flow import Relay

    operator = Operator(load_config(None, environ={}))
    relay = Relay(hub=operator.hub)
    operator.install(relay)
    hooks = relay.hooks
    assert type(operator.hub) is Hub and not isinstance(operator.hub, WatchedHub)
    assert hooks.admit is hooks.on_access is hooks.on_connect is hooks.on_disconnect is None
    assert hooks.max_head_bytes is None and hooks.preflight_allow_headers is None and relay.observers == []


def test_usage_errors_are_one_line() -> None:
    """A bad flag or value is one `prog: error:` line and exit code 2, for both commands."""
    import subprocess
    import sys

    for args, prog in (
        (["-m", "piping_server", "--http-port", "abc"], "piping-server"),
        (["-m", "piping_server", "--no-such-flag"], "piping-server"),
        (["-m", "piping_server.cli", "get"], "piping"),
        (["-m", "piping_server.cli", "no-such-command"], "piping"),
    ):
        result = subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=30)
        assert result.returncode == 2, result
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"{prog}: error: "), result.stderr
        assert "Traceback" not in result.stderr
