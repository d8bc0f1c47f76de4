"""Usage errors (an unknown option, a missing one, a value an option cannot take) in sweep's own
style: one `sweep: error:` line and exit code 2, as every other mistake is, instead of Click's
usage block of four lines."""

from __future__ import annotations

import sys

import typer
from typer.core import TyperGroup


def _click():
    """The Click that Typer uses: its own copy from typer 0.22 on, the click package before."""
    import typer.core as core

    return getattr(core, "_click", None) or core.click


def usage_line(error) -> str:
    """`error` (a Click usage error) as one line, with where to read more."""
    from .limits import printable

    message = " ".join(error.format_message().split()).rstrip(".")
    if message[:1].isupper() and message[1:2].islower():
        message = message[0].lower() + message[1:]
    ctx = getattr(error, "ctx", None)
    path = getattr(ctx, "command_path", "") or ""
    # named as it is called ('sweep'), whatever name a caller gave the program (tests: 'root')
    more = f"; see `{' '.join(['sweep', *path.split()[1:]])} --help`" if path else ""
    return f"sweep: error: {printable(message)}{more}"


class OneLineUsage(TyperGroup):
    """The `sweep` group: runs as Typer does, except that a usage error is one line on stderr."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        click = _click()
        no_args = getattr(click.exceptions, "NoArgsIsHelpError", None)
        try:
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.exceptions.ClickException as e:
            if no_args is not None and isinstance(e, no_args):  # `sweep` alone: the help, as before
                e.show()
            else:
                typer.echo(usage_line(e), err=True)
            sys.exit(e.exit_code)
        except typer.Abort:  # (typer's own from typer 0.22 on, Click's before)
            typer.echo("sweep: aborted", err=True)
            sys.exit(1)
        sys.exit(code if isinstance(code, int) else 0)
