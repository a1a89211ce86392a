"""click commands of ``piping``; each turns library errors into one line on stderr and an exit code."""

from __future__ import annotations

import getpass
import sys
import warnings
from collections.abc import Callable
from typing import Any, TypeVar

import click

from .._runtime.click_main import run_click
from ..client import PipingError, get_async, send_async
from ..client._exchange import get_exchange_async, send_exchange_async
from ..client._tunnel import TunnelPaths, run_tunnel_client, run_tunnel_server, tunnel_paths
from ..client._url import SERVER_ENV
from ._confirm import code_confirmer, exchange_options
from ._progress import CliReporter
from ._runner import DEBUG_ENV, run

__all__ = ["cli", "main"]

PASS_ENV = "PIPING_PASS"
F = TypeVar("F", bound=Callable[..., Any])

_EPILOG_SEND = f"""\b
Examples:
  piping send https://ppng.io/mypath photo.jpg     one file, received as itself
  piping send mypath ./folder notes.txt            several: one streamed tar
  tar c dir | piping send mypath                   stdin
  piping send --pass secret mypath report.pdf      end-to-end encrypted (gpg -d compatible)
  piping send --exchange mypath report.pdf         end-to-end encrypted without a passphrase:
                                                   a key exchange with a verification code
                                                   (Piping UI's way; receiver: get --exchange)
\b
A bare path (mypath) needs --server or ${SERVER_ENV}. Receivers: `piping get`, curl, a browser."""

_EPILOG_GET = """\b
Examples:
  piping get https://ppng.io/mypath -o photo.jpg
  piping get mypath -o downloads/                  a file lands under the sender's name;
                                                   a folder is unpacked into downloads/
  piping get mypath -o a/b/c.txt --create-dirs     a/ and a/b/ are created if missing
  piping get mypath | tar x                        raw stream to stdout
  piping get --pass secret mypath -o report.pdf    decrypt (also what `gpg -c | curl -T -` sent)
  piping get --exchange mypath -o downloads/       key exchange with the sender (send --exchange,
                                                   Piping UI with E2E on): compare the code"""

_EPILOG_TUNNEL = """\b
Server host (where the service runs):   piping tunnel server --port 22 PATH1 PATH2
Client host (where you connect):        piping tunnel client --port 2222 PATH1 PATH2
                                        ssh -p 2222 localhost
PATH1 carries client->server bytes, PATH2 server->client (one PATH: PATH/c-to-s, PATH/s-to-c).
Plain mode forwards one connection and works with the curl one-liners and piping-tunnel;
--multiplex (on both ends) carries many connections at once, and its server host serves one
client host after another until stopped (Ctrl-C: exit code 130 on either host)."""


def _common(f: F) -> F:
    f = click.option(
        "--server",
        "-s",
        metavar="URL",
        envvar=SERVER_ENV,
        help=f"Server for bare paths such as 'mypath' [env: {SERVER_ENV}].",
    )(f)
    f = click.option("--quiet", "-q", is_flag=True, help="No progress bar and no status lines.")(f)
    f = click.option("--insecure", "-k", is_flag=True, help="Do not verify the server's TLS certificate.")(f)
    return f


def _crypto(confirm: bool) -> Callable[[F], F]:
    """``--pass``/``-e``: a sender (``confirm``: asked twice) encrypts, a receiver decrypts."""
    if confirm:
        pass_help = f"Encrypt end to end with this passphrase (OpenPGP, as gpg -c) [env: {PASS_ENV}]."
        ask_help = (
            "Ask for a passphrase on the terminal (twice) and encrypt end to end. "
            f"Without a terminal: --pass or {PASS_ENV}."
        )
    else:
        pass_help = f"Decrypt with this passphrase what was sent encrypted (OpenPGP, as gpg -d) [env: {PASS_ENV}]."
        ask_help = f"Ask for the passphrase on the terminal and decrypt. Without a terminal: --pass or {PASS_ENV}."

    def deco(f: F) -> F:
        f = click.option("--pass", "passphrase", metavar="PASSPHRASE", envvar=PASS_ENV, help=pass_help)(f)
        f = click.option("--encrypt", "-e", is_flag=True, help=ask_help)(f)
        return f

    return deco


NO_TERMINAL = (
    "-e asks for the passphrase on a terminal and there is none: give it with --pass PASSPHRASE "
    f"or the {PASS_ENV} environment variable"
)


def _passphrase(passphrase: str | None, encrypt: bool, confirm: bool) -> str | None:
    if passphrase or not encrypt:
        return passphrase or None
    try:
        # getpass reads the terminal, not stdin: stdin may be the data being sent. Without a terminal
        # it would warn (GetPassWarning) and read stdin instead, so that warning is an error here.
        with warnings.catch_warnings():
            warnings.simplefilter("error", getpass.GetPassWarning)
            first = getpass.getpass("Passphrase: ")
            if confirm and getpass.getpass("Passphrase (again): ") != first:
                raise click.UsageError("the passphrases differ")
    except getpass.GetPassWarning:
        raise click.UsageError(NO_TERMINAL) from None
    except (EOFError, KeyboardInterrupt):
        raise click.UsageError("no passphrase given") from None
    if not first:
        raise click.UsageError("empty passphrase")
    return first


def _check_exchange_alone(passphrase: str | None, encrypt: bool, *, n: int | None, live: bool) -> None:
    """--exchange derives its own key and paths: a passphrase, --n or a live transfer make no sense with it."""
    if passphrase or encrypt:
        raise click.UsageError("--exchange derives the key itself: drop --pass/--encrypt (and $PIPING_PASS)")
    if n is not None or live:
        raise click.UsageError("--exchange is one sender and one receiver: drop --n, --live and --from-start")


def _help_without_command(ctx: click.Context) -> None:
    """A group run alone prints its help as any help is printed (stdout, exit 0), not as an error."""
    if ctx.invoked_subcommand is None:
        click.echo(ctx.get_help())
        ctx.exit(0)


@click.group(
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
    invoke_without_command=True,
    no_args_is_help=False,
    subcommand_metavar="COMMAND [ARGS]...",
)
@click.version_option(package_name="piping-server", prog_name="piping", message="%(prog)s %(version)s")
@click.option(
    "--debug",
    is_flag=True,
    envvar=DEBUG_ENV,
    help=f"Print the traceback of an unexpected exception (a bug) too [env: {DEBUG_ENV}].",
)
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """Send and get files, folders and streams through a Piping Server; tunnel TCP over it.

    \b
    piping send https://ppng.io/mypath FILE...   (on one machine)
    piping get  https://ppng.io/mypath -o DEST   (on another)
    """
    _help_without_command(ctx)


@cli.command(epilog=_EPILOG_SEND)
@click.argument("url")
@click.argument("files", nargs=-1, type=click.Path(exists=True, allow_dash=True))
@click.option("--n", "-n", "n", type=click.IntRange(min=1), help="Number of receivers (each gets a copy).")
@click.option("--live", is_flag=True, help="A live stream: receivers join and leave at any time (not with --n).")
@click.option("--name", metavar="NAME", help="File name announced to receivers (default: the file's own).")
@click.option("--content-type", metavar="TYPE", help="Content-Type of a single file or stdin.")
@exchange_options
@_crypto(confirm=True)
@_common
def send(
    url: str,
    files: tuple[str, ...],
    n: int | None,
    live: bool,
    name: str | None,
    content_type: str | None,
    exchange: bool,
    yes: bool,
    passphrase: str | None,
    encrypt: bool,
    server: str | None,
    quiet: bool,
    insecure: bool,
) -> None:
    """Send FILES (files and folders; none or '-': stdin) to URL.

    One file travels as itself, with its name; several files or a folder travel as one
    streamed tar that `piping get -o DEST` unpacks. The command ends when every receiver
    got everything, and fails if one went away before.
    """
    if exchange:
        _check_exchange_alone(passphrase, encrypt, n=n, live=live)
    secret = _passphrase(passphrase, encrypt, confirm=True)
    reporter = CliReporter(quiet)
    source: Any
    if not files or files == ("-",):
        source = sys.stdin.buffer
        if sys.stdin.isatty() and not quiet:
            click.echo("piping: reading from stdin (end with Ctrl-D)", err=True)
    elif "-" in files:
        raise click.UsageError("'-' (stdin) cannot be mixed with files")
    else:
        source = files[0] if len(files) == 1 else list(files)
    if exchange:
        show, ask = code_confirmer(yes, "sending")
        run(
            send_exchange_async(
                url,
                source,
                server=server,
                filename=name,
                content_type=content_type,
                on_code=show,
                confirm=ask,
                reporter=reporter,
                verify_tls=not insecure,
            )
        )
        return
    run(
        send_async(
            url,
            source,
            server=server,
            n=n,
            live=live,
            passphrase=secret,
            filename=name,
            content_type=content_type,
            reporter=reporter,
            verify_tls=not insecure,
        )
    )


@cli.command(epilog=_EPILOG_GET)
@click.argument("url")
@click.option(
    "--output",
    "-o",
    metavar="DEST",
    type=click.Path(dir_okay=True, writable=True),
    help="File or folder to write (existing files are overwritten); default: stdout.",
)
@click.option("--create-dirs", is_flag=True, help="Create the missing folders of DEST (as curl --create-dirs).")
@click.option("--n", "-n", "n", type=click.IntRange(min=1), help="Number of receivers, as the sender gave.")
@click.option("--from-start", is_flag=True, help="Wait for a live sender (send --live) and get its stream from byte 0.")
@click.option("--no-extract", is_flag=True, help="Save a received folder as its .tar instead of unpacking it.")
@exchange_options
@_crypto(confirm=False)
@_common
def get(
    url: str,
    output: str | None,
    n: int | None,
    from_start: bool,
    create_dirs: bool,
    no_extract: bool,
    exchange: bool,
    yes: bool,
    passphrase: str | None,
    encrypt: bool,
    server: str | None,
    quiet: bool,
    insecure: bool,
) -> None:
    """Receive from URL into DEST (-o) or stdout.

    DEST/ or an existing folder receives a file under the sender's name, or a folder's
    entries; any other DEST is the file, or the folder, to write. As with curl -o, existing
    files are overwritten (folders receive what arrives) and the folder that DEST is in must
    exist (--create-dirs creates it). The file or folder appears only once all of it arrived
    (and, encrypted, was verified): a cut stream or a wrong passphrase leaves nothing behind.
    """
    if exchange:
        _check_exchange_alone(passphrase, encrypt, n=n, live=from_start)
    secret = _passphrase(passphrase, encrypt, confirm=False)
    reporter = CliReporter(quiet)
    dest: Any = sys.stdout.buffer if output in (None, "-") else output
    if exchange:
        show, ask = code_confirmer(yes, "receiving")
        result = run(
            get_exchange_async(
                url,
                dest,
                server=server,
                extract=not no_extract,
                create_dirs=create_dirs,
                on_code=show,
                confirm=ask,
                reporter=reporter,
                verify_tls=not insecure,
            )
        )
        if result.paths and not quiet:
            click.echo(f"piping: saved {', '.join(str(p) for p in result.paths)}", err=True)
        return
    result = run(
        get_async(
            url,
            dest,
            server=server,
            n=n,
            from_start=from_start,
            passphrase=secret,
            extract=not no_extract,
            create_dirs=create_dirs,
            reporter=reporter,
            verify_tls=not insecure,
        )
    )
    if result.paths and not quiet:
        click.echo(f"piping: saved {', '.join(str(p) for p in result.paths)}", err=True)


@cli.group(
    epilog=_EPILOG_TUNNEL, invoke_without_command=True, no_args_is_help=False, subcommand_metavar="COMMAND [ARGS]..."
)
@click.pass_context
def tunnel(ctx: click.Context) -> None:
    """Forward TCP connections over two Piping paths.

    Compatible with piping-tunnel and the curl + nc/socat one-liners.
    """
    _help_without_command(ctx)


def _tunnel_options(default_host: str, port_help: str) -> Callable[[F], F]:
    def deco(f: F) -> F:
        f = click.argument("paths", nargs=-1, required=True)(f)
        f = click.option("--port", "-p", type=click.IntRange(0, 65535), required=True, help=port_help)(f)
        f = click.option("--host", default=default_host, show_default=True, help="Host of that port.")(f)
        f = click.option(
            "--multiplex", "-m", is_flag=True, help="Carry many connections over the two paths (both ends)."
        )(f)
        return _common(f)

    return deco


def _logger(quiet: bool) -> Callable[[str], None]:
    def log(line: str) -> None:
        if not quiet:
            click.echo(line, err=True)

    return log


def _tunnel_paths(paths: tuple[str, ...], server: str | None) -> TunnelPaths:
    """The tunnel's two URLs; a bad path or a missing server is a usage error."""
    try:
        return tunnel_paths(paths, server)
    except PipingError as e:
        raise click.UsageError(str(e)) from None


@tunnel.command("server", epilog=_EPILOG_TUNNEL)
@_tunnel_options("localhost", "Port of the service to expose (e.g. 22).")
def tunnel_server(
    paths: tuple[str, ...], port: int, host: str, multiplex: bool, server: str | None, quiet: bool, insecure: bool
) -> None:
    """Server host: GET PATH1 into the service at --host:--port, its answers POSTed to PATH2."""
    tp = _tunnel_paths(paths, server)
    if not multiplex and not quiet:
        click.echo(
            f"[INFO] Client host (curl + nc): curl -sSN {tp.server_to_client} | nc -l 2222 | "
            f"curl -sSNT - {tp.client_to_server}",
            err=True,
        )
    run(run_tunnel_server(tp, host, port, multiplex=multiplex, verify_tls=not insecure, log=_logger(quiet)))


@tunnel.command("client", epilog=_EPILOG_TUNNEL)
@_tunnel_options("127.0.0.1", "Local port to listen on (e.g. 2222).")
def tunnel_client(
    paths: tuple[str, ...], port: int, host: str, multiplex: bool, server: str | None, quiet: bool, insecure: bool
) -> None:
    """Client host: listen on --host:--port; POST what arrives to PATH1, answer with GET PATH2."""
    tp = _tunnel_paths(paths, server)
    run(run_tunnel_client(tp, host, port, multiplex=multiplex, verify_tls=not insecure, log=_logger(quiet)))


@cli.command()
@click.argument("shell", type=click.Choice(["bash", "zsh", "fish"]))
def completion(shell: str) -> None:
    """Print the shell completion script for SHELL.

    \b
    bash: eval "$(piping completion bash)"     (e.g. in ~/.bashrc)
    zsh:  eval "$(piping completion zsh)"      (in ~/.zshrc)
    fish: piping completion fish > ~/.config/fish/completions/piping.fish
    """
    from click.shell_completion import get_completion_class

    cls = get_completion_class(shell)
    assert cls is not None
    click.echo(cls(cli, {}, "piping", "_PIPING_COMPLETE").source())


def main() -> None:
    """Entry point of the ``piping`` script."""
    run_click(cli, "piping")
