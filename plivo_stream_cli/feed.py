"""The event feed: one flat JSON-ready record per protocol event, for `--json`, `tail` and the view.

Pure. A record carries decoded metadata and the payload's size instead of the payload, so a feed
stays small enough for `jq` and a terminal. The same shape is produced live by `serve` and offline
from a capture file, so every consumer reads one format.
"""

from __future__ import annotations

from typing import Any

from plivo_stream_cli.events import (
    Checkpoint,
    Dtmf,
    Event,
    Media,
    PlayAudio,
    PlayedStream,
    SendDtmf,
    Start,
    UnknownEvent,
)

Record = dict[str, Any]


def event_record(event: Event, *, t: float, stream: str, direction: str = "in") -> Record:
    """The feed record of one received (`in`) or sent (`out`) event."""
    record: Record = {"t": round(t, 3), "stream": stream, "dir": direction, "event": event.event}
    seq = getattr(event, "sequence_number", None)
    if seq is not None:
        record["seq"] = seq
    record.update(_details(event))
    return record


def _details(event: Event) -> Record:
    if isinstance(event, Media):
        return {
            "track": event.track,
            "chunk": event.chunk,
            "timestamp": event.timestamp,
            "bytes": len(event.payload),
        }
    if isinstance(event, Start):
        return {
            "call": event.call_id,
            "account": event.account_id,
            "tracks": list(event.tracks),
            "contentType": event.media_format.content_type,
            "extraHeaders": event.headers,
        }
    if isinstance(event, Dtmf):
        return {"digit": event.digit, "track": event.track, "timestamp": event.timestamp}
    if isinstance(event, PlayedStream | Checkpoint):
        return {"name": event.name}
    if isinstance(event, PlayAudio):
        return {"contentType": event.media_format.content_type, "bytes": len(event.payload)}
    if isinstance(event, SendDtmf):
        return {"digits": event.digits}
    if isinstance(event, UnknownEvent):
        return {"keys": sorted(event.raw)}
    return {}  # clearAudio, clearedAudio, stop: the event name says it all


def note_record(kind: str, *, t: float, stream: str = "", **fields: Any) -> Record:
    """A record that is not a protocol event: connected, rejected, error, closed, status, ..."""
    record: Record = {"t": round(t, 3), "stream": stream, "dir": "-", "event": kind}
    record.update(fields)
    return record
