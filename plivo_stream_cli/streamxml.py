"""Stream XML: the `<Stream>` element's options, their validation, and building the XML.

Pure (the plivo SDK's `plivoxml` builder is imported inside `build_xml` so start-up stays fast).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from plivo_stream_cli.formats import DEFAULT_FORMAT, MediaFormat


@dataclass(frozen=True)
class StreamOptions:
    """Every attribute of Plivo's `<Stream>` element, plus the WebSocket URL (its text).

    Shared by `pstream xml`, `pstream start` (REST) and serve's Answer URL.
    """

    url: str
    bidirectional: bool = False
    audio_track: str = "inbound"  # inbound | outbound | both
    stream_timeout: int | None = None  # seconds; Plivo's default is 86400
    status_callback_url: str | None = None
    status_callback_method: str = "POST"  # GET | POST
    media_format: MediaFormat = DEFAULT_FORMAT
    extra_headers: dict[str, str] = field(default_factory=dict)
    keep_call_alive: bool = False
