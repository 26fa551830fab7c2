"""What simulated calls measured: per-call latency metrics, percentiles, thresholds, summaries.

Pure: works on `CallReport` timelines (seconds since the stream opened, on the simulator's
monotonic clock), never on sockets. All durations are wall-clock milliseconds; with `--speed N`
the caller's audio and playback run N times faster, so gate latency at speed 1.

The metrics, per call:

- `first_audio_ms` — time to first audio: the first `playAudio` received at or after the end of the
  caller's speech, minus that end (`report.speech_end`: when the last frame louder than -50 dBFS
  was sent, or the last frame of an audio without speech). None when the bot never answered.
- `reply_gaps_ms` — silences inside the bot's replies. Each `playAudio` (arrival `t`, duration `d`)
  is played the way Plivo plays its queue: from `max(t, end of the audio queued before it)` for
  `d`. A gap is the time a `playAudio` arrived after the queue had run dry, `t - end`, counted
  when at least `GAP_MIN_MS`. Replies are split at the end of the caller's speech, at barge-in and
  at each `clearAudio`; the silence between two replies is not a gap.
- `checkpoint_ms` — checkpoint round trip, per confirmed checkpoint: from receiving the
  `checkpoint` to sending its `playedStream` (the audio still queued before it, played out). What
  the bot waits for after sending a checkpoint, minus the network both ways. Checkpoints dropped
  by a clear are counted in `checkpoints_unconfirmed`.
- `clear_ms` — with barge-in: from the first frame of the caller talking over the reply to the
  first `clearAudio` after it. None when the bot never cleared.
- `barge_in_audio_ms` — with barge-in: the audio (in ms of audio) of the `playAudio` messages
  received from the barge-in's first frame until the bot's `clearAudio` — or, when it never
  clears, until the caller's barge-in audio ended: what the bot kept sending over the caller.
  A reply to the barge-in utterance itself comes later and is not counted.

Run-level figures are pooled: every value of every call goes into one list and the percentiles
are exact over it (`aggregate`), never an average of per-call percentiles.

`pacing` — the generator's own lateness: how long after its scheduled time each paced wake-up
(a caller frame, a playback tick) actually ran, p50/p99/max in ms. An event loop that runs late
also stamps the bot's messages late, so the latency figures carry that error: a run whose p99
lateness exceeds `PACING_UNRELIABLE_P99_MS` (half a 20 ms frame) is marked `unreliable`.
"""

from __future__ import annotations

import statistics
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from plivo_stream_cli.callreport import CallReport

SCHEMA_VERSION = 2  # 2: `pacing`; scenario runs add `scenario` and per-call `assertions`
GAP_MIN_MS = 10.0  # shorter underruns are network jitter a real jitter buffer absorbs
METRICS = ("first_audio_ms", "reply_gaps_ms", "checkpoint_ms", "clear_ms", "barge_in_audio_ms")
PERCENTILES = (50, 90, 99)
PACING_UNRELIABLE_P99_MS = 10.0


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 1)


def first_audio_ms(report: CallReport) -> float | None:
    """Time to first audio (see the module docstring)."""
    if report.speech_end is None:
        return None
    first = next(
        (e.t for e in report.timeline if e.kind == "play" and e.t >= report.speech_end), None
    )
    return None if first is None else _ms(first - report.speech_end)


def reply_gaps_ms(report: CallReport) -> list[float]:
    """Silences inside the bot's replies, in arrival order (see the module docstring)."""
    fmt, speed = report.media_format, max(report.speed, 1e-6)
    breaks = deque(sorted(t for t in (report.speech_end, report.barge_in_started) if t is not None))
    gaps: list[float] = []
    end: float | None = None  # when the audio queued so far has played out
    for event in report.timeline:
        while breaks and breaks[0] <= event.t:
            breaks.popleft()
            end = None
        if event.kind == "clear":
            end = None
        elif event.kind == "play":
            if end is not None and (event.t - end) * 1000 >= GAP_MIN_MS:
                gaps.append(_ms(event.t - end))
            end = max(end if end is not None else event.t, event.t)
            end += fmt.seconds(event.nbytes) / speed
    return gaps


def checkpoint_ms(report: CallReport) -> list[float]:
    """Checkpoint round trips, in confirmation order (see the module docstring)."""
    waiting: dict[str, deque[float]] = {}
    trips: list[float] = []
    for event in report.timeline:
        if event.kind == "checkpoint":
            waiting.setdefault(event.detail, deque()).append(event.t)
        elif event.kind == "played" and waiting.get(event.detail):
            trips.append(_ms(event.t - waiting[event.detail].popleft()))
    return trips


def clear_ms(report: CallReport) -> float | None:
    """Barge-in to clearAudio (see the module docstring)."""
    began = report.barge_in_started
    if began is None:
        return None
    clear = next((e.t for e in report.timeline if e.kind == "clear" and e.t >= began), None)
    return None if clear is None else _ms(clear - began)


def barge_in_audio_ms(report: CallReport) -> float | None:
    """Audio the bot sent after the barge-in began (see the module docstring)."""
    began = report.barge_in_started
    if began is None:
        return None
    clear = next((e.t for e in report.timeline if e.kind == "clear" and e.t >= began), None)
    until = clear if clear is not None else report.barge_in_ended
    if until is None:
        until = float("inf")
    sent = sum(e.nbytes for e in report.timeline if e.kind == "play" and began <= e.t <= until)
    return _ms(report.media_format.seconds(sent))


def call_metrics(report: CallReport) -> dict[str, Any]:
    """Every metric of one call."""
    confirmed = len(report.checkpoints_confirmed)
    return {
        "first_audio_ms": first_audio_ms(report),
        "reply_gaps_ms": reply_gaps_ms(report),
        "checkpoint_ms": checkpoint_ms(report),
        "checkpoints_unconfirmed": len(report.checkpoints_received) - confirmed,
        "clear_ms": clear_ms(report),
        "barge_in_audio_ms": barge_in_audio_ms(report),
    }


def stats(values: Sequence[float]) -> dict[str, float | int | None]:
    """count, p50, p90, p99 (linear interpolation between the closest ranks) and max."""
    out: dict[str, float | int | None] = {"count": len(values)}
    if not values:
        return out | {f"p{p}": None for p in PERCENTILES} | {"max": None}
    cuts = statistics.quantiles(values, n=100, method="inclusive") if len(values) > 1 else None
    for p in PERCENTILES:
        out[f"p{p}"] = round(cuts[p - 1], 1) if cuts else values[0]
    out["max"] = max(values)
    return out


def aggregate(per_call: Sequence[dict[str, Any]]) -> dict[str, dict[str, float | int | None]]:
    """Percentiles of each metric over calls (list metrics pool every value of every call)."""
    result = {}
    for name in METRICS:
        values: list[float] = []
        for metrics in per_call:
            value = metrics.get(name)
            if isinstance(value, list):
                values.extend(value)
            elif value is not None:
                values.append(value)
        result[name] = stats(values)
    return result


@dataclass(frozen=True)
class Check:
    """A threshold: every call's `metric` must be measured and at most `limit` ms."""

    metric: str
    limit: float
    worst: float | None
    missing: int  # calls where the metric could not be measured
    calls: int

    @property
    def passed(self) -> bool:
        return self.missing == 0 and self.worst is not None and self.worst <= self.limit

    def describe(self) -> str:
        if self.missing:
            what = {
                "first_audio_ms": "no reply after the caller's speech",
                "clear_ms": "no clearAudio after the barge-in",
            }
            reason = what.get(self.metric, f"{self.metric} not measured")
            return f"{self.metric}: {reason} in {self.missing} of {self.calls} calls"
        verdict = "<=" if self.passed else ">"
        return f"{self.metric}: worst {self.worst:g} ms {verdict} limit {self.limit:g} ms"

    def to_dict(self) -> dict[str, Any]:
        return {
            "metric": self.metric,
            "max": self.limit,
            "worst": self.worst,
            "missing": self.missing,
            "passed": self.passed,
        }


def check(per_call: Sequence[dict[str, Any]], metric: str, limit: float) -> Check:
    """Hold every call's `metric` to `limit` ms."""
    values = [m.get(metric) for m in per_call]
    measured = [v for v in values if v is not None]
    return Check(
        metric, limit, max(measured, default=None), len(values) - len(measured), len(values)
    )


def summarize(report: CallReport) -> dict[str, Any]:
    """The summary of one call as a JSON-ready dict, its metrics included."""
    return {
        "call_id": report.call_id,
        "stream_id": report.stream_id,
        "content_type": report.media_format.content_type,
        "frames_sent": report.frames_sent,
        "bytes_sent": report.bytes_sent,
        "dtmf_sent": "".join(report.dtmf_sent),
        "play_messages": report.play_messages,
        "audio_received_s": round(report.received_seconds, 3),
        "checkpoints_received": report.checkpoints_received,
        "checkpoints_confirmed": report.checkpoints_confirmed,
        "clears": report.clears,
        "close_code": report.close_code,
        "close_reason": report.close_reason,
        "violations": report.violations,
        "warnings": report.warnings,
        "duration_s": round(report.duration, 3),
        "metrics": call_metrics(report),
    }


def pacing(lateness_ms: Sequence[float]) -> dict[str, Any]:
    """The generator's pacing lateness, pooled (see the module docstring)."""
    values = sorted(max(0.0, v) for v in lateness_ms)
    if not values:
        return {"count": 0, "p50": None, "p99": None, "max": None, "unreliable": False}
    row = stats(values)
    p99 = row["p99"]
    return {
        "count": len(values),
        "p50": row["p50"],
        "p99": p99,
        "max": round(values[-1], 1),
        "unreliable": p99 is not None and p99 > PACING_UNRELIABLE_P99_MS,
    }


def run_summary(reports: Sequence[CallReport], checks: Sequence[Check] = ()) -> dict[str, Any]:
    """The `--json` document of a run of one or more calls."""
    calls = [summarize(r) for r in reports]
    return {
        "schema_version": SCHEMA_VERSION,
        "passed": all(c.passed for c in checks),
        "checks": [c.to_dict() for c in checks],
        "metrics": aggregate([c["metrics"] for c in calls]),
        "pacing": pacing([v for r in reports for v in r.pacing_late_ms]),
        "calls": calls,
    }


def render_text(summary: dict[str, Any]) -> list[str]:
    """The human form of `run_summary`: one call's fields, or a percentile table for many."""
    calls = summary["calls"]
    if len(calls) == 1:
        lines = _call_lines(calls[0])
    else:
        lines = [f"{len(calls)} calls"]
        header = f"{'metric':<20}{'count':>7}" + "".join(
            f"{k:>9}" for k in ("p50", "p90", "p99", "max")
        )
        lines.append(header)
        for name, row in summary["metrics"].items():
            cells = "".join(f"{_num(row.get(k)):>9}" for k in ("p50", "p90", "p99", "max"))
            lines.append(f"{name:<20}{row['count']:>7}{cells}")
    pace = summary.get("pacing")
    if pace and pace["count"]:
        note = "  UNRELIABLE: the generator ran late" if pace["unreliable"] else ""
        lines.append(
            f"{'pacing_late_ms':<24} p50 {_num(pace['p50'])}  p99 {_num(pace['p99'])}  "
            f"max {_num(pace['max'])}{note}"
        )
    return lines


def _call_lines(call: dict[str, Any]) -> list[str]:
    lines = []
    for key, value in call.items():
        if key != "metrics" and value not in (None, [], ""):
            lines.append(f"{key:<24} {_text(value)}")
    for key, value in call["metrics"].items():
        if value not in (None, []) and not (key == "checkpoints_unconfirmed" and value == 0):
            lines.append(f"{key:<24} {_text(value)}")
    return lines


def _text(value: object) -> str:
    if isinstance(value, list):
        return ", ".join(_text(v) for v in value)
    return f"{value:g}" if isinstance(value, float) else str(value)


def _num(value: object) -> str:
    return "-" if value is None else f"{value:g}"
