"""Frames that are not quite Plivo's: accepted, and said so once per stream per kind.

Plivo's Go CLI (`voice streams test`) sends reduced frames: no `sequenceNumber`, `chunk` as a
string, no `tracks`, no `extra_headers`. serve takes them (liberal in what it accepts) and is
honest about it: one warning per kind of deviation, no invented fields, `gaps` unknown when
nothing was numbered. A start in an encoding Plivo never sends is refused once and closed.
"""

from __future__ import annotations

import asyncio
import base64
import json
import uuid
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from plivo_stream_cli.adapters.server import ServeConfig, StreamServer
from plivo_stream_cli.events import Media, UnsupportedMedia, parse
from plivo_stream_cli.feed import describe
from plivo_stream_cli.session import StreamRefused, StreamSession
from tests.conftest import run

STREAM = str(uuid.uuid4())
FRAME = base64.b64encode(bytes([0xFF]) * 160).decode()


def reduced_start(encoding: str = "audio/x-mulaw") -> str:
    """A start as Plivo's Go CLI sends it: no sequenceNumber, tracks, accountId, extra_headers."""
    body = {"callId": str(uuid.uuid4()), "streamId": STREAM,
            "mediaFormat": {"encoding": encoding, "sampleRate": 8000}}  # fmt: skip
    return json.dumps({"event": "start", "start": body})


def reduced_media(chunk: int) -> str:
    media = {"track": "inbound", "timestamp": str(1705312200000 + 20 * chunk),
             "chunk": str(chunk), "payload": FRAME}  # fmt: skip
    return json.dumps({"event": "media", "streamId": STREAM, "media": media})


def test_each_kind_of_deviation_is_noted_once_per_stream() -> None:
    session = StreamSession()
    session.receive(reduced_start())
    for chunk in range(1, 30):
        event = session.receive(reduced_media(chunk))
        assert isinstance(event, Media) and event.chunk == chunk  # accepted, as a number
    warnings = list(session.warnings)
    assert len(warnings) == len(set(warnings)) == 6, warnings
    text = "\n".join(warnings)
    for kind in ("no sequenceNumber", "start without tracks", "start without accountId",
                 "start without extra_headers", "media without extra_headers",
                 "media.chunk is not a JSON number"):  # fmt: skip
        assert kind in text
    assert all(w.startswith("not Plivo's protocol: ") for w in warnings)
    assert session.start is not None and session.start.tracks == ()  # none invented
    assert session.gaps is None and session.stats.errors == 0


def test_plivos_own_frames_raise_no_warning() -> None:
    session = StreamSession()
    start = {"event": "start", "sequenceNumber": 1, "extra_headers": "", "start": {
        "callId": str(uuid.uuid4()), "streamId": STREAM, "accountId": "MA1", "tracks": ["inbound"],
        "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000}}}  # fmt: skip
    session.receive(json.dumps(start))
    for seq in range(2, 10):
        media = {"event": "media", "sequenceNumber": seq, "streamId": STREAM, "extra_headers": "",
                 "media": {"track": "inbound", "timestamp": "1705312200000", "chunk": seq - 1,
                           "payload": FRAME}}  # fmt: skip
        session.receive(json.dumps(media))
    assert session.warnings == [] and session.gaps == 0


def test_a_numeric_timestamp_is_a_quirk_but_parses() -> None:
    msg = {"event": "media", "streamId": STREAM, "sequenceNumber": 2, "extra_headers": "",
           "media": {"track": "inbound", "timestamp": 1705312200000, "chunk": 1,
                     "payload": FRAME}}  # fmt: skip
    event = parse(json.dumps(msg))
    assert isinstance(event, Media) and event.timestamp == "1705312200000"
    assert event.quirks == ("media.timestamp is a number (Plivo sends a string of milliseconds)",)


def test_an_unsupported_encoding_is_refused_once() -> None:
    session = StreamSession()
    with pytest.raises(StreamRefused) as first:
        session.receive(reduced_start("audio/l16"))
    assert first.value.first and "audio/l16" in str(first.value)
    for chunk in range(1, 5):
        with pytest.raises(StreamRefused) as later:
            session.receive(reduced_media(chunk))
        assert not later.value.first
    assert session.stats.errors == 1
    with pytest.raises(UnsupportedMedia):
        parse(reduced_start("audio/l16"))


def test_serve_warns_once_per_kind_and_invents_nothing() -> None:
    records: list[dict[str, Any]] = []

    async def scenario() -> None:
        async with StreamServer(ServeConfig(port=0)) as server:
            server.subscribe(records.append, media=False)
            async with connect(server.local_url) as ws:
                await ws.send(reduced_start())
                for chunk in range(1, 40):
                    await ws.send(reduced_media(chunk))
                await asyncio.sleep(0.2)

    run(scenario())
    warnings = [r["warning"] for r in records if r["event"] == "warning"]
    assert len(warnings) == len(set(warnings)) == 6, warnings
    (start,) = [r for r in records if r["event"] == "start"]
    assert start["tracks"] == []
    (closed,) = [r for r in records if r["event"] == "closed"]
    assert closed["gaps"] is None and closed["errors"] == 0 and closed["media"] == 39
    assert "gaps=unknown" in describe(closed)
    assert not [r for r in records if r["event"] == "error"]


def test_serve_closes_a_stream_in_an_unsupported_encoding_with_one_error() -> None:
    records: list[dict[str, Any]] = []

    async def scenario() -> int | None:
        async with StreamServer(ServeConfig(port=0)) as server:
            server.subscribe(records.append, media=False)
            async with connect(server.local_url) as ws:
                await ws.send(reduced_start("audio/l16"))
                try:
                    for chunk in range(1, 40):
                        await ws.send(reduced_media(chunk))
                        await asyncio.sleep(0.005)
                    await asyncio.wait_for(ws.wait_closed(), 5)
                except ConnectionClosed:
                    pass
                return ws.close_code

    assert run(scenario()) == 1003
    errors = [r["error"] for r in records if r["event"] == "error"]
    assert len(errors) == 1 and "audio/l16" in errors[0] and "closing it" in errors[0]
