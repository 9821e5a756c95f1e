"""The `staff` command. Thin: parse options, configure logging, call the pipeline.

Heavy imports (torch, transformers) happen inside the commands so that `--help` is instant.
The commands are registered in the order ``staff --help`` lists them: ``selection``'s, then
``training``'s.
"""

from __future__ import annotations

import sys

import typer

from . import selection, training  # noqa: F401  (registers the commands)
from .common import _is_main_process, _setup_logging, app  # noqa: F401


def main(argv: list[str] | None = None) -> None:
    """The `staff` command. A usage error (unknown option, missing value) is one line on stderr
    and exit code 2 like every other error, not click's framed box of five."""
    try:
        code = app(args=argv, prog_name="staff", standalone_mode=False)
    except Exception as err:
        # By class name: typer >= 0.20 carries its own copy of click's exceptions.
        kinds = {cls.__name__ for cls in type(err).__mro__}
        if "NoArgsIsHelpError" in kinds:  # `staff` alone: the help, as before
            err.show()
            sys.exit(err.exit_code)
        if "UsageError" in kinds:
            where = err.ctx.command_path if getattr(err, "ctx", None) else "staff"
            typer.echo(f"error: {err.format_message()} (see `{where} --help`)", err=True)
            sys.exit(2)
        if "ClickException" in kinds:
            typer.echo(f"error: {err.format_message()}", err=True)
            sys.exit(err.exit_code)
        if "Abort" in kinds:
            sys.exit(1)
        raise
    sys.exit(code if isinstance(code, int) else 0)

