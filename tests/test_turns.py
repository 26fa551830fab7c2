"""turns.TurnLog: per-turn timelines from a direction-tagged event stream, measured by metrics."""

from __future__ import annotations

from plivo_stream_cli.formats import MULAW_8K
from plivo_stream_cli.turns import MAX_TURN_EVENTS, TurnLog, latency_line

FRAME = 0.02
SECOND = 8000  # bytes of mu-law per second


def speak(log: TurnLog, start: float, seconds: float) -> float:
    """Caller speech frames from `start`; returns the time of the last one."""
    t = start
    for _ in range(round(seconds / FRAME)):
        log.caller_frame(t, True)
        t += FRAME
    return t - FRAME


def test_first_audio_is_measured_per_turn_from_the_last_speech_frame() -> None:
    log = TurnLog(MULAW_8K)
    end = speak(log, 0.0, 1.0)
    log.caller_frame(end + FRAME, False)
    log.bot_play(end + 0.3, SECOND)  # answers 300 ms after the caller stopped
    end2 = speak(log, end + 3.0, 0.5)  # the second turn starts after the reply played
    log.bot_play(end2 + 0.45, SECOND)
    log.close()
    summary = log.summary()
    assert log.turns == 2
    assert log.values["first_audio_ms"] == [300.0, 450.0]
    assert summary["first_audio_ms"]["count"] == 2
    assert "first audio p50 375 max 450 ms (n=2)" in latency_line(summary)


def test_short_pauses_stay_inside_a_turn() -> None:
    log = TurnLog(MULAW_8K)
    speak(log, 0.0, 0.4)
    end = speak(log, 0.6, 0.4)  # a 220 ms pause: the same sentence
    log.bot_play(end + 0.2, SECOND)
    log.close()
    assert log.turns == 1
    assert log.values["first_audio_ms"] == [200.0]


def test_talking_over_the_reply_is_a_barge_in_measured_to_the_clear() -> None:
    log = TurnLog(MULAW_8K)
    end = speak(log, 0.0, 1.0)
    log.bot_play(end + 0.2, 4 * SECOND)  # 4 s of reply
    log.bot_checkpoint(end + 0.2, "reply-end")
    barge = end + 0.7
    speak(log, barge, 0.5)
    log.bot_clear(barge + 0.12)
    log.close()
    assert log.values["clear_ms"] == [120.0]
    assert log.values["barge_in_audio_ms"] == [0.0]
    summary = log.summary(include_current=False)
    assert summary["checkpoint_ms"]["count"] == 0  # cleared: never confirmed


def test_a_checkpoint_confirmed_in_a_later_turn_is_counted_once() -> None:
    log = TurnLog(MULAW_8K)
    end = speak(log, 0.0, 0.5)
    log.bot_play(end + 0.2, SECOND // 2)
    log.bot_checkpoint(end + 0.2, "done")
    speak(log, end + 2.0, 0.3)  # a new turn before the confirmation arrives
    log.played(end + 2.5, "done")
    log.close()
    assert log.values["checkpoint_ms"] == [2300.0]


def test_a_long_monologue_keeps_bounded_memory() -> None:
    log = TurnLog(MULAW_8K)
    for i in range(3 * MAX_TURN_EVENTS):
        log.bot_play(i * FRAME, 160)
    assert len(log._report.timeline) < MAX_TURN_EVENTS
    assert log.summary()["reply_gaps_ms"]["count"] == 0
