"""The one way the three command lines (`dora-data`, `dora-train`, `dora-eval`) report failures.

Every command runs inside `OneLineGroup.invoke`: a `UserFacingError` (bad input, disk full, training
diverged; see pipeline/errors.py), or an OSError/RuntimeError/MemoryError whose cause is a full disk,
a read-only or forbidden path or memory running out (`os_error_line`), becomes `error: MESSAGE` on
stderr and exit status 2, Ctrl-C a resume hint and exit status 130. No traceback reaches the user for
these. Libraries never import this module; only the command lines do.
"""

from __future__ import annotations

import sys

import click

from pipeline.errors import UserFacingError, os_error_line

EXIT_ERROR, EXIT_INTERRUPTED = 2, 130


class OneLineGroup(click.Group):
    """A click group whose commands report `UserFacingError`s as one line (exit 2) and Ctrl-C as a hint."""

    interrupted_hint = "run the same command again to resume"

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except UserFacingError as e:
            print(f"error: {e}", file=sys.stderr)
            sys.exit(EXIT_ERROR)
        except (OSError, RuntimeError, MemoryError) as e:
            line = os_error_line(e)
            if line is None:
                raise
            print(f"error: {line}", file=sys.stderr)
            sys.exit(EXIT_ERROR)
        except KeyboardInterrupt:
            print(f"interrupted: {self.interrupted_hint}", file=sys.stderr)
            sys.exit(EXIT_INTERRUPTED)


class DefaultCommandGroup(OneLineGroup):
    """A `OneLineGroup` where arguments that do not start with a command name go to `default_command`:
    `dora-train --shards X` is `dora-train train --shards X`, and `dora-train export ...` is a real command."""

    default_command = "train"

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if not args or (args[0] not in self.commands and args[0] != "--version"):
            args = [self.default_command, *args]
        return super().parse_args(ctx, args)


def version_option(prog: str):
    """`--version` on a command line: the installed dora-wt version and Python's."""

    def show(ctx: click.Context, _param, value: bool) -> None:
        if not value or ctx.resilient_parsing:
            return
        from importlib.metadata import PackageNotFoundError, version

        try:
            ours = version("dora-wt")
        except PackageNotFoundError:
            ours = "not installed (running from a checkout)"
        click.echo(f"{prog} {ours} (python {sys.version.split()[0]})")
        ctx.exit()

    return click.option("--version", is_flag=True, expose_value=False, is_eager=True, callback=show,
                        help="Show the version and exit.")
