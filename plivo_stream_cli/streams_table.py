"""Stream API payloads: the table `pstream get` shows, and the body `pstream start` sends.

Pure: takes parsed JSON (or a `StreamOptions`) and returns plain data; rendering is the command's
job. Liberal in what it reads: a list answer (`meta` + `objects`, with `meta.total_count` or
`meta.count`), one stream object, or a bare list; objects with or without `status`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from plivo_stream_cli.errors import ApiFailedError, UsageError
from plivo_stream_cli.feed import printable
from plivo_stream_cli.streamxml import StreamOptions, format_extra_headers

# (header, keys tried in order); the status column only appears when an object carries one.
_COLUMNS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("stream id", ("stream_id",)),
    ("status", ("status",)),
    ("service URL", ("service_url",)),
    ("audio track", ("audio_track",)),
    ("bidirectional", ("bidirectional",)),
    ("start", ("start_time",)),
    ("end", ("end_time",)),
    ("duration", ("bill_duration", "duration", "rounded_bill_duration")),
    ("billed", ("billed_amount",)),
)
EMPTY_CELL = "-"


@dataclass(frozen=True)
class StreamTable:
    """Headers and string cells, one row per stream; `total` is what the API says it holds."""

    columns: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    total: int


def stream_objects(doc: Any) -> list[Mapping[str, Any]]:
    """The stream objects in a Stream API answer, whichever shape it has."""
    if isinstance(doc, Mapping) and "objects" in doc:
        doc = doc["objects"] or []
    elif isinstance(doc, Mapping) and "stream_id" in doc:
        doc = [doc]
    if isinstance(doc, list) and all(isinstance(obj, Mapping) for obj in doc):
        return list(doc)
    raise ApiFailedError("the Plivo API answered with an unexpected shape (no stream objects)")


def reported_total(doc: Any, objects: list[Mapping[str, Any]]) -> int:
    """`meta.total_count`, else `meta.count`, else how many objects arrived."""
    meta = doc.get("meta") if isinstance(doc, Mapping) else None
    if isinstance(meta, Mapping):
        for key in ("total_count", "count"):
            value = meta.get(key)
            if isinstance(value, int) and not isinstance(value, bool):
                return value
    return len(objects)


def stream_table(doc: Any) -> StreamTable:
    """The rows `pstream get` shows for a list or a single-stream answer."""
    objects = stream_objects(doc)
    with_status = any("status" in obj for obj in objects)
    columns = [(name, keys) for name, keys in _COLUMNS if with_status or name != "status"]
    rows = tuple(tuple(_cell(obj, name, keys) for name, keys in columns) for obj in objects)
    return StreamTable(tuple(name for name, _ in columns), rows, reported_total(doc, objects))


def _cell(obj: Mapping[str, Any], column: str, keys: tuple[str, ...]) -> str:
    value = next((obj[key] for key in keys if obj.get(key) not in (None, "")), None)
    if value is None:
        return EMPTY_CELL
    if isinstance(value, bool):
        return "yes" if value else "no"
    if column == "duration" and isinstance(value, (int, float)):
        return f"{value}s"
    return printable(str(value))  # API text shown as the feed shows it: no bidi or escapes


def start_body(options: StreamOptions) -> dict[str, Any]:
    """The JSON body of Start Stream (`POST .../Call/{uuid}/Stream/`) for these options.

    The basics always travel; optional fields only when set. extra_headers uses the same
    `k=v;k2=v2` (values percent-encoded) spelling as the XML attribute.
    `keepCallAlive` is an XML-only attribute: asking for it here is a usage error.
    """
    if options.keep_call_alive:
        raise UsageError("--keep-call-alive only applies to Stream XML, not to `pstream start`")
    body: dict[str, Any] = {
        "service_url": options.url,
        "bidirectional": options.bidirectional,
        "audio_track": options.audio_track,
        "content_type": options.media_format.content_type,
    }
    if options.stream_timeout is not None:
        body["stream_timeout"] = options.stream_timeout
    if options.status_callback_url:
        body["status_callback_url"] = options.status_callback_url
        body["status_callback_method"] = options.status_callback_method
    if options.extra_headers:
        body["extra_headers"] = format_extra_headers(options.extra_headers)
    return body


def started_stream_id(doc: Any) -> str:
    """The `stream_id` of a Start Stream answer."""
    stream_id = doc.get("stream_id") if isinstance(doc, Mapping) else None
    if not isinstance(stream_id, str) or not stream_id:
        raise ApiFailedError("the Plivo API started no stream (its answer has no stream_id)")
    return stream_id
