"""The latency metrics over hand-made call timelines: definitions, percentiles, thresholds."""

from __future__ import annotations

import json

import pytest

from plivo_stream_cli import metrics
from plivo_stream_cli.callreport import CallReport, TimedEvent
from plivo_stream_cli.formats import MULAW_8K

MS100 = 800  # bytes of mu-law in 100 ms


def report(
    *events: tuple[float, str] | tuple[float, str, str] | tuple[float, str, str, int],
    speech_end: float | None = None,
    barge_in: float | None = None,
    speed: float = 1.0,
) -> CallReport:
    r = CallReport("call", "stream", MULAW_8K, speed=speed)
    r.timeline = [TimedEvent(*e) for e in events]  # type: ignore[arg-type]
    r.speech_end, r.barge_in_started = speech_end, barge_in
    r.checkpoints_received = [e.detail for e in r.timeline if e.kind == "checkpoint"]
    r.checkpoints_confirmed = [e.detail for e in r.timeline if e.kind == "played"]
    return r


def play(t: float, ms: int = 100) -> tuple[float, str, str, int]:
    return (t, "play", "", MS100 * ms // 100)


def test_first_audio_is_the_first_play_after_the_speech_ends() -> None:
    greeted = report(play(0.1), play(1.3), play(1.4), speech_end=1.0)
    assert metrics.first_audio_ms(greeted) == 300.0
    assert metrics.first_audio_ms(report(play(0.1), speech_end=1.0)) is None
    assert metrics.first_audio_ms(report(play(0.1))) is None


def test_reply_gaps_count_underruns_inside_a_reply_only() -> None:
    r = report(
        play(0.0, 500),  # a greeting, then the caller speaks: not a gap
        play(2.0),  # the reply: 2.0-2.1
        play(2.05),  # queued behind it: 2.1-2.2
        play(2.25),  # arrives 50 ms after the queue ran dry
        play(2.355),  # 5 ms late: jitter, below GAP_MIN_MS
        (2.5, "clear", "", 0),
        play(3.0),  # a new reply after the clear
        speech_end=1.0,
    )
    assert metrics.reply_gaps_ms(r) == [50.0]


def test_reply_gaps_follow_the_playback_speed() -> None:
    # at speed 2, 100 ms of audio plays in 50 ms: a play 100 ms later leaves a 50 ms gap
    assert metrics.reply_gaps_ms(report(play(1.0), play(1.1), speed=2)) == [50.0]


def test_checkpoint_round_trips_pair_names_in_order() -> None:
    r = report(
        (1.0, "checkpoint", "a"),
        (1.2, "checkpoint", "a"),
        (1.3, "checkpoint", "b"),
        (1.5, "played", "a"),
        (1.9, "played", "a"),
    )
    assert metrics.checkpoint_ms(r) == [500.0, 700.0]
    assert metrics.call_metrics(r)["checkpoints_unconfirmed"] == 1


def test_barge_in_metrics() -> None:
    r = report(
        *(play(1.0), play(1.1), play(1.2), (1.31, "clear", "", 0)),
        play(2.0),  # the bot's answer to what the caller said over it: not counted
        barge_in=1.15,
    )
    assert metrics.clear_ms(r) == 160.0
    assert metrics.barge_in_audio_ms(r) == 100.0
    never = report(play(1.0), play(1.2), play(1.4), play(1.6), play(2.5), barge_in=1.15)
    never.barge_in_ended = 1.55
    assert metrics.clear_ms(never) is None and metrics.barge_in_audio_ms(never) == 200.0
    assert metrics.clear_ms(report(play(1.0))) is None
    assert metrics.barge_in_audio_ms(report(play(1.0))) is None


def test_stats_percentiles() -> None:
    values = [float(v) for v in range(1, 101)]
    assert metrics.stats(values) == {
        "count": 100,
        "p50": 50.5,
        "p90": 90.1,
        "p99": 99.0,
        "max": 100.0,
    }
    assert metrics.stats([7.0]) == {"count": 1, "p50": 7.0, "p90": 7.0, "p99": 7.0, "max": 7.0}
    assert metrics.stats([])["p50"] is None


def test_aggregate_pools_lists_and_skips_missing_values() -> None:
    per_call = [
        {"first_audio_ms": 100.0, "reply_gaps_ms": [10.0, 30.0], "clear_ms": None},
        {"first_audio_ms": 300.0, "reply_gaps_ms": [20.0], "clear_ms": None},
    ]
    result = metrics.aggregate(per_call)
    assert result["first_audio_ms"]["count"] == 2 and result["first_audio_ms"]["max"] == 300.0
    assert result["reply_gaps_ms"]["count"] == 3 and result["reply_gaps_ms"]["p50"] == 20.0
    assert result["clear_ms"]["count"] == 0


@pytest.mark.parametrize(
    ("values", "passed", "text"),
    [
        ([120.0, 250.0], True, "first_audio_ms: worst 250 ms <= limit 300 ms"),
        ([120.0, 350.0], False, "first_audio_ms: worst 350 ms > limit 300 ms"),
        ([120.0, None], False, "no reply after the caller's speech in 1 of 2 calls"),
    ],
)
def test_threshold_checks(values: list[float | None], passed: bool, text: str) -> None:
    result = metrics.check([{"first_audio_ms": v} for v in values], "first_audio_ms", 300)
    assert result.passed is passed
    assert text in result.describe()


def test_run_summary_is_versioned_json() -> None:
    r = report(play(1.3), speech_end=1.0)
    failing = metrics.check([metrics.call_metrics(r)], "first_audio_ms", 100)
    doc = json.loads(json.dumps(metrics.run_summary([r, r], [failing])))
    assert doc["schema_version"] == metrics.SCHEMA_VERSION
    assert doc["passed"] is False and doc["checks"][0]["worst"] == 300.0
    assert doc["metrics"]["first_audio_ms"]["p90"] == 300.0
    assert len(doc["calls"]) == 2 and doc["calls"][0]["metrics"]["first_audio_ms"] == 300.0


def test_render_text_one_call_and_many() -> None:
    r = report(play(1.3), speech_end=1.0)
    one = metrics.render_text(metrics.run_summary([r]))
    assert any(line.split() == ["first_audio_ms", "300"] for line in one)
    many = metrics.render_text(metrics.run_summary([r, r, r]))
    assert many[0] == "3 calls"
    (row,) = [line for line in many if line.startswith("first_audio_ms")]
    assert row.split() == ["first_audio_ms", "3", "300", "300", "300", "300"]


def test_pacing_lateness_percentiles_and_the_unreliable_flag() -> None:
    steady = metrics.pacing([0.5] * 98 + [3.0, 4.0])
    assert steady["count"] == 100 and steady["p50"] == 0.5 and steady["max"] == 4.0
    assert steady["unreliable"] is False
    late = metrics.pacing([1.0] * 90 + [30.0] * 10)  # a tenth of wake-ups 30 ms late
    assert late["p99"] == 30.0 and late["unreliable"] is True
    assert metrics.pacing([]) == {
        "count": 0,
        "p50": None,
        "p99": None,
        "max": None,
        "unreliable": False,
    }


def test_run_percentiles_are_pooled_over_calls_never_averaged() -> None:
    # one call with many small values, one with a single large one: pooled p50 is small,
    # while an average of the two per-call medians would be 505
    per_call = [{"reply_gaps_ms": [10.0] * 9}, {"reply_gaps_ms": [1000.0]}]
    row = metrics.aggregate(per_call)["reply_gaps_ms"]
    assert row["count"] == 10 and row["p50"] == 10.0 and row["max"] == 1000.0
    assert row["p99"] == 910.9  # exact, linear between the two closest ranks
