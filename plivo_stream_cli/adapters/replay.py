"""`pstream replay`'s engine: re-run the caller's side of a recorded call against any server.

Reads a JSONL capture written by `serve --record`, keeps the events Plivo sent (`"dir": "in"`:
start, media, dtmf, stop and any unknown ones; not `playedStream`/`clearedAudio`, which the
replayer produces itself as it plays the new server's answers), and re-sends them with the
original timing (`speed` times faster) through the simulator's `PlivoCall`, which answers
checkpoints and clears exactly as `simulate` does.

Payloads are re-sent untouched, so the receiving server gets the caller's audio byte for byte.
Events go out in Plivo's shape whatever tool made the capture: sequence numbers are renumbered
(the replayer's own `playedStream`/`clearedAudio` share the count), and so are media chunks;
timestamps are shifted to the replay's clock (strings of milliseconds); `extra_headers`, `tracks`
and `accountId` are filled in when missing; the call and stream ids are fresh unless `keep_ids`
is set. Like a real line, media never pauses: gaps in the capture and the linger after it carry
20 ms frames of silence.
"""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from plivo_stream_cli import codec
from plivo_stream_cli.adapters.recorder import CaptureError, read_capture
from plivo_stream_cli.adapters.simulator import (
    ACCOUNT_ID,
    SPEECH_DBFS,
    PlivoCall,
    converse,
    open_stream,
)
from plivo_stream_cli.callreport import CallReport
from plivo_stream_cli.events import ProtocolError, Start, parse_object
from plivo_stream_cli.formats import MediaFormat

GENERATED = frozenset({"playedStream", "played", "clearedAudio"})  # the replayer's own answers


@dataclass
class ReplayConfig:
    """One replayed call."""

    url: str
    capture: Path
    auth_token: str | None = None
    speed: float = 1.0
    keep_ids: bool = False
    linger: float = 1.0  # seconds to stay on after the last replayed event
    open_timeout: float = 10.0


@dataclass(frozen=True)
class Inbound:
    """One event to re-send: when (seconds after the first one) and what."""

    offset: float
    msg: dict[str, Any]
    nbytes: int = 0  # media payload size
    speech: bool = False  # a media frame louder than the speech threshold


@dataclass(frozen=True)
class Recording:
    """The caller's side of a capture."""

    start: Start
    events: list[Inbound]
    first_t: float  # capture time of the first event (epoch seconds)
    skipped: int  # frames that were not JSON objects (not re-sent)


def load_capture(path: Path) -> Recording:
    """Read the inbound events of a capture; `CaptureError` (exit 2) when it has none to replay."""
    raw = [line for line in read_capture(path) if line.direction == "in"]
    kept = [x for x in raw if isinstance(x.msg, dict) and x.msg.get("event") not in GENERATED]
    objects = [x for x in raw if isinstance(x.msg, dict)]
    start = _find_start(path, kept)
    fmt = start.media_format
    first_t = kept[0].t
    events = [_inbound(x.t - first_t, x.msg, fmt) for x in kept]
    _mark_turn_end(events)
    return Recording(start, events, first_t, len(raw) - len(objects))


def _find_start(path: Path, kept: list[Any]) -> Start:
    for line in kept:
        if line.msg.get("event") == "start":
            try:
                event = parse_object(line.msg)
            except ProtocolError as exc:
                raise CaptureError(f"{path}:{line.line}: bad start event: {exc}") from None
            assert isinstance(event, Start)
            return event
    raise CaptureError(
        f"{path}: no start event received: not a capture of a call (record one with serve --record)"
    )


def _inbound(offset: float, msg: dict[str, Any], fmt: MediaFormat) -> Inbound:
    if msg.get("event") != "media" or not isinstance(msg.get("media"), dict):
        return Inbound(max(0.0, offset), msg)
    try:
        payload = base64.b64decode(msg["media"].get("payload", ""), validate=True)
        track = msg["media"].get("track", "inbound")
        loud = track != "outbound" and codec.level_dbfs(codec.decode(payload, fmt)) > SPEECH_DBFS
    except (binascii.Error, ValueError, TypeError):
        return Inbound(max(0.0, offset), msg)
    return Inbound(max(0.0, offset), msg, len(payload), loud)


def _mark_turn_end(events: list[Inbound]) -> None:
    """A capture without speech ends the caller's turn with its last frame (as simulate does)."""
    media = [i for i, e in enumerate(events) if e.nbytes]
    if media and not any(events[i].speech for i in media):
        last = events[media[-1]]
        events[media[-1]] = Inbound(last.offset, last.msg, last.nbytes, True)


class _CaptureCaller:
    """The script of `replay`: the recorded events at their recorded offsets."""

    def __init__(self, recording: Recording, call_id: str, stream_id: str) -> None:
        self.recording = recording
        self.call_id = call_id
        self.stream_id = stream_id
        self.original_stream = recording.start.stream_id

    async def __call__(self, call: PlivoCall) -> None:
        shift_ms = call.t0_ms - int(self.recording.first_t * 1000)
        speed = max(call.report.speed, 1e-6)
        started = False
        for item in self.recording.events:
            due = item.offset / speed
            if started:  # a real line never pauses: silence fills the capture's gaps
                await call.send_silence_until(due)
            await call.sleep_until(due)
            msg = self._rewrite(item.msg, call, shift_ms)
            await call.send(json.dumps(msg, separators=(",", ":"), ensure_ascii=False))
            self._note(call, item)
            started = started or msg.get("event") == "start"
        call.mark("caller-done")

    def _rewrite(self, msg: dict[str, Any], call: PlivoCall, shift_ms: int) -> dict[str, Any]:
        """The recorded event in Plivo's shape: renumbered, re-stamped, fields Plivo always
        sends filled in when the capture lacks them (a capture of another tool's frames)."""
        out = dict(msg)
        kind = out.get("event")
        out["sequenceNumber"] = call.next_seq()
        if out.get("streamId") == self.original_stream or (
            kind in ("media", "dtmf", "stop") and "streamId" not in out
        ):
            out["streamId"] = self.stream_id
        if kind in ("start", "media", "dtmf") and not isinstance(out.get("extra_headers"), str):
            out["extra_headers"] = self.recording.start.extra_headers
        if isinstance(out.get("start"), dict):
            start = self.recording.start
            out["start"] = {
                **out["start"],
                "callId": self.call_id,
                "streamId": self.stream_id,
                "accountId": start.account_id or out["start"].get("accountId") or ACCOUNT_ID,
                "tracks": list(start.tracks) or ["inbound"],
            }
        for key in ("media", "dtmf"):
            body = out.get(key)
            if isinstance(body, dict):
                body = {**body, "track": body.get("track") or "inbound"}
                if "timestamp" in body:
                    body["timestamp"] = _shifted(body["timestamp"], shift_ms)
                if key == "media":  # counted anew: the silence filling gaps has chunks too
                    chunk = call.next_chunk(str(body["track"]))
                    ordered = {k: v for k, v in body.items() if k not in ("chunk", "payload")}
                    body = {**ordered, "chunk": chunk, "payload": body.get("payload")}
                out[key] = body
        return out

    def _note(self, call: PlivoCall, item: Inbound) -> None:
        kind = item.msg.get("event")
        if kind == "media":
            call.sent_media(item.nbytes, speech=item.speech)
            call.slots = max(call.slots, int(call.now() / call.interval) + 1)  # the line clock
        elif kind == "dtmf":
            body = item.msg.get("dtmf")
            call.sent_dtmf(str(body.get("digit", "")) if isinstance(body, dict) else "")
        else:
            call.mark(str(kind))


def _shifted(stamp: Any, shift_ms: int) -> Any:
    try:
        return str(int(stamp) + shift_ms)  # a string of digits, as Plivo sends it
    except (TypeError, ValueError):
        return stamp


async def run_replay(config: ReplayConfig) -> CallReport:
    """Replay a capture against `config.url` and report the call like `simulate` does."""
    recording = load_capture(config.capture)
    start = recording.start
    if config.keep_ids:
        call_id, stream_id = start.call_id, start.stream_id
    else:
        call_id, stream_id = str(uuid.uuid4()), str(uuid.uuid4())
    report = CallReport(call_id, stream_id, start.media_format, speed=config.speed)
    if recording.skipped:
        report.warnings.append(f"{recording.skipped} captured frames were not JSON: not re-sent")
    ws = await open_stream(config.url, config.auth_token, config.open_timeout)
    call = PlivoCall(ws, report, start.extra_headers)
    script = _CaptureCaller(recording, call_id, stream_id)
    return await converse(call, script, linger=config.linger)
