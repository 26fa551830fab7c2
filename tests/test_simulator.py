"""The simulator against small test bots written here with plain websockets."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result
from websockets.asyncio.server import ServerConnection, serve

from plivo_stream_cli import codec, metrics, synth
from plivo_stream_cli.adapters import simulator
from plivo_stream_cli.adapters.audiofile import write_wav
from plivo_stream_cli.adapters.simulator import SimulateConfig, parse_dtmf_schedule, run_call
from plivo_stream_cli.cli import app
from plivo_stream_cli.errors import NetworkError, UsageError
from plivo_stream_cli.events import Checkpoint, ClearAudio, PlayAudio
from plivo_stream_cli.formats import L16_16K, MULAW_8K
from plivo_stream_cli.signature import validate_v3
from tests.conftest import free_port, run, serving_in_thread

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

    config = SimulateConfig(url="", audio=b"", linger=0.8)
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

    config = SimulateConfig(url="", audio=b"", linger=0.6)
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


# ---------------------------------------------------------------- latency metrics against bots
# Each bot answers after a known delay; the simulator must measure it within 20 ms.

ANSWER_DELAY = 0.300  # the bot replies this long after the caller's last speech frame
CLEAR_DELAY = 0.150  # the bot clears this long after the caller starts talking over it
SPEECH_FRAMES = 20
CALLER = codec.encode(synth.tone(440, 0.4, 8000) + synth.silence(0.1, 8000), MULAW_8K)
BARGE = codec.encode(synth.tone(300, 0.2, 8000), MULAW_8K)
REPLY = codec.encode(synth.tone(660, 2.0, 8000), MULAW_8K)
FRAME = MULAW_8K.frame_bytes()


def loud(message: dict[str, Any]) -> bool:
    frame = codec.decode(codec_bytes(message), MULAW_8K)
    return codec.level_dbfs(frame) > -50


class TimedBot:
    """Replies ANSWER_DELAY after the caller's speech, in 20 ms chunks at real-time pace;
    with `clears`, stops and sends clearAudio CLEAR_DELAY after the caller talks over it."""

    def __init__(self, *, clears: bool = False, paced: bool = True) -> None:
        self.clears = clears
        self.paced = paced

    async def __call__(self, ws: ServerConnection, received: list[dict[str, Any]]) -> None:
        loop = asyncio.get_running_loop()
        speech = 0
        replying: asyncio.Task[None] | None = None
        async for message in ws:
            event = json.loads(message)
            received.append(event)
            if event["event"] != "media" or not loud(event):
                continue
            speech += 1
            if speech == SPEECH_FRAMES:
                replying = loop.create_task(self.reply(ws))
            elif replying is not None and self.clears:
                await asyncio.sleep(CLEAR_DELAY)
                replying.cancel()
                await ws.send(ClearAudio(event["streamId"]).to_json())
                return await recorder_bot(ws, received)

    async def reply(self, ws: ServerConnection) -> None:
        await asyncio.sleep(ANSWER_DELAY)
        if not self.paced:
            await ws.send(PlayAudio(MULAW_8K, REPLY).to_json())
            return
        loop = asyncio.get_running_loop()
        began = loop.time()
        for index, offset in enumerate(range(0, len(REPLY), FRAME)):
            # one frame ahead, as a bot keeps a little audio queued
            await asyncio.sleep(max(0.0, began + (index - 1) * 0.02 - loop.time()))
            await ws.send(PlayAudio(MULAW_8K, REPLY[offset : offset + FRAME]).to_json())


def test_time_to_first_audio_is_measured_within_20_ms() -> None:
    config = SimulateConfig(url="", audio=CALLER, linger=0.5)
    report, _ = run(with_bot(TimedBot(paced=False), config))
    assert report.speech_end == pytest.approx(0.02 * (SPEECH_FRAMES - 1), abs=0.02)
    first = metrics.first_audio_ms(report)
    assert first is not None and abs(first - ANSWER_DELAY * 1000) <= 20, first


def test_barge_in_clear_and_late_audio_are_measured_within_20_ms() -> None:
    config = SimulateConfig(url="", audio=CALLER, barge_in_at=0.4, barge_in_audio=BARGE, linger=0.3)
    report, got = run(with_bot(TimedBot(clears=True), config))
    first = metrics.first_audio_ms(report)
    assert first is not None and abs(first - ANSWER_DELAY * 1000) <= 20, first
    reply = simulator.reply_started(report)
    assert report.barge_in_started is not None and reply is not None
    assert 0.4 <= report.barge_in_started - reply <= 0.45  # on the caller's next 20 ms frame
    cleared = metrics.clear_ms(report)
    assert cleared is not None and abs(cleared - CLEAR_DELAY * 1000) <= 20, cleared
    late = metrics.barge_in_audio_ms(report)
    # paced one frame ahead: what was sent between barge-in and clear, give or take a frame
    assert late is not None and abs(late - CLEAR_DELAY * 1000) <= 40, late
    assert [m["event"] for m in got].count("clearedAudio") == 1
    assert metrics.reply_gaps_ms(report) == []


def test_barge_in_audio_is_not_the_callers_turn() -> None:
    config = SimulateConfig(url="", audio=CALLER, barge_in_at=0.1, speed=4, linger=0)
    report, got = run(with_bot(TimedBot(paced=False), config))
    assert report.barge_in_started is not None
    assert report.speech_end is not None and report.speech_end < report.barge_in_started
    clip = codec.frames(synth.default_caller_audio(MULAW_8K), MULAW_8K)
    sent = [codec_bytes(m) for m in got if m["event"] == "media"]
    assert sent[-len(clip) :] == clip  # the built-in clip, talked over the reply
    speech = len(codec.frames(CALLER, MULAW_8K))
    assert all(not any(f != 0xFF for f in frame) for frame in sent[speech : -len(clip)])


def test_barge_in_without_a_reply_is_skipped_with_a_warning() -> None:
    config = SimulateConfig(url="", audio=CALLER, barge_in_at=0.1, reply_timeout=0.3, linger=0)
    report, _ = run(with_bot(recorder_bot, config))
    assert report.barge_in_started is None
    assert report.warnings == ["no reply within 0.3 s: barge-in skipped"]


def test_reply_gap_and_checkpoint_round_trip_are_measured() -> None:
    chunk = codec.encode(synth.tone(500, 0.2, 8000), MULAW_8K)

    async def bot(ws: ServerConnection, received: list[dict[str, Any]]) -> None:
        async for message in ws:
            event = json.loads(message)
            if event["event"] == "start":
                sid = event["start"]["streamId"]
                await ws.send(PlayAudio(MULAW_8K, chunk).to_json())
                await ws.send(PlayAudio(MULAW_8K, chunk).to_json())
                await ws.send(Checkpoint(sid, "two").to_json())
                await asyncio.sleep(0.7)  # the queue runs dry at 0.4 s: a 300 ms gap
                await ws.send(PlayAudio(MULAW_8K, chunk).to_json())

    report, _ = run(with_bot(bot, SimulateConfig(url="", audio=b"", linger=1.2)))
    (gap,) = metrics.reply_gaps_ms(report)
    assert abs(gap - 300) <= 20, gap
    (trip,) = metrics.checkpoint_ms(report)
    assert abs(trip - 400) <= 20, trip  # 400 ms of audio ahead of it


# ---------------------------------------------------------------- the CLI


def bot_in_thread(bot: Bot) -> contextlib.AbstractContextManager[str]:
    """Serve `bot` from its own thread and event loop, so the CLI can run in this one."""

    @contextlib.asynccontextmanager
    async def open_server() -> AsyncIterator[str]:
        async def handler(ws: ServerConnection) -> None:
            await bot(ws, [])

        async with serve(handler, "127.0.0.1", 0) as server:
            yield f"ws://127.0.0.1:{next(iter(server.sockets)).getsockname()[1]}/stream"

    return serving_in_thread(open_server)


def simulate_cli(*args: str, audio: Path) -> Result:
    return CliRunner().invoke(app, ["simulate", *args, "--audio", str(audio), "--linger", "0.3"])


@pytest.fixture
def caller_wav(tmp_path: Path) -> Path:
    path = tmp_path / "caller.wav"
    write_wav(path, codec.decode(CALLER, MULAW_8K), 8000)
    write_wav(tmp_path / "barge.wav", codec.decode(BARGE, MULAW_8K), 8000)
    return path


def test_cli_threshold_failure_exits_8(caller_wav: Path) -> None:
    with bot_in_thread(TimedBot(paced=False)) as url:
        result = simulate_cli(url, "--max-first-audio-ms", "150", "--json", audio=caller_wav)
    assert result.exit_code == 8, result.output
    doc = json.loads(result.stdout)
    assert doc["schema_version"] == 2 and doc["passed"] is False
    (check,) = doc["checks"]
    assert check["metric"] == "first_audio_ms" and check["max"] == 150
    assert "first_audio_ms: worst" in result.stderr and "> limit 150 ms" in result.stderr


def test_cli_thresholds_met_exit_0_with_percentiles(caller_wav: Path) -> None:
    barge = ["--barge-in-at", "0.3", "--barge-in-audio", str(caller_wav.parent / "barge.wav")]
    args = [*barge, "--max-first-audio-ms", "1000", "--max-clear-ms", "1000"]
    with bot_in_thread(TimedBot(clears=True)) as url:
        result = simulate_cli(
            url, *args, "--repeat", "3", "--concurrency", "3", "--json", audio=caller_wav
        )
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["passed"] is True and len(doc["calls"]) == 3
    assert len({c["call_id"] for c in doc["calls"]}) == 3
    for name in ("first_audio_ms", "clear_ms"):
        row = doc["metrics"][name]
        assert row["count"] == 3 and row["p50"] <= row["p90"] <= row["p99"] <= row["max"] < 1000
    assert "pass first_audio_ms" in result.stderr and "pass clear_ms" in result.stderr


def test_cli_clear_threshold_fails_when_the_bot_never_clears(caller_wav: Path) -> None:
    with bot_in_thread(TimedBot(paced=False)) as url:
        result = simulate_cli(
            url,
            *("--barge-in-at", "0.2", "--barge-in-audio", str(caller_wav.parent / "barge.wav")),
            *("--max-clear-ms", "500"),
            audio=caller_wav,
        )
    assert result.exit_code == 8
    assert "no clearAudio after the barge-in in 1 of 1 calls" in result.stderr
    assert any(line.startswith("barge_in_audio_ms") for line in result.stdout.splitlines())


def test_cli_clear_threshold_needs_barge_in(caller_wav: Path) -> None:
    result = simulate_cli("ws://127.0.0.1:9/stream", "--max-clear-ms", "100", audio=caller_wav)
    assert result.exit_code == 2 and "--max-clear-ms needs --barge-in-at" in result.stderr


def test_help_has_an_example() -> None:
    result = CliRunner().invoke(app, ["simulate", "--help"])
    assert result.exit_code == 0 and "Example: pstream simulate" in result.stdout
