"""Caller turns of a tapped call: the timeline `metrics` reads, built from passing traffic.

Pure. `simulate` knows when its caller stops talking because it sends the audio; a tap
(`serve --upstream`) only sees the messages pass, tagged by direction. `TurnLog` turns that
stream into the same `CallReport` timelines `metrics` computes from, one per caller turn, so
the live figures and simulate's come from one set of metric functions:

- a turn starts at the caller's first speech frame after at least `TURN_PAUSE_S` without
  speech, or once the bot has answered (played audio at least `ANSWER_AFTER_S` after the
  caller's last speech frame; the first speech of the call starts one too),
  and lasts until the next one starts;
  its `speech_end` is its last speech frame, so `first_audio_ms` is the bot's first
  `playAudio` after the caller stopped talking;
- a turn that starts while the bot's audio is still playing (as Plivo plays it: each
  `playAudio` from when it arrives or when the audio before it ends; `clearAudio` empties the
  queue) is a barge-in: `clear_ms` and `barge_in_audio_ms` are measured from its first frame;
- checkpoints still waiting for their `playedStream` carry over into the next turn, so a
  round trip that spans two turns is counted once.

Times are seconds on one clock (the caller gives them). Memory is bounded: a turn's timeline
holds only the bot's messages, and one longer than `MAX_TURN_EVENTS` is folded into the
figures and continued in a fresh timeline (at most one reply gap is missed there).
"""

from __future__ import annotations

from typing import Any

from plivo_stream_cli.callreport import CallReport, TimedEvent
from plivo_stream_cli.formats import MediaFormat
from plivo_stream_cli.metrics import METRICS, aggregate, call_metrics

TURN_PAUSE_S = 0.5  # silence that ends the caller's turn; shorter pauses are inside a sentence
ANSWER_AFTER_S = 0.1  # audio this long after the caller's speech answers it (not mid-sentence)
MAX_TURN_EVENTS = 4096
MAX_VALUES = 1000  # per metric: the latest values are kept for percentiles
MAX_PENDING = 256  # checkpoints awaiting confirmation (a bot that never waits for them)


class TurnLog:
    """Per-turn timelines of one tapped stream, and the metrics of the turns so far."""

    def __init__(self, media_format: MediaFormat, *, pause: float = TURN_PAUSE_S) -> None:
        self.fmt = media_format
        self.pause = pause
        self.turns = 0  # caller turns begun
        self.values: dict[str, list[float]] = {name: [] for name in METRICS}
        self._last_speech: float | None = None
        self._answered = False  # the bot has played since the caller's last speech frame
        self._drain_at = 0.0  # when the bot's audio queued so far has played out
        self._pending: list[TimedEvent] = []  # checkpoints waiting for their playedStream
        self._report = self._new_report()

    def _new_report(self) -> CallReport:
        report = CallReport("", "", self.fmt)
        report.timeline.extend(self._pending)
        return report

    # ------------------------------------------------------------ what passes

    def caller_frame(self, t: float, speech: bool) -> dict[str, Any] | None:
        """One inbound frame; returns the metrics of the turn it closed, if it began one."""
        if not speech:
            return None
        closed = None
        last = self._last_speech
        if last is None or t - last >= self.pause or self._answered:
            closed = self._close_turn()
            self.turns += 1
            if self._drain_at > t:
                self._report.barge_in_started = t
        report = self._report
        report.speech_end = t
        if report.barge_in_started is not None:
            report.barge_in_ended = t
        self._last_speech = t
        self._answered = False
        return closed

    def bot_play(self, t: float, nbytes: int) -> None:
        self._drain_at = max(self._drain_at, t) + self.fmt.seconds(nbytes)
        last = self._last_speech
        if last is not None and t - last >= ANSWER_AFTER_S:
            self._answered = True
        self._mark(TimedEvent(t, "play", nbytes=nbytes))

    def bot_checkpoint(self, t: float, name: str) -> None:
        event = TimedEvent(t, "checkpoint", name)
        self._pending.append(event)
        del self._pending[:-MAX_PENDING]
        self._mark(event)

    def bot_clear(self, t: float) -> None:
        self._drain_at = t
        self._pending.clear()  # Plivo never confirms a cleared checkpoint
        self._mark(TimedEvent(t, "clear"))

    def played(self, t: float, name: str) -> None:
        """Plivo's `playedStream` for a checkpoint the bot sent."""
        waiting = next((e for e in self._pending if e.detail == name), None)
        if waiting is not None:
            self._pending.remove(waiting)
        self._mark(TimedEvent(t, "played", name))

    def _mark(self, event: TimedEvent) -> None:
        timeline = self._report.timeline
        timeline.append(event)
        if len(timeline) >= MAX_TURN_EVENTS:
            self._fold(self._report)
            self._report = self._new_report()

    # ------------------------------------------------------------ figures

    def _close_turn(self) -> dict[str, Any] | None:
        report = self._report
        self._report = self._new_report()
        if not report.timeline and report.speech_end is None:
            return None
        return self._fold(report)

    def _fold(self, report: CallReport) -> dict[str, Any]:
        measured = call_metrics(report)
        for name in METRICS:
            value = measured[name]
            values = self.values[name]
            values.extend(value if isinstance(value, list) else [] if value is None else [value])
            del values[:-MAX_VALUES]
        return {name: measured[name] for name in METRICS}

    def current(self) -> dict[str, Any]:
        """The metrics of the turn in progress (as far as it has gone)."""
        measured = call_metrics(self._report)
        return {name: measured[name] for name in METRICS}

    def close(self) -> dict[str, Any] | None:
        """The call ended: fold the last turn; returns its metrics."""
        return self._close_turn()

    def summary(self, *, include_current: bool = True) -> dict[str, Any]:
        """Percentiles of every metric over the turns so far (the turn in progress too)."""
        folded = [{name: list(values) for name, values in self.values.items()}]
        if include_current:
            folded.append(self.current())
        stats = aggregate(folded)
        return {"turns": self.turns, **stats}


def latency_line(summary: dict[str, Any]) -> str:
    """One human line for a `TurnLog.summary`: each measured metric's p50 and max."""
    parts = [f"turns {summary.get('turns', 0)}"]
    labels = {
        "first_audio_ms": "first audio",
        "reply_gaps_ms": "gaps",
        "checkpoint_ms": "checkpoint",
        "clear_ms": "clear",
        "barge_in_audio_ms": "barge-in audio",
    }
    for name, label in labels.items():
        row = summary.get(name) or {}
        count = row.get("count", 0)
        if not count:
            continue
        if count == 1:
            parts.append(f"{label} {row['max']:g} ms")
        else:
            parts.append(f"{label} p50 {row['p50']:g} max {row['max']:g} ms (n={count})")
    return "  ".join(parts)
