"""Tests for the protocol event types, parser and serializers."""

from __future__ import annotations

import base64
import binascii
import contextlib
import dataclasses
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from plivo_stream_cli import events
from plivo_stream_cli.events import (
    MAX_MESSAGE_BYTES,
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
    parse,
    parse_extra_headers,
    parse_object,
)
from plivo_stream_cli.formats import L16_16K, MULAW_8K

START = {
    "event": "start",
    "sequenceNumber": 1,
    "start": {
        "callId": "c-1",
        "streamId": "s-1",
        "accountId": "MA123",
        "tracks": ["inbound"],
        "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000},
    },
    "extra_headers": "userId=12345;sessionId=abc-xyz",
}


def test_start_parses_documented_shape() -> None:
    event = parse(json.dumps(START))
    assert isinstance(event, Start)
    assert (event.call_id, event.stream_id, event.account_id) == ("c-1", "s-1", "MA123")
    assert event.media_format == MULAW_8K
    assert event.headers == {"userId": "12345", "sessionId": "abc-xyz"}
    assert event.to_dict() == START


def test_media_payload_is_decoded_once_and_reencoded_exactly() -> None:
    raw = {
        "event": "media",
        "sequenceNumber": 42,
        "streamId": "s-1",
        "media": {
            "track": "inbound",
            "timestamp": "1705312200000",
            "chunk": 41,
            "payload": base64.b64encode(b"\xff" * 160).decode(),
        },
    }
    event = parse(json.dumps(raw).encode())
    assert isinstance(event, Media)
    assert event.payload == b"\xff" * 160 and event.chunk == 41
    assert event.timestamp == "1705312200000"
    assert event.to_dict() == raw


def test_numeric_timestamp_and_string_sequence_are_accepted() -> None:
    raw = {
        "event": "dtmf",
        "sequenceNumber": "7",
        "streamId": "s",
        "dtmf": {"digit": "5", "timestamp": 17},
    }
    event = parse(json.dumps(raw))
    assert isinstance(event, Dtmf)
    assert event.sequence_number == 7 and event.timestamp == "17" and event.digit == "5"


@pytest.mark.parametrize("name", ["playedStream", "played"])
def test_played_stream_accepts_both_names(name: str) -> None:
    event = parse(json.dumps({"event": name, "streamId": "s", "name": "greeting-end"}))
    assert event == PlayedStream("s", "greeting-end")


def test_other_inbound_events() -> None:
    assert parse('{"event":"clearedAudio","streamId":"s","sequenceNumber":10}') == ClearedAudio(
        "s", 10
    )
    assert parse('{"event":"stop","streamId":"s"}') == Stop("s")
    unknown = parse('{"event":"mystery","x":1}')
    assert isinstance(unknown, UnknownEvent) and unknown.raw == {"event": "mystery", "x": 1}


def test_outbound_serializers_match_the_documented_json() -> None:
    play = PlayAudio(MULAW_8K, b"\x00\x01")
    assert json.loads(play.to_json()) == {
        "event": "playAudio",
        "media": {"contentType": "audio/x-mulaw", "sampleRate": 8000, "payload": "AAE="},
    }
    assert json.loads(Checkpoint("s", "end").to_json()) == {
        "event": "checkpoint",
        "streamId": "s",
        "name": "end",
    }
    assert json.loads(ClearAudio("s").to_json()) == {"event": "clearAudio", "streamId": "s"}
    assert json.loads(SendDtmf("12#").to_json()) == {"event": "sendDTMF", "dtmf": "12#"}


def test_outbound_events_parse_back() -> None:
    for event in (PlayAudio(L16_16K, b"\x01\x02"), Checkpoint("s", "n"), ClearAudio("s")):
        assert parse(event.to_json()) == event


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("not json", "not JSON"),
        ("[1,2]", "JSON list"),
        ('{"no":"event"}', "event: missing"),
        ('{"event":"start"}', "start: missing"),
        ('{"event":"start","start":{"callId":"c","streamId":"s"}}', "start.mediaFormat: missing"),
        (
            '{"event":"start","start":{"callId":"c","streamId":"s",'
            '"mediaFormat":{"encoding":"audio/x-mulaw","sampleRate":44100}}}',
            "unsupported media format",
        ),
        ('{"event":"media","media":{"payload":"%%%"}}', "media.payload: not valid base64"),
        ('{"event":"media","media":{"payload":5}}', "media.payload: expected a string, got int"),
        ('{"event":"media","media":{"payload":"AA==","chunk":"x"}}', "media.chunk"),
        ('{"event":"dtmf","dtmf":{}}', "dtmf.digit: missing"),
        ('{"event":"playedStream"}', "name: missing"),
    ],
)
def test_malformed_messages_name_the_field(text: str, fragment: str) -> None:
    with pytest.raises(ProtocolError) as info:
        parse(text)
    assert fragment in str(info.value)


def test_oversized_message_is_refused() -> None:
    with pytest.raises(ProtocolError, match="64 KB"):
        parse(" " * (MAX_MESSAGE_BYTES + 1))


def test_deeply_nested_json_is_a_protocol_error() -> None:
    with pytest.raises(ProtocolError):
        parse("[" * 50_000 + "]" * 50_000)


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=6,
)
_event_names = st.sampled_from(
    [
        "start",
        "media",
        "dtmf",
        "playedStream",
        "played",
        "clearedAudio",
        "stop",
        "playAudio",
        "checkpoint",
        "clearAudio",
        "sendDTMF",
        "other",
    ]
)


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(
    name=_event_names,
    body=st.dictionaries(
        st.sampled_from(
            [
                "start",
                "media",
                "dtmf",
                "name",
                "streamId",
                "sequenceNumber",
                "extra_headers",
                "mediaFormat",
                "payload",
                "x",
            ]
        ),
        _json,
        max_size=4,
    ),
)
def test_any_event_shaped_input_gives_an_event_or_protocol_error(name: str, body: dict) -> None:  # type: ignore[type-arg]
    body["event"] = name
    with contextlib.suppress(ProtocolError):
        parse(json.dumps(body))


@settings(max_examples=300)
@given(st.binary(max_size=200) | st.text(max_size=200))
def test_any_bytes_give_an_event_or_protocol_error(data: bytes | str) -> None:
    with contextlib.suppress(ProtocolError):
        parse(data)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("userId=12345;sessionId=abc-xyz", {"userId": "12345", "sessionId": "abc-xyz"}),
        ("a=1,b=2", {"a": "1", "b": "2"}),
        (" a = hello%20world ; ;junk;=x; b=%3D", {"a": "hello world", "b": "="}),
        ("", {}),
        (None, {}),
        ("k=v=w", {"k": "v=w"}),
    ],
)
def test_extra_headers(text: str | None, expected: dict[str, str]) -> None:
    assert parse_extra_headers(text) == expected


# -- the per-frame fast paths behave exactly like the plain ones ------------------------------


def _outcome(fn: object, *args: object) -> tuple[str, object]:
    try:
        return "ok", fn(*args)  # type: ignore[operator]
    except (ValueError, RecursionError, binascii.Error) as exc:
        return type(exc).__name__, str(exc)


@settings(max_examples=400)
@given(st.text(alphabet='{}[]":,.-+1eE0a \n\t\\u', max_size=24) | st.text(max_size=12))
def test_json_text_is_read_exactly_as_json_loads_reads_it(text: str) -> None:
    assert _outcome(events._loads, text) == _outcome(json.loads, text)


@settings(max_examples=400)
@given(st.text(alphabet="AZaz09+/=\n -_\u00e9", max_size=14) | st.text(max_size=8))
def test_payload_base64_is_checked_exactly_as_b64decode_validate(text: str) -> None:
    def reference(value: str) -> bytes:
        try:
            return base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise ProtocolError("media.payload: not valid base64") from None

    expected = _outcome(reference, text)
    assert _outcome(events._b64decode, text, "media.payload") == expected


_field = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=4)


@settings(max_examples=400)
@given(
    payload=st.sampled_from(["", "/w==", "AAEC", "bad!"]) | _field,
    track=_field,
    stamp=_field,
    chunk=_field,
    seq=_field,
    stream=_field,
    extra=_field | st.dictionaries(st.text(max_size=2), st.text(max_size=2), max_size=2),
    media_is_dict=st.booleans(),
)
def test_media_fast_path_gives_what_the_checked_path_gives(
    payload: object,
    track: object,
    stamp: object,
    chunk: object,
    seq: object,
    stream: object,
    extra: object,
    media_is_dict: bool,
) -> None:
    media = {"payload": payload, "track": track, "timestamp": stamp, "chunk": chunk}
    msg = {
        "event": "media",
        "sequenceNumber": seq,
        "streamId": stream,
        "media": media if media_is_dict else [media],
        "extra_headers": extra,
    }
    expected = _outcome(events._parse_media_fields, msg)
    assert _outcome(parse_object, msg) == expected
    assert _outcome(parse, json.dumps(msg)) == expected


def test_parsed_media_is_an_ordinary_frozen_media() -> None:
    text = Media("s", "inbound", "1", b"\x01\x02", 3, 4, "a=b").to_json()
    parsed = parse(text)
    made = Media("s", "inbound", "1", b"\x01\x02", 3, 4, "a=b")
    assert type(parsed) is Media
    assert (parsed, hash(parsed), repr(parsed)) == (made, hash(made), repr(made))
    with pytest.raises(dataclasses.FrozenInstanceError):
        parsed.track = "outbound"  # type: ignore[misc]


def _read(data: str | bytes, *, fast: bool) -> tuple[str, str]:
    """`parse(data)`, with or without msgspec, as text that tells an int from an equal float."""
    saved = events._fast_media
    if not fast:
        events._fast_media = None
    try:
        kind, value = _outcome(parse, data)
    finally:
        events._fast_media = saved
    return kind, repr(value)


def test_the_test_extra_reads_media_with_msgspec() -> None:
    assert events._fast_media is not None  # so the tests here compare both readers


_odd = st.sampled_from(["\ud800", "x\udfffy", "\u2028", "caf\u00e9", "\x00"])
_value = _field | st.integers(min_value=2**63 - 2, max_value=2**70) | _odd


def _mostly(plain: st.SearchStrategy[object]) -> st.SearchStrategy[object]:
    """What Plivo sends, or now and then anything else (so whole frames are often plain)."""
    return st.integers(0, 3).flatmap(lambda k: _value if k == 0 else plain)


@settings(max_examples=600)
@given(
    seq=_mostly(st.integers(min_value=0, max_value=2**70)),
    chunk=_mostly(st.integers(min_value=0, max_value=2**70)),
    track=_mostly(st.just("inbound")),
    other=_value,
    payload=_mostly(st.sampled_from(["/w==", "AAEC", ""]))
    | st.text(alphabet="AZaz09+/=\n -_", max_size=12),  # base64 right and wrong
    drop=st.sampled_from([None, "streamId", "sequenceNumber", "extra_headers"])
    | st.sampled_from(["track", "timestamp", "chunk", "payload"]).map("media.{}".format),
    duplicate=st.sampled_from([None, "sequenceNumber", "event", "streamId", "media"]),
    again=_value,
    ascii_only=st.booleans(),
    spaced=st.booleans(),
    as_bytes=st.booleans(),
)
def test_media_read_with_msgspec_is_what_json_reads(
    seq: object,
    chunk: object,
    track: object,
    other: object,
    payload: object,
    drop: str | None,
    duplicate: str | None,
    again: object,
    ascii_only: bool,
    spaced: bool,
    as_bytes: bool,
) -> None:
    msg = {
        "event": "media",
        "sequenceNumber": seq,
        "streamId": "b77e037d-4119-44b5-902d-25826b654539",
        "media": {"track": track, "timestamp": "1700000000123", "chunk": chunk, "payload": payload},
        "extra_headers": "{}",
        "other": other,
    }
    if drop is not None:  # a field left out
        where, _, key = drop.rpartition(".")
        del (msg[where] if where else msg)[key]  # type: ignore[attr-defined]
    separators = (", ", ": ") if spaced else (",", ":")
    text = json.dumps(msg, ensure_ascii=ascii_only, separators=separators)
    if duplicate is not None:  # the same key twice: json keeps the last one
        text = f"{text[:-1]},{json.dumps(duplicate)}:{json.dumps(again)}}}"
    data: str | bytes = text
    if as_bytes:
        data = text.encode("utf-8", "surrogatepass")
    assert _read(data, fast=True) == _read(data, fast=False)


def test_a_sequence_number_beyond_64_bits_stays_an_integer() -> None:
    text = Media("s", "inbound", "1", b"\xff", 1, 2**70 + 1).to_json()
    seq = parse(text).sequence_number  # type: ignore[union-attr]
    assert type(seq) is int and seq == 2**70 + 1  # not a float, as some JSON readers make it
