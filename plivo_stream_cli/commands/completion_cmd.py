"""`pstream completion bash|zsh|fish`: print a shell completion script (no shell detection)."""

from __future__ import annotations

from enum import Enum

import typer

from plivo_stream_cli.commands.base import Registry
from plivo_stream_cli.commands.common import add

COMPLETION_EPILOG = (
    "Example: pstream completion bash > ~/.local/share/bash-completion/completions/pstream\n\n"
    "zsh: pstream completion zsh > ~/.zfunc/_pstream (with fpath+=~/.zfunc before compinit); "
    "fish: pstream completion fish > ~/.config/fish/completions/pstream.fish"
)


class Shell(str, Enum):
    BASH = "bash"
    ZSH = "zsh"
    FISH = "fish"


def register(app: Registry) -> None:
    add(app, completion, "completion", epilog=COMPLETION_EPILOG)


def completion(
    ctx: typer.Context,
    shell: Shell = typer.Argument(..., help="bash, zsh or fish.", show_default=False),
) -> None:
    """Print the shell completion script for SHELL on stdout, to save or source."""
    from plivo_stream_cli.commands import shellcomplete as scripts
    from plivo_stream_cli.console import output

    output.data(scripts.script(shell.value, ctx.find_root().command).rstrip("\n"))
