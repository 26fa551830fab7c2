"""Protocol events of Plivo Audio Streaming: typed, frozen, parsed once, serialized exactly.

Pure (no I/O). `parse()` is the one entry point from a WebSocket text frame to an event; anything
malformed raises `ProtocolError` naming the field. Each event's `to_dict()`/`to_json()` produces the
documented JSON shape (shared/protocol.md), so the simulator sends what Plivo sends and the server
sends what Plivo accepts.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import functools
import json
import math
import sys
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar, TypeAlias
from urllib.parse import unquote

from plivo_stream_cli.formats import FormatError, MediaFormat

MAX_MESSAGE_BYTES = 64 * 1024


class ProtocolError(ValueError):
    """A message that does not follow the protocol; the text names the field and the problem."""


class UnsupportedMedia(ProtocolError):
    """A start whose media format Plivo never sends (e.g. the old `audio/l16`): the stream
    cannot be decoded, so it is refused once rather than every frame after it."""


_encode_str = json.encoder.encode_basestring_ascii  # a JSON string as json.dumps writes it


def _compact(obj: dict[str, Any]) -> str:
    return json.dumps(obj, separators=(",", ":"))


class _Wire:
    """What every event shares: its JSON text is its documented dict, compact."""

    __slots__ = ()

    def to_dict(self) -> dict[str, Any]:
        raise NotImplementedError

    def to_json(self) -> str:
        return _compact(self.to_dict())


# ---------------------------------------------------------------- inbound (Plivo -> server)


@dataclass(frozen=True, slots=True)
class Start(_Wire):
    """`start`: once per stream, with the call's metadata and media format."""

    event: ClassVar[str] = "start"
    call_id: str
    stream_id: str
    account_id: str
    tracks: tuple[str, ...]
    media_format: MediaFormat
    extra_headers: str = ""
    sequence_number: int | None = None
    # How the message departed from Plivo's shape, though it was accepted (liberal in what we
    # accept); fields absent altogether show as None/() above instead.
    quirks: tuple[str, ...] = field(default=(), compare=False, repr=False)

    @property
    def headers(self) -> dict[str, str]:
        """`extra_headers` parsed into a dict."""
        return parse_extra_headers(self.extra_headers)

    def to_dict(self) -> dict[str, Any]:
        return {
            "event": "start",
            "sequenceNumber": self.sequence_number,
            "start": {
                "callId": self.call_id,
                "streamId": self.stream_id,
                "accountId": self.account_id,
                "tracks": list(self.tracks),
                "mediaFormat": {
                    "encoding": self.media_format.encoding,
                    "sampleRate": self.media_format.sample_rate,
                },
            },
            "extra_headers": self.extra_headers,
        }


@dataclass(frozen=True, slots=True)
class Media(_Wire):
    """`media`: about 20 ms of one track's audio; `payload` is already base64-decoded."""

    event: ClassVar[str] = "media"
    stream_id: str
    track: str
    timestamp: str
    payload: bytes
    chunk: int | None = None
    sequence_number: int | None = None
    extra_headers: str | None = None
    quirks: tuple[str, ...] = field(default=(), compare=False, repr=False)

    def to_dict(self) -> dict[str, Any]:
        media: dict[str, Any] = {"track": self.track, "timestamp": self.timestamp}
        if self.chunk is not None:
            media["chunk"] = self.chunk
        media["payload"] = base64.b64encode(self.payload).decode("ascii")
        out: dict[str, Any] = {
            "event": "media",
            "sequenceNumber": self.sequence_number,
            "streamId": self.stream_id,
            "media": media,
        }
        if self.extra_headers is not None:
            out["extra_headers"] = self.extra_headers
        return out

    def to_json(self) -> str:
        """Exactly `_compact(self.to_dict())`, written without the dicts: `simulate` sends one
        of these per call every 20 ms, and the generic path was a third of its own work."""
        chunk, seq, extra = self.chunk, self.sequence_number, self.extra_headers
        if not (
            (seq is None or type(seq) is int)
            and (chunk is None or type(chunk) is int)
            and type(self.stream_id) is str
            and type(self.track) is str
            and type(self.timestamp) is str
            and (extra is None or type(extra) is str)
        ):
            return _compact(self.to_dict())  # odd types: let json decide
        esc = _encode_str
        payload = binascii.b2a_base64(self.payload, newline=False).decode("ascii")
        head = '{"event":"media","sequenceNumber":' + ("null" if seq is None else str(seq))
        media = '"media":{"track":' + esc(self.track) + ',"timestamp":' + esc(self.timestamp)
        if chunk is not None:
            media += ',"chunk":' + str(chunk)
        tail = "}" if extra is None else ',"extra_headers":' + esc(extra) + "}"
        return f'{head},"streamId":{esc(self.stream_id)},{media},"payload":"{payload}"}}{tail}'


@dataclass(frozen=True, slots=True)
class Dtmf(_Wire):
    """`dtmf`: the caller pressed a key."""

    event: ClassVar[str] = "dtmf"
    stream_id: str
    digit: str
    track: str = "inbound"
    timestamp: str = ""
    sequence_number: int | None = None
    extra_headers: str | None = None
    quirks: tuple[str, ...] = field(default=(), compare=False, repr=False)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "event": "dtmf",
            "sequenceNumber": self.sequence_number,
            "streamId": self.stream_id,
            "dtmf": {"track": self.track, "digit": self.digit, "timestamp": self.timestamp},
        }
        if self.extra_headers is not None:
            out["extra_headers"] = self.extra_headers
        return out


@dataclass(frozen=True, slots=True)
class PlayedStream(_Wire):
    """`playedStream` (alias `played`): the audio queued before checkpoint `name` has played."""

    event: ClassVar[str] = "playedStream"
    stream_id: str
    name: str
    sequence_number: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "event": "playedStream",
            "sequenceNumber": self.sequence_number,
            "streamId": self.stream_id,
            "name": self.name,
        }


@dataclass(frozen=True, slots=True)
class ClearedAudio(_Wire):
    """`clearedAudio`: the playback queue was emptied after a `clearAudio`."""

    event: ClassVar[str] = "clearedAudio"
    stream_id: str
    sequence_number: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "event": "clearedAudio",
            "sequenceNumber": self.sequence_number,
            "streamId": self.stream_id,
        }


@dataclass(frozen=True, slots=True)
class Stop(_Wire):
    """`stop`: modelled by one SDK, undocumented; the socket may also just close."""

    event: ClassVar[str] = "stop"
    stream_id: str = ""
    sequence_number: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"event": "stop", "sequenceNumber": self.sequence_number, "streamId": self.stream_id}


@dataclass(frozen=True, slots=True)
class UnknownEvent(_Wire):
    """An event name this version does not know; the raw message is kept."""

    name: str
    raw: dict[str, Any] = field(default_factory=dict)
    sequence_number: int | None = None

    @property
    def event(self) -> str:
        return self.name

    def to_dict(self) -> dict[str, Any]:
        return dict(self.raw)


# ---------------------------------------------------------------- outbound (server -> Plivo)


@dataclass(frozen=True, slots=True)
class PlayAudio(_Wire):
    """`playAudio`: audio for the caller in the stream's format; `payload` is raw wire audio."""

    event: ClassVar[str] = "playAudio"
    media_format: MediaFormat
    payload: bytes
    stream_id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "event": "playAudio",
            "media": {
                "contentType": self.media_format.encoding,
                "sampleRate": self.media_format.sample_rate,
                "payload": base64.b64encode(self.payload).decode("ascii"),
            },
        }
        if self.stream_id is not None:
            out["streamId"] = self.stream_id
        return out


@dataclass(frozen=True, slots=True)
class Checkpoint(_Wire):
    """`checkpoint`: ask Plivo for a `playedStream` once the audio queued so far has played."""

    event: ClassVar[str] = "checkpoint"
    stream_id: str
    name: str

    def to_dict(self) -> dict[str, Any]:
        return {"event": "checkpoint", "streamId": self.stream_id, "name": self.name}


@dataclass(frozen=True, slots=True)
class ClearAudio(_Wire):
    """`clearAudio`: drop all queued audio (barge-in)."""

    event: ClassVar[str] = "clearAudio"
    stream_id: str

    def to_dict(self) -> dict[str, Any]:
        return {"event": "clearAudio", "streamId": self.stream_id}


@dataclass(frozen=True, slots=True)
class SendDtmf(_Wire):
    """`sendDTMF`: undocumented, seen in third-party code: play DTMF tones to the caller."""

    event: ClassVar[str] = "sendDTMF"
    digits: str

    def to_dict(self) -> dict[str, Any]:
        return {"event": "sendDTMF", "dtmf": self.digits}


InboundEvent: TypeAlias = Start | Media | Dtmf | PlayedStream | ClearedAudio | Stop
OutboundEvent: TypeAlias = PlayAudio | Checkpoint | ClearAudio | SendDtmf
Event: TypeAlias = InboundEvent | OutboundEvent | UnknownEvent


# ---------------------------------------------------------------- parsing


def parse(data: str | bytes) -> Event:
    """Parse one text frame into an event, or raise `ProtocolError`. Never raises anything else."""
    if len(data) > MAX_MESSAGE_BYTES:
        raise ProtocolError(f"message of {len(data)} bytes exceeds the 64 KB limit")
    if _fast_media is not None and type(data) is str and data.startswith(_MEDIA_OPENINGS):
        media = _fast_media(data)
        if media is not None:
            return media
    try:
        msg = _loads(data)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise ProtocolError(f"not JSON: {_short(exc)}") from None
    if type(msg) is dict and msg.get("event") == "media":  # one per 20 ms frame: no dispatch
        return _parse_media(msg)
    if not isinstance(msg, dict):
        raise ProtocolError(f"message is a JSON {type(msg).__name__}, expected an object")
    return parse_object(msg)


# The C scanner `json.loads` ends up in (typeshed does not declare the attribute).
_scan: Callable[[str, int], tuple[Any, int]] = json.JSONDecoder().scan_once  # type: ignore[attr-defined]


def _loads(data: str | bytes) -> Any:
    """`json.loads(data)`, without its wrapper's cost in the usual case: a str of one object.

    Anything else (bytes, surrounding whitespace, trailing data, any error) goes through
    `json.loads` itself, so results and error messages are exactly its own.
    """
    if isinstance(data, str) and data[:1] == "{":
        try:
            msg, end = _scan(data, 0)
        except (StopIteration, ValueError, RecursionError):
            pass
        else:
            if end == len(data):
                return msg
    return json.loads(data)


# How a media frame begins as Plivo and simulate write it: only those are tried with msgspec
# (any other message would be read twice).
_MEDIA_OPENINGS = ('{"event":"media"', '{"event": "media"')

# msgspec (the [fast] extra) reads a plain media frame, every field of the type Plivo sends, in
# one pass: JSON, types and base64, in about half the time of json and the checks here. It is
# strict: whatever it refuses (a field of another type, NaN, a lone surrogate, base64 that
# `binascii`'s strict mode refuses too, any error) is read again by json, so results and errors
# are json's (tests/test_events.py checks the two readers against each other).
_fast_media: Callable[[str], Media | None] | None = None
try:
    import msgspec
except ImportError:  # pragma: no cover - the base install: json reads every frame
    pass
else:

    class _WireBody(msgspec.Struct):
        track: str
        timestamp: str
        payload: bytes  # base64 in JSON, decoded (and checked) by msgspec
        chunk: int | None = None

    class _WireMedia(msgspec.Struct):  # named as on the wire
        event: str
        streamId: str
        media: _WireBody
        sequenceNumber: int | None = None
        extra_headers: str | None = None

    _decode_media = msgspec.json.Decoder(_WireMedia).decode

    def _read_media(data: str) -> Media | None:
        """The plain media frame `data` is, read by msgspec; None: json is to read it."""
        try:
            wire = _decode_media(data)
        except (ValueError, RecursionError):  # msgspec.DecodeError is a ValueError
            return None
        if wire.event != "media":  # a second "event" key: json's reading decides
            return None
        body, seq, extra = wire.media, wire.sequenceNumber, wire.extra_headers
        track, stamp, payload = body.track or "inbound", body.timestamp, body.payload
        return _new_media(wire.streamId, track, stamp, payload, body.chunk, seq, extra)

    _fast_media = _read_media


def parse_object(msg: dict[str, Any]) -> Event:
    """Parse an already-decoded JSON object (used by capture replay)."""
    name = msg.get("event")
    if not isinstance(name, str):
        raise ProtocolError("event: missing or not a string")
    parser = _PARSERS.get(name)
    if parser is None:
        return UnknownEvent(name, msg, _opt_int(msg, "sequenceNumber"))
    return parser(msg)


def _parse_start(msg: dict[str, Any]) -> Start:
    body = _obj(msg, "start")
    fmt = _obj(body, "mediaFormat", "start.mediaFormat")
    encoding = _str(fmt, "encoding", "start.mediaFormat.encoding")
    rate = _int(fmt, "sampleRate", "start.mediaFormat.sampleRate")
    try:
        media_format = MediaFormat(encoding, rate)
    except FormatError as exc:
        raise UnsupportedMedia(f"start.mediaFormat: {exc}") from None
    tracks = body.get("tracks", [])  # absent: none invented (the server says it is missing)
    if not isinstance(tracks, list) or not all(isinstance(t, str) for t in tracks):
        raise ProtocolError("start.tracks: expected a list of strings")
    return Start(
        call_id=_str(body, "callId", "start.callId"),
        stream_id=_str(body, "streamId", "start.streamId"),
        account_id=_opt_str(body, "accountId", "start.accountId") or "",
        tracks=tuple(tracks),
        media_format=media_format,
        extra_headers=_extra(msg) or "",
        sequence_number=_opt_int(msg, "sequenceNumber"),
        quirks=_quirks("start", msg, body),
    )


def _parse_media(msg: dict[str, Any]) -> Media:
    return _plain_media(msg) or _parse_media_fields(msg)


def _plain_media(msg: dict[str, Any]) -> Media | None:
    """The per-frame case: every field of the type Plivo sends (None: check each one)."""
    media = msg.get("media")
    if type(media) is not dict:
        return None
    payload, track, stamp = media.get("payload"), media.get("track"), media.get("timestamp")
    chunk, seq = media.get("chunk"), msg.get("sequenceNumber")
    stream, extra = msg.get("streamId"), msg.get("extra_headers")
    if (
        type(payload) is str
        and type(track) is str
        and type(stamp) is str
        and type(stream) is str
        and (chunk is None or type(chunk) is int)
        and (seq is None or type(seq) is int)
        and (extra is None or type(extra) is str)
    ):
        audio = _b64decode(payload, "media.payload")
        return _new_media(stream, track or "inbound", stamp, audio, chunk, seq, extra)
    return None


def _media_factory() -> Callable[[str, str, str, bytes, int | None, int | None, str | None], Media]:
    """`Media(...)` by position, about 1 us cheaper per frame, for values already checked.

    A frozen dataclass's `__init__` sets each field through `object.__setattr__`, looked up
    anew per field; storing through the slots' own descriptors gives the same, still frozen,
    object (equal, same hash and repr) at a third of the cost.
    """
    new = object.__new__
    names = [f.name for f in fields(Media)]
    s0, s1, s2, s3, s4, s5, s6, s7 = (getattr(Media, name).__set__ for name in names)

    def make(
        stream_id: str,
        track: str,
        timestamp: str,
        payload: bytes,
        chunk: int | None,
        sequence_number: int | None,
        extra_headers: str | None,
    ) -> Media:
        media: Media = new(Media)
        s0(media, stream_id)
        s1(media, track)
        s2(media, timestamp)
        s3(media, payload)
        s4(media, chunk)
        s5(media, sequence_number)
        s6(media, extra_headers)
        s7(media, ())
        return media

    return make


_new_media = _media_factory()


def _parse_media_fields(msg: dict[str, Any]) -> Media:
    """`media` with each field checked and converted on its own (and named when wrong)."""
    media = _obj(msg, "media")
    payload = _str(media, "payload", "media.payload")
    audio = _b64decode(payload, "media.payload")
    return Media(
        stream_id=_opt_str(msg, "streamId", "streamId") or "",
        track=_opt_str(media, "track", "media.track") or "inbound",
        timestamp=_stamp(media, "media.timestamp"),
        payload=audio,
        chunk=_opt_int(media, "chunk", "media.chunk"),
        sequence_number=_opt_int(msg, "sequenceNumber"),
        extra_headers=_extra(msg),
        quirks=_quirks("media", msg, media),
    )


def _parse_dtmf(msg: dict[str, Any]) -> Dtmf:
    body = _obj(msg, "dtmf")
    digit = _str(body, "digit", "dtmf.digit")
    return Dtmf(
        stream_id=_opt_str(msg, "streamId", "streamId") or "",
        digit=digit,
        track=_opt_str(body, "track", "dtmf.track") or "inbound",
        timestamp=_stamp(body, "dtmf.timestamp"),
        sequence_number=_opt_int(msg, "sequenceNumber"),
        extra_headers=_extra(msg),
        quirks=_quirks("dtmf", msg, body),
    )


def _parse_played(msg: dict[str, Any]) -> PlayedStream:
    return PlayedStream(
        stream_id=_opt_str(msg, "streamId", "streamId") or "",
        name=_str(msg, "name", "name"),
        sequence_number=_opt_int(msg, "sequenceNumber"),
    )


def _parse_cleared(msg: dict[str, Any]) -> ClearedAudio:
    return ClearedAudio(
        stream_id=_opt_str(msg, "streamId", "streamId") or "",
        sequence_number=_opt_int(msg, "sequenceNumber"),
    )


def _parse_stop(msg: dict[str, Any]) -> Stop:
    return Stop(
        stream_id=_opt_str(msg, "streamId", "streamId") or "",
        sequence_number=_opt_int(msg, "sequenceNumber"),
    )


def _parse_play_audio(msg: dict[str, Any]) -> PlayAudio:
    media = _obj(msg, "media")
    encoding = _str(media, "contentType", "media.contentType")
    rate = _int(media, "sampleRate", "media.sampleRate")
    try:
        fmt = MediaFormat(encoding, rate)
    except FormatError as exc:
        raise ProtocolError(f"media: {exc}") from None
    payload = _str(media, "payload", "media.payload")
    audio = _b64decode(payload, "media.payload")
    return PlayAudio(fmt, audio, _opt_str(msg, "streamId", "streamId"))


def _parse_checkpoint(msg: dict[str, Any]) -> Checkpoint:
    return Checkpoint(_opt_str(msg, "streamId", "streamId") or "", _str(msg, "name", "name"))


def _parse_clear(msg: dict[str, Any]) -> ClearAudio:
    return ClearAudio(_opt_str(msg, "streamId", "streamId") or "")


def _parse_send_dtmf(msg: dict[str, Any]) -> SendDtmf:
    return SendDtmf(_str(msg, "dtmf", "dtmf"))


_PARSERS: dict[str, Callable[[dict[str, Any]], Event]] = {
    "start": _parse_start,
    "media": _parse_media,
    "dtmf": _parse_dtmf,
    "playedStream": _parse_played,
    "played": _parse_played,
    "clearedAudio": _parse_cleared,
    "stop": _parse_stop,
    "playAudio": _parse_play_audio,
    "checkpoint": _parse_checkpoint,
    "clearAudio": _parse_clear,
    "sendDTMF": _parse_send_dtmf,
}


# ---------------------------------------------------------------- field helpers


def _b64decode(text: str, label: str) -> bytes:
    """`base64.b64decode(text, validate=True)`, minus its wrapper, or `ProtocolError`."""
    try:
        return _strict_b64(text)  # binascii takes ASCII str as is
    except (binascii.Error, ValueError):  # ValueError: non-ASCII text
        raise ProtocolError(f"{label}: not valid base64") from None


# What `b64decode(validate=True)` calls; a partial, so a frame's payload costs no Python call.
_strict_b64: Callable[[str], bytes]
if sys.version_info >= (3, 11):
    _strict_b64 = functools.partial(binascii.a2b_base64, strict_mode=True)
else:
    _strict_b64 = functools.partial(base64.b64decode, validate=True)


def _short(exc: BaseException) -> str:
    text = str(exc)
    return text if len(text) <= 80 else text[:77] + "..."


def _obj(msg: dict[str, Any], key: str, label: str | None = None) -> dict[str, Any]:
    value = msg.get(key)
    if not isinstance(value, dict):
        raise ProtocolError(f"{label or key}: {_missing_or(value, 'an object')}")
    return value


def _str(msg: dict[str, Any], key: str, label: str) -> str:
    value = msg.get(key)
    if not isinstance(value, str):
        raise ProtocolError(f"{label}: {_missing_or(value, 'a string')}")
    return value


def _opt_str(msg: dict[str, Any], key: str, label: str) -> str | None:
    value = msg.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise ProtocolError(f"{label}: expected a string, got {type(value).__name__}")
    return value


def _int(msg: dict[str, Any], key: str, label: str) -> int:
    value = _opt_int(msg, key, label)
    if value is None:
        raise ProtocolError(f"{label}: missing")
    return value


def _opt_int(msg: dict[str, Any], key: str, label: str | None = None) -> int | None:
    """An integer field; numeric strings are accepted (liberal in what we accept)."""
    value = msg.get(key)
    if value is None:
        return None
    if isinstance(value, bool):
        raise ProtocolError(f"{label or key}: expected an integer, got a boolean")
    if isinstance(value, int):
        return value
    if isinstance(value, str) and len(value) < 20:
        with contextlib.suppress(ValueError):  # "--5" and "²" pass isdigit() but not int()
            return int(value)
    raise ProtocolError(f"{label or key}: expected an integer, got {value!r:.40}")


def _stamp(body: dict[str, Any], label: str) -> str:
    """Timestamps are documented as strings of epoch ms; integers are accepted too."""
    value = body.get("timestamp")
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, float) and math.isfinite(value):
        return str(int(value))
    raise ProtocolError(f"{label}: expected a string of epoch milliseconds")


def _extra(msg: dict[str, Any]) -> str | None:
    value = msg.get("extra_headers")
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, dict):  # some clients send an object: keep it usable
        return ";".join(f"{k}={v}" for k, v in value.items())
    raise ProtocolError("extra_headers: expected a string")


def _quirks(event: str, msg: dict[str, Any], body: dict[str, Any]) -> tuple[str, ...]:
    """How fields that are present differ in type from what Plivo sends (the slow path only:
    the per-frame fast path takes nothing but Plivo's own types)."""
    found = []
    seq = msg.get("sequenceNumber")
    if seq is not None and type(seq) is not int:
        found.append("sequenceNumber is not a JSON number")
    if "chunk" in body and type(body["chunk"]) is not int:
        found.append(f"{event}.chunk is not a JSON number")
    stamp = body.get("timestamp")
    if stamp is not None and type(stamp) is not str:
        found.append(f"{event}.timestamp is a number (Plivo sends a string of milliseconds)")
    if isinstance(msg.get("extra_headers"), dict):
        found.append("extra_headers is an object (Plivo sends a string)")
    elif event == "start" and "extra_headers" not in msg:  # Start keeps "" for it: say so here
        found.append('start without extra_headers (Plivo always sends it, "" when empty)')
    return tuple(found)


def _missing_or(value: object, expected: str) -> str:
    if value is None:
        return "missing"
    return f"expected {expected}, got {type(value).__name__}"


# ---------------------------------------------------------------- extra headers


def parse_extra_headers(text: str | None) -> dict[str, str]:
    """Parse `k=v;k2=v2` (or `,`-separated) into a dict; values URL-decoded; junk skipped."""
    if not text:
        return {}
    headers: dict[str, str] = {}
    for pair in text.replace(",", ";").split(";"):
        key, sep, value = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            continue
        headers[key] = unquote(value.strip())
    return headers
