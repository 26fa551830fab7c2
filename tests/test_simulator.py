"""The simulator against small test bots written here with plain websockets."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from websockets.asyncio.server import ServerConnection, serve

from plivo_stream_cli import codec, synth
from plivo_stream_cli.errors import NetworkError, UsageError
from plivo_stream_cli.events import Checkpoint, ClearAudio, PlayAudio
from plivo_stream_cli.formats import L16_16K, MULAW_8K
from plivo_stream_cli.signature import validate_v3
from plivo_stream_cli.simulator import SimulateConfig, parse_dtmf_schedule, run_call
from tests.conftest import free_port, run

Bot = Callable[[ServerConnection, list[dict[str, Any]]], Awaitable[None]]


async def with_bot(bot: Bot, config: SimulateConfig) -> tuple[Any, list[dict[str, Any]]]:
    """Serve `bot` on a free port, run the simulated call against it."""
    received: list[dict[str, Any]] = []

    async def handler(ws: ServerConnection) -> None:
        await bot(ws, received)

    async with serve(handler, "127.0.0.1", 0) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        config.url = f"ws://127.0.0.1:{port}/stream"
        report = await run_call(config)
    return report, received


async def recorder_bot(ws: ServerConnection, received: list[dict[str, Any]]) -> None:
    async for message in ws:
        received.append(json.loads(message))


def test_start_and_media_have_the_documented_shape() -> None:
    audio = codec.encode(synth.tone(300, 0.1, 16000), L16_16K)
    config = SimulateConfig(
        url="",
        audio=audio,
        media_format=L16_16K,
        extra_headers="a=1;b=2",
        speed=20,
        linger=0,
        dtmf=[("7", 0.04)],
    )
    report, got = run(with_bot(recorder_bot, config))
    start = got[0]
    assert start["event"] == "start" and start["sequenceNumber"] == 1
    assert start["extra_headers"] == "a=1;b=2"
    body = start["start"]
    uuid.UUID(body["callId"])
    uuid.UUID(body["streamId"])
    assert body["mediaFormat"] == {"encoding": "audio/x-l16", "sampleRate": 16000}
    assert body["tracks"] == ["inbound"] and body["accountId"].startswith("MA")
    media = [m for m in got if m["event"] == "media"]
    assert [m["sequenceNumber"] for m in got] == list(range(1, len(got) + 1))
    assert [m["media"]["chunk"] for m in media] == list(range(1, 6))
    assert all(isinstance(m["media"]["timestamp"], str) for m in media)
    assert all(len(codec_bytes(m)) == 640 for m in media)
    (dtmf,) = [m for m in got if m["event"] == "dtmf"]
    assert dtmf["dtmf"]["digit"] == "7" and dtmf["streamId"] == body["streamId"]
    assert report.frames_sent == 5 and report.dtmf_sent == ["7"]
    assert "stop" not in [m["event"] for m in got]


def codec_bytes(message: dict[str, Any]) -> bytes:
    import base64

    return base64.b64decode(message["media"]["payload"])


def test_send_stop_sends_a_stop_event() -> None:
    config = SimulateConfig(url="", audio=b"\xff" * 160, send_stop=True, linger=0)
    _, got = run(with_bot(recorder_bot, config))
    assert got[-1]["event"] == "stop" and got[-1]["sequenceNumber"] == len(got)


def test_upgrade_is_signed_like_plivo() -> None:
    seen: dict[str, str] = {}

    async def bot(ws: ServerConnection, received: list[dict[str, Any]]) -> None:
        assert ws.request is not None
        seen.update(dict(ws.request.headers.raw_items()))
        seen["path"] = ws.request.path
        seen["host"] = ws.request.headers["Host"]
        await recorder_bot(ws, received)

    config = SimulateConfig(url="", auth_token="tok", linger=0, audio=b"")
    run(with_bot(bot, config))
    url = f"http://{seen['host']}{seen['path']}"
    assert validate_v3(url, seen["X-Plivo-Signature-V3-Nonce"], seen["X-Plivo-Signature-V3"], "tok")


def test_checkpoint_is_confirmed_only_after_its_audio_played() -> None:
    reply = codec.encode(synth.tone(440, 0.5, 8000), MULAW_8K)

    async def bot(ws: ServerConnection, received: list[dict[str, Any]]) -> None:
        async for message in ws:
            event = json.loads(message)
            received.append(event)
            if event["event"] == "start":
                sid = event["start"]["streamId"]
                await ws.send(PlayAudio(MULAW_8K, reply).to_json())
                await ws.send(Checkpoint(sid, "done").to_json())

    config = SimulateConfig(url="", audio=b"", linger=1.5)
    report, got = run(with_bot(bot, config))
    assert report.checkpoints_confirmed == ["done"]
    played = [m for m in got if m["event"] == "playedStream"]
    assert played and played[0]["name"] == "done"
    (t_play,) = report.times("play")
    (t_done,) = report.times("played")
    assert 0.45 <= t_done - t_play <= 1.0  # 0.5 s of audio at real-time pace
    assert bytes(report.played_audio) == reply


def test_clear_audio_drops_the_queue_and_is_answered() -> None:
    reply = codec.encode(synth.tone(440, 2.0, 8000), MULAW_8K)

    async def bot(ws: ServerConnection, received: list[dict[str, Any]]) -> None:
        sid = ""
        async for message in ws:
            event = json.loads(message)
            received.append(event)
            if event["event"] == "start":
                sid = event["start"]["streamId"]
                await ws.send(PlayAudio(MULAW_8K, reply).to_json())
                await ws.send(Checkpoint(sid, "never").to_json())
                await asyncio.sleep(0.3)
                await ws.send(ClearAudio(sid).to_json())

    config = SimulateConfig(url="", audio=b"", linger=1.0)
    report, got = run(with_bot(bot, config))
    assert report.clears == 1
    assert [m["event"] for m in got].count("clearedAudio") == 1
    assert report.checkpoints_confirmed == []
    assert len(report.played_audio) < len(reply) // 2


def test_malformed_server_messages_are_violations() -> None:
    async def bot(ws: ServerConnection, received: list[dict[str, Any]]) -> None:
        async for message in ws:
            if json.loads(message)["event"] == "start":
                await ws.send("garbage")
                await ws.send(
                    '{"event":"playAudio","media":{"contentType":"audio/x-l16",'
                    '"sampleRate":8000,"payload":"AAA="}}'
                )
                await ws.send(PlayAudio(L16_16K, b"\x00\x00").to_json())

    report, _ = run(with_bot(bot, SimulateConfig(url="", audio=b"", linger=0.3)))
    assert len(report.violations) == 3
    assert "not JSON" in report.violations[0]
    assert "on a audio/x-mulaw;rate=8000 stream" in report.violations[2]


def test_media_is_paced_in_real_time() -> None:
    audio = b"\xff" * 160 * 25  # 0.5 s
    report, _ = run(with_bot(recorder_bot, SimulateConfig(url="", audio=audio, linger=0)))
    assert 0.45 <= report.duration <= 1.5


def test_connection_refused_is_a_network_error() -> None:
    config = SimulateConfig(url=f"ws://127.0.0.1:{free_port()}/stream")
    with pytest.raises(NetworkError, match="cannot connect"):
        run(run_call(config))


def test_non_websocket_url_is_a_usage_error() -> None:
    with pytest.raises(UsageError):
        run(run_call(SimulateConfig(url="http://example.com/")))


@pytest.mark.parametrize(
    ("text", "expected"),
    [("5@1.5,#@3", [("5", 1.5), ("#", 3.0)]), ("1", [("1", 0.0)]), ("", [])],
)
def test_dtmf_schedule(text: str, expected: list[tuple[str, float]]) -> None:
    assert parse_dtmf_schedule(text) == expected


@pytest.mark.parametrize("text", ["x@1", "5@soon", "55@1", "5@-1"])
def test_bad_dtmf_schedule(text: str) -> None:
    with pytest.raises(UsageError, match="--dtmf"):
        parse_dtmf_schedule(text)
