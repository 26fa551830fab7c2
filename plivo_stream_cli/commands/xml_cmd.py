"""`pstream xml`: print validated Stream XML for an Answer URL."""

from __future__ import annotations

from pathlib import Path

import typer

from plivo_stream_cli.commands.base import Registry
from plivo_stream_cli.commands.common import add
from plivo_stream_cli.commands.stream_options import (
    AUDIO_TRACK,
    BIDIRECTIONAL,
    CONTENT_TYPE,
    EXTRA_HEADER,
    KEEP_CALL_ALIVE,
    STATUS_CALLBACK_METHOD,
    STATUS_CALLBACK_URL,
    STREAM_TIMEOUT,
    AudioTrack,
    CallbackMethod,
    ContentType,
    checked,
    stream_options_from_flags,
)
from plivo_stream_cli.console import output
from plivo_stream_cli.errors import UsageError


def register(app: Registry) -> None:
    add(app, xml, "xml")


def xml(
    url: str = typer.Argument(..., help="The wss:// URL of your stream server."),
    bidirectional: bool = BIDIRECTIONAL,
    keep_call_alive: bool = KEEP_CALL_ALIVE,
    content_type: ContentType = CONTENT_TYPE,
    audio_track: AudioTrack = AUDIO_TRACK,
    stream_timeout: int | None = STREAM_TIMEOUT,
    status_callback_url: str | None = STATUS_CALLBACK_URL,
    status_callback_method: CallbackMethod = STATUS_CALLBACK_METHOD,
    extra_header: list[str] | None = EXTRA_HEADER,
    speak: str | None = typer.Option(
        None, "--speak", metavar="TEXT", help="Say TEXT (a <Speak>) before the stream starts."
    ),
    output_file: Path | None = typer.Option(
        None, "--output", "-o", metavar="FILE", help="Write the XML to FILE instead of stdout."
    ),
) -> None:
    """Print the Stream XML your Answer URL returns to start a stream, validated first.

    Example: pstream xml --bidirectional --keep-call-alive wss://example.com/stream
    """
    from plivo_stream_cli import streamxml

    opts = checked(
        stream_options_from_flags(
            url,
            bidirectional=bidirectional,
            keep_call_alive=keep_call_alive,
            content_type=content_type,
            audio_track=audio_track,
            stream_timeout=stream_timeout,
            status_callback_url=status_callback_url,
            status_callback_method=status_callback_method,
            extra_header=extra_header,
        )
    )
    document = streamxml.build_xml(opts, speak=speak)
    if output_file is None:
        output.data(document)
        return
    _write(output_file, document)
    output.status(f"wrote {output_file}")


def _write(path: Path, document: str) -> None:
    try:
        path.write_text(document if document.endswith("\n") else document + "\n", "utf-8")
    except OSError as exc:
        raise UsageError(f"cannot write {path}: {exc.strerror or exc}") from None
