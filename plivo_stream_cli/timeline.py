"""A recorded call as a timeline: both tracks' levels, speech, every event, the metrics as spans.

Pure: built from capture lines (`recorder.read_capture` reads them; `build` takes `(t, dir, msg)`
triples), never from files. Times are seconds since the capture's first line, on the recorder's
clock: the server's side of the call, so the network to Plivo is not in the figures.

- The caller's track: each `media` frame received (the caller's 20 ms ending as it arrives),
  its level in dBFS. Frames louder than `SPEECH_DBFS` are speech; speech separated by pauses
  shorter than `PAUSE` is one *segment*, an utterance.
- The bot's track: each `playAudio` sent, placed the way Plivo plays its queue (from the later
  of its arrival and the end of the audio queued before it); a `clearAudio` drops what had not
  played yet.
- A segment that begins while the bot's audio is playing (or within `OVERLAP` of it: a reply
  that stalled) and during which it goes on playing is a *barge-in*.
- Metrics come from `metrics` (the functions `simulate` uses), applied per *turn*: a turn runs
  from a segment's start to the next one's (the first turn, before the caller speaks, holds the
  bot's greeting). Time to first audio counts from the segment's end; a barge-in turn measures
  barge-in to clear and the audio sent over the caller. Checkpoint round trips span the call.
"""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right
from collections.abc import Iterable
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any

from plivo_stream_cli import codec, metrics
from plivo_stream_cli.events import (
    Checkpoint,
    ClearAudio,
    ClearedAudio,
    Dtmf,
    Media,
    PlayAudio,
    PlayedStream,
    ProtocolError,
    SendDtmf,
    Start,
    Stop,
    UnknownEvent,
    parse_object,
)
from plivo_stream_cli.formats import FRAME_MS, MULAW_8K, MediaFormat

SPEECH_DBFS = -50.0  # a caller frame louder than this is speech (as simulator.SPEECH_DBFS)
PAUSE = 0.5  # seconds of quiet that end an utterance
OVERLAP = 0.25  # an utterance this soon after the bot's audio, while it goes on, is a barge-in
MAX_BUCKETS = 3000  # envelope points per track: 20 ms each up to a minute, coarser beyond
FLOOR_DBFS = -70.0  # level drawn for silence
MAX_SECONDS = 86400.0 * 2  # a line later than this after the first is not believed (no stream
# lasts longer than Plivo's streamTimeout, 24 h by default)


class NotACapture(ValueError):
    """The lines hold no call (no `start`, or no lines at all)."""


@dataclass(frozen=True)
class Event:
    """A timeline event in the metrics' terms (`metrics.Event`)."""

    t: float
    kind: str  # play | checkpoint | played | clear
    detail: str = ""
    nbytes: int = 0


@dataclass(frozen=True)
class Mark:
    """Something that happened at one moment, drawn on the caller's or the bot's side."""

    t: float
    kind: (
        str  # start | dtmf | play | checkpoint | played | clear | cleared | senddtmf | stop | error
    )
    side: str  # caller (sent by Plivo) | bot (sent by the server)
    label: str = ""


@dataclass(frozen=True)
class Span:
    """A measured interval: a metric's value drawn from `start` to `end` (seconds)."""

    metric: str
    start: float
    end: float
    value_ms: float
    label: str = ""


@dataclass(frozen=True)
class Turn:
    """One turn of the call, read by the `metrics` functions (`metrics.Timeline`)."""

    media_format: MediaFormat
    speech_end: float | None
    barge_in_started: float | None
    barge_in_ended: float | None
    timeline: tuple[Event, ...]
    checkpoints_received: tuple[str, ...] = ()
    checkpoints_confirmed: tuple[str, ...] = ()
    speed: float = 1.0


@dataclass(frozen=True)
class Envelope:
    """A track's level, one value (dBFS, `FLOOR_DBFS` for nothing) per `step` seconds from 0."""

    step: float
    levels: tuple[float, ...]


@dataclass(frozen=True)
class CallTimeline:
    """Everything `reportpage` draws for one call."""

    call_id: str
    stream_id: str
    media_format: MediaFormat
    started_at: float  # epoch seconds of the first capture line
    duration: float
    caller: Envelope
    bot: Envelope
    segments: tuple[tuple[float, float], ...]
    barge_ins: tuple[tuple[float, float], ...]
    marks: tuple[Mark, ...]
    spans: tuple[Span, ...]
    checkpoints_unconfirmed: int
    errors: int

    def values(self, metric: str) -> list[float]:
        """Every measured value of `metric`, in time order."""
        return [s.value_ms for s in self.spans if s.metric == metric]


@dataclass
class _Builder:
    fmt: MediaFormat = MULAW_8K
    call_id: str = ""
    stream_id: str = ""
    t0: float | None = None
    last: float = 0.0
    caller: list[tuple[float, float]] = field(default_factory=list)  # (frame start, dBFS)
    bot: list[tuple[float, float]] = field(default_factory=list)
    queue_end: float = 0.0
    events: list[Event] = field(default_factory=list)
    marks: list[Mark] = field(default_factory=list)
    errors: int = 0

    def add(self, t: float, direction: str, msg: Any) -> None:
        if not math.isfinite(t) or (self.t0 is not None and t - self.t0 > MAX_SECONDS):
            self.errors += 1  # a time no clock gives: the line is left out
            return
        if self.t0 is None:
            self.t0 = t
        t = max(0.0, t - self.t0)  # a clock stepped back is drawn at the start
        self.last = max(self.last, t)
        side = "caller" if direction == "in" else "bot"
        if not isinstance(msg, dict):
            self._error(t, side, "frame that is not a JSON object")
            return
        try:
            event = parse_object(msg)
        except ProtocolError as exc:
            self._error(t, side, str(exc))
            return
        if isinstance(event, Media):
            self._media(t, event)
        elif isinstance(event, PlayAudio):
            self._play(t, event)
        else:
            self._other(t, side, event)

    def _media(self, t: float, event: Media) -> None:
        if event.track == "outbound":  # audioTrack=both: Plivo's copy of what it played
            return
        try:
            level = codec.level_dbfs(codec.decode(event.payload, self.fmt))
        except codec.CodecError:
            self._error(t, "caller", "media payload that does not decode")
            return
        self.caller.append((max(0.0, t - self.fmt.seconds(len(event.payload))), level))

    def _play(self, t: float, event: PlayAudio) -> None:
        fmt = event.media_format
        start = max(t, self.queue_end)
        payload = event.payload[: len(event.payload) - len(event.payload) % fmt.sample_width]
        pcm = codec.decode(payload, fmt)
        frame = 2 * fmt.sample_rate * FRAME_MS // 1000  # 20 ms of 16-bit PCM
        for offset in range(0, len(pcm), frame):
            level = codec.level_dbfs(pcm[offset : offset + frame])
            self.bot.append((start + offset / (2 * fmt.sample_rate), level))
        seconds = fmt.seconds(len(event.payload))
        self.queue_end = start + seconds
        # The metrics count bytes in the stream's format (a playAudio in another is a violation,
        # still played here for its duration).
        nbytes = round(seconds * self.fmt.bytes_per_second)
        self.events.append(Event(t, "play", nbytes=nbytes))
        self.marks.append(Mark(t, "play", "bot", f"{seconds * 1000:.0f} ms of audio"))

    def _other(self, t: float, side: str, event: Any) -> None:
        if isinstance(event, Start):
            self.fmt, self.call_id, self.stream_id = (
                event.media_format,
                event.call_id,
                event.stream_id,
            )
            self.marks.append(Mark(t, "start", side, event.media_format.content_type))
        elif isinstance(event, Dtmf):
            self.marks.append(Mark(t, "dtmf", side, event.digit))
        elif isinstance(event, Checkpoint):
            self.events.append(Event(t, "checkpoint", event.name))
            self.marks.append(Mark(t, "checkpoint", side, event.name))
        elif isinstance(event, PlayedStream):
            self.events.append(Event(t, "played", event.name))
            self.marks.append(Mark(t, "played", side, event.name))
        elif isinstance(event, ClearAudio):
            while self.bot and self.bot[-1][0] >= t:  # queued, never played
                self.bot.pop()
            self.queue_end = t
            self.events.append(Event(t, "clear"))
            self.marks.append(Mark(t, "clear", side))
        elif isinstance(event, ClearedAudio):
            self.marks.append(Mark(t, "cleared", side))
        elif isinstance(event, SendDtmf):
            self.marks.append(Mark(t, "senddtmf", side, event.digits))
        elif isinstance(event, Stop):
            self.marks.append(Mark(t, "stop", side))
        elif isinstance(event, UnknownEvent):
            self.marks.append(Mark(t, "unknown", side, event.name))
        else:
            self._error(t, side, f"{event.event} sent the wrong way")

    def _error(self, t: float, side: str, what: str) -> None:
        self.errors += 1
        self.marks.append(Mark(t, "error", side, what))


def build(lines: Iterable[tuple[float, str, Any]]) -> CallTimeline:
    """The timeline of one captured call; raises `NotACapture` when the lines hold no call."""
    b = _Builder()
    seen_start = False
    for t, direction, msg in lines:
        b.add(t, direction, msg)
        seen_start = seen_start or bool(b.marks and b.marks[-1].kind == "start")
    if b.t0 is None:
        raise NotACapture("the capture is empty")
    if not seen_start:
        raise NotACapture("no start event: not the capture of a call")
    # Lines are written in time order; a clock stepped back must not break what follows.
    b.events.sort(key=lambda e: e.t)
    b.caller.sort()
    b.bot.sort()
    duration = max(b.last, b.queue_end)
    step = max(FRAME_MS / 1000, duration / MAX_BUCKETS)
    segments = _segments(b.caller)
    playing = [t for t, _ in b.bot]
    barge_ins = tuple(s for s in segments if _talks_over(playing, s))
    spans = _spans(b, segments, set(barge_ins))
    return CallTimeline(
        call_id=b.call_id,
        stream_id=b.stream_id,
        media_format=b.fmt,
        started_at=b.t0,
        duration=duration,
        caller=_envelope(b.caller, step, duration),
        bot=_envelope(b.bot, step, duration),
        segments=segments,
        barge_ins=barge_ins,
        marks=tuple(sorted(b.marks, key=lambda m: m.t)),
        spans=spans,
        checkpoints_unconfirmed=_unconfirmed(b.events),
        errors=b.errors,
    )


def _talks_over(starts: list[float], segment: tuple[float, float]) -> bool:
    """Whether an utterance talks over the bot (frames starting at `starts`, sorted): the bot was
    playing when it began, or up to `OVERLAP` before (a reply that stalled), and goes on in it."""
    begin, end = segment
    i = bisect_right(starts, begin)
    was_playing = i > 0 and starts[i - 1] + FRAME_MS / 1000 > begin - OVERLAP
    goes_on = i < len(starts) and starts[i] < end
    return was_playing and goes_on


def _segments(frames: list[tuple[float, float]]) -> tuple[tuple[float, float], ...]:
    """Utterances: runs of speech frames, pauses shorter than `PAUSE` included."""
    frame = FRAME_MS / 1000
    out: list[tuple[float, float]] = []
    for start, level in frames:
        if level <= SPEECH_DBFS:
            continue
        if out and start - out[-1][1] < PAUSE:
            out[-1] = (out[-1][0], max(out[-1][1], start + frame))
        else:
            out.append((start, start + frame))
    return tuple(out)


def _spans(
    b: _Builder, segments: tuple[tuple[float, float], ...], barge_ins: set[tuple[float, float]]
) -> tuple[Span, ...]:
    spans: list[Span] = []
    bounds = [0.0] + [s[0] for s in segments] + [float("inf")]
    turns: list[tuple[float, float] | None] = [None, *segments]
    events_at = [e.t for e in b.events]
    for (begin, until), segment in zip(pairwise(bounds), turns, strict=True):
        events = tuple(b.events[bisect_left(events_at, begin) : bisect_left(events_at, until)])
        barge = segment if segment in barge_ins else None
        turn = Turn(
            b.fmt,
            speech_end=segment[1] if segment else None,
            barge_in_started=barge[0] if barge else None,
            barge_in_ended=barge[1] if barge else None,
            timeline=events,
        )
        spans += _turn_spans(turn)
    whole = Turn(b.fmt, None, None, None, tuple(b.events))
    for start, end, name in metrics.checkpoint_spans(whole):
        spans.append(Span("checkpoint_ms", start, end, _ms(end - start), name))
    return tuple(sorted(spans, key=lambda s: (s.start, s.metric)))


def _turn_spans(turn: Turn) -> list[Span]:
    spans = []
    first = metrics.first_audio_ms(turn)
    if first is not None and turn.speech_end is not None:
        spans.append(Span("first_audio_ms", turn.speech_end, turn.speech_end + first / 1000, first))
    for start, end in metrics.reply_gap_spans(turn):
        spans.append(Span("reply_gaps_ms", start, end, _ms(end - start)))
    began = turn.barge_in_started
    clear = metrics.clear_ms(turn)
    if clear is not None and began is not None:
        spans.append(Span("clear_ms", began, began + clear / 1000, clear))
    over = metrics.barge_in_audio_ms(turn)
    if over is not None and began is not None:
        until = began + clear / 1000 if clear is not None else (turn.barge_in_ended or began)
        spans.append(Span("barge_in_audio_ms", began, until, over, f"{over:g} ms of audio"))
    return spans


def _unconfirmed(events: list[Event]) -> int:
    sent = sum(1 for e in events if e.kind == "checkpoint")
    return sent - len(metrics.checkpoint_spans(Turn(MULAW_8K, None, None, None, tuple(events))))


def _envelope(frames: list[tuple[float, float]], step: float, duration: float) -> Envelope:
    levels = [FLOOR_DBFS] * (int(duration / step) + 1)
    for start, level in frames:
        i = min(len(levels) - 1, int(start / step))
        if level > levels[i]:
            levels[i] = level
    return Envelope(step, tuple(round(v, 1) for v in levels))


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 1)
