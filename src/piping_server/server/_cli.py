"""The ``piping-server`` command: the reference's flags with the same meanings, each also from a variable.

``--http-port`` also comes from ``PIPING_SERVER_HTTP_PORT`` (then ``PORT``), and so on (``_explain.py``).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from typing import Any, NoReturn, TypeVar

import click
from click.core import ParameterSource

from .. import __version__
from .._runtime.click_main import run_click
from ..ops._config import FLAG_KEYS, LOG_FORMATS, LOG_LEVELS, ConfigError, load_config
from ..ops._logging import configure_logging
from ..relay._proxies import DEFAULT_FORWARDED_ALLOW_IPS
from ._explain import ENV_PREFIX, EPILOG, TOPICS
from ._listeners import DEFAULT_BACKLOG
from ._serve import ServerOptions, StartupError, run
from ._workers import parse_workers, run_workers

_SECONDS = click.FloatRange(min=0, min_open=True)
_COUNT = click.IntRange(min=1)
FC = TypeVar("FC", bound=Callable[..., Any])


def _setting(*decls: str, also_env: str | None = None, **attrs: Any) -> Callable[[FC], FC]:
    """A flag that can also come from the environment: ``--http-port`` from ``PIPING_SERVER_HTTP_PORT``.

    uvicorn's ``UVICORN_*`` convention; ``--help`` shows each flag's variable. ``also_env``: a second,
    conventional variable read when the first is not set (``PORT``, ``FORWARDED_ALLOW_IPS``).
    """
    long_name = decls[0].split("/")[0]
    envvar = ENV_PREFIX + long_name.lstrip("-").upper().replace("-", "_")
    return click.option(*decls, envvar=[envvar, also_env] if also_env else envvar, show_envvar=True, **attrs)


def _explain(ctx: click.Context, _: click.Parameter, topic: str | None) -> None:
    if topic is None or ctx.resilient_parsing:
        return
    click.echo(TOPICS[topic].strip())
    ctx.exit()


@click.command(context_settings={"help_option_names": ["--help", "-h"], "max_content_width": 100}, epilog=EPILOG)
@_setting("--host", default=None, metavar="HOST", help="Address to listen on (default: every interface).")
@_setting(
    "--http-port",
    type=click.IntRange(0, 65535),
    default=8080,
    show_default=True,
    also_env="PORT",
    help="HTTP port (HTTP/1.x and cleartext HTTP/2); PORT is read when neither this flag nor its variable is given.",
)
@_setting("--enable-https", is_flag=True, help="Also serve HTTPS (needs --https-port, --crt-path, --key-path).")
@_setting("--https-port", type=click.IntRange(0, 65535), default=None, help="HTTPS port.")
@_setting("--crt-path", type=click.Path(dir_okay=False), default=None, help="Certificate file (PEM).")
@_setting("--key-path", type=click.Path(dir_okay=False), default=None, help="Private key file (PEM).")
@_setting(
    "--forwarded-allow-ips",
    default=DEFAULT_FORWARDED_ALLOW_IPS,
    show_default=True,
    metavar="IPS",
    also_env="FORWARDED_ALLOW_IPS",
    help="Proxies (comma-separated IPs or networks, '*' for any, '' for none) whose X-Forwarded-For, "
    "X-Forwarded-Proto or Forwarded headers name the client for logs, limits and access rules.",
)
@_setting(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False),
    default=None,
    metavar="FILE",
    help="TOML file of settings, reloaded on change or SIGHUP; flags given here override it.",
)
@click.option(
    "--check-config",
    type=click.Path(dir_okay=False),
    default=None,
    metavar="FILE",
    help="Validate a config file (and the PIPING_* environment), then exit.",
)
@click.option(
    "--hash-password",
    is_flag=True,
    help="Read a password (prompt, or one line of stdin), print its hash for the config, then exit.",
)
@_setting("--log-level", type=click.Choice(LOG_LEVELS), default="info", show_default=True, help="Log level.")
@_setting(
    "--log-format",
    type=click.Choice(LOG_FORMATS),
    default="plain",
    show_default=True,
    help="Log lines as text or as one JSON object each.",
)
@_setting("--access-log/--no-access-log", default=False, help="Log one line per finished request.")
@_setting(
    "--metrics-port",
    type=click.IntRange(0, 65535),
    default=None,
    help="Serve Prometheus /metrics and /healthz on this port (off by default).",
)
@_setting(
    "--metrics-host", default="127.0.0.1", show_default=True, metavar="HOST", help="Address of the metrics listener."
)
@_setting(
    "--shutdown-grace",
    type=click.FloatRange(min=0),
    default=30.0,
    metavar="SECONDS",
    help="On SIGTERM or SIGINT, let running transfers finish this long before cutting them; a second "
    "signal cuts them at once; 0: cut at once.  [default: 30]",
)
@_setting(
    "--wait-timeout",
    type=_SECONDS,
    default=None,
    metavar="SECONDS",
    help="Give up on a sender or receiver that waits unmatched this long.",
)
@_setting(
    "--idle-timeout",
    type=_SECONDS,
    default=None,
    metavar="SECONDS",
    help="Cut a running transfer when no byte moves for this long.",
)
@_setting("--max-n", type=_COUNT, default=None, help="Most receivers one transfer may have (?n=).")
@_setting(
    "--live-max-lag",
    type=_COUNT,
    default=None,
    metavar="BYTES",
    help="Cut a receiver of a live transfer (?live) that falls this far behind.  [default: 8388608]",
)
@_setting("--max-live-receivers", type=_COUNT, default=None, help="Most receivers one live path may have.")
@_setting(
    "--max-connections",
    type=_COUNT,
    default=None,
    help="Most client connections open at once, server-wide (with --workers, each worker takes its "
    "share). At the limit, the oldest connection with no request in progress is closed to make room; "
    "only when every one is busy is a new one refused (503).",
)
@_setting(
    "--max-connections-per-client",
    type=_COUNT,
    default=None,
    help="... from one client address (at it, that client's own idle connections make room; else 429).",
)
@_setting(
    "--max-waiting",
    type=_COUNT,
    default=None,
    help="Most senders and receivers waiting at once, server-wide (with --workers, split among them).",
)
@_setting("--max-waiting-per-client", type=_COUNT, default=None, help="... from one client address.")
@_setting(
    "--max-header-bytes",
    type=click.IntRange(256, 1 << 20),
    default=None,
    help="Most bytes of a request line plus headers (431 past it).  [default: 65536]",
)
@_setting(
    "--header-timeout",
    type=click.FloatRange(min=0),
    default=None,
    metavar="SECONDS",
    help="Close a connection whose request head is not complete this long after it opened or its "
    "previous response ended; 0: no limit.  [default: 60]",
)
@_setting(
    "--keepalive-timeout",
    type=click.FloatRange(min=0),
    default=None,
    metavar="SECONDS",
    help="Close a connection with no request in progress (HTTP/2: no open stream) after this long; "
    "0: no limit. Never cuts a running or waiting transfer.  [default: 75]",
)
@_setting(
    "--workers",
    "workers_flag",
    default="1",
    show_default=True,
    metavar="N|auto",
    help="Worker processes sharing the ports, one per core with 'auto'; each path's requests meet in the "
    "worker that owns it (--explain workers).",
)
@_setting(
    "--backlog",
    type=click.IntRange(1, 1 << 16),
    default=DEFAULT_BACKLOG,
    show_default=True,
    help="Length of each listener's queue of connections not yet accepted (the kernel caps it at net.core.somaxconn).",
)
@_setting(
    "--uds",
    default=None,
    metavar="PATH",
    type=click.Path(dir_okay=False),
    help="Serve HTTP on this Unix socket instead of --host/--http-port (for a proxy on this machine; --explain proxy).",
)
@_setting(
    "--fd",
    type=click.IntRange(0),
    default=None,
    metavar="N",
    help="Serve HTTP on this inherited listening socket instead of --host/--http-port (systemd socket "
    "activation: --fd 3; --explain systemd).",
)
@click.option(
    "--explain",
    type=click.Choice(sorted(TOPICS)),
    default=None,
    metavar="TOPIC",
    is_eager=True,
    expose_value=False,
    callback=_explain,
    help=f"Print how to use a feature, then exit: {', '.join(sorted(TOPICS))}.",
)
@_setting(
    "--allow-path",
    multiple=True,
    metavar="PATTERN",
    help='Only these paths may carry transfers: "/exact", "/prefix/*", "re:REGEX"; repeatable.',
)
@click.version_option(__version__, "--version", message="%(version)s")
def command(
    host: str | None,
    http_port: int,
    enable_https: bool,
    https_port: int | None,
    crt_path: str | None,
    key_path: str | None,
    config_path: str | None,
    check_config: str | None,
    hash_password: bool,
    workers_flag: str,
    backlog: int,
    uds: str | None,
    fd: int | None,
    **operator_flags: Any,
) -> None:
    """Piping Server: stream data between any devices over pure HTTP.

    A sender POSTs or PUTs a body to any path; receivers GET the same path.
    """
    if hash_password:
        _print_hash()
        return
    if check_config is not None:
        try:
            load_config(check_config)
        except ConfigError as exc:
            _config_error(exc)
        click.echo(f"{check_config}: OK")
        return
    try:
        workers = parse_workers(workers_flag)
    except ValueError:
        click.echo(
            f"piping-server: error: --workers must be a count of at least 1 or 'auto', not {workers_flag!r}", err=True
        )
        sys.exit(2)
    if uds is not None and fd is not None:
        click.echo("piping-server: error: --uds and --fd each name the HTTP listener: give one of them", err=True)
        sys.exit(2)
    overrides = _given_flags(click.get_current_context())
    try:
        config = load_config(config_path, overrides=overrides)
    except ConfigError as exc:
        _config_error(exc)
    configure_logging(level=config.log.level, fmt=config.log.format)
    server = config.server
    if uds is not None or fd is not None:
        _say_tcp_flags_ignored(click.get_current_context(), "--uds" if uds is not None else "--fd")
    if server.enable_https and (server.https_port is None or not server.crt_path or not server.key_path):
        click.echo("piping-server: error: --enable-https needs --https-port, --crt-path and --key-path", err=True)
        sys.exit(2)
    options = ServerOptions(
        host=server.host,
        http_port=server.http_port,
        enable_https=server.enable_https,
        https_port=server.https_port,
        crt_path=server.crt_path,
        key_path=server.key_path,
        backlog=backlog,
        uds=uds,
        fd=fd,
        # always the whole config: a flag that installs no hook (--shutdown-grace) still takes effect
        config=config,
        config_path=config_path,
        overrides=overrides,
    )
    try:
        if workers > 1:
            run_workers(options, workers)
        else:
            run(options)
    except StartupError as exc:
        click.echo(f"piping-server: error: {exc}", err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        pass


def _given_flags(ctx: click.Context) -> dict[str, Any]:
    """The flags typed on the command line, as config keys: they override the file, reloads included."""
    overrides: dict[str, Any] = {}
    for name, key in FLAG_KEYS.items():
        if name in ctx.params and ctx.get_parameter_source(name) in (
            ParameterSource.COMMANDLINE,
            ParameterSource.ENVIRONMENT,
        ):
            value = ctx.params[name]
            overrides[key] = list(value) if isinstance(value, tuple) else value
    return overrides


def _say_tcp_flags_ignored(ctx: click.Context, listener: str) -> None:
    """--host and --http-port name the TCP listener that --uds or --fd replaces: said, never dropped silently."""
    given = [
        f"--{name.replace('_', '-')}"
        for name in ("host", "http_port")
        if ctx.get_parameter_source(name) in (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT)
    ]
    if given:
        logging.getLogger("piping_server").warning("%s ignored: %s serves HTTP instead", ", ".join(given), listener)


def _config_error(exc: ConfigError) -> NoReturn:
    click.echo(f"piping-server: error: {exc}", err=True)
    sys.exit(2)


def _print_hash() -> None:
    from ..ops._auth import hash_password

    if sys.stdin.isatty():
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True, err=True)
    else:
        password = sys.stdin.readline().rstrip("\r\n")
    if not password:
        click.echo("piping-server: error: empty password", err=True)
        sys.exit(2)
    click.echo(hash_password(password))


def main() -> None:
    """Entry point of the ``piping-server`` script."""
    run_click(command, "piping-server")
