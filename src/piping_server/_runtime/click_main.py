"""What both command lines (``piping-server`` and ``piping``) share: one-line usage errors."""

from __future__ import annotations

import sys

import click


def run_click(command: click.Command, prog_name: str) -> None:
    """Run a click command; a usage error is one line on stderr (and exit code 2), never a usage page.

    click's own standalone mode prints the usage, a hint and the error on separate lines; scripts
    and people read one ``prog: error: ...`` line better, as with argparse-style tools.
    """
    try:
        code = command.main(prog_name=prog_name, standalone_mode=False)
    except click.ClickException as exc:
        where = exc.ctx.command_path if isinstance(exc, click.UsageError) and exc.ctx is not None else prog_name
        hint = f" (see '{where} --help')" if isinstance(exc, click.UsageError) else ""
        click.echo(f"{prog_name}: error: {exc.format_message()}{hint}", err=True)
        sys.exit(exc.exit_code)
    except click.Abort:
        click.echo(f"{prog_name}: aborted", err=True)
        sys.exit(1)
    sys.exit(code if isinstance(code, int) else 0)
