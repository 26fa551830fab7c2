"""`timeline`: a capture becomes marks, levels, utterances and metric spans at known times."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from plivo_stream_cli import codec, metrics, synth, timeline
from plivo_stream_cli.adapters import simulator
from plivo_stream_cli.formats import MULAW_8K

T0 = 1_700_000_000.0  # epoch seconds of the capture's first line
STREAM = "st-1"
FRAME = 0.02


def b64(wire: bytes) -> str:
    return base64.b64encode(wire).decode()


def start() -> dict[str, Any]:
    return {
        "event": "start",
        "sequenceNumber": 1,
        "start": {
            "callId": "call-1",
            "streamId": STREAM,
            "accountId": "MA1",
            "tracks": ["inbound"],
            "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000},
        },
        "extra_headers": "",
    }


def media(wire: bytes) -> dict[str, Any]:
    return {
        "event": "media",
        "streamId": STREAM,
        "media": {"track": "inbound", "timestamp": "0", "chunk": 1, "payload": b64(wire)},
    }


def play(seconds: float) -> dict[str, Any]:
    wire = codec.encode(synth.tone(440, seconds, 8000), MULAW_8K)
    return {
        "event": "playAudio",
        "media": {"contentType": "audio/x-mulaw", "sampleRate": 8000, "payload": b64(wire)},
    }


LOUD = codec.encode(synth.tone(300, FRAME, 8000), MULAW_8K)
QUIET = codec.silence(MULAW_8K, MULAW_8K.frame_bytes())


def known_call(checkpoint: str = "r1") -> list[tuple[float, str, Any]]:
    """A 6 s call: the caller speaks 1.0-2.0 s, the bot answers at 2.3 (0.5 s, checkpoint
    confirmed at 2.8) and again at 3.5 (2 s); the caller talks over it 4.0-4.4, the bot clears at
    4.2 and answers at 4.9 (0.3 s); DTMF 5 at 5.0."""
    lines: list[tuple[float, str, Any]] = [(T0, "in", start())]
    for i in range(1, 301):  # frames arrive as their 20 ms end
        t = round(i * FRAME, 3)
        speaking = 1.0 < t <= 2.0 or 4.0 < t <= 4.4
        lines.append((T0 + t, "in", media(LOUD if speaking else QUIET)))
    lines += [
        (T0 + 2.3, "out", play(0.5)),
        (T0 + 2.3, "out", {"event": "checkpoint", "streamId": STREAM, "name": checkpoint}),
        (T0 + 2.8, "in", {"event": "playedStream", "streamId": STREAM, "name": checkpoint}),
        (T0 + 3.5, "out", play(2.0)),
        (T0 + 4.2, "out", {"event": "clearAudio", "streamId": STREAM}),
        (T0 + 4.21, "in", {"event": "clearedAudio", "streamId": STREAM}),
        (T0 + 4.9, "out", play(0.3)),
        (T0 + 5.0, "in", {"event": "dtmf", "streamId": STREAM, "dtmf": {"digit": "5"}}),
    ]
    return sorted(lines, key=lambda line: line[0])


def spans(tl: timeline.CallTimeline, metric: str) -> list[tuple[float, float, float]]:
    return [
        (round(s.start, 3), round(s.end, 3), s.value_ms) for s in tl.spans if s.metric == metric
    ]


def test_marks_are_where_the_events_happened() -> None:
    tl = timeline.build(known_call())
    got = [(round(m.t, 3), m.kind, m.side, m.label) for m in tl.marks]
    assert got == [
        (0.0, "start", "caller", "audio/x-mulaw;rate=8000"),
        (2.3, "play", "bot", "500 ms of audio"),
        (2.3, "checkpoint", "bot", "r1"),
        (2.8, "played", "caller", "r1"),
        (3.5, "play", "bot", "2000 ms of audio"),
        (4.2, "clear", "bot", ""),
        (4.21, "cleared", "caller", ""),
        (4.9, "play", "bot", "300 ms of audio"),
        (5.0, "dtmf", "caller", "5"),
    ]
    assert tl.call_id == "call-1" and tl.started_at == T0 and tl.duration == pytest.approx(6.0)


def test_utterances_and_the_barge_in_are_found() -> None:
    tl = timeline.build(known_call())
    assert [(round(a, 3), round(b, 3)) for a, b in tl.segments] == [(1.0, 2.0), (4.0, 4.4)]
    assert [(round(a, 3), round(b, 3)) for a, b in tl.barge_ins] == [(4.0, 4.4)]


def test_metrics_are_spans_with_their_values() -> None:
    tl = timeline.build(known_call())
    assert spans(tl, "first_audio_ms") == [(2.0, 2.3, 300.0), (4.4, 4.9, 500.0)]
    assert spans(tl, "reply_gaps_ms") == [(2.8, 3.5, 700.0)]  # the queue ran dry between
    assert spans(tl, "checkpoint_ms") == [(2.3, 2.8, 500.0)]
    assert spans(tl, "clear_ms") == [(4.0, 4.2, 200.0)]
    assert spans(tl, "barge_in_audio_ms") == [(4.0, 4.2, 0.0)]  # sent before the caller spoke
    assert tl.checkpoints_unconfirmed == 0 and tl.errors == 0


def test_the_bots_track_is_played_as_plivo_plays_it_and_cut_by_the_clear() -> None:
    tl = timeline.build(known_call())
    env = tl.bot

    def loud(t: float) -> bool:
        return env.levels[int(t / env.step)] > timeline.SPEECH_DBFS

    assert [loud(t) for t in (2.2, 2.4, 2.7, 3.0, 3.6, 4.1, 4.5, 4.8, 5.0, 5.1, 5.5)] == [
        False, True, True, False, True, True, False, False, True, True, False,
    ]  # fmt: skip
    caller = tl.caller
    assert caller.levels[int(1.5 / caller.step)] > timeline.SPEECH_DBFS
    assert caller.levels[int(3.0 / caller.step)] < timeline.SPEECH_DBFS


def test_a_long_call_keeps_the_envelope_bounded() -> None:
    lines = [(T0, "in", start())] + [(T0 + i * 0.02, "in", media(LOUD)) for i in range(1, 15001)]
    tl = timeline.build(lines)  # five minutes
    assert len(tl.caller.levels) <= timeline.MAX_BUCKETS + 1
    assert tl.caller.step == pytest.approx(300 / timeline.MAX_BUCKETS)


def test_bad_messages_are_marked_not_fatal() -> None:
    lines = known_call()
    lines.insert(5, (T0 + 0.05, "in", {"event": "media", "media": {"payload": "!!"}}))
    lines.insert(6, (T0 + 0.06, "in", None))  # a frame that was not JSON
    tl = timeline.build(lines)
    assert tl.errors == 2
    assert [m.kind for m in tl.marks].count("error") == 2
    assert timeline.build(known_call()).spans == tl.spans


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        ([], "the capture is empty"),
        ([(T0, "in", media(LOUD))], "no start event: not the capture of a call"),
    ],
)
def test_no_call_is_refused(lines: list[tuple[float, str, Any]], message: str) -> None:
    with pytest.raises(timeline.NotACapture, match=message):
        timeline.build(lines)


def test_speech_threshold_is_the_simulators() -> None:
    assert timeline.SPEECH_DBFS == simulator.SPEECH_DBFS


def test_a_turn_is_what_the_metrics_read() -> None:
    events = (
        timeline.Event(0.1, "play", nbytes=800),  # 100 ms
        timeline.Event(0.4, "play", nbytes=800),
        timeline.Event(0.7, "checkpoint", "a"),
        timeline.Event(0.9, "played", "a"),
    )
    turn = timeline.Turn(MULAW_8K, 0.0, None, None, events)
    assert metrics.reply_gap_spans(turn) == [(pytest.approx(0.2), 0.4)]
    assert metrics.reply_gaps_ms(turn) == [200.0]
    assert metrics.checkpoint_spans(turn) == [(0.7, 0.9, "a")]
    assert metrics.checkpoint_ms(turn) == [200.0]
    assert metrics.first_audio_ms(turn) == 100.0


def test_talking_into_a_stalled_reply_is_a_barge_in_talking_after_it_is_not() -> None:
    def call(speech_from: float) -> timeline.CallTimeline:
        lines: list[tuple[float, str, Any]] = [(T0, "in", start())]
        for i in range(1, 201):
            t = round(i * FRAME, 3)
            speaking = speech_from < t <= speech_from + 0.4
            lines.append((T0 + t, "in", media(LOUD if speaking else QUIET)))
        lines += [(T0 + 0.5, "out", play(0.5)), (T0 + 1.1, "out", play(2.0))]  # dry 1.0-1.1
        return timeline.build(sorted(lines, key=lambda line: line[0]))

    assert len(call(1.04).barge_ins) == 1  # began in the stall, the reply went on over it
    assert call(0.0).barge_ins == ()  # before the bot spoke at all
    assert len(call(0.7).barge_ins) == 1  # while it played
