"""The ``piping-server`` command: the reference's flags, with the same meanings."""

from __future__ import annotations

import logging
import sys

import click

from .. import __version__
from ._serve import ServerOptions, StartupError, run


@click.command(context_settings={"help_option_names": ["--help", "-h"], "max_content_width": 100})
@click.option("--host", default=None, metavar="HOST", help="Address to listen on (default: every interface).")
@click.option("--http-port", type=click.IntRange(0, 65535), default=8080, show_default=True, help="HTTP port.")
@click.option("--enable-https", is_flag=True, help="Also serve HTTPS (needs --https-port, --crt-path, --key-path).")
@click.option("--https-port", type=click.IntRange(0, 65535), default=None, help="HTTPS port.")
@click.option("--crt-path", type=click.Path(dir_okay=False), default=None, help="Certificate file (PEM).")
@click.option("--key-path", type=click.Path(dir_okay=False), default=None, help="Private key file (PEM).")
@click.version_option(__version__, "--version", message="%(version)s")
def main(
    host: str | None,
    http_port: int,
    enable_https: bool,
    https_port: int | None,
    crt_path: str | None,
    key_path: str | None,
) -> None:
    """Piping Server: stream data between any devices over pure HTTP.

    A sender POSTs or PUTs a body to any path; receivers GET the same path.
    """
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr)
    options = ServerOptions(
        host=host,
        http_port=http_port,
        enable_https=enable_https,
        https_port=https_port,
        crt_path=crt_path,
        key_path=key_path,
    )
    try:
        run(options)
    except StartupError as exc:
        click.echo(f"piping-server: error: {exc}", err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        pass
