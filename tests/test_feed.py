"""Tests for plivo_stream_cli.feed: record shapes and the `--json` line encoder."""

from __future__ import annotations

import json
import math

from hypothesis import given, settings
from hypothesis import strategies as st

from plivo_stream_cli.events import Dtmf, Media
from plivo_stream_cli.feed import Record, event_record, json_line


def _dumps(record: Record) -> str:
    return json.dumps(record, separators=(",", ":"), ensure_ascii=False)


def test_media_record_shape() -> None:
    media = Media("s-1", "inbound", "1705312200000", b"\xff" * 160, chunk=41, sequence_number=42)
    record = event_record(media, t=1705312200.12345, stream="s-1")
    assert list(record.items()) == [
        ("t", 1705312200.123), ("stream", "s-1"), ("dir", "in"), ("event", "media"),
        ("seq", 42), ("track", "inbound"), ("chunk", 41), ("timestamp", "1705312200000"),
        ("bytes", 160),
    ]  # fmt: skip
    unsequenced = event_record(Media("s", "outbound", "", b""), t=1.0, stream="s", direction="out")
    assert list(unsequenced) == ["t", "stream", "dir", "event", "track", "chunk", "timestamp",
                                 "bytes"]  # fmt: skip
    assert json_line(record) == _dumps(record)


_text = st.text(max_size=6)
_scalar = st.none() | st.booleans() | st.integers() | st.floats() | _text


@settings(max_examples=300)
@given(
    t=st.floats() | st.integers(),
    strings=st.lists(_text, min_size=5, max_size=5),
    seq=st.none() | st.integers() | st.booleans(),
    chunk=_scalar,
    size=st.integers() | st.booleans(),
)
def test_json_line_is_exactly_json_dumps(
    t: float, strings: list[str], seq: int | None, chunk: object, size: int
) -> None:
    stream, direction, kind, track, stamp = strings
    record: Record = {"t": t, "stream": stream, "dir": direction, "event": kind}
    if seq is not None:
        record["seq"] = seq
    record.update(track=track, chunk=chunk, timestamp=stamp, bytes=size)
    assert json_line(record) == _dumps(record)


@settings(max_examples=200)
@given(
    t=st.floats(0, 4e9),
    stream=_text,
    track=_text,
    stamp=_text,
    payload=st.binary(max_size=8),
    chunk=st.none() | st.integers(),
    seq=st.none() | st.integers(),
)
def test_media_records_match_the_generic_construction(
    t: float, stream: str, track: str, stamp: str, payload: bytes, chunk: int | None,
    seq: int | None,
) -> None:  # fmt: skip
    record = event_record(Media(stream, track, stamp, payload, chunk, seq), t=t, stream=stream)
    expected: Record = {"t": round(t, 3), "stream": stream, "dir": "in", "event": "media"}
    if seq is not None:
        expected["seq"] = seq
    expected.update(track=track, chunk=chunk, timestamp=stamp, bytes=len(payload))
    assert list(record.items()) == list(expected.items())
    assert json.loads(json_line(record)) == expected


def test_other_records_and_odd_values_use_json_dumps() -> None:
    dtmf = event_record(Dtmf("s", "5", timestamp="1"), t=2.0, stream="s")
    assert json_line(dtmf) == _dumps(dtmf)
    odd = {"t": math.inf, "stream": "s", "dir": "in", "event": "media", "seq": 1,
           "track": "inbound", "chunk": None, "timestamp": "\u2028\"", "bytes": 3}  # fmt: skip
    assert json_line(odd) == _dumps(odd) and "Infinity" in json_line(odd)
