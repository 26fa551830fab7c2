"""`pstream xml`: print validated Stream XML."""

from __future__ import annotations

import typer

from plivo_stream_cli.commands.common import add


def register(app: typer.Typer) -> None:
    add(app, xml, "xml")


def xml(url: str = typer.Argument(..., help="The wss:// URL of your stream server.")) -> None:
    """Print Stream XML for URL (placeholder until the foundation lands)."""
    raise NotImplementedError
