"""`Media.to_json` writes its text directly (simulate sends one per call every 20 ms): it must be
exactly the generic compact JSON of `to_dict`, whatever the fields hold."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from plivo_stream_cli.events import Media, parse

text = st.text()
optional_int = st.none() | st.integers(min_value=-(2**70), max_value=2**70)


@given(text, text, text, st.binary(max_size=700), optional_int, optional_int, st.none() | text)
def test_to_json_is_the_compact_json_of_to_dict(
    stream_id: str,
    track: str,
    timestamp: str,
    payload: bytes,
    chunk: int | None,
    seq: int | None,
    extra: str | None,
) -> None:
    media = Media(stream_id, track, timestamp, payload, chunk, seq, extra)
    assert media.to_json() == json.dumps(media.to_dict(), separators=(",", ":"))


def test_a_media_event_round_trips_through_the_parser() -> None:
    sent = Media("stream-1", "inbound", "1705312200000", b"\xff" * 160, 7, 8, "a=1;b=2")
    assert parse(sent.to_json()) == sent


def test_odd_field_types_take_the_generic_path() -> None:
    media = Media("s", "inbound", "1", b"", True, 2.5, None)  # type: ignore[arg-type]
    assert media.to_json() == json.dumps(media.to_dict(), separators=(",", ":"))
