"""Every event pstream puts on the wire, held to strict schemas written from shared/protocol.md.

Plivo -> server: what `simulate` and `replay` send (start, media in all three content types, dtmf,
playedStream, clearedAudio, stop), captured by a real loopback bot. Server -> Plivo: what `serve`
sends (playAudio, checkpoint, clearAudio), captured by a real client. Exact key sets, exact types:
Plivo's own Node SDK rejects an event with a missing or mistyped field (`extra_headers` on media
was the one that slipped through), so a schema here must too.
"""

from __future__ import annotations

import asyncio
import base64
import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.asyncio.server import ServerConnection, serve

from plivo_stream_cli import codec, synth
from plivo_stream_cli.adapters.replay import ReplayConfig, run_replay
from plivo_stream_cli.adapters.server import ServeConfig, StreamServer
from plivo_stream_cli.adapters.simulator import SimulateConfig, run_call
from plivo_stream_cli.events import Checkpoint, ClearAudio, PlayAudio
from plivo_stream_cli.formats import L16_8K, L16_16K, MULAW_8K, MediaFormat
from tests.conftest import run

FORMATS = [MULAW_8K, L16_8K, L16_16K]
ENCODINGS = {"audio/x-mulaw": {8000}, "audio/x-l16": {8000, 16000}}


class SchemaError(AssertionError):
    pass


def _keys(obj: Any, where: str, keys: set[str]) -> None:
    if not isinstance(obj, dict):
        raise SchemaError(f"{where}: expected an object, got {type(obj).__name__}")
    if set(obj) != keys:
        missing, extra = keys - set(obj), set(obj) - keys
        raise SchemaError(f"{where}: missing {sorted(missing)}, unexpected {sorted(extra)}")


def _type(value: Any, where: str, kind: type) -> None:
    if type(value) is not kind:  # bool is not an int, on the wire
        raise SchemaError(f"{where}: expected {kind.__name__}, got {type(value).__name__}")


def _uuid(value: Any, where: str) -> None:
    _type(value, where, str)
    try:
        uuid.UUID(value)
    except ValueError:
        raise SchemaError(f"{where}: not a UUID: {value!r}") from None


def _digits(value: Any, where: str) -> None:
    _type(value, where, str)
    if not value.isdigit() or len(value) != 13:
        raise SchemaError(f"{where}: expected a string of Unix milliseconds, got {value!r}")


def _b64(value: Any, where: str) -> bytes:
    _type(value, where, str)
    return base64.b64decode(value, validate=True)


def check_start(msg: dict[str, Any]) -> None:
    _keys(msg, "start", {"event", "sequenceNumber", "start", "extra_headers"})
    _type(msg["sequenceNumber"], "start.sequenceNumber", int)
    _type(msg["extra_headers"], "start.extra_headers", str)
    body = msg["start"]
    _keys(body, "start.start", {"callId", "streamId", "accountId", "tracks", "mediaFormat"})
    _uuid(body["callId"], "start.callId")
    _uuid(body["streamId"], "start.streamId")
    _type(body["accountId"], "start.accountId", str)
    _type(body["tracks"], "start.tracks", list)
    if not body["tracks"] or not all(t in ("inbound", "outbound") for t in body["tracks"]):
        raise SchemaError(f"start.tracks: {body['tracks']!r}")
    fmt = body["mediaFormat"]
    _keys(fmt, "start.mediaFormat", {"encoding", "sampleRate"})
    _type(fmt["sampleRate"], "start.mediaFormat.sampleRate", int)
    if fmt["sampleRate"] not in ENCODINGS.get(fmt["encoding"], set()):
        raise SchemaError(f"start.mediaFormat: {fmt!r}")


def check_media(msg: dict[str, Any], fmt: MediaFormat) -> None:
    _keys(msg, "media", {"event", "sequenceNumber", "streamId", "media", "extra_headers"})
    _type(msg["sequenceNumber"], "media.sequenceNumber", int)
    _uuid(msg["streamId"], "media.streamId")
    _type(msg["extra_headers"], "media.extra_headers", str)
    body = msg["media"]
    _keys(body, "media.media", {"track", "timestamp", "chunk", "payload"})
    if body["track"] != "inbound":
        raise SchemaError(f"media.track: {body['track']!r}")
    _digits(body["timestamp"], "media.timestamp")
    _type(body["chunk"], "media.chunk", int)
    audio = _b64(body["payload"], "media.payload")
    if len(audio) != fmt.frame_bytes():
        raise SchemaError(f"media.payload: {len(audio)} bytes, not a 20 ms frame")


def check_dtmf(msg: dict[str, Any]) -> None:
    _keys(msg, "dtmf", {"event", "sequenceNumber", "streamId", "dtmf", "extra_headers"})
    _type(msg["sequenceNumber"], "dtmf.sequenceNumber", int)
    _uuid(msg["streamId"], "dtmf.streamId")
    _type(msg["extra_headers"], "dtmf.extra_headers", str)
    body = msg["dtmf"]
    _keys(body, "dtmf.dtmf", {"track", "digit", "timestamp"})
    _type(body["digit"], "dtmf.digit", str)
    if len(body["digit"]) != 1 or body["digit"] not in "0123456789*#ABCD":
        raise SchemaError(f"dtmf.digit: {body['digit']!r}")
    _digits(body["timestamp"], "dtmf.timestamp")


def check_played(msg: dict[str, Any]) -> None:
    _keys(msg, "playedStream", {"event", "sequenceNumber", "streamId", "name"})
    _type(msg["sequenceNumber"], "playedStream.sequenceNumber", int)
    _uuid(msg["streamId"], "playedStream.streamId")
    _type(msg["name"], "playedStream.name", str)


def check_cleared(msg: dict[str, Any]) -> None:
    _keys(msg, "clearedAudio", {"event", "sequenceNumber", "streamId"})
    _type(msg["sequenceNumber"], "clearedAudio.sequenceNumber", int)
    _uuid(msg["streamId"], "clearedAudio.streamId")


def check_stop(msg: dict[str, Any]) -> None:
    _keys(msg, "stop", {"event", "sequenceNumber", "streamId"})
    _type(msg["sequenceNumber"], "stop.sequenceNumber", int)
    _uuid(msg["streamId"], "stop.streamId")


def check_from_plivo(messages: list[dict[str, Any]], fmt: MediaFormat) -> dict[str, int]:
    """Hold a whole call's worth of Plivo -> server events to the schemas; count them by kind."""
    if not messages or messages[0].get("event") != "start":
        raise SchemaError("the first event must be start")
    seqs = [m.get("sequenceNumber") for m in messages]
    if seqs != list(range(1, len(messages) + 1)):
        raise SchemaError(f"sequenceNumber must count 1, 2, 3, ... over all events: {seqs[:12]}")
    stream = messages[0]["start"]["streamId"]
    headers = messages[0]["extra_headers"]
    counts: dict[str, int] = {}
    chunks: list[int] = []
    for msg in messages:
        kind = msg.get("event")
        counts[kind] = counts.get(kind, 0) + 1
        if kind == "start":
            check_start(msg)
        elif kind == "media":
            check_media(msg, fmt)
            chunks.append(msg["media"]["chunk"])
        elif kind == "dtmf":
            check_dtmf(msg)
        elif kind == "playedStream":
            check_played(msg)
        elif kind == "clearedAudio":
            check_cleared(msg)
        elif kind == "stop":
            check_stop(msg)
        else:
            raise SchemaError(f"{kind!r} is not an event Plivo sends")
        if kind != "start" and msg["streamId"] != stream:
            raise SchemaError(f"{kind}.streamId differs from the start's")
        if "extra_headers" in msg and msg["extra_headers"] != headers:
            raise SchemaError(f"{kind}.extra_headers differs from the start's")
    if chunks != list(range(1, len(chunks) + 1)):
        raise SchemaError(f"media.chunk must count 1, 2, 3, ...: {chunks[:12]}")
    return counts


def check_to_plivo(msg: dict[str, Any], fmt: MediaFormat, stream: str) -> str:
    kind = msg.get("event")
    if kind == "playAudio":
        _keys(msg, "playAudio", {"event", "media"})
        body = msg["media"]
        _keys(body, "playAudio.media", {"contentType", "sampleRate", "payload"})
        if (body["contentType"], body["sampleRate"]) != (fmt.encoding, fmt.sample_rate):
            raise SchemaError(f"playAudio.media: {body['contentType']}@{body['sampleRate']}")
        _type(body["sampleRate"], "playAudio.media.sampleRate", int)
        _b64(body["payload"], "playAudio.media.payload")
        if len(json.dumps(msg)) > 64 * 1024:
            raise SchemaError("playAudio: over 64 KB")
    elif kind == "checkpoint":
        _keys(msg, "checkpoint", {"event", "streamId", "name"})
        _type(msg["name"], "checkpoint.name", str)
    elif kind == "clearAudio":
        _keys(msg, "clearAudio", {"event", "streamId"})
    else:
        raise SchemaError(f"{kind!r} is not an event Plivo accepts")
    if kind != "playAudio" and msg["streamId"] != stream:
        raise SchemaError(f"{kind}.streamId is not the stream's")
    return str(kind)


# ---------------------------------------------------------------- the checks themselves


def test_the_schemas_catch_what_plivos_node_sdk_refused() -> None:
    media = {
        "event": "media",
        "sequenceNumber": 2,
        "streamId": str(uuid.uuid4()),
        "media": {"track": "inbound", "timestamp": "1705312200000", "chunk": 1, "payload": ""},
    }
    with pytest.raises(SchemaError, match="extra_headers"):
        check_media(media, MULAW_8K)
    media["extra_headers"] = ""
    media["media"]["payload"] = base64.b64encode(bytes(160)).decode()
    check_media(media, MULAW_8K)
    media["media"]["timestamp"] = 1705312200000
    with pytest.raises(SchemaError, match="timestamp"):
        check_media(media, MULAW_8K)


async def _bot(ws: ServerConnection, got: list[dict[str, Any]], fmt: MediaFormat) -> None:
    """Replies after the caller's first frames, checkpoints it, then clears a second reply,
    so the caller's side sends playedStream and clearedAudio too."""
    stream = ""
    replied = False
    async for text in ws:
        msg = json.loads(text)
        got.append(msg)
        if msg["event"] == "start":
            stream = msg["start"]["streamId"]
        if msg["event"] == "media" and not replied and msg["media"]["chunk"] >= 3:
            replied = True
            reply = codec.encode(synth.tone(500, 0.1, fmt.sample_rate), fmt)
            await ws.send(PlayAudio(fmt, reply).to_json())
            await ws.send(Checkpoint(stream, "one").to_json())
            await ws.send(PlayAudio(fmt, reply * 10).to_json())
            await ws.send(Checkpoint(stream, "dropped").to_json())
            await asyncio.sleep(0.2)
            await ws.send(ClearAudio(stream).to_json())


async def _capture(fmt: MediaFormat, call: Any) -> list[dict[str, Any]]:
    got: list[dict[str, Any]] = []

    async def handler(ws: ServerConnection) -> None:
        await _bot(ws, got, fmt)

    async with serve(handler, "127.0.0.1", 0) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        await call(f"ws://127.0.0.1:{port}/stream")
    return got


@pytest.mark.parametrize("fmt", FORMATS, ids=lambda f: f.content_type)
@pytest.mark.parametrize("headers", ["", "userId=12345;sessionId=abc-xyz"])
def test_every_event_simulate_sends_has_plivos_shape(fmt: MediaFormat, headers: str) -> None:
    async def call(url: str) -> None:
        config = SimulateConfig(
            url=url,
            audio=codec.encode(synth.caller_clip(fmt.sample_rate)[: fmt.sample_rate], fmt),
            media_format=fmt,
            extra_headers=headers,
            dtmf=[("5", 0.1), ("#", 0.3)],
            speed=4,
            linger=2,
            send_stop=True,
        )
        await run_call(config)

    got = run(_capture(fmt, call))
    counts = check_from_plivo(got, fmt)
    assert counts["start"] == 1 and counts["dtmf"] == 2 and counts["stop"] == 1
    assert counts["playedStream"] == 1 and counts["clearedAudio"] == 1
    assert counts["media"] >= 25


def test_every_event_replay_sends_has_plivos_shape(tmp_path: Path) -> None:
    """Replay of a capture of frames that were not Plivo's (no sequence numbers, chunks,
    tracks or extra_headers; a numeric timestamp) still sends Plivo's shapes."""
    stream = str(uuid.uuid4())
    frame = base64.b64encode(codec.encode(synth.tone(400, 0.02, 8000), MULAW_8K)).decode()
    lines = [
        {
            "t": 1.0,
            "dir": "in",
            "msg": {
                "event": "start",
                "start": {
                    "callId": str(uuid.uuid4()),
                    "streamId": stream,
                    "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000},
                },
            },
        }
    ]
    for i in range(40):
        media = {"track": "inbound", "timestamp": 1705312200000 + 20 * i, "payload": frame}
        msg = {"event": "media", "streamId": stream, "media": media}
        lines.append({"t": 1.02 + 0.02 * i, "dir": "in", "msg": msg})
    lines.append(
        {
            "t": 1.5,
            "dir": "in",
            "msg": {
                "event": "dtmf",
                "streamId": stream,
                "dtmf": {"digit": "3", "timestamp": "1705312200500"},
            },
        }
    )
    capture = tmp_path / "reduced.jsonl"
    capture.write_text("".join(json.dumps(x) + "\n" for x in lines))

    async def call(url: str) -> None:
        await run_replay(ReplayConfig(url, capture, speed=2, linger=2))

    got = run(_capture(MULAW_8K, call))
    counts = check_from_plivo(got, MULAW_8K)
    assert counts["media"] >= 40 and counts["dtmf"] == 1 and counts["clearedAudio"] == 1


@pytest.mark.parametrize("fmt", FORMATS, ids=lambda f: f.content_type)
def test_every_event_serve_sends_has_a_shape_plivo_accepts(fmt: MediaFormat) -> None:
    async def scenario() -> tuple[list[dict[str, Any]], str]:
        greeting = synth.greeting(fmt.sample_rate)
        config = ServeConfig(port=0, play_audio=greeting, play_rate=fmt.sample_rate)
        stream = str(uuid.uuid4())
        got: list[dict[str, Any]] = []
        async with StreamServer(config) as server, connect(server.local_url) as ws:
            start = {
                "event": "start",
                "sequenceNumber": 1,
                "extra_headers": "",
                "start": {
                    "callId": str(uuid.uuid4()),
                    "streamId": stream,
                    "accountId": "MA0",
                    "tracks": ["inbound"],
                    "mediaFormat": {"encoding": fmt.encoding, "sampleRate": fmt.sample_rate},
                },
            }
            await ws.send(json.dumps(start))
            while not any(m["event"] == "checkpoint" for m in got):
                got.append(json.loads(await asyncio.wait_for(ws.recv(), 5)))
            await server.streams[stream].clear()
            while got[-1]["event"] != "clearAudio":
                got.append(json.loads(await asyncio.wait_for(ws.recv(), 5)))
        return got, stream

    got, stream = run(scenario())
    kinds = [check_to_plivo(m, fmt, stream) for m in got]
    assert {"playAudio", "checkpoint", "clearAudio"} <= set(kinds)


@pytest.mark.parametrize(
    ("fmt", "latency"),
    [(fmt, None) for fmt in FORMATS] + [(MULAW_8K, 20.0)],
    ids=[f.content_type for f in FORMATS] + ["impaired"],
)
def test_every_event_a_scenario_sends_has_plivos_shape(
    tmp_path: Path, fmt: MediaFormat, latency: float | None
) -> None:
    """A scripted call (say, dtmf, silence, wait, barge-in), plain and through the impaired
    line, sends the same shapes as a plain simulate: extra_headers on start, media and dtmf."""
    from plivo_stream_cli.adapters.audiofile import write_wav
    from plivo_stream_cli.testing import simulate_call

    write_wav(tmp_path / "caller.wav", synth.caller_clip(8000)[:8000], 8000)
    steps = [
        {"say": "caller.wav"},
        {"dtmf": "5#"},
        {"wait_for": {"audio": True, "timeout": 3}},
        {"barge_in": {"after_ms": 50, "audio": "caller.wav", "timeout": 3}},
        {"silence": 0.5},
        {"hangup": True},
    ]

    async def call(url: str) -> None:
        await simulate_call(
            url,
            {"extra_headers": "userId=12345", "linger": 0},
            steps=steps,
            base_dir=tmp_path,
            content_type=fmt.content_type,
            latency=latency,
            seed=7,
        )

    got = run(_capture(fmt, call))
    counts = check_from_plivo(got, fmt)
    assert counts["start"] == 1 and counts["dtmf"] == 2 and counts["media"] >= 50
    assert all(m.get("extra_headers") == "userId=12345" for m in got if m["event"] != "playedStream"
               and m["event"] != "clearedAudio"), got[:3]  # fmt: skip
