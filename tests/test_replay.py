"""`pstream replay`: a recorded call re-sent to a real StreamServer over loopback sockets."""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import wave
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from plivo_stream_cli import codec, synth
from plivo_stream_cli.adapters.replay import ReplayConfig, load_capture, run_replay
from plivo_stream_cli.adapters.server import ServeConfig, StreamServer
from plivo_stream_cli.adapters.simulator import SimulateConfig, run_call
from plivo_stream_cli.cli import app
from plivo_stream_cli.errors import UsageError
from plivo_stream_cli.formats import MULAW_8K
from tests.conftest import run, serving_in_thread

TOKEN = "replay-test-token"
CALLER = codec.encode(synth.tone(440, 0.3, 8000) + synth.silence(0.2, 8000), MULAW_8K)


def record_call(directory: Path, **extra: Any) -> Path:
    """Simulate a call to a recording server; returns its capture."""

    async def scenario() -> None:
        async with StreamServer(ServeConfig(port=0, record_dir=directory)) as server:
            config = SimulateConfig(url=server.local_url, audio=CALLER, linger=0, **extra)
            await run_call(config)

    run(scenario())
    (capture,) = directory.glob("*.jsonl")
    return capture


def replay_to(directory: Path, capture: Path, **extra: Any) -> tuple[Any, list[dict[str, Any]]]:
    """Replay `capture` to a recording, token-checking server; returns the report and its feed."""
    records: list[dict[str, Any]] = []

    async def scenario() -> Any:
        config = ServeConfig(port=0, record_dir=directory, auth_token=TOKEN)
        async with StreamServer(config) as server:
            server.subscribe(records.append, media=True)
            replay = ReplayConfig(server.local_url, capture, auth_token=TOKEN, linger=0, **extra)
            return await run_replay(replay)

    return run(scenario()), records


def only(directory: Path, pattern: str) -> Path:
    (path,) = directory.glob(pattern)
    return path


def test_replay_reproduces_the_inbound_audio_byte_for_byte(tmp_path: Path) -> None:
    capture = record_call(tmp_path / "a", speed=5, dtmf=[("7", 0.1)])
    report, records = replay_to(tmp_path / "b", capture, speed=5)
    assert not report.rejected and report.close_code == 1000
    original = only(tmp_path / "a", "*.inbound.wav").read_bytes()
    assert only(tmp_path / "b", "*.inbound.wav").read_bytes() == original
    assert report.dtmf_sent == ["7"]
    assert [r["digit"] for r in records if r["event"] == "dtmf"] == ["7"]
    (start,) = [r for r in records if r["event"] == "start"]
    assert start["call"] == report.call_id and start["call"] not in capture.name  # fresh ids
    seqs = [r["seq"] for r in records if r.get("dir") == "in" and "seq" in r]
    assert seqs == list(range(1, len(seqs) + 1))


def test_keep_ids_reuses_the_recorded_ids(tmp_path: Path) -> None:
    capture = record_call(tmp_path / "a", speed=10)
    replay_to(tmp_path / "b", capture, speed=10, keep_ids=True)
    assert only(tmp_path / "b", "*.jsonl").name == capture.name


def write_capture(path: Path, lines: list[tuple[float, str, dict[str, Any]]]) -> Path:
    with path.open("w") as out:
        for t, direction, msg in lines:
            out.write(json.dumps({"t": t, "dir": direction, "msg": msg}) + "\n")
    return path


def synthetic_capture(path: Path, frames: int = 25) -> Path:
    """A capture of `frames` 20 ms frames received 20 ms apart, plus lines replay must skip."""
    sid = "ST-original"
    start = {
        "event": "start",
        "sequenceNumber": 1,
        "start": {
            "callId": "CA-original",
            "streamId": sid,
            "accountId": "MA1",
            "tracks": ["inbound"],
            "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000},
        },
        "extra_headers": "",
    }
    lines: list[tuple[float, str, dict[str, Any]]] = [(1000.0, "in", start)]
    for i, frame in enumerate(codec.frames(CALLER, MULAW_8K)[:frames]):
        media = {
            "event": "media",
            "sequenceNumber": i + 2,
            "streamId": sid,
            "media": {
                "track": "inbound",
                "timestamp": str(1_000_000 + 20 * i),
                "chunk": i + 1,
                "payload": base64.b64encode(frame).decode(),
            },
        }
        lines.append((1000.0 + 0.02 * i, "in", media))
    lines.append((1000.1, "out", {"event": "checkpoint", "streamId": sid, "name": "x"}))
    lines.append((1000.2, "in", {"event": "playedStream", "streamId": sid, "name": "x"}))
    lines.append((1000.3, "in", {"event": "clearedAudio", "streamId": sid}))
    return write_capture(path, lines)


@pytest.mark.parametrize("speed", [1.0, 3.0])
def test_replay_keeps_the_recorded_timing(tmp_path: Path, speed: float) -> None:
    capture = synthetic_capture(tmp_path / "call.jsonl")
    report, records = replay_to(tmp_path / "b", capture, speed=speed)
    media = [r["t"] for r in records if r["event"] == "media"]
    assert len(media) == 25
    assert media[-1] - media[0] == pytest.approx(0.48 / speed, abs=0.04)
    kinds = {r["event"] for r in records if r.get("dir") == "in"}
    assert kinds == {"start", "media"}  # playedStream/clearedAudio are the replayer's own
    stamps = [int(r["timestamp"]) for r in records if r["event"] == "media"]
    assert [b - a for a, b in itertools.pairwise(stamps)] == [20] * 24
    assert abs(stamps[0] - report.timeline[0].t) > 1_000_000  # shifted to the replay's clock
    with wave.open(str(only(tmp_path / "b", "*.inbound.wav"))) as wav:
        recorded = wav.readframes(wav.getnframes())
    assert recorded == codec.decode(b"".join(codec.frames(CALLER, MULAW_8K)[:25]), MULAW_8K)


def test_replay_answers_the_servers_checkpoints(tmp_path: Path) -> None:
    capture = synthetic_capture(tmp_path / "call.jsonl")
    greeting = synth.tone(500, 0.3, 8000)

    async def scenario() -> Any:
        config = ServeConfig(port=0, play_audio=greeting, play_name="hello")
        async with StreamServer(config) as server:
            replay = ReplayConfig(server.local_url, capture, speed=2, linger=0.3)
            return await run_replay(replay)

    report = run(scenario())
    assert report.checkpoints_confirmed == ["hello"]
    assert bytes(report.played_audio) == codec.encode(greeting, MULAW_8K)


def test_capture_without_a_start_is_a_usage_error(tmp_path: Path) -> None:
    capture = write_capture(tmp_path / "x.jsonl", [(1.0, "out", {"event": "clearAudio"})])
    with pytest.raises(UsageError, match="no start event"):
        load_capture(capture)


def test_load_capture_marks_the_end_of_speech(tmp_path: Path) -> None:
    recording = load_capture(synthetic_capture(tmp_path / "call.jsonl"))
    assert recording.start.call_id == "CA-original" and recording.skipped == 0
    speech = [e.speech for e in recording.events if e.nbytes]
    assert speech == [True] * 15 + [False] * 10  # 0.3 s of tone, then silence


def server_in_thread(config: ServeConfig) -> contextlib.AbstractContextManager[str]:
    """A StreamServer on its own thread and loop, so the CLI can run on this one."""

    @contextlib.asynccontextmanager
    async def open_server() -> AsyncIterator[str]:
        async with StreamServer(config) as server:
            yield server.local_url

    return serving_in_thread(open_server)


def test_cli_replay_records_the_reply(tmp_path: Path) -> None:
    capture = synthetic_capture(tmp_path / "call.jsonl")
    reply = tmp_path / "reply.wav"
    greeting = synth.tone(500, 0.2, 8000)
    config = ServeConfig(port=0, play_audio=greeting, auth_token=TOKEN)
    with server_in_thread(config) as url:
        args = [str(capture), url, "--speed", "4", "--linger", "0.3", "--record-reply", str(reply)]
        result = CliRunner().invoke(
            app, ["replay", *args, "--json"], env={"PLIVO_AUTH_TOKEN": TOKEN}
        )
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["schema_version"] == 2 and doc["calls"][0]["frames_sent"] == 25
    with wave.open(str(reply)) as wav:
        assert wav.getnframes() == len(greeting) // 2


def test_cli_replay_of_a_bad_file_exits_2(tmp_path: Path) -> None:
    bad = tmp_path / "notes.jsonl"
    bad.write_text("hello\n")
    result = CliRunner().invoke(app, ["replay", str(bad), "ws://127.0.0.1:9/stream"])
    assert result.exit_code == 2 and "not a pstream capture line" in result.stderr


def test_replay_help_has_an_example() -> None:
    result = CliRunner().invoke(app, ["replay", "--help"])
    assert result.exit_code == 0 and "Example: pstream replay" in result.stdout
