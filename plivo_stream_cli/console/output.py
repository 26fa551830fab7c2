"""Where output goes: data on stdout, status and errors on stderr, honouring NO_COLOR and -q/-v.

Every command prints through these helpers so the conventions are the same everywhere.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console


@dataclass
class Verbosity:
    """Process-wide verbosity set by the root `-q/--quiet` and `-v/--verbose` flags."""

    level: int = 0  # -1 quiet, 0 normal, 1+ verbose


VERBOSITY = Verbosity()
_consoles: dict[bool, Console] = {}


def console(*, stderr: bool = False) -> Console:
    """The shared rich console for stdout (data) or stderr (status)."""
    if stderr not in _consoles:
        from rich.console import Console

        _consoles[stderr] = Console(
            stderr=stderr,
            # NO_COLOR (https://no-color.org): no colour and, with no colour system at all,
            # no bold or dim either, so not one escape code.
            color_system=None if no_color() else "auto",
            highlight=False,
            soft_wrap=True,
        )
    return _consoles[stderr]


def no_color() -> bool:
    """True when the user asked for no colour (NO_COLOR set and not empty)."""
    return bool(os.environ.get("NO_COLOR"))


def reset_consoles() -> None:
    """Forget cached consoles (tests swap sys.stdout/sys.stderr between runs)."""
    _consoles.clear()


def is_terminal(*, stderr: bool = False) -> bool:
    """True when the stream is an interactive terminal that can redraw (so live widgets make
    sense): not when piped or redirected, and not on TERM=dumb (an editor's shell, a CI log)."""
    if os.environ.get("TERM") == "dumb":
        return False
    stream = sys.stderr if stderr else sys.stdout
    return bool(getattr(stream, "isatty", lambda: False)())


def data(text: str) -> None:
    """Print plain data on stdout (never styled, never suppressed by -q)."""
    sys.stdout.write(text if text.endswith("\n") else text + "\n")
    sys.stdout.flush()


def tsv(columns: Sequence[str], rows: Iterable[Sequence[str]]) -> None:
    """A table on stdout as tab-separated values (a header line, then one line per row).

    What pstream prints for a table when stdout is not a terminal: whole ids, one record per
    line, easy to `cut` or `awk`. A tab or newline left inside a cell is escaped as `\\t`, `\\n`.
    """
    for row in (columns, *rows):
        data("\t".join(_tsv_cell(cell) for cell in row))


def _tsv_cell(cell: str) -> str:
    return cell.replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


def json_line(obj: Any) -> None:
    """Print one compact JSON document on stdout."""
    import json  # here, not at the top: `pstream --help` and completion never need it

    data(json.dumps(obj, separators=(",", ":"), ensure_ascii=False, default=str))


def status(message: str) -> None:
    """A status line on stderr (hidden by -q). `message` may use rich markup."""
    if VERBOSITY.level >= 0:
        console(stderr=True).print(message)


def verbose(message: str) -> None:
    """A detail on stderr shown only with -v (plain text: brackets in it are printed as is)."""
    if VERBOSITY.level >= 1:
        console(stderr=True).print(f"[dim]{_escape(message)}[/dim]")


def warn(message: str) -> None:
    """A warning on stderr (shown even with -q: warnings matter)."""
    console(stderr=True).print(f"[yellow]warning:[/yellow] {_escape(message)}")


def error(message: str) -> None:
    """The one-line error that precedes a non-zero exit."""
    console(stderr=True).print(f"[red]error:[/red] {_escape(message)}")


def show_adapter_logs() -> None:
    """Route the adapters' `pstream.*` log records to stderr: DEBUG as `verbose`, WARNING up as
    `warn`. Adapters log instead of printing, so they need no terminal (and no rich)."""
    import logging

    class _ToStderr(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            message = record.getMessage()
            if record.levelno >= logging.WARNING:
                warn(message)
            elif record.levelno >= logging.INFO:
                status(_escape(message))
            else:
                verbose(message)

    logger = logging.getLogger("pstream")
    if not logger.handlers:
        logger.addHandler(_ToStderr())
    logger.setLevel(logging.DEBUG)
    logger.propagate = False


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)
