"""The Call API's pure helpers: E.164 numbers, the call body, the request UUID."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from plivo_stream_cli import calls
from plivo_stream_cli.errors import ApiFailedError, UsageError


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("+14155550100", "+14155550100"),
        ("+1 (415) 555-0100", "+14155550100"),
        ("+44.20.7946.0958", "+442079460958"),
        ("+919876543210", "+919876543210"),
    ],
)
def test_e164_accepts_and_compacts(raw: str, clean: str) -> None:
    assert calls.e164(raw, "TO") == clean


@pytest.mark.parametrize(
    "raw", ["", "+", "+0123", "+1", "14155550100", "+1415555010012345", "+1-415-abc", "+١٢٣٤٥"]
)
def test_e164_refuses(raw: str) -> None:
    with pytest.raises(UsageError, match=r"E\.164"):
        calls.e164(raw, "TO")


@given(st.text(max_size=20))
def test_e164_only_ever_returns_plus_and_ascii_digits(raw: str) -> None:
    try:
        clean = calls.e164(raw, "TO")
    except UsageError:
        return
    assert clean[0] == "+" and clean[1:].isascii() and clean[1:].isdigit()
    assert 3 <= len(clean) <= 16


def test_call_body() -> None:
    assert calls.call_body("+1", "+2", "https://a/answer") == {
        "from": "+1",
        "to": "+2",
        "answer_url": "https://a/answer",
        "answer_method": "POST",
    }


@pytest.mark.parametrize("value", ["abc", ["abc"]])
def test_request_uuid_as_string_or_one_item_list(value: object) -> None:
    assert calls.request_uuid({"request_uuid": value}) == "abc"


@pytest.mark.parametrize("doc", [None, {}, {"request_uuid": ""}, {"request_uuid": ["a", "b"]}])
def test_request_uuid_missing(doc: object) -> None:
    with pytest.raises(ApiFailedError):
        calls.request_uuid(doc)


@pytest.mark.parametrize("url", ["ftp://x/a", "https://", "answer", ""])
def test_answer_url_must_be_http(url: str) -> None:
    with pytest.raises(UsageError):
        calls.check_answer_url(url)
