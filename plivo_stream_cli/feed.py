"""The event feed: one flat JSON-ready record per protocol event, for `--json`, `tail` and the view.

Pure. A record carries decoded metadata and the payload's size instead of the payload, so a feed
stays small enough for `jq` and a terminal. The same shape is produced live by `serve` and offline
from a capture file, so every consumer reads one format.
"""

from __future__ import annotations

import json
import math
from json.encoder import encode_basestring
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
from plivo_stream_cli.session import MAX_TEXT, cut

Record = dict[str, Any]
MAX_NAME = 256  # characters of a checkpoint name in a record (control allows 256)
MAX_KEYS = 32  # keys of an unknown event listed


def event_record(event: Event, *, t: float, stream: str, direction: str = "in") -> Record:
    """The feed record of one received (`in`) or sent (`out`) event."""
    if type(event) is Media:  # one per frame: built in one go, same keys in the same order
        return _media_record(event, round(t, 3), stream, direction)
    record: Record = {"t": round(t, 3), "stream": stream, "dir": direction, "event": event.event}
    seq = getattr(event, "sequence_number", None)
    if seq is not None:
        record["seq"] = seq
    record.update(_details(event))
    return record


def _media_record(event: Media, t: float, stream: str, direction: str) -> Record:
    seq, payload, track = event.sequence_number, event.payload, event.track
    if len(track) > MAX_TEXT:
        track = cut(track)
    if seq is None:
        return {"t": t, "stream": stream, "dir": direction, "event": "media",
                "track": track, "chunk": event.chunk, "timestamp": event.timestamp,
                "bytes": len(payload)}  # fmt: skip
    return {"t": t, "stream": stream, "dir": direction, "event": "media", "seq": seq,
            "track": track, "chunk": event.chunk, "timestamp": event.timestamp,
            "bytes": len(payload)}  # fmt: skip


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
    if isinstance(event, Dtmf):  # peer text is cut: a record stays small whatever arrives
        return {"digit": cut(event.digit), "track": cut(event.track), "timestamp": event.timestamp}
    if isinstance(event, PlayedStream | Checkpoint):
        return {"name": cut(event.name, MAX_NAME)}
    if isinstance(event, PlayAudio):
        return {"contentType": event.media_format.content_type, "bytes": len(event.payload)}
    if isinstance(event, SendDtmf):
        return {"digits": event.digits}
    if isinstance(event, UnknownEvent):
        return {"keys": [cut(key) for key in sorted(event.raw)[:MAX_KEYS]]}
    return {}  # clearAudio, clearedAudio, stop: the event name says it all


_encode = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode
_MEDIA_KEYS = ("t", "stream", "dir", "event", "seq", "track", "chunk", "timestamp", "bytes")


def json_line(record: Record) -> str:
    """`record` as one compact JSON line (no newline), as `--json` prints it.

    Exactly `json.dumps(record, separators=(",", ":"), ensure_ascii=False)`; a media record
    (one per frame per stream) is formatted directly, which is a few times faster.
    """
    if len(record) == 9 and tuple(record) == _MEDIA_KEYS:
        t, stream, direction, event, seq, track, chunk, stamp, size = record.values()
        if (
            type(t) is float
            and math.isfinite(t)
            and type(stream) is str
            and type(direction) is str
            and type(event) is str
            and type(seq) is int
            and type(track) is str
            and (chunk is None or type(chunk) is int)
            and type(stamp) is str
            and type(size) is int
        ):
            q = encode_basestring
            return (
                f'{{"t":{t!r},"stream":{q(stream)},"dir":{q(direction)},"event":{q(event)},'
                f'"seq":{seq},"track":{q(track)},"chunk":{"null" if chunk is None else chunk},'
                f'"timestamp":{q(stamp)},"bytes":{size}}}'
            )
    return _encode(record)


def note_record(kind: str, *, t: float, stream: str = "", **fields: Any) -> Record:
    """A record that is not a protocol event: connected, rejected, error, closed, status, ..."""
    record: Record = {"t": round(t, 3), "stream": stream, "dir": "-", "event": kind}
    record.update(fields)
    return record


def describe(record: Record) -> str:
    """One human line for a record (the event log and the plain, non-terminal output).

    Text from the peer is shown through `printable`, so it cannot move the cursor, recolour
    the terminal or forge a second log line.
    """
    record = _printable_values(record)
    kind = record.get("event", "?")
    stream = str(record.get("stream", ""))[:8]
    arrow = {"in": "<-", "out": "->"}.get(str(record.get("dir")), "  ")
    detail = _DESCRIBERS.get(kind, _describe_other)(record)
    return f"{stream:8} {arrow} {kind:<13} {detail}".rstrip()


_UNPRINTABLE = {
    **{c: f"\\x{c:02x}" for c in (*range(0x20), 0x7F, *range(0x80, 0xA0))},
    **{c: f"\\u{c:04x}" for c in (*range(0x202A, 0x202F), *range(0x2066, 0x206A))},  # bidi
    **{c: f"\\u{c:04x}" for c in range(0xD800, 0xE000)},  # lone surrogates: unencodable
}


def printable(text: str) -> str:
    """`text` safe to show on a terminal: control, bidi-override and surrogate code points
    become escapes such as `\\x1b`, everything else is kept."""
    return text if text.isprintable() else text.translate(_UNPRINTABLE)


def _printable_values(value: Any) -> Any:
    if isinstance(value, str):
        return printable(value)
    if isinstance(value, dict):
        return {printable(str(k)): _printable_values(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_printable_values(v) for v in value]
    return value


def _describe_other(record: Record) -> str:
    skip = {"t", "stream", "dir", "event", "seq"}
    return " ".join(f"{k}={v}" for k, v in record.items() if k not in skip)


def _unknown(value: Any) -> Any:
    return "unknown" if value is None else value


_DESCRIBERS: dict[str, Any] = {
    "start": lambda r: (
        f"call={r.get('call')} {r.get('contentType')} tracks={','.join(r.get('tracks', []))}"
        + (f" headers={r.get('extraHeaders')}" if r.get("extraHeaders") else "")
    ),
    "media": lambda r: f"{r.get('track')} chunk={r.get('chunk')} {r.get('bytes')} B",
    "dtmf": lambda r: f"digit {r.get('digit')}",
    "playAudio": lambda r: f"{r.get('bytes')} B {r.get('contentType')}",
    "checkpoint": lambda r: f"name={r.get('name')}",
    "playedStream": lambda r: f"name={r.get('name')} confirmed",
    "connected": lambda r: f"from {r.get('remote')} ({r.get('auth')})",
    "rejected": lambda r: f"from {r.get('remote')}: {r.get('reason')} -> {r.get('action')}",
    "error": lambda r: str(r.get("error")),
    "warning": lambda r: str(r.get("warning")),
    "answer": lambda r: (
        f"Answer URL hit: call={r.get('call')} from={r.get('caller')} to={r.get('to')}"
    ),
    "status": lambda r: " ".join(f"{k}={v}" for k, v in (r.get("fields") or {}).items()),
    "upstream": lambda r: (
        f"{r.get('state')} {r.get('url')}"
        + (f" in {r.get('took_ms')} ms" if r.get("took_ms") is not None else "")
        + (f": {r.get('reason')}" if r.get("reason") else "")
        + (f" (code {r.get('code')})" if r.get("code") is not None else "")
        + (f" -> {r.get('action')}" if r.get("action") else "")
    ),
    "latency": lambda r: (
        f"turn {r.get('turn')}: "
        + " ".join(f"{k}={v}" for k, v in r.items() if k.endswith("_ms") and v not in (None, []))
    ),
    "closed": lambda r: (
        f"media={r.get('media')} errors={r.get('errors')} gaps={_unknown(r.get('gaps'))}"
        + (f" dtmf={r.get('dtmf')}" if r.get("dtmf") else "")
        + (f" bot: {r.get('upstream')}" if r.get("upstream") else "")
        + "".join(f"\n    recorded {f['path']} ({f['seconds']:.2f} s)" for f in r.get("files", []))
    ),
}
