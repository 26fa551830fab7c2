"""The `<Stream>` attribute flags, declared once and shared by `xml`, `start` (REST) and `serve`.

A command declares the flags by using these module-level option defaults:

    def start(
        url: str = typer.Argument(...),
        bidirectional: bool = BIDIRECTIONAL,
        keep_call_alive: bool = KEEP_CALL_ALIVE,
        content_type: ContentType = CONTENT_TYPE,
        audio_track: AudioTrack = AUDIO_TRACK,
        stream_timeout: int | None = STREAM_TIMEOUT,
        status_callback_url: str | None = STATUS_CALLBACK_URL,
        status_callback_method: CallbackMethod = STATUS_CALLBACK_METHOD,
        extra_header: list[str] | None = EXTRA_HEADER,
    ) -> None:
        opts = stream_options_from_flags(url, bidirectional=..., ...)

then `streamxml.validate(opts)` (warnings to print; raises UsageError).
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import Enum
from typing import Any

import typer

from plivo_stream_cli.commands import values
from plivo_stream_cli.errors import UsageError
from plivo_stream_cli.formats import FormatError, MediaFormat
from plivo_stream_cli.streamxml import StreamOptions

PANEL = "Stream attributes"


class ContentType(str, Enum):
    """The three audio formats Plivo streams."""

    MULAW_8K = "audio/x-mulaw;rate=8000"
    L16_8K = "audio/x-l16;rate=8000"
    L16_16K = "audio/x-l16;rate=16000"


class AudioTrack(str, Enum):
    INBOUND = "inbound"
    OUTBOUND = "outbound"
    BOTH = "both"


class CallbackMethod(str, Enum):
    GET = "GET"
    POST = "POST"


BIDIRECTIONAL: Any = typer.Option(
    False,
    "--bidirectional/--no-bidirectional",
    help="Let your server play audio back (playAudio), not just listen.",
    rich_help_panel=PANEL,
)
KEEP_CALL_ALIVE: Any = typer.Option(
    False,
    "--keep-call-alive",
    help="Hold later XML until the stream ends; keep the call up after.",
    rich_help_panel=PANEL,
)
CONTENT_TYPE: Any = typer.Option(
    ContentType.MULAW_8K,
    "--content-type",
    case_sensitive=False,
    metavar="TYPE",
    help="audio/x-mulaw;rate=8000 (telephony's native), audio/x-l16;rate=8000 or "
    "audio/x-l16;rate=16000.",
    rich_help_panel=PANEL,
)
AUDIO_TRACK: Any = typer.Option(
    AudioTrack.INBOUND,
    "--audio-track",
    case_sensitive=False,
    metavar="TRACK",
    help="inbound (the caller), outbound (what the call plays) or both; "
    "bidirectional needs inbound.",
    rich_help_panel=PANEL,
)
STREAM_TIMEOUT: Any = values.number_option(
    None,
    "--stream-timeout",
    what="seconds",
    low=1,
    high=365 * values.DAY,
    integer=True,
    metavar="SECONDS",
    help="Stop streaming after this many seconds (Plivo's default: 86400).",
    show_default=False,
    rich_help_panel=PANEL,
)
STATUS_CALLBACK_URL: Any = typer.Option(
    None,
    "--status-callback-url",
    metavar="URL",
    help="http(s) URL Plivo calls on StartStream, StopStream, ...",
    show_default=False,
    rich_help_panel=PANEL,
)
STATUS_CALLBACK_METHOD: Any = typer.Option(
    CallbackMethod.POST,
    "--status-callback-method",
    case_sensitive=False,
    metavar="GET|POST",
    help="HTTP method of the status callback.",
    rich_help_panel=PANEL,
)
EXTRA_HEADER: Any = typer.Option(
    None,
    "--extra-header",
    metavar="KEY=VALUE",
    help="Metadata for the start event (repeatable; 512 bytes in all).",
    show_default=False,
    rich_help_panel=PANEL,
)


def stream_options_from_flags(
    url: str,
    *,
    bidirectional: bool = False,
    keep_call_alive: bool = False,
    content_type: ContentType | str = ContentType.MULAW_8K,
    audio_track: AudioTrack | str = AudioTrack.INBOUND,
    stream_timeout: int | None = None,
    status_callback_url: str | None = None,
    status_callback_method: CallbackMethod | str = CallbackMethod.POST,
    extra_header: Sequence[str] | None = None,
) -> StreamOptions:
    """StreamOptions from the shared flags (not yet validated: call `streamxml.validate`)."""
    return StreamOptions(
        url=url,
        bidirectional=bidirectional,
        audio_track=_value(audio_track).lower(),
        stream_timeout=stream_timeout,
        status_callback_url=status_callback_url,
        status_callback_method=_value(status_callback_method).upper(),
        media_format=_media_format(_value(content_type)),
        extra_headers=parse_extra_headers(extra_header or ()),
        keep_call_alive=keep_call_alive,
    )


def checked(opts: StreamOptions) -> StreamOptions:
    """`opts` once `streamxml.validate` passed, its warnings printed on stderr."""
    from plivo_stream_cli import streamxml
    from plivo_stream_cli.console import output

    for warning in streamxml.validate(opts):
        output.warn(warning)
    return opts


def parse_extra_headers(items: Sequence[str]) -> dict[str, str]:
    """`["userId=42", "tier=gold"]` to a dict; a malformed or repeated key is a UsageError."""
    headers: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise UsageError(
                f"--extra-header {item!r} must look like KEY=VALUE, e.g. --extra-header userId=42"
            )
        if key in headers:
            raise UsageError(f"--extra-header {key!r} is given twice: keep one of them")
        headers[key] = value
    return headers


def _media_format(content_type: str) -> MediaFormat:
    try:
        return MediaFormat.from_content_type(content_type)
    except FormatError as exc:
        raise UsageError(f"--content-type: {exc}") from None


def _value(choice: Enum | str) -> str:
    return str(choice.value) if isinstance(choice, Enum) else choice
