"""Capture lines to feed records: how `pstream tail CAPTURE.jsonl` reads a recorded stream.

Pure. A capture line (written by `recorder.CallRecorder`) is `{"t", "dir", "msg"}` (or `"text"`
for a frame that was not JSON, `"binary"` for a binary frame); it becomes the same feed record
`serve --json` prints live, so one reader (jq, the view, a test) handles both. The stream id comes
from the `start` event or the message's own `streamId`, because `playAudio` does not carry one.
"""

from __future__ import annotations

import json
from typing import Any

from plivo_stream_cli.events import ProtocolError, Start, parse_object
from plivo_stream_cli.feed import Record, event_record, note_record


class NotACaptureLine(ValueError):
    """The text is not a pstream capture line."""


class CaptureDecoder:
    """Decodes one capture's lines in order, remembering the stream they belong to."""

    def __init__(self) -> None:
        self.stream = ""

    def decode(self, line: str) -> Record:
        """The feed record of one capture line; raises `NotACaptureLine`."""
        t, direction, obj = _split(line)
        msg = obj.get("msg")
        if not isinstance(msg, dict):
            return self._odd_frame(t, obj)
        stream_id = msg.get("streamId")
        if isinstance(stream_id, str) and stream_id:
            self.stream = stream_id
        try:
            event = parse_object(msg)
        except ProtocolError as exc:
            return note_record("error", t=t, stream=self.stream, dir=direction, error=str(exc))
        if isinstance(event, Start):
            self.stream = event.stream_id
        return event_record(event, t=t, stream=self.stream, direction=direction)

    def _odd_frame(self, t: float, obj: dict[str, Any]) -> Record:
        if isinstance(obj.get("text"), str):
            error = f"not JSON: {obj['text'][:60]!r}"
        elif "binary" in obj:
            error = "binary frame"
        else:
            error = "message is not a JSON object"
        return note_record("error", t=t, stream=self.stream, error=error)


def _split(line: str) -> tuple[float, str, dict[str, Any]]:
    try:
        obj = json.loads(line)
        t = float(obj["t"])
        direction = obj["dir"]
    except (ValueError, KeyError, TypeError):
        raise NotACaptureLine(line[:60]) from None
    if direction not in ("in", "out") or not any(k in obj for k in ("msg", "text", "binary")):
        raise NotACaptureLine(line[:60])
    return t, direction, obj
