"""Shaping Stream API answers into table rows, and StreamOptions into a Start Stream body."""

from __future__ import annotations

from typing import Any

import pytest

from plivo_stream_cli.errors import ApiFailedError, UsageError
from plivo_stream_cli.formats import L16_16K
from plivo_stream_cli.streams_table import (
    EMPTY_CELL,
    start_body,
    started_stream_id,
    stream_objects,
    stream_table,
)
from plivo_stream_cli.streamxml import StreamOptions

DOCS_OBJECT = {
    "audio_track": "both",
    "bidirectional": False,
    "bill_duration": 7,
    "billed_amount": "0.00300",
    "call_uuid": "78737f83-4660-490d-98e1-025dfe4b5c8a",
    "created_at": "2023-08-10 17:05:43.262000+05:30",
    "end_time": "2023-08-10 17:05:50+05:30",
    "plivo_auth_id": "MAXXXXXXXXXXXXXXXXXX",
    "resource_uri": "/v1/Account/MAXX/Call/78737f83/Stream/2a0f8bd1/",
    "rounded_bill_duration": 60,
    "service_url": "wss://mysocket.com/wss/v2/1/demo/",
    "start_time": "2023-08-10 17:05:43+05:30",
    "stream_id": "2a0f8bd1-8c7b-4f71-a28b-ac8d6ec0f7a1",
}
# The variant one SDK fixture uses: meta.count and a status, no billing fields.
SDK_LIST = {
    "api_id": "8d1d27f0-24f8-11ed-8311-0242ac11000b",
    "meta": {"count": 1, "limit": 20, "next": None, "offset": 0, "previous": None},
    "objects": [
        {
            "call_uuid": "4f045f7a-b04a-4364-8523-74e6072f4f72",
            "end_time": None,
            "service_url": "ws://3ee3-106-51-87-58.ngrok.io",
            "start_time": None,
            "status": "initiated",
            "status_callback_url": "",
            "stream_id": "c436abf8-e8a1-4d96-9aa8-b9143f7f3517",
        }
    ],
}


def test_docs_list_shape_without_status() -> None:
    doc = {"api_id": "x", "meta": {"total_count": 5, "limit": 20}, "objects": [DOCS_OBJECT]}
    table = stream_table(doc)
    assert "status" not in table.columns
    assert table.total == 5
    row = dict(zip(table.columns, table.rows[0], strict=True))
    assert row == {
        "stream id": "2a0f8bd1-8c7b-4f71-a28b-ac8d6ec0f7a1",
        "service URL": "wss://mysocket.com/wss/v2/1/demo/",
        "audio track": "both",
        "bidirectional": "no",
        "start": "2023-08-10 17:05:43+05:30",
        "end": "2023-08-10 17:05:50+05:30",
        "duration": "7s",
        "billed": "0.00300",
    }


def test_sdk_list_shape_with_status_and_meta_count() -> None:
    table = stream_table(SDK_LIST)
    assert table.columns[:2] == ("stream id", "status")
    assert table.total == 1
    row = dict(zip(table.columns, table.rows[0], strict=True))
    assert row["status"] == "initiated"
    assert row["start"] == row["end"] == row["billed"] == EMPTY_CELL


def test_a_single_stream_object() -> None:
    table = stream_table(DOCS_OBJECT)
    assert table.total == 1
    assert table.rows[0][0] == DOCS_OBJECT["stream_id"]


@pytest.mark.parametrize("doc", [{"api_id": "x", "objects": []}, {"objects": None}, []])
def test_no_streams(doc: Any) -> None:
    table = stream_table(doc)
    assert (table.rows, table.total) == ((), 0)


@pytest.mark.parametrize("doc", [None, {"api_id": "x"}, "text", [1, 2]])
def test_an_unexpected_shape_is_an_api_failure(doc: Any) -> None:
    with pytest.raises(ApiFailedError):
        stream_objects(doc)


def test_start_body_minimal() -> None:
    assert start_body(StreamOptions("wss://example.com/s")) == {
        "service_url": "wss://example.com/s",
        "bidirectional": False,
        "audio_track": "inbound",
        "content_type": "audio/x-mulaw;rate=8000",
    }


def test_start_body_everything() -> None:
    options = StreamOptions(
        "wss://example.com/s",
        bidirectional=True,
        stream_timeout=600,
        status_callback_url="https://example.com/status",
        status_callback_method="GET",
        media_format=L16_16K,
        extra_headers={"userId": "42", "note": "a;b"},
    )
    assert start_body(options) == {
        "service_url": "wss://example.com/s",
        "bidirectional": True,
        "audio_track": "inbound",
        "content_type": "audio/x-l16;rate=16000",
        "stream_timeout": 600,
        "status_callback_url": "https://example.com/status",
        "status_callback_method": "GET",
        "extra_headers": "userId=42;note=a%3Bb",
    }


def test_keep_call_alive_is_xml_only() -> None:
    with pytest.raises(UsageError):
        start_body(StreamOptions("wss://example.com/s", keep_call_alive=True))


def test_started_stream_id() -> None:
    answer = {"api_id": "a", "message": "audio streaming started", "stream_id": "s-1"}
    assert started_stream_id(answer) == "s-1"
    with pytest.raises(ApiFailedError):
        started_stream_id({"api_id": "a", "message": "audio streaming started"})
