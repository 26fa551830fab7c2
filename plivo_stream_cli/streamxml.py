"""Stream XML: the `<Stream>` element's options, their validation, and building the XML.

Pure. The XML is written here by the rules of the plivo SDK's `plivoxml` builder (attribute order,
`true`/`false`, lxml's escaping and pretty-printing): importing plivoxml loads the whole SDK,
about 0.6 s for one element. tests/test_streamxml.py holds the output equal to plivoxml's.

extraHeaders rules (Plivo documents only the `key=value;key=value` shape and the 512-byte cap, so
pstream picks the strict side): keys are 1+ ASCII letters, digits, `_` or `-`; values are
non-empty text without control characters, percent-encoded (UTF-8) so `;`, `,` and `=` cannot
break the pairs; the 512 bytes are counted on the encoded attribute.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import quote, urlsplit

from plivo_stream_cli.errors import UsageError
from plivo_stream_cli.formats import DEFAULT_FORMAT, MediaFormat

MAX_URL_LENGTH = 2048
MAX_EXTRA_HEADERS_BYTES = 512
AUDIO_TRACKS = ("inbound", "outbound", "both")
CALLBACK_METHODS = ("GET", "POST")
DEFAULT_STREAM_TIMEOUT = 86400
XML_DECLARATION = '<?xml version="1.0" encoding="UTF-8"?>'

_HEADER_KEY = re.compile(r"[A-Za-z0-9_-]+")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


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


def validate(opts: StreamOptions) -> list[str]:
    """Check `opts` against Plivo's rules: returns warnings, raises UsageError on a violation."""
    warnings = _check_url(opts.url)
    _check_track(opts)
    _check_timeout(opts.stream_timeout)
    _check_callback(opts)
    _check_extra_headers(opts.extra_headers)
    return warnings


def format_extra_headers(headers: Mapping[str, str]) -> str:
    """The extraHeaders attribute: `k=v;k2=v2` with each value percent-encoded."""
    return ";".join(f"{key}={quote(value, safe='')}" for key, value in headers.items())


def build_xml(opts: StreamOptions, *, speak: str | None = None) -> str:
    """A pretty `<Response>` (with the XML declaration): an optional `<Speak>`, then `<Stream>`.

    Validates first, so it never builds XML Plivo would reject.
    """
    validate(opts)
    if speak is not None and not speak.strip():
        raise UsageError("--speak needs some text, e.g. --speak 'Connecting you now'")
    children = []
    if speak is not None:
        children.append(f"<Speak>{_text(speak)}</Speak>")
    attrs = "".join(f' {name}="{_attribute(_plivo_value(value))}"' for name, value in
                    _attributes(opts).items())  # fmt: skip
    children.append(f"<Stream{attrs}>{_text(opts.url)}</Stream>")
    body = "".join(f"  {child}\n" for child in children)
    return f"{XML_DECLARATION}\n<Response>\n{body}</Response>\n"


# What XML 1.0 cannot hold at all (lxml refuses it too): C0 controls but tab, CR and LF,
# lone surrogates, U+FFFE and U+FFFF.
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def _checked(value: str) -> str:
    bad = _NOT_XML.search(value)
    if bad is not None:
        raise UsageError(f"{value[:40]!r} holds {bad.group()!r}, which XML cannot carry")
    return value


def _text(value: str) -> str:
    """Element text escaped as lxml escapes it."""
    escaped = _checked(value).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return escaped.replace("\r", "&#13;")


def _attribute(value: str) -> str:
    """An attribute value escaped as lxml escapes it (in double quotes)."""
    escaped = _text(value).replace('"', "&quot;")
    return escaped.replace("\n", "&#10;").replace("\t", "&#9;")


def _plivo_value(value: object) -> str:
    """plivoxml's `map_type`: booleans as `true`/`false`, everything else as text."""
    return str(value).lower() if isinstance(value, bool) else str(value)


def _attributes(opts: StreamOptions) -> dict[str, object]:
    """The `<Stream>` attributes that are set, in plivoxml's order (its `to_dict`)."""
    attrs: dict[str, object | None] = {
        "bidirectional": opts.bidirectional,
        "audioTrack": opts.audio_track,
        "streamTimeout": opts.stream_timeout,
        "statusCallbackUrl": opts.status_callback_url or None,
        "statusCallbackMethod": opts.status_callback_method if opts.status_callback_url else None,
        "contentType": opts.media_format.content_type,
        "extraHeaders": format_extra_headers(opts.extra_headers) if opts.extra_headers else None,
        "keepCallAlive": opts.keep_call_alive,
    }
    return {name: value for name, value in attrs.items() if value is not None}


def _check_url(url: str) -> list[str]:
    parts = urlsplit(url.strip())
    if parts.scheme.lower() not in ("ws", "wss") or not parts.netloc:
        raise UsageError(
            f"stream URL {url!r} is not a WebSocket URL: "
            "give your server's wss:// address, e.g. wss://example.com/stream"
        )
    if len(url) > MAX_URL_LENGTH:
        raise UsageError(
            f"stream URL is {len(url)} characters; Plivo accepts at most {MAX_URL_LENGTH}: "
            "shorten the path or query (pass data in --extra-header instead)"
        )
    if _CONTROL.search(url) or " " in url:
        raise UsageError("stream URL contains spaces or control characters: percent-encode them")
    if parts.scheme.lower() == "ws":
        return ["ws:// is unencrypted: fine for local tests, but Plivo needs wss:// in production"]
    return []


def _check_track(opts: StreamOptions) -> None:
    if opts.audio_track not in AUDIO_TRACKS:
        raise UsageError(
            f"audio track {opts.audio_track!r} is unknown: use one of {', '.join(AUDIO_TRACKS)}"
        )
    if opts.bidirectional and opts.audio_track != "inbound":
        raise UsageError(
            f"a bidirectional stream cannot use audio track {opts.audio_track!r}: "
            "use --audio-track inbound, or --no-bidirectional to receive that track"
        )


def _check_timeout(timeout: int | None) -> None:
    if timeout is None:
        return
    if isinstance(timeout, bool) or not isinstance(timeout, int) or timeout <= 0:
        raise UsageError(
            f"stream timeout must be a positive whole number of seconds (got {timeout!r}); "
            f"leave it out for Plivo's default of {DEFAULT_STREAM_TIMEOUT}"
        )


def _check_callback(opts: StreamOptions) -> None:
    if opts.status_callback_method not in CALLBACK_METHODS:
        raise UsageError(
            f"status callback method {opts.status_callback_method!r} is not supported: "
            "use GET or POST"
        )
    url = opts.status_callback_url
    if url is None:
        return
    parts = urlsplit(url)
    if parts.scheme.lower() not in ("http", "https") or not parts.netloc:
        raise UsageError(
            f"status callback URL {url!r} is not an http(s) URL: "
            "give one like https://example.com/stream-status"
        )


def _check_extra_headers(headers: Mapping[str, str]) -> None:
    for key, value in headers.items():
        if not _HEADER_KEY.fullmatch(key):
            raise UsageError(
                f"extra header name {key!r} is not allowed: "
                "use only letters, digits, '_' and '-' (e.g. userId, session-id)"
            )
        if not value or _CONTROL.search(value):
            raise UsageError(
                f"extra header {key!r} needs a value without control characters, e.g. {key}=42"
            )
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise UsageError(f"extra header {key!r} has a value that is not valid text") from None
    size = len(format_extra_headers(headers).encode("ascii"))
    if size > MAX_EXTRA_HEADERS_BYTES:
        raise UsageError(
            f"extra headers take {size} bytes once encoded; Plivo allows at most "
            f"{MAX_EXTRA_HEADERS_BYTES}: shorten them, or pass an id and look the rest up "
            "in your server"
        )
