"""The Typer application: parses flags, calls the core, renders. No logic lives here.

Command modules register themselves; each imports its heavy dependencies (plivo, pyngrok, httpx,
websockets) inside the command body so that `pstream --help` and shell completion start fast.
"""

from __future__ import annotations

import sys

import typer

from plivo_stream_cli import __version__, output
from plivo_stream_cli.errors import ExitCode

app = typer.Typer(
    name="pstream",
    help=(
        "Develop, test and debug Plivo Audio Streaming apps from the terminal.\n\n"
        "Start with [bold]pstream demo[/bold]; run a local stream server with "
        "[bold]pstream serve[/bold]; play Plivo's side with [bold]pstream simulate[/bold]."
    ),
    no_args_is_help=True,
    rich_markup_mode="rich",
    context_settings={"help_option_names": ["-h", "--help"]},
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        output.data(f"pstream {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Only data and errors."),
    verbose: int = typer.Option(0, "--verbose", "-v", count=True, help="More detail on stderr."),
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """Develop, test and debug Plivo Audio Streaming apps from the terminal."""
    output.reset_consoles()
    output.VERBOSITY.level = -1 if quiet else verbose


def _register_commands() -> None:
    from plivo_stream_cli.commands import COMMAND_MODULES

    for module in COMMAND_MODULES:
        module.register(app)


_register_commands()


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    except KeyboardInterrupt:  # pragma: no cover - raised outside a command
        sys.exit(int(ExitCode.INTERRUPTED))
