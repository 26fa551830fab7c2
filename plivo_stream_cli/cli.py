"""The Typer application: parses flags, calls the core, renders. No logic lives here.

Command modules register themselves; each imports its heavy dependencies (plivo, pyngrok, httpx,
websockets) inside the command body so that `pstream --help` and shell completion start fast.
Help is plain text (no rich rendering, see `commands.base`), and the root options are plain
flags so that parsing them never reaches Typer's pydantic-backed coercion.
"""

from __future__ import annotations

import os
import sys

import typer

from plivo_stream_cli import __version__
from plivo_stream_cli.commands import shellcomplete as completion
from plivo_stream_cli.commands.base import Registry, lazy_group
from plivo_stream_cli.console import output
from plivo_stream_cli.errors import ExitCode

# Command modules register on `commands`; the root builds each one only when it is used.
commands = Registry()
app = typer.Typer(
    name="pstream",
    cls=lazy_group(commands),
    help=(
        "Develop, test and debug Plivo Audio Streaming apps from the terminal.\n\n"
        "Start with `pstream demo`; run a local stream server with `pstream serve`; "
        "play Plivo's side with `pstream simulate`. Data goes to stdout, status and errors to "
        "stderr; exit codes are listed in the README."
    ),
    epilog="Example: pstream demo",
    no_args_is_help=True,
    rich_markup_mode=None,
    add_completion=False,  # `pstream completion SHELL` prints the scripts instead
    context_settings={"help_option_names": ["-h", "--help"]},
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        output.data(f"pstream {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    quiet: bool = typer.Option(
        False, "--quiet", "-q", help="Only data, warnings and errors: no status lines."
    ),
    verbose: bool = typer.Option(
        False, "--verbose", "-v", help="More detail on stderr (e.g. each API request)."
    ),
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """Develop, test and debug Plivo Audio Streaming apps from the terminal."""
    output.reset_consoles()
    output.VERBOSITY.level = -1 if quiet else int(verbose)
    output.show_adapter_logs()


def _register_commands() -> None:
    from plivo_stream_cli.commands import COMMAND_MODULES

    for module in COMMAND_MODULES:
        module.register(commands)


_register_commands()


def main() -> None:
    """Console-script entry point."""
    _print_anything()
    instruction = os.environ.get(completion.COMPLETE_VAR)
    if instruction:
        import typer.main

        code = completion.answer(typer.main.get_command(app), instruction)
        sys.exit(1 if code is None else code)
    try:
        app(prog_name=completion.PROG_NAME)
    except KeyboardInterrupt:  # pragma: no cover - raised outside a command
        sys.exit(int(ExitCode.INTERRUPTED))


def _print_anything() -> None:
    """Never fail on text that cannot be encoded (a peer's lone surrogate such as \\ud800).

    It is written as `\\ud800` instead, which inside a JSON string is the same escape.
    """
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            reconfigure(errors="backslashreplace")
