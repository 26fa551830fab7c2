"""Tests for the per-stream session state machine and the simulated playback queue."""

from __future__ import annotations

import base64
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from plivo_stream_cli.events import Dtmf, Media, ProtocolError, Start
from plivo_stream_cli.formats import L16_8K, MULAW_8K, MediaFormat
from plivo_stream_cli.session import (
    KEEP_CHECKPOINTS,
    KEEP_DTMF,
    MAX_PENDING_CHECKPOINTS,
    MAX_TEXT,
    MAX_TRACKS,
    SEEN_WINDOW,
    PlaybackQueue,
    SequenceTracker,
    SessionState,
    SessionStateError,
    StreamRefused,
    StreamSession,
)


def start_text(fmt: MediaFormat = MULAW_8K, seq: int = 1) -> str:
    return Start("call", "stream", "MA1", ("inbound",), fmt, "", seq).to_json()


def media_text(seq: int, payload: bytes = b"\xff" * 160) -> str:
    return Media("stream", "inbound", "0", payload, seq - 1, seq).to_json()


def test_lifecycle_awaiting_streaming_stopped() -> None:
    session = StreamSession()
    assert session.state is SessionState.AWAITING_START
    assert isinstance(session.receive(start_text()), Start)
    assert session.state is SessionState.STREAMING and session.stream_id == "stream"
    event = session.receive(media_text(2))
    assert isinstance(event, Media)
    assert session.stats.media_packets == 1 and session.stats.media_bytes == {"inbound": 160}
    session.receive('{"event":"stop","streamId":"stream"}')
    assert session.state is SessionState.STOPPED


def test_media_before_start_is_an_error_and_counted() -> None:
    session = StreamSession()
    with pytest.raises(ProtocolError, match="before the start"):
        session.receive(media_text(1))
    assert session.stats.errors == 1
    session.receive(start_text(seq=2))
    assert session.state is SessionState.STREAMING


def test_bad_message_mid_stream_does_not_break_the_session() -> None:
    session = StreamSession()
    session.receive(start_text())
    session.receive(media_text(2))
    for bad in ("nope", '{"event":"media"}', '{"event":"media","media":{"payload":"!!"}}'):
        with pytest.raises(ProtocolError):
            session.receive(bad)
    session.receive(media_text(3))
    assert session.stats.errors == 3 and session.stats.media_packets == 2
    assert session.sequence.gaps == 0


def test_odd_length_l16_is_refused() -> None:
    session = StreamSession()
    session.receive(start_text(L16_8K))
    with pytest.raises(ProtocolError, match="odd length"):
        session.receive(media_text(2, b"\x00" * 3))


def test_second_start_is_refused() -> None:
    session = StreamSession()
    session.receive(start_text())
    with pytest.raises(ProtocolError, match="second start"):
        session.receive(start_text(seq=2))


def test_a_second_start_in_an_unknown_format_is_an_error_not_a_refusal() -> None:
    """The stream already decodes in its own format: a stray start must not close it (1003)."""
    session = StreamSession()
    session.receive(start_text())
    stray = json.loads(start_text(seq=2))
    stray["start"]["mediaFormat"]["encoding"] = "audio/x-unknown"
    with pytest.raises(ProtocolError, match="second start") as raised:
        session.receive(json.dumps(stray))
    assert not isinstance(raised.value, StreamRefused) and session.refusal is None
    assert isinstance(session.receive(media_text(3)), Media)
    assert session.stats.errors == 1 and session.stats.media_packets == 1


def test_dtmf_is_recorded() -> None:
    session = StreamSession()
    session.receive(start_text())
    assert isinstance(session.receive(Dtmf("stream", "5", sequence_number=2).to_json()), Dtmf)
    assert list(session.stats.dtmf) == ["5"] and session.stats.dtmf_count == 1


def test_sequence_tracker_classifies_anomalies() -> None:
    tracker = SequenceTracker()
    assert tracker.observe(1) is None
    assert tracker.observe(2) is None
    assert "2 missing" in (tracker.observe(5) or "")
    assert tracker.gaps == 2
    assert "late" in (tracker.observe(3) or "")
    assert tracker.reorders == 1 and tracker.gaps == 1
    assert "duplicate" in (tracker.observe(5) or "")
    assert tracker.duplicates == 1


def test_sequence_tracker_memory_is_bounded() -> None:
    tracker = SequenceTracker()
    for seq in range(1, 100_000):
        tracker.observe(seq)
    assert len(tracker._seen) == SEEN_WINDOW
    assert (tracker.gaps, tracker.duplicates, tracker.reorders) == (0, 0, 0)
    assert "duplicate" in (tracker.observe(100_000 - SEEN_WINDOW) or "")  # the oldest kept
    assert "late" in (tracker.observe(99_999 - SEEN_WINDOW) or "")  # one older: forgotten


class _WindowModel:
    """What the tracker must do, written plainly: a set of the numbers in the window."""

    def __init__(self) -> None:
        self.highest = self.gaps = self.duplicates = self.reorders = 0
        self.seen: set[int] = set()

    def observe(self, seq: int) -> str | None:
        note = None
        if seq > self.highest:
            missing = seq - self.highest - 1 if self.highest else seq - 1
            if missing > 0:
                self.gaps += missing
                note = "gap"
            self.highest = seq
        elif seq in self.seen:
            self.duplicates += 1
            note = "duplicate"
        else:
            self.reorders += 1
            self.gaps = max(0, self.gaps - 1)
            note = "late"
        self.seen = {s for s in self.seen | {seq} if self.highest - s < SEEN_WINDOW}
        return note


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.just(1),  # the next number, mostly
            st.integers(-3, 3),
            st.integers(-2 * SEEN_WINDOW, 2 * SEEN_WINDOW),
            st.integers(-(2**70), 2**70),
        ),
        max_size=300,
    )
)
def test_sequence_tracker_matches_a_window_of_sets(steps: list[int]) -> None:
    tracker, model = SequenceTracker(), _WindowModel()
    for step in steps:
        seq = model.highest + step  # steps relative to the highest, so runs stay near it
        note = tracker.observe(seq)
        expected = model.observe(seq)
        kind = None if note is None else next(k for k in ("gap", "duplicate", "late") if k in note)
        assert kind == expected, seq
        assert (tracker.highest, tracker.gaps, tracker.duplicates, tracker.reorders) == (
            model.highest, model.gaps, model.duplicates, model.reorders,
        )  # fmt: skip


def test_sending_before_start_is_an_error() -> None:
    session = StreamSession()
    with pytest.raises(SessionStateError):
        session.play_audio(b"\xff")
    with pytest.raises(SessionStateError):
        session.checkpoint("x")


def test_sending_produces_documented_messages_and_tracks_checkpoints() -> None:
    session = StreamSession()
    session.receive(start_text())
    play = json.loads(session.play_audio(b"\x01\x02"))
    assert play["media"] == {
        "contentType": "audio/x-mulaw",
        "sampleRate": 8000,
        "payload": base64.b64encode(b"\x01\x02").decode(),
    }
    assert json.loads(session.checkpoint("a")) == {
        "event": "checkpoint",
        "streamId": "stream",
        "name": "a",
    }
    session.checkpoint("b")
    session.receive('{"event":"playedStream","streamId":"stream","name":"a","sequenceNumber":2}')
    assert session.pending_checkpoints == ["b"]
    assert session.stats.checkpoints_confirmed == 1
    assert json.loads(session.clear_audio()) == {"event": "clearAudio", "streamId": "stream"}
    assert session.pending_checkpoints == [] and session.stats.checkpoints_cleared == 1


def test_playback_queue_reaches_checkpoints_after_their_audio() -> None:
    queue = PlaybackQueue()
    queue.add_audio(b"a" * 300)
    queue.add_checkpoint("one")
    queue.add_audio(b"b" * 100)
    queue.add_checkpoint("two")
    audio, reached = queue.play(160)
    assert audio == b"a" * 160 and reached == []
    audio, reached = queue.play(160)
    assert audio == b"a" * 140 + b"b" * 20 and reached == ["one"]
    audio, reached = queue.play(160)
    assert audio == b"b" * 80 and reached == ["two"]
    assert len(queue) == 0 and queue.queued_bytes == 0


def test_playback_queue_clear_drops_audio_and_checkpoints() -> None:
    queue = PlaybackQueue()
    queue.add_audio(b"x" * 500)
    queue.add_checkpoint("never")
    queue.play(100)
    assert queue.clear() == 400
    assert queue.play(160) == (b"", [])


def test_checkpoint_with_no_audio_is_due_at_once() -> None:
    queue = PlaybackQueue()
    queue.add_checkpoint("now")
    assert queue.play(160) == (b"", ["now"])


def test_what_the_peer_sends_cannot_grow_the_session() -> None:
    session = StreamSession()
    session.receive(start_text())
    for i in range(5_000):
        seq = 4 * i + 2
        session.receive(Dtmf("stream", f"{i}" * 50, sequence_number=seq).to_json())
        played = {"event": "playedStream", "sequenceNumber": seq + 1, "name": f"cp-{i}" * 40}
        session.receive(json.dumps(played))
        track = f"track-{i}" * (1 + i % 20)
        session.receive(Media("stream", track, "0", b"\xff" * 2, i, seq + 2).to_json())
        unknown = {"event": f"odd-{i}" * 100, "sequenceNumber": seq + 3}
        session.receive(json.dumps(unknown))
        session.checkpoint(f"mine-{i}")
    stats = session.stats
    assert stats.dtmf_count == 5_000 and stats.checkpoints_confirmed == 5_000
    assert len(stats.dtmf) == KEEP_DTMF and all(len(d) <= MAX_TEXT for d in stats.dtmf)
    assert len(session.confirmed_checkpoints) == KEEP_CHECKPOINTS
    assert all(len(n) <= MAX_TEXT for n in session.confirmed_checkpoints)
    assert len(stats.media_bytes) <= MAX_TRACKS + 1 and sum(stats.media_bytes.values()) == 10_000
    assert len(session.pending_checkpoints) == MAX_PENDING_CHECKPOINTS
    assert session.pending_checkpoints[-1] == "mine-4999"
    assert sum(len(note) for note in session.notes) < 256 * 200  # notes cut too
