"""What every command shares: error handling, and the options that recur across commands."""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import Any, TypeVar

import typer

from plivo_stream_cli.commands.base import Command, Registry
from plivo_stream_cli.console import output
from plivo_stream_cli.errors import ConfigError, ExitCode, PstreamError

F = TypeVar("F", bound=Callable[..., Any])


def guarded(fn: F) -> F:
    """Run a command so expected errors become one stderr line and the table's exit code."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except PstreamError as exc:
            output.error(exc.message)
            raise typer.Exit(int(exc.exit_code)) from None
        except (KeyboardInterrupt, typer.Abort):  # a prompt turns Ctrl-C into Abort (exit 1)
            output.status("interrupted")
            raise typer.Exit(int(ExitCode.INTERRUPTED)) from None

    return wrapper  # type: ignore[return-value]


def add(app: typer.Typer | Registry, fn: Callable[..., Any], name: str, **kwargs: Any) -> None:
    """Register `fn` as command `name` with the shared error handling and help conventions."""
    kwargs.setdefault("cls", Command)
    app.command(name, **kwargs)(guarded(fn))


JSON_OPTION: Any = typer.Option(False, "--json", help="Print machine-readable JSON on stdout.")

AUTH_TOKEN_HELP = "Plivo Auth Token (prefer the PLIVO_AUTH_TOKEN environment variable)."


def auth_token_option() -> Any:
    return typer.Option(None, "--auth-token", help=AUTH_TOKEN_HELP, show_default=False)


def resolve_token(
    flag_value: str | None, *, required: bool, env: str = "PLIVO_AUTH_TOKEN"
) -> str | None:
    """The auth token from the flag or the environment; warns when it came from a flag."""
    if flag_value:
        output.warn(
            f"a token given as a flag is visible to other users in `ps`; prefer setting {env}"
        )
        return flag_value
    token = os.environ.get(env) or None
    if token is None and required:
        raise ConfigError(f"no auth token: set {env} or pass --auth-token")
    return token
