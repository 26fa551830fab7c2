"""Stream XML: validation rules with their fix-it messages, extraHeaders encoding, XML building."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import replace
from urllib.parse import unquote

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from plivo_stream_cli.errors import ExitCode, UsageError
from plivo_stream_cli.formats import L16_16K
from plivo_stream_cli.streamxml import (
    MAX_EXTRA_HEADERS_BYTES,
    MAX_URL_LENGTH,
    StreamOptions,
    build_xml,
    format_extra_headers,
    validate,
)

WSS = "wss://example.com/stream"


def _stream(document: str) -> ET.Element:
    root = ET.fromstring(document.split("\n", 1)[1])
    stream = root.find("Stream")
    assert stream is not None
    return stream


def test_default_xml_exactly() -> None:
    assert build_xml(StreamOptions(WSS)) == (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        "<Response>\n"
        '  <Stream bidirectional="false" audioTrack="inbound" '
        'contentType="audio/x-mulaw;rate=8000" keepCallAlive="false">'
        "wss://example.com/stream</Stream>\n"
        "</Response>\n"
    )


def test_every_attribute_and_speak() -> None:
    opts = StreamOptions(
        WSS,
        bidirectional=True,
        stream_timeout=600,
        status_callback_url="https://example.com/status",
        status_callback_method="GET",
        media_format=L16_16K,
        extra_headers={"userId": "12345", "note": "a b;c=d"},
        keep_call_alive=True,
    )
    document = build_xml(opts, speak="Hi <there> & welcome")
    root = ET.fromstring(document.split("\n", 1)[1])
    assert [child.tag for child in root] == ["Speak", "Stream"]
    assert root[0].text == "Hi <there> & welcome"
    assert root[1].text == WSS
    assert root[1].attrib == {
        "bidirectional": "true",
        "audioTrack": "inbound",
        "streamTimeout": "600",
        "statusCallbackUrl": "https://example.com/status",
        "statusCallbackMethod": "GET",
        "contentType": "audio/x-l16;rate=16000",
        "extraHeaders": "userId=12345;note=a%20b%3Bc%3Dd",
        "keepCallAlive": "true",
    }


def test_callback_method_only_with_callback_url() -> None:
    assert "statusCallbackMethod" not in _stream(build_xml(StreamOptions(WSS))).attrib


@pytest.mark.parametrize("track", ["outbound", "both"])
def test_unidirectional_stream_may_carry_any_track(track: str) -> None:
    assert _stream(build_xml(StreamOptions(WSS, audio_track=track))).get("audioTrack") == track


def test_warnings() -> None:
    assert validate(StreamOptions(WSS)) == []
    (warning,) = validate(StreamOptions("ws://localhost:8080/stream"))
    assert "wss://" in warning and "production" in warning


def test_url_at_the_length_limit_passes() -> None:
    base = "wss://example.com/"
    assert validate(StreamOptions(base + "a" * (MAX_URL_LENGTH - len(base)))) == []


def test_extra_headers_at_the_byte_limit_pass() -> None:
    headers = {"k": "v" * (MAX_EXTRA_HEADERS_BYTES - 2)}
    assert len(format_extra_headers(headers)) == MAX_EXTRA_HEADERS_BYTES
    assert validate(StreamOptions(WSS, extra_headers=headers)) == []


LONG_URL = "wss://example.com/" + "a" * MAX_URL_LENGTH


@pytest.mark.parametrize(
    ("opts", "what", "fix"),
    [
        (StreamOptions("https://example.com/stream"), "not a WebSocket URL", "wss://"),
        (StreamOptions("example.com/stream"), "not a WebSocket URL", "wss://"),
        (StreamOptions("wss:///stream"), "not a WebSocket URL", "wss://"),
        (StreamOptions(LONG_URL), "2066 characters", "shorten"),
        (StreamOptions("wss://example.com/a b"), "spaces", "percent-encode"),
        (StreamOptions(WSS, audio_track="sideways"), "unknown", "inbound, outbound, both"),
        (
            StreamOptions(WSS, bidirectional=True, audio_track="outbound"),
            "bidirectional stream cannot use audio track 'outbound'",
            "--audio-track inbound",
        ),
        (
            StreamOptions(WSS, bidirectional=True, audio_track="both"),
            "cannot use audio track 'both'",
            "--no-bidirectional",
        ),
        (StreamOptions(WSS, stream_timeout=0), "positive whole number", "86400"),
        (StreamOptions(WSS, stream_timeout=-5), "positive whole number", "leave it out"),
        (StreamOptions(WSS, stream_timeout=True), "positive whole number", "leave it out"),
        (StreamOptions(WSS, status_callback_method="PUT"), "'PUT' is not supported", "GET or POST"),
        (
            StreamOptions(WSS, status_callback_url="ftp://example.com/s"),
            "not an http(s) URL",
            "https://example.com/stream-status",
        ),
        (
            StreamOptions(WSS, status_callback_url="example.com/status"),
            "not an http(s) URL",
            "https://",
        ),
        (StreamOptions(WSS, extra_headers={"user id": "1"}), "'user id'", "letters, digits"),
        (StreamOptions(WSS, extra_headers={"a.b": "1"}), "not allowed", "'_' and '-'"),
        (StreamOptions(WSS, extra_headers={"": "1"}), "not allowed", "letters"),
        (StreamOptions(WSS, extra_headers={"userId": ""}), "needs a value", "userId=42"),
        (StreamOptions(WSS, extra_headers={"userId": "a\nb"}), "control characters", "userId="),
        (StreamOptions(WSS, extra_headers={"k": "\ud800"}), "not valid text", "'k'"),
        (
            StreamOptions(WSS, extra_headers={"k": "v" * MAX_EXTRA_HEADERS_BYTES}),
            "514 bytes",
            "at most 512",
        ),
        (StreamOptions(WSS, extra_headers={"k": "é" * 100}), "602 bytes", "shorten"),
    ],
)
def test_violations_say_what_and_how_to_fix(opts: StreamOptions, what: str, fix: str) -> None:
    with pytest.raises(UsageError) as info:
        validate(opts)
    message = info.value.message
    assert what in message and fix in message
    assert "\n" not in message
    assert info.value.exit_code == ExitCode.USAGE
    with pytest.raises(UsageError):
        build_xml(opts)


@pytest.mark.parametrize("speak", ["", "   "])
def test_empty_speak_is_refused(speak: str) -> None:
    with pytest.raises(UsageError, match="--speak needs some text"):
        build_xml(StreamOptions(WSS), speak=speak)


def test_format_extra_headers() -> None:
    assert format_extra_headers({}) == ""
    assert format_extra_headers({"userId": "12345", "sessionId": "abc-xyz"}) == (
        "userId=12345;sessionId=abc-xyz"
    )
    assert format_extra_headers({"q": "a=b,c;d/é"}) == "q=a%3Db%2Cc%3Bd%2F%C3%A9"


_keys = st.text(alphabet="abcXYZ019_-", min_size=1, max_size=8)
_values = st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc")), min_size=1)


@given(st.dictionaries(_keys, _values, max_size=6))
def test_extra_headers_round_trip_through_the_documented_parser(headers: dict[str, str]) -> None:
    # The receiving side (Plivo's guide): split on ';', then on the first '=', URL-decode.
    text = format_extra_headers(headers)
    pairs = [pair.split("=", 1) for pair in text.split(";")] if text else []
    assert {k: unquote(v) for k, v in pairs} == headers


def test_options_are_frozen_and_replaceable() -> None:
    opts = replace(StreamOptions(WSS), bidirectional=True)
    assert opts.bidirectional and validate(opts) == []


# ---------------------------------------------------------------- the same XML as plivoxml


def _plivoxml(opts: StreamOptions, speak: str | None) -> str:
    from plivo import plivoxml

    from plivo_stream_cli.streamxml import XML_DECLARATION, format_extra_headers

    attrs: dict[str, object] = {
        "bidirectional": opts.bidirectional,
        "audioTrack": opts.audio_track,
        "contentType": opts.media_format.content_type,
        "keepCallAlive": opts.keep_call_alive,
    }
    if opts.stream_timeout is not None:
        attrs["streamTimeout"] = opts.stream_timeout
    if opts.status_callback_url:
        attrs["statusCallbackUrl"] = opts.status_callback_url
        attrs["statusCallbackMethod"] = opts.status_callback_method
    if opts.extra_headers:
        attrs["extraHeaders"] = format_extra_headers(opts.extra_headers)
    response = plivoxml.ResponseElement()
    if speak is not None:
        response.add_speak(speak)
    response.add(plivoxml.StreamElement(opts.url, **attrs))
    return f"{XML_DECLARATION}\n{response.to_string(pretty=True)}"


_TEXT = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00\ufffe\uffff"),
    min_size=1,
    max_size=30,
).filter(lambda t: t.strip() and not re.search(r"[\x00-\x08\x0b\x0c\x0e-\x1f]", t))


_KEYS = st.from_regex(r"[A-Za-z0-9_-]{1,8}", fullmatch=True)


@settings(max_examples=150, deadline=None)
@given(
    path=st.text("abc/?&=<>\"'%;xyz", max_size=20),
    bidirectional=st.booleans(),
    track=st.sampled_from(["inbound", "outbound", "both"]),
    timeout=st.none() | st.integers(1, 86400),
    callback=st.none() | st.sampled_from(["https://e.com/s?a=1&b=<2>", 'http://x/"q"']),
    method=st.sampled_from(["GET", "POST"]),
    headers=st.dictionaries(_KEYS, _TEXT, max_size=3),
    keep=st.booleans(),
    speak=st.none() | _TEXT,
)
def test_the_xml_is_exactly_what_plivoxml_builds(
    path: str,
    bidirectional: bool,
    track: str,
    timeout: int | None,
    callback: str | None,
    method: str,
    headers: dict[str, str],
    keep: bool,
    speak: str | None,
) -> None:
    if bidirectional and track != "inbound":
        track = "inbound"
    opts = StreamOptions(
        f"wss://bot.example.com/{path}",
        bidirectional=bidirectional,
        audio_track=track,
        stream_timeout=timeout,
        status_callback_url=callback,
        status_callback_method=method,
        extra_headers=headers,
        keep_call_alive=keep,
    )
    try:
        ours = build_xml(opts, speak=speak)
    except UsageError:
        return  # refused by validation (e.g. the headers' 512 bytes): plivoxml is not asked
    assert ours == _plivoxml(opts, speak)


def test_text_xml_cannot_carry_is_refused() -> None:
    with pytest.raises(UsageError, match="XML cannot carry"):
        build_xml(StreamOptions(WSS), speak="bell \x07")
